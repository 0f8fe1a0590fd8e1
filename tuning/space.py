"""The search space: loaded from YAML, vetted by the guard, scaled to the run.

The file format is documented in the default space, ``space.yaml`` beside this
module. Loading checks every name with :func:`fastcam.guard.check_name` and
every bound and choice with :func:`fastcam.guard.check_range`, so a space that
names a fixed hyperparameter, or a range the rules do not allow, is refused
(GuardError, exit code 2) before any trial runs. :func:`resolve` then turns
epoch-valued ranges into optimizer steps and scales learning-rate ranges with
the global batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastcam import guard
from fastcam.config import OPTIMIZERS, SCHEDULES
from fastcam.errors import ConfigError, GuardError

DEFAULT_SPACE = Path(__file__).with_name("space.yaml")

# What a space may name; the value is the Python type of the config field.
FIELDS: dict[str, type] = {
    "optimizer": str,
    "start_lr": float,
    "weight_decay": float,
    "lr_warmup_steps": int,
    "lr_warmup_factor": float,
    "max_inter_threads": int,
    "local_batch_size": int,
    "lr_schedule.type": str,
    "lr_schedule.milestones": int,
    "lr_schedule.decay_rate": float,
    "lr_schedule.t_max": int,
    "lr_schedule.eta_min": float,
}
STEP_FIELDS = frozenset({"lr_warmup_steps", "lr_schedule.milestones", "lr_schedule.t_max"})
POSITIVE_FIELDS = frozenset({"start_lr", "local_batch_size", "lr_schedule.milestones", "lr_schedule.t_max",
                             "lr_schedule.decay_rate"})
SCHEDULE_OF = {  # schedule-specific parameters and the schedule type they belong to
    "lr_schedule.milestones": "multistep", "lr_schedule.decay_rate": "multistep",
    "lr_schedule.t_max": "cosine_annealing", "lr_schedule.eta_min": "cosine_annealing",
}
SPEC_KEYS = frozenset({"choices", "low", "high", "log", "unit", "scale", "count"})
UNITS = ("value", "epochs")
SCALES = ("none", "sqrt_batch")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as written in the file (ranges at the reference scale)."""

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    unit: str = "value"
    scale: str = "none"
    count: tuple[int, ...] = (1,)  # lr_schedule.milestones only

    @property
    def is_int(self) -> bool:
        return FIELDS[self.name] is int


@dataclass(frozen=True)
class SearchSpace:
    source: str
    reference_global_batch: int
    reference_train_samples: int
    params: dict[str, ParamSpec] = field(default_factory=dict)

    def without(self, names) -> "SearchSpace":
        """The space with ``names`` (and, for lr_schedule, its parts) removed: pinned by flags."""
        drop = {n for n in self.params if n in names or n.split(".")[0] in names}
        return replace(self, params={n: p for n, p in self.params.items() if n not in drop})


@dataclass(frozen=True)
class RunScale:
    """What the ranges are scaled to: the trial's global batch and epoch length."""

    global_batch: int
    steps_per_epoch: int


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read and vet a space file (default: the packaged ``space.yaml``)."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_SPACE
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read search space ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return space_from_dict(data, source=str(path))


def space_from_dict(data: Any, source: str = "search space") -> SearchSpace:
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict) or not data["parameters"]:
        raise ConfigError(f"{source}: expected a mapping with a non-empty 'parameters' mapping")
    unknown = set(data) - {"reference", "parameters"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    reference = data.get("reference") or {}
    if not isinstance(reference, dict) or set(reference) - {"global_batch_size", "train_samples"}:
        raise ConfigError(f"{source}: 'reference' takes global_batch_size and train_samples")
    ref_batch = _positive_int(reference.get("global_batch_size", 128), f"{source}: reference.global_batch_size")
    ref_samples = _positive_int(reference.get("train_samples", 121266), f"{source}: reference.train_samples")
    params = {}
    for name, spec in data["parameters"].items():
        params[str(name)] = _param(str(name), spec, source)
    return SearchSpace(source, ref_batch, ref_samples, params)


def _param(name: str, spec: Any, source: str) -> ParamSpec:
    guard.check_name(name)  # a fixed hyperparameter is a GuardError, before anything else
    where = f"{source}: {name}"
    if name not in FIELDS:
        raise ConfigError(f"{where}: not a tunable parameter (known: {', '.join(FIELDS)})")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with 'choices' or 'low'/'high'")
    if set(spec) - SPEC_KEYS:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(set(spec) - SPEC_KEYS))}")
    unit, scale = str(spec.get("unit", "value")), str(spec.get("scale", "none"))
    if unit not in UNITS or (unit == "epochs" and name not in STEP_FIELDS):
        raise ConfigError(f"{where}: unit must be one of {', '.join(UNITS)} (epochs only for step counts)")
    if scale not in SCALES or (scale != "none" and FIELDS[name] is not float):
        raise ConfigError(f"{where}: scale must be one of {', '.join(SCALES)} (sqrt_batch only for real values)")
    count = (1,)
    if "count" in spec:
        if name != "lr_schedule.milestones":
            raise ConfigError(f"{where}: 'count' applies to lr_schedule.milestones only")
        count = tuple(_positive_int(c, f"{where}.count") for c in _as_list(spec["count"], f"{where}.count"))
    ranged = [key for key in ("low", "high") if key in spec]
    if ("choices" in spec) == bool(ranged) or len(ranged) == 1:
        raise ConfigError(f"{where}: give either 'choices' or both 'low' and 'high'")
    if "choices" in spec:
        choices = tuple(_choice(name, c, where) for c in _as_list(spec["choices"], f"{where}.choices"))
        if unit == "epochs" or scale != "none":
            raise ConfigError(f"{where}: unit and scale apply to ranges, not choices")
        return ParamSpec(name, choices=choices, count=count)
    if name in ("optimizer", "lr_schedule.type"):
        raise ConfigError(f"{where}: takes 'choices', not a range")
    low, high = _number(spec.get("low"), f"{where}.low"), _number(spec.get("high"), f"{where}.high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: low {low:g} is above high {high:g}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-scale range needs low > 0, got {low:g}")
    _vet_value(name, low, where)
    _vet_value(name, high, where)
    return ParamSpec(name, low=low, high=high, log=log, unit=unit, scale=scale, count=count)


def _choice(name: str, value: Any, where: str):
    kind = FIELDS[name]
    if name == "optimizer":
        match = [o for o in OPTIMIZERS if str(value).lower() == o.lower()]
        if not match:
            raise GuardError(f"{where}: optimizer {value!r} is not allowed: the rules allow {', '.join(OPTIMIZERS)}")
        return match[0]
    if name == "lr_schedule.type":
        value = "cosine_annealing" if value == "cosine" else value
        if value not in SCHEDULES:
            raise GuardError(f"{where}: schedule {value!r} is not allowed: the rules allow {', '.join(SCHEDULES)}")
        return value
    number = _number(value, f"{where}.choices")
    if kind is int:
        if not float(number).is_integer():
            raise ConfigError(f"{where}.choices: {value!r} is not an integer")
        number = int(number)
    _vet_value(name, number, where)
    return number


def _vet_value(name: str, value: float, where: str) -> None:
    field_name = name.split(".")[-1]
    try:
        guard.check_range(field_name, value)
    except GuardError as err:
        raise GuardError(f"{where}: {err}") from None
    if name in POSITIVE_FIELDS and value <= 0:
        raise GuardError(f"{where}: {field_name} {value:g} is not allowed: it must be > 0")
    if value < 0:
        raise GuardError(f"{where}: {field_name} {value:g} is not allowed: it must be >= 0")


def _as_list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected a positive integer, got {value!r}")
    return value


# -- scaling ---------------------------------------------------------------------
def run_scale(train_samples: int, local_batch_size: int, world_size: int = 1) -> RunScale:
    """Steps per epoch as the trainer counts them (distributed sampler, drop last)."""
    global_batch = local_batch_size * world_size
    steps = (train_samples // world_size) // local_batch_size
    if steps < 1:
        from fastcam.errors import DataError

        raise DataError(f"{train_samples} training samples are fewer than the global batch size {global_batch}")
    return RunScale(global_batch, steps)


def lr_factor(space: SearchSpace, scale: RunScale) -> float:
    """The square-root learning-rate scaling rule (Adam-type optimizers)."""
    return math.sqrt(scale.global_batch / space.reference_global_batch)


def reference_steps_per_epoch(space: SearchSpace) -> int:
    return max(1, space.reference_train_samples // space.reference_global_batch)


def resolve(space: SearchSpace, scale: RunScale) -> dict[str, ParamSpec]:
    """Each parameter with its range in the units the config uses, for this run."""
    resolved = {}
    for name, p in space.params.items():
        if p.choices is not None:
            resolved[name] = p
            continue
        low, high = p.low, p.high
        if p.unit == "epochs":
            floor = 1 if name in POSITIVE_FIELDS else 0
            low = max(floor, round(low * scale.steps_per_epoch))
            high = max(low, round(high * scale.steps_per_epoch))
        elif p.scale == "sqrt_batch":
            low, high = low * lr_factor(space, scale), high * lr_factor(space, scale)
        if p.is_int:
            low, high = int(math.ceil(low)), int(math.floor(high))
            if low > high:
                raise ConfigError(f"{space.source}: {name}: no integer lies in [{p.low:g}, {p.high:g}]")
        for value in (low, high):
            _vet_value(name, value, f"{space.source}: {name} (scaled)")
        resolved[name] = replace(p, low=low, high=high, unit="value", scale="none")
    return resolved


def describe(resolved: dict[str, ParamSpec]) -> dict[str, Any]:
    """A plain description (stored with the study, so that workers agree on the space)."""
    out: dict[str, Any] = {}
    for name, p in resolved.items():
        if p.choices is not None:
            out[name] = {"choices": list(p.choices)}
        else:
            out[name] = {"low": p.low, "high": p.high, "log": p.log}
        if name == "lr_schedule.milestones":
            out[name]["count"] = list(p.count)
    return out
