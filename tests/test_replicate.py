"""python -m dml_core.report.replicate: per-seed values stored, a fresh batch compared by Welch's test."""
import json

import pandas as pd

from dml_core.report import replicate


def _write_runs(root, profile, values):
    """values: {variant: {seed: R@1}} -> complete run folders with a validation selection."""
    for variant, by_seed in values.items():
        for seed, v in by_seed.items():
            d = root / profile / f"fair_{variant}_s{seed}"
            d.mkdir(parents=True)
            m = {"test/dense/R@1": v, "test/binary/R@1": v / 2, "test/dense/MAP@R": v / 3}
            summary = {"status": "complete", "selection": "validation",
                       "recipe": {"method": "proxy_anchor", "dataset": "demo", "seed": seed,
                                  "lr": 1e-3, "variant": variant, "name": f"{variant}/{seed}"},
                       "best": {"epoch": 4, "metrics": m}, "last": {"epoch": 4, "metrics": m},
                       "untrained": {"epoch": 0, "metrics": {"test/dense/R@1": 0.1}}}
            (d / "summary.json").write_text(json.dumps(summary))


VALUES = {"pp_on": {0: 0.50, 1: 0.55, 2: 0.52}, "pp_off": {0: 0.40, 1: 0.47, 2: 0.44}}


def test_save_then_compare_identical_and_shifted_batches(tmp_path, capsys):
    _write_runs(tmp_path / "ref", "p", VALUES)
    files = replicate.save("p", runs_root=tmp_path / "ref", root=tmp_path)
    per_seed = pd.read_csv(tmp_path / "results" / "p" / "per_seed.csv")
    assert len(per_seed) == 6 * len(replicate.METRICS)
    assert set(per_seed["seed"]) == {0, 1, 2}
    assert any(f.endswith("summary.md") for f in files)
    assert "positive-proxy gradient: on − off" in (tmp_path / "results/p/summary.md").read_text()

    committed = tmp_path / "results" / "p" / "per_seed.csv"
    rc = replicate.main(["--profile", "p", "--runs-root", str(tmp_path / "ref"),
                         "--committed", str(committed)])
    assert rc == 0 and "0 do not replicate" in capsys.readouterr().out

    shifted = {"pp_on": {s: v + 0.2 + 0.01 * s for s, v in VALUES["pp_on"].items()},
               "pp_off": VALUES["pp_off"]}
    _write_runs(tmp_path / "new", "p", shifted)
    rc = replicate.main(["--profile", "p", "--runs-root", str(tmp_path / "new"),
                         "--committed", str(committed)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "NOT REPLICATED: pp_on val_sel/dense/R@1" in out
    assert "NOT REPLICATED: pp_off" not in out
    table = replicate.compare(replicate.per_seed_values("p", tmp_path / "new"),
                              pd.read_csv(committed))
    row = table.set_index(["variant", "metric"]).loc[("pp_on", "val_sel/dense/R@1")]
    assert row["seeds_differing"] == 3 and bool(row["same_config"])


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
    assert "| PP (Proxy-Anchor + positive-proxy gradient) | 3 | 52.3 | [" in text and "| 10.0 |" in text
    assert "positive-proxy gradient: on − off" in text


def test_readme_quotes_only_configurations_with_enough_seeds(tmp_path):
    from dml_core.report import load_runs
    from dml_core.report.runs import with_configs
    from dml_core.report.stats import summarise

    _write_runs(tmp_path, "p", {"pp_on": {0: 0.5, 1: 0.6, 2: 0.55}, "pp_off": {0: 0.4, 1: 0.45}})
    block = replicate.readme_block(summarise(with_configs(load_runs(tmp_path, ["p"]))), "p",
                                   min_seeds=3)
    assert "| PP (Proxy-Anchor + positive-proxy gradient) | 3 |" in block
    assert "Not quoted (fewer than 3 seeds in this batch): PP recipe, positive-proxy gradient " \
           "off (2)" in block
    assert "on − off" not in block  # a comparison with 2 seeds is not quoted either
