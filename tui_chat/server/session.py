"""One authenticated connection: its account, its outgoing queue and its rate limit."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import struct
import time
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from tui_chat.protocol import CloseCode
from tui_chat.server.db import Account

log = logging.getLogger(__name__)


# How long a close may wait for a peer that does not read before the socket is dropped.
CLOSE_TIMEOUT: Final = 2.0
# A peer closed for being slow gets longer, so that a slow but live link can drain up to
# the 4409 close frame and learn why (it resumes from its cursors either way).
SLOW_CLOSE_TIMEOUT: Final = 10.0


async def close_within(ws: ServerConnection, code: int, reason: str, limit: float) -> None:
    """Close with ``code``, but abort the TCP connection if that takes over ``limit`` seconds.

    ``ServerConnection.close`` first waits until the close frame is written; while the
    peer's receive window is full that never happens. Without this bound one client that
    stops reading would hold its connection (and a server shutdown) until keepalive
    noticed, or for ever with keepalive disabled.
    """
    # websockets starts its own close deadline (close_timeout) when the close frame is
    # queued, not when it is written, and any write on the connection after that deadline
    # (the next keepalive ping, for one) aborts the TCP connection at once. Give it the
    # same bound, or a slow reader is reset close_timeout after the 4409 and sees 1006.
    ws.close_timeout = limit
    try:
        async with asyncio.timeout(limit):
            await ws.close(code, reason)
    except TimeoutError:
        ws.transport.abort()


def text_frame(payload: bytes) -> bytes:
    """``payload`` (UTF-8) as one complete websocket text frame as a server writes it.

    RFC 6455 section 5.2: FIN set, opcode 1, no RSV bits (no extension: the server never
    negotiates permessage-deflate, ``compression=None``), unmasked (only clients mask),
    so the bytes do not depend on the connection and one copy serves every member.
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take one token; return 0 if allowed, else seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Cork:
    """Direct writes held back while one writer batch is fanned out, then one transport
    write (one system call) per connection for all its frames of the batch.

    ``active`` only within a synchronous stretch of code (no await), so nothing else runs
    on the loop between the hold and the ``flush``: the held frames leave before anything
    the sender task or websockets writes later, in the order they were pushed.
    """

    def __init__(self) -> None:
        self.active = False
        self.held: list[Session] = []

    def flush(self) -> None:
        self.active = False
        held, self.held = self.held, []
        for session in held:
            session.flush()


class Session:
    """Frames for one connection: written at once when the socket takes them, else queued.

    Fan-out never awaits a peer's socket: a slow reader only fills its own
    queue, and when that overflows the connection is closed (4409) so that it
    comes back and resumes from its cursors instead of holding server memory.

    The common case costs no task wakeup and no pass through websockets' send machinery:
    when nothing is queued (or being sent) for the connection and its transport is not
    paused for writing (below websockets' write limit, 32 KiB), ``push`` writes the
    complete frame to the transport itself (``text_frame``; the fan-out encodes it once
    for all members). Otherwise it queues, and the one sender task sends in order through
    ``ws.send``, which waits for the transport to drain. Either way frames leave in
    ``push`` order: a direct write happens only while the queue is empty and no queued
    frame is in the middle of ``ws.send``, i.e. when everything pushed before it is
    already in the transport's buffer. What the transport may hold besides the queue is
    bounded by the pause: past the write limit, pushes queue and count against the bound.
    During one writer batch the ``Cork`` holds direct writes (up to the write limit per
    connection) and writes each connection's share at once when the batch is done.

    Why writing next to websockets is safe (checked in websockets 17.4,
    ``websockets.asyncio.connection.Connection``): websockets writes only from this event
    loop's thread, and each of its writes is whole frames (``send_data`` flushes
    ``protocol.data_to_send()`` right after the frame is serialised: in ``send_context``
    for sends, pings and the close frame, in ``data_received`` for pongs and the close
    reply), so a whole frame written between two of them cannot split one. Frames could
    only interleave with a fragmented message (``send_in_progress``), which this server
    never sends; the check stays as a guard. Data frames must not follow a close frame:
    a direct write needs the protocol state OPEN (websockets leaves OPEN when it sends or
    receives a close) and a transport that is not closing. With an extension negotiated
    (compression), frames would have to go through the protocol: then everything queues.
    """

    def __init__(
        self,
        ws: ServerConnection,
        account: Account,
        max_outgoing: int,
        max_outgoing_bytes: int,
        cork: Cork | None = None,
    ) -> None:
        self.ws = ws
        self.account = account
        self.user = account.name
        self.max_outgoing = max_outgoing
        self.max_outgoing_bytes = max_outgoing_bytes
        self._queued_bytes = 0
        self._queue: collections.deque[tuple[str | None, int, bytes]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        # Set once the replay is done and the sender runs; until then everything queues.
        self._direct = False
        # A queued frame popped by the sender and not yet returned from ws.send.
        self._in_send = False
        # Frames written by push itself (or held by the cork), not by the sender task
        # (diagnostics, tests).
        self.direct_writes = 0
        # While ``cork`` is active, direct writes are held here (at most the websocket
        # write limit, 32 KiB, in bytes) and written together when it is flushed.
        self._cork = cork
        self._held: list[bytes] = []
        self._held_bytes = 0
        # While replaying, live messages wait in the queue; afterwards those
        # the replay already covered (seq <= replayed[conv]) are skipped.
        self.replayed: dict[str, int] = {}
        self.replay_pages = False

    def push(
        self, data: bytes, conv: str | None = None, seq: int = 0, frame: bytes | None = None
    ) -> None:
        """Send ``data`` (a JSON frame); ``frame``, if given, is ``text_frame(data)``."""
        if self._closing:
            return
        ws = self.ws
        if self._held and not self._queue:
            # Held back in this batch already: later frames join them, up to the limit.
            if conv is not None and seq <= self.replayed.get(conv, 0):
                return
            out = text_frame(data) if frame is None else frame
            if self._held_bytes + len(out) <= ws.write_limit_high:
                self._held.append(out)
                self._held_bytes += len(out)
                self.direct_writes += 1
                return
            # Past the limit: queued, behind the held frames (flushed before the sender runs).
        elif (
            self._direct
            and not self._queue
            and not self._in_send
            and not ws.paused
            and ws.protocol.state is State.OPEN
            and ws.send_in_progress is None
            and not ws.transport.is_closing()
        ):
            if conv is not None and seq <= self.replayed.get(conv, 0):
                return
            out = text_frame(data) if frame is None else frame
            self.direct_writes += 1
            cork = self._cork
            if cork is not None and cork.active:
                self._held.append(out)
                self._held_bytes = len(out)
                cork.held.append(self)
            else:
                self._write(out)
            return
        # Bounded in frames and in bytes: 10,000 frames of 4,000-character
        # bodies would otherwise let one slow reader hold ~40 MB.
        if (
            len(self._queue) >= self.max_outgoing
            or self._queued_bytes + len(data) > self.max_outgoing_bytes
        ):
            log.info("closing slow connection of %s: outgoing queue full", self.user)
            self.close(CloseCode.TOO_SLOW, "too slow: resume from your cursors", SLOW_CLOSE_TIMEOUT)
            return
        self._queue.append((conv, seq, data))
        self._queued_bytes += len(data)
        self._wakeup.set()

    def _write(self, data: bytes) -> None:
        transport = self.ws.transport
        try:
            transport.write(data)
        except Exception:  # one broken socket must not stop the fan-out to the rest
            log.warning("write to %s failed; dropping the connection", self.user)
            self._closing = True
            transport.abort()

    def flush(self) -> None:
        """Write what the cork held for this connection, in one transport write."""
        held, self._held = self._held, []
        self._held_bytes = 0
        if not held or self._closing:
            return
        # Nothing between the hold and now can have closed the connection but our own
        # close (``_closing``); checked again all the same.
        ws = self.ws
        if ws.protocol.state is State.OPEN and not ws.transport.is_closing():
            self._write(held[0] if len(held) == 1 else b"".join(held))

    @property
    def closing(self) -> bool:
        return self._closing

    def close(self, code: int, reason: str, limit: float = CLOSE_TIMEOUT) -> None:
        """Drop what is queued and close with ``code``; nothing more is pushed after this."""
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        self._queued_bytes = 0
        self._held = []
        self._held_bytes = 0
        # Keep a reference: the loop holds tasks only weakly.
        self._close_task = asyncio.get_running_loop().create_task(
            close_within(self.ws, code, reason, limit)
        )

    def start_sending(self) -> None:
        """The replay is out: live frames flow (direct writes allowed from now on)."""
        self._direct = not self.ws.protocol.extensions
        self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    async def stop(self) -> None:
        self._closing = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self._sender
        if self._close_task is not None:
            # The handler must not return before our close frame is out: websockets would
            # close with 1000 itself, and the client would never learn why (4403, 4409).
            with contextlib.suppress(ConnectionClosed, OSError):
                await self._close_task

    async def _send_loop(self) -> None:
        queue = self._queue
        replayed = self.replayed
        send = self.ws.send
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while queue:
                    conv, seq, data = queue.popleft()
                    self._queued_bytes -= len(data)
                    if conv is not None and seq <= replayed.get(conv, 0):
                        continue
                    self._in_send = True
                    await send(data, text=True)
                    self._in_send = False
        except ConnectionClosed:
            pass
