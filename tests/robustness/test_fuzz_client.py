"""Fuzzing the client engine from a hostile server: it never dies and its store stays true.

The server here is a few lines of ``websockets.asyncio.server`` that speaks just enough of
the protocol to bring a real :class:`Engine` online (welcome, a replay of bob's messages,
synced) and then sends whatever the test tells it. Per Hypothesis example, a batch of
frames an engine must not act on:

* undecodable ones (garbage, invalid UTF-8 in binary frames, deep nesting, seq 0 / negative /
  2**60 / 2**64, huge ts, wrong types): each must give a ``ServerNotice``;
* well-formed but senseless ones (messages between other users, a message in bob's
  conversation from someone else, bob's messages under another conversation id,
  duplicates of stored seqs with other text, acks and rejects for unknown ``client_id``
  values, an ack for our pending message that names another conversation or a seq bob's
  message holds, history pages of unknown conversations, receipts, a second welcome,
  ``synced`` for unknown conversations, ``error`` frames);

then the next real message of bob's conversation. The engine's ``run()`` must still be
going on the same connection, the message must be stored and the watermark advanced by
one, and the store must otherwise be exactly as it was: the same messages, no new
conversation, the pending outbox row untouched.

Named cases follow: a garbage answer to the login, a text frame that is not UTF-8 (1007),
and a server whose epoch changes at every login (a reconnect storm before the fix).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.waits import stays, until
from tests.support.engines import Client, Engines
from tests.support.fuzz import fuzz_settings, names, server_junk, small_ints, weighted, wild_strings
from tests.support.hostile import CONV, EPOCH, Frame, HostileServer, hostile_server
from tui_chat import protocol as p
from tui_chat.core.models import ConnState, EpochReset, OutState, ServerNotice

# Keepalive and ack timeout far above the test's length: a reconnect here is a finding.
SYNC: dict[str, Any] = {"ping_interval": 5.0, "ping_timeout": 5.0, "ack_timeout": 600.0}


@dataclass
class Rig:
    """A hostile server, a running engine online with it, and the one unsent message."""

    hostile: HostileServer
    client: Client
    pending: str  # client_id of an own message the server never answers

    @property
    def engine(self) -> Any:
        return self.client.engine

    def alive(self) -> None:
        task = self.client.task
        if task.done():
            pytest.fail(f"engine.run() ended: {task.exception()!r}")

    def store_state(self) -> tuple[Any, ...]:
        store = self.engine.store
        outbox = [
            (r.client_id, r.peer, r.body, r.state, r.conv, r.seq, r.error)
            for r in store.all_outbox()
        ]
        messages = [
            (m.conv, m.seq, m.sender, m.peer, m.client_id, m.body, m.ts)
            for m in store.all_messages()
        ]
        return (messages, store.watermarks(), outbox, store.peers())

    def expected_state(self) -> tuple[Any, ...]:
        messages = [
            (m.conv, m.seq, m.sender, m.sender, m.client_id, m.body, m.ts)
            for m in self.hostile.truth
        ]
        outbox = [(self.pending, "bob", "pending one", OutState.PENDING, None, None, None)]
        return (messages, {CONV: len(self.hostile.truth)}, outbox, ["bob"])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with hostile_server() as hostile:
        engines = Engines(tmp_path)
        try:
            cfg = engines.config("alice", "t", hostile.url, **SYNC)
            client = await engines.run(cfg, "t")
            pending = client.engine.send("bob", "pending one").client_id
            await client.online()
            await until(lambda: client.engine.store.watermark(CONV) == 2, "the replay applied")
            yield Rig(hostile, client, pending)
        finally:
            await engines.aclose()


# ---------------------------------------------------------------- hostile frames


def undecodable(raw: Frame) -> bool:
    try:
        p.decode_server(raw)
    except p.FrameError:
        return True
    return False


def _j(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


seqs = weighted((3, st.integers(1, 50)), (1, st.integers(1, p.MAX_SEQ)))
times = st.integers(0, p.MAX_SEQ)
others = names.filter(lambda n: n != "alice" and len(n) <= 64)
client_ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z").filter(lambda c: not c.startswith("bob-"))


def message_obj(conv: Any, seq: Any, sender: Any, to: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "conv": conv,
            "seq": seq,
            "sender": sender,
            "to": to,
            "client_id": client_ids,
            "body": wild_strings,
            "ts": times,
        }
    )


def senseless_messages() -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed messages the engine must not store (seqs 1 and 2 are always held)."""
    other_conv = wild_strings.filter(lambda c: c != CONV)
    any_conv = weighted((1, st.just(CONV)), (2, other_conv))
    return st.one_of(
        # Between two other users.
        message_obj(any_conv, seqs, others, others),
        # In bob's conversation, but from or to someone else.
        message_obj(st.just(CONV), seqs, others.filter(lambda n: n != "bob"), st.just("alice")),
        message_obj(st.just(CONV), seqs, st.just("alice"), others.filter(lambda n: n != "bob")),
        # bob and alice in a conversation other than theirs: a pair has one conversation.
        message_obj(other_conv, seqs, st.just("bob"), st.just("alice")),
        message_obj(other_conv, seqs, st.just("alice"), st.just("bob")),
        # A seq we hold already, with other text: a duplicate, never an overwrite.
        message_obj(st.just(CONV), st.integers(1, 2), st.just("bob"), st.just("alice")),
        message_obj(st.just(CONV), st.integers(1, 2), st.just("alice"), st.just("bob")),
    )


def senseless(pending: str) -> st.SearchStrategy[str]:
    """Well-formed frames the engine must ignore (or, for ``error``, only report)."""
    unknown_id = client_ids.filter(lambda c: c != pending)
    msgs = senseless_messages()
    return st.one_of(
        msgs.map(lambda m: _j({"type": "message", **m})),
        st.fixed_dictionaries(
            {"type": st.just("ack"), "client_id": unknown_id, "conv": wild_strings | st.just(CONV),
             "seq": seqs, "ts": times, "duplicate": st.booleans()}
        ).map(_j),
        # An ack for our pending message that contradicts the history: another conversation,
        # or a seq bob's messages hold. It must not mark the message sent.
        st.fixed_dictionaries(
            {"type": st.just("ack"), "client_id": st.just(pending),
             "conv": wild_strings.filter(lambda c: c != CONV), "seq": seqs, "ts": times,
             "duplicate": st.booleans()}
        ).map(_j),
        st.fixed_dictionaries(
            {"type": st.just("ack"), "client_id": st.just(pending), "conv": st.just(CONV),
             "seq": st.integers(1, 2), "ts": times, "duplicate": st.booleans()}
        ).map(_j),
        st.fixed_dictionaries(
            {"type": st.just("reject"), "client_id": unknown_id, "code": wild_strings,
             "reason": wild_strings, "retryable": st.booleans(),
             "retry_after": st.none() | st.floats(min_value=0, max_value=1e9)}
        ).map(_j),
        st.fixed_dictionaries(
            {"type": st.just("history"), "conv": wild_strings | st.just(CONV),
             "messages": st.lists(msgs, max_size=3), "complete": st.booleans(),
             "before": st.none() | seqs, "after": st.none() | st.integers(0, 10)}
        ).map(_j),
        st.fixed_dictionaries(
            {"type": st.just("receipt"), "conv": wild_strings | st.just(CONV),
             "user": names, "read_seq": st.integers(0, p.MAX_SEQ)}
        ).map(_j),
        st.fixed_dictionaries(
            {"type": st.just("welcome"), "v": st.integers(0, 3), "user": names,
             "epoch": wild_strings, "server_time": times}
        ).map(_j),
        st.fixed_dictionaries(
            {"type": st.just("synced"),
             "cursors": st.dictionaries(wild_strings.filter(lambda c: c != CONV), small_ints,
                                        max_size=3)}
        ).map(_j),
        st.fixed_dictionaries(
            {"type": st.just("error"), "code": wild_strings, "reason": wild_strings}
        ).map(_j),
    )  # fmt: skip


def expected_notices(frames: list[Frame]) -> int:
    count = 0
    for raw in frames:
        try:
            frame = p.decode_server(raw)
        except p.FrameError:
            count += 1
        else:
            count += isinstance(frame, p.Error)
    return count


async def check_batch(rig: Rig, frames: list[Frame]) -> None:
    """Push ``frames``, then a real message; the engine must still work and be exact."""
    notices_before = len(rig.client.of(ServerNotice))
    await rig.hostile.push(*frames)
    m = await rig.hostile.next_real_message()
    await until(
        lambda: rig.engine.store.watermark(CONV) == m.seq or rig.client.task.done(),
        f"message {m.seq} after the batch",
    )
    rig.alive()
    assert rig.hostile.logins == 1, "the engine reconnected"
    assert rig.client.state is ConnState.ONLINE
    assert rig.store_state() == rig.expected_state()
    want = expected_notices(frames)
    await until(lambda: len(rig.client.of(ServerNotice)) - notices_before >= want, "notices")
    assert len(rig.client.of(ServerNotice)) - notices_before == want
    assert rig.client.of(EpochReset) == []


@fuzz_settings(100)
@given(data=st.data())
async def test_hostile_frames_never_crash_the_engine_or_corrupt_its_store(
    rig: Rig, data: st.DataObject
) -> None:
    frame = weighted(
        (1, server_junk.filter(lambda raw: len(raw) < 200_000 and undecodable(raw))),
        (1, senseless(rig.pending)),
    )
    frames = data.draw(st.lists(frame, min_size=1, max_size=6), label="frames")
    await check_batch(rig, frames)


# ---------------------------------------------------------------- named cases

NAMED: list[Frame] = [
    # seq 0, negative, 2**60, 2**64; ts and read_seq past SQLite's INTEGER; wrong types.
    *(
        _j({"type": "message", "conv": CONV, "seq": seq, "sender": "bob", "to": "alice",
            "client_id": f"x{i}", "body": "b", "ts": 1})
        for i, seq in enumerate([0, -1, 2**60, 2**64, 10**30, "3", None, 3.5])
    ),
    _j({"type": "message", "conv": CONV, "seq": 3, "sender": "bob", "to": "alice",
        "client_id": "x9", "body": "b", "ts": 10**30}),
    _j({"type": "message", "conv": CONV, "seq": 3, "sender": "bob", "to": "alice",
        "client_id": "x9", "body": 7, "ts": 1}),
    _j({"type": "receipt", "conv": CONV, "user": "bob", "read_seq": 2**63}),
    _j({"type": "synced", "cursors": {CONV: -1}}),
    _j({"type": "ack", "client_id": "x1", "conv": CONV, "seq": 2**64, "ts": 1}),
    _j({"type": "history", "conv": CONV, "complete": True, "messages": [
        {"conv": CONV, "seq": 2**60, "sender": "bob", "to": "alice", "client_id": "h",
         "body": "b", "ts": 1}]}),
    # Garbage of every kind.
    b"\xff\xfe\x00garbage",
    b'{"type":"error","code":"x","reason":"\xff"}',
    "[" * 40_000 + "]" * 40_000,
    '{"type":"error","code":"x","reason":' + "[" * 5_000 + "]" * 5_000 + "}",
    '{"type":"message","seq":' + "9" * 5_000 + "}",
    "",
    "null",
    '{"type":"teleport"}',
    # Well-formed and senseless: ignored.
    p.encode(p.Welcome(v=1, user="mallory", epoch="other-epoch", server_time=1)).decode(),
    _j({"type": "ack", "client_id": "never-sent", "conv": CONV, "seq": 1, "ts": 1}),
    _j({"type": "reject", "client_id": "never-sent", "code": "x", "reason": "r",
        "retryable": False, "retry_after": None}),
    _j({"type": "history", "conv": "c-nobody", "complete": True, "before": 3, "after": 0,
        "messages": [{"conv": "c-nobody", "seq": 1, "sender": "eve", "to": "mallory",
                      "client_id": "e1", "body": "not for alice", "ts": 1}]}),
    _j({"type": "history", "conv": "c-wrong", "complete": True, "messages": [
        {"conv": CONV, "seq": 1, "sender": "bob", "to": "alice", "client_id": "forged",
         "body": "rewritten history", "ts": 1}]}),
    _j({"type": "message", "conv": CONV, "seq": 2, "sender": "bob", "to": "alice",
        "client_id": "forged-2", "body": "rewritten", "ts": 5}),
    _j({"type": "message", "conv": CONV, "seq": 3, "sender": "carol", "to": "alice",
        "client_id": "c-3", "body": "carol in bob's conversation", "ts": 5}),
    _j({"type": "message", "conv": "c-other", "seq": 1, "sender": "eve", "to": "mallory",
        "client_id": "e-1", "body": "between strangers", "ts": 5}),
    _j({"type": "message", "conv": "c-impostor", "seq": 1, "sender": "bob", "to": "alice",
        "client_id": "b-x", "body": "the same pair under another id", "ts": 5}),
    _j({"type": "receipt", "conv": "c-unknown", "user": "bob", "read_seq": 7}),
    _j({"type": "synced", "cursors": {"c-unknown": 9}}),
    _j({"type": "error", "code": "[bold]x[/]", "reason": "\x1b]52;c;aGk=\x07"}),
]  # fmt: skip


async def test_named_hostile_frames(rig: Rig) -> None:
    """Each of the cases the issue names, in one batch: 22 undecodable, one error frame."""
    assert expected_notices(NAMED) == 23
    await check_batch(rig, NAMED)
    notice = rig.client.of(ServerNotice)[-1]
    assert (notice.code, notice.reason) == ("[bold]x[/]", "\x1b]52;c;aGk=\x07")
    # Acks for our own pending message that contradict what we hold: it stays pending.
    contradicting = [
        p.Ack(rig.pending, "c-impostor", 9, 1, False),
        p.Ack(rig.pending, CONV, 1, 1, True),  # seq 1 is bob's message
    ]
    await check_batch(rig, [p.encode(a).decode() for a in contradicting])
    # After all that, the engine still sends: the server's ack is taken at its word.
    ack = p.Ack(rig.pending, CONV, len(rig.hostile.truth) + 1, 1_800_000_000_000, False)
    await rig.hostile.push(p.encode(ack).decode())
    await until(
        lambda: rig.client.state_of(rig.pending) is OutState.SENT, "the pending message sent"
    )
    rig.alive()


@pytest.mark.parametrize(
    "greeting",
    [
        [b"\xff\xfe not json"],
        ["[" * 40_000 + "]" * 40_000],
        [b'{"type":"welcome","v":1,"user":"\xff","epoch":"e","server_time":1}'],
        ['{"type":"welcome","v":1,"user":"alice","epoch":"e","server_time":-1}'],
        ['{"type":"message","conv":"c","seq":1,"sender":"bob","to":"alice","client_id":"x",'
         '"body":"b","ts":1}'],
        ["null"],
    ],
    ids=["binary-junk", "deep-nesting", "invalid-utf8", "negative-time", "message-first", "null"],
)  # fmt: skip
async def test_garbage_answer_to_the_login(tmp_path: Path, greeting: list[Frame]) -> None:
    """Not a welcome: a notice or a reason, a reconnect with backoff, never a dead engine.

    Before the fix an undecodable first frame escaped ``_session`` as FrameError (or
    UnicodeDecodeError/RecursionError) and ended ``run()``.
    """
    async with hostile_server() as hostile:
        hostile.greeting = greeting
        engines = Engines(tmp_path)
        try:
            client = await engines.start("alice", "t", hostile.url, **SYNC)
            await until(lambda: hostile.logins >= 3, "three attempts")
            assert not client.task.done(), client.task.exception()
            reasons = [
                e.status.reason for e in client.events
                if getattr(e, "status", None) is not None and e.status.state is ConnState.OFFLINE
            ]  # fmt: skip
            assert reasons and all(r for r in reasons)
            # The server mends its ways: the engine gets online on its own.
            hostile.greeting = None
            await client.online()
            assert client.engine.store.watermark(CONV) == 2
        finally:
            await engines.aclose()


async def test_text_frame_that_is_not_utf8_closes_1007_and_the_engine_comes_back(
    rig: Rig,
) -> None:
    # Sent as a text frame without a check; the engine's websockets closes with 1007.
    assert rig.hostile.current is not None
    await rig.hostile.current.send(b'{"type":"error","code":"x","reason":"\xff"}', text=True)
    await until(lambda: rig.hostile.logins == 2, "a reconnect")
    await rig.client.online()
    rig.alive()
    m = await rig.hostile.next_real_message()
    await until(lambda: rig.engine.store.watermark(CONV) == m.seq, "the next message")
    assert rig.store_state() == rig.expected_state()


async def test_an_epoch_that_changes_at_every_login_does_not_cause_a_reconnect_storm(
    tmp_path: Path,
) -> None:
    """Each login resets the replica once; after the first, reconnects back off.

    Before the fix every epoch change reconnected at once: about a thousand logins a second.
    """
    async with hostile_server() as hostile:
        engines = Engines(tmp_path)
        try:
            client = await engines.start("alice", "t", hostile.url, **SYNC)
            pending = client.engine.send("bob", "keep me").client_id
            await client.online()
            # From now on every login names another history; 1012 makes the engine come back.
            hostile.epochs = lambda _n: secrets.token_hex(8)
            assert hostile.current is not None
            await hostile.current.close(1012)
            await until(lambda: hostile.logins >= 3, "two more logins")
            started, logins = time.monotonic(), hostile.logins
            await asyncio.sleep(1.5)
            rate = (hostile.logins - logins) / (time.monotonic() - started)
            # FAST_SYNC backoff: uniform draws up to 0.05, 0.1, 0.2, 0.4, 0.5 … s.
            assert rate < 20, f"{rate:.0f} logins/s"
            assert not client.task.done(), client.task.exception()
            assert len(client.of(EpochReset)) >= 2
            assert client.state_of(pending) is OutState.PENDING
            # A stable server again: online, and the outbox kept its message.
            hostile.epochs = lambda _n: EPOCH
            await client.online()
            await stays(lambda: client.state is ConnState.ONLINE, "online", 0.3)
            assert client.state_of(pending) is OutState.PENDING
        finally:
            await engines.aclose()
