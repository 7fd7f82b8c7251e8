"""One SQLite node against one PostgreSQL node against two PostgreSQL nodes.

``--pairs`` sender/receiver pairs of raw websocket clients; each sender keeps ``--window``
sends in flight to its receiver (closed loop) for ``--duration`` seconds. With two nodes,
every sender is on the other node from its receiver, so every message crosses the bus and
is read back from the store. Reported per setup: durable (acked) messages/s, delivered
messages/s, and delivery latency (the receiver's clock minus the message's commit ``ts``).

The throwaway PostgreSQL runs with ``fsync=off`` (harness.pgredis), SQLite with its default
``synchronous=FULL``: the comparison is of the servers' paths, not of two disks. The load
generator is one process on the same machine; its CPU competes with the servers'.

    .venv/bin/python benchmarks/nodes_bench.py --pairs 10 --window 20 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import numbered_users, write_server_toml  # noqa: E402
from harness.pgredis import PgCluster, RedisServer  # noqa: E402
from harness.serverproc import ServerProcess  # noqa: E402
from tests.support.wire import login, make_users, send_frame  # noqa: E402
from tui_chat.protocol import Ack, Message, Send, decode_server  # noqa: E402


async def _pair(
    sender_url: str,
    receiver_url: str,
    names: tuple[str, str],
    tokens: dict[str, str],
    window: int,
    duration: float,
    out: dict[str, Any],
) -> None:
    s_name, r_name = names
    sender = await login(sender_url, s_name, tokens[s_name])
    receiver = await login(receiver_url, r_name, tokens[r_name])
    stop_at = time.monotonic() + duration
    acked = 0
    delivered = 0
    latencies: list[float] = []
    n = 0

    async def send_one() -> None:
        nonlocal n
        n += 1
        await send_frame(sender.ws, Send(client_id=f"{s_name}-{n}", to=r_name, body="x" * 40))

    async def acks() -> None:
        nonlocal acked
        for _ in range(window):
            await send_one()
        async for raw in sender.ws:
            if isinstance(decode_server(raw), Ack):
                acked += 1
                if time.monotonic() < stop_at:
                    await send_one()
                elif acked >= n:
                    return

    async def receive() -> None:
        nonlocal delivered
        async for raw in receiver.ws:
            frame = decode_server(raw)
            if isinstance(frame, Message):
                delivered += 1
                latencies.append(time.time() * 1000 - frame.ts)
                if delivered >= n and time.monotonic() >= stop_at:
                    return

    rx = asyncio.create_task(receive())
    await asyncio.wait_for(acks(), duration + 60)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(rx, 30)
    await sender.ws.close()
    await receiver.ws.close()
    out["acked"] += acked
    out["delivered"] += delivered
    out["latencies"] += latencies


async def _measure(
    urls: list[str], tokens: dict[str, str], pairs: int, window: int, duration: float
) -> dict[str, float]:
    out: dict[str, Any] = {"acked": 0, "delivered": 0, "latencies": []}
    users = numbered_users(2 * pairs)
    started = time.monotonic()
    await asyncio.gather(
        *(
            _pair(
                urls[i % len(urls)],
                urls[(i + 1) % len(urls)],
                (users[2 * i], users[2 * i + 1]),
                tokens,
                window,
                duration,
                out,
            )
            for i in range(pairs)
        )
    )
    elapsed = time.monotonic() - started
    lat = sorted(out["latencies"]) or [0.0]
    return {
        "acked_per_s": out["acked"] / duration,
        "delivered_per_s": out["delivered"] / elapsed,
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--setups", default="sqlite,pg1,pg2")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="nodes-bench-"))
    toml = work / "server.toml"
    write_server_toml(toml, {"limits": {"rate": 100000, "burst": 100000}})
    pg = PgCluster.start_new()
    bus = RedisServer.start_new()
    names = numbered_users(2 * args.pairs)
    try:
        for setup in args.setups.split(","):
            count = {"sqlite": 1, "pg1": 1, "pg2": 2}[setup]
            store = None if setup == "sqlite" else pg.create_database(f"bench_{setup}")
            db_path = work / f"{setup}.db"
            tokens = make_users(store or db_path, *names)
            nodes = [
                ServerProcess(db_path, config=toml, store=store, bus=store and bus.url)
                for _ in range(count)
            ]
            for node in nodes:
                node.start()
            try:
                result = asyncio.run(
                    _measure([n.url for n in nodes], tokens, args.pairs, args.window, args.duration)
                )
            finally:
                for node in nodes:
                    node.close()
            print(
                f"{setup:7s} acked {result['acked_per_s']:8.0f} msg/s   delivered"
                f" {result['delivered_per_s']:8.0f} msg/s   delivery p50 {result['p50_ms']:6.1f} ms"
                f"  p99 {result['p99_ms']:6.1f} ms",
                flush=True,
            )
    finally:
        pg.destroy()
        bus.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
