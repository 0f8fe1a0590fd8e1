"""The results tables each rules profile asks for (its ``table`` key).

- ``esif-2025-12``: the December 2025 README's table (one row per
  configuration, :func:`fastcam.compare.table.summary_table`) plus the score
  and the RCP verdict.
- ``esif-scenarios``: the newer ESIF drafts' per-scenario table, one row per
  replicate: Run Type, Scenario, Nodes used, Replicate, Accelerators per node,
  Total Accelerators, Local Batch Size, LR Scheduler, Start LR, Optimizer,
  Median timing per epoch (minutes), Total Time Required (minutes), Epochs
  Required, Data staged, Median time per training step (s, the per-step
  scenario only), and fastcam's Precision. Times are the draft parser's: sums
  of ``epoch_start`` .. ``epoch_stop`` intervals up to the target.
- ``mlperf``: a results summary as mlperf_logging's result_summarizer lays it
  out for a strong-scaling benchmark (submitter, system, division, nodes,
  accelerators, score), with the olympic mean, the RCP factor and verdict,
  and fastcam's Precision.

Every table has the *Precision* column (:func:`fastcam.compare.runtype.precision_text`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastcam.compare.scoring import STEP_TIME, RcpVerdict, Score, rcp_verdict, scenario_of, score
from fastcam.compare.table import (
    PRECISION,
    Group,
    Table,
    lr_text,
    minutes_text,
    num_text,
    optimizer_text,
    schedule_text,
    summary_table,
)


@dataclass
class Scored:
    group: Group
    score: Score
    rcp: RcpVerdict


def score_groups(groups: list[Group], profile: Any) -> list[Scored]:
    return [Scored(g, score(g.runs, profile), rcp_verdict(g.runs, profile)) for g in groups]


def profile_table(scored: list[Scored], profile: Any, table: str | None = None) -> Table:
    kind = table or profile.table
    if kind == "esif-scenarios":
        return scenario_table([s.group for s in scored], profile)
    if kind == "mlperf":
        return mlperf_table(scored, profile)
    return esif_table(scored)


def esif_table(scored: list[Scored]) -> Table:
    base = summary_table([s.group for s in scored])
    rows = [row + [_minutes(s.score.minutes), s.rcp.text] for row, s in zip(base.rows, scored)]
    return Table(base.columns + ["Score (minutes)", "RCP check"], rows)


SCENARIO_COLUMNS = ["Run Type", "Scenario", "Nodes used", "Replicate", "Accelerators per node", "Total Accelerators",
                    "Local Batch Size", "LR Scheduler", "Start LR", "Optimizer", "Median timing per epoch (minutes)",
                    "Total Time Required (minutes)", "Epochs Required", "Data staged",
                    "Median time per training step (s)", PRECISION]


def scenario_table(groups: list[Group], profile: Any) -> Table:
    rows = []
    for group in groups:
        runs = sorted(group.runs, key=lambda r: r.run_start_ms or 0.0)
        for replicate, run in enumerate(runs, start=1):
            name = scenario_of(run, profile)
            per_step = name is not None and profile.scenarios[name]["metric"] == STEP_TIME
            rows.append([
                run.run_type, name or "?", num_text(run.nodes), str(replicate), num_text(run.accelerators_per_node),
                num_text(run.devices), num_text(run.local_batch_size), schedule_text(run), lr_text(run.start_lr),
                optimizer_text(run), _minutes(run.median_epoch_minutes),
                _minutes(run.esif_total_minutes) if run.reached else "not reached",
                str(run.epochs_to_target) if run.reached else "not reached", "yes" if run.staged else "no",
                _seconds(run.median_step_seconds) if per_step else "", run.precision_label])
    return Table(SCENARIO_COLUMNS, rows)


MLPERF_COLUMNS = ["Submitter", "System", "Division", "Run Type", "Nodes", "Accelerators", "Global batch", PRECISION,
                  "Runs", "Converged", "Olympic mean (minutes)", "RCP factor", "Score (minutes)", "Median (minutes)",
                  "RCP check", "Notes"]


def mlperf_table(scored: list[Scored], profile: Any) -> Table:
    rows = []
    for s in scored:
        run = s.group.first
        rows.append([run.org or "?", run.platform or "?", run.division or "?", run.run_type, num_text(run.nodes),
                     num_text(run.devices), num_text(run.global_batch_size), s.group.precision, str(s.score.runs),
                     str(s.score.converged), _minutes(s.score.olympic_mean_minutes),
                     "n/a" if s.score.rcp_factor is None else f"{s.score.rcp_factor:.3f}",
                     _minutes(s.score.minutes), _minutes(s.score.median_minutes), s.rcp.text, s.score.note])
    return Table(MLPERF_COLUMNS, rows)


def _minutes(value: float | None) -> str:
    return "n/a" if value is None else minutes_text(value)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
