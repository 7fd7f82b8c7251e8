"""FaultProxy against a real asyncio echo server and a real websockets server, on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError, InvalidMessage

from harness.faultproxy import FaultProxy

# Long enough to tell "nothing arrived" from scheduling noise, short enough for a fast suite.
QUIET = 0.3
STEP = 2.0


@dataclass
class EchoServer:
    """Echoes every byte back and remembers what it received and in how many reads."""

    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    reads: list[int] = field(default_factory=list)
    got_data: asyncio.Event = field(default_factory=asyncio.Event)
    eof: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.received += data
                self.reads.append(len(data))
                self.got_data.set()
                writer.write(data)
                await writer.drain()
            self.eof.set()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def wait_received(self, n: int) -> bytes:
        async def until() -> None:
            while len(self.received) < n:
                self.got_data.clear()
                await self.got_data.wait()

        await asyncio.wait_for(until(), STEP)
        return bytes(self.received)


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server_state = EchoServer()
    server = await asyncio.start_server(server_state.handle, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    yield server_state
    server.close()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port, seed=1) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def ws_proxy() -> AsyncIterator[FaultProxy]:
    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with (
        serve(handler, "127.0.0.1", 0) as server,
        FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1], seed=1) as fault_proxy,
    ):
        yield fault_proxy


async def open_client(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), STEP)


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), STEP)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), STEP)


async def assert_nothing_arrives(reader: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), QUIET)


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> float:
    started = time.monotonic()
    writer.write(data)
    assert await read_exactly(reader, len(data)) == data
    return time.monotonic() - started


async def wait_until_idle(proxy: FaultProxy) -> None:
    async with asyncio.timeout(STEP):
        # The proxy exposes counters, not events: polling is the honest way to watch them.
        while proxy.active:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# -- raw TCP ---------------------------------------------------------------------------------


async def test_pass_through_and_counters(proxy: FaultProxy, echo: EchoServer) -> None:
    assert proxy.url == f"ws://127.0.0.1:{proxy.port}"
    reader, writer = await open_client(proxy)
    await roundtrip(reader, writer, b"hello")
    assert echo.received == b"hello"
    assert (proxy.connections_total, proxy.active) == (1, 1)
    assert (proxy.bytes_up, proxy.bytes_down) == (5, 5)

    writer.write_eof()
    assert await read_to_eof(reader) == b""
    await wait_until_idle(proxy)
    writer.close()


async def test_delay_applies_to_each_direction_and_keeps_order(proxy: FaultProxy) -> None:
    reader, writer = await open_client(proxy)
    assert await roundtrip(reader, writer, b"x") < 0.2

    proxy.delay(0.15)
    assert await roundtrip(reader, writer, b"y") >= 0.28

    proxy.delay(0.02, jitter=0.02)
    chunks = [bytes([65 + i % 26]) * (i + 1) for i in range(20)]
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.002)
    expected = b"".join(chunks)
    assert await read_exactly(reader, len(expected)) == expected

    proxy.pass_through()
    assert await roundtrip(reader, writer, b"z") < 0.2
    writer.close()


async def test_blackhole_drops_bytes_and_keeps_sockets_open(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    reader, writer = await open_client(proxy)
    await roundtrip(reader, writer, b"before")

    proxy.blackhole()
    writer.write(b"lost")
    await assert_nothing_arrives(reader)
    assert echo.received == b"before"
    assert not reader.at_eof()
    assert not writer.transport.is_closing()
    assert proxy.active == 1

    # Dropped, not buffered, and the stream never resumes with a hole in it: the first
    # byte after the blackhole resets the connection, as a peer whose TCP gave up does.
    proxy.pass_through()
    writer.write(b"after")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(100), STEP)
    assert echo.received == b"before"
    writer.close()


async def test_an_idle_link_survives_a_blackhole(proxy: FaultProxy, echo: EchoServer) -> None:
    reader, writer = await open_client(proxy)
    await roundtrip(reader, writer, b"before")
    proxy.blackhole()
    await assert_nothing_arrives(reader)
    # Nothing was lost, so nothing is missing from the stream: it goes on.
    proxy.pass_through()
    await roundtrip(reader, writer, b"after")
    assert echo.received == b"beforeafter"
    writer.close()


async def test_blackhole_down_only_lets_client_bytes_reach_server(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    reader, writer = await open_client(proxy)
    proxy.blackhole(direction="down")
    writer.write(b"stored, ack lost")
    assert await echo.wait_received(16) == b"stored, ack lost"
    await assert_nothing_arrives(reader)
    assert (proxy.bytes_up, proxy.bytes_down) == (16, 0)
    writer.close()


async def test_blackhole_applies_to_new_connections(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.blackhole()
    reader, writer = await open_client(proxy)
    writer.write(b"void")
    await assert_nothing_arrives(reader)
    assert echo.received == b""
    writer.close()


async def test_reset_aborts_current_and_new_connections(proxy: FaultProxy) -> None:
    reader, writer = await open_client(proxy)
    await roundtrip(reader, writer, b"ok")

    proxy.reset()
    with pytest.raises(ConnectionResetError):
        await read_to_eof(reader)
    writer.close()
    assert proxy.active == 0

    reset_reader, reset_writer = await open_client(proxy)
    with pytest.raises(ConnectionResetError):
        await read_to_eof(reset_reader)
    reset_writer.close()
    assert proxy.connections_total == 2

    proxy.pass_through()
    new_reader, new_writer = await open_client(proxy)
    await roundtrip(new_reader, new_writer, b"back")
    new_writer.close()


async def test_close_after_down_delivers_exactly_n_bytes_then_fin(proxy: FaultProxy) -> None:
    proxy.close_after(5, direction="down")
    reader, writer = await open_client(proxy)
    writer.write(b"0123456789")
    assert await read_to_eof(reader) == b"01234"
    await wait_until_idle(proxy)
    writer.close()


async def test_close_after_up_counts_from_when_it_is_set(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    reader, writer = await open_client(proxy)
    await roundtrip(reader, writer, b"warmup")

    proxy.close_after(3, direction="up")
    writer.write(b"abcdef")
    await asyncio.wait_for(echo.eof.wait(), STEP)
    assert echo.received == b"warmupabc"
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_slice_delivers_identical_bytes_in_pieces(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    reader, writer = await open_client(proxy)
    proxy.slice(max_chunk=3, delay=0.005, direction="up")
    payload = bytes(range(40))
    await roundtrip(reader, writer, payload)
    assert echo.received == payload
    assert max(echo.reads) <= 3
    assert len(echo.reads) > 1

    proxy.slice(max_chunk=1000)
    big = bytes(range(256)) * 400
    await roundtrip(reader, writer, big)
    writer.close()


async def test_close_all_closes_cleanly_and_keeps_mode(proxy: FaultProxy) -> None:
    proxy.delay(0.05)
    reader, writer = await open_client(proxy)
    await roundtrip(reader, writer, b"a")

    proxy.close_all()
    assert await read_to_eof(reader) == b""
    assert proxy.active == 0

    new_reader, new_writer = await open_client(proxy)
    assert await roundtrip(new_reader, new_writer, b"b") >= 0.09
    writer.close()
    new_writer.close()


async def test_refuse_closes_new_connections_only(proxy: FaultProxy) -> None:
    reader, writer = await open_client(proxy)
    # The kernel accepts before the proxy does: make sure this one is proxied already.
    await roundtrip(reader, writer, b"first")
    proxy.refuse()

    refused_reader, refused_writer = await open_client(proxy)
    assert await read_to_eof(refused_reader) == b""
    refused_writer.close()
    await roundtrip(reader, writer, b"still here")

    proxy.pass_through()
    new_reader, new_writer = await open_client(proxy)
    await roundtrip(new_reader, new_writer, b"welcome back")
    writer.close()
    new_writer.close()


async def test_stop_closes_connections(echo: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.port)
    await proxy.start()
    reader, writer = await open_client(proxy)
    await roundtrip(reader, writer, b"x")
    proxy.blackhole()
    await asyncio.wait_for(proxy.stop(), STEP)
    assert await read_to_eof(reader) == b""
    assert proxy.active == 0
    writer.close()


async def test_unreachable_target_resets_client() -> None:
    placeholder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = placeholder.sockets[0].getsockname()[1]
    placeholder.close()
    await placeholder.wait_closed()
    async with FaultProxy("127.0.0.1", port) as proxy:
        reader, _ = await open_client(proxy)
        with pytest.raises(ConnectionResetError):
            await read_to_eof(reader)


def test_rejects_non_loopback_and_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FaultProxy("10.0.0.1", 80)
    with pytest.raises(ValueError):
        FaultProxy("127.0.0.1", 80, listen_host="0.0.0.0")
    proxy = FaultProxy("localhost", 80)
    with pytest.raises(ValueError):
        proxy.blackhole(direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        proxy.slice(max_chunk=0)
    with pytest.raises(RuntimeError):
        _ = proxy.url


# -- websockets ------------------------------------------------------------------------------


async def test_websocket_pass_through_delay_and_slice(ws_proxy: FaultProxy) -> None:
    async with connect(ws_proxy.url, proxy=None, open_timeout=STEP) as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), STEP) == "hi"

        ws_proxy.delay(0.1)
        started = time.monotonic()
        await ws.send("slow")
        assert await asyncio.wait_for(ws.recv(), STEP) == "slow"
        assert time.monotonic() - started >= 0.18

        ws_proxy.slice(max_chunk=7)
        message = bytes(range(256)) * 40
        await ws.send(message)
        assert await asyncio.wait_for(ws.recv(), STEP) == message


async def test_websocket_blackhole_down_loses_only_the_reply(ws_proxy: FaultProxy) -> None:
    async with connect(ws_proxy.url, proxy=None, open_timeout=STEP) as ws:
        ws_proxy.blackhole(direction="down")
        await ws.send("will be stored")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), QUIET)
        assert ws_proxy.bytes_up > 0
        ws_proxy.pass_through()
        # The reply was lost, so this link is dead: the next frame resets it.
        await ws.send("again")
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), STEP)
    async with connect(ws_proxy.url, proxy=None, open_timeout=STEP) as ws:
        await ws.send("again")
        assert await asyncio.wait_for(ws.recv(), STEP) == "again"


async def test_websocket_reset_then_recovery(ws_proxy: FaultProxy) -> None:
    ws = await connect(ws_proxy.url, proxy=None, open_timeout=STEP)
    ws_proxy.reset()
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(ws.recv(), STEP)

    with pytest.raises((OSError, InvalidMessage)):
        await connect(ws_proxy.url, proxy=None, open_timeout=STEP)

    ws_proxy.pass_through()
    async with connect(ws_proxy.url, proxy=None, open_timeout=STEP) as ws:
        await ws.send("back")
        assert await asyncio.wait_for(ws.recv(), STEP) == "back"


async def test_websocket_close_after_breaks_the_stream(ws_proxy: FaultProxy) -> None:
    async with connect(ws_proxy.url, proxy=None, open_timeout=STEP) as ws:
        ws_proxy.close_after(3, direction="down")
        await ws.send("a message longer than three bytes")
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), STEP)
