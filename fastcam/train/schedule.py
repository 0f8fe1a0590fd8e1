"""Learning-rate schedules: linear warmup, then multistep decay or cosine annealing.

The scheduler steps once per optimizer step (as in the reference). With ``t``
the number of scheduler steps taken so far, ``W`` the warmup steps, ``f`` the
warmup factor and ``base`` a group's start LR:

* warmup, ``0 <= t <= W`` (only when ``W > 0``): ``base * t / W`` if ``f == 1``
  (from 0 up to the start LR), else ``base * ((f - 1) * t / W + 1)`` (from the
  start LR up to ``base * f``) -- the formulas of ildoonet's
  ``GradualWarmupScheduler`` (pip ``warmup-scheduler``) and of the reference's
  ``utils/schedulers.py``;
* afterwards the decay schedule with peak ``base * f``, evaluated at
  ``e = t - W - 1``; without warmup (``W = 0``) the factor has no effect, the
  peak is ``base`` and ``e = t``, exactly torch's ``MultiStepLR`` /
  ``CosineAnnealingLR`` as the reference uses them. Multistep gives
  ``peak * decay_rate ** (number of milestones <= e)``, cosine gives
  ``eta_min + (peak - eta_min) * (1 + cos(pi * e / t_max)) / 2``.

Every LR is a closed form of ``t``, so a scheduler restored with
``load_state_dict`` continues bit-for-bit like an uninterrupted one.

Where this deliberately differs from the reference (mlcommons/hpc deepcam
``utils/schedulers.py``, ``MultiStepLRWarmup`` / ``CosineAnnealingLRWarmup``):

* the reference switches to its (chainable) decay phase at ``t = W``, which
  repeats the LR of ``t = W - 1``, so the peak LR ``base * f`` is never reached
  (with ``f = 1`` it plateaus at ``base * (W - 1) / W``); here the peak is
  reached at ``t = W``, as in ``GradualWarmupScheduler`` and the benchmark text;
* an earlier reference version read an undefined ``self.multiplier`` when
  ``f != 1`` (a crash); here ``f`` is used;
* the reference's multistep fires milestone ``m`` at ``t = m + W + 1`` (as
  here) but its cosine uses ``e = t - W``; here both use ``e = t - W - 1``, the
  convention of ``GradualWarmupScheduler``'s after-scheduler, so cosine runs one
  step later than the reference's;
* ``GradualWarmupScheduler`` (f > 1) uses the start LR instead of the peak for
  the first step after warmup (a known bug); here the schedule is continuous.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from fastcam.errors import ConfigError

SCHEDULE_TYPES = ("multistep", "cosine_annealing")
_ALIASES = {"cosine": "cosine_annealing"}
_KEYS = {
    "multistep": ({"milestones", "decay_rate"}, set()),
    "cosine_annealing": ({"t_max"}, {"eta_min"}),
}


class LinearWarmupLR(LRScheduler):
    """Linear warmup followed by a decay schedule given by :meth:`_decayed_lr`."""

    def __init__(
        self, optimizer: Optimizer, warmup_steps: int = 0, warmup_factor: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_steps = _check_warmup_steps(warmup_steps)
        self.warmup_factor = _check_warmup_factor(warmup_factor)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base_lr) for base_lr in self.base_lrs]

    def lr_at(self, step: int, base_lr: float) -> float:
        """The LR after ``step`` scheduler steps for a group whose start LR is ``base_lr``."""
        warmup, factor = self.warmup_steps, self.warmup_factor
        if warmup > 0 and step <= warmup:
            if factor == 1.0:
                return base_lr * (float(step) / warmup)
            return base_lr * ((factor - 1.0) * step / warmup + 1.0)
        if warmup == 0:
            # No warmup: the factor has no effect (the reference then builds a plain
            # torch MultiStepLR / CosineAnnealingLR from the start LR).
            return self._decayed_lr(base_lr, step)
        return self._decayed_lr(base_lr * factor, step - warmup - 1)

    def _decayed_lr(self, peak_lr: float, steps_after: int) -> float:
        raise NotImplementedError


class WarmupMultiStepLR(LinearWarmupLR):
    """Warmup, then ``peak * gamma ** (number of milestones <= steps after warmup)``."""

    def __init__(
        self, optimizer: Optimizer, milestones: Sequence[int], gamma: float,
        warmup_steps: int = 0, warmup_factor: float = 1.0, last_epoch: int = -1,
    ) -> None:
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, warmup_steps, warmup_factor, last_epoch)

    def _decayed_lr(self, peak_lr: float, steps_after: int) -> float:
        return peak_lr * self.gamma ** bisect.bisect_right(self.milestones, steps_after)


class WarmupCosineAnnealingLR(LinearWarmupLR):
    """Warmup, then cosine annealing from the peak to ``eta_min`` over ``t_max`` steps."""

    def __init__(
        self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0,
        warmup_steps: int = 0, warmup_factor: float = 1.0, last_epoch: int = -1,
    ) -> None:
        self.t_max = int(t_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, warmup_steps, warmup_factor, last_epoch)

    def _decayed_lr(self, peak_lr: float, steps_after: int) -> float:
        cosine = (1.0 + math.cos(math.pi * steps_after / self.t_max)) / 2.0
        return self.eta_min + (peak_lr - self.eta_min) * cosine


def canonical_schedule_type(schedule: Mapping[str, Any]) -> str:
    """``schedule["type"]`` in canonical form ("cosine" -> "cosine_annealing")."""
    if not isinstance(schedule, Mapping) or "type" not in schedule:
        raise ConfigError(f"LR schedule must be a mapping with a 'type', got {schedule!r}")
    kind = schedule["type"]
    kind = _ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in SCHEDULE_TYPES:
        raise ConfigError(
            f"unknown LR schedule type {schedule['type']!r}; allowed: "
            f"{', '.join(SCHEDULE_TYPES)} (or 'cosine')"
        )
    required, optional = _KEYS[kind]
    given = set(schedule) - {"type"}
    if required - given:
        raise ConfigError(f"LR schedule {kind!r} needs {sorted(required - given)}")
    if given - required - optional:
        raise ConfigError(
            f"LR schedule {kind!r} does not take {sorted(given - required - optional)}; "
            f"allowed keys: {sorted(required | optional)}"
        )
    return kind


def build_scheduler(
    optimizer: Optimizer,
    schedule: Mapping[str, Any],
    warmup_steps: int = 0,
    warmup_factor: float = 1.0,
) -> LRScheduler:
    """Return the scheduler for ``schedule`` (reference key names) with linear warmup.

    ``schedule`` is ``{"type": "multistep", "milestones": [1200], "decay_rate": 0.5}``
    or ``{"type": "cosine_annealing", "t_max": 9000, "eta_min": 0.0}``; milestones
    and ``t_max`` count optimizer steps after warmup. Raises ConfigError for bad values.
    """
    kind = canonical_schedule_type(schedule)
    if kind == "multistep":
        return WarmupMultiStepLR(
            optimizer,
            milestones=_check_milestones(schedule["milestones"]),
            gamma=_check_number("decay_rate", schedule["decay_rate"], minimum=0.0, strict=True),
            warmup_steps=warmup_steps,
            warmup_factor=warmup_factor,
        )
    return WarmupCosineAnnealingLR(
        optimizer,
        t_max=_check_int("t_max", schedule["t_max"], minimum=1),
        eta_min=_check_number("eta_min", schedule.get("eta_min", 0.0), minimum=0.0),
        warmup_steps=warmup_steps,
        warmup_factor=warmup_factor,
    )


def preview_learning_rates(
    start_lr: float, schedule: Mapping[str, Any], steps: int,
    warmup_steps: int = 0, warmup_factor: float = 1.0,
) -> list[float]:
    """The LR used by each of the first ``steps`` optimizer steps (for plots and checks)."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=start_lr)
    scheduler = build_scheduler(dummy, schedule, warmup_steps, warmup_factor)
    rates = []
    for _ in range(steps):
        rates.append(dummy.param_groups[0]["lr"])
        dummy.step()
        scheduler.step()
    return rates


def _check_warmup_steps(value: object) -> int:
    return _check_int("warmup_steps", value, minimum=0)


def _check_warmup_factor(value: object) -> float:
    return _check_number("warmup_factor", value, minimum=1.0)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"LR schedule {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_number(name: str, value: object, minimum: float, strict: bool = False) -> float:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > minimum if strict else value >= minimum)
    )
    if not ok:
        relation = ">" if strict else ">="
        raise ConfigError(
            f"LR schedule {name} must be a finite number {relation} {minimum}, got {value!r}"
        )
    return float(value)


def _check_milestones(value: object) -> list[int]:
    """Milestones as a list of ints, or the reference's space-separated string ("800 1200")."""
    items = value.split() if isinstance(value, str) else value
    try:
        milestones = [_parse_milestone(item) for item in items]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        milestones = []
    if not milestones:
        raise ConfigError(
            f"LR schedule milestones must be a non-empty list of integers >= 0, got {value!r}"
        )
    return milestones


def _parse_milestone(item: object) -> int:
    if isinstance(item, str):
        item = int(item)
    if isinstance(item, bool) or not isinstance(item, int) or item < 0:
        raise ValueError(item)
    return item
