"""The chaos checker catches bugs: each rule on a hand-made run, and real broken variants.

The first half builds a small consistent run by hand (a server database, two stores, two event
logs) and breaks one thing at a time; the checker must name exactly that kind of violation.
The second half plays directed schedules against real processes with the deliberately broken
variants of :mod:`harness.broken` (a server that acks before committing, a client
that retries with a new client_id, a client that skips the gap rule) and asserts that the
checker reports each, while the same schedule against the real code passes.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from harness.broken import CRASH_STATUS
from harness.chaos import Action, Schedule, ScheduleResult, run_schedule
from harness.checker import (
    ClientRecord,
    Incarnation,
    OutRow,
    Report,
    Row,
    ServerView,
    StoreView,
    check,
    judge,
)
from harness.visibility import GroupStream, intervals
from tui_chat.core.store import LocalStore
from tui_chat.server import db

CONV = "c000000000001"


# ---------------------------------------------------------------- a hand-made run


class World:
    """alice sent bob three messages, all acked and delivered; bob sent alice one."""

    def __init__(self, root: Path) -> None:
        self.server = root / "server.db"
        conn, _ = db.open_db(self.server)
        for user in ("alice", "bob"):
            db.add_user(conn, user)
        conn.close()
        self.stores = {u: root / f"{u}.sqlite3" for u in ("alice", "bob")}
        for user, path in self.stores.items():
            LocalStore(path, user).close()
        self.logs: dict[str, list[list[dict[str, Any]]]] = {"alice": [[]], "bob": [[]]}
        self.on_failure = {"alice": "hold", "bob": "hold"}
        self.owner = {"alice": "alice", "bob": "bob"}  # device -> user
        self.root = root
        for n, (sender, to) in enumerate(
            [("alice", "bob"), ("alice", "bob"), ("bob", "alice"), ("alice", "bob")], start=1
        ):
            self.deliver(sender, to, f"{sender[0]}{n}", n)

    # -- building blocks

    def compose(self, sender: str, to: str, cid: str, body: str | None = None) -> None:
        body = body or f"body of {cid}"
        log = self.logs[sender][-1]
        log.append(self._event("message", sender, to, cid, body, None, "pending"))
        log.append(
            {"event": "ok", "id": len(log), "cmd": "send", "client_id": cid, "to": to, "body": body}
        )
        self.outbox(sender, to, cid, body, "pending")

    def wire(self, sender: str, cid: str) -> None:
        self.logs[sender][-1].append({"event": "wire", "client_id": cid})

    def give_up(self, sender: str, to: str, cid: str) -> None:
        log = self.logs[sender][-1]
        log.append(self._event("state", sender, to, cid, f"body of {cid}", None, "given_up"))
        log.append({"event": "ok", "id": len(log), "cmd": "give_up", "client_id": cid})
        self.sql(sender, "UPDATE outbox SET state='given_up' WHERE client_id=?", cid)

    def shown_sent(self, sender: str, to: str, cid: str, seq: int) -> None:
        """The sender's screen is told: stored at seq (the ack, or the echo)."""
        log = self.logs[sender][-1]
        log.append(self._event("state", sender, to, cid, f"body of {cid}", seq, "sent"))
        self.sql(sender, "UPDATE outbox SET state='sent' WHERE client_id=?", cid)

    def store_on_server(self, sender: str, to: str, cid: str, seq: int, body: str) -> None:
        conn = sqlite3.connect(self.server)
        with conn:
            conn.execute(
                "INSERT INTO conversations(id, user_a, user_b, last_seq, a_id, b_id) "
                "VALUES (?, 'alice', 'bob', ?, (SELECT id FROM users WHERE name='alice'),"
                " (SELECT id FROM users WHERE name='bob')) "
                "ON CONFLICT(id) DO UPDATE SET last_seq=max(last_seq, excluded.last_seq)",
                (CONV, seq),
            )
            conn.execute(
                "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (CONV, seq, sender, to, cid, body, 1000 + seq),
            )
        conn.close()

    def add_device(self, device: str, user: str) -> None:
        """A second device of ``user``: its own store (and log), empty so far."""
        self.stores[device] = self.root / f"{device}.sqlite3"
        LocalStore(self.stores[device], user).close()
        self.logs[device] = [[]]
        self.on_failure[device] = "hold"
        self.owner[device] = user

    def store_in(self, user: str, sender: str, to: str, cid: str, seq: int, body: str) -> None:
        peer = to if sender == self.owner[user] else sender
        conn = sqlite3.connect(self.stores[user])
        with conn:
            conn.execute("INSERT OR IGNORE INTO conversations(peer) VALUES (?)", (peer,))
            conn.execute("UPDATE conversations SET conv=? WHERE peer=?", (CONV, peer))
            conn.execute(
                "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (CONV, seq, sender, to, cid, body, 1000 + seq),
            )
            conn.execute(
                "UPDATE conversations SET wm=(SELECT count(*) FROM messages WHERE conv=?)",
                (CONV,),
            )
        conn.close()

    def outbox(self, user: str, peer: str, cid: str, body: str, state: str) -> None:
        conn = sqlite3.connect(self.stores[user])
        with conn:
            ord_ = conn.execute("SELECT coalesce(max(ord), 0) + 1 FROM outbox").fetchone()[0]
            conn.execute(
                "INSERT INTO outbox(client_id, peer, body, created_at, fresh_since, ord, state) "
                "VALUES (?, ?, ?, 0, 0, ?, ?) "
                "ON CONFLICT(client_id) DO UPDATE SET state=excluded.state",
                (cid, peer, body, ord_, state),
            )
        conn.close()

    def deliver(self, sender: str, to: str, cid: str, seq: int) -> None:
        """Compose, put on the wire, store, ack and fan out: the happy path."""
        body = f"body of {cid}"
        self.compose(sender, to, cid, body)
        self.wire(sender, cid)
        self.store_on_server(sender, to, cid, seq, body)
        for user in (sender, to):
            self.store_in(user, sender, to, cid, seq, body)
        self.outbox(sender, to, cid, body, "sent")
        self.logs[sender][-1].append(self._event("state", sender, to, cid, body, seq, "sent"))
        self.logs[to][-1].append(self._event("message", sender, to, cid, body, seq, None, to))

    @staticmethod
    def _event(
        kind: str,
        sender: str,
        to: str,
        cid: str,
        body: str,
        seq: int | None,
        state: str | None,
        viewer: str | None = None,
    ) -> dict[str, Any]:
        own = viewer is None or viewer == sender
        return {
            "event": kind,
            "peer": to if own else sender,
            "sender": sender,
            "client_id": cid,
            "body": body,
            "own": own,
            "conv": None if seq is None else CONV,
            "seq": seq,
            "state": state,
        }

    def sql(self, where: str, statement: str, *params: Any) -> None:
        path = self.server if where == "server" else self.stores[where]
        conn = sqlite3.connect(path)
        with conn:
            conn.execute(statement, params)
        conn.close()

    def check(self, **kwargs: Any) -> Report:
        records = [
            ClientRecord(
                self.owner[device],
                self.stores[device],
                [Incarnation(lines) for lines in self.logs[device]],
                self.on_failure[device],
                device="" if device == self.owner[device] else device,
            )
            for device in self.stores
        ]
        return check(self.server, records, **kwargs)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def kinds(report: Report) -> set[str]:
    return {v.kind for v in report.violations}


def test_a_consistent_run_passes(world: World) -> None:
    report = world.check()
    assert report.ok, report.violations
    assert report.counts["composed"] == 4
    assert report.counts["on_server"] == 4
    assert report.counts["acked_events"] == 8  # 4 "sent" states + 4 received messages


def test_acked_message_missing_from_the_server_is_lost(world: World) -> None:
    # The server acked a4, then lost it (e.g. acked before its commit, then crashed).
    world.sql("server", "DELETE FROM messages WHERE client_id='a4'")
    world.sql("server", "UPDATE conversations SET last_seq=3")
    report = world.check()
    assert "lost" in kinds(report)
    assert report.by_kind()["lost"] == 1


def test_acked_message_missing_from_the_peers_store_is_lost(world: World) -> None:
    world.sql("bob", "DELETE FROM messages WHERE client_id='a4'")
    world.sql("bob", "UPDATE conversations SET wm=3")
    assert kinds(world.check()) == {"lost"}


def test_a_message_nobody_sent_is_a_phantom(world: World) -> None:
    # A client that resent a2 under a new client_id: the server stored a second copy.
    world.store_on_server("alice", "bob", "retry-new-id", 5, "body of a2")
    world.store_in("alice", "alice", "bob", "retry-new-id", 5, "body of a2")
    world.store_in("bob", "alice", "bob", "retry-new-id", 5, "body of a2")
    report = world.check()
    assert {"phantom", "duplicated"} <= kinds(report)


def test_a_gap_in_a_store_is_reported(world: World) -> None:
    # The gap rule skipped: bob holds 1, 2, 4 and a watermark of 4.
    world.sql("bob", "DELETE FROM messages WHERE seq=3")
    world.sql("bob", "UPDATE conversations SET wm=4")
    report = world.check()
    assert "gap" in kinds(report)
    assert "lost" in kinds(report)  # b3 never reached bob's view


def test_a_gap_on_the_server_is_reported(world: World) -> None:
    world.sql("server", "UPDATE messages SET seq=9 WHERE seq=4")
    assert "gap" in kinds(world.check())


def test_views_that_disagree_on_a_seq_are_reported(world: World) -> None:
    world.sql("bob", "UPDATE messages SET seq=-1 WHERE seq=1")
    world.sql("bob", "UPDATE messages SET seq=1 WHERE seq=2")
    world.sql("bob", "UPDATE messages SET seq=2 WHERE seq=-1")
    assert "disagree" in kinds(world.check())


def test_a_client_id_at_two_seqs_of_a_store_is_a_duplicate(world: World) -> None:
    world.store_in("bob", "alice", "bob", "a1", 5, "body of a1")
    assert "duplicated" in kinds(world.check())


def test_a_message_shown_twice_in_one_incarnation_is_a_duplicate(world: World) -> None:
    first = next(line for line in world.logs["bob"][0] if line.get("client_id") == "a1")
    world.logs["bob"][0].append(dict(first))
    report = world.check()
    assert kinds(report) == {"duplicated"}


def test_a_message_the_restarted_view_already_shows_must_not_be_added(world: World) -> None:
    first = next(line for line in world.logs["bob"][0] if line.get("client_id") == "a1")
    # A new process: its view starts with the store, which holds a1. Adding it is a double.
    world.logs["bob"].append([dict(first)])
    records = [
        ClientRecord("alice", world.stores["alice"], [Incarnation(world.logs["alice"][0])]),
        ClientRecord(
            "bob",
            world.stores["bob"],
            [
                Incarnation(world.logs["bob"][0]),
                Incarnation(world.logs["bob"][1], frozenset({("alice", "a1")})),
            ],
        ),
    ]
    assert {v.kind for v in check(world.server, records).violations} == {"duplicated"}
    # Without a1 in the view at start (the store lost it in the crash), it is fine.
    records[1].incarnations[1] = Incarnation(world.logs["bob"][1], frozenset())
    assert check(world.server, records).ok


def test_after_an_epoch_reset_the_view_is_rebuilt_so_a_replay_is_not_a_double(
    world: World,
) -> None:
    first = next(line for line in world.logs["bob"][0] if line.get("client_id") == "a1")
    world.logs["bob"][0] += [{"event": "epoch", "old": "e1", "new": "e1"}, dict(first)]
    assert world.check().ok
    world.logs["bob"][0].append(dict(first))
    assert kinds(world.check()) == {"duplicated"}


def test_own_message_stored_and_still_pending_is_shown_twice(world: World) -> None:
    world.sql("alice", "UPDATE outbox SET state='pending' WHERE client_id='a2'")
    report = world.check()
    assert {"duplicated", "wrong_state"} <= kinds(report)


def test_messages_out_of_compose_order_are_reordered(world: World) -> None:
    # alice composed a5 then a6, the server stored a6 first.
    for cid in ("a5", "a6"):
        world.compose("alice", "bob", cid)
        world.wire("alice", cid)
    for cid, seq in (("a6", 5), ("a5", 6)):
        world.store_on_server("alice", "bob", cid, seq, f"body of {cid}")
        for user in ("alice", "bob"):
            world.store_in(user, "alice", "bob", cid, seq, f"body of {cid}")
        world.shown_sent("alice", "bob", cid, seq)
    report = world.check()
    assert kinds(report) == {"reordered"}
    # With on_failure = "continue" a retried message may come later: not compared.
    world.logs["alice"][0].append({"event": "ok", "cmd": "retry", "client_id": "a5"})
    world.on_failure["alice"] = "continue"
    assert world.check().ok


@pytest.mark.parametrize(
    ("on_failure", "failed_first", "reordered"),
    [("continue", True, False), ("continue", False, True), ("hold", True, True)],
)
def test_an_edit_of_a_failed_message_may_come_later_only_with_continue(
    world: World, on_failure: str, failed_first: bool, reordered: bool
) -> None:
    # a5 fails (or is still pending), a6 goes out, then the user edits a5 into a7, which
    # takes a5's place in compose order but reaches the server after a6.
    world.on_failure["alice"] = on_failure
    log = world.logs["alice"][0]
    for cid in ("a5", "a6"):
        world.compose("alice", "bob", cid)
    if failed_first:
        log.append(World._event("state", "alice", "bob", "a5", "body of a5", None, "failed"))
    log.append(World._event("state", "alice", "bob", "a5", "body of a5", None, "given_up"))
    log.append(World._event("message", "alice", "bob", "a7", "body of a7", None, "pending"))
    log.append({"event": "ok", "cmd": "edit", "client_id": "a7", "replaces": "a5"})
    world.sql("alice", "UPDATE outbox SET state='given_up' WHERE client_id='a5'")
    world.outbox("alice", "bob", "a7", "body of a7", "pending")
    for cid, seq in (("a6", 5), ("a7", 6)):
        world.wire("alice", cid)
        world.store_on_server("alice", "bob", cid, seq, f"body of {cid}")
        for user in ("alice", "bob"):
            world.store_in(user, "alice", "bob", cid, seq, f"body of {cid}")
        world.shown_sent("alice", "bob", cid, seq)
    assert kinds(world.check()) == ({"reordered"} if reordered else set())


def test_given_up_before_the_wire_must_not_appear(world: World) -> None:
    world.compose("alice", "bob", "a5")
    world.give_up("alice", "bob", "a5")
    assert world.check().ok
    # ... and yet the server has it: the engine sent a message the user gave up.
    world.store_on_server("alice", "bob", "a5", 5, "body of a5")
    for user in ("alice", "bob"):
        world.store_in(user, "alice", "bob", "a5", 5, "body of a5")
    world.shown_sent("alice", "bob", "a5", 5)
    assert kinds(world.check()) == {"given_up"}


def test_given_up_after_the_wire_may_be_on_the_server_if_shown_as_sent(world: World) -> None:
    world.compose("alice", "bob", "a5")
    world.wire("alice", "a5")  # sent, the ack was lost, then the user gave up
    world.give_up("alice", "bob", "a5")
    world.store_on_server("alice", "bob", "a5", 5, "body of a5")
    for user in ("alice", "bob"):
        world.store_in(user, "alice", "bob", "a5", 5, "body of a5")
    # Still shown as given up although bob can read it: the screen lies.
    assert kinds(world.check()) == {"wrong_state"}
    # The echo came back: shown as sent, as it must be.
    world.shown_sent("alice", "bob", "a5", 5)
    assert world.check().ok


def test_sending_after_the_give_up_is_reported(world: World) -> None:
    world.compose("alice", "bob", "a5")
    world.give_up("alice", "bob", "a5")
    world.wire("alice", "a5")
    assert kinds(world.check()) == {"given_up"}


def test_end_states_that_contradict_the_server_are_wrong(world: World) -> None:
    world.compose("alice", "bob", "a5")
    world.sql("alice", "UPDATE outbox SET state='sent' WHERE client_id='a5'")
    assert kinds(world.check()) == {"wrong_state"}  # sent, but the server lacks it


def test_a_state_that_moves_back_is_wrong(world: World) -> None:
    line = next(x for x in world.logs["alice"][0] if x.get("state") == "sent")
    world.logs["alice"][0].append({**line, "state": "pending", "seq": None, "conv": None})
    assert "wrong_state" in kinds(world.check())


def test_a_screen_left_behind_the_store_is_wrong(world: World) -> None:
    # The last event alice's screen got says pending; the store says sent: never told.
    world.logs["alice"][0] = [x for x in world.logs["alice"][0] if x.get("client_id") != "a4"]
    world.logs["alice"][0] += [
        {**World._event("message", "alice", "bob", "a4", "body of a4", None, "pending")},
        {"event": "ok", "cmd": "send", "client_id": "a4"},
        {"event": "wire", "client_id": "a4"},
    ]
    assert kinds(world.check()) == {"wrong_state"}


def test_a_fresh_message_shown_failed_is_wrong_for_an_always_fresh_client(world: World) -> None:
    world.compose("alice", "bob", "a5")
    failed = World._event("state", "alice", "bob", "a5", "body of a5", None, "failed")
    world.logs["alice"][0].append({**failed, "error": "not delivered within 60 s"})
    world.give_up("alice", "bob", "a5")
    assert world.check().ok  # a short window: failing is allowed
    records = [
        ClientRecord(u, world.stores[u], [Incarnation(world.logs[u][0])], always_fresh=True)
        for u in ("alice", "bob")
    ]
    assert {v.kind for v in check(world.server, records).violations} == {"wrong_state"}


# ---------------------------------------------------------------- composed vs stored, end states


def test_a_body_the_server_altered_everywhere_is_caught(world: World) -> None:
    # Every view agrees (the server fanned out what it stored), so only a comparison with
    # what alice asked to send can see it.
    for where in ("server", "alice", "bob"):
        world.sql(where, "UPDATE messages SET body='altered by the server' WHERE client_id='a2'")
    report = world.check()
    assert kinds(report) == {"altered"}
    assert any("'altered by the server'" in v.detail for v in report.violations)


def test_a_truncated_body_is_caught(world: World) -> None:
    for where in ("server", "alice", "bob"):
        world.sql(where, "UPDATE messages SET body='body o' WHERE client_id='a4'")
    assert kinds(world.check()) == {"altered"}


def test_a_message_filed_under_the_wrong_recipient_is_caught(world: World) -> None:
    for where in ("server", "alice", "bob"):
        world.sql(where, "UPDATE messages SET recipient='carol' WHERE client_id='a1'")
    report = world.check()
    assert kinds(report) == {"altered"}
    assert any("to 'carol'; it was sent to 'bob'" in v.detail for v in report.violations)


def test_an_outbox_body_that_differs_from_the_command_is_caught(world: World) -> None:
    world.compose("alice", "bob", "a5")
    world.sql("alice", "UPDATE outbox SET body='not what was typed' WHERE client_id='a5'")
    assert kinds(world.check()) == {"altered", "wrong_state"}  # and it never ended


def test_a_failed_message_still_in_the_outbox_is_a_proper_end(world: World) -> None:
    world.compose("alice", "bob", "a5")
    log = world.logs["alice"][-1]
    log.append(World._event("state", "alice", "bob", "a5", "body of a5", None, "failed"))
    world.sql("alice", "UPDATE outbox SET state='failed' WHERE client_id='a5'")
    assert world.check().ok


def test_an_outbox_row_deleted_is_caught(world: World) -> None:
    world.compose("alice", "bob", "a5")
    log = world.logs["alice"][-1]
    log.append(World._event("state", "alice", "bob", "a5", "body of a5", None, "failed"))
    world.sql("alice", "DELETE FROM outbox WHERE client_id='a5'")
    report = world.check()
    assert kinds(report) == {"dropped"}
    assert report.violations[0].key == ("alice", "a5")


def test_a_message_still_pending_after_convergence_never_ended(world: World) -> None:
    world.compose("alice", "bob", "a5")
    assert kinds(world.check()) == {"wrong_state"}
    # Without convergence the run is judged by that alone, not by what is still under way.
    assert kinds(world.check(converged_in=None)) == {"not_converged"}


def test_a_give_up_nobody_asked_for_is_caught(world: World) -> None:
    world.compose("alice", "bob", "a5")
    log = world.logs["alice"][-1]
    log.append(World._event("state", "alice", "bob", "a5", "body of a5", None, "given_up"))
    world.sql("alice", "UPDATE outbox SET state='given_up' WHERE client_id='a5'")
    report = world.check()
    assert kinds(report) == {"given_up"}
    assert "nobody asked" in report.violations[0].detail
    # The same end, asked for: fine.
    log.append({"event": "ok", "id": len(log), "cmd": "give_up", "client_id": "a5"})
    assert world.check().ok


def test_a_silent_give_up_in_the_store_is_caught(world: World) -> None:
    # No event at all: the store alone says given up.
    world.compose("alice", "bob", "a5")
    world.sql("alice", "UPDATE outbox SET state='given_up' WHERE client_id='a5'")
    assert "given_up" in kinds(world.check())


def phone_sends(world: World, cid: str, seq: int) -> None:
    """alice's phone composes ``cid`` to bob; stored at ``seq``, in every store but the
    phone's messages (the test adds those)."""
    body = f"body of {cid}"
    log = world.logs["alice-phone"][-1]
    log.append(World._event("message", "alice", "bob", cid, body, None, "pending"))
    log.append(
        {"event": "ok", "id": len(log), "cmd": "send", "client_id": cid, "to": "bob", "body": body}
    )
    log.append({"event": "wire", "client_id": cid})
    world.outbox("alice-phone", "bob", cid, body, "sent")
    log.append(World._event("state", "alice", "bob", cid, body, seq, "sent"))
    world.store_on_server("alice", "bob", cid, seq, body)
    for device in ("alice", "bob"):
        world.store_in(device, "alice", "bob", cid, seq, body)


def phone_with_p5(world: World) -> None:
    """alice gets a phone that catches up on a1..a4 and then sends p5 (seq 5) itself."""
    world.add_device("alice-phone", "alice")
    for seq, (sender, to, cid) in enumerate(
        [
            ("alice", "bob", "a1"),
            ("alice", "bob", "a2"),
            ("bob", "alice", "b3"),
            ("alice", "bob", "a4"),
        ],
        start=1,
    ):
        world.store_in("alice-phone", sender, to, cid, seq, f"body of {cid}")
    phone_sends(world, "p5", 5)
    world.store_in("alice-phone", "alice", "bob", "p5", 5, "body of p5")


def test_a_second_device_of_a_user_is_judged_with_its_own_store(world: World) -> None:
    phone_with_p5(world)
    report = world.check()
    assert report.ok, report.violations
    assert report.counts["composed"] == 5
    # The laptop composed a1..a4, the phone p5: neither is a phantom of the other, and the
    # phone's message is in compose order although the laptop composed later ones first.

    # A message missing from one device's store is lost on that device only.
    world.sql("alice-phone", "DELETE FROM messages WHERE client_id='a2'")
    report = world.check()
    assert kinds(report) == {"lost", "gap"}
    assert all("alice-phone" in v.detail for v in report.violations)


def test_a_second_devices_own_message_altered_or_dropped_is_caught(world: World) -> None:
    phone_with_p5(world)
    for where in ("server", "alice", "bob", "alice-phone"):
        world.sql(where, "UPDATE messages SET body='changed' WHERE client_id='p5'")
    assert kinds(world.check()) == {"altered"}
    # The phone's outbox row is the one that must exist, not the laptop's.
    world.sql("alice-phone", "DELETE FROM outbox WHERE client_id='p5'")
    world.sql("server", "DELETE FROM messages WHERE client_id='p5'")
    world.sql("server", "UPDATE conversations SET last_seq=4")
    for device in ("alice", "bob", "alice-phone"):
        world.sql(device, "DELETE FROM messages WHERE client_id='p5'")
        world.sql(device, "UPDATE conversations SET wm=4")
    assert "dropped" in kinds(world.check())


def old_epoch_with_a5(world: World) -> Path:
    """alice's a5 was stored (seq 5) and shown sent by a server whose history was then lost:
    the database of that epoch is returned; the current server never had a5."""
    old = world.root / "epoch1.db"
    shutil.copy(world.server, old)
    world.compose("alice", "bob", "a5")
    world.wire("alice", "a5")
    conn = sqlite3.connect(old)
    with conn:
        conn.execute("UPDATE conversations SET last_seq=5")
        conn.execute(
            "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts) "
            "VALUES (?, 5, 'alice', 'bob', 'a5', 'body of a5', 1005)",
            (CONV,),
        )
    conn.close()
    world.shown_sent("alice", "bob", "a5", 5)
    return old


def test_a_message_acked_before_an_epoch_change_counts_as_stored(world: World) -> None:
    old = old_epoch_with_a5(world)
    assert {"lost", "wrong_state"} <= kinds(world.check())  # judged by the new server alone
    assert world.check(earlier_servers=[old]).ok


def test_the_server_of_an_earlier_epoch_is_judged_too(world: World) -> None:
    old = old_epoch_with_a5(world)
    world.sql("alice", "UPDATE outbox SET body='body of a5' WHERE client_id='a5'")
    conn = sqlite3.connect(old)
    with conn:
        conn.execute("UPDATE messages SET body='rewritten' WHERE client_id='a5'")
    conn.close()
    report = world.check(earlier_servers=[old])
    assert kinds(report) == {"altered"}


def test_no_convergence_is_reported(world: World) -> None:
    assert kinds(world.check(converged_in=None)) == {"not_converged"}
    assert kinds(world.check(converged_in=7.5)) == {"not_converged"}
    assert world.check(converged_in=4.9).ok


# ---------------------------------------------------------------- real broken variants


def directed(actions: list[Action], duration: float) -> Schedule:
    return Schedule(
        seed=0,
        index=0,
        clients=3,
        freshness=(60.0, 60.0, 60.0),
        on_failure=("hold", "hold", "hold"),
        actions=tuple(sorted(actions, key=lambda a: a.at)),
        duration=duration,
    )


def sends(times: list[float], sender: int = 0, peer: int = 1) -> list[Action]:
    return [Action(t, "send", sender, peer) for t in times]


async def play(tmp_path: Path, schedule: Schedule, **variants: Any) -> ScheduleResult:
    return await run_schedule(
        schedule, root=tmp_path, keep="never", convergence_grace=0.5, **variants
    )


@pytest.mark.parametrize("variant", [None, "ack-before-commit"])
async def test_server_that_acks_before_committing_is_caught(
    tmp_path: Path, variant: str | None
) -> None:
    # The broken server acks its third batch and dies before the commit; the harness
    # restarts it when the faults stop.
    schedule = directed(sends([0.1, 0.35, 0.6, 1.2]), 1.5)
    result = await play(tmp_path, schedule, server_variant=variant)
    report = result.report
    if variant is None:
        assert report.ok, report.violations
    else:
        assert f"server exited with status {CRASH_STATUS}" in result.notes
        assert report.by_kind()["lost"] >= 1, report.violations
        assert any("not on server" in v.detail for v in report.violations)


@pytest.mark.parametrize("variant", [None, "new-client-id"])
async def test_client_that_retries_with_a_new_client_id_is_caught(
    tmp_path: Path, variant: str | None
) -> None:
    # Frames from client 0 are lost for a while: it times out and resends after reconnecting.
    schedule = directed(
        [Action(0.3, "blackhole_up", 0, duration=1.0), *sends([0.1, 0.5, 0.7])], 2.0
    )
    report = (await play(tmp_path, schedule, client_variant=variant)).report
    if variant is None:
        assert report.ok, report.violations
    else:
        found = report.by_kind()
        assert found["phantom"] >= 1, report.violations
        assert found["duplicated"] >= 1, report.violations


@pytest.mark.parametrize("variant", [None, "skip-gap"])
async def test_client_that_skips_the_gap_rule_is_caught(
    tmp_path: Path, variant: str | None
) -> None:
    # A lossy server drops every third live message to the recipient: client 1 sees gaps.
    # The real engine fetches each missing range; the broken one jumps over it.
    schedule = directed(sends([0.1 + 0.12 * i for i in range(10)]), 1.5)
    result = await play(tmp_path, schedule, server_variant="lossy-fanout", client_variant=variant)
    report = result.report
    # Messages 3, 6 and 9 never reached client 1 live.
    assert sum("lossy-fanout: dropped" in line for line in result.server_log) == 3
    if variant is None:
        assert report.ok, report.violations
    else:
        found = report.by_kind()
        assert found["gap"] >= 1, report.violations
        assert found["lost"] >= 1, report.violations


@pytest.mark.parametrize("variant", ["alter-body", "truncate-body", "wrong-recipient"])
async def test_server_that_stores_something_else_is_caught(tmp_path: Path, variant: str) -> None:
    # The broken server changes every third send before storing it, then acks and fans out
    # what it stored, so every view agrees with every other: only what client 0 composed
    # tells the truth. (The correct server passes the same schedule in the tests above.)
    schedule = directed(sends([0.1, 0.3, 0.5, 0.7]), 1.2)
    result = await play(tmp_path, schedule, server_variant=variant)
    assert sum("broken server:" in line for line in result.server_log) == 1, result.server_log
    report = result.report
    assert report.by_kind()["altered"] == 1, report.violations
    detail = next(v.detail for v in report.violations if v.kind == "altered")
    if variant == "wrong-recipient":
        assert "it was sent to" in detail
    else:
        assert "it was composed as" in detail


@pytest.mark.parametrize("variant", [None, "drop-outbox-row"])
async def test_client_that_drops_a_failed_outbox_row_is_caught(
    tmp_path: Path, variant: str | None
) -> None:
    # Client 0 is cut off for longer than its 0.6 s freshness window, so its first message
    # fails (never sent); a correct client keeps it in the outbox for the user to retry or
    # give up, the broken one deletes it.
    schedule = Schedule(
        seed=0,
        index=0,
        clients=3,
        freshness=(0.6, 60.0, 60.0),
        on_failure=("hold", "hold", "hold"),
        actions=(Action(0.0, "reset", 0, duration=1.5), *sends([0.1, 1.8, 2.0])),
        duration=2.2,
    )
    report = (await play(tmp_path, schedule, client_variant=variant)).report
    if variant is None:
        assert report.ok, report.violations
    else:
        assert report.by_kind()["dropped"] >= 1, report.violations


@pytest.mark.parametrize("variant", [None, "spontaneous-give-up"])
async def test_client_that_gives_up_on_its_own_is_caught(
    tmp_path: Path, variant: str | None
) -> None:
    # Client 0's link is reset and every reconnect refused for a second, so its messages
    # stay pending, never on the wire; the broken client gives up its third one by itself.
    schedule = directed([Action(0.0, "reset", 0, duration=1.0), *sends([0.1, 0.2, 0.3])], 1.5)
    report = (await play(tmp_path, schedule, client_variant=variant)).report
    if variant is None:
        assert report.ok, report.violations
    else:
        found = report.by_kind()
        assert found["given_up"] == 1, report.violations
        assert any("nobody asked" in v.detail for v in report.violations)


async def test_a_second_device_of_one_user_passes_and_sees_everything(tmp_path: Path) -> None:
    # u0 has two devices (clients 0 and 3); both send to u1 while u1 answers, and client 3's
    # link is cut for a while. Each device must end with the whole conversation.
    schedule = Schedule(
        seed=0,
        index=0,
        clients=3,
        freshness=(60.0, 60.0, 60.0, 60.0),
        on_failure=("hold", "hold", "hold", "hold"),
        actions=(
            Action(0.1, "send", 0, 1),
            Action(0.2, "send", 3, 1),
            Action(0.3, "blackhole", 3, duration=0.8),
            Action(0.4, "send", 3, 1),
            Action(0.5, "send", 1, 0),
            Action(0.6, "send", 0, 1),
        ),
        duration=1.5,
        second_device=0,
    )
    result = await play(tmp_path, schedule)
    report = result.report
    assert report.ok, report.violations
    assert report.counts["composed"] == 5 and report.counts["on_server"] == 5


# ---------------------------------------------------------------- groups: the visibility rule

GROUP = "g0123456789ab"
GKEY = "#" + GROUP


class GroupWorld:
    """A hand-made group history, as views (no database): alice creates the group with bob
    and carol, adds dave, removes carol, bob renames it and leaves, alice adds carol back.

    seq  event                                   visible to
    1    created by alice [alice, bob, carol]    alice bob carol
    2    text alice                              alice bob carol
    3    text bob                                alice bob carol
    4    added dave (by alice)                   alice bob carol dave
    5    text carol                              alice bob carol dave
    6    removed carol (by alice)                alice bob carol dave
    7    text dave                               alice bob dave
    8    renamed "plans" (by bob)                alice bob dave
    9    left bob                                alice bob dave
    10   text alice                              alice dave
    11   added carol (by alice)                  alice carol dave
    12   text carol                              alice carol dave
    """

    USERS = ("alice", "bob", "carol", "dave")

    def __init__(self) -> None:
        plan: list[tuple[str, str, dict[str, Any]]] = [
            ("created", "alice", {"title": "trip", "members": ("alice", "bob", "carol")}),
            ("text", "alice", {}),
            ("text", "bob", {}),
            ("added", "alice", {"user": "dave"}),
            ("text", "carol", {}),
            ("removed", "alice", {"user": "carol"}),
            ("text", "dave", {}),
            ("renamed", "bob", {"title": "plans"}),
            ("left", "bob", {"user": "bob"}),
            ("text", "alice", {}),
            ("added", "alice", {"user": "carol"}),
            ("text", "carol", {}),
        ]
        self.server: list[Row] = []
        for seq, (kind, sender, extra) in enumerate(plan, start=1):
            body = f"text {seq} of {sender}" if kind == "text" else ""
            cid = f"{sender[0]}{seq}"
            self.server.append(Row(GROUP, seq, sender, "", cid, body, kind, **extra))
        self.last_seq = len(plan)
        # The server's members table, as its events make it.
        self.intervals: dict[str, dict[str, list[tuple[int, int | None]]]] | None = {
            GROUP: {
                "alice": [(1, None)],
                "bob": [(1, 9)],
                "carol": [(1, 6), (11, None)],
                "dave": [(4, None)],
            }
        }
        self.logs: dict[str, list[dict[str, Any]]] = {u: [] for u in self.USERS}
        self.outboxes: dict[str, list[OutRow]] = {u: [] for u in self.USERS}
        self.stores: dict[str, list[Row]] = {u: [] for u in self.USERS}
        self.wm: dict[str, int] = {}
        self.members: dict[str, tuple[str, ...]] = {}
        stream = GroupStream(GROUP, self.server)
        assert not stream.problems, stream.problems
        for r in self.server:
            self.compose(r)
            for u in self.USERS:
                if stream.sees(u, r.seq):
                    self.show(u, r)
                    self.stores[u].append(r)
                    self.wm[u] = r.seq
                    if r.kind != "text":
                        members = sorted(stream.members_at(r.seq))
                        self.logs[u].append(self.summary(members))
        for u in self.USERS:
            self.members[u] = tuple(sorted(stream.members_at(self.wm[u])))

    @staticmethod
    def summary(members: list[str]) -> dict[str, Any]:
        return {"event": "conversation", "peer": GKEY, "conv": GROUP, "kind": "group",
                "members": members}  # fmt: skip

    def compose(self, r: Row) -> None:
        """The sender's side: the command, its ok line, the wire, the ack."""
        log = self.logs[r.sender]
        cmd = {"text": "send", "created": "create", "added": "add", "removed": "remove",
               "left": "leave", "renamed": "rename"}[r.kind]  # fmt: skip
        ok: dict[str, Any] = {"event": "ok", "cmd": cmd, "client_id": r.client_id}
        peer = "+" + r.client_id if r.kind == "created" else GKEY
        if r.kind == "created":
            ok.update(title=r.title, members=[m for m in r.members or () if m != r.sender])
        else:
            ok["conv"] = GROUP
        if r.kind == "text":
            ok["body"] = r.body
        if r.kind in ("added", "removed"):
            ok["user"] = r.user
        if r.kind == "renamed":
            ok["title"] = r.title
        log.append(self.event("message", r, peer=peer, seq=None, conv=None, state="pending"))
        log.append(ok)
        log.append({"event": "wire", "client_id": r.client_id})
        log.append(self.event("state", r, state="sent"))
        self.outboxes[r.sender].append(
            OutRow(r.client_id, GKEY, r.body, "sent", len(self.outboxes[r.sender]) + 1, True,
                   r.kind, r.user, r.title)
        )  # fmt: skip

    def show(self, user: str, r: Row) -> None:
        if user != r.sender:
            self.logs[user].append(self.event("message", r, own=False))

    @staticmethod
    def event(kind: str, r: Row, **changes: Any) -> dict[str, Any]:
        line = {
            "event": kind,
            "peer": GKEY,
            "sender": r.sender,
            "client_id": r.client_id,
            "body": r.body,
            "own": True,
            "conv": GROUP,
            "seq": r.seq,
            "state": None,
            "kind": r.kind,
            "user": r.user,
            "title": r.title,
        }
        line.update(changes)
        if not line["own"]:
            line["state"] = None
        return line

    def row(self, seq: int) -> Row:
        return next(r for r in self.server if r.seq == seq)

    def judge(self, **kwargs: Any) -> Report:
        server = ServerView(list(self.server), {}, {GROUP: self.last_seq}, self.intervals)
        stores = {
            u: StoreView(
                list(self.stores[u]),
                list(self.outboxes[u]),
                {GROUP: self.wm[u]} if u in self.wm else {},
                {GROUP: self.members[u]} if u in self.members else {},
            )
            for u in self.USERS
        }
        records = [
            ClientRecord(u, Path(f"/nonexistent/{u}"), [Incarnation(self.logs[u])])
            for u in self.USERS
        ]
        return judge(server, stores, records, **kwargs)


@pytest.fixture
def group() -> GroupWorld:
    return GroupWorld()


def test_the_visibility_intervals_follow_the_membership_events(group: GroupWorld) -> None:
    stream = GroupStream(GROUP, group.server)
    assert intervals(stream.visible("alice")) == [(1, 12)]
    assert intervals(stream.visible("bob")) == [(1, 9)]  # up to and including his 'left'
    assert intervals(stream.visible("carol")) == [(1, 6), (11, 12)]  # removed, re-added
    assert intervals(stream.visible("dave")) == [(4, 12)]  # from his 'added'
    assert stream.members_at(6) == {"alice", "bob", "dave"}
    assert stream.members_at(12) == {"alice", "carol", "dave"}
    assert stream.title[8] == "plans" and stream.creator == "alice"
    assert stream.terms("carol") == [(1, 6), (11, None)]
    assert stream.terms("bob") == [(1, 9)] and stream.terms("dave") == [(4, None)]


def test_a_consistent_group_history_passes(group: GroupWorld) -> None:
    report = group.judge()
    assert report.ok, report.violations
    assert report.counts["composed"] == 12  # six commands and six texts
    assert report.counts["on_server"] == 12


def test_a_removed_member_who_holds_a_later_event_is_caught(group: GroupWorld) -> None:
    # The server kept fanning out to carol after her removal (seq 7, her own store), and
    # bob got alice's text after he left (seq 10, shown on his screen).
    group.stores["carol"].append(group.row(7))
    group.stores["carol"].sort(key=lambda r: r.seq)
    group.logs["bob"].append(GroupWorld.event("message", group.row(10), own=False))
    report = group.judge()
    assert kinds(report) == {"leaked"}
    details = " ".join(v.detail for v in report.violations)
    assert f"carol's store holds {GROUP}/7" in details and "sees only 1..6,11..12" in details
    assert f"bob was shown {GROUP}/10" in details


def test_a_member_who_holds_events_from_before_the_join_is_caught(group: GroupWorld) -> None:
    group.stores["dave"].insert(0, group.row(2))
    assert kinds(group.judge()) == {"leaked"}


def test_a_hole_inside_a_members_interval_is_caught(group: GroupWorld) -> None:
    # dave's store misses seq 5 (carol's text) below its watermark: a skipped gap.
    group.stores["dave"] = [r for r in group.stores["dave"] if r.seq != 5]
    report = group.judge()
    assert kinds(report) == {"gap", "lost"}
    assert any("dave's store, group" in v.detail for v in report.violations)


def test_a_re_added_member_missing_the_second_interval_is_caught(group: GroupWorld) -> None:
    # carol's store stopped at her removal: the server's 11 and 12 never reached her.
    group.stores["carol"] = [r for r in group.stores["carol"] if r.seq <= 6]
    group.wm["carol"] = 6
    group.members["carol"] = ("alice", "bob", "dave")
    report = group.judge()
    assert kinds(report) == {"lost"}
    assert {v.key for v in report.violations} == {("alice", "a11"), ("carol", "c12")}


def test_a_watermark_on_an_invisible_seq_is_caught(group: GroupWorld) -> None:
    group.wm["carol"] = 9  # inside the seqs she must not see
    assert "gap" in kinds(group.judge())


def test_a_server_that_skips_a_seq_in_a_group_is_caught(group: GroupWorld) -> None:
    # The server's seq 8 is missing (the rename went nowhere) though last_seq says 12.
    group.server = [r for r in group.server if r.seq != 8]
    for u in group.USERS:
        group.stores[u] = [r for r in group.stores[u] if r.seq != 8]
    report = group.judge()
    assert "gap" in kinds(report)
    expected = f"server conversation {GROUP}: seqs 1..7,9..12"
    assert any(expected in v.detail for v in report.violations)


def test_an_acked_group_message_missing_from_the_server_is_lost(group: GroupWorld) -> None:
    # alice was told seq 10 is stored; the server has no such event.
    group.server = [r for r in group.server if r.seq != 10]
    group.last_seq = 12
    assert "lost" in kinds(group.judge())


def test_a_group_command_stored_twice_is_a_duplicate(group: GroupWorld) -> None:
    # The rename, retried after a lost ack, was stored again as seq 13.
    again = Row(GROUP, 13, "bob", "", "b8", "", "renamed", title="plans")
    group.server.append(again)
    group.last_seq = 13
    for u in ("alice", "dave"):
        group.stores[u].append(again)
        group.wm[u] = 13
    assert "duplicated" in kinds(group.judge())


def test_a_server_that_accepts_a_removed_members_text_is_caught(group: GroupWorld) -> None:
    # carol (removed at 6) got a text in at seq 7 in place of dave's.
    seven = Row(GROUP, 7, "carol", "", "c7", "text 7 of carol", "text")
    group.server[6] = seven
    for u in ("alice", "bob", "dave"):
        group.stores[u] = [seven if r.seq == 7 else r for r in group.stores[u]]
    report = group.judge()
    assert "membership" in kinds(report)
    assert any("seq 7 (text by carol): the sender is not a member" in v.detail
               for v in report.violations)  # fmt: skip


def test_a_member_who_adds_against_the_rules_is_caught(group: GroupWorld) -> None:
    # bob (not the creator) added dave, and the server stored it.
    four = Row(GROUP, 4, "bob", "", "b4", "", "added", user="dave")
    stream = GroupStream(GROUP, [four if r.seq == 4 else r for r in group.server])
    assert any("only the creator may add" in p for p in stream.problems)
    twice = Row(GROUP, 4, "alice", "", "a4", "", "added", user="bob")
    stream = GroupStream(GROUP, [twice if r.seq == 4 else r for r in group.server])
    assert any("bob is already a member" in p for p in stream.problems)


def test_a_store_whose_member_list_is_not_the_servers_is_caught(group: GroupWorld) -> None:
    # dave's client applied the removal of carol but never the re-add.
    group.members["dave"] = ("alice", "dave")
    report = group.judge()
    assert kinds(report) == {"members"}
    assert "at seq 12" in report.violations[0].detail


def test_a_member_list_shown_that_the_server_never_implied_is_caught(group: GroupWorld) -> None:
    # After seq 6 (carol removed), dave's screen still lists carol and not bob.
    log = group.logs["dave"]
    at = next(i for i, x in enumerate(log) if x.get("seq") == 6 and x["event"] == "message")
    log.insert(at + 1, GroupWorld.summary(["alice", "carol", "dave"]))
    assert world_kinds(group) == {"members"}
    # Before the removal's event, the list before it is fine: a summary and the event it
    # follows may come in either order.
    del log[at + 1]
    log.insert(at, GroupWorld.summary(["alice", "bob", "carol", "dave"]))
    assert group.judge().ok


def world_kinds(group: GroupWorld) -> set[str]:
    return kinds(group.judge())


def test_an_added_event_with_the_wrong_member_list_is_caught(group: GroupWorld) -> None:
    # carol's copy of her re-add (seq 11) carries where her view begins: the list after it.
    line = next(x for x in group.logs["carol"] if x.get("seq") == 11)
    line["members"] = ["alice", "carol", "dave"]
    assert group.judge().ok
    line["members"] = ["alice", "bob", "carol", "dave"]  # bob had left at 9
    assert kinds(group.judge()) == {"members"}


def test_a_command_the_server_turned_into_another_is_caught(group: GroupWorld) -> None:
    # alice asked to remove carol; the server removed dave (and everyone agrees on it).
    six = Row(GROUP, 6, "alice", "", "a6", "", "removed", user="dave")
    group.server[5] = six
    for u in group.USERS:
        group.stores[u] = [six if r.seq == 6 else r for r in group.stores[u]]
    report = group.judge()
    assert "altered" in kinds(report)
    assert any("removed a6 of 'dave', not 'carol'" in v.detail for v in report.violations)


def test_a_group_message_sent_after_the_removal_is_not_lost(group: GroupWorld) -> None:
    # carol queued a text while removed; the server refused it (not_member) and it ended
    # failed in her outbox: a proper end, nothing lost, nothing leaked.
    log = group.logs["carol"]
    pending = {"event": "message", "peer": GKEY, "sender": "carol", "client_id": "c-late",
               "body": "too late", "own": True, "conv": None, "seq": None, "state": "pending",
               "kind": "text"}  # fmt: skip
    log += [
        pending,
        {"event": "ok", "cmd": "send", "client_id": "c-late", "conv": GROUP, "body": "too late"},
        {"event": "wire", "client_id": "c-late"},
        {**pending, "event": "state", "state": "failed",
         "error": "you are no longer a member of this group"},
    ]  # fmt: skip
    group.outboxes["carol"].append(OutRow("c-late", GKEY, "too late", "failed", 99, False, "text"))
    assert group.judge().ok


def test_a_server_membership_record_that_disagrees_with_its_events_is_caught(
    group: GroupWorld,
) -> None:
    # The members table (what the server's checks read) never recorded carol's removal:
    # the events say she was out from 6 to 11.
    assert group.intervals is not None
    group.intervals[GROUP]["carol"] = [(1, None)]
    report = group.judge()
    assert kinds(report) == {"membership"}
    assert "records carol's membership as [(1, None)]" in report.violations[0].detail
    group.intervals = None  # a schema without that table: nothing to compare
    assert group.judge().ok


def group_schedule(actions: list[Action], duration: float) -> Schedule:
    return Schedule(
        seed=0,
        index=0,
        clients=3,
        freshness=(60.0, 60.0, 60.0),
        on_failure=("hold", "hold", "hold"),
        actions=tuple(sorted(actions, key=lambda a: a.at)),
        duration=duration,
        groups=1,
    )


# u0 creates a group with u1 and u2; all three talk; u0 removes u2; u0 and u1 go on.
REMOVAL = [
    Action(0.0, "create", 0, group=0, members=(1, 2)),
    Action(0.4, "gsend", 0, group=0),
    Action(0.45, "gsend", 2, group=0),
    Action(0.5, "gsend", 1, group=0),
    Action(0.7, "remove", 0, 2, group=0),
    Action(1.0, "gsend", 0, group=0),
    Action(1.1, "gsend", 1, group=0),
    Action(1.2, "gsend", 0, group=0),
    Action(1.3, "gsend", 1, group=0),
]


@pytest.mark.parametrize("variant", [None, "fanout-to-removed"])
async def test_server_that_keeps_fanning_out_to_a_removed_member_is_caught(
    tmp_path: Path, variant: str | None
) -> None:
    result = await play(tmp_path, group_schedule(REMOVAL, 1.6), server_variant=variant)
    report = result.report
    assert result.user_actions["remove:ok"] == 1 and result.user_actions["gsend:ok"] >= 6
    if variant is None:
        assert report.ok, report.violations
        return
    assert any("fanout-to-removed:" in line for line in result.server_log), result.server_log
    assert report.by_kind()["leaked"] >= 1, report.violations
    assert any("u2" in v.detail and v.kind == "leaked" for v in report.violations)


async def test_server_that_skips_a_seq_in_a_group_is_caught(tmp_path: Path) -> None:
    result = await play(tmp_path, group_schedule(REMOVAL, 1.6), server_variant="skip-group-seq")
    assert any("skip-group-seq:" in line for line in result.server_log), result.server_log
    report = result.report
    found = report.by_kind()
    assert found["gap"] >= 1, report.violations
    assert any(v.kind == "gap" and v.detail.startswith("server conversation g")
               for v in report.violations)  # fmt: skip


def test_a_member_list_derived_while_a_gap_is_open_is_accepted(group: GroupWorld) -> None:
    # dave got seq 12 before 11 (carol's re-add, fetched as a gap): the summary in between
    # is derived without 11, the list as of seq 10. Found by the long run (seed 20261202 #55).
    log = group.logs["dave"]
    at11 = next(i for i, x in enumerate(log) if x.get("seq") == 11 and x["event"] == "message")
    eleven = log.pop(at11)
    at12 = next(i for i, x in enumerate(log) if x.get("seq") == 12 and x["event"] == "message")
    log.insert(at12 + 1, GroupWorld.summary(["alice", "dave"]))
    log.insert(at12 + 2, eleven)
    assert group.judge().ok
    log[at12 + 1] = GroupWorld.summary(["alice", "bob", "dave"])  # bob left at 9
    assert kinds(group.judge()) == {"members"}
