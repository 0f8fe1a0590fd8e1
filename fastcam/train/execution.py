"""How the one network is executed: every optimization, applied from here.

The model module (fastcam.model) knows nothing about devices, precision,
memory format, compilation or distribution. This module turns a config's
``optimizations`` into an :class:`Execution` for one device and applies it, in
this documented order:

1. cuDNN autotuning (a global switch; before anything touches cuDNN);
2. device placement and memory format (channels-last) of the model;
3. batchnorm groups (SyncBatchNorm, distributed; fastcam.distributed);
4. the optimizer, fused where asked (it must see the final parameters);
5. DDP wrapping (never for a single process; fastcam.distributed);
6. ``torch.compile`` of the wrapped model (compile after DDP lets
   DDPOptimizer split graphs at bucket boundaries);
7. autocast + GradScaler around each step (``Execution.autocast``).

Baseline mode is the reference's execution: fp32, NCHW, eager, plain optimizer,
cuDNN autotuning on CUDA (the reference's train.py sets it), no warm-up. Which
device and its defaults: fastcam.accelerator.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

# resolve_device and cpu_has_native_bf16 live in fastcam.accelerator; re-exported
# for the callers that still import them from here (run.py, plan.py, guard.py).
from fastcam.accelerator import cpu_has_native_bf16, default_amp_precision, resolve_device
from fastcam.config import Config

__all__ = ["Execution", "auto_precision", "compile_model", "cpu_has_native_bf16", "place_batch", "place_model",
           "resolve_device", "resolve_execution"]


@dataclass(frozen=True)
class Execution:
    device: torch.device
    channels_last: bool
    autocast_dtype: torch.dtype | None  # None: fp32, no autocast
    grad_scaler: bool  # float16 needs loss scaling
    fused_optimizer: bool
    compile: bool
    compile_mode: str
    cudnn_benchmark: bool
    warm_up: bool = False  # compile/autotune on synthetic batches before init_stop (never in the reference's execution)
    fast_ddp: bool = False  # DDP static_graph + gradient_as_bucket_view (speed only; not the reference's DDP)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def switches(self) -> dict[str, object]:
        """What the MLPerf log records about how the network ran."""
        return {
            "device": str(self.device),
            "channels_last": self.channels_last,
            "precision": {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.autocast_dtype],
            "grad_scaler": self.grad_scaler,
            "fused_optimizer": self.fused_optimizer,
            "compile": self.compile_mode if self.compile else "off",
            "cudnn_benchmark": self.cudnn_benchmark,
        }


def auto_precision(device: torch.device) -> str:
    """``--precision auto`` on ``device``: fastcam.accelerator.default_amp_precision
    (fp16 on CUDA, bf16 on ROCm/XPU and on CPUs with native bf16). The CPU probe
    is looked up here, so tests can fake this module's ``cpu_has_native_bf16``."""
    return default_amp_precision(device, native_bf16=cpu_has_native_bf16() if device.type == "cpu" else None)


def resolve_execution(config: Config, device: torch.device) -> Execution:
    opt = config.optimizations
    precision = opt.precision
    if precision == "auto":
        precision = auto_precision(device)
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    # inductor on a 2-core CPU takes minutes and wins little: auto = accelerators only
    # (its Triton kernels serve CUDA, ROCm and XPU).
    compile_ = opt.compile == "on" or (opt.compile == "auto" and device.type != "cpu")
    # torch.backends.cudnn drives cuDNN on CUDA and MIOpen on ROCm (both device type cuda).
    cudnn_benchmark = opt.cudnn_benchmark and device.type == "cuda"
    return Execution(
        device=device,
        channels_last=opt.channels_last,
        autocast_dtype=dtype,
        grad_scaler=dtype is torch.float16,
        fused_optimizer=opt.fused_optimizer,
        compile=compile_,
        compile_mode=opt.compile_mode,
        cudnn_benchmark=cudnn_benchmark,
        # The reference autotunes inside its first timed steps; a warm-up is an
        # optimization, so the reference's own execution (all_off) never gets one.
        warm_up=compile_ or (cudnn_benchmark and not opt.all_off()),
        fast_ddp=not opt.all_off(),
    )


def place_model(model: torch.nn.Module, execution: Execution) -> torch.nn.Module:
    """Steps 1-2: global switches, device and memory format."""
    torch.backends.cudnn.benchmark = execution.cudnn_benchmark
    return model.to(device=execution.device, memory_format=execution.memory_format)


def compile_model(model: torch.nn.Module, execution: Execution) -> torch.nn.Module:
    """Step 6."""
    if not execution.compile:
        return model
    return torch.compile(model, mode=execution.compile_mode)


def place_batch(inputs: torch.Tensor, labels: torch.Tensor, execution: Execution):
    # Asynchronous copies from (pinned) host memory to any accelerator; a CPU "copy" is a no-op.
    non_blocking = execution.device.type != "cpu"
    # The staged loader delivers float16; without autocast the fp32 network needs fp32 inputs.
    dtype = torch.float32 if execution.autocast_dtype is None else None
    inputs = inputs.to(execution.device, dtype=dtype, non_blocking=non_blocking)
    inputs = inputs.contiguous(memory_format=execution.memory_format)
    return inputs, labels.to(execution.device, non_blocking=non_blocking)
