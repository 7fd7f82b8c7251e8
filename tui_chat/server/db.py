"""The server's SQLite database: schema, accounts and read queries.

Writes of messages go through :mod:`tui_chat.server.writer` (one thread, group
commit); everything here is either account administration (run by the CLI) or
read-only queries run on reader connections, which WAL lets proceed while the
writer commits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Final

import msgspec

from tui_chat.protocol import USER_RE, HistoryMessage

SCHEMA_VERSION: Final = 1

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    name        TEXT PRIMARY KEY,
    token_hash  BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id        TEXT PRIMARY KEY,
    user_a    TEXT NOT NULL,
    user_b    TEXT NOT NULL,
    last_seq  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (user_a, user_b)
);
CREATE INDEX IF NOT EXISTS conversations_b ON conversations (user_b);
CREATE TABLE IF NOT EXISTS messages (
    conv       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    body       TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    PRIMARY KEY (conv, seq),
    UNIQUE (sender, client_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reads (
    conv      TEXT NOT NULL,
    user      TEXT NOT NULL,
    read_seq  INTEGER NOT NULL,
    PRIMARY KEY (conv, user)
) WITHOUT ROWID;
"""


class UserError(Exception):
    """A mistake in an administrative command, reported without a traceback."""


class UserInfo(msgspec.Struct, frozen=True):
    name: str
    created_at: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (and create if needed) the database in WAL mode.

    ``synchronous=FULL`` makes every commit durable against power loss, not
    just a process crash; group commit is what keeps that affordable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def init_schema(conn: sqlite3.Connection) -> str:
    """Create tables if missing and return the database's epoch id."""
    conn.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
    if row is None:
        epoch = secrets.token_hex(8)
        conn.execute("INSERT INTO meta(key, value) VALUES ('epoch', ?)", (epoch,))
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
    else:
        epoch = str(row[0])
    conn.execute("COMMIT")
    return epoch


def open_db(path: Path, *, synchronous: str = "FULL") -> tuple[sqlite3.Connection, str]:
    conn = connect(path, synchronous=synchronous)
    epoch = init_schema(conn)
    return conn, epoch


# ---------------------------------------------------------------- accounts


def hash_token(token: str) -> bytes:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing
    # to brute-force that a slow KDF would protect.
    return hashlib.sha256(token.encode()).digest()


_DUMMY_HASH: Final = hash_token("no-such-user")


def validate_user_name(name: str) -> None:
    if not USER_RE.match(name):
        raise UserError(
            f"invalid user name {name!r}: expected 1-32 characters of a-z, 0-9, '_', '.', '-',"
            " starting with a letter or digit"
        )


def add_user(conn: sqlite3.Connection, name: str) -> str:
    """Create a user and return its token; only the hash is stored."""
    validate_user_name(name)
    token = secrets.token_urlsafe(32)
    try:
        conn.execute(
            "INSERT INTO users(name, token_hash, created_at) VALUES (?, ?, ?)",
            (name, hash_token(token), now_ms()),
        )
    except sqlite3.IntegrityError:
        raise UserError(f"user {name!r} already exists") from None
    return token


def revoke_token(conn: sqlite3.Connection, name: str) -> str:
    """Replace a user's token; the old one stops working at the next login."""
    token = secrets.token_urlsafe(32)
    cur = conn.execute("UPDATE users SET token_hash=? WHERE name=?", (hash_token(token), name))
    if cur.rowcount == 0:
        raise UserError(f"no such user {name!r}")
    return token


def remove_user(conn: sqlite3.Connection, name: str) -> None:
    """Remove an account. Its messages stay: they belong to the peers' histories too."""
    cur = conn.execute("DELETE FROM users WHERE name=?", (name,))
    if cur.rowcount == 0:
        raise UserError(f"no such user {name!r}")


def list_users(conn: sqlite3.Connection) -> list[UserInfo]:
    rows = conn.execute("SELECT name, created_at FROM users ORDER BY name").fetchall()
    return [UserInfo(name=r[0], created_at=r[1]) for r in rows]


def check_token(conn: sqlite3.Connection, name: str, token: str) -> bool:
    row = conn.execute("SELECT token_hash FROM users WHERE name=?", (name,)).fetchone()
    # Compare against a dummy hash for unknown users so timing does not tell
    # which user names exist.
    stored = bytes(row[0]) if row is not None else _DUMMY_HASH
    ok = hmac.compare_digest(stored, hash_token(token))
    return ok and row is not None


def user_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone() is not None


# ---------------------------------------------------------------- reads


def conversations_of(conn: sqlite3.Connection, user: str) -> dict[str, int]:
    """Conversation id → last seq for every conversation ``user`` is a member of."""
    rows = conn.execute(
        "SELECT id, last_seq FROM conversations WHERE user_a=? UNION ALL "
        "SELECT id, last_seq FROM conversations WHERE user_b=? AND user_a<>?",
        (user, user, user),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def is_member(conn: sqlite3.Connection, conv: str, user: str) -> bool:
    row = conn.execute("SELECT user_a, user_b FROM conversations WHERE id=?", (conv,)).fetchone()
    return row is not None and user in (row[0], row[1])


def messages_after(
    conn: sqlite3.Connection, conv: str, after: int, limit: int
) -> list[HistoryMessage]:
    rows = conn.execute(
        "SELECT conv, seq, sender, recipient, client_id, body, ts FROM messages "
        "WHERE conv=? AND seq>? ORDER BY seq LIMIT ?",
        (conv, after, limit),
    ).fetchall()
    return [HistoryMessage(*r) for r in rows]


def messages_before(
    conn: sqlite3.Connection, conv: str, before: int | None, after: int, limit: int
) -> list[HistoryMessage]:
    """Up to ``limit`` newest messages with ``after < seq < before``, ascending."""
    upper = before if before is not None else 2**62
    rows = conn.execute(
        "SELECT conv, seq, sender, recipient, client_id, body, ts FROM messages "
        "WHERE conv=? AND seq<? AND seq>? ORDER BY seq DESC LIMIT ?",
        (conv, upper, after, limit),
    ).fetchall()
    rows.reverse()
    return [HistoryMessage(*r) for r in rows]


def read_positions(conn: sqlite3.Connection, convs: list[str]) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    for conv in convs:
        out.extend(
            conn.execute("SELECT conv, user, read_seq FROM reads WHERE conv=?", (conv,)).fetchall()
        )
    return out
