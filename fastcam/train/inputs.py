"""Choose and build the input pipeline of a run (from its plan).

``hdf5`` is the reference's per-sample HDF5 reader (fastcam.data.reader), the
baseline's loader. ``staged`` and ``dali`` first stage this rank's shards to
node-local disk as float16 (or float32: --stage_dtype)/uint8 (fastcam.data.stage), logged between
``staging_start`` and ``staging_stop`` before ``init_start`` (allowed outside
the timed region since MLPerf HPC ruleset 3.0.0), then read them with
fastcam.data.staged or NVIDIA DALI (fastcam.data.dali).
"""

from __future__ import annotations

from pathlib import Path

from fastcam import accelerator
from fastcam.data.reader import Loaders, build_reference_loaders
from fastcam.train.plan import RunPlan


def stage_inputs(plan: RunPlan, ctx, logger=None, say=print) -> Path | None:
    """Stage this rank's shards when a cached loader is used; returns the cache
    directory (None for the HDF5 loader). The trainer calls this before
    ``init_start``: staging the real set can take longer than the 30 minutes
    the checker allows between ``init_start`` and ``init_stop``."""
    if plan.stage_root is None:
        return None
    from fastcam import distributed
    from fastcam.data.stage import stage_dataset

    distributed.barrier(ctx, long_wait=True)  # the slowest rank's staging may take long
    if logger is not None:
        logger.start("staging_start")
    summary = stage_dataset(plan.data_dir, plan.stage_root, rank=ctx.rank, world_size=ctx.world_size,
                            workers=max(1, plan.run.max_inter_threads), progress=ctx.is_main,
                            channels=plan.hyperparameters.channels, verify=plan.run.verify_cache,
                            dtype=plan.config.optimizations.stage_dtype)
    distributed.barrier(ctx, long_wait=True)  # the slowest rank's staging may take long
    if logger is not None:
        logger.end("staging_stop", metadata={"staging_duration": round(summary.seconds, 3)})
    say(f"staged this rank's shards to {plan.stage_root} in {summary.seconds:.1f} s")
    return plan.stage_root


def build_loaders(plan: RunPlan, ctx, seed: int) -> Loaders:
    """The reference HDF5 loaders (whose order, like the reference's, ignores
    ``seed``), or the cached ones reading the plan's stage root (shuffled by ``seed``)."""
    hp, loader = plan.hyperparameters, plan.config.optimizations.loader
    if loader == "hdf5":
        return build_reference_loaders(plan.data_dir, local_batch_size=hp.local_batch_size,
                                       workers=plan.run.max_inter_threads, rank=ctx.rank, world_size=ctx.world_size,
                                       channels=hp.channels, pin_memory=accelerator.pin_memory(plan.device),
                                       validation_batch_size=plan.eval_batch_size)
    if loader == "dali":
        from fastcam.data.dali import build_dali_loaders as build
    else:
        from fastcam.data.staged import build_staged_loaders as build
    train, validation = build(plan.stage_root, local_batch_size=hp.local_batch_size, seed=seed,
                              device=plan.device, threads=plan.loader_workers,
                              validation_batch_size=plan.eval_batch_size)
    # The MLPerf sample counts are the data set's, not this rank's shard.
    return Loaders(train, validation, train, plan.train_samples, plan.validation_samples, plan.sample_shape,
                   input_dtype=plan.input_dtype)
