"""Reader connections to the PostgreSQL store, one per worker thread, reopened when lost."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar, cast

from tui_chat.server.pg.conn import PgConn

T = TypeVar("T")


class PgReaders:
    """Runs the server's read functions (written against sqlite3) on PostgreSQL sessions."""

    def __init__(self, url: str, workers: int = 2) -> None:
        self._url = url
        self._local = threading.local()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "tui-chat-pg-reader")
        self._all: list[PgConn] = []
        self._lock = threading.Lock()

    def _conn(self) -> PgConn:
        conn: PgConn | None = getattr(self._local, "conn", None)
        if conn is not None and conn.broken:
            conn.close()
            conn = None
        if conn is None:
            conn = PgConn(self._url, application_name="tui-chat-server reader", snapshots=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn()
        try:
            return fn(cast(sqlite3.Connection, conn))
        except sqlite3.Error:
            conn.rollback_quietly()
            raise

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn)

    async def run_pg(self, fn: Callable[[PgConn], T]) -> T:
        """A read written for PostgreSQL itself (the relay's)."""
        return await self.run(lambda c: fn(cast(PgConn, c)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                conn.close()
