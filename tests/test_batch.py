"""The batch runner on tiny generated notebooks (each execution starts a kernel: ~2 s)."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dml_core.batch import driver as batch
from dml_core.core.paths import REPO_ROOT

WRITE_JSON = """\
import json, pathlib, sys
out = pathlib.Path(run_dir)
print("value is", value)
(out / "count.txt").open("a").write("x")
(out / "out.json").write_text(json.dumps({"value": value, "profile": profile,
                                          "executable": sys.executable}))
"""


def make_notebook(path: Path, body: str, markdown: str = "# tiny") -> Path:
    params = new_code_cell("profile = None\nrun_dir = None\nvalue = 0")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell(markdown), params, new_code_cell(body)])
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def write_profile(folder: Path, name: str, runs: list[dict], **extra) -> Path:
    path = folder / "profiles" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"name": name, "description": f"{name} test profile",
                                    "notebooks_dir": "../nb", **extra, "runs": runs},
                                   sort_keys=False))
    return path


def count(run_dir: Path) -> int:
    f = run_dir / "count.txt"
    return len(f.read_text()) if f.exists() else 0


RUNS = [{"id": "c_first", "notebook": "00_first.ipynb", "parameters": {"value": 1}},
        {"id": "a_second", "notebook": "01_second.ipynb", "parameters": {"value": 2}},
        {"id": "b_third", "notebook": "06_third.ipynb", "parameters": {"value": 3}}]


def make_study(folder: Path) -> tuple[Path, list[dict]]:
    """Three notebooks (stages 0, 1, 2 by their numbers) and a profile ``tiny`` listing them."""
    for name in ("00_first", "01_second", "06_third"):
        make_notebook(folder / "nb" / f"{name}.ipynb", WRITE_JSON)
    runs = copy.deepcopy(RUNS)
    return write_profile(folder, "tiny", runs), runs


@pytest.fixture
def study(tmp_path, monkeypatch):
    # The package is edited live by others: pin its fingerprint so skips are deterministic here.
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
    profile, runs = make_study(tmp_path)
    return tmp_path, profile, runs


@pytest.fixture(scope="module")
def first_batch(tmp_path_factory):
    """The tiny study executed once (3 kernels) and a pristine copy of it. The injected
    ``run_dir`` is part of a run's parameters, so the study must stay at its path: each test
    below gets that folder restored from the copy."""
    base = tmp_path_factory.mktemp("first_batch")
    folder = base / "study"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
        profile, _ = make_study(folder)
        result = batch.run_profile(profile, runs_root=folder / "runs", quiet=True)
    shutil.copytree(folder, base / "pristine")
    return folder, base / "pristine", result


@pytest.fixture
def ran(first_batch, monkeypatch):
    """The executed study as the first batch left it: (folder, profile, runs, runs root, result)."""
    folder, pristine, result = first_batch
    shutil.rmtree(folder)
    shutil.copytree(pristine, folder)
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
    return (folder, folder / "profiles" / "tiny.yaml", copy.deepcopy(RUNS), folder / "runs",
            result)


def test_first_batch_runs_every_notebook_with_its_parameters(ran):
    _, _, runs, root, res = ran
    assert res.ok and res.exit_code == 0
    assert [r.status for r in res.results] == ["done"] * 3
    for r in runs:
        rdir = root / "tiny" / r["id"]
        out = json.loads((rdir / "out.json").read_text())
        assert out["value"] == r["parameters"]["value"]
        assert out["profile"] == "tiny"  # injected
        assert Path(out["executable"]).resolve() == Path(sys.executable).resolve()  # venv kernel
        nb = nbformat.read(str(rdir / "notebook.ipynb"), as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
        assert "value is" in (rdir / "notebook.html").read_text()
        assert "value is " + str(r["parameters"]["value"]) in (rdir / "log.txt").read_text()
        assert (rdir / "done.json").exists() and not (rdir / "notebook.running.ipynb").exists()
        assert count(rdir) == 1


def test_first_batch_runs_the_stages_in_order_and_indexes_them(ran):
    _, _, runs, root, _ = ran
    pdir = root / "tiny"
    # stages: 00 before 01 before 06 (by default), whatever the ids
    st = {r["id"]: json.loads((pdir / r["id"] / "status.json").read_text()) for r in runs}
    assert st["c_first"]["finished_at"] <= st["a_second"]["started_at"]
    assert st["a_second"]["finished_at"] <= st["b_third"]["started_at"]
    # index: every run linked, in profile order
    index = (pdir / "index.html").read_text()
    links = [index.index(f'href="{r["id"]}/notebook.html"') for r in runs]
    assert links == sorted(links)
    summary = json.loads((pdir / "batch_summary.json").read_text())
    assert [r["id"] for r in summary["runs"]] == [r["id"] for r in runs]
    assert summary["exit_code"] == 0 and summary["counts"]["done"] == 3


def test_second_batch_executes_nothing(ran):
    _, profile, runs, root, _ = ran
    pdir = root / "tiny"
    res = batch.run_profile(profile, runs_root=root, quiet=True)
    assert [r.status for r in res.results] == ["skipped"] * 3
    assert all(count(pdir / r["id"]) == 1 for r in runs)
    assert "skipped" in (pdir / "index.html").read_text()


def test_changed_parameter_reruns_only_that_run_and_dry_run_says_so_first(ran):
    folder, profile, runs, root, _ = ran
    pdir = root / "tiny"
    runs[1]["parameters"]["value"] = 20
    write_profile(folder, "tiny", runs)
    dry = batch.run_profile(profile, runs_root=root, dry_run=True, quiet=True)
    assert [r.status for r in dry.results] == ["would-skip", "would-run", "would-skip"]
    assert "parameters" in dry.by_id()["a_second"].reason
    assert count(pdir / "a_second") == 1
    res = batch.run_profile(profile, runs_root=root, quiet=True)
    assert [r.status for r in res.results] == ["skipped", "done", "skipped"]
    assert [count(pdir / r["id"]) for r in runs] == [1, 2, 1]
    assert json.loads((pdir / "a_second" / "out.json").read_text())["value"] == 20


def test_only_and_force_rerun_an_unchanged_run(ran):
    _, profile, runs, root, _ = ran
    res = batch.run_profile(profile, runs_root=root, only="c_*", force=True, quiet=True)
    assert [(r.id, r.status) for r in res.results] == [("c_first", "done")]
    assert [count(root / "tiny" / r["id"]) for r in runs] == [2, 1, 1]


def test_code_change_invalidates_every_run(ran, monkeypatch):
    _, profile, _, root, _ = ran
    dry = batch.run_profile(profile, runs_root=root, dry_run=True, quiet=True,
                            only=["a_*", "b_*"])
    assert [r.status for r in dry.results] == ["would-skip", "would-skip"]
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "changed")
    dry = batch.run_profile(profile, runs_root=root, dry_run=True, quiet=True)
    assert all(r.status == "would-run" and "code" in r.reason for r in dry.results)


def test_dry_run_executes_nothing_and_only_selects(study):
    tmp, profile, _ = study
    root = tmp / "runs"
    res = batch.run_profile(profile, runs_root=root, dry_run=True, only="a_*,b_*", quiet=True)
    assert [r.id for r in res.results] == ["a_second", "b_third"]
    assert all(r.status == "would-run" for r in res.results)
    assert not root.exists()
    with pytest.raises(batch.BatchError, match="matches no run.*c_first"):
        batch.run_profile(profile, runs_root=root, only="zzz*", dry_run=True, quiet=True)


def test_cli_failing_run_does_not_stop_the_others(tmp_path):
    make_notebook(tmp_path / "nb" / "00_ok.ipynb", WRITE_JSON)
    make_notebook(tmp_path / "nb" / "01_fail.ipynb", "raise RuntimeError('boom-42')")
    make_notebook(tmp_path / "nb" / "02_ok.ipynb", WRITE_JSON)
    profile = write_profile(tmp_path, "mixed", [
        {"id": "fail", "notebook": "01_fail.ipynb", "stage": 0},
        {"id": "ok0", "notebook": "00_ok.ipynb", "parameters": {"value": 5}},
        {"id": "ok2", "notebook": "02_ok.ipynb", "stage": 1}])
    root = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "dml_core.batch", "--profile", str(profile), "--runs-root",
         str(root), "--jobs", "2", "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((root / "mixed" / "batch_summary.json").read_text())
    status = {r["id"]: r["status"] for r in summary["runs"]}
    assert status == {"fail": "failed", "ok0": "done", "ok2": "done"}
    failed = next(r for r in summary["runs"] if r["id"] == "fail")
    assert "boom-42" in failed["error"]
    assert "boom-42" in (root / "mixed" / "fail" / "notebook.html").read_text()
    assert not (root / "mixed" / "fail" / "done.json").exists()
    assert "boom-42" in (root / "mixed" / "fail" / "log.txt").read_text()
    assert json.loads((root / "mixed" / "ok0" / "out.json").read_text())["value"] == 5
    # the summary table is printed
    assert "failed" in proc.stdout and "ok2" in proc.stdout
    index = (root / "mixed" / "index.html").read_text()
    assert "failed" in index and 'href="ok2/notebook.html"' in index


# ---------------------------------------------------------------------------- no execution
@pytest.mark.parametrize("runs, extra, message", [
    ([{"notebook": "00_x.ipynb"}], {}, "missing key 'id'"),
    ([{"id": "a"}], {}, "missing key 'notebook'"),
    ([{"id": "a", "notebook": "nope.ipynb"}], {}, "unknown notebook 'nope.ipynb'"),
    ([{"id": "a", "notebook": "00_x.ipynb"}, {"id": "a", "notebook": "00_x.ipynb"}], {},
     "duplicate id 'a'"),
    ([{"id": "a", "notebook": "00_x.ipynb", "parameter": {}}], {}, "unknown key"),
    ([{"id": "a/b", "notebook": "00_x.ipynb"}], {}, "id 'a/b'"),
    ([{"id": "a", "notebook": "00_x.ipynb", "stage": -1}], {}, "stage -1"),
    ([{"id": "a", "notebook": "00_x.ipynb", "parameters": {"run_dir": "x"}}], {}, "injected"),
    ([{"id": "a", "notebook": "00_x.ipynb"}], {"colour": 1}, "unknown top-level key"),
    ([], {}, "non-empty list"),
])
def test_bad_profiles_are_named(tmp_path, runs, extra, message):
    make_notebook(tmp_path / "nb" / "00_x.ipynb", "pass")
    path = write_profile(tmp_path, "bad", runs, **extra)
    with pytest.raises(batch.ProfileError, match=message) as info:
        batch.load_profile(path)
    assert str(path) in str(info.value)


def test_profile_missing_keys_and_name_mismatch(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("description: nothing\n")
    with pytest.raises(batch.ProfileError, match="missing top-level key 'name'") as info:
        batch.load_profile(path)
    assert "missing top-level key 'runs'" in str(info.value)
    path.write_text("name: other\nruns: [{id: a, notebook: x.ipynb}]\n")
    with pytest.raises(batch.ProfileError, match="must equal the file name 'p'"):
        batch.load_profile(path)
    with pytest.raises(batch.ProfileError, match="unknown profile 'nosuch'"):
        batch.load_profile("nosuch", profiles_dir=tmp_path)


def test_profile_parameters_are_checked_against_the_notebook_schema(tmp_path):
    make_notebook(tmp_path / "nb" / "01_normsoftmax.ipynb", "pass")
    path = write_profile(tmp_path, "p", [{"id": "ns", "notebook": "01_normsoftmax.ipynb",
                                          "parameters": {"dataset": "cubb", "epochs": 1}}])
    with pytest.raises(batch.ProfileError) as info:
        batch.load_profile(path)
    msg = str(info.value)
    assert "'cubb' is not one of" in msg and "did you mean 'cub'" in msg
    assert "unknown parameter 'epochs'" in msg and "ns" in msg
    # profile-level defaults merge under each run's parameters
    path = write_profile(tmp_path, "p", [{"id": "ns", "notebook": "01_normsoftmax.ipynb",
                                          "parameters": {"dataset": "cub"}}],
                         parameters={"device": "cpu", "dataset": "car"})
    prof = batch.load_profile(path)
    assert prof.runs[0].parameters == {"device": "cpu", "dataset": "cub"}
    assert prof.runs[0].stage == 1


def test_default_stages_and_gpu_slots():
    assert [batch.default_stage(n) for n in
            ("00_prepare_data.ipynb", "03_positive_proxy.ipynb", "06_benchmarks.ipynb",
             "07_toy_proxies.ipynb", "08_figures.ipynb", "misc.ipynb")] == [0, 1, 2, 1, 2, 1]
    assert batch.gpu_for_slot(0, 0) is None and batch.gpu_for_slot(3, 1) is None
    assert [batch.gpu_for_slot(s, 2) for s in range(4)] == ["0", "1", "0", "1"]
    assert [batch.gpu_for_slot(s, 2, "5,7") for s in range(3)] == ["5", "7", "5"]


def test_fingerprints(tmp_path):
    nb = make_notebook(tmp_path / "a.ipynb", "x = 1", markdown="# one")
    fp = batch.notebook_fingerprint(nb)
    make_notebook(tmp_path / "a.ipynb", "x = 1", markdown="# two")  # prose only
    assert batch.notebook_fingerprint(nb) == fp
    make_notebook(tmp_path / "a.ipynb", "x = 2")
    assert batch.notebook_fingerprint(nb) != fp
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "m.py").write_text("A = 1\n")
    (pkg / "notes.txt").write_text("ignored")
    code = batch.code_fingerprint(pkg)
    (pkg / "notes.txt").write_text("still ignored")
    assert batch.code_fingerprint(pkg) == code
    (pkg / "sub" / "m.py").write_text("A = 2\n")
    assert batch.code_fingerprint(pkg) != code


def test_unknown_kernel_fails_before_running(study):
    tmp, profile, _ = study
    with pytest.raises(batch.BatchError, match="no Jupyter kernel 'no-such-kernel'.*python3"):
        batch.run_profile(profile, runs_root=tmp / "runs", kernel_name="no-such-kernel",
                          quiet=True)
    assert not (tmp / "runs" / "tiny" / "c_first" / "notebook.ipynb").exists()


def test_cli_list_profiles_and_usage_errors(study, capsys):
    tmp, _, _ = study
    (tmp / "profiles" / "broken.yaml").write_text("name: broken\n")
    assert batch.main(["--list-profiles", "--profiles-dir", str(tmp / "profiles")]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "3 run(s)" in out and "broken" in out and "INVALID" in out
    assert batch.main(["--profiles-dir", str(tmp / "profiles")]) == 2
    assert batch.main(["--profile", "broken", "--profiles-dir", str(tmp / "profiles")]) == 2
    assert "missing top-level key 'runs'" in capsys.readouterr().err


def test_parallel_cpu_jobs_share_the_cores():
    from dml_core.batch.driver import cpu_threads_per_job

    assert cpu_threads_per_job(2, 0, None, cpus=2) == "1"
    assert cpu_threads_per_job(3, 0, None, cpus=16) == "5"
    assert cpu_threads_per_job(4, 0, None, cpus=2) == "1"
    assert cpu_threads_per_job(1, 0, None, cpus=2) is None  # one job: torch's own default
    assert cpu_threads_per_job(2, 2, None, cpus=2) is None  # GPU jobs
    assert cpu_threads_per_job(2, 0, "3", cpus=2) is None  # the user's setting wins


# ---------------------------------------------------------------------------- kept kernels
KERNEL_PROBE = """\
import json, os, pathlib
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from dml_core.training.seeding import seed_everything
leaked = sorted(k for k in ("left_behind", "plt_fig") if k in globals())
open_figures = len(plt.get_fignums())
settings = [torch.get_num_threads(), str(torch.get_default_dtype()), torch.is_grad_enabled(),
            torch.get_float32_matmul_precision()]
plt_fig = plt.figure()  # left open on purpose
left_behind = torch.rand(1000)  # and the global generator moved on, unseeded
torch.set_num_threads(settings[0] + 1)  # process-wide settings changed on purpose, too
torch.set_float32_matmul_precision("medium")
seed_everything(value)
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.Adam(net.parameters(), 1e-2)
for _ in range(20):
    loss = net(torch.randn(32, 8)).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
pathlib.Path(run_dir, "probe.json").write_text(json.dumps({
    "pid": os.getpid(), "cwd": os.getcwd(), "leaked": leaked, "open_figures": open_figures,
    "settings": settings,
    "loss": float(loss), "weights": [float(w) for w in net[0].weight.flatten()]}))
"""


def _kernel_study(tmp_path: Path, n: int, fail_at: int | None = None) -> tuple[Path, list[str]]:
    make_notebook(tmp_path / "nb" / "01_probe.ipynb", KERNEL_PROBE)
    make_notebook(tmp_path / "nb" / "01_fail.ipynb", "raise RuntimeError('boom')")
    runs = [{"id": f"r{i}", "notebook": "01_fail.ipynb" if i == fail_at else "01_probe.ipynb",
             "parameters": {"value": 7}} for i in range(n)]
    return write_profile(tmp_path, "kernels", runs), [r["id"] for r in runs]


def _probe(root: Path, run_id: str) -> dict:
    return json.loads((root / "kernels" / run_id / "probe.json").read_text())


def test_a_worker_keeps_its_kernel_with_a_new_kernels_state(tmp_path, monkeypatch):
    """Runs share one kernel (one pid) yet each sees what a new kernel would: no variable and no
    open figure of the run before, torch's settings as they were (the run before changed them),
    the notebooks folder as working directory, cells numbered from 1, and, seeded, the same
    numbers as in a kernel of its own (--fresh-kernels)."""
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
    profile, ids = _kernel_study(tmp_path, 3)
    kept = batch.run_profile(profile, runs_root=tmp_path / "kept", quiet=True)
    fresh = batch.run_profile(profile, runs_root=tmp_path / "fresh", quiet=True,
                              reuse_kernels=False)
    assert kept.ok and fresh.ok
    probes = [_probe(tmp_path / "kept", i) for i in ids]
    assert len({p["pid"] for p in probes}) == 1
    assert len({_probe(tmp_path / "fresh", i)["pid"] for i in ids}) == 3
    status = [json.loads((tmp_path / "kept" / "kernels" / i / "status.json").read_text())
              for i in ids]
    assert [s["kernel"] for s in status] == ["new", "reused", "reused"]
    for i, p in zip(ids, probes):
        assert p["leaked"] == [] and p["open_figures"] == 0
        assert Path(p["cwd"]) == (tmp_path / "nb").resolve()
        fresh_probe = _probe(tmp_path / "fresh", i)
        assert (p["loss"], p["weights"]) == (fresh_probe["loss"], fresh_probe["weights"])
        assert p["settings"] == fresh_probe["settings"]  # torch's, as a new kernel has them
        nb = nbformat.read(str(tmp_path / "kept" / "kernels" / i / "notebook.ipynb"), 4)
        assert [c.execution_count for c in nb.cells if c.cell_type == "code"] == [1, 2, 3]


def test_a_failed_run_ends_its_kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
    profile, ids = _kernel_study(tmp_path, 4, fail_at=1)
    result = batch.run_profile(profile, runs_root=tmp_path / "runs", quiet=True)
    assert [r.status for r in result.results] == ["done", "failed", "done", "done"]
    pids = [_probe(tmp_path / "runs", i)["pid"] for i in ("r0", "r2", "r3")]
    assert pids[0] != pids[1] == pids[2]  # the failed run's kernel was not handed on


# ---------------------------------------------------------------------------- needs
def test_a_run_that_needs_nothing_runs_beside_the_first_stage(tmp_path, monkeypatch):
    """``needs: []`` starts a stage-1 run beside stage 0; the other stage-1 runs still wait for
    stage 0, and stage 2 waits for everything before it (the default)."""
    monkeypatch.setattr(batch, "code_fingerprint", lambda *dirs: "pinned")
    make_notebook(tmp_path / "nb" / "00_slow.ipynb", "import time\ntime.sleep(3)")
    make_notebook(tmp_path / "nb" / "01_quick.ipynb", "x = 1")
    make_notebook(tmp_path / "nb" / "06_last.ipynb", "x = 1")
    profile = write_profile(tmp_path, "needs", [
        {"id": "prepare", "notebook": "00_slow.ipynb"},
        {"id": "trains", "notebook": "01_quick.ipynb"},
        {"id": "toy", "notebook": "01_quick.ipynb", "needs": []},
        {"id": "figures", "notebook": "06_last.ipynb"}])
    result = batch.run_profile(profile, jobs=2, runs_root=tmp_path / "runs", quiet=True)
    assert result.ok
    st = {r.id: r for r in result.results}
    assert st["toy"].started_at < st["prepare"].finished_at  # beside stage 0
    assert st["trains"].started_at >= st["prepare"].finished_at  # waits, as before
    assert st["figures"].started_at >= max(st[i].finished_at for i in ("toy", "trains"))


@pytest.mark.parametrize("needs, message", [
    (["nope"], "needs 'nope', which is not a run of this profile"),
    (["b"], "a run can only wait for runs of earlier stages"),
    ("a", "must be a list of run ids"),
])
def test_bad_needs_are_named(tmp_path, needs, message):
    make_notebook(tmp_path / "nb" / "00_x.ipynb", "x = 1")
    make_notebook(tmp_path / "nb" / "01_x.ipynb", "x = 1")
    profile = write_profile(tmp_path, "bad", [
        {"id": "a", "notebook": "00_x.ipynb"}, {"id": "b", "notebook": "01_x.ipynb"},
        {"id": "c", "notebook": "01_x.ipynb", "needs": needs}])
    with pytest.raises(batch.ProfileError, match=message):
        batch.load_profile(profile)
