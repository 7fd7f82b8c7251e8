"""The chaos harness in CI: a short seeded sweep against real processes must find nothing.

The sweep plays 20 schedules (fixed seed, three at a time) of the harness in
:mod:`harness.chaos`: a real server process, three headless client processes behind
fault proxies, every kind of fault, users retrying and giving up, then the checker over the
server database, every store and every event log. The long run (500+ schedules) and its
figures are in docs/reliability.md. ``tests/test_checker.py`` shows that the checker catches
broken variants, so a clean sweep means something.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.chaos import (
    CLIENT_FAULTS,
    FAULT_KINDS,
    SERVER_FAULTS,
    make_schedule,
    run_schedules,
)

SWEEP_SEED = 20260501
SWEEP_SCHEDULES = 20


def test_schedules_are_reproducible_from_seed_and_index() -> None:
    a = make_schedule(7, 3)
    assert a == make_schedule(7, 3)
    assert a.describe() == make_schedule(7, 3).describe()
    assert a != make_schedule(7, 4)
    assert a != make_schedule(8, 3)
    sends = [x for x in a.actions if x.kind == "send" and x.client < a.clients]
    assert len(sends) == 45  # a second device's sends come on top
    assert all(0 <= x.at <= a.duration for x in a.actions)
    assert [x.at for x in a.actions] == sorted(x.at for x in a.actions)


def test_a_second_device_adds_to_a_schedule_without_changing_the_rest() -> None:
    with_it = make_schedule(7, 3, second_device=True)
    without = make_schedule(7, 3, second_device=False)
    assert with_it.second_device is not None and without.second_device is None
    assert with_it.devices == 4 and len(with_it.freshness) == len(with_it.on_failure) == 4
    extra = [x for x in with_it.actions if x.client == with_it.clients]
    assert sum(x.kind == "send" for x in extra) >= 3
    # Its peers are users (never its own user), and everything else is as without it.
    assert all(x.peer != with_it.second_device for x in extra if x.kind == "send")
    assert [x for x in with_it.actions if x.client != with_it.clients] == list(without.actions)
    # The CI sweep has schedules with and without one.
    assert {make_schedule(SWEEP_SEED, i).second_device is None for i in range(SWEEP_SCHEDULES)} == {
        True,
        False,
    }


def test_the_sweep_covers_every_fault_kind() -> None:
    kinds = Counter(
        a.kind
        for i in range(SWEEP_SCHEDULES)
        for a in make_schedule(SWEEP_SEED, i).actions
        if a.kind != "send"
    )
    assert set(FAULT_KINDS) <= set(kinds), set(FAULT_KINDS) - set(kinds)
    assert {"retry", "give_up_failed", "give_up_pending", "edit"} <= set(kinds)
    # Faults of one kind never overlap on one target (a restore would cancel another fault).
    for i in range(SWEEP_SCHEDULES):
        schedule = make_schedule(SWEEP_SEED, i)
        server = [(a.at, a.at + a.duration) for a in schedule.actions if a.kind in SERVER_FAULTS]
        assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(server))
        for c in range(schedule.clients):
            kills = [a for a in schedule.actions if a.kind in CLIENT_FAULTS and a.client == c]
            spans = [(a.at, a.at + a.duration) for a in kills]
            assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(spans))


@pytest.mark.timeout(400)
async def test_short_chaos_sweep_finds_no_violation(tmp_path: Path) -> None:
    summary, results = await run_schedules(
        SWEEP_SEED, SWEEP_SCHEDULES, jobs=3, root=tmp_path, keep="failed", progress=sys.stderr
    )
    print(summary.text())
    assert summary.schedules == SWEEP_SCHEDULES
    assert summary.messages >= 40 * SWEEP_SCHEDULES
    assert sum(summary.faults.values()) >= 3 * SWEEP_SCHEDULES
    assert all(r.converged_in is not None for r in results)
    problems = [f"seed {r.seed} #{r.index}: {v}" for r in results for v in r.report.violations]
    assert summary.ok and not problems, "\n".join(problems[:40])


def test_cli_prints_a_summary_as_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.chaos",
            "--seed",
            "5",
            "--schedules",
            "1",
            "--messages-per-schedule",
            "12",
            "--duration",
            "1.5",
            "--json",
            "-q",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["schedules"] == 1
    assert summary["messages"] >= 10
    for key in ("lost", "duplicated", "reordered", "wrong_state"):
        assert summary[key] == 0
    assert set(summary["violations"]) >= {"lost", "phantom", "gap", "not_converged"}
    assert list(tmp_path.iterdir()) == []  # nothing kept when nothing failed
