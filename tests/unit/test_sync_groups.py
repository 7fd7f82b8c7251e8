"""The sync core and groups, fed frames by hand over a real store (no server, no socket).

Each test says what the core must store, announce and queue for a group's events: a view
that begins at ``created`` or at the user's own ``added``, a removal, a gap inside a
group, a pending create confirmed by its ack or by its echo, a ``not_member`` reject.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_sync_core import Rig
from tui_chat import protocol as p
from tui_chat.core.models import (
    ConversationChanged,
    ConversationReplaced,
    ConvKind,
    MessageAdded,
    MessageChanged,
    OutState,
    group_key,
)
from tui_chat.core.store import NOT_MEMBER_REASON, OutboxRow, encode_create_args
from tui_chat.core.sync import command_frame

G = "g000000000001"
KEY = group_key(G)
K = p.MessageKind


def event(
    seq: int,
    kind: str = K.TEXT,
    sender: str = "bob",
    *,
    body: str | None = None,
    user: str | None = None,
    title: str | None = None,
    members: list[str] | None = None,
    cid: str | None = None,
) -> p.Message:
    """A group event as the server sends it (``to`` absent)."""
    if body is None:
        body = f"body {seq}" if kind == K.TEXT else ""
    return p.Message(
        conv=G,
        seq=seq,
        sender=sender,
        client_id=cid or f"{sender}-{seq}",
        body=body,
        ts=seq,
        kind=kind,
        user=user,
        title=title,
        members=members,
    )


def created(seq: int = 1, members: list[str] | None = None, cid: str | None = None) -> p.Message:
    names = members if members is not None else ["bob", "alice"]
    return event(seq, K.CREATED, names[0], title="team", members=names, cid=cid)


def command(rig: Rig, peer: str, op: str, arg: str | None = None, body: str = "") -> OutboxRow:
    """An outbox row as Engine._queue writes it."""
    ord_ = rig.store.next_ord()
    row = OutboxRow(f"cmd{ord_}", peer, body, 0, ord_, op=op, arg=arg)
    row.fresh_since = int(rig.clock.now * 1000)
    rig.replica.add(row)
    return row


def history_requests(frames: list[p.ClientFrame]) -> list[p.HistoryRequest]:
    return [f for f in frames if isinstance(f, p.HistoryRequest)]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.store.close()


def test_a_group_that_names_me_begins_at_created(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(created())
    rig.core.on_frame(event(2, body="hi Alice!"))
    rig.core.on_frame(event(3, body="malice is not a mention"))
    assert rig.store.watermark(G) == 3
    assert history_requests(rig.take()) == []
    s = rig.store.summary(KEY, [])
    assert (s.kind, s.conv, s.title, s.creator, s.joined) == (
        ConvKind.GROUP,
        G,
        "team",
        "bob",
        True,
    )
    assert s.members == ("bob", "alice")
    shown = [e.message for e in rig.of(MessageAdded)]
    assert [(m.peer, m.seq, m.kind) for m in shown] == [
        (KEY, 1, K.CREATED),
        (KEY, 2, K.TEXT),
        (KEY, 3, K.TEXT),
    ]
    assert [m.mentions_me for m in shown] == [False, True, False]
    assert s.unread == 2 and s.mentions == 1


def test_events_of_a_group_i_am_not_in_are_ignored(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(event(1))
    rig.core.on_frame(created(2, members=["bob", "carol"]))  # a created that does not name me
    rig.core.on_frame(event(3, K.ADDED, user="carol", members=["bob", "carol"]))  # not of me
    assert rig.of(MessageAdded) == []
    assert rig.store.peers() == [] and rig.store.watermarks() == {}


def test_added_mid_stream_begins_my_view_there_with_no_gap_below(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(event(7, K.ADDED, user="alice", members=["bob", "carol", "alice"]))
    assert rig.store.watermark(G) == 7
    assert history_requests(rig.take()) == []  # seqs 1..6 are not ours to see
    rig.core.on_frame(event(8, sender="carol"))
    rig.core.on_frame(event(10))  # 9 lost: a gap inside my view is asked for
    assert history_requests(rig.take()) == [p.HistoryRequest(conv=G, before=10, after=8, limit=500)]
    rig.core.on_frame(
        p.HistoryPage(
            conv=G, messages=[event(9, K.LEFT, "carol", user="carol")], complete=False, after=8
        )
    )
    assert rig.store.watermark(G) == 10
    s = rig.store.summary(KEY, [])
    assert s.members == ("bob", "alice") and s.joined and s.creator is None
    assert [m.seq for m in rig.store.page(KEY, None, 100)] == [7, 8, 9, 10]


def test_a_gap_filled_later_corrects_the_members(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(created())
    rig.core.on_frame(event(3, K.REMOVED, user="carol"))  # 2 (carol added) arrives later
    assert rig.store.summary(KEY, []).members == ("bob", "alice")
    assert history_requests(rig.take()) == [p.HistoryRequest(conv=G, before=3, after=1, limit=500)]
    rig.core.on_frame(
        p.HistoryPage(conv=G, messages=[event(2, K.ADDED, user="carol")], complete=False, after=1)
    )
    rig.core.on_frame(event(4, K.ADDED, user="dave"))
    rig.core.on_frame(event(5, K.RENAMED, "alice", title="new"))
    s = rig.store.summary(KEY, [])
    assert s.members == ("bob", "alice", "dave") and s.title == "new"


def test_removed_ends_my_view_and_fails_what_is_queued_before_it_is_sent(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(created())
    queued = command(rig, KEY, "send", body="still here?")
    rig.core.on_frame(event(2, K.REMOVED, user="alice"))
    s = rig.store.summary(KEY, rig.outbox.values())
    assert not s.joined and s.members == ("bob",)
    assert (queued.state, queued.error, queued.retryable) == (
        OutState.FAILED,
        NOT_MEMBER_REASON,
        False,
    )
    rig.core.poll()
    assert rig.take() == []  # never sent
    later = command(rig, KEY, "rename", arg="mine now")
    assert later.state is OutState.FAILED and later.error == NOT_MEMBER_REASON
    rig.core.poll()
    assert rig.take() == []
    # Re-added: a new interval starts at the new added, and the group is mine again.
    rig.core.on_frame(event(9, K.ADDED, user="alice", members=["bob", "alice"]))
    assert rig.store.summary(KEY, []).joined
    assert history_requests(rig.take()) == []


def test_a_not_member_reject_fails_for_good_with_the_reason(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(created())
    row = command(rig, KEY, "send", body="hello")
    rig.core.poll()
    assert rig.take() == [p.Send(client_id=row.client_id, conv=G, body="hello")]
    rig.core.on_frame(
        p.Reject(client_id=row.client_id, code=p.ErrorCode.NOT_MEMBER, reason="x", retryable=True)
    )
    assert (row.state, row.error, row.retryable) == (OutState.FAILED, NOT_MEMBER_REASON, False)


def test_commands_are_sent_as_their_frames_in_order_and_acked_into_events(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(created(members=["alice", "bob"]))
    add = command(rig, KEY, "add", arg="carol")
    ren = command(rig, KEY, "rename", arg="renamed")
    rig.core.poll()
    assert rig.take() == [p.Add(client_id=add.client_id, conv=G, user="carol")]  # one in flight
    rig.core.on_frame(p.Ack(client_id=add.client_id, conv=G, seq=2, ts=5))
    rig.core.poll()
    assert rig.take() == [p.Rename(client_id=ren.client_id, conv=G, title="renamed")]
    rig.core.on_frame(p.Ack(client_id=ren.client_id, conv=G, seq=3, ts=6))
    rem = command(rig, KEY, "remove", arg="carol")
    bye = command(rig, KEY, "leave")
    rig.core.poll()
    assert rig.take() == [p.Remove(client_id=rem.client_id, conv=G, user="carol")]
    rig.core.on_frame(p.Ack(client_id=rem.client_id, conv=G, seq=4, ts=7))
    rig.core.poll()
    assert rig.take() == [p.Leave(client_id=bye.client_id, conv=G)]
    rig.core.on_frame(p.Ack(client_id=bye.client_id, conv=G, seq=5, ts=8))
    stored = rig.store.page(KEY, None, 100)
    assert [(m.seq, m.kind, m.sender, m.user, m.title) for m in stored] == [
        (1, K.CREATED, "alice", None, "team"),
        (2, K.ADDED, "alice", "carol", None),
        (3, K.RENAMED, "alice", None, "renamed"),
        (4, K.REMOVED, "alice", "carol", None),
        (5, K.LEFT, "alice", "alice", None),
    ]
    s = rig.store.summary(KEY, [])
    assert (s.title, s.members, s.joined) == ("renamed", ("bob",), False)
    assert all(r.state is OutState.SENT for r in (add, ren, rem, bye)) and len(rig.outbox) == 0


def create_row(rig: Rig) -> OutboxRow:
    cid = "mk1"
    row = OutboxRow(
        cid,
        "+" + cid,
        "",
        0,
        rig.store.next_ord(),
        op="create",
        arg=encode_create_args("team", ["bob", "carol"]),
    )
    row.fresh_since = int(rig.clock.now * 1000)
    rig.replica.add(row)
    return row


def replaced_then_changed(rig: Rig, old: str) -> None:
    """ConversationReplaced(old, KEY) once, and a ConversationChanged for KEY after it."""
    order = [e for e in rig.events if isinstance(e, ConversationReplaced | ConversationChanged)]
    replaced = [i for i, e in enumerate(order) if isinstance(e, ConversationReplaced)]
    assert [order[i] for i in replaced] == [ConversationReplaced(old, KEY)]
    after = order[replaced[0] + 1 :]
    assert any(isinstance(e, ConversationChanged) and e.summary.peer == KEY for e in after)
    assert not any(isinstance(e, ConversationChanged) and e.summary.peer == old for e in after)


def test_a_pending_create_confirmed_by_its_ack_moves_to_the_group_key(rig: Rig) -> None:
    rig.login()
    row = create_row(rig)
    old = row.peer
    pending = rig.store.summary(old, rig.outbox.values())
    assert (pending.kind, pending.conv, pending.title) == (ConvKind.GROUP, None, "team")
    assert pending.members == ("alice", "bob", "carol")
    rig.store.save_draft(old, "half a thought")
    rig.core.poll()
    assert rig.take() == [p.Create(client_id=row.client_id, title="team", members=["bob", "carol"])]
    rig.core.on_frame(p.Ack(client_id=row.client_id, conv=G, seq=1, ts=3))
    assert row.state is OutState.SENT and row.peer == KEY
    replaced_then_changed(rig, old)
    assert rig.store.peers() == [KEY] and rig.store.draft(KEY) == "half a thought"
    s = rig.store.summary(KEY, [])
    assert (s.conv, s.title, s.creator, s.members) == (
        G,
        "team",
        "alice",
        ("alice", "bob", "carol"),
    )
    assert rig.store.outbox_row(row.client_id).peer == KEY  # type: ignore[union-attr]
    # The echo that follows changes nothing.
    shown = len(rig.of(MessageAdded))
    rig.core.on_frame(created(members=["alice", "bob", "carol"], cid=row.client_id))
    assert len(rig.of(MessageAdded)) == shown
    assert [
        e.message.state for e in rig.of(MessageChanged) if e.message.client_id == row.client_id
    ][-1] is OutState.SENT
    assert rig.store.watermark(G) == 1 and len(rig.of(ConversationReplaced)) == 1


def test_a_pending_create_confirmed_by_its_echo_then_the_late_ack(rig: Rig) -> None:
    rig.login()
    row = create_row(rig)
    old = row.peer
    rig.core.poll()
    rig.take()
    rig.core.on_frame(created(members=["alice", "bob", "carol"], cid=row.client_id))
    assert row.state is OutState.SENT and row.peer == KEY
    replaced_then_changed(rig, old)
    rig.core.on_frame(event(2, K.ADDED, "alice", user="dave"))  # someone else's echo, by now
    rig.core.on_frame(p.Ack(client_id=row.client_id, conv=G, seq=1, ts=3))
    assert len(rig.of(ConversationReplaced)) == 1
    assert rig.store.peers() == [KEY]
    assert rig.store.summary(KEY, []).members == ("alice", "bob", "carol", "dave")


def test_a_create_given_up_before_it_left_drops_the_pending_group(rig: Rig) -> None:
    row = create_row(rig)
    rig.give_up(row)
    assert rig.of(ConversationReplaced) == [ConversationReplaced(row.peer, None)]
    assert rig.store.peers() == []


def test_a_group_send_names_the_conv_and_a_dm_the_peer() -> None:
    row = OutboxRow("x1", KEY, "hi", 0, 1)
    assert command_frame(row) == p.Send(client_id="x1", conv=G, body="hi")
    dm = OutboxRow("x2", "bob", "hi", 0, 2)
    assert command_frame(dm) == p.Send(client_id="x2", to="bob", body="hi")
