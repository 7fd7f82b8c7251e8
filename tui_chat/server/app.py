"""The reference chat server: websockets in front, the writer and SQLite behind."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import sqlite3
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tui_chat.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Add,
    Cancel,
    Cancelled,
    CloseCode,
    Create,
    Error,
    ErrorCode,
    FrameError,
    Hello,
    HistoryMessage,
    HistoryPage,
    HistoryRequest,
    Leave,
    Lookup,
    Message,
    MessageKind,
    Read,
    Receipt,
    Reject,
    Remove,
    Rename,
    Send,
    Synced,
    UserInfo,
    Welcome,
    decode_client,
    encode,
)
from tui_chat.server import db, visibility
from tui_chat.server.config import ServerConfig
from tui_chat.server.groups import GroupLimits
from tui_chat.server.session import (
    CLOSE_TIMEOUT,
    Cork,
    Session,
    TokenBucket,
    close_within,
    text_frame,
)
from tui_chat.server.throttle import LoginThrottle
from tui_chat.server.writer import (
    ACCOUNT_REMOVED,
    COMMANDS,
    TOKEN_REVOKED,
    AccountClosed,
    CancelRequest,
    GroupOp,
    GroupRequest,
    Outcome,
    ReadRequest,
    ReadStored,
    Refused,
    Request,
    SendRequest,
    Stored,
    Tombstoned,
    Writer,
)

if TYPE_CHECKING:
    from tui_chat.server.pg.bus import Relay

log = logging.getLogger(__name__)

REPLAY_PAGE = 1000
# How often the serve process looks at the accounts version that admin commands (run as
# other processes) bump: a removed account or revoked token is closed well within 1 s.
ACCOUNT_POLL_S = 0.25
# History replies stay well under the 1 MiB default frame limit of websockets clients.
MAX_PAGE_BYTES = 512 * 1024
_page_encoder = msgspec.json.Encoder()
T = TypeVar("T")
GroupFrame = Create | Add | Remove | Leave | Rename


class Readers(Protocol):
    """Where reads run: threads with connections to the store (SQLite or PostgreSQL)."""

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    def close(self) -> None: ...


class _Readers:
    """Read-only connections, one per worker thread (WAL lets them read during commits)."""

    def __init__(self, path: Path, workers: int = 2) -> None:
        self._path = path
        self._local = threading.local()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "tui-chat-reader")
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = db.connect(self._path)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._conn()))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                conn.close()


class ChatServer:
    """One server process: with ``store`` (a postgresql:// URL) a node of a service whose
    nodes share that store, and with ``bus`` (a redis:// URL) the notifications between them;
    without, the embedded SQLite database at ``db_path``."""

    def __init__(
        self,
        db_path: Path,
        config: ServerConfig | None = None,
        *,
        store: str | None = None,
        bus: str | None = None,
    ) -> None:
        self.db_path = db_path
        self.store = store
        self.bus = bus
        self.config = config or ServerConfig()
        self.epoch = ""
        self.port = 0
        # Keyed by account id, not name: a message for a new account with an old name must
        # never reach a session of the removed one.
        self._sessions: dict[int, set[Session]] = collections.defaultdict(set)
        # Held direct writes of one batch: one socket write per connection per batch.
        self._cork = Cork()
        self._server: Server | None = None
        self._writer: Writer | None = None
        self._readers: Readers | None = None
        self._relay: Relay | None = None
        limits = self.config.limits
        self.login_throttle = LoginThrottle(limits.auth_failures, limits.auth_window)
        # The accounts version the open sessions were last checked against.
        self._accounts_version = 0
        self._account_watch: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        dur = self.config.durability
        group_limits = GroupLimits(
            self.config.limits.max_group_members,
            self.config.limits.max_title,
            self.config.limits.max_groups_per_user,
        )
        if self.store is None:
            conn, self.epoch = db.open_db(self.db_path, synchronous=dur.synchronous)
            conn.close()
            self._writer = Writer(
                self.db_path,
                loop,
                self._on_batch,
                synchronous=dur.synchronous,
                linger_s=dur.group_commit_ms / 1000,
                max_batch=dur.max_batch,
                group_limits=group_limits,
            )
            self._readers = _Readers(self.db_path)
        else:
            await self._start_store(self.store, loop, group_limits)
        assert self._writer is not None and self._readers is not None
        self._writer.start()
        self._accounts_version = await self._readers.run(db.accounts_version)
        self._account_watch = loop.create_task(self._watch_accounts())
        ka = self.config.keepalive
        self._server = await serve(
            self._handle,
            host,
            port,
            ssl=tls,
            max_size=self.config.limits.max_frame,
            ping_interval=ka.ping_interval,
            ping_timeout=ka.ping_timeout,
            compression=None,
            close_timeout=CLOSE_TIMEOUT,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _start_store(
        self, url: str, loop: asyncio.AbstractEventLoop, group_limits: GroupLimits
    ) -> None:
        """A node on the PostgreSQL store (and the bus, if given)."""
        from tui_chat.server.nodes import open_node

        dur = self.config.durability
        self.epoch, writer, readers, relay = await open_node(
            url,
            self.bus,
            loop,
            self._on_batch,
            self._sessions,
            self._fan_out_stored,
            self._fan_out,
            linger_s=dur.group_commit_ms / 1000,
            max_batch=dur.max_batch,
            group_limits=group_limits,
        )
        self._writer, self._readers, self._relay = writer, readers, relay

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, tell clients to come back (1012), commit what is queued."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        if self._account_watch is not None:
            self._account_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._account_watch
        # Every connection, including those still waiting to send their hello (they
        # would otherwise hold shutdown for the hello timeout), and bounded, so that a
        # client that does not read cannot hold it at all.
        conns = set(self._server.connections)
        conns.update(s.ws for group in self._sessions.values() for s in group)
        await asyncio.gather(
            *(
                close_within(ws, CloseCode.SERVICE_RESTART, "server restart", CLOSE_TIMEOUT)
                for ws in conns
            ),
            return_exceptions=True,
        )
        await self._server.wait_closed()
        if self._writer is not None:
            await self._writer.stop()
        if self._relay is not None:
            await self._relay.stop()
        if self._readers is not None:
            self._readers.close()
        self._server = None
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def connection_count(self) -> int:
        return sum(len(group) for group in self._sessions.values())

    def sessions_of(self, user: str) -> list[Session]:
        """The open sessions logged in as ``user`` (for tests and diagnostics)."""
        return [s for group in self._sessions.values() for s in group if s.user == user]

    # ------------------------------------------------------------ connection

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            session = await self._authenticate(ws)
        except sqlite3.Error as exc:
            await self._store_unavailable(ws, exc)
            return
        if session is None:
            return
        try:
            await self._replay(session)
            session.start_sending()
            await self._receive(session)
        except ConnectionClosed:
            pass
        except sqlite3.Error as exc:
            await self._store_unavailable(ws, exc)
        finally:
            self._unregister(session)
            await session.stop()

    @staticmethod
    async def _store_unavailable(ws: ServerConnection, exc: sqlite3.Error) -> None:
        """A read failed (the store is away): the client comes back soon (1012) and resumes
        from its cursors, rather than seeing an internal error (1011)."""
        log.warning("closing a connection: the store is unavailable: %s", exc)
        with contextlib.suppress(ConnectionClosed, OSError):
            await close_within(ws, CloseCode.SERVICE_RESTART, "store unavailable", CLOSE_TIMEOUT)

    def _unregister(self, session: Session) -> None:
        group = self._sessions.get(session.account.id)
        if group is not None and session in group:
            group.discard(session)
            if not group:
                del self._sessions[session.account.id]
            if self._relay is not None:
                self._relay.left(session)

    async def _authenticate(self, ws: ServerConnection) -> Session | None:
        limits = self.config.limits
        try:
            raw = await asyncio.wait_for(ws.recv(), limits.hello_timeout)
        except TimeoutError:
            await ws.close(CloseCode.HELLO_TIMEOUT, f"no hello within {limits.hello_timeout:g} s")
            return None
        except ConnectionClosed:
            return None
        try:
            frame = decode_client(raw)
        except FrameError as exc:
            await self._fail(ws, exc.code, f"first frame must be hello: {exc.reason}")
            return None
        if not isinstance(frame, Hello):
            await self._fail(ws, ErrorCode.NOT_AUTHENTICATED, "first frame must be hello")
            return None
        if frame.v != PROTOCOL_VERSION:
            await self._fail(
                ws, ErrorCode.UNSUPPORTED_VERSION, f"protocol v{frame.v} not supported; use v1"
            )
            return None
        # Throttled per user name and address: one attacker cannot lock a user
        # out everywhere, and cannot guess tokens fast from one place.
        throttle_key = (frame.user, _remote_host(ws))
        if self.login_throttle.blocked(throttle_key):
            await self._send_error(
                ws, ErrorCode.AUTH_THROTTLED, "too many failed logins; try later"
            )
            await ws.close(CloseCode.AUTH_THROTTLED, "too many failed logins")
            return None
        assert self._readers is not None
        user, token = frame.user, frame.token
        account = await self._readers.run(lambda c: db.authenticate(c, user, token))
        if account is None:
            self.login_throttle.failed(throttle_key)
            await self._send_error(ws, ErrorCode.AUTH_FAILED, "unknown user or wrong token")
            await ws.close(CloseCode.AUTH_FAILED, "unknown user or wrong token")
            return None
        self.login_throttle.succeeded(throttle_key)
        session = Session(ws, account, limits.max_outgoing, limits.max_outgoing_bytes, self._cork)
        session.replayed = dict(frame.cursors)
        session.replay_pages = frame.replay_pages
        # Registered before the replay snapshot is read: anything committed
        # later is queued, anything earlier is in the snapshot; the overlap is
        # filtered by seq in the session's sender.
        self._sessions[account.id].add(session)
        if account.version < self._accounts_version:
            # Checked against accounts older than the watch has already handled: an
            # admin command may have closed this account meanwhile. Check it again.
            task = asyncio.get_running_loop().create_task(self._check_sessions([session]))
            # Keep a reference: the loop holds tasks only weakly.
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)
        welcome = Welcome(
            v=PROTOCOL_VERSION,
            user=user,
            epoch=self.epoch,
            server_time=db.now_ms(),
            max_body=limits.max_body,
        )
        try:
            await ws.send(encode(welcome), text=True)
        except ConnectionClosed:
            # The client left during the handshake: it must not stay registered, or
            # fan-out would keep queueing frames for a connection nobody drains.
            self._unregister(session)
            return None
        return session

    # ------------------------------------------------------------ accounts

    async def _watch_accounts(self) -> None:
        """Close the sessions of removed accounts and revoked tokens, within ACCOUNT_POLL_S.

        Admin commands run as separate processes against the same database and bump its
        accounts version; one indexed read every ACCOUNT_POLL_S notices that with no
        signal between processes. The writer refuses such sessions' sends on its own.
        """
        assert self._readers is not None
        readers = self._readers
        while True:
            await asyncio.sleep(ACCOUNT_POLL_S)
            try:
                version = await readers.run(db.accounts_version)
            except sqlite3.Error as exc:
                log.warning("cannot read the accounts version: %s", exc)
                continue
            if version == self._accounts_version:
                continue
            # No await between taking the new version and the snapshot of sessions: a
            # session registered later and checked at an older version re-checks itself.
            self._accounts_version = version
            sessions = [s for group in self._sessions.values() for s in group]
            await self._check_sessions(sessions)

    async def _check_sessions(self, sessions: list[Session]) -> None:
        assert self._readers is not None
        ids = sorted({s.account.id for s in sessions})
        try:
            current = await self._readers.run(lambda c: db.token_hashes(c, ids))
        except sqlite3.Error as exc:
            log.warning("cannot check accounts: %s", exc)
            return
        for session in sessions:
            token_hash = current.get(session.account.id)
            if token_hash is None:
                self._close_account(session, ACCOUNT_REMOVED)
            elif token_hash != session.account.token_hash:
                self._close_account(session, TOKEN_REVOKED)

    def _close_account(self, session: Session, reason: str) -> None:
        if not session.closing:
            log.info("closing session of %s: %s", session.user, reason)
        session.close(CloseCode.ACCOUNT_CLOSED, reason)

    async def _fail(self, ws: ServerConnection, code: str, reason: str) -> None:
        await self._send_error(ws, code, reason)
        await ws.close(CloseCode.BAD_HELLO, reason[:100])

    @staticmethod
    async def _send_error(ws: ServerConnection, code: str, reason: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode(Error(code=code, reason=reason)), text=True)

    async def _replay(self, session: Session) -> None:
        assert self._readers is not None
        account = session.account.id

        def conversations(c: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
            return db.conversations_of(c, account), visibility.groups_of(c, account)

        convs, groups = await self._readers.run(conversations)
        if self._relay is not None:
            # From here on the relay forwards to this session whatever is committed after
            # the snapshot, from whichever node.
            self._relay.replayed(session, {**convs, **groups})
        cursors: dict[str, int] = {}
        for conv, last_seq in itertools.chain(convs.items(), groups.items()):
            # For a group, last_seq is the last seq visible to this account: what a
            # hostile cursor can reach is bounded by the same rule as every read.
            after = min(session.replayed.get(conv, 0), last_seq)
            while after < last_seq:
                if conv in groups:
                    read = functools.partial(
                        visibility.visible_after,
                        account=account,
                        conv=conv,
                        after=after,
                        limit=REPLAY_PAGE,
                    )
                else:
                    read = functools.partial(
                        db.messages_after, conv=conv, after=after, limit=REPLAY_PAGE
                    )
                page = await self._readers.run(read)
                if not page:
                    break
                if session.replay_pages:
                    page = _cap_page(page, keep_oldest=True)
                    await session.ws.send(
                        encode(HistoryPage(conv, page, False, None, after)), text=True
                    )
                else:
                    for m in page:
                        await session.ws.send(encode(m), text=True)
                after = page[-1].seq
            cursors[conv] = after
        # Read positions change while a client is away too; they are small, so
        # the replay always carries all of them (of a group: its current members', if the
        # user is one).
        conv_ids = list(convs)

        def positions(c: sqlite3.Connection) -> list[tuple[str, str, int]]:
            return db.read_positions(c, conv_ids) + visibility.group_read_positions(c, account)

        for conv, reader, read_seq in await self._readers.run(positions):
            await session.ws.send(encode(Receipt(conv, reader, read_seq)), text=True)
        # Cursors for conversations the user is not in are dropped, not echoed.
        session.replayed = dict(cursors)
        await session.ws.send(encode(Synced(cursors=cursors)), text=True)

    async def _receive(self, session: Session) -> None:
        limits = self.config.limits
        bucket = TokenBucket(limits.rate, limits.burst)
        async for raw in session.ws:
            if session.closing:
                # Closed for its account (or as too slow): nothing more it sends counts.
                break
            wait = bucket.take()
            try:
                frame = decode_client(raw)
            except FrameError as exc:
                session.push(encode(Error(code=exc.code, reason=exc.reason)))
                continue
            if isinstance(frame, Send | GroupFrame):
                # Group commands are limited like sends, and answered the same way.
                if wait:
                    self._reject(
                        session,
                        frame.client_id,
                        ErrorCode.RATE_LIMITED,
                        "sending too fast",
                        True,
                        retry_after=round(wait, 3),
                    )
                elif isinstance(frame, Send):
                    self._on_send(session, frame)
                else:
                    self._on_group(session, frame)
            elif wait:
                session.push(encode(Error(code=ErrorCode.RATE_LIMITED, reason="too many frames")))
            elif isinstance(frame, HistoryRequest):
                await self._on_history(session, frame)
            elif isinstance(frame, Read):
                self._on_read(session, frame)
            elif isinstance(frame, Cancel):
                self._on_cancel(session, frame)
            elif isinstance(frame, Lookup):
                await self._on_lookup(session, frame)
            else:
                session.push(
                    encode(
                        Error(
                            code=ErrorCode.ALREADY_AUTHENTICATED,
                            reason="hello was already accepted",
                        )
                    )
                )

    # ------------------------------------------------------------ frames

    def _reject(
        self,
        session: Session,
        client_id: str,
        code: str,
        reason: str,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        session.push(encode(Reject(client_id, code, reason, retryable, retry_after)))

    def _on_send(self, session: Session, frame: Send) -> None:
        limits = self.config.limits
        assert self._writer is not None
        if (frame.to is None) == (frame.conv is None):
            self._reject(
                session,
                frame.client_id,
                ErrorCode.BAD_FRAME,
                "send needs exactly one of 'to' and 'conv'",
                False,
            )
        elif len(frame.body) > limits.max_body:
            self._reject(
                session,
                frame.client_id,
                ErrorCode.TOO_LONG,
                f"message is {len(frame.body)} characters; the limit is {limits.max_body}",
                False,
            )
        elif not frame.body.strip():
            self._reject(session, frame.client_id, ErrorCode.EMPTY_BODY, "message is empty", False)
        elif self._busy(session, frame.client_id):
            pass
        else:
            account = session.account
            self._writer.submit(
                SendRequest(
                    account.name,
                    account.id,
                    account.token_hash,
                    frame.to or "",
                    frame.client_id,
                    frame.body,
                    session,
                    frame.conv,
                )
            )

    def _busy(self, session: Session, client_id: str) -> bool:
        """Too many writes already wait: reject (retryable) rather than queue without bound."""
        assert self._writer is not None
        if self._writer.pending < self.config.limits.max_pending_writes:
            return False
        self._reject(
            session, client_id, ErrorCode.UNAVAILABLE, "server is busy", True, retry_after=1.0
        )
        return True

    def _on_group(self, session: Session, frame: GroupFrame) -> None:
        """create, add, remove, leave, rename: every rule is decided by the writer."""
        assert self._writer is not None
        if self._busy(session, frame.client_id):
            return
        account = session.account
        request = GroupRequest(
            "", account.name, account.id, account.token_hash, frame.client_id, session
        )
        if isinstance(frame, Create):
            request.op, request.title, request.members = GroupOp.CREATE, frame.title, frame.members
        elif isinstance(frame, Add):
            request.op, request.conv, request.user = GroupOp.ADD, frame.conv, frame.user
        elif isinstance(frame, Remove):
            request.op, request.conv, request.user = GroupOp.REMOVE, frame.conv, frame.user
        elif isinstance(frame, Leave):
            request.op, request.conv = GroupOp.LEAVE, frame.conv
        else:
            request.op, request.conv, request.title = GroupOp.RENAME, frame.conv, frame.title
        self._writer.submit(request)

    def _on_cancel(self, session: Session, frame: Cancel) -> None:
        assert self._writer is not None
        if self._writer.pending >= self.config.limits.max_pending_writes:
            # No reject: that would read as the answer to a send. The client asks again.
            session.push(
                encode(Error(code=ErrorCode.UNAVAILABLE, reason="server is busy; cancel again"))
            )
            return
        account = session.account
        self._writer.submit(CancelRequest(account.id, account.token_hash, frame.client_id, session))

    async def _on_lookup(self, session: Session, frame: Lookup) -> None:
        assert self._readers is not None
        name = frame.user
        # Read from the database each time, on a reader that sees every commit: an
        # account added or removed a moment ago is answered as it is now.
        exists = await self._readers.run(lambda c: db.user_exists(c, name))
        session.push(encode(UserInfo(user=name, exists=exists)))

    def _on_read(self, session: Session, frame: Read) -> None:
        assert self._writer is not None
        account = session.account
        self._writer.submit(ReadRequest(account.name, account.id, frame.conv, frame.seq, session))

    async def _on_history(self, session: Session, frame: HistoryRequest) -> None:
        assert self._readers is not None
        account = session.account.id
        floor = frame.after or 0
        keep_oldest = frame.after is not None

        def query(c: sqlite3.Connection) -> tuple[list[HistoryMessage], bool] | None:
            # One read transaction: the membership check and the page see one snapshot.
            c.execute("BEGIN")
            try:
                if visibility.is_group(c, frame.conv):
                    if not visibility.ever_member(c, frame.conv, account):
                        return None
                    page = visibility.visible_before(
                        c, account, frame.conv, frame.before, floor, frame.limit
                    )
                    page = _cap_page(page, keep_oldest=keep_oldest)
                    # A member's visible seqs have holes (before the join, between
                    # intervals): complete means nothing visible is left below.
                    complete = not page or not visibility.visible_between(
                        c, account, frame.conv, floor, page[0].seq
                    )
                    return page, complete
                if not db.is_member(c, frame.conv, account):
                    return None
                page = db.messages_before(c, frame.conv, frame.before, floor, frame.limit)
                page = _cap_page(page, keep_oldest=keep_oldest)
                return page, not page or page[0].seq <= floor + 1
            finally:
                c.execute("COMMIT")

        found = await self._readers.run(query)
        if found is None:
            session.push(
                encode(
                    Error(code=ErrorCode.NOT_MEMBER, reason="no such conversation for this user")
                )
            )
            return
        messages, complete = found
        session.push(encode(HistoryPage(frame.conv, messages, complete, frame.before, frame.after)))

    # ------------------------------------------------------------ fan-out

    def _on_batch(self, results: list[tuple[Request, Outcome]]) -> None:
        # Everything the batch sends to a connection leaves in one write (see Cork).
        self._cork.active = True
        try:
            self._deliver(results)
        finally:
            self._cork.flush()

    def _deliver(self, results: list[tuple[Request, Outcome]]) -> None:
        for req, outcome in results:
            origin = req.origin
            assert isinstance(origin, Session)
            if isinstance(outcome, Stored):
                origin.push(
                    encode(
                        Ack(
                            outcome.client_id,
                            outcome.conv,
                            outcome.seq,
                            outcome.ts,
                            outcome.duplicate,
                        )
                    )
                )
                if outcome.duplicate:
                    pass
                elif self._relay is not None:
                    self._relay.local(outcome)
                else:
                    self._fan_out_stored(outcome)
            elif isinstance(outcome, Tombstoned):
                origin.push(encode(Cancelled(outcome.client_id)))
            elif isinstance(outcome, AccountClosed):
                # No answer to the request: it was not stored, and the session is closed.
                self._close_account(origin, outcome.reason)
            elif isinstance(outcome, Refused):
                if isinstance(req, COMMANDS):
                    self._reject(
                        origin, req.client_id, outcome.code, outcome.reason, outcome.retryable
                    )
                else:
                    origin.push(encode(Error(code=outcome.code, reason=outcome.reason)))
            elif isinstance(outcome, ReadStored):
                data = encode(Receipt(outcome.conv, outcome.user, outcome.read_seq))
                self._fan_out(set(outcome.members), data, None, 0)
                if self._relay is not None:
                    self._relay.local_receipt(outcome)

    def _fan_out_stored(self, outcome: Stored) -> None:
        """Encode the new event once and queue it for every connection of every member."""
        added = outcome.kind == MessageKind.ADDED
        message = Message(
            conv=outcome.conv,
            seq=outcome.seq,
            sender=outcome.sender,
            to=outcome.to,
            client_id=outcome.client_id,
            body=outcome.body,
            ts=outcome.ts,
            kind=outcome.kind,
            user=outcome.user,
            title=None if added else outcome.title,
            members=None if added or outcome.names is None else list(outcome.names),
        )
        accounts = set(outcome.members)
        if added:
            # The added member's copy carries the member list and the title: where its
            # view of the group begins.
            accounts.discard(outcome.added_id)
            mine = msgspec.structs.replace(
                message, members=list(outcome.names or ()), title=outcome.title
            )
            self._fan_out({outcome.added_id}, encode(mine), outcome.conv, outcome.seq)
        self._fan_out(accounts, encode(message), outcome.conv, outcome.seq)

    def _fan_out(self, accounts: set[int], data: bytes, conv: str | None, seq: int) -> None:
        # The websocket frame too is built once: every connection gets the same bytes.
        frame = text_frame(data)
        sessions = self._sessions
        for account in accounts:
            for session in sessions.get(account, ()):
                session.push(data, conv, seq, frame)


def _cap_page(messages: list[HistoryMessage], *, keep_oldest: bool) -> list[HistoryMessage]:
    """Trim a page to MAX_PAGE_BYTES so it fits a client's frame limit.

    A gap fill (``after`` given) keeps the oldest messages so it stays contiguous
    with the client's watermark; paging back keeps the newest, next to what the
    client already shows. Either way the client asks again for the rest.
    """
    total = 0
    ordered = messages if keep_oldest else list(reversed(messages))
    kept: list[HistoryMessage] = []
    for m in ordered:
        total += len(_page_encoder.encode(m)) + 1
        if kept and total > MAX_PAGE_BYTES:
            break
        kept.append(m)
    return kept if keep_oldest else list(reversed(kept))


def _remote_host(ws: ServerConnection) -> str:
    try:
        return str(ws.remote_address[0])
    except (TypeError, IndexError):
        return "?"


def load_tls(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
