"""``fastcam rules``: the shipped rules profiles, listed or shown one at a time.

``fastcam rules`` prints one row per profile (name, title, run types, precision
per run type, global batch, replicates, scoring); ``fastcam rules NAME`` shows
one profile in full (baseline recipe, mutable parameters with their
constraints, fixed parameters, precision per run type, scales, scoring,
scenarios, sources). ``--json`` prints the same as JSON for scripts. Select a
profile for a run with ``--rules NAME`` (default: the published ESIF-HPC-4
DeepCAM README of December 2025).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any, Mapping

from fastcam import rules
from fastcam.compare.table import Table, render_markdown


def register(subparsers) -> None:
    p = subparsers.add_parser("rules", help="list the benchmark rules profiles, or show one",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", metavar="NAME", help="the profile to show (default: list them all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run_rules)


def run_rules(args: argparse.Namespace) -> int:
    if args.name is None:
        profiles = [rules.load(name) for name in rules.names()]
        text = json.dumps([as_json(p) for p in profiles], indent=2) + "\n" if args.json else list_text(profiles)
    else:
        profile = rules.load(args.name)  # an unknown name: ConfigError, one line, exit 2
        text = json.dumps(as_json(profile), indent=2) + "\n" if args.json else show_text(profile)
    sys.stdout.write(text)
    return 0


# -- the list ---------------------------------------------------------------------
def list_text(profiles: list[rules.Profile]) -> str:
    table = Table(["Name", "Title", "Run types", "Precision", "Global batch", "Replicates", "Scoring"], [
        [_name(p), p.title, ", ".join(p.run_types), precision_text(p), global_batch_text(p),
         str(p.replicates), p.scoring]
        for p in profiles])
    return render_markdown(table) + "\nShow one with `fastcam rules NAME`; select it with `--rules NAME`.\n"


def precision_text(profile: rules.Profile) -> str:
    """``baseline fp32; ported fp32; optimized fp32/fp16/bf16``."""
    return "; ".join(f"{run_type} {'/'.join(profile.precision[run_type])}" for run_type in profile.run_types)


def global_batch_text(profile: rules.Profile) -> str:
    return "free" if profile.global_batch_size is None else str(profile.global_batch_size)


# -- one profile ------------------------------------------------------------------
def show_text(p: rules.Profile) -> str:
    parts = [f"# {_name(p)}: {p.title}\n"]
    parts.append("## Baseline recipe\n\n" + render_markdown(Table(
        ["Parameter", "Value"], [[name, _value(value)] for name, value in p.baseline.items()])))
    if "optimized" in p.run_types:
        rows = [[name, constraint_text(constraint)] for name, constraint in p.mutable.items()]
        parts.append("## Mutable in optimized runs\n\n" + render_markdown(Table(["Parameter", "Allowed"], rows))
                     + "\nEvery hyperparameter not listed here is fixed at its baseline value.\n")
    fixed = ", ".join(p.fixed) if p.fixed else "none by name"
    parts.append(f"## Fixed in every run type\n\n{fixed}\n")
    parts.append("## Precision\n\n" + render_markdown(Table(
        ["Run type", "Allowed precision", "Staging dtype"],
        [[run_type, ", ".join(p.precision[run_type]),
          ", ".join(d for d in rules.STAGE_DTYPES if p.allows_stage_dtype(run_type, d))]
         for run_type in p.run_types])))
    accumulation = "allowed" if p.gradient_accumulation else "not allowed"
    parts.append("## Runs and scoring\n\n" + render_markdown(Table(["Setting", "Value"], [
        ["Global batch", global_batch_text(p)],
        ["Gradient accumulation", accumulation],
        ["Node scales", ", ".join(f"{s}N" if s > 1 else "N" for s in p.scales)],
        ["Replicates per configuration", str(p.replicates)],
        ["Scoring", p.scoring],
        ["Runs allowed not to converge", str(p.max_unconverged)],
        ["Results table", p.table],
        ["Staging outside the timed region", _yes(p.staging_allowed)],
        ["Per-step logging", _yes(p.per_step_logging)],
        ["MLPerf checker ruleset", p.mlperf_ruleset],
        ["LAMB settings", ", ".join(f"{k}={_value(v)}" for k, v in p.lamb.items())],
    ])))
    if p.scenarios:
        columns = ["Scenario", *rules.SCENARIO_FIELDS]
        rows = [[name, *(_value(s[f]) for f in rules.SCENARIO_FIELDS)] for name, s in p.scenarios.items()]
        parts.append("## Scenarios\n\n" + render_markdown(Table(columns, rows)))
    parts.append("## Sources\n\n" + "".join(f"- {source}\n" for source in p.sources))
    return "\n".join(parts)


def constraint_text(constraint: Mapping[str, Any]) -> str:
    """``{}`` -> any valid value; choices -> one of ...; min/max -> bounds."""
    words = []
    if "choices" in constraint:
        words.append("one of " + ", ".join(_value(c) for c in constraint["choices"]))
    if "min" in constraint:
        words.append(f">= {_value(constraint['min'])}")
    if "max" in constraint:
        words.append(f"<= {_value(constraint['max'])}")
    return ", ".join(words) if words else "any valid value"


def as_json(profile: rules.Profile) -> dict[str, Any]:
    """Plain JSON types (dicts and lists) of every profile field, plus whether it is the default."""
    data = {f.name: _plain(getattr(profile, f.name)) for f in fields(profile)}
    data["default"] = profile.name == rules.DEFAULT
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _name(profile: rules.Profile) -> str:
    return f"{profile.name} (default)" if profile.name == rules.DEFAULT else profile.name


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return _yes(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(_value(v) for v in value) if value else "-"
    return str(value)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
