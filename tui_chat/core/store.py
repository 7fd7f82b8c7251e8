"""The local replica: one SQLite file per account.

It holds what the server confirmed (messages by ``(conv, seq)`` and a
watermark per conversation) and what the user wrote that the server has not
confirmed (the outbox). Conversations are keyed by peer name because a
message can be written to a peer before the server has named the
conversation.

Writes of incoming messages are batched into one transaction that the engine
commits at a short interval: they are the server's data, so losing an
uncommitted batch in a crash only means replaying it. The outbox is
different: :meth:`LocalStore.add_outbox` commits before it returns.

Opening checks the file (``PRAGMA quick_check``); a damaged one is replaced by a
fresh store that keeps its readable outbox (see :mod:`tui_chat.core.store_repair`),
and :attr:`LocalStore.repair_report` says what happened.
"""

from __future__ import annotations

import base64
import os
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; one client per account is on the user.
    fcntl = None  # type: ignore[assignment]

import msgspec

from tui_chat.core import store_repair
from tui_chat.core.mentions import mentions
from tui_chat.core.models import (
    GROUP_PREFIX,
    PENDING_GROUP_PREFIX,
    ChatMessage,
    ConversationSummary,
    ConvKind,
    OutState,
    group_key,
    is_group_key,
)
from tui_chat.core.store_repair import StoreDamaged, StoreRepair
from tui_chat.protocol import MessageKind

# meta keys of the transport's own state; RESUME_SLOT is dropped with the replica.
_TRANSPORT_SLOT: Final = "transport:"
RESUME_SLOT: Final = "resume"
LOGIN_SLOT: Final = "login"

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    peer           TEXT PRIMARY KEY,
    conv           TEXT UNIQUE,
    wm             INTEGER NOT NULL DEFAULT 0,
    read_seq       INTEGER NOT NULL DEFAULT 0,
    peer_read_seq  INTEGER NOT NULL DEFAULT 0,
    unread         INTEGER NOT NULL DEFAULT 0,
    last_ts        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    conv       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    body       TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    PRIMARY KEY (conv, seq)
) WITHOUT ROWID;
-- No index on (sender, client_id): no query of the client looks a message up that way (its
-- own messages are found through the outbox), and one with random client ids made catch-up
-- of one large conversation 2.4x slower per message (see docs/benchmarks.md).
DROP INDEX IF EXISTS messages_client_id;
CREATE TABLE IF NOT EXISTS outbox (
    client_id        TEXT PRIMARY KEY,
    peer             TEXT NOT NULL,
    body             TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    -- The freshness window counts from here: compose time, or the user's last retry.
    fresh_since      INTEGER NOT NULL,
    ord              INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    state            TEXT NOT NULL,
    error            TEXT,
    retryable        INTEGER NOT NULL DEFAULT 1,
    conv             TEXT,
    seq              INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_open ON outbox (state, peer, ord);
-- next_ord() reads max(ord) on every send, and sent rows stay: without this index
-- that is a scan of everything ever sent (10 ms at 333,000 rows).
CREATE INDEX IF NOT EXISTS outbox_ord ON outbox (ord);
-- A group's current members, in join order, derived from its stored events (see
-- LocalStore.recompute_group), or for a pending group the ones its create asks for.
-- How far each other member has read a conversation (the server's receipts): ✓✓ and
-- "read by n" in the view.
CREATE TABLE IF NOT EXISTS reads (
    peer      TEXT NOT NULL,
    user      TEXT NOT NULL,
    read_seq  INTEGER NOT NULL,
    PRIMARY KEY (peer, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    peer  TEXT NOT NULL,
    user  TEXT NOT NULL,
    ord   INTEGER NOT NULL,
    PRIMARY KEY (peer, user)
) WITHOUT ROWID;
"""

# Columns added after version 1 of the store: an existing file gains them in place (with
# their defaults) and keeps its data; a fresh one gets them the same way.
_ADDED_COLUMNS: Final = (
    ("conversations", "kind", "TEXT NOT NULL DEFAULT 'direct'"),
    ("conversations", "title", "TEXT"),
    ("conversations", "creator", "TEXT"),
    ("conversations", "joined", "INTEGER NOT NULL DEFAULT 1"),
    ("conversations", "mentions", "INTEGER NOT NULL DEFAULT 0"),
    ("messages", "kind", "TEXT NOT NULL DEFAULT 'text'"),
    ("messages", "user", "TEXT"),
    ("messages", "title", "TEXT"),
    # JSON list: the member list carried by a created or added-of-me event.
    ("messages", "members", "TEXT"),
    # What the row asks the server: send (body), create (arg: JSON title and members),
    # add and remove (arg: the user), leave, rename (arg: the title).
    ("outbox", "op", "TEXT NOT NULL DEFAULT 'send'"),
    ("outbox", "arg", "TEXT"),
)

# The kind of event each outbox op becomes once the server stores it.
OP_KIND: Final = {
    "send": MessageKind.TEXT,
    "create": MessageKind.CREATED,
    "add": MessageKind.ADDED,
    "remove": MessageKind.REMOVED,
    "leave": MessageKind.LEFT,
    "rename": MessageKind.RENAMED,
}
NOT_MEMBER_REASON: Final = "you are no longer a member of this group"

_TEXT_COLS: Final = "conv, seq, sender, recipient, client_id, body, ts"
_MSG_COLS: Final = _TEXT_COLS + ", kind, user, title, members"
_MSG_COLS_OF_M: Final = ", ".join("m." + c.strip() for c in _MSG_COLS.split(","))
_OUT_COLS: Final = (
    "client_id, peer, body, created_at, ord, attempts, state, error, retryable, conv, seq,"
    " fresh_since, op, arg"
)
_members_json = msgspec.json.Encoder()
_members_decode = msgspec.json.Decoder(list[str])


class CreateArgs(msgspec.Struct, frozen=True):
    """A create row's ``arg``: what the server is asked for."""

    title: str
    members: list[str]


_create_decode = msgspec.json.Decoder(CreateArgs)


def create_args(row: OutboxRow) -> CreateArgs:
    return _create_decode.decode(row.arg or '{"title": "", "members": []}')


def encode_create_args(title: str, members: list[str]) -> str:
    return msgspec.json.encode(CreateArgs(title, members)).decode()


def initial_members(creator: str, members: Iterable[str]) -> list[str]:
    """The creator first, then ``members`` in the order given, without repeats (the
    server's rule, so a pending group lists what the created event will)."""
    out = [creator]
    for name in members:
        if name not in out:
            out.append(name)
    return out


class OutboxRow:
    """A mutable in-memory copy of one outbox row (the engine's working set)."""

    __slots__ = (
        "arg",
        "attempts",
        "body",
        "client_id",
        "conv",
        "created_at",
        "error",
        "fresh_since",
        "op",
        "ord",
        "peer",
        "retryable",
        "seq",
        "state",
    )

    def __init__(
        self,
        client_id: str,
        peer: str,
        body: str,
        created_at: int,
        ord: int,
        attempts: int = 0,
        state: OutState = OutState.PENDING,
        error: str | None = None,
        retryable: bool = True,
        conv: str | None = None,
        seq: int | None = None,
        fresh_since: int | None = None,
        op: str = "send",
        arg: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.peer = peer
        self.body = body
        self.created_at = created_at
        self.ord = ord
        self.attempts = attempts
        self.state = state
        self.error = error
        self.retryable = retryable
        self.conv = conv
        self.seq = seq
        self.fresh_since = created_at if fresh_since is None else fresh_since
        self.op = op
        self.arg = arg


class StoreError(Exception):
    pass


def _lock_exclusively(lock_path: Path) -> IO[bytes]:
    """Hold an exclusive lock on the store for as long as this object lives.

    Two engines on one replica would each move the other's watermarks, and the
    one that did not apply a message would then drop it as a duplicate: a live
    message lost from its screen. So a second client of the same account on the
    same machine (and data dir) is refused with a clear message instead.
    """
    handle = open(lock_path, "a+b")  # noqa: SIM115 - held open on purpose
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StoreError(
                f"{lock_path.with_suffix('')} is in use by another tui-chat for this account;"
                " quit that one first (or give this one another [storage] dir)"
            ) from None
    return handle


# quick_check's findings are many lines; the user's one line quotes the first few.
_CHECK_PROBLEMS: Final = 3


def _init_schema(db: sqlite3.Connection, user: str) -> None:
    """Create what is missing and claim or check the owner (inside a transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    for table, column, decl in _ADDED_COLUMNS:
        have = {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    _init_search(db)
    row = db.execute("SELECT value FROM meta WHERE key='user'").fetchone()
    if row is None:
        db.execute("INSERT INTO meta(key, value) VALUES ('user', ?)", (user,))
    elif row[0] != user:
        raise StoreError(f"{_db_file(db)} belongs to user {row[0]!r}, not {user!r}")


# Full-text search over message bodies (SQLite's FTS5, in the standard library's sqlite3).
# messages has no rowid, so the index keeps its own copy of each body with (conv, seq).
# Indexing a message costs ~55 us of CPU, 15 times its insert (measured: catch-up fell
# from ~50,000 to ~5,500 msgs/s with the index in the insert), so a trigger only queues
# (conv, seq) in search_pending (~5 us), whichever path inserts; the engine indexes the
# queue in small steps while idle, and a search first indexes whatever is still queued,
# so every search sees every stored message.
_SEARCH_SCHEMA: Final = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5("
    "body, conv UNINDEXED, seq UNINDEXED, tokenize='unicode61 remove_diacritics 2')",
    "CREATE TABLE IF NOT EXISTS search_pending ("
    "conv TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (conv, seq)) WITHOUT ROWID",
    "DROP TRIGGER IF EXISTS messages_fts_insert",
    "CREATE TRIGGER IF NOT EXISTS messages_search_queue AFTER INSERT ON messages"
    " WHEN new.kind = 'text' BEGIN"
    " INSERT OR IGNORE INTO search_pending(conv, seq) VALUES (new.conv, new.seq); END",
)
# Messages indexed per idle step: ~11 ms of CPU, under a frame.
INDEX_STEP: Final = 200


def _init_search(db: sqlite3.Connection) -> None:
    """The search index; a store made before it queues everything it holds, once."""
    for statement in _SEARCH_SCHEMA:
        db.execute(statement)
    if db.execute("SELECT 1 FROM meta WHERE key='search_index'").fetchone() is None:
        db.execute("DELETE FROM messages_fts")
        db.execute(
            "INSERT OR IGNORE INTO search_pending(conv, seq)"
            " SELECT conv, seq FROM messages WHERE kind = 'text'"
        )
        db.execute("INSERT INTO meta(key, value) VALUES ('search_index', '1')")


def search_query(text: str) -> str | None:
    """What the user typed as an FTS5 query: every word must appear, as a word or the start
    of one. Each word is quoted, so nothing typed is read as FTS5 syntax (AND, NEAR, *, ")."""
    words = [w for w in re.split(r"\s+", text.strip()) if w]
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words[:16])


def _db_file(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return str(row[2])


def _sqlite_failure(path: Path, exc: sqlite3.Error) -> Exception:
    """StoreDamaged if ``exc`` says the bytes are bad; else a StoreError no repair fixes
    (permissions, disk full, another program's lock)."""
    if store_repair.is_damage(exc):
        return StoreDamaged(str(exc))
    return StoreError(f"cannot open the local store {path}: {exc}")


def _check_integrity(path: Path) -> None:
    """Raise StoreDamaged unless ``path`` is absent or a sound SQLite file.

    The check opens the file read-only: a damaged file must reach the side
    untouched, and a read-write connection may write to it (fold a WAL in on close).
    """
    if not os.path.lexists(path):
        return
    if not path.is_file():
        raise StoreDamaged("a directory is in its place" if path.is_dir() else "not a file")
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _sqlite_failure(path, exc) from None
    try:
        found = [str(r[0]) for r in db.execute(f"PRAGMA quick_check({_CHECK_PROBLEMS})")]
    except sqlite3.Error as exc:
        raise _sqlite_failure(path, exc) from None
    finally:
        db.close()
    if found != ["ok"]:
        text = " ".join("; ".join(found).split())  # one line, whatever SQLite wrote
        raise StoreDamaged(f"integrity check: {text[:160]}")


def _connect_checked(path: Path, user: str) -> sqlite3.Connection:
    """Open the store at ``path``: StoreDamaged if its bytes are bad, else StoreError if
    it cannot be opened."""
    _check_integrity(path)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _sqlite_failure(path, exc) from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: an outbox row must survive power loss once send() returned.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        _init_schema(db, user)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.close()
        raise _sqlite_failure(path, exc) from None
    except BaseException:
        db.close()
        raise
    return db


_SUMMARY_COLS: Final = "conv, unread, read_seq, peer_read_seq, title, creator, joined, mentions"


@dataclass(slots=True)
class _OpenStats:
    """A conversation's open outbox rows: how many failed, how many pending, the newest."""

    last: OutboxRow
    failed: int = 0
    pending: int = 0


def _open_stats(rows: Iterable[OutboxRow]) -> dict[str, _OpenStats]:
    out: dict[str, _OpenStats] = {}
    for r in rows:
        st = out.get(r.peer)
        if st is None:
            st = out[r.peer] = _OpenStats(r)
        st.last = r  # the rows come in compose order: the last one is the newest
        if r.state is OutState.FAILED:
            st.failed += 1
        else:
            st.pending += 1
    return out


class LocalStore:
    def __init__(self, path: Path, user: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.user = user
        # The lock comes first: the check and any repair happen under it.
        self._lock = _lock_exclusively(path.with_name(path.name + ".lock"))
        try:
            self.repair_report = self._open(path, user)
        except BaseException:
            self._lock.close()
            raise
        self._in_tx = False
        # conv id <-> peer, loaded once: every incoming message needs them.
        self._peer_of: dict[str, str] = {}
        self._conv_of: dict[str, str] = {}
        self._wm: dict[str, int] = {}
        # Highest stored seq per conversation, filled lazily (see _top_seq): it bounds the
        # watermark scan, so in-order messages need no lookup to advance the watermark.
        self._top: dict[str, int] = {}
        # Per-message changes to a conversation's row (unread, last_ts, wm) wait here and are
        # written once per conversation when the batch commits (_write_conversations): one
        # INSERT per incoming message instead of three statements. read_seq is mirrored so
        # the unread count can be decided without reading the row.
        self._read_seq: dict[str, int] = {}
        self._unread_add: dict[str, int] = {}
        self._mention_add: dict[str, int] = {}
        self._last_ts: dict[str, int] = {}
        self._wm_moved: set[str] = set()
        self._members: dict[str, list[str]] = {}  # group key -> members (see members())
        for peer, conv, wm, read_seq in self._db.execute(
            "SELECT peer, conv, wm, read_seq FROM conversations"
        ):
            self._read_seq[peer] = read_seq
            if conv is not None:
                self._peer_of[conv] = peer
                self._conv_of[peer] = conv
                self._wm[conv] = wm
        if self.repair_report is not None:
            self.ensure_pending_groups(self.open_outbox())

    def _open(self, path: Path, user: str) -> StoreRepair | None:
        """Connect; a damaged file is replaced first. Returns what a repair did, if any."""
        try:
            repair = store_repair.finish_interrupted(path)
            try:
                self._db = _connect_checked(path, user)
            except StoreDamaged as damage:
                repair = store_repair.repair(path, user, damage.reason, _init_schema)
                self._db = _connect_checked(path, user)
        except StoreDamaged as damage:  # the fresh store too: the disk is lying
            raise StoreError(f"the local store {path} is damaged ({damage.reason})") from None
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot repair the damaged local store {path}: {exc}") from None
        return repair

    def close(self) -> None:
        self.commit()
        self._db.close()
        self._lock.close()  # releases the lock

    # ------------------------------------------------------------ transactions

    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        if self._in_tx:
            self._write_conversations()
            self._db.execute("COMMIT")
            self._in_tx = False

    def _write_conversations(self) -> None:
        """Write the conversation changes held back by insert_message/advance_watermark.

        Called inside the open transaction: at commit (so the watermark commits with the
        messages below it) and before anything reads or sets these columns.
        """
        if self._unread_add or self._last_ts:
            self._db.executemany(
                "UPDATE conversations SET unread=unread+?, mentions=mentions+?,"
                " last_ts=max(last_ts, ?) WHERE peer=?",
                [
                    (self._unread_add.get(peer, 0), self._mention_add.get(peer, 0), ts, peer)
                    for peer, ts in self._last_ts.items()
                ],
            )
            self._unread_add.clear()
            self._mention_add.clear()
            self._last_ts.clear()
        if self._wm_moved:
            self._db.executemany(
                "UPDATE conversations SET wm=? WHERE conv=?",
                [(self._wm[conv], conv) for conv in self._wm_moved],
            )
            self._wm_moved.clear()

    @property
    def dirty(self) -> bool:
        return self._in_tx

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    # ------------------------------------------------------------ drafts

    def draft(self, peer: str) -> str:
        return self._meta("draft:" + peer) or ""

    def save_draft(self, peer: str, text: str) -> None:
        """Keep what the user was typing to ``peer`` (an empty text forgets it)."""
        self._begin()
        if text:
            self._set_meta("draft:" + peer, text)
        else:
            self._db.execute("DELETE FROM meta WHERE key=?", ("draft:" + peer,))
        self.commit()

    # ------------------------------------------------------------ epoch and cursors

    @property
    def epoch(self) -> str | None:
        return self._meta("epoch")

    def set_epoch(self, epoch: str) -> None:
        self._begin()
        self._set_meta("epoch", epoch)
        self.commit()

    def reset_for_epoch(self, epoch: str) -> None:
        """The server's history was reset: drop the replica, keep unsent messages."""
        self._begin()
        self._write_conversations()
        self._db.execute("DELETE FROM messages")
        self._db.execute("DELETE FROM messages_fts")
        self._db.execute("DELETE FROM search_pending")
        self._db.execute("DELETE FROM reads")
        # Groups are named by the old history's conv ids: they are gone with it (a pending
        # create is not: it was never on the server).
        self._db.execute("DELETE FROM conversations WHERE substr(peer, 1, 1)=?", (GROUP_PREFIX,))
        self._db.execute("DELETE FROM members WHERE substr(peer, 1, 1)=?", (GROUP_PREFIX,))
        self._members.clear()
        self._db.execute(
            "UPDATE conversations SET conv=NULL, wm=0, read_seq=0, unread=0, mentions=0"
        )
        self._db.execute("DELETE FROM outbox WHERE state=?", (OutState.SENT.value,))
        self._db.execute("UPDATE outbox SET conv=NULL, seq=NULL")
        # The transport's resume point belongs to the old history (its login does not).
        self._db.execute("DELETE FROM meta WHERE key=?", (_TRANSPORT_SLOT + RESUME_SLOT,))
        self._set_meta("epoch", epoch)
        self.commit()
        self._peer_of.clear()
        self._conv_of.clear()
        self._wm.clear()
        self._top.clear()
        self._read_seq.clear()

    # ------------------------------------------------------------ transport state

    def transport_state(self, slot: str) -> bytes | None:
        """Opaque state a transport keeps here (see FrameSink.on_checkpoint/save_login)."""
        value = self._meta(_TRANSPORT_SLOT + slot)
        return None if value is None else base64.b64decode(value)

    def set_transport_state(self, slot: str, state: bytes, *, durable: bool = False) -> None:
        """Set inside the open transaction (committed with it), or at once if ``durable``."""
        self._begin()
        self._set_meta(_TRANSPORT_SLOT + slot, base64.b64encode(state).decode())
        if durable:
            self.commit()

    def watermarks(self) -> dict[str, int]:
        return {conv: wm for conv, wm in self._wm.items() if wm > 0}

    def watermark(self, conv: str) -> int:
        return self._wm.get(conv, 0)

    def peer_of(self, conv: str) -> str | None:
        return self._peer_of.get(conv)

    def conv_of(self, peer: str) -> str | None:
        return self._conv_of.get(peer)

    def ensure_conversation(self, peer: str, conv: str | None) -> None:
        if conv is not None and self._peer_of.get(conv) == peer:
            return
        self._begin()
        kind = ConvKind.GROUP if is_group_key(peer) else ConvKind.DIRECT
        self._db.execute(
            "INSERT OR IGNORE INTO conversations(peer, kind) VALUES (?, ?)", (peer, kind.value)
        )
        if conv is not None:
            self._db.execute("UPDATE conversations SET conv=? WHERE peer=?", (conv, peer))
            self._peer_of[conv] = peer
            self._conv_of[peer] = conv
            self._wm.setdefault(conv, 0)

    # ------------------------------------------------------------ confirmed messages

    def insert_message(
        self,
        conv: str,
        seq: int,
        sender: str,
        to: str,
        client_id: str,
        body: str,
        ts: int,
        *,
        kind: str = MessageKind.TEXT,
        user: str | None = None,
        title: str | None = None,
        members: list[str] | None = None,
    ) -> bool:
        """Store a server-confirmed message; False if that seq is already held."""
        self._begin()
        if kind == MessageKind.TEXT and user is None and title is None and members is None:
            # The common case keeps the narrow statement: the group columns take their
            # defaults, and catch-up stays as fast as before groups.
            cur = self._db.execute(
                f"INSERT OR IGNORE INTO messages({_TEXT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conv, seq, sender, to, client_id, body, ts),
            )
        else:
            cur = self._db.execute(
                f"INSERT OR IGNORE INTO messages({_MSG_COLS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conv,
                    seq,
                    sender,
                    to,
                    client_id,
                    body,
                    ts,
                    kind,
                    user,
                    title,
                    None if members is None else _members_json.encode(members).decode(),
                ),
            )
        if cur.rowcount == 0:
            return False
        top = self._top.get(conv)
        if top is None:
            self._top_seq(conv)  # reads the table, which now includes this seq
        elif seq > top:
            self._top[conv] = seq
        peer = self._peer_of[conv]
        # Unread counts texts from others above our read position (membership events are
        # quiet lines, not messages to read).
        if sender != self.user and kind == MessageKind.TEXT and seq > self._read_seq.get(peer, 0):
            self._unread_add[peer] = self._unread_add.get(peer, 0) + 1
            if mentions(body, self.user):
                self._mention_add[peer] = self._mention_add.get(peer, 0) + 1
        if ts > self._last_ts.get(peer, -(2**63)):
            self._last_ts[peer] = ts
        return True

    def _top_seq(self, conv: str) -> int:
        """The highest stored seq of ``conv`` (0 if none), cached after the first query."""
        top = self._top.get(conv)
        if top is None:
            row = self._db.execute("SELECT max(seq) FROM messages WHERE conv=?", (conv,)).fetchone()
            top = int(row[0]) if row and row[0] is not None else 0
            self._top[conv] = top
        return top

    def advance_watermark(self, conv: str) -> int:
        """Move the watermark over every contiguous stored seq; return it."""
        wm = self._wm.get(conv, 0)
        start = wm
        top = self._top_seq(conv)
        # Nothing is stored above top, and top itself is stored: in-order arrival
        # (wm + 1 == top) needs no lookup at all.
        while wm < top and (
            wm + 1 == top
            or self._db.execute(
                "SELECT 1 FROM messages WHERE conv=? AND seq=?", (conv, wm + 1)
            ).fetchone()
        ):
            wm += 1
        if wm != start:
            self._begin()
            self._wm[conv] = wm
            self._wm_moved.add(conv)
        return wm

    def message_view(self, conv: str, seq: int) -> ChatMessage | None:
        row = self._db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE conv=? AND seq=?", (conv, seq)
        ).fetchone()
        return None if row is None else self._msg_view(row)

    def written_at(self, client_id: str) -> int | None:
        """When an own message was written on this device (its outbox row), if it was."""
        row = self._db.execute(
            "SELECT created_at FROM outbox WHERE client_id=?", (client_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def _msg_view(self, row: tuple[object, ...]) -> ChatMessage:
        conv, seq, sender, to, client_id, body, ts, kind, user, title, _members = row
        own = sender == self.user
        peer = group_key(str(conv)) if to == "" else str(to if own else sender)
        text = kind == MessageKind.TEXT
        return ChatMessage(
            peer=peer,
            sender=str(sender),
            client_id=str(client_id),
            body=str(body),
            ts=int(ts),  # type: ignore[call-overload]
            own=own,
            seq=int(seq),  # type: ignore[call-overload]
            conv=str(conv),
            state=OutState.SENT if own else None,
            kind=str(kind),
            user=None if user is None else str(user),
            title=None if title is None else str(title),
            mentions_me=not own and text and mentions(str(body), self.user),
            written=self.written_at(str(client_id)) if own else None,
        )

    # ------------------------------------------------------------ reads

    def mark_read(self, peer: str, seq: int) -> bool:
        self._begin()
        self._write_conversations()
        cur = self._db.execute(
            "UPDATE conversations SET read_seq=?, unread=0, mentions=0 WHERE peer=? AND read_seq<?",
            (seq, peer, seq),
        )
        if cur.rowcount > 0:
            self._read_seq[peer] = seq
        return cur.rowcount > 0

    def set_read_from_server(self, conv: str, user: str, read_seq: int) -> None:
        peer = self._peer_of.get(conv)
        if peer is None:
            return
        self._begin()
        self._write_conversations()
        if user == self.user:
            # Another device of ours read further: recount what is still unread.
            self._read_seq[peer] = max(self._read_seq.get(peer, 0), read_seq)
            self._db.execute(
                "UPDATE conversations SET read_seq=max(read_seq, ?) WHERE peer=?",
                (read_seq, peer),
            )
            read = self._read_seq[peer]
            bodies = [
                str(r[0])
                for r in self._db.execute(
                    "SELECT body FROM messages WHERE conv=? AND seq>? AND sender<>? AND kind=?",
                    (conv, read, self.user, MessageKind.TEXT),
                )
            ]
            self._db.execute(
                "UPDATE conversations SET unread=?, mentions=? WHERE peer=?",
                (len(bodies), sum(mentions(b, self.user) for b in bodies), peer),
            )
        else:
            self._db.execute(
                "UPDATE conversations SET peer_read_seq=max(peer_read_seq, ?) WHERE peer=?",
                (read_seq, peer),
            )
            self._db.execute(
                "INSERT INTO reads(peer, user, read_seq) VALUES (?, ?, ?) ON CONFLICT(peer, user)"
                " DO UPDATE SET read_seq=max(read_seq, excluded.read_seq)",
                (peer, user, read_seq),
            )

    def readers(self, peer: str, seq: int) -> list[str]:
        """The others who have read ``peer``'s conversation up to ``seq`` or further."""
        return [
            str(r[0])
            for r in self._db.execute(
                "SELECT user FROM reads WHERE peer=? AND read_seq>=? ORDER BY user", (peer, seq)
            )
        ]

    def latest_seq(self, peer: str) -> int:
        conv = self._conv_of.get(peer)
        if conv is None:
            return 0
        row = self._db.execute("SELECT max(seq) FROM messages WHERE conv=?", (conv,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # ------------------------------------------------------------ outbox

    def next_ord(self) -> int:
        row = self._db.execute("SELECT coalesce(max(ord), 0) + 1 FROM outbox").fetchone()
        return int(row[0])

    def add_outbox(self, row: OutboxRow) -> None:
        """Store a new outgoing message durably before anything else happens to it."""
        self._begin()
        kind = ConvKind.GROUP if is_group_key(row.peer) else ConvKind.DIRECT
        self._db.execute(
            "INSERT OR IGNORE INTO conversations(peer, kind) VALUES (?, ?)",
            (row.peer, kind.value),
        )
        if row.op == "create":
            self._pending_group(row)
        self._db.execute(
            "UPDATE conversations SET last_ts=max(last_ts, ?) WHERE peer=?",
            (row.created_at, row.peer),
        )
        self._db.execute(
            f"INSERT INTO outbox({_OUT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.client_id,
                row.peer,
                row.body,
                row.created_at,
                row.ord,
                row.attempts,
                row.state.value,
                row.error,
                int(row.retryable),
                row.conv,
                row.seq,
                row.fresh_since,
                row.op,
                row.arg,
            ),
        )
        self.commit()

    def save_outbox(self, row: OutboxRow, *, durable: bool = False) -> None:
        self._begin()
        self._db.execute(
            "UPDATE outbox SET attempts=?, state=?, error=?, retryable=?, conv=?, seq=?, body=?, "
            "fresh_since=?, peer=? WHERE client_id=?",
            (
                row.attempts,
                row.state.value,
                row.error,
                int(row.retryable),
                row.conv,
                row.seq,
                row.body,
                row.fresh_since,
                row.peer,
                row.client_id,
            ),
        )
        if durable:
            self.commit()

    def open_outbox(self) -> list[OutboxRow]:
        """Pending, failed and cancelling rows, in compose order."""
        rows = self._db.execute(
            f"SELECT {_OUT_COLS} FROM outbox WHERE state IN (?, ?, ?) ORDER BY ord, rowid",
            (OutState.PENDING.value, OutState.FAILED.value, OutState.CANCELLING.value),
        ).fetchall()
        return [self._out_row(r) for r in rows]

    def outbox_row(self, client_id: str) -> OutboxRow | None:
        row = self._db.execute(
            f"SELECT {_OUT_COLS} FROM outbox WHERE client_id=?", (client_id,)
        ).fetchone()
        return None if row is None else self._out_row(row)

    @staticmethod
    def _out_row(r: tuple[object, ...]) -> OutboxRow:
        return OutboxRow(
            client_id=str(r[0]),
            peer=str(r[1]),
            body=str(r[2]),
            created_at=int(r[3]),  # type: ignore[call-overload]
            ord=int(r[4]),  # type: ignore[call-overload]
            attempts=int(r[5]),  # type: ignore[call-overload]
            state=OutState(str(r[6])),
            error=None if r[7] is None else str(r[7]),
            retryable=bool(r[8]),
            conv=None if r[9] is None else str(r[9]),
            seq=None if r[10] is None else int(r[10]),  # type: ignore[call-overload]
            fresh_since=int(r[11]),  # type: ignore[call-overload]
            op=str(r[12]),
            arg=None if r[13] is None else str(r[13]),
        )

    @staticmethod
    def outbox_view(row: OutboxRow, user: str, held: bool = False) -> ChatMessage:
        # A command shows as the event it will become (body "" like the server's).
        member: str | None = None
        title: str | None = None
        if row.op in ("add", "remove"):
            member = row.arg
        elif row.op == "leave":
            member = user
        elif row.op == "rename":
            title = row.arg
        elif row.op == "create":
            title = create_args(row).title
        return ChatMessage(
            peer=row.peer,
            sender=user,
            client_id=row.client_id,
            body=row.body if row.op == "send" else "",
            ts=row.created_at,
            own=True,
            seq=row.seq,
            conv=row.conv,
            state=row.state,
            error=row.error,
            retryable=row.retryable,
            held=held,
            attempts=row.attempts,
            kind=OP_KIND.get(row.op, MessageKind.TEXT),
            user=member,
            title=title,
            written=row.created_at,
        )

    # ------------------------------------------------------------ queries for views

    def page(self, peer: str, before: int | None, limit: int) -> list[ChatMessage]:
        """Up to ``limit`` confirmed messages with seq < before, oldest first."""
        conv = self._conv_of.get(peer)
        if conv is None:
            return []
        upper = before if before is not None else 2**62
        rows = self._db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE conv=? AND seq<? ORDER BY seq DESC LIMIT ?",
            (conv, upper, limit),
        ).fetchall()
        rows.reverse()
        return [self._msg_view(r) for r in rows]

    def peers(self) -> list[str]:
        # A stable order (first contact first): the list's numbers, and alt+1…9, stay put
        # when a message arrives, as weechat's buffer numbers do.
        return [r[0] for r in self._db.execute("SELECT peer FROM conversations ORDER BY rowid")]

    def summary(self, peer: str, open_rows: Iterable[OutboxRow]) -> ConversationSummary:
        if self._in_tx:
            self._write_conversations()  # unread is read below
        row = self._db.execute(
            f"SELECT {_SUMMARY_COLS} FROM conversations WHERE peer=?", (peer,)
        ).fetchone()
        tail = self.page(peer, None, 1)
        stats = _open_stats(r for r in open_rows if r.peer == peer).get(peer)
        return self._summary(peer, row, tail[-1] if tail else None, stats)

    def summaries(self, open_rows: Iterable[OutboxRow]) -> list[ConversationSummary]:
        """Every conversation's summary, in :meth:`peers` order.

        Two statements and one pass over the open rows, whatever the number of
        conversations: with 1,000 of them, one :meth:`summary` each cost two queries and a
        pass over every open row apiece, most of opening the app once the list itself was
        line-rendered (docs/benchmarks.md).
        """
        if self._in_tx:
            self._write_conversations()
        rows = self._db.execute(
            f"SELECT peer, {_SUMMARY_COLS} FROM conversations ORDER BY rowid"
        ).fetchall()
        # The newest message of each conversation: one index probe per conversation, inside
        # SQLite (a GROUP BY would read every message). CROSS JOIN keeps conversations
        # the outer loop: with a plain JOIN the planner scanned every message.
        newest = {
            r[0]: self._msg_view(r)
            for r in self._db.execute(
                f"SELECT {_MSG_COLS_OF_M} FROM conversations c CROSS JOIN messages m"
                " ON m.conv=c.conv AND m.seq=(SELECT max(seq) FROM messages WHERE conv=c.conv)"
            )
        }
        stats = _open_stats(open_rows)
        out: list[ConversationSummary] = []
        for peer, *row in rows:
            last = newest.get(row[0]) if row[0] is not None else None
            out.append(self._summary(peer, tuple(row), last, stats.get(peer)))
        return out

    def index_pending(self, limit: int | None = INDEX_STEP) -> int:
        """Index up to ``limit`` queued messages (None: all of them); returns how many."""
        cap = -1 if limit is None else limit  # LIMIT -1: no limit
        keys = self._db.execute(
            "SELECT conv, seq FROM search_pending ORDER BY conv, seq LIMIT ?", (cap,)
        ).fetchall()
        if not keys:
            return 0
        self._begin()
        self._db.executemany(
            "INSERT INTO messages_fts(body, conv, seq)"
            " SELECT body, conv, seq FROM messages WHERE conv=? AND seq=?",
            keys,
        )
        self._db.executemany("DELETE FROM search_pending WHERE conv=? AND seq=?", keys)
        self.commit()
        return len(keys)

    def search(self, text: str, limit: int = 100) -> list[ChatMessage]:
        """Messages whose body has every word of ``text``, newest first."""
        query = search_query(text)
        if query is None:
            return []
        self.index_pending(None)  # every stored message, not only those indexed so far
        if self._in_tx:
            self._write_conversations()
        try:
            rows = self._db.execute(
                f"SELECT {_MSG_COLS_OF_M} FROM"
                " (SELECT conv, seq FROM messages_fts WHERE messages_fts MATCH ?) f"
                " CROSS JOIN messages m ON m.conv = f.conv AND m.seq = f.seq"
                " ORDER BY m.ts DESC LIMIT ?",
                (query, limit),
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # a query FTS5 still cannot parse (quoted, so not expected)
        return [self._msg_view(r) for r in rows if r[0] in self._peer_of]

    def page_after(self, peer: str, after: int, limit: int) -> list[ChatMessage]:
        """Up to ``limit`` confirmed messages with seq > after, oldest first."""
        conv = self._conv_of.get(peer)
        if conv is None:
            return []
        rows = self._db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE conv=? AND seq>? ORDER BY seq LIMIT ?",
            (conv, after, limit),
        ).fetchall()
        return [self._msg_view(r) for r in rows]

    def _summary(
        self,
        peer: str,
        row: tuple[Any, ...] | None,
        last: ChatMessage | None,
        stats: _OpenStats | None,
    ) -> ConversationSummary:
        conv, unread, read_seq, peer_read, title, creator, joined, mentioned = (
            row if row else (None, 0, 0, 0, None, None, 1, 0)
        )
        group = is_group_key(peer)
        failed = pending = 0
        if stats is not None:
            failed, pending = stats.failed, stats.pending
            # What is still being sent is newer than anything stored.
            last = self.outbox_view(stats.last, self.user)
        return ConversationSummary(
            peer=peer,
            conv=conv,
            unread=int(unread),
            last=last,
            failed=failed,
            pending=pending,
            read_seq=int(read_seq),
            peer_read_seq=int(peer_read),
            kind=ConvKind.GROUP if group else ConvKind.DIRECT,
            title=None if title is None else str(title),
            members=tuple(self.members(peer)) if group else (),
            creator=None if creator is None else str(creator),
            joined=bool(joined),
            mentions=int(mentioned),
        )

    def all_messages(self) -> list[ChatMessage]:
        """Every stored message (for checkers and tests), by conversation and seq."""
        rows = self._db.execute(f"SELECT {_MSG_COLS} FROM messages ORDER BY conv, seq").fetchall()
        return [self._msg_view(r) for r in rows]

    def all_outbox(self) -> list[OutboxRow]:
        rows = self._db.execute(f"SELECT {_OUT_COLS} FROM outbox ORDER BY ord, rowid").fetchall()
        return [self._out_row(r) for r in rows]

    # ------------------------------------------------------------ groups

    def members(self, peer: str) -> list[str]:
        # Cached: every summary of a group lists them, and a group may have 1,000.
        cached = self._members.get(peer)
        if cached is None:
            cached = self._members[peer] = [
                str(r[0])
                for r in self._db.execute(
                    "SELECT user FROM members WHERE peer=? ORDER BY ord", (peer,)
                )
            ]
        return list(cached)

    def joined(self, peer: str) -> bool:
        """False for a group the user was removed from or left (True for anything else)."""
        row = self._db.execute("SELECT joined FROM conversations WHERE peer=?", (peer,)).fetchone()
        return row is None or bool(row[0])

    def has_conversation(self, peer: str) -> bool:
        found = self._db.execute("SELECT 1 FROM conversations WHERE peer=?", (peer,)).fetchone()
        return found is not None

    def _set_members(self, peer: str, members: list[str]) -> None:
        if self._members.get(peer) == members:
            return
        self._members[peer] = list(members)
        self._db.execute("DELETE FROM members WHERE peer=?", (peer,))
        self._db.executemany(
            "INSERT OR IGNORE INTO members(peer, user, ord) VALUES (?, ?, ?)",
            [(peer, name, i) for i, name in enumerate(members)],
        )

    def _pending_group(self, row: OutboxRow) -> None:
        """A create's conversation (key "+" + client_id): kind, title and members as asked."""
        args = create_args(row)
        self._db.execute(
            "INSERT OR IGNORE INTO conversations(peer, kind) VALUES (?, ?)",
            (row.peer, ConvKind.GROUP.value),
        )
        self._db.execute(
            "UPDATE conversations SET kind=?, title=?, creator=?, joined=1 WHERE peer=?",
            (ConvKind.GROUP.value, args.title, self.user, row.peer),
        )
        self._set_members(row.peer, initial_members(self.user, args.members))

    def restore_pending_group(self, row: OutboxRow) -> None:
        """A given-up create was taken back: its conversation comes back too."""
        self._begin()
        self._pending_group(row)
        self.commit()

    def ensure_pending_groups(self, rows: Iterable[OutboxRow]) -> None:
        """Every open create has its conversation (a repaired store carries only the outbox)."""
        for row in rows:
            pending = row.op == "create" and row.peer.startswith(PENDING_GROUP_PREFIX)
            if pending and not (self.has_conversation(row.peer) and self.members(row.peer)):
                self._begin()
                self._pending_group(row)
        self.commit()

    def replace_pending_group(self, old: str, conv: str) -> str:
        """A pending group is confirmed as ``conv``: its conversation, outbox rows and draft
        move from ``old`` ("+" + client_id) to "#" + conv. Returns the new key."""
        new = group_key(conv)
        self._begin()
        self._write_conversations()
        if self.has_conversation(new):  # its events came first: they name the members
            self._db.execute("DELETE FROM conversations WHERE peer=?", (old,))
            self._db.execute("DELETE FROM members WHERE peer=?", (old,))
            self._members.pop(old, None)
        else:
            self._db.execute(
                "UPDATE conversations SET peer=?, conv=? WHERE peer=?", (new, conv, old)
            )
            self._db.execute("UPDATE members SET peer=? WHERE peer=?", (new, old))
            self._members.pop(old, None)
            self._members.pop(new, None)
        self._db.execute("UPDATE outbox SET peer=? WHERE peer=?", (new, old))
        draft = self._meta("draft:" + old)
        if draft is not None:
            self._db.execute("DELETE FROM meta WHERE key=?", ("draft:" + old,))
            self._set_meta("draft:" + new, draft)
        self._peer_of[conv] = new
        self._conv_of[new] = conv
        self._wm.setdefault(conv, 0)
        self._read_seq[new] = self._read_seq.pop(old, 0)
        self.commit()
        return new

    def drop_pending_group(self, key: str) -> None:
        """A create given up before the server stored it: its conversation is gone."""
        self._begin()
        self._write_conversations()
        self._db.execute("DELETE FROM conversations WHERE peer=?", (key,))
        self._db.execute("DELETE FROM members WHERE peer=?", (key,))
        self._members.pop(key, None)
        self._db.execute("DELETE FROM meta WHERE key=?", ("draft:" + key,))
        self._read_seq.pop(key, None)
        self.commit()

    def begin_view(self, conv: str, seq: int) -> None:
        """An event that carries the member list is where our view of a group begins:
        the seqs below it are not ours to see, so the watermark may stand just below it."""
        if self._wm.get(conv, 0) < seq - 1:
            self._begin()
            self._wm[conv] = seq - 1
            self._wm_moved.add(conv)

    def recompute_group(self, peer: str, conv: str) -> tuple[bool, bool]:
        """Derive a group's members, title, creator and joined flag from its stored events.

        Base: the members of the latest stored event that carries them (created, or the
        added-of-me); then the later membership events in seq order. Called whenever a
        membership event is stored, since a gap filled later may hold one. Returns
        (joined before, joined after).
        """
        self._begin()
        before = self.joined(peer)
        base = self._db.execute(
            "SELECT seq, members FROM messages WHERE conv=? AND members IS NOT NULL"
            " ORDER BY seq DESC LIMIT 1",
            (conv,),
        ).fetchone()
        members: list[str] = []
        start = 0
        if base is not None:
            start = int(base[0])
            members = _members_decode.decode(str(base[1]))
        for kind, sender, user in self._db.execute(
            "SELECT kind, sender, user FROM messages WHERE conv=? AND seq>? AND kind IN (?, ?, ?)"
            " ORDER BY seq",
            (conv, start, MessageKind.ADDED, MessageKind.REMOVED, MessageKind.LEFT),
        ):
            who = str(user if user is not None else sender)
            if kind == MessageKind.ADDED:
                if who not in members:
                    members.append(who)
            elif who in members:
                members.remove(who)
        title_row = self._db.execute(
            "SELECT title FROM messages WHERE conv=? AND title IS NOT NULL"
            " ORDER BY seq DESC LIMIT 1",
            (conv,),
        ).fetchone()
        creator_row = self._db.execute(
            "SELECT sender FROM messages WHERE conv=? AND kind=? ORDER BY seq LIMIT 1",
            (conv, MessageKind.CREATED),
        ).fetchone()
        after = self.user in members
        self._set_members(peer, members)
        self._db.execute(
            "UPDATE conversations SET kind=?, title=coalesce(?, title),"
            " creator=coalesce(?, creator), joined=? WHERE peer=?",
            (
                ConvKind.GROUP.value,
                None if title_row is None else title_row[0],
                None if creator_row is None else creator_row[0],
                int(after),
                peer,
            ),
        )
        return before, after
