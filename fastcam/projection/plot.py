"""Minutes to 0.82 vs nodes: the projection next to the published points.

Drawn on matplotlib's Agg canvas without pyplot (as fastcam.compare.plots), so
the process's backend is left alone. A published run is placed at the node
count that holds its accelerators at this projection's accelerators per node.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastcam.errors import ConfigError, DataError
from fastcam.projection.model import TARGET_IOU
from fastcam.projection.published import ANCHORS

_LOG_SCALE_RATIO = 20.0  # minutes this far apart (a CPU projection next to H100 runs) use a log axis
_MARKERS = ("s", "D", "^", "v")


def write_plot(projection, path: str | os.PathLike) -> Path:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib") from err
    path = Path(path)
    fig = Figure(figsize=(8.0, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    scales = projection.scales
    per_node = scales[0].accelerators_per_node
    nodes = [s.nodes for s in scales]
    minutes = [s.total_minutes for s in scales]
    ax.plot(nodes, minutes, marker="o", color="C0",
            label=f"projection, {projection.mode}, {per_node}/node ({projection.device})")
    for x, y, _scale in zip(nodes, minutes, scales):
        ax.annotate(f"{y:,.0f}" if y >= 100 else f"{y:.3g}", (x, y), textcoords="offset points", xytext=(4, 4),
                    fontsize="small")
    values = list(minutes)
    for index, anchor in enumerate(ANCHORS):
        x = anchor.accelerators / per_node
        ax.plot([x], [anchor.minutes], linestyle="none", marker=_MARKERS[index % len(_MARKERS)],
                color=f"C{index + 1}", label=f"published: {anchor.label}, {anchor.minutes:g} min")
        values.append(anchor.minutes)
    if min(values) > 0 and max(values) / min(values) > _LOG_SCALE_RATIO:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("nodes")
    ax.set_ylabel(f"minutes to {TARGET_IOU} (projected)")
    ax.set_title(f"Projected time to {TARGET_IOU} vs nodes (a projection, not a measurement)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    except OSError as err:
        raise DataError(f"cannot write the plot {path}: {err.strerror or err}") from None
    return path
