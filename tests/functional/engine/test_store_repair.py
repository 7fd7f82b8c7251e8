"""A damaged local store: moved aside untouched, its readable outbox carried over, one line.

Every case damages a real SQLite file the real :class:`LocalStore` wrote: truncated,
random bytes over the header, random bytes over a page of the outbox or of the history,
a directory in its place, a text file. Which rows survive is computed from the file
itself (the page each row's body is on), not assumed.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
from pathlib import Path

import pytest

from harness.clientconf import client_config, write_client_toml
from tests.support.headless import HeadlessProc
from tests.support.wire import RunningServer
from tui_chat.core import store_repair
from tui_chat.core.models import OutState
from tui_chat.core.store import LocalStore, OutboxRow, StoreError

USER = "alice"
PAGE = 4096  # SQLite's default page size, which the store uses
STATES = [OutState.PENDING, OutState.FAILED, OutState.CANCELLING, OutState.SENT, OutState.GIVEN_UP]
OPEN = {OutState.PENDING, OutState.FAILED, OutState.CANCELLING}
OUTBOX_ROWS = 60
HISTORY = 3000


def body_of(i: int) -> str:
    return f"outbox-body-{i:03d}|" + "é" * 40 + "x" * 180


def build_store(path: Path) -> dict[str, tuple[str, str, OutState]]:
    """A store with 60 outbox rows in every state (several pages), a 3,000-message history,
    a read position and an epoch; closed (so the WAL is folded into the file).
    Returns client_id -> (peer, body, state) of the open rows."""
    store = LocalStore(path, USER)
    store.set_epoch("epoch-1")
    open_rows = {}
    for i in range(OUTBOX_ROWS):
        state = STATES[i % len(STATES)]
        peer = "bob" if i % 2 else "carol"
        row = OutboxRow(f"cid-{i:03d}", peer, body_of(i), 1_000 + i, store.next_ord(), state=state)
        if state is OutState.FAILED:
            row.error, row.retryable = "no answer", True
        store.add_outbox(row)
        if state in OPEN:
            open_rows[row.client_id] = (peer, row.body, state)
    store.ensure_conversation("bob", "c-bob")
    for seq in range(1, HISTORY + 1):
        store.insert_message(
            "c-bob", seq, "bob", USER, f"h{seq:05d}", f"history-{seq:05d}|" + "m" * 90, seq
        )
    store.advance_watermark("c-bob")
    store.mark_read("bob", 2000)
    store.commit()
    store.save_draft("bob", "half a thought")
    store.close()
    assert not path.with_name(path.name + "-wal").exists()
    return open_rows


def page_holding(data: bytes, text: str) -> int:
    at = data.find(text.encode())
    assert at >= 0, text
    return at // PAGE


def scribble(path: Path, offset: int, length: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(bytes(rng.randrange(256) for _ in range(length)))


def quick_check_fails(path: Path) -> bool:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA quick_check").fetchall() != [("ok",)]
    except sqlite3.DatabaseError:
        return True
    finally:
        db.close()


def aside(tmp_path: Path, path: Path) -> Path:
    [moved] = [
        p
        for p in tmp_path.iterdir()
        if p.name.startswith(path.name + ".damaged-") and not p.name.endswith(("-wal", "-shm"))
    ]
    return moved


def outbox_of(store: LocalStore) -> dict[str, tuple[str, str, OutState]]:
    return {r.client_id: (r.peer, r.body, r.state) for r in store.all_outbox()}


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / f"{USER}@host.sqlite3"


def reopen_and_check(
    tmp_path: Path, path: Path, damaged: bytes
) -> tuple[LocalStore, store_repair.StoreRepair, Path]:
    """Open the damaged store; check the damaged bytes went aside unchanged."""
    store = LocalStore(path, USER)
    report = store.repair_report
    assert report is not None
    moved = aside(tmp_path, path)
    assert moved.read_bytes() == damaged  # preserved byte for byte, never overwritten
    assert report.store == str(path) and report.moved_to == str(moved)
    assert "\n" not in report.line()
    assert not list(tmp_path.glob(".tui-chat-salvage-*"))  # the scratch copy is gone
    assert not path.with_name(path.name + ".repairing").exists()
    return store, report, moved


def test_a_healthy_store_opens_without_a_report(store_path: Path) -> None:
    build_store(store_path)
    store = LocalStore(store_path, USER)
    assert store.repair_report is None
    assert len(store.all_messages()) == HISTORY
    store.close()


def test_truncated_file_keeps_every_unsent_message(tmp_path: Path, store_path: Path) -> None:
    expected = build_store(store_path)
    data = store_path.read_bytes()
    last_outbox_page = max(page_holding(data, body_of(i)) for i in range(OUTBOX_ROWS))
    cut = len(data) // 2 + 123  # not even on a page boundary
    assert last_outbox_page * PAGE + PAGE < cut  # the outbox pages are all before the cut
    damaged = data[:cut]
    store_path.write_bytes(damaged)

    store, report, moved = reopen_and_check(tmp_path, store_path, damaged)
    assert outbox_of(store) == expected  # client ids, peers, bodies and states
    assert report.kept == len(expected) == 36 and report.lost == 0
    assert report.line() == (
        f"the local store {store_path} was damaged ({report.reason}): moved it to {moved};"
        " kept 36 unsent messages (all of them); the history will be fetched again from the"
        " server"
    )
    # The history is the server's: fetched again from a zero watermark.
    assert store.all_messages() == [] and store.watermarks() == {}
    # The read position and the epoch came along, so a re-fetch is not all "unread".
    assert store.epoch == "epoch-1" and store.conv_of("bob") == "c-bob"
    assert store.summary("bob", []).read_seq == 2000
    assert store.draft("bob") == "half a thought" and report.drafts == 1
    failed = store.outbox_row("cid-001")
    assert failed is not None and (failed.error, failed.retryable) == ("no answer", True)
    store.close()
    assert LocalStore(store_path, USER).repair_report is None  # fixed for good


def test_random_bytes_over_the_header_lose_nothing(tmp_path: Path, store_path: Path) -> None:
    expected = build_store(store_path)
    scribble(store_path, 0, 100, seed=1)
    damaged = store_path.read_bytes()

    store, report, _ = reopen_and_check(tmp_path, store_path, damaged)
    assert report.reason == "file is not a database"
    assert outbox_of(store) == expected
    assert (report.kept, report.lost) == (36, 0)
    store.close()


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_random_bytes_over_an_outbox_page_lose_only_that_page(
    tmp_path: Path, store_path: Path, seed: int
) -> None:
    expected = build_store(store_path)
    data = store_path.read_bytes()
    pages = {cid: page_holding(data, body) for cid, (_p, body, _s) in expected.items()}
    hit = sorted(set(pages.values()))[1]  # an outbox page in the middle of the table
    scribble(store_path, hit * PAGE, 64, seed)  # its b-tree header and cell pointers
    damaged = store_path.read_bytes()
    assert quick_check_fails(store_path)

    store, report, _ = reopen_and_check(tmp_path, store_path, damaged)
    survivors = {cid: row for cid, row in expected.items() if pages[cid] != hit}
    lost = {cid: row for cid, row in expected.items() if pages[cid] == hit}
    assert lost and survivors
    assert outbox_of(store) == survivors
    assert (report.kept, report.lost) == (len(survivors), len(lost))
    assert report.lost_peers == sorted({peer for peer, _b, _s in lost.values()})
    to = ", ".join(report.lost_peers)
    assert f"kept {len(survivors)} unsent messages; {len(lost)} unsent messages (to {to})" in (
        report.line()
    )
    store.close()


def test_random_bytes_over_a_history_page_keep_the_whole_outbox(
    tmp_path: Path, store_path: Path
) -> None:
    expected = build_store(store_path)
    data = store_path.read_bytes()
    scribble(store_path, page_holding(data, "history-01500|") * PAGE, 64, seed=5)
    assert quick_check_fails(store_path)
    damaged = store_path.read_bytes()

    store, report, _ = reopen_and_check(tmp_path, store_path, damaged)
    assert report.reason.startswith(("integrity check:", "database disk image is malformed"))
    assert outbox_of(store) == expected
    assert (report.kept, report.lost) == (36, 0)
    store.close()


def test_a_directory_in_its_place_is_moved_aside(tmp_path: Path, store_path: Path) -> None:
    store_path.mkdir()
    (store_path / "something").write_text("a user's file")
    store = LocalStore(store_path, USER)
    report = store.repair_report
    assert report is not None
    moved = aside(tmp_path, store_path)
    assert (moved / "something").read_text() == "a user's file"
    assert report.reason == "a directory is in its place"
    assert (report.kept, report.lost) == (0, None)
    assert "nothing could be read from it (any unsent messages are only in the damaged copy)" in (
        report.line()
    )
    assert store_path.is_file()
    store.close()


def test_a_text_file_is_moved_aside_and_a_fresh_store_works(
    tmp_path: Path, store_path: Path
) -> None:
    text = b"this is my shopping list, not a database\n" * 50
    store_path.write_bytes(text)
    store, report, _ = reopen_and_check(tmp_path, store_path, text)
    assert report.reason == "file is not a database"
    assert (report.kept, report.lost) == (0, None)
    store.add_outbox(OutboxRow("new", "bob", "works", 1, store.next_ord()))
    store.close()
    assert [r.client_id for r in LocalStore(store_path, USER).all_outbox()] == ["new"]


def test_two_repairs_in_one_second_never_share_a_name(tmp_path: Path, store_path: Path) -> None:
    for _ in range(2):
        store_path.write_bytes(b"garbage" * 100)
        LocalStore(store_path, USER).close()
    moved = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(("Z", "Z.1")))
    assert len(moved) == 2 and all((tmp_path / m).read_bytes() == b"garbage" * 100 for m in moved)


def test_the_wal_goes_aside_with_the_file_and_its_rows_are_read(
    tmp_path: Path, store_path: Path
) -> None:
    """Rows written since the last checkpoint live in the WAL: they must not be lost."""
    build_store(store_path)
    store = LocalStore(store_path, USER)
    store.add_outbox(OutboxRow("in-wal", "bob", "only in the WAL", 5, store.next_ord()))
    # Simulate a crash: copy the file set while this connection still holds the WAL.
    wal = store_path.with_name(store_path.name + "-wal")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    copy = crashed / store_path.name
    copy.write_bytes(store_path.read_bytes())
    (crashed / wal.name).write_bytes(wal.read_bytes())
    store.close()
    scribble(copy, 0, 100, seed=6)
    damaged_main, damaged_wal = copy.read_bytes(), (crashed / wal.name).read_bytes()

    repaired = LocalStore(copy, USER)
    assert repaired.repair_report is not None
    moved = aside(crashed, copy)
    assert moved.read_bytes() == damaged_main
    assert moved.with_name(moved.name + "-wal").read_bytes() == damaged_wal
    row = repaired.outbox_row("in-wal")
    assert row is not None and row.body == "only in the WAL"
    repaired.close()


def test_an_interrupted_repair_is_finished_at_the_next_open(
    tmp_path: Path, store_path: Path
) -> None:
    """Crash after the damaged file was moved but before the fresh one took its name."""
    expected = build_store(store_path)
    scribble(store_path, 0, 100, seed=7)
    damaged = store_path.read_bytes()
    fresh = store_path.with_name(store_path.name + ".repairing")
    moved = store_path.with_name(store_path.name + ".damaged-20260101T000000Z")

    def init(db: sqlite3.Connection, user: str) -> None:
        from tui_chat.core.store import _init_schema

        _init_schema(db, user)

    found = store_repair.salvage(store_path)
    report = store_repair.StoreRepair(str(store_path), str(moved), "test", len(found.outbox), 0)
    store_repair._write_fresh(fresh, USER, found, report, init)
    os.rename(store_path, moved)  # ... and the process dies here

    store = LocalStore(store_path, USER)
    assert store.repair_report == report  # the user still hears about it
    assert outbox_of(store) == expected
    assert moved.read_bytes() == damaged
    assert not fresh.exists()
    store.close()


def test_a_half_written_fresh_store_is_discarded(tmp_path: Path, store_path: Path) -> None:
    """Crash while the fresh store was being written: the damaged one is still in place."""
    expected = build_store(store_path)
    scribble(store_path, 0, 100, seed=8)
    fresh = store_path.with_name(store_path.name + ".repairing")
    fresh.write_bytes(b"half")
    store = LocalStore(store_path, USER)
    assert store.repair_report is not None
    assert outbox_of(store) == expected
    store.close()


def test_another_users_damaged_store_lends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "alice@host.sqlite3"
    store = LocalStore(path, "bob")  # a bob store under alice's name
    store.add_outbox(OutboxRow("bobs", "carol", "bob wrote this", 1, 1))
    store.close()
    scribble(path, 0, 100, seed=9)
    repaired = LocalStore(path, "alice")
    assert repaired.all_outbox() == []
    repaired.close()


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX here")
def test_the_lock_still_holds_during_and_after_a_repair(store_path: Path) -> None:
    store_path.write_bytes(b"not a database" * 100)
    first = LocalStore(store_path, USER)
    assert first.repair_report is not None
    with pytest.raises(StoreError, match="in use by another tui-chat"):
        LocalStore(store_path, USER)
    first.close()
    LocalStore(store_path, USER).close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes anything")
def test_an_unreadable_store_is_a_precise_error_not_a_repair(
    tmp_path: Path, store_path: Path
) -> None:
    build_store(store_path)
    store_path.chmod(0)
    try:
        with pytest.raises(StoreError, match="cannot open the local store"):
            LocalStore(store_path, USER)
        assert not list(tmp_path.glob("*.damaged-*"))
    finally:
        store_path.chmod(0o600)


async def test_headless_reports_a_damaged_store_in_one_line(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    cfg = client_config(tmp_path / "store", USER, chat_server.tokens[USER], chat_server.url)
    path = cfg.store_path()
    path.parent.mkdir(parents=True)
    expected = build_store(path)
    data = path.read_bytes()
    scribble(path, page_holding(data, "history-00700|") * PAGE, 64, seed=10)

    proc = await HeadlessProc.start(write_client_toml(tmp_path / "alice.toml", cfg))
    try:
        event = await proc.wait_line(lambda e: e.get("event") == "store_repaired", "report")
        await proc.close_stdin()
        assert await proc.wait_exit() == 0, proc.describe()
    finally:
        await proc.kill()
    moved = aside(path.parent, path)
    assert (event["store"], event["moved_to"], event["kept"], event["lost"]) == (
        str(path),
        str(moved),
        36,
        0,
    )
    assert len(proc.stderr) == 1, proc.stderr  # one line, and no traceback
    line = proc.stderr[0]
    assert line.startswith(f"tui-chat: warning: the local store {path} was damaged (")
    assert f"moved it to {moved}; kept 36 unsent messages (all of them)" in line
    after = LocalStore(path, USER)
    # Every unsent message is still there, none re-sent without consent (all were stale).
    assert set(outbox_of(after)) == set(expected)
    assert all(r.state is not OutState.SENT for r in after.all_outbox())
    after.close()


async def test_the_tui_shows_the_report_as_a_notification(tmp_path: Path) -> None:
    from tui_chat.core.config import UiSection
    from tui_chat.core.engine import Engine
    from tui_chat.ui.app import ChatApp

    cfg = client_config(tmp_path / "store", USER, "token", "ws://127.0.0.1:9")
    path = cfg.store_path()
    path.parent.mkdir(parents=True)
    build_store(path)
    scribble(path, 0, 100, seed=11)
    engine = Engine(cfg, "token")
    report = engine.store.repair_report
    assert report is not None
    app = ChatApp(engine, ui=UiSection(bell=False), run_engine=False)
    try:
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.pause()
            shown = [n for n in app._notifications if n.message == report.line()]
            assert len(shown) == 1 and shown[0].severity == "warning"
            # The carried messages are on screen, as failed (stale: they wait for the user).
            assert engine.conversation("bob").failed + engine.conversation("bob").pending > 0
    finally:
        engine.close()
