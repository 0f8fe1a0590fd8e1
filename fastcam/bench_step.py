"""``fastcam bench``'s step part: ``Trainer.train_step`` of every mode, timed interleaved.

The modes' steps alternate (baseline, optimized, baseline, ...) instead of one
mode's steps after the other's: on a shared or throttling machine the speed
drifts over a run (2026-12-01 on the 2-core machine: the baseline step went
from 1.7 to 2.5 s and back within 23 steps), and a ratio of two measurements
taken a minute apart measures the drift as much as the code. Interleaved, a
slow period slows both. Each step is timed on its own between device
synchronisations; ``ms_per_step`` is the median (the statistic the ESIF-HPC-4
scenario draft scores step time by), with the mean and the fastest beside it.
Both trainers stay in memory for the timed loop.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

FLOP_PER_FULL_SAMPLE = 1.97e12  # forward + backward, 768x1152 (shared/spec/model.md)
FULL_AREA = 768 * 1152


@dataclass
class _Prepared:
    trainer: object
    inputs: object
    labels: object
    facts: dict


def bench_steps(configs: dict, ctx, device, data, args, make_trainer, sync, reset_peak, peak_gb) -> dict:
    """{mode: measurements} for every mode in ``configs``, timed interleaved."""
    prepared = {mode: _prepare(config, ctx, device, data, args, make_trainer, sync, reset_peak, peak_gb)
                for mode, config in configs.items()}
    times: dict[str, list[float]] = {mode: [] for mode in prepared}
    for _ in range(args.steps):
        for mode, run in prepared.items():
            sync(device)
            start = time.perf_counter()
            run.trainer.train_step(run.inputs, run.labels)
            sync(device)
            times[mode].append(time.perf_counter() - start)
    flop = FLOP_PER_FULL_SAMPLE * args.height * args.width / FULL_AREA
    out = {}
    for mode, run in prepared.items():
        batch = configs[mode].hyperparameters.local_batch_size
        median = statistics.median(times[mode])
        samples_per_s = batch / median
        out[mode] = {"samples_per_s": samples_per_s, "ms_per_step": 1000 * median,
                     "mean_ms_per_step": 1000 * statistics.fmean(times[mode]),
                     "min_ms_per_step": 1000 * min(times[mode]),
                     "tflops": samples_per_s * flop / 1e12, "timing": "median of interleaved steps",
                     **run.facts}
    return out


def _prepare(config, ctx, device, data, args, make_trainer, sync, reset_peak, peak_gb) -> _Prepared:
    from fastcam.hostsync import SyncCount
    from fastcam.train.optim import optimizer_implementation

    trainer = make_trainer(config, ctx, device, data)
    reset_peak(device)
    warmup_s = trainer.warm_up() if trainer.execution.warm_up else None
    inputs, labels, _ = trainer.synthetic_batch(config.hyperparameters.local_batch_size)
    for _ in range(args.warmup):
        trainer.train_step(inputs, labels)
    with SyncCount(device) as syncs:  # counted apart: the dispatch mode slows the step
        trainer.train_step(inputs, labels)
    sync(device)
    facts = {"peak_memory_gb": peak_gb(device), "warmup_s": warmup_s, "host_syncs_per_step": syncs.count,
             "host_sync_method": syncs.method, "optimizer_implementation": optimizer_implementation(trainer.optimizer),
             "execution": trainer.execution.switches()}
    return _Prepared(trainer, inputs, labels, facts)
