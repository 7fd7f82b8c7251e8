"""Load test of the reference server: 1,000 connected clients, a steady rate, slow readers.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/load_test.py          # defaults: 1,000 clients, 60 s, ~2 min
    .venv/bin/python benchmarks/load_test.py --clients 100 --duration 15 --rate 100 \
        --slow-readers 2 --workers 2                 # quick check, ~30 s
    .venv/bin/python benchmarks/load_test.py --help  # every option

What runs, all on 127.0.0.1, every piece a separate OS process:

* the server: ``python -m tui_chat.server.cli serve`` (the real CLI) on a fresh SQLite
  database with the default durability (``synchronous=FULL``, group commit) and a generated
  ``server.toml`` that sets ``[limits] max_outgoing`` (``--max-outgoing``, 200 frames: a
  modest queue, so that a reader that stops reading overflows it within seconds) and raises
  ``max_body`` to ``--flood-body`` (32,000) for the flood below. The rate limit stays at its
  default (100 frames/s per connection), which this traffic never reaches;
* ``--workers`` load-generator processes sharing the ``--clients`` websocket clients
  (plain protocol clients: ``websockets`` + ``msgspec``), each logged in as its own user.

All clients connect first and stay connected for the whole run. Then, for ``--duration``
seconds:

* **base traffic**: ``--rate`` direct messages per second in total (``--body`` characters),
  open loop: every send has an intended time fixed in advance and latency is measured from
  it, so a stalled server shows up as latency rather than as fewer sends. Each goes from a
  random client to a random other user (or, with ``--contacts K``, to one of K seeded peers
  of the sender, which bounds the number of conversations);
* **slow readers**: ``--slow-readers`` of the clients stop reading for ``--stall`` seconds
  (``--stalls`` times each, at seeded times spread over the run; their sockets have a
  ``--slow-rcvbuf`` receive buffer, a slow link's window). While one is stalled the other
  clients *flood* it with ``--flood-rate`` extra messages per second of ``--flood-body``
  characters (big, so that the kernel's socket buffers, ~4 MiB on loopback, fill in
  seconds). The server must close it with 4409 (its outgoing queue overflowed) instead of
  buffering. When the stall ends the reader reads what is left in the socket, sees the
  close, reconnects with its cursors, receives the replay, and resends (same
  ``client_id``) every send it has no ack for. Slow readers keep sending while stalled:
  those acks are dropped with the queue, so the resends come back with
  ``"duplicate": true``.

A thread samples every second the server's RSS (``VmRSS`` in ``/proc/PID/status``), its
open sockets, its CPU and the time its threads waited for a CPU, the whole machine's CPU,
and the number of conversations in the database. After the run every client waits for its
outstanding acks, then until it holds every message the database has for it (bounded), and
reports what it sent, every ack, every close and every ``message`` frame it received on
every connection. The server is stopped with SIGTERM and the checker reads its database:

* every acked message is in the database exactly once, with the acked conv/seq/ts and the
  body that was sent; nothing is in the database that no client sent; nothing sent is
  left without an ack;
* every conversation's seqs are 1..last_seq with no gap, and ``conversations.last_seq``
  agrees;
* each member of a conversation (recipient and sender) received every message of it
  exactly once over all its connections (live, or in the replay after a reconnect), with
  the stored content; on each single connection the seqs of a conversation went up by
  exactly one from the ``hello`` cursor.

It prints a report (``--json FILE`` keeps the summary, the per-second ack latency and the
memory samples) and exits 1 if any check failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import msgspec
from _common import (
    ServerProcess,
    Workers,
    create_users,
    machine_cpu_seconds,
    machine_info,
    numbered_users,
    percentile,
    proc_cpu_seconds,
    serve_commands,
    start_server,
    stderr_tail,
    stop_server,
    wait_for_quiet,
    write_json,
    write_server_toml,
)

TOO_SLOW = 4409


def crc(text: str) -> int:
    return zlib.crc32(text.encode())


# ===================================================================== load generator


class _In(msgspec.Struct):
    """Every field of a server frame the generator looks at; the rest is ignored."""

    type: str
    client_id: str = ""
    conv: str = ""
    seq: int = 0
    sender: str = ""
    to: str = ""
    body: str = ""
    ts: int = 0
    duplicate: bool = False
    code: str = ""
    retryable: bool = False
    retry_after: float | None = None
    epoch: str = ""
    cursors: dict[str, int] = {}


class _Pending(msgspec.Struct):
    to: str
    body: str
    intended: float
    first_sent: float = 0.0
    conn_no: int = 0  # the connection it was last sent on (0: not sent yet)
    kind: str = "base"


class _Client:
    def __init__(self, name: str, token: str, slow: bool, stalls: list[tuple[float, float]]):
        self.name = name
        self.token = token
        self.slow = slow
        self.stalls = stalls
        self.ws: Any = None
        self.may_read = asyncio.Event()
        self.may_read.set()
        self.epoch = ""
        self.next_id = 0
        self.conn_no = 0
        self.pending: dict[str, _Pending] = {}
        # (client_id, to, crc of body, kind)
        self.sent: list[tuple[str, str, int, str]] = []
        # client_id -> (conv, seq, ts, duplicate)
        self.acks: dict[str, tuple[str, int, int, bool]] = {}
        self.extra_acks = 0
        self.ack_mismatch = 0
        self.unknown_acks = 0
        # (conv, seq, sender, to, client_id, crc of body, connection number)
        self.received: list[tuple[str, int, str, str, str, int, int]] = []
        self.cursors: dict[str, int] = {}
        self.conn_last: dict[str, int] = {}
        self.order_violations: list[tuple[int, str, int, int]] = []
        # (code, reason, monotonic time, connection number)
        self.closes: list[tuple[int, str, float, int]] = []
        self.connect_failures: list[str] = []
        self.rejects: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.given_up: list[str] = []
        # (ack time - intended send time, ack time - first actual send time, intended time)
        self.latencies: list[tuple[float, float, float]] = []
        self.reconnect_s: list[float] = []
        # Per stall: frames received on the stalled connection after the stall began
        # (what the kernel and websockets had buffered), and the close that followed.
        self.stall_mark = -1
        self.stall_conn = 0
        self.after_stall: list[tuple[int, int]] = []


class _Worker:
    def __init__(self, pipe: multiprocessing.connection.Connection) -> None:
        self.pipe = pipe
        self.url = ""
        self.clients: list[_Client] = []
        self.by_name: dict[str, _Client] = {}
        self.all_users: list[str] = []
        self.readers: list[asyncio.Task[None]] = []
        self.stopping = False
        self.encode = msgspec.json.Encoder().encode
        self.decode = msgspec.json.Decoder(_In).decode
        self.max_lag = 0.0
        self.late_sends = 0
        self.base_sent = 0
        self.flood_sent = 0
        self.filler = ""
        self.slow_rcvbuf = 0
        self.verbose = False
        # user -> the peers it writes to (empty: anyone)
        self.contacts: dict[str, list[str]] = {}
        self.background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ commands

    async def run(self) -> None:
        commands = {
            "connect": self.connect,
            "load": self.load,
            "converge": self.converge,
            "report": self.report,
        }
        await serve_commands(self.pipe, commands, self.close, with_traceback=True)

    async def connect(
        self,
        url: str,
        clients: list[tuple[str, str, bool, list[tuple[float, float]]]],
        all_users: list[str],
        gate: int,
        slow_rcvbuf: int,
        contacts: int,
        seed: int,
        verbose: bool,
    ) -> dict[str, Any]:
        self.verbose = verbose
        raise_fd_limit(len(clients) + 100)
        self.slow_rcvbuf = slow_rcvbuf
        self.url = url
        self.all_users = all_users
        self.clients = [_Client(*c) for c in clients]
        self.by_name = {c.name: c for c in self.clients}
        if contacts:
            crng = random.Random(seed)
            for c in self.clients:
                others = crng.sample(all_users, min(len(all_users), contacts + 1))
                self.contacts[c.name] = [u for u in others if u != c.name][:contacts]
        sem = asyncio.Semaphore(gate)
        t0 = time.monotonic()

        async def one(c: _Client) -> None:
            async with sem:
                await self.open(c)

        await asyncio.gather(*(one(c) for c in self.clients))
        elapsed = time.monotonic() - t0
        self.readers = [asyncio.create_task(self.read_loop(c)) for c in self.clients]
        return {"connected": len(self.clients), "seconds": elapsed}

    async def open(self, c: _Client) -> None:
        """Connect, log in with the client's cursors, take the replay, resend what is unacked."""
        from websockets.asyncio.client import connect

        sock = None
        if c.slow and self.slow_rcvbuf:
            # A slow link's receive window: without it loopback's autotuned buffers absorb
            # megabytes before the server's own queue is used at all.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.slow_rcvbuf)
            sock.setblocking(False)
            host, port = self.url.removeprefix("ws://").rsplit(":", 1)
            try:
                await asyncio.wait_for(
                    asyncio.get_running_loop().sock_connect(sock, (host, int(port))), 30
                )
            except BaseException:
                sock.close()
                raise
        ws = await connect(
            self.url,
            sock=sock,
            proxy=None,
            compression=None,
            ping_interval=None,
            max_size=16 << 20,
            open_timeout=60,
            close_timeout=5,
            max_queue=16,
        )
        c.conn_no += 1
        cursors = dict(c.cursors)
        hello = {"type": "hello", "v": 1, "user": c.name, "token": c.token, "cursors": cursors}
        c.conn_last = dict(cursors)
        try:
            await ws.send(self.encode(hello), text=True)
            while True:
                frame = self.decode(await asyncio.wait_for(ws.recv(), 120))
                kind = frame.type
                if kind == "message":
                    self.on_message(c, frame)
                elif kind == "welcome":
                    if c.epoch and frame.epoch != c.epoch:
                        raise RuntimeError(f"{c.name}: the server's epoch changed")
                    c.epoch = frame.epoch
                elif kind == "synced":
                    break
                elif kind == "error":
                    raise RuntimeError(f"login of {c.name} failed: {frame.code}")
        except BaseException:
            ws.transport.abort()
            raise
        c.ws = ws
        # Everything the server never answered on an earlier connection, with the same
        # client_id: a message it already stored comes back as a duplicate ack.
        for cid, p in list(c.pending.items()):
            if p.conn_no != c.conn_no:
                await self.transmit(c, cid, p)

    async def close(self) -> None:
        self.stopping = True
        for c in self.clients:
            c.may_read.set()
        sem = asyncio.Semaphore(64)

        async def one(c: _Client) -> None:
            if c.ws is not None:
                async with sem:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(c.ws.close(), 10)

        await asyncio.gather(*(one(c) for c in self.clients))
        for t in self.readers:
            t.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)

    def is_stopping(self) -> bool:
        # A method, not the attribute: close() sets it while read_loop() awaits.
        return self.stopping

    def log(self, text: str) -> None:
        if self.verbose:
            stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
            print(f"{stamp} [{os.getpid()}] {text}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ receiving

    def on_message(self, c: _Client, f: _In) -> None:
        conv, seq = f.conv, f.seq
        last = c.conn_last.get(conv, 0)
        if seq != last + 1:
            c.order_violations.append((c.conn_no, conv, last, seq))
        c.conn_last[conv] = seq
        c.received.append((conv, seq, f.sender, f.to, f.client_id, crc(f.body), c.conn_no))
        if seq == c.cursors.get(conv, 0) + 1:
            c.cursors[conv] = seq

    def on_ack(self, c: _Client, f: _In, now: float) -> None:
        cid = f.client_id
        prev = c.acks.get(cid)
        if prev is not None:
            c.extra_acks += 1
            if prev[:2] != (f.conv, f.seq):
                c.ack_mismatch += 1
            return
        p = c.pending.pop(cid, None)
        if p is None:
            c.unknown_acks += 1
            return
        c.acks[cid] = (f.conv, f.seq, f.ts, f.duplicate)
        c.latencies.append((now - p.intended, now - p.first_sent, p.intended))

    def on_reject(self, c: _Client, f: _In) -> None:
        c.rejects[f.code] += 1
        p = c.pending.get(f.client_id)
        if p is None:
            return
        if not f.retryable:
            del c.pending[f.client_id]
            c.given_up.append(f.client_id)
            return
        task = asyncio.create_task(self.retry_later(c, f.client_id, f.retry_after or 1.0))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def retry_later(self, c: _Client, cid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        p = c.pending.get(cid)
        if p is not None and c.ws is not None:
            await self.transmit(c, cid, p)

    async def read_loop(self, c: _Client) -> None:
        from websockets.exceptions import ConnectionClosed

        decode = self.decode
        monotonic = time.monotonic
        while True:
            ws = c.ws
            try:
                while True:
                    if not c.may_read.is_set():
                        await c.may_read.wait()
                    raw = await ws.recv()
                    now = monotonic()
                    f = decode(raw)
                    kind = f.type
                    if kind == "message":
                        self.on_message(c, f)
                    elif kind == "ack":
                        self.on_ack(c, f, now)
                    elif kind == "reject":
                        self.on_reject(c, f)
                    elif kind == "error":
                        c.errors[f.code] += 1
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "")
                c.closes.append((code, reason, monotonic(), c.conn_no))
                if not self.stopping:
                    self.log(f"{c.name} connection {c.conn_no} closed: {code} {reason!r}")
                if c.stall_mark >= 0 and c.stall_conn == c.conn_no:
                    c.after_stall.append((len(c.received) - c.stall_mark, code))
                    c.stall_mark = -1
                c.ws = None
            if self.stopping:
                return
            t0 = monotonic()
            delay = 0.05
            while True:
                await asyncio.sleep(delay * (0.5 + random.random()))
                try:
                    await self.open(c)
                    break
                except Exception as exc:
                    c.connect_failures.append(f"{type(exc).__name__}: {exc}"[:200])
                    if self.is_stopping():
                        return
                    delay = min(delay * 2, 2.0)
            c.reconnect_s.append(monotonic() - t0)

    # ------------------------------------------------------------ sending

    async def transmit(self, c: _Client, cid: str, p: _Pending) -> None:
        from websockets.exceptions import ConnectionClosed

        ws = c.ws
        if ws is None:
            return  # sent after the reconnect
        p.conn_no = c.conn_no
        if not p.first_sent:
            p.first_sent = time.monotonic()
        frame = {"type": "send", "client_id": cid, "to": p.to, "body": p.body}
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self.encode(frame), text=True)

    async def submit(self, c: _Client, to: str, size: int, intended: float, kind: str) -> None:
        c.next_id += 1
        cid = f"{c.name}-{c.next_id}"
        head = f"{kind} {cid} -> {to} "
        body = head + self.filler[: max(0, size - len(head))]
        p = _Pending(to, body, intended, kind=kind)
        c.pending[cid] = p
        c.sent.append((cid, to, crc(body), kind))
        await self.transmit(c, cid, p)

    async def base_loop(
        self, start: float, end: float, rate: float, offset: float, body: int, rng: random.Random
    ) -> None:
        clients, users = self.clients, self.all_users
        interval = 1.0 / rate
        monotonic = time.monotonic
        j = 0
        while True:
            intended = start + offset + j * interval
            if intended >= end:
                break
            delay = intended - monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Behind schedule: still let the readers run between sends.
                await asyncio.sleep(0)
                lag = -delay
                self.max_lag = max(self.max_lag, lag)
                if lag > 0.05:
                    self.late_sends += 1
            c = rng.choice(clients)
            peers = self.contacts.get(c.name) or users
            to = rng.choice(peers)
            while to == c.name:
                to = rng.choice(peers)
            await self.submit(c, to, body, intended, "base")
            self.base_sent += 1
            j += 1

    async def flood_loop(
        self, events: list[tuple[float, str]], body: int, rng: random.Random
    ) -> None:
        senders = [c for c in self.clients if not c.slow]
        if self.contacts:
            # A fixed few flood senders, so that the flood opens a bounded number of
            # conversations too.
            senders = senders[:5]
        monotonic = time.monotonic
        for intended, target in events:
            delay = intended - monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            await self.submit(rng.choice(senders), target, body, intended, "flood")
            self.flood_sent += 1

    async def stall(self, c: _Client, start: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        c.may_read.clear()
        c.stall_mark, c.stall_conn = len(c.received), c.conn_no
        self.log(f"{c.name} stops reading for {end - start:g} s")
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        self.log(f"{c.name} reads again")
        c.may_read.set()

    async def load(
        self,
        start: float,
        end: float,
        rate: float,
        offset: float,
        body: int,
        flood: list[tuple[float, str]],
        flood_body: int,
        seed: int,
        drain: float,
        stalls: dict[str, list[tuple[float, float]]],
    ) -> dict[str, Any]:
        for name, windows in stalls.items():
            self.by_name[name].stalls = [tuple(w) for w in windows]  # type: ignore[misc]
        rng = random.Random(seed)
        chunk = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(4096))
        self.filler = (chunk * (max(body, flood_body) // len(chunk) + 1))[: max(body, flood_body)]
        cpu0 = time.process_time()
        tasks = [asyncio.create_task(self.base_loop(start, end, rate, offset, body, rng))]
        if flood:
            frng = random.Random(seed + 1)
            tasks.append(asyncio.create_task(self.flood_loop(flood, flood_body, frng)))
        for c in self.clients:
            for s, e in c.stalls:
                tasks.append(asyncio.create_task(self.stall(c, s, e)))
        await asyncio.gather(*tasks)
        sending_done = time.monotonic()
        # Drain: every send acked, every client connected again.
        deadline = sending_done + drain
        while time.monotonic() < deadline:
            if all(not c.pending and c.ws is not None for c in self.clients):
                break
            await asyncio.sleep(0.05)
        return {
            "base_sent": self.base_sent,
            "flood_sent": self.flood_sent,
            "max_lag_s": self.max_lag,
            "late_sends": self.late_sends,
            "unacked_after_drain": sum(len(c.pending) for c in self.clients),
            "disconnected_after_drain": sum(1 for c in self.clients if c.ws is None),
            "drain_s": time.monotonic() - sending_done,
            "cpu_s": time.process_time() - cpu0,
        }

    async def converge(self, expected: dict[str, dict[str, int]], within: float) -> dict[str, Any]:
        """Wait until every client holds everything the database has for it."""

        def behind() -> list[str]:
            out = []
            for c in self.clients:
                want = expected.get(c.name, {})
                if any(c.cursors.get(conv, 0) < last for conv, last in want.items()):
                    out.append(c.name)
            return out

        t0 = time.monotonic()
        late = behind()
        while late and time.monotonic() - t0 < within:
            await asyncio.sleep(0.1)
            late = behind()
        return {"not_converged": late, "converge_s": time.monotonic() - t0}

    def report(self) -> list[dict[str, Any]]:
        return [
            {
                "name": c.name,
                "slow": c.slow,
                "sent": c.sent,
                "acks": c.acks,
                "pending": list(c.pending),
                "extra_acks": c.extra_acks,
                "ack_mismatch": c.ack_mismatch,
                "unknown_acks": c.unknown_acks,
                "received": c.received,
                "order_violations": c.order_violations,
                "closes": c.closes,
                "connect_failures": c.connect_failures,
                "rejects": dict(c.rejects),
                "errors": dict(c.errors),
                "given_up": c.given_up,
                "latencies": c.latencies,
                "reconnect_s": c.reconnect_s,
                "connections": c.conn_no,
                "after_stall": c.after_stall,
            }
            for c in self.clients
        ]


def _worker_main(pipe: multiprocessing.connection.Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_Worker(pipe).run())


def raise_fd_limit(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"need {needed} file descriptors, the hard limit is {hard}")
    return soft, hard


def write_toml(path: Path, args: argparse.Namespace) -> None:
    write_server_toml(
        path,
        {
            "limits": {
                "max_outgoing": args.max_outgoing,
                "max_body": max(4000, args.flood_body, args.body),
            },
            "durability": {"synchronous": args.synchronous},
        },
        "Written by benchmarks/load_test.py: a modest outgoing queue per connection, so\n"
        "that a client that stops reading overflows it (close 4409) within seconds.",
    )


# ===================================================================== sampling


def _runqueue_wait_seconds(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a CPU."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _sockets(pid: int) -> int:
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
    return n


class Sampler(threading.Thread):
    """Every ``interval`` s: the server's RSS, open sockets, CPU, and the phase of the run."""

    def __init__(
        self, pid: int, generator_pids: list[int], db_path: Path, interval: float = 1.0
    ) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.db_path = db_path
        self.gen_pids = generator_pids
        self.interval = interval
        self.t0 = time.monotonic()
        self.phase = "idle"
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def _conversations(self) -> int:
        # The writer keeps every conversation in memory, so RSS follows this count.
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=1)
            try:
                return int(conn.execute("SELECT count(*) FROM conversations").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set():
            now = time.monotonic()
            # Busy = processes and interrupts (which the kernel charges to no process).
            busy, irq = machine_cpu_seconds()
            self.samples.append(
                {
                    "t": round(now - self.t0, 2),
                    "mono": now,
                    "phase": self.phase,
                    "rss_mib": _rss_kib(self.pid) / 1024,
                    "sockets": _sockets(self.pid),
                    "cpu_s": proc_cpu_seconds(self.pid),
                    "gen_cpu_s": sum(proc_cpu_seconds(p) for p in self.gen_pids),
                    "machine_s": busy + irq,
                    "irq_s": irq,
                    "server_wait_s": _runqueue_wait_seconds(self.pid),
                    "own_cpu_s": time.process_time(),
                    "conversations": self._conversations(),
                }
            )
            next_at += self.interval
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# ===================================================================== schedule


def make_schedule(
    args: argparse.Namespace, names: list[str], start: float, rng: random.Random
) -> tuple[list[str], dict[str, list[tuple[float, float]]], list[tuple[float, str]]]:
    """Which clients are slow, when each stalls, and the flood aimed at each stall."""
    slow = sorted(rng.sample(names, args.slow_readers)) if args.slow_readers else []
    stalls: dict[str, list[tuple[float, float]]] = {n: [] for n in slow}
    flood: list[tuple[float, str]] = []
    # Stalls start in [lead, duration - stall - tail), spread evenly with jitter, so
    # that every reader is back well before the sending stops.
    lead, tail = min(5.0, args.duration / 6), min(5.0, args.duration / 6)
    window = max(0.0, args.duration - args.stall - lead - tail)
    total = len(slow) * args.stalls
    k = 0
    order = list(slow)
    rng.shuffle(order)
    for _round in range(args.stalls):
        for name in order:
            slot = window / max(1, total)
            s = lead + k * slot + rng.uniform(0, slot)
            k += 1
            stalls[name].append((start + s, start + s + args.stall))
            if args.flood_rate > 0:
                n = int(args.flood_rate * args.stall)
                for m in range(n):
                    flood.append((start + s + (m + 0.5) / args.flood_rate, name))
    flood.sort()
    return slow, stalls, flood


# ===================================================================== checking


def check(db_path: Path, reports: list[dict[str, Any]]) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT conv, seq, sender, recipient, client_id, body, ts FROM messages"
        ).fetchall()
        convs = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute("SELECT id, user_a, user_b, last_seq FROM conversations")
        }
    finally:
        conn.close()
    by_key: dict[tuple[str, str], list[tuple[str, int, str, int, int]]] = collections.defaultdict(
        list
    )
    by_conv: dict[str, dict[int, tuple[str, str, str, int]]] = collections.defaultdict(dict)
    for conv, seq, sender, recipient, cid, body, ts in rows:
        by_key[(sender, cid)].append((conv, seq, recipient, crc(body), ts))
        by_conv[conv][seq] = (sender, recipient, cid, crc(body))

    res: dict[str, Any] = collections.Counter()
    examples: dict[str, list[Any]] = collections.defaultdict(list)

    def fail(kind: str, detail: Any) -> None:
        res[kind] += 1
        if len(examples[kind]) < 5:
            examples[kind].append(detail)

    # ---- the database on its own: gap-free seqs, last_seq, one row per client_id
    for conv, (a, b, last) in convs.items():
        seqs = sorted(by_conv.get(conv, {}))
        if seqs != list(range(1, len(seqs) + 1)):
            fail("seq_gaps", (conv, len(seqs), seqs[-1] if seqs else 0))
        if (seqs[-1] if seqs else 0) != last:
            fail("last_seq_mismatch", (conv, last, seqs[-1] if seqs else 0))
        for seq, (sender, recipient, _cid, _crc) in by_conv.get(conv, {}).items():
            if {sender, recipient} != {a, b}:
                fail("wrong_conversation", (conv, seq, sender, recipient))
    for conv in by_conv:
        if conv not in convs:
            fail("orphan_conversation", conv)
    for key, rows_of_key in by_key.items():
        if len(rows_of_key) > 1:
            fail("duplicated_in_db", (key, len(rows_of_key)))

    # ---- what was sent and acked against the database
    sent_keys: set[tuple[str, str]] = set()
    acked = 0
    for rep in reports:
        name = rep["name"]
        acks = rep["acks"]
        for cid, to, body_crc, _kind in rep["sent"]:
            key = (name, cid)
            sent_keys.add(key)
            stored = by_key.get(key)
            ack = acks.get(cid)
            if ack is not None:
                acked += 1
                if not stored:
                    fail("lost_acked", key)
                    continue
                conv, seq, recipient, stored_crc, ts = stored[0]
                if (conv, seq, ts) != tuple(ack[:3]):
                    fail("ack_differs_from_db", (key, ack, stored[0]))
                if recipient != to or stored_crc != body_crc:
                    fail("stored_content_differs", key)
            elif cid in rep["given_up"]:
                if stored:
                    fail("given_up_but_stored", key)
            else:
                fail("never_acked", key)
    for key in by_key:
        if key not in sent_keys:
            fail("phantom_in_db", key)

    # ---- what every member received, over all its connections
    members: dict[str, list[str]] = collections.defaultdict(list)
    for conv, (a, b, _last) in convs.items():
        members[a].append(conv)
        if b != a:
            members[b].append(conv)
    delivered = 0
    for rep in reports:
        name = rep["name"]
        got: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        for conv, seq, sender, to, cid, body_crc, _conn in rep["received"]:
            got[conv][seq] += 1
            row = by_conv.get(conv, {}).get(seq)
            if row is None:
                fail("received_not_in_db", (name, conv, seq))
            elif row != (sender, to, cid, body_crc):
                fail("received_content_differs", (name, conv, seq))
            if name not in (sender, to):
                fail("received_foreign_message", (name, conv, seq))
        for conv in members.get(name, []):
            for seq, (_sender, recipient, _cid, _crc) in by_conv.get(conv, {}).items():
                n = got[conv].get(seq, 0)
                role = "recipient" if name == recipient else "sender"
                if n == 0:
                    fail(f"missing_delivery_to_{role}", (name, conv, seq))
                elif n > 1:
                    fail(f"duplicate_delivery_to_{role}", (name, conv, seq, n))
                else:
                    delivered += 1
        for conv in got:
            if conv not in members.get(name, []):
                fail("received_conversation_not_member", (name, conv))
        for v in rep["order_violations"]:
            fail("order_violation_on_connection", (name, *v))
        if rep["extra_acks"]:
            res["extra_acks"] += rep["extra_acks"]
        if rep["ack_mismatch"]:
            fail("ack_mismatch", (name, rep["ack_mismatch"]))
        if rep["unknown_acks"]:
            fail("unknown_acks", (name, rep["unknown_acks"]))

    out = dict(res)
    out["messages_in_db"] = len(rows)
    out["conversations"] = len(convs)
    out["sent_client_ids"] = len(sent_keys)
    out["acked"] = acked
    out["deliveries_checked"] = delivered
    out["examples"] = dict(examples)
    return out


FAILURE_KEYS = (
    "seq_gaps",
    "last_seq_mismatch",
    "wrong_conversation",
    "orphan_conversation",
    "duplicated_in_db",
    "lost_acked",
    "ack_differs_from_db",
    "stored_content_differs",
    "given_up_but_stored",
    "never_acked",
    "phantom_in_db",
    "received_not_in_db",
    "received_content_differs",
    "received_foreign_message",
    "missing_delivery_to_recipient",
    "missing_delivery_to_sender",
    "duplicate_delivery_to_recipient",
    "duplicate_delivery_to_sender",
    "received_conversation_not_member",
    "order_violation_on_connection",
    "ack_mismatch",
    "unknown_acks",
)


# ===================================================================== report


def _ms(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v * 1000:.1f}"


def memory_summary(samples: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    load = [s for s in samples if start <= s["mono"] <= end]
    before = [s for s in samples if s["mono"] < start and s["phase"] == "connected"]
    out: dict[str, Any] = {
        "rss_before_connect_mib": samples[0]["rss_mib"] if samples else float("nan"),
        "rss_connected_mib": before[-1]["rss_mib"] if before else float("nan"),
        "rss_max_mib": max((s["rss_mib"] for s in samples), default=float("nan")),
        "rss_end_of_load_mib": load[-1]["rss_mib"] if load else float("nan"),
        "max_sockets": max((s["sockets"] for s in samples), default=0),
    }
    if load:
        # Least-squares slope of RSS over the second half of the load, in MiB per minute:
        # near 0 means the curve has levelled off.
        half = [s for s in load if s["mono"] >= start + (end - start) / 2]
        if len(half) >= 3:
            xs = [s["mono"] for s in half]
            ys = [s["rss_mib"] for s in half]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            var = sum((x - mx) ** 2 for x in xs)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
            out["slope_second_half_mib_per_min"] = slope * 60
        first = [s for s in load if s["mono"] < start + (end - start) / 2]
        out["rss_max_first_half_mib"] = max(s["rss_mib"] for s in first) if first else None
        out["rss_max_second_half_mib"] = max(s["rss_mib"] for s in half) if half else None
        # A coarse curve: the max RSS in each tenth of the load.
        curve = []
        for i in range(10):
            lo = start + (end - start) * i / 10
            hi = start + (end - start) * (i + 1) / 10
            part = [s["rss_mib"] for s in load if lo <= s["mono"] < hi]
            curve.append(round(max(part), 1) if part else None)
        out["curve_tenths_mib"] = curve
        out["conversations_tenths"] = [
            max(
                (
                    s["conversations"]
                    for s in load
                    if s["mono"] < start + (end - start) * (i + 1) / 10
                ),
                default=0,
            )
            for i in range(10)
        ]
        out["server_cpu_cores_during_load"] = (load[-1]["cpu_s"] - load[0]["cpu_s"]) / max(
            1e-9, load[-1]["mono"] - load[0]["mono"]
        )
        wall = max(1e-9, load[-1]["mono"] - load[0]["mono"])
        out["machine_busy_cores_during_load"] = (
            load[-1]["machine_s"] - load[0]["machine_s"]
        ) / wall
        out["irq_cores_during_load"] = (load[-1]["irq_s"] - load[0]["irq_s"]) / wall
        # Everything that is neither the server, the generators, this script nor interrupts:
        # other work on the machine.
        out["other_cores_during_load"] = max(
            0.0,
            out["machine_busy_cores_during_load"]
            - out["server_cpu_cores_during_load"]
            - out["irq_cores_during_load"]
            - (load[-1]["gen_cpu_s"] - load[0]["gen_cpu_s"]) / wall
            - (load[-1]["own_cpu_s"] - load[0]["own_cpu_s"]) / wall,
        )
        # Time the server's threads were ready to run but had no CPU (CPU contention).
        out["server_runqueue_wait_s"] = load[-1]["server_wait_s"] - load[0]["server_wait_s"]
        out["generator_cpu_cores_during_load"] = (
            load[-1]["gen_cpu_s"] - load[0]["gen_cpu_s"]
        ) / max(1e-9, load[-1]["mono"] - load[0]["mono"])
    return out


def summarize(
    args: argparse.Namespace,
    reports: list[dict[str, Any]],
    loads: list[dict[str, Any]],
    checked: dict[str, Any],
    mem: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    lat_normal_i, lat_normal_s, lat_slow_i = [], [], []
    per_second: dict[int, list[float]] = collections.defaultdict(list)
    slow_names = {r["name"] for r in reports if r["slow"]}
    closes_normal: collections.Counter[int] = collections.Counter()
    closes_slow: collections.Counter[int] = collections.Counter()
    rejects: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    dup_acks = 0
    after_stall: list[tuple[int, int]] = []
    reconnects: list[float] = []
    connect_failures = 0
    for r in reports:
        for a_i, a_s, intended in r["latencies"]:
            if r["name"] in slow_names:
                lat_slow_i.append(a_i)
            else:
                lat_normal_i.append(a_i)
                lat_normal_s.append(a_s)
                per_second[int(intended - extra["load_start"])].append(a_i)
        target = closes_slow if r["slow"] else closes_normal
        for code, _reason, t, _conn in r["closes"]:
            if t < extra["closing_at"]:
                target[code] += 1
        rejects.update(r["rejects"])
        errors.update(r["errors"])
        dup_acks += sum(1 for a in r["acks"].values() if a[3])
        reconnects.extend(r["reconnect_s"])
        after_stall.extend((int(n), int(code)) for n, code in r["after_stall"])
        connect_failures += len(r["connect_failures"])
    failures = {k: checked.get(k, 0) for k in FAILURE_KEYS}
    # Ack latency of the normal clients' sends, by the second they were meant to go out.
    timeline = [
        {
            "second": sec,
            "acks": len(v),
            "p50_ms": round(percentile(v, 50) * 1000, 1),
            "p99_ms": round(percentile(v, 99) * 1000, 1),
            "max_ms": round(max(v) * 1000, 1),
        }
        for sec, v in sorted(per_second.items())
    ]
    worst = sorted(timeline, key=lambda x: -x["p99_ms"])[:3]
    return {
        "latency_by_second": timeline,
        "worst_seconds": worst,
        "clients": args.clients,
        "slow_readers": args.slow_readers,
        "duration_s": args.duration,
        "rate": args.rate,
        "base_sent": sum(x["base_sent"] for x in loads),
        "flood_sent": sum(x["flood_sent"] for x in loads),
        "generator_max_lag_ms": max(x["max_lag_s"] for x in loads) * 1000,
        "generator_late_sends": sum(x["late_sends"] for x in loads),
        "unacked_after_drain": sum(x["unacked_after_drain"] for x in loads),
        "ack_latency_normal_ms": {
            "n": len(lat_normal_i),
            "p50": percentile(lat_normal_i, 50) * 1000,
            "p90": percentile(lat_normal_i, 90) * 1000,
            "p99": percentile(lat_normal_i, 99) * 1000,
            "p999": percentile(lat_normal_i, 99.9) * 1000,
            "max": max(lat_normal_i, default=float("nan")) * 1000,
        },
        "ack_latency_normal_from_actual_send_ms": {
            "p50": percentile(lat_normal_s, 50) * 1000,
            "p99": percentile(lat_normal_s, 99) * 1000,
        },
        "ack_latency_slow_readers_ms": {
            "n": len(lat_slow_i),
            "p50": percentile(lat_slow_i, 50) * 1000,
            "p99": percentile(lat_slow_i, 99) * 1000,
        },
        "duplicate_acks": dup_acks,
        "closes_normal_clients": dict(closes_normal),
        "closes_slow_readers": dict(closes_slow),
        "reconnect_s": {
            "n": len(reconnects),
            "p50": percentile(reconnects, 50),
            "max": max(reconnects, default=float("nan")),
        },
        "connect_failures": connect_failures,
        "stalls": args.slow_readers * args.stalls,
        "stalls_closed_by_code": dict(collections.Counter(code for _, code in after_stall)),
        "frames_read_after_stall": {
            "min": min((n for n, _ in after_stall), default=0),
            "max": max((n for n, _ in after_stall), default=0),
        },
        "rejects": dict(rejects),
        "errors": dict(errors),
        "memory": mem,
        "check": {k: v for k, v in checked.items() if k != "examples"},
        "failures": failures,
        "failed": sum(failures.values()),
        "examples": checked.get("examples", {}),
        **extra,
    }


def print_report(s: dict[str, Any], args: argparse.Namespace, machine: dict[str, Any]) -> None:
    p = print
    p("")
    p("=" * 78)
    p(
        f"load test: {s['clients']} clients, {s['duration_s']:g} s, {s['rate']:g} msg/s base, "
        f"{s['slow_readers']} slow readers (seed {args.seed})"
    )
    p(f"machine: {machine['nproc']} cores, Python {machine['python']}, {machine['platform']}")
    p("-" * 78)
    p(
        f"connected: {s['connected']} clients in {s['connect_s']:.1f} s; max server sockets "
        f"{s['memory']['max_sockets']}"
    )
    p(
        f"sent: {s['base_sent']} base + {s['flood_sent']} flood "
        f"({(s['base_sent'] + s['flood_sent']) / s['duration_s']:.0f} msg/s); generator max lag "
        f"{s['generator_max_lag_ms']:.0f} ms, sends >50 ms late: {s['generator_late_sends']}"
    )
    c = s["check"]
    p(
        f"stored: {c['messages_in_db']} messages in {c['conversations']} conversations; acked "
        f"{c['acked']} ({s['duplicate_acks']} of them as duplicate acks after a reconnect); "
        f"deliveries checked {c['deliveries_checked']}"
    )
    lat = s["ack_latency_normal_ms"]
    p(
        f"ack latency (normal clients, from intended send time, n={lat['n']}): p50 "
        f"{lat['p50']:.1f} ms  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  p99.9 "
        f"{lat['p999']:.1f}  max {lat['max']:.1f}"
    )
    worst = ", ".join(f"s{w['second']}: {w['p99_ms']:.0f} ms" for w in s["worst_seconds"])
    p(f"  worst seconds of the load by p99: {worst}")
    la = s["ack_latency_normal_from_actual_send_ms"]
    p(f"  from the actual send: p50 {la['p50']:.1f} ms  p99 {la['p99']:.1f}")
    ls = s["ack_latency_slow_readers_ms"]
    p(
        f"  slow readers' own sends (acks lost while stalled, resent): n={ls['n']} p50 "
        f"{ls['p50']:.0f} ms  p99 {ls['p99']:.0f}"
    )
    p(
        f"disconnects during the run: normal clients {s['closes_normal_clients'] or 'none'}; "
        f"slow readers {s['closes_slow_readers'] or 'none'}"
    )
    if s["stalls"]:
        fr = s["frames_read_after_stall"]
        never = s["stalls"] - sum(s["stalls_closed_by_code"].values())
        p(
            f"stalls: {s['stalls']}; the stalled connection ended with "
            f"{s['stalls_closed_by_code'] or 'nothing'} ({never} never closed); frames still "
            f"buffered in the sockets when a stall ended: {fr['min']}-{fr['max']}"
        )
    rc = s["reconnect_s"]
    if rc["n"]:
        p(
            f"reconnects: {rc['n']} (close to synced again: p50 {rc['p50']:.2f} s, max "
            f"{rc['max']:.2f} s); failed connect attempts {s['connect_failures']}"
        )
    p(f"rejects: {s['rejects'] or 'none'}; errors: {s['errors'] or 'none'}")
    m = s["memory"]
    p(
        f"server RSS: {m['rss_before_connect_mib']:.1f} MiB idle -> {m['rss_connected_mib']:.1f} "
        f"connected -> max {m['rss_max_mib']:.1f}; end of load {m['rss_end_of_load_mib']:.1f}"
    )
    if "curve_tenths_mib" in m:
        p(f"  max RSS per tenth of the load (MiB): {m['curve_tenths_mib']}")
        p(f"  conversations in the db at each tenth: {m['conversations_tenths']}")
        slope = m.get("slope_second_half_mib_per_min", float("nan"))
        p(
            f"  slope over the second half: {slope:+.2f}"
            f" MiB/min; server CPU {m['server_cpu_cores_during_load']:.2f} cores, generators "
            f"{m['generator_cpu_cores_during_load']:.2f} cores; whole machine busy "
            f"{m['machine_busy_cores_during_load']:.2f} of {os.cpu_count()} cores, of which "
            f"{m['irq_cores_during_load']:.2f} interrupts and {m['other_cores_during_load']:.2f} "
            "other processes"
        )
    if "server_runqueue_wait_s" in m:
        p(
            f"  server threads waited {m['server_runqueue_wait_s']:.1f} s in total for a CPU "
            f"during the {s['duration_s']:g} s (runnable, not running: CPU contention)"
        )
    p(f"server exit code after SIGTERM: {s['server_exit']}")
    p("-" * 78)
    bad = {k: v for k, v in s["failures"].items() if v}
    if bad:
        p(f"CHECK FAILED: {bad}")
        for k, ex in s["examples"].items():
            p(f"  {k}: {ex}")
    else:
        p(
            "check: 0 lost, 0 duplicated, 0 phantom, 0 gaps, 0 missing or doubled deliveries, "
            "0 out-of-order frames: PASS"
        )
    if s.get("extra_problems"):
        p(f"PROBLEMS: {s['extra_problems']}")
    p("=" * 78)


# ===================================================================== main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=1000, help="connected clients (users)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    p.add_argument("--rate", type=float, default=500.0, help="base messages/s, in total")
    p.add_argument("--body", type=int, default=100, help="base message body, characters")
    p.add_argument("--slow-readers", type=int, default=20, help="clients that stop reading")
    p.add_argument("--stalls", type=int, default=1, help="stalls per slow reader")
    p.add_argument("--stall", type=float, default=10.0, help="seconds a slow reader stops reading")
    p.add_argument(
        "--flood-rate", type=float, default=60.0, help="extra msgs/s to each stalled reader"
    )
    p.add_argument("--flood-body", type=int, default=32000, help="flood message body, characters")
    p.add_argument(
        "--max-outgoing", type=int, default=200, help="server's per-connection queue (frames)"
    )
    p.add_argument(
        "--slow-rcvbuf",
        type=int,
        default=65536,
        help="SO_RCVBUF of the slow readers' sockets, bytes (0: the system's autotuning)",
    )
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    p.add_argument("--workers", type=int, default=4, help="load-generator processes")
    p.add_argument("--connect-gate", type=int, default=16, help="connects in flight per worker")
    p.add_argument("--drain", type=float, default=60.0, help="max seconds to wait for acks")
    p.add_argument(
        "--contacts",
        type=int,
        default=0,
        help="each client writes only to this many seeded peers (0: to anyone)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="first wait up to this many seconds for the machine to be idle (< 0.3 cores)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--verbose", action="store_true", help="log stalls and closes; server log in --keep dir"
    )
    p.add_argument("--json", type=Path, help="write the summary and the memory curve here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (db, server log)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.clients < 2 or not 1 <= args.workers <= args.clients:
        raise SystemExit("need --clients >= 2 and 1 <= --workers <= --clients")
    if not 0 <= args.slow_readers < args.clients:
        raise SystemExit("--slow-readers must be fewer than --clients")
    if args.rate <= 0 or args.duration <= 0 or args.stalls < 1 or args.stall <= 0:
        raise SystemExit("--rate, --duration, --stall and --stalls must be positive")
    raise_fd_limit(args.clients + 200)
    machine = machine_info("nproc", "python", "platform")
    if args.wait_quiet > 0:
        busy = wait_for_quiet(args.wait_quiet, 0.3, count_irq=True)
        print(f"machine busy before the run: {busy:.2f} cores", flush=True)
        machine["busy_before_run_cores"] = round(busy, 2)
    tmp = Path(tempfile.mkdtemp(prefix="tui-chat-load-"))
    db_path = tmp / "server.db"
    server: ServerProcess | None = None
    workers: Workers | None = None
    sampler: Sampler | None = None
    try:
        write_toml(tmp / "server.toml", args)
        users = create_users(db_path, numbered_users(args.clients))
        names = [u for u, _ in users]
        # -v logs each connection and each 4409 (kept in server.stderr with --keep).
        server = start_server(
            db_path, tmp / "server.toml", extra_args=["-v"] if args.verbose else []
        )
        assert server.pid is not None
        workers = Workers(args.workers, _worker_main)
        sampler = Sampler(server.pid, workers.pids, db_path)
        sampler.start()
        time.sleep(1.5)  # an idle sample or two first

        # Who is slow is decided now; when they stall, once everyone is connected.
        slow_set = set(make_schedule(args, names, 0.0, random.Random(args.seed))[0])
        parts = [users[i :: args.workers] for i in range(args.workers)]
        sampler.phase = "connecting"
        t0 = time.monotonic()
        res = workers.call(
            "connect",
            [
                {
                    "url": server.url,
                    "clients": [(n, t, n in slow_set, []) for n, t in part],
                    "all_users": names,
                    "gate": args.connect_gate,
                    "slow_rcvbuf": args.slow_rcvbuf,
                    "contacts": args.contacts,
                    "seed": args.seed * 7919 + i,
                    "verbose": args.verbose,
                }
                for i, part in enumerate(parts)
            ],
            timeout=300,
        )
        connect_s = time.monotonic() - t0
        connected = sum(r["connected"] for r in res)
        sampler.phase = "connected"
        print(f"{connected} clients connected in {connect_s:.1f} s", flush=True)
        time.sleep(3.0)  # RSS of the idle, connected server

        start = time.monotonic() + 2.0
        end = start + args.duration
        slow, stalls, flood = make_schedule(args, names, start, random.Random(args.seed))
        # Stalls go to the worker holding that client; the flood is spread over all workers.
        load_args = []
        for i, part in enumerate(parts):
            load_args.append(
                {
                    "start": start,
                    "end": end,
                    "rate": args.rate / args.workers,
                    "offset": i / args.rate,
                    "body": args.body,
                    "flood": flood[i :: args.workers],
                    "flood_body": args.flood_body,
                    "seed": args.seed * 1000 + i,
                    "drain": args.drain,
                    "stalls": {n: stalls[n] for n, _ in part if n in stalls},
                }
            )
        for at, phase in ((start, "load"), (end, "drain")):
            timer = threading.Timer(
                max(0.0, at - time.monotonic()), setattr, (sampler, "phase", phase)
            )
            timer.daemon = True
            timer.start()
        print(
            f"load: {args.duration:g} s at {args.rate:g} msg/s, {len(slow)} slow readers, "
            f"{len(flood)} flood messages scheduled",
            flush=True,
        )
        loads = workers.call("load", load_args, timeout=args.duration + args.drain + 120)
        drained_at = time.monotonic()
        sampler.phase = "converge"

        # What the database holds for every user now that every send is acked.
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        expected: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for conv, a, b, last in conn.execute(
            "SELECT id, user_a, user_b, last_seq FROM conversations"
        ):
            expected[a][conv] = last
            expected[b][conv] = last
        conn.close()
        conv_res = workers.call(
            "converge",
            [
                {"expected": {n: expected.get(n, {}) for n, _ in part}, "within": 30.0}
                for part in parts
            ],
            timeout=120,
        )
        not_converged = [n for r in conv_res for n in r["not_converged"]]
        closing_at = time.monotonic()
        reports = [r for part in workers.call("report", [{}] * args.workers, 120) for r in part]
        sampler.phase = "closing"
        workers.shutdown()
        workers = None
        time.sleep(1.0)
        server_exit = stop_server(server, 30, tmp / "server.stderr")
        sampler.stop()

        checked = check(db_path, reports)
        mem = memory_summary(sampler.samples, start, end)
        problems = []
        if not_converged:
            problems.append(f"{len(not_converged)} clients did not converge: {not_converged[:5]}")
        if server_exit != 0:
            problems.append(f"server exit code {server_exit}: {stderr_tail(server)}")
        extra = {
            "load_start": start,
            "connected": connected,
            "connect_s": connect_s,
            "closing_at": closing_at,
            "drain_s": drained_at - end,
            "server_exit": server_exit,
            "not_converged": len(not_converged),
            "extra_problems": problems,
        }
        summary = summarize(args, reports, loads, checked, mem, extra)
        if summary["closes_normal_clients"]:
            problems.append(
                f"clients that kept reading were disconnected: {summary['closes_normal_clients']}"
            )
        ended_4409 = summary["stalls_closed_by_code"].get(TOO_SLOW, 0)
        if args.flood_rate > 0 and ended_4409 < summary["stalls"]:
            problems.append(
                f"only {ended_4409} of {summary['stalls']} stalls ended with 4409 (closes: "
                f"{summary['stalls_closed_by_code']}); expected if --max-outgoing is too big "
                "for the flood to overflow it"
            )
        print_report(summary, args, machine)
        if args.json:
            out = {
                "args": vars(args) | {"json": str(args.json)},
                "machine": machine,
                "summary": summary,
                "samples": [
                    {k: v for k, v in s.items() if k != "mono"}
                    | {"t_load": round(s["mono"] - start, 2)}
                    for s in sampler.samples
                ],
            }
            write_json(args.json, out, indent=1)
        ok = summary["failed"] == 0 and not problems and connected == args.clients
        return 0 if ok else 1
    finally:
        if workers is not None:
            workers.shutdown()
        if sampler is not None:
            sampler.stop()
        if server is not None:
            stop_server(server, 30, tmp / "server.stderr")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
