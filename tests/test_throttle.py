"""fer.throttle: the back-off after repeated failures, per key, with a clock the tests move."""

import pytest

from fer import throttle


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(throttle, "_now", lambda: now[0])
    return now


def test_free_failures_then_a_doubling_delay_up_to_the_cap(clock):
    limiter = throttle.Throttle(free_failures=3, first_delay_s=2.0, max_delay_s=10.0)
    for _ in range(2):
        limiter.failed("account:ana")
        assert limiter.wait_s("account:ana") == 0
    delays = []
    for _ in range(5):
        limiter.failed("account:ana")
        delays.append(limiter.wait_s("account:ana"))
        clock[0] += delays[-1]
        assert limiter.wait_s("account:ana") == 0
    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_keys_are_separate_and_the_longest_wait_counts(clock):
    limiter = throttle.Throttle(free_failures=1, first_delay_s=5.0)
    limiter.failed("account:ana", "client:1.2.3.4")
    assert limiter.wait_s("account:ana") == 5.0 and limiter.wait_s("account:ben") == 0
    assert limiter.wait_s("account:ben", "client:1.2.3.4") == 5.0  # another name from the same address waits too
    assert limiter.wait_s("account:ben", None) == 0  # no address known (a direct call): only the account counts
    limiter.succeeded("account:ana")
    assert limiter.wait_s("account:ana") == 0 and limiter.wait_s("client:1.2.3.4") == 5.0


def test_failures_are_forgotten_after_a_while_and_memory_is_bounded(clock):
    limiter = throttle.Throttle(free_failures=1, forget_after_s=60.0, max_keys=100)
    limiter.failed("account:ana")
    clock[0] += 61
    limiter.failed("account:ben")  # counting a failure sweeps out the old ones
    assert limiter.wait_s("account:ana") == 0 and "account:ana" not in limiter._failures
    for number in range(1000):
        limiter.failed(f"account:guess{number}")
    assert len(limiter._failures) <= 100
    assert limiter.wait_s("account:guess999") > 0  # the newest are kept
