"""The benchmark's results table, from the facts of many runs.

Runs with the same configuration (run type, target, nodes, accelerators per
node, local batch, optimizer, start LR, weight decay, LR schedule, precision)
form one group: repeated runs, or the N / 2N / 4N runs of a scaling set (each
node count its own group). A group reports the median, min and max of its runs' minutes to
target over the runs that reached it (with how many did), the median epochs,
the median throughput and the median of the runs' median step times.

- precision: the *Precision* column (:func:`fastcam.compare.runtype.precision_text`,
  e.g. "fp32", "AMP bf16", "fp32, fp16 inputs"). Runs that computed in different
  precisions are different configurations, not repeats: an fp16 run is faster for
  a reason the other columns do not show, so a shared median, speedup or score
  would hide it. Grouping therefore splits them into rows of their own (a group
  built otherwise would show "mixed").
- median step (ms): per run, the median time per training step of its per-step
  records (:mod:`fastcam.compare.runs`); the group's is the median over the runs
  that have one; blank for logs with per-epoch records only.

- speedup: the baseline's median minutes to target over the group's. The
  baseline is the baseline group with the same target, nodes and
  accelerators per node when there is one, else all baseline runs to the same
  target together; none for a target no baseline run was measured against.
- scaling efficiency: among groups equal but for the node count, the training
  throughput per node relative to the group with the fewest nodes
  (``(S / n) / (S0 / n0)``; 1.0 is perfect). The time-to-target analogue
  ``(T0 n0) / (T n)`` is in the CSV as well.
- compliance: the official checker's verdict per run, the failed rules by key.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field

from fastcam.compare.runs import RunFacts
from fastcam.compare.runtype import RUN_TYPES
from fastcam.compliance import CheckerResult, failed_keys

NOT_CHECKED = "not checked"


@dataclass
class Group:
    runs: list[RunFacts]
    speedup: float | None = None
    scaling_efficiency: float | None = None  # throughput per node vs the fewest-node group
    time_scaling_efficiency: float | None = None
    checks: list[CheckerResult | None] = field(default_factory=list)

    @property
    def first(self) -> RunFacts:
        return self.runs[0]

    @property
    def minutes(self) -> list[float]:
        return [r.minutes_to_target for r in self.runs if r.minutes_to_target is not None]

    @property
    def median_minutes(self) -> float | None:
        return statistics.median(self.minutes) if self.minutes else None

    @property
    def median_epochs(self) -> float | None:
        epochs = [r.epochs_to_target for r in self.runs if r.epochs_to_target is not None]
        return statistics.median(epochs) if epochs else None

    @property
    def median_samples_per_s(self) -> float | None:
        rates = [r.samples_per_s for r in self.runs if r.samples_per_s is not None]
        return statistics.median(rates) if rates else None

    @property
    def median_samples_per_s_per_device(self) -> float | None:
        rates = [r.samples_per_s_per_device for r in self.runs if r.samples_per_s_per_device is not None]
        return statistics.median(rates) if rates else None

    @property
    def median_step_ms(self) -> float | None:
        steps = [r.median_step_ms for r in self.runs if r.median_step_ms is not None]
        return statistics.median(steps) if steps else None

    @property
    def precision(self) -> str:
        """The runs' Precision text; "mixed (...)" if they differ (group_runs never puts such runs together)."""
        labels = sorted({r.precision_label for r in self.runs})
        return labels[0] if len(labels) == 1 else f"mixed ({'; '.join(labels)})"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]


def configuration(run: RunFacts) -> tuple:
    """What makes two runs repeats of one configuration."""
    # Ranks too: CPU runs log 0 accelerators per node, so nodes alone cannot tell 1 from 2 processes.
    # Precision too: runs in different precisions are not repeats of one another (module docstring).
    return (run.run_type, run.target, run.nodes, run.accelerators_per_node, run.ranks, run.local_batch_size,
            run.optimizer, run.start_lr, run.weight_decay, schedule_text(run), run.precision_label)


def group_runs(runs: list[RunFacts], checks: dict | None = None) -> list[Group]:
    """Groups in a stable order (baseline first, then by node count), with
    speedups and scaling efficiencies filled in. ``checks`` maps a run's path
    to its :class:`CheckerResult`; a run missing from it was not checked."""
    by_config: dict[tuple, Group] = {}
    for run in runs:
        group = by_config.setdefault(configuration(run), Group([]))
        group.runs.append(run)
        group.checks.append((checks or {}).get(run.path))
    type_order = {t: i for i, t in enumerate(RUN_TYPES)}
    groups = sorted(by_config.values(), key=lambda g: (type_order.get(g.first.run_type, len(type_order)),
                                                        g.first.nodes or 0, g.first.local_batch_size or 0))
    _add_speedups(groups)
    _add_scaling(groups)
    return groups


def _add_speedups(groups: list[Group]) -> None:
    for group in groups:
        # Times to different targets are not comparable: only baselines run to the same target count.
        baselines = [g for g in groups if g.first.run_type == "baseline" and g.first.target == group.first.target
                     and g.minutes]
        same_size = [g for g in baselines if (g.first.nodes, g.first.accelerators_per_node)
                     == (group.first.nodes, group.first.accelerators_per_node)]
        every_baseline = [m for g in baselines for m in g.minutes]
        reference = same_size[0].median_minutes if same_size else (
            statistics.median(every_baseline) if every_baseline else None)
        mine = group.median_minutes
        group.speedup = reference / mine if reference and mine else None


def _add_scaling(groups: list[Group]) -> None:
    families: dict[tuple, list[Group]] = {}
    for group in groups:
        key = configuration(group.first)
        families.setdefault(key[:2] + key[3:], []).append(group)  # all but the node count
    for family in families.values():
        sized = [g for g in family if g.first.nodes]
        if len({g.first.nodes for g in sized}) < 2:
            continue
        base = min(sized, key=lambda g: g.first.nodes)
        n0, s0, t0 = base.first.nodes, base.median_samples_per_s, base.median_minutes
        for group in sized:
            n, s, t = group.first.nodes, group.median_samples_per_s, group.median_minutes
            group.scaling_efficiency = (s / n) / (s0 / n0) if s and s0 else None
            group.time_scaling_efficiency = (t0 * n0) / (t * n) if t and t0 else None


# ---- cells ----------------------------------------------------------------

def schedule_text(run: RunFacts) -> str:
    s = run.schedule
    kind = s.get("type")
    if kind == "multistep":
        milestones = s.get("milestones")
        text = f"multistep {_list(milestones)} x{num_text(s.get('decay_rate'))}"
    elif kind == "cosine_annealing":
        text = f"cosine_annealing t_max {num_text(s.get('t_max'))}, eta_min {num_text(s.get('eta_min'))}"
    else:
        text = str(kind) if kind is not None else "?"
    warmup = s.get("lr_warmup_steps")
    if isinstance(warmup, (int, float)) and warmup > 0:
        text += f", warmup {num_text(warmup)} x{num_text(s.get('lr_warmup_factor'))}"
    return text


def compliance_text(check: CheckerResult | None) -> str:
    if check is None:
        return NOT_CHECKED
    return "pass" if check.passed else "fail: " + ", ".join(sorted(failed_keys(check)))


def group_compliance_text(group: Group) -> str:
    if len(group.runs) == 1:
        return compliance_text(group.checks[0])
    checked = [c for c in group.checks if c is not None]
    if not checked:
        return NOT_CHECKED
    passed = sum(c.passed for c in checked)
    keys = sorted({k for c in checked if not c.passed for k in failed_keys(c)})
    head = f"{passed}/{len(checked)} pass"
    return head + (f"; fail: {', '.join(keys)}" if keys else "")


def time_text(group: Group) -> str:
    runs, minutes = group.runs, group.minutes
    if not minutes:
        best = [r.best_accuracy for r in runs if r.best_accuracy is not None]
        return f"not reached (best {max(best):.3f})" if best else "not reached (no evaluation)"
    median = minutes_text(statistics.median(minutes))
    if len(runs) == 1:
        return median
    spread = f"{minutes_text(min(minutes))}-{minutes_text(max(minutes))}"
    return f"{median} ({spread}, {len(minutes)}/{len(runs)} reached)"


def minutes_text(minutes: float) -> str:
    """Three significant digits (CPU study runs take fractions of a minute), whole minutes from 100."""
    return f"{minutes:.0f}" if minutes >= 100 else f"{minutes:.3g}"


def step_ms_text(ms: float | None) -> str:
    """A median step time: three significant digits, whole milliseconds from 100; blank without one."""
    if ms is None:
        return ""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def epochs_text(group: Group) -> str:
    epochs = group.median_epochs
    if epochs is None:
        return "not reached"
    return f"{epochs:g}"


def lr_text(value: float | None) -> str:
    """``1e-3`` as the spec's table writes it; ``1.55e-3``."""
    if value is None:
        return "?"
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def num_text(value) -> str:
    return "?" if value is None else f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _list(value) -> str:
    if isinstance(value, list):
        return "[" + " ".join(num_text(v) for v in value) + "]"
    return num_text(value)


def _opt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


# ---- tables ---------------------------------------------------------------

PRECISION = "Precision"
MEDIAN_STEP = "Median step (ms)"
SUMMARY_COLUMNS = ["Run Type", "Nodes used", "Accelerators per node", "Local Batch Size", "LR Scheduler",
                   "Start LR", "Optimizer", "Time Required (minutes)", "Epochs Required", PRECISION, "Runs",
                   "Speedup vs baseline", "Throughput (samples/s)", "per accelerator (samples/s)", MEDIAN_STEP,
                   "Scaling efficiency", "Compliance"]


def summary_table(groups: list[Group]) -> Table:
    """One row per configuration: the spec's columns, then the comparison."""
    rows = []
    for group in groups:
        run = group.first
        rows.append([
            run.run_type, num_text(run.nodes), num_text(run.accelerators_per_node), num_text(run.local_batch_size),
            schedule_text(run), lr_text(run.start_lr), optimizer_text(run), time_text(group),
            epochs_text(group), group.precision, str(len(group.runs)),
            _opt(group.speedup, ".2f") + ("x" if group.speedup else ""),
            _opt(group.median_samples_per_s, ".2f"), _opt(group.median_samples_per_s_per_device, ".2f"),
            step_ms_text(group.median_step_ms), _opt(group.scaling_efficiency, ".2f"), group_compliance_text(group)])
    return Table(SUMMARY_COLUMNS, rows)


def optimizer_text(run: RunFacts) -> str:
    name = run.optimizer or "?"
    return name if run.weight_decay is None else f"{name} (wd {run.weight_decay:g})"


# Raw columns, snake_case for spreadsheets: "precision" holds the Precision text,
# "median_step_ms" the Median step (ms), empty for per-epoch logs.
RUN_COLUMNS = ["log", "run_type", "nodes", "accelerators_per_node", "local_batch_size", "global_batch_size",
               "lr_scheduler", "start_lr", "optimizer", "weight_decay", "precision", "target", "reached",
               "minutes_to_target", "epochs_to_target", "best_accuracy", "epochs_run", "total_minutes",
               "status", "samples_per_s", "samples_per_s_per_accelerator", "median_step_ms", "group_runs",
               "group_median_minutes", "group_min_minutes", "group_max_minutes", "speedup",
               "scaling_efficiency", "time_scaling_efficiency", "compliance"]


def runs_table(groups: list[Group]) -> Table:
    """One row per log with raw numbers (empty where unknown) and its group's statistics."""
    rows = []
    for group in groups:
        minutes = group.minutes
        for run, check in zip(group.runs, group.checks):
            rows.append([
                str(run.path), run.run_type, _raw(run.nodes), _raw(run.accelerators_per_node),
                _raw(run.local_batch_size), _raw(run.global_batch_size), schedule_text(run), _raw(run.start_lr),
                run.optimizer or "", _raw(run.weight_decay), run.precision_label, _raw(run.target),
                str(run.reached).lower(), _raw(run.minutes_to_target), _raw(run.epochs_to_target),
                _raw(run.best_accuracy), _raw(run.epochs_run), _raw(run.total_minutes), run.status,
                _raw(run.samples_per_s), _raw(run.samples_per_s_per_device), _raw(run.median_step_ms),
                str(len(group.runs)), _raw(group.median_minutes),
                _raw(min(minutes) if minutes else None), _raw(max(minutes) if minutes else None),
                _raw(group.speedup), _raw(group.scaling_efficiency), _raw(group.time_scaling_efficiency),
                compliance_text(check)])
    return Table(RUN_COLUMNS, rows)


def _raw(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def render_markdown(table: Table) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join(" --- " for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return out.getvalue()
