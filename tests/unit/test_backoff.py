"""The reconnect backoff (tui_chat/core/backoff.py) with a seeded random source."""

from __future__ import annotations

import random

import pytest

from tui_chat.core.backoff import Backoff


def test_full_jitter_stays_under_a_doubling_ceiling_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1))
    ceilings = []
    for _ in range(10):
        delay = backoff.next_delay()
        ceilings.append(backoff.ceiling())
        assert 0.0 <= delay <= backoff.ceiling()
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]


def test_the_draw_is_uniform_over_the_whole_range() -> None:
    # Full jitter, not "ceiling minus a little": draws spread from near 0 to near the cap.
    backoff = Backoff(1.0, 4.0, random.Random(7))
    for _ in range(3):
        backoff.next_delay()
    draws = []
    for _ in range(2000):
        backoff.attempt = 3  # keep the ceiling at 4 s
        draws.append(backoff.next_delay())
    assert max(draws) <= 4.0
    assert min(draws) < 0.1 and max(draws) > 3.9
    assert sum(draws) / len(draws) == pytest.approx(2.0, abs=0.15)


def test_the_same_seed_gives_the_same_delays() -> None:
    a = Backoff(0.5, 30.0, random.Random(42))
    b = Backoff(0.5, 30.0, random.Random(42))
    assert [a.next_delay() for _ in range(8)] == [b.next_delay() for _ in range(8)]


def test_a_huge_attempt_count_stays_at_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(3))
    backoff.attempt = 10_000  # 2 ** 10_000 overflows a float; the cap must still hold
    assert backoff.ceiling() == 30.0
    assert 0.0 <= backoff.next_delay() <= 30.0


def test_reset_starts_again_from_the_initial_ceiling() -> None:
    backoff = Backoff(0.25, 10.0, random.Random(5))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.ceiling() == 8.0
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.ceiling() == 0.25
    assert backoff.next_delay() <= 0.25


def test_prompt_delay_is_short_but_counts_an_attempt() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(9))
    for _ in range(6):
        backoff.next_delay()
    prompts = [backoff.prompt_delay() for _ in range(50)]
    assert all(0.0 <= d <= 0.5 for d in prompts)
    assert backoff.attempt == 56  # a server that keeps asking us back still backs us off
    assert backoff.ceiling() == 30.0
