"""The login throttle's rules, on a fake clock (time is the only thing faked)."""

import pytest

from appliance.throttle import LoginThrottle, Throttle, in_words


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def fail(t: Throttle, key: str, times: int = 1) -> None:
    """times attempts that each start (allowed) and fail."""
    for _ in range(times):
        assert t.retry_after(key) == 0
        t.begin(key)
        t.failed(key)


def test_five_failures_lock_for_a_minute_then_double_up_to_the_cap(clock):
    t = Throttle(5, 60, 900, count_pending=True, clock=clock)
    fail(t, "k", 4)
    assert t.retry_after("k") == 0
    fail(t, "k")
    assert t.retry_after("k") == 60
    waits = []
    for _ in range(6):
        clock.now += t.retry_after("k")
        fail(t, "k")
        waits.append(t.retry_after("k"))
    assert waits == [120, 240, 480, 900, 900, 900]


def test_a_success_forgets_the_key(clock):
    t = Throttle(5, 60, 900, count_pending=True, clock=clock)
    fail(t, "k", 5)
    clock.now += 60
    t.begin("k")
    t.succeeded("k")
    fail(t, "k", 4)  # a fresh allowance of 5
    assert t.retry_after("k") == 0


def test_attempts_in_flight_count_so_a_burst_cannot_slip_past(clock):
    t = Throttle(5, 60, 900, count_pending=True, clock=clock)
    started = 0
    for _ in range(50):  # 50 at once, none answered yet
        if t.retry_after("k") == 0:
            t.begin("k")
            started += 1
    assert started == 5


def test_past_the_limit_only_one_attempt_at_a_time(clock):
    t = Throttle(5, 60, 900, count_pending=True, clock=clock)
    fail(t, "k", 5)
    clock.now += 60
    assert t.retry_after("k") == 0
    t.begin("k")
    assert t.retry_after("k") > 0


def test_without_count_pending_many_may_be_in_flight(clock):
    t = Throttle(5, 60, 900, count_pending=False, clock=clock)
    for _ in range(50):
        assert t.retry_after("addr") == 0
        t.begin("addr")
    for _ in range(5):
        t.failed("addr")
    assert t.retry_after("addr") == 60


def test_failures_are_forgotten_after_lockout_max_without_one(clock):
    t = Throttle(5, 60, 900, count_pending=True, clock=clock)
    fail(t, "k", 4)
    clock.now += 899
    assert len(t) == 1 and t.retry_after("k") == 0
    clock.now += 1
    assert t.retry_after("k") == 0 and len(t) == 0
    fail(t, "k", 4)  # counted from zero again
    assert t.retry_after("k") == 0


def test_abandoned_attempt_counts_nothing(clock):
    t = Throttle(5, 60, 900, count_pending=True, clock=clock)
    for _ in range(20):
        t.begin("k")
        t.abandoned("k")
    assert t.retry_after("k") == 0 and len(t) == 0


def test_many_keys_are_swept(clock):
    t = Throttle(5, 60, 900, count_pending=True, clock=clock)
    for i in range(Throttle.SWEEP_ABOVE + 1):
        fail(t, f"k{i}")
    clock.now += 900
    t.retry_after("other")
    assert len(t) == 0


def test_login_throttle_per_pair_and_per_address(clock):
    lt = LoginThrottle(5, 5, 60, 900, clock=clock)
    for name in ("a", "b", "c", "d"):
        lt.begin("10.0.0.1", name)
        lt.failed("10.0.0.1", name)
    assert lt.retry_after("10.0.0.1", "e") == 0
    lt.begin("10.0.0.1", "e")
    lt.failed("10.0.0.1", "e")
    # The address tried five names: locked for every name, other addresses are not.
    assert lt.retry_after("10.0.0.1", "f") == 60
    assert lt.retry_after("10.0.0.2", "a") == 0


def test_a_success_does_not_clear_the_address(clock):
    lt = LoginThrottle(5, 5, 60, 900, clock=clock)
    for _ in range(4):
        lt.begin("10.0.0.1", "victim")
        lt.failed("10.0.0.1", "victim")
        lt.begin("10.0.0.1", "own")
        lt.succeeded("10.0.0.1", "own")
    lt.begin("10.0.0.1", "victim")
    lt.failed("10.0.0.1", "victim")
    assert lt.retry_after("10.0.0.1", "own") == 60


def test_concurrent_good_logins_from_one_address_are_not_throttled(clock):
    lt = LoginThrottle(5, 5, 60, 900, clock=clock)
    names = [f"u{i}" for i in range(50)]
    for name in names:
        assert lt.retry_after("127.0.0.1", name) == 0
        lt.begin("127.0.0.1", name)
    for name in names:
        lt.succeeded("127.0.0.1", name)
    assert len(lt.pairs) == 0 and len(lt.addresses) == 0


@pytest.mark.parametrize("seconds, words", [
    (3, "a few seconds"), (30, "30 seconds"), (60, "1 minute"), (100, "2 minutes"),
    (120, "2 minutes"), (900, "15 minutes")])
def test_in_words(seconds, words):
    assert in_words(seconds) == words
