"""GPU check part ``epoch``: a whole-epoch proxy, loader + training step + evaluation.

For the baseline (reference HDF5 loader, fp32, eager) and the optimized recipe
(staged loader, fp16, compiled where the compiled part succeeded), each built
as the trainer builds it and warmed up by the trainer's warm-up: 2 training
epochs (1 in the CPU smoke mode) over the data set's training shard
(samples/s per epoch; the first includes the loader's start-up, the last is
the steady figure), then one evaluation pass over the validation set at
batch size 1 (samples/s).

Compile: ``FASTCAM_CHECK_EPOCH_COMPILE`` (auto, on, off). auto compiles on CUDA
only when ``$OUT/compiled.json`` holds the compiled part's warm-up time, because
then the shared inductor cache is warm; a cold compile of the full network takes
76-158 s on an H100 (shared/notes/gpu-machine.md) and would not fit.
"""

from __future__ import annotations

import json
import os

import common
import dataset
from report import Report, Settings, main, say

MODES = ("baseline", "optimized")


def run(report: Report, settings: Settings) -> None:
    data, synth_s = dataset.ensure(settings)
    root, stage_s = common.stage(settings, data)
    report.record("data", path=str(data), synth_s=synth_s, staging_s=stage_s, cache=str(root))
    for mode in MODES:
        report.attempt(mode, lambda mode=mode: measure(report, settings, mode, data, root))


def compile_switch(settings: Settings) -> tuple[str, str]:
    """(the optimized recipe's compile switch, why)."""
    asked = os.environ.get("FASTCAM_CHECK_EPOCH_COMPILE", "auto")
    if asked not in ("auto", "on", "off"):
        raise RuntimeError(f"FASTCAM_CHECK_EPOCH_COMPILE must be auto, on or off, got {asked!r}")
    if asked != "auto" or settings.smoke:
        return asked, "FASTCAM_CHECK_EPOCH_COMPILE" if asked != "auto" else "the recipe's auto (CUDA only)"
    try:
        compiled = json.loads((settings.out / "compiled.json").read_text())
    except (OSError, ValueError):
        compiled = {}
    if "warmup_s" in compiled.get("results", {}).get("optimized", {}):
        return "auto", "the compiled part's warm-up finished: the inductor cache is warm"
    return "off", "the compiled part's warm-up did not finish: a cold compile would not fit in this part's limit"


def measure(report: Report, settings: Settings, mode: str, data, root) -> None:
    switch, why = compile_switch(settings) if mode == "optimized" else ("off", "baseline")
    run = common.build(mode, settings, data, compile=switch)
    report.record(mode, execution=run.switches(), loader=run.config.optimizations.loader, compile_reason=why)
    loaders = common.loaders(run)
    say(f"{mode}: warming up ({run.switches()['compile']})")
    report.record(mode, warmup_s=common.warm_up(run))
    per_epoch = []
    for epoch in range(settings.size.epochs):
        seconds, samples = common.timed_train(run, common.train_loader(loaders, epoch))
        per_epoch.append(samples / seconds)
        report.record(mode, train_samples_per_s=per_epoch[-1], train_samples_per_s_by_epoch=per_epoch,
                      train_samples_per_epoch=samples)
        say(f"{mode}: epoch {epoch + 1}: {samples / seconds:.1f} training samples/s")
    seconds, samples, _iou = common.timed_evaluate(run, loaders.validation)
    report.record(mode, eval_samples_per_s=samples / seconds, eval_samples=samples)
    say(f"{mode}: evaluation {samples / seconds:.1f} samples/s over {samples} samples")


if __name__ == "__main__":
    main("epoch", run)
