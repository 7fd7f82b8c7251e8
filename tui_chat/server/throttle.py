"""The failed-login throttle: constant work per attempt, bounded memory.

Keyed by (user name, client address): failures from one place lock that place out of
that name only, so a stranger's guesses never lock the owner out of their account from
another address. Each key keeps only its last ``limit`` failure times, so "``limit``
failures within ``window``" is one comparison with the oldest of them. Keys live in
an LRU order and the least recently failed key is dropped past ``capacity``: an attacker
inventing names (50,000 of them, or millions) costs O(1) per attempt on the event loop
and at most ``capacity`` entries, never a scan.

The price of the bound: an attacker who cycles more than ``capacity`` other keys between
two guesses at one name gets that name's count forgotten. Tokens are 256 random bits, so
the throttle is there against load and noise, not against brute force.
"""

from __future__ import annotations

import collections
import time
from typing import Final

DEFAULT_CAPACITY: Final = 10_000

Key = tuple[str, str]


class LoginThrottle:
    def __init__(self, limit: int, window: float, capacity: int = DEFAULT_CAPACITY) -> None:
        self.limit = limit
        self.window = window
        self.capacity = capacity
        self._failures: collections.OrderedDict[Key, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._failures)

    def blocked(self, key: Key) -> bool:
        """True while ``key`` has ``limit`` failures within the last ``window`` seconds."""
        failures = self._failures.get(key)
        if failures is None or len(failures) < self.limit:
            return False
        return failures[0] >= time.monotonic() - self.window

    def failed(self, key: Key) -> None:
        failures = self._failures.get(key)
        if failures is None:
            failures = collections.deque(maxlen=self.limit)
            self._failures[key] = failures
            if len(self._failures) > self.capacity:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        failures.append(time.monotonic())

    def succeeded(self, key: Key) -> None:
        self._failures.pop(key, None)
