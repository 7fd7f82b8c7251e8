"""Bad frames, size and rate limits, rejects, and slow readers: one client never harms others."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from harness.waits import until
from tests.support.wire import (
    STEP,
    RunningServer,
    ServerFactory,
    assert_silent,
    db_rows,
    expect_closed,
    login,
    recv_frame,
    recv_until,
    send_frame,
    send_message,
    send_raw,
)
from tui_chat.protocol import (
    Ack,
    CloseCode,
    Error,
    ErrorCode,
    Message,
    Reject,
    Send,
)
from tui_chat.server import session as session_module
from tui_chat.server.config import Limits, ServerConfig


async def still_works(srv: RunningServer, ws: ClientConnection, sender: str, cid: str) -> None:
    """``ws`` (of ``sender``) can still send, and bob's side is still served."""
    ack = await send_message(ws, cid, "bob" if sender != "bob" else "alice")
    assert isinstance(ack, Ack) and not ack.duplicate, ack


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("", ErrorCode.BAD_JSON),
        (b"\xff\xfe binary junk", ErrorCode.BAD_JSON),
        ('{"type": "teleport", "to": "bob"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "send", "client_id": "a1", "to": "bob", "body": 5}', ErrorCode.BAD_FRAME),
        ('{"type": "send", "client_id": "has space", "to": "bob", "body": "x"}', "bad_frame"),
        (
            '{"type": "send", "client_id": "' + "x" * 65 + '", "to": "bob", "body": "x"}',
            "bad_frame",
        ),
        ('{"type": "send", "to": "bob", "body": "no id"}', ErrorCode.BAD_FRAME),
        ('{"type": "read", "conv": "c1", "seq": -1}', ErrorCode.BAD_FRAME),
        ('{"type": "history", "conv": "c1", "limit": 100000}', ErrorCode.BAD_FRAME),
        ('{"no": "type"}', ErrorCode.BAD_FRAME),
        ("[1, 2, 3]", ErrorCode.BAD_FRAME),
        ('"just a string"', ErrorCode.BAD_FRAME),
    ],
)
async def test_bad_frames_get_errors_and_everyone_keeps_working(
    chat_server: RunningServer, raw: str | bytes, code: str
) -> None:
    url, tokens = chat_server.url, chat_server.tokens
    alice, *_ = await login(url, "alice", tokens["alice"])
    bob, *_ = await login(url, "bob", tokens["bob"])
    try:
        await send_raw(alice, raw)
        err = await recv_frame(alice)
        assert isinstance(err, Error), err
        assert err.code == code, err
        assert err.reason
        # The same connection is still open and usable...
        await still_works(chat_server, alice, "alice", "after-bad")
        msg, _ = await recv_until(bob, Message)
        assert msg.client_id == "after-bad"
        # ...and so is everybody else's.
        await still_works(chat_server, bob, "bob", "bob-ok")
        assert chat_server.server.connection_count() == 2
    finally:
        await alice.close()
        await bob.close()
    # No bad frame stored anything.
    assert db_rows(chat_server.db_path, "SELECT client_id FROM messages ORDER BY seq") == [
        ("after-bad",),
        ("bob-ok",),
    ]


async def test_oversized_frame_closes_only_that_connection(
    chat_server_factory: ServerFactory,
) -> None:
    srv = await chat_server_factory(ServerConfig(limits=Limits(max_frame=8 * 1024)))
    alice, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    bob, *_ = await login(srv.url, "bob", srv.tokens["bob"])
    try:
        big = Send(client_id="huge", to="bob", body="x" * 10_000)
        await send_frame(alice, big)
        code, frames = await expect_closed(alice)
        assert code == CloseCode.MESSAGE_TOO_BIG == 1009
        assert [f for f in frames if isinstance(f, Ack)] == []
        # bob is unaffected and the server still serves new connections.
        await still_works(srv, bob, "bob", "bob-after")
        alice2, *_ = await login(srv.url, "alice", srv.tokens["alice"])
        try:
            await still_works(srv, alice2, "alice", "alice-after")
        finally:
            await alice2.close()
    finally:
        await bob.close()
    assert db_rows(srv.db_path, "SELECT count(*) FROM messages WHERE client_id='huge'") == [(0,)]


async def test_body_too_long_is_rejected_not_retryable(
    chat_server_factory: ServerFactory,
) -> None:
    srv = await chat_server_factory(ServerConfig(limits=Limits(max_body=50)))
    alice, welcome, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    bob, *_ = await login(srv.url, "bob", srv.tokens["bob"])
    try:
        assert welcome.max_body == 50
        reject = await send_message(alice, "long", "bob", "y" * 51)
        assert isinstance(reject, Reject)
        assert (reject.code, reject.retryable) == (ErrorCode.TOO_LONG, False)
        assert "51" in reject.reason and "50" in reject.reason
        # Exactly at the limit is fine (counted in characters, not bytes).
        ok = await send_message(alice, "max", "bob", "é" * 50)
        assert isinstance(ok, Ack) and ok.seq == 1
        msg, _ = await recv_until(bob, Message)
        assert msg.client_id == "max"
        await assert_silent(bob)
    finally:
        await alice.close()
        await bob.close()
    assert db_rows(srv.db_path, "SELECT client_id FROM messages") == [("max",)]


async def test_empty_body_is_rejected(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        reject = await send_message(alice, "blank", "bob", "  \n ")
        assert isinstance(reject, Reject)
        assert (reject.code, reject.retryable) == (ErrorCode.EMPTY_BODY, False)
    finally:
        await alice.close()


async def test_unknown_peer_is_rejected(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        reject = await send_message(alice, "nobody-1", "zed", "hello?")
        assert isinstance(reject, Reject)
        assert (reject.client_id, reject.code, reject.retryable) == (
            "nobody-1",
            ErrorCode.UNKNOWN_PEER,
            False,
        )
        assert "zed" in reject.reason
        # Nothing was stored, and no conversation was created.
        assert db_rows(chat_server.db_path, "SELECT count(*) FROM messages") == [(0,)]
        assert db_rows(chat_server.db_path, "SELECT count(*) FROM conversations") == [(0,)]
        # The client_id was not used up: it can go to a real user afterwards.
        ack = await send_message(alice, "nobody-1", "bob", "hello")
        assert isinstance(ack, Ack) and (ack.seq, ack.duplicate) == (1, False)
    finally:
        await alice.close()


async def test_rate_limit_rejects_with_retry_after(chat_server_factory: ServerFactory) -> None:
    srv = await chat_server_factory(ServerConfig(limits=Limits(rate=5, burst=5)))
    alice, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    bob, *_ = await login(srv.url, "bob", srv.tokens["bob"])
    try:
        for i in range(8):
            await send_frame(alice, Send(client_id=f"r{i}", to="bob", body=f"{i}"))
        results: dict[str, Ack | Reject] = {}
        while len(results) < 8:
            frame = await recv_frame(alice)
            if isinstance(frame, Ack | Reject):
                results[frame.client_id] = frame
        acked = sorted(cid for cid, f in results.items() if isinstance(f, Ack))
        rejected = [f for f in results.values() if isinstance(f, Reject)]
        # The burst of 5 goes through; the rest are refused, retryable, with a hint.
        assert acked == [f"r{i}" for i in range(5)]
        assert sorted(r.client_id for r in rejected) == ["r5", "r6", "r7"]
        for r in rejected:
            assert (r.code, r.retryable) == (ErrorCode.RATE_LIMITED, True)
            assert r.retry_after is not None and 0 < r.retry_after <= 1.0
        # Other connections have their own budget.
        ok = await send_message(bob, "b1", "alice")
        assert isinstance(ok, Ack)
        # After waiting as told, a retry of the same client_id goes through.
        await asyncio.sleep(max(r.retry_after or 0 for r in rejected) + 0.05)
        retry = await send_message(alice, "r5", "bob", "5")
        assert isinstance(retry, Ack) and not retry.duplicate
    finally:
        await alice.close()
        await bob.close()
    stored = db_rows(srv.db_path, "SELECT client_id FROM messages WHERE sender='alice'")
    assert sorted(r[0] for r in stored) == ["r0", "r1", "r2", "r3", "r4", "r5"]


@pytest.mark.parametrize(
    "queue_limit",
    [
        {"max_outgoing": 20},  # counted in frames
        {"max_outgoing": 100_000, "max_outgoing_bytes": 500_000},  # counted in bytes
    ],
    ids=["frames", "bytes"],
)
async def test_slow_reader_is_closed_with_4409_and_others_are_unaffected(
    chat_server_factory: ServerFactory, queue_limit: dict[str, int]
) -> None:
    big = 60_000
    srv = await chat_server_factory(
        ServerConfig(
            limits=Limits(
                max_body=big, max_frame=256 * 1024, rate=10_000, burst=10_000, **queue_limit
            )
        )
    )
    url, tokens = srv.url, srv.tokens
    # bob logs in and then never reads; websockets' default queue (16) stops reading the socket.
    slow, *_ = await login(url, "bob", tokens["bob"], max_queue=16)
    alice, *_ = await login(url, "alice", tokens["alice"])
    carol, *_ = await login(url, "carol", tokens["carol"])
    (slow_session,) = srv.server.sessions_of("bob")

    acks: asyncio.Queue[Ack] = asyncio.Queue()

    async def read_alice() -> None:
        # alice reads everything promptly: she must never look slow herself.
        while True:
            frame = await recv_frame(alice, 30)
            if isinstance(frame, Ack):
                acks.put_nowait(frame)

    alice_reader = asyncio.create_task(read_alice())
    try:
        body = "z" * big
        sent = 0
        # Loopback buffers hold some megabytes; 60 kB messages fill them within ~200.
        # Windows of 5 keep alice's own queue (ack + echo per message) well under 20.
        while not slow_session._closing and sent < 1000:
            for _ in range(5):
                await send_frame(alice, Send(client_id=f"s{sent}", to="bob", body=body))
                sent += 1
            for _ in range(5):
                await asyncio.wait_for(acks.get(), STEP)
        assert slow_session._closing, f"bob was never found too slow after {sent} messages"
        alice_reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await alice_reader
        # bob now reads: what it gets is a gap-free prefix, then the 4409 close.
        code, frames = await expect_closed(slow, within=20)
        assert code == CloseCode.TOO_SLOW == 4409
        got = [f.seq for f in frames if isinstance(f, Message)]
        assert got == list(range(1, len(got) + 1))
        assert len(got) < sent

        # alice (the sender) and carol (a bystander) were never disconnected.
        msg_to_carol = await send_message(alice, "to-carol", "carol", "still here?")
        assert isinstance(msg_to_carol, Ack)
        m, _ = await recv_until(carol, Message)
        assert m.client_id == "to-carol"
        assert srv.server.connection_count() == 2

        # Every message was stored; bob catches up from its cursor on reconnect.
        conv = db_rows(srv.db_path, "SELECT conv FROM messages WHERE client_id='s0'")[0][0]
        await until(
            lambda: (
                db_rows(srv.db_path, "SELECT count(*) FROM messages WHERE conv=?", (conv,))
                == [(sent,)]
            ),
            "every send committed",
            within=10,
        )
        cursor = got[-1] if got else 0
        back, _, replayed, synced = await login(url, "bob", tokens["bob"], {conv: cursor})
        await back.close()
        assert [m.seq for m in replayed] == list(range(cursor + 1, sent + 1))
        assert synced.cursors[conv] == sent
    finally:
        if not alice_reader.done():
            alice_reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await alice_reader
        for ws in (alice, carol, slow):
            await ws.close()


async def test_many_bad_frames_do_not_exhaust_the_server(chat_server: RunningServer) -> None:
    """A flood of junk yields errors (or rate-limit errors), never a crash or a close."""
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        for _ in range(50):
            await send_raw(alice, "{junk")
        codes = [(await recv_frame(alice, STEP)) for _ in range(50)]
        assert all(isinstance(e, Error) and e.code == ErrorCode.BAD_JSON for e in codes)
        await still_works(chat_server, alice, "alice", "survived")
    finally:
        await alice.close()


async def test_slow_reader_that_never_reads_is_dropped_in_bounded_time(
    chat_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a 4409 the server does not wait for ever on a peer whose window stays full."""
    monkeypatch.setattr(session_module, "SLOW_CLOSE_TIMEOUT", 0.5)
    big = 60_000
    srv = await chat_server_factory(
        ServerConfig(
            limits=Limits(
                max_outgoing=20, max_body=big, max_frame=256 * 1024, rate=10_000, burst=10_000
            )
        )
    )
    slow, *_ = await login(srv.url, "bob", srv.tokens["bob"], max_queue=1)
    alice, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    (slow_session,) = srv.server.sessions_of("bob")
    try:
        sent = 0
        while not slow_session._closing and sent < 1000:
            for _ in range(5):
                await send_frame(alice, Send(client_id=f"n{sent}", to="bob", body="q" * big))
                sent += 1
            acks = 0
            while acks < 5:
                if isinstance(await recv_frame(alice), Ack):
                    acks += 1
        assert slow_session._closing
        await until(lambda: not srv.server.sessions_of("bob"), "the stalled connection dropped", 5)
        assert srv.server.connection_count() == 1
        assert isinstance(await send_message(alice, "alive", "carol"), Ack)
    finally:
        slow.transport.abort()
        await alice.close()
