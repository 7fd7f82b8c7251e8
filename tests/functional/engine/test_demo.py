"""The embedded demo: its own cut/restore link (not the harness's fault proxy), end to end.

``tui_chat/demo_link.py`` relays the demo client to the demo server; F6 cuts it so the link
looks alive but carries nothing, and restores it. These tests run it over real sockets: an
echo server for the relay's bytes, and the whole demo (server, peers, the user's engine) for
the outage the user sees.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.waits import stays, until
from tui_chat.core.models import ConnState
from tui_chat.demo import PEERS, Demo
from tui_chat.demo_link import DemoLink

STEP = 5.0


@pytest.fixture
async def echo_link() -> AsyncIterator[tuple[DemoLink, list[asyncio.StreamWriter]]]:
    """A :class:`DemoLink` in front of an echo server; also the server's open writers."""
    peers: list[asyncio.StreamWriter] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        with contextlib.suppress(OSError):
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    link = DemoLink(server.sockets[0].getsockname()[1])
    await link.start()
    try:
        yield link, peers
    finally:
        await link.stop()
        server.close()
        await server.wait_closed()


async def dial(link: DemoLink) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(link.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


async def read_some(reader: asyncio.StreamReader, within: float = STEP) -> bytes:
    async with asyncio.timeout(within):
        return await reader.read(4096)


async def test_the_link_relays_both_ways(echo_link: tuple[DemoLink, list]) -> None:
    link, _ = echo_link
    assert link.url.startswith("ws://127.0.0.1:")
    reader, writer = await dial(link)
    writer.write(b"hello")
    assert await read_some(reader) == b"hello"
    writer.close()


async def test_a_cut_link_carries_nothing_and_hides_a_close_until_restored(
    echo_link: tuple[DemoLink, list],
) -> None:
    link, peers = echo_link
    reader, writer = await dial(link)
    writer.write(b"before")
    assert await read_some(reader) == b"before"

    link.cut()
    writer.write(b"lost")
    # Nothing comes back, and the connection does not end either: a silent dead link.
    read = asyncio.ensure_future(reader.read(4096))
    await stays(lambda: not read.done(), "no bytes and no EOF on the cut link", 0.5)

    link.restore()
    writer.write(b"after")
    # What was sent while cut is gone for good; what is sent after arrives.
    assert await asyncio.wait_for(read, STEP) == b"after"
    # Once restored, a close goes through again.
    peers[0].close()
    assert await read_some(reader) == b""
    writer.close()


async def test_the_demo_outage_key_takes_the_client_offline_and_back(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "demo")
    engine = await demo.start()
    task = asyncio.create_task(engine.run())
    try:
        await until(lambda: engine.status.state is ConnState.ONLINE, "the demo online", 20)
        assert demo.toggle_outage() is True
        # The demo's keepalive (2 s + 2 s) notices the silent link.
        await until(lambda: engine.status.state is not ConnState.ONLINE, "the outage seen", 20)
        assert demo.toggle_outage() is False
        await until(lambda: engine.status.state is ConnState.ONLINE, "back online", 30)
        # And the link really carries messages again: ada answers with one of her replies.
        answers = set(PEERS["ada"][1])
        engine.send("ada", "are you there?")
        await until(
            lambda: any(m.body in answers for m in engine.messages("ada") if not m.own),
            "ada's answer",
            20,
        )
    finally:
        await engine.stop()
        await asyncio.wait({task}, timeout=10)
        engine.close()
        await demo.stop()
