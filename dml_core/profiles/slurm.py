"""A profile's ``slurm:`` settings: what each run's Slurm job asks for (``--backend slurm``).

:class:`SlurmOptions` holds the keys of the optional ``slurm:`` mapping of a profile
(``profiles/README.md``); :func:`validate_slurm_block` checks it when the profile loads
(:func:`dml_core.profiles.load_profile`), and :func:`slurm_options` puts the command line's
``--slurm-*`` options on top. The jobs themselves are :mod:`dml_core.batch.cluster`'s.

Everything here ends up in a job script: an extra ``sbatch`` flag's name must match
``[A-Za-z0-9_-]+`` in full, and no value (flags, partition, setup lines) may hold a line break
or another control character, which would add a line of its own to the script.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

__all__ = ["SlurmOptions", "slurm_options", "validate_slurm_block", "parse_sbatch_flags",
           "EXECUTORS"]

EXECUTORS = ("slurm", "local", "debug")


@dataclasses.dataclass
class SlurmOptions:
    """What each run's Slurm job asks for. Keys of the profile's ``slurm:`` mapping."""

    partition: str | None = None  # --partition; None: the cluster's default
    time_min: int = 240  # --time, minutes per job (a requeued job gets it again)
    cpus_per_task: int = 8  # --cpus-per-task (DataLoader workers follow the CPUs granted)
    mem_gb: float = 32  # --mem
    gpus: int = 1  # --gpus-per-node: one GPU per run
    array_parallelism: int = 16  # the %N of --array: runs of a stage at once
    max_requeues: int = 3  # time-outs after which a job is not requeued again
    signal_delay_s: int = 120  # USR2 this long before the time limit
    sbatch: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra #SBATCH flags
    setup: list[str] = dataclasses.field(default_factory=list)  # shell lines before the run
    executor: str = "slurm"  # slurm | local | debug (the latter two: tests, no cluster)
    poll_s: float = 10.0  # how often the driver asks about its jobs

    def describe(self) -> str:
        parts = [f"partition {self.partition or '(default)'}", f"time {self.time_min} min",
                 f"{self.cpus_per_task} CPUs", f"{self.mem_gb:g} GB", f"{self.gpus} GPU",
                 f"{self.array_parallelism} at once"]
        if self.sbatch:
            parts.append("sbatch " + " ".join(f"--{k}={v}" for k, v in self.sbatch.items()))
        return ", ".join(parts) + ("" if self.executor == "slurm" else
                                   f" (submitit {self.executor} executor)")


_FIELDS = {f.name: f for f in dataclasses.fields(SlurmOptions)}
_TYPES: dict[str, tuple[type, ...]] = {
    "partition": (str,), "time_min": (int,), "cpus_per_task": (int,), "mem_gb": (int, float),
    "gpus": (int,), "array_parallelism": (int,), "max_requeues": (int,),
    "signal_delay_s": (int,), "sbatch": (dict,), "setup": (list,), "executor": (str,),
    "poll_s": (int, float)}


#: An extra sbatch flag's name (``account``, ``qos``, ``gres``), matched in full.
SBATCH_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def text_problem(what: str, value: Any) -> str | None:
    """Why ``value`` cannot go into a line of the job script (a newline or another control
    character would start a line of its own), or None."""
    m = _CONTROL.search(str(value))
    if m:
        return (f"{what}: {value!r} holds the control character {m.group()!r} (a line break would "
                "add its own line to the job script); remove it")
    return None


def sbatch_problems(flags: dict) -> list[str]:
    """Problems of extra sbatch flags ``{key: value}`` (empty list: valid)."""
    problems = []
    for key, value in flags.items():
        if not isinstance(key, str) or not SBATCH_KEY.fullmatch(key):
            problems.append(f"slurm.sbatch: flag name {key!r} must be letters, digits, '_', '-' "
                            "(e.g. account, qos, gres)")
        elif isinstance(value, (dict, list)) or value is None:
            problems.append(f"slurm.sbatch.{key}: {value!r} must be a string, a number or true")
        elif (why := text_problem(f"slurm.sbatch.{key}", value)) is not None:
            problems.append(why)
    return problems


def validate_slurm_block(block: Any) -> list[str]:
    """Problems of a profile's ``slurm:`` mapping (empty list: valid)."""
    if block is None:
        return []
    if not isinstance(block, dict):
        return ["slurm must be a mapping, e.g. {partition: gpu, time_min: 240}"]
    problems = []
    for key, value in block.items():
        if key not in _TYPES:
            problems.append(f"slurm: unknown key {key!r}; allowed: {sorted(_TYPES)}")
            continue
        if value is None and key == "partition":
            continue
        if isinstance(value, bool) or not isinstance(value, _TYPES[key]):
            names = " or ".join(t.__name__ for t in _TYPES[key])
            problems.append(f"slurm.{key}: {value!r} must be {names}")
        elif isinstance(value, (int, float)) and (
                value < 0 if key in ("gpus", "max_requeues") else value <= 0):
            problems.append(f"slurm.{key}: {value!r} must be positive")
        elif key == "executor" and value not in EXECUTORS:
            problems.append(f"slurm.executor: {value!r} must be one of {list(EXECUTORS)}")
        elif key == "setup" and not all(isinstance(x, str) for x in value):
            problems.append("slurm.setup must be a list of shell lines (strings)")
        elif key == "setup":
            problems += [w for x in value if (w := text_problem("slurm.setup", x))]
        elif key == "sbatch":
            problems += sbatch_problems(value)
        elif isinstance(value, str) and (why := text_problem(f"slurm.{key}", value)):
            problems.append(why)
    return problems


def parse_sbatch_flags(items: Sequence[str] | None) -> dict[str, str]:
    """``["account=abc", "qos=high", "exclusive"]`` → ``{"account": "abc", "qos": "high",
    "exclusive": True}`` (``--slurm-sbatch`` on the command line; leading dashes allowed)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.lstrip("-").partition("=")
        if not SBATCH_KEY.fullmatch(key.strip()):
            raise ValueError(f"--slurm-sbatch {item!r}: expected KEY=VALUE with a KEY of letters, "
                             "digits, '_', '-', e.g. account=abc")
        if (why := text_problem(f"--slurm-sbatch {key.strip()}", value)) is not None:
            raise ValueError(why)
        out[key.strip()] = value if eq else True
    return out


def slurm_options(block: dict[str, Any] | None = None, **overrides: Any) -> SlurmOptions:
    """The profile's ``slurm:`` mapping with the command line's ``overrides`` (None: unset)
    on top; ``sbatch`` flags are merged (the command line wins per flag)."""
    problems = validate_slurm_block(block)
    if problems:
        raise ValueError("; ".join(problems))
    values = dict(block or {})
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise TypeError(f"unknown Slurm option {key!r}")
        if value is None:
            continue
        if key == "sbatch":
            values["sbatch"] = {**values.get("sbatch", {}), **value}
        else:
            values[key] = value
    problems = validate_slurm_block(values)
    if problems:
        raise ValueError("; ".join(problems))
    return SlurmOptions(**values)
