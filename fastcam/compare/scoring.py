"""Scoring a set of repeated runs as the rules profile says, and the RCP verdict.

- ``olympic_mean`` (MLPerf HPC): the runs' times sorted, a run that did not
  converge counting as the slowest; the fastest and the slowest dropped, the
  rest averaged; at most ``max_unconverged`` (1) runs may fail to converge
  (mlperf_logging result_summarizer ``_compute_olympic_average``). The score
  is then multiplied by the RCP normalisation factor ``max(1, RCP mean /
  submission mean epochs)``, as the package checker writes it to
  ``scaling.json`` and the summarizer applies it (rcp_checker
  ``_find_norm_factor``). The profile's ``replicates`` (5) runs are required.
- ``median`` (ESIF replicates): the median of the converged replicates' times.
- ``single``: one run's time (the median, when repeats were given anyway).

The metric: time to target, except for runs of a profile scenario whose metric
is ``median_step_time`` (``esif-2026-05`` Scenario 1; the scenario a run belongs
to is :func:`scenario_of`'s): their value is the median over the runs of each
run's median time per training step (``median_step_ms``, from per-step
records), whatever the profile's ``scoring``; no RCP applies, and a scenario
the profile marks ``scored: false`` says so in the note. ``median_step_ms`` is
reported for every set of runs that logged per step.

Times are minutes from ``run_start`` to the first evaluation at the target
(the MLPerf summarizer reads ``run_stop``, which the reference and fastcam log
right after that evaluation).

RCP verdict (mlperf_logging rcp_checker ``_eval_submission_record``, through
:mod:`fastcam.rcp`): the mean epochs of the olympic subset (the sorted epochs
without the first and the last, a non-converged run counting as infinitely
many) must be at least the point's ``min_epochs`` for the runs' global batch.
More than one non-converged run is "insufficient convergence"; a global batch
above the largest point has no RCP (the checker asks for one to be
submitted); below the smallest, the smallest point applies.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from fastcam import rcp
from fastcam.compare.runs import RunFacts

_DROPPED = 1  # MLPerf drops one run at each end (four for unet3d, which is not ours)


STEP_TIME = "median_step_time"  # a scenario metric (fastcam.rules.parse.SCENARIO_METRICS)
TIME_TO_TARGET = "time_to_target"


@dataclass(frozen=True)
class Score:
    method: str
    minutes: float | None  # the time-to-target score the profile asks for (RCP-normalised for olympic_mean)
    median_minutes: float | None
    olympic_mean_minutes: float | None
    rcp_factor: float | None
    runs: int
    converged: int
    note: str  # why there is no score, or what limits it; "" when complete
    metric: str = TIME_TO_TARGET  # or STEP_TIME: then median_step_ms is the score and minutes is None
    median_step_ms: float | None = None  # median of the runs' median step times (per-step logs only)


@dataclass(frozen=True)
class RcpVerdict:
    passed: bool | None  # None: not decidable (too few runs)
    text: str  # "pass (...)" / "fail: <one line>" / "n/a: <why>"
    mean_epochs: float | None = None
    point: rcp.ConvergencePoint | None = None


def scenario_of(run: RunFacts, profile: Any) -> str | None:
    """The profile scenario a run belongs to: the one it logged, else the one its
    batch sizes and kind of measurement fit (per-step timing without
    convergence, or time to target)."""
    scenarios = dict(getattr(profile, "scenarios", None) or {})
    if run.scenario in scenarios:
        return run.scenario
    fitting = [name for name, s in scenarios.items()
               if s["global_batch_size"] in (None, run.global_batch_size)
               and s["local_batch_size"] in (None, run.local_batch_size)]
    timing_only = bool(run.step_seconds) and not run.reached
    preferred = [n for n in fitting if (scenarios[n]["metric"] == STEP_TIME) == timing_only]
    return preferred[0] if len(preferred) == 1 else None


def metric_of(runs: list[RunFacts], profile: Any) -> tuple[str, str | None]:
    """(metric, scenario): the scenario's metric when all the runs belong to one, else time to target."""
    names = {scenario_of(r, profile) for r in runs}
    if len(names) == 1 and (name := names.pop()) is not None:
        return profile.scenarios[name]["metric"], name
    return TIME_TO_TARGET, None


def score(runs: list[RunFacts], profile: Any) -> Score:
    method = profile.scoring
    times = [r.minutes_to_target for r in runs if r.minutes_to_target is not None]
    unconverged = len(runs) - len(times)
    median = statistics.median(times) if times else None
    steps = [r.median_step_ms for r in runs if r.median_step_ms is not None]
    median_step = statistics.median(steps) if steps else None
    metric, scenario = metric_of(runs, profile)
    if metric == STEP_TIME:
        return _step_score(runs, profile, scenario, median, len(times), median_step)
    olympic = olympic_mean(times, unconverged)
    verdict = rcp_verdict(runs, profile)
    factor = None
    if verdict.mean_epochs is not None and verdict.point is not None and verdict.mean_epochs > 0:
        factor = max(1.0, verdict.point.mean_epochs / verdict.mean_epochs)
    notes = []
    if unconverged > profile.max_unconverged:
        notes.append(f"{unconverged} of {len(runs)} runs did not converge (at most {profile.max_unconverged} may)")
    if method != "single" and len(runs) != profile.replicates:
        notes.append(f"{profile.name} scores {profile.replicates} runs, {len(runs)} given")
    if method == "single" and len(runs) > 1:
        notes.append(f"median of {len(runs)} runs (the profile reports one)")
    if method == "olympic_mean":
        value = None if olympic is None or unconverged > profile.max_unconverged else olympic * (factor or 1.0)
        if factor and factor > 1.0:
            notes.append(f"x{factor:.3f} RCP normalisation")
    else:
        value = None if unconverged > profile.max_unconverged and method == "median" else median
    # With another number of runs than the profile's the value is still shown, the note says it is not a score.
    return Score(method, value, median, olympic, factor, len(runs), len(times), "; ".join(notes),
                 TIME_TO_TARGET, median_step)


def _step_score(runs: list[RunFacts], profile: Any, scenario: str, median_minutes: float | None, converged: int,
                median_step: float | None) -> Score:
    """A timing scenario: the median of the runs' median step times; convergence is not asked for."""
    spec = profile.scenarios[scenario]
    notes = []
    if median_step is None:
        notes.append("no per-step records (the runs logged per epoch: logging_frequency 0)")
    replicates = spec.get("replicates") or profile.replicates
    if len(runs) != replicates:
        notes.append(f"{profile.name} scenario {scenario} times {replicates} run(s), {len(runs)} given")
    if not spec.get("scored", True):
        notes.append(f"scenario {scenario} is reported, not scored, under {profile.name}")
    return Score(profile.scoring, None, median_minutes, None, None, len(runs), converged, "; ".join(notes),
                 STEP_TIME, median_step)


def olympic_mean(times: list[float], unconverged: int = 0) -> float | None:
    """Mean without the fastest and the slowest; unconverged runs are the slowest.
    None when fewer than three runs or nothing is left to average."""
    ordered = sorted(times) + [math.inf] * unconverged
    if len(ordered) < 2 * _DROPPED + 1:
        return None
    kept = ordered[_DROPPED:len(ordered) - _DROPPED]
    return None if any(math.isinf(t) for t in kept) else sum(kept) / len(kept)


def rcp_verdict(runs: list[RunFacts], profile: Any) -> RcpVerdict:
    metric, scenario = metric_of(runs, profile)
    if metric == STEP_TIME:
        return RcpVerdict(None, f"n/a: scenario {scenario} times steps, it does not converge")
    batches = {r.global_batch_size for r in runs}
    if len(batches) != 1 or None in batches:
        return RcpVerdict(False, "fail: the runs' global batch sizes differ or are not logged")
    batch = batches.pop()
    epochs = sorted(r.epochs_to_target for r in runs if r.epochs_to_target is not None)
    unconverged = len(runs) - len(epochs)
    if len(runs) < 2 * _DROPPED + 1:
        return RcpVerdict(None, f"n/a: needs at least {2 * _DROPPED + 1} runs, {len(runs)} given")
    if unconverged > _DROPPED:
        return RcpVerdict(False, f"fail: insufficient convergence, {unconverged} of {len(runs)} runs "
                                 f"did not converge (at most {_DROPPED} may)")
    kept = (epochs + [math.inf] * unconverged)[_DROPPED:len(runs) - _DROPPED]
    mean = sum(kept) / len(kept)
    largest = rcp.reference_points(profile.mlperf_ruleset)[-1]
    if batch > largest.global_batch_size:
        return RcpVerdict(False, f"fail: no RCP at global batch {batch} (largest {largest.global_batch_size}); "
                                 "MLPerf asks for one to be submitted", mean)
    point = rcp.point_for(batch, profile.mlperf_ruleset)
    where = f"global batch {batch}" + (" (interpolated)" if point.interpolated else "")
    if mean >= point.min_epochs:
        return RcpVerdict(True, f"pass: mean {mean:.2f} epochs >= {point.min_epochs:.2f} at {where}", mean, point)
    return RcpVerdict(False, f"fail: mean {mean:.2f} epochs of the olympic subset is below {point.min_epochs:.2f}, "
                             f"the fastest the RCP at {where} allows (RCP mean {point.mean_epochs:.2f})", mean, point)
