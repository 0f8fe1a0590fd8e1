"""How many epochs a configuration needs to reach 0.82 at its global batch.

In order of precedence:

1. ``--epochs E``: the user's figure, for every scale.
2. The user's own MLPerf logs at exactly that global batch: the mean epochs to
   0.82 of the runs that reached it (read with fastcam.compare, so fastcam's,
   the reference's and NVIDIA's logs all count). Runs that missed it are
   counted and reported, not averaged in.
3. Optimized mode: the MLPerf HPC reference convergence points' mean epochs at
   that global batch, interpolated between the points the RCP check uses
   (fastcam.rcp, from mlperf_logging). These are the epochs of well-tuned
   hyperparameters (the RCPs are LAMB runs), not of any configuration.
4. Baseline mode, where the rules' baseline is the published AdamW recipe
   (start LR 1e-3, multistep): the published 26 epochs at global batch 128; at
   another global batch scaled by the RCPs' ratio of mean epochs at that batch
   to 128 (an assumption: the baseline's epochs grow with the batch as the
   reference's do). A baseline of other rules (NVIDIA's LAMB recipe in the
   January 2026 draft) takes the RCPs' epochs, as an optimized run does.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from fastcam.projection.model import TARGET_IOU
from fastcam.projection.published import BASELINE_EPOCHS, BASELINE_GLOBAL_BATCH, BASELINE_SOURCE
from fastcam.rcp import DEFAULT_RULESET


@dataclass(frozen=True)
class Epochs:
    value: float
    label: str  # short, for the table
    source: str  # the whole story, for the assumptions list


@dataclass
class LoggedEpochs:
    """Logs at one global batch: the epochs to target of those that reached it."""

    global_batch_size: int
    reached: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.reached) if self.reached else None


def logged_epochs(paths: list[str | os.PathLike]) -> tuple[dict[int, LoggedEpochs], list[str]]:
    """The logs' epochs to 0.82 by global batch, and a note for each log that cannot say."""
    from fastcam.compare.logs import collect_logs, read_log
    from fastcam.compare.runs import run_facts

    by_batch: dict[int, LoggedEpochs] = {}
    notes = []
    for path in collect_logs(paths) if paths else []:
        facts = run_facts(read_log(path), target=TARGET_IOU)
        if not facts.global_batch_size:
            notes.append(f"{path}: no global_batch_size record; not used")
            continue
        entry = by_batch.setdefault(facts.global_batch_size, LoggedEpochs(facts.global_batch_size))
        entry.paths.append(path)
        if facts.reached and facts.epochs_to_target is not None:
            entry.reached.append(facts.epochs_to_target)
    return by_batch, notes


def epochs_for(global_batch: int, mode: str, *, override: float | None = None,
               logs: dict[int, LoggedEpochs] | None = None, ruleset: str = DEFAULT_RULESET,
               published_baseline: bool = True) -> Epochs:
    if override is not None:
        return Epochs(override, "--epochs", f"--epochs {override:g} (given)")
    logged = (logs or {}).get(global_batch)
    missed = ""
    if logged is not None:
        runs = len(logged.paths)
        if logged.mean is not None:
            return Epochs(logged.mean, f"logs ({len(logged.reached)}/{runs} reached)",
                          f"measured: mean epochs to {TARGET_IOU} of the {len(logged.reached)} of {runs} "
                          f"log(s) at global batch {global_batch} that reached it")
        missed = f"; none of the {runs} log(s) at global batch {global_batch} reached {TARGET_IOU}"
    if mode == "baseline" and published_baseline:
        return _baseline_epochs(global_batch, missed, ruleset)
    return _rcp_epochs(global_batch, missed, ruleset)


def _rcp_epochs(global_batch: int, missed: str, ruleset: str) -> Epochs:
    from fastcam.rcp import point_for, reference_points

    point = point_for(global_batch, ruleset)
    sizes = [p.global_batch_size for p in reference_points(ruleset)]
    label = f"RCP {ruleset}"
    if not point.interpolated:
        where = "a point of the check"
    elif sizes[0] < global_batch < sizes[-1]:
        low = max(s for s in sizes if s < global_batch)
        high = min(s for s in sizes if s > global_batch)
        where = f"interpolated between global batch {low} and {high}"
        label += f", interp. {low}-{high}"
    else:
        nearest = sizes[0] if global_batch < sizes[0] else sizes[-1]
        where = f"outside the RCPs' range: the nearest point's, global batch {nearest}"
        label += f", nearest {nearest}"
    return Epochs(point.mean_epochs, label,
                  f"MLPerf HPC {ruleset} reference convergence points (mlperf_logging): mean "
                  f"{point.mean_epochs:.3g} epochs at global batch {global_batch}, {where}{missed}")


def _baseline_epochs(global_batch: int, missed: str, ruleset: str) -> Epochs:
    if global_batch == BASELINE_GLOBAL_BATCH:
        return Epochs(float(BASELINE_EPOCHS), "published baseline", BASELINE_SOURCE + missed)
    from fastcam.rcp import point_for, reference_points

    smallest = reference_points(ruleset)[0].global_batch_size
    if global_batch < smallest:  # below the RCPs there is no ratio to scale by
        return Epochs(float(BASELINE_EPOCHS), f"published baseline, as at {BASELINE_GLOBAL_BATCH}",
                      f"{BASELINE_SOURCE}; assumed the same at global batch {global_batch}, below the RCPs' "
                      f"smallest point ({smallest}){missed}")
    ratio = point_for(global_batch, ruleset).mean_epochs / point_for(BASELINE_GLOBAL_BATCH, ruleset).mean_epochs
    return Epochs(BASELINE_EPOCHS * ratio, f"baseline x RCP {ratio:.3g}",
                  f"{BASELINE_SOURCE}, x {ratio:.3g} = RCP mean at global batch {global_batch} / at "
                  f"{BASELINE_GLOBAL_BATCH} (assumption: the baseline's epochs scale as the reference's){missed}")
