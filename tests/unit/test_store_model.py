"""The store's conversation counters against a plain model, over random operation sequences.

``insert_message`` and ``advance_watermark`` hold a conversation's unread count,
last_ts and watermark in memory until the batch commits (one statement per message
instead of three). This drives a real store through random inserts (out of order,
duplicates, gaps), read marks from this and other devices, commits, crashes that lose the
uncommitted batch, reopenings and epoch resets, and compares what it shows and what it
committed with a model that applies every rule at once.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tui_chat.core.models import OutState
from tui_chat.core.store import LocalStore, OutboxRow

ME = "alice"
PEERS = ["bob", "carol", "dave"]


@dataclass
class Model:
    messages: dict[str, dict[int, str]] = field(default_factory=dict)  # conv -> seq -> sender
    conv_of: dict[str, str] = field(default_factory=dict)
    read_seq: dict[str, int] = field(default_factory=dict)
    peer_read: dict[str, int] = field(default_factory=dict)
    unread: dict[str, int] = field(default_factory=dict)
    last_ts: dict[str, int] = field(default_factory=dict)

    def copy(self) -> Model:
        return Model(
            {c: dict(m) for c, m in self.messages.items()},
            dict(self.conv_of),
            dict(self.read_seq),
            dict(self.peer_read),
            dict(self.unread),
            dict(self.last_ts),
        )

    def wm(self, conv: str) -> int:
        held, wm = self.messages.get(conv, {}), 0
        while wm + 1 in held:
            wm += 1
        return wm

    def insert(self, peer: str, conv: str, seq: int, sender: str, ts: int) -> bool:
        self.conv_of[peer] = conv
        for p in (peer,):
            self.read_seq.setdefault(p, 0)
            self.unread.setdefault(p, 0)
            self.peer_read.setdefault(p, 0)
            self.last_ts.setdefault(p, 0)
        held = self.messages.setdefault(conv, {})
        if seq in held:
            return False
        held[seq] = sender
        if sender != ME and seq > self.read_seq[peer]:
            self.unread[peer] += 1
        self.last_ts[peer] = max(self.last_ts[peer], ts)
        return True

    def mark_read(self, peer: str, seq: int) -> bool:
        if peer not in self.read_seq or self.read_seq[peer] >= seq:
            return False
        self.read_seq[peer], self.unread[peer] = seq, 0
        return True

    def read_from_server(self, peer: str, user: str, seq: int) -> None:
        if peer not in self.conv_of:
            return
        if user == ME:
            self.read_seq[peer] = max(self.read_seq[peer], seq)
            held = self.messages.get(self.conv_of[peer], {})
            self.unread[peer] = sum(
                1 for s, sender in held.items() if s > self.read_seq[peer] and sender != ME
            )
        else:
            self.peer_read[peer] = max(self.peer_read[peer], seq)

    def reset(self) -> None:
        self.messages.clear()
        self.conv_of.clear()
        for peer in self.read_seq:
            self.read_seq[peer] = self.unread[peer] = 0


def committed_rows(path: Path) -> dict[str, tuple[int, int, int, int, int]]:
    db = sqlite3.connect(path)
    try:
        return {
            peer: (wm, unread, last_ts, read_seq, peer_read)
            for peer, wm, unread, last_ts, read_seq, peer_read in db.execute(
                "SELECT peer, wm, unread, last_ts, read_seq, peer_read_seq FROM conversations"
            )
        }
    finally:
        db.close()


def expected_rows(m: Model) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        peer: (
            m.wm(m.conv_of[peer]) if peer in m.conv_of else 0,
            m.unread[peer],
            m.last_ts[peer],
            m.read_seq[peer],
            m.peer_read[peer],
        )
        for peer in m.read_seq
    }


def check_live(store: LocalStore, m: Model) -> None:
    for peer in m.read_seq:
        s = store.summary(peer, [])
        assert (s.unread, s.read_seq, s.peer_read_seq) == (
            m.unread[peer],
            m.read_seq[peer],
            m.peer_read[peer],
        ), peer
        if peer in m.conv_of:
            assert store.watermark(m.conv_of[peer]) == m.wm(m.conv_of[peer])
    order = list(m.read_seq)  # first contact first: the order the store keeps
    assert store.peers() == order
    # All summaries at once (opening the app) say what one at a time says.
    assert store.summaries([]) == [store.summary(peer, []) for peer in order]


@pytest.mark.parametrize("seed", range(12))
def test_counters_match_the_model(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "alice.sqlite3"
    store = LocalStore(path, ME)
    model, committed = Model(), Model()
    epoch = 0
    for step in range(250):
        op = rng.random()
        peer = rng.choice(PEERS)
        conv = f"c-{peer}-{epoch}"
        if op < 0.6:
            seq, sender, ts = rng.randint(1, 25), rng.choice([ME, peer]), rng.randint(0, 10**6)
            store.ensure_conversation(peer, conv)
            to = peer if sender == ME else ME
            added = store.insert_message(conv, seq, sender, to, f"id{step}", "x", ts)
            assert added == model.insert(peer, conv, seq, sender, ts)
            store.advance_watermark(conv)
        elif op < 0.7:
            seq = rng.randint(0, 25)
            assert store.mark_read(peer, seq) == model.mark_read(peer, seq)
        elif op < 0.78:
            user, seq = rng.choice([ME, peer]), rng.randint(0, 25)
            if peer in model.conv_of:
                store.set_read_from_server(model.conv_of[peer], user, seq)
                model.read_from_server(peer, user, seq)
        elif op < 0.86:
            store.commit()
            committed = model.copy()
            assert committed_rows(path) == expected_rows(model)
        elif op < 0.9:
            check_live(store, model)
        elif op < 0.95:
            # A crash: the uncommitted batch is lost, the replica is what was committed.
            store._db.close()
            store._lock.close()
            store = LocalStore(path, ME)
            model = committed.copy()
            check_live(store, model)
        elif op < 0.97:
            store.close()  # a clean quit commits
            committed = model.copy()
            assert committed_rows(path) == expected_rows(model)
            store = LocalStore(path, ME)
        else:
            epoch += 1
            store.reset_for_epoch(f"epoch-{epoch}")
            model.reset()
            committed = model.copy()
    check_live(store, model)
    store.close()
    assert committed_rows(path) == expected_rows(model)


def test_all_summaries_at_once_count_open_rows_and_groups_as_one_at_a_time(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "s.db", ME)
    store.ensure_conversation("bob", "c-bob")
    for seq in (1, 2, 3):
        store.insert_message("c-bob", seq, "bob", ME, f"b{seq}", f"hi {seq}", seq)
    store.advance_watermark("c-bob")
    store.ensure_conversation("#g1", "g1")
    store.insert_message(
        "g1", 1, "carol", "", "g-1", "", 5, kind="created", title="Trip", members=[ME, "carol"]
    )
    store.recompute_group("#g1", "g1")
    store.ensure_conversation("dave", None)  # no message yet
    rows = [
        OutboxRow("o1", "bob", "one", 10, 1, state=OutState.FAILED),
        OutboxRow("o2", "dave", "two", 11, 2),
        OutboxRow("o3", "bob", "three", 12, 3),
    ]
    for r in rows:
        store.add_outbox(r)
    store.commit()
    together = store.summaries(rows)
    assert together == [store.summary(peer, rows) for peer in store.peers()]
    by_peer = {s.peer: s for s in together}
    assert (by_peer["bob"].failed, by_peer["bob"].pending) == (1, 1)
    assert by_peer["bob"].last is not None and by_peer["bob"].last.body == "three"
    assert by_peer["#g1"].title == "Trip" and by_peer["#g1"].members == (ME, "carol")
    assert by_peer["dave"].last is not None and by_peer["dave"].last.body == "two"
    store.close()
