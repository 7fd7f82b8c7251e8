"""The one way tests and the harness wait: poll a condition, bounded, and say what failed.

Nothing here sleeps for a fixed time and then asserts: :func:`until` returns as soon as the
condition holds and fails only after a generous deadline, so a loaded machine makes a test
slower, never red. :func:`stays` is the opposite check (something must keep holding for a
while) and is the only place where a duration is part of the assertion.

A failure raises :class:`WaitTimeout`, an :class:`AssertionError`, so pytest reports it as a
test failure with the description of what was awaited. Under Textual's Pilot pass
``pause=pilot.pause`` so that the app processes its messages between polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

T = TypeVar("T")

# Default bound for one expected outcome (a reconnect, a send, a catch-up, a repaint).
# Generous for a loaded machine; a passing wait takes a fraction of it.
WAIT: Final = 10.0
POLL: Final = 0.02

Pause = Callable[[float], Awaitable[object]]


class WaitTimeout(AssertionError):
    """A bounded wait ran out: the condition it names did not come true (or did not last)."""


async def until(
    cond: Callable[[], T],
    what: str,
    within: float = WAIT,
    *,
    poll: float = POLL,
    pause: Pause | None = None,
) -> T:
    """Poll ``cond`` until it returns something truthy and return that; fail after ``within`` s."""
    sleep: Pause = pause or asyncio.sleep
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = cond()
        if value:
            return value
        if loop.time() >= deadline:
            raise WaitTimeout(f"not true within {within} s: {what}")
        await sleep(poll)


async def stays(
    cond: Callable[[], object],
    what: str,
    duration: float,
    *,
    poll: float = POLL,
    pause: Pause | None = None,
) -> None:
    """Fail as soon as ``cond`` turns false during ``duration`` seconds."""
    sleep: Pause = pause or asyncio.sleep
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    while loop.time() < deadline:
        if not cond():
            raise WaitTimeout(f"expected {what} for {duration} s; it changed")
        await sleep(poll)
    if not cond():
        raise WaitTimeout(f"expected {what} for {duration} s; it changed")
