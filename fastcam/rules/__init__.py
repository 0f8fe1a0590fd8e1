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
import re
from dataclasses import dataclass, fields
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
        problem = _violation(self.mutable.get(name, {}), value)
        if problem:
            raise GuardError(f"{name} {_show(value)} is not allowed under rules {self.name}: it must be {problem}")

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

        values = {k: _thaw(v) for k, v in self.baseline.items()}
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
    path = Path(path)
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read rules profile ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return _Parser(path).profile(data)


# -- helpers shared with the schema ---------------------------------------------
def _violation(constraint: Mapping[str, Any], value: Any) -> str | None:
    """What ``value`` must be to satisfy ``constraint`` ({}, choices, min, max), or None when it does."""
    if "choices" in constraint and value not in constraint["choices"]:
        return f"one of {', '.join(_show(c) for c in constraint['choices'])}"
    if "min" in constraint and _number(value) and value < constraint["min"]:
        return f">= {_show(constraint['min'])}"
    if "max" in constraint and _number(value) and value > constraint["max"]:
        return f"<= {_show(constraint['max'])}"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _freeze(value: Any) -> Any:
    """Immutable copy: mappings -> MappingProxyType, lists -> tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value




# -- strict reading of one file ---------------------------------------------------
SCHEDULE_PARTS = ("type", "milestones", "decay_rate", "t_max", "eta_min")
SCENARIO_METRICS = ("median_step_time", "time_to_target")
# Scenario entry -> (type, may be null); every key is required.
SCENARIO_FIELDS = {
    "title": (str, False), "metric": (str, False), "scored": (bool, False), "convergence": (bool, False),
    "local_batch_size": (int, True), "global_batch_size": (int, True), "scales": (list, False),
    "replicates": (int, False), "epochs": (int, True), "per_step_logging": (bool, False),
    "timed_region_excludes": (list, False),
}
LAMB_FIELDS = ("bias_correction", "grad_averaging", "max_grad_norm")


class _Parser:
    """Reads one profile mapping; every error is one ConfigError naming the file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str):
        raise ConfigError(f"{self.path}: {key}: {message}")

    def profile(self, data: Any) -> Profile:
        if not isinstance(data, dict):
            self.fail("(top level)", "expected a mapping of profile keys")
        self.keys("", data, required=[f.name for f in fields(Profile)])
        name = self.text("name", data["name"])
        if name != self.path.stem:
            self.fail("name", f"{name!r} must equal the file name's stem {self.path.stem!r}")
        run_types = self.names("run_types", data["run_types"], RUN_TYPES)
        if "baseline" not in run_types:
            self.fail("run_types", "must include baseline (every rule set defines one)")
        baseline = self.baseline(data["baseline"])
        mutable = self.mutable(data["mutable"], baseline)
        fixed = self.names("fixed", data["fixed"], _hyperparameter_names(), allow_empty=True)
        for parameter in fixed:
            if parameter in mutable:
                self.fail(f"fixed.{parameter}", "is listed as mutable too")
        precision = self.precision(data["precision"], run_types)
        replicates = self.integer("replicates", data["replicates"], low=1)
        profile = Profile(
            name=name, title=self.text("title", data["title"]),
            sources=tuple(self.text(f"sources[{i}]", s) for i, s in enumerate(self.sequence("sources", data["sources"]))),
            run_types=run_types, baseline=_freeze(baseline), mutable=_freeze(mutable), fixed=fixed,
            precision=_freeze(precision),
            global_batch_size=self.integer("global_batch_size", data["global_batch_size"], low=1, nullable=True),
            gradient_accumulation=self.flag("gradient_accumulation", data["gradient_accumulation"]),
            scales=self.scales("scales", data["scales"]), replicates=replicates,
            scoring=self.choice("scoring", data["scoring"], SCORINGS),
            max_unconverged=self.integer("max_unconverged", data["max_unconverged"], low=0),
            table=self.choice("table", data["table"], TABLES),
            staging_allowed=self.flag("staging_allowed", data["staging_allowed"]),
            per_step_logging=self.flag("per_step_logging", data["per_step_logging"]),
            scenarios=_freeze(self.scenarios(data["scenarios"])),
            mlperf_ruleset=self.text("mlperf_ruleset", data["mlperf_ruleset"]),
            lamb=_freeze(self.lamb(data["lamb"])),
        )
        self.consistent(profile)
        return profile

    # -- sections ------------------------------------------------------------------
    def baseline(self, data: Any) -> dict[str, Any]:
        from fastcam.config import Hyperparameters, Schedule

        self.mapping("baseline", data)
        required = [n for n in _hyperparameter_names() if n != "channels"]  # channels default to all 16
        self.keys("baseline.", data, required=required, optional=["channels"])
        template = Hyperparameters()
        values = {name: (self.schedule(f"baseline.{name}", value) if name == "lr_schedule"
                         else self.like(f"baseline.{name}", value, getattr(template, name)))
                  for name, value in data.items()}
        try:
            hyper = Hyperparameters(**{**values, "lr_schedule": Schedule(**values["lr_schedule"])})
        except ConfigError as err:
            self.fail("baseline", f"not a valid set of hyperparameters: {err}")
        result = {name: getattr(hyper, name) for name in _hyperparameter_names()}
        result["lr_schedule"] = hyper.lr_schedule.as_dict()
        return result

    def schedule(self, key: str, data: Any) -> dict[str, Any]:
        self.mapping(key, data)
        kind = self.choice(f"{key}.type", data.get("type"), tuple(SCHEDULE_KEYS))
        self.keys(f"{key}.", data, required=["type", *SCHEDULE_KEYS[kind]])
        from fastcam.config import Schedule

        template = Schedule()
        return {"type": kind, **{part: self.like(f"{key}.{part}", data[part], getattr(template, part))
                                 for part in SCHEDULE_KEYS[kind]}}

    def mutable(self, data: Any, baseline: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        self.mapping("mutable", data)
        known = (*_hyperparameter_names(), *RUN_PARAMETERS, *(f"lr_schedule.{p}" for p in SCHEDULE_PARTS))
        result = {}
        for name, constraint in data.items():
            key = f"mutable.{name}"
            if name not in known:
                self.fail(key, f"unknown parameter (known: {', '.join(known)})")
            if "." in name and "lr_schedule" not in data:
                self.fail(key, "constrains a part of lr_schedule, which is not mutable")
            result[name] = self.constraint(key, name, constraint)
            reference = _baseline_value(baseline, name)
            problem = _violation(result[name], reference) if reference is not None else None
            if problem:
                self.fail(key, f"the baseline value {_show(reference)} breaks this constraint (must be {problem})")
        return result

    def constraint(self, key: str, name: str, data: Any) -> dict[str, Any]:
        self.mapping(key, data)
        self.keys(f"{key}.", data, required=[], optional=list(CONSTRAINT_KEYS))
        template = _template_value(name)
        result: dict[str, Any] = {}
        if "choices" in data:
            choices = self.sequence(f"{key}.choices", data["choices"])
            if not choices:
                self.fail(f"{key}.choices", "must not be empty")
            result["choices"] = [self.like(f"{key}.choices[{i}]", c, template) for i, c in enumerate(choices)]
            if name == "optimizer":
                from fastcam.config import OPTIMIZERS

                for choice in result["choices"]:
                    if choice not in OPTIMIZERS:
                        self.fail(f"{key}.choices", f"{choice!r} is not an optimizer ({', '.join(OPTIMIZERS)})")
            if name == "lr_schedule.type":
                for choice in result["choices"]:
                    if choice not in SCHEDULE_KEYS:
                        self.fail(f"{key}.choices", f"{choice!r} is not a schedule ({', '.join(SCHEDULE_KEYS)})")
        for bound in ("min", "max"):
            if bound in data:
                if not _number(template):
                    self.fail(f"{key}.{bound}", f"{name} is not a number")
                result[bound] = self.like(f"{key}.{bound}", data[bound], template)
        if "min" in result and "max" in result and result["min"] > result["max"]:
            self.fail(key, f"min {_show(result['min'])} is above max {_show(result['max'])}")
        return result

    def precision(self, data: Any, run_types: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        self.mapping("precision", data)
        self.keys("precision.", data, required=list(run_types))
        return {run_type: self.names(f"precision.{run_type}", data[run_type], PRECISIONS) for run_type in run_types}

    def scenarios(self, data: Any) -> dict[str, dict[str, Any]]:
        self.mapping("scenarios", data)
        result = {}
        for name, entry in data.items():
            key = f"scenarios.{name}"
            self.mapping(key, entry)
            self.keys(f"{key}.", entry, required=list(SCENARIO_FIELDS))
            values: dict[str, Any] = {}
            for field_name, (kind, nullable) in SCENARIO_FIELDS.items():
                value, where = entry[field_name], f"{key}.{field_name}"
                if kind is int:
                    values[field_name] = self.integer(where, value, low=1, nullable=nullable)
                elif kind is bool:
                    values[field_name] = self.flag(where, value)
                elif kind is str:
                    values[field_name] = self.text(where, value)
                elif field_name == "scales":
                    values[field_name] = self.scales(where, value)
                else:
                    values[field_name] = [self.text(f"{where}[{i}]", v) for i, v in enumerate(self.sequence(where, value))]
            self.choice(f"{key}.metric", values["metric"], SCENARIO_METRICS)
            result[name] = values
        return result

    def lamb(self, data: Any) -> dict[str, Any]:
        self.mapping("lamb", data)
        self.keys("lamb.", data, required=list(LAMB_FIELDS))
        norm = self.number("lamb.max_grad_norm", data["max_grad_norm"])
        if norm <= 0:
            self.fail("lamb.max_grad_norm", f"must be > 0, got {_show(norm)}")
        return {"bias_correction": self.flag("lamb.bias_correction", data["bias_correction"]),
                "grad_averaging": self.flag("lamb.grad_averaging", data["grad_averaging"]), "max_grad_norm": norm}

    def consistent(self, p: Profile) -> None:
        """Rules that tie sections together (a profile must not contradict itself)."""
        if not _RULESET.match(p.mlperf_ruleset):
            self.fail("mlperf_ruleset", f"must look like 3.0.0, got {p.mlperf_ruleset!r}")
        if p.scoring == "single" and p.replicates != 1:
            self.fail("scoring", f"single scores one run, but replicates is {p.replicates}")
        if p.scoring == "olympic_mean" and p.replicates < 3:
            self.fail("scoring", "an olympic mean drops the fastest and slowest run: it needs replicates >= 3")
        if p.max_unconverged >= p.replicates:
            self.fail("max_unconverged", f"must be below replicates ({p.replicates})")
        if not p.gradient_accumulation and ("gradient_accumulation_frequency" in p.mutable
                                            or p.baseline["gradient_accumulation_frequency"] != 1):
            self.fail("gradient_accumulation", "is false, but the profile lets gradient_accumulation_frequency differ from 1")
        if not p.per_step_logging and ("logging_frequency" in p.mutable or p.baseline["logging_frequency"] != 0):
            self.fail("per_step_logging", "is false, but the profile allows logging_frequency > 0")
        scored = [name for name, s in p.scenarios.items() if s["scored"]]
        if p.scenarios and len(scored) != 1:
            self.fail("scenarios", f"exactly one scenario must be scored, found {len(scored)}")
        for name, s in p.scenarios.items():
            key = f"scenarios.{name}"
            if s["per_step_logging"] and not p.per_step_logging:
                self.fail(f"{key}.per_step_logging", "is true, but the profile's per_step_logging is false")
            if s["scored"]:
                for field_name in ("global_batch_size", "replicates", "scales"):
                    if s[field_name] != getattr(p, field_name):
                        self.fail(f"{key}.{field_name}", f"the scored scenario's {_show(s[field_name])} differs "
                                                         f"from the profile's {_show(getattr(p, field_name))}")

    # -- typed values --------------------------------------------------------------
    def keys(self, prefix: str, data: dict, required: list[str], optional: list[str] = ()) -> None:
        known = [*required, *optional]
        for key in data:
            if not isinstance(key, str) or key not in known:
                self.fail(f"{prefix}{key}", f"unknown key (known: {', '.join(known)})")
        for key in required:
            if key not in data:
                self.fail(f"{prefix}{key}", "missing")

    def mapping(self, key: str, value: Any) -> None:
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, got {_kind(value)}")

    def sequence(self, key: str, value: Any) -> list:
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {_kind(value)}")
        return value

    def text(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, got {_kind(value)}")
        return value

    def flag(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_kind(value)}")
        return value

    def number(self, key: str, value: Any) -> float:
        # PyYAML reads 1e-3 as a string (YAML 1.1 wants 1.0e-3): say so rather than "wrong type".
        if not _number(value):
            hint = " (write floats with a dot, e.g. 1.0e-3)" if isinstance(value, str) else ""
            self.fail(key, f"must be a number, got {_kind(value)}{hint}")
        return float(value)

    def integer(self, key: str, value: Any, low: int | None = None, nullable: bool = False) -> int | None:
        if value is None and nullable:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be an integer{' or null' if nullable else ''}, got {_kind(value)}")
        if low is not None and value < low:
            self.fail(key, f"must be >= {low}, got {value}")
        return value

    def choice(self, key: str, value: Any, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            self.fail(key, f"must be one of {', '.join(allowed)}, got {_kind(value)}")
        return value

    def names(self, key: str, value: Any, allowed: tuple[str, ...], allow_empty: bool = False) -> tuple[str, ...]:
        items = self.sequence(key, value)
        if not items and not allow_empty:
            self.fail(key, "must not be empty")
        for i, item in enumerate(items):
            self.choice(f"{key}[{i}]", item, allowed)
        if len(set(items)) != len(items):
            self.fail(key, f"lists a name twice: {_show(items)}")
        return tuple(items)

    def scales(self, key: str, value: Any) -> tuple[int, ...]:
        items = [self.integer(f"{key}[{i}]", v, low=1) for i, v in enumerate(self.sequence(key, value))]
        if not items or items[0] != 1 or items != sorted(set(items)):
            self.fail(key, f"must be increasing node multiples starting at 1, got {_show(items)}")
        return tuple(items)

    def like(self, key: str, value: Any, template: Any) -> Any:
        """``value`` checked against the type of ``template`` (a default value of the field)."""
        if isinstance(template, bool):
            return self.flag(key, value)
        if isinstance(template, int):
            return self.integer(key, value)
        if isinstance(template, float):
            return self.number(key, value)
        if isinstance(template, str):
            return self.text(key, value)
        if isinstance(template, (list, tuple)):
            element = template[0] if template else 0.0
            return [self.like(f"{key}[{i}]", v, element) for i, v in enumerate(self.sequence(key, value))]
        self.fail(key, "cannot be constrained")  # a whole schedule: constrain its parts instead


def _hyperparameter_names() -> tuple[str, ...]:
    from fastcam.config import Hyperparameters

    return tuple(f.name for f in fields(Hyperparameters))


def _template_value(name: str) -> Any:
    """A default value of parameter ``name``, for its type."""
    from fastcam.config import Hyperparameters, RunSettings, Schedule

    if name.startswith("lr_schedule."):
        return getattr(Schedule(), name.split(".", 1)[1])
    if name in RUN_PARAMETERS:
        return getattr(RunSettings(), name)
    return getattr(Hyperparameters(), name)


def _baseline_value(baseline: Mapping[str, Any], name: str) -> Any:
    if name.startswith("lr_schedule."):
        return baseline["lr_schedule"].get(name.split(".", 1)[1])
    value = baseline.get(name)
    return None if isinstance(value, Mapping) else value


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


_RULESET = re.compile(r"^\d+\.\d+\.\d+$")
