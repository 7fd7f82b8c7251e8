"""Fuzzing a live server: garbage on real connections gets documented answers and harms no one.

One in-process server per test serves every Hypothesis example, so a frame that broke it
would break the examples after it. Per example:

* every frame gets exactly the answer an oracle predicts from ``decode_client`` and the
  rules of ``docs/protocol.md`` (an ``error`` with the decoder's code, a ``reject``, an
  ``ack``, a ``history`` page, a ``receipt``; before login an ``error`` and close
  4400/4401);
* the database holds exactly what it held before plus the sends the oracle calls
  legitimate, stored as the authenticated user: nothing from garbage, no existing row
  changed, read positions only forward and never past the newest message;
* a healthy alice → bob exchange on long-lived connections still works, and bob never
  sees a frame of a conversation he is not in.

Text frames that are not UTF-8 are closed by websockets with 1007 (invalid data). Frames
larger than ``max_frame`` (1009) are covered by ``test_server_limits.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from tests.support.fuzz import (
    client_junk,
    fuzz_settings,
    names,
    small_ints,
    weighted,
    wild_ints,
    wild_strings,
)
from tests.support.wire import (
    STEP,
    RunningServer,
    ServerFactory,
    connect_ws,
    db_rows,
    expect_closed,
    login,
    recv_frame,
    recv_until,
    send_frame,
    send_message,
    send_raw,
)
from tui_chat import protocol as p
from tui_chat.server.config import Limits, ServerConfig

# The fuzz server: no login throttle (thousands of wrong tokens from one address are the
# point here; throttling is tested in test_server_auth.py and test_security.py) and a rate
# limit no batch reaches (tested in test_server_limits.py).
LIMITS = Limits(auth_failures=10**9, rate=1e6, burst=10**6, max_body=200)
USERS = ("alice", "bob", "carol")
BARRIER = "fuzz-barrier"
TABLES = ("users", "conversations", "messages", "reads", "meta")


def snapshot(db_path: Path) -> dict[str, set[tuple[Any, ...]]]:
    return {t: set(db_rows(db_path, f"SELECT * FROM {t}")) for t in TABLES}


@dataclass
class Arena:
    """The server, long-lived alice/bob/carol connections, and a conversation of each pair."""

    srv: RunningServer
    alice: ClientConnection
    bob: ClientConnection
    carol: ClientConnection
    ab_conv: str
    ca_conv: str
    counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def db(self) -> Path:
        return self.srv.db_path

    def convs_of(self, user: str) -> set[str]:
        rows = db_rows(self.db, "SELECT id FROM conversations WHERE ? IN (user_a, user_b)", (user,))
        return {r[0] for r in rows}

    def last_seq(self) -> dict[str, int]:
        return dict(db_rows(self.db, "SELECT id, last_seq FROM conversations"))  # type: ignore[arg-type]

    async def healthy_exchange(self) -> None:
        """alice → bob still works; bob got nothing but frames of his own conversations."""
        cid = f"healthy-{next(self.counter)}"
        ack = await send_message(self.alice, cid, "bob", "still fine?")
        assert isinstance(ack, p.Ack) and not ack.duplicate, ack
        msg, skipped = await recv_until(self.bob, p.Message)
        mine = self.convs_of("bob")
        for frame in [*skipped, msg]:
            assert isinstance(frame, p.Message | p.Receipt), frame
            assert frame.conv in mine, frame
        while msg.client_id != cid:
            msg, more = await recv_until(self.bob, p.Message)
            assert all(isinstance(f, p.Message | p.Receipt) and f.conv in mine for f in more)
            assert msg.conv in mine
        assert (msg.sender, msg.to, msg.body) == ("alice", "bob", "still fine?")


@pytest.fixture
async def arena(chat_server_factory: ServerFactory) -> AsyncIterator[Arena]:
    srv = await chat_server_factory(ServerConfig(limits=LIMITS), users=USERS)
    url, tokens = srv.url, srv.tokens
    alice, *_ = await login(url, "alice", tokens["alice"])
    bob, *_ = await login(url, "bob", tokens["bob"])
    carol, *_ = await login(url, "carol", tokens["carol"])
    try:
        for i in (1, 2):
            ack = await send_message(alice, f"ab-{i}", "bob", f"private {i}")
            assert isinstance(ack, p.Ack)
        ab_conv = ack.conv
        ack = await send_message(carol, BARRIER, "alice", "hello alice")
        assert isinstance(ack, p.Ack)
        arena = Arena(srv, alice, bob, carol, ab_conv, ack.conv)
        await recv_until(carol, p.Message)  # her own message, echoed
        await recv_until(bob, p.Message)
        await recv_until(bob, p.Message)
        yield arena
    finally:
        for ws in (alice, bob, carol):
            await ws.close()


# ---------------------------------------------------------------- the oracle


def _sized(raw: str | bytes) -> bool:
    data = raw.encode() if isinstance(raw, str) else raw
    return len(data) <= LIMITS.max_frame and BARRIER.encode() not in data


def targeted(convs: list[str], tokens: dict[str, str]) -> st.SearchStrategy[str]:
    """Well-formed frames aimed at the boundaries: other people's conversations, absurd
    seqs and limits, a second hello (with bob's real token), sends with a forged sender."""
    conv = weighted((3, st.sampled_from(convs)), (1, wild_strings))
    absurd = wild_ints | st.sampled_from([0, -1, p.MAX_SEQ, p.MAX_SEQ + 1, 2**64])
    seqs = weighted((3, small_ints), (1, absurd))
    limits = weighted((2, st.integers(1, 500)), (1, absurd))
    history = st.fixed_dictionaries(
        {"type": st.just("history"), "conv": conv},
        optional={"before": seqs | st.none(), "limit": limits, "after": seqs | st.none()},
    )
    read = st.fixed_dictionaries({"type": st.just("read"), "conv": conv, "seq": seqs})
    send = st.fixed_dictionaries(
        {
            "type": st.just("send"),
            "client_id": st.from_regex(r"\A[A-Za-z0-9_-]{1,12}\Z"),
            "to": names,
            "body": st.sampled_from(["hi", " ", "", "x" * 201, "[bold]x[/] \x1b[2J"]),
        },
        # A "conv" beside "to" is a send with both: rejected bad_frame.
        optional={"sender": names, "conv": conv, "seq": seqs, "ts": seqs},
    )
    hello = st.fixed_dictionaries(
        {
            "type": st.just("hello"),
            "v": st.sampled_from([1, 2, 0]),
            "user": st.sampled_from(USERS),
            "token": st.sampled_from(list(tokens.values())),
        }
    )
    return st.one_of(history, read, send, hello).map(json.dumps)


@dataclass
class Expectation:
    replies: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    # (recipient, client_id, body) of each send that must be stored, as carol.
    stored: list[tuple[str, str, str]] = field(default_factory=list)


def expect(frames: list[str | bytes], carol_convs: set[str], known_ids: set[str]) -> Expectation:
    """What the server must answer carol (authenticated) for ``frames``, and store."""
    out = Expectation()
    seen = set(known_ids)
    for raw in frames:
        try:
            frame = p.decode_client(raw)
        except p.FrameError as exc:
            out.replies[("error", exc.code)] += 1
            continue
        if isinstance(frame, p.Hello):
            out.replies[("error", p.ErrorCode.ALREADY_AUTHENTICATED)] += 1
        elif isinstance(frame, p.HistoryRequest):
            ok = frame.conv in carol_convs
            out.replies[("history", frame.conv) if ok else ("error", p.ErrorCode.NOT_MEMBER)] += 1
        elif isinstance(frame, p.Read):
            ok = frame.conv in carol_convs
            out.replies[("receipt", frame.conv) if ok else ("error", p.ErrorCode.NOT_MEMBER)] += 1
        else:
            assert isinstance(frame, p.Send)
            cid = frame.client_id
            if (frame.to is None) == (frame.conv is None):
                # Exactly one of to (a peer) and conv (a group).
                out.replies[("reject", cid, p.ErrorCode.BAD_FRAME)] += 1
            elif len(frame.body) > LIMITS.max_body:
                out.replies[("reject", cid, p.ErrorCode.TOO_LONG)] += 1
            elif not frame.body.strip():
                out.replies[("reject", cid, p.ErrorCode.EMPTY_BODY)] += 1
            elif cid in seen:
                out.replies[("ack", cid, True)] += 1
            elif frame.to not in USERS:
                out.replies[("reject", cid, p.ErrorCode.UNKNOWN_PEER)] += 1
            else:
                seen.add(cid)
                out.replies[("ack", cid, False)] += 1
                out.stored.append((frame.to, cid, frame.body))
    return out


def reply_key(frame: p.ServerFrame) -> tuple[Any, ...]:
    if isinstance(frame, p.Error):
        return ("error", frame.code)
    if isinstance(frame, p.Reject):
        return ("reject", frame.client_id, frame.code)
    if isinstance(frame, p.Ack):
        return ("ack", frame.client_id, frame.duplicate)
    if isinstance(frame, p.HistoryPage):
        return ("history", frame.conv)
    if isinstance(frame, p.Receipt):
        return ("receipt", frame.conv)
    return (type(frame).__name__,)


async def replies_until_barrier(ws: ClientConnection) -> list[p.ServerFrame]:
    """Everything the server sent in answer to what came before a repeated send of BARRIER.

    The repeat is answered (duplicate ack) only after every earlier frame was handled and
    every earlier write committed, so nothing of the batch can arrive after it.
    """
    await send_frame(ws, p.Send(client_id=BARRIER, to="alice", body="barrier"))
    frames: list[p.ServerFrame] = []
    while True:
        frame = await recv_frame(ws, STEP * 2)
        if isinstance(frame, p.Ack) and frame.client_id == BARRIER:
            assert frame.duplicate
            return frames
        frames.append(frame)


def assert_only_expected_changes(
    arena: Arena,
    before: dict[str, set[tuple[Any, ...]]],
    after: dict[str, set[tuple[Any, ...]]],
    stored: list[tuple[str, str, str]],
) -> None:
    assert after["users"] == before["users"]
    assert after["meta"] == before["meta"]
    assert before["messages"] <= after["messages"], "a stored message changed or vanished"
    new = after["messages"] - before["messages"]
    # Columns: conv, seq, sender, recipient, client_id, body, ts.
    assert sorted((m[3], m[4], m[5]) for m in new) == sorted(stored), new
    assert all(m[2] == "carol" for m in new), new
    old_convs = {c[0]: c for c in before["conversations"]}
    for conv in after["conversations"]:
        if conv[0] in old_convs:
            # Only last_seq may move, and only by carol's new messages.
            assert conv[:3] == old_convs[conv[0]][:3]
            assert conv[3] == old_convs[conv[0]][3] + sum(1 for m in new if m[0] == conv[0])
        else:
            assert "carol" in conv[1:3], conv
    last = arena.last_seq()
    old_reads = {(r[0], r[1]): r[2] for r in before["reads"]}
    for conv, user, read_seq in after["reads"]:
        if (conv, user) in old_reads and old_reads[(conv, user)] != read_seq:
            assert user == "carol" and read_seq > old_reads[(conv, user)]
        elif (conv, user) not in old_reads:
            assert user == "carol"
        assert 0 <= read_seq <= last[conv]


# ---------------------------------------------------------------- authenticated batches


@fuzz_settings(100)
@given(data=st.data())
async def test_garbage_batches_get_documented_answers_and_store_nothing(
    arena: Arena, data: st.DataObject
) -> None:
    carol_convs = arena.convs_of("carol")
    # Fixed for the whole test: a strategy must not depend on what earlier examples stored.
    pool = [arena.ab_conv, arena.ca_conv, "c000000000000", ""]
    frame = weighted((1, client_junk), (2, targeted(pool, arena.srv.tokens))).filter(_sized)
    frames = data.draw(st.lists(frame, min_size=1, max_size=8), label="frames")
    known_ids = {
        r[0] for r in db_rows(arena.db, "SELECT client_id FROM messages WHERE sender='carol'")
    }
    expected = expect(frames, carol_convs, known_ids)
    before = snapshot(arena.db)

    for raw in frames:
        await send_raw(arena.carol, raw)
    got = await replies_until_barrier(arena.carol)

    answers = Counter(reply_key(f) for f in got if not isinstance(f, p.Message))
    assert answers == expected.replies, frames
    echoes = [f for f in got if isinstance(f, p.Message)]
    assert sorted((m.to, m.client_id, m.body) for m in echoes) == sorted(expected.stored)
    assert all(m.sender == "carol" for m in echoes)
    for page in (f for f in got if isinstance(f, p.HistoryPage)):
        assert page.conv in carol_convs
        assert all(m.conv == page.conv for m in page.messages)
    assert_only_expected_changes(arena, before, snapshot(arena.db), expected.stored)
    await arena.healthy_exchange()


# ---------------------------------------------------------------- the first frame


def first_frame_answer(raw: str | bytes, tokens: dict[str, str]) -> tuple[str, int]:
    """(error code, close code) for ``raw`` as the first frame of a connection."""
    try:
        frame = p.decode_client(raw)
    except p.FrameError as exc:
        return exc.code, p.CloseCode.BAD_HELLO
    if not isinstance(frame, p.Hello):
        return p.ErrorCode.NOT_AUTHENTICATED, p.CloseCode.BAD_HELLO
    if frame.v != p.PROTOCOL_VERSION:
        return p.ErrorCode.UNSUPPORTED_VERSION, p.CloseCode.BAD_HELLO
    assert tokens.get(frame.user) != frame.token, "the fuzzer guessed a token"
    return p.ErrorCode.AUTH_FAILED, p.CloseCode.AUTH_FAILED


@fuzz_settings(120)
@given(data=st.data())
async def test_garbage_first_frames_are_refused_before_anything_is_served(
    arena: Arena, data: st.DataObject
) -> None:
    """send/history/read/garbage before hello: one error, close 4400 (4401 for a wrong
    token), nothing stored, no other frame — and the others are still served."""
    pool = [arena.ab_conv, arena.ca_conv, "c000000000000"]
    hello = st.fixed_dictionaries(
        {"type": st.just("hello"), "v": st.just(1), "user": names, "token": wild_strings}
    ).map(json.dumps)
    raw = data.draw(
        (client_junk | targeted(pool, {"x": "wrong-token"}) | hello).filter(_sized), label="raw"
    )
    code, close = first_frame_answer(raw, arena.srv.tokens)
    before = snapshot(arena.db)
    ws = await connect_ws(arena.srv.url)
    try:
        await send_raw(ws, raw)
        got_close, frames = await expect_closed(ws)
    finally:
        await ws.close()
    assert got_close == close
    assert len(frames) == 1 and isinstance(frames[0], p.Error), frames
    assert frames[0].code == code
    assert snapshot(arena.db) == before
    await arena.healthy_exchange()


# ---------------------------------------------------------------- cursors in hello


@fuzz_settings(60)
@given(data=st.data())
async def test_hello_cursors_never_reach_other_conversations(
    arena: Arena, data: st.DataObject
) -> None:
    """Cursors for conversations carol is not in (or that do not exist), with any seq."""
    convs = st.sampled_from([arena.ab_conv, arena.ca_conv, "c000000000000", "x" * 65, ""])
    seqs = small_ints | st.sampled_from([0, 1, p.MAX_SEQ, p.MAX_SEQ + 1, -1, 2**64])
    cursors = data.draw(st.dictionaries(convs, seqs, max_size=4), label="cursors")
    raw = json.dumps(
        {
            "type": "hello",
            "v": 1,
            "user": "carol",
            "token": arena.srv.tokens["carol"],
            "cursors": cursors,
        }
    )
    ws = await connect_ws(arena.srv.url)
    try:
        await send_raw(ws, raw)
        try:
            p.decode_client(raw)
        except p.FrameError as exc:
            got_close, frames = await expect_closed(ws)
            assert got_close == p.CloseCode.BAD_HELLO
            assert [f.code for f in frames] == [exc.code] == [p.ErrorCode.BAD_FRAME]
            return
        welcome = await recv_frame(ws)
        assert isinstance(welcome, p.Welcome) and welcome.user == "carol"
        synced, before = await recv_until(ws, p.Synced)
    finally:
        await ws.close()
    mine = arena.convs_of("carol")
    last = arena.last_seq()
    assert set(synced.cursors) == mine
    replayed = [f for f in before if isinstance(f, p.Message)]
    assert all(f.conv in mine for f in before if isinstance(f, p.Message | p.Receipt))
    for conv in mine:
        start = min(cursors.get(conv, 0), last[conv])
        seqs_got = [m.seq for m in replayed if m.conv == conv]
        assert seqs_got == list(range(start + 1, last[conv] + 1))
        assert synced.cursors[conv] == last[conv]
    await arena.healthy_exchange()


# ---------------------------------------------------------------- named cases


PATHOLOGICAL: list[tuple[str, str | bytes, str]] = [
    ("deep-array", "[" * 32_000 + "]" * 32_000, "bad_json"),
    ("deep-in-body",
     '{"type":"send","client_id":"n1","to":"bob","body":' + "[" * 20_000 + "]" * 20_000 + "}",
     "bad_json"),
    ("deep-object", '{"a":' * 10_000 + "1" + "}" * 10_000, "bad_json"),
    ("400-digit-seq", '{"type":"read","conv":"c","seq":' + "9" * 400 + "}", "bad_frame"),
    # Past Python's 4,300-digit limit for int(): msgspec calls it out of range.
    ("5000-digit-seq", '{"type":"read","conv":"c","seq":' + "9" * 5_000 + "}", "bad_json"),
    ("float-overflow", '{"type":"read","conv":"c","seq":1e999}', "bad_json"),
    ("negative-zero-float", '{"type":"read","conv":"c","seq":-0.0}', "bad_frame"),
    ("binary-invalid-utf8",
     b'{"type":"send","client_id":"u1","to":"bob","body":"\xff\xfe"}', "bad_json"),
    ("binary-utf8-surrogate",
     b'{"type":"send","client_id":"u2","to":"bob","body":"\xed\xa0\x80"}', "bad_json"),
    ("escaped-lone-surrogate",
     '{"type":"send","client_id":"s1","to":"bob","body":"\\ud800"}', "bad_json"),
    ("long-client-id",
     '{"type":"send","client_id":"' + "a" * 60_000 + '","to":"bob","body":"x"}', "bad_frame"),
    ("long-to", '{"type":"send","client_id":"l1","to":"' + "b" * 60_000 + '","body":"x"}',
     "bad_frame"),
    ("long-conv", '{"type":"history","conv":"' + "c" * 60_000 + '"}', "bad_frame"),
    ("limit-0", '{"type":"history","conv":"c","limit":0}', "bad_frame"),
    ("limit-negative", '{"type":"history","conv":"c","limit":-1}', "bad_frame"),
    ("limit-501", '{"type":"history","conv":"c","limit":501}', "bad_frame"),
    ("before-0", '{"type":"history","conv":"c","before":0}', "bad_frame"),
    ("after-negative", '{"type":"history","conv":"c","after":-1}', "bad_frame"),
    ("before-2**53", '{"type":"history","conv":"c","before":9007199254740992}', "bad_frame"),
    ("read-negative", '{"type":"read","conv":"c","seq":-1}', "bad_frame"),
    ("read-2**53", '{"type":"read","conv":"c","seq":9007199254740992}', "bad_frame"),
    ("read-seq-string", '{"type":"read","conv":"c","seq":"3"}', "bad_frame"),
    ("client-id-int", '{"type":"send","client_id":7,"to":"bob","body":"x"}', "bad_frame"),
    ("to-list", '{"type":"send","client_id":"t1","to":["bob"],"body":"x"}', "bad_frame"),
    ("body-null", '{"type":"send","client_id":"t2","to":"bob","body":null}', "bad_frame"),
    ("type-null", '{"type":null}', "bad_frame"),
    ("type-list", '{"type":["send"]}', "bad_frame"),
    ("type-upper", '{"type":"SEND","client_id":"t3","to":"bob","body":"x"}', "unknown_type"),
    ("server-frame", '{"type":"welcome","v":1,"user":"carol","epoch":"e","server_time":1}',
     "unknown_type"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "code"), [c[1:] for c in PATHOLOGICAL], ids=[c[0] for c in PATHOLOGICAL]
)
async def test_pathological_frames_on_a_live_connection(
    arena: Arena, raw: str | bytes, code: str
) -> None:
    before = snapshot(arena.db)
    await send_raw(arena.carol, raw)
    got = await replies_until_barrier(arena.carol)
    assert [reply_key(f) for f in got] == [("error", code)]
    assert snapshot(arena.db) == before
    await arena.healthy_exchange()


async def test_absurd_but_valid_seqs_and_limits_on_own_conversation(arena: Arena) -> None:
    """In range but absurd: answered normally, and a read never passes the newest message."""
    conv = arena.ca_conv
    for raw in (
        p.HistoryRequest(conv=conv, before=p.MAX_SEQ, limit=500, after=p.MAX_SEQ - 1),
        p.HistoryRequest(conv=conv, before=1, limit=1, after=None),
        p.HistoryRequest(conv=conv, before=None, limit=500, after=0),
        p.Read(conv=conv, seq=p.MAX_SEQ),
        p.Read(conv=conv, seq=0),
    ):
        await send_frame(arena.carol, raw)
    got = await replies_until_barrier(arena.carol)
    pages = [f for f in got if isinstance(f, p.HistoryPage)]
    assert [(len(f.messages), f.complete) for f in pages] == [(0, True), (0, True), (1, True)]
    receipts = [f for f in got if isinstance(f, p.Receipt)]
    assert [(r.user, r.read_seq) for r in receipts] == [("carol", 1), ("carol", 1)]
    assert db_rows(arena.db, "SELECT read_seq FROM reads WHERE user='carol'") == [(1,)]
    await arena.healthy_exchange()


@pytest.mark.parametrize("authenticated", [False, True])
async def test_text_frame_with_invalid_utf8_is_closed_1007(
    arena: Arena, authenticated: bool
) -> None:
    """websockets itself refuses a text frame that is not UTF-8: close 1007, nothing stored."""
    before = snapshot(arena.db)
    if authenticated:
        ws, *_ = await login(arena.srv.url, "carol", arena.srv.tokens["carol"])
    else:
        ws = await connect_ws(arena.srv.url)
    try:
        await ws.send(b'{"type":"send","client_id":"i1","to":"bob","body":"\xff"}', text=True)
        code, frames = await expect_closed(ws)
    finally:
        await ws.close()
    assert code == 1007
    assert frames == []
    assert snapshot(arena.db) == before
    await asyncio.sleep(0)
    await arena.healthy_exchange()
