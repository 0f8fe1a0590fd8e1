"""GPU check part ``eager``: training steps of the baseline and of the optimized
execution without compile, at full size (768x1152, local batch 8) on synthetic
tensors (the run is planned on the check's synthetic data set, which fixes the
sample shape; the loader and epoch parts reuse that set).

Per mode: ms/step and samples/s over ``steps`` timed steps after ``warmup``
untimed ones (cuDNN autotuning happens there), peak device memory, and host
syncs per step. Syncs are counted over 1 and over 2 steps of the trainer's
loop (the counts are deterministic): the difference is what every step costs,
the rest is the per-epoch overhead (the loop reads the epoch's loss and IoU
once at its end).
"""

from __future__ import annotations

import common
import dataset
from report import Report, Settings, main, say

from fastcam.hostsync import SyncCount

MODES = ("baseline", "optimized")


def run(report: Report, settings: Settings) -> None:
    data = prepare(report, settings)
    for mode in MODES:
        report.attempt(mode, lambda mode=mode: measure(report, settings, data, mode, compile_backend=None))


def prepare(report: Report, settings: Settings):
    data, synth_s = dataset.ensure(settings)
    report.set_info(data=str(data), synth_s=synth_s)
    return data


def measure(report: Report, settings: Settings, data, mode: str, compile_backend: str | None) -> common.Run:
    """Shared with the compiled part: build, (warm up,) time, count syncs; returns the warm run."""
    s = settings.size
    run = common.build(mode, settings, data, compile_backend=compile_backend)
    report.record(mode, execution=run.switches(), optimizer=run.config.hyperparameters.optimizer)
    common.reset_peak(run.device)
    if compile_backend is not None:
        say(f"{mode}: compiling ({compile_backend}) through the trainer's warm-up")
        report.record(mode, warmup_s=common.warm_up(run))
        say(f"{mode}: warm-up {report.data['results'][mode]['warmup_s']:.1f} s")
    batch = common.synthetic_batch(run)
    common.train(run, [batch] * s.warmup)
    seconds, samples = common.timed_train(run, [batch] * s.steps)
    report.record(mode, ms_per_step=1000 * seconds / s.steps, samples_per_s=samples / seconds,
                  timed_steps=s.steps, peak_memory_gb=common.peak_gb(run.device))
    say(f"{mode}: {1000 * seconds / s.steps:.1f} ms/step, {samples / seconds:.1f} samples/s")
    counts = {}
    for steps in (1, 2):
        with SyncCount(run.device) as counter:
            common.train(run, [batch] * steps)
        counts[steps] = counter.count
    per_step = counts[2] - counts[1]
    report.record(mode, syncs_per_step=per_step, syncs_per_epoch_call=counts[1] - per_step,
                  sync_method=counter.method)
    say(f"{mode}: {per_step:g} host syncs per step, {counts[1] - per_step:g} per epoch")
    return run


if __name__ == "__main__":
    main("eager", run)
