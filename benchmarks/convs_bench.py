"""The app with many conversations (issue 10, part 6): opening and switching, 1,000 vs 1.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/convs_bench.py                  # the documented run (~1 min)
    .venv/bin/python benchmarks/convs_bench.py --many 100 --repeat 1   # smoke

Headless (``App.run_test(headless=True, size=(120, 40))``), the real ``ChatApp`` with its
real ``Engine`` (not running: no server) and ``LocalStore``, as in ``ui_bench.py``, whose
frame probe this script uses (a frame counts once Textual has encoded it for a terminal).

Three local stores of user ``me``, built the same way (``LocalStore`` creates the schema and
the conversation rows, one ``executemany`` inserts the messages): ``--many`` (1,000)
conversations, and the baselines of 1 and 2 conversations (switching needs two). Every
conversation holds ``--messages`` (30) messages from its peer; its newest one carries a
marker. For each repeat, in alternating order of the stores:

* **open**: from constructing ``ChatApp`` (and entering ``run_test``) to the first frame
  that shows the marker of the most recent conversation, which the app opens on mount;
* **switch, warm**: ``app.open_conversation(peer)`` between the two most recent
  conversations, ``--switches`` times each way, after each was shown once; the clock runs
  from the call to the first frame whose message view shows that peer's marker;
* **switch, cold**: the same to conversations never opened before in this app (with 1,000:
  ``--switches`` of them spread over the list; with 2: the one other conversation).

One untimed app (of the 2-conversation store) runs first: the first app of a process pays
for imports and the stylesheet. Figures are medians over repeats of each repeat's median;
``os.getloadavg()`` is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import client_config, machine_info, median, random_body, random_client_id, write_json
from textual.geometry import Region
from ui_bench import ME, SIZE, FrameProbe, Stamp, frame, region_text, settle

from tui_chat.core.store import LocalStore
from tui_chat.ui.message_view import MessageView

GOAL_RATIO = 1.5  # "within the figures of the 1-conversation case": ui_bench's open ratio


def peer_name(i: int) -> str:
    return f"p{i:04d}"


def marker(peer: str) -> str:
    return f"newest of {peer} #"


def build_store(path: Path, conversations: int, messages: int, seed: int = 1) -> float:
    """A store with ``conversations`` DMs of ``messages`` messages each. The app lists
    conversations in the store's order (rowid), so ``p0000`` is listed and opened first;
    its messages are also the most recent ones."""
    t0 = time.perf_counter()
    store = LocalStore(path, ME)
    convs = [(peer_name(i), f"c{i:012x}") for i in range(conversations)]
    for peer, conv in convs:
        store.ensure_conversation(peer, conv)
    store.commit()
    rng = random.Random(seed)
    ts0 = 1_760_000_000_000

    def rows() -> Any:
        for i, (peer, conv) in enumerate(convs):
            base = ts0 + (conversations - i) * 1_000_000
            for seq in range(1, messages + 1):
                body = random_body(rng)
                if seq == messages:
                    body = f"{marker(peer)}{seq} " + body[:40]
                yield (conv, seq, peer, ME, random_client_id(rng), body, base + seq * 1000)

    conn = store._db
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO messages(conv, seq, sender, recipient, client_id, body, ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows(),
    )
    conn.executemany(
        "UPDATE conversations SET wm=?, read_seq=?, unread=0, last_ts=? WHERE peer=?",
        [
            (messages, messages, ts0 + (conversations - i) * 1_000_000 + messages * 1000, peer)
            for i, (peer, _) in enumerate(convs)
        ],
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return time.perf_counter() - t0


class _FirstShown:
    """Stamps the first frame whose message view shows ``text``: installed before mount,
    it looks up the view's region at each frame (the sidebar's preview shows it too)."""

    def __init__(self, app: Any, text: str) -> None:
        self.app = app
        self.text = text
        self.stamp: Stamp | None = None
        self.done = asyncio.Event()
        self._orig = app._display
        app._display = self._display

    def _display(self, screen: Any, renderable: Any) -> None:
        self._orig(screen, renderable)
        if self.stamp is not None or renderable is None:
            return
        renderable.render_segments(self.app.console)
        stamp = Stamp(time.perf_counter(), time.monotonic_ns(), time.process_time())
        views = self.app.query(MessageView)
        region = views.first().region if views else Region()
        if region.area and self.text in region_text(renderable, region):
            self.stamp = stamp
            self.done.set()

    def remove(self) -> None:
        self.app._display = self._orig


async def measure(store_path: Path, conversations: int, switches: int) -> dict[str, Any]:
    from tui_chat.core.engine import Engine
    from tui_chat.ui.app import ChatApp

    newest = peer_name(0)
    # Each open starts as in a fresh process, without the garbage of the apps measured
    # before it: otherwise whichever open sets off a full collection pays for collecting
    # every earlier app (131-287 ms measured), and that lottery decided single figures.
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    store = LocalStore(store_path, ME)
    cfg = client_config(ME, "x", "ws://127.0.0.1:9", store_path.parent)
    engine = Engine(cfg, "x", store=store)
    app = ChatApp(engine, run_engine=False)
    first = _FirstShown(app, marker(newest))
    out: dict[str, Any] = {"conversations": conversations}
    try:
        async with app.run_test(headless=True, size=SIZE) as pilot:
            await asyncio.wait_for(first.done.wait(), 30)
            assert first.stamp is not None
            out["open_ms"] = (first.stamp.perf - t0) * 1e3
            out["open_cpu_ms"] = (first.stamp.cpu - c0) * 1e3
            first.remove()
            await settle(pilot, 0.1)
            assert app.peer == newest, app.peer
            probe = FrameProbe(app)
            view = app.view

            async def switch(peer: str) -> float:
                fut = probe.expect(view, marker(peer))
                s0 = time.perf_counter()
                app.open_conversation(peer)
                st = await frame(fut)
                await settle(pilot, 0.02)
                return (st.perf - s0) * 1e3

            cold: list[float] = []
            warm: list[float] = []
            if conversations >= 2:
                second = peer_name(1)
                cold.append(await switch(second))
                for _ in range(switches):
                    warm.append(await switch(newest))
                    warm.append(await switch(second))
                # Never opened yet: spread over the rest of the list (down to the oldest).
                rest = conversations - 2
                picks = sorted(
                    {round(k * (rest - 1) / max(1, switches - 1)) for k in range(switches)}
                )
                for i in picks[: switches if rest > 0 else 0]:
                    cold.append(await switch(peer_name(2 + i)))
            out["warm_ms"] = warm
            out["cold_ms"] = cold
            out["listed"] = len(app.conv_list.order)
    finally:
        store.close()
    return out


def _med(reps: list[dict[str, Any]], key: str) -> float:
    vals = []
    for r in reps:
        v = r.get(key)
        if isinstance(v, list):
            if v:
                vals.append(statistics.median(v))
        elif v is not None:
            vals.append(v)
    return median(vals)


def _load(ld: Any) -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*ld)


async def run_all(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    sizes = [1, 2, args.many]
    paths = {}
    for n in sizes:
        paths[n] = base / f"store-{n}" / "store.db"
        paths[n].parent.mkdir(parents=True)
        secs = build_store(paths[n], n, args.messages)
        print(f"built the store of {n} conversations in {secs:.1f} s")
    # The first app of a process pays for imports and the stylesheet: not counted.
    await measure(paths[2], 2, 1)
    reps: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for r in range(args.repeat):
        order = sizes if r % 2 == 0 else list(reversed(sizes))
        for n in order:
            res = await measure(paths[n], n, args.switches)
            res["load"] = os.getloadavg()
            reps[n].append(res)
            print(
                f"repeat {r + 1}, {n} conversations: open {res['open_ms']:.1f} ms; "
                f"switch warm median {median(res['warm_ms']):.1f} ms, cold median "
                f"{median(res['cold_ms']):.1f} ms ({_load(res['load'])})"
            )
    return {str(n): reps[n] for n in sizes}


def print_report(raw: dict[str, Any], args: argparse.Namespace) -> None:
    one, two, many = raw["1"], raw["2"], raw[str(args.many)]
    print()
    print(
        f"== the app with {args.many} conversations vs 1 (2 for switching), "
        f"{args.messages} messages each, medians over {args.repeat} repeats"
    )
    rows = [
        ("open (construct to first frame of the newest)", "open_ms", one, many),
        ("open, CPU", "open_cpu_ms", one, many),
        ("switch, warm (each way, after a first visit)", "warm_ms", two, many),
        ("switch, cold (never opened before)", "cold_ms", two, many),
    ]
    for label, key, base, big in rows:
        b, m = _med(base, key), _med(big, key)
        ratio = m / b if b else float("nan")
        verdict = "PASS" if ratio <= GOAL_RATIO else "MISS"
        print(
            f"  {label}: baseline {b:.1f} ms, {args.many} conversations {m:.1f} ms, "
            f"ratio {ratio:.2f} (<= {GOAL_RATIO:g}: {verdict})"
        )
    loads = [r["load"][0] for n in raw.values() for r in n]
    print(f"  load (1 min) during the repeats: {min(loads):.2f} to {max(loads):.2f}")
    print(f"  listed in the sidebar: {many[0]['listed']} and {one[0]['listed']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--many", type=int, default=1000, help="conversations in the big store")
    ap.add_argument("--messages", type=int, default=30, help="messages per conversation")
    ap.add_argument("--switches", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write raw figures here ('-': stdout)")
    args = ap.parse_args(argv)
    machine = machine_info("nproc", "cpu", "python", "textual", "loadavg")
    print(f"machine {machine}")
    base = Path(tempfile.mkdtemp(prefix="convs-bench-"))
    try:
        raw = asyncio.run(run_all(args, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print_report(raw, args)
    if args.json:
        write_json(args.json, {"machine": machine, "args": vars(args), "raw": raw})
    return 0


if __name__ == "__main__":
    sys.exit(main())
