"""Group fan-out: frames written straight to a connection's socket and frames queued behind
a slow one keep their order; a slow reader in a big group is still closed 4409."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from harness.waits import until
from tests.support.wire import (
    STEP,
    RunningServer,
    ServerFactory,
    connect_ws,
    expect_closed,
    login,
    recv_frame,
    recv_until,
    send_frame,
)
from tui_chat.protocol import (
    PROTOCOL_VERSION,
    Ack,
    CloseCode,
    Create,
    Hello,
    Message,
    Send,
    Synced,
    Welcome,
    encode,
)
from tui_chat.server.config import Limits, ServerConfig

BIG = 60_000
# Generous: a loaded machine may be slow, a passing test is not.
LONG = 60.0


def _small_socket(port: int) -> socket.socket:
    """A connected client socket with a small receive buffer: it fills soon once unread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def _login_small(srv: RunningServer, user: str) -> ClientConnection:
    """Log in on a small-buffer socket; ``max_queue=1``: the client stops reading the socket
    as soon as a frame waits unread, i.e. it pauses while the test does not call ``recv``."""
    ws = await connect_ws(srv.url, sock=_small_socket(srv.port), max_queue=1)
    hello = Hello(v=PROTOCOL_VERSION, user=user, token=srv.tokens[user], cursors={})
    await ws.send(encode(hello).decode(), text=True)
    assert isinstance(await recv_frame(ws), Welcome)
    await recv_until(ws, Synced)
    return ws


class _Reader:
    """Reads one connection, keeping the seqs of messages in arrival order (the tests have
    one conversation, the group) and handing acks on."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self.acks: asyncio.Queue[Ack] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            frame = await recv_frame(self.ws, 10 * LONG)
            if isinstance(frame, Message):
                self.seqs.append(frame.seq)
            elif isinstance(frame, Ack):
                self.acks.put_nowait(frame)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self.task


async def _group(creator: _Reader, members: list[str]) -> str:
    """Create the group through ``creator``, whose reader is running."""
    await send_frame(creator.ws, Create(client_id="big", title="big", members=members))
    async with asyncio.timeout(LONG):
        ack = await creator.acks.get()
    return ack.conv


async def _send_window(sender: _Reader, conv: str, first: int, n: int, size: int = BIG) -> None:
    for i in range(first, first + n):
        await send_frame(sender.ws, Send(client_id=f"m{i}", conv=conv, body="z" * size))
    for _ in range(n):
        async with asyncio.timeout(LONG):
            await sender.acks.get()


def _limits(**kw: Any) -> ServerConfig:
    return ServerConfig(
        limits=Limits(max_body=BIG, max_frame=256 * 1024, rate=100_000, burst=100_000, **kw)
    )


async def test_slow_reader_in_a_big_group_is_closed_4409_while_the_rest_read_in_order(
    chat_server_factory: ServerFactory,
) -> None:
    users = [f"u{i:02}" for i in range(30)]
    srv = await chat_server_factory(_limits(max_outgoing=20), users=users)
    sender_name, slow_name, *rest = users
    slow = await _login_small(srv, slow_name)
    sender = _Reader((await login(srv.url, sender_name, srv.tokens[sender_name])).ws)
    readers = [_Reader((await login(srv.url, u, srv.tokens[u])).ws) for u in rest]
    everyone = [sender, *readers]
    (slow_session,) = srv.server.sessions_of(slow_name)
    try:
        sender.start()
        for r in readers:
            r.start()
        conv = await _group(sender, [slow_name, *rest])
        sent = 0
        while not slow_session.closing and sent < 1000:
            await _send_window(sender, conv, sent, 5)
            sent += 5
        assert slow_session.closing, f"the slow reader was never closed after {sent} messages"
        # The others keep receiving after the close, in order.
        await _send_window(sender, conv, sent, 5)
        sent += 5
        last = sent + 1  # seq 1 is the group's ``created`` event
        await until(
            lambda: all(r.seqs[-1:] == [last] for r in everyone),
            "every other member has every message",
            within=LONG,
        )
        for r in everyone:
            assert r.seqs == list(range(1, last + 1))
        # The slow reader gets a gap-free prefix, then 4409.
        code, frames = await expect_closed(slow, within=LONG)
        assert code == CloseCode.TOO_SLOW == 4409
        got = [f.seq for f in frames if isinstance(f, Message)]
        assert got == list(range(1, len(got) + 1)) and len(got) < last
        await until(lambda: not srv.server.sessions_of(slow_name), "the slow one is gone", LONG)
        assert srv.server.connection_count() == len(everyone)
    finally:
        for r in everyone:
            await r.stop()
            await r.ws.close()
        slow.transport.abort()


async def test_direct_and_queued_frames_on_one_connection_stay_in_seq_order(
    chat_server_factory: ServerFactory,
) -> None:
    """bob reads, pauses (his socket fills, the server queues), then reads again while
    more arrives: what he gets is every seq once, in order, and both paths were used."""
    srv = await chat_server_factory(_limits(max_outgoing=100_000, max_outgoing_bytes=1 << 30))
    bob_ws = await _login_small(srv, "bob")
    alice = _Reader((await login(srv.url, "alice", srv.tokens["alice"])).ws)
    carol = _Reader((await login(srv.url, "carol", srv.tokens["carol"])).ws)
    bob = _Reader(bob_ws)
    (session,) = srv.server.sessions_of("bob")
    try:
        for r in (alice, carol, bob):
            r.start()
        conv = await _group(alice, ["bob", "carol"])
        sent = 0
        await _send_window(alice, conv, sent, 5)
        sent += 5
        await until(lambda: len(bob.seqs) == sent + 1, "bob reads the first messages", LONG)
        direct_before_pause = session.direct_writes
        # (Per writer batch, frames past the 32 KiB write limit queue behind the held ones.)
        assert direct_before_pause > 0, "nothing was written directly"

        # bob pauses: frames stay unread, his socket fills, the server's transport pauses
        # and the server queues for him.
        await bob.stop()
        while not session._queue and sent < 1000:
            await _send_window(alice, conv, sent, 5)
            sent += 5
        assert session._queue, f"nothing was ever queued for bob after {sent} messages"
        # More, smaller ones while he is paused: a long queue, drained a write limit at a
        # time, so that new frames keep arriving while it drains.
        for _ in range(20):
            await _send_window(alice, conv, sent, 5, 4000)
            sent += 5

        # bob reads again while alice keeps sending: the queue drains, then frames are
        # written directly again.
        bob.start()
        for _ in range(40):
            await _send_window(alice, conv, sent, 5, 4000)
            sent += 5
        await until(lambda: not session._queue, "bob's queue drained", LONG)
        direct_after_drain = session.direct_writes
        await _send_window(alice, conv, sent, 5)
        sent += 5
        last = sent + 1
        await until(lambda: bob.seqs[-1:] == [last], "bob has every message", LONG)
        assert session.direct_writes > direct_after_drain, "no direct write after the drain"
        assert bob.seqs == list(range(1, last + 1))
        assert carol.seqs == list(range(1, last + 1))
        assert not session.closing
    finally:
        for r in (alice, carol, bob):
            await r.stop()
            await r.ws.close()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70_000])
async def test_frames_built_once_are_read_by_a_client_like_any_other(
    chat_server_factory: ServerFactory, size: int
) -> None:
    """The hand-built frame header for every length class (7-bit, 16-bit, 64-bit)."""
    srv = await chat_server_factory(_limits())
    alice = (await login(srv.url, "alice", srv.tokens["alice"])).ws
    try:
        (session,) = srv.server.sessions_of("alice")
        payload = b'"' + b"y" * max(0, size - 2) + b'"' if size >= 2 else b"1"[:size]
        session.push(payload)
        async with asyncio.timeout(STEP):
            raw = await alice.recv()
        assert isinstance(raw, str) and raw.encode() == payload
    finally:
        await alice.close()
