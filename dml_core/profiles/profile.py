"""Profiles: read and check ``profiles/<name>.yaml`` (format: ``profiles/README.md``).

A profile lists runs ``{id, notebook, parameters, stage, description}``; :func:`load_profile`
reads one into a :class:`Profile` of :class:`Run` s and raises :class:`ProfileError` naming every
problem at once (its ``slurm:`` block is checked by :mod:`dml_core.profiles.slurm`). The
parameters a run's notebook receives are :func:`effective_parameters` (the profile's, plus the
injected ``profile``, ``run_dir``, ``data_root``) with the ``--set`` settings of the batch
applied by :func:`apply_settings`. The batch (:mod:`dml_core.batch`), its pre-flight check
(:mod:`dml_core.batch.preflight`) and the book (:mod:`dml_core.report.book`) read profiles here.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from dml_core.core import io, paths
from dml_core.profiles.slurm import validate_slurm_block

# nbformat → jsonschema imports the optional ``rfc3987_syntax``, which compiles an Earley grammar
# at import time (2–3 s of CPU in every batch and worker process) only to check the "iri" string
# format, which notebook schemas do not use. Mark it unavailable unless something imported it.
# (Here, the lowest module of the batch that reads notebooks; the batch's workers import it too.)
if "rfc3987_syntax" not in sys.modules and "jsonschema" not in sys.modules:
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]

__all__ = ["BatchError", "ProfileError", "Run", "Profile", "load_profile",
           "resolve_profile_path", "list_profiles", "default_stage", "select_runs", "run_dir_of",
           "effective_parameters", "parse_settings", "check_settings", "apply_settings",
           "NOT_SETTABLE"]

# Default stage by the notebook's two-digit prefix; any other notebook is stage DEFAULT_STAGE.
DEFAULT_STAGE_BY_PREFIX = {"00": 0, "06": 2, "08": 2}
DEFAULT_STAGE = 1
_PROFILE_KEYS = {"name", "description", "runs", "parameters", "notebooks_dir", "slurm"}
_RUN_KEYS = {"id", "notebook", "parameters", "stage", "needs", "description"}


class BatchError(Exception):
    """Something prevents the batch from starting (bad profile, unknown kernel, ...)."""


class ProfileError(BatchError):
    """The profile file is malformed; the message names the file and the problem."""


@dataclasses.dataclass
class Run:
    id: str
    notebook: Path  # absolute path of the .ipynb
    parameters: dict[str, Any]  # the profile's parameters (no injected ones)
    stage: int
    description: str = ""
    # the runs it waits for, all of earlier stages; None: every run of the earlier stages
    needs: tuple[str, ...] | None = None


@dataclasses.dataclass
class Profile:
    name: str
    description: str
    runs: list[Run]
    path: Path | None
    notebooks_dir: Path
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)  # --backend slurm settings


def resolve_profile_path(profile: str | os.PathLike, profiles_dir: Path | None = None) -> Path:
    """A profile name (``demo`` → ``profiles/demo.yaml``) or a path to a YAML file."""
    profiles_dir = Path(profiles_dir or paths.PROFILES_DIR)
    text = str(profile)
    candidate = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or os.sep in text or candidate.is_file():
        if not candidate.is_file():
            raise ProfileError(f"profile file not found: {candidate}")
        return candidate.resolve()
    for ext in (".yaml", ".yml"):
        path = profiles_dir / f"{text}{ext}"
        if path.is_file():
            return path
    known = ", ".join(p.stem for p in _profile_files(profiles_dir)) or "(none)"
    raise ProfileError(f"unknown profile {text!r}: no {profiles_dir / (text + '.yaml')}; "
                       f"available profiles: {known}")


def _profile_files(profiles_dir: Path) -> list[Path]:
    return sorted([*profiles_dir.glob("*.yaml"), *profiles_dir.glob("*.yml")])


def default_stage(notebook: str | Path) -> int:
    m = re.match(r"^(\d\d)", Path(notebook).name)
    return DEFAULT_STAGE_BY_PREFIX.get(m.group(1), DEFAULT_STAGE) if m else DEFAULT_STAGE


def _key_problems(mapping: dict, required: tuple[str, ...], allowed: set[str] | frozenset[str],
                  where: str = "") -> list[str]:
    """Missing required keys and unknown keys of one mapping of a profile, as messages."""
    kind = f"{where} key" if where else "key"
    out = [f"missing {kind} {key!r}" for key in required if key not in mapping]
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        out.append(f"unknown {kind}(s) {unknown}; allowed: {sorted(allowed)}")
    return out


def load_profile(profile: str | os.PathLike, profiles_dir: Path | None = None,
                 notebooks_dir: Path | None = None, validate_params: bool = True) -> Profile:
    """Read and validate a profile; raise :class:`ProfileError` naming every problem found.

    Checks: required keys (``name``, ``runs``; each run ``id`` and ``notebook``), no unknown keys,
    ``name`` equal to the file name, ids unique and usable as folder names, notebook files exist,
    ``stage`` a non-negative int, ``needs`` ids of runs of earlier stages, and — for notebooks with a schema in
    :data:`dml_core.profiles.params.NOTEBOOK_PARAMETERS` — the parameters (see :mod:`dml_core.profiles.params`).
    """
    from dml_core.profiles import params as nbparams

    import yaml

    path = resolve_profile_path(profile, profiles_dir)
    try:  # YAML 1.2 rules, as --set: `lr: 1e-3` is a number, `yes` is text
        data = io.load_yaml12(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:  # unreadable, not text, not YAML
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    where = str(path)
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile is a mapping with keys name, description, runs")
    problems: list[str] = _key_problems(data, ("name", "runs"), _PROFILE_KEYS, "top-level")
    name = data.get("name")
    if "name" in data and not paths.is_valid_name(name):
        problems.append(f"name {name!r} must be a string of letters, digits, '_', '.', '-'")
    elif isinstance(name, str) and name != path.stem:
        problems.append(f"name {name!r} must equal the file name {path.stem!r}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        problems.append("description must be a string")
    defaults = data.get("parameters") or {}
    if not isinstance(defaults, dict):
        problems.append("parameters (defaults for every run) must be a mapping")
        defaults = {}
    if notebooks_dir is None:
        nbdir = data.get("notebooks_dir")
        notebooks_dir = (path.parent / nbdir).resolve() if nbdir else paths.NOTEBOOKS_DIR
    notebooks_dir = Path(notebooks_dir)
    runs_data = data.get("runs")
    if "runs" in data and (not isinstance(runs_data, list) or not runs_data):
        problems.append("runs must be a non-empty list of {id, notebook, parameters}")
        runs_data = []
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(runs_data or []):
        label = f"runs[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{label} must be a mapping with keys id, notebook, parameters")
            continue
        run_id = entry.get("id")
        if isinstance(run_id, str):
            label = f"runs[{i}] (id {run_id!r})"
        problems += [f"{label}: {p}" for p in _key_problems(entry, ("id", "notebook"), _RUN_KEYS)]
        if "id" in entry:
            if not paths.is_valid_name(run_id):
                problems.append(f"{label}: id {run_id!r} must be letters, digits, '_', '.', '-'")
            elif run_id in seen:
                problems.append(f"{label}: duplicate id {run_id!r} (also runs[{seen[run_id]}])")
            else:
                seen[run_id] = i
        nb = entry.get("notebook")
        nb_path = None
        if "notebook" in entry:
            if not isinstance(nb, str) or not nb.endswith(".ipynb"):
                problems.append(f"{label}: notebook {nb!r} must be a .ipynb file name")
            else:
                nb_path = (notebooks_dir / nb).resolve()
                if not nb_path.is_file():
                    have = ", ".join(p.name for p in sorted(notebooks_dir.glob("*.ipynb")))
                    problems.append(f"{label}: unknown notebook {nb!r}: no file {nb_path}; "
                                    f"notebooks in {notebooks_dir}: {have or '(none)'}")
                    nb_path = None
        run_params = entry.get("parameters") or {}
        if not isinstance(run_params, dict):
            problems.append(f"{label}: parameters must be a mapping")
            run_params = {}
        clash = sorted(set(run_params) & {"profile", "run_dir"})
        if clash:
            problems.append(f"{label}: parameters {clash} are injected by the batch; remove them")
        stage = entry.get("stage")
        if stage is not None and (not isinstance(stage, int) or isinstance(stage, bool)
                                  or stage < 0):
            problems.append(f"{label}: stage {stage!r} must be a non-negative integer")
            stage = None
        needs = entry.get("needs")
        if needs is not None and (not isinstance(needs, list)
                                  or not all(isinstance(n, str) for n in needs)):
            problems.append(f"{label}: needs {needs!r} must be a list of run ids (or left out: "
                            "every run of the earlier stages)")
            needs = None
        if nb_path is None or not isinstance(run_id, str):
            continue
        merged = {**defaults, **run_params}
        stem = nbparams.notebook_stem(nb_path)
        if validate_params and stem in nbparams.NOTEBOOK_PARAMETERS:
            trial = {**merged, "profile": name if isinstance(name, str) else "x",
                     "run_dir": "/tmp/x"}
            try:
                nbparams.validate_parameters(stem, trial, resolve=False)
            except nbparams.ParameterError as exc:
                problems.extend(f"{label}: {p}" for p in exc.problems)
        runs.append(Run(id=run_id, notebook=nb_path, parameters=merged,
                        stage=default_stage(nb_path) if stage is None else stage,
                        description=str(entry.get("description") or ""),
                        needs=None if needs is None else tuple(needs)))
    problems.extend(_needs_problems(runs))
    problems.extend(validate_slurm_block(data.get("slurm")))
    if problems:
        raise ProfileError(f"bad profile {where}:\n" + "\n".join(f"  - {p}" for p in problems))
    return Profile(name=name, description=description, runs=runs, path=path,
                   notebooks_dir=notebooks_dir, slurm=dict(data.get("slurm") or {}))


def _needs_problems(runs: list[Run]) -> list[str]:
    """Each ``needs`` entry must name a run of the profile in an earlier stage (so that the
    stages stay an order in which every run comes after what it waits for)."""
    stage_of = {r.id: r.stage for r in runs}
    out = []
    for r in runs:
        for n in r.needs or ():
            if n not in stage_of:
                out.append(f"run {r.id!r}: needs {n!r}, which is not a run of this profile; "
                           f"runs: {', '.join(stage_of)}")
            elif stage_of[n] >= r.stage:
                out.append(f"run {r.id!r} (stage {r.stage}): needs {n!r} of stage {stage_of[n]}; "
                           "a run can only wait for runs of earlier stages (set their stage:)")
    return out


def list_profiles(profiles_dir: Path | None = None) -> list[tuple[str, str, int | None, str]]:
    """``(name, description, number of runs or None, error or "")`` for every profile file."""
    profiles_dir = Path(profiles_dir or paths.PROFILES_DIR)
    out = []
    for path in _profile_files(profiles_dir):
        try:
            p = load_profile(path)
            out.append((p.name, p.description, len(p.runs), ""))
        except BatchError as exc:
            out.append((path.stem, "", None, str(exc)))
    return out


def select_runs(runs: list[Run], only: str | Sequence[str] | None) -> list[Run]:
    """The runs whose id matches one of the fnmatch patterns ``only`` (``--only``; a pattern
    may list several, comma-separated); all runs when ``only`` is empty."""
    if not only:
        return list(runs)
    items = [only] if isinstance(only, str) else list(only)
    patterns = [pat.strip() for item in items for pat in item.split(",") if pat.strip()]
    chosen = [r for r in runs if any(fnmatch.fnmatchcase(r.id, p) for p in patterns)]
    if not chosen:
        raise BatchError(f"--only {','.join(patterns)} matches no run; run ids: "
                         + ", ".join(r.id for r in runs))
    return chosen


def run_dir_of(runs_root: Path, profile: str, run_id: str) -> Path:
    """The run folder of run ``run_id``: ``<runs_root>/<profile>/<run_id>``, absolute. Both names
    must be folder names (:func:`dml_core.core.paths.check_name`), else :class:`ProfileError`."""
    try:
        paths.check_name(profile, "profile name")
        paths.check_name(run_id, "run id")
    except ValueError as exc:
        raise ProfileError(str(exc)) from None
    return (Path(runs_root) / profile / run_id).resolve()


def effective_parameters(run: Run, profile: str, run_dir: Path, data_root) -> dict[str, Any]:
    """The run's profile parameters with the injected ``profile``, ``run_dir`` and (when given)
    ``data_root``."""
    params = dict(run.parameters)
    params["profile"] = profile
    params["run_dir"] = str(run_dir)
    if data_root is not None:
        params["data_root"] = str(Path(data_root).expanduser().resolve())
    return params


#: Keys ``--set`` refuses, with the way to do what was meant: they say where a run writes or
#: reads (the batch sets them for every run) or replace a whole structure.
NOT_SETTABLE: dict[str, str] = {
    "profile": "the profile is chosen with --profile NAME",
    "run_dir": "every run writes into <runs root>/<profile>/<run id>: choose the root with "
               "--runs-root DIR",
    "data_root": "choose the data root with --data-root DIR (or $DML_DATA_ROOT)",
    "output_dir": "a notebook's outputs stay in its run folder: set output_dir (relative to the "
                  "run folder) in the profile instead",
    "overrides": "give each recipe key as its own --set KEY=VALUE",
}


def parse_settings(items: Sequence[str] | None) -> dict[str, Any]:
    """``["epochs=1", "lr=1e-3", "rrc_scale=[0.5, 1]"]`` → ``{"epochs": 1, "lr": 0.001,
    "rrc_scale": [0.5, 1.0]}``: the ``--set KEY=VALUE`` items, typed and checked.

    Each value is read with YAML 1.2 rules (:func:`dml_core.core.io.load_yaml12`: ``1e-3`` is a
    number, ``010`` is 10, ``yes`` and ``12:30`` are strings; quote a value to keep it text), then
    checked by :func:`check_settings`; a later KEY wins. Raises :class:`BatchError` naming every
    bad item at once.
    """
    import yaml

    from dml_core.core.io import load_yaml12

    out: dict[str, Any] = {}
    texts: dict[str, str] = {}
    problems = []
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set epochs=1")
            continue
        try:
            out[key] = load_yaml12(value) if value.strip() else None
            texts[key] = value
        except yaml.YAMLError as exc:
            problems.append(f"--set {item!r}: the value is not valid YAML: {exc}")
    if problems:
        raise BatchError("\n".join(problems))
    return check_settings(out, texts)


def check_settings(settings: dict[str, Any], texts: dict[str, str] | None = None
                   ) -> dict[str, Any]:
    """The profile-wide settings checked and normalised, or :class:`BatchError` naming every
    problem: a key of :data:`NOT_SETTABLE` (what to do instead), a key that is neither a notebook
    parameter nor a recipe key (with the closest one), a value of the wrong type or outside its
    range (what is expected, and an example). A notebook parameter is checked against every
    study notebook that has it; a recipe key by the recipe schema (:mod:`dml_core.methods.schema`,
    docs/RECIPE_KEYS.md). ``texts``: the values as typed, for the messages."""
    import difflib

    from dml_core.methods.schema import KEY_ALIASES, KEYS, RecipeError, as_text, canonical, coerce
    from dml_core.profiles import params as nbparams

    texts = texts or {}
    parameters = {k for stem in nbparams.NOTEBOOK_PARAMETERS
                  for k in nbparams.NOTEBOOK_PARAMETERS[stem]}
    out, problems = {}, []
    for key, value in settings.items():
        shown = f"--set {key}={texts.get(key, value)}"
        if key in NOT_SETTABLE:
            problems.append(f"{shown}: refused: {NOT_SETTABLE[key]}")
            continue
        recipe_key = KEYS.get(canonical(key))
        if recipe_key is not None and not (recipe_key.overridable or key in parameters):
            problems.append(f"{shown}: refused: {key} names the row of each run (its method, "
                            "data set, backbone), which the profile chooses")
            continue
        if recipe_key is not None:
            try:
                value = coerce(key, value)
            except RecipeError as exc:
                problems.append(f"{shown}: {key} expects {exc.expected} (e.g. --set {key}="
                                f"{as_text(exc.example)}; see docs/RECIPE_KEYS.md)")
                continue
        if key in parameters:
            value, found = nbparams.check_setting(key, value)
            problems += [f"{shown}: {p}" for p in found]
        elif recipe_key is None:
            valid = sorted(parameters | {k for k, v in KEYS.items() if v.overridable}
                           | set(KEY_ALIASES))
            close = difflib.get_close_matches(key, valid, n=1)
            problems.append(f"{shown}: unknown key {key!r}"
                            + (f" (did you mean {close[0]!r}?)" if close else "")
                            + "; a setting is a notebook parameter or a recipe key "
                              "(docs/RECIPE_KEYS.md)")
        out[key] = value
    if problems:
        raise BatchError("bad --set setting(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return out


def apply_settings(run: Run, params: dict[str, Any], settings: dict[str, Any] | None) -> dict[str, Any]:
    """The run's parameters with the profile-wide ``settings`` (``--set``) applied.

    A setting that is a parameter of the run's notebook (``device``, the toy's ``epochs``) sets
    that parameter. Notebooks with an ``overrides`` parameter (the training notebooks) get every
    other setting that is a recipe key merged into ``overrides`` (the settings win), so the recipe
    code checks the keys and records them (``overrides``, ``shortened``, ``reported: None`` in the
    run's ``config.yaml`` and ``summary.json``). Other settings leave other notebooks unchanged.
    A key of :data:`NOT_SETTABLE` raises :class:`BatchError` (it is never silently dropped).
    """
    if not settings:
        return params
    refused = sorted(set(settings) & set(NOT_SETTABLE))
    if refused:
        raise BatchError("refused setting(s): " + "; ".join(f"{k}: {NOT_SETTABLE[k]}"
                                                             for k in refused))
    from dml_core.profiles import params as nbparams

    try:
        _, schema = nbparams._schema(run.notebook)
    except nbparams.ParameterError:
        schema = {}
    out = dict(params)
    own = {k: v for k, v in settings.items() if k in schema}
    out.update(own)
    if "overrides" in schema:
        from dml_core.methods.schema import KEYS, canonical

        # a parameter of another notebook (e.g. 07's momenta) that is no recipe key: not ours
        others = {k for sch in nbparams.NOTEBOOK_PARAMETERS.values() for k in sch
                  if canonical(k) not in KEYS}
        rest = {k: v for k, v in settings.items() if k not in own and k not in others}
        if rest:
            out["overrides"] = {**dict(params.get("overrides") or {}), **rest}
    return out
