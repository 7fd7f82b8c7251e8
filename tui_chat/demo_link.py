"""The demo's network link: a loopback TCP relay that F6 can cut and restore.

The demo shows what the client does when the network dies without a word, the hardest
case: the socket stays open, nothing arrives, no FIN, no RST. While the link is cut, bytes
in both directions are read and thrown away (not buffered, so restoring it does not deliver
them late, as on a real link that gave up) and a peer's FIN is swallowed. Restoring it
forwards bytes again on the connections that still exist and on new ones.

This is deliberately small: the test harness has a full fault proxy (delays, slicing,
byte budgets, refusals, resets) in ``harness/faultproxy.py``, which the wheel does not ship.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

_READ_SIZE: Final = 64 * 1024


class DemoLink:
    """Relays ``127.0.0.1:port`` → ``127.0.0.1:target_port``; :meth:`cut` / :meth:`restore`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}"

    def cut(self) -> None:
        self.is_cut = True

    def restore(self) -> None:
        self.is_cut = False

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self._writers.discard(writer)
            writer.close()
            return
        self._writers.add(up_writer)
        pair = (writer, up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(_READ_SIZE):
                if self.is_cut:
                    continue
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        if self.is_cut:
            # A cut link tells neither side that the other left; the pair stays open until
            # the client gives up on it (its keepalive notices) or the demo stops.
            return
        for writer in pair:
            self._writers.discard(writer)
            with contextlib.suppress(OSError):
                writer.close()
