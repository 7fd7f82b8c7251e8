"""A chaos sweep against two nodes on one PostgreSQL store and one Redis bus.

The schedules are the direct ones of :mod:`harness.chaos` (the same seeds give the same
actions); each client talks to node ``i % 2`` through its own fault proxy, every server fault
(SIGKILL, SIGTERM, SIGSTOP) hits the nodes in turn, and the checker reads the PostgreSQL
store. A new epoch is not a node's to make (the store is shared): there it is a node kill.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.chaos import Nodes, failure_digest, run_schedules
from harness.pgredis import PgCluster

SEED = 12
SCHEDULES = 4
# The suite runs on loaded machines: convergence gets room there (as in test_chaos.py).
CONVERGENCE = 20.0


@pytest.mark.timeout(400)
async def test_chaos_with_two_nodes_and_node_kills_finds_no_violation(
    tmp_path: Path, pg_cluster: PgCluster, bus_url: str
) -> None:
    nodes = Nodes(new_store=pg_cluster.create_database, bus=bus_url, count=2)
    summary, results = await run_schedules(
        SEED,
        SCHEDULES,
        jobs=2,
        root=tmp_path,
        keep="failed",
        progress=sys.stderr,
        convergence_limit=CONVERGENCE,
        nodes=nodes,
    )
    print(summary.text())
    for r in results:
        if not r.ok or r.converged_in is None:
            print(failure_digest(r))
    assert summary.schedules == SCHEDULES
    assert sum(summary.faults.get(k, 0) for k in ("server_kill", "server_term")) >= 1
    assert all(r.converged_in is not None for r in results)
    problems = [f"seed {r.seed} #{r.index}: {v}" for r in results for v in r.report.violations]
    assert summary.ok and not problems, "\n".join(problems[:40])


@pytest.mark.timeout(400)
async def test_group_chaos_with_three_nodes_finds_no_violation(
    tmp_path: Path, pg_cluster: PgCluster, bus_url: str
) -> None:
    """Group schedules (create, add, remove, leave, rename, texts, SIGSTOP of a node) with
    their members spread over three nodes: the group visibility rule holds as well."""
    nodes = Nodes(new_store=pg_cluster.create_database, bus=bus_url, count=3)
    summary, results = await run_schedules(
        7,
        2,
        jobs=2,
        root=tmp_path,
        keep="failed",
        progress=sys.stderr,
        groups=True,
        convergence_limit=CONVERGENCE,
        nodes=nodes,
    )
    print(summary.text())
    for r in results:
        if not r.ok or r.converged_in is None:
            print(failure_digest(r))
    assert summary.schedules == 2
    assert all(r.converged_in is not None for r in results)
    problems = [f"seed {r.seed} #{r.index}: {v}" for r in results for v in r.report.violations]
    assert summary.ok and not problems, "\n".join(problems[:40])
