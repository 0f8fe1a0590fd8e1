"""Learning-rate schedules with the MLCommons DeepCAM reference's semantics.

The scheduler steps once per optimizer step, as in the reference
(``driver/trainer.py``: ``optimizer.step()`` then ``scheduler.step()``). The
reference (``utils/optimizer_helpers.py::get_lr_schedule`` with
``utils/schedulers.py`` of mlcommons/hpc deepcam) builds, for a fresh run, with
``initial_lr`` set to the start LR in every group:

* no warmup, multistep: torch's ``MultiStepLR(..., last_epoch=0)``. Starting
  at 0 instead of -1 means the scheduler has already counted one step before
  the first optimizer step, so milestone ``m`` takes effect at the ``m``-th
  optimizer step (index ``m - 1``): the baseline halves its LR at step 1200.
* no warmup, cosine: torch's ``CosineAnnealingLR`` from ``last_epoch=-1``:
  optimizer step ``i`` (0-based) uses ``eta_min + (base - eta_min)(1 + cos(pi i / t_max)) / 2``.
* warmup (``W > 0`` steps, factor ``f``), either type, from ``last_epoch=0``:
  with ``t`` the scheduler's count (optimizer step ``i`` uses ``t = i + 1``),
  ``t < W`` is linear warmup, ``base * t / W`` if ``f == 1`` else
  ``base * ((f - 1) t / W + 1)``; from ``t = W`` on the LR is *chained* (each
  step scales the previous step's LR), so it first repeats the LR of
  ``t = W - 1``: the plateau is ``base * (1 + (f - 1)(W - 1)/W)`` (with
  ``f == 1``: ``base * (W - 1)/W``), never ``base * f``. Multistep then
  multiplies by ``decay_rate`` at ``t = m + W + 1`` for each milestone ``m``;
  cosine applies torch's chainable cosine step with ``e = t - W``, and past
  ``t_max`` climbs back by ``(base - eta_min)(1 - cos(pi / t_max)) / 2`` per
  restart step -- towards ``base`` (the start LR), not the plateau.

fastcam reproduces these LRs bit for bit (same float operations in the same
order; tests/test_schedule.py pins them), because NVIDIA's results and the
reference convergence points were produced with them and a logged
``scheduler_lr_warmup_*`` value must mean what it meant there. The chained
LRs live in the optimizer's groups and the scheduler's ``last_epoch``, both
saved in a checkpoint, so a restored scheduler continues bit for bit.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR

from fastcam.errors import ConfigError

SCHEDULE_TYPES = ("multistep", "cosine_annealing")
_ALIASES = {"cosine": "cosine_annealing"}
_KEYS = {
    "multistep": ({"milestones", "decay_rate"}, set()),
    "cosine_annealing": ({"t_max"}, {"eta_min"}),
}


class _ReferenceWarmup(LRScheduler):
    """Linear warmup for ``t < W``, then a chained decay (:meth:`_decay`)."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, warmup_factor: float, last_epoch: int) -> None:
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, minimum=1)
        self.warmup_factor = _check_number("warmup_factor", warmup_factor, minimum=1.0)
        # The reference multiplies by a precomputed slope (1/W), not divides by W:
        # the two round differently, and bitwise identity needs its order.
        self.warmup_slope = 1.0 / float(self.warmup_steps)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        t = self.last_epoch
        if t >= self.warmup_steps:
            return self._decay(t)
        if self.warmup_factor == 1.0:
            return [base * (float(t) * self.warmup_slope) for base in self.base_lrs]
        return [base * ((self.warmup_factor - 1.0) * float(t) * self.warmup_slope + 1.0) for base in self.base_lrs]

    def _current(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _decay(self, t: int) -> list[float]:
        raise NotImplementedError


class ReferenceWarmupMultiStepLR(_ReferenceWarmup):
    """Warmup, then ``decay_rate`` applied at ``t = m + W + 1`` for each milestone ``m``."""

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float, warmup_steps: int,
                 warmup_factor: float = 1.0, last_epoch: int = 0) -> None:
        self.milestones = Counter(int(m) + int(warmup_steps) + 1 for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, warmup_steps, warmup_factor, last_epoch)

    def _decay(self, t: int) -> list[float]:
        if t not in self.milestones:
            return self._current()
        return [lr * self.gamma ** self.milestones[t] for lr in self._current()]


class ReferenceWarmupCosineLR(_ReferenceWarmup):
    """Warmup, then torch's chainable cosine step on ``e = t - W``."""

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float, warmup_steps: int,
                 warmup_factor: float = 1.0, last_epoch: int = 0) -> None:
        self.t_max = int(t_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, warmup_steps, warmup_factor, last_epoch)

    def _decay(self, t: int) -> list[float]:
        e, t_max, eta_min = t - self.warmup_steps, self.t_max, self.eta_min
        if e == 0:
            return self._current()
        if (e - 1 - t_max) % (2 * t_max) == 0:  # restart: climb back towards the start LR
            rise = (1 - math.cos(math.pi / t_max)) / 2
            return [lr + (base - eta_min) * rise for lr, base in zip(self._current(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max))
        return [ratio * (lr - eta_min) + eta_min for lr in self._current()]


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
    """The reference's scheduler for ``schedule`` (reference key names) with its warmup.

    ``schedule`` is ``{"type": "multistep", "milestones": [1200], "decay_rate": 0.5}``
    or ``{"type": "cosine_annealing", "t_max": 9000, "eta_min": 0.0}``. Sets
    every group's ``initial_lr`` to its current LR first, as the reference does.
    Raises ConfigError for bad values.
    """
    kind = canonical_schedule_type(schedule)
    warmup_steps = _check_warmup_steps(warmup_steps)
    warmup_factor = _check_warmup_factor(warmup_factor)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    if kind == "multistep":
        milestones = _check_milestones(schedule["milestones"])
        gamma = _check_number("decay_rate", schedule["decay_rate"], minimum=0.0, strict=True)
        if warmup_steps == 0:
            return MultiStepLR(optimizer, milestones=milestones, gamma=gamma, last_epoch=0)
        return ReferenceWarmupMultiStepLR(optimizer, milestones, gamma, warmup_steps, warmup_factor)
    t_max = _check_int("t_max", schedule["t_max"], minimum=1)
    eta_min = _check_number("eta_min", schedule.get("eta_min", 0.0), minimum=0.0)
    if warmup_steps == 0:
        return CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)
    return ReferenceWarmupCosineLR(optimizer, t_max, eta_min, warmup_steps, warmup_factor)


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
