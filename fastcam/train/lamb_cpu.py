"""LAMB on a CPU with torch's fused Adam kernel doing the moment update.

:class:`~fastcam.train.lamb.Lamb` (apex ``FusedLAMB`` semantics, the reference)
makes about 16 passes over the parameters with ``torch._foreach_*`` ops, which
on a CPU are per-tensor loops of ordinary kernels: for the 56.5M-parameter
DeepCAM network that was 399-509 ms per step on the 2-core machine, against
51-62 ms for torch's fused AdamW (``scripts/optimizer_step_cost.py``,
RESULTS.md). There is no fused LAMB for CPUs in torch or apex.

Most of a LAMB step *is* an Adam step: with the parameter replaced by a zeroed
scratch tensor ``u``, ``lr = 1`` and no weight decay, torch's fused AdamW kernel
(``aten::_fused_adamw_``, aten/src/ATen/native/cpu/FusedAdamKernel.cpp: one
vectorised, multi-threaded pass that reads the gradient and both moments)

* divides the gradient by ``grad_scale`` -- here the GradScaler scale times
  apex's clip divisor ``max(1, ||g|| / max_grad_norm)``,
* updates ``m`` and ``v`` in place (``m`` by ``lerp`` with weight ``1 - beta1``,
  which is apex's ``beta1 m + (1 - beta1) g`` with grad averaging),
* leaves ``u = -(m / c1) / (sqrt(v) / sqrt(c2) + eps)``, minus apex's Adam
  direction, with the bias corrections ``c1, c2`` from the step tensor, and
* returns without touching anything when ``found_inf`` is 1 (an overflowed
  step under a GradScaler), so ``u`` stays 0 and the parameter does not move.

What is left is LAMB's own part, per tensor: ``u -= weight_decay * p`` (now
``u = -update``), the two norms, the trust ratio and ``p += lr * ratio * u``,
all with tensor scalars (no host read). About 7 passes instead of 16.

Scope: dense (any memory format) float32 CPU parameters (what the optimized CPU recipe trains; the kernel
keeps moments in the parameter's dtype, so float16/bfloat16 parameters, whose
moments :class:`Lamb` keeps in float32, stay on :class:`Lamb`), and groups
with grad averaging (the ``lerp`` form), as apex's default and the benchmark
use. The results equal :class:`Lamb`'s to float32 rounding, not bitwise: the
kernel computes ``sqrt(v) / sqrt(c2)`` where Lamb computes ``sqrt(v / c2)``.
Checkpoints are interchangeable with :class:`Lamb`'s (same state keys).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fastcam.train.lamb import Lamb, _clip_divisor, advance_step, is_dense, run_closure


def fused_cpu_lamb_can_run(params: list[Tensor]) -> bool:
    """True when every parameter is a dense float32 CPU tensor (what the kernel takes)."""
    return (
        bool(params)
        and all(p.device.type == "cpu" and p.dtype == torch.float32 and is_dense(p)
                for p in params)
        and hasattr(torch, "_fused_adamw_")
    )


def _like(t: Tensor, p: Tensor) -> Tensor:
    """``t`` with ``p``'s strides: the kernel walks raw memory of all its inputs
    in step, so a contiguous gradient of a channels-last weight must be copied."""
    return t if t.stride() == p.stride() else torch.empty_like(p).copy_(t)


class FusedCpuLamb(Lamb):
    """:class:`Lamb` whose moment update runs in torch's fused CPU Adam kernel."""

    @property
    def implementation(self) -> str:
        return "LAMB (torch fused-Adam CPU kernel)"

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None
    ) -> float | None:
        loss = run_closure(closure)
        grad_scale, found_inf = self.take_amp_state()
        all_grads = self.gradients()
        if not all_grads:
            return loss
        # The kernel reads both through float pointers.
        divisor = _clip_divisor(all_grads, self.defaults["max_grad_norm"], grad_scale)
        divisor = divisor.to(torch.float32)
        overflow = None if found_inf is None else (found_inf > 0).to(torch.float32)
        largest = max(p.numel() for p in (q for g in self.param_groups for q in g["params"]))
        scratch = self._scratch(largest)
        for group in self.param_groups:
            if not group["grad_averaging"]:
                raise RuntimeError("FusedCpuLamb needs grad_averaging=True (see module doc)")
            if not group["bias_correction"]:
                # The kernel always bias-corrects.
                raise RuntimeError("FusedCpuLamb needs bias_correction=True (see module doc)")
            skip = None if overflow is None else overflow > 0
            step = advance_step(group, torch.device("cpu"), skip)
            # On overflow the kernel leaves u = 0, but the decay term below would
            # still move p: scale the whole step by 0 then.
            lr = group["lr"]
            step_lr = lr if overflow is None else (1.0 - overflow) * lr
            beta1, beta2 = group["betas"]
            decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)  # keeps p's strides
                    state["exp_avg_sq"] = torch.zeros_like(p)
                for key in ("exp_avg", "exp_avg_sq"):  # e.g. a checkpoint's contiguous moments
                    state[key] = _like(state[key], p)
                u = scratch[: p.numel()].as_strided(p.shape, p.stride()).zero_()
                torch._fused_adamw_(
                    [u], [_like(p.grad, p)], [state["exp_avg"]], [state["exp_avg_sq"]], [], [step],
                    lr=1.0, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"],
                    amsgrad=False, maximize=False, grad_scale=divisor, found_inf=overflow,
                )
                if decay != 0:
                    u.sub_(p, alpha=decay)  # u = -(adam direction + decay * p)
                    p_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(u)
                    trusted = (p_norm != 0) & (u_norm != 0)
                    ratio = torch.where(trusted, p_norm / u_norm, torch.ones_like(p_norm))
                    p.addcmul_(u, ratio * step_lr)
                elif isinstance(step_lr, Tensor):
                    p.addcmul_(u, step_lr)
                else:
                    p.add_(u, alpha=step_lr)
        return loss

    def _scratch(self, numel: int) -> Tensor:
        """One float32 buffer as large as the largest parameter, kept between steps."""
        buffer: Tensor | None = getattr(self, "_u_buffer", None)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=torch.float32)
            self._u_buffer = buffer
        return buffer

