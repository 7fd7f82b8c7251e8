"""The PostgreSQL store itself: migrate --from-db, the one-round-trip batch, the schema."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psycopg

from tests.support.wire import login, make_users, send_message
from tui_chat.protocol import Ack, Cancel, Cancelled, ErrorCode, Reject
from tui_chat.server.app import ChatServer
from tui_chat.server.pg.writer import PgWriter


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui_chat.server.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_migrate_copies_an_sqlite_service_with_its_epoch(tmp_path: Path, pg_url: str) -> None:
    db_path = tmp_path / "old.db"
    tokens = make_users(db_path, "alice", "bob")
    old = ChatServer(db_path)
    await old.start()
    try:
        alice = await login(old.url, "alice", tokens["alice"])
        for i in range(3):
            assert isinstance(await send_message(alice.ws, f"m-{i}", "bob"), Ack)
        await alice.ws.close()
        epoch = old.epoch
    finally:
        await old.stop()
    code, out, err = await _cli("migrate", "--from-db", str(db_path), "--store", pg_url)
    assert code == 0, err
    assert f"(epoch {epoch})" in out
    # Again into the now non-empty store: refused, nothing changed.
    code, _out, err = await _cli("migrate", "--from-db", str(db_path), "--store", pg_url)
    assert code == 2 and "is not empty" in err and "Traceback" not in err
    node = ChatServer(tmp_path / "unused.db", store=pg_url)
    await node.start()
    try:
        assert node.epoch == epoch
        # Same accounts and tokens, same history and seqs; the registry came along too.
        bob = await login(node.url, "bob", tokens["bob"])
        assert [m.client_id for m in bob.replayed] == ["m-0", "m-1", "m-2"]
        alice = await login(node.url, "alice", tokens["alice"])
        dup = await send_message(alice.ws, "m-1", "bob")
        assert isinstance(dup, Ack) and dup.duplicate and dup.seq == 2
        new = await send_message(alice.ws, "m-3", "bob")
        assert isinstance(new, Ack) and new.seq == 4
        # New accounts get new ids (the identity continues after the copied ones).
        code, _out, err = await _cli("add-user", "carol", "--store", pg_url)
        assert code == 0, err
        await alice.ws.close()
        await bob.ws.close()
    finally:
        await node.stop()


async def test_direct_batches_take_one_round_trip_and_decide_as_the_writer(
    tmp_path: Path, pg_url: str
) -> None:
    """After the first batch (which fills the writer's account caches), sends to people go
    through the batch function: new, duplicate, within-batch duplicate, and tombstoned."""
    tokens = make_users(pg_url, "alice", "bob")
    node = ChatServer(tmp_path / "unused.db", store=pg_url)
    await node.start()
    try:
        writer = node._writer
        assert isinstance(writer, PgWriter)
        alice = await login(node.url, "alice", tokens["alice"])
        assert isinstance(await send_message(alice.ws, "warm", "bob"), Ack)
        from tests.support.wire import recv_until, send_frame

        await send_frame(alice.ws, Cancel(client_id="gone"))
        await recv_until(alice.ws, Cancelled)
        before = writer.fast_batches
        for i in range(20):
            ack = await send_message(alice.ws, f"f-{i}", "bob")
            assert isinstance(ack, Ack) and ack.seq == i + 2
        dup = await send_message(alice.ws, "f-3", "bob")
        assert isinstance(dup, Ack) and dup.duplicate and dup.seq == 5
        gone = await send_message(alice.ws, "gone", "bob")
        assert isinstance(gone, Reject) and gone.code == ErrorCode.CANCELLED
        assert writer.fast_batches >= before + 20
        await alice.ws.close()
    finally:
        await node.stop()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT seq FROM messages ORDER BY seq").fetchall()
        assert [r[0] for r in rows] == list(range(1, 22))
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert versions == [(1,)]
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
