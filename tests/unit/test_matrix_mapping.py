"""The sans-I/O Matrix translator: /sync JSON in, protocol frames out (no homeserver)."""

from __future__ import annotations

from typing import Any

import msgspec

from tui_chat import protocol as p
from tui_chat.matrix.mapping import (
    ENCRYPTED_BODY,
    Translator,
    backfill_page,
    load_state,
)
from tui_chat.matrix.wire import Event, SyncResponse

ME = "@alice:hs"
BOB = "@bob:hs"
ROOM = "!room:hs"


def ev(eid: str, type: str = "m.room.message", sender: str = BOB, **kw: Any) -> dict[str, Any]:
    content = kw.pop("content", {"msgtype": "m.text", "body": eid})
    return {
        "type": type,
        "event_id": eid,
        "sender": sender,
        "origin_server_ts": 1000,
        "content": content,
        **kw,
    }


def member(eid: str, user: str, membership: str, sender: str | None = None, **content: Any):
    return ev(
        eid,
        "m.room.member",
        sender or user,
        state_key=user,
        content={"membership": membership, **content},
    )


def sync(
    batch: str,
    timeline: list[dict[str, Any]],
    *,
    state: list[dict[str, Any]] | None = None,
    limited: bool = False,
    room: str = ROOM,
    **extra: Any,
) -> SyncResponse:
    data = {
        "next_batch": batch,
        "rooms": {
            "join": {
                room: {
                    "timeline": {"events": timeline, "limited": limited, "prev_batch": "pb"},
                    "state": {"events": state or []},
                }
            }
        },
        **extra,
    }
    return msgspec.convert(data, SyncResponse)


def msgs(frames: list[Any]) -> list[p.Message]:
    return [f for f in frames if isinstance(f, p.Message)]


def test_a_group_view_begins_with_created_naming_us_then_contiguous_seqs() -> None:
    tr = Translator(ME)
    state = [
        ev("$c", "m.room.create", BOB, state_key="", content={"creator": BOB}),
        ev("$n", "m.room.name", BOB, state_key="", content={"name": "Lunch"}),
        member("$mb", BOB, "join"),
    ]
    timeline = [
        member("$ma", ME, "join"),
        ev("$1"),
        ev("$x", "m.reaction", content={}),  # not shown: no seq
        ev("$2", sender=ME, unsigned={"transaction_id": "txn2"}),
    ]
    frames = tr.apply_sync(sync("s1", timeline, state=state))
    m = msgs(frames)
    assert [(x.seq, x.kind) for x in m] == [(1, "created"), (2, "text"), (3, "text")]
    assert m[0].members == [BOB, ME] and m[0].title == "Lunch" and m[0].sender == BOB
    assert m[1].to == "" and m[1].client_id == "$1"
    assert m[2].client_id == "txn2"  # our txnId is the client_id: the outbox row confirms
    acks = [f for f in frames if isinstance(f, p.Ack)]
    assert acks == [p.Ack(client_id="txn2", conv=ROOM, seq=3, ts=1000)]
    assert tr.cursors() == {ROOM: 3}
    assert tr.state.since == "s1"
    # The same events again (a replayed batch) are stored once: nothing new.
    assert msgs(tr.apply_sync(sync("s2", timeline))) == []
    m2 = msgs(tr.apply_sync(sync("s3", [ev("$3"), member("$mc", "@carol:hs", "join")])))
    assert [(x.seq, x.kind, x.user) for x in m2] == [(4, "text", None), (5, "added", "@carol:hs")]


def test_a_dm_uses_the_direct_path() -> None:
    tr = Translator(ME)
    timeline = [
        member("$ma", ME, "join"),
        member("$ib", BOB, "invite", sender=ME, is_direct=True),
        ev("$1", sender=ME, unsigned={"transaction_id": "t1"}),
        ev("$2", sender=BOB),
        ev("$3", sender="@mallory:hs"),  # a third party in a DM: not this pair's history
    ]
    m = msgs(tr.apply_sync(sync("s1", timeline)))
    assert [(x.seq, x.sender, x.to) for x in m] == [(1, ME, BOB), (2, BOB, ME)]
    assert tr.dm_room(BOB) == ROOM


def test_an_encrypted_room_is_marked_never_garbage() -> None:
    tr = Translator(ME)
    state = [ev("$e", "m.room.encryption", BOB, state_key="", content={"algorithm": "x"})]
    timeline = [ev("$1", "m.room.encrypted", content={"ciphertext": "zzz"})]
    m = msgs(tr.apply_sync(sync("s1", timeline, state=state)))
    assert ENCRYPTED_BODY in (m[0].title or "")
    assert m[1].body == ENCRYPTED_BODY
    room = tr.room(ROOM)
    assert room is not None and room.encrypted


def test_limited_timeline_asks_for_backfill_and_orders_it_first() -> None:
    tr = Translator(ME)
    tr.apply_sync(sync("s1", [ev("$1")]))
    resp = sync("s2", [ev("$9"), ev("$10")], limited=True)
    need = tr.backfill_needed(resp)
    assert [(n.room_id, n.prev_batch, n.last_event) for n in need] == [(ROOM, "pb", "$1")]
    # /messages dir=b: newest first, down to the event we hold.
    page = [msgspec.convert(ev(e), Event) for e in ("$8", "$7", "$1", "$0")]
    older, met = backfill_page(page, "$1")
    assert met and [e.event_id for e in older] == ["$7", "$8"]
    m = msgs(tr.apply_sync(resp, {ROOM: older}))
    assert [(x.seq, x.body) for x in m] == [(3, "$7"), (4, "$8"), (5, "$9"), (6, "$10")]


def test_checkpoint_round_trip_and_a_damaged_one_starts_afresh() -> None:
    tr = Translator(ME)
    tr.apply_sync(sync("s1", [ev("$1")]))
    again = Translator(ME, load_state(tr.checkpoint()))
    assert again.cursors() == tr.cursors() and again.state.since == "s1"
    assert msgs(again.apply_sync(sync("s2", [ev("$1"), ev("$2")])))[0].seq == 3
    assert load_state(b"{not json").since is None
    assert load_state(None).rooms == {}


def test_malformed_answers_are_a_typed_error_not_a_traceback() -> None:
    import pytest

    from tui_chat.matrix.wire import BadResponse, decode

    for raw in (b"{not json", b'{"rooms": {}}', b"[[[[", b'{"next_batch": 5}', b"\xff"):
        with pytest.raises(BadResponse):
            decode(raw, SyncResponse)


def test_our_create_confirms_by_its_client_id_and_an_invite_is_an_add() -> None:
    from tui_chat.matrix.mapping import CREATE_KEY

    tr = Translator(ME)
    timeline = [
        ev("$c", "m.room.create", ME, state_key="", content={CREATE_KEY: "cid1"}),
        member("$ma", ME, "join"),
        ev("$n", "m.room.name", ME, state_key="", content={"name": "Lunch"}),
        member("$ib", BOB, "invite", sender=ME),
    ]
    m = msgs(tr.apply_sync(sync("s1", timeline)))
    assert [(x.kind, x.client_id, x.sender) for x in m] == [
        ("created", "cid1", ME),
        ("added", "$ib", ME),
    ]
    assert m[0].title == "Lunch" and m[1].user == BOB
    tr.sent("cid2", "$r")  # our rename's PUT returned this event id
    m2 = msgs(
        tr.apply_sync(
            sync("s2", [ev("$r", "m.room.name", ME, state_key="", content={"name": "Dinner"})])
        )
    )
    assert [(x.kind, x.client_id, x.title) for x in m2] == [("renamed", "cid2", "Dinner")]
