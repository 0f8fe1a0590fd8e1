"""Build the optimizer a run asks for: Adam, AdamW (torch) or LAMB (apex semantics),
and name the implementation that actually runs.

Mirrors the reference's ``get_optimizer`` (mlcommons/hpc deepcam
``utils/optimizer_helpers.py``): torch's Adam/AdamW and apex FusedLAMB, each
with the given ``betas``, ``eps`` (the benchmark fixes 1e-6) and
``weight_decay``.

``fused=True``:

* Adam/AdamW: passes ``fused=True`` to torch. torch >= 2.4 has fused Adam/AdamW
  kernels for CPU as well as CUDA (checked on torch 2.13: a CPU step with
  ``fused=True`` runs), so the flag is honoured on every device torch supports,
  never silently dropped. Fused kernels need floating-point parameters;
  anything else is a ConfigError here rather than a RuntimeError at the first
  step. Without it torch picks foreach (CUDA) or a for-loop (CPU) itself.
* LAMB: the Triton kernels of ``fastcam.kernels.lamb`` when every parameter is
  a float32/float16/bfloat16 CUDA tensor and triton is installed;
  ``fastcam.train.lamb_cpu.FusedCpuLamb`` (torch's fused CPU Adam kernel plus
  the trust ratio) when every parameter is a float32 CPU tensor; otherwise the
  torch-foreach :class:`Lamb`, which is also what ``fused=False`` gives.

:func:`optimizer_implementation` says which of these runs, e.g. for bench and
the MLPerf log, so that neither records "fused" for an unfused step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

# fastcam.config owns the optimizer names; re-exported under this module's names.
from fastcam.config import OPTIMIZERS as OPTIMIZER_NAMES  # noqa: F401
from fastcam.config import canonical_optimizer as canonical_optimizer_name
from fastcam.errors import ConfigError
from fastcam.kernels import triton_available
from fastcam.train.lamb import Lamb, check_hyperparameters
from fastcam.train.lamb_cpu import FusedCpuLamb, fused_cpu_lamb_can_run

_TRITON_LAMB_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def build_optimizer(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    name: str,
    lr: float | Tensor,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """Return a torch Adam/AdamW, a :class:`Lamb` or a ``TritonLamb`` over ``params``.

    Raises ConfigError for an unknown ``name`` or a bad hyperparameter.
    """
    canonical = canonical_optimizer_name(name)
    beta_pair = check_hyperparameters(canonical, lr, betas, eps, weight_decay)
    params = list(params)

    if canonical == "LAMB":
        lamb_class: type[Lamb] = Lamb
        if fused and _triton_lamb_can_run(params):
            from fastcam.kernels.lamb import TritonLamb  # imports triton
            lamb_class = TritonLamb
        elif fused and fused_cpu_lamb_can_run(list(_tensors_of(params))):
            lamb_class = FusedCpuLamb
        return lamb_class(params, lr=lr, betas=beta_pair, eps=eps, weight_decay=weight_decay)

    if fused:
        _check_fusable(canonical, params)
    optimizer_class = torch.optim.Adam if canonical == "Adam" else torch.optim.AdamW
    # fused=None (not False) keeps torch's own foreach/for-loop default choice.
    return optimizer_class(
        params,
        lr=lr,
        betas=beta_pair,
        eps=eps,
        weight_decay=weight_decay,
        fused=True if fused else None,
    )


def optimizer_implementation(optimizer: torch.optim.Optimizer) -> str:
    """What runs a step of ``optimizer``: "LAMB (triton fused)", "LAMB (torch
    foreach)", "LAMB (torch for-loop)", "AdamW (torch fused)", "Adam (torch
    foreach)", "AdamW (torch for-loop)", ... (the class name for others)."""
    if isinstance(optimizer, Lamb):  # Lamb and TritonLamb name themselves
        return optimizer.implementation
    name = type(optimizer).__name__
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return name
    group = optimizer.param_groups[0]
    if group.get("fused"):
        return f"{name} (torch fused)"
    foreach = group.get("foreach")
    if foreach is None:  # torch chooses at the first step, by the same rule
        from torch.optim.optimizer import _default_to_fused_or_foreach

        params = [p for g in optimizer.param_groups for p in g["params"]]
        _, foreach = _default_to_fused_or_foreach(params, bool(group.get("differentiable")),
                                                  use_fused=False)
    return f"{name} (torch foreach)" if foreach else f"{name} (torch for-loop)"


def _triton_lamb_can_run(params: list[Any]) -> bool:
    tensors = list(_tensors_of(params))
    return (
        bool(tensors)
        and all(t.is_cuda and t.dtype in _TRITON_LAMB_DTYPES for t in tensors)
        and len({t.device for t in tensors}) == 1
        and triton_available()
    )


def _tensors_of(params: list[Any]) -> Iterable[Tensor]:
    for entry in params:
        tensors = entry["params"] if isinstance(entry, dict) else [entry]
        if isinstance(tensors, Tensor):
            tensors = [tensors]
        yield from tensors


def _check_fusable(name: str, params: list[Any]) -> None:
    for tensor in _tensors_of(params):
        if not torch.is_floating_point(tensor):
            raise ConfigError(
                f"{name} with fused=True needs floating-point parameters, "
                f"got one of dtype {tensor.dtype}"
            )
