"""The store's group side: the in-place migration, members derived from events, the move
of a pending group to its conv id, and a repair that keeps group commands."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from tui_chat import protocol as p
from tui_chat.core.models import ConvKind, OutState
from tui_chat.core.store import LocalStore, OutboxRow, create_args, encode_create_args

K = p.MessageKind
ME = "alice"

# The schema of a store written before groups (version 1), as that code created it.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE conversations (
    peer TEXT PRIMARY KEY, conv TEXT UNIQUE, wm INTEGER NOT NULL DEFAULT 0,
    read_seq INTEGER NOT NULL DEFAULT 0, peer_read_seq INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0, last_ts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE messages (
    conv TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    client_id TEXT NOT NULL, body TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (conv, seq)) WITHOUT ROWID;
CREATE TABLE outbox (
    client_id TEXT PRIMARY KEY, peer TEXT NOT NULL, body TEXT NOT NULL,
    created_at INTEGER NOT NULL, fresh_since INTEGER NOT NULL, ord INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL, error TEXT,
    retryable INTEGER NOT NULL DEFAULT 1, conv TEXT, seq INTEGER);
CREATE INDEX outbox_open ON outbox (state, peer, ord);
"""


def test_a_store_from_before_groups_gains_the_columns_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('user', ?)", (ME,))
    db.execute("INSERT INTO conversations(peer, conv, wm, unread) VALUES ('bob', 'c1', 2, 1)")
    db.execute("INSERT INTO messages VALUES ('c1', 1, 'alice', 'bob', 'x1', 'hi', 10)")
    db.execute("INSERT INTO messages VALUES ('c1', 2, 'bob', 'alice', 'y1', 'hi alice', 11)")
    db.execute(
        "INSERT INTO outbox(client_id, peer, body, created_at, fresh_since, ord, state)"
        " VALUES ('q1', 'bob', 'queued', 12, 12, 1, 'pending')"
    )
    db.commit()
    db.close()

    store = LocalStore(path, ME)
    assert store.watermark("c1") == 2
    [row] = store.open_outbox()
    assert (row.client_id, row.op, row.arg, row.body) == ("q1", "send", None, "queued")
    views = store.page("bob", None, 10)
    assert [(m.kind, m.peer, m.body) for m in views] == [
        (K.TEXT, "bob", "hi"),
        (K.TEXT, "bob", "hi alice"),
    ]
    summary = store.summary("bob", [])
    assert summary.kind is ConvKind.DIRECT and summary.unread == 1 and summary.joined
    store.close()
    LocalStore(path, ME).close()  # opening again changes nothing


def _event(
    store: LocalStore,
    seq: int,
    kind: str,
    sender: str,
    *,
    user: str | None = None,
    title: str | None = None,
    members: list[str] | None = None,
    body: str = "",
) -> None:
    store.ensure_conversation("#g1", "g1")
    store.insert_message(
        "g1", seq, sender, "", f"{sender}-{seq}", body, seq, kind=kind, user=user, title=title,
        members=members,
    )  # fmt: skip
    store.advance_watermark("g1")
    if kind != K.TEXT:
        store.recompute_group("#g1", "g1")


def test_members_derive_from_events_in_seq_order_whatever_order_they_arrive(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "s.sqlite3", ME)
    _event(store, 1, K.CREATED, "bob", title="t", members=["bob", ME, "carol"])
    _event(store, 4, K.REMOVED, "bob", user="carol")
    _event(store, 5, K.RENAMED, "dave", title="t2")
    # Seqs 2 and 3 fill the gap later: dave joined and then carol's removal applies.
    assert store.members("#g1") == ["bob", ME]
    _event(store, 3, K.ADDED, "bob", user="dave")
    _event(store, 2, K.TEXT, "carol", body="hi @Alice")
    assert store.watermark("g1") == 5
    summary = store.summary("#g1", [])
    assert summary.members == ("bob", ME, "dave")
    assert summary.title == "t2" and summary.creator == "bob" and summary.joined
    assert summary.kind is ConvKind.GROUP and summary.unread == 1 and summary.mentions == 1
    assert store.mark_read("#g1", 5)
    assert store.summary("#g1", []).mentions == 0

    # Removed, then added again: the added-of-me copy carries the list, and the
    # watermark starts just below it (seqs 7..9 are not ours to see).
    _event(store, 6, K.REMOVED, "bob", user=ME)
    assert not store.summary("#g1", []).joined
    store.begin_view("g1", 10)
    _event(store, 10, K.ADDED, "bob", user=ME, members=["bob", "dave", "erin", ME])
    assert store.watermark("g1") == 10
    summary = store.summary("#g1", [])
    assert summary.joined and summary.members == ("bob", "dave", "erin", ME)
    _event(store, 11, K.LEFT, "erin", user="erin")
    assert store.members("#g1") == ["bob", "dave", ME]
    store.close()


def test_a_confirmed_pending_group_moves_its_rows_draft_and_members(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s.sqlite3", ME)
    create = OutboxRow(
        "cid1", "+cid1", "", 5, store.next_ord(), op="create",
        arg=encode_create_args("plans", ["bob", ME, "bob"]),
    )  # fmt: skip
    store.add_outbox(create)
    store.save_draft("+cid1", "first words")
    pending = store.summary("+cid1", [create])
    assert pending.kind is ConvKind.GROUP and pending.conv is None
    assert pending.title == "plans" and pending.members == (ME, "bob") and pending.creator == ME
    assert create_args(create).members == ["bob", ME, "bob"]  # as asked; deduplicated above

    new = store.replace_pending_group("+cid1", "g9")
    assert new == "#g9" and store.peer_of("g9") == "#g9" and store.conv_of("#g9") == "g9"
    assert store.draft("#g9") == "first words" and store.draft("+cid1") == ""
    assert [r.peer for r in store.open_outbox()] == ["#g9"]
    assert store.members("#g9") == [ME, "bob"] and not store.has_conversation("+cid1")
    store.close()


def test_a_repaired_store_keeps_group_commands_and_the_pending_group(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = LocalStore(path, ME)
    store.add_outbox(
        OutboxRow(
            "cid1", "+cid1", "", 5, store.next_ord(), op="create",
            arg=encode_create_args("plans", ["bob"]),
        )
    )  # fmt: skip
    store.add_outbox(OutboxRow("cid2", "#g1", "", 6, store.next_ord(), op="add", arg="carol"))
    store.add_outbox(OutboxRow("cid3", "#g1", "", 7, store.next_ord(), op="leave"))
    store.close()
    rng = random.Random(9)
    with path.open("r+b") as f:  # random bytes over the header: the file is damaged
        f.write(bytes(rng.randrange(256) for _ in range(100)))

    repaired = LocalStore(path, ME)
    assert repaired.repair_report is not None
    rows = {r.client_id: (r.peer, r.op, r.arg, r.state) for r in repaired.open_outbox()}
    assert rows["cid2"] == ("#g1", "add", "carol", OutState.PENDING)
    assert rows["cid3"] == ("#g1", "leave", None, OutState.PENDING)
    assert rows["cid1"][:2] == ("+cid1", "create")
    summary = repaired.summary("+cid1", repaired.open_outbox())
    assert summary.title == "plans" and summary.members == (ME, "bob")
    repaired.close()
