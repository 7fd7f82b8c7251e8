"""One authenticated connection: its account, its outgoing queue and its rate limit."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

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


class Session:
    """Frames for one connection go through a bounded queue and one sender task.

    Fan-out never awaits a peer's socket: a slow reader only fills its own
    queue, and when that overflows the connection is closed (4409) so that it
    comes back and resumes from its cursors instead of holding server memory.
    """

    def __init__(
        self,
        ws: ServerConnection,
        account: Account,
        max_outgoing: int,
        max_outgoing_bytes: int,
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
        # While replaying, live messages wait in the queue; afterwards those
        # the replay already covered (seq <= replayed[conv]) are skipped.
        self.replayed: dict[str, int] = {}
        self.replay_pages = False

    def push(self, data: bytes, conv: str | None = None, seq: int = 0) -> None:
        if self._closing:
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
        # Keep a reference: the loop holds tasks only weakly.
        self._close_task = asyncio.get_running_loop().create_task(
            close_within(self.ws, code, reason, limit)
        )

    def start_sending(self) -> None:
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
                    await send(data, text=True)
        except ConnectionClosed:
            pass
