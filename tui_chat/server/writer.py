"""The single writer: assigns seqs and stores messages with group commit.

All message writes go through one thread so that seq assignment and the
``(sender, client_id)`` uniqueness are decided inside the one transaction that
stores the message, with no races between connections. Cancels (tombstones) go
through the same thread and the same transactions, so between a ``send`` and a
``cancel`` of one client_id the first to reach the writer wins, and each answer
goes out only after the commit that decided it. The thread takes
whatever requests queued up while the previous commit was syncing (plus a
short linger) and commits them together: durability costs one fsync per batch,
not one per message.

Results are handed back to the event loop in one callback per batch, in commit
order, so fan-out to connections sees each conversation's seqs in order.

Group commands (create, add, remove, leave, rename) and sends to a group are requests of
the same thread and the same transactions: each is an event in the group's seq stream,
registered in ``sends`` like a send, and the membership rules (:mod:`groups`) are decided
against the writer's own state, which is what it committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from tui_chat.protocol import ErrorCode, MessageKind
from tui_chat.server import db
from tui_chat.server import groups as g

log = logging.getLogger(__name__)


class SendRequest(msgspec.Struct):
    sender: str
    sender_id: int
    # The hash of the token the session logged in with: a send on a session whose token
    # was revoked (or whose account was removed) is never stored.
    token_hash: bytes
    to: str
    client_id: str
    body: str
    # Opaque to the writer: the connection to ack on the event loop side.
    origin: object
    # A send to a group names the group here (and ``to`` is "").
    conv: str | None = None


class GroupOp:
    CREATE: Final = "create"
    ADD: Final = "add"
    REMOVE: Final = "remove"
    LEAVE: Final = "leave"
    RENAME: Final = "rename"


class GroupRequest(msgspec.Struct):
    """A group command: ``op`` is a :class:`GroupOp`; the other fields as its frame has."""

    op: str
    sender: str
    sender_id: int
    token_hash: bytes
    client_id: str
    origin: object
    conv: str = ""
    user: str = ""
    title: str = ""
    members: list[str] = []


class CancelRequest(msgspec.Struct):
    sender_id: int
    token_hash: bytes
    client_id: str
    origin: object


class ReadRequest(msgspec.Struct):
    user: str
    user_id: int
    conv: str
    seq: int
    origin: object


class Stored(msgspec.Struct, frozen=True):
    """A message or group event that is committed (new or already there)."""

    conv: str
    seq: int
    sender: str
    to: str
    client_id: str
    body: str
    ts: int
    duplicate: bool
    # The account ids to fan out to: the two members of a direct conversation (equal for
    # a conversation with oneself); the members of a group after the event, plus the one
    # removed or leaving for ``removed``/``left``. Empty for a duplicate (never fanned out).
    members: tuple[int, ...] = (0, 0)
    kind: str = MessageKind.TEXT
    user: str | None = None
    title: str | None = None
    # The member list after the event: in every copy of ``created``; in the copy for
    # ``added_id`` only, for ``added``.
    names: tuple[str, ...] | None = None
    added_id: int = 0


def _event(
    conv: str,
    seq: int,
    ts: int,
    req: SendRequest | GroupRequest,
    fan_out: tuple[int, ...],
    kind: str,
    *,
    body: str = "",
    user: str | None = None,
    title: str | None = None,
    names: tuple[str, ...] | None = None,
    added_id: int = 0,
) -> Stored:
    """The outcome of a new group event just stored (sender and client_id from ``req``)."""
    return Stored(
        conv, seq, req.sender, "", req.client_id, body, ts, False, fan_out, kind,
        user=user, title=title, names=names, added_id=added_id,
    )  # fmt: skip


class Tombstoned(msgspec.Struct, frozen=True):
    """The client_id's tombstone is committed (now or earlier): it will never be stored."""

    client_id: str


class AccountClosed(msgspec.Struct, frozen=True):
    """The request's session belongs to a removed account or a revoked token."""

    reason: str


class Refused(msgspec.Struct, frozen=True):
    code: str
    reason: str
    retryable: bool


class ReadStored(msgspec.Struct, frozen=True):
    conv: str
    user: str
    read_seq: int
    # Who gets the receipt: both members of a direct conversation, current members of a group.
    members: tuple[int, ...]


Outcome = Stored | Refused | ReadStored | Tombstoned | AccountClosed | None
Request = SendRequest | CancelRequest | ReadRequest | GroupRequest
# Requests answered with ``reject`` when refused (a cancel gets an ``error``).
COMMANDS: Final = (SendRequest, GroupRequest)
BatchCallback = Callable[[list[tuple[Request, Outcome]]], None]

_STOP: Final = object()
ACCOUNT_REMOVED: Final = "account removed"
TOKEN_REVOKED: Final = "token revoked"


class _Conv:
    __slots__ = ("id", "last")

    def __init__(self, conv_id: str, last: int) -> None:
        self.id = conv_id
        self.last = last


class Writer:
    def __init__(
        self,
        path: Path,
        loop: asyncio.AbstractEventLoop,
        on_batch: BatchCallback,
        *,
        synchronous: str = "FULL",
        linger_s: float = 0.002,
        max_batch: int = 1000,
        group_limits: g.GroupLimits | None = None,
    ) -> None:
        self._path = path
        self._loop = loop
        self._on_batch = on_batch
        self._synchronous = synchronous
        self._linger = linger_s
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tui-chat-writer", daemon=True)
        # Only this thread touches these. Conversations are keyed by the members' account
        # ids, never by names: a new account with an old name is a new member.
        self._convs: dict[tuple[int, int], _Conv] = {}
        self._conv_members: dict[str, tuple[int, int]] = {}
        self._groups = g.Groups()
        self._group_limits = group_limits or g.GroupLimits()
        # Account id -> current token hash (b"" once removed), and active name -> id, as of
        # _accounts_version; dropped whenever an admin command changes accounts.
        self._tokens: dict[int, bytes] = {}
        self._names: dict[str, int | None] = {}
        self._accounts_version = -1
        self.pending = 0
        self.batches = 0
        self.committed = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: Request) -> None:
        self.pending += 1
        self._queue.put(request)

    async def stop(self) -> None:
        """Commit everything already submitted, then end the thread."""
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    # ------------------------------------------------------------ thread side

    def _open(self) -> sqlite3.Connection:
        """The writer's connection, with the writer's state loaded from what it holds."""
        conn = db.connect(self._path, synchronous=self._synchronous)
        self._load_conversations(conn)
        return conn

    def _run(self) -> None:
        conn = self._open()
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[Request] = [first]  # type: ignore[list-item]
            deadline = time.monotonic() + self._linger
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            results = self._commit(conn, batch)
            self._loop.call_soon_threadsafe(self._deliver, results)
        conn.close()

    def _deliver(self, results: list[tuple[Request, Outcome]]) -> None:
        self.pending -= len(results)
        self._on_batch(results)

    def _load_conversations(self, conn: sqlite3.Connection) -> None:
        for conv, a, b, last in conn.execute("SELECT id, a_id, b_id, last_seq FROM conversations"):
            self._convs[(a, b)] = _Conv(conv, last)
            self._conv_members[conv] = (a, b)
        g.load(conn, self._groups)

    def _refresh_accounts(self, conn: sqlite3.Connection) -> None:
        # Read inside the batch's write transaction: an admin's change is either fully
        # visible here or commits after this batch (it needs the same write lock).
        version = db.accounts_version(conn)
        if version != self._accounts_version:
            self._tokens.clear()
            self._names.clear()
            self._accounts_version = version

    def _session_closed(
        self, conn: sqlite3.Connection, account: int, token_hash: bytes
    ) -> AccountClosed | None:
        current = self._tokens.get(account)
        if current is None:
            row = conn.execute(
                "SELECT token_hash, removed_at FROM users WHERE id=?", (account,)
            ).fetchone()
            current = b"" if row is None or row[1] is not None else bytes(row[0])
            self._tokens[account] = current
        if not current:
            return AccountClosed(ACCOUNT_REMOVED)
        if current != token_hash:
            return AccountClosed(TOKEN_REVOKED)
        return None

    def _recipient(self, conn: sqlite3.Connection, name: str) -> int | None:
        if name not in self._names:
            self._names[name] = db.account_id(conn, name)
        return self._names[name]

    def _commit(
        self, conn: sqlite3.Connection, batch: list[Request]
    ) -> list[tuple[Request, Outcome]]:
        try:
            results = self._transaction(conn, batch)
        except sqlite3.Error as exc:
            # Nothing in this batch is durable: no ack may go out for it.
            log.error("commit failed, batch of %d refused: %s", len(batch), exc)
            self._forget(conn)
            return self._refused(batch)
        self._count(results)
        return results

    def _count(self, results: list[tuple[Request, Outcome]]) -> None:
        self.batches += 1
        self.committed += sum(1 for _, o in results if isinstance(o, Stored) and not o.duplicate)

    @staticmethod
    def _refused(batch: list[Request]) -> list[tuple[Request, Outcome]]:
        refused = Refused(ErrorCode.UNAVAILABLE, "the server could not store the message", True)
        return [
            (req, refused if isinstance(req, (*COMMANDS, CancelRequest)) else None) for req in batch
        ]

    def _forget(self, conn: sqlite3.Connection) -> None:
        """After a rollback: the state is what is committed again."""
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        self._convs.clear()
        self._conv_members.clear()
        self._accounts_version = -1
        self._load_conversations(conn)

    def _prepare(self, conn: sqlite3.Connection, batch: list[Request]) -> None:
        """Inside the batch's transaction, before any decision: nothing to do here, since
        this writer's state is the committed state (a store shared by several writers
        loads, under row locks, what the batch touches)."""

    def _transaction(
        self, conn: sqlite3.Connection, batch: list[Request]
    ) -> list[tuple[Request, Outcome]]:
        """Decide and store the batch in one transaction; raise if it is not committed."""
        results: list[tuple[Request, Outcome]] = []
        touched: dict[str, int] = {}
        touched_groups: dict[str, int] = {}
        conn.execute("BEGIN IMMEDIATE")
        self._refresh_accounts(conn)
        self._prepare(conn, batch)
        # What this batch decided per (sender id, client_id): stored, or None = tombstone.
        seen: dict[tuple[int, str], Stored | None] = {}
        for req in batch:
            if isinstance(req, SendRequest) and req.conv is None:
                results.append((req, self._store_send(conn, req, seen, touched)))
            elif isinstance(req, SendRequest | GroupRequest):
                outcome = self._store_group(conn, req, seen, touched_groups)
                results.append((req, outcome))
            elif isinstance(req, CancelRequest):
                results.append((req, self._store_cancel(conn, req, seen)))
            else:
                results.append((req, self._store_read(conn, req)))
        for conv, last in touched.items():
            conn.execute("UPDATE conversations SET last_seq=? WHERE id=?", (last, conv))
        for conv, last in touched_groups.items():
            conn.execute("UPDATE groups SET last_seq=? WHERE id=?", (last, conv))
        conn.execute("COMMIT")
        return results

    def _registered(
        self,
        conn: sqlite3.Connection,
        key: tuple[int, str],
        seen: dict[tuple[int, str], Stored | None],
    ) -> Stored | Tombstoned | None:
        """What is already decided for this client_id: stored, tombstoned, or nothing."""
        if key in seen:
            earlier = seen[key]
            if earlier is None:
                return Tombstoned(key[1])
            return msgspec.structs.replace(earlier, duplicate=True)
        row = conn.execute(
            "SELECT conv, seq FROM sends WHERE sender_id=? AND client_id=?", key
        ).fetchone()
        if row is None:
            return None
        if row[0] is None:
            return Tombstoned(key[1])
        conv, seq = str(row[0]), int(row[1])
        msg = conn.execute(
            "SELECT sender, recipient, body, ts FROM messages WHERE conv=? AND seq=?", (conv, seq)
        ).fetchone()
        # A duplicate is only acked, never fanned out: no members needed.
        return Stored(conv, seq, msg[0], msg[1], key[1], msg[2], msg[3], True, ())

    def _store_cancel(
        self,
        conn: sqlite3.Connection,
        req: CancelRequest,
        seen: dict[tuple[int, str], Stored | None],
    ) -> Outcome:
        closed = self._session_closed(conn, req.sender_id, req.token_hash)
        if closed is not None:
            return closed
        key = (req.sender_id, req.client_id)
        # Already stored: the answer is its ack (duplicate), since it cannot be taken back.
        # Already cancelled: the same answer again (a repeated cancel is idempotent).
        known = self._registered(conn, key, seen)
        if known is not None:
            return known
        conn.execute(
            "INSERT INTO sends(sender_id, client_id, conv, seq, ts) VALUES (?, ?, NULL, NULL, ?)",
            (req.sender_id, req.client_id, db.now_ms()),
        )
        seen[key] = None
        return Tombstoned(req.client_id)

    def _store_send(
        self,
        conn: sqlite3.Connection,
        req: SendRequest,
        seen: dict[tuple[int, str], Stored | None],
        touched: dict[str, int],
    ) -> Outcome:
        decided = self._decided(
            conn, req, seen, "this message was cancelled; it will never be sent"
        )
        if decided is not None:
            return decided
        key = (req.sender_id, req.client_id)
        to_id = self._recipient(conn, req.to)
        if to_id is None:
            return Refused(ErrorCode.UNKNOWN_PEER, f"there is no user {req.to!r}", False)
        # Ordered by name (then id) like direct_conv_members, so user_a/user_b read as before.
        pair = sorted([(req.sender, req.sender_id), (req.to, to_id)])
        members = (pair[0][1], pair[1][1])
        entry = self._convs.get(members)
        if entry is None:
            conv = "c" + secrets.token_hex(6)
            conn.execute(
                "INSERT INTO conversations(id, user_a, user_b, last_seq, a_id, b_id) "
                "VALUES (?, ?, ?, 0, ?, ?)",
                (conv, pair[0][0], pair[1][0], members[0], members[1]),
            )
            entry = _Conv(conv, 0)
            self._convs[members] = entry
            self._conv_members[conv] = members
        conv_id = entry.id
        seq = entry.last + 1
        ts = db.now_ms()
        conn.execute(
            "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conv_id, seq, req.sender, req.to, req.client_id, req.body, ts),
        )
        conn.execute(
            "INSERT INTO sends(sender_id, client_id, conv, seq, ts) VALUES (?, ?, ?, ?, ?)",
            (req.sender_id, req.client_id, conv_id, seq, ts),
        )
        entry.last = seq
        touched[conv_id] = seq
        stored = Stored(
            conv_id, seq, req.sender, req.to, req.client_id, req.body, ts, False, members
        )
        seen[key] = stored
        return stored

    def _store_read(self, conn: sqlite3.Connection, req: ReadRequest) -> Outcome:
        group = self._groups.get(req.conv)
        if group is not None:
            # Receipts of a group are for its current members only.
            if g.check_member(group, req.user_id) is not None:
                return Refused(ErrorCode.NOT_MEMBER, "not a member of this conversation", False)
            last = group.last
            members: tuple[int, ...] = tuple(group.members)
        else:
            pair = self._conv_members.get(req.conv)
            if pair is None or req.user_id not in pair:
                return Refused(ErrorCode.NOT_MEMBER, "not a member of this conversation", False)
            last = self._convs[pair].last
            members = pair
        seq = min(req.seq, last)
        conn.execute(
            "INSERT INTO reads(conv, user, read_seq) VALUES (?, ?, ?) "
            "ON CONFLICT(conv, user) DO UPDATE SET read_seq=max(read_seq, excluded.read_seq)",
            (req.conv, req.user, seq),
        )
        row = conn.execute(
            "SELECT read_seq FROM reads WHERE conv=? AND user=?", (req.conv, req.user)
        ).fetchone()
        return ReadStored(req.conv, req.user, int(row[0]), members)

    # ------------------------------------------------------------ groups

    def _decided(
        self,
        conn: sqlite3.Connection,
        req: SendRequest | GroupRequest,
        seen: dict[tuple[int, str], Stored | None],
        cancelled: str,
    ) -> Outcome:
        """What is already settled for a send or command before any rule: a closed
        session, a tombstoned client_id, or the original ack of a duplicate (None: new)."""
        closed = self._session_closed(conn, req.sender_id, req.token_hash)
        if closed is not None:
            return closed
        known = self._registered(conn, (req.sender_id, req.client_id), seen)
        if isinstance(known, Tombstoned):
            return Refused(ErrorCode.CANCELLED, cancelled, False)
        return known

    def _store_group(
        self,
        conn: sqlite3.Connection,
        req: SendRequest | GroupRequest,
        seen: dict[tuple[int, str], Stored | None],
        touched: dict[str, int],
    ) -> Outcome:
        """A send to a group or a group command: registry first, then the rules, then the event."""
        decided = self._decided(
            conn, req, seen, "this client_id was cancelled; it will never be stored"
        )
        if decided is not None:
            return decided
        key = (req.sender_id, req.client_id)
        if isinstance(req, SendRequest):
            outcome = self._group_send(conn, req, touched)
        elif req.op == GroupOp.CREATE:
            outcome = self._create(conn, req, touched)
        elif req.op == GroupOp.ADD:
            outcome = self._add(conn, req, touched)
        elif req.op == GroupOp.REMOVE:
            outcome = self._remove(conn, req, touched)
        elif req.op == GroupOp.LEAVE:
            outcome = self._leave(conn, req, touched)
        else:
            outcome = self._rename(conn, req, touched)
        if isinstance(outcome, g.Refusal):
            return Refused(outcome.code, outcome.reason, False)
        seen[key] = outcome
        return outcome

    def _append(
        self,
        conn: sqlite3.Connection,
        group: g.Group,
        req: SendRequest | GroupRequest,
        touched: dict[str, int],
        *,
        kind: str,
        body: str = "",
        user: str | None = None,
        title: str | None = None,
        names: list[str] | None = None,
    ) -> tuple[int, int]:
        """Store one event of ``group`` and register its client_id; return (seq, ts)."""
        seq = group.last + 1
        ts = db.now_ms()
        members_json = None if names is None else json.dumps(names)
        conn.execute(
            "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts, kind, user,"
            " title, members) VALUES (?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?)",
            (group.id, seq, req.sender, req.client_id, body, ts, kind, user, title, members_json),
        )
        conn.execute(
            "INSERT INTO sends(sender_id, client_id, conv, seq, ts) VALUES (?, ?, ?, ?, ?)",
            (req.sender_id, req.client_id, group.id, seq, ts),
        )
        group.last = seq
        touched[group.id] = seq
        return seq, ts

    def _join(self, conn: sqlite3.Connection, group: g.Group, account: int, name: str) -> None:
        conn.execute(
            "INSERT INTO members(conv, user_id, user, joined_seq, left_seq) "
            "VALUES (?, ?, ?, ?, NULL)",
            (group.id, account, name, group.last),
        )
        self._groups.join(group, account, name)

    def _part(self, conn: sqlite3.Connection, group: g.Group, account: int) -> None:
        conn.execute(
            "UPDATE members SET left_seq=? WHERE conv=? AND user_id=? AND left_seq IS NULL",
            (group.last, group.id, account),
        )
        self._groups.part(group, account)

    def _new_group_id(self) -> str:
        while True:
            conv = "g" + secrets.token_hex(6)
            if self._groups.get(conv) is None:
                return conv

    def _create(
        self, conn: sqlite3.Connection, req: GroupRequest, touched: dict[str, int]
    ) -> Stored | g.Refusal:
        limits = self._group_limits
        refusal = g.check_title(req.title, limits)
        if refusal is not None:
            return refusal
        names = g.initial_members(req.sender, req.members)
        refusal = g.check_size(len(names), limits)
        if refusal is not None:
            return refusal
        accounts = [req.sender_id]
        for name in names[1:]:
            account = self._recipient(conn, name)
            if account is None:
                return g.Refusal(ErrorCode.UNKNOWN_PEER, f"there is no user {name!r}")
            accounts.append(account)
        for account, name in zip(accounts, names, strict=True):
            refusal = g.check_joining(self._groups, account, name, limits)
            if refusal is not None:
                return refusal
        conv = self._new_group_id()
        conn.execute(
            "INSERT INTO groups(id, title, creator_id, last_seq, created_at) "
            "VALUES (?, ?, ?, 0, ?)",
            (conv, req.title, req.sender_id, db.now_ms()),
        )
        group = g.Group(conv, req.title, req.sender_id, 0)
        self._groups.by_id[conv] = group
        seq, ts = self._append(
            conn, group, req, touched, kind=MessageKind.CREATED, title=req.title, names=names
        )
        for account, name in zip(accounts, names, strict=True):
            self._join(conn, group, account, name)
        return _event(
            conv,
            seq,
            ts,
            req,
            tuple(accounts),
            MessageKind.CREATED,
            title=req.title,
            names=tuple(names),
        )

    def _add(
        self, conn: sqlite3.Connection, req: GroupRequest, touched: dict[str, int]
    ) -> Stored | g.Refusal:
        limits = self._group_limits
        group = self._groups.get(req.conv)
        refusal = g.check_manage(group, req.sender_id)
        if refusal is not None:
            return refusal
        assert group is not None
        account = self._recipient(conn, req.user)
        if account is None:
            return g.Refusal(ErrorCode.UNKNOWN_PEER, f"there is no user {req.user!r}")
        if account in group.members:
            return g.Refusal(ErrorCode.ALREADY_MEMBER, f"{req.user} is already a member")
        refusal = g.check_size(len(group.members) + 1, limits) or g.check_joining(
            self._groups, account, req.user, limits
        )
        if refusal is not None:
            return refusal
        seq, ts = self._append(conn, group, req, touched, kind=MessageKind.ADDED, user=req.user)
        self._join(conn, group, account, req.user)
        return _event(
            group.id,
            seq,
            ts,
            req,
            tuple(group.members),
            MessageKind.ADDED,
            user=req.user,
            # Title and member list go only into the added member's copy (see
            # ChatServer._fan_out_stored): where that member's view of the group begins.
            title=group.title,
            names=tuple(group.members.values()),
            added_id=account,
        )

    def _remove(
        self, conn: sqlite3.Connection, req: GroupRequest, touched: dict[str, int]
    ) -> Stored | g.Refusal:
        group = self._groups.get(req.conv)
        refusal = g.check_member(group, req.sender_id)
        if refusal is not None:
            return refusal
        assert group is not None
        if req.user == req.sender:
            return g.REMOVE_SELF
        refusal = g.check_manage(group, req.sender_id)
        if refusal is not None:
            return refusal
        account = g.member_named(group, req.user, self._recipient(conn, req.user))
        if account is None:
            return g.Refusal(ErrorCode.NO_SUCH_MEMBER, f"{req.user} is not a member")
        # The removed member receives its own removal: the last event it sees.
        fan_out = tuple(group.members)
        seq, ts = self._append(conn, group, req, touched, kind=MessageKind.REMOVED, user=req.user)
        self._part(conn, group, account)
        return _event(group.id, seq, ts, req, fan_out, MessageKind.REMOVED, user=req.user)

    def _leave(
        self, conn: sqlite3.Connection, req: GroupRequest, touched: dict[str, int]
    ) -> Stored | g.Refusal:
        group = self._groups.get(req.conv)
        refusal = g.check_member(group, req.sender_id)
        if refusal is not None:
            return refusal
        assert group is not None
        fan_out = tuple(group.members)
        seq, ts = self._append(conn, group, req, touched, kind=MessageKind.LEFT, user=req.sender)
        self._part(conn, group, req.sender_id)
        return _event(group.id, seq, ts, req, fan_out, MessageKind.LEFT, user=req.sender)

    def _rename(
        self, conn: sqlite3.Connection, req: GroupRequest, touched: dict[str, int]
    ) -> Stored | g.Refusal:
        group = self._groups.get(req.conv)
        refusal = g.check_member(group, req.sender_id) or g.check_title(
            req.title, self._group_limits
        )
        if refusal is not None:
            return refusal
        assert group is not None
        seq, ts = self._append(conn, group, req, touched, kind=MessageKind.RENAMED, title=req.title)
        conn.execute("UPDATE groups SET title=? WHERE id=?", (req.title, group.id))
        group.title = req.title
        return _event(
            group.id, seq, ts, req, tuple(group.members), MessageKind.RENAMED, title=req.title
        )

    def _group_send(
        self, conn: sqlite3.Connection, req: SendRequest, touched: dict[str, int]
    ) -> Stored | g.Refusal:
        group = self._groups.get(req.conv or "")
        refusal = g.check_member(group, req.sender_id)
        if refusal is not None:
            return refusal
        assert group is not None
        seq, ts = self._append(conn, group, req, touched, kind=MessageKind.TEXT, body=req.body)
        return _event(group.id, seq, ts, req, tuple(group.members), MessageKind.TEXT, body=req.body)
