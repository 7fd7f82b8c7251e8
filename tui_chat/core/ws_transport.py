"""The transport to tui-chat's own server: one websocket per session.

It connects, sends the hello, hands every decoded frame to the sync core, and
watches the link itself: the library's keepalive is off, because it can only
say "dead" after ``ping_interval + ping_timeout`` and then still waits for a
close handshake. Our own probe says "no answer" two seconds after a ping goes
unanswered (the status line shows it at once), and declares the link dead
``ping_timeout`` after the ping, dropping the socket without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Final, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tui_chat import protocol as p
from tui_chat.core.close_reasons import close_end, describe_os_error
from tui_chat.core.config import SyncSection
from tui_chat.core.transport import SILENCE_AFTER, FrameSink, Retry, SessionEnd

log = logging.getLogger(__name__)

MAX_FRAME: Final = 4 << 20  # history pages are capped at 512 KiB by the server

Direction = Literal["in", "out"]
FrameObserver = Callable[[Direction, p.ServerFrame | p.ClientFrame], None]


class WebSocketTransport:
    def __init__(
        self,
        url: str,
        settings: SyncSection,
        *,
        ssl_context: ssl.SSLContext | None = None,
        observe: FrameObserver | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self._ssl = ssl_context
        self._observe = observe
        self._ws: ClientConnection | None = None
        self._ended: SessionEnd | None = None
        self._closing = False

    @property
    def latency_ms(self) -> float | None:
        ws = self._ws
        return None if ws is None else ws.latency * 1000

    async def session(self, hello: p.Hello, sink: FrameSink) -> SessionEnd:
        sync = self.settings
        self._ended = None
        try:
            ws = await connect(
                self.url,
                proxy=None,
                open_timeout=sync.connect_timeout,
                ping_interval=None,  # our own probe, see the module docstring
                close_timeout=min(2.0, sync.ping_timeout),
                max_size=MAX_FRAME,
                compression=None,
                ssl=self._ssl if self.url.startswith("wss://") else None,
            )
        except (OSError, TimeoutError) as exc:
            return SessionEnd(describe_os_error(exc))
        except InvalidURI as exc:
            return SessionEnd(f"invalid server URL: {exc}", Retry.WAIT_FOR_USER)
        except InvalidHandshake as exc:
            return SessionEnd(f"handshake failed: {exc}")
        if self._closing:
            # aclose() ran during the handshake, when there was no socket to close yet.
            await ws.close()
            return SessionEnd("stopped")
        self._ws = ws
        probe = asyncio.create_task(self._probe(ws, sink), name="tui-chat-keepalive")
        try:
            end = await self._converse(ws, hello, sink)
        except ConnectionClosed:
            end = self._closed(ws)
        except TimeoutError:
            end = SessionEnd("the server did not answer the login in time")
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            self._ws = None
        if self._ended is None:
            await ws.close()
        return self._ended or end

    async def _converse(self, ws: ClientConnection, hello: p.Hello, sink: FrameSink) -> SessionEnd:
        await self._send(ws, hello)
        raw = await asyncio.wait_for(ws.recv(), self.settings.connect_timeout)
        try:
            first = p.decode_server(raw)
        except p.FrameError as exc:
            # Not our protocol (or a broken server): report it and retry with backoff.
            sink.on_undecodable(exc.code, exc.reason)
            return SessionEnd(f"undecodable answer to the login: {exc.reason}")
        self._seen(first)
        if isinstance(first, p.Error):
            # The close frame with the code follows; recv() raises ConnectionClosed.
            await asyncio.wait_for(ws.recv(), self.settings.connect_timeout)
            return SessionEnd(f"server error: {first.reason}")
        if not isinstance(first, p.Welcome):
            return SessionEnd(f"unexpected first frame {type(first).__name__}")
        end = sink.on_welcome(first)
        if end is not None:
            return end
        async for raw in ws:
            try:
                frame = p.decode_server(raw)
            except p.FrameError as exc:
                sink.on_undecodable(exc.code, exc.reason)
                continue
            self._seen(frame)
            end = sink.on_frame(frame)
            if end is not None:
                return end
        # `async for` ends quietly on 1000/1001: treat it like any other close.
        return self._closed(ws)

    def _closed(self, ws: ClientConnection) -> SessionEnd:
        if self._ended is not None:
            return self._ended
        rcvd = ws.protocol.close_rcvd
        if rcvd is None:
            return close_end(1006, "")
        return close_end(rcvd.code, rcvd.reason)

    async def _probe(self, ws: ClientConnection, sink: FrameSink) -> None:
        """Ping every ``ping_interval``; say "no answer" early, call the link dead late."""
        interval = self.settings.ping_interval
        timeout = self.settings.ping_timeout
        while True:
            await asyncio.sleep(interval)
            sent_wall = time.time()
            try:
                pong = await ws.ping()
            except ConnectionClosed:
                return
            try:
                await asyncio.wait_for(asyncio.shield(pong), min(SILENCE_AFTER, timeout))
            except TimeoutError:
                sink.on_silence(sent_wall)
                try:
                    await asyncio.wait_for(pong, max(0.0, timeout - SILENCE_AFTER))
                except TimeoutError:
                    self.end(
                        SessionEnd(
                            f"keepalive timeout: no answer from the server for {timeout:g} s"
                        )
                    )
                    return
                except ConnectionClosed:
                    return
                sink.on_silence(None)
            except ConnectionClosed:
                return

    def end(self, why: SessionEnd) -> None:
        ws = self._ws
        if ws is None or self._ended is not None:
            return
        self._ended = why
        # No close handshake: on a dead link it would only add close_timeout.
        ws.transport.abort()

    async def send(self, frame: p.ClientFrame) -> bool:
        ws = self._ws
        if ws is None:
            return False
        return await self._send(ws, frame)

    async def _send(self, ws: ClientConnection, frame: p.ClientFrame) -> bool:
        if self._observe is not None:
            self._observe("out", frame)
        try:
            await ws.send(p.encode(frame), text=True)
        except ConnectionClosed:
            return False
        return True

    def _seen(self, frame: p.ServerFrame) -> None:
        if self._observe is not None:
            self._observe("in", frame)

    async def aclose(self) -> None:
        self._closing = True
        ws = self._ws
        if ws is not None:
            await ws.close()
