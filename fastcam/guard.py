"""The hyperparameter guard: what a compliant run may and may not change.

Rules (../shared/spec/benchmark.md, "Baseline run parameters" and "Mutable"):

- ``baseline`` mode: every hyperparameter equals the published baseline value
  and every optimization is off; only settings that do not change the training
  trajectory (paths, run tag, seed, wire-up, device, loader workers,
  ``max_epochs``, ``target_iou``) are free. They live in ``Config.run``.
- ``optimized`` mode: the MUTABLE hyperparameters and the local batch size may
  change; the FIXED ones must equal the baseline; other hyperparameters that
  the rules do not list as mutable (betas, eps, input channels) stay fixed.
  Mutable values must still lie in the ranges the rules allow.
- ``open_division``: anything goes (logged as ``submission_division`` open).

The guard raises :class:`GuardError` (exit code 2) naming the parameter, the
value given and the value required. Tuning reuses ``check_name`` and
``check_range`` to vet a search space before any trial runs.
"""

from __future__ import annotations

from fastcam.config import Config, Hyperparameters, baseline
from fastcam.errors import GuardError

MUTABLE = frozenset({
    "optimizer", "start_lr", "lr_schedule", "lr_warmup_steps", "lr_warmup_factor",
    "weight_decay", "max_inter_threads", "local_batch_size",
})
# Fixed by name in the rules; the rest of Hyperparameters is fixed because it
# is not listed as mutable.
FIXED = frozenset({"save_frequency", "gradient_accumulation_frequency", "logging_frequency", "batchnorm_group_size"})
ALWAYS_FIXED = frozenset(f for f in Hyperparameters.__dataclass_fields__ if f not in MUTABLE)

OPEN_HINT = "(pass --open-division to run outside the rules)"


def check(config: Config) -> None:
    """Raise GuardError if ``config`` is not a compliant run of its mode."""
    if config.open_division:
        return
    reference = baseline()
    given, required = config.hyperparameters, reference.hyperparameters
    free = set() if config.mode == "baseline" else MUTABLE
    for name in Hyperparameters.__dataclass_fields__:
        if name in free:
            continue
        value, expected = getattr(given, name), getattr(required, name)
        if _differs(value, expected):
            raise GuardError(
                f"{_flag(name)} {_show(value)} is not allowed in {config.mode} mode: "
                f"the benchmark requires {_show(expected)} {OPEN_HINT}")
    if config.mode == "baseline":
        _check_optimizations_off(config)
    else:
        check_range("lr_warmup_factor", given.lr_warmup_factor)
        if given.lr_schedule.type == "multistep":
            check_range("decay_rate", given.lr_schedule.decay_rate)
        check_range("start_lr", given.start_lr)
        check_range("weight_decay", given.weight_decay)


def check_name(name: str) -> None:
    """Refuse a hyperparameter name a compliant optimized run may not change."""
    base = name.split(".")[0]
    if base in {"decay_rate", "milestones", "t_max", "eta_min", "type"}:
        return  # parts of lr_schedule
    if base not in MUTABLE:
        why = "fixed by the benchmark" if base in ALWAYS_FIXED else "not a hyperparameter"
        raise GuardError(f"{name} is {why} and cannot be tuned; mutable: {', '.join(sorted(MUTABLE))}")


# Ranges the rules allow for mutable values (inclusive bounds; None: open).
RANGES = {
    "lr_warmup_factor": (1.0, None),
    "decay_rate": (None, 1.0),
    "start_lr": (0.0, None),
    "weight_decay": (0.0, None),
    "lr_warmup_steps": (0, None),
    "eta_min": (0.0, None),
}


def check_range(name: str, value: float) -> None:
    low, high = RANGES.get(name, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bound = f">= {low}" if low is not None and value < low else f"<= {high}"
        raise GuardError(f"{name} {_show(value)} is outside the allowed range: it must be {bound}")


def _check_optimizations_off(config: Config) -> None:
    from fastcam.config import Optimizations

    off = Optimizations()
    for name in Optimizations.__dataclass_fields__:
        value, expected = getattr(config.optimizations, name), getattr(off, name)
        if value != expected:
            raise GuardError(
                f"{name.replace('_', '-')} {_show(value)} is not allowed in baseline mode: "
                f"a baseline run uses {_show(expected)} (use --mode optimized) {OPEN_HINT}")


def _differs(value, expected) -> bool:
    if hasattr(value, "as_dict"):
        return value.as_dict() != expected.as_dict()
    if isinstance(expected, float) or (isinstance(expected, list) and expected and isinstance(expected[0], float)):
        a = value if isinstance(value, list) else [value]
        b = expected if isinstance(expected, list) else [expected]
        return len(a) != len(b) or any(abs(x - y) > 1e-12 * max(abs(x), abs(y), 1e-30) for x, y in zip(a, b))
    return value != expected


def _flag(name: str) -> str:
    return f"--{name}"


def _show(value) -> str:
    if hasattr(value, "as_dict"):
        return ",".join(f"{k}={_show(v)}" for k, v in value.as_dict().items())
    if isinstance(value, list):
        return " ".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
