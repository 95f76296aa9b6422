"""The debouncer on a fake clock: quiet time, stability, max delay, coalescing."""

from __future__ import annotations

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
