"""TritonLamb: ``fastcam.train.lamb.Lamb`` with its step in five Triton launches.

Same constructor, hyperparameters, ``param_groups``, ``state`` and
``state_dict()`` format as :class:`~fastcam.train.lamb.Lamb` (it is a
subclass), so checkpoints move between the two; only ``step`` differs. The
kernels and the multi-tensor layout are described in
``fastcam/kernels/lamb_kernels.py``.

Device-resident step state, so that a step needs no host read and can be
captured in a CUDA graph:

* the groups' step counters are views into one float64 device vector that the
  scalars kernel advances (or, on overflow, does not);
* the learning rates live in a float32 device vector. A Python-float
  ``group["lr"]`` is written into it (``fill_``, no host read) only when it
  changed; a 0-dim tensor ``group["lr"]`` is copied device-to-device every step,
  which is the form to use under CUDA-graph capture (torch's LR schedulers
  update a tensor LR in place);
* GradScaler's ``grad_scale`` and ``found_inf`` are read by the kernels.

The pointer tables are rebuilt (host lists, one host-to-device copy, no host
read) whenever a parameter, gradient or moment tensor moves, e.g. after
``zero_grad(set_to_none=True)`` hands out new gradient buffers; keeping the
gradients (``set_to_none=False``, DDP's ``gradient_as_bucket_view``) keeps the
tables, as CUDA-graph replay needs.

Launch parameters are fixed rather than autotuned: the moment and parameter
kernels update tensors in place through pointer tables, which
``triton.autotune``'s ``restore_value`` (arguments only) could not restore
between trials. ``chunk_size``, ``block_size`` and ``num_warps`` are
constructor arguments for the GPU check to time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastcam.errors import ConfigError
from fastcam.kernels import lamb_kernels as K
from fastcam.train.lamb import STEP_DTYPE, Lamb, is_dense, run_closure

_TRITON_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
_REDUCE_BLOCK = 1024  # tile of the single-program reductions over chunk sums


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class TritonLamb(Lamb):
    """apex ``FusedLAMB`` semantics (see ``fastcam.train.lamb``) as Triton kernels.

    Parameters must be float32, float16 or bfloat16, dense (any memory format),
    all on one CUDA device -- or on the CPU under ``TRITON_INTERPRET=1``, which
    is how the tests run it. Moments are float32 for every parameter dtype.
    """

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
        chunk_size: int = 16384,
        block_size: int = 1024,
        num_warps: int = 4,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         bias_correction=bias_correction, grad_averaging=grad_averaging,
                         max_grad_norm=max_grad_norm, foreach=True)
        if block_size < 1 or block_size & (block_size - 1) or chunk_size % block_size:
            raise ConfigError(f"TritonLamb: block_size must be a power of 2 dividing chunk_size, "
                              f"got block_size={block_size}, chunk_size={chunk_size}")
        self.chunk_size, self.block_size, self.num_warps = chunk_size, block_size, num_warps
        self._device = _check_params([p for g in self.param_groups for p in g["params"]])
        self._layout: _Layout | None = None
        self._steps: Tensor | None = None
        self._step_views: list[Tensor] = []
        self._hyper_key: tuple | None = None
        self._lr_values: list[float | None] = []

    @property
    def implementation(self) -> str:
        return "LAMB (triton fused)"

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None
    ) -> float | None:
        loss = run_closure(closure)
        grad_scale, found_inf = self.take_amp_state()
        entries = [(i, p) for i, g in enumerate(self.param_groups) for p in g["params"]
                   if p.grad is not None]
        if not entries:
            return loss
        self._device = _check_params([p for _, p in entries])
        steps = self._packed_steps()
        hyper, betas, corrected = self._group_tables()
        lr = self._learning_rates()
        layout = self._layout_for(entries)
        scalars = layout.scalars
        for b in layout.buckets:
            K.grad_sq_kernel[(b.n_chunks,)](
                b.g_ptrs, b.numels, b.tensor_group, b.blk_tensor, b.blk_start, b.grad_partials,
                G_DTYPE=b.tl_dtype, CHUNK=self.chunk_size, BLOCK=self.block_size,
                num_warps=self.num_warps)
        n_groups = len(self.param_groups)
        K.scalars_kernel[(1,)](
            layout.grad_partials, layout.grad_partials.numel(),
            _as_device_scalar(grad_scale, self._device, scalars),
            _as_device_scalar(found_inf, self._device, scalars),
            steps, betas, corrected, scalars, n_groups, self.defaults["max_grad_norm"],
            HAS_SCALE=grad_scale is not None, HAS_FOUND_INF=found_inf is not None,
            BLOCK=_REDUCE_BLOCK, GROUP_BLOCK=triton.next_power_of_2(n_groups))
        for b in layout.buckets:
            K.moments_kernel[(b.n_chunks,)](
                b.p_ptrs, b.g_ptrs, b.m_ptrs, b.v_ptrs, b.numels, b.tensor_group, b.blk_tensor,
                b.blk_start, hyper, scalars, n_groups, b.p_partials, b.u_partials,
                P_DTYPE=b.tl_dtype, CHUNK=self.chunk_size, BLOCK=self.block_size,
                num_warps=self.num_warps)
            K.trust_ratio_kernel[(b.n_tensors,)](
                b.first_chunk, b.tensor_group, hyper, lr, b.p_partials, b.u_partials,
                b.step_sizes, BLOCK=_REDUCE_BLOCK)
            K.apply_kernel[(b.n_chunks,)](
                b.p_ptrs, b.m_ptrs, b.v_ptrs, b.numels, b.tensor_group, b.blk_tensor,
                b.blk_start, hyper, scalars, n_groups, b.step_sizes,
                P_DTYPE=b.tl_dtype, CHUNK=self.chunk_size, BLOCK=self.block_size,
                num_warps=self.num_warps)
        return loss

    # ------------------------------------------------------------ device state

    def _packed_steps(self) -> Tensor:
        """The groups' step counters as one float64 vector; ``group["step"]``
        are views of it. Re-packed when a group's step was replaced (by
        ``load_state_dict``, or a checkpoint's int step)."""
        groups = self.param_groups
        if (self._steps is None or len(self._step_views) != len(groups)
                or any(g.get("step") is not v for g, v in zip(groups, self._step_views))):
            self._steps = torch.stack([
                torch.as_tensor(g.get("step", 0), dtype=STEP_DTYPE).to(self._device)
                for g in groups])
            self._step_views = list(self._steps.unbind())
            for group, view in zip(groups, self._step_views):
                group["step"] = view
        return self._steps

    def _group_tables(self) -> tuple[Tensor, Tensor, Tensor]:
        """Hyperparameter tables, rebuilt only when a group's values change."""
        key = tuple((tuple(g["betas"]), g["eps"], g["weight_decay"], g["grad_averaging"],
                     g["bias_correction"]) for g in self.param_groups)
        if key != self._hyper_key:
            rows, betas, corrected = [], [], []
            for (beta1, beta2), eps, decay, averaging, bias_correction in key:
                named = dict(beta1=beta1, beta2=beta2, one_minus_beta2=1.0 - beta2,
                             beta3=1.0 - beta1 if averaging else 1.0, eps=eps, weight_decay=decay)
                rows.append([named[c] for c in K.HYPER_COLUMNS])
                betas.append([beta1, beta2])
                corrected.append(int(bias_correction))
            self._hyper = torch.tensor(rows, dtype=torch.float32).to(self._device)
            self._betas = torch.tensor(betas, dtype=torch.float64).to(self._device)
            self._corrected = torch.tensor(corrected, dtype=torch.int32).to(self._device)
            self._hyper_key = key
        return self._hyper, self._betas, self._corrected

    def _learning_rates(self) -> Tensor:
        groups = self.param_groups
        if len(self._lr_values) != len(groups):
            self._lr = torch.zeros(len(groups), dtype=torch.float32, device=self._device)
            self._lr_values = [None] * len(groups)
        for i, group in enumerate(groups):
            value = group["lr"]
            if isinstance(value, Tensor):
                self._lr[i].copy_(value)
                self._lr_values[i] = None
            elif value != self._lr_values[i]:
                self._lr[i].fill_(value)
                self._lr_values[i] = value
        return self._lr

    def _layout_for(self, entries: list[tuple[int, Tensor]]) -> _Layout:
        """Pointer and chunk tables for this step's tensors (cached by address)."""
        work = []
        for group_index, p in entries:
            if p.grad.is_sparse:
                raise RuntimeError("LAMB does not support sparse gradients")
            state = self.state[p]
            for key in ("exp_avg", "exp_avg_sq"):
                moment = state.get(key)
                if moment is None:
                    state[key] = torch.zeros_like(p, dtype=torch.float32)
                elif moment.dtype != torch.float32 or moment.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=torch.float32).copy_(moment)
            if p.numel() == 0:
                continue  # state as Lamb keeps it, but nothing to launch
            grad = p.grad
            if grad.stride() != p.stride():
                # The kernels walk p, grad and moments with one flat index.
                grad = torch.empty_like(p).copy_(grad)
            work.append((group_index, p, grad, state["exp_avg"], state["exp_avg_sq"]))
        key = tuple((i, p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), p.numel(), p.dtype)
                    for i, p, g, m, v in work)
        if self._layout is None or self._layout.key != key:
            self._layout = _Layout.build(key, work, len(self.param_groups), self.chunk_size,
                                         self._device)
        self._layout.keep_alive = work  # copied gradients must outlive the launches
        return self._layout


@dataclass
class _Bucket:
    """Tables of the tensors of one parameter dtype."""

    tl_dtype: Any
    n_tensors: int
    n_chunks: int
    p_ptrs: Tensor
    g_ptrs: Tensor
    m_ptrs: Tensor
    v_ptrs: Tensor
    numels: Tensor
    tensor_group: Tensor
    blk_tensor: Tensor
    blk_start: Tensor
    first_chunk: Tensor
    grad_partials: Tensor
    p_partials: Tensor
    u_partials: Tensor
    step_sizes: Tensor


@dataclass
class _Layout:
    key: tuple
    buckets: list[_Bucket]
    grad_partials: Tensor
    scalars: Tensor
    keep_alive: Any = None

    @classmethod
    def build(cls, key: tuple, work: list, n_groups: int, chunk: int,
              device: torch.device) -> _Layout:
        by_dtype: dict[torch.dtype, list] = {}
        for entry in work:
            by_dtype.setdefault(entry[1].dtype, []).append(entry)
        total_chunks = sum(-(-p.numel() // chunk) for _, p, *_ in work)
        grad_partials = torch.zeros(max(total_chunks, 1), dtype=torch.float32, device=device)
        p_partials = torch.zeros_like(grad_partials)
        u_partials = torch.zeros_like(grad_partials)
        scalars = torch.zeros(K.SCALARS_FIXED + 2 * n_groups, dtype=torch.float32, device=device)
        buckets, offset = [], 0

        def table(values: list, dtype: torch.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype).to(device)

        for dtype, entries in by_dtype.items():
            blk_tensor, blk_start, first_chunk = [], [], [0]
            for t, (_, p, *_rest) in enumerate(entries):
                n_chunks = -(-p.numel() // chunk)
                blk_tensor += [t] * n_chunks
                blk_start += [c * chunk for c in range(n_chunks)]
                first_chunk.append(first_chunk[-1] + n_chunks)
            n = len(blk_tensor)
            buckets.append(_Bucket(
                tl_dtype=_TRITON_DTYPES[dtype], n_tensors=len(entries), n_chunks=n,
                p_ptrs=table([e[1].data_ptr() for e in entries], torch.int64),
                g_ptrs=table([e[2].data_ptr() for e in entries], torch.int64),
                m_ptrs=table([e[3].data_ptr() for e in entries], torch.int64),
                v_ptrs=table([e[4].data_ptr() for e in entries], torch.int64),
                numels=table([e[1].numel() for e in entries], torch.int64),
                tensor_group=table([e[0] for e in entries], torch.int32),
                blk_tensor=table(blk_tensor, torch.int32),
                blk_start=table(blk_start, torch.int64),
                first_chunk=table(first_chunk, torch.int32),
                grad_partials=grad_partials[offset:offset + n],
                p_partials=p_partials[offset:offset + n],
                u_partials=u_partials[offset:offset + n],
                step_sizes=torch.zeros(len(entries), dtype=torch.float32, device=device),
            ))
            offset += n
        return cls(key, buckets, grad_partials[:max(offset, 1)], scalars)


def _as_device_scalar(value: Tensor | None, device: torch.device, placeholder: Tensor) -> Tensor:
    """A GradScaler tensor as float32 on ``device``; ``placeholder`` stands in for
    None (the kernel does not read it then)."""
    if value is None:
        return placeholder
    return value.to(device=device, dtype=torch.float32)


def _check_params(params: list[Tensor]) -> torch.device:
    """The one device of ``params``; ConfigError for what the kernels cannot run."""
    if not params:
        return torch.device("cpu")
    devices = {p.device for p in params}
    if len(devices) != 1:
        raise ConfigError(f"TritonLamb: all parameters must be on one device, got {sorted(map(str, devices))}")
    device = next(iter(devices))
    if device.type != "cuda" and not interpreting():
        raise ConfigError(f"TritonLamb: parameters must be on a CUDA device (got {device}); "
                          "on a CPU use fastcam.train.lamb.Lamb, or TRITON_INTERPRET=1 to test")
    for p in params:
        if p.dtype not in _TRITON_DTYPES:
            raise ConfigError(f"TritonLamb: parameters must be float32, float16 or bfloat16, got {p.dtype}")
        if not is_dense(p):
            raise ConfigError(f"TritonLamb: parameter of shape {tuple(p.shape)} and strides "
                              f"{p.stride()} is not dense in memory")
    return device
