"""A psycopg connection that speaks the subset of ``sqlite3.Connection`` the server uses.

The writer's decisions (:mod:`tui_chat.server.writer`, :mod:`tui_chat.server.groups`) and the
reads (:mod:`tui_chat.server.db`, :mod:`tui_chat.server.visibility`) are written once, against
``conn.execute(sql, params)`` with SQLite's dialect. :class:`PgConn` runs the same statements on
PostgreSQL: each statement is translated once (placeholders, the ``user`` column, which is a
keyword there, and the few SQLite-only spellings below) and cached. So both stores take the
same decisions by running the same code, and there is no second copy of a rule to drift.

Errors come out as ``sqlite3``'s DB-API exception classes (subclasses that carry the
PostgreSQL ``sqlstate``), so the code that handles a failed commit or a taken name handles
both stores. The connection is in autocommit mode: ``BEGIN``/``COMMIT`` are explicit, as on
SQLite (``isolation_level=None``).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Final

import psycopg
import psycopg.errors
from psycopg import pq

# The column called ``user`` (messages, members, reads) is a reserved word in PostgreSQL.
_USER: Final = re.compile(r"\buser\b")
_PLACEHOLDER: Final = re.compile(r"\?|(?<!:):([A-Za-z_]\w*)")
# SQLite spellings with another name in PostgreSQL: scalar max/min of two values, an
# empty blob literal, a lock-taking BEGIN (PostgreSQL takes row locks instead).
_REWRITES: Final = (
    ("BEGIN IMMEDIATE", "BEGIN"),
    ("MAX(joined_seq, ", "GREATEST(joined_seq, "),
    ("MIN(COALESCE(left_seq, ", "LEAST(COALESCE(left_seq, "),
    ("max(read_seq, excluded.read_seq)", "GREATEST(reads.read_seq, excluded.read_seq)"),
    ("X''", "decode('', 'hex')"),
    ("CAST(value AS INTEGER) + 1", "CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)"),
)
# SQLSTATEs after which the same batch may simply be tried again in a new transaction.
RETRY_STATES: Final = frozenset({"40001", "40P01", "23505"})


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite's dialect as the server writes it → PostgreSQL with psycopg placeholders."""
    for old, new in _REWRITES:
        sql = sql.replace(old, new)
    sql = _USER.sub('"user"', sql)
    sql = sql.replace("%", "%%")
    return _PLACEHOLDER.sub(lambda m: "%s" if m.group(0) == "?" else f"%({m.group(1)})s", sql)


class PgIntegrityError(sqlite3.IntegrityError):
    sqlstate: str | None = None


class PgOperationalError(sqlite3.OperationalError):
    """The connection is gone or the server refuses work (it is away, shutting down)."""

    sqlstate: str | None = None


class PgDatabaseError(sqlite3.DatabaseError):
    sqlstate: str | None = None


def _wrap(exc: psycopg.Error) -> sqlite3.DatabaseError:
    cls: type[PgIntegrityError | PgOperationalError | PgDatabaseError]
    if isinstance(exc, psycopg.IntegrityError):
        cls = PgIntegrityError
    elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        cls = PgOperationalError
    else:
        cls = PgDatabaseError
    wrapped = cls(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    wrapped.sqlstate = exc.sqlstate
    return wrapped


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def retryable(exc: BaseException) -> bool:
    """A conflict with another node's transaction (deadlock, serialization, a unique key
    another node committed first): the batch can be decided again from scratch."""
    return sqlstate(exc) in RETRY_STATES


class _Cursor:
    __slots__ = ("_cur",)

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def fetchone(self) -> Any:
        if self._cur.description is None:
            return None
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        if self._cur.description is None:
            return []
        return self._cur.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConn:
    """One PostgreSQL session; see the module docstring."""

    def __init__(
        self, url: str, *, application_name: str = "tui-chat-server", snapshots: bool = False
    ) -> None:
        self.url = url
        # Readers: every transaction one snapshot (SQLite's read transactions are; a history
        # request checks membership and reads the page in one).
        options = "-c synchronous_commit=on"
        if snapshots:
            options += " -c default_transaction_isolation=repeatable\\ read"
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=10,
                application_name=application_name,
                # Acks wait for the commit to be durable, whatever the cluster's default.
                options=options,
            )
        except psycopg.Error as exc:
            raise _wrap(exc) from exc

    @property
    def raw(self) -> psycopg.Connection[Any]:
        return self._conn

    @property
    def broken(self) -> bool:
        return self._conn.closed or self._conn.broken

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> _Cursor:
        try:
            return _Cursor(self._conn.execute(translate(sql), params or None))
        except psycopg.Error as exc:
            raise _wrap(exc) from exc

    def execute_pg(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> _Cursor:
        """A statement already in PostgreSQL's dialect (psycopg placeholders)."""
        try:
            return _Cursor(self._conn.execute(sql, params or None))
        except psycopg.Error as exc:
            raise _wrap(exc) from exc

    def rollback_quietly(self) -> None:
        if not self.broken and self.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except psycopg.Error:
                self._conn.close()

    def close(self) -> None:
        self._conn.close()
