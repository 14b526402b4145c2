"""dml_core.report.stats against scipy, the pairing by seed, and the report's grouping of seeds."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from dml_core.report import stats
from dml_core.report.runs import config_key, with_configs


def test_mean_ci_matches_scipy_t_interval():
    x = [0.41, 0.45, 0.39, 0.47, 0.43]
    iv = stats.mean_ci(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert iv.mean == pytest.approx(np.mean(x))
    assert (iv.lo, iv.hi) == pytest.approx((lo, hi), rel=1e-12)
    assert iv.sd == pytest.approx(np.std(x, ddof=1))
    iv90 = stats.mean_ci(x, confidence=0.90)
    assert iv90.half_width < iv.half_width


def test_mean_ci_single_seed_has_no_interval_and_bad_input_is_an_error():
    iv = stats.mean_ci([0.5])
    assert iv.n == 1 and math.isnan(iv.lo) and not iv.excludes_zero()
    assert "n = 1" in iv.format()
    with pytest.raises(ValueError, match="at least one run"):
        stats.mean_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        stats.mean_ci([0.1, float("nan")])


def test_paired_difference_matches_scipy_paired_t_test():
    a = {0: 0.50, 1: 0.55, 2: 0.48, 3: 0.52, 4: 0.60}
    b = {4: 0.51, 0: 0.47, 1: 0.50, 2: 0.49, 3: 0.46}  # other order: paired by seed, not position
    p = stats.paired_difference(a, b)
    d = [a[s] - b[s] for s in range(5)]
    ref = sps.ttest_rel([a[s] for s in range(5)], [b[s] for s in range(5)])
    assert p.diff.mean == pytest.approx(np.mean(d))
    assert p.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    lo, hi = sps.t.interval(0.95, 4, loc=np.mean(d), scale=sps.sem(d))
    assert (p.diff.lo, p.diff.hi) == pytest.approx((lo, hi))
    assert p.seeds == (0, 1, 2, 3, 4)


def test_pairing_is_not_the_unpaired_comparison():
    # a large seed effect shared by both: paired differences are tiny and consistent
    base = np.array([0.2, 0.4, 0.6, 0.3, 0.5])
    a, b = dict(enumerate(base + 0.02)), dict(enumerate(base))
    assert stats.paired_difference(a, b).diff.excludes_zero()
    assert stats.welch_test(list(a.values()), list(b.values())).p_value > 0.5


def test_mismatched_or_repeated_seeds_are_an_error():
    with pytest.raises(stats.SeedMismatchError, match=r"only in a: \[2\], only in b: \[3\]"):
        stats.paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 3: 3.0})
    with pytest.raises(stats.SeedMismatchError, match="more than once"):
        stats.paired_difference([(0, 1.0), (0, 2.0)], [(0, 1.0), (1, 2.0)])


def test_welch_matches_scipy_and_degenerate_cases():
    a, b = [0.43, 0.45, 0.40, 0.47, 0.44], [0.39, 0.41, 0.35, 0.44]
    w = stats.welch_test(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert w.t == pytest.approx(ref.statistic) and w.p_value == pytest.approx(ref.pvalue)
    assert stats.welch_test([0.5, 0.5], [0.5, 0.5]).p_value == 1.0
    assert stats.welch_test([0.5, 0.5], [0.4, 0.4]).p_value == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        stats.welch_test([0.5], [0.4, 0.3])


def test_verdict_claims_a_direction_only_when_the_interval_excludes_zero():
    clear = stats.paired_difference({0: 0.6, 1: 0.62, 2: 0.61}, {0: 0.5, 1: 0.51, 2: 0.52})
    assert stats.verdict("A", "B", clear).startswith("A beats B")
    flipped = stats.paired_difference({0: 0.5, 1: 0.51, 2: 0.52}, {0: 0.6, 1: 0.62, 2: 0.61})
    assert stats.verdict("A", "B", flipped).startswith("B beats A")
    noisy = stats.paired_difference({0: 0.6, 1: 0.4, 2: 0.55}, {0: 0.5, 1: 0.52, 2: 0.5})
    assert stats.verdict("A", "B", noisy).startswith("no detectable difference")
    assert "3 seeds" in stats.verdict("A", "B", noisy)


def _runs(values: dict[str, dict[int, float]]) -> pd.DataFrame:
    rows = []
    for variant, by_seed in values.items():
        for seed, v in by_seed.items():
            recipe = {"method": variant.split("_")[0], "lr": 1e-3, "seed": seed,
                      "name": f"x/{variant}/{seed}", "variant_key": variant}
            rows.append({"profile": "p", "run_id": f"fair_{variant}_s{seed}", "status": "complete",
                         "recipe": recipe, "val_sel/dense/R@1": v})
    return pd.DataFrame(rows)


def test_with_configs_groups_seeds_and_separates_changed_recipes():
    runs = with_configs(_runs({"pp_on": {0: 0.5, 1: 0.6}, "pp_off": {0: 0.4, 1: 0.45}}))
    assert runs.groupby("config")["seed"].apply(sorted).tolist() == [[0, 1], [0, 1]]
    assert set(runs["variant"]) == {"pp_on", "pp_off"}
    # a reproduction run is labelled by its method's name, not by its run id
    row = {"profile": "p", "run_id": "paper_cgd_s3", "status": "complete",
           "recipe": {"method": "cgd", "seed": 3}}
    paper = with_configs(pd.DataFrame([row]))
    assert paper["variant"].tolist() == ["paper_cgd"]
    assert paper["label"].tolist() == ["CGD, published recipe"]
    r = {"lr": 1e-3, "seed": 0, "name": "a"}
    assert config_key(r) == config_key({**r, "seed": 7, "name": "b"})
    assert config_key(r) != config_key({**r, "lr": 1e-2})


def test_summarise_tables_and_paired_comparisons():
    runs = with_configs(_runs({"pp_on": {0: 0.50, 1: 0.60, 2: 0.55},
                               "pp_off": {0: 0.40, 1: 0.52, 2: 0.44},
                               "proxy_anchor": {0: 0.41, 1: 0.50}}))
    out = stats.summarise(runs, comparisons=[("on - off", "pp_on", "pp_off"),
                                             ("on - PA", "pp_on", "proxy_anchor")])
    s = out["summary"].set_index("variant")
    assert s.loc["pp_on", "n"] == 3 and s.loc["pp_on", "mean"] == pytest.approx(0.55)
    assert s.loc["pp_on", "seeds"] == "0,1,2"
    paired = out["paired"].set_index("comparison")
    assert paired.loc["on - off", "mean"] == pytest.approx(np.mean([0.10, 0.08, 0.11]))
    assert bool(paired.loc["on - off", "excludes 0"])
    assert "only in a: [2]" in paired.loc["on - PA", "verdict"]  # never silently drops a seed
    assert len(out["per_seed"]) == 8


# ------------------------------------------------------------------ Holm's family (issue 20)
def _holm_by_closed_testing(p):
    """Holm's adjusted p-values recomputed directly from their definition: the closed testing
    procedure with Bonferroni tests of every intersection, p~_i = max over the subsets S that
    contain i of min(1, |S| · min_{j in S} p_j) (exponential; small m only)."""
    from itertools import combinations

    m = len(p)
    out = []
    for i in range(m):
        worst = 0.0
        for k in range(1, m + 1):
            for sub in combinations(range(m), k):
                if i in sub:
                    worst = max(worst, min(1.0, k * min(p[j] for j in sub)))
        out.append(worst)
    return out


def test_holm_matches_closed_testing_and_a_worked_example():
    rng = np.random.default_rng(0)
    for m in (1, 2, 4, 6):
        for _ in range(20):
            p = rng.uniform(0, 0.2, m).tolist()
            assert stats.holm(p) == pytest.approx(_holm_by_closed_testing(p), abs=1e-12)
    # Holm (1979)-style example: 0.01, 0.04, 0.03, 0.005 -> 0.03, 0.06, 0.06, 0.02
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adj = stats.holm([0.01, float("nan"), 0.04])  # an untestable comparison is not in the family
    assert math.isnan(adj[1]) and adj[[0, 2]] == pytest.approx([0.02, 0.04])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        stats.holm([0.5, 1.5])


def _runs_two_metrics(values):
    """values: {variant: {seed: (R@1, MAP@R)}}."""
    rows = []
    for variant, by_seed in values.items():
        for seed, (r1, mapr) in by_seed.items():
            recipe = {"method": variant, "lr": 1e-3, "seed": seed, "name": f"x/{variant}/{seed}"}
            rows.append({"profile": "p", "run_id": f"fair_{variant}_s{seed}",
                         "status": "complete", "recipe": recipe, "val_sel/dense/R@1": r1,
                         "val_sel/dense/MAP@R": mapr})
    return with_configs(pd.DataFrame(rows))


def test_summarise_reports_r1_and_mapr_and_adjusts_the_whole_family():
    rng = np.random.default_rng(3)
    base = {s: (0.40 + 0.05 * rng.standard_normal(), 0.20 + 0.03 * rng.standard_normal())
            for s in range(5)}
    diffs = {"a": [0.10, 0.11, 0.09, 0.10, 0.12],       # clear
             "b": [0.03, 0.01, 0.05, 0.005, 0.02],      # raw p ~ 0.045, Holm-adjusted > 0.05
             "c": [0.02, -0.03, 0.01, -0.01, 0.0]}      # nothing
    values = {"ref": base}
    for v, d in diffs.items():
        values[v] = {s: (r1 + d[s], m + d[s] / 2 + 0.01 * (s % 2)) for s, (r1, m) in base.items()}
    comps = [(f"{v} − ref", v, "ref") for v in diffs]
    out = stats.summarise(_runs_two_metrics(values), comparisons=comps)
    assert out["family"] == 6 and out["metrics"] == ["val_sel/dense/R@1", "val_sel/dense/MAP@R"]
    # the headline table: both metrics with the t-interval, as scipy computes it
    h = out["headline"].set_index("variant")
    x = [values["a"][s][1] for s in range(5)]
    lo, hi = sps.t.interval(0.95, 4, loc=np.mean(x), scale=sps.sem(x))
    assert (h.loc["a", "MAP@R lo"], h.loc["a", "MAP@R hi"]) == pytest.approx((lo, hi))
    assert h.loc["a", "R@1 (%)"].count("[") == 1
    # the paired table: scipy's paired t-test, then Holm over all six tests
    p = out["paired"]
    raw = [sps.ttest_rel([values[r["a"]][s][0 if r["metric"] == "R@1" else 1] for s in range(5)],
                         [values["ref"][s][0 if r["metric"] == "R@1" else 1] for s in range(5)]
                         ).pvalue for _, r in p.iterrows()]
    assert p["p_value"].tolist() == pytest.approx(raw)
    assert p["p_holm"].tolist() == pytest.approx(_holm_by_closed_testing(raw))
    for _, r in p.iterrows():
        claimed = "beats" in r["verdict"]
        assert claimed == bool(r["significant"]) == (r["p_holm"] <= 0.05)
        if not claimed:
            assert "no detectable difference" in r["verdict"] and "at 5 seeds" in r["verdict"]
        assert f"in {r['metric']}" in r["verdict"] and "Holm-adjusted p" in r["verdict"]
    b = p[(p["a"] == "b") & (p["metric"] == "R@1")].iloc[0]
    assert b["p_value"] < 0.05 < b["p_holm"] and "no detectable difference" in b["verdict"]
    assert "a beats ref in R@1" in p[(p["a"] == "a") & (p["metric"] == "R@1")].iloc[0]["verdict"]


def test_a_repeated_seed_is_an_error_not_an_overwrite():
    runs = _runs_two_metrics({"ref": {0: (0.4, 0.2), 1: (0.5, 0.3)},
                              "a": {0: (0.45, 0.25), 1: (0.55, 0.35)}})
    dup = runs[runs["variant"] == "a"].iloc[[0]].copy()
    dup["val_sel/dense/R@1"] = 0.99  # a second run of variant a with seed 0
    runs = pd.concat([runs, dup], ignore_index=True)
    with pytest.raises(stats.SeedMismatchError, match=r"seed\(s\) \[0\] more than once"):
        stats.summarise(runs, comparisons=[("a − ref", "a", "ref")])


def test_holm_adjusts_each_row_of_a_table_as_its_own_family():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.1, (7, 5))
    p[2, 3] = np.nan
    rows = stats.holm(p)
    for i in range(7):
        assert np.allclose(rows[i], stats.holm(p[i]), equal_nan=True)
    assert np.isnan(rows[2, 3])
