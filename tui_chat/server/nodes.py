"""``serve --store postgresql://… --bus redis://…``: open one node of a multi-node service.

Only this module (and only when ``--store`` is given) imports the PostgreSQL store and the
bus, so the base install (SQLite) needs neither psycopg nor redis-py. Every way the options
can be wrong ends in :class:`StartError`, one line that names the option and the problem.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tui_chat.server.groups import GroupLimits
from tui_chat.server.session import Session
from tui_chat.server.writer import BatchCallback, Stored

if TYPE_CHECKING:
    from tui_chat.server.pg.bus import Relay
    from tui_chat.server.pg.conn import PgConn
    from tui_chat.server.pg.readers import PgReaders
    from tui_chat.server.pg.writer import PgWriter


class StartError(Exception):
    """The node cannot start with these options."""


def check_store_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StartError(
            f"--store {redact(url)}: expected a postgresql:// URL"
            " (postgresql://user@host:port/database)"
        )
    if not parts.path.strip("/") and not parts.query:
        raise StartError(f"--store {redact(url)}: the URL names no database")


def check_bus_url(url: str) -> None:
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise StartError(f"--bus {url}: expected a redis:// URL (redis://host:port/0)")


def redact(url: str) -> str:
    """The URL without its password, for messages and the listening line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, host = parts.netloc.rsplit("@", 1)
    return parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}").geturl()


def _import_store() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise StartError("--store needs psycopg: pip install 'tui-chat[server-pg]'") from None


def open_store_conn(url: str, application_name: str = "tui-chat-server admin") -> PgConn:
    """The store for an admin command: schema created or migrated, errors as StartError."""
    check_store_url(url)
    _import_store()
    from tui_chat.server.pg import schema

    try:
        conn, _epoch = schema.open_store(url, application_name=application_name)
    except sqlite3.Error as exc:
        raise StartError(f"--store {redact(url)}: cannot use the store: {exc}") from None
    return conn


async def open_node(
    url: str,
    bus: str | None,
    loop: asyncio.AbstractEventLoop,
    on_batch: BatchCallback,
    sessions: dict[int, set[Session]],
    fan_out_stored: Callable[[Stored], None],
    fan_out: Callable[[set[int], bytes, str | None, int], None],
    *,
    linger_s: float,
    max_batch: int,
    group_limits: GroupLimits,
) -> tuple[str, PgWriter, PgReaders, Relay | None]:
    """Open the store (schema created or migrated) and the bus; return the epoch and parts."""
    check_store_url(url)
    if bus is not None:
        check_bus_url(bus)
    conn = await asyncio.to_thread(open_store_conn, url, "tui-chat-server")
    from tui_chat.server.pg.bus import BusError, Relay
    from tui_chat.server.pg.readers import PgReaders
    from tui_chat.server.pg.writer import PgWriter

    try:
        epoch = str(conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0])
    finally:
        conn.close()
    writer = PgWriter(
        url, loop, on_batch, linger_s=linger_s, max_batch=max_batch, group_limits=group_limits
    )
    readers = PgReaders(url)
    relay: Relay | None = None
    if bus is not None:
        relay = Relay(bus, epoch, readers, sessions, fan_out_stored, fan_out)
        try:
            await relay.start()
        except BusError as exc:
            readers.close()
            raise StartError(str(exc)) from None
    return epoch, writer, readers, relay


__all__ = [
    "StartError",
    "check_bus_url",
    "check_store_url",
    "open_node",
    "open_store_conn",
    "redact",
]
