"""Reference convergence points (RCPs) of DeepCAM, read from ``mlperf_logging``.

MLPerf HPC requires a submission's mean epochs to converge to be no faster than
the reference's for its global batch (``mlperf_logging/rcp_checker``). The data
ships with the library (``rcp_checker/hpc_<ruleset>/rcps_deepcam.json``); this
module reads it through the library's own ``RCP_Checker``, which computes each
point's olympic mean of epochs and the fastest mean it still accepts
("Min Epochs"), and *prunes* the points that converge slower than the
interpolation of their neighbours; the check (``rcp_pass='pruned_rcps'``, its
default) interpolates linearly between the pruned points.

For hpc 3.0.0 the published means are 6.94 / 9.0 / 11.05 / 13.0 / 22.6 epochs
at global batch 128 / 256 / 512 / 1024 / 2048; pruning keeps 128, 1024 and
2048, so the limits the check applies are 6.94 / 7.81 / 9.54 / 13.0 / 22.6.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fastcam.errors import ConfigError

DEFAULT_RULESET = "3.0.0"


@dataclass(frozen=True)
class ConvergencePoint:
    global_batch_size: int
    mean_epochs: float  # olympic mean of the reference runs' epochs to converge
    min_epochs: float  # the fastest mean of a submission's runs the checker accepts
    interpolated: bool = False


@lru_cache(maxsize=None)
def _checker(ruleset: str, benchmark: str = "deepcam"):
    from mlperf_logging.rcp_checker.rcp_checker import RCP_Checker

    try:
        return RCP_Checker("hpc", ruleset, benchmark, False)
    except (Exception, SystemExit) as err:  # the library raises a bare Exception for unknown rulesets
        raise ConfigError(f"no MLPerf HPC reference convergence points for {benchmark} {ruleset}: {err}") from None


def reference_points(ruleset: str = DEFAULT_RULESET, pruned: bool = True) -> tuple[ConvergencePoint, ...]:
    """The points the check uses (``pruned``, its default) or all published
    ones, sorted by global batch."""
    checker = _checker(ruleset)
    records = checker.pruned_rcp_data if pruned else checker.rcp_data
    points = [ConvergencePoint(int(r["BS"]), float(r["RCP Mean"]), float(r["Min Epochs"])) for r in records.values()]
    return tuple(sorted(points, key=lambda p: p.global_batch_size))


def point_for(global_batch_size: int, ruleset: str = DEFAULT_RULESET) -> ConvergencePoint:
    """The limit the RCP check applies at this global batch: a pruned point, or
    the checker's own interpolation between its two neighbours. Outside the
    published range the nearest point's figures are used (the checker refuses
    such a batch), marked interpolated."""
    points = reference_points(ruleset)
    sizes = [p.global_batch_size for p in points]
    for p in points:
        if p.global_batch_size == global_batch_size:
            return p
    if not sizes[0] < global_batch_size < sizes[-1]:
        nearest = points[0] if global_batch_size < sizes[0] else points[-1]
        return ConvergencePoint(int(global_batch_size), nearest.mean_epochs, nearest.min_epochs, interpolated=True)
    checker = _checker(ruleset)
    records = sorted(checker.pruned_rcp_data.values(), key=lambda r: r["BS"])
    low = max((r for r in records if r["BS"] < global_batch_size), key=lambda r: r["BS"])
    high = min((r for r in records if r["BS"] > global_batch_size), key=lambda r: r["BS"])
    # The checker's interpolation (mean and stdev linear in batch size, then its
    # p-value search for the fastest acceptable mean); mlperf-logging pinned in pyproject.
    _, record = checker._create_interp_rcp(global_batch_size, low, high)
    return ConvergencePoint(int(global_batch_size), float(record["RCP Mean"]), float(record["Min Epochs"]),
                            interpolated=True)
