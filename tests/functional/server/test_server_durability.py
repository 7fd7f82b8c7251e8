"""A real ``tui-chat-server`` process: crash safety (SIGKILL), clean shutdown (SIGTERM), CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.serverproc import ServerProcess, ServerStartError
from tests.support.wire import (
    STEP,
    connect_ws,
    db_rows,
    expect_closed,
    login,
    make_users,
    recv_frame,
    send_frame,
    send_message,
)
from tui_chat.protocol import Ack, CloseCode, Message, Send


async def test_acked_message_survives_sigkill_with_the_same_seq(
    server_process: ServerProcess,
) -> None:
    proc = server_process
    tokens = proc.tokens
    url = proc.url
    alice, welcome, *_ = await login(url, "alice", tokens["alice"])
    acks: list[Ack] = []
    try:
        for i in range(3):
            ack = await send_message(alice, f"k{i}", "bob", f"before crash {i}")
            assert isinstance(ack, Ack)
            acks.append(ack)
        # Pipeline a few more and kill the moment the last ack is in.
        for i in range(3, 10):
            await send_frame(alice, Send(client_id=f"k{i}", to="bob", body=f"before crash {i}"))
        while len(acks) < 10:
            frame = await recv_frame(alice)
            if isinstance(frame, Ack):
                acks.append(frame)
        assert proc.kill() == -9
    finally:
        await alice.close()
    assert [a.seq for a in acks] == list(range(1, 11))
    conv = acks[0].conv

    # The file alone already holds every acked message with its seq.
    rows = db_rows(proc.db_path, "SELECT seq, client_id, ts FROM messages ORDER BY seq")
    assert rows == [(a.seq, a.client_id, a.ts) for a in acks]

    port = proc.port
    await proc.arestart()
    assert proc.port == port
    assert proc.url == url
    bob, welcome2, replayed, synced = await login(url, "bob", tokens["bob"])
    try:
        assert welcome2.epoch == welcome.epoch
        assert [(m.seq, m.client_id, m.ts) for m in replayed] == [
            (a.seq, a.client_id, a.ts) for a in acks
        ]
        assert synced.cursors == {conv: 10}
        # Numbering continues after the crash, and a retry of an acked id is a duplicate.
        alice2, *_ = await login(url, "alice", tokens["alice"])
        try:
            retry = await send_message(alice2, "k9", "bob", "before crash 9")
            assert retry == Ack("k9", conv, 10, acks[9].ts, duplicate=True)
            nxt = await send_message(alice2, "k10", "bob", "after crash")
            assert isinstance(nxt, Ack) and (nxt.conv, nxt.seq) == (conv, 11)
        finally:
            await alice2.close()
        live = await recv_frame(bob)
        assert isinstance(live, Message) and live.seq == 11
    finally:
        await bob.close()


async def test_sigkill_mid_stream_loses_no_acked_message(server_process: ServerProcess) -> None:
    """Kill while sends are in flight: every acked message is stored, seqs stay gap-free."""
    proc = server_process
    tokens = proc.tokens
    alice, *_ = await login(proc.url, "alice", tokens["alice"])
    acks: list[Ack] = []
    try:
        for i in range(200):
            await send_frame(alice, Send(client_id=f"f{i}", to="carol", body=str(i)))
        while len(acks) < 20:
            frame = await recv_frame(alice)
            if isinstance(frame, Ack):
                acks.append(frame)
        await proc.akill()
    finally:
        await alice.close()
    rows = db_rows(proc.db_path, "SELECT seq, client_id FROM messages ORDER BY seq")
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(rows) + 1))
    stored = dict((cid, seq) for seq, cid in rows)
    for ack in acks:
        assert stored[ack.client_id] == ack.seq


async def test_sigterm_closes_clients_with_1012_and_exits_0(server_process: ServerProcess) -> None:
    proc = server_process
    tokens = proc.tokens
    alice, *_ = await login(proc.url, "alice", tokens["alice"])
    bob, *_ = await login(proc.url, "bob", tokens["bob"])
    bob2, *_ = await login(proc.url, "bob", tokens["bob"])
    try:
        ack = await send_message(alice, "last-words", "bob", "bye")
        assert isinstance(ack, Ack)
        started = time.monotonic()
        terminate = asyncio.create_task(proc.aterminate(grace=10))
        results = await asyncio.gather(*(expect_closed(ws, within=10) for ws in (alice, bob, bob2)))
        for code, _frames in results:
            assert code == CloseCode.SERVICE_RESTART == 1012
        assert await asyncio.wait_for(terminate, 15) == 0
        assert time.monotonic() - started < 5
    finally:
        for ws in (alice, bob, bob2):
            await ws.close()
    assert any("stopping" in line for line in proc.stdout_lines)
    assert db_rows(proc.db_path, "SELECT client_id FROM messages") == [("last-words",)]
    # It comes back on the same port with the same history.
    await proc.arestart()
    ws, _, replayed, _ = await login(proc.url, "bob", tokens["bob"])
    await ws.close()
    assert [m.client_id for m in replayed] == ["last-words"]


async def test_sigterm_does_not_wait_for_silent_or_stalled_clients(tmp_path: Path) -> None:
    """A connection that never says hello, or never reads, must not hold up shutdown."""
    tokens = make_users(tmp_path / "s.db", "alice", "bob")
    config = tmp_path / "server.toml"
    # Big bodies and no rate limit so that bob's path fills up; a huge outgoing queue so
    # that bob is not closed as too slow first.
    config.write_text(
        "[limits]\nrate = 100000.0\nburst = 100000\nmax_body = 60000\n"
        "max_frame = 262144\nmax_outgoing = 100000\n"
    )
    async with ServerProcess(tmp_path / "s.db", config=config) as proc:
        silent = await connect_ws(proc.url)  # no hello; the default hello timeout is 10 s
        stalled, *_ = await login(proc.url, "bob", tokens["bob"], max_queue=1)
        alice, *_ = await login(proc.url, "alice", tokens["alice"])
        try:
            # More than the loopback buffers hold (a few MB) while bob reads nothing.
            body = "w" * 60_000
            for i in range(250):
                await send_frame(alice, Send(client_id=f"w{i}", to="bob", body=body))
                if i % 20 == 19:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            started = time.monotonic()
            code = await proc.aterminate(grace=30)
            elapsed = time.monotonic() - started
            assert code == 0
            # The bound is the server's 2 s close timeout, not keepalive or hello timeouts.
            assert elapsed < 5, f"shutdown took {elapsed:.1f} s"
        finally:
            for ws in (silent, stalled, alice):
                ws.transport.abort()


def test_cli_add_user_prints_the_token_last(tmp_path: Path) -> None:
    db_path = tmp_path / "cli.db"
    out = subprocess.run(
        [sys.executable, "-m", "tui_chat.server.cli", "add-user", "dave", "--db", str(db_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    token = out.stdout.strip().splitlines()[-1]
    assert len(token) >= 40 and " " not in token
    # Only a hash is stored.
    rows = db_rows(db_path, "SELECT name, token_hash FROM users")
    assert rows[0][0] == "dave"
    assert token.encode() not in bytes(rows[0][1])
    # And the token logs in.
    with ServerProcess(db_path) as proc:

        async def check() -> str:
            done = await login(proc.url, "dave", token)
            await done.ws.close()
            return done.welcome.user

        assert asyncio.run(check()) == "dave"
    # A second add of the same name fails cleanly.
    again = subprocess.run(
        [sys.executable, "-m", "tui_chat.server.cli", "add-user", "dave", "--db", str(db_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_server_process_reports_a_failed_start(tmp_path: Path) -> None:
    bad_config = tmp_path / "server.toml"
    bad_config.write_text("[limits]\nno_such_setting = 1\n")
    proc = ServerProcess(tmp_path / "x.db", config=bad_config, start_timeout=STEP * 5)
    with pytest.raises(ServerStartError, match="exited before listening"):
        proc.start()
    assert proc.returncode == 2
    assert not proc.running


def test_server_process_restart_keeps_port(tmp_path: Path) -> None:
    make_users(tmp_path / "r.db", "alice")
    with ServerProcess(tmp_path / "r.db") as proc:
        first_port, first_pid = proc.port, proc.pid
        assert proc.url == f"ws://127.0.0.1:{first_port}"
        proc.restart()
        assert proc.port == first_port
        assert proc.pid != first_pid
        assert proc.terminate() == 0
        assert not proc.running
    assert proc.starts == 2
