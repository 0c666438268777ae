"""``StepBudget``: a training's step count from a time budget (the loop's own measured rate), on a fake clock."""

import pytest

from tasks.train_loop import StepBudget


def test_without_a_budget_the_count_is_the_cap():
    b = StepBudget(1000, None)
    b.start(0.0)
    assert b.fixed and b.observe(50, 5.0) == 1000 and b.observe(100, 10.0) == 1000


def test_the_count_fills_the_budget_at_the_measured_rate_then_stays():
    b = StepBudget(10**6, minutes=10.0)  # 600 s
    b.start(0.0)
    assert b.observe(50, 8.0) == 10**6  # first report: the anchor (start-up steps excluded from the rate)
    # 10 steps/s since the anchor; 590 s left at t = 10 s -> 70 + 5,900
    assert b.observe(70, 10.0) == 70 + 5900 and not b.fixed
    assert b.observe(570, 60.0) == 570 + 5400 and b.fixed  # a tenth of the budget has passed: fixed
    assert b.observe(1000, 100.0) == 5970  # a later slowdown or speed-up no longer moves it


def test_the_cap_bounds_the_count_and_a_resumed_run_keeps_its_count():
    b = StepBudget(500, minutes=10.0)
    b.start(0.0)
    b.observe(50, 5.0)
    assert b.observe(100, 10.0) == 500
    resumed = StepBudget(10**6, minutes=10.0, total=4321)
    resumed.start(0.0)
    assert resumed.fixed and resumed.observe(50, 1.0) == resumed.observe(100, 2.0) == 4321


def test_a_budget_already_spent_ends_at_the_next_step():
    b = StepBudget(10**6, minutes=0.01)  # 0.6 s
    b.start(0.0)
    b.observe(10, 0.5)
    assert b.observe(20, 1.0) == 21 and b.fixed


def test_adopt_takes_rank_zeros_count():
    b = StepBudget(1000, minutes=1.0)
    b.adopt(5000, True)
    assert b.total == 1000 and b.fixed
    b.adopt(700, False)
    assert b.total == 700 and not b.fixed


@pytest.mark.parametrize("minutes", [0.0, -1.0])
def test_the_config_refuses_a_budget_that_is_not_positive(minutes):
    from pydantic import ValidationError

    from flywheel.config import TrainConfig

    with pytest.raises(ValidationError):
        TrainConfig(minutes=minutes)
