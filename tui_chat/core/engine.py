"""The client engine: local replica, persistent outbox, one websocket, catch-up.

One asyncio task owns the connection (its own reconnect loop), one owns the
outbox (sending, freshness, ack timeouts). Both run inside :meth:`Engine.run`
so a UI can host the engine in a single worker. Commands (send, retry, give
up) are plain methods that change the store first and then wake the tasks;
everything the engine learns goes out as :mod:`tui_chat.core.models` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tui_chat import protocol as p
from tui_chat.core.backoff import Backoff
from tui_chat.core.config import ClientConfig
from tui_chat.core.connection import CLOSE_REASONS, describe_os_error
from tui_chat.core.models import (
    ChatMessage,
    ConnectionChanged,
    ConnectionStatus,
    ConnState,
    ConversationChanged,
    ConversationSummary,
    EpochReset,
    Event,
    HistoryLoaded,
    MessageAdded,
    MessageChanged,
    OutState,
    ServerNotice,
    Synced,
)
from tui_chat.core.outbox import Outbox
from tui_chat.core.store import LocalStore, OutboxRow

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]

FLUSH_DELAY: Final = 0.02  # seconds incoming writes may wait to share one commit
GAP_PAGE: Final = 500
MAX_FRAME: Final = 4 << 20  # history pages are capped at 512 KiB by the server


class AuthFailed(Exception):
    pass


class _Reconnect(Exception):
    """End the current session and connect again at once (epoch change)."""


def new_client_id() -> str:
    # 128 random bits: unique forever without coordination.
    return secrets.token_urlsafe(16)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    def __init__(
        self,
        config: ClientConfig,
        token: str,
        *,
        store: LocalStore | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.user = config.account.user
        self._token = token
        self.store = store or LocalStore(config.store_path(), self.user)
        self._ssl = ssl_context
        sync = config.sync
        self._backoff = Backoff(sync.backoff_initial, sync.backoff_cap)
        self._listeners: list[Listener] = []
        self._status = ConnectionStatus(ConnState.STOPPED, since=time.time())
        self._outbox = Outbox(self.store.open_outbox())
        self._ws: ClientConnection | None = None
        self._online = False
        self._wake_sender = asyncio.Event()
        self._wake_connect = asyncio.Event()
        self._stopping = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._dirty_peers: set[str] = set()
        self._gap_requested: dict[str, int] = {}
        self._history_waiters: dict[tuple[str, int | None], asyncio.Future[p.HistoryPage]] = {}
        self._replayed = 0
        self._ack_timed_out = False
        self._online_since: float | None = None
        self._resyncs = 0  # _Reconnects in a row without reaching online
        self._background: set[asyncio.Task[bool]] = set()
        self._expire_on_start()

    # ------------------------------------------------------------ events

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def events(self) -> AsyncIterator[Event]:
        """The same events as an async iterator (for scripts and tests)."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        unsubscribe = self.subscribe(queue.put_nowait)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")

    # ------------------------------------------------------------ queries

    @property
    def status(self) -> ConnectionStatus:
        return self._status

    @property
    def latency_ms(self) -> float | None:
        ws = self._ws
        return None if ws is None or not self._online else ws.latency * 1000

    def outbox_count(self) -> int:
        """Messages written but not yet confirmed (pending or failed)."""
        return len(self._outbox)

    def pending_rows(self) -> list[ChatMessage]:
        """Every unsent message (pending or failed), in compose order."""
        return [self._view(r) for r in self._outbox.ordered()]

    def conversations(self) -> list[ConversationSummary]:
        open_rows = self._outbox.values()
        return [self.store.summary(peer, open_rows) for peer in self.store.peers()]

    def conversation(self, peer: str) -> ConversationSummary:
        return self.store.summary(peer, self._outbox.values())

    def messages(self, peer: str, before: int | None = None, limit: int = 100) -> list[ChatMessage]:
        """A page of a conversation, oldest first.

        With ``before=None`` this is the newest page followed by the unsent
        messages (pending and failed) in compose order.
        """
        page = self.store.page(peer, before, limit)
        if before is None:
            page.extend(self._view(r) for r in self._open_rows(peer))
        return page

    def message(self, client_id: str) -> ChatMessage | None:
        row = self._outbox.get(client_id)
        if row is not None:
            return self._view(row)
        stored = self.store.outbox_row(client_id)
        if stored is not None and stored.conv is not None and stored.seq is not None:
            return self.store.message_view(stored.conv, stored.seq)
        return None if stored is None else self._view(stored)

    def _open_rows(self, peer: str) -> list[OutboxRow]:
        return self._outbox.of_peer(peer)

    def _view(self, row: OutboxRow) -> ChatMessage:
        return LocalStore.outbox_view(row, self.user, held=self._outbox.is_held(row.client_id))

    # ------------------------------------------------------------ commands

    def send(self, peer: str, body: str) -> ChatMessage:
        """Queue a message. It is committed to the outbox before this returns."""
        if not p.USER_RE.match(peer):
            raise ValueError(f"invalid user name {peer!r}")
        if not body.strip():
            raise ValueError("message is empty")
        now = _now_ms()
        row = OutboxRow(new_client_id(), peer, body, now, self.store.next_ord())
        self.store.add_outbox(row)
        self._outbox.add(row)
        self._refresh_held(peer, emit=False)
        view = self._view(row)
        self._emit(MessageAdded(view))
        self._mark_dirty(peer)
        self._wake_sender.set()
        return view

    def retry(self, client_id: str) -> ChatMessage:
        """A failed message goes back to pending, fresh from now: the user said so."""
        row = self._require_open(client_id)
        if self._outbox.retry(row, _now_ms()):
            self.store.save_outbox(row, durable=True)
            self._changed(row)
            self._refresh_held(row.peer)
            self._wake_sender.set()
        return self._view(row)

    def retry_all(self) -> int:
        failed = self._outbox.failed_ids()
        for cid in failed:
            self.retry(cid)
        return len(failed)

    def give_up(self, client_id: str) -> ChatMessage:
        """Never send this message again (if the server already has it, it shows as sent)."""
        row = self._require_open(client_id)
        self._outbox.give_up(row)
        self.store.save_outbox(row, durable=True)
        self._changed(row)
        self._refresh_held(row.peer)
        self._wake_sender.set()
        return self._view(row)

    def edit_and_retry(self, client_id: str, body: str) -> ChatMessage:
        """Replace an unsent message by an edited one that takes its place in order."""
        if not body.strip():
            raise ValueError("message is empty")
        old = self._require_open(client_id)
        self.give_up(client_id)
        row = OutboxRow(new_client_id(), old.peer, body, _now_ms(), old.ord)
        self.store.add_outbox(row)
        self._outbox.add(row)
        self._refresh_held(row.peer)
        view = self._view(row)
        self._emit(MessageAdded(view))
        self._mark_dirty(row.peer)
        self._wake_sender.set()
        return view

    def mark_read(self, peer: str) -> None:
        seq = self.store.latest_seq(peer)
        conv = self.store.conv_of(peer)
        if conv is None or not self.store.mark_read(peer, seq):
            return
        self._mark_dirty(peer)
        self._schedule_flush()
        ws = self._ws
        if ws is not None and self._online:
            self._in_background(self._send_frame(ws, p.Read(conv=conv, seq=seq)))

    def reconnect_now(self) -> None:
        """Skip the backoff wait (and retry after a rejected token)."""
        self._backoff.reset()
        self._wake_connect.set()

    async def load_older(self, peer: str, before: int, limit: int = 100) -> list[ChatMessage]:
        """Older messages below ``before``: from the store, or a page from the server."""
        local = self.store.page(peer, before, limit)
        conv = self.store.conv_of(peer)
        expected_low = max(1, before - limit)
        if (local and local[0].seq == expected_low) or conv is None or before <= 1:
            self._emit(HistoryLoaded(peer, local, complete=not local or local[0].seq == 1))
            return local
        page = await self._fetch_history(conv, before=before, after=None, limit=limit)
        if page is not None:
            for m in page.messages:
                self._apply_message(
                    m.conv, m.seq, m.sender, m.to, m.client_id, m.body, m.ts, replay=True
                )
            self.store.commit()
        local = self.store.page(peer, before, limit)
        complete = page.complete if page is not None else False
        self._emit(HistoryLoaded(peer, local, complete=complete))
        return local

    def _in_background(self, coro: Coroutine[object, object, bool]) -> None:
        # The loop keeps only a weak reference to a task: hold it until it is done.
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _require_open(self, client_id: str) -> OutboxRow:
        row = self._outbox.get(client_id)
        if row is None:
            raise KeyError(f"no unsent message {client_id!r}")
        return row

    def _changed(self, row: OutboxRow) -> None:
        self._emit(MessageChanged(self._view(row)))
        self._mark_dirty(row.peer)

    # ------------------------------------------------------------ outbox policy

    def _expire_on_start(self) -> None:
        window = self.config.sync.freshness_window
        for row in self._outbox.expire_on_start(_now_ms(), window):
            self.store.save_outbox(row)
        self.store.commit()
        for peer in self._outbox.peers():
            self._refresh_held(peer, emit=False)

    def _fail(self, row: OutboxRow, reason: str, retryable: bool) -> None:
        self._outbox.fail(row, reason, retryable)
        self.store.save_outbox(row, durable=True)
        self._changed(row)
        self._refresh_held(row.peer)

    def _fail_expired(self, row: OutboxRow, reason: str) -> None:
        self._fail(row, reason, True)

    def _refresh_held(self, peer: str, *, emit: bool = True) -> None:
        changed = self._outbox.refresh_held(peer, hold=self.config.sync.on_failure == "hold")
        if emit:
            for cid in changed:
                row = self._outbox.get(cid)
                if row is not None:
                    self._emit(MessageChanged(self._view(row)))

    async def _outbox_loop(self) -> None:
        sync = self.config.sync
        while not self._stopping:
            now_wall = _now_ms()
            now = time.monotonic()
            wait = min(
                1.0, self._outbox.expire(now_wall, sync.freshness_window, self._fail_expired)
            )
            ws = self._ws
            if ws is not None and self._online:
                overdue, ack_wait = self._outbox.overdue_ack(now, sync.ack_timeout)
                wait = min(wait, ack_wait)
                if overdue is not None:
                    # No ack in time: the link is suspect. Reconnect; the
                    # message is resent with the same client_id after catch-up.
                    log.info("no ack for %s within %ss; reconnecting", overdue, sync.ack_timeout)
                    self._outbox.clear_inflight()
                    self._ack_timed_out = True
                    await ws.close(1000, "ack timeout")
                else:
                    wait = min(wait, await self._send_ready(ws, now))
            self._wake_sender.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_sender.wait(), max(wait, 0.005))

    async def _send_ready(self, ws: ClientConnection, now: float) -> float:
        """Send the next message of every peer that has none in flight."""

        async def send(row: OutboxRow) -> bool:
            self.store.save_outbox(row)
            frame = p.Send(client_id=row.client_id, to=row.peer, body=row.body)
            return await self._send_frame(ws, frame)

        return await self._outbox.send_ready(now, send)

    @staticmethod
    async def _send_frame(ws: ClientConnection, frame: p.ClientFrame) -> bool:
        try:
            await ws.send(p.encode(frame), text=True)
        except ConnectionClosed:
            return False
        return True

    # ------------------------------------------------------------ connection

    async def run(self) -> None:
        """Run until :meth:`stop`: connect, catch up, send, reconnect on failure.

        A :meth:`stop` that comes before this task first runs is honoured (it used to
        be reset here, so run() never returned); an engine runs once.
        """
        outbox = asyncio.create_task(self._outbox_loop(), name="tui-chat-outbox")
        try:
            await self._connection_loop()
        finally:
            self._stopping = True
            self._wake_sender.set()
            outbox.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outbox
            self._flush()
            self._set_status(ConnectionStatus(ConnState.STOPPED, since=time.time()))

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        self._stopping = True
        self._wake_connect.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

    def close(self) -> None:
        """Release the store (after :meth:`run` has returned)."""
        self._flush()
        self.store.close()

    def _set_status(self, status: ConnectionStatus) -> None:
        self._status = status
        self._emit(ConnectionChanged(status))

    async def _connection_loop(self) -> None:
        sync = self.config.sync
        last_reason: str | None = None
        while not self._stopping:
            attempt = self._backoff.attempt + 1
            # The previous failure stays visible while we try again.
            self._set_status(
                ConnectionStatus(
                    ConnState.CONNECTING, attempt, reason=last_reason, since=time.time()
                )
            )
            started = time.monotonic()
            prompt = False
            try:
                reason = await self._session()
                prompt = reason.startswith("!")
                reason = reason.lstrip("!")
            except AuthFailed as exc:
                self._set_status(
                    ConnectionStatus(ConnState.AUTH_FAILED, reason=str(exc), since=time.time())
                )
                await self._wait_connect(None)
                self._backoff.reset()
                continue
            except _Reconnect:
                # At once the first time; a server whose epoch changes at every login (or
                # that is behind us again right after a resync) gets the backoff instead
                # of a tight reconnect loop.
                self._resyncs += 1
                if self._resyncs == 1:
                    continue
                reason = "the server's history changed again; resyncing"
            if self.stopping:
                break
            if self._online_since is not None and time.monotonic() - self._online_since >= (
                sync.stable_after
            ):
                self._backoff.reset()
            self._online_since = None
            last_reason = reason
            delay = self._backoff.prompt_delay() if prompt else self._backoff.next_delay()
            # %r: the reason may quote the server (an error frame); logs go to a terminal.
            log.info("connection ended after %.1fs: %r", time.monotonic() - started, reason)
            self._set_status(
                ConnectionStatus(
                    ConnState.OFFLINE,
                    self._backoff.attempt,
                    retry_in=delay,
                    reason=reason,
                    since=time.time(),
                )
            )
            await self._wait_connect(delay)

    async def _wait_connect(self, delay: float | None) -> None:
        self._wake_connect.clear()
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake_connect.wait(), delay)

    async def _session(self) -> str:
        """One connection from handshake to close; returns why it ended ("!" = come back soon)."""
        sync = self.config.sync
        url = self.config.server.url
        try:
            ws = await connect(
                url,
                proxy=None,
                open_timeout=sync.connect_timeout,
                ping_interval=sync.ping_interval,
                ping_timeout=sync.ping_timeout,
                # After a keepalive timeout the library still waits this long for the
                # peer's close before the session ends: a blackholed link would show
                # "online" for 2 s more than the keepalive settings promise.
                close_timeout=min(2.0, sync.ping_timeout),
                max_size=MAX_FRAME,
                compression=None,
                ssl=self._ssl if url.startswith("wss://") else None,
            )
        except (OSError, TimeoutError) as exc:
            return describe_os_error(exc)
        except InvalidURI as exc:
            return f"invalid server URL: {exc}"
        except InvalidHandshake as exc:
            return f"handshake failed: {exc}"
        if self._stopping:
            # stop() ran during the handshake, when there was no socket to close yet.
            await ws.close()
            return "stopped"
        self._ws = ws
        try:
            return await self._converse(ws)
        except ConnectionClosed:
            return self._closed_reason(ws)
        except TimeoutError:
            return "the server did not answer the login in time"
        finally:
            self._online = False
            self._ws = None
            self._outbox.clear_inflight()
            self._gap_requested.clear()
            for fut in self._history_waiters.values():
                fut.cancel()
            self._history_waiters.clear()
            self._flush()
            await ws.close()

    async def _converse(self, ws: ClientConnection) -> str:
        hello = p.Hello(
            v=p.PROTOCOL_VERSION,
            user=self.user,
            token=self._token,
            cursors=self.store.watermarks(),
        )
        await ws.send(p.encode(hello), text=True)
        raw = await asyncio.wait_for(ws.recv(), self.config.sync.connect_timeout)
        try:
            first = p.decode_server(raw)
        except p.FrameError as exc:
            # Not our protocol (or a broken server): report it and retry with backoff.
            self._emit(ServerNotice(exc.code, f"undecodable frame from server: {exc.reason}"))
            return f"undecodable answer to the login: {exc.reason}"
        if isinstance(first, p.Error):
            # The close frame with the code follows; recv() raises ConnectionClosed.
            await asyncio.wait_for(ws.recv(), self.config.sync.connect_timeout)
            return f"server error: {first.reason}"
        if not isinstance(first, p.Welcome):
            return f"unexpected first frame {type(first).__name__}"
        old = self.store.epoch
        if old is None:
            self.store.set_epoch(first.epoch)
        elif old != first.epoch:
            # Our cursors name another history: drop them and log in again.
            self.store.reset_for_epoch(first.epoch)
            self._emit(EpochReset(old, first.epoch))
            for peer in self.store.peers():
                self._mark_dirty(peer)
            raise _Reconnect
        self._replayed = 0
        async for raw in ws:
            try:
                frame = p.decode_server(raw)
            except p.FrameError as exc:
                log.warning("undecodable frame from server: %s", exc.reason)
                self._emit(ServerNotice(exc.code, f"undecodable frame from server: {exc.reason}"))
                continue
            self._dispatch(frame, ws)
        # `async for` ends quietly on 1000/1001: treat it like any other close.
        return self._closed_reason(ws)

    def _closed_reason(self, ws: ClientConnection) -> str:
        if self._ack_timed_out:
            self._ack_timed_out = False
            return "no answer from the server in time; reconnecting"
        rcvd = ws.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else 1006
        text = rcvd.reason if rcvd is not None else ""
        if code == p.CloseCode.AUTH_FAILED:
            raise AuthFailed(text or "the server rejected the token")
        if code == p.CloseCode.BAD_HELLO:
            raise AuthFailed(f"the server refused the login: {text}")
        if (
            rcvd is None
            and ws.protocol.close_sent is not None
            and ws.protocol.close_sent.code == 1011
        ):
            return "keepalive timeout: no answer from the server"
        reason = CLOSE_REASONS.get(code, f"connection closed ({code})")
        if code in (1012, 1001, p.CloseCode.TOO_SLOW):
            return "!" + reason
        return reason

    def _dispatch(self, frame: p.ServerFrame, ws: ClientConnection) -> None:
        if isinstance(frame, p.Message):
            self._apply_message(
                frame.conv,
                frame.seq,
                frame.sender,
                frame.to,
                frame.client_id,
                frame.body,
                frame.ts,
                replay=not self._online,
            )
            if not self._online:
                self._replayed += 1
        elif isinstance(frame, p.Ack):
            self._on_ack(frame)
        elif isinstance(frame, p.Reject):
            self._on_reject(frame)
        elif isinstance(frame, p.Synced):
            self._on_synced(frame)
        elif isinstance(frame, p.HistoryPage):
            self._on_history(frame)
        elif isinstance(frame, p.Receipt):
            self.store.set_read_from_server(frame.conv, frame.user, frame.read_seq)
            peer = self.store.peer_of(frame.conv)
            if peer is not None:
                self._mark_dirty(peer)
                self._schedule_flush()
        elif isinstance(frame, p.Error):
            self._emit(ServerNotice(frame.code, frame.reason))
        # welcome after login is ignored: nothing in it changes mid-session.

    def _on_synced(self, frame: p.Synced) -> None:
        behind = [c for c, seq in frame.cursors.items() if seq < self.store.watermark(c)]
        if behind:
            # The server holds less than we do (restored from a backup without a
            # new epoch). Keeping our watermarks would drop its next messages as
            # duplicates, so start over as for a new epoch.
            log.warning("server is behind our cursors for %s; resyncing", behind)
            epoch = self.store.epoch or ""
            self.store.reset_for_epoch(epoch)
            self._emit(EpochReset(epoch, epoch))
            raise _Reconnect
        self._flush()
        self._online = True
        self._online_since = time.monotonic()
        self._resyncs = 0
        self._set_status(ConnectionStatus(ConnState.ONLINE, since=time.time()))
        self._emit(Synced(self._replayed))
        # Only now, with the catch-up applied, is a still-pending message
        # known not to be on the server: resend it with its own client_id.
        self._wake_sender.set()

    # ------------------------------------------------------------ incoming

    def _apply_message(
        self,
        conv: str,
        seq: int,
        sender: str,
        to: str,
        client_id: str,
        body: str,
        ts: int,
        *,
        replay: bool,
    ) -> None:
        own = sender == self.user
        if not own and to != self.user:
            # %r: conv is the server's text, and headless logs to a terminal (stderr).
            log.warning("ignoring message %r/%s not addressed to us", conv, seq)
            return
        peer = to if own else sender
        if self.store.peer_of(conv) not in (None, peer):
            log.warning("ignoring message %r/%s: conversation belongs to another peer", conv, seq)
            return
        if self.store.conv_of(peer) not in (None, conv):
            # A pair has one conversation (until an epoch reset clears it): another id would
            # re-point the peer's history and hand its watermark to the wrong conversation.
            log.warning("ignoring message %r/%s: not the conversation with this peer", conv, seq)
            return
        self.store.ensure_conversation(peer, conv)
        wm = self.store.watermark(conv)
        if seq <= wm:
            return  # already held: a duplicate
        if not self.store.insert_message(conv, seq, sender, to, client_id, body, ts):
            return
        new_wm = self.store.advance_watermark(conv)
        if new_wm < seq:
            # Gap rule: seq is stored but something below it is missing; fetch it.
            self._request_gap(conv, new_wm, seq)
        self._schedule_flush()
        self._mark_dirty(peer)
        if own and self._confirm_own(client_id, conv, seq):
            return
        view = self.store.stored_view(conv, seq, sender, to, client_id, body, ts)
        self._emit(MessageAdded(view, replay=replay))

    def _confirm_own(self, client_id: str, conv: str, seq: int) -> bool:
        """Our own message came back: if we hold it unsent, it is that message, now sent."""
        row = self._outbox.pop(client_id)
        if row is None:
            row = self.store.outbox_row(client_id)
            if row is None:
                return False
            if row.state is OutState.SENT:
                return True
        self._outbox.confirm(row, conv, seq)
        self.store.save_outbox(row)
        self._refresh_held(row.peer)
        view = self.store.message_view(conv, seq)
        self._emit(MessageChanged(view if view is not None else self._view(row)))
        self._wake_sender.set()
        return True

    def _on_ack(self, ack: p.Ack) -> None:
        row = self._outbox.get(ack.client_id) or self.store.outbox_row(ack.client_id)
        if row is None or row.state is OutState.SENT:
            self._outbox.forget_inflight(ack.client_id)
            return
        held = self.store.message_view(ack.conv, ack.seq)
        if (
            self.store.peer_of(ack.conv) not in (None, row.peer)
            or self.store.conv_of(row.peer) not in (None, ack.conv)
            or (held is not None and held.key != (self.user, ack.client_id))
        ):
            # Only a broken or hostile server says this: "sent" would point the message at
            # another conversation, or at a place another message holds. It stays in flight.
            log.warning(
                "ignoring ack for %r: %r/%s contradicts the history",
                ack.client_id,
                ack.conv,
                ack.seq,
            )
            return
        # The ack carries everything the message frame would: store it now so
        # the bubble never disappears between "sent" and the echo.
        self._apply_message(
            ack.conv, ack.seq, self.user, row.peer, ack.client_id, row.body, ack.ts, replay=False
        )
        # A no-op if the line above already confirmed it.
        self._confirm_own(ack.client_id, ack.conv, ack.seq)

    def _on_reject(self, rej: p.Reject) -> None:
        row = self._outbox.take_rejected(rej.client_id)
        if row is None:
            return
        if rej.retryable:
            self._outbox.defer(row, rej.reason, rej.retry_after, time.monotonic())
            self.store.save_outbox(row)
        else:
            self._fail(row, rej.reason, False)
        self._wake_sender.set()

    def _request_gap(self, conv: str, wm: int, seq: int) -> None:
        if self._gap_requested.get(conv, -1) >= wm:
            return
        ws = self._ws
        if ws is None:
            return
        self._gap_requested[conv] = wm
        before = min(seq, wm + 1 + GAP_PAGE)
        frame = p.HistoryRequest(conv=conv, before=before, after=wm, limit=GAP_PAGE)
        self._in_background(self._send_frame(ws, frame))

    def _on_history(self, page: p.HistoryPage) -> None:
        for m in page.messages:
            self._apply_message(
                m.conv, m.seq, m.sender, m.to, m.client_id, m.body, m.ts, replay=True
            )
        fut = self._history_waiters.pop((page.conv, page.before), None)
        if fut is not None and not fut.done():
            fut.set_result(page)
        if page.after is not None:
            self._gap_requested.pop(page.conv, None)
            wm = self.store.watermark(page.conv)
            top = self.store.latest_seq(self.store.peer_of(page.conv) or "")
            if top > wm + 1:
                self._request_gap(page.conv, wm, top)

    async def _fetch_history(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> p.HistoryPage | None:
        ws = self._ws
        if ws is None or not self._online:
            return None
        fut: asyncio.Future[p.HistoryPage] = asyncio.get_running_loop().create_future()
        self._history_waiters[(conv, before)] = fut
        frame = p.HistoryRequest(conv=conv, before=before, after=after, limit=limit)
        if not await self._send_frame(ws, frame):
            return None
        try:
            return await asyncio.wait_for(fut, self.config.sync.ack_timeout)
        except (TimeoutError, asyncio.CancelledError):
            return None

    # ------------------------------------------------------------ flushing

    def _mark_dirty(self, peer: str) -> None:
        self._dirty_peers.add(peer)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()
                return
            self._flush_handle = loop.call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.store.commit()
        dirty, self._dirty_peers = self._dirty_peers, set()
        open_rows = self._outbox.values()
        for peer in sorted(dirty):
            self._emit(ConversationChanged(self.store.summary(peer, open_rows)))
