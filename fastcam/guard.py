"""The guard: what a compliant run of its run type may and may not change.

The rules are data: the config's ``rules`` profile (fastcam.rules, default
``esif-2025-12``, the published DeepCAM README) gives the baseline
hyperparameters, which of them an optimized run may change and within which
bounds, and the precision each run type may compute in; the schema's rules
class (fastcam.schema) adds the bounds every compliant run keeps.

- ``baseline``: every hyperparameter equals the profile's baseline, and the
  execution is the reference's (precision as the profile's baseline computes:
  fp32 under the ESIF-HPC-4 README, AMP under the January 2026 draft);
- ``ported``: the baseline's hyperparameters; the execution a new architecture
  needs may change (device, memory format, compile, loader, fused kernels),
  precision only where the profile allows it ("floating point
  precision-related optimizations are not allowed unless specifically stated
  otherwise", ESIF-HPC-4 top-level rules);
- ``optimized``: the profile's mutable hyperparameters may change within its
  bounds; every other one equals the baseline;
- ``open_division``: anything goes (logged as ``submission_division`` open).

A refusal is :class:`GuardError` (exit code 2), one line naming the
parameter, the exact value given (``repr``) and what the rules require.
Tuning calls :func:`check_name` and :func:`check_range` to vet a search space.
"""

from __future__ import annotations

import dataclasses

from fastcam import schema
from fastcam.config import CACHED_LOADERS, Config, Hyperparameters, Optimizations, RunSettings, Schedule
from fastcam.errors import ConfigError, GuardError

OPEN_HINT = "(pass --open-division to run outside the rules)"


def mutable_names() -> tuple[str, ...]:
    """The hyperparameters (and run settings) an optimized run may change (schema)."""
    names = [n for n, p in schema.params(Hyperparameters) if p.rule == "mutable"]
    return tuple(names + [n for n, p in schema.params(RunSettings) if p.tunable])


def check(config: Config) -> None:
    """Raise GuardError if ``config`` is not a compliant run of its mode."""
    if config.open_division:
        return
    from fastcam import rules

    profile = rules.load(config.rules)
    if config.mode not in profile.run_types:
        raise GuardError(f"rules {profile.name} define no {config.mode} run (run types: "
                         f"{', '.join(profile.run_types)})")
    given, required = config.hyperparameters, profile.hyperparameters()
    derived = _check_global_batch(config, profile)
    for name, p in schema.params(Hyperparameters):
        value, expected = getattr(given, name), getattr(required, name)
        if name in derived:
            continue
        if name == "logging_frequency" and profile.per_step_logging:
            # Step-time runs (esif-2026-05 Scenario 1) log every step in every run
            # type; logging does not change the trajectory.
            check_range(name, value, p)
            continue
        if config.mode == "optimized" and profile.is_mutable(name):
            _check_mutable(profile, name, value, p)
        elif _differs(value, expected):
            raise GuardError(
                f"--{name} {_show(value)} is not allowed in {_a(config.mode)} run under rules {profile.name}: "
                f"it requires {_show(expected)} {OPEN_HINT}")
    if config.mode == "baseline":
        _check_reference_execution(config.optimizations, profile)
    _check_precision(config, profile)


def _check_global_batch(config: Config, profile) -> set[str]:
    """With ``--global_batch_size`` the local batch is derived after wire-up
    (:func:`resolve_global_batch`): refuse a G the profile does not allow and a
    local batch given as well; return the names checked later, not here."""
    global_batch = config.run.global_batch_size
    if global_batch is None:
        return set()
    if profile.global_batch_size is not None and global_batch != profile.global_batch_size:
        raise GuardError(f"--global_batch_size {global_batch} is not allowed under rules {profile.name}: "
                         f"it fixes the global batch at {profile.global_batch_size} {OPEN_HINT}")
    _check_local_batch_not_given(config)
    return {"local_batch_size"}


def _check_local_batch_not_given(config: Config) -> None:
    from fastcam.config import recipe

    default = recipe(config.mode, config.rules).hyperparameters.local_batch_size
    if config.hyperparameters.local_batch_size != default:
        raise GuardError(f"--global_batch_size {config.run.global_batch_size} and --local_batch_size "
                         f"{config.hyperparameters.local_batch_size} both set the batch: give one of them")


def resolve_global_batch(config: Config, world_size: int) -> Config:
    """``config`` with the local batch that ``--global_batch_size G`` gives on
    ``world_size`` ranks (``config`` itself without G): G / (ranks x gradient
    accumulation), refused with one line where it does not divide, where
    accumulation would be needed and the profile forbids it, or where the run
    type fixes the local batch and G is not that batch x ranks."""
    global_batch = config.run.global_batch_size
    if global_batch is None:
        return config
    accumulation = config.hyperparameters.gradient_accumulation_frequency
    if config.open_division:
        _check_local_batch_not_given(config)
        if global_batch % (world_size * accumulation):
            raise GuardError(f"--global_batch_size {global_batch} does not divide over {world_size} ranks x "
                             f"{accumulation} accumulation steps")
        local = global_batch // (world_size * accumulation)
        return config.replace(hyperparameters={"local_batch_size": local})
    from fastcam import rules

    profile = rules.load(config.rules)
    _check_global_batch(config, profile)
    try:
        local = profile.local_batch_for(world_size, accumulation, global_batch)
    except ConfigError as err:
        raise GuardError(f"--global_batch_size: {err}") from None
    fixed_local = profile.baseline["local_batch_size"]
    free = profile.global_batch_size is not None or (
        config.mode == "optimized" and profile.is_mutable("local_batch_size"))
    if not free and local != fixed_local:
        raise GuardError(
            f"--global_batch_size {global_batch} gives local batch {local} on {world_size} ranks; "
            f"{_a(config.mode)} run under rules {profile.name} keeps local batch {fixed_local} "
            f"(global batch {fixed_local * world_size * accumulation} here) {OPEN_HINT}")
    if config.mode == "optimized" and profile.is_mutable("local_batch_size"):
        profile.check_value("local_batch_size", local)
    return config.replace(hyperparameters={"local_batch_size": local})


def _check_mutable(profile, name: str, value, p: schema.Param) -> None:
    if name == "lr_schedule":
        for part, pp in schema.params(Schedule):
            if part in value.as_dict():
                check_range(part, getattr(value, part), pp)
                if f"lr_schedule.{part}" in profile.mutable:
                    profile.check_value(f"lr_schedule.{part}", getattr(value, part))
        return
    check_range(name, value, p)
    profile.check_value(name, value)


def _check_precision(config: Config, profile) -> None:
    """The precision the run will compute in, and the stage cache's dtype, against
    the profile's policy for the run type."""
    opt = config.optimizations
    precision = opt.precision
    if precision == "auto":
        from fastcam.accelerator import resolve_device
        from fastcam.train.execution import auto_precision  # (tests fake it there)

        precision = auto_precision(resolve_device(config.run.device))
    allowed = profile.precision[config.mode]
    rule = ("ESIF-HPC-4: floating point precision-related optimizations are not allowed unless "
            "the benchmark README states otherwise") if allowed == ("fp32",) else f"rules {profile.name}"
    if not profile.allows_precision(config.mode, precision):
        shown = precision if opt.precision != "auto" else f"auto ({precision} on this device)"
        raise GuardError(f"--precision {shown} is not allowed in {_a(config.mode)} run under rules {profile.name} "
                         f"({rule}); allowed: {', '.join(allowed)} {OPEN_HINT}")
    if opt.loader in CACHED_LOADERS and not profile.allows_stage_dtype(config.mode, opt.stage_dtype):
        raise GuardError(f"--loader {opt.loader} with --stage_dtype {opt.stage_dtype} stores the inputs as "
                         f"{opt.stage_dtype}, a precision change not allowed in {_a(config.mode)} run under rules "
                         f"{profile.name} ({rule}): use --stage_dtype fp32 {OPEN_HINT}")


def check_name(name: str) -> None:
    """Refuse a hyperparameter name a compliant optimized run may not change
    (``lr_schedule.PART`` and the bare schedule parts are parts of lr_schedule)."""
    base, _, part = name.partition(".")
    schedule_parts = {n for n, _ in schema.params(Schedule)}
    if (base == "lr_schedule" and (not part or part in schedule_parts)) or (not part and base in schedule_parts):
        return
    if base not in mutable_names() or part:
        known = {n for n, _ in schema.params(Hyperparameters)}
        why = "fixed by the benchmark" if base in known and not part else "not a hyperparameter"
        raise GuardError(f"{name} is {why} and cannot be tuned; mutable: {', '.join(sorted(mutable_names()))}")


def check_range(name: str, value, p: schema.Param | None = None) -> None:
    """Refuse a mutable value outside what the rules allow (and the field's
    own valid range)."""
    if p is None:
        p = _param(name)
    if p is None or isinstance(value, (str, tuple, list, Schedule)):
        return
    # The rules' bound where they give one, else the field's own valid bound.
    low, low_open = (p.rules_range[0], False) if p.rules_range[0] is not None else (p.low, p.low_exclusive)
    high, high_open = (p.rules_range[1], False) if p.rules_range[1] is not None else (p.high, p.high_exclusive)
    if low is not None and (value <= low if low_open else value < low):
        bound = f"{'>' if low_open else '>='} {low!r}"
    elif high is not None and (value >= high if high_open else value > high):
        bound = f"{'<' if high_open else '<='} {high!r}"
    else:
        return
    raise GuardError(f"{name} {_show(value)} is outside the allowed range: it must be {bound}")


def _param(name: str) -> schema.Param | None:
    for cls in (Hyperparameters, Schedule, RunSettings):
        try:
            return schema.param_of(cls, name)
        except KeyError:
            continue
    return None


def _check_reference_execution(given: Optimizations, profile) -> None:
    """A baseline run executes as the reference does; its precision is the
    profile's to judge, and staging where the profile's baseline stages."""
    reference = Optimizations()
    free = {"precision"} | ({"loader"} if profile.staging_allowed else set())
    for f in dataclasses.fields(Optimizations):
        value, expected = getattr(given, f.name), getattr(reference, f.name)
        if f.name not in free and value != expected:
            raise GuardError(
                f"--{f.name.replace('_', '-')} {_show(value)} is not allowed in a baseline run: "
                f"a baseline run uses {_show(expected)} (use --mode ported or optimized) {OPEN_HINT}")


def _a(mode: str) -> str:
    return f"an {mode}" if mode[0] in "aeiou" else f"a {mode}"


def _differs(value, expected) -> bool:
    if isinstance(value, Schedule):
        return value.as_dict() != expected.as_dict()
    return value != expected


def _show(value) -> str:
    if isinstance(value, Schedule):
        return ",".join(f"{k}={_show(v)}" for k, v in value.as_dict().items())
    if isinstance(value, (list, tuple)):
        return " ".join(_show(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)
