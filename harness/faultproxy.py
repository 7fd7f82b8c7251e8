"""A loopback TCP proxy that injects network faults between a websocket client and server.

``tc netem`` is not available on the machines this project is tested on, so tests and
benchmarks put this proxy between client and server and change its behaviour while the link
is in use::

    async with FaultProxy("127.0.0.1", server_port, seed=1) as proxy:
        client = await connect(proxy.url, proxy=None)
        proxy.blackhole(direction="down")  # the server gets the message, the ack is lost
        ...
        proxy.pass_through()

Behaviour is made of three independent aspects, and every method changes only the aspect it
names, for existing and new connections alike:

* what each direction does with its bytes: forward (``pass_through``), ``delay``,
  ``blackhole`` or ``slice``. ``"up"`` is client to server, ``"down"`` server to client;
  ``direction="both"`` sets both, otherwise the other direction keeps its setting;
* an optional byte budget per connection (``close_after``);
* what happens to newly accepted connections: proxied, ``refuse``d (closed at once) or
  ``reset`` (aborted with RST at once).

``delay``, ``blackhole``, ``slice`` and ``close_after`` also go back to proxying new
connections, since they only make sense on a link that exists. ``pass_through`` restores
every aspect. ``reset`` and ``close_all`` act on current connections once.

Memory is bounded: each direction of a connection holds at most ``_QUEUE_CHUNKS`` reads of at
most ``_READ_SIZE`` bytes, and a full queue stops reading from the sender, so TCP flow control
pushes back on it. In blackhole mode bytes are read and discarded, never buffered: switching
back to ``pass_through`` does not deliver what was sent meanwhile, as on a real lossy link that
gave up. FIN and RST are swallowed too, so a blackholed peer never learns the other side left.
A connection that lost bytes is dead once its blackhole ends: the first byte either way after
that resets it, as a peer whose TCP gave up answers with RST. It never resumes with a hole in
its stream, which no real link produces (TCP delivers every byte in order or ends the
connection); a hole would let a test lose a frame that no real network could lose.

The proxy only listens on and connects to loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

__all__ = ["Direction", "FaultProxy"]

Direction = Literal["both", "up", "down"]
_Leg = Literal["up", "down"]
_AcceptMode = Literal["proxy", "refuse", "reset"]
_LEGS: Final[dict[str, tuple[_Leg, ...]]] = {
    "both": ("up", "down"),
    "up": ("up",),
    "down": ("down",),
}

_READ_SIZE: Final = 64 * 1024
_QUEUE_CHUNKS: Final = 16
# A peer that stops reading would keep a gracefully closed socket open forever.
_CLOSE_GRACE: Final = 1.0

# Queue item: arrival time and the bytes read; b"" is the sender's FIN, None its RST.
_Item = tuple[float, bytes | None]


@dataclass(frozen=True, slots=True)
class _Policy:
    kind: Literal["pass", "delay", "blackhole", "slice"] = "pass"
    delay: float = 0.0
    jitter: float = 0.0
    max_chunk: int = 0


@dataclass(frozen=True, slots=True)
class _Budget:
    nbytes: int
    direction: Direction


_PASS: Final = _Policy()


def _require_loopback(host: str, *, allow_name: bool) -> None:
    if allow_name and host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected a loopback IP address, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"fault injection stays on loopback, got {host!r}")


def _check_direction(direction: str) -> tuple[_Leg, ...]:
    # Literal types are not checked at run time and a typo would silently do nothing.
    try:
        return _LEGS[direction]
    except KeyError:
        raise ValueError(f"direction must be 'both', 'up' or 'down', got {direction!r}") from None


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.fileno() != -1:
        # Linger 0 turns close() into an RST even when no unread data is pending.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _close_gracefully(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if transport.is_closing():
        return
    transport.close()
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(_CLOSE_GRACE, _abort_with_rst, writer)


async def _wait_closed(writer: asyncio.StreamWriter) -> None:
    # The reason the peer went away does not matter once we are closing it.
    with contextlib.suppress(Exception):
        await writer.wait_closed()


class _Connection:
    """One proxied client connection and its upstream connection to the target."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self._proxy = proxy
        self._client_reader, self.client_writer = client
        self._server_reader, self.server_writer = server
        self.budget_used = 0
        self.closed = False
        self._legs_done: set[_Leg] = set()
        # Legs that discarded data bytes in blackhole mode (see the module docstring).
        self.lost: set[_Leg] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def writers(self) -> tuple[asyncio.StreamWriter, asyncio.StreamWriter]:
        return self.client_writer, self.server_writer

    def start(self) -> None:
        legs: tuple[tuple[_Leg, asyncio.StreamReader, asyncio.StreamWriter], ...] = (
            ("up", self._client_reader, self.server_writer),
            ("down", self._server_reader, self.client_writer),
        )
        for leg, source, sink in legs:
            queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)
            self._tasks.add(asyncio.create_task(self._read(source, queue)))
            self._tasks.add(asyncio.create_task(self._forward(leg, queue, sink)))

    def close(self, *, rst: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for writer in self.writers:
            if rst:
                _abort_with_rst(writer)
            else:
                _close_gracefully(writer)
        self._proxy._forget(self)

    async def _read(self, source: asyncio.StreamReader, queue: asyncio.Queue[_Item]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data: bytes | None = await source.read(_READ_SIZE)
            except OSError:
                data = None
            await queue.put((loop.time(), data))
            if not data:
                return

    async def _forward(
        self, leg: _Leg, queue: asyncio.Queue[_Item], sink: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        last_due = 0.0
        try:
            while True:
                arrived, data = await queue.get()
                policy = self._proxy._policies[leg]
                if policy.kind == "delay":
                    # Due times never go backwards, so jitter cannot reorder a byte stream.
                    due = max(arrived + self._proxy._jittered(policy), last_due)
                    last_due = due
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    # The mode may have changed while this chunk was in flight.
                    policy = self._proxy._policies[leg]
                if data and policy.kind == "blackhole":
                    self.lost.add(leg)
                    continue
                if data and self._gave_up():
                    self.close(rst=True)
                    return
                if not data:
                    self._end_leg(leg, sink, rst=data is None, quiet=policy.kind == "blackhole")
                    return
                if not await self._send(leg, data, policy, sink):
                    return
        except OSError:
            # The sink died under us; its own reader reports how, to the other peer.
            self.close(rst=True)

    async def _send(
        self, leg: _Leg, data: bytes, policy: _Policy, sink: asyncio.StreamWriter
    ) -> bool:
        step = policy.max_chunk if policy.kind == "slice" else len(data)
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            budget = self._proxy._budget
            counts = budget is not None and leg in _LEGS[budget.direction]
            if budget is not None and counts:
                piece = piece[: max(0, budget.nbytes - self.budget_used)]
            if piece:
                if sink.transport.is_closing():
                    return False
                sink.write(piece)
                await sink.drain()
                self._proxy._count(leg, len(piece))
                if counts:
                    self.budget_used += len(piece)
            if budget is not None and counts and self.budget_used >= budget.nbytes:
                self.close()
                return False
            if policy.kind == "slice":
                # Sleeping even for 0 s lets the peer read each piece on its own.
                await asyncio.sleep(policy.delay)
        return True

    def _gave_up(self) -> bool:
        """Bytes were lost on a leg whose blackhole is over: the connection is dead."""
        policies = self._proxy._policies
        return any(policies[leg].kind != "blackhole" for leg in self.lost)

    def _end_leg(self, leg: _Leg, sink: asyncio.StreamWriter, *, rst: bool, quiet: bool) -> None:
        if rst and not quiet:
            self.close(rst=True)
            return
        if not quiet and sink.can_write_eof() and not sink.transport.is_closing():
            # Half-close: the other direction may still have bytes to deliver.
            with contextlib.suppress(OSError):
                sink.write_eof()
        self._legs_done.add(leg)
        if len(self._legs_done) == 2:
            self.close()


class FaultProxy:
    """Forward TCP between a client and ``target_host:target_port``, injecting faults on demand.

    Counters: ``connections_total`` counts accepted sockets (refused and reset ones too),
    ``active`` the connections being proxied now, ``bytes_up`` and ``bytes_down`` the bytes
    actually delivered to the server and to the client.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        seed: int | None = None,
    ) -> None:
        _require_loopback(target_host, allow_name=True)
        # A name could resolve to several addresses, each bound to a different ephemeral port.
        _require_loopback(listen_host, allow_name=False)
        self._target_host = target_host
        self._target_port = target_port
        self._listen_host = listen_host
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[_Connection] = set()
        self._policies: dict[_Leg, _Policy] = {"up": _PASS, "down": _PASS}
        self._budget: _Budget | None = None
        self._accept_mode: _AcceptMode = "proxy"
        self.connections_total = 0
        self.bytes_up = 0
        self.bytes_down = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen on an ephemeral port and return it."""
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._server = await asyncio.start_server(self._accept, self._listen_host, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        self._port = port
        return port

    async def stop(self) -> None:
        """Stop listening and close every connection, with RST for any that will not drain."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        writers = [writer for connection in connections for writer in connection.writers]
        if writers:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(_wait_closed(writer)) for writer in writers],
                timeout=_CLOSE_GRACE,
            )
            for waiter in pending:
                waiter.cancel()
            for writer in writers:
                if not writer.transport.is_closing() or writer.transport.get_write_buffer_size():
                    _abort_with_rst(writer)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._listen_host}]" if ":" in self._listen_host else self._listen_host
        return f"ws://{host}:{self.port}"

    @property
    def active(self) -> int:
        return len(self._connections)

    # -- modes -------------------------------------------------------------------------------

    def pass_through(self) -> None:
        """Forward everything untouched, accept new connections and drop any byte budget."""
        self._policies = {"up": _PASS, "down": _PASS}
        self._budget = None
        self._accept_mode = "proxy"

    def delay(self, seconds: float, jitter: float = 0.0, *, direction: Direction = "both") -> None:
        """Hold each chunk ``seconds ± jitter`` (never below 0) before forwarding it, in order."""
        if seconds < 0 or jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._set_policy(direction, _Policy("delay", delay=seconds, jitter=jitter))

    def blackhole(self, *, direction: Direction = "both") -> None:
        """Silently discard bytes, FIN and RST while keeping both sockets open."""
        self._set_policy(direction, _Policy("blackhole"))

    def slice(
        self, max_chunk: int = 1, delay: float = 0.0, *, direction: Direction = "both"
    ) -> None:
        """Forward at most ``max_chunk`` bytes at a time, sleeping ``delay`` after each piece."""
        if max_chunk < 1 or delay < 0:
            raise ValueError("max_chunk must be >= 1 and delay >= 0")
        self._set_policy(direction, _Policy("slice", delay=delay, max_chunk=max_chunk))

    def close_after(self, nbytes: int, direction: Direction = "both") -> None:
        """Close each connection with FIN once ``nbytes`` more bytes have been forwarded.

        Only bytes going in ``direction`` count; ``"both"`` counts both directions together.
        Current connections start counting now, new ones from their first byte. The chunk that
        crosses the budget is cut, so exactly ``nbytes`` bytes get through.
        """
        _check_direction(direction)
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        self._budget = _Budget(nbytes, direction)
        self._accept_mode = "proxy"
        for connection in self._connections:
            connection.budget_used = 0

    def refuse(self) -> None:
        """Close new connections as soon as they are accepted; current ones are untouched."""
        self._accept_mode = "refuse"

    def reset(self) -> None:
        """Abort every current connection with RST, and new ones as soon as they are accepted."""
        self._accept_mode = "reset"
        for connection in list(self._connections):
            connection.close(rst=True)

    def close_all(self) -> None:
        """Close current connections cleanly with FIN; the mode does not change."""
        for connection in list(self._connections):
            connection.close()

    # -- internals ---------------------------------------------------------------------------

    def _set_policy(self, direction: Direction, policy: _Policy) -> None:
        for leg in _check_direction(direction):
            self._policies[leg] = policy
        self._accept_mode = "proxy"

    def _jittered(self, policy: _Policy) -> float:
        if not policy.jitter:
            return policy.delay
        return max(0.0, policy.delay + self._random.uniform(-policy.jitter, policy.jitter))

    def _current_accept_mode(self) -> _AcceptMode:
        # A call, so that type checkers do not carry a narrowing across an await.
        return self._accept_mode

    def _count(self, leg: _Leg, nbytes: int) -> None:
        if leg == "up":
            self.bytes_up += nbytes
        else:
            self.bytes_down += nbytes

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        if self._accept_mode == "reset":
            _abort_with_rst(writer)
            return
        if self._accept_mode == "refuse":
            _close_gracefully(writer)
            return
        try:
            upstream = await asyncio.open_connection(self._target_host, self._target_port)
        except OSError:
            # The nearest thing to "connection refused" once the client's connect succeeded.
            _abort_with_rst(writer)
            return
        connection = _Connection(self, (reader, writer), upstream)
        # The mode or the proxy itself may have changed while we were connecting upstream.
        mode = self._current_accept_mode()
        if self._server is None or mode == "reset":
            connection.close(rst=True)
            return
        if mode == "refuse":
            connection.close()
            return
        self._connections.add(connection)
        connection.start()
