"""The debouncer on a fake clock: quiet time, stability, max delay, coalescing."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from syncd.debounce import Debouncer


def test_quiet_time_then_due() -> None:
    d: Debouncer[str] = Debouncer(0.5, 30, probe=lambda k: 1)
    d.touch("a", 0.0)
    d.touch("a", 0.3)
    assert d.pop_due(0.7) == []
    assert d.next_deadline() == 0.8
    assert d.pop_due(0.8) == ["a"]
    assert len(d) == 0


def test_unstable_file_waits_for_another_quiet_period() -> None:
    state = {"a": (1, 1)}
    d: Debouncer[str] = Debouncer(0.5, 30, probe=lambda k: state[k])
    d.touch("a", 0.0)
    state["a"] = (2, 2)  # grew without an event reaching us yet
    assert d.pop_due(0.5) == []
    assert d.pop_due(0.9) == []
    assert d.pop_due(1.0) == ["a"]


def test_max_delay_sends_a_file_that_never_settles() -> None:
    d: Debouncer[str] = Debouncer(0.5, 3, probe=lambda k: 1)
    t = 0.0
    sent_at = None
    while t < 5:
        d.touch("busy", t)
        if d.pop_due(t):
            sent_at = t
            break
        t += 0.1
    assert sent_at is not None and 3.0 <= sent_at < 3.2


def test_burst_coalesces_per_path() -> None:
    d: Debouncer[int] = Debouncer(0.5, 30, probe=lambda k: 0)
    for i in range(100_000):
        d.touch(i % 1000, i * 1e-6)
    assert len(d) == 1000
    assert sorted(d.pop_due(10.0)) == list(range(1000))


@given(
    quiet=st.floats(0.05, 2.0),
    max_delay=st.floats(0.0, 10.0),
    gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=60),
    tick=st.floats(0.01, 0.5),
)
def test_a_path_is_due_within_max_delay_of_its_first_event_whatever_the_events(
    quiet: float, max_delay: float, gaps: list[float], tick: float
) -> None:
    """Generated event times (and a file whose state changes at every event): a path is due at
    the first check after it was quiet for ``quiet`` or ``max_delay`` passed since its first
    unsent event, whichever is first: never before, never after."""
    state = {"n": 0}
    d: Debouncer[str] = Debouncer(quiet, max_delay, probe=lambda k: state["n"])
    events = list(itertools.accumulate(gaps))
    limit = max(max_delay, quiet)
    first: float | None = None
    last = 0.0
    now = 0.0
    i = 0
    while i < len(events) or len(d):
        nxt = events[i] if i < len(events) else None
        if nxt is not None and nxt <= now:
            state["n"] += 1
            d.touch("f", nxt)
            first = nxt if first is None else first
            last = nxt
            i += 1
            continue
        due = d.pop_due(now)
        if first is not None:
            deadline = min(first + limit, last + quiet)
            if due:
                assert due == ["f"]
                assert now >= deadline - 1e-6, "due before it was quiet or overdue"
                first = None
            else:
                assert now < deadline + 1e-6, "not due although quiet or overdue"
        now += tick
