"""Choose and build the input pipeline of a run.

``hdf5`` is the reference's per-sample HDF5 reader (fastcam.data.reader), the
baseline's loader. ``staged`` first stages this rank's shards to node-local
disk as float16/uint8 (fastcam.data.stage), logged between ``staging_start``
and ``staging_stop`` before ``run_start`` (allowed outside the timed region
since MLPerf HPC ruleset 3.0.0), then reads them with fastcam.data.staged.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastcam.config import Config
from fastcam.data import layout
from fastcam.data.reader import Loaders, build_reference_loaders


def input_dtype(config: Config) -> torch.dtype:
    """What the run's loader delivers: the staged cache holds float16."""
    return torch.float16 if config.optimizations.loader == "staged" else torch.float32


def stage_root(config: Config, rank: int, world_size: int) -> Path:
    base = Path(config.run.stage_dir) if config.run.stage_dir else Path(config.run.output_dir) / "staged"
    return base / f"rank{rank:05d}-of-{world_size:05d}"


def stage_inputs(config: Config, ctx, logger=None, say=print) -> Path | None:
    """Stage this rank's shards when the staged loader is used; returns the cache
    directory (None for the HDF5 loader). Logged between ``staging_start`` and
    ``staging_stop``; the trainer calls this before ``init_start``, because
    staging the real set can take longer than the 30 minutes the checker allows
    between ``init_start`` and ``init_stop``."""
    if config.optimizations.loader != "staged":
        return None
    from fastcam import distributed
    from fastcam.data.stage import stage_dataset

    run = config.run
    root = stage_root(config, ctx.rank, ctx.world_size)
    distributed.barrier(ctx)
    if logger is not None:
        logger.start("staging_start")
    summary = stage_dataset(run.data_dir_prefix, root, rank=ctx.rank, world_size=ctx.world_size,
                            workers=max(1, run.max_inter_threads), progress=ctx.is_main,
                            channels=config.hyperparameters.channels)
    distributed.barrier(ctx)
    if logger is not None:
        logger.end("staging_stop", metadata={"staging_duration": round(summary.seconds, 3)})
    say(f"staged this rank's shards to {root} in {summary.seconds:.1f} s")
    return root


def build_loaders(config: Config, ctx, device: torch.device, seed: int, staged_root: Path | None) -> Loaders:
    """The reference HDF5 loaders (whose order, like the reference's, ignores
    ``seed``), or the staged ones reading ``staged_root`` (shuffled by ``seed``)."""
    hp, run = config.hyperparameters, config.run
    if config.optimizations.loader == "hdf5":
        return build_reference_loaders(run.data_dir_prefix, local_batch_size=hp.local_batch_size,
                                       workers=run.max_inter_threads, rank=ctx.rank, world_size=ctx.world_size,
                                       channels=hp.channels, pin_memory=device.type == "cuda")
    from fastcam.data.staged import build_staged_loaders

    # max_inter_threads (the loader workers, a mutable setting) sets the reader threads.
    train, validation = build_staged_loaders(staged_root, local_batch_size=hp.local_batch_size, seed=seed,
                                             device=device, threads=max(2, run.max_inter_threads))
    # The MLPerf sample counts are the data set's, not this rank's shard.
    return Loaders(train, validation, train, len(layout.list_files(run.data_dir_prefix, "train")),
                   len(layout.list_files(run.data_dir_prefix, "validation")), (train.height, train.width),
                   input_dtype=input_dtype(config))
