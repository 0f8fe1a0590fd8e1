"""``fastcam compare``: MLPerf logs in, the benchmark's results table out.

Reads logs written by fastcam, the MLCommons reference or NVIDIA's
implementation (files, or directories searched for files with ``:::MLLOG``
records), joins the segments of resumed runs, infers each run's type from its
hyperparameters and the rules profile (``--rules``), scores repeated runs as
the profile says (with the RCP verdict), and prints the profile's table in
Markdown (``--csv``: one row per log, raw numbers, for spreadsheets;
``--json``: every table and run). Logs it cannot use (a stub of a run that
failed at start, a damaged file) are listed as skipped with the reason. With
``--plot DIR`` it writes the convergence, throughput and scaling plots.

Every table shows each run's Precision (fp32, AMP fp16, AMP bf16; ", fp16
inputs" where the stage cache stored float16; another tool's precision_mode as
logged; "unknown" without one); runs in different precisions are separate rows.
Runs that logged per step (--logging_frequency N > 0) get the Median step (ms):
the median time between consecutive per-step train_loss records of one epoch,
per optimizer step, never across an epoch or evaluation boundary.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastcam import rules
from fastcam.compare.join import join_resumed
from fastcam.compare.logs import RunLog, Skipped, collect_logs, read_logs
from fastcam.compare.reports import Scored, profile_table, score_groups
from fastcam.compare.runs import RunFacts, run_facts
from fastcam.compare.runtype import RUN_TYPES
from fastcam.compare.table import (
    MEDIAN_STEP,
    PRECISION,
    Group,
    Table,
    compliance_text,
    group_runs,
    minutes_text,
    render_csv,
    render_markdown,
    runs_table,
    step_ms_text,
)
from fastcam.compliance import CHECKER_KEY, CheckerResult, run_checker
from fastcam.errors import ConfigError

_CHECKER_THREADS = 4  # the checker is a subprocess per log; a few at once


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="results table (and plots) from MLPerf logs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="LOG_OR_DIR", help="MLPerf log files or directories holding them")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="print one CSV row per log instead of Markdown")
    out.add_argument("--json", action="store_true", help="print every table, run and skipped log as JSON")
    p.add_argument("--rules", default=rules.DEFAULT, metavar="NAME",
                   help=f"rules profile for run types, scoring and the table (default {rules.DEFAULT}; "
                        f"known: {', '.join(rules.names())})")
    p.add_argument("--table", choices=rules.TABLES, help="print this table instead of the profile's own")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR")
    p.add_argument("--target", type=float, metavar="X",
                   help="accuracy target for every log (default: the target each log records, else 0.82)")
    p.add_argument("--type", dest="types", action="append", default=[], metavar="FILE=TYPE",
                   help=f"run type of one log ({', '.join(RUN_TYPES)}); FILE is its path or file name; repeatable")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the official compliance checker")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    if args.target is not None and not 0.0 < args.target <= 1.0:
        raise ConfigError(f"--target must lie in (0, 1], got {args.target}")
    profile = rules.load(args.rules)
    paths = collect_logs(args.paths)
    types = parse_type_overrides(args.types, paths)
    logs, skipped = read_logs(paths)
    logs = join_resumed(logs)
    runs = [run_facts(log, run_type=_override(log, types), target=args.target, profile=profile) for log in logs]
    checks = check_logs([log.path for log in logs]) if args.check else {}
    groups = group_runs(runs, checks)
    scored = score_groups(groups, profile)
    for skip in skipped:
        print(f"skipped {skip.path}: {skip.reason}", file=sys.stderr)
    if args.csv:
        sys.stdout.write(render_csv(runs_table(groups)))
    elif args.json:
        sys.stdout.write(json_report(scored, profile, args.table, skipped) + "\n")
    else:
        sys.stdout.write(markdown_report(scored, profile, args.table, skipped))
    if args.plot:
        from fastcam.compare.plots import write_plots

        for path in write_plots(groups, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def parse_type_overrides(specs: list[str], paths: list[Path]) -> dict[Path, str]:
    """``FILE=TYPE`` items -> {resolved log path: type}; each FILE must name a log read."""
    overrides: dict[Path, str] = {}
    for spec in specs:
        file, sep, kind = spec.rpartition("=")
        if not sep or not file:
            raise ConfigError(f"--type expects FILE=TYPE, got {spec!r}")
        if kind not in RUN_TYPES:
            raise ConfigError(f"--type {spec}: TYPE must be one of {', '.join(RUN_TYPES)}")
        wanted = Path(file).resolve()
        matches = [p for p in paths if p.resolve() == wanted or (Path(file).name == file and p.name == file)]
        if not matches:
            raise ConfigError(f"--type {spec}: {file} is not among the logs read")
        for path in matches:
            overrides[path.resolve()] = kind
    return overrides


def check_logs(paths: list[Path]) -> dict[Path, CheckerResult]:
    """The official checker's verdict on each log (keyed by the path as given)."""
    def one(path: Path) -> CheckerResult:
        try:
            return run_checker(path)
        except subprocess.TimeoutExpired:
            return CheckerResult(False, [f"{CHECKER_KEY}: timed out"], "")

    with ThreadPoolExecutor(max_workers=min(_CHECKER_THREADS, max(1, len(paths)))) as pool:
        return dict(zip(paths, pool.map(one, paths)))


def _override(log: RunLog, types: dict[Path, str]) -> str | None:
    """A --type given for any segment of a (joined) run applies to the run."""
    return next((types[p.resolve()] for p in log.parts if p.resolve() in types), None)


def markdown_report(scored: list[Scored], profile, table: str | None = None,
                    skipped: list[Skipped] = ()) -> str:
    groups = [s.group for s in scored]
    runs = [r for g in groups for r in g.runs]
    targets = sorted({r.target for r in runs})
    head = (f"{len(runs)} run(s) in {len(groups)} configuration(s) under rules {profile.name} "
            f"(scoring: {profile.scoring}); target accuracy {', '.join(f'{t:g}' for t in targets)}. "
            f"Time: median over the runs that reached the target (min-max, reached/runs) from run_start to "
            f"the first eval_accuracy >= target.\n\n")
    text = head + render_markdown(profile_table(scored, profile, table)) + "\n" + render_markdown(detail_table(groups))
    if skipped:
        text += "\n" + render_markdown(Table(["Skipped log", "Reason"], [[str(s.path), s.reason] for s in skipped]))
    return text


def json_report(scored: list[Scored], profile, table: str | None = None, skipped: list[Skipped] = ()) -> str:
    """Every table as a list of {column: cell} rows, the raw per-log rows, and the skipped logs."""
    groups = [s.group for s in scored]

    def records(t: Table) -> list[dict[str, str]]:
        return [dict(zip(t.columns, row)) for row in t.rows]

    return json.dumps({
        "rules": profile.name, "table": table or profile.table,
        "summary": records(profile_table(scored, profile, table)),
        "scores": [{"runs": s.score.runs, "converged": s.score.converged, "method": s.score.method,
                    "score_minutes": s.score.minutes, "median_minutes": s.score.median_minutes,
                    "olympic_mean_minutes": s.score.olympic_mean_minutes, "rcp_factor": s.score.rcp_factor,
                    "rcp_passed": s.rcp.passed, "rcp": s.rcp.text, "note": s.score.note,
                    "metric": s.score.metric, "median_step_ms": s.score.median_step_ms,
                    "precision": s.group.precision} for s in scored],
        "runs": records(runs_table(groups)),
        "skipped": [{"log": str(s.path), "reason": s.reason} for s in skipped],
    }, indent=1)


def detail_table(groups: list[Group]) -> Table:
    """One compact row per log, so each file's result and verdict can be traced."""
    rows = []
    for group in groups:
        for run, check in zip(group.runs, group.checks):
            rows.append([" + ".join(str(p) for p in run.parts), run.run_type, _minutes_text(run),
                         "" if run.epochs_to_target is None else str(run.epochs_to_target),
                         "n/a" if run.best_accuracy is None else f"{run.best_accuracy:.4f}",
                         f"{run.epochs_run}", run.status, run.precision_label,
                         "n/a" if run.samples_per_s is None else f"{run.samples_per_s:.2f}",
                         step_ms_text(run.median_step_ms), compliance_text(check), run.run_type_reason])
    return Table(["Log", "Run Type", "Minutes to target", "Epochs to target", "Best accuracy", "Epochs run",
                  "Status", PRECISION, "Samples/s", MEDIAN_STEP, "Compliance", "Why this run type"], rows)


def _minutes_text(run: RunFacts) -> str:
    return minutes_text(run.minutes_to_target) if run.minutes_to_target is not None else "not reached"
