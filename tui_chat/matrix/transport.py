"""The engine's transport for a Matrix homeserver: /sync long-polls in, PUT send out.

One session: check the access token (``whoami``; with ``password`` login once and keep
the token and device id in the store through ``FrameSink.save_login``), send the welcome
(epoch: homeserver + user + device), then long-poll ``/sync`` from the stored ``since``.
Each answer is back-filled through ``/messages`` where it came back ``limited``, turned
into frames by the :class:`~tui_chat.matrix.mapping.Translator`, fed to the sync core, and
followed by the translator's checkpoint, so the store commits the events and the new
``since`` in one transaction. ``synced`` follows the first answer of the session.

A ``send`` frame becomes ``PUT /rooms/{room}/send/m.room.message/{client_id}``: the
client_id is the txnId, on the same device for every retry, so the homeserver stores it
once. The row becomes "sent" when its event comes back through /sync carrying our txnId.
See docs/matrix.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any, Final

import msgspec

from tui_chat import protocol as p
from tui_chat.core.config import SyncSection
from tui_chat.core.transport import SILENCE_AFTER, FrameSink, Retry, SessionEnd
from tui_chat.matrix.http import API, MatrixHttp, quote
from tui_chat.matrix.mapping import (
    CREATE_KEY,
    DIRECT,
    Backfill,
    Translator,
    backfill_page,
    load_state,
)
from tui_chat.matrix.wire import BadResponse, Event, EventId, MatrixError, Unreachable

log = logging.getLogger(__name__)

BACKFILL_PAGE: Final = 100
BACKFILL_PAGES: Final = 60  # at most 6,000 missed events of one room per sync
LOOKUP_PAGE: Final = 100  # a give-up looks this far back for our txnId
MAX_BODY: Final = 12_000  # characters: even 4-byte ones stay under the 64 KiB event limit


class _Login(msgspec.Struct):
    access_token: str
    device_id: str
    user_id: str


class MatrixTransport:
    def __init__(
        self,
        url: str,
        user: str,
        settings: SyncSection,
        *,
        password_login: bool = False,
        timeline_limit: int = 50,
        poll_seconds: float | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.settings = settings
        self.password_login = password_login
        self.timeline_limit = timeline_limit
        # The long poll doubles as the keepalive: no answer within it + ping_timeout +
        # SILENCE_AFTER and the link is called dead.
        self.poll_seconds = poll_seconds or max(1.0, settings.ping_interval)
        self._http: MatrixHttp | None = None
        self._sink: FrameSink | None = None
        self._tr: Translator | None = None
        self._ended: SessionEnd | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._puts: dict[str, asyncio.Task[None]] = {}
        self._apply_lock = asyncio.Lock()
        self._closing = False
        self._main: asyncio.Task[SessionEnd] | None = None
        self._latency: float | None = None
        self.device_id: str | None = None

    @property
    def latency_ms(self) -> float | None:
        return self._latency

    # ------------------------------------------------------------ session

    async def session(self, hello: p.Hello, sink: FrameSink) -> SessionEnd:
        if self._closing:
            return SessionEnd("stopped")
        self._ended = None
        self._wake = asyncio.Event()
        http = MatrixHttp(self.url, timeout=self.settings.connect_timeout)
        self._http = http
        self._sink = sink
        self._main = asyncio.create_task(self._converse(http, hello, sink))
        try:
            end = await self._main
        except asyncio.CancelledError:
            ended = self._end_reason()
            if ended is None:
                raise  # the engine itself is being cancelled
            end = ended
        finally:
            self._main = None
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()
            self._puts.clear()
            self._http = None
            self._sink = None
            self._tr = None
            self._latency = None
            await http.aclose()
        return self._end_reason() or end

    async def _converse(self, http: MatrixHttp, hello: p.Hello, sink: FrameSink) -> SessionEnd:
        try:
            end = await self._login(http, hello, sink)
            if end is None:
                end = await self._run(http, sink)
        except Unreachable as exc:
            end = SessionEnd(str(exc))
        except BadResponse as exc:
            sink.on_undecodable(p.ErrorCode.BAD_FRAME, str(exc))
            end = SessionEnd(str(exc))
        except MatrixError as exc:
            end = self._refused(exc)
        return end

    def _refused(self, exc: MatrixError) -> SessionEnd:
        if exc.auth:
            return SessionEnd(
                f"the homeserver refused the login: {exc.errcode} {exc.error}".strip(),
                Retry.WAIT_FOR_USER,
            )
        if exc.rate_limited:
            return SessionEnd(f"rate limited by the homeserver ({exc.errcode})")
        return SessionEnd(f"homeserver error: {exc}")

    async def _login(self, http: MatrixHttp, hello: p.Hello, sink: FrameSink) -> SessionEnd | None:
        saved: _Login | None = None
        if self.password_login:
            raw = sink.saved_login()
            if raw:
                with contextlib.suppress(msgspec.DecodeError):
                    saved = msgspec.json.decode(raw, type=_Login)
            if saved is not None and saved.user_id != self.user:
                saved = None
            http.token = saved.access_token if saved else None
        else:
            http.token = hello.token
        whoami = None
        if http.token:
            try:
                whoami = await http.whoami()
            except MatrixError as exc:
                if not (exc.auth and self.password_login):
                    raise
        if whoami is None:
            # Log in once; the same device forever (a new one would forget our txnIds).
            try:
                login = await http.login(
                    self.user, hello.token, device_id=saved.device_id if saved else None
                )
            except MatrixError as exc:
                if exc.errcode == "M_FORBIDDEN" or exc.status in (401, 403):
                    return SessionEnd(
                        f"the homeserver refused the password: {exc.errcode} {exc.error}",
                        Retry.WAIT_FOR_USER,
                    )
                raise
            sink.save_login(
                msgspec.json.encode(_Login(login.access_token, login.device_id, login.user_id))
            )
            whoami = await http.whoami()
        if whoami.user_id != self.user:
            return SessionEnd(
                f"the token belongs to {whoami.user_id}, not {self.user}", Retry.WAIT_FOR_USER
            )
        self.device_id = whoami.device_id or ""
        welcome = p.Welcome(
            v=p.PROTOCOL_VERSION,
            user=self.user,
            epoch=f"matrix:{self.url}:{self.user}:{self.device_id}",
            server_time=time.time_ns() // 1_000_000,
            max_body=MAX_BODY,
        )
        return sink.on_welcome(welcome)

    async def _run(self, http: MatrixHttp, sink: FrameSink) -> SessionEnd:
        tr = self._tr = Translator(self.user, load_state(sink.resume_state()))
        flt = msgspec.json.encode(
            {
                "room": {
                    "timeline": {"limit": self.timeline_limit},
                    "state": {"lazy_load_members": False},
                },
                "presence": {"not_types": ["*"]},
            }
        ).decode()
        first = True
        grace = self.settings.ping_timeout + SILENCE_AFTER
        while self._ended is None:
            poll_ms = 0 if first else int(self.poll_seconds * 1000)
            started = time.monotonic()
            resp = await http.sync(
                tr.state.since, timeout_ms=poll_ms, filter=flt, wait=poll_ms / 1000 + grace
            )
            if first:
                self._latency = (time.monotonic() - started) * 1000
            backfilled = {}
            for need in tr.backfill_needed(resp):
                backfilled[need.room_id] = await self._backfill(http, need)
            async with self._apply_lock:
                # A DM room being made, or a state event being sent, is known as ours
                # before its events apply.
                frames = tr.apply_sync(resp, backfilled)
            for frame in frames:
                end = sink.on_frame(frame)
                if end is not None:
                    return end
            sink.on_checkpoint(tr.checkpoint())
            if first:
                first = False
                end = sink.on_frame(p.Synced(cursors=tr.cursors()))
                if end is not None:
                    return end
        return self._ended

    async def _backfill(self, http: MatrixHttp, need: Backfill) -> list[Event]:
        """The events between what we hold and a limited timeline, oldest first."""
        pages: list[list[Event]] = []
        token: str | None = need.prev_batch
        for _ in range(BACKFILL_PAGES):
            page = await http.messages(
                need.room_id, from_token=token, direction="b", limit=BACKFILL_PAGE
            )
            newer, met = backfill_page(page.chunk, need.last_event)
            pages.append(newer)
            if met or not page.chunk or not page.end:
                break
            token = page.end
        else:
            log.warning("back-fill of %r stopped after %d pages", need.room_id, BACKFILL_PAGES)
        events = [ev for page in reversed(pages) for ev in page]
        log.info("back-filled %d events of %r in %d pages", len(events), need.room_id, len(pages))
        return events

    # ------------------------------------------------------------ frames out

    async def send(self, frame: p.ClientFrame) -> bool:
        http, tr = self._http, self._tr
        if http is None or tr is None or self._ended is not None:
            return False
        if isinstance(frame, p.Send):
            self._spawn(self._put(http, tr, frame), frame.client_id)
        elif isinstance(frame, p.Cancel):
            self._spawn(self._cancel(http, tr, frame.client_id))
        elif isinstance(frame, p.Lookup):
            self._spawn(self._lookup(http, frame.user))
        elif isinstance(frame, p.HistoryRequest):
            # Seqs are this device's numbering: nothing exists below the first one held.
            self._feed(
                p.HistoryPage(
                    conv=frame.conv,
                    messages=[],
                    complete=True,
                    before=frame.before,
                    after=frame.after,
                )
            )
        elif isinstance(frame, p.Create):
            self._spawn(self._create(http, frame), frame.client_id)
        elif isinstance(frame, p.Add):
            self._state_op(http, tr, frame.client_id, frame.conv, frame.user, "invite")
        elif isinstance(frame, p.Remove):
            self._state_op(http, tr, frame.client_id, frame.conv, frame.user, "leave")
        elif isinstance(frame, p.Leave):
            self._state_op(http, tr, frame.client_id, frame.conv, self.user, "leave")
        elif isinstance(frame, p.Rename):
            self._spawn(
                self._put_state(
                    http, tr, frame.client_id, frame.conv, "m.room.name", "", {"name": frame.title}
                ),
                frame.client_id,
            )
        elif isinstance(frame, p.Read):
            r = tr.room(frame.conv)
            # Only the event id of a room's newest seq is kept: a read of it (the usual
            # case) becomes m.read on that event, which covers everything before it.
            if r is not None and r.last_event and frame.seq >= r.seq:
                self._spawn(self._receipt(http, frame.conv, r.last_event))
        return True

    async def _receipt(self, http: MatrixHttp, room: str, event_id: str) -> None:
        try:
            await http.read_receipt(room, event_id)
        except (MatrixError, Unreachable, BadResponse) as exc:
            log.info("read receipt for %r not sent: %s", room, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None], txn: str | None = None) -> None:
        task = asyncio.create_task(coro, name="tui-chat-matrix")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if txn is not None:
            self._puts[txn] = task
            task.add_done_callback(lambda _t: self._puts.pop(txn, None))

    def _feed(self, frame: p.ServerFrame) -> None:
        sink = self._sink
        if sink is None or self._ended is not None:
            return
        end = sink.on_frame(frame)
        if end is not None:
            self.end(end)

    def _reject(
        self, txn: str, code: str, reason: str, *, retry_after: float | None = None
    ) -> None:
        self._feed(
            p.Reject(
                client_id=txn,
                code=code,
                reason=reason,
                retryable=retry_after is not None,
                retry_after=retry_after,
            )
        )

    async def _put(self, http: MatrixHttp, tr: Translator, frame: p.Send) -> None:
        txn = frame.client_id
        try:
            room = frame.conv or await self._dm_room(http, tr, frame.to or "")
            r = tr.room(room)
            if r is not None and r.encrypted:
                self._reject(txn, p.ErrorCode.NOT_ALLOWED, "encrypted rooms are not supported yet")
                return
            if r is not None and r.invited:
                await http.join(room)  # writing into an invitation accepts it
                r.invited = False
            tr.sending(txn, room)
            event_id = await http.request(
                "PUT",
                f"{API}/rooms/{quote(room)}/send/m.room.message/{quote(txn)}",
                EventId,
                body={"msgtype": "m.text", "body": frame.body},
                wait=self.settings.ack_timeout,
            )
            # Stored: its echo in /sync (with this txnId) makes the row sent, with its seq.
            tr.sent(txn, event_id.event_id)
            if self._wake is not None:
                self._wake.set()
        except MatrixError as exc:
            if exc.rate_limited:
                wait = (exc.retry_after_ms or 1000) / 1000
                log.info("rate limited by the homeserver: %r waits %.1f s", txn, wait)
                self._reject(txn, p.ErrorCode.RATE_LIMITED, "rate limited", retry_after=wait)
            elif exc.auth:
                self.end(self._refused(exc))
            elif exc.status >= 500:
                self.end(SessionEnd(f"homeserver error: {exc}"))
            else:
                self._reject(
                    txn, _code(exc), f"the homeserver refused it: {exc.errcode} {exc.error}"
                )
        except Unreachable as exc:
            # It may have reached the homeserver: resent with the same txnId after catch-up.
            self.end(SessionEnd(str(exc)))
        except BadResponse as exc:
            self.end(SessionEnd(str(exc)))

    async def _create(self, http: MatrixHttp, frame: p.Create) -> None:
        """A group: a room named ``title`` with ``members`` invited. Its m.room.create
        carries the client_id, so its first frame (a `created` by us) confirms the row,
        and after a lost answer the catch-up finds the room instead of making another."""
        try:
            await http.create_room(
                name=frame.title,
                invite=list(frame.members),
                creation_content={CREATE_KEY: frame.client_id},
            )
        except MatrixError as exc:
            self._refused_op(frame.client_id, exc)
        except (Unreachable, BadResponse) as exc:
            self.end(SessionEnd(str(exc)))

    def _state_op(
        self, http: MatrixHttp, tr: Translator, cid: str, room: str, user: str, membership: str
    ) -> None:
        content = {"membership": membership}
        self._spawn(self._put_state(http, tr, cid, room, "m.room.member", user, content), cid)

    async def _put_state(
        self,
        http: MatrixHttp,
        tr: Translator,
        cid: str,
        room: str,
        kind: str,
        key: str,
        content: dict[str, Any],
    ) -> None:
        """A group command as one state event: its event id comes back through /sync as
        the row's event (added, removed, left, renamed), which confirms it."""
        try:
            # /sync waits meanwhile: its event is known as this row's when it comes back.
            async with self._apply_lock:
                event_id = await http.put_state(room, kind, key, content)
                tr.sent(cid, event_id)
        except MatrixError as exc:
            self._refused_op(cid, exc)
        except (Unreachable, BadResponse) as exc:
            self.end(SessionEnd(str(exc)))

    def _refused_op(self, cid: str, exc: MatrixError) -> None:
        if exc.rate_limited:
            wait = (exc.retry_after_ms or 1000) / 1000
            self._reject(cid, p.ErrorCode.RATE_LIMITED, "rate limited", retry_after=wait)
        elif exc.auth:
            self.end(self._refused(exc))
        elif exc.status >= 500:
            self.end(SessionEnd(f"homeserver error: {exc}"))
        else:
            code = p.ErrorCode.NOT_ALLOWED if exc.errcode == "M_FORBIDDEN" else _code(exc)
            self._reject(cid, code, f"the homeserver refused it: {exc.errcode} {exc.error}")

    async def _dm_room(self, http: MatrixHttp, tr: Translator, peer: str) -> str:
        """The DM room with ``peer``: the one we hold, or a new one (is_direct, invited,
        recorded in m.direct)."""
        async with self._apply_lock:
            room = tr.dm_room(peer)
            if room is not None:
                return room
            invited = tr.direct_invite(peer)
            if invited is not None:
                # The peer already asked: answering is accepting their DM room.
                await http.join(invited)
                tr.expect_dm(invited, peer)
                tr.state.invited_direct.pop(invited, None)
                await self._record_direct(http, peer, invited)
                return invited
            room = await http.create_room(
                invite=[peer], is_direct=True, preset="trusted_private_chat"
            )
            tr.expect_dm(room, peer)
            await self._record_direct(http, peer, room)
            return room

    async def _record_direct(self, http: MatrixHttp, peer: str, room: str) -> None:
        """Add ``room`` to our m.direct under ``peer`` (other clients see it as the DM)."""
        try:
            direct = await http.account_data(self.user, DIRECT)
        except MatrixError as exc:
            if exc.errcode != "M_NOT_FOUND":
                raise
            direct = {}
        rooms = direct.get(peer)
        known = rooms if isinstance(rooms, list) else []
        if room not in known:
            direct[peer] = [*known, room]
            await http.set_account_data(self.user, DIRECT, direct)

    async def _cancel(self, http: MatrixHttp, tr: Translator, txn: str) -> None:
        """A give-up of a message that may have reached the homeserver: look for it first."""
        put = self._puts.get(txn)
        if put is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(put)
        room = tr.state.pending.get(txn)
        if room is not None:
            try:
                page = await http.messages(room, from_token=None, direction="b", limit=LOOKUP_PAGE)
            except (MatrixError, Unreachable, BadResponse) as exc:
                log.info("cannot look for %r before giving it up: %s", txn, exc)
                return  # still cancelling: asked again in the next session
            for ev in page.chunk:
                unsigned = ev.unsigned
                if ev.sender == self.user and unsigned and unsigned.transaction_id == txn:
                    # It is there: its echo (already stored or coming) shows it as sent.
                    tr.sent(txn, ev.event_id)
                    return
            tr.state.pending.pop(txn, None)
        self._feed(p.Cancelled(client_id=txn))

    async def _lookup(self, http: MatrixHttp, user: str) -> None:
        try:
            await http.profile(user)
            exists = True
        except MatrixError:
            exists = False
        except (Unreachable, BadResponse):
            return
        self._feed(p.UserInfo(user=user, exists=exists))

    def _end_reason(self) -> SessionEnd | None:
        return self._ended

    def end(self, why: SessionEnd) -> None:
        if self._ended is not None or self._http is None:
            return
        self._ended = why
        main = self._main
        if main is not None:
            main.cancel()

    async def aclose(self) -> None:
        self._closing = True
        self.end(SessionEnd("stopped"))


def _code(exc: MatrixError) -> str:
    if exc.errcode == "M_TOO_LARGE":
        return p.ErrorCode.TOO_LONG
    return p.ErrorCode.UNAVAILABLE
