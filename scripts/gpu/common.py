"""The GPU check's one adapter to fastcam's training internals.

Every part that builds a run, steps it, evaluates it or stages its data goes
through this module, so that a change of the training spine is adapted here
only. It uses the trainer's own pieces -- ``fastcam.config.recipe``, the run
plan (``fastcam.train.plan.resolve_plan``), ``fastcam.train.Trainer``
(train_step/train_epoch, evaluate, warm_up, synthetic_batch) and
``fastcam.train.inputs`` -- and never the MLPerf-logging run driver, as the GPU
machine has no mlperf_logging.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import tree  # noqa: F401  (first: resolves fastcam's mapped packages from the working tree)
from report import Settings

from fastcam.config import Config, recipe
from fastcam.distributed import init_distributed
from fastcam.train import inputs
from fastcam.train.optim import build_optimizer
from fastcam.train.plan import RunPlan, resolve_plan
from fastcam.train.trainer import Trainer

CHANNELS = 16


@dataclass
class Run:
    """A built run: its plan, its Trainer, and how it was compiled."""

    mode: str
    plan: RunPlan
    ctx: object
    trainer: Trainer
    compile_backend: str | None  # None: eager

    @property
    def device(self) -> torch.device:
        return self.plan.device

    @property
    def config(self) -> Config:
        return self.plan.config

    def switches(self) -> dict:
        switches = self.plan.execution.switches()
        if self.compile_backend not in (None, "inductor"):
            switches["compile"] = f"backend {self.compile_backend}"
        return switches


def device(settings: Settings) -> torch.device:
    return torch.device(settings.device)  # its presence was checked by report.main


def config(mode: str, settings: Settings, *, compile: str = "off") -> Config:
    """The published recipe of ``mode`` at the check's batch size, its stage cache
    and outputs under the work directory (shared by the loader and epoch parts);
    ``compile`` is the optimized recipe's switch (auto: on for CUDA)."""
    changes = {"run": {"device": settings.device, "seed": 1, "max_inter_threads": settings.size.workers,
                       "stage_dir": str(settings.work / "staged"), "output_dir": str(settings.work / "runs")},
               "hyperparameters": {"local_batch_size": settings.size.batch}}
    if mode == "optimized":
        changes["optimizations"] = {"compile": compile}
    return recipe(mode).replace(**changes)


def _plan(cfg: Config, settings: Settings, data: Path):
    dev = device(settings)
    ctx = init_distributed("single", dev.type)
    return resolve_plan(cfg, ctx, dev, data), ctx


def build(mode: str, settings: Settings, data: Path, *, compile_backend: str | None = None,
          compile: str | None = None) -> Run:
    """Plan and build ``mode`` on ``data`` the way ``fastcam train`` does.
    ``compile_backend`` "inductor" compiles through the recipe's own switch;
    another backend (aot_eager: the CPU smoke mode, where inductor on 2 cores
    takes minutes) wraps the built network in ``torch.compile(backend=...)``.
    ``compile`` sets the recipe's switch directly (auto/on/off) when given."""
    torch.manual_seed(1)
    switch = compile or ("on" if compile_backend == "inductor" else "off")
    plan, ctx = _plan(config(mode, settings, compile=switch), settings, data)
    trainer = Trainer(plan, ctx)
    if compile_backend not in (None, "inductor"):
        trainer.net = torch.compile(trainer.net, backend=compile_backend)
    backend = "inductor" if plan.execution.compile else compile_backend
    return Run(mode, plan, ctx, trainer, backend)


def synthetic_batch(run: Run):
    """A random batch of the plan's shape and dtype, channels-last where the run is
    (as the staged loader delivers it), so the timed step does not convert it."""
    x, y, names = run.trainer.synthetic_batch(run.plan.hyperparameters.local_batch_size)
    if run.plan.execution.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y, names


def warm_up(run: Run) -> float:
    """The trainer's warm-up (compile and autotune on random tensors, state restored); seconds."""
    return run.trainer.warm_up()


def train(run: Run, batches: Iterable, steps: int | None = None):
    """Training steps through the trainer's epoch loop over ``batches`` (all of
    them, or the first ``steps``); returns its EpochResult."""
    if steps is not None:
        batches = itertools.islice(iter(batches), steps)
    return run.trainer.train_epoch(batches)


def timed_train(run: Run, batches: Iterable, steps: int | None = None) -> tuple[float, int]:
    """(seconds, samples) of :func:`train`, the device synchronised on both ends."""
    sync(run.device)
    start = time.perf_counter()
    result = train(run, batches, steps)
    sync(run.device)
    return time.perf_counter() - start, result.samples


def timed_evaluate(run: Run, loader) -> tuple[float, int, float]:
    """(seconds, samples, mean IoU) of the trainer's evaluation pass over ``loader``."""
    sync(run.device)
    start = time.perf_counter()
    result = run.trainer.evaluate(loader)
    sync(run.device)
    return time.perf_counter() - start, result.samples, result.iou


def stage(settings: Settings, data: Path) -> tuple[Path, float]:
    """Stage ``data`` as an optimized run does (a complete cache is reused): (cache directory,
    seconds). The epoch part's optimized run plans the same cache directory."""
    plan, ctx = _plan(config("optimized", settings), settings, data)
    start = time.perf_counter()
    root = inputs.stage_inputs(plan, ctx, say=lambda _message: None)
    return root, time.perf_counter() - start


def loaders(run: Run):
    """The run's training and validation loaders (reference HDF5, or its staged cache)."""
    return inputs.build_loaders(run.plan, run.ctx, seed=1)


def train_loader(loaders, epoch: int):
    """The training loader reshuffled for ``epoch``, as the trainer does before each epoch."""
    loaders.set_epoch(epoch)
    return loaders.train


def optimizer(name: str, params, *, fused: bool) -> torch.optim.Optimizer:
    """An optimizer as the runs build it (the optimized recipe's LAMB settings)."""
    return build_optimizer(params, name, 0.00155, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, fused=fused)


def optimizer_implementation(opt: torch.optim.Optimizer) -> str:
    from fastcam.train.optim import optimizer_implementation as name

    return name(opt)


def triton_lamb(params):
    """A maker of fastcam.kernels' Triton LAMB over ``params`` (the optimized recipe's
    settings), or None when triton is not importable."""
    from fastcam.kernels import triton_available

    if not triton_available():
        return None
    from fastcam.kernels.lamb import TritonLamb

    return lambda: TritonLamb(params, lr=0.00155, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)


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
