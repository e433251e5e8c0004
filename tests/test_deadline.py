"""Deadlines within deadlines, and a repair call's budget in CPU time inside the loop's wall-clock time."""

from __future__ import annotations

import time

import pytest

from verirepair.repair import strategy
from verirepair.repair.strategy import call_budget
from verirepair.verify import Deadline


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_within_another_ends_with_the_earlier_one() -> None:
    outer_clock, inner_clock = FakeClock(), FakeClock()
    outer = Deadline(10.0, clock=outer_clock)
    inner = Deadline(100.0, clock=inner_clock, within=outer)
    assert inner.seconds == 10.0 and inner.remaining() == 10.0 and not inner.expired()
    outer_clock.now = 4.0
    assert inner.remaining() == 6.0
    outer_clock.now = 10.0
    assert inner.expired() and inner.remaining() == 0.0
    # its own clock ends it as well
    other = Deadline(5.0, clock=inner_clock, within=Deadline(100.0, clock=outer_clock))
    inner_clock.now = 5.0
    assert other.expired()


def test_the_call_budget_counts_cpu_time_not_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = FakeClock()
    monkeypatch.setattr(strategy.time, "process_time", cpu)
    loop = Deadline(1000.0)
    budget = call_budget(30.0, 0.5, loop)
    assert budget.seconds == 30.0
    time.sleep(0.01)  # wall-clock time passes, no CPU time: the budget is untouched
    assert budget.remaining() == 30.0 and not budget.expired()
    cpu.now = 29.0
    assert not budget.expired()
    cpu.now = 30.0
    assert budget.expired()


def test_the_call_budget_keeps_within_a_share_of_the_loops_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategy.time, "process_time", FakeClock())
    wall = FakeClock()
    loop = Deadline(100.0, clock=wall)
    budget = call_budget(120.0, 0.6, loop)
    assert budget.seconds == pytest.approx(60.0)  # the share of the loop's time, shorter than the CPU budget
    assert not budget.expired()
    assert budget.within is not None and budget.within.seconds == pytest.approx(60.0)
    # the loop's time is nearly spent: at least a second, as before
    wall.now = 99.9
    assert call_budget(120.0, 0.6, loop).seconds == pytest.approx(1.0)
