"""Textual app benchmark (issue 4, item 10): open, incoming, Enter, peer→paint, memory.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/ui_bench.py                    # the documented run (about 2-3 min)
    .venv/bin/python benchmarks/ui_bench.py --messages 100000 --loaded 10000 \\
        --p2p-messages 100 --repeat 1                          # smoke

Everything runs headless (``App.run_test(headless=True, size=(120, 40))``), the real
``ChatApp`` with its real ``Engine`` and ``LocalStore``.

**How "painted" is observed.** The app's ``_display`` (which the screen calls with every
compositor update) is wrapped on the instance. The headless driver skips encoding, so the
wrapper first does what Textual does for a real terminal, ``update.render_segments(console)``
(the bytes a terminal would receive), and only then stamps the frame (``perf_counter``,
``monotonic_ns``, ``process_time``). Afterwards, outside the stamped span, it extracts the
text of the *chops* of that update that lie inside the message view's region: an event
counts as painted at the first frame whose view region contains its marker text (so a
marker still shown by the composer does not count). The measured span therefore covers
the app's code, Textual's message processing, layout, compositor render and terminal
encoding, and nothing of the benchmark's own bookkeeping.

What is measured (each repeated ``--repeat`` times; figures are medians over repeats):

1. **open**: a store whose conversation ``big`` holds ``--messages`` messages (default
   1,000,000), and one whose ``big`` holds ``--small`` (1,000); both also hold a
   50-message conversation ``other`` that is more recent, so the app opens ``other`` on
   mount. Each repeat starts a fresh ``LocalStore`` connection, ``Engine`` (not running: no
   server needed) and ``ChatApp``; the clock runs from ``app.open_conversation("big")``
   until the first frame that shows the newest message of ``big`` in the view (cold: the
   view's line cache has never seen ``big``). Then ``other``/``big`` are switched 3 more
   times (warm). The stores are written *directly*: ``LocalStore`` creates the schema and
   the conversation rows, then one ``executemany`` on ``store._db`` in one transaction
   inserts the messages (same schema as ``insert_message``; every third message is our
   own, and has its outbox row in state ``sent`` as if sent from this client), and the
   conversation row gets ``wm`` = ``read_seq`` = the top seq.
2. **memory**: a fresh subprocess opens the app on the ``--messages`` store, opens
   ``big``, waits for its paint and reads ``VmRSS``/``VmHWM`` from ``/proc/self/status``.
3. **incoming** with ``--loaded`` (100,000) messages in the view: the view gets the newest
   ``--loaded`` messages of ``big`` through ``set_messages`` (untimed setup); then
   ``--incoming`` new peer messages, one at a time, through ``view.upsert(msg)``:
   ``process_time`` from before ``upsert`` to the stamped frame that paints it (the upsert
   and the render of the changed lines, with layout and encoding). Also: the same through
   the engine (``SyncCore.on_frame``: store insert, event, the app's handler, paint),
   an own message going ◷ → ✓, and a page of 200 older messages prepended (scrolling up).
4. **Enter**: text is put in the composer (untimed, painted), then
   ``pilot.press("enter")``; wall time from the call to the frame showing the bubble in
   the view. Measured offline in the app of (3) (100,000 loaded, 1M store), and connected
   in (5).
5. **end to end**, in a fresh process (so the client does not carry the heap of the phases
   above): the real server (``python -m tui_chat.server.cli serve``, own process,
   ``[limits] rate = burst = 100000``); the app runs as ``alice`` (engine running,
   connected); its conversation with ``bob`` is first filled past one screen (``--prefill``
   messages, untimed) and brought to its bottom, then measured; a subprocess runs a
   headless ``Engine`` as ``bob`` that calls
   ``engine.send()`` at ``--rate`` messages/s with ``time.monotonic_ns()`` (taken just before
   ``send()``) in the body; latency = the ``monotonic_ns`` of the first frame painting it in
   alice's view minus that stamp (CLOCK_MONOTONIC is shared by processes on Linux). The
   first ``--warmup`` messages are not counted.
6. **floor**: Textual's ``Log`` in an app with the same layout (sidebar, title, log,
   composer, status line, footer; same size): writing the same newest page's lines into
   an empty ``Log``; appending one message's lines to a ``Log`` holding the lines of
   ``--loaded`` messages, and one line to a ``Log`` holding ``--loaded`` lines; Enter in an
   ``Input`` whose handler appends the line to the ``Log``; and its resident memory.

``--json FILE`` writes the raw figures; ``--profile`` wraps the first cold open and the
first incoming series in cProfile and prints the top functions (do not quote timings from
a profiled run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import pstats
import random
import re
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from _common import (
    FAST_LIMITS,
    ROOT,
    WORDS,
    client_config,
    create_users,
    machine_info,
    median,
    random_body,
    random_client_id,
    write_json,
    write_server_toml,
)
from msgspec.structs import replace
from rich.style import Style
from textual._compositor import ChopsUpdate, LayoutUpdate
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, Log, Static

from harness.serverproc import ServerProcess
from tui_chat import protocol as p
from tui_chat.core.engine import Engine
from tui_chat.core.models import (
    ChatMessage,
    ConnState,
    Event,
    MessageChanged,
    OutState,
)
from tui_chat.core.store import LocalStore
from tui_chat.ui.app import PAGE, ChatApp
from tui_chat.ui.render import Hints, Styles, render_message

SIZE = (120, 40)
ME = "me"
BIG = "big"
OTHER = "other"
CONV_BIG = "c" + "b" * 12
CONV_OTHER = "c" + "0" * 12

TARGET_OPEN_MS = 100.0
TARGET_OPEN_RATIO = 1.5
TARGET_INCOMING_CPU_MS = 2.0
TARGET_ENTER_MS = 16.0
TARGET_P2P_P99_MS = 50.0
TARGET_RSS_MB = 150.0

# ===================================================================== data


def build_store(path: Path, messages: int, seed: int = 1) -> dict[str, Any]:
    """A local store of user ``me``: ``big`` with ``messages`` messages, ``other`` with 50.

    Written directly (see the module docstring): the schema and conversation rows come
    from ``LocalStore`` itself, the messages from one ``executemany`` in one transaction.
    """
    t0 = time.perf_counter()
    store = LocalStore(path, ME)
    # OTHER first: the list keeps first contact first, and the app opens the first listed.
    store.ensure_conversation(OTHER, CONV_OTHER)
    store.ensure_conversation(BIG, CONV_BIG)
    store.commit()
    rng = random.Random(seed)
    ts0 = 1_760_000_000_000

    def rows(conv: str, peer: str, n: int, ts_base: int) -> Any:
        for seq in range(1, n + 1):
            own = seq % 3 == 0
            body = random_body(rng)
            if seq == n:
                body = f"newest of {peer} #{seq} " + body[:40]
            yield (
                conv,
                seq,
                ME if own else peer,
                peer if own else ME,
                random_client_id(rng),
                body,
                ts_base + seq * 1000,
            )

    conn = store._db
    conn.execute("BEGIN")
    sql = (
        "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    conn.executemany(sql, rows(CONV_BIG, BIG, messages, ts0))
    other_base = ts0 + messages * 1000 + 60_000
    conn.executemany(sql, rows(CONV_OTHER, OTHER, 50, other_base))
    # Our own messages were sent from this client: each keeps its outbox row (state sent).
    conn.execute(
        "INSERT INTO outbox(client_id, peer, body, created_at, fresh_since, ord, attempts,"
        " state, retryable, conv, seq) SELECT client_id, recipient, body, ts, ts, ts, 1, ?, 1,"
        " conv, seq FROM messages WHERE sender=?",
        (OutState.SENT.value, ME),
    )
    for peer, n, last in ((BIG, messages, ts0 + messages * 1000), (OTHER, 50, other_base + 50_000)):
        conn.execute(
            "UPDATE conversations SET wm=?, read_seq=?, unread=0, last_ts=? WHERE peer=?",
            (n, n, last, peer),
        )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return {
        "messages": messages,
        "seconds": time.perf_counter() - t0,
        "bytes": path.stat().st_size,
    }


def _offline_app(store_path: Path) -> tuple[ChatApp, Engine, LocalStore]:
    store = LocalStore(store_path, ME)
    engine = Engine(client_config(ME, "x", "ws://127.0.0.1:9", store_path.parent), "x", store=store)
    return ChatApp(engine, run_engine=False), engine, store


# ===================================================================== frame probe


@dataclass
class Stamp:
    perf: float
    mono_ns: int
    cpu: float


@dataclass
class _Watch:
    widget: Widget
    predicate: Callable[[str], bool]
    future: asyncio.Future[Stamp]


def _matches(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.search(text) is not None


def region_text(update: object, region: Region) -> str:
    """The text an update paints inside ``region`` (one line per screen row)."""
    lines: list[str] = []
    if isinstance(update, ChopsUpdate):
        chops = update.chops
        for y in range(region.y, min(region.bottom, len(chops))):
            parts = [
                strip.text
                for x, strip in chops[y].items()
                if strip is not None and region.x <= x < region.right
            ]
            lines.append("".join(parts))
    elif isinstance(update, LayoutUpdate):
        # A full update keeps no x positions: take the whole rows of the region.
        for y, line in enumerate(update.strips, update.region.y):
            if region.y <= y < region.bottom:
                lines.append("".join(s.text for s in line if s is not None))
    return "\n".join(lines)


class FrameProbe:
    """Stamps every frame the app paints; resolves watches on what a widget shows."""

    def __init__(self, app: App[Any]) -> None:
        self.app = app
        self.frames = 0
        self._orig = app._display
        app._display = self._display  # type: ignore[method-assign]
        self._watches: list[_Watch] = []
        self.listeners: list[tuple[Widget, Callable[[str, Stamp], None]]] = []

    def _display(self, screen: Any, renderable: Any) -> None:
        self._orig(screen, renderable)
        if renderable is None or screen is not self.app.screen:
            return
        # What the driver of a real terminal would do (the headless one skips it).
        renderable.render_segments(self.app.console)
        stamp = Stamp(time.perf_counter(), time.monotonic_ns(), time.process_time())
        self.frames += 1
        if not self._watches and not self.listeners:
            return
        texts: dict[int, str] = {}

        def text_of(widget: Widget) -> str:
            key = id(widget)
            if key not in texts:
                texts[key] = region_text(renderable, widget.region)
            return texts[key]

        for w in list(self._watches):
            if w.future.done():
                self._watches.remove(w)
            elif w.predicate(text_of(w.widget)):
                w.future.set_result(stamp)
                self._watches.remove(w)
        for widget, fn in self.listeners:
            fn(text_of(widget), stamp)

    def expect(self, widget: Widget, what: str | Callable[[str], bool]) -> asyncio.Future[Stamp]:
        """A future for the first frame from now whose ``widget`` region matches ``what``."""
        pred = (lambda text: what in text) if isinstance(what, str) else what
        fut: asyncio.Future[Stamp] = asyncio.get_running_loop().create_future()
        self._watches.append(_Watch(widget, pred, fut))
        return fut


async def settle(pilot: Any, seconds: float = 0.05) -> None:
    await pilot.pause()
    await asyncio.sleep(seconds)


async def frame(fut: asyncio.Future[Stamp], limit: float = 10.0) -> Stamp:
    try:
        return await asyncio.wait_for(fut, limit)
    except TimeoutError:
        raise RuntimeError(f"no frame showed the expected text within {limit} s") from None


async def ensure_following(view: Any, pilot: Any) -> bool:
    """Bring the message view to its bottom if it is not there; True if it had to."""
    if view.is_vertical_scroll_end:
        return False
    view.action_to_end()
    await settle(pilot, 0.1)
    if not view.is_vertical_scroll_end:
        raise RuntimeError("the message view does not stay at the bottom")
    return True


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


class GcPauses:
    """Wall time of every cyclic-GC pass in this process (to attribute latency tails)."""

    def __init__(self) -> None:
        self.passes: list[tuple[int, float, int]] = []  # (generation, ms, end monotonic_ns)
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            ms = (time.perf_counter() - self._t0) * 1e3
            self.passes.append((info["generation"], ms, time.monotonic_ns()))

    def mark(self) -> int:
        return len(self.passes)

    def full_pass_between(self, start_ns: int, end_ns: int) -> bool:
        """Did a full (generation 2) pass end inside [start_ns, end_ns]?"""
        return any(
            gen == 2 and start_ns <= end <= end_ns for gen, _ms, end in reversed(self.passes)
        )

    def since(self, mark: int) -> dict[str, float]:
        full = [ms for gen, ms, _end in self.passes[mark:] if gen == 2]
        return {
            "gen2_passes": len(full),
            "gen2_max_ms": max(full, default=0.0),
            "gen2_median_ms": median(full) if full else 0.0,
        }


GC = GcPauses()


class _Profile:
    """cProfile around chosen spans, only when asked."""

    def __init__(self, enabled: bool) -> None:
        self.prof = cProfile.Profile() if enabled else None

    @contextlib.contextmanager
    def span(self) -> Any:
        if self.prof is None:
            yield
            return
        self.prof.enable()
        try:
            yield
        finally:
            self.prof.disable()

    def report(self, title: str, top: int = 25) -> None:
        if self.prof is None:
            return
        print(f"\n--- cProfile: {title} (cumulative) ---")
        pstats.Stats(self.prof).sort_stats("cumulative").print_stats(top)


# ===================================================================== the view's lines as text


def message_lines(messages: list[ChatMessage], width: int, app: App[Any]) -> list[str]:
    """The text lines our view shows for ``messages`` (for the Log floor)."""
    plain = Styles(*([Style()] * 8))
    out: list[str] = []
    for m in messages:
        out.extend(s.text.rstrip() for s in render_message(m, width, app.console, plain, Hints()))
    return out


def approx_lines(messages: list[ChatMessage], width: int) -> list[str]:
    """Cheap stand-in for :func:`message_lines` (same line structure, for big Log fills)."""
    bubble = max(8, min(width - 2, int(width * 0.75)))
    out: list[str] = []
    for m in messages:
        out.append(f"{m.sender} · 00:00")
        out.extend(textwrap.wrap(m.body, bubble - 2) or [""])
        out.append("")
    return out


# ===================================================================== floor app


class FloorApp(App[None]):
    """Textual's ``Log`` in the same layout and size as ChatApp's main screen."""

    CSS = """
    #main { height: 1fr; }
    #side { width: 32; border-right: vkey $panel; }
    #side-title, #title { height: 1; background: $panel; }
    #side-body { height: 1fr; }
    Log { height: 1fr; background: $surface; scrollbar-size-vertical: 1; }
    Input { border: tall $primary 50%; }
    #status { height: 1; background: $panel; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="side"):
                yield Label("Conversations", id="side-title")
                yield Static("big\nother", id="side-body")
            with Vertical():
                yield Static("Conversation with big", id="title")
                yield Log()
                yield Input(placeholder="Write a message, Enter sends")
        yield Static("● online   outbox empty", id="status")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(Log).write_line(event.value)
        event.input.value = ""


SELF = str(Path(__file__).resolve())


async def measure_floor(
    page_lines: list[str],
    big_lines: list[str],
    incoming: list[list[str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    app = FloorApp()
    res: dict[str, Any] = {}
    async with app.run_test(headless=True, size=SIZE) as pilot:
        probe = FrameProbe(app)
        log = app.query_one(Log)
        inp = app.query_one(Input)
        await settle(pilot)
        # open: the newest page's lines into an empty Log (warm-up once, then timed)
        marker = next(line for line in reversed(page_lines) if "newest of" in line).strip()
        opens = []
        for i in range(args.repeat + 1):
            log.clear()
            await settle(pilot)
            fut = probe.expect(log, marker)
            t0, c0 = time.perf_counter(), time.process_time()
            log.write_lines(page_lines)
            st = await frame(fut)
            if i:
                opens.append({"wall_ms": (st.perf - t0) * 1e3, "cpu_ms": (st.cpu - c0) * 1e3})
        res["open"] = opens

        async def appends(fill: list[str], label: str, one_line: bool) -> list[dict[str, float]]:
            log.clear()
            log.write_lines(fill)
            await settle(pilot, 0.1)
            # Log.clear() keeps the old scroll offset: start the appends at the bottom.
            log.scroll_end(animate=False, immediate=True)
            await settle(pilot, 0.1)
            assert log.is_vertical_scroll_end
            out = []
            for i, lines in enumerate(incoming):
                m = f"floor-{label}-{i:04d}"
                new = [m] if one_line else [ln.replace("incoming-", m + " ", 1) for ln in lines]
                fut = probe.expect(log, m)
                c0, t0 = time.process_time(), time.perf_counter()
                log.write_lines(new)
                st = await frame(fut)
                out.append({"cpu_ms": (st.cpu - c0) * 1e3, "wall_ms": (st.perf - t0) * 1e3})
                await asyncio.sleep(0.03)
            return out

        res["append_msg"] = await appends(big_lines, "m", one_line=False)
        res["fill_lines_msg"] = len(big_lines)
        res["append_line"] = await appends(
            [f"line {i} " + WORDS[i % len(WORDS)] for i in range(args.loaded)], "l", one_line=True
        )
        # Enter in an Input whose handler appends the line to the Log
        log.clear()
        inp.focus()
        await settle(pilot)
        enters = []
        for i in range(args.enter + 2):
            m = f"floor-enter-{i:04d}"
            inp.value = m + " see you at noon"
            await settle(pilot, 0.03)
            fut = probe.expect(log, m)
            t0 = time.perf_counter()
            await pilot.press("enter")
            st = await frame(fut)
            if i >= 2:
                enters.append((st.perf - t0) * 1e3)
        res["enter"] = enters
    return res


# ===================================================================== ours: open


async def measure_open(store_path: Path, prof: _Profile | None) -> dict[str, Any]:
    app, _engine, store = _offline_app(store_path)
    out: dict[str, Any] = {}
    try:
        async with app.run_test(headless=True, size=SIZE) as pilot:
            probe = FrameProbe(app)
            await settle(pilot, 0.1)
            assert app.peer == OTHER, app.peer
            view = app.view
            fut = probe.expect(view, f"newest of {BIG} #")
            t0, c0 = time.perf_counter(), time.process_time()
            if prof is not None:
                with prof.span():
                    app.open_conversation(BIG)
                    t1 = time.perf_counter()
                    st = await frame(fut)
            else:
                app.open_conversation(BIG)
                t1 = time.perf_counter()
                st = await frame(fut)
            out["cold"] = {
                "wall_ms": (st.perf - t0) * 1e3,
                "call_ms": (t1 - t0) * 1e3,
                "cpu_ms": (st.cpu - c0) * 1e3,
            }
            warm = []
            for _ in range(3):
                fut = probe.expect(view, f"newest of {OTHER} #")
                app.open_conversation(OTHER)
                await frame(fut)
                await settle(pilot)
                fut = probe.expect(view, f"newest of {BIG} #")
                t0, c0 = time.perf_counter(), time.process_time()
                app.open_conversation(BIG)
                st = await frame(fut)
                warm.append({"wall_ms": (st.perf - t0) * 1e3, "cpu_ms": (st.cpu - c0) * 1e3})
            out["warm"] = warm
    finally:
        store.close()
    return out


# ===================================================================== ours: memory


def rss_now() -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


async def _mem_child(args: argparse.Namespace) -> None:
    if args.floor:
        app: App[Any] = FloorApp()
        async with app.run_test(headless=True, size=SIZE) as pilot:
            probe = FrameProbe(app)
            await settle(pilot)
            log = app.query_one(Log)
            lines = json.loads(Path(args.floor).read_text())  # noqa: ASYNC240 - tiny file
            fut = probe.expect(log, "newest of")
            log.write_lines(lines)
            await frame(fut)
            await settle(pilot, 0.2)
            print(json.dumps(rss_now()))
        return
    chat, _engine, store = _offline_app(Path(args.store))
    async with chat.run_test(headless=True, size=SIZE) as pilot:
        probe = FrameProbe(chat)
        await settle(pilot, 0.1)
        fut = probe.expect(chat.view, f"newest of {BIG} #")
        chat.open_conversation(BIG)
        await frame(fut)
        await settle(pilot, 0.2)
        print(json.dumps(rss_now()))
    store.close()


async def _run_child(*argv: str) -> dict[str, Any]:
    """Run this script in a fresh process (a ``_`` mode) and return its last JSON line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        SELF,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def run_mem_child(extra: list[str]) -> dict[str, float]:
    return await _run_child("_mem", *extra)


# ===================================================================== ours: incoming, Enter


async def measure_loaded(
    store_path: Path, args: argparse.Namespace, prof: _Profile
) -> dict[str, Any]:
    app, engine, store = _offline_app(store_path)
    res: dict[str, Any] = {"repeats": [], "refollow": 0}
    try:
        async with app.run_test(headless=True, size=SIZE) as pilot:
            probe = FrameProbe(app)
            await settle(pilot, 0.1)
            view = app.view
            fut = probe.expect(view, f"newest of {BIG} #")
            app.open_conversation(BIG)
            await frame(fut)
            loaded = store.page(BIG, None, args.loaded)
            t0 = time.perf_counter()
            view.set_messages(loaded, complete=False)
            res["load_s"] = time.perf_counter() - t0
            res["loaded"] = len(view.items)
            await settle(pilot, 0.3)
            width = view.scrollable_content_region.width
            res["view_width"] = width
            next_seq = store.latest_seq(BIG) + 1
            last_ts = loaded[-1].ts
            lowest = loaded[0].seq or 1
            rng = random.Random(7)
            sample_incoming: list[list[str]] = []

            for r in range(args.repeat):
                rep: dict[str, Any] = {
                    "view": [],
                    "engine": [],
                    "own_sent": [],
                    "enter": [],
                    "enter_gc": [],
                }
                # ---- incoming peer messages straight into the view
                for i in range(args.incoming):
                    marker = f"incoming-{r}-{i:04d}"
                    msg = ChatMessage(
                        peer=BIG,
                        sender=BIG,
                        client_id=random_client_id(rng),
                        body=f"{marker} " + random_body(rng),
                        ts=last_ts + 1000,
                        own=False,
                        seq=next_seq,
                        conv=CONV_BIG,
                    )
                    if r == 0:
                        sample_incoming.append(message_lines([msg], width, app))
                    next_seq += 1
                    last_ts += 1000
                    res["refollow"] += await ensure_following(view, pilot)
                    fut = probe.expect(view, marker)
                    span = prof.span() if r == 0 else contextlib.nullcontext()
                    with span:
                        c0, t0 = time.process_time(), time.perf_counter()
                        view.upsert(msg)
                        c1 = time.process_time()
                        st = await frame(fut)
                    rep["view"].append(
                        {
                            "upsert_ms": (c1 - c0) * 1e3,
                            "cpu_ms": (st.cpu - c0) * 1e3,
                            "wall_ms": (st.perf - t0) * 1e3,
                        }
                    )
                    # Untimed: keep the store in step, so the engine's seqs below follow on.
                    store.insert_message(
                        CONV_BIG, msg.seq or 0, BIG, ME, msg.client_id, msg.body, msg.ts
                    )
                    store.advance_watermark(CONV_BIG)
                    await asyncio.sleep(0.03)
                # ---- the same through the engine (store insert, event, app handler, paint)
                for i in range(args.incoming):
                    marker = f"viaengine-{r}-{i:04d}"
                    res["refollow"] += await ensure_following(view, pilot)
                    fut = probe.expect(view, marker)
                    cid = random_client_id(rng)
                    body = f"{marker} " + random_body(rng)
                    c0, t0 = time.process_time(), time.perf_counter()
                    # Straight into the sync core, as the transport hands it a frame.
                    engine._core.on_frame(
                        p.Message(
                            conv=CONV_BIG,
                            seq=next_seq,
                            sender=BIG,
                            to=ME,
                            client_id=cid,
                            body=body,
                            ts=last_ts + 1000,
                        )
                    )
                    st = await frame(fut)
                    rep["engine"].append(
                        {"cpu_ms": (st.cpu - c0) * 1e3, "wall_ms": (st.perf - t0) * 1e3}
                    )
                    next_seq += 1
                    last_ts += 1000
                    await asyncio.sleep(0.03)
                store.commit()
                # ---- own message: pending, then confirmed (◷ -> ✓)
                for i in range(max(3, args.incoming // 3)):
                    marker = f"ownsent-{r}-{i:04d}"
                    pending = ChatMessage(
                        peer=BIG,
                        sender=ME,
                        client_id=random_client_id(rng),
                        body=marker,
                        ts=last_ts,
                        own=True,
                        state=OutState.PENDING,
                    )
                    res["refollow"] += await ensure_following(view, pilot)
                    fut = probe.expect(view, marker)
                    view.upsert(pending)
                    await frame(fut)
                    await settle(pilot, 0.03)
                    sent = replace(pending, seq=next_seq, conv=CONV_BIG, state=OutState.SENT)
                    next_seq += 1
                    store.insert_message(
                        CONV_BIG, sent.seq or 0, ME, BIG, sent.client_id, marker, sent.ts
                    )
                    store.advance_watermark(CONV_BIG)
                    pat = re.compile(r"you ✓ *\n[^\n]*" + re.escape(marker))
                    fut = probe.expect(view, partial(_matches, pat))
                    c0, t0 = time.process_time(), time.perf_counter()
                    view.upsert(sent)
                    st = await frame(fut)
                    rep["own_sent"].append(
                        {"cpu_ms": (st.cpu - c0) * 1e3, "wall_ms": (st.perf - t0) * 1e3}
                    )
                    await asyncio.sleep(0.03)
                store.commit()
                # ---- Enter -> own bubble (engine offline: it stays ◷)
                app.composer.focus()
                for i in range(args.enter):
                    marker = f"enter-{r}-{i:04d}"
                    app.composer.value = f"{marker} see you at noon"
                    await settle(pilot, 0.03)
                    res["refollow"] += await ensure_following(view, pilot)
                    fut = probe.expect(view, marker)
                    gc_mark = GC.mark()
                    t0 = time.perf_counter()
                    await pilot.press("enter")
                    st = await frame(fut)
                    rep["enter"].append((st.perf - t0) * 1e3)
                    rep["enter_gc"].append(GC.since(gc_mark)["gen2_passes"] > 0)
                    await asyncio.sleep(0.02)
                # Offline, those stay ◷ below every confirmed message (where the next
                # repeat's incoming ones would land, off screen): give them up.
                for pending_msg in engine.pending_rows():
                    engine.give_up(pending_msg.client_id)
                await settle(pilot, 0.1)
                # ---- scrolling up: a page of older messages above
                older = store.page(BIG, lowest, PAGE)
                lowest = older[0].seq or 1
                before_frames = probe.frames
                fut = probe.expect(view, lambda _t: True)
                c0, t0 = time.process_time(), time.perf_counter()
                view.prepend(older, complete=False)
                c1 = time.process_time()
                st = await frame(fut)
                rep["prepend"] = {
                    "call_cpu_ms": (c1 - c0) * 1e3,
                    "cpu_ms": (st.cpu - c0) * 1e3,
                    "wall_ms": (st.perf - t0) * 1e3,
                    "frames": probe.frames - before_frames,
                    "loaded": len(view.items),
                }
                await settle(pilot, 0.1)
                res["repeats"].append(rep)
            res["sample_incoming"] = sample_incoming
            res["big_lines"] = approx_lines(loaded, width)
    finally:
        store.close()
    return res


# ===================================================================== ours: end to end


async def _peer_child(args: argparse.Namespace) -> None:
    """A headless Engine as ``bob`` that sends to ``alice`` at a fixed rate."""
    store_dir = Path(args.dir)
    cfg = client_config(args.user, args.token, args.url, store_dir)
    engine = Engine(cfg, args.token, store=LocalStore(store_dir / f"{args.user}.sqlite", args.user))
    task = asyncio.create_task(engine.run())
    deadline = time.monotonic() + 20
    while engine.status.state is not ConnState.ONLINE:
        if time.monotonic() > deadline:
            raise SystemExit("peer: not online")
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit("peer: no go")
    interval = 1.0 / args.rate
    start = time.monotonic() + 0.05
    for i in range(args.count):
        due = start + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        engine.send(args.to, f"p2p-{args.tag}-{i:05d} t={time.monotonic_ns()}")
    # Wait until every message is acked, then leave.
    deadline = time.monotonic() + 30
    while engine.outbox_count() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    print(json.dumps({"unacked": engine.outbox_count()}), flush=True)
    await engine.stop()
    await task
    engine.close()


async def measure_e2e(base: Path, args: argparse.Namespace) -> dict[str, Any]:
    db_path = base / "server.sqlite"
    tokens = dict(create_users(db_path, ["alice", "bob"]))
    toml = base / "server.toml"
    write_server_toml(toml, {"limits": FAST_LIMITS})
    server = ServerProcess(db_path, config=toml)
    server.start()
    res: dict[str, Any] = {"repeats": []}
    alice_dir = base / "alice"
    alice_store = LocalStore(alice_dir / "alice.sqlite", "alice")
    engine = Engine(
        client_config("alice", tokens["alice"], server.url, alice_dir),
        tokens["alice"],
        store=alice_store,
    )
    app = ChatApp(engine)
    sent_events: dict[str, asyncio.Future[None]] = {}

    def on_event(ev: Event) -> None:
        if isinstance(ev, MessageChanged) and ev.message.state is OutState.SENT:
            fut = sent_events.pop(ev.message.body.split(" ", 1)[0], None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    unsubscribe = engine.subscribe(on_event)
    try:
        async with app.run_test(headless=True, size=SIZE) as pilot:
            probe = FrameProbe(app)
            deadline = time.monotonic() + 20
            while engine.status.state is not ConnState.ONLINE:
                if time.monotonic() > deadline:
                    raise RuntimeError("alice did not come online")
                await asyncio.sleep(0.01)
            app.open_conversation("bob")
            app.composer.focus()
            await settle(pilot, 0.2)
            view = app.view
            # Measure the steady state of a conversation that already fills the screen (its
            # scrollbar shown): fill it first, untimed, and make sure the view is at the end.
            for i in range(args.prefill):
                engine.send("bob", f"prefill-{i:03d} " + WORDS[i % len(WORDS)])
            deadline = time.monotonic() + 30
            while engine.outbox_count() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await settle(pilot, 0.1)
            await ensure_following(view, pilot)
            res["refollow"] = 0
            for r in range(args.repeat):
                rep: dict[str, Any] = {"enter": [], "enter_gc": []}
                # ---- Enter -> own bubble painted, connected (then wait for its ✓)
                for i in range(args.enter + (2 if r == 0 else 0)):
                    marker = f"enter-{r}-{i:04d}"
                    app.composer.value = f"{marker} see you at noon"
                    await settle(pilot, 0.03)
                    res["refollow"] += await ensure_following(view, pilot)
                    fut = probe.expect(view, marker)
                    acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    sent_events[marker] = acked
                    gc_mark = GC.mark()
                    t0 = time.perf_counter()
                    await pilot.press("enter")
                    st = await frame(fut)
                    had_gc = GC.since(gc_mark)["gen2_passes"] > 0
                    await asyncio.wait_for(acked, 10)
                    if r or i >= 2:
                        rep["enter"].append((st.perf - t0) * 1e3)
                        rep["enter_gc"].append(had_gc)
                    await asyncio.sleep(0.02)
                await settle(pilot, 0.1)
                # ---- bob sends at --rate; latency to the paint in alice's view
                tag = f"r{r}"
                seen: dict[int, tuple[int, int]] = {}  # index -> (sent, painted) ns
                pat = re.compile(r"p2p-" + tag + r"-(\d{5}) t=(\d+)")

                def on_frame(
                    text: str,
                    st: Stamp,
                    pat: re.Pattern[str] = pat,
                    seen: dict[int, tuple[int, int]] = seen,
                ) -> None:
                    for m in pat.finditer(text):
                        i = int(m.group(1))
                        if i not in seen:
                            seen[i] = (int(m.group(2)), st.mono_ns)

                entry = (view, on_frame)
                probe.listeners.append(entry)
                total = args.warmup + args.p2p_messages
                peer = await asyncio.create_subprocess_exec(
                    sys.executable,
                    SELF,
                    "_peer",
                    "--url",
                    server.url,
                    "--token",
                    tokens["bob"],
                    "--user",
                    "bob",
                    "--to",
                    "alice",
                    "--count",
                    str(total),
                    "--rate",
                    str(args.rate),
                    "--tag",
                    tag,
                    "--dir",
                    str(base / f"bob-{r}"),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=ROOT,
                )
                assert peer.stdout is not None and peer.stdin is not None
                line = await asyncio.wait_for(peer.stdout.readline(), 30)
                if line.strip() != b"ready":
                    err = await peer.stderr.read() if peer.stderr else b""
                    raise RuntimeError(f"peer failed: {line!r} {err.decode()[-2000:]}")
                res["refollow"] += await ensure_following(view, pilot)
                c0 = time.process_time()
                frames0 = probe.frames
                peer.stdin.write(b"go\n")
                await peer.stdin.drain()
                deadline = time.monotonic() + total / args.rate + 30
                while len(seen) < total and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                cpu = time.process_time() - c0
                out, err = await peer.communicate()
                probe.listeners.remove(entry)
                # A message never seen in a frame was scrolled past between two frames
                # (more arrived during a stall than the view shows). It counts as painted by
                # the first frame that shows a later message, with its own send stamp (from
                # its body in the view).
                sent_of = {
                    int(m.group(1)): int(m.group(2))
                    for m in (pat.match(item.body) for item in view.items)
                    if m is not None
                }
                skipped = []
                for i in range(args.warmup, total):
                    if i not in seen and i in sent_of:
                        later = [seen[j][1] for j in range(i + 1, total) if j in seen]
                        if later:
                            seen[i] = (sent_of[i], min(later))
                            skipped.append(i)
                counted = [seen[i] for i in range(args.warmup, total) if i in seen]
                lat = [(painted - sent) / 1e6 for sent, painted in counted]
                slow = [(sent, painted) for sent, painted in counted if painted - sent > 50e6]
                rep["p2p"] = {
                    "count": args.p2p_messages,
                    "painted": len(lat),
                    "skipped": skipped,
                    "p50_ms": _pct(lat, 50),
                    "p99_ms": _pct(lat, 99),
                    "over_50ms": len(slow),
                    "over_50ms_with_full_gc": sum(GC.full_pass_between(a, b) for a, b in slow),
                    "max_ms": max(lat) if lat else float("nan"),
                    "alice_cpu_s": cpu,
                    "frames": probe.frames - frames0,
                    "peer_tail": out.decode().strip().splitlines()[-1:] if out else [],
                }
                res["repeats"].append(rep)
                await settle(pilot, 0.2)
    finally:
        unsubscribe()
        alice_store.close()
        server.terminate()
    return res


# ===================================================================== report


def _med_of(reps: list[Any], get: Callable[[Any], float]) -> float:
    return median([get(r) for r in reps])


def _slow_with_gc(reps: list[Any]) -> str:
    """How many Enter samples exceeded one frame, and how many of those saw a full GC."""
    pairs = [(ms, g) for r in reps for ms, g in zip(r["enter"], r["enter_gc"], strict=True)]
    slow = [g for ms, g in pairs if ms > TARGET_ENTER_MS]
    return f"{len(slow)}/{len(pairs)} over {TARGET_ENTER_MS:.0f} ms ({sum(slow)} with a full GC)"


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    big, small = raw["open_big"], raw["open_small"]
    s["open_big_ms"] = _med_of(big, lambda r: r["cold"]["wall_ms"])
    s["open_big_cpu_ms"] = _med_of(big, lambda r: r["cold"]["cpu_ms"])
    s["open_big_call_ms"] = _med_of(big, lambda r: r["cold"]["call_ms"])
    s["open_small_ms"] = _med_of(small, lambda r: r["cold"]["wall_ms"])
    s["open_small_cpu_ms"] = _med_of(small, lambda r: r["cold"]["cpu_ms"])
    s["open_big_warm_ms"] = _med_of(big, lambda r: median([w["wall_ms"] for w in r["warm"]]))
    s["open_small_warm_ms"] = _med_of(small, lambda r: median([w["wall_ms"] for w in r["warm"]]))
    s["open_ratio"] = s["open_big_ms"] / s["open_small_ms"]
    s["open_big_all_ms"] = [r["cold"]["wall_ms"] for r in big]
    s["open_small_all_ms"] = [r["cold"]["wall_ms"] for r in small]

    mem = raw["memory"]
    s["rss_mb"] = median([m["VmRSS"] for m in mem])
    s["hwm_mb"] = median([m["VmHWM"] for m in mem])
    s["floor_rss_mb"] = median([m["VmRSS"] for m in raw["memory_floor"]])

    reps = raw["loaded"]["repeats"]

    def rep_med(key: str, sub: str) -> float:
        return _med_of(reps, lambda r: median([x[sub] for x in r[key]]))

    s["incoming_cpu_ms"] = rep_med("view", "cpu_ms")
    s["incoming_upsert_ms"] = rep_med("view", "upsert_ms")
    s["incoming_wall_ms"] = rep_med("view", "wall_ms")
    s["incoming_engine_cpu_ms"] = rep_med("engine", "cpu_ms")
    s["own_sent_cpu_ms"] = rep_med("own_sent", "cpu_ms")
    s["prepend_cpu_ms"] = _med_of(reps, lambda r: r["prepend"]["cpu_ms"])
    s["prepend_call_cpu_ms"] = _med_of(reps, lambda r: r["prepend"]["call_cpu_ms"])
    s["enter_offline_ms"] = _med_of(reps, lambda r: median(r["enter"]))
    s["enter_offline_p99_ms"] = _pct([x for r in reps for x in r["enter"]], 99)
    s["enter_offline_slow"] = _slow_with_gc(reps)
    s["refollow"] = raw["loaded"]["refollow"] + (raw.get("e2e") or {}).get("refollow", 0)
    for phase in ("open", "loaded", "e2e"):
        if f"gc_{phase}" in raw:
            s[f"gc_{phase}"] = raw[f"gc_{phase}"]
    s["load_s"] = raw["loaded"]["load_s"]
    s["loaded"] = raw["loaded"]["loaded"]

    e2e = raw.get("e2e")
    if e2e:
        er = e2e["repeats"]
        s["enter_ms"] = _med_of(er, lambda r: median(r["enter"]))
        s["enter_p99_ms"] = _pct([x for r in er for x in r["enter"]], 99)
        s["enter_slow"] = _slow_with_gc(er)
        s["p2p_over_50"] = [
            f"{r['p2p']['over_50ms']} ({r['p2p']['over_50ms_with_full_gc']} with a full GC)"
            for r in er
        ]
        s["p2p_p50_ms"] = _med_of(er, lambda r: r["p2p"]["p50_ms"])
        s["p2p_p99_ms"] = _med_of(er, lambda r: r["p2p"]["p99_ms"])
        s["p2p_max_ms"] = max(r["p2p"]["max_ms"] for r in er)
        s["p2p_painted"] = [f"{r['p2p']['painted']}/{r['p2p']['count']}" for r in er]
        s["p2p_skipped"] = sum(len(r["p2p"]["skipped"]) for r in er)
        s["p2p_cpu_per_msg_ms"] = _med_of(
            er, lambda r: r["p2p"]["alice_cpu_s"] * 1e3 / max(1, r["p2p"]["count"])
        )

    fl = raw["floor"]
    s["floor_open_ms"] = median([x["wall_ms"] for x in fl["open"]])
    s["floor_open_cpu_ms"] = median([x["cpu_ms"] for x in fl["open"]])
    s["floor_append_msg_cpu_ms"] = median([x["cpu_ms"] for x in fl["append_msg"]])
    s["floor_append_line_cpu_ms"] = median([x["cpu_ms"] for x in fl["append_line"]])
    s["floor_enter_ms"] = median(fl["enter"])
    s["floor_lines_msg"] = fl["fill_lines_msg"]
    return s


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_report(s: dict[str, Any], args: argparse.Namespace, machine: dict[str, Any]) -> None:
    print()
    print(
        f"machine: nproc={machine['nproc']} {machine['cpu']} | Python {machine['python']} | "
        f"Textual {machine['textual']} | Rich {machine['rich']} | SQLite {machine['sqlite']} | "
        f"load avg {machine['loadavg'][0]:.2f}"
    )
    print(f"repeat={args.repeat}, figures are medians over repeats; size {SIZE[0]}x{SIZE[1]}")
    n, k = args.messages, args.small
    rows: list[tuple[str, str, str, str, str]] = []
    rows.append(
        (
            f"open conv of {n:,}: first paint (cold)",
            f"{s['open_big_ms']:.1f} ms",
            f"≤ {TARGET_OPEN_MS:.0f} ms",
            _verdict(s["open_big_ms"] <= TARGET_OPEN_MS),
            f"floor Log {s['floor_open_ms']:.1f} ms → ×{s['open_big_ms'] / s['floor_open_ms']:.1f}",
        )
    )
    rows.append(
        (
            f"  … vs {k:,} ({s['open_small_ms']:.1f} ms)",
            f"×{s['open_ratio']:.2f}",
            f"≤ ×{TARGET_OPEN_RATIO}",
            _verdict(s["open_ratio"] <= TARGET_OPEN_RATIO),
            "",
        )
    )
    rows.append(
        (
            f"incoming, {s['loaded']:,} loaded: upsert+frame CPU",
            f"{s['incoming_cpu_ms']:.2f} ms",
            f"≤ {TARGET_INCOMING_CPU_MS:.0f} ms",
            _verdict(s["incoming_cpu_ms"] <= TARGET_INCOMING_CPU_MS),
            f"floor Log +msg {s['floor_append_msg_cpu_ms']:.2f} ms → "
            f"×{s['incoming_cpu_ms'] / s['floor_append_msg_cpu_ms']:.2f}; +1 line "
            f"{s['floor_append_line_cpu_ms']:.2f} ms → "
            f"×{s['incoming_cpu_ms'] / s['floor_append_line_cpu_ms']:.2f}",
        )
    )
    if "enter_ms" in s:
        rows.append(
            (
                "Enter → own bubble painted (connected)",
                f"{s['enter_ms']:.1f} ms",
                f"≤ {TARGET_ENTER_MS:.0f} ms",
                _verdict(s["enter_ms"] <= TARGET_ENTER_MS),
                f"p99 {s['enter_p99_ms']:.1f} ms; floor Log {s['floor_enter_ms']:.1f} ms → "
                f"×{s['enter_ms'] / s['floor_enter_ms']:.2f}",
            )
        )
    rows.append(
        (
            f"Enter → own bubble, offline, {s['loaded']:,} loaded",
            f"{s['enter_offline_ms']:.1f} ms",
            f"≤ {TARGET_ENTER_MS:.0f} ms",
            _verdict(s["enter_offline_ms"] <= TARGET_ENTER_MS),
            f"p99 {s['enter_offline_p99_ms']:.1f} ms; "
            f"×{s['enter_offline_ms'] / s['floor_enter_ms']:.2f} floor",
        )
    )
    if "p2p_p99_ms" in s:
        rows.append(
            (
                f"peer send → painted, {args.rate:g} msg/s",
                f"p99 {s['p2p_p99_ms']:.1f} ms",
                f"p99 ≤ {TARGET_P2P_P99_MS:.0f} ms",
                _verdict(s["p2p_p99_ms"] <= TARGET_P2P_P99_MS),
                f"p50 {s['p2p_p50_ms']:.1f} ms, max {s['p2p_max_ms']:.1f} ms, painted "
                f"{', '.join(s['p2p_painted'])}",
            )
        )
    rows.append(
        (
            f"RSS after opening the {n:,} conv",
            f"{s['rss_mb']:.1f} MiB",
            f"≤ {TARGET_RSS_MB:.0f} MB",
            _verdict(s["rss_mb"] <= TARGET_RSS_MB),
            f"peak {s['hwm_mb']:.1f} MiB; floor Log app {s['floor_rss_mb']:.1f} MiB → "
            f"×{s['rss_mb'] / s['floor_rss_mb']:.2f}",
        )
    )
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print()
    print(f"{'target':<{w0}}  {'measured':>{w1}}  {'target':<{w2}}  verdict  vs floor")
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:<{w2}}  {r[3]:<7}  {r[4]}")
    print()
    print("other figures (medians):")
    print(
        f"  open {n:,}: all cold runs {', '.join(f'{x:.1f}' for x in s['open_big_all_ms'])} ms; "
        f"CPU {s['open_big_cpu_ms']:.1f} ms; "
        f"open_conversation() call {s['open_big_call_ms']:.1f} ms; "
        f"warm re-open {s['open_big_warm_ms']:.1f} ms"
    )
    print(
        f"  open {k:,}: all cold runs {', '.join(f'{x:.1f}' for x in s['open_small_all_ms'])} ms; "
        f"CPU {s['open_small_cpu_ms']:.1f} ms; warm re-open {s['open_small_warm_ms']:.1f} ms"
    )
    print(
        f"  floor: Log gets the page's lines {s['floor_open_ms']:.1f} ms "
        f"(CPU {s['floor_open_cpu_ms']:.1f} ms)"
    )
    print(
        f"  incoming: upsert() alone {s['incoming_upsert_ms']:.2f} ms CPU; wall to paint "
        f"{s['incoming_wall_ms']:.2f} ms; via SyncCore.on_frame (store + event + handler) "
        f"{s['incoming_engine_cpu_ms']:.2f} ms CPU"
    )
    print(f"  own message ◷ → ✓ with {s['loaded']:,} loaded: {s['own_sent_cpu_ms']:.2f} ms CPU")
    print(
        f"  prepend a page of {PAGE} older with ≥{s['loaded']:,} loaded: "
        f"{s['prepend_cpu_ms']:.1f} ms CPU to paint (call {s['prepend_call_cpu_ms']:.1f} ms)"
    )
    print(f"  set_messages() of {s['loaded']:,} messages (setup): {s['load_s']:.2f} s")
    print(f"  times the view had to be brought back to its bottom (End) mid-run: {s['refollow']}")
    print(f"  Enter offline: {s['enter_offline_slow']}")
    if "enter_slow" in s:
        print(f"  Enter connected: {s['enter_slow']}")
        print(f"  peer messages over 50 ms per repeat: {', '.join(s['p2p_over_50'])}")
        print(
            f"  peer messages scrolled past between two frames (counted at the next frame): "
            f"{s['p2p_skipped']}"
        )
    for phase in ("open", "loaded", "e2e"):
        g = s.get(f"gc_{phase}")
        if g:
            print(
                f"  full GC passes during the {phase} phase: {g['gen2_passes']}, "
                f"median {g['gen2_median_ms']:.0f} ms, max {g['gen2_max_ms']:.0f} ms (wall)"
            )
    if "p2p_cpu_per_msg_ms" in s:
        print(
            f"  receiving app CPU per peer message at {args.rate:g}/s: "
            f"{s['p2p_cpu_per_msg_ms']:.2f} ms"
        )
    print(
        f"  floor Log with {s['floor_lines_msg']:,} lines (the {s['loaded']:,} messages) + one "
        f"message: {s['floor_append_msg_cpu_ms']:.2f} ms CPU; with {args.loaded:,} lines + 1 line: "
        f"{s['floor_append_line_cpu_ms']:.2f} ms CPU"
    )


# ===================================================================== main


async def run_all(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    big_path = base / "big" / "store.sqlite"
    small_path = base / "small" / "store.sqlite"
    print(f"building stores: {args.messages:,} and {args.small:,} messages …", flush=True)
    raw["build_big"] = build_store(big_path, args.messages)
    raw["build_small"] = build_store(small_path, args.small)
    print(
        f"  {args.messages:,}: {raw['build_big']['seconds']:.1f} s, "
        f"{raw['build_big']['bytes'] / 1e6:.0f} MB",
        flush=True,
    )

    prof = _Profile(args.profile)
    print("open …", flush=True)
    raw["open_big"], raw["open_small"] = [], []
    mark = GC.mark()
    for r in range(args.repeat):
        # Alternate the sizes so slow phases of a shared machine hit both.
        order = [(big_path, "open_big"), (small_path, "open_small")]
        for path, key in order if r % 2 == 0 else reversed(order):
            p = prof if (r == 0 and key == "open_big" and args.profile) else None
            raw[key].append(await measure_open(path, p))
    prof.report(f"cold open of {args.messages:,}")
    raw["gc_open"] = GC.since(mark)

    print("memory …", flush=True)
    raw["memory"] = [
        await run_mem_child(["--store", str(big_path)]) for _ in range(min(3, args.repeat))
    ]

    print(f"incoming / Enter with {args.loaded:,} loaded (setup renders them all) …", flush=True)
    prof = _Profile(args.profile)
    mark = GC.mark()
    raw["loaded"] = await measure_loaded(big_path, args, prof)
    raw["gc_loaded"] = GC.since(mark)
    prof.report(f"incoming messages with {args.loaded:,} loaded")

    print("floor (Textual Log) …", flush=True)
    page_app_lines = await _page_lines(small_path)
    (base / "page_lines.json").write_text(json.dumps(page_app_lines))
    raw["memory_floor"] = [
        await run_mem_child(["--floor", str(base / "page_lines.json")])
        for _ in range(min(3, args.repeat))
    ]
    raw["floor"] = await measure_floor(
        page_app_lines, raw["loaded"].pop("big_lines"), raw["loaded"].pop("sample_incoming"), args
    )

    if not args.skip_e2e:
        print("end to end (server + peer engine) …", flush=True)
        # In a fresh process: the receiving client must not carry the heap of the phases
        # above (a full GC pass scans everything that is alive).
        out = await _run_child("_e2e", "--base", str(base / "e2e"), *_e2e_argv(args))
        raw["e2e"], raw["gc_e2e"] = out["e2e"], out["gc"]
    return raw


def _e2e_argv(args: argparse.Namespace) -> list[str]:
    return [
        f"--repeat={args.repeat}",
        f"--enter={args.enter}",
        f"--rate={args.rate}",
        f"--p2p-messages={args.p2p_messages}",
        f"--warmup={args.warmup}",
        f"--prefill={args.prefill}",
    ]


async def _e2e_child(args: argparse.Namespace) -> None:
    res = await measure_e2e(Path(args.base), args)
    print(json.dumps({"e2e": res, "gc": GC.since(0)}))


async def _page_lines(store_path: Path) -> list[str]:
    """The text lines of the newest page of ``big``, as our view renders them."""
    app, _engine, store = _offline_app(store_path)
    try:
        async with app.run_test(headless=True, size=SIZE) as pilot:
            await settle(pilot)
            app.open_conversation(BIG)
            await settle(pilot)
            width = app.view.scrollable_content_region.width
            return message_lines(store.page(BIG, None, PAGE), width, app)
    finally:
        store.close()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000, help="messages in the big store")
    ap.add_argument("--small", type=int, default=1_000, help="messages in the small store")
    ap.add_argument("--loaded", type=int, default=100_000, help="messages loaded in the view")
    ap.add_argument("--incoming", type=int, default=30, help="incoming messages per repeat")
    ap.add_argument("--enter", type=int, default=20, help="Enter presses per repeat")
    ap.add_argument("--rate", type=float, default=50.0, help="peer messages per second")
    ap.add_argument("--p2p-messages", type=int, default=500, help="peer messages per repeat")
    ap.add_argument("--warmup", type=int, default=20, help="peer messages not counted")
    ap.add_argument(
        "--prefill", type=int, default=15, help="messages sent before the end-to-end measures"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-e2e", action="store_true", help="no server / peer phase")
    ap.add_argument("--workdir", type=Path, help="keep the stores here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="write raw figures here")
    ap.add_argument("--profile", action="store_true", help="cProfile the first open / incoming")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_mem":
        cp = argparse.ArgumentParser()
        cp.add_argument("--store")
        cp.add_argument("--floor")
        asyncio.run(_mem_child(cp.parse_args(argv[1:])))
        return 0
    if argv and argv[0] == "_peer":
        cp = argparse.ArgumentParser()
        for name in ("--url", "--token", "--user", "--to", "--tag", "--dir"):
            cp.add_argument(name, required=True)
        cp.add_argument("--count", type=int, required=True)
        cp.add_argument("--rate", type=float, required=True)
        asyncio.run(_peer_child(cp.parse_args(argv[1:])))
        return 0
    if argv and argv[0] == "_e2e":
        ep = build_parser()
        ep.add_argument("--base", required=True)
        e2e_args = ep.parse_args(argv[1:])
        Path(e2e_args.base).mkdir(parents=True, exist_ok=True)
        asyncio.run(_e2e_child(e2e_args))
        return 0
    args = build_parser().parse_args(argv)
    machine = machine_info(
        "nproc", "cpu", "python", "textual", "rich", "sqlite", "kernel", "loadavg"
    )
    base = args.workdir or Path(tempfile.mkdtemp(prefix="ui_bench_"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        raw = asyncio.run(run_all(args, base))
        machine["loadavg_end"] = os.getloadavg()
        summary = summarize(raw)
        print_report(summary, args, machine)
        print(
            f"\ntotal {time.perf_counter() - t0:.0f} s; load avg at end "
            f"{machine['loadavg_end'][0]:.2f}"
        )
        if args.json:
            doc = {
                "machine": machine,
                "args": {k: str(v) for k, v in vars(args).items()},
                "summary": summary,
                "raw": raw,
            }
            write_json(args.json, doc, indent=1)
    finally:
        if args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
