"""The writer of one node on the PostgreSQL store.

It is :class:`tui_chat.server.writer.Writer` (the same thread, group commit and decisions)
with three differences, because other nodes write the same store:

* its state is not the committed state kept in memory: at the start of each batch's
  transaction it loads, under row locks taken in one order (the accounts version row
  ``FOR SHARE``, then conversations by id, then groups by id, then one advisory lock per
  account joining a group, by id), exactly what the batch touches, and forgets it after;
* a batch of direct sends only is stored by one call of the batch function
  (:mod:`tui_chat.server.pg.batch`): one round trip;
* a conflict with another node (deadlock, serialization failure, a client_id another node
  committed first) runs the batch again from scratch, a few times, before it is refused as
  retryable. A lost connection is opened again at the next batch; until then every request
  is refused as retryable (``unavailable``), and nothing is acked that was not committed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Final, cast

from tui_chat.protocol import ErrorCode
from tui_chat.server import db
from tui_chat.server import groups as g
from tui_chat.server.pg import batch as fn
from tui_chat.server.pg.conn import PgConn, retryable
from tui_chat.server.writer import (
    BatchCallback,
    GroupOp,
    GroupRequest,
    Outcome,
    ReadRequest,
    Refused,
    Request,
    SendRequest,
    Stored,
    Writer,
    _Conv,
)

log = logging.getLogger(__name__)

ATTEMPTS: Final = 5
# Advisory lock keys of accounts joining a group: the per-user group count is decided by one
# node at a time (bigint key space of its own).
_JOIN_LOCK_BASE: Final = 0x6A6F_696E << 32


class _Groups(g.Groups):
    """The groups a batch loaded: counts are known only for the accounts that join."""

    def part(self, group: g.Group, account: int) -> None:
        del group.members[account]
        self.counts[account] = self.counts.get(account, 0) - 1


class _Closer:
    def __init__(self, writer: PgWriter) -> None:
        self._writer = writer

    def close(self) -> None:
        self._writer.close()


class PgWriter(Writer):
    def __init__(
        self,
        url: str,
        loop: asyncio.AbstractEventLoop,
        on_batch: BatchCallback,
        *,
        linger_s: float = 0.002,
        max_batch: int = 1000,
        group_limits: g.GroupLimits | None = None,
    ) -> None:
        super().__init__(
            Path(url),  # unused: the connection comes from _open
            loop,
            on_batch,
            linger_s=linger_s,
            max_batch=max_batch,
            group_limits=group_limits,
        )
        self._url = url
        self._groups = _Groups()
        self._pg: PgConn | None = None
        self.fast_batches = 0
        self.retries = 0

    # ------------------------------------------------------------ connection

    def _open(self) -> sqlite3.Connection:
        # The thread loop only passes this back to _commit and closes it at the end; the
        # connection itself is self._pg, opened again whenever it was lost.
        self._connect()
        return cast(sqlite3.Connection, _Closer(self))

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None

    def _connect(self) -> PgConn | None:
        if self._pg is not None and not self._pg.broken:
            return self._pg
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        try:
            self._pg = PgConn(self._url, application_name="tui-chat-server writer")
        except sqlite3.Error as exc:
            log.error("cannot connect to the store: %s", exc)
            return None
        return self._pg

    # ------------------------------------------------------------ batches

    def _commit(
        self, conn: sqlite3.Connection, batch: list[Request]
    ) -> list[tuple[Request, Outcome]]:
        del conn
        for attempt in range(ATTEMPTS):
            pg = self._connect()
            if pg is None:
                return self._refused(batch)
            try:
                results = self._fast(pg, batch)
                if results is None:
                    results = self._transaction(cast(sqlite3.Connection, pg), batch)
            except sqlite3.Error as exc:
                self._forget_pg(pg)
                if retryable(exc) and attempt + 1 < ATTEMPTS:
                    self.retries += 1
                    log.info("batch conflicted with another node (%s); deciding it again", exc)
                    time.sleep(0.001 * (attempt + 1))
                    continue
                log.error("commit failed, batch of %d refused: %s", len(batch), exc)
                return self._refused(batch)
            self._count(results)
            return results
        return self._refused(batch)  # pragma: no cover - the loop returns

    def _forget_pg(self, pg: PgConn) -> None:
        pg.rollback_quietly()
        self._convs.clear()
        self._conv_members.clear()
        self._groups.clear()
        self._accounts_version = -1

    def _forget(self, conn: sqlite3.Connection) -> None:
        if self._pg is not None:
            self._forget_pg(self._pg)

    def _refresh_accounts(self, conn: sqlite3.Connection) -> None:
        # FOR SHARE: an admin command bumps this row in its own transaction, so its change
        # is either fully visible to this batch or waits until this batch commits.
        pg = cast(PgConn, conn)
        row = pg.execute_pg(
            "SELECT value FROM meta WHERE key=%s FOR SHARE", (db.ACCOUNTS_VERSION_KEY,)
        ).fetchone()
        version = int(row[0]) if row is not None else 0
        if version != self._accounts_version:
            self._tokens.clear()
            self._names.clear()
            self._accounts_version = version

    def _prepare(self, conn: sqlite3.Connection, batch: list[Request]) -> None:
        """Load, under locks, the conversations, groups and group counts the batch touches."""
        pg = cast(PgConn, conn)
        self._convs.clear()
        self._conv_members.clear()
        self._groups.clear()
        a_ids: list[int] = []
        b_ids: list[int] = []
        conv_ids: set[str] = set()
        joiners: set[int] = set()
        for req in batch:
            if isinstance(req, SendRequest) and req.conv is None:
                pair = self._pair(conn, req)
                if pair is not None:
                    a_ids.append(pair[0])
                    b_ids.append(pair[1])
            elif isinstance(req, SendRequest):
                conv_ids.add(req.conv or "")
            elif isinstance(req, GroupRequest):
                if req.op == GroupOp.CREATE:
                    joiners.add(req.sender_id)
                    names = req.members
                else:
                    conv_ids.add(req.conv)
                    names = [req.user] if req.op == GroupOp.ADD else []
                for name in names:
                    account = self._recipient(conn, name)
                    if account is not None:
                        joiners.add(account)
            elif isinstance(req, ReadRequest):
                conv_ids.add(req.conv)
        ids = sorted(conv_ids)
        if a_ids or ids:
            for conv, a, b, last in pg.execute_pg(
                "SELECT id, a_id, b_id, last_seq FROM conversations"
                " WHERE (a_id, b_id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))"
                " OR id = ANY(%s) ORDER BY id FOR UPDATE",
                (a_ids, b_ids, ids),
            ):
                self._convs[(a, b)] = _Conv(conv, last)
                self._conv_members[conv] = (a, b)
        if ids:
            for conv, title, creator, last in pg.execute_pg(
                "SELECT id, title, creator_id, last_seq FROM groups WHERE id = ANY(%s)"
                " ORDER BY id FOR UPDATE",
                (ids,),
            ):
                self._groups.by_id[conv] = g.Group(conv, title, creator, last)
            for conv, account, name in pg.execute_pg(
                'SELECT conv, user_id, "user" FROM members WHERE conv = ANY(%s)'
                " AND left_seq IS NULL ORDER BY ord",
                (ids,),
            ):
                self._groups.by_id[conv].members[account] = name
        if joiners:
            accounts = sorted(joiners)
            for account in accounts:
                pg.execute_pg("SELECT pg_advisory_xact_lock(%s)", (_JOIN_LOCK_BASE + account,))
            counts = dict.fromkeys(accounts, 0)
            for account, count in pg.execute_pg(
                "SELECT user_id, count(*) FROM members WHERE user_id = ANY(%s)"
                " AND left_seq IS NULL GROUP BY user_id",
                (accounts,),
            ):
                counts[account] = int(count)
            self._groups.counts.update(counts)

    def _pair(self, conn: sqlite3.Connection, req: SendRequest) -> tuple[int, int] | None:
        to_id = self._recipient(conn, req.to)
        if to_id is None:
            return None
        # Ordered by name (then id), as Writer._store_send orders the members.
        pair = sorted([(req.sender, req.sender_id), (req.to, to_id)])
        return pair[0][1], pair[1][1]

    # ------------------------------------------------------------ one round trip

    def _fast(self, pg: PgConn, batch: list[Request]) -> list[tuple[Request, Outcome]] | None:
        """A batch of direct sends, all settled by the caches: one call of the batch function.

        None: the batch needs the general path (anything else in it, a session or peer to
        look up or refuse, or accounts changed since the caches were filled).
        """
        if self._accounts_version < 0:
            return None
        sends: list[tuple[SendRequest, tuple[int, int]]] = []
        cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
        for req in batch:
            if not isinstance(req, SendRequest) or req.conv is not None:
                return None
            token = self._tokens.get(req.sender_id)
            to_id = self._names.get(req.to)
            if token is None or token != req.token_hash or to_id is None:
                return None
            pair = sorted([(req.sender, req.sender_id), (req.to, to_id)])
            sends.append((req, (pair[0][1], pair[1][1])))
            for col, value in zip(
                cols,
                (req.sender_id, req.client_id, pair[0][1], pair[1][1], pair[0][0], pair[1][0],
                 req.sender, req.to, req.body),
                strict=True,
            ):  # fmt: skip
                col.append(value)
        rows = pg.execute_pg(fn.CALL, (str(self._accounts_version), *cols, db.now_ms())).fetchall()
        if rows and rows[0][0] == "stale":
            self._accounts_version = -1
            return None
        results: list[tuple[Request, Outcome]] = []
        for (req, members), (state, conv, seq, ts) in zip(sends, rows, strict=True):
            if state == "cancelled":
                outcome: Outcome = Refused(
                    ErrorCode.CANCELLED, "this message was cancelled; it will never be sent", False
                )
            else:
                duplicate = state == "duplicate"
                outcome = Stored(
                    conv, seq, req.sender, req.to, req.client_id, req.body, ts, duplicate,
                    () if duplicate else members,
                )  # fmt: skip
            results.append((req, outcome))
        self.fast_batches += 1
        return results
