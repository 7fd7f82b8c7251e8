"""A damaged local store: move it aside, carry its unsent messages into a fresh one.

The store holds two kinds of data. The history is the server's: a fresh store
fetches it again (its watermarks start at 0). The outbox is the user's only
copy of what they wrote and the server has not confirmed, so every outbox row
that can still be read is carried over, and the user is told in one line what
was kept and what could not be read. The damaged file is never overwritten: it
is renamed with a timestamp, byte for byte as it was, for a human to inspect.

Reading a damaged file happens on a scratch copy (SQLite may write to a file it
opens, e.g. to fold its WAL back in), through SQLite, row by row so that one
damaged page costs only the rows on it. A file whose 100-byte header is damaged
is read with a rebuilt header: the pages behind it are usually intact.

The steps are ordered so that a crash at any point loses nothing: the fresh
store is built completely under a temporary name (``*.repairing``) before the
damaged file is moved, and it records where the damaged copy went, so an
interrupted repair is finished at the next open (:func:`finish_interrupted`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import msgspec

# SQLite's primary result codes that mean "the bytes are wrong", as opposed to
# "cannot open / no space / busy", which no repair would fix.
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26

# Outbox states a user still has to hear about; sent and given-up rows are settled.
CARRIED_STATES: Final = ("pending", "failed", "cancelling")
# The outbox columns carried over, in the order of the fresh store's insert.
OUTBOX_COLUMNS: Final = (
    "client_id",
    "peer",
    "body",
    "created_at",
    "fresh_since",
    "ord",
    "attempts",
    "state",
    "error",
    "retryable",
    # Added with groups (what the row asks: send, create, add …); an older file lacks them.
    "op",
    "arg",
)
# What a store from before groups stands for in those columns: every row was a send.
_OLD_DEFAULTS: Final = {"op": "'send'", "arg": "NULL"}
# Bounds the skip-ahead over damaged pages of the outbox (each try doubles the jump).
_MAX_SKIPS: Final = 200
_SIBLINGS: Final = ("-wal", "-shm", "-journal")
REPAIR_META_KEY: Final = "repaired_from"


class StoreDamaged(Exception):
    """The file at the store's path cannot be used as a store; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_damage(exc: BaseException) -> bool:
    """True for SQLite errors that mean the file's bytes are damaged (or not a database)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and code is not None
        and (code & 0xFF)
        in (
            _SQLITE_CORRUPT,
            _SQLITE_NOTADB,
        )
    )


class StoreRepair(msgspec.Struct, frozen=True):
    """What happened to a damaged store at open: shown once to the user."""

    store: str  # the store's path (now a fresh store)
    moved_to: str  # where the damaged file (and its -wal/-shm) went
    reason: str  # why it was judged damaged (SQLite's words, or "not a regular file")
    kept: int  # unsent messages carried into the fresh store
    # Unsent messages the damaged file's index lists but whose rows could not be read;
    # None when not even that is known (the outbox itself could not be fully read).
    lost: int | None
    lost_peers: list[str] = []  # to whom the lost ones were written, when known
    read_positions: int = 0  # conversations whose read position was carried over
    drafts: int = 0  # drafts carried over

    def line(self) -> str:
        """The one line the user is shown (stderr for headless, a toast in the TUI)."""
        kept = _count(self.kept, "unsent message")
        if self.lost == 0:
            outcome = f"kept {kept} (all of them)"
        elif self.lost is not None:
            to = f" (to {', '.join(self.lost_peers)})" if self.lost_peers else ""
            lost = _count(self.lost, "unsent message")
            outcome = f"kept {kept}; {lost}{to} could not be read"
        elif self.kept:
            outcome = (
                f"kept {kept}; part of its outbox could not be read (any other unsent"
                " messages are only in the damaged copy)"
            )
        else:
            outcome = (
                "nothing could be read from it (any unsent messages are only in the damaged copy)"
            )
        return (
            f"the local store {self.store} was damaged ({self.reason}): moved it to"
            f" {self.moved_to}; {outcome}; the history will be fetched again from the server"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# ====================================================================== salvage


class Salvage(msgspec.Struct):
    """What could be read from a damaged store."""

    owner: str | None = None
    epoch: str | None = None
    drafts: list[tuple[str, str]] = []  # meta rows "draft:<peer>": what the user was typing
    # (peer, conv, read_seq, peer_read_seq, last_ts) per conversation that could be read.
    conversations: list[tuple[str, str | None, int, int, int]] = []
    outbox: list[tuple[object, ...]] = []  # OUTBOX_COLUMNS values, open rows only
    lost: int | None = 0
    lost_peers: list[str] = []


def _valid_outbox_row(values: tuple[object, ...]) -> bool:
    """A row whose fields have the types the store writes (damage can return garbage)."""
    cid, peer, body, created, fresh, ord_, attempts, state, error, retryable, op, arg = values
    ints = (created, fresh, ord_, attempts, retryable)
    return (
        isinstance(op, str)
        and (arg is None or isinstance(arg, str))
        and isinstance(cid, str)
        and bool(cid)
        and isinstance(peer, str)
        and bool(peer)
        and isinstance(body, str)
        and all(isinstance(v, int) for v in ints)
        and state in CARRIED_STATES
        and (error is None or isinstance(error, str))
    )


def _select_columns(db: sqlite3.Connection) -> str:
    """OUTBOX_COLUMNS as a select list; a column the damaged file lacks reads as its
    default (a store from before that column)."""
    try:
        have = {str(r[1]) for r in db.execute("PRAGMA table_info(outbox)")}
    except sqlite3.DatabaseError:
        have = set(OUTBOX_COLUMNS)
    if not have:
        have = set(OUTBOX_COLUMNS)
    return ", ".join(
        c if c in have or c not in _OLD_DEFAULTS else f"{_OLD_DEFAULTS[c]} AS {c}"
        for c in OUTBOX_COLUMNS
    )


def _read_outbox(db: sqlite3.Connection, salvage: Salvage) -> None:
    cols = _select_columns(db)
    rows: dict[int, tuple[object, ...]] = {}
    complete = True
    # 1. Scan the table in rowid order; past a damaged page, jump ahead (doubling) and go on.
    after, skip = -(2**63), 1
    for _ in range(_MAX_SKIPS):
        try:
            for rowid, *values in db.execute(
                f"SELECT rowid, {cols} FROM outbox WHERE rowid > ? ORDER BY rowid", (after,)
            ):
                after, skip = rowid, 1
                if _valid_outbox_row(tuple(values)):
                    rows[rowid] = tuple(values)
            break
        except sqlite3.DatabaseError:
            complete = False
            if after < 0:
                after = 0  # rowids start at 1: try the whole range once more
            else:
                after += skip
                skip *= 2
    # 2. The index of open rows (state, peer, ord) is its own b-tree: it names the open
    #    rows even when table pages are damaged, so each one is looked up by rowid.
    listed: dict[int, str] | None = {}
    try:
        listed = {
            rowid: str(peer)
            for rowid, peer in db.execute(
                "SELECT rowid, peer FROM outbox INDEXED BY outbox_open WHERE state IN (?, ?, ?)",
                CARRIED_STATES,
            )
        }
    except sqlite3.DatabaseError:
        listed = None
    for rowid in [] if listed is None else sorted(set(listed) - set(rows)):
        with contextlib.suppress(sqlite3.DatabaseError):
            found = db.execute(f"SELECT {cols} FROM outbox WHERE rowid=?", (rowid,)).fetchone()
            if found is not None and _valid_outbox_row(tuple(found)):
                rows[rowid] = tuple(found)
    salvage.outbox = [rows[r] for r in sorted(rows)]
    if complete:
        salvage.lost = 0
    elif listed is None:
        salvage.lost = None
    else:
        missing = [listed[r] for r in listed if r not in rows]
        salvage.lost = len(missing)
        salvage.lost_peers = sorted(set(missing))


def _read_small_tables(db: sqlite3.Connection, salvage: Salvage) -> None:
    """Owner, epoch, drafts and read positions: each read on its own; what fails is
    left out."""
    with contextlib.suppress(sqlite3.DatabaseError):
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('user', 'epoch')"))
        salvage.owner = meta.get("user")
        salvage.epoch = meta.get("epoch")
    with contextlib.suppress(sqlite3.DatabaseError):
        salvage.drafts = [
            (key, value)
            for key, value in db.execute("SELECT key, value FROM meta WHERE key LIKE 'draft:%'")
            if isinstance(key, str) and isinstance(value, str)
        ]
    conversations = []
    with contextlib.suppress(sqlite3.DatabaseError):
        for peer, conv, read_seq, peer_read, last_ts in db.execute(
            "SELECT peer, conv, read_seq, peer_read_seq, last_ts FROM conversations"
        ):
            if isinstance(peer, str) and all(
                isinstance(v, int) for v in (read_seq, peer_read, last_ts)
            ):
                conversations.append(
                    (peer, conv if isinstance(conv, str) else None, read_seq, peer_read, last_ts)
                )
    salvage.conversations = conversations


_HEADER: Final = b"SQLite format 3\x00"


def _rebuild_header(path: Path, wal: bool) -> bool:
    """Write a plausible 100-byte header over a damaged one; False if no page size fits.

    Page 1 holds the schema's b-tree right after the header, so a page size is
    plausible when the file is a whole number of pages and byte 100 starts a table
    b-tree page (0x0D leaf, 0x05 interior). Free-page lists are dropped (read only).
    """
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(100)
        kind = f.read(1)
        if kind not in (b"\x0d", b"\x05"):
            return False
        # The store's own size (SQLite's default) first; a truncated file has a partial
        # last page, so whole-page sizes are only preferred.
        sizes = [s for s in (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512) if size >= s]
        whole = [s for s in sizes if size % s == 0]
        if not sizes:
            return False
        page_size = (whole or sizes)[0]
        mode = 2 if wal else 1
        header = bytearray(100)
        header[0:16] = _HEADER
        struct.pack_into(">H", header, 16, 1 if page_size == 65536 else page_size)
        header[18], header[19], header[20] = mode, mode, 0
        header[21], header[22], header[23] = 64, 32, 32
        struct.pack_into(">I", header, 24, 1)  # change counter ...
        struct.pack_into(">I", header, 28, size // page_size)
        struct.pack_into(">I", header, 40, 1)  # schema cookie
        struct.pack_into(">I", header, 44, 4)  # schema format
        struct.pack_into(">I", header, 56, 1)  # UTF-8
        struct.pack_into(">I", header, 92, 1)  # ... matches: the page count is valid
        struct.pack_into(">I", header, 96, sqlite3.sqlite_version_info[0] * 1_000_000)
        f.seek(0)
        f.write(header)
    return True


@contextlib.contextmanager
def _scratch_copy(path: Path) -> Iterator[Path]:
    """A copy of the damaged file and its WAL, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix=".tui-chat-salvage-", dir=path.parent) as tmp:
        copy = Path(tmp) / "damaged.sqlite3"
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + "-wal")
        if wal.is_file():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        yield copy


def salvage(path: Path) -> Salvage:
    """Read what can be read from the damaged store at ``path`` (left untouched)."""
    found = Salvage(lost=None)
    if not path.is_file():
        return found  # a directory or other non-file: nothing to read
    with _scratch_copy(path) as copy:
        for attempt in range(2):
            db = sqlite3.connect(copy, isolation_level=None)
            # Past a truncation the header counts more pages than the file has; SQLite
            # then refuses the file unless the schema is "writable" (it is only read).
            db.execute("PRAGMA writable_schema=ON")
            try:
                db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            except sqlite3.DatabaseError as exc:
                db.close()
                wal = copy.with_name(copy.name + "-wal").exists()
                if attempt == 0 and is_damage(exc) and _rebuild_header(copy, wal):
                    continue
                return found
            try:
                _read_small_tables(db, found)
                _read_outbox(db, found)
            finally:
                db.close()
            return found
    return found


# ====================================================================== the repair


def _aside_name(path: Path) -> Path:
    """``<name>.damaged-<UTC time>`` (with a counter if taken): never an existing name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        candidate = path.with_name(f"{path.name}.damaged-{stamp}" + (f".{n}" if n else ""))
        if not any(
            os.path.lexists(candidate.with_name(candidate.name + s)) for s in ("", *_SIBLINGS)
        ):
            return candidate
    raise StoreDamaged(f"no free name to move {path} aside")


def _move_siblings(path: Path, dest: Path) -> None:
    for suffix in _SIBLINGS:
        src = path.with_name(path.name + suffix)
        target = dest.with_name(dest.name + suffix)
        if os.path.lexists(src) and not os.path.lexists(target):
            os.rename(src, target)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _repairing_name(path: Path) -> Path:
    return path.with_name(path.name + ".repairing")


def _remove_db_files(path: Path) -> None:
    for suffix in ("", *_SIBLINGS):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def _write_fresh(
    dest: Path,
    user: str,
    found: Salvage,
    report: StoreRepair,
    init_schema: Callable[[sqlite3.Connection, str], None],
) -> None:
    db = sqlite3.connect(dest, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        init_schema(db, user)
        if found.epoch is not None:
            # With the epoch kept, a server whose history was reset meanwhile still
            # makes the engine drop the conversation ids carried below.
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('epoch', ?)", (found.epoch,)
            )
        db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", found.drafts)
        db.executemany(
            "INSERT OR IGNORE INTO conversations(peer, conv, read_seq, peer_read_seq, last_ts)"
            " VALUES (?, ?, ?, ?, ?)",
            found.conversations,
        )
        cols = ", ".join(OUTBOX_COLUMNS)
        marks = ", ".join("?" * len(OUTBOX_COLUMNS))
        for row in found.outbox:
            db.execute("INSERT OR IGNORE INTO conversations(peer) VALUES (?)", (row[1],))
            db.execute(f"INSERT OR IGNORE INTO outbox({cols}) VALUES ({marks})", row)
        db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            (REPAIR_META_KEY, msgspec.json.encode(report).decode()),
        )
        db.execute("COMMIT")
    finally:
        db.close()  # the last connection: the WAL is folded in and removed


def repair(
    path: Path, user: str, reason: str, init_schema: Callable[[sqlite3.Connection, str], None]
) -> StoreRepair:
    """Replace the damaged store at ``path`` by a fresh one holding its readable outbox.

    ``init_schema(db, user)`` creates the store's tables and owner in an open
    transaction. The caller holds the store's lock.
    """
    found = salvage(path)
    if found.owner not in (None, user):
        # Another account's messages must not be sent as this one's.
        found = Salvage(lost=None)
    moved = _aside_name(path)
    report = StoreRepair(
        store=str(path),
        moved_to=str(moved),
        reason=reason,
        kept=len(found.outbox),
        lost=found.lost,
        lost_peers=found.lost_peers,
        read_positions=sum(1 for c in found.conversations if c[2] > 0),
        drafts=len(found.drafts),
    )
    fresh = _repairing_name(path)
    _remove_db_files(fresh)
    _write_fresh(fresh, user, found, report, init_schema)
    # Main file first, its WAL after: a crash in between leaves a WAL beside no
    # database, which finish_interrupted() moves after it (it knows the name).
    os.rename(path, moved)
    _move_siblings(path, moved)
    os.rename(fresh, path)
    _fsync_dir(path.parent)
    return report


def finish_interrupted(path: Path) -> StoreRepair | None:
    """Complete a repair a crash interrupted (see the module doc); None if there was none."""
    fresh = _repairing_name(path)
    if not fresh.exists():
        return None
    if os.path.lexists(path):
        # The damaged store is still in place: the fresh one may be half written.
        _remove_db_files(fresh)
        return None
    try:
        db = sqlite3.connect(fresh)
        try:
            row = db.execute("SELECT value FROM meta WHERE key=?", (REPAIR_META_KEY,)).fetchone()
        finally:
            db.close()
        report = msgspec.json.decode(row[0], type=StoreRepair)
    except (sqlite3.Error, msgspec.DecodeError, TypeError):
        # Not one this module finished writing: what it held is still in the moved copy.
        _remove_db_files(fresh)
        return None
    _move_siblings(path, Path(report.moved_to))
    os.rename(fresh, path)
    _fsync_dir(path.parent)
    return report
