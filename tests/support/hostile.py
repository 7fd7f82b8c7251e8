"""A scripted server that brings an engine online with real messages, then sends anything.

For the client fuzz tests and the terminal-safety tests: the engine must survive and
report whatever this server sends, and keep the real messages it already had.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tui_chat import protocol as p

CONV = "c-bob"
EPOCH = "hostile-epoch"

Frame = str | bytes


def real_message(seq: int) -> p.Message:
    return p.Message(
        CONV, seq, "bob", f"bob-{seq}", f"message {seq}", 1_700_000_000_000 + seq, to="alice"
    )


class HostileServer:
    """Brings an engine online with bob's real messages, then sends what it is told.

    ``greeting`` (if set) replaces the whole login answer: frames sent right after the hello.
    ``epochs`` (if set) gives the epoch of each login.
    """

    def __init__(self) -> None:
        self.truth: list[p.Message] = [real_message(1), real_message(2)]
        self.logins = 0
        self.received: list[Frame] = []
        self.current: ServerConnection | None = None
        self.greeting: list[Frame] | None = None
        self.epochs: Callable[[int], str] = lambda _n: EPOCH
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            hello = p.decode_client(await ws.recv())
            assert isinstance(hello, p.Hello)
            self.logins += 1
            if self.greeting is not None:
                for frame in self.greeting:
                    await ws.send(frame)
                await ws.wait_closed()
                return
            welcome = p.Welcome(v=1, user="alice", epoch=self.epochs(self.logins), server_time=1)
            await ws.send(p.encode(welcome).decode())
            after = hello.cursors.get(CONV, 0)
            for m in self.truth:
                if m.seq > after:
                    await ws.send(p.encode(m).decode())
            await ws.send(p.encode(p.Synced(cursors={CONV: len(self.truth)})).decode())
            self.current = ws
            async for raw in ws:
                self.received.append(raw)

    async def push(self, *frames: Frame) -> None:
        assert self.current is not None
        for frame in frames:
            await self.current.send(frame)

    async def next_real_message(self) -> p.Message:
        m = real_message(len(self.truth) + 1)
        self.truth.append(m)
        await self.push(p.encode(m).decode())
        return m


@contextlib.asynccontextmanager
async def hostile_server() -> AsyncIterator[HostileServer]:
    hostile = HostileServer()
    async with serve(hostile.handler, "127.0.0.1", 0, compression=None, ping_interval=None) as srv:
        hostile.url = f"ws://127.0.0.1:{next(iter(srv.sockets)).getsockname()[1]}"
        yield hostile
