"""The hyperparameter guard: what a compliant run may and may not change.

The rules class of every field is declared once in fastcam.config (see
fastcam.schema): ``run`` settings are free in every mode; in ``baseline`` mode
every hyperparameter equals the published baseline value and the execution is
the reference's; in ``optimized`` mode the ``mutable`` hyperparameters may
change, within their ``rules_range`` (spec/benchmark.md, "Mutable"), and the
``fixed`` ones must equal the baseline. ``open_division`` allows anything
(logged as ``submission_division`` open).

The guard raises :class:`GuardError` (exit code 2) naming the parameter, the
exact value given and the value required (``repr``: 0.0010000000001 is not
shown as 0.001). Tuning calls :func:`check_name` and :func:`check_range` to vet
a search space before any trial runs.
"""

from __future__ import annotations

import dataclasses

from fastcam import schema
from fastcam.config import Config, Hyperparameters, Optimizations, Schedule, baseline
from fastcam.errors import GuardError

OPEN_HINT = "(pass --open-division to run outside the rules)"


def mutable_names() -> tuple[str, ...]:
    """The hyperparameters (and run settings) an optimized run may change."""
    names = [n for n, p in schema.params(Hyperparameters) if p.rule == "mutable"]
    from fastcam.config import RunSettings

    return tuple(names + [n for n, p in schema.params(RunSettings) if p.tunable])


def check(config: Config) -> None:
    """Raise GuardError if ``config`` is not a compliant run of its mode."""
    if config.open_division:
        return
    reference = baseline()
    given, required = config.hyperparameters, reference.hyperparameters
    for name, p in schema.params(Hyperparameters):
        value, expected = getattr(given, name), getattr(required, name)
        if config.mode == "optimized" and p.rule == "mutable":
            if name == "lr_schedule":
                for part, pp in schema.params(Schedule):
                    check_range(part, getattr(value, part), pp)
            else:
                check_range(name, value, p)
        elif _differs(value, expected):
            raise GuardError(
                f"--{name} {_show(value)} is not allowed in {config.mode} mode: "
                f"the benchmark requires {_show(expected)} {OPEN_HINT}")
    if config.mode == "baseline":
        _check_reference_execution(config.optimizations)


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
    from fastcam.config import RunSettings

    for cls in (Hyperparameters, Schedule, RunSettings):
        try:
            return schema.param_of(cls, name)
        except KeyError:
            continue
    return None


def _check_reference_execution(given: Optimizations) -> None:
    reference = Optimizations()
    for f in dataclasses.fields(Optimizations):
        value, expected = getattr(given, f.name), getattr(reference, f.name)
        if value != expected:
            raise GuardError(
                f"--{f.name.replace('_', '-')} {_show(value)} is not allowed in baseline mode: "
                f"a baseline run uses {_show(expected)} (use --mode optimized) {OPEN_HINT}")


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
