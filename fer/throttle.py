"""Back-off for repeated failures (wrong passwords), kept per key: an account, a client address.

    throttle = Throttle()
    if (wait := throttle.wait_s("account:alice", "client:10.0.0.7")) > 0:
        refuse(f"try again in {wait:.0f} s")            # the password is not even checked
    elif wrong_password:
        throttle.failed("account:alice", "client:10.0.0.7")
    else:
        throttle.succeeded("account:alice")

The first FREE_FAILURES failures of a key cost nothing; after that the key must wait FIRST_DELAY_S, then twice as
long after each further failure, up to MAX_DELAY_S. A key's failures are forgotten FORGET_AFTER_S after its last one.
Refusing instead of sleeping keeps a guesser from holding the server's workers. State is per process, in memory,
and bounded (MAX_KEYS): an attacker inventing names cannot grow it without limit.
"""

from __future__ import annotations

import threading
import time

FREE_FAILURES = 5
FIRST_DELAY_S = 2.0
MAX_DELAY_S = 300.0  # five minutes: slows a guesser to a few hundred tries a day, locks a reviewer out briefly
FORGET_AFTER_S = 3600.0
MAX_KEYS = 10_000


def _now() -> float:
    return time.monotonic()


class Throttle:
    """Failures per key and when the key may try again. Thread-safe."""

    def __init__(self, free_failures: int = FREE_FAILURES, first_delay_s: float = FIRST_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S, forget_after_s: float = FORGET_AFTER_S, max_keys: int = MAX_KEYS):
        self.free_failures = free_failures
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.forget_after_s = forget_after_s
        self.max_keys = max_keys
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures, time of the latest), oldest first
        self._lock = threading.Lock()

    def delay_after(self, failures: int) -> float:
        """Seconds a key must wait after its `failures`-th failure."""
        if failures < self.free_failures:
            return 0.0
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** (failures - self.free_failures))

    def wait_s(self, *keys: str | None) -> float:
        """Seconds until every one of `keys` may try again; 0 when they may now. None keys are ignored."""
        now = _now()
        with self._lock:
            waits = [0.0]
            for key in keys:
                if key is not None and key in self._failures:
                    failures, last = self._failures[key]
                    waits.append(last + self.delay_after(failures) - now)
            return max(waits)

    def failed(self, *keys: str | None) -> None:
        """Count one failure against each key."""
        now = _now()
        with self._lock:
            self._forget_old(now)
            for key in keys:
                if key is not None:
                    failures, _ = self._failures.pop(key, (0, now))
                    self._failures[key] = (failures + 1, now)  # re-inserted: the dict stays oldest first

    def succeeded(self, *keys: str | None) -> None:
        """Clear the keys' failures."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _forget_old(self, now: float) -> None:
        for key, (_, last) in list(self._failures.items()):
            if now - last < self.forget_after_s and len(self._failures) < self.max_keys:
                break  # the rest are newer
            del self._failures[key]
