"""The failed-login throttle under attack: no stall for a normal client.

The claim that matters, that an attacker inventing 50,000 user names does not slow a
normal client down, is checked against a real ``tui-chat-server`` process with a real
attacker on real sockets. The class itself is unit-tested in tests/unit/test_login_throttle.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.serverproc import ServerProcess
from tests.support.wire import login, make_users, send_message
from tui_chat.protocol import Ack

# ---------------------------------------------------------------- under attack, for real


def _masked(payload: bytes, opcode: int) -> bytes:
    """One client frame (clients must mask), small enough for the 16-bit length form."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (
        bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _failed_login(host: str, port: int, user: str) -> None:
    """Handshake and hello in one write, read to the server's close frame, answer it.

    Raw bytes rather than a websockets client: the attacker must cost the test process
    little, so that the server, not the attacker, sets the pace.
    """
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    hello = json.dumps({"type": "hello", "v": 1, "user": user, "token": "guess"}).encode()
    writer.write(request + _masked(hello, 0x1))
    seen = b""
    try:
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                break
            seen += chunk
            body = seen.find(b"\r\n\r\n")
            # 0x88 starts the close frame; headers and the JSON error are ASCII.
            if body >= 0 and b"\x88" in seen[body:]:
                writer.write(_masked(b"\x03\xe8", 0x8))
                break
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert b"auth_failed" in seen, seen[-200:]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


ATTACK_NAMES = 50_000
# Allowed: 2x the idle figure plus this absolute slack (seconds), for the scheduling noise
# of a shared machine that is not the server's doing.
SLACK_P50 = 0.010
SLACK_P90 = 0.025


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_fifty_thousand_made_up_names_do_not_slow_a_normal_client(tmp_path: Path) -> None:
    db_path = tmp_path / "attacked.db"
    tokens = make_users(db_path, "alice", "bob")
    async with ServerProcess(db_path) as proc:
        alice, *_ = await login(proc.url, "alice", tokens["alice"])
        n = 0

        async def sample(stop: Callable[[], bool], pause: float = 0.01) -> list[float]:
            nonlocal n
            out: list[float] = []
            while not stop():
                n += 1
                started = time.monotonic()
                ack = await send_message(alice, f"m{n}", "bob", "steady", within=30)
                out.append(time.monotonic() - started)
                assert isinstance(ack, Ack), ack
                await asyncio.sleep(pause)
            return out

        def counted(k: int) -> Callable[[], bool]:
            start = n
            return lambda: n - start >= k

        try:
            idle_before = await sample(counted(150))
            done = asyncio.Event()
            attempts = 0

            async def attacker(worker: int, workers: int) -> None:
                nonlocal attempts
                for i in range(worker, ATTACK_NAMES, workers):
                    await _failed_login(proc.host, proc.port, f"made-up-{i}")
                    attempts += 1

            started = time.monotonic()
            attack = asyncio.gather(*(attacker(w, 4) for w in range(4)))
            attack.add_done_callback(lambda _f: done.set())
            under_attack = await sample(done.is_set)
            await attack
            attack_s = time.monotonic() - started
            idle_after = await sample(counted(150))
        finally:
            await alice.close()
    assert attempts == ATTACK_NAMES
    idle = idle_before + idle_after
    # The idle baseline is the slower of the two idle runs around the attack, so that a
    # machine that got busier meanwhile is not blamed on the server.
    idle_p50 = max(statistics.median(idle_before), statistics.median(idle_after))
    idle_p90 = max(_p(idle_before, 0.9), _p(idle_after, 0.9))
    p50, p90 = statistics.median(under_attack), _p(under_attack, 0.9)
    report = (
        f"{ATTACK_NAMES} failed logins in {attack_s:.1f} s ({ATTACK_NAMES / attack_s:.0f}/s); "
        f"acks idle p50 {idle_p50 * 1000:.1f} ms p90 {idle_p90 * 1000:.1f} ms "
        f"({len(idle)} samples); under attack p50 {p50 * 1000:.1f} ms p90 {p90 * 1000:.1f} ms "
        f"({len(under_attack)} samples); load {os.getloadavg()[0]:.1f}"
    )
    print(report)
    assert len(under_attack) >= 50, report
    assert p50 <= 2 * idle_p50 + SLACK_P50, report
    assert p90 <= 2 * idle_p90 + SLACK_P90, report
