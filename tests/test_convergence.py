"""The plateau criterion (dml_core.report.plateau) that chooses the epoch budget
(dml_core.study.convergence) and that the report applies to a profile's runs."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from dml_core.core.run_folder import RunFolder
from dml_core.methods.fair import PLATEAU_POINTS
from dml_core.report import plateau as cv


def test_the_last_third_starts_two_thirds_in():
    assert [cv.last_third_start(e) for e in (2, 3, 5, 12, 15)] == [1, 2, 3, 8, 10]
    with pytest.raises(ValueError, match="at least 2 epochs"):
        cv.last_third_start(1)


def test_the_gain_is_in_points_and_nan_without_both_epochs():
    curve = {10: 0.80, 15: 0.825}
    assert cv.last_third_gain(curve, 15) == pytest.approx(2.5)
    assert math.isnan(cv.last_third_gain({15: 0.8}, 15))


def _rising_then_flat(top: float, knee: int, epochs: int = 15) -> dict[int, float]:
    """R@1 rising 3 points an epoch up to ``knee``, flat after."""
    return {e: min(top, 0.5 + 0.03 * e) if e <= knee else min(top, 0.5 + 0.03 * knee)
            for e in range(1, epochs + 1)}


def test_the_budget_is_the_shortest_at_which_every_variant_has_plateaued():
    curves = {"fast": {0: _rising_then_flat(0.9, 4), 1: _rising_then_flat(0.9, 4)},
              "slow": {0: _rising_then_flat(0.95, 9), 1: _rising_then_flat(0.95, 9)}}
    chosen, gains = cv.smallest_plateaued_budget(curves, 15)
    # "slow" rises until epoch 9: the last third of E starts at E - round(E/3) >= 9 from E = 13
    assert chosen == 13
    assert gains[12]["slow"] > PLATEAU_POINTS >= gains[13]["slow"]
    assert gains[6]["fast"] == pytest.approx(0.0)
    # one seed still rising pulls the mean over seeds above the threshold
    curves["slow"][1] = {e: 0.5 + 0.03 * e for e in range(1, 16)}
    assert cv.smallest_plateaued_budget(curves, 15)[0] is None


def test_a_budget_that_a_longer_one_contradicts_is_not_chosen():
    # flat from epoch 4, then a late rise of 5 points at epoch 14: every budget whose last third
    # spans epoch 14 gains 5 points, so 6..13 (plateaued on their own) are not chosen
    flat = {e: 0.62 if e < 4 else 0.65 for e in range(1, 16)}
    late = {e: (0.65 if e < 14 else 0.70) if e >= 4 else 0.62 for e in range(1, 16)}
    chosen, gains = cv.smallest_plateaued_budget({"v": {0: late}}, 15)
    assert gains[8]["v"] <= PLATEAU_POINTS < gains[14]["v"] and chosen is None
    assert cv.smallest_plateaued_budget({"v": {0: flat}}, 15)[0] == 6  # 6 - 2 = 4: flat after


def test_the_criterion_on_a_finished_study(tmp_path):
    rows = []
    for variant, slope in (("flat", 0.0), ("rising", 0.02)):
        for seed in (0, 1):
            d = tmp_path / f"fair_{variant}_s{seed}"
            RunFolder(d).write_metrics([{"epoch": e, "val/dense/R@1": 0.7 + slope * e}
                                        for e in range(1, 7)])
            rows.append({"run_dir": str(d), "config": variant, "seed": seed})
    d = tmp_path / "no_validation_s0"  # a run without validation: no row
    RunFolder(d).write_metrics([{"epoch": e, "test/dense/R@1": 0.5} for e in (1, 2)])
    rows.append({"run_dir": str(d), "config": "none", "seed": 0})
    table = cv.plateau_table(pd.DataFrame(rows)).set_index("configuration")
    assert list(table.index) == ["fair_flat", "fair_rising"]
    assert table.loc["fair_flat", "plateaued"] and not table.loc["fair_rising", "plateaued"]
    assert table.loc["fair_rising", "gain"] == pytest.approx(4.0)  # epochs 4 -> 6: 4 points
    assert list(table["seeds"]) == [2, 2] and list(table["epochs"]) == [6, 6]


def test_an_unevaluated_start_epoch_takes_the_evaluated_one_before_it():
    # evaluated every 2 epochs and after the last: the last third of 5 starts at 3, not evaluated
    curve = {2: 0.60, 4: 0.64, 5: 0.65}
    assert cv.last_third_gain(curve, 5) == pytest.approx(5.0)  # from epoch 2
    assert math.isnan(cv.last_third_gain({4: 0.6, 5: 0.7}, 5))  # nothing at or before 3


def test_a_run_validated_only_at_its_end_is_measured_from_before_training(tmp_path):
    # make report's preview: validation before training (summary.json) and after its 3 epochs;
    # the last third of 3 starts at epoch 2, not evaluated: the gain is from epoch 0, all it learned
    d = tmp_path / "fair_preview_s0"
    folder = RunFolder(d)
    folder.write_metrics([{"epoch": e, "val/dense/R@1": math.nan if e < 3 else 0.70}
                          for e in (1, 2, 3)])
    folder.write_summary({"untrained": {"metrics": {"val/dense/R@1": 0.55}}})
    table = cv.plateau_table(pd.DataFrame([{"run_dir": str(d), "config": "p", "seed": 0}]))
    (row,) = table.to_dict("records")
    assert row["gain"] == pytest.approx(15.0) and not row["plateaued"]


def test_the_verdict_counts_the_compared_configurations_apart_from_the_reproduction():
    table = pd.DataFrame({"configuration": ["fair_a", "fair_b", "paper_x", "paper_y"],
                          "plateaued": [True, True, False, True]})
    from dml_core.methods.fair import plateau_verdict

    v = plateau_verdict(table)
    assert v.startswith("**every one of the 2 compared configurations has plateaued**")
    assert "published recipes (the reproduction, not compared with each other): 1 of 2" in v
    table.loc[1, "plateaued"] = False
    assert plateau_verdict(table).startswith("**1 of the 2 compared configurations")
    assert "early-training" in plateau_verdict(table, explain=True)
    assert "early-training" not in plateau_verdict(table)
