"""The GPU check's one adapter to fastcam's training internals.

Every part that builds a run, steps it, evaluates it or stages its data goes
through this module, so that a change of the training spine (issue 12: a
``fastcam.train.Trainer`` with ``train_step``) is adapted here only. It uses
the trainer's own pieces -- ``fastcam.config.recipe``,
``fastcam.train.setup.build_components``/``warm_up``, ``fastcam.train.loop``,
``fastcam.train.inputs`` -- and never ``fastcam.train.trainer``, which imports
mlperf_logging (not installed on the GPU machine).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from fastcam.config import Config, recipe
from fastcam.distributed import init_distributed
from fastcam.train import inputs, setup
from fastcam.train.loop import StepState, evaluate, train_epoch
from fastcam.train.optim import build_optimizer

from report import Settings

CHANNELS = 16


@dataclass
class Run:
    """A built run: the trainer's components plus what the parts need beside them."""

    mode: str
    config: Config
    ctx: object
    parts: setup.Components
    input_dtype: torch.dtype  # what the run's loader delivers (float16 for the staged cache)
    compile_backend: str | None  # None: eager

    @property
    def device(self) -> torch.device:
        return self.parts.execution.device

    def switches(self) -> dict:
        switches = self.parts.execution.switches()
        if self.compile_backend not in (None, "inductor"):
            switches["compile"] = f"backend {self.compile_backend}"
        return switches


def device(settings: Settings) -> torch.device:
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available; FASTCAM_CHECK_DEVICE=cpu runs the CPU smoke mode")
    return torch.device(settings.device)


def config(mode: str, settings: Settings, *, compile: str = "off", data: Path | None = None) -> Config:
    """The published recipe of ``mode`` at the check's batch size; ``compile`` as the
    optimized recipe's switch (auto: on for CUDA). ``data`` points the run at a data set,
    with its staged cache under the work directory (shared by the loader and epoch parts)."""
    cfg = recipe(mode)
    cfg.run.device = settings.device
    cfg.run.seed = 1
    cfg.run.max_inter_threads = settings.size.workers
    cfg.hyperparameters.local_batch_size = settings.size.batch
    if mode == "optimized":
        cfg.optimizations.compile = compile
    if data is not None:
        cfg.run.data_dir_prefix = str(data)
        cfg.run.stage_dir = str(settings.work / "staged")
        cfg.run.output_dir = str(settings.work / "runs")
    return cfg.validate()


def build(mode: str, settings: Settings, *, compile_backend: str | None = None, data: Path | None = None,
          compile: str | None = None) -> Run:
    """Build ``mode``'s components the way the trainer does. ``compile_backend``
    "inductor" compiles through the trainer's own switch; another backend
    (aot_eager: the CPU smoke mode, where inductor on 2 cores takes minutes)
    wraps the built network in ``torch.compile(backend=...)`` instead.
    ``compile`` sets the recipe's switch directly (auto/on/off) when given."""
    torch.manual_seed(1)
    dev = device(settings)
    switch = compile or ("on" if compile_backend == "inductor" else "off")
    cfg = config(mode, settings, compile=switch, data=data)
    ctx = init_distributed("single", dev.type)
    parts = setup.build_components(cfg, ctx, dev)
    if compile_backend not in (None, "inductor"):
        parts.net = torch.compile(parts.net, backend=compile_backend)
    backend = "inductor" if parts.execution.compile else compile_backend
    return Run(mode, cfg, ctx, parts, inputs.input_dtype(cfg), backend)


def synthetic_batch(run: Run, settings: Settings, batch: int | None = None):
    """A random batch as the run's loader delivers it (dtype, channels-last)."""
    s = settings.size
    x, y, names = setup.synthetic_batch(batch or s.batch, CHANNELS, s.height, s.width, run.device, run.input_dtype)
    if run.parts.execution.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y, names


def warm_up(run: Run, settings: Settings) -> float:
    """The trainer's warm-up (compile and autotune on random tensors, state restored); seconds."""
    s = settings.size
    return setup.warm_up(run.parts, run.ctx, batch_size=s.batch, channels=CHANNELS, height=s.height,
                         width=s.width, input_dtype=run.input_dtype)


def train(run: Run, batches: Iterable, steps: int | None = None):
    """Training steps through the trainer's loop over ``batches`` (all of them, or
    the first ``steps``); returns its EpochResult."""
    c = run.parts
    if steps is not None:
        batches = itertools.islice(iter(batches), steps)
    return train_epoch(c.net, batches, criterion=c.criterion, optimizer=c.optimizer, scheduler=c.scheduler,
                       grad_scaler=c.scaler, execution=c.execution, ctx=run.ctx, state=StepState(),
                       accumulation=1, logging_frequency=0)


def timed_train(run: Run, batches: Iterable, steps: int | None = None) -> tuple[float, int]:
    """(seconds, samples) of :func:`train`, the device synchronised on both ends."""
    sync(run.device)
    start = time.perf_counter()
    result = train(run, batches, steps)
    sync(run.device)
    return time.perf_counter() - start, result.samples


def timed_evaluate(run: Run, loader) -> tuple[float, int, float]:
    """(seconds, samples, mean IoU) of the trainer's evaluation pass over ``loader``."""
    c = run.parts
    sync(run.device)
    start = time.perf_counter()
    iou, _loss, samples = evaluate(c.net, loader, criterion=c.criterion, execution=c.execution, ctx=run.ctx)
    sync(run.device)
    return time.perf_counter() - start, samples, iou


def stage(run: Run) -> Path:
    """Stage the run's data set as the trainer does (a complete cache is reused); its directory."""
    root = inputs.stage_inputs(run.config, run.ctx, say=lambda _message: None)
    return root if root is not None else inputs.stage_root(run.config, run.ctx.rank, run.ctx.world_size)


def loaders(run: Run, staged: Path | None):
    """The run's training and validation loaders (reference HDF5 or staged)."""
    return inputs.build_loaders(run.config, run.ctx, run.device, 1, staged)


def optimizer(name: str, params, *, fused: bool) -> torch.optim.Optimizer:
    """An optimizer as the runs build it (the optimized recipe's LAMB settings)."""
    return build_optimizer(params, name, 0.00155, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, fused=fused)


def model(dev: torch.device, channels_last: bool) -> torch.nn.Module:
    from fastcam.data.layout import NUM_CLASSES
    from fastcam.model import build_model

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return build_model(CHANNELS, NUM_CLASSES).to(device=dev, memory_format=fmt)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gb(dev: torch.device) -> float | None:
    """Peak allocated device memory; None on the CPU (a process RSS would not be comparable)."""
    return torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None
