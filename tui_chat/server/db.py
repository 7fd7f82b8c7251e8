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

SCHEMA_VERSION: Final = 3

# Accounts are rows with an id that is never reused (AUTOINCREMENT, and a removed account
# keeps its row): history belongs to the id, not the name, so a new account with an old
# name starts with an empty history while the peers keep the old conversations.
# ``sends`` is the registry of every client_id an account used: stored at (conv, seq), or
# cancelled (conv NULL, a tombstone). One lookup decides duplicate, cancelled or new; group
# commands (create, add, remove, leave, rename) are registered there like sends.
#
# Version 3 adds groups. A group's events are ``messages`` rows like any other (same seq
# stream, ``recipient`` ''), with ``kind`` and the ``user``/``title`` they concern;
# ``members`` holds the JSON member list of a ``created`` event. ``members`` (the table)
# holds one row per membership interval: from the event that made the account a member
# (``joined_seq``: the ``created`` or its ``added``) to the event that ended it
# (``left_seq``: its ``removed`` or ``left``, NULL while it lasts), ``ord`` being the join
# order. What a member may see is exactly the seqs inside its intervals, so every read of
# a group joins messages with this table in the same statement.
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    token_hash  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    removed_at  INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS users_active_name ON users (name) WHERE removed_at IS NULL;
CREATE TABLE IF NOT EXISTS conversations (
    id        TEXT PRIMARY KEY,
    user_a    TEXT NOT NULL,
    user_b    TEXT NOT NULL,
    last_seq  INTEGER NOT NULL DEFAULT 0,
    a_id      INTEGER NOT NULL REFERENCES users (id),
    b_id      INTEGER NOT NULL REFERENCES users (id),
    UNIQUE (a_id, b_id)
);
CREATE INDEX IF NOT EXISTS conversations_b ON conversations (b_id);
CREATE TABLE IF NOT EXISTS messages (
    conv       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    body       TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    kind       TEXT NOT NULL DEFAULT 'text',
    user       TEXT,
    title      TEXT,
    members    TEXT,
    PRIMARY KEY (conv, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sends (
    sender_id  INTEGER NOT NULL,
    client_id  TEXT NOT NULL,
    conv       TEXT,
    seq        INTEGER,
    ts         INTEGER NOT NULL,
    PRIMARY KEY (sender_id, client_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    creator_id  INTEGER NOT NULL REFERENCES users (id),
    last_seq    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    ord         INTEGER PRIMARY KEY,
    conv        TEXT NOT NULL REFERENCES groups (id),
    user_id     INTEGER NOT NULL REFERENCES users (id),
    user        TEXT NOT NULL,
    joined_seq  INTEGER NOT NULL,
    left_seq    INTEGER
);
CREATE INDEX IF NOT EXISTS members_user ON members (user_id, conv);
CREATE INDEX IF NOT EXISTS members_conv ON members (conv, user);
CREATE TABLE IF NOT EXISTS reads (
    conv      TEXT NOT NULL,
    user      TEXT NOT NULL,
    read_seq  INTEGER NOT NULL,
    PRIMARY KEY (conv, user)
) WITHOUT ROWID;
"""

# Version 1 (before account ids): users keyed by name, conversations by the name pair,
# messages unique by (sender name, client_id). Renamed aside and copied by _migrate_1_to_2.
_V1_TABLES: Final = ("users", "conversations", "messages")

# The serve process polls this meta row to learn that an admin command changed accounts
# (add, remove, revoke) from another process: one primary-key read, no signal needed.
ACCOUNTS_VERSION_KEY: Final = "accounts_version"


class UserError(Exception):
    """A mistake in an administrative command, reported without a traceback."""


class UserInfo(msgspec.Struct, frozen=True):
    name: str
    created_at: int


class Account(msgspec.Struct, frozen=True):
    """An authenticated account, and the accounts version its check was read at."""

    id: int
    name: str
    token_hash: bytes
    version: int


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


def _create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def init_schema(conn: sqlite3.Connection) -> str:
    """Create or migrate the tables and return the database's epoch id.

    Runs in one transaction: a migration either completes or leaves the file as it was.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        epoch = _init_schema(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return epoch


def _init_schema(conn: sqlite3.Connection) -> str:
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
    if row is None:
        _create_tables(conn)
        epoch = secrets.token_hex(8)
        conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)",
            [("epoch", epoch), ("schema_version", str(SCHEMA_VERSION))],
        )
        return epoch
    epoch = str(row[0])
    found = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = int(found[0]) if found is not None else 1
    if version > SCHEMA_VERSION:
        raise UserError(
            f"the database has schema version {version}; this server knows up to"
            f" {SCHEMA_VERSION} (upgrade tui-chat)"
        )
    if version == 1:
        # Builds the current tables, so there is nothing left for _migrate_2_to_3 to do.
        _migrate_1_to_2(conn)
    elif version == 2:
        _migrate_2_to_3(conn)
    _create_tables(conn)
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (str(SCHEMA_VERSION),),
    )
    return epoch


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Give every account an id and move idempotency to the ``sends`` registry.

    A name that conversations still mention but whose account was removed under version 1
    becomes a removed account with its own id, so its history stays with its peers and a
    new account of that name starts empty. (Version 1 gave a re-added name the old
    history; which messages belonged to which of the two cannot be told apart now.)
    """
    for table in _V1_TABLES:
        conn.execute(f"ALTER TABLE {table} RENAME TO v1_{table}")
    # Renaming kept the old indexes' names: drop them so the new schema can use its own.
    conn.execute("DROP INDEX IF EXISTS conversations_b")
    _create_tables(conn)
    conn.execute(
        "INSERT INTO users(name, token_hash, created_at) "
        "SELECT name, token_hash, created_at FROM v1_users ORDER BY created_at, name"
    )
    removed = now_ms()
    conn.execute(
        "INSERT INTO users(name, token_hash, created_at, removed_at) "
        "SELECT name, X'', ?, ? FROM ("
        " SELECT user_a AS name FROM v1_conversations UNION SELECT user_b FROM v1_conversations"
        ") WHERE name NOT IN (SELECT name FROM v1_users) ORDER BY name",
        (removed, removed),
    )
    # In version 1 every name had at most one row, so name -> id is exact here.
    conn.execute(
        "INSERT INTO conversations(id, user_a, user_b, last_seq, a_id, b_id) "
        "SELECT c.id, c.user_a, c.user_b, c.last_seq, a.id, b.id FROM v1_conversations c "
        "JOIN users a ON a.name = c.user_a JOIN users b ON b.name = c.user_b"
    )
    conn.execute(
        "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts) "
        "SELECT conv, seq, sender, recipient, client_id, body, ts FROM v1_messages"
    )
    conn.execute(
        "INSERT INTO sends(sender_id, client_id, conv, seq, ts) "
        "SELECT u.id, m.client_id, m.conv, m.seq, m.ts FROM v1_messages m "
        "JOIN users u ON u.name = m.sender"
    )
    for table in reversed(_V1_TABLES):
        conn.execute(f"DROP TABLE v1_{table}")


# Columns version 3 added to ``messages``; every existing row is a direct message (text).
_V3_MESSAGE_COLUMNS: Final = (
    "kind TEXT NOT NULL DEFAULT 'text'",
    "user TEXT",
    "title TEXT",
    "members TEXT",
)


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Add the group columns to ``messages``; the new tables come from _create_tables.

    Direct conversations are untouched: their rows get ``kind`` 'text' and NULLs.
    """
    for column in _V3_MESSAGE_COLUMNS:
        conn.execute(f"ALTER TABLE messages ADD COLUMN {column}")


def open_db(path: Path, *, synchronous: str = "FULL") -> tuple[sqlite3.Connection, str]:
    conn = connect(path, synchronous=synchronous)
    try:
        epoch = init_schema(conn)
    except BaseException:
        conn.close()
        raise
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


def _bump_accounts_version(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, '1') "
        "ON CONFLICT(key) DO UPDATE SET value=CAST(value AS INTEGER) + 1",
        (ACCOUNTS_VERSION_KEY,),
    )


def accounts_version(conn: sqlite3.Connection) -> int:
    """A counter that every account change increases (0 before the first)."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (ACCOUNTS_VERSION_KEY,)).fetchone()
    return int(row[0]) if row is not None else 0


def _change_accounts(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> int:
    """Run one account change and bump the version in the same transaction.

    Inside a transaction the caller already opened (bulk set-ups), it joins that one.
    """
    if conn.in_transaction:
        rowcount = conn.execute(sql, params).rowcount
        if rowcount:
            _bump_accounts_version(conn)
        return rowcount
    conn.execute("BEGIN IMMEDIATE")
    try:
        rowcount = conn.execute(sql, params).rowcount
        if rowcount:
            _bump_accounts_version(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return rowcount


def add_user(conn: sqlite3.Connection, name: str) -> str:
    """Create a user and return its token; only the hash is stored."""
    validate_user_name(name)
    token = secrets.token_urlsafe(32)
    try:
        _change_accounts(
            conn,
            "INSERT INTO users(name, token_hash, created_at) VALUES (?, ?, ?)",
            (name, hash_token(token), now_ms()),
        )
    except sqlite3.IntegrityError:
        raise UserError(f"user {name!r} already exists") from None
    return token


def revoke_token(conn: sqlite3.Connection, name: str) -> str:
    """Replace a user's token: the old one fails at login, and open sessions are closed."""
    token = secrets.token_urlsafe(32)
    changed = _change_accounts(
        conn,
        "UPDATE users SET token_hash=? WHERE name=? AND removed_at IS NULL",
        (hash_token(token), name),
    )
    if not changed:
        raise UserError(f"no such user {name!r}")
    return token


def remove_user(conn: sqlite3.Connection, name: str) -> None:
    """Remove an account; its open sessions are closed.

    Its messages stay: they belong to the peers' histories too. The row stays as well
    (without a token), so its id is never given to anyone else.
    """
    changed = _change_accounts(
        conn,
        "UPDATE users SET removed_at=?, token_hash=X'' WHERE name=? AND removed_at IS NULL",
        (now_ms(), name),
    )
    if not changed:
        raise UserError(f"no such user {name!r}")


def list_users(conn: sqlite3.Connection) -> list[UserInfo]:
    rows = conn.execute(
        "SELECT name, created_at FROM users WHERE removed_at IS NULL ORDER BY name"
    ).fetchall()
    return [UserInfo(name=r[0], created_at=r[1]) for r in rows]


def authenticate(conn: sqlite3.Connection, name: str, token: str) -> Account | None:
    """The account ``name`` if ``token`` is its token, else None.

    The account and the accounts version are read in one transaction, so a session
    checked at version N is known to be valid as of N (see ChatServer's account watch).
    """
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            "SELECT id, token_hash FROM users WHERE name=? AND removed_at IS NULL", (name,)
        ).fetchone()
        version = accounts_version(conn)
    finally:
        conn.execute("COMMIT")
    # Compare against a dummy hash for unknown users so timing does not tell
    # which user names exist.
    stored = bytes(row[1]) if row is not None else _DUMMY_HASH
    ok = hmac.compare_digest(stored, hash_token(token))
    return Account(int(row[0]), name, stored, version) if ok and row is not None else None


def account_id(conn: sqlite3.Connection, name: str) -> int | None:
    """The id of the active account called ``name``, if there is one."""
    if not USER_RE.match(name):
        return None
    row = conn.execute(
        "SELECT id FROM users WHERE name=? AND removed_at IS NULL", (name,)
    ).fetchone()
    return None if row is None else int(row[0])


def user_exists(conn: sqlite3.Connection, name: str) -> bool:
    return account_id(conn, name) is not None


def token_hashes(conn: sqlite3.Connection, ids: list[int]) -> dict[int, bytes]:
    """id -> current token hash for those of ``ids`` that are active accounts."""
    out: dict[int, bytes] = {}
    for account in ids:
        row = conn.execute(
            "SELECT token_hash FROM users WHERE id=? AND removed_at IS NULL", (account,)
        ).fetchone()
        if row is not None:
            out[account] = bytes(row[0])
    return out


# ---------------------------------------------------------------- reads


def conversations_of(conn: sqlite3.Connection, account: int) -> dict[str, int]:
    """Conversation id → last seq for every conversation ``account`` is a member of."""
    rows = conn.execute(
        "SELECT id, last_seq FROM conversations WHERE a_id=? UNION ALL "
        "SELECT id, last_seq FROM conversations WHERE b_id=? AND a_id<>?",
        (account, account, account),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def is_member(conn: sqlite3.Connection, conv: str, account: int) -> bool:
    row = conn.execute("SELECT a_id, b_id FROM conversations WHERE id=?", (conv,)).fetchone()
    return row is not None and account in (row[0], row[1])


def _history_message(r: tuple[object, ...]) -> HistoryMessage:
    conv, seq, sender, recipient, client_id, body, ts = r
    return HistoryMessage(
        conv=str(conv),
        seq=int(seq),  # type: ignore[call-overload]
        sender=str(sender),
        to=str(recipient),
        client_id=str(client_id),
        body=str(body),
        ts=int(ts),  # type: ignore[call-overload]
    )


def messages_after(
    conn: sqlite3.Connection, conv: str, after: int, limit: int
) -> list[HistoryMessage]:
    rows = conn.execute(
        "SELECT conv, seq, sender, recipient, client_id, body, ts FROM messages "
        "WHERE conv=? AND seq>? ORDER BY seq LIMIT ?",
        (conv, after, limit),
    ).fetchall()
    return [_history_message(r) for r in rows]


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
    return [_history_message(r) for r in rows]


def read_positions(conn: sqlite3.Connection, convs: list[str]) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    for conv in convs:
        out.extend(
            conn.execute("SELECT conv, user, read_seq FROM reads WHERE conv=?", (conv,)).fetchall()
        )
    return out
