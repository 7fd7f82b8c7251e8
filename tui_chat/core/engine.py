"""The client engine: the public API over the replica, the sync core and a transport.

Commands (send, retry, give up …) change the replica first (store, then an
event) and wake the pump; the pump drains the frames the sync core queued and
runs its timers; the reconnect loop runs one transport session after another.
Everything the engine learns goes out as :mod:`tui_chat.core.models` events.
:meth:`Engine.run` hosts both tasks, so a UI can run the engine in one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import ssl
import time
from collections.abc import Callable
from typing import Final, TypeVar

from msgspec.structs import replace

from tui_chat import protocol as p
from tui_chat.core.backoff import Backoff
from tui_chat.core.config import MXID_RE, ClientConfig
from tui_chat.core.models import (
    GROUP_PREFIX,
    PENDING_GROUP_PREFIX,
    ChatMessage,
    ConnectionChanged,
    ConnectionStatus,
    ConnState,
    ConversationSummary,
    Event,
    HistoryLoaded,
    OutState,
    is_group_key,
)
from tui_chat.core.outbox import Outbox
from tui_chat.core.replica import Replica
from tui_chat.core.store import LocalStore, OutboxRow, encode_create_args
from tui_chat.core.store_repair import StoreRepair
from tui_chat.core.sync import SyncCore
from tui_chat.core.transport import Retry, SessionEnd, Transport
from tui_chat.core.ws_transport import Direction, WebSocketTransport

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]
FrameListener = Callable[[Direction, p.ServerFrame | p.ClientFrame], None]
TokenSource = str | Callable[[], str]

LOOKUP_TIMEOUT: Final = 5.0
_T = TypeVar("_T")
# Answers that settle an outbox row: the pump may send the peer's next message.
_SETTLING: Final = (p.Ack, p.Reject, p.Cancelled)


def new_client_id() -> str:
    # 128 random bits: unique forever without coordination.
    return secrets.token_urlsafe(16)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    def __init__(
        self,
        config: ClientConfig,
        token: TokenSource,
        *,
        store: LocalStore | None = None,
        ssl_context: ssl.SSLContext | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.config = config
        self.user = config.account.user
        self._token_source = token
        self._token: str | None = token if isinstance(token, str) else None
        self.store = store or LocalStore(config.store_path(), self.user)
        sync = config.sync
        self._backoff = Backoff(sync.backoff_initial, sync.backoff_cap)
        self._listeners: list[Listener] = []
        self._frame_listeners: list[FrameListener] = []
        self._status = ConnectionStatus(ConnState.STOPPED, since=time.time())
        self._outbox = Outbox(self.store.open_outbox())
        self._replica = Replica(
            self.store, self._outbox, self._emit, hold=sync.on_failure == "hold"
        )
        self._core = SyncCore(
            self._replica, sync, on_online=self._went_online, on_silence=self._silence
        )
        self._transport: Transport = transport or self._default_transport(ssl_context)
        self._wake_pump = asyncio.Event()
        self._wake_connect = asyncio.Event()
        self._stopping = False
        self._online_since: float | None = None
        self._expire_on_start()

    def _default_transport(self, ssl_context: ssl.SSLContext | None) -> Transport:
        cfg = self.config
        if cfg.server.protocol == "matrix":
            # Imported only here: the base install has no httpx (the `matrix` extra).
            from tui_chat.matrix.transport import MatrixTransport

            return MatrixTransport(
                cfg.server.url,
                self.user,
                cfg.sync,
                password_login=cfg.account.password is not None,
            )
        return WebSocketTransport(
            cfg.server.url, cfg.sync, ssl_context=ssl_context, observe=self._observed
        )

    def valid_user(self, name: str) -> bool:
        """Whether ``name`` is a user as this server spells them: a tui-chat name, or a Matrix
        user id (@name:server) with protocol = "matrix". For the UI's name fields too."""
        if self.config.server.protocol == "matrix":
            return MXID_RE.match(name) is not None
        return p.USER_RE.match(name) is not None

    # ------------------------------------------------------------ events

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def observe_frames(self, listener: FrameListener) -> Callable[[], None]:
        """Call ``listener("in" | "out", frame)`` for every protocol frame received or sent.

        For test harnesses and debugging: a listener sees frames, it cannot change them.
        """
        self._frame_listeners.append(listener)
        return lambda: self._frame_listeners.remove(listener)

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")

    def _observed(self, direction: Direction, frame: p.ServerFrame | p.ClientFrame) -> None:
        for listener in list(self._frame_listeners):
            try:
                listener(direction, frame)
            except Exception:
                log.exception("frame observer failed")

    # ------------------------------------------------------------ queries

    @property
    def status(self) -> ConnectionStatus:
        return self._status

    @property
    def latency_ms(self) -> float | None:
        return self._transport.latency_ms if self._core.online else None

    @property
    def max_body(self) -> int:
        """The longest body the server accepts, in characters (from its welcome)."""
        return self._core.max_body

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def store_repair(self) -> StoreRepair | None:
        """What was done to a damaged local store at open (None: it was sound)."""
        return self.store.repair_report

    def outbox_count(self) -> int:
        """Messages written but not yet settled (pending, failed or cancelling)."""
        return len(self._outbox)

    def pending_rows(self) -> list[ChatMessage]:
        """Every unsettled message (pending, failed, cancelling), in compose order."""
        return [self._replica.view(r) for r in self._outbox.ordered()]

    def conversations(self) -> list[ConversationSummary]:
        return self.store.summaries(self._outbox.values())

    def conversation(self, peer: str) -> ConversationSummary:
        return self.store.summary(peer, self._outbox.values())

    def messages(self, peer: str, before: int | None = None, limit: int = 100) -> list[ChatMessage]:
        """A page of a conversation, oldest first.

        With ``before=None`` this is the newest page followed by the unsettled
        messages in compose order.
        """
        page = self.store.page(peer, before, limit)
        if before is None:
            page.extend(self._replica.view(r) for r in self._outbox.of_peer(peer))
        return page

    def messages_after(self, peer: str, after: int, limit: int = 100) -> list[ChatMessage]:
        """Confirmed messages above ``after``, oldest first; once this page reaches the
        newest one, the unsettled messages follow it as in :meth:`messages`."""
        page = self.store.page_after(peer, after, limit)
        if len(page) < limit:
            page.extend(self._replica.view(r) for r in self._outbox.of_peer(peer))
        return page

    def readers(self, peer: str, seq: int) -> list[str]:
        """Who else has read the conversation up to ``seq`` (the server's receipts)."""
        return self.store.readers(peer, seq)

    def search(self, text: str, limit: int = 100) -> list[ChatMessage]:
        """Stored messages with every word of ``text`` (as words or their starts), newest
        first: the local replica, so it works offline too."""
        return self.store.search(text, limit)

    def message(self, client_id: str) -> ChatMessage | None:
        row = self._outbox.get(client_id)
        if row is not None:
            return self._replica.view(row)
        stored = self.store.outbox_row(client_id)
        if stored is not None and stored.conv is not None and stored.seq is not None:
            return self.store.message_view(stored.conv, stored.seq)
        return None if stored is None else self._replica.view(stored)

    def draft(self, peer: str) -> str:
        return self.store.draft(peer)

    def save_draft(self, peer: str, text: str) -> None:
        self.store.save_draft(peer, text)

    def can_undo_give_up(self, client_id: str) -> bool:
        row = self._outbox.get(client_id) or self.store.outbox_row(client_id)
        return row is not None and self._outbox.can_undo(row)

    # ------------------------------------------------------------ commands

    def send(self, peer: str, body: str) -> ChatMessage:
        """Queue a message to a peer, or to a group (``peer`` = "#" + conv). It is
        committed to the outbox before this returns."""
        if is_group_key(peer):
            self._require_group(peer)
        elif not self.valid_user(peer):
            raise ValueError(f"invalid user name {peer!r}")
        if not body.strip():
            raise ValueError("message is empty")
        return self._queue(peer, "send", body=body)

    def create_group(self, title: str, members: list[str]) -> ChatMessage:
        """Ask the server for a group of the user and ``members``, titled ``title``.

        Until the server confirms it, the group's key is "+" + the create's client_id;
        then a ConversationReplaced event names its key ("#" + conv).
        """
        title = _check_title(title)
        for name in members:
            if not self.valid_user(name):
                raise ValueError(f"invalid user name {name!r}")
        cid = new_client_id()
        view = self._queue(
            PENDING_GROUP_PREFIX + cid, "create", arg=encode_create_args(title, members), cid=cid
        )
        # Its summary now, not at the next flush: an ack can come first, and a UI must have
        # heard of the pending key before ConversationReplaced names it.
        self._replica.flush()
        return view

    def add_member(self, key: str, user: str) -> ChatMessage:
        """Add ``user`` to the group ``key`` (only its creator may)."""
        self._require_group(key)
        if not self.valid_user(user):
            raise ValueError(f"invalid user name {user!r}")
        return self._queue(key, "add", arg=user)

    def remove_member(self, key: str, user: str) -> ChatMessage:
        """Remove ``user`` from the group ``key`` (only its creator may)."""
        self._require_group(key)
        if user == self.user:
            raise ValueError("to leave a group, use leave")
        if not self.valid_user(user):
            raise ValueError(f"invalid user name {user!r}")
        return self._queue(key, "remove", arg=user)

    def leave_group(self, key: str) -> ChatMessage:
        self._require_group(key)
        return self._queue(key, "leave")

    def rename_group(self, key: str, title: str) -> ChatMessage:
        self._require_group(key)
        return self._queue(key, "rename", arg=_check_title(title))

    def _require_group(self, key: str) -> None:
        if key.startswith(PENDING_GROUP_PREFIX):
            raise ValueError("the group is still being created")
        if not key.startswith(GROUP_PREFIX) or len(key) == len(GROUP_PREFIX):
            raise ValueError(f"not a group: {key!r}")
        if not self.store.has_conversation(key):
            # Groups are known from their events (or a confirmed create), never made up.
            raise ValueError(f"no such group {key!r}")

    def _queue(
        self, peer: str, op: str, *, body: str = "", arg: str | None = None, cid: str = ""
    ) -> ChatMessage:
        """One outbox row (a send or a group command) in ``peer``'s queue, committed."""
        row = OutboxRow(
            cid or new_client_id(), peer, body, _now_ms(), self.store.next_ord(), op=op, arg=arg
        )
        view = self._replica.add(row)
        self._wake_pump.set()
        return view

    def retry(self, client_id: str) -> ChatMessage:
        """A failed message goes back to pending, fresh from now: the user said so."""
        row = self._require_open(client_id)
        if self._outbox.retry(row, _now_ms()):
            self._replica.save(row)
            self._wake_pump.set()
        return self._replica.view(row)

    def retry_all(self) -> int:
        failed = self._outbox.failed_ids()
        for cid in failed:
            self.retry(cid)
        return len(failed)

    def give_up(self, client_id: str) -> ChatMessage:
        """Never send this message again.

        One that never left the machine is given up at once. One that may have reached
        the server is cancelling until the server confirms its tombstone (then given
        up) or says it already stored it (then sent, with a DeliveredAnyway event).
        """
        row = self._require_open(client_id)
        if row.state is OutState.CANCELLING:
            return self._replica.view(row)
        self._outbox.give_up(row)
        self._replica.save(row)
        self._wake_pump.set()
        return self._replica.view(row)

    def undo_give_up(self, client_id: str) -> ChatMessage:
        """Take a give-up back (the message is failed again); KeyError once the server
        has been told."""
        row = self._outbox.get(client_id) or self.store.outbox_row(client_id)
        if row is None or not self._outbox.can_undo(row):
            raise KeyError(f"{client_id!r} can no longer be restored: the server was told")
        self._outbox.undo_give_up(row)
        if row.op == "create" and row.peer.startswith(PENDING_GROUP_PREFIX):
            self.store.restore_pending_group(row)
        self._replica.save(row)
        return self._replica.view(row)

    def edit_and_retry(self, client_id: str, body: str) -> ChatMessage:
        """Replace an unsent message by an edited one that takes its place in order."""
        if not body.strip():
            raise ValueError("message is empty")
        old = self._require_open(client_id)
        if old.op != "send":
            raise ValueError("only a text message can be edited")
        self.give_up(client_id)
        # Same ord: the edit waits behind the original while that one is cancelling.
        view = self._replica.add(OutboxRow(new_client_id(), old.peer, body, _now_ms(), old.ord))

        self._wake_pump.set()
        return view

    def mark_read(self, peer: str) -> None:
        seq = self.store.latest_seq(peer)
        conv = self.store.conv_of(peer)
        if conv is None or not self.store.mark_read(peer, seq):
            return
        self._replica.mark_dirty(peer)
        if not self.store.joined(peer):
            return  # a group we left: read here; the server takes receipts from members only
        self._core.mark_read(conv, seq)
        self._wake_pump.set()

    def reconnect_now(self) -> None:
        """Skip the backoff wait (and retry after a rejected token, read again)."""
        self._backoff.reset()
        self._wake_connect.set()

    async def load_older(self, peer: str, before: int, limit: int = 100) -> None:
        """Older messages below ``before``, from the store or a page from the server.

        They arrive as one :class:`HistoryLoaded` event (the only channel for them).
        """
        local = self.store.page(peer, before, limit)
        conv = self.store.conv_of(peer)
        expected_low = max(1, before - limit)
        if (local and local[0].seq == expected_low) or conv is None or before <= 1:
            self._emit(HistoryLoaded(peer, local, complete=not local or local[0].seq == 1))
            return
        fut: asyncio.Future[p.HistoryPage | None] = asyncio.get_running_loop().create_future()
        self._core.request_older(conv, before, limit, _resolver(fut))
        page = await self._answer(fut, self.config.sync.ack_timeout)
        self._replica.flush()
        local = self.store.page(peer, before, limit)
        complete = page.complete if isinstance(page, p.HistoryPage) else False
        self._emit(HistoryLoaded(peer, local, complete=complete))

    async def lookup_user(self, name: str) -> bool | None:
        """Whether the server knows ``name``; None when it cannot be asked or did not answer."""
        if not self.valid_user(name):
            return False
        fut: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._core.lookup(name, _resolver(fut))
        return await self._answer(fut, LOOKUP_TIMEOUT)

    async def _answer(self, fut: asyncio.Future[_T | None], wait: float) -> _T | None:
        """Wait for the core's answer to a question it just queued (None: no answer)."""
        self._wake_pump.set()
        try:
            return await asyncio.wait_for(fut, wait)
        except TimeoutError:
            return None

    def _require_open(self, client_id: str) -> OutboxRow:
        row = self._outbox.get(client_id)
        if row is None:
            raise KeyError(f"no unsent message {client_id!r}")
        return row

    def _expire_on_start(self) -> None:
        window = self.config.sync.freshness_window
        for row in self._outbox.expire_on_start(_now_ms(), window):
            self.store.save_outbox(row)
        self.store.commit()
        for peer in self._outbox.peers():
            self._replica.refresh_held(peer, emit=False)

    # ------------------------------------------------------------ the pump

    async def _pump(self) -> None:
        """Run the core's timers and send what it queued, until the engine stops."""
        while not self._stopping:
            wait, end = self._core.poll()
            if end is not None:
                self._transport.end(end)
            await self._drain()
            self._wake_pump.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_pump.wait(), max(wait, 0.005))

    async def _drain(self) -> None:
        core = self._core
        while core.out:
            if core.commit_before_send:
                # A first transmission: once it leaves, a give-up must ask the server.
                core.commit_before_send = False
                self.store.commit()
            frame = core.out.pop(0)
            if not await self._transport.send(frame):
                core.out.clear()
                return

    def _wake(self, end: SessionEnd | None) -> SessionEnd | None:
        if self._core.out:
            self._wake_pump.set()
        return end

    # ------------------------------------------------------------ connection

    async def run(self) -> None:
        """Run until :meth:`stop`: connect, catch up, send, reconnect on failure.

        A :meth:`stop` that comes before this task first runs is honoured; an engine
        runs once.
        """
        pump = asyncio.create_task(self._pump(), name="tui-chat-pump")
        indexer = asyncio.create_task(self._index_search(), name="tui-chat-search-index")
        try:
            await self._connection_loop()
        finally:
            self._stopping = True
            self._wake_pump.set()
            for task in (pump, indexer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._replica.flush()
            self._set_status(ConnectionStatus(ConnState.STOPPED, since=time.time()))

    async def _index_search(self) -> None:
        """Index stored messages for search in small steps, never during a catch-up: an
        insert only queues its message (see LocalStore.index_pending)."""
        while not self._stopping:
            busy = self._status.state is not ConnState.ONLINE
            try:
                done = 0 if busy else self.store.index_pending()
            except sqlite3.Error as exc:
                # A search still indexes what it needs; nothing stored is at stake.
                log.warning("search indexing failed: %s", exc)
                done = 0
            # Right after a step, the next; with nothing queued (or catching up), later.
            await asyncio.sleep(0.1 if done else 1.0)

    async def stop(self) -> None:
        self._stopping = True
        self._wake_connect.set()
        await self._transport.aclose()

    def close(self) -> None:
        """Release the store (after :meth:`run` has returned)."""
        self._replica.flush()
        self.store.close()

    def _set_status(self, status: ConnectionStatus) -> None:
        self._status = status
        self._emit(ConnectionChanged(status))

    def _went_online(self) -> None:
        self._online_since = time.monotonic()
        self._resyncs = 0
        self._set_status(ConnectionStatus(ConnState.ONLINE, since=time.time()))
        # Only now, with the catch-up applied, is a still-pending message known
        # not to be on the server: the pump resends it with its own client_id.
        self._wake_pump.set()

    def _silence(self, since: float | None) -> None:
        if self._status.state is ConnState.ONLINE and self._status.silent_since != since:
            self._set_status(replace(self._status, silent_since=since))

    async def _read_token(self) -> str | SessionEnd:
        if self._token is None:
            source = self._token_source
            try:
                # In a thread: a token_command may take seconds, and the UI shares this loop.
                self._token = await asyncio.to_thread(source) if callable(source) else source
            except Exception as exc:  # a token_command or token_file: say why, wait for F5
                return SessionEnd(f"cannot read the token: {exc}", Retry.WAIT_FOR_USER)
        return self._token

    async def _connection_loop(self) -> None:
        sync = self.config.sync
        last_reason: str | None = None
        self._resyncs = 0  # resyncs in a row without reaching online
        while not self._stopping:
            self._set_status(
                ConnectionStatus(
                    ConnState.CONNECTING,
                    self._backoff.attempt + 1,
                    # The previous failure stays visible while we try again.
                    reason=last_reason,
                    since=time.time(),
                )
            )
            started = time.monotonic()
            token = await self._read_token()
            if isinstance(token, SessionEnd):
                end = token
            else:
                end = await self._transport.session(self._core.hello(token), _Sink(self))
            self._core.end_session()
            if self.stopping:
                break
            if end.retry is Retry.WAIT_FOR_USER:
                self._set_status(
                    ConnectionStatus(ConnState.AUTH_FAILED, reason=end.reason, since=time.time())
                )
                if callable(self._token_source):
                    self._token = None  # read it again: the user may have fixed the file
                await self._wait_connect(None)
                self._backoff.reset()
                last_reason = None
                continue
            if end.retry is Retry.AT_ONCE:
                # At once the first time; a server whose epoch changes at every login (or
                # that is behind us again right after a resync) gets the backoff instead.
                self._resyncs += 1
                if self._resyncs == 1:
                    continue
                end = SessionEnd("the server's history changed again; resyncing")
            if self._online_since is not None and (
                time.monotonic() - self._online_since >= sync.stable_after
            ):
                self._backoff.reset()
            self._online_since = None
            last_reason = end.reason
            delay = (
                self._backoff.prompt_delay()
                if end.retry is Retry.PROMPTLY
                else self._backoff.next_delay()
            )
            # %r: the reason may quote the server (an error frame); logs go to a terminal.
            log.info("connection ended after %.1fs: %r", time.monotonic() - started, end.reason)
            self._set_status(
                ConnectionStatus(
                    ConnState.OFFLINE,
                    self._backoff.attempt,
                    retry_in=delay,
                    reason=end.reason,
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


def _check_title(title: str) -> str:
    if not title.strip():
        raise ValueError("the title is empty")
    return title


def _resolver(fut: asyncio.Future[_T | None]) -> Callable[[_T | None], None]:
    def done(result: _T | None) -> None:
        if not fut.done():
            fut.set_result(result)

    return done


class _Sink:
    """Feeds the sync core for one session and wakes the pump when it queued frames."""

    __slots__ = ("_core", "_engine")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._core = engine._core

    def on_welcome(self, welcome: p.Welcome) -> SessionEnd | None:
        return self._engine._wake(self._core.on_welcome(welcome))

    def on_frame(self, frame: p.ServerFrame) -> SessionEnd | None:
        end = self._core.on_frame(frame)
        if isinstance(frame, _SETTLING):
            self._engine._wake_pump.set()
        return self._engine._wake(end)

    def on_undecodable(self, code: str, reason: str) -> None:
        self._core.on_undecodable(code, reason)

    def on_silence(self, since: float | None) -> None:
        self._core.on_silence(since)

    def on_checkpoint(self, state: bytes) -> None:
        self._core.on_checkpoint(state)

    def resume_state(self) -> bytes | None:
        return self._core.resume_state()

    def save_login(self, state: bytes) -> None:
        self._core.save_login(state)

    def saved_login(self) -> bytes | None:
        return self._core.saved_login()
