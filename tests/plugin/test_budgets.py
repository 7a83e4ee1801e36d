from __future__ import annotations

import pytest

from pytest_mlestimate.verdicts.budgets import BudgetError, merge_budgets, parse_assignments, parse_budgets


def test_plain_limit_is_an_upper_one_and_ge_is_a_floor() -> None:
    ram, util = parse_budgets({"peak_ram_memory": "4 GiB", "peak_gpu_utilization": ">= 40 %"})
    assert (ram.limit, ram.floor) == (4 * 2**30, False)
    assert (util.limit, util.floor) == (40.0, True)
    assert ram.check(5 * 2**30).passed is False
    assert ram.check(3 * 2**30).passed is True
    assert util.check(10.0).passed is False
    assert util.check(60.0).passed is True


def test_mapping_gives_both_bounds() -> None:
    budgets = parse_budgets({"peak_cpu_utilization": {"min": "50 %", "max": "400 %"}})
    assert [(b.floor, b.limit) for b in budgets] == [(False, 400.0), (True, 50.0)]


def test_unmeasurable_metric_is_not_checked_rather_than_passed() -> None:
    (budget,) = parse_budgets({"peak_gpu_memory": "8 GiB"})
    check = budget.check(None)
    assert check.passed is None
    assert "not checked" in check.row()[-1]


def test_failed_check_row_and_summary_name_metric_value_and_limit() -> None:
    (budget,) = parse_budgets({"forward_pass": "80 ms"})
    check = budget.check(0.120, baseline=0.100)
    assert check.row() == ("forward_pass", "120.0 ms", "<= 80.0 ms", "100.0 ms", "+20.0%", "FAILED")
    assert check.summary() == "forward_pass broke its limit: measured 120.0 ms, limit <= 80.0 ms"


def test_every_bad_entry_is_reported_at_once() -> None:
    with pytest.raises(BudgetError) as caught:
        parse_budgets({"peak_ram": "4 GiB", "forward_pass": "4 GiB", "backward_pass": "soon"})
    problems = caught.value.problems
    assert problems[0].startswith("budgets.peak_ram: unknown metric 'peak_ram': did you mean 'peak_ram_memory'?")
    assert "budgets.forward_pass: '4 GiB': 'GiB' is a unit of bytes, not seconds" in problems[1]
    assert problems[2].startswith("budgets.backward_pass: 'soon' is not a quantity")


def test_scenario_budget_replaces_the_default_on_the_same_metric() -> None:
    defaults = parse_budgets(parse_assignments(["peak_ram_memory = 8 GiB", "forward_pass = 1 s"], "defaults"))
    own = parse_budgets({"peak_ram_memory": "2 GiB"})
    merged = {b.metric: b.limit for b in merge_budgets(defaults, own)}
    assert merged == {"forward_pass": 1.0, "peak_ram_memory": 2 * 2**30}


def test_assignment_without_equals_is_reported() -> None:
    with pytest.raises(BudgetError, match="'peak_ram_memory 4 GiB' is not 'metric = value'"):
        parse_assignments(["peak_ram_memory 4 GiB"], "default budgets")
