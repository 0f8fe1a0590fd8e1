"""Strict reading of one rules profile file (fastcam.rules.load_file): every
key known, every type right, every value consistent with the config schema and
with the rest of the profile; one ConfigError naming the file and the key."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

from fastcam.errors import ConfigError
from fastcam.rules import (
    CONSTRAINT_KEYS,
    PRECISIONS,
    RUN_PARAMETERS,
    RUN_TYPES,
    SCHEDULE_KEYS,
    SCORINGS,
    TABLES,
    Profile,
    freeze,
    is_number,
    show,
    violation,
)

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


class Parser:
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
            sources=tuple(self.text(f"sources[{i}]", s)
                          for i, s in enumerate(self.sequence("sources", data["sources"]))),
            run_types=run_types, baseline=freeze(baseline), mutable=freeze(mutable), fixed=fixed,
            precision=freeze(precision),
            global_batch_size=self.integer("global_batch_size", data["global_batch_size"], low=1, nullable=True),
            gradient_accumulation=self.flag("gradient_accumulation", data["gradient_accumulation"]),
            scales=self.scales("scales", data["scales"]), replicates=replicates,
            scoring=self.choice("scoring", data["scoring"], SCORINGS),
            max_unconverged=self.integer("max_unconverged", data["max_unconverged"], low=0),
            table=self.choice("table", data["table"], TABLES),
            staging_allowed=self.flag("staging_allowed", data["staging_allowed"]),
            per_step_logging=self.flag("per_step_logging", data["per_step_logging"]),
            scenarios=freeze(self.scenarios(data["scenarios"])),
            mlperf_ruleset=self.text("mlperf_ruleset", data["mlperf_ruleset"]),
            lamb=freeze(self.lamb(data["lamb"])),
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
            problem = violation(result[name], reference) if reference is not None else None
            if problem:
                self.fail(key, f"the baseline value {show(reference)} breaks this constraint (must be {problem})")
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
                if not is_number(template):
                    self.fail(f"{key}.{bound}", f"{name} is not a number")
                result[bound] = self.like(f"{key}.{bound}", data[bound], template)
        if "min" in result and "max" in result and result["min"] > result["max"]:
            self.fail(key, f"min {show(result['min'])} is above max {show(result['max'])}")
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
                    values[field_name] = [self.text(f"{where}[{i}]", v)
                                          for i, v in enumerate(self.sequence(where, value))]
            self.choice(f"{key}.metric", values["metric"], SCENARIO_METRICS)
            result[name] = values
        return result

    def lamb(self, data: Any) -> dict[str, Any]:
        self.mapping("lamb", data)
        self.keys("lamb.", data, required=list(LAMB_FIELDS))
        norm = self.number("lamb.max_grad_norm", data["max_grad_norm"])
        if norm <= 0:
            self.fail("lamb.max_grad_norm", f"must be > 0, got {show(norm)}")
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
            self.fail("gradient_accumulation",
                      "is false, but the profile lets gradient_accumulation_frequency differ from 1")
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
                        self.fail(f"{key}.{field_name}", f"the scored scenario's {show(s[field_name])} differs "
                                                         f"from the profile's {show(getattr(p, field_name))}")

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
        if not is_number(value):
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
            self.fail(key, f"lists a name twice: {show(items)}")
        return tuple(items)

    def scales(self, key: str, value: Any) -> tuple[int, ...]:
        items = [self.integer(f"{key}[{i}]", v, low=1) for i, v in enumerate(self.sequence(key, value))]
        if not items or items[0] != 1 or items != sorted(set(items)):
            self.fail(key, f"must be increasing node multiples starting at 1, got {show(items)}")
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
