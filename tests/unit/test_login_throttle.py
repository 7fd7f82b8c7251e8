"""The failed-login throttle's bookkeeping: per (name, address), windowed, bounded, LRU.

The load claim (50,000 made-up names do not slow a normal client) is checked for real in
tests/functional/server/test_server_throttle.py.
"""

from __future__ import annotations

import time

import pytest

from tui_chat.server.throttle import LoginThrottle


def test_blocked_after_limit_failures_and_only_for_that_key() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    key, other = ("alice", "10.0.0.1"), ("alice", "10.0.0.2")
    for _ in range(2):
        throttle.failed(key)
        assert not throttle.blocked(key)
    throttle.failed(key)
    assert throttle.blocked(key)
    # The owner elsewhere, and another name from the same place, are not affected.
    assert not throttle.blocked(other)
    assert not throttle.blocked(("bob", "10.0.0.1"))
    throttle.succeeded(key)
    assert not throttle.blocked(key)


def test_failures_leave_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    throttle = LoginThrottle(limit=2, window=10)
    throttle.failed(("carol", "h"))
    now[0] += 6
    throttle.failed(("carol", "h"))
    assert throttle.blocked(("carol", "h"))
    now[0] += 5  # the first failure is now 11 s old: one left in the window
    assert not throttle.blocked(("carol", "h"))
    throttle.failed(("carol", "h"))
    assert throttle.blocked(("carol", "h"))


def test_memory_is_bounded_and_the_least_recent_key_goes_first() -> None:
    throttle = LoginThrottle(limit=2, window=60, capacity=1000)
    throttle.failed(("alice", "attacker"))
    throttle.failed(("alice", "attacker"))
    for i in range(50_000):
        throttle.failed((f"made-up-{i}", "attacker"))
        if i == 500:
            # A key that fails again moves to the back of the eviction order.
            throttle.failed(("made-up-10", "attacker"))
    assert len(throttle) == 1000
    assert not throttle.blocked(("alice", "attacker"))  # evicted: the documented price
    assert ("made-up-49999", "attacker") in throttle._failures
    assert ("made-up-10", "attacker") not in throttle._failures  # long since evicted too
    # Each key holds at most ``limit`` timestamps.
    assert all(len(q) <= 2 for q in throttle._failures.values())
