"""Benchmark rules as data: one YAML profile per published rule set.

A profile (``fastcam/rules/profiles/NAME.yaml``) says what a compliant run of
that rule set is: its baseline recipe (in :class:`fastcam.config.Hyperparameters`
field names), the run types it defines, which hyperparameters an optimized run
may change and within which bounds, which ones are fixed by name, the precision
allowed per run type, the global-batch policy, the node scales, the number of
replicates and how they are scored. Every value's source is a comment in the
file. ``load(name)`` reads a profile with ``yaml.safe_load``, validates it
strictly (one :class:`ConfigError` naming the file and the key) and returns an
immutable :class:`Profile`; profiles are cached.

Reading of the parameter lists (the reference README's rule, mlcommons/hpc
deepcam/README.md "Hyperparameters": "parameters not listed in the table below
are fixed"): a hyperparameter not in ``mutable`` is fixed in every run type;
``fixed`` lists the ones a rule set names as fixed explicitly. ``mutable`` keys
are Hyperparameters fields, ``max_inter_threads`` (loader workers) or a part of
the schedule (``lr_schedule.decay_rate``), which refines ``lr_schedule``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from fastcam.errors import ConfigError, GuardError

DEFAULT = "esif-2025-12"
RUN_TYPES = ("baseline", "ported", "optimized")
PRECISIONS = ("fp32", "fp16", "bf16")
REDUCED_PRECISIONS = ("fp16", "bf16")
SCORINGS = ("single", "median", "olympic_mean")
TABLES = ("esif-2025-12", "esif-scenarios", "mlperf")
STAGE_DTYPES = ("fp16", "fp32")
SCHEDULE_KEYS = {"multistep": ("milestones", "decay_rate"), "cosine_annealing": ("t_max", "eta_min")}
# Settings outside Hyperparameters that a rule set lists as mutable.
RUN_PARAMETERS = ("max_inter_threads",)
CONSTRAINT_KEYS = ("choices", "min", "max")


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    sources: tuple[str, ...]
    run_types: tuple[str, ...]
    baseline: Mapping[str, Any]
    mutable: Mapping[str, Mapping[str, Any]]
    fixed: tuple[str, ...]
    precision: Mapping[str, tuple[str, ...]]
    global_batch_size: int | None
    gradient_accumulation: bool
    scales: tuple[int, ...]
    replicates: int
    scoring: str
    max_unconverged: int
    table: str
    staging_allowed: bool
    per_step_logging: bool
    scenarios: Mapping[str, Mapping[str, Any]]
    mlperf_ruleset: str
    lamb: Mapping[str, Any]  # LAMB's own settings, fixed where LAMB is used (apex FusedLAMB defaults)

    def allows_precision(self, run_type: str, precision: str) -> bool:
        """May a ``run_type`` run compute in ``precision`` (fp32, fp16, bf16) under this profile?"""
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (resolve 'auto' first), "
                              f"got {precision!r}")
        return precision in self.precision[self._run_type(run_type)]

    def allows_stage_dtype(self, run_type: str, dtype: str) -> bool:
        """float16 staging rounds the input, a precision change: only where reduced precision is allowed."""
        if dtype not in STAGE_DTYPES:
            raise ConfigError(f"stage dtype must be one of {', '.join(STAGE_DTYPES)}, got {dtype!r}")
        allowed = self.precision[self._run_type(run_type)]
        return dtype == "fp32" or any(p in allowed for p in REDUCED_PRECISIONS)

    def is_mutable(self, name: str) -> bool:
        """May an optimized run change ``name`` (a parameter or ``lr_schedule.PART``)?"""
        return name in self.mutable or (name.split(".")[0] == "lr_schedule" and "lr_schedule" in self.mutable)

    def check_value(self, name: str, value: Any) -> None:
        """GuardError if ``value`` of the mutable ``name`` lies outside this profile's constraint."""
        if not self.is_mutable(name):
            raise GuardError(f"{name} is fixed under rules {self.name}; mutable: {', '.join(self.mutable)}")
        problem = violation(self.mutable.get(name, {}), value)
        if problem:
            raise GuardError(f"{name} {show(value)} is not allowed under rules {self.name}: it must be {problem}")

    def local_batch_for(self, ranks: int, accumulation: int = 1, global_batch: int | None = None) -> int:
        """The local batch that makes ``global_batch`` (default: this profile's fixed one) on ``ranks``
        ranks with ``accumulation`` steps per update; one ConfigError where the rules forbid it."""
        if global_batch is None:
            global_batch = self.global_batch_size
        if global_batch is None:
            raise ConfigError(f"rules {self.name} do not fix a global batch: give --global_batch_size")
        if self.global_batch_size is not None and global_batch != self.global_batch_size:
            raise ConfigError(f"global batch {global_batch} is not allowed under rules {self.name}: "
                              f"it fixes {self.global_batch_size}")
        if accumulation > 1 and not self.gradient_accumulation:
            raise ConfigError(f"gradient accumulation is not allowed under rules {self.name}: "
                              f"the global batch {global_batch} must divide over the {ranks} ranks")
        if ranks < 1 or accumulation < 1 or global_batch % (ranks * accumulation):
            raise ConfigError(f"global batch {global_batch} does not divide over {ranks} ranks x "
                              f"{accumulation} accumulation steps")
        return global_batch // (ranks * accumulation)

    def hyperparameters(self):
        """A fresh, validated :class:`fastcam.config.Hyperparameters` holding the baseline recipe."""
        from fastcam.config import Hyperparameters, Schedule

        values = {k: thaw(v) for k, v in self.baseline.items()}
        values["lr_schedule"] = Schedule(**values["lr_schedule"])
        return Hyperparameters(**values)  # validated on construction

    def _run_type(self, run_type: str) -> str:
        if run_type not in self.run_types:
            raise ConfigError(f"run type {run_type!r} is not defined by rules {self.name} "
                              f"(run types: {', '.join(self.run_types)})")
        return run_type


def profiles_dir() -> Path:
    return Path(str(resources.files(__name__).joinpath("profiles")))


def names() -> tuple[str, ...]:
    """Every shipped profile, sorted."""
    return tuple(sorted(p.stem for p in profiles_dir().glob("*.yaml")))


@functools.lru_cache(maxsize=None)
def load(name: str) -> Profile:
    """The shipped profile ``name``; an unknown name is one ConfigError listing the known ones."""
    known = names()
    if name not in known:
        raise ConfigError(f"unknown rules profile {name!r} (known: {', '.join(known)})")
    return load_file(profiles_dir() / f"{name}.yaml")


def load_file(path: str | Path) -> Profile:
    """Read and validate one profile file (the profile's name is the file's stem)."""
    from fastcam.files import read_yaml
    from fastcam.rules.parse import Parser

    path = Path(path)
    data = read_yaml(path, "rules profile")

    return Parser(path).profile(data)


# -- helpers shared with the schema ---------------------------------------------
def violation(constraint: Mapping[str, Any], value: Any) -> str | None:
    """What ``value`` must be to satisfy ``constraint`` ({}, choices, min, max), or None when it does."""
    if "choices" in constraint and value not in constraint["choices"]:
        return f"one of {', '.join(show(c) for c in constraint['choices'])}"
    if "min" in constraint and is_number(value) and value < constraint["min"]:
        return f">= {show(constraint['min'])}"
    if "max" in constraint and is_number(value) and value > constraint["max"]:
        return f"<= {show(constraint['max'])}"
    return None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def freeze(value: Any) -> Any:
    """Immutable copy: mappings -> MappingProxyType, lists -> tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
