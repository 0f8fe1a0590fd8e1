"""LR schedules: multistep / cosine annealing with linear warmup, and exact resumption."""

from __future__ import annotations

import io
import math

import pytest
import torch

from fastcam.errors import ConfigError
from fastcam.train.schedule import build_scheduler, preview_learning_rates

START_LR = 1e-3
MULTISTEP = {"type": "multistep", "milestones": [12], "decay_rate": 0.5}
COSINE = {"type": "cosine_annealing", "t_max": 20, "eta_min": 1e-5}


def cosine_closed_form(peak: float, eta_min: float, t_max: int, steps_after: int) -> float:
    return eta_min + (peak - eta_min) * (1 + math.cos(math.pi * steps_after / t_max)) / 2


def torch_reference_lrs(make_scheduler, steps: int) -> list[float]:
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=START_LR)
    scheduler = make_scheduler(dummy)
    rates = []
    for _ in range(steps):
        rates.append(dummy.param_groups[0]["lr"])
        dummy.step()
        scheduler.step()
    return rates


def test_multistep_decays_exactly_at_the_milestone() -> None:
    lrs = preview_learning_rates(START_LR, {**MULTISTEP, "milestones": [5, 9]}, 12)
    assert lrs[:5] == [START_LR] * 5
    assert lrs[5:9] == [START_LR * 0.5] * 4
    assert lrs[9:] == [START_LR * 0.25] * 3
    torch_lrs = torch_reference_lrs(
        lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 9], gamma=0.5), 12
    )
    assert lrs == pytest.approx(torch_lrs, rel=1e-12)


def test_milestones_accept_the_reference_string_form() -> None:
    assert preview_learning_rates(START_LR, {**MULTISTEP, "milestones": "3 5"}, 7) == \
        preview_learning_rates(START_LR, {**MULTISTEP, "milestones": [3, 5]}, 7)


@pytest.mark.parametrize("kind", ["cosine_annealing", "cosine"])
def test_cosine_follows_closed_form(kind: str) -> None:
    steps = 45  # beyond t_max: the cosine continues periodically, as torch's does
    lrs = preview_learning_rates(START_LR, {**COSINE, "type": kind}, steps)
    expected = [cosine_closed_form(START_LR, 1e-5, 20, t) for t in range(steps)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-18)
    assert lrs[20] == pytest.approx(1e-5)
    torch_lrs = torch_reference_lrs(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=1e-5), steps
    )
    assert lrs == pytest.approx(torch_lrs, rel=1e-9)


def test_warmup_factor_one_ramps_from_zero() -> None:
    lrs = preview_learning_rates(START_LR, MULTISTEP, 30, warmup_steps=8, warmup_factor=1.0)
    for t in (0, 2, 4, 8):
        assert lrs[t] == pytest.approx(START_LR * t / 8, rel=1e-12)
    # Peak held at t = W and W + 1; milestone m fires m steps later (t = m + W + 1).
    assert lrs[9:21] == pytest.approx([START_LR] * 12, rel=1e-12)
    assert lrs[21:] == pytest.approx([START_LR * 0.5] * 9, rel=1e-12)


def test_warmup_factor_above_one_ramps_from_start_lr_then_cosine() -> None:
    lrs = preview_learning_rates(START_LR, COSINE, 40, warmup_steps=10, warmup_factor=4.0)
    assert lrs[0] == pytest.approx(START_LR)
    assert lrs[5] == pytest.approx(START_LR * 2.5)
    assert lrs[10] == pytest.approx(START_LR * 4.0)
    for t in range(11, 40):
        expected = cosine_closed_form(4 * START_LR, 1e-5, 20, t - 11)
        assert lrs[t] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("schedule", [MULTISTEP, COSINE])
@pytest.mark.parametrize("factor", [1.0, 3.0])
def test_zero_warmup_steps_is_no_warmup(schedule: dict, factor: float) -> None:
    lrs = preview_learning_rates(START_LR, schedule, 25, warmup_steps=0, warmup_factor=factor)
    assert all(math.isfinite(lr) for lr in lrs)
    assert lrs == preview_learning_rates(START_LR, schedule, 25)
    assert lrs[0] == START_LR


def test_each_param_group_scales_from_its_own_start_lr() -> None:
    params = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD([{"params": params[:1], "lr": 1e-3}, {"params": params[1:], "lr": 4e-3}])
    scheduler = build_scheduler(opt, MULTISTEP, warmup_steps=4, warmup_factor=2.0)
    for _ in range(2):
        opt.step()
        scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([1.5e-3, 6e-3])


def run_training_steps(opt, scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("schedule, warmup", [(MULTISTEP, 6), (COSINE, 6), (COSINE, 0)])
def test_resume_from_state_dict_is_exact(schedule: dict, warmup: int) -> None:
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
    checkpoint = torch.load(buffer)

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
