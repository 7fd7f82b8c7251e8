"""Client engine benchmark: catch-up after a long absence, and send→sent latency.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/catchup_bench.py              # the three scenarios, 3 repeats
    .venv/bin/python benchmarks/catchup_bench.py --scenario 50000:1 --scenario 500000:1
    .venv/bin/python benchmarks/catchup_bench.py --messages 5000 --latency-messages 50 \\
        --repeat 1                                             # smoke: one scenario

Scenarios (``--scenario MESSAGES:CONVERSATIONS``, repeatable; ``--messages`` and
``--conversations`` give one): by default 50,000 messages in one conversation, 500,000 in
one conversation (the catch-up must scale: at least ``TARGET_SCALING`` of the 50,000 rate)
and 50,000 spread over 1,000 conversations. Each has its own server database and server.

What runs, all on 127.0.0.1:

* the server: the real ``tui-chat-server serve`` CLI as a separate OS process (its CPU is
  not in the client's process), on a temporary SQLite database, default durability
  (``synchronous=FULL``, group commit), with a generated ``server.toml`` that raises the
  per-connection rate limit (``[limits] rate = burst = 100000``);
* the server's database is filled *directly* before the server starts (not through the
  server: that would take minutes and measure the server's writer, which is not the
  subject here). It is written with the schema and semantics of
  ``tui_chat/server/writer.py``: one ``conversations`` row per (peer, reader) pair with
  canonical member order, ``"c" + 12 hex`` ids and ``last_seq``; messages with seq
  ``1..n`` per conversation, unique 22-character client ids, bodies of 20-200 characters,
  increasing timestamps. A scenario's messages are spread round-robin over its
  conversations' peers, all addressed to the user ``reader``.

Every repeat measures, in this process (the client side):

1. **engine catch-up**: a fresh local store (the reader's engine has never connected, so
   its watermarks are empty), ``Engine.run()`` started; the clock runs from ``run()`` (it
   connects) until the ``Synced`` event has been emitted, the store has no open
   transaction and ``store.watermarks()`` equals the server's ``last_seq`` of every
   conversation. Afterwards (untimed) a separate SQLite connection checks the committed
   store holds every message with the right watermarks.
2. **decode floor**: ``tui_chat.protocol.decode_server`` over the same messages as the exact
   ``message`` frames the server sends (encoded with ``tui_chat.protocol.encode``), no I/O.
3. **raw receive floor**: a bare ``websockets`` client (same connect options as the engine)
   sends the ``hello`` with no cursors and ``replay_pages`` (as the engine does) and receives
   + decodes every frame until ``synced``; no store, no events. This includes the server's
   own replay speed, so it is the floor for anything a client can do with this server. The
   same without ``replay_pages`` (one ``message`` frame per message, what an older client
   gets) is printed below it: the per-frame cost that paged replay removes.
4. **send→sent latency**, after the catch-up: an engine logged in as ``lat_e`` and a bare
   websocket client logged in as ``lat_b`` (both online, both sending to user ``sink``)
   alternate ``--latency-messages`` sequential sends: the engine's from just before
   ``engine.send()`` (which commits the outbox row durably before it returns) to the
   ``MessageChanged`` event with state ``sent``; the bare client's from the ``send`` frame
   to its ``ack``. Alternating one by one keeps the server and disk in the same state for
   both.

Figures are medians over ``--repeat``; one warm-up raw receive runs first so the server's
page cache is warm for everyone. The latency part runs in the first scenario only. The
1-minute load average is printed beside every repeat: on a shared machine it explains the
spread, and the decode floor measured in the same repeat scales with it.
``--profile FILE`` wraps the engine catch-up of the first scenario's first repeat in
cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import random
import secrets
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    FAST_LIMITS,
    ServerProcess,
    client_config,
    machine_info,
    median,
    percentile,
    proc_cpu_seconds,
    random_body,
    random_client_id,
    start_server,
    stop_server,
    write_json,
    write_server_toml,
)
from websockets.asyncio.client import connect

from tui_chat import protocol as p
from tui_chat.core.engine import Engine
from tui_chat.core.models import Event, MessageChanged, OutState, Synced
from tui_chat.core.store import LocalStore
from tui_chat.core.ws_transport import MAX_FRAME
from tui_chat.server import db

TARGET_RATE = 30_000.0  # messages/s for the engine catch-up of 50,000 in one conversation
TARGET_SCALING = 0.8  # rate of 500,000 in one conversation / rate of 50,000
READER = "reader"
DEFAULT_SCENARIOS = ("50000:1", "500000:1", "50000:1000")

# ===================================================================== server side


def fill_server_db(path: Path, messages: int, conversations: int, seed: int) -> dict[str, Any]:
    """Create users and write the backlog with the writer's schema and semantics.

    Returns the tokens and, per conversation id, its ``last_seq``.
    """
    path.parent.mkdir(exist_ok=True)
    conn, _epoch = db.open_db(path)
    rng = random.Random(seed)
    tokens: dict[str, str] = {}
    peers = [f"peer{i:03d}" for i in range(conversations)]
    conn.execute("BEGIN IMMEDIATE")
    for name in [READER, "lat_e", "lat_b", "sink", *peers]:
        tokens[name] = db.add_user(conn, name)
    convs: list[tuple[str, str]] = []  # (conv id, peer)
    for peer in peers:
        conv = "c" + secrets.token_hex(6)
        a, b = p.direct_conv_members(peer, READER)
        conn.execute(
            "INSERT INTO conversations(id, user_a, user_b, last_seq, a_id, b_id) "
            "VALUES (?, ?, ?, 0, ?, ?)",
            (conv, a, b, db.account_id(conn, a), db.account_id(conn, b)),
        )
        convs.append((conv, peer))
    last: dict[str, int] = {c: 0 for c, _ in convs}
    ts0 = db.now_ms() - messages * 10
    rows = []
    for i in range(messages):
        conv, peer = convs[i % conversations]
        last[conv] += 1
        rows.append(
            (conv, last[conv], peer, READER, random_client_id(rng), random_body(rng), ts0 + i * 10)
        )
    conn.executemany(
        "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    for conv, seq in last.items():
        conn.execute("UPDATE conversations SET last_seq=? WHERE id=?", (seq, conv))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"tokens": tokens, "last_seq": last}


def load_frames(path: Path) -> list[bytes]:
    """The exact ``message`` frames the server's replay sends, in replay order."""
    conn = sqlite3.connect(path)
    frames: list[bytes] = []
    try:
        reader = db.account_id(conn, READER)
        assert reader is not None
        convs = db.conversations_of(conn, reader)
        for conv, last_seq in convs.items():
            for m in db.messages_after(conn, conv, 0, last_seq):
                frames.append(p.encode(m))
    finally:
        conn.close()
    return frames


def start_fast_server(workdir: Path, db_path: Path) -> ServerProcess:
    """The server on ``db_path`` with the rate limit raised; its stderr goes to
    ``workdir/server.stderr`` when it is stopped."""
    toml = workdir / "server.toml"
    write_server_toml(toml, {"limits": FAST_LIMITS})
    return start_server(db_path, toml)


def server_cpu_seconds(server: ServerProcess) -> float:
    assert server.pid is not None
    return proc_cpu_seconds(server.pid)


# ===================================================================== measurements


class _Cpu:
    """Client-process and server-process CPU seconds over a measured span."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.c0 = time.process_time()
        self.s0 = server_cpu_seconds(server)

    def done(self) -> tuple[float, float]:
        return time.process_time() - self.c0, server_cpu_seconds(self.server) - self.s0


def measure_store_apply(frames: list[bytes], store_dir: Path) -> dict[str, float]:
    """The store's share alone: decode each frame and make the calls the engine's apply
    path makes on a fresh ``LocalStore`` (no network, no events), committing every 2,000
    messages (the engine commits every 20 ms). CPU time is the steadier figure here."""
    store = LocalStore(store_dir / "apply.sqlite3", READER)
    decode = p.decode_server
    c0, t0 = time.process_time(), time.perf_counter()
    for i, raw in enumerate(frames):
        m = decode(raw)
        assert isinstance(m, p.Message)
        store.ensure_conversation(m.sender, m.conv)
        if m.seq > store.watermark(m.conv) and store.insert_message(
            m.conv, m.seq, m.sender, m.to, m.client_id, m.body, m.ts
        ):
            store.advance_watermark(m.conv)
        if i % 2000 == 1999:
            store.commit()
    store.commit()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    store.close()
    return {"seconds": seconds, "cpu": cpu}


def measure_decode(frames: list[bytes]) -> float:
    decode = p.decode_server
    t0 = time.perf_counter()
    for f in frames:
        decode(f)
    return time.perf_counter() - t0


async def measure_raw_receive(
    server: ServerProcess, token: str, expected: int, *, pages: bool = True
) -> dict[str, float]:
    """A bare client's catch-up: the replay as pages (as the engine asks), or as one
    ``message`` frame per message (``pages=False``, what older clients get)."""
    cpu = _Cpu(server)
    t0 = time.perf_counter()
    async with connect(
        server.url,
        proxy=None,
        max_size=MAX_FRAME,
        compression=None,
        ping_interval=None,
    ) as ws:
        hello = p.Hello(
            v=p.PROTOCOL_VERSION, user=READER, token=token, cursors={}, replay_pages=pages
        )
        await ws.send(p.encode(hello), text=True)
        count = 0
        async for raw in ws:
            frame = p.decode_server(raw)
            if isinstance(frame, p.Message):
                count += 1
            elif isinstance(frame, p.HistoryPage):
                count += len(frame.messages)
            elif isinstance(frame, p.Synced):
                break
        elapsed = time.perf_counter() - t0
    client_cpu, server_cpu = cpu.done()
    if count != expected:
        raise RuntimeError(f"raw receive got {count} messages, expected {expected}")
    return {"seconds": elapsed, "client_cpu": client_cpu, "server_cpu": server_cpu}


async def measure_engine_catchup(
    server: ServerProcess,
    token: str,
    store_dir: Path,
    last_seq: dict[str, int],
    limit_s: float,
    profile: Path | None,
) -> dict[str, float]:
    engine = Engine(client_config(READER, token, server.url, store_dir), token)
    synced: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    events = 0

    def on_event(ev: Event) -> None:
        nonlocal events
        events += 1
        if isinstance(ev, Synced) and not synced.done():
            synced.set_result(ev.applied)

    engine.subscribe(on_event)
    prof = cProfile.Profile() if profile is not None else None
    cpu = _Cpu(server)
    if prof is not None:
        prof.enable()
    t0 = time.perf_counter()
    task = asyncio.create_task(engine.run())
    try:
        applied = await asyncio.wait_for(asyncio.shield(synced), limit_s)
        # Synced is emitted right after the engine's flush; poll in case a gap fetch or
        # a later commit is still outstanding (it should not be).
        while engine.store.dirty or engine.store.watermarks() != last_seq:
            if time.perf_counter() - t0 > limit_s:
                raise TimeoutError("watermarks never reached the server's last seqs")
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
        client_cpu, server_cpu = cpu.done()
    finally:
        await engine.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        engine.close()
    if prof is not None:
        assert profile is not None
        prof.dump_stats(profile)
    # Untimed check with a separate connection: everything is committed.
    path = engine.store.path
    conn = sqlite3.connect(path)
    try:
        stored = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        wms = dict(conn.execute("SELECT conv, wm FROM conversations").fetchall())
    finally:
        conn.close()
    expected = sum(last_seq.values())
    if stored != expected or wms != last_seq or applied != expected:
        raise RuntimeError(
            f"catch-up incomplete: stored {stored}, applied {applied}, expected {expected}"
        )
    return {
        "seconds": elapsed,
        "client_cpu": client_cpu,
        "server_cpu": server_cpu,
        "events": float(events),
        "store_mb": path.stat().st_size / 1e6,
    }


async def measure_latency(
    server: ServerProcess, tokens: dict[str, str], store_dir: Path, n: int, limit_s: float
) -> dict[str, list[float]]:
    engine = Engine(client_config("lat_e", tokens["lat_e"], server.url, store_dir), tokens["lat_e"])
    loop = asyncio.get_running_loop()
    online: asyncio.Future[None] = loop.create_future()
    waiting: dict[str, asyncio.Future[float]] = {}

    def on_event(ev: Event) -> None:
        if isinstance(ev, Synced) and not online.done():
            online.set_result(None)
        elif isinstance(ev, MessageChanged) and ev.message.state is OutState.SENT:
            fut = waiting.pop(ev.message.client_id, None)
            if fut is not None and not fut.done():
                fut.set_result(time.perf_counter())

    engine.subscribe(on_event)
    task = asyncio.create_task(engine.run())
    engine_ms: list[float] = []
    send_call_ms: list[float] = []
    bare_ms: list[float] = []
    try:
        await asyncio.wait_for(online, limit_s)
        async with connect(server.url, proxy=None, max_size=MAX_FRAME, compression=None) as ws:
            hello = p.Hello(v=p.PROTOCOL_VERSION, user="lat_b", token=tokens["lat_b"])
            await ws.send(p.encode(hello), text=True)
            while not isinstance(p.decode_server(await ws.recv()), p.Synced):
                pass
            body = "latency probe " + "x" * 60
            for i in range(n):
                # Engine: from the call to the MessageChanged(sent) event.
                t0 = time.perf_counter()
                fut: asyncio.Future[float] = loop.create_future()
                view = engine.send("sink", body)
                t1 = time.perf_counter()
                waiting[view.client_id] = fut
                done = await asyncio.wait_for(fut, limit_s)
                engine_ms.append((done - t0) * 1000)
                send_call_ms.append((t1 - t0) * 1000)
                # Bare websocket: send frame -> ack (skipping the echo of the last one).
                cid = f"bare{i:06d}"
                frame = p.Send(client_id=cid, to="sink", body=body)
                t0 = time.perf_counter()
                await ws.send(p.encode(frame), text=True)
                while True:
                    reply = p.decode_server(await asyncio.wait_for(ws.recv(), limit_s))
                    if isinstance(reply, p.Ack) and reply.client_id == cid:
                        break
                    if isinstance(reply, p.Reject):
                        raise RuntimeError(f"bare send rejected: {reply.reason}")
                bare_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        await engine.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        engine.close()
    return {"engine": engine_ms, "send_call": send_call_ms, "bare": bare_ms}


# ===================================================================== reporting


def summarize(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    def med(key: str, sub: str) -> float:
        return median([r[key][sub] for r in runs])

    eng_s = med("engine", "seconds")
    raw_s = med("raw", "seconds")
    dec_s = median([r["decode_seconds"] for r in runs])
    lat = [r["latency"] for r in runs if r["latency"] is not None]
    out: dict[str, Any] = {
        "load": [r["load"] for r in runs],
        "messages": n,
        "engine_rate": n / eng_s,
        "engine_seconds": eng_s,
        "engine_rates": [n / r["engine"]["seconds"] for r in runs],
        "engine_client_cpu": med("engine", "client_cpu"),
        "engine_server_cpu": med("engine", "server_cpu"),
        "raw_rate": n / raw_s,
        "raw_seconds": raw_s,
        "raw_rates": [n / r["raw"]["seconds"] for r in runs],
        "raw_client_cpu": med("raw", "client_cpu"),
        "raw_frames_rate": n / med("raw_frames", "seconds"),
        "raw_frames_seconds": med("raw_frames", "seconds"),
        "raw_frames_client_cpu": med("raw_frames", "client_cpu"),
        "raw_frames_server_cpu": med("raw_frames", "server_cpu"),
        "raw_server_cpu": med("raw", "server_cpu"),
        "decode_rate": n / dec_s,
        "apply_cpu_rate": n / med("apply", "cpu"),
        "apply_rate": n / med("apply", "seconds"),
        "decode_seconds": dec_s,
        "engine_vs_decode": eng_s / dec_s,
        "engine_vs_raw": eng_s / raw_s,
        "store_mb": med("engine", "store_mb"),
    }
    if not lat:
        return out
    for kind in ("engine", "bare", "send_call"):
        out[f"lat_{kind}_p50"] = median([percentile(x[kind], 50) for x in lat])
        out[f"lat_{kind}_p99"] = median([percentile(x[kind], 99) for x in lat])
    out["lat_ratio_p50"] = out["lat_engine_p50"] / out["lat_bare_p50"]
    out["lat_ratio_p99"] = out["lat_engine_p99"] / out["lat_bare_p99"]
    return out


def print_report(s: dict[str, Any], args: argparse.Namespace, conversations: int) -> None:
    n = s["messages"]
    print()
    print(
        f"catch-up of {n:,} messages in {conversations:,} conversation(s), "
        f"medians of {len(s['engine_rates'])} repeat(s)"
    )
    print()
    hdr = f"{'measurement':<34}{'seconds':>9}{'msgs/s':>11}{'client cpu':>12}{'server cpu':>12}"
    print(hdr)
    print("-" * len(hdr))
    print(
        f"{'engine catch-up (run→synced+stored)':<34}{s['engine_seconds']:>9.3f}"
        f"{s['engine_rate']:>11,.0f}{s['engine_client_cpu']:>11.2f}s{s['engine_server_cpu']:>11.2f}s"
    )
    print(
        f"{'raw websocket receive+decode':<34}{s['raw_seconds']:>9.3f}"
        f"{s['raw_rate']:>11,.0f}{s['raw_client_cpu']:>11.2f}s{s['raw_server_cpu']:>11.2f}s"
    )
    print(
        f"{'  same, one frame per message':<34}{s['raw_frames_seconds']:>9.3f}"
        f"{s['raw_frames_rate']:>11,.0f}{s['raw_frames_client_cpu']:>11.2f}s"
        f"{s['raw_frames_server_cpu']:>11.2f}s"
    )
    print(
        f"{'decode_server only (no I/O)':<34}{s['decode_seconds']:>9.3f}"
        f"{s['decode_rate']:>11,.0f}{'':>12}{'':>12}"
    )
    print(
        f"{'store apply, no network':<34}{n / s['apply_rate']:>9.3f}"
        f"{s['apply_rate']:>11,.0f}{n / s['apply_cpu_rate']:>11.2f}s{'':>12}"
    )
    print()
    print(f"engine / decode time        {s['engine_vs_decode']:8.1f}x")
    print(f"engine / raw receive time   {s['engine_vs_raw']:8.2f}x")
    rates = ", ".join(f"{r:,.0f}" for r in s["engine_rates"])
    loads = ", ".join(f"{x:.1f}" for x in s["load"])
    print(f"engine catch-up per repeat: {rates} msgs/s (load average {loads})")
    if "lat_engine_p50" not in s:
        return
    print()
    lm = args.latency_messages
    hdr = f"{'send→sent latency (' + str(lm) + ' sequential)':<40}{'p50 ms':>9}{'p99 ms':>9}"
    print(hdr)
    print("-" * len(hdr))
    print(
        f"{'engine.send → MessageChanged(sent)':<40}"
        f"{s['lat_engine_p50']:>9.2f}{s['lat_engine_p99']:>9.2f}"
    )
    print(
        f"{'  of which engine.send() call':<40}"
        f"{s['lat_send_call_p50']:>9.2f}{s['lat_send_call_p99']:>9.2f}"
    )
    print(f"{'bare websocket send → ack':<40}{s['lat_bare_p50']:>9.2f}{s['lat_bare_p99']:>9.2f}")
    print(f"{'ratio engine / bare':<40}{s['lat_ratio_p50']:>9.2f}{s['lat_ratio_p99']:>9.2f}")


def print_scaling(results: list[tuple[int, int, dict[str, Any]]]) -> None:
    """The scenarios side by side, each against the decode floor of its own run."""
    print()
    hdr = (
        f"{'scenario':<26}{'engine msgs/s':>14}{'decode msgs/s':>14}{'engine/decode':>14}"
        f"{'apply/CPU s':>13}"
    )
    print(hdr + f"{'load avg':>10}")
    print("-" * (len(hdr) + 10))
    for n, convs, s in results:
        name = f"{n:,} in {convs:,} conv(s)"
        load = median(s["load"])
        print(
            f"{name:<26}{s['engine_rate']:>14,.0f}{s['decode_rate']:>14,.0f}"
            f"{s['engine_vs_decode']:>13.1f}x{s['apply_cpu_rate']:>13,.0f}{load:>10.1f}"
        )
    one = {n: s for n, convs, s in results if convs == 1}
    if 50_000 in one:
        rate = one[50_000]["engine_rate"]
        verdict = "PASS" if rate >= TARGET_RATE else "MISS"
        print(
            f"50,000 in one conversation: {rate:,.0f} msgs/s, "
            f"target >= {TARGET_RATE:,.0f}: {verdict}"
        )
    if 50_000 in one and 500_000 in one:
        ratio = one[500_000]["engine_rate"] / one[50_000]["engine_rate"]
        cpu = (one[500_000]["engine_client_cpu"] / 500_000) / (
            one[50_000]["engine_client_cpu"] / 50_000
        )
        apply = one[500_000]["apply_cpu_rate"] / one[50_000]["apply_cpu_rate"]
        verdict = "PASS" if ratio >= TARGET_SCALING else "MISS"
        print(
            f"rate 500,000 / rate 50,000 in one conversation: {ratio:.2f}x, target >= "
            f"{TARGET_SCALING}: {verdict} (client CPU per message {cpu:.2f}x; "
            f"store apply rate {apply:.2f}x)"
        )


def print_profile(path: Path, top: int = 25) -> None:
    print(f"\ncProfile of the engine catch-up (repeat 1), top {top} by own time ({path}):")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


# ===================================================================== main


async def run_scenario(
    args: argparse.Namespace, base: Path, messages: int, conversations: int, first: bool
) -> tuple[list[dict[str, Any]], int]:
    db_path = base / "server.db"
    t = time.perf_counter()
    filled = fill_server_db(db_path, messages, conversations, args.seed)
    frames = load_frames(db_path)
    print(
        f"filled server db directly: {len(frames):,} messages, {conversations} "
        f"conversations, {db_path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f}s",
        flush=True,
    )
    tokens: dict[str, str] = filled["tokens"]
    last_seq: dict[str, int] = filled["last_seq"]
    server = start_fast_server(base, db_path)
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.max_seconds
    try:
        warm = await asyncio.wait_for(
            measure_raw_receive(server, tokens[READER], len(frames)), args.timeout
        )
        print(f"warm-up raw receive: {len(frames) / warm['seconds']:,.0f} msgs/s", flush=True)
        for rep in range(args.repeat):
            if rep and time.monotonic() > deadline:
                print(f"--max-seconds reached after {rep} repeat(s)", flush=True)
                break
            profile = base / "catchup.prof" if args.profile and first and rep == 0 else None
            load = os.getloadavg()[0]
            eng = await measure_engine_catchup(
                server,
                tokens[READER],
                base / f"reader-{rep}",
                last_seq,
                args.timeout,
                profile,
            )
            if profile is not None:
                shutil.copy(profile, args.profile)
            raw = await asyncio.wait_for(
                measure_raw_receive(server, tokens[READER], len(frames)), args.timeout
            )
            raw_frames = await asyncio.wait_for(
                measure_raw_receive(server, tokens[READER], len(frames), pages=False),
                args.timeout,
            )
            dec = measure_decode(frames)
            apply = measure_store_apply(frames, base / f"reader-{rep}")
            lat = None
            if first and args.latency_messages > 0:
                lat = await measure_latency(
                    server, tokens, base / f"lat-{rep}", args.latency_messages, args.timeout
                )
            run = {
                "engine": eng,
                "raw": raw,
                "raw_frames": raw_frames,
                "decode_seconds": dec,
                "apply": apply,
                "latency": lat,
                "load": load,
            }
            runs.append(run)
            n = len(frames)
            latency = (
                ""
                if lat is None
                else f", latency p50 engine {percentile(lat['engine'], 50):.2f} ms / "
                f"bare {percentile(lat['bare'], 50):.2f} ms"
            )
            print(
                f"repeat {rep + 1}: engine {n / eng['seconds']:,.0f}/s, "
                f"raw {n / raw['seconds']:,.0f}/s (per-message frames "
                f"{n / raw_frames['seconds']:,.0f}/s), decode {n / dec:,.0f}/s, "
                f"store apply {n / apply['cpu']:,.0f}/s of CPU{latency}, "
                f"load {load:.1f}",
                flush=True,
            )
    finally:
        stop_server(server, 15, base / "server.stderr")
    return runs, len(frames)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--scenario",
        action="append",
        metavar="MESSAGES:CONVERSATIONS",
        help="a backlog to catch up (repeatable); default " + " ".join(DEFAULT_SCENARIOS),
    )
    ap.add_argument("--messages", type=int, help="one scenario: backlog size")
    ap.add_argument(
        "--conversations", type=int, help="one scenario: peers the backlog comes from (1)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="repeats; medians reported")
    ap.add_argument(
        "--latency-messages", type=int, default=500, help="sequential sends per client per repeat"
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    ap.add_argument(
        "--max-seconds", type=float, default=600.0, help="start no new repeat after this"
    )
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="cProfile the first engine catch-up to FILE")
    ap.add_argument("--json", type=Path, help="also write the results as JSON ('-' = stdout)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return ap


def scenarios(args: argparse.Namespace) -> list[tuple[int, int]]:
    if args.messages is not None or args.conversations is not None:
        if args.scenario:
            raise SystemExit("give --scenario, or --messages/--conversations, not both")
        return [(args.messages or 50_000, args.conversations or 1)]
    out = []
    for text in args.scenario or DEFAULT_SCENARIOS:
        try:
            messages, conversations = (int(x) for x in text.split(":"))
        except ValueError:
            raise SystemExit(f"--scenario {text!r}: expected MESSAGES:CONVERSATIONS") from None
        out.append((messages, conversations))
    return out


async def run_all(
    args: argparse.Namespace, base: Path, plan: list[tuple[int, int]]
) -> list[tuple[int, int, list[dict[str, Any]]]]:
    results = []
    for i, (messages, conversations) in enumerate(plan):
        print(f"\n== scenario {messages:,} messages in {conversations:,} conversation(s)")
        runs, n = await run_scenario(args, base / f"s{i}", messages, conversations, first=i == 0)
        results.append((n, conversations, runs))
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = scenarios(args)
    if args.repeat < 1 or any(m < 1 or c < 1 or c > m for m, c in plan):
        raise SystemExit("--repeat, messages and conversations must be >= 1 (and convs <= msgs)")
    base = Path(tempfile.mkdtemp(prefix="catchup-bench-"))
    try:
        results = asyncio.run(run_all(args, base, plan))
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    machine = machine_info(
        "nproc", "cpu", "python", "implementation", "sqlite", "msgspec", "websockets", "kernel"
    )
    print()
    print(
        f"machine: {machine['nproc']} cpu ({machine['cpu']}), Python {machine['python']}, "
        f"SQLite {machine['sqlite']}, msgspec {machine['msgspec']}, "
        f"websockets {machine['websockets']}"
    )
    summaries = [(n, convs, summarize(runs, n)) for n, convs, runs in results]
    for _n, convs, summary in summaries:
        print_report(summary, args, convs)
    print_scaling(summaries)
    if args.profile:
        print_profile(args.profile)
    if args.json:
        doc: dict[str, Any] = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "machine": machine,
            "scenarios": [
                {"messages": n, "conversations": c, "summary": s, "runs": runs}
                for (n, c, s), (_n, _c, runs) in zip(summaries, results, strict=True)
            ],
        }
        write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
