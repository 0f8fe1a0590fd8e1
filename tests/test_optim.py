"""LAMB (apex FusedLAMB semantics) and the optimizer factory."""

from __future__ import annotations

import io
import math

import pytest
import torch

from fastcam.errors import ConfigError
from fastcam.train.lamb import Lamb
from fastcam.train.optim import build_optimizer

torch.set_num_threads(1)

SHAPES_DECAYED = [(4, 3), (4,), (3, 3)]  # the (3, 3) tensor starts all zero
SHAPES_UNDECAYED = [(5,), (2, 2)]


def make_params(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = SHAPES_DECAYED + SHAPES_UNDECAYED
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    with torch.no_grad():
        params[2].zero_()
    return params


def groups_of(params: list[torch.nn.Parameter], weight_decay: float = 0.01) -> list[dict]:
    n = len(SHAPES_DECAYED)
    return [
        {"params": params[:n], "weight_decay": weight_decay},
        {"params": params[n:], "weight_decay": 0.0, "lr": 2e-3},
    ]


def random_grads(step: int, scale: float) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return [scale * torch.randn(s, generator=gen) for s in SHAPES_DECAYED + SHAPES_UNDECAYED]


# Grad scales: a global norm well above 1 (clipping engages) and well below it.
STEP_SCALES = [3.0, 0.05, 2.0, 0.1, 5.0]


class ReferenceLamb:
    """Straight transcription of apex multi_tensor_lamb.cu (adam_w_mode, no nvlamb), float64."""

    def __init__(self, params, groups, *, betas=(0.9, 0.999), eps=1e-6, max_grad_norm=1.0,
                 bias_correction=True, grad_averaging=True):
        self.p = [p.detach().double().clone() for p in params]
        self.m = [torch.zeros_like(p) for p in self.p]
        self.v = [torch.zeros_like(p) for p in self.p]
        self.groups = groups  # list of (indices, lr, weight_decay)
        self.betas, self.eps, self.max_grad_norm = betas, eps, max_grad_norm
        self.bias_correction, self.grad_averaging = bias_correction, grad_averaging
        self.step_count = 0

    def step(self, grads):
        self.step_count += 1
        b1, b2 = self.betas
        g = [x.double() for x in grads]
        global_norm = math.sqrt(sum(float((x * x).sum()) for x in g))
        clip = global_norm / self.max_grad_norm if global_norm > self.max_grad_norm else 1.0
        b3 = 1 - b1 if self.grad_averaging else 1.0
        c1 = 1 - b1**self.step_count if self.bias_correction else 1.0
        c2 = 1 - b2**self.step_count if self.bias_correction else 1.0
        for indices, lr, wd in self.groups:
            for i in indices:
                sg = g[i] / clip
                self.m[i] = self.m[i] * b1 + b3 * sg
                self.v[i] = self.v[i] * b2 + (1 - b2) * sg * sg
                update = (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + self.eps) + wd * self.p[i]
                ratio = 1.0
                p_norm, u_norm = float(self.p[i].norm()), float(update.norm())
                if wd != 0 and p_norm != 0 and u_norm != 0:
                    ratio = p_norm / u_norm
                self.p[i] = self.p[i] - lr * ratio * update


def run_lamb(
    foreach: bool, steps: int, dtype: torch.dtype = torch.float32, **kwargs
) -> tuple[list[torch.Tensor], Lamb]:
    params = [torch.nn.Parameter(p.detach().to(dtype)) for p in make_params()]
    opt = Lamb(groups_of(params), lr=1e-3, foreach=foreach, **kwargs)
    for step in range(steps):
        for p, g in zip(params, random_grads(step, STEP_SCALES[step % len(STEP_SCALES)])):
            p.grad = g.to(dtype)
        opt.step()
    return params, opt


@pytest.mark.parametrize("options", [
    {},
    {"bias_correction": False, "grad_averaging": False},
    {"betas": (0.8, 0.99), "max_grad_norm": 0.5},
])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lamb_matches_apex_transcription(dtype: torch.dtype, foreach: bool, options: dict) -> None:
    steps = len(STEP_SCALES)
    params, _ = run_lamb(foreach, steps, dtype, **options)
    reference = ReferenceLamb(
        make_params(), [([0, 1, 2], 1e-3, 0.01), ([3, 4], 2e-3, 0.0)], **options
    )
    for step in range(steps):
        reference.step(random_grads(step, STEP_SCALES[step % len(STEP_SCALES)]))
    for got, want, start in zip(params, reference.p, make_params()):
        if dtype == torch.float32:
            torch.testing.assert_close(got.detach().double(), want, rtol=1e-6, atol=1e-7)
        else:
            # In float64 the displacement from the start (what the optimizer computes)
            # is resolved finely enough to catch even a 1e-6 relative error in lr.
            start = start.detach().double()
            torch.testing.assert_close(got.detach() - start, want - start, rtol=1e-10, atol=1e-14)


def test_foreach_and_per_tensor_paths_agree() -> None:
    fast, fast_opt = run_lamb(True, 5)
    slow, slow_opt = run_lamb(False, 5)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(fast_opt.state[a]["exp_avg_sq"], slow_opt.state[b]["exp_avg_sq"])


def test_first_step_closed_form_zero_tensor_and_undecayed_group() -> None:
    # Step 1: m_hat = g, v_hat = g^2, so the Adam part of the update is g / (|g| + eps).
    params = make_params()
    opt = Lamb(groups_of(params), lr=1e-3)
    grads = random_grads(0, 0.01)  # global norm < 1: no clipping
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    adam = [g / (g.abs() + 1e-6) for g in grads]
    # All-zero tensor in the decayed group: ||p|| = 0 -> ratio 1.
    torch.testing.assert_close(params[2].detach(), -1e-3 * adam[2])
    # Undecayed group: no trust ratio at all (apex, use_nvlamb=False), lr 2e-3.
    torch.testing.assert_close(params[3].detach(), before[3] - 2e-3 * adam[3])
    # Decayed non-zero tensor: trust ratio ||p|| / ||update||.
    update = adam[0] + 0.01 * before[0]
    expected = before[0] - 1e-3 * (before[0].norm() / update.norm()) * update
    torch.testing.assert_close(params[0].detach(), expected)


@pytest.mark.parametrize("group_norm, clipped", [(0.8, True), (0.6, False)])
def test_clipping_uses_global_norm_over_all_groups(group_norm: float, clipped: bool) -> None:
    # Two groups, each with gradient norm group_norm < 1; the global norm is
    # sqrt(2) * group_norm: 1.13 (clips) or 0.85 (does not).
    params = make_params()
    opt = Lamb(groups_of(params), lr=1e-3)
    grads = random_grads(0, 1.0)
    n = len(SHAPES_DECAYED)
    for part in (grads[:n], grads[n:]):
        norm = math.sqrt(sum(float((g * g).sum()) for g in part))
        for g in part:
            g.mul_(group_norm / norm)
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    global_norm = math.sqrt(2) * group_norm
    divisor = global_norm if clipped else 1.0
    for p, g in zip(params, grads):
        torch.testing.assert_close(opt.state[p]["exp_avg"], 0.1 * g / divisor)


def test_gradients_are_left_untouched() -> None:
    params = make_params()
    opt = Lamb(groups_of(params))
    grads = random_grads(0, 3.0)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    for p, g in zip(params, grads):
        assert torch.equal(p.grad, g)


@pytest.mark.parametrize("foreach", [True, False])
def test_state_dict_round_trip_is_bitwise(foreach: bool) -> None:
    params, opt = run_lamb(foreach, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)

    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = Lamb(groups_of(resumed_params), lr=1e-3, foreach=foreach)
    resumed.load_state_dict(torch.load(buffer))
    for step in range(3, 6):
        grads = random_grads(step, STEP_SCALES[step % len(STEP_SCALES)])
        for p, q, g in zip(params, resumed_params, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        resumed.step()
    assert [g["step"] for g in resumed.param_groups] == [6, 6]
    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_keep_float32_state(dtype: torch.dtype) -> None:
    params = make_params()
    low = [torch.nn.Parameter(p.detach().to(dtype)) for p in params]
    opt32 = Lamb(groups_of(params), lr=1e-2)
    opt_low = Lamb(groups_of(low), lr=1e-2)
    grads = random_grads(0, 3.0)
    for p, q, g in zip(params, low, grads):
        p.grad, q.grad = g, g.to(dtype)
    opt32.step()
    opt_low.step()
    for p, q in zip(params, low):
        assert q.dtype == dtype
        assert opt_low.state[q]["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(q.float(), p.detach(), rtol=2e-2, atol=2e-2)


def test_lamb_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ConfigError, match="max_grad_norm"):
        Lamb(make_params(), max_grad_norm=0.0)
    with pytest.raises(ConfigError, match="betas"):
        Lamb(make_params(), betas=(0.9, 1.0))
    with pytest.raises(ConfigError, match="learning rate"):
        Lamb(make_params(), lr=float("nan"))


# ---------------------------------------------------------------- factory


def train_three_steps(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    for step in range(3):
        for p, g in zip(params, random_grads(step, 1.0)):
            p.grad = g
        optimizer.step()


@pytest.mark.parametrize("name, torch_class", [
    ("Adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("ADAMW", torch.optim.AdamW),
])
def test_factory_adam_matches_torch_with_eps_1e6(name: str, torch_class: type) -> None:
    ours_params, theirs_params = make_params(), make_params()
    ours = build_optimizer(ours_params, name, lr=1e-2, weight_decay=0.1)
    theirs = torch_class(theirs_params, lr=1e-2, eps=1e-6, weight_decay=0.1)
    assert type(ours) is torch_class
    assert ours.param_groups[0]["eps"] == 1e-6
    train_three_steps(ours, ours_params)
    train_three_steps(theirs, theirs_params)
    for a, b in zip(ours_params, theirs_params):
        assert torch.equal(a, b)


def test_factory_adam_and_adamw_differ_with_weight_decay() -> None:
    adam_params, adamw_params = make_params(), make_params()
    train_three_steps(build_optimizer(adam_params, "Adam", lr=1e-2, weight_decay=0.1), adam_params)
    adamw = build_optimizer(adamw_params, "AdamW", lr=1e-2, weight_decay=0.1)
    train_three_steps(adamw, adamw_params)
    assert not torch.equal(adam_params[0], adamw_params[0])


def test_factory_fused_adamw_runs_on_cpu_and_matches() -> None:
    fused_params, plain_params = make_params(), make_params()
    fused = build_optimizer(fused_params, "AdamW", lr=1e-2, weight_decay=0.1, fused=True)
    plain = build_optimizer(plain_params, "AdamW", lr=1e-2, weight_decay=0.1)
    assert fused.param_groups[0]["fused"] is True
    train_three_steps(fused, fused_params)
    train_three_steps(plain, plain_params)
    for a, b in zip(fused_params, plain_params):
        torch.testing.assert_close(a, b)


def test_factory_fused_rejects_integer_params() -> None:
    with pytest.raises(ConfigError, match="floating-point"):
        build_optimizer([torch.zeros(3, dtype=torch.int64)], "Adam", lr=1e-3, fused=True)


def test_factory_lamb() -> None:
    params = make_params()
    opt = build_optimizer(params, "lamb", lr=2e-3, betas=[0.8, 0.9], weight_decay=0.05)
    assert isinstance(opt, Lamb)
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (2e-3, (0.8, 0.9), 1e-6)
    assert group["weight_decay"] == 0.05
    assert group["bias_correction"] and group["grad_averaging"]
    assert group["max_grad_norm"] == 1.0


@pytest.mark.parametrize("name", ["SGD", "", "Adam W", None])
def test_factory_unknown_name(name: object) -> None:
    with pytest.raises(ConfigError) as err:
        build_optimizer(make_params(), name, lr=1e-3)  # type: ignore[arg-type]
    assert repr(name) in str(err.value)
    assert "Adam, AdamW, LAMB" in str(err.value)


def test_factory_rejects_negative_weight_decay() -> None:
    with pytest.raises(ConfigError, match="weight_decay"):
        build_optimizer(make_params(), "AdamW", lr=1e-3, weight_decay=-0.1)



# ---------------------------------------------------------------- implementation names


@pytest.mark.parametrize("name, fused, expected", [
    ("LAMB", False, "LAMB (torch foreach)"),
    # float32 CPU parameters: fused LAMB is torch's fused CPU Adam kernel + trust ratio.
    ("LAMB", True, "LAMB (torch fused-Adam CPU kernel)"),
    ("AdamW", True, "AdamW (torch fused)"),
    ("Adam", True, "Adam (torch fused)"),
    # torch's own default on CPU tensors is its for-loop implementation.
    ("AdamW", False, "AdamW (torch for-loop)"),
])
def test_optimizer_implementation_names_what_runs(name, fused, expected) -> None:
    from fastcam.train.optim import optimizer_implementation

    opt = build_optimizer(make_params(), name, lr=1e-3, fused=fused)
    assert optimizer_implementation(opt) == expected


def test_optimizer_implementation_explicit_choices() -> None:
    from fastcam.train.optim import optimizer_implementation

    assert optimizer_implementation(Lamb(make_params(), foreach=False)) == "LAMB (torch for-loop)"
    adam = torch.optim.AdamW(make_params(), foreach=True)
    assert optimizer_implementation(adam) == "AdamW (torch foreach)"
    assert optimizer_implementation(torch.optim.SGD(make_params(), lr=0.1)) == "SGD"


def test_factory_lamb_accepts_a_tensor_lr_and_keeps_it() -> None:
    lr = torch.tensor(2e-3)
    params = make_params()
    opt = build_optimizer(params, "LAMB", lr=lr)
    assert opt.param_groups[0]["lr"] is lr
    with pytest.raises(ConfigError, match="0-dim"):
        build_optimizer(make_params(), "LAMB", lr=torch.ones(2))
    with pytest.raises(ConfigError, match="learning rate"):
        build_optimizer(make_params(), "LAMB", lr=torch.tensor(-1.0))


def test_int_step_of_an_older_checkpoint_resumes() -> None:
    params, opt = run_lamb(True, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # a copy, as a checkpoint file is
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    for group in state["param_groups"]:
        group["step"] = int(group["step"])  # as checkpoints before device step counters
    resumed = Lamb(groups_of([torch.nn.Parameter(p.detach().clone()) for p in params]), lr=1e-3)
    resumed.load_state_dict(state)
    resumed_params = [p for g in resumed.param_groups for p in g["params"]]
    for p, q, g in zip(params, resumed_params, random_grads(3, 1.0)):
        p.grad, q.grad = g.clone(), g.clone()
    opt.step()
    resumed.step()
    assert [float(g["step"]) for g in resumed.param_groups] == [4.0, 4.0]
    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)


def test_low_precision_moments_stay_float32_through_a_checkpoint() -> None:
    # torch's loader casts state to the parameter's dtype; Lamb restores float32.
    params = [torch.nn.Parameter(p.detach().half()) for p in make_params()]
    opt = Lamb(groups_of(params), lr=1e-2)
    for p, g in zip(params, random_grads(0, 3.0)):
        p.grad = g.half()
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed = Lamb(groups_of([torch.nn.Parameter(p.detach().clone()) for p in params]), lr=1e-2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for p, q in zip(params, [p for g in resumed.param_groups for p in g["params"]]):
        assert resumed.state[q]["exp_avg_sq"].dtype == torch.float32
        assert torch.equal(resumed.state[q]["exp_avg_sq"], opt.state[p]["exp_avg_sq"])
