"""LR schedules: the MLCommons reference's semantics over 3000 steps, and exact resumption.

Expected values are written here from the reference's documented behaviour
(fastcam/train/schedule.py's docstring: optimizer step ``i`` sees scheduler
count ``t = i + 1``; warmup for ``t < W``; from ``t = W`` the LR is chained, so
it plateaus at the LR of ``t = W - 1``; milestone ``m`` fires at
``t = m + W + 1``; cosine on ``e = t - W`` with restarts towards the start LR),
as closed forms, independently of the implementation. Without warmup the
reference uses torch's own schedulers, so there the comparison is bitwise.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from fastcam.errors import ConfigError
from fastcam.train.schedule import build_scheduler, preview_learning_rates

START_LR = 1e-3
STEPS = 3000
MULTISTEP = {"type": "multistep", "milestones": [1200, 2000], "decay_rate": 0.5}
COSINE = {"type": "cosine_annealing", "t_max": 900, "eta_min": 1e-5}


def warmup_lr(t: int, warmup: int, factor: float) -> float:
    if factor == 1.0:
        return START_LR * t / warmup
    return START_LR * ((factor - 1.0) * t / warmup + 1.0)


def plateau(warmup: int, factor: float) -> float:
    # The chain at t = W repeats the previous LR: that of t = W - 1, or the
    # start LR itself when W = 1 (the scheduler starts at t = 1).
    return warmup_lr(warmup - 1, warmup, factor) if warmup > 1 else START_LR


def expected_multistep(i: int, warmup: int, factor: float, milestones, gamma: float) -> float:
    t = i + 1
    if warmup == 0:
        return START_LR * gamma ** sum(t >= m for m in milestones)
    if t < warmup:
        return warmup_lr(t, warmup, factor)
    return plateau(warmup, factor) * gamma ** sum(t >= m + warmup + 1 for m in milestones)


def expected_cosine(i: int, warmup: int, factor: float, t_max: int, eta_min: float) -> float:
    if warmup == 0:
        return eta_min + (START_LR - eta_min) * (1 + math.cos(math.pi * i / t_max)) / 2
    t = i + 1
    if t < warmup:
        return warmup_lr(t, warmup, factor)
    e = t - warmup
    amplitude = plateau(warmup, factor) if e <= t_max else START_LR  # restarts climb back to the start LR
    return eta_min + (amplitude - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2


def torch_lrs(make_scheduler, steps: int) -> list[float]:
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=START_LR)
    for group in dummy.param_groups:
        group["initial_lr"] = START_LR
    scheduler = make_scheduler(dummy)
    rates = []
    for _ in range(steps):
        rates.append(dummy.param_groups[0]["lr"])
        dummy.step()
        scheduler.step()
    return rates


def test_baseline_halves_at_the_1200th_optimizer_step() -> None:
    lrs = preview_learning_rates(START_LR, {"type": "multistep", "milestones": [1200], "decay_rate": 0.5}, 1300)
    assert lrs[1198] == START_LR and lrs[1199] == START_LR * 0.5  # index 1199 is the 1200th step
    assert lrs[:1199] == [START_LR] * 1199 and lrs[1199:] == [START_LR * 0.5] * 101


def test_no_warmup_is_torchs_own_schedulers_bitwise() -> None:
    # The reference: MultiStepLR(..., last_epoch=0) and CosineAnnealingLR from -1.
    assert preview_learning_rates(START_LR, MULTISTEP, STEPS) == torch_lrs(
        lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [1200, 2000], 0.5, last_epoch=0), STEPS)
    assert preview_learning_rates(START_LR, COSINE, STEPS) == torch_lrs(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=900, eta_min=1e-5), STEPS)


@pytest.mark.parametrize("warmup", [0, 1, 7, 100])
@pytest.mark.parametrize("factor", [1.0, 2.0, 3.0])
def test_multistep_over_3000_steps(warmup: int, factor: float) -> None:
    lrs = preview_learning_rates(START_LR, MULTISTEP, STEPS, warmup_steps=warmup, warmup_factor=factor)
    expected = [expected_multistep(i, warmup, factor, [1200, 2000], 0.5) for i in range(STEPS)]
    assert lrs == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("warmup", [0, 1, 7, 100])
@pytest.mark.parametrize("factor", [1.0, 2.0, 3.0])
def test_cosine_over_3000_steps(warmup: int, factor: float) -> None:
    lrs = preview_learning_rates(START_LR, COSINE, STEPS, warmup_steps=warmup, warmup_factor=factor)
    expected = [expected_cosine(i, warmup, factor, 900, 1e-5) for i in range(STEPS)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_warmup_plateau_is_below_the_factor_peak() -> None:
    lrs = preview_learning_rates(START_LR, MULTISTEP, 20, warmup_steps=4, warmup_factor=3.0)
    assert lrs[:3] == pytest.approx([START_LR * 1.5, START_LR * 2.0, START_LR * 2.5])
    assert lrs[3:] == pytest.approx([START_LR * 2.5] * 17)  # base * (1 + (f - 1)(W - 1)/W), never 3x
    assert max(lrs) < 3.0 * START_LR


def test_milestones_accept_the_reference_string_form() -> None:
    assert preview_learning_rates(START_LR, {**MULTISTEP, "milestones": "3 5"}, 7) == \
        preview_learning_rates(START_LR, {**MULTISTEP, "milestones": [3, 5]}, 7)


def test_cosine_alias() -> None:
    assert preview_learning_rates(START_LR, {**COSINE, "type": "cosine"}, 50) == \
        preview_learning_rates(START_LR, COSINE, 50)


def test_each_param_group_scales_from_its_own_start_lr() -> None:
    params = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD([{"params": params[:1], "lr": 1e-3}, {"params": params[1:], "lr": 4e-3}])
    scheduler = build_scheduler(opt, MULTISTEP, warmup_steps=4, warmup_factor=2.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.25e-3, 5e-3])  # t = 1
    for _ in range(2):
        opt.step()
        scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([1.75e-3, 7e-3])


def run_training_steps(opt, scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("schedule, warmup", [(MULTISTEP, 6), (COSINE, 6), (COSINE, 0), (MULTISTEP, 0)])
def test_resume_from_state_dict_is_exact(schedule: dict, warmup: int) -> None:
    schedule = {**schedule, "milestones": [10]} if schedule["type"] == "multistep" else {**schedule, "t_max": 12}

    def fresh():
        param = torch.zeros(2, requires_grad=True)
        param.grad = torch.ones(2)
        opt = torch.optim.AdamW([param], lr=START_LR, eps=1e-6)
        return opt, build_scheduler(opt, schedule, warmup_steps=warmup, warmup_factor=2.0)

    opt, scheduler = fresh()
    uninterrupted = run_training_steps(opt, scheduler, 40)

    opt, scheduler = fresh()
    first_part = run_training_steps(opt, scheduler, 17)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    opt, scheduler = fresh()
    opt.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    second_part = run_training_steps(opt, scheduler, 23)
    assert first_part + second_part == uninterrupted


@pytest.mark.parametrize("schedule, warmup_steps, warmup_factor, message", [
    (MULTISTEP, 0, 0.5, "warmup_factor"),
    (MULTISTEP, -1, 1.0, "warmup_steps"),
    (MULTISTEP, 2.5, 1.0, "warmup_steps"),
    ({"type": "linear"}, 0, 1.0, "'linear'"),
    ({"type": "multistep", "milestones": [10]}, 0, 1.0, "decay_rate"),
    ({**MULTISTEP, "milestones": []}, 0, 1.0, "milestones"),
    ({**MULTISTEP, "milestones": "ten"}, 0, 1.0, "milestones"),
    ({**MULTISTEP, "decay_rate": 0.0}, 0, 1.0, "decay_rate"),
    ({**COSINE, "t_max": 0}, 0, 1.0, "t_max"),
    ({**COSINE, "tmax": 5}, 0, 1.0, "tmax"),
    ("multistep", 0, 1.0, "mapping"),
])
def test_bad_schedule_config_raises(schedule, warmup_steps, warmup_factor, message: str) -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=START_LR)
    with pytest.raises(ConfigError, match=message):
        build_scheduler(opt, schedule, warmup_steps=warmup_steps, warmup_factor=warmup_factor)
