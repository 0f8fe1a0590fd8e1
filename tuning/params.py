"""Trial parameters: sampled from the resolved space, applied to a config.

Optuna parameter names are the space's names (fastcam.tuning.fields: the
config field, or ``FIELD.PART`` of the LR schedule) with the values the
config uses, so the trials table reads as a list of runs. A list field (the
multistep schedule's steps) is the exception: it samples ``NAME.count`` and then
``NAME.1`` ... ``NAME.N``, which :func:`apply` sorts (equal ones merged).

:func:`apply` builds a trial's Config from the optimized base with one
validated ``Config.replace``; the guard runs once, when the trial trains
(``fastcam.train.train``), and once on best.yaml (fastcam.tuning.report).
"""

from __future__ import annotations

from typing import Any

from fastcam.config import Config

from .fields import Field, applies, configure, searchable
from .space import ParamSpec

COUNT = "count"  # NAME.count: how many items a list field samples


def suggest(trial, resolved: dict[str, ParamSpec], base: Config) -> dict[str, Any]:
    """Sample one trial's parameters (optuna ``Trial``); returns ``trial.params``.

    Fields are sampled in declaration order, so the schedule type is known
    before the parts that exist only for one type."""
    chosen: dict[str, Any] = {}
    for name, f in searchable().items():
        spec = resolved.get(name)
        if spec is None or not applies(f, chosen, base):
            continue
        if f.is_list:
            count = trial.suggest_categorical(f"{name}.{COUNT}", list(spec.count))
            for i in range(1, count + 1):
                _suggest_one(trial, f"{name}.{i}", spec)
            continue
        chosen[name] = _suggest_one(trial, name, spec)
    return dict(trial.params)


def _suggest_one(trial, name: str, spec: ParamSpec):
    if spec.choices is not None:
        return trial.suggest_categorical(name, list(spec.choices))
    if spec.is_int:
        return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
    return trial.suggest_float(name, float(spec.low), float(spec.high), log=spec.log)


def config_values(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna parameters -> the fields' config values (a list field's items sorted, equal ones merged)."""
    known = searchable()
    values: dict[str, Any] = {}
    items: dict[str, list] = {}
    for key, value in params.items():
        if key in known:
            values[key] = value
            continue
        name, _, index = key.rpartition(".")
        f = known.get(name)
        if f is None or not f.is_list:
            raise KeyError(f"{key}: not a parameter of the search space")
        if index != COUNT:
            items.setdefault(name, []).append(f.kind(value))
    for name, listed in items.items():
        values[name] = tuple(sorted(set(listed)))
    return values


def apply(base: Config, params: dict[str, Any]) -> Config:
    """``base`` with the trial's parameters set; validated (not guard-checked)."""
    return configure(base, config_values(params))


def recipe_params(recipe: Config, resolved: dict[str, ParamSpec], base: Config) -> dict[str, Any]:
    """A published recipe's values, exactly as published, for the names in the space.

    Issue 5 asks for the baseline hyperparameters and the optimized defaults
    themselves as the first trials: they anchor the search (the best trial can
    never be worse than the published recipes on this machine) and they are
    what a user compares against. A value a categorical parameter does not
    offer is left to the sampler; a number outside a range is kept.
    """
    known = searchable()
    # The schedule type the trial will have: the recipe's where the space searches it, else the base's.
    discriminators = {f.discriminator for f in known.values() if f.discriminator is not None}
    trial = {n: known[n].read(recipe if n in resolved else base) for n in discriminators}
    out: dict[str, Any] = {}
    for name, spec in resolved.items():
        f = known[name]
        if not applies(f, trial, base) or not _same_kind(f, trial, recipe):
            continue  # not sampled for this schedule type, or the recipe has no value for it
        value = f.read(recipe)
        if f.is_list:
            if len(value) in spec.count:
                out[f"{name}.{COUNT}"] = len(value)
                for i, item in enumerate(value, start=1):
                    out[f"{name}.{i}"] = f.kind(item)
            continue
        if spec.choices is not None and value not in spec.choices:
            continue
        out[name] = value
    return out


def _same_kind(f: Field, trial: dict[str, Any], recipe: Config) -> bool:
    """A part's recipe value only means something under the recipe's own schedule type."""
    if f.discriminator is None:
        return True
    return trial[f.discriminator] == searchable()[f.discriminator].read(recipe)
