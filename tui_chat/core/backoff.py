"""Reconnect delays: full-jitter exponential backoff.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads a
crowd of clients that lost the same server, so they do not return in one wave.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        # The exponent is clamped: 2.0 ** 1024 overflows, and a client offline for a few hours
        # (about a thousand attempts at the cap) would otherwise crash its reconnect loop.
        exponent = min(max(0, self.attempt - 1), 64)
        return float(min(self.cap, self.initial * 2.0**exponent))

    def next_delay(self) -> float:
        """Count one more failed attempt and return how long to wait before the next."""
        self.attempt += 1
        return self._rng.uniform(0, self.ceiling())

    def prompt_delay(self) -> float:
        """A short, jittered wait for a server that asked us to come back (1012/1001)."""
        self.attempt += 1
        return self._rng.uniform(0, self.initial)

    def reset(self) -> None:
        self.attempt = 0
