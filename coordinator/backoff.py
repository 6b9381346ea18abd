"""Back off a unit of work that failed instead of retrying it in a tight loop (healthchecks'
`sendalerts` pushes a crashing check an hour ahead: "otherwise it may end up in a crash loop")."""

from __future__ import annotations

import time
from collections.abc import Hashable


class Backoff:
    """Per-key waiting times that double after each failure (base, 2*base, ... up to cap).

    In memory on purpose: a restarted coordinator simply tries everything once more.
    """

    def __init__(self, *, base: float = 1.0, cap: float = 300.0, clock=time.monotonic):
        self.base = base
        self.cap = cap
        self.clock = clock
        self._until: dict[Hashable, float] = {}
        self._failures: dict[Hashable, int] = {}

    def ready(self, key: Hashable) -> bool:
        return self._until.get(key, 0.0) <= self.clock()

    def remaining(self, key: Hashable) -> float:
        return max(0.0, self._until.get(key, 0.0) - self.clock())

    def failed(self, key: Hashable, *, retry_after: float | None = None) -> float:
        """Record a failure; returns how many seconds the key now waits. `retry_after` (what
        the other side asked for) wins over the doubling when it is longer."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self.cap, self.base * 2 ** (failures - 1))
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._until[key] = self.clock() + delay
        return delay

    def hold(self, key: Hashable, seconds: float) -> None:
        """Wait `seconds` without counting a failure (e.g. a rate limit announced ahead)."""
        self._until[key] = max(self._until.get(key, 0.0), self.clock() + seconds)

    def succeeded(self, key: Hashable) -> None:
        self._until.pop(key, None)
        self._failures.pop(key, None)
