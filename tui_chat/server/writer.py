"""The single writer: assigns seqs and stores messages with group commit.

All message writes go through one thread so that seq assignment and the
``(sender, client_id)`` uniqueness are decided inside the one transaction that
stores the message, with no races between connections. The thread takes
whatever requests queued up while the previous commit was syncing (plus a
short linger) and commits them together: durability costs one fsync per batch,
not one per message.

Results are handed back to the event loop in one callback per batch, in commit
order, so fan-out to connections sees each conversation's seqs in order.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from tui_chat.protocol import ErrorCode, direct_conv_members
from tui_chat.server import db

log = logging.getLogger(__name__)


class SendRequest(msgspec.Struct):
    sender: str
    to: str
    client_id: str
    body: str
    # Opaque to the writer: the connection to ack on the event loop side.
    origin: object


class ReadRequest(msgspec.Struct):
    user: str
    conv: str
    seq: int
    origin: object


class Stored(msgspec.Struct, frozen=True):
    """A message that is committed (new or already there)."""

    conv: str
    seq: int
    sender: str
    to: str
    client_id: str
    body: str
    ts: int
    duplicate: bool


class Refused(msgspec.Struct, frozen=True):
    code: str
    reason: str
    retryable: bool


class ReadStored(msgspec.Struct, frozen=True):
    conv: str
    user: str
    read_seq: int
    members: tuple[str, str]


Outcome = Stored | Refused | ReadStored | None
Request = SendRequest | ReadRequest
BatchCallback = Callable[[list[tuple[Request, Outcome]]], None]

_STOP: Final = object()


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
    ) -> None:
        self._path = path
        self._loop = loop
        self._on_batch = on_batch
        self._synchronous = synchronous
        self._linger = linger_s
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tui-chat-writer", daemon=True)
        # Only this thread writes these; the event loop reads _conv_members.
        self._convs: dict[tuple[str, str], _Conv] = {}
        self._conv_members: dict[str, tuple[str, str]] = {}
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

    def _run(self) -> None:
        conn = db.connect(self._path, synchronous=self._synchronous)
        self._load_conversations(conn)
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
        for conv, a, b, last in conn.execute(
            "SELECT id, user_a, user_b, last_seq FROM conversations"
        ):
            self._convs[(a, b)] = _Conv(conv, last)
            self._conv_members[conv] = (a, b)

    def _commit(
        self, conn: sqlite3.Connection, batch: list[Request]
    ) -> list[tuple[Request, Outcome]]:
        results: list[tuple[Request, Outcome]] = []
        touched: dict[str, int] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            seen: dict[tuple[str, str], Stored] = {}
            for req in batch:
                if isinstance(req, SendRequest):
                    results.append((req, self._store_send(conn, req, seen, touched)))
                else:
                    results.append((req, self._store_read(conn, req)))
            for conv, last in touched.items():
                conn.execute("UPDATE conversations SET last_seq=? WHERE id=?", (last, conv))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # Nothing in this batch is durable: no ack may go out for it.
            log.error("commit failed, batch of %d refused: %s", len(batch), exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._convs.clear()
            self._conv_members.clear()
            self._load_conversations(conn)
            refused = Refused(ErrorCode.UNAVAILABLE, "the server could not store the message", True)
            return [(req, refused if isinstance(req, SendRequest) else None) for req in batch]
        self.batches += 1
        self.committed += sum(1 for _, o in results if isinstance(o, Stored) and not o.duplicate)
        return results

    def _store_send(
        self,
        conn: sqlite3.Connection,
        req: SendRequest,
        seen: dict[tuple[str, str], Stored],
        touched: dict[str, int],
    ) -> Outcome:
        key = (req.sender, req.client_id)
        if key in seen:
            return msgspec.structs.replace(seen[key], duplicate=True)
        row = conn.execute(
            "SELECT conv, seq, recipient, body, ts FROM messages WHERE sender=? AND client_id=?",
            key,
        ).fetchone()
        if row is not None:
            return Stored(row[0], row[1], req.sender, row[2], req.client_id, row[3], row[4], True)
        if not db.user_exists(conn, req.to):
            return Refused(ErrorCode.UNKNOWN_PEER, f"there is no user {req.to!r}", False)
        members = direct_conv_members(req.sender, req.to)
        entry = self._convs.get(members)
        if entry is None:
            conv = "c" + secrets.token_hex(6)
            conn.execute(
                "INSERT INTO conversations(id, user_a, user_b, last_seq) VALUES (?, ?, ?, 0)",
                (conv, members[0], members[1]),
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
        entry.last = seq
        touched[conv_id] = seq
        stored = Stored(conv_id, seq, req.sender, req.to, req.client_id, req.body, ts, False)
        seen[key] = stored
        return stored

    def _store_read(self, conn: sqlite3.Connection, req: ReadRequest) -> Outcome:
        members = self._conv_members.get(req.conv)
        if members is None or req.user not in members:
            return Refused(ErrorCode.NOT_MEMBER, "not a member of this conversation", False)
        last = self._convs[members].last
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

    def members_of(self, conv: str) -> tuple[str, str] | None:
        # Read from the event loop: dict reads of immutable tuples are safe under the GIL.
        return self._conv_members.get(conv)
