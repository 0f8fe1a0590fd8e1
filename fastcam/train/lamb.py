"""LAMB with the semantics of NVIDIA apex ``FusedLAMB`` (the DeepCAM reference's LAMB).

The reference (mlcommons/hpc deepcam ``utils/optimizer_helpers.py``) builds
``apex.optimizers.FusedLAMB(params, lr, betas, eps=1e-6, weight_decay)`` with
apex's defaults: ``bias_correction=True``, ``adam_w_mode=True``,
``grad_averaging=True``, ``max_grad_norm=1.0``, ``use_nvlamb=False``. This module
re-implements what apex's ``fused_lamb.py`` and ``csrc/multi_tensor_lamb.cu``
compute, with torch's multi-tensor ``torch._foreach_*`` ops instead of apex's
CUDA kernels, so it runs on any device and needs no apex build:

1. ``g_norm`` = L2 norm of *all* gradients of *all* groups; the gradients are
   divided by ``clip = g_norm / max_grad_norm`` when ``g_norm > max_grad_norm``
   (else by 1). ``max_grad_norm`` is the constructor's (apex reads
   ``self.defaults``), not a per-group value.
2. Per group, one step counter ``group["step"]`` (apex keeps it in the group and
   advances it even when a parameter has no gradient).
3. ``m = beta1 m + beta3 g'`` with ``beta3 = 1 - beta1`` (grad averaging) or 1;
   ``v = beta2 v + (1 - beta2) g'^2``; bias-corrected ``m_hat``, ``v_hat``.
4. ``update = m_hat / (sqrt(v_hat) + eps) + weight_decay * p`` (decoupled decay,
   apex ``adam_w_mode``).
5. ``p -= lr * ratio * update`` with the per-tensor trust ratio
   ``ratio = ||p|| / ||update||`` (``p`` before the step), 1 when either norm is
   0, and -- apex with ``use_nvlamb=False`` -- 1 for every tensor of a group whose
   ``weight_decay`` is 0.

GradScaler without a host sync: the class declares ``_step_supports_amp_scaling``,
so ``torch.amp.GradScaler.step`` (torch/amp/grad_scaler.py) does not ``.item()``
its ``found_inf`` but hands this optimizer ``grad_scale`` (the device scale, or
None once ``scaler.unscale_`` ran) and ``found_inf`` (a device tensor, non-zero
on overflow). The step divides the still-scaled gradients by the scale together
with the clip divisor and, on overflow, keeps parameters, moments and the step
counter as they were, all with device ops (``torch.where``).

The step counter ``group["step"]`` is a 0-dim float64 tensor on the parameters'
device, so that skipping an overflow step needs no host read and a compiled or
captured step does not depend on a Python number (float64: ``1 - beta**step``
then equals the Python-float value it replaces; checkpoints written with an int
step still load). ``group["lr"]`` stays whatever the caller and the scheduler
put there: a Python float, or a 0-dim tensor that torch's schedulers update in
place (the form to use for compile or CUDA-graph capture).

Deliberate differences from apex: gradients are not overwritten with the update
(apex stores the update in ``p.grad``), and for float16/bfloat16 parameters the
moments are kept and all arithmetic is done in float32 (apex keeps fp16 moments
and stores the fp16-rounded update before taking its norm).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from fastcam.errors import ConfigError

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# float64: ``1 - beta**step`` computed on the device equals the Python value.
STEP_DTYPE = torch.float64


def check_hyperparameters(
    owner: str,
    lr: float | Tensor,
    betas: Sequence[float],
    eps: float,
    weight_decay: float,
) -> tuple[float, float]:
    """Validate Adam-style hyperparameters; return ``betas`` as a float pair.

    ``lr`` may be a 0-dim floating-point tensor (read once, here, to check it).
    Raises ConfigError naming ``owner`` (the optimizer) and the bad parameter.
    """
    if isinstance(lr, Tensor):
        if lr.dim() != 0 or not lr.is_floating_point():
            raise ConfigError(f"{owner}: a tensor learning rate must be a 0-dim float tensor, "
                              f"got shape {tuple(lr.shape)} of {lr.dtype}")
        lr_value: object = float(lr)
    else:
        lr_value = lr
    if not _is_finite_number(lr_value) or lr_value < 0:  # type: ignore[operator]
        raise ConfigError(f"{owner}: learning rate must be a finite number >= 0, got {lr!r}")
    if (
        isinstance(betas, (str, bytes))
        or not isinstance(betas, Sequence)
        or len(betas) != 2
        or not all(_is_finite_number(b) and 0.0 <= b < 1.0 for b in betas)
    ):
        raise ConfigError(f"{owner}: betas must be two numbers in [0, 1), got {betas!r}")
    if not _is_finite_number(eps) or eps < 0:
        raise ConfigError(f"{owner}: eps must be a finite number >= 0, got {eps!r}")
    if not _is_finite_number(weight_decay) or weight_decay < 0:
        raise ConfigError(
            f"{owner}: weight_decay must be a finite number >= 0, got {weight_decay!r}"
        )
    return float(betas[0]), float(betas[1])


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


class Lamb(Optimizer):
    """apex ``FusedLAMB`` (adam_w_mode, use_nvlamb=False) on torch foreach ops.

    ``foreach=False`` selects a plain per-tensor loop computing the same thing;
    it exists as the readable reference and for debugging.
    """

    # torch/amp/grad_scaler.py: GradScaler.step then sets self.grad_scale and
    # self.found_inf (device tensors) and calls step() without reading found_inf.
    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        bias_correction: bool = True,
        grad_averaging: bool = True,
        max_grad_norm: float = 1.0,
        foreach: bool = True,
    ) -> None:
        betas = check_hyperparameters("LAMB", lr, betas, eps, weight_decay)
        if not _is_finite_number(max_grad_norm) or max_grad_norm <= 0:
            raise ConfigError(
                f"LAMB: max_grad_norm must be a finite number > 0, got {max_grad_norm!r}"
            )
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bool(bias_correction),
            grad_averaging=bool(grad_averaging),
            max_grad_norm=float(max_grad_norm),
        )
        super().__init__(params, defaults)
        self.foreach = bool(foreach)

    @property
    def implementation(self) -> str:
        """What runs the step, for logs and bench (see optim.optimizer_implementation)."""
        return "LAMB (torch foreach)" if self.foreach else "LAMB (torch for-loop)"

    def take_amp_state(self) -> tuple[Tensor | None, Tensor | None]:
        """``(grad_scale, found_inf)`` as GradScaler.step set them for this
        step (it deletes both after the step), or None each without a scaler."""
        return getattr(self, "grad_scale", None), getattr(self, "found_inf", None)

    def gradients(self) -> list[Tensor]:
        """Every gradient of every group (parameters without one left out)."""
        return [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's loader casts every floating state tensor to its parameter's
        dtype (Optimizer._process_value_according_to_param_policy), which would
        round the float32 moments of float16/bfloat16 parameters: put them back
        from ``state_dict`` at full precision."""
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id, {})
            if p.dtype not in _LOW_PRECISION:
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                if isinstance(saved.get(key), Tensor):
                    self.state[p][key] = saved[key].to(p.device, torch.float32, copy=True)

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None
    ) -> float | None:
        loss = run_closure(closure)
        grad_scale, found_inf = self.take_amp_state()
        all_grads = self.gradients()
        if not all_grads:
            return loss
        clip = _clip_divisor(all_grads, self.defaults["max_grad_norm"], grad_scale)

        for group in self.param_groups:
            home = group["params"][0].device if group["params"] else all_grads[0].device
            skip = None if found_inf is None else found_inf.to(home) > 0
            advance_step(group, home, skip)
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients")
                if len(self.state[p]) == 0:
                    state_dtype = torch.float32 if p.dtype in _LOW_PRECISION else p.dtype
                    self.state[p]["exp_avg"] = torch.zeros_like(p, dtype=state_dtype)
                    self.state[p]["exp_avg_sq"] = torch.zeros_like(p, dtype=state_dtype)
            hyper = _StepConstants.for_group(group)
            update_fn = _lamb_foreach if self.foreach else _lamb_per_tensor
            update_fn(
                params,
                [p.grad for p in params],
                [self.state[p]["exp_avg"] for p in params],
                [self.state[p]["exp_avg_sq"] for p in params],
                clip,
                hyper,
                skip,
            )
        return loss


def is_dense(t: Tensor) -> bool:
    """Elements fill one contiguous range in some dimension order (any memory format):
    what the Triton and the fused CPU LAMB need to walk a tensor's memory flat."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def run_closure(closure: Callable[[], float] | None) -> float | None:
    """An optimizer step's closure, run with gradients enabled (None without one)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def advance_step(group: dict[str, Any], device: torch.device, skip: Tensor | None) -> Tensor:
    """Add 1 to ``group["step"]`` (0 when ``skip``), on ``device``; return it.

    An int step (a checkpoint written before steps were tensors, or none yet)
    becomes a 0-dim STEP_DTYPE tensor here, once.
    """
    step = group.get("step", 0)
    if not isinstance(step, Tensor) or step.device != device or step.dtype != STEP_DTYPE:
        step = torch.as_tensor(step, dtype=STEP_DTYPE).to(device)
        group["step"] = step
    if skip is None:
        step.add_(1)
    else:
        step.add_(skip.logical_not())
    return step


def _clip_divisor(grads: list[Tensor], max_grad_norm: float,
                  grad_scale: Tensor | None = None) -> Tensor:
    """What to divide the gradients by (0-dim tensor): the GradScaler scale (if
    any) times apex's ``g_norm / max_grad_norm`` if ``g_norm > max_grad_norm``
    else 1, where ``g_norm`` is the norm of the unscaled gradients.

    The norm is accumulated in float32 (as apex's l2norm kernel), or float64 when
    there are float64 gradients.
    """
    by_device_dtype: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
    for g in grads:
        by_device_dtype[(g.device, g.dtype)].append(g)
    home = grads[0].device
    norm_dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    per_tensor: list[Tensor] = []
    for (_, dtype), same_kind in by_device_dtype.items():
        # float16/bfloat16 norms would overflow; widening is allowed, narrowing is not.
        wide = torch.float32 if dtype in _LOW_PRECISION else None
        norms = torch._foreach_norm(same_kind, 2, dtype=wide)
        per_tensor += [n.to(home, norm_dtype) for n in norms]
    # The norm of the per-tensor norms is the norm of all gradients together.
    global_norm = torch.linalg.vector_norm(torch.stack(per_tensor))
    if grad_scale is not None:
        grad_scale = grad_scale.to(home, norm_dtype)
        global_norm = global_norm / grad_scale
    clip = torch.where(
        global_norm > max_grad_norm, global_norm / max_grad_norm, torch.ones_like(global_norm)
    )
    return clip if grad_scale is None else clip * grad_scale


class _StepConstants:
    """The scalars of one group's step, as apex's host code computes them.

    ``correction1``/``correction2`` are 0-dim tensors when bias correction is on
    (the step is a device tensor), and ``lr`` is a tensor when the group's is.
    """

    def __init__(self, lr: float | Tensor, beta1: float, beta2: float, beta3: float,
                 correction1: float | Tensor, correction2: float | Tensor, eps: float,
                 weight_decay: float) -> None:
        self.lr, self.beta1, self.beta2, self.beta3 = lr, beta1, beta2, beta3
        self.correction1, self.correction2 = correction1, correction2
        self.eps, self.weight_decay = eps, weight_decay

    @classmethod
    def for_group(cls, group: dict[str, Any]) -> _StepConstants:
        beta1, beta2 = group["betas"]
        step = group["step"]
        corrected = group["bias_correction"]
        lr = group["lr"]
        return cls(
            lr=lr.to(step.device) if isinstance(lr, Tensor) else lr,
            beta1=beta1,
            beta2=beta2,
            beta3=1.0 - beta1 if group["grad_averaging"] else 1.0,
            correction1=1.0 - beta1**step if corrected else 1.0,
            correction2=1.0 - beta2**step if corrected else 1.0,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
        )


def _commit(targets: list[Tensor], results: list[Tensor], skip: Tensor | None) -> None:
    """Write ``results`` into ``targets``; on overflow (``skip``) keep ``targets``."""
    if skip is None:
        torch._foreach_copy_(targets, results)
        return
    for target, result in zip(targets, results):
        target.copy_(torch.where(skip, target, result))


def _lamb_per_tensor(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor], clip: Tensor, c: _StepConstants, skip: Tensor | None = None,
) -> None:
    for p, g, m_state, v_state in zip(params, grads, exp_avgs, exp_avg_sqs):
        # Under a GradScaler, work on copies and commit unless the step overflowed.
        m = m_state if skip is None else m_state.clone()
        v = v_state if skip is None else v_state.clone()
        p32 = p.float() if p.dtype in _LOW_PRECISION else p
        scaled = g.to(m.dtype) / clip.to(g.device)
        m.mul_(c.beta1).add_(scaled, alpha=c.beta3)
        v.mul_(c.beta2).addcmul_(scaled, scaled, value=1.0 - c.beta2)
        denom = (v / c.correction2).sqrt_().add_(c.eps)
        update = (m / c.correction1).div_(denom)
        if c.weight_decay != 0:
            update.add_(p32, alpha=c.weight_decay)
            p_norm, u_norm = torch.linalg.vector_norm(p32), torch.linalg.vector_norm(update)
            trusted = (p_norm != 0) & (u_norm != 0)
            step_size = torch.where(trusted, (p_norm / u_norm) * c.lr, c.lr)
            new_p = p32 - update.mul_(step_size)
        elif isinstance(c.lr, Tensor):
            new_p = p32 - update.mul_(c.lr)
        else:
            new_p = p32.add(update, alpha=-c.lr)
        if skip is not None:
            _commit([m_state, v_state], [m, v], skip)
        _commit([p], [new_p], skip)


def _lamb_foreach(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor], clip: Tensor, c: _StepConstants, skip: Tensor | None = None,
) -> None:
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        buckets[(p.device, p.dtype)].append(i)
    for (device, dtype), idx in buckets.items():
        p_list = [params[i] for i in idx]
        m_state = [exp_avgs[i] for i in idx]
        v_state = [exp_avg_sqs[i] for i in idx]
        low_precision = dtype in _LOW_PRECISION
        # Under a GradScaler, work on copies and commit unless the step overflowed.
        m_list = m_state if skip is None else torch._foreach_mul(m_state, 1.0)
        v_list = v_state if skip is None else torch._foreach_mul(v_state, 1.0)
        if low_precision:
            p_math = [p.float() for p in p_list]
        else:
            p_math = p_list if skip is None else torch._foreach_mul(p_list, 1.0)
        g_math = [grads[i].to(m_list[0].dtype) for i in idx]

        scaled = torch._foreach_div(g_math, clip.to(device))
        torch._foreach_mul_(m_list, c.beta1)
        torch._foreach_add_(m_list, scaled, alpha=c.beta3)
        torch._foreach_mul_(v_list, c.beta2)
        torch._foreach_addcmul_(v_list, scaled, scaled, value=1.0 - c.beta2)
        denom = torch._foreach_div(v_list, c.correction2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, c.eps)
        update = torch._foreach_div(m_list, c.correction1)
        torch._foreach_div_(update, denom)

        if c.weight_decay != 0:
            p_norms = torch.stack(torch._foreach_norm(p_math))
            torch._foreach_add_(update, p_math, alpha=c.weight_decay)
            u_norms = torch.stack(torch._foreach_norm(update))
            trusted = (p_norms != 0) & (u_norms != 0)
            step_sizes = torch.where(trusted, (p_norms / u_norms) * c.lr, c.lr)
            torch._foreach_mul_(update, list(step_sizes.unbind()))
            torch._foreach_sub_(p_math, update)
        elif isinstance(c.lr, Tensor):
            torch._foreach_mul_(update, c.lr)
            torch._foreach_sub_(p_math, update)
        else:
            torch._foreach_add_(p_math, update, alpha=-c.lr)
        if skip is not None:
            _commit(m_state, m_list, skip)
            _commit(v_state, v_list, skip)
        if low_precision or skip is not None:
            _commit(p_list, p_math, skip)
