"""The search space: loaded from YAML, vetted by the guard, scaled to the run.

The file format is documented in the default space, ``space.yaml`` beside this
module; the names it may use are the schema's tunable fields
(fastcam.tuning.fields). Loading checks every name with
:func:`fastcam.guard.check_name` and every bound and choice with
:func:`fastcam.guard.check_range` and by building the config with it, so a
space that names a fixed hyperparameter, or a value the rules or the config do
not allow, is refused (GuardError, exit code 2) before any trial runs.
:func:`resolve` then turns epoch-valued ranges into optimizer steps (with the
steps per epoch of the trainer's run plan) and scales learning-rate ranges with
the global batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from fastcam import guard
from fastcam.config import Config, optimized
from fastcam.errors import ConfigError, DataError, GuardError

from .fields import Field, configure, searchable

DEFAULT_SPACE = Path(__file__).with_name("space.yaml")
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
    count: tuple[int, ...] = (1,)  # list fields only: how many values to sample

    @property
    def field(self) -> Field:
        return searchable()[self.name]

    @property
    def is_int(self) -> bool:
        return self.field.kind is int


@dataclass(frozen=True)
class SearchSpace:
    source: str
    reference_global_batch: int
    reference_train_samples: int
    params: dict[str, ParamSpec] = field(default_factory=dict)

    def without(self, dests) -> "SearchSpace":
        """The space without the fields whose flags (argparse ``dests``, e.g.
        ``hyperparameters.NAME``; the schedule's flag pins every part) were given."""
        dests = set(dests)
        return replace(self, params={n: p for n, p in self.params.items() if p.field.dest not in dests})


@dataclass(frozen=True)
class RunScale:
    """What the ranges are scaled to: the trial's global batch and epoch length."""

    global_batch: int
    steps_per_epoch: int


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read and vet a space file (default: the packaged ``space.yaml``)."""
    from fastcam.files import read_yaml

    path = Path(path) if path is not None else DEFAULT_SPACE
    return space_from_dict(read_yaml(path, "search space"), source=str(path))


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
    where = f"{source}: {name}"
    known = searchable()
    if name not in known:
        if name.partition(".")[0] not in {f.key for f in known.values() if f.part is not None}:
            guard.check_name(name)  # a fixed hyperparameter is a GuardError, before anything else
        raise ConfigError(f"{where}: not a tunable parameter (known: {', '.join(known)})")
    guard.check_name(name)  # the rules agree that it may change
    f = known[name]
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with 'choices' or 'low'/'high'")
    if set(spec) - SPEC_KEYS:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(set(spec) - SPEC_KEYS))}")
    unit, scale = str(spec.get("unit", "value")), str(spec.get("scale", "none"))
    if unit not in UNITS or (unit == "epochs" and not f.is_step_count):
        raise ConfigError(f"{where}: unit must be one of {', '.join(UNITS)} (epochs only for step counts)")
    if scale not in SCALES or (scale != "none" and f.kind is not float):
        raise ConfigError(f"{where}: scale must be one of {', '.join(SCALES)} (sqrt_batch only for real values)")
    count = (1,)
    if "count" in spec:
        if not f.is_list:
            raise ConfigError(f"{where}: 'count' applies to list parameters only")
        count = tuple(_positive_int(c, f"{where}.count") for c in _as_list(spec["count"], f"{where}.count"))
    ranged = [key for key in ("low", "high") if key in spec]
    if ("choices" in spec) == bool(ranged) or len(ranged) == 1:
        raise ConfigError(f"{where}: give either 'choices' or both 'low' and 'high'")
    if "choices" in spec:
        choices = tuple(_choice(f, c, where) for c in _as_list(spec["choices"], f"{where}.choices"))
        if unit == "epochs" or scale != "none":
            raise ConfigError(f"{where}: unit and scale apply to ranges, not choices")
        return ParamSpec(name, choices=choices, count=count)
    if f.kind is str:
        raise ConfigError(f"{where}: takes 'choices', not a range")
    low, high = _number(spec.get("low"), f"{where}.low"), _number(spec.get("high"), f"{where}.high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: low {low:g} is above high {high:g}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-scale range needs low > 0, got {low:g}")
    # Bounds may be in epochs or at the reference scale: the rules' range here, the config's own
    # validation once resolve() has them in the config's units.
    _vet_value(f, low, where, build=False)
    _vet_value(f, high, where, build=False)
    return ParamSpec(name, low=low, high=high, log=log, unit=unit, scale=scale, count=count)


def _choice(f: Field, value: Any, where: str):
    """A choice as the config spells it ('lamb' -> 'LAMB', 'cosine' -> 'cosine_annealing')."""
    if f.kind is not str:
        value = _number(value, f"{where}.choices")
        if f.kind is int:
            if not float(value).is_integer():
                raise ConfigError(f"{where}.choices: {value!r} is not an integer")
            value = int(value)
    return _vet_value(f, value, where)


def _vet_value(f: Field, value: Any, where: str, build: bool = True):
    """Refuse a value the rules (fastcam.guard) or, with ``build``, the config
    itself do not allow; returns it as the config holds it."""
    try:
        if not isinstance(value, str):
            guard.check_range(f.part or f.key, value, f.param)
        if not build:
            return value
        held = f.read(_probe(f, value))
    except GuardError as err:
        raise GuardError(f"{where}: {err}") from None
    except ConfigError as err:  # the config's own validation (a type, a range, an order)
        raise GuardError(f"{where}: {value!r} is not allowed: {err}") from None
    return held[0] if f.is_list else held


def _probe(f: Field, value: Any) -> Config:
    """The optimized recipe with ``value`` set (for a part, under the schedule type it belongs to)."""
    values = {f.name: (value,) if f.is_list else value}
    if f.belongs_to is not None:
        values[f.discriminator] = min(f.belongs_to)
    return configure(_recipe(), values)


@cache
def _recipe() -> Config:
    return optimized()


def _accepts(f: Field, value: Any) -> bool:
    try:
        _vet_value(f, value, f.name)
        return True
    except GuardError:
        return False


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
def run_scale(config: Config) -> RunScale:
    """The global batch and steps per epoch of a trial of ``config``, from the
    run plan the trainer uses (one process per trial)."""
    import torch

    from fastcam import distributed
    from fastcam.train.plan import resolve_plan

    ctx = distributed.init_distributed("single", "cpu")  # a trial never joins a process group
    plan = resolve_plan(config, ctx, device=torch.device("cpu"))  # the device does not change the counts
    if plan.steps_per_epoch < 1:
        raise DataError(f"{plan.train_samples} training samples are fewer than the global batch size "
                        f"{plan.global_batch_size}")
    return RunScale(plan.global_batch_size, plan.steps_per_epoch)


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
            floor = 0 if _accepts(p.field, 0) else 1
            low = max(floor, round(low * scale.steps_per_epoch))
            high = max(low, round(high * scale.steps_per_epoch))
        elif p.scale == "sqrt_batch":
            low, high = low * lr_factor(space, scale), high * lr_factor(space, scale)
        if p.is_int:
            low, high = int(math.ceil(low)), int(math.floor(high))
            if low > high:
                raise ConfigError(f"{space.source}: {name}: no integer lies in [{p.low:g}, {p.high:g}]")
        for value in (low, high):
            _vet_value(p.field, value, f"{space.source}: {name} (scaled)")
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
        if p.field.is_list:
            out[name]["count"] = list(p.count)
    return out
