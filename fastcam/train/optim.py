"""Build the optimizer a run asks for: Adam, AdamW (torch) or LAMB (apex semantics).

Mirrors the reference's ``get_optimizer`` (mlcommons/hpc deepcam
``utils/optimizer_helpers.py``): torch's Adam/AdamW and apex FusedLAMB, each
with the given ``betas``, ``eps`` (the benchmark fixes 1e-6) and
``weight_decay``.

``fused=True`` passes ``fused=True`` to torch's Adam/AdamW. torch >= 2.4 has
fused Adam/AdamW kernels for CPU as well as CUDA (checked on torch 2.13: a CPU
step with ``fused=True`` runs), so the flag is honoured on every device torch
supports, never silently dropped. Fused kernels need floating-point parameters;
anything else is a ConfigError here rather than a RuntimeError at the first
step. LAMB always runs its multi-tensor (foreach) implementation, which is what
"fused" means for apex's FusedLAMB; ``fused`` changes nothing for it.
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
from fastcam.train.lamb import Lamb, check_hyperparameters


def build_optimizer(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    name: str,
    lr: float,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """Return a torch Adam/AdamW or a :class:`Lamb` over ``params``.

    Raises ConfigError for an unknown ``name`` or a bad hyperparameter.
    """
    canonical = canonical_optimizer_name(name)
    beta_pair = check_hyperparameters(canonical, lr, betas, eps, weight_decay)
    params = list(params)

    if canonical == "LAMB":
        return Lamb(params, lr=lr, betas=beta_pair, eps=eps, weight_decay=weight_decay)

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


def _check_fusable(name: str, params: list[Any]) -> None:
    for entry in params:
        tensors = entry["params"] if isinstance(entry, dict) else [entry]
        if isinstance(tensors, Tensor):
            tensors = [tensors]
        for tensor in tensors:
            if not torch.is_floating_point(tensor):
                raise ConfigError(
                    f"{name} with fused=True needs floating-point parameters, "
                    f"got one of dtype {tensor.dtype}"
                )
