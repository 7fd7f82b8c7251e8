"""The chaos harness in CI: a short seeded sweep against real processes must find nothing.

The sweep plays 20 schedules (fixed seed, three at a time) of the harness in
:mod:`harness.chaos`: a real server process, three headless client processes behind
fault proxies, every kind of fault, users retrying and giving up, then the checker over the
server database, every store and every event log. The long run (500+ schedules) and its
figures are in docs/reliability.md. ``tests/test_checker.py`` shows that the checker catches
broken variants, so a clean sweep means something.

The group sweep plays 6 group schedules (3 to 5 users, groups of 3 to 5 members, adds,
removals, leaves and renames among the faults, the server frozen by SIGSTOP too) and the
checker's visibility rule; its long run is in docs/reliability.md too.
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
    GROUP_ACTIONS,
    GROUP_FAULT_KINDS,
    SERVER_FAULTS,
    failure_digest,
    make_group_schedule,
    make_schedule,
    run_schedules,
)
from harness.checker import KINDS

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
    # The server is frozen (SIGSTOP) only in the group schedules, so that these stay as
    # they were.
    direct = set(FAULT_KINDS) - {"server_stop"}
    assert direct <= set(kinds), direct - set(kinds)
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


# The suite runs on loaded machines (CI beside other work): convergence gets room there.
# The 5 s limit is the long runs' figure (docs/reliability.md), measured on their own.
SUITE_CONVERGENCE = 20.0


@pytest.mark.timeout(400)
async def test_short_chaos_sweep_finds_no_violation(tmp_path: Path) -> None:
    summary, results = await run_schedules(
        SWEEP_SEED,
        SWEEP_SCHEDULES,
        jobs=3,
        root=tmp_path,
        keep="failed",
        progress=sys.stderr,
        convergence_limit=SUITE_CONVERGENCE,
    )
    print(summary.text())
    for r in results:
        if not r.ok or r.converged_in is None:
            print(failure_digest(r))
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


# ---------------------------------------------------------------- groups

GROUP_SWEEP_SEED = 20261223
GROUP_SWEEP_SCHEDULES = 6


def test_group_schedules_are_reproducible_and_sized_as_asked() -> None:
    a = make_group_schedule(7, 3)
    assert a == make_group_schedule(7, 3) and a != make_group_schedule(7, 4)
    assert a.describe() == make_group_schedule(7, 3).describe()
    assert [x.at for x in a.actions] == sorted(x.at for x in a.actions)
    for i in range(40):
        s = make_group_schedule(GROUP_SWEEP_SEED, i)
        assert 3 <= s.clients <= 5 and s.groups in (1, 2) and s.second_device is None
        assert all(0 <= x.at <= s.duration for x in s.actions)
        assert not any(x.kind == "epoch_change" for x in s.actions)
        for g in range(s.groups):
            # Replay the plan: 3 to 5 members, changes only by the rules.
            (create,) = [x for x in s.actions if x.kind == "create" and x.group == g]
            members = {create.client, *create.members}
            assert 3 <= len(members) <= 5
            creator_in = True
            for x in s.actions:
                if x.group != g or x.kind in ("create", "gsend"):
                    continue
                assert x.at > create.at
                if x.kind in ("add", "remove"):
                    assert x.client == create.client and creator_in
                if x.kind == "add":
                    assert x.peer not in members
                    members.add(x.peer)
                elif x.kind == "remove":
                    assert x.peer in members and x.peer != x.client
                    members.discard(x.peer)
                elif x.kind == "leave":
                    assert x.client in members
                    members.discard(x.client)
                    creator_in = creator_in and x.client != create.client
                assert len(members) <= 5


def test_the_group_sweep_covers_every_fault_and_membership_change() -> None:
    schedules = [make_group_schedule(GROUP_SWEEP_SEED, i) for i in range(GROUP_SWEEP_SCHEDULES)]
    kinds = Counter(a.kind for s in schedules for a in s.actions)
    wanted = {*GROUP_FAULT_KINDS, *GROUP_ACTIONS, "retry", "give_up_failed", "give_up_pending"}
    assert wanted <= set(kinds), wanted - set(kinds)
    assert {s.clients for s in schedules} == {3, 4, 5}
    assert {s.groups for s in schedules} == {1, 2}


@pytest.mark.timeout(300)
async def test_short_group_chaos_sweep_finds_no_violation(tmp_path: Path) -> None:
    summary, results = await run_schedules(
        GROUP_SWEEP_SEED,
        GROUP_SWEEP_SCHEDULES,
        jobs=3,
        root=tmp_path,
        keep="failed",
        progress=sys.stderr,
        groups=True,
        convergence_limit=SUITE_CONVERGENCE,
    )
    print(summary.text())
    for r in results:
        if not r.ok or r.converged_in is None:
            print(failure_digest(r))
    assert summary.schedules == GROUP_SWEEP_SCHEDULES
    assert all(r.converged_in is not None for r in results)
    problems = [f"seed {r.seed} #{r.index}: {v}" for r in results for v in r.report.violations]
    assert summary.ok and not problems, "\n".join(problems[:40])
    # The groups were really exercised: created, written to, changed under faults.
    acts = summary.user_actions
    for kind in ("create", "gsend", "add", "remove", "leave", "rename"):
        assert acts[f"{kind}:ok"] >= 1, (kind, dict(acts))
    assert acts["gsend:ok"] >= 10 * GROUP_SWEEP_SCHEDULES, dict(acts)
    assert set(KINDS) >= {"leaked", "membership", "members"}
