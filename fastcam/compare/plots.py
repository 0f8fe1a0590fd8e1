"""PNG plots of compared runs: convergence, throughput and scaling.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` +
``FigureCanvasAgg``), without pyplot, so nothing here changes the process's
global backend or keeps figures alive between calls.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastcam.compare.runs import RunFacts
from fastcam.compare.table import Group, schedule_text
from fastcam.errors import ConfigError, DataError

ACCURACY_VS_MINUTES = "accuracy_vs_minutes.png"
ACCURACY_VS_EPOCH = "accuracy_vs_epoch.png"
THROUGHPUT_PER_EPOCH = "throughput_per_epoch.png"
SCALING = "scaling.png"
_LINESTYLES = {"baseline": "-", "optimized": "--", "open": ":"}
_TARGET_STYLES = [(0, (5, 3)), (0, (1, 2)), (0, (8, 2, 1, 2))]
# Plots with rates this far apart (CPU next to GPU runs) use a log axis.
_LOG_SCALE_RATIO = 20.0
_SIZE_IN = (8.0, 4.5)
_DPI = 100


def write_plots(groups: list[Group], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Writes the plots for ``groups`` into ``out_dir``; returns the files written.

    The scaling plot is drawn only when the runs span more than one node count.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as err:
        raise ConfigError("--plot needs matplotlib: pip install 'fastcam[test]' or pip install matplotlib") from err
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the plot directory {out}: {err.strerror or err}") from err
    runs = [r for g in groups for r in g.runs]
    written = [
        _accuracy_plot(runs, out / ACCURACY_VS_MINUTES, by_minutes=True),
        _accuracy_plot(runs, out / ACCURACY_VS_EPOCH, by_minutes=False),
        _throughput_plot(runs, out / THROUGHPUT_PER_EPOCH),
    ]
    families = scaling_families(groups)
    if families:
        written.append(_scaling_plot(families, out / SCALING))
    return written


def scaling_families(groups: list[Group]) -> list[list[Group]]:
    """Groups equal but for the node count, where that spans more than one value
    (sorted by nodes): what a scaling plot can compare."""
    families: dict[tuple, list[Group]] = {}
    for group in groups:
        r = group.first
        if r.nodes:
            key = (r.run_type, r.target, r.accelerators_per_node, r.local_batch_size, r.optimizer, r.start_lr,
                   r.weight_decay, schedule_text(r), r.precision_label)
            families.setdefault(key, []).append(group)
    return [sorted(f, key=lambda g: g.first.nodes) for f in families.values()
            if len({g.first.nodes for g in f}) > 1]


def _figure(ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_SIZE_IN[0] * (1 if ncols == 1 else 1.3), _SIZE_IN[1]), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=_DPI)
    except OSError as err:
        raise DataError(f"cannot write the plot {path}: {err.strerror or err}") from err
    return path


def _legend(ax, count: int) -> None:
    handles, _labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small" if count <= 6 else "x-small", loc="best")


def _accuracy_plot(runs: list[RunFacts], path: Path, *, by_minutes: bool) -> Path:
    fig, ax = _figure()
    drawn = 0
    for index, run in enumerate(runs):
        points = [(p.minutes if by_minutes else p.epoch, p.accuracy) for p in run.epochs
                  if p.accuracy is not None and (p.minutes is not None or not by_minutes)]
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=3, color=_color(index),
                linestyle=_LINESTYLES.get(run.run_type, "-."), label=run.label)
        drawn += 1
    for index, target in enumerate(sorted({r.target for r in runs})):
        ax.axhline(target, color="0.3", linewidth=1, linestyle=_TARGET_STYLES[index % len(_TARGET_STYLES)],
                   label=f"target {target:g}")
        drawn += 1
    if not by_minutes:
        _integer_ticks(ax)
    ax.set_xlabel("wall-clock time since run_start (minutes)" if by_minutes else "epoch")
    ax.set_ylabel("validation accuracy (mean IoU)")
    ax.set_title("Validation accuracy vs " + ("wall-clock time" if by_minutes else "epoch"))
    ax.grid(True, alpha=0.3)
    _legend(ax, drawn)
    return _save(fig, path)


def _throughput_plot(runs: list[RunFacts], path: Path) -> Path:
    fig, ax = _figure()
    drawn = 0
    rates: list[float] = []
    for index, run in enumerate(runs):
        points = [(p.epoch, p.samples_per_s) for p in run.epochs if p.samples_per_s is not None]
        if not points:
            continue
        xs, ys = zip(*points)
        rates += ys
        ax.plot(xs, ys, marker="o", markersize=3, color=_color(index),
                linestyle=_LINESTYLES.get(run.run_type, "-."), label=run.label)
        drawn += 1
    ax.set_xlabel("epoch")
    ax.set_ylabel("training throughput (samples/s, all ranks)")
    ax.set_title("Training throughput per epoch")
    if rates and min(rates) > 0 and max(rates) / min(rates) > _LOG_SCALE_RATIO:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    _integer_ticks(ax)
    ax.grid(True, alpha=0.3)
    _legend(ax, drawn)
    return _save(fig, path)


def _scaling_plot(families: list[list[Group]], path: Path) -> Path:
    fig, (left, right) = _figure(ncols=2)
    for index, family in enumerate(families):
        r = family[0].first
        label = (f"{r.run_type}, {_or_q(r.accelerators_per_node)}/node, local batch {_or_q(r.local_batch_size)}, "
                 f"{r.optimizer or '?'}, {r.precision_label}")
        nodes = [g.first.nodes for g in family]
        rates = [_nan(g.median_samples_per_s) for g in family]
        left.plot(nodes, rates, marker="o", color=_color(index), label=label)
        n0, s0 = nodes[0], family[0].median_samples_per_s
        if s0:
            left.plot(nodes, [s0 * n / n0 for n in nodes], linestyle=":", color=_color(index),
                      label="ideal (linear from the fewest nodes)" if index == 0 else None)
        right.plot(nodes, [_nan(g.median_minutes) for g in family], marker="o", color=_color(index), label=label)
    left.set_ylabel("training throughput (samples/s)")
    left.set_title("Throughput scaling (median of repeats)")
    right.set_ylabel("minutes to target")
    right.set_title("Time to target (median of repeats)")
    for ax in (left, right):
        ax.set_xlabel("nodes")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        _integer_ticks(ax)
        _legend(ax, len(families))
    return _save(fig, path)


def _color(index: int) -> str:
    return f"C{index % 10}"


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _or_q(value) -> str:
    return "?" if value is None else str(value)
