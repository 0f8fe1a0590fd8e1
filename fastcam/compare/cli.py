"""``fastcam compare``: MLPerf logs in, the benchmark's results table out.

Reads logs written by fastcam, the MLCommons reference or NVIDIA's
implementation (files, or directories searched for files with ``:::MLLOG``
records), prints one row per configuration in Markdown (``--csv``: one row
per log, raw numbers, for spreadsheets), and with ``--plot DIR`` writes the
convergence, throughput and scaling plots.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastcam.compare.logs import collect_logs, read_log
from fastcam.compare.runs import RUN_TYPES, RunFacts, run_facts
from fastcam.compare.table import (Group, Table, compliance_text, group_runs, minutes_text, render_csv,
                                   render_markdown, runs_table, summary_table)
from fastcam.compliance import CHECKER_KEY, CheckerResult, run_checker
from fastcam.errors import ConfigError

_CHECKER_THREADS = 4  # the checker is a subprocess per log; a few at once


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="results table (and plots) from MLPerf logs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="LOG_OR_DIR", help="MLPerf log files or directories holding them")
    p.add_argument("--csv", action="store_true", help="print one CSV row per log instead of Markdown")
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
    paths = collect_logs(args.paths)
    types = parse_type_overrides(args.types, paths)
    runs = [run_facts(read_log(p), run_type=types.get(p.resolve()), target=args.target) for p in paths]
    checks = check_logs(paths) if args.check else {}
    groups = group_runs(runs, checks)
    if args.csv:
        sys.stdout.write(render_csv(runs_table(groups)))
    else:
        sys.stdout.write(markdown_report(groups))
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


def markdown_report(groups: list[Group]) -> str:
    runs = [r for g in groups for r in g.runs]
    targets = sorted({r.target for r in runs})
    head = (f"{len(runs)} run(s) in {len(groups)} configuration(s); target accuracy "
            f"{', '.join(f'{t:g}' for t in targets)}. Time: median over the runs that reached the target "
            f"(min-max, reached/runs) from run_start to the first eval_accuracy >= target.\n\n")
    return head + render_markdown(summary_table(groups)) + "\n" + render_markdown(detail_table(groups))


def detail_table(groups: list[Group]) -> Table:
    """One compact row per log, so each file's result and verdict can be traced."""
    rows = []
    for group in groups:
        for run, check in zip(group.runs, group.checks):
            rows.append([str(run.path), run.run_type, _minutes_text(run),
                         "" if run.epochs_to_target is None else str(run.epochs_to_target),
                         "n/a" if run.best_accuracy is None else f"{run.best_accuracy:.4f}",
                         f"{run.epochs_run}", run.status,
                         "n/a" if run.samples_per_s is None else f"{run.samples_per_s:.2f}",
                         compliance_text(check)])
    return Table(["Log", "Run Type", "Minutes to target", "Epochs to target", "Best accuracy", "Epochs run",
                  "Status", "Samples/s", "Compliance"], rows)


def _minutes_text(run: RunFacts) -> str:
    return minutes_text(run.minutes_to_target) if run.minutes_to_target is not None else "not reached"
