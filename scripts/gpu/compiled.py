"""GPU check part ``compiled``: the optimized execution compiled, at full size.

Same measurement as the eager part (built by the trainer's own compile switch,
warmed up by the trainer's warm-up, whose seconds are the compile time), then
the graphs and graph breaks dynamo made, then a short ``torch.profiler`` run:
the top kernels by device time per step (on the CPU: top ops by self CPU
time). The JSON is written before profiling and again after it, so a profiler
crash keeps the step figures.

``FASTCAM_CHECK_COMPILE_BACKEND`` overrides the backend: inductor on CUDA,
aot_eager in the CPU smoke mode (the first 64x96 training step of the full
network took 115 s with inductor and 12 s with aot_eager on the 2-core CI
machine, measured), which still runs dynamo and AOTAutograd, the steps where
graph breaks and recompiles start.
"""

from __future__ import annotations

import os

import common
import eager
import torch
from report import Report, Settings, main, say

MODE = "optimized"
PROFILED_STEPS = 3
TOP = 15


def run(report: Report, settings: Settings) -> None:
    backend = os.environ.get("FASTCAM_CHECK_COMPILE_BACKEND") or ("aot_eager" if settings.smoke else "inductor")
    report.set_info(compile_backend=backend)
    data = eager.prepare(report, settings)
    run = eager.measure(report, settings, data, MODE, compile_backend=backend)
    report.record("dynamo", **_dynamo_counters())
    report.attempt("profile", lambda: profile(report, settings, run))


def profile(report: Report, settings: Settings, run: common.Run) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    batch = common.synthetic_batch(run)
    cuda = run.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    report.record("profile", status="running", steps=PROFILED_STEPS)
    with torch_profile(activities=activities) as prof:
        common.train(run, [batch] * PROFILED_STEPS)
        common.sync(run.device)
    events = list(prof.key_averages())
    if cuda:
        kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        attribute = "self_device_time_total"
        events, ranked_by = (kernels, "device time of CUDA kernels") if kernels else (events, "self device time")
    else:
        attribute, ranked_by = "self_cpu_time_total", "self CPU time of ops"
    total = sum(getattr(e, attribute) for e in events) or 1.0
    top = sorted(events, key=lambda e: getattr(e, attribute), reverse=True)[:TOP]
    rows = [{"name": e.key[:160], "calls_per_step": e.count / PROFILED_STEPS,
             "ms_per_step": getattr(e, attribute) / 1000 / PROFILED_STEPS,
             "percent": 100 * getattr(e, attribute) / total} for e in top]
    report.record("profile", status="done", ranked_by=ranked_by, total_ms_per_step=total / 1000 / PROFILED_STEPS,
                  top=rows)
    for row in rows[:5]:
        say(f"profile: {row['percent']:5.1f}%  {row['ms_per_step']:8.2f} ms  {row['name'][:80]}")


def _dynamo_counters() -> dict:
    """How many graphs dynamo compiled and why it broke graphs (torch._dynamo.utils.counters)."""
    from torch._dynamo.utils import counters

    breaks = counters.get("graph_break", {})
    return {"unique_graphs": counters.get("stats", {}).get("unique_graphs"),
            "graph_breaks": sum(breaks.values()), "graph_break_reasons": [str(r)[:200] for r in list(breaks)[:10]]}


if __name__ == "__main__":
    main("compiled", run)
