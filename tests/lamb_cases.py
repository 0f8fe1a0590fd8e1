"""Shared LAMB test cases: parameters, gradients and a GradScaler run, used by
the Triton (test_triton_lamb.py) and CPU fused (test_lamb_cpu.py) LAMB tests
against the torch-foreach reference (fastcam.train.lamb.Lamb)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Odd sizes: 37 (3 chunks, last partial), 65 (5 chunks), 1, 81 (4-D, channels-last).
DECAYED = [(37,), (5, 13), (1,), (3, 3, 3, 3)]
UNDECAYED = [(11,), (2, 7)]
SHAPES = DECAYED + UNDECAYED
ZERO_START = 1  # index of a decayed tensor that starts all zero: trust ratio 1


def make_params(dtype=torch.float32) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for i, shape in enumerate(SHAPES):
        value = torch.randn(shape, generator=gen)
        if i == ZERO_START:
            value.zero_()
        if len(shape) == 4:
            value = value.to(memory_format=torch.channels_last)
        params.append(torch.nn.Parameter(value.to(dtype)))
    params.append(torch.nn.Parameter(torch.zeros(0, dtype=dtype)))  # empty: nothing to do
    return params


def groups_of(params, lr=1e-3):
    n = len(DECAYED)
    return [{"params": params[:n], "weight_decay": 0.01},
            {"params": params[n:], "weight_decay": 0.0, "lr": 2 * lr}]


def grads_for(step: int, dtype=torch.float32) -> list[torch.Tensor]:
    # Alternate global norms above 1 (clipping engages) and below it.
    scale = [3.0, 0.05, 2.0, 0.1][step % 4]
    gen = torch.Generator().manual_seed(100 + step)
    return [(scale * torch.randn(s, generator=gen)).to(dtype) for s in SHAPES] + [
        torch.zeros(0, dtype=dtype)]


def assert_same_state(ours, ref, params, ref_params, rtol=1e-6, atol=1e-9):
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=rtol, atol=atol)
        for key in ("exp_avg", "exp_avg_sq"):
            want = ref.state[q][key]
            # A moment element where beta1 * m and (1 - beta1) * g nearly cancel
            # has no meaningful relative error: measure those against the
            # tensor's scale (fp32 sums in another order differ by ~1e-7).
            scale = float(want.abs().max()) if want.numel() else 0.0
            torch.testing.assert_close(ours.state[p][key], want, rtol=rtol,
                                       atol=max(atol, rtol * scale))
    assert [float(g["step"]) for g in ours.param_groups] == [
        float(g["step"]) for g in ref.param_groups]


class HostReads(TorchDispatchMode):
    """Records device-to-host reads: scalar reads and tensor comparisons that
    return a Python value go through these ops; .tolist()/.numpy() do not
    dispatch, so they are wrapped while the mode is active."""

    OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default,
           torch.ops.aten.equal.default, torch.ops.aten.is_nonzero.default}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.OPS:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self._patch = pytest.MonkeyPatch()
        for name in ("tolist", "numpy"):
            original = getattr(torch.Tensor, name)

            def wrapped(tensor, *a, _name=name, _original=original, **k):
                self.reads.append(_name)
                return _original(tensor, *a, **k)
            self._patch.setattr(torch.Tensor, name, wrapped)
        return super().__enter__()

    def __exit__(self, *exc):
        self._patch.undo()
        return super().__exit__(*exc)


def scaled_backward(params, scaler, targets, overflow: bool) -> None:
    """Gradients of sum(p * target) through the scaler; an inf in one if ``overflow``."""
    for p in params:
        p.grad = None
    loss = sum((p * t).sum() for p, t in zip(params, targets) if p.numel())
    scaler.scale(loss.float()).backward()
    if overflow:
        params[2].grad.view(-1)[0] = float("inf")


def run_scaled(optimizer_factory, dtype, steps, overflow_steps, count_reads=False):
    params = make_params(dtype)
    opt = optimizer_factory(groups_of(params, lr=1e-2))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    history, reads = [], []
    for step in range(steps):
        targets = grads_for(step, dtype)
        scaled_backward(params, scaler, targets, overflow=step in overflow_steps)
        before = ([p.detach().clone() for p in params],
                  {k: [opt.state[p][k].clone() for p in params if opt.state[p]]
                   for k in ("exp_avg", "exp_avg_sq")},
                  [float(g.get("step", 0)) for g in opt.param_groups], scaler.get_scale())
        if count_reads:
            with HostReads() as mode:
                scaler.step(opt)
                scaler.update()
            reads += mode.reads
        else:
            scaler.step(opt)
            scaler.update()
        history.append((before, scaler.get_scale()))
    return params, opt, history, reads


OVERFLOW_STEPS = {1, 3}


OVERFLOW_STEPS = {1, 3}


def checkpoint_round_trip(factory):
    """``factory(groups)`` -> the optimizer under test. Two steps with it; its
    checkpoint loaded by the reference :class:`Lamb` and, with int steps (as an
    older checkpoint holds them), by a fresh one of its own; two more steps each.
    Returns (resumed, reference, params, reference params) for assert_same_state."""
    import io

    from fastcam.train.lamb import Lamb

    params, ref_params = make_params(), make_params()
    ours = factory(groups_of(params))
    for step in range(2):
        for p, g in zip(params, grads_for(step)):
            p.grad = g
        ours.step()
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    with torch.no_grad():
        for p, q in zip(params, ref_params):
            q.copy_(p)
    ref = Lamb(groups_of(ref_params), lr=1e-3)
    ref.load_state_dict(torch.load(buffer, weights_only=True))
    resumed = factory(groups_of(params))
    state = ours.state_dict()
    for group in state["param_groups"]:
        group["step"] = int(group["step"])
    resumed.load_state_dict(state)
    for step in range(2, 4):
        for p, q, g in zip(params, ref_params, grads_for(step)):
            p.grad, q.grad = g.clone(), g.clone()
        resumed.step()
        ref.step()
    return resumed, ref, params, ref_params
