"""Cost of one failed login in the server's throttle, by how many made-up names it holds.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/throttle_bench.py            # 1,000 / 10,000 / 50,000 names
    .venv/bin/python benchmarks/throttle_bench.py --sizes 1000 80000 --probe 2000

For each size, a fresh throttle is filled with that many distinct (name, address) failures,
then ``--probe`` more failures with new names are timed (the attacker's next attempts) and
the microseconds per failure are printed. The baseline in the same run is the throttle the
server had before (a dict of deques that, past 10,000 keys, scanned every key for stale
ones on each failure, on the event loop); ours is ``tui_chat.server.throttle.LoginThrottle``
(LRU-bounded, each key holding its last ``limit`` times). The load average is printed with
the figures, since other work on the machine slows both alike.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time

import _common  # noqa: F401  (puts the repository root on sys.path)

from tui_chat.server.throttle import LoginThrottle

LIMIT = 5
WINDOW = 60.0


class ScanningThrottle:
    """The server's throttle before issue 8, as it was in app.py (the baseline)."""

    MAX_KEYS = 10_000

    def __init__(self) -> None:
        self._failures: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )

    def failed(self, key: str) -> None:
        if len(self._failures) >= self.MAX_KEYS:
            horizon = time.monotonic() - WINDOW
            for stale in [k for k, q in self._failures.items() if not q or q[-1] < horizon]:
                del self._failures[stale]
        self._failures[key].append(time.monotonic())

    def __len__(self) -> int:
        return len(self._failures)


def per_failure_us(size: int, probe: int, *, old: bool) -> tuple[float, int]:
    """Fill with ``size`` names, time ``probe`` more; return (µs per probe failure, size)."""
    if old:
        scanning = ScanningThrottle()
        # Filled directly: the state after a flood, without the scans that made the flood
        # itself slow (filling 50,000 through failed() takes minutes).
        now = time.monotonic()
        for i in range(size):
            scanning._failures[f"fill-{i}\0attacker"].append(now)
        started = time.perf_counter()
        for i in range(probe):
            scanning.failed(f"probe-{i}\0attacker")
        return (time.perf_counter() - started) / probe * 1e6, len(scanning)
    throttle = LoginThrottle(LIMIT, WINDOW)
    for i in range(size):
        throttle.failed((f"fill-{i}", "attacker"))
    started = time.perf_counter()
    for i in range(probe):
        key = (f"probe-{i}", "attacker")
        # What the server does per failed attempt: check, then count.
        throttle.blocked(key)
        throttle.failed(key)
    return (time.perf_counter() - started) / probe * 1e6, len(throttle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--probe", type=int, default=1_000, help="failures timed per size")
    parser.add_argument("--repeat", type=int, default=3, help="median over this many runs")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'names held':>10} | {'before (scan) µs':>16} {'keys':>7} | {'ours µs':>8} {'keys':>7}")
    for size in args.sizes:
        old = [per_failure_us(size, args.probe, old=True) for _ in range(args.repeat)]
        new = [per_failure_us(size, args.probe, old=False) for _ in range(args.repeat)]
        print(
            f"{size:>10,} | {statistics.median(o for o, _ in old):>16.1f} {old[0][1]:>7,} | "
            f"{statistics.median(n for n, _ in new):>8.2f} {new[0][1]:>7,}"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
