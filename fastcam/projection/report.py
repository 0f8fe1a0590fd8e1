"""A projection as a Markdown report (table + assumptions) and as JSON."""

from __future__ import annotations

from fastcam import __version__
from fastcam.compare.table import Table, render_markdown
from fastcam.projection.model import TARGET_IOU
from fastcam.projection.published import ANCHORS

PROJECTION_SCHEMA = 1
COLUMNS = ["Nodes", "Accelerators", "Global batch", "Local batch", "Epochs", "Epochs from",
           "Compute min/epoch", "Comm. min/epoch", "Eval min/epoch", "Min/epoch", f"Minutes to {TARGET_IOU}",
           "Scaling efficiency"]


def markdown_report(projection) -> str:
    head = (f"Projection (not a measurement) of minutes to {TARGET_IOU}, {projection.mode} mode, from the "
            f"rates of `fastcam bench` on {projection.device} ({projection.bench_path}); rules {projection.rules}."
            "\n\n")
    rows = [[str(s.nodes), str(s.accelerators), str(s.global_batch_size), str(s.local_batch_size),
             f"{s.epochs:.3g}", s.epochs_source, number(s.compute_min), number(s.communication_min),
             number(s.evaluation_min), number(s.minutes_per_epoch), number(s.total_minutes),
             "n/a" if s.scaling_efficiency is None else f"{s.scaling_efficiency:.2f}"]
            for s in projection.scales]
    lines = ["", "Assumptions (a measured or given input wins over a default):"]
    lines += [f"- {a.name}: {a.value + ' -- ' if a.value else ''}{a.source}" for a in projection.assumptions]
    if projection.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in projection.notes]
    lines += ["", "Published, for comparison:"]
    lines += [f"- {a.label}: {a.minutes:g} min, {a.epochs:g} epochs ({a.source})" for a in ANCHORS]
    return head + render_markdown(Table(COLUMNS, rows)) + "\n".join(lines) + "\n"


def projection_json(projection) -> dict:
    return {"projection_schema": PROJECTION_SCHEMA, "fastcam_version": __version__,
            "kind": "projection, not a measurement", "bench": projection.bench_path, "device": projection.device,
            "mode": projection.mode, "rules": projection.rules, "target_iou": TARGET_IOU,
            "scales": [s.as_dict() for s in projection.scales],
            "assumptions": [a.as_dict() for a in projection.assumptions], "notes": list(projection.notes),
            "published": [{"label": a.label, "accelerators": a.accelerators, "minutes": a.minutes,
                           "epochs": a.epochs, "source": a.source} for a in ANCHORS]}


def number(value: float) -> str:
    """Minutes: three significant figures below 100, whole minutes with separators above."""
    if value == 0:
        return "0"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
