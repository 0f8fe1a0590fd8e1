"""The run plan: every derived fact of a run, resolved once after rank wire-up.

The config says what the user asked for; the plan says what this process will
do: on which device, with which execution switches, for how many ranks, with
what global batch and steps per epoch, how many loader workers, what input
dtype the loader delivers, which data, and where the log and the stage cache
go. Nothing downstream re-derives these (``fastcam train``, ``bench`` and
``tune`` all build their Trainer from a plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fastcam import guard
from fastcam.accelerator import resolve_device
from fastcam.config import CACHED_LOADERS, Config
from fastcam.data import layout
from fastcam.train.execution import Execution, resolve_execution


@dataclass(frozen=True)
class RunPlan:
    config: Config  # as resolved: the local batch derived from --global_batch_size
    device: torch.device
    execution: Execution
    rank: int
    world_size: int
    global_batch_size: int  # local batch x ranks x gradient accumulation
    eval_batch_size: int  # validation samples per rank per step (the reference: 1)
    loader_workers: int  # the reference: min(max_inter_threads, local batch); staged: reader threads
    input_dtype: torch.dtype  # what the loader delivers (the stage cache: --stage_dtype)
    data_dir: Path
    train_samples: int  # files in the whole training set (the MLPerf train_samples)
    validation_samples: int
    sample_shape: tuple[int, int]  # H, W
    steps_per_epoch: int  # optimizer steps per epoch on every rank (drop-last sharding)
    log_path: Path
    stage_root: Path | None  # this rank's node-local cache (cached loaders only)

    @property
    def hyperparameters(self):
        return self.config.hyperparameters

    @property
    def run(self):
        return self.config.run


STAGE_TORCH_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def reader_threads(max_inter_threads: int) -> int:
    """The stage-cache readers' threads: ``max_inter_threads`` (the loader
    workers, a mutable setting), at least 2."""
    return max(2, max_inter_threads)


def log_path_for(config: Config) -> Path:
    return Path(config.run.output_dir) / "logs" / f"{config.run.run_tag}.log"


def stage_root_for(config: Config, rank: int, world_size: int) -> Path:
    base = Path(config.run.stage_dir) if config.run.stage_dir else Path(config.run.output_dir) / "staged"
    # A float32 cache beside a float16 one, not over it: runs of both kinds share a stage_dir.
    suffix = "" if config.optimizations.stage_dtype == "fp16" else f"-{config.optimizations.stage_dtype}"
    return base / f"rank{rank:05d}-of-{world_size:05d}{suffix}"


def resolve_plan(config: Config, ctx, device: torch.device | None = None,
                 data_dir: str | Path | None = None) -> RunPlan:
    """``device`` defaults to the config's for this rank; ``data_dir`` to the
    config's (or the cached default data set when it names none)."""
    from fastcam.data.reader import sample_shape

    # A fixed global batch becomes this world size's local batch here, once.
    config = guard.resolve_global_batch(config, ctx.world_size)
    hp, run = config.hyperparameters, config.run
    device = device if device is not None else resolve_device(run.device, ctx.local_rank)
    execution = resolve_execution(config, device)
    if data_dir is None:
        data_dir = run.data_dir_prefix
    if data_dir is None:
        from fastcam.train.default_data import default_dataset

        data_dir = default_dataset()
    data_dir = Path(data_dir)
    train_files = layout.list_files(data_dir, "train")
    validation_files = layout.list_files(data_dir, "validation")
    height, width, _ = sample_shape(train_files[0])
    cached = config.optimizations.loader in CACHED_LOADERS
    per_rank_batches = len(train_files) // ctx.world_size // hp.local_batch_size
    return RunPlan(
        config=config, device=device, execution=execution, rank=ctx.rank, world_size=ctx.world_size,
        global_batch_size=hp.local_batch_size * ctx.world_size * hp.gradient_accumulation_frequency,
        eval_batch_size=config.optimizations.local_batch_size_validation or hp.local_batch_size,
        loader_workers=reader_threads(run.max_inter_threads) if cached else min(run.max_inter_threads,
                                                                                 hp.local_batch_size),
        input_dtype=STAGE_TORCH_DTYPES[config.optimizations.stage_dtype] if cached else torch.float32,
        data_dir=data_dir, train_samples=len(train_files), validation_samples=len(validation_files),
        sample_shape=(height, width), steps_per_epoch=per_rank_batches // hp.gradient_accumulation_frequency,
        log_path=log_path_for(config),
        stage_root=stage_root_for(config, ctx.rank, ctx.world_size) if cached else None,
    )
