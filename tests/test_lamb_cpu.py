"""fastcam.train.lamb_cpu.FusedCpuLamb (torch's fused CPU Adam kernel + LAMB's
trust ratio) against fastcam.train.lamb.Lamb (the apex transcription), with the
same cases as the Triton LAMB: changing and tensor LRs, a zero tensor, an
undecayed group, a GradScaler with overflow steps, checkpoints both ways."""

from __future__ import annotations

import pytest
import torch
from lamb_cases import (
    DECAYED,
    OVERFLOW_STEPS,
    ZERO_START,
    assert_same_state,
    checkpoint_round_trip,
    grads_for,
    groups_of,
    make_params,
    run_scaled,
)

from fastcam.train.lamb import Lamb
from fastcam.train.lamb_cpu import FusedCpuLamb, fused_cpu_lamb_can_run
from fastcam.train.optim import build_optimizer, optimizer_implementation


def test_matches_reference_over_steps_with_changing_lr() -> None:
    params, ref_params = make_params(), make_params()
    ours = FusedCpuLamb(groups_of(params), lr=1e-3)
    ref = Lamb(groups_of(ref_params), lr=1e-3)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s)) for o in (ours, ref)]
    for step in range(6):
        for i, (p, q, g) in enumerate(zip(params, ref_params, grads_for(step))):
            if step == 2 and i == 0:
                p.grad = q.grad = None  # no gradient: the tensor is left alone
            else:
                # A contiguous gradient for the channels-last parameter: copied
                # to the parameter's layout (the kernel walks raw memory).
                p.grad, q.grad = g.clone(), g.clone()
        kept = params[0].detach().clone()
        ours.step()
        ref.step()
        if step == 2:
            assert torch.equal(params[0], kept)
        for s in schedules:
            s.step()
        assert_same_state(ours, ref, params, ref_params)
    assert float(ours.param_groups[0]["step"]) == 6
    assert params[ZERO_START].abs().sum() > 0  # ratio 1 for a zero tensor
    assert not torch.equal(params[len(DECAYED)], make_params()[len(DECAYED)])


def test_tensor_lr_in_place_updates() -> None:
    params, ref_params = make_params(), make_params()
    lr = torch.tensor(1e-2)
    ours = FusedCpuLamb(groups_of(params, lr=lr), lr=lr)
    ref = Lamb(groups_of(ref_params, lr=1e-2), lr=1e-2)
    for step in range(3):
        for p, q, g in zip(params, ref_params, grads_for(step)):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        ours.param_groups[0]["lr"].fill_(5e-3)  # as torch's schedulers update a tensor LR
        ref.param_groups[0]["lr"] = 5e-3
    assert_same_state(ours, ref, params, ref_params)


def test_grad_scaler_overflow_steps_are_skipped_like_the_reference() -> None:
    steps = 5
    ours, ours_opt, ours_hist, reads = run_scaled(lambda g: FusedCpuLamb(g, lr=1e-2),
                                                  torch.float32, steps, OVERFLOW_STEPS,
                                                  count_reads=True)
    ref, ref_opt, _, _ = run_scaled(lambda g: Lamb(g, lr=1e-2), torch.float32, steps,
                                    OVERFLOW_STEPS)
    assert reads == []  # no scalar read in GradScaler.step + update with this optimizer
    for step in OVERFLOW_STEPS:
        (p_before, m_before, steps_before, _), _ = ours_hist[step]
        (p_next, m_next, steps_next, _), _ = ours_hist[step + 1]
        assert steps_next == steps_before
        assert all(torch.equal(a, b) for a, b in zip(p_before, p_next))  # decay did not apply
        for key in m_before:
            assert all(torch.equal(a, b) for a, b in zip(m_before[key], m_next[key]))
    assert [float(g["step"]) for g in ours_opt.param_groups] == [3.0, 3.0]
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-9)
        for key in ours_opt.state[p]:
            torch.testing.assert_close(ours_opt.state[p][key], ref_opt.state[q][key],
                                       rtol=1e-5, atol=1e-7)


def test_checkpoints_move_between_fused_and_foreach_lamb() -> None:
    resumed, ref, params, ref_params = checkpoint_round_trip(lambda groups: FusedCpuLamb(groups, lr=1e-3))
    assert_same_state(resumed, ref, params, ref_params)


def test_factory_picks_it_for_fused_lamb_on_float32_cpu_parameters() -> None:
    fused = build_optimizer(make_params(), "LAMB", lr=1e-3, weight_decay=0.01, fused=True)
    assert isinstance(fused, FusedCpuLamb)
    assert optimizer_implementation(fused) == "LAMB (torch fused-Adam CPU kernel)"
    plain = build_optimizer(make_params(), "LAMB", lr=1e-3, weight_decay=0.01, fused=False)
    assert type(plain) is Lamb
    # float16 parameters keep float32 moments in Lamb; the kernel cannot: not picked.
    low = build_optimizer(make_params(torch.float16), "LAMB", lr=1e-3, fused=True)
    assert type(low) is Lamb
    assert not fused_cpu_lamb_can_run(make_params(torch.bfloat16))
    assert not fused_cpu_lamb_can_run([torch.zeros(4, 4)[:, :2]])  # not dense


@pytest.mark.parametrize("option", ["bias_correction", "grad_averaging"])
def test_refuses_what_the_kernel_cannot_compute(option: str) -> None:
    params = make_params()
    opt = FusedCpuLamb(params, **{option: False})
    for p, g in zip(params, grads_for(0)):
        p.grad = g
    with pytest.raises(RuntimeError, match=option):
        opt.step()
