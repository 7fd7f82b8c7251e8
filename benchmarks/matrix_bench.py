"""The engine on Matrix (a real Synapse) beside the same engine on tui-chat-server.

Run from the repository root with the project's virtualenv (the test extra installs
Synapse)::

    .venv/bin/python benchmarks/matrix_bench.py                       # 50 sends, 5,000 missed
    .venv/bin/python benchmarks/matrix_bench.py --latency-messages 20 --missed 500   # quick

Both servers run as their own processes on 127.0.0.1 with temporary SQLite databases:
Synapse from ``harness/synapse.py`` (the tests' homeserver: SQLite, rate limits raised),
tui-chat-server from its CLI with ``[limits]`` raised. For each, in this process:

1. **send→sent**: an engine (``alice``) online; ``--latency-messages`` sequential sends to
   one conversation (a Matrix group room; a tui-chat DM), each timed from just before
   ``engine.send()`` (which commits the outbox row) to its ``MessageChanged`` with state
   ``sent``. On Matrix that is the PUT plus the event's return through /sync.
2. **catch-up**: ``bob``'s engine has synced once and stopped; ``--missed`` messages are
   then sent to him (outside the timed part: on Matrix through concurrent PUTs, on
   tui-chat through one websocket with pipelined ``send`` frames); bob's engine starts
   again on the same store and the clock runs from ``run()`` until ``Synced`` has been
   emitted and his store holds every missed message. On Matrix the /sync timeline holds
   50 events, so the rest is back-filled through ``/messages`` (100 per page).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    FAST_LIMITS,
    create_users,
    machine_info,
    median,
    percentile,
    start_server,
    stop_server,
    write_server_toml,
)
from websockets.asyncio.client import connect

from harness.synapse import Synapse
from tui_chat import protocol as p
from tui_chat.core.config import (
    AccountSection,
    ClientConfig,
    ServerSection,
    StorageSection,
)
from tui_chat.core.engine import Engine
from tui_chat.core.models import (
    GROUP_PREFIX,
    Event,
    MessageChanged,
    OutState,
    Synced,
)
from tui_chat.matrix.http import MatrixHttp

WAIT = 600.0


class Running:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.events: list[Event] = []
        self.sent: dict[str, float] = {}
        self.synced: float | None = None
        engine.subscribe(self._on)
        self.task = asyncio.create_task(engine.run())

    def _on(self, event: Event) -> None:
        if isinstance(event, MessageChanged) and event.message.state is OutState.SENT:
            self.sent.setdefault(event.message.client_id, time.perf_counter())
        elif isinstance(event, Synced) and self.synced is None:
            self.synced = time.perf_counter()

    async def stop(self) -> None:
        await self.engine.stop()
        await asyncio.wait_for(self.task, 30)
        self.engine.close()


async def until(cond: Callable[[], object], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.005)


async def latency(engine: Running, peer: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        cid = engine.engine.send(peer, f"latency {i}").client_id
        await until(lambda cid=cid: cid in engine.sent, "sent")
        out.append((engine.sent[cid] - t0) * 1000)
    return out


async def catch_up(make: Callable[[], Engine], count: Callable[[Engine], int], n: int) -> float:
    r = Running(make())
    t0 = time.perf_counter()
    await until(lambda: r.synced is not None and count(r.engine) >= n, "catch-up")
    took = time.perf_counter() - t0
    await r.stop()
    return took


def _cfg(user: str, token: str, url: str, store: Path, protocol: str) -> ClientConfig:
    return ClientConfig(
        server=ServerSection(protocol="matrix" if protocol == "matrix" else "tui-chat", url=url),
        account=AccountSection(user=user, token=token),
        storage=StorageSection(dir=str(store)),
    )


def _texts(engine: Engine, peer: str) -> int:
    conv = engine.store.conv_of(peer)
    if conv is None:
        return 0
    return int(engine.store.watermark(conv))


async def bench_matrix(tmp: Path, n_lat: int, missed: int) -> dict[str, Any]:
    with Synapse(tmp / "synapse") as hs:
        alice, bob = hs.register("alice"), hs.register("bob")
        http = MatrixHttp(hs.url, token=alice.access_token)
        room = await http.create_room(name="bench", invite=[bob.user_id])
        guest = MatrixHttp(hs.url, token=bob.access_token)
        await guest.join(room)
        await guest.aclose()
        key = GROUP_PREFIX + room

        def alice_engine() -> Engine:
            cfg = _cfg(alice.user_id, alice.access_token, hs.url, tmp / "m-alice", "matrix")
            return Engine(cfg, alice.access_token)

        def bob_engine() -> Engine:
            cfg = _cfg(bob.user_id, bob.access_token, hs.url, tmp / "m-bob", "matrix")
            return Engine(cfg, bob.access_token)

        a = Running(alice_engine())
        await until(lambda: a.engine.store.has_conversation(key), "alice online")
        lat = await latency(a, key, n_lat)
        await a.stop()
        base = await catch_up(bob_engine, lambda e: _texts(e, key), 1)
        b0 = Engine(
            _cfg(bob.user_id, bob.access_token, hs.url, tmp / "m-bob", "matrix"),
            bob.access_token,
        )
        held = _texts(b0, key)
        b0.close()
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(8)

        async def put(i: int) -> None:
            async with sem:
                await http.send_message(room, f"fill{i}", {"msgtype": "m.text", "body": f"m{i}"})

        await asyncio.gather(*(put(i) for i in range(missed)))
        fill = time.perf_counter() - t0
        await http.aclose()
        took = await catch_up(bob_engine, lambda e: _texts(e, key), held + missed)
        return {"latency_ms": lat, "catch_up_s": took, "fill_s": fill, "first_sync_s": base}


async def bench_tui_chat(tmp: Path, n_lat: int, missed: int) -> dict[str, Any]:
    db_path = tmp / "server.db"
    tokens = dict(create_users(db_path, ["alice", "bob"]))
    toml = tmp / "server.toml"
    write_server_toml(toml, {"limits": FAST_LIMITS})
    server = start_server(db_path, toml)
    try:
        url = server.url

        def engine(user: str) -> Engine:
            return Engine(
                _cfg(user, tokens[user], url, tmp / f"t-{user}", "tui-chat"), tokens[user]
            )

        a = Running(engine("alice"))
        await until(lambda: a.engine.status.state.value == "online", "alice online")
        lat = await latency(a, "bob", n_lat)
        await a.stop()
        base = await catch_up(lambda: engine("bob"), lambda e: _texts(e, "alice"), 1)
        b0 = engine("bob")
        held = _texts(b0, "alice")
        b0.close()
        t0 = time.perf_counter()
        async with connect(url, proxy=None, max_size=None) as ws:
            await ws.send(p.encode(p.Hello(v=1, user="alice", token=tokens["alice"])), text=True)
            await ws.recv()
            for i in range(missed):
                frame = p.Send(client_id=f"fill{i}", to="bob", body=f"m{i}")
                await ws.send(p.encode(frame), text=True)
            acks = 0
            while acks < missed:
                if isinstance(p.decode_server(await ws.recv()), p.Ack):
                    acks += 1
        fill = time.perf_counter() - t0
        took = await catch_up(lambda: engine("bob"), lambda e: _texts(e, "alice"), held + missed)
        return {"latency_ms": lat, "catch_up_s": took, "fill_s": fill, "first_sync_s": base}
    finally:
        stop_server(server)


def _line(name: str, r: dict[str, Any], missed: int) -> str:
    lat = r["latency_ms"]
    return (
        f"{name:<16} send→sent p50 {median(lat):7.1f} ms  p99 {percentile(lat, 99):7.1f} ms"
        f"   catch-up of {missed:,}: {r['catch_up_s']:6.2f} s"
        f" ({missed / r['catch_up_s']:,.0f} msg/s)"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency-messages", type=int, default=50)
    ap.add_argument("--missed", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="matrix-bench-") as d:
        tmp = Path(d)
        (tmp / "t").mkdir()
        (tmp / "m").mkdir()
        tui = await bench_tui_chat(tmp / "t", args.latency_messages, args.missed)
        mx = await bench_matrix(tmp / "m", args.latency_messages, args.missed)
    print(machine_info("nproc", "cpu", "python", "sqlite", "loadavg", "matrix-synapse"))
    print(_line("tui-chat-server", tui, args.missed))
    print(_line("Synapse", mx, args.missed))
    with contextlib.suppress(ZeroDivisionError):
        print(
            f"(filling the backlog took {tui['fill_s']:.1f} s on tui-chat-server,"
            f" {mx['fill_s']:.1f} s on Synapse; not timed)"
        )


if __name__ == "__main__":
    asyncio.run(main())
