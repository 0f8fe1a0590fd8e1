"""Trial parameters: sampled from the resolved space, applied to a config.

Optuna parameter names are the config names (``start_lr``,
``lr_schedule.t_max``, ...) with the values the config uses, so the trials
table reads as a list of runs. Milestones are the exception: a multistep
schedule samples ``lr_schedule.milestones.count`` and then
``lr_schedule.milestones.1`` ... ``.N``, which :func:`apply` sorts (equal ones
merged).

:func:`apply` builds a trial's Config from the optimized base and runs
:func:`fastcam.guard.check` on it, so no trial ever trains with a value a
compliant optimized run may not use.
"""

from __future__ import annotations

import copy
from typing import Any

from fastcam import guard
from fastcam.config import Config, Schedule
from .space import SCHEDULE_OF, ParamSpec

MILESTONE_COUNT = "lr_schedule.milestones.count"
# Sampling order: the schedule type decides which schedule parameters exist.
ORDER = ("optimizer", "start_lr", "weight_decay", "lr_warmup_steps", "lr_warmup_factor", "max_inter_threads",
         "local_batch_size", "lr_schedule.type", "lr_schedule.milestones", "lr_schedule.decay_rate",
         "lr_schedule.t_max", "lr_schedule.eta_min")


def suggest(trial, resolved: dict[str, ParamSpec], base: Config) -> dict[str, Any]:
    """Sample one trial's parameters (optuna ``Trial``); returns ``trial.params``."""
    schedule_type = base.hyperparameters.lr_schedule.type
    for name in ORDER:
        spec = resolved.get(name)
        if spec is None or SCHEDULE_OF.get(name, schedule_type) != schedule_type:
            continue
        if name == "lr_schedule.milestones":
            count = trial.suggest_categorical(MILESTONE_COUNT, list(spec.count))
            for i in range(1, count + 1):
                _suggest_one(trial, f"{name}.{i}", spec)
            continue
        value = _suggest_one(trial, name, spec)
        if name == "lr_schedule.type":
            schedule_type = value
    return dict(trial.params)


def _suggest_one(trial, name: str, spec: ParamSpec):
    if spec.choices is not None:
        return trial.suggest_categorical(name, list(spec.choices))
    if spec.is_int:
        return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
    return trial.suggest_float(name, float(spec.low), float(spec.high), log=spec.log)


def apply(base: Config, params: dict[str, Any]) -> Config:
    """``base`` with the trial's parameters set; validated and guard-checked."""
    config = copy.deepcopy(base)
    hp = config.hyperparameters
    schedule = hp.lr_schedule
    schedule_type = params.get("lr_schedule.type", schedule.type)
    if schedule_type != schedule.type:
        schedule = Schedule(type=schedule_type)  # that type's defaults for what the trial does not set
    milestones = [int(params[k]) for k in params if k.startswith("lr_schedule.milestones.") and k != MILESTONE_COUNT]
    if milestones:
        schedule.milestones = sorted(set(milestones))
    for key in ("decay_rate", "t_max", "eta_min"):
        if f"lr_schedule.{key}" in params:
            setattr(schedule, key, params[f"lr_schedule.{key}"])
    hp.lr_schedule = schedule
    for name in ("optimizer", "start_lr", "weight_decay", "lr_warmup_steps", "lr_warmup_factor", "local_batch_size"):
        if name in params:
            setattr(hp, name, params[name])
    if "max_inter_threads" in params:
        config.run.max_inter_threads = int(params["max_inter_threads"])
    config.validate()
    guard.check(config)
    return config


def recipe_params(recipe: Config, resolved: dict[str, ParamSpec], base: Config) -> dict[str, Any]:
    """A published recipe's values, exactly as published, for the names in the space.

    Issue 5 asks for the baseline hyperparameters and the optimized defaults
    themselves as the first trials: they anchor the search (the best trial can
    never be worse than the published recipes on this machine) and they are
    what a user compares against. A value a categorical parameter does not
    offer is left to the sampler; a number outside a range is kept.
    """
    hp, schedule = recipe.hyperparameters, recipe.hyperparameters.lr_schedule
    values: dict[str, Any] = {
        "optimizer": hp.optimizer, "start_lr": hp.start_lr, "weight_decay": hp.weight_decay,
        "lr_warmup_steps": hp.lr_warmup_steps, "lr_warmup_factor": hp.lr_warmup_factor,
        "max_inter_threads": recipe.run.max_inter_threads, "local_batch_size": hp.local_batch_size,
        "lr_schedule.type": schedule.type, "lr_schedule.decay_rate": schedule.decay_rate,
        "lr_schedule.t_max": schedule.t_max, "lr_schedule.eta_min": schedule.eta_min,
    }
    trial_type = schedule.type if "lr_schedule.type" in resolved else base.hyperparameters.lr_schedule.type
    out: dict[str, Any] = {}
    for name, spec in resolved.items():
        if name in SCHEDULE_OF and (SCHEDULE_OF[name] != trial_type or trial_type != schedule.type):
            continue  # not sampled for this schedule type, or the recipe has no value for it
        if name == "lr_schedule.milestones":
            if len(schedule.milestones) in spec.count:
                out[MILESTONE_COUNT] = len(schedule.milestones)
                for i, m in enumerate(schedule.milestones, start=1):
                    out[f"{name}.{i}"] = int(m)
            continue
        value = values[name]
        if spec.choices is not None and value not in spec.choices:
            continue
        out[name] = value
    return out


