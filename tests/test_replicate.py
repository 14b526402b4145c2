"""python -m dml_core.report.replicate: per-seed values stored at full precision; a fresh batch is
identical on the same machine, and on another one replicated / inconclusive / not replicated by
Holm-controlled tests; the false-alarm rate of that check, simulated, stays under 5 %."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from dml_core.report import replicate
from dml_core.report.stats import SeedMismatchError

MACHINE = {"device": "cpu", "cpu": "Test CPU 1", "cpu_isa": "AVX512", "gpu": None, "cpu_count": 2}
VERSIONS = {"torch": "2.0", "torchvision": "0.1", "numpy": "2.0", "python": "3.11"}


def _write_runs(root, profile, values, cpu="Test CPU 1", weights=None, isa="AVX512"):
    """values: {variant: {seed: R@1}} -> complete run folders with a validation selection;
    ``weights``: the pretrained weights file their provenance names (None: random weights)."""
    for variant, by_seed in values.items():
        for seed, v in by_seed.items():
            d = root / profile / f"fair_{variant}_s{seed}"
            d.mkdir(parents=True)
            m = {"test/dense/R@1": v, "test/binary/R@1": v / 2, "test/dense/MAP@R": v / 3}
            summary = {"status": "complete", "selection": "validation",
                       "recipe": {"method": "proxy_anchor", "dataset": "demo", "seed": seed,
                                  "lr": 1e-3, "variant": variant, "name": f"{variant}/{seed}"},
                       "best": {"epoch": 4, "metrics": m}, "last": {"epoch": 4, "metrics": m},
                       "untrained": {"epoch": 0, "metrics": {"test/dense/R@1": 0.1}},
                       "hardware": {**MACHINE, "cpu": cpu, "cpu_isa": isa},
                       "versions": VERSIONS}
            if weights:
                summary["provenance"] = {"weights": {"file": weights, "source": "digits"}}
            (d / "summary.json").write_text(json.dumps(summary))
            gain = 0.01 if variant == "pp_on" else 0.03  # validation R@1, epochs 2 -> 4
            (d / "metrics.csv").write_text("epoch,test/dense/R@1,test/binary/R@1,test/dense/MAP@R,"
                                           f"val/dense/R@1\n2,{v},{v / 2},{v / 3},{v - gain}\n"
                                           f"4,{v},{v / 2},{v / 3},{v}\n")


VALUES = {"pp_on": {0: 0.50, 1: 0.55, 2: 0.52}, "proxy_anchor": {0: 0.40, 1: 0.47, 2: 0.44}}


def _cli(tmp_path, runs, capsys):
    committed = tmp_path / "results" / "p" / "per_seed.csv"
    rc = replicate.main(["--profile", "p", "--runs-root", str(tmp_path / runs),
                         "--committed", str(committed), "--studies", "200"])
    return rc, capsys.readouterr().out


def test_save_then_the_same_machine_must_be_identical(tmp_path, capsys):
    values = {"pp_on": {0: 0.5 + 1e-9, 1: 0.55, 2: 0.52}, "proxy_anchor": VALUES["proxy_anchor"]}
    _write_runs(tmp_path / "ref", "p", values)
    files = replicate.save("p", runs_root=tmp_path / "ref", root=tmp_path)
    per_seed = pd.read_csv(tmp_path / "results" / "p" / "per_seed.csv")
    assert len(per_seed) == 6 * len(replicate.METRICS)
    assert 0.5 + 1e-9 in per_seed["value"].tolist()  # full precision: exact comparisons
    assert json.loads((tmp_path / "results/p/environment.json").read_text())["cpu"] == "Test CPU 1"
    assert any(f.endswith("summary.md") for f in files)
    md = (tmp_path / "results/p/summary.md").read_text()
    assert "PP − Proxy-Anchor (each tuned)" in md and "MAP@R [95% CI]" in md
    curves = sorted(p.name for p in (tmp_path / "results/p/metrics").iterdir())
    assert curves == [f"fair_{v}_s{s}.csv" for v in sorted(values) for s in (0, 1, 2)]
    assert (tmp_path / "results/p/metrics/fair_pp_on_s1.csv").read_text().endswith(",0.55\n")
    plateau = pd.read_csv(tmp_path / "results/p/plateau.csv").set_index("configuration")
    assert plateau.loc["fair_pp_on", "gain"] == pytest.approx(1.0)  # from epoch 3 -> 2, to 4
    assert plateau.loc["fair_pp_on", "plateaued"] and not plateau.loc["fair_proxy_anchor", "plateaued"]
    assert "**1 of the 2 compared configurations have plateaued**" in md and "| Proxy-Anchor | 3 | 4 | +3.0 | **no** |" in md

    rc, out = _cli(tmp_path, "ref", capsys)
    assert rc == 0 and "RESULT: IDENTICAL" in out and "same machine" in out
    assert "False-alarm rate of this check" in out

    nudged = {"pp_on": {0: 0.5, 1: 0.55, 2: 0.52}, "proxy_anchor": VALUES["proxy_anchor"]}
    _write_runs(tmp_path / "nudged", "p", nudged)  # one seed differs by 1e-9
    rc, out = _cli(tmp_path, "nudged", capsys)
    assert rc == 1 and "RESULT: NOT REPLICATED" in out
    assert "NOT REPLICATED: pp_on val_sel/dense/R@1" in out
    assert "NOT REPLICATED: proxy_anchor" not in out


def test_other_pretrained_weights_are_not_comparable(tmp_path, capsys):
    # the demo's stand-in is built per machine; on another CPU type its bytes differ: the same
    # numbers from other weights are another experiment, said as such whatever the tests say
    _write_runs(tmp_path / "ref", "p", VALUES, weights="resnet18_digits-v1-aaaaaaaa.pth")
    replicate.save("p", runs_root=tmp_path / "ref", root=tmp_path)
    env = json.loads((tmp_path / "results/p/environment.json").read_text())
    assert env["pretrained"] == "resnet18_digits-v1-aaaaaaaa.pth"
    rc, out = _cli(tmp_path, "ref", capsys)
    assert rc == 0 and "RESULT: IDENTICAL" in out  # the same weights: the check as before
    _write_runs(tmp_path / "other", "p", VALUES, cpu="Other CPU",
                weights="resnet18_digits-v1-bbbbbbbb.pth")
    rc, out = _cli(tmp_path, "other", capsys)
    assert rc == 1 and "RESULT: NOT COMPARABLE" in out
    assert "other pretrained weights (resnet18_digits-v1-bbbbbbbb.pth)" in out
    assert "RESULT: REPLICATED" not in out and "RESULT: INCONCLUSIVE" not in out


def test_save_removes_the_curves_of_runs_the_profile_no_longer_has(tmp_path):
    _write_runs(tmp_path / "ref", "p", VALUES)
    stale = tmp_path / "results/p/metrics/fair_gone_s0.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("epoch\n1\n")
    replicate.save("p", runs_root=tmp_path / "ref", root=tmp_path)
    assert not stale.exists()
    assert len(list(stale.parent.glob("*.csv"))) == 6


def test_another_machine_is_judged_by_holm_controlled_tests(tmp_path, capsys):
    _write_runs(tmp_path / "ref", "p", VALUES)
    replicate.save("p", runs_root=tmp_path / "ref", root=tmp_path)
    nudged = {"pp_on": {0: 0.5 + 1e-9, 1: 0.55, 2: 0.52}, "proxy_anchor": VALUES["proxy_anchor"]}
    _write_runs(tmp_path / "other", "p", nudged, cpu="Other CPU")
    rc, out = _cli(tmp_path, "other", capsys)
    assert rc == 0 and "another machine" in out and "cpu: Test CPU 1 -> Other CPU" in out
    assert "NOT REPLICATED" not in out.split("RESULT")[0]

    # the same CPU model running torch's kernels with another instruction set (an AVX2-only
    # CPU, or ATEN_CPU_CAPABILITY=avx2): other sums, so another machine, not an exact check
    _write_runs(tmp_path / "avx2", "p", nudged, isa="AVX2")
    rc, out = _cli(tmp_path, "avx2", capsys)
    assert rc == 0 and "another machine" in out and "cpu_isa: AVX512 -> AVX2" in out

    shifted = {"pp_on": {s: v + 0.2 + 0.01 * s for s, v in VALUES["pp_on"].items()},
               "proxy_anchor": VALUES["proxy_anchor"]}
    _write_runs(tmp_path / "shifted", "p", shifted, cpu="Other CPU")
    rc, out = _cli(tmp_path, "shifted", capsys)
    assert rc == 1 and "NOT REPLICATED: pp_on val_sel/dense/R@1" in out
    assert "NOT REPLICATED: proxy_anchor" not in out


def _long(values):
    """{variant: {metric: [values by seed]}} -> a per-authors' table."""
    return pd.DataFrame([{"variant": v, "label": v, "config": f"c_{v}", "seed": s,
                          "metric": m, "value": x}
                         for v, ms in values.items() for m, xs in ms.items()
                         for s, x in enumerate(xs)])


def test_three_outcomes_and_what_each_needs():
    rng = np.random.default_rng(0)
    m = "val_sel/dense/R@1"
    committed = {"tight": {m: 0.50 + 0.002 * rng.standard_normal(5)},
                 "noisy": {m: 0.50 + 0.08 * rng.standard_normal(5)},
                 "moved": {m: 0.50 + 0.01 * rng.standard_normal(5)}}
    fresh = {"tight": {m: 0.501 + 0.002 * rng.standard_normal(5)},
             "noisy": {m: 0.52 + 0.08 * rng.standard_normal(5)},
             "moved": {m: 0.70 + 0.01 * rng.standard_normal(5)}}
    t = replicate.compare(_long(fresh), _long(committed)).set_index("variant")
    assert t.loc["tight", "status"] == "replicated"      # within ±5 points, shown
    assert t.loc["noisy", "status"] == "inconclusive"    # 5 noisy seeds cannot tell
    assert t.loc["moved", "status"] == "not replicated"  # a detected shift
    assert t.loc["noisy", "detectable"] > 0.1 > t.loc["tight", "detectable"]
    same = replicate.compare(_long(committed), _long(committed), same_machine=True)
    assert set(same["status"]) == {"identical"}
    v = replicate.verdict_of(t.reset_index(), pd.DataFrame(columns=["status"]))
    assert v.result == "not replicated" and v.exit_code == 1
    ok = replicate.verdict_of(t.drop("moved").reset_index(), pd.DataFrame(columns=["status"]))
    assert ok.result == "inconclusive" and ok.exit_code == 0
    with pytest.raises(SeedMismatchError, match="more than once"):
        rep = _long(committed)
        replicate.compare(_long(fresh), pd.concat([rep, rep.iloc[[0]]]))


def test_a_paired_verdict_must_not_flip():
    m = "val_sel/dense/R@1"
    base = np.array([0.40, 0.45, 0.50, 0.42, 0.48])
    up = base + np.array([0.10, 0.11, 0.09, 0.10, 0.12])
    comp = [("A − B", "a", "b")]
    committed = _long({"a": {m: up}, "b": {m: base}})
    flipped = replicate.paired_verdicts(_long({"a": {m: base}, "b": {m: up}}), committed, comp)
    assert flipped.iloc[0]["status"] == "flipped"
    assert (flipped.iloc[0]["committed"], flipped.iloc[0]["fresh"]) == (1, -1)
    gone = replicate.paired_verdicts(_long({"a": {m: base + [0.02, -0.03, 0.01, 0.0, -0.01]},
                                            "b": {m: base}}), committed, comp)
    assert gone.iloc[0]["status"] == "changed"
    numbers = replicate.compare(_long({"a": {m: base}, "b": {m: up}}), committed)
    assert replicate.verdict_of(numbers, flipped).result == "not replicated"


def test_the_tests_match_scipy():
    rng = np.random.default_rng(4)
    xc, xf = rng.normal(0.5, 0.05, 5), rng.normal(0.53, 0.03, 4)
    d, p, p_eq, _se, _df = replicate.two_sample_tests(xc[:, None], xf[:, None], margin=0.05)
    assert d[0] == pytest.approx(xf.mean() - xc.mean())
    assert p[0] == pytest.approx(sps.ttest_ind(xf, xc, equal_var=False).pvalue)
    lower = sps.ttest_ind(xf + 0.05, xc, equal_var=False, alternative="greater").pvalue
    upper = sps.ttest_ind(xf - 0.05, xc, equal_var=False, alternative="less").pvalue
    assert p_eq[0] == pytest.approx(max(lower, upper))
    x = rng.normal(0.5, 0.05, (6, 3))
    mean, pp = replicate.paired_tests(x, [(0, 1), (2, 0)])
    assert pp[1] == pytest.approx(sps.ttest_rel(x[:, 2], x[:, 0]).pvalue)
    assert mean[0] == pytest.approx((x[:, 0] - x[:, 1]).mean())


def _synthetic_committed(rng, variants=8, n=5):
    """A study-like table: correlated numbers (a seed moves every variant a little), five
    metrics per variant, R@1-like spreads of 2-8 points."""
    rows = []
    seed_effect = rng.normal(0, 0.02, n)
    for v in range(variants):
        mean, sd = rng.uniform(0.1, 0.6), rng.uniform(0.02, 0.08)
        x = mean + seed_effect + rng.normal(0, sd, n)
        for metric, scale in zip(replicate.METRICS, (1.0, 0.5, 0.4, 0.95, 0.2)):
            for s in range(n):
                rows.append({"variant": f"v{v}", "label": f"v{v}", "config": f"c{v}", "seed": s,
                             "metric": metric, "value": scale * x[s]})
    return pd.DataFrame(rows)


def test_the_simulated_false_alarm_rate_is_under_five_percent():
    """A study that replicates is called 'not replicated' in at most ~5 % of simulated pairs;
    the old check (uncorrected Welch per number) cried wolf far more often; a real shift of
    one number is caught."""
    committed = _synthetic_committed(np.random.default_rng(7))
    comps = [("v0 − v1", "v0", "v1"), ("v2 − v3", "v2", "v3")]
    for scheme in ("gaussian", "resample"):
        sim = replicate.simulate_checks(committed, 600, scheme, seed=1, comparisons=comps)
        assert sim["numbers_tested"] == 40 and sim["paired_tests"] == 4
        assert sim["false_alarm"] <= 0.05 + 0.02, (scheme, sim)  # MC error at 600 studies
    # the old criterion on the same simulated studies: any raw Welch p < 0.05
    x, _ = replicate._committed_matrix(committed)
    rng = np.random.default_rng(2)
    r = x - x.mean(0)
    xc = x.mean(0) + rng.standard_normal((600, 5, 5)) @ r / 2
    xf = x.mean(0) + rng.standard_normal((600, 5, 5)) @ r / 2
    _d, p, *_ = replicate.two_sample_tests(xc, xf)
    assert (p < 0.05).any(-1).mean() > 0.15  # ~21 %: 8 variants, their metrics correlated
    shifted = replicate.simulate_checks(committed, 300, seed=3, comparisons=comps,
                                        shift={("v4", "val_sel/dense/R@1"): 0.6})
    assert shifted["false_alarm"] > 0.8


def test_the_committed_study_gives_a_false_alarm_rate_under_the_goal():
    from dml_core.core import paths

    committed = pd.read_csv(paths.REPO_ROOT / "results" / "study" / "per_seed.csv")
    fa = replicate.false_alarm_rate(committed, 400, seed=0)
    assert fa["worst"] <= replicate.FALSE_ALARM_GOAL + 0.02
    assert "False-alarm rate" in replicate.false_alarm_sentence(fa)


def test_missing_committed_values_or_runs_is_a_clear_error(tmp_path, capsys):
    assert replicate.main(["--profile", "p", "--runs-root", str(tmp_path),
                           "--committed", str(tmp_path / "none.csv")]) == 2
    assert "--save" in capsys.readouterr().err


def test_save_rewrites_only_the_readme_block(tmp_path):
    _write_runs(tmp_path / "ref", "p", VALUES)
    (tmp_path / "README.md").write_text("intro\n<!-- study-results:begin old -->\nstale 99.9\n"
                                        "<!-- study-results:end -->\noutro\n")
    replicate.README_MIN_SEEDS, old = 3, replicate.README_MIN_SEEDS
    try:
        replicate.save("p", runs_root=tmp_path / "ref", root=tmp_path, readme=True)
    finally:
        replicate.README_MIN_SEEDS = old
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "99.9" not in text
    assert "| PP (Proxy-Anchor + positive-proxy gradient) | 3 | 52.3 [" in text
    assert "| R@1 [95% CI] | MAP@R [95% CI] |" in text and "| 10.0 |" in text
    assert "PP − Proxy-Anchor (each tuned)** (R@1)" in text
    assert "Holm-adjusted" in text


def test_readme_quotes_only_configurations_with_enough_seeds(tmp_path):
    from dml_core.report import load_runs
    from dml_core.report.runs import with_configs
    from dml_core.report.stats import summarise

    _write_runs(tmp_path, "p", {"pp_on": {0: 0.5, 1: 0.6, 2: 0.55},
                                "proxy_anchor": {0: 0.4, 1: 0.45}})
    block = replicate.readme_block(summarise(with_configs(load_runs(tmp_path, ["p"]))), "p",
                                   min_seeds=3)
    assert "| PP (Proxy-Anchor + positive-proxy gradient) | 3 |" in block
    assert "Not quoted (fewer than 3 seeds in this batch): Proxy-Anchor (2)" in block
    assert "PP − Proxy-Anchor" not in block  # a comparison with 2 seeds is not quoted either


def test_runs_record_the_instruction_set_of_torch_s_cpu_kernels():
    import torch

    from dml_core.training.provenance import hardware_info

    info = hardware_info("cpu")
    assert info["cpu_isa"] == torch.backends.cpu.get_cpu_capability()
    assert "cpu_isa" in replicate.ENVIRONMENT_KEYS  # part of "the same machine"
