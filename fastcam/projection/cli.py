"""``fastcam project``: projected minutes to 0.82 on N / 2N / 4N nodes.

A projection, not a measurement: per-accelerator training and evaluation
throughput from a ``fastcam bench`` JSON, epochs from the user's MLPerf logs
(LOGS, at the same global batch), else the MLPerf HPC reference convergence
points or the published baseline, and a hierarchical ring all-reduce of the
gradients per step, hidden behind the backward pass when overlapped. Prints a
Markdown table and every assumption with its source; ``--json`` and
``--plot`` write the same figures. The model is in fastcam/projection/model.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

from fastcam.errors import ConfigError
from fastcam.projection.bench_input import measured_rates, read_bench
from fastcam.projection.epochs import epochs_for, logged_epochs
from fastcam.projection.model import (
    DEFAULT_OVERLAP_FRACTION,
    EVAL_SAMPLES,
    GRADIENT_BYTES,
    PARAMETERS,
    TRAIN_SAMPLES,
    Assumption,
    Network,
    ScaleProjection,
    add_scaling_efficiency,
    project_scale,
)
from fastcam.projection.ruleset import rules_view

DEFAULT_RULES = "esif-2025-12"
# Kestrel (the ESIF-HPC-4 reference system) GPU nodes: 4 H100 SXM, two 200 Gb/s
# Slingshot 11 NICs each (nrel.gov/hpc/kestrel-system-configuration.html).
DEFAULT_ACCELERATORS_PER_NODE = 4
DEFAULT_LINK_GBPS = 400.0
# H100 SXM: NVLink 900 GB/s per GPU, both directions together (NVIDIA H100
# datasheet), i.e. 450 GB/s = 3600 Gb/s each way; NCCL reaches less.
DEFAULT_INTRA_NODE_GBPS = 3600.0
BASELINE_LOCAL_BATCH = 8


@dataclass
class Projection:
    bench_path: str
    device: str
    mode: str
    rules: str
    scales: list[ScaleProjection]
    assumptions: list[Assumption] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def register(subparsers) -> None:
    p = subparsers.add_parser("project", help="projected minutes to 0.82 on N/2N/4N nodes (table, JSON, plot)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", metavar="BENCH_JSON", help="the JSON `fastcam bench` wrote")
    p.add_argument("logs", nargs="*", metavar="LOGS",
                   help="MLPerf logs (files or directories) whose epochs to 0.82 replace the reference's")
    p.add_argument("--nodes", type=int, nargs="+", help="node counts (default: the rules' scales, 1 2 4)")
    p.add_argument("--accelerators-per-node", type=int, default=DEFAULT_ACCELERATORS_PER_NODE,
                   help=f"default {DEFAULT_ACCELERATORS_PER_NODE} (a Kestrel GPU node)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--local_batch_size", "--local-batch-size", type=int, dest="local_batch_size",
                       help="weak scaling: this local batch at every scale (default: the bench's)")
    batch.add_argument("--global_batch_size", "--global-batch-size", type=int, dest="global_batch_size",
                       help="strong scaling: this global batch at every scale")
    p.add_argument("--link-gbps", type=float, default=DEFAULT_LINK_GBPS,
                   help=f"a node's inter-node bandwidth, Gbit/s, all NICs (default {DEFAULT_LINK_GBPS:g})")
    p.add_argument("--intra-node-gbps", type=float, default=DEFAULT_INTRA_NODE_GBPS,
                   help=f"per accelerator inside a node, Gbit/s each way (default {DEFAULT_INTRA_NODE_GBPS:g})")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=True,
                   help="all-reduce overlapped with the backward pass (default on)")
    p.add_argument("--overlap-fraction", type=float, default=DEFAULT_OVERLAP_FRACTION,
                   help="share of a step's compute that can hide the all-reduce (default 2/3: the backward pass)")
    p.add_argument("--mode", choices=("optimized", "baseline"), default="optimized")
    p.add_argument("--epochs", type=float, help="epochs to 0.82 at every scale (overrides logs and RCPs)")
    p.add_argument("--staging-minutes", type=float, metavar="M",
                   help="staging time per run, counted where the rules time staging (measure `fastcam data stage`)")
    p.add_argument("--train-samples-per-s", type=float, metavar="R",
                   help="per-accelerator training rate at 768x1152 (overrides the bench)")
    p.add_argument("--eval-samples-per-s", type=float, metavar="R",
                   help="per-accelerator evaluation rate at 768x1152 (overrides the bench)")
    p.add_argument("--json", metavar="OUT", help="write the projection as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="write minutes vs nodes as a PNG")
    p.add_argument("--rules", default=DEFAULT_RULES, help=f"rule set (default {DEFAULT_RULES})")
    p.set_defaults(func=run_project)


def run_project(args: argparse.Namespace) -> int:
    from fastcam.projection.report import markdown_report, projection_json

    projection = build_projection(args)
    sys.stdout.write(markdown_report(projection))
    if args.json:
        from fastcam.files import atomic_write_text

        try:
            atomic_write_text(args.json, json.dumps(projection_json(projection), indent=2) + "\n")
        except OSError as err:
            raise ConfigError(f"cannot write {args.json}: {err.strerror or err}") from None
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from fastcam.projection.plot import write_plot

        print(f"wrote {write_plot(projection, args.plot)}", file=sys.stderr)
    return 0


def build_projection(args: argparse.Namespace) -> Projection:
    _validate(args)
    rules = rules_view(args.rules)
    bench = read_bench(args.bench)
    measured = measured_rates(bench, args.bench, args.mode, train_override=args.train_samples_per_s,
                              eval_override=args.eval_samples_per_s)
    logs, notes = logged_epochs(args.logs)
    network = Network(args.intra_node_gbps, args.link_gbps, args.overlap, args.overlap_fraction)
    staging, staging_assumption = _staging(args, rules, measured.loader)
    global_batch = args.global_batch_size
    if global_batch is None and args.local_batch_size is None:
        global_batch = rules.global_batch_size
    per_node = args.accelerators_per_node
    scales, sources = [], {}
    for nodes in sorted(set(args.nodes or rules.scales)):
        local = _local_batch(global_batch, args.local_batch_size, nodes * per_node, measured.batch_size)
        epochs = epochs_for(local * nodes * per_node, args.mode, override=args.epochs, logs=logs,
                            ruleset=rules.mlperf_ruleset, published_baseline=rules.published_baseline)
        sources.setdefault(epochs.source, None)
        scales.append(project_scale(nodes, per_node, local, epochs=epochs.value, epochs_source=epochs.label,
                                    rates=measured.rates, network=network, staging_min=staging))
    add_scaling_efficiency(scales)
    batches = {s.global_batch_size for s in scales}
    notes += [f"logs at global batch {b} match no projected scale" for b in sorted(logs) if b not in batches]
    if rules.global_batch_size and batches != {rules.global_batch_size}:
        notes.append(f"rules {rules.name} fix the global batch at {rules.global_batch_size}; this projection "
                     f"uses {', '.join(map(str, sorted(batches)))}")
    assumptions = measured.assumptions + _batch_assumptions(args, scales, measured.batch_size, rules)
    assumptions += [Assumption("epochs to 0.82", "", source) for source in sources]
    assumptions += _fixed_assumptions(args, network, rules) + [staging_assumption]
    return Projection(str(args.bench), measured.device, args.mode, args.rules, scales, assumptions, notes)


def _local_batch(global_batch: int | None, local_batch: int | None, accelerators: int, bench_batch: int) -> int:
    if global_batch is None:
        return local_batch or bench_batch
    if global_batch % accelerators:
        raise ConfigError(f"global batch {global_batch} does not divide over {accelerators} accelerators "
                          "(--global_batch_size or the rules' fixed global batch)")
    return global_batch // accelerators


def _staging(args, rules, loader: str | None) -> tuple[float, Assumption]:
    """Staging minutes counted per run, and the line that says why."""
    stages = loader != "hdf5" if loader else args.mode == "optimized"
    if not stages:
        return 0.0, Assumption("staging", "none", f"the {args.mode} mode reads the HDF5 files directly"
                               f"{' (bench epoch part)' if loader else ''}")
    if not rules.staging_timed:
        ignored = "; --staging-minutes ignored" if args.staging_minutes is not None else ""
        return 0.0, Assumption("staging", "not counted", f"outside the timed region: rules {rules.name} allow "
                               f"staging before run_start{ignored}")
    if args.staging_minutes is not None:
        return args.staging_minutes, Assumption("staging", f"{args.staging_minutes:g} min per run, counted",
                                                f"--staging-minutes (given, the same at every scale); rules "
                                                f"{rules.name} time staging")
    return 0.0, Assumption("staging", "NOT counted: unknown",
                           f"rules {rules.name} keep staging inside the timed region; pass --staging-minutes "
                           "(from a timed `fastcam data stage`) to count it")


def _batch_assumptions(args, scales: list[ScaleProjection], bench_batch: int, rules) -> list[Assumption]:
    out = []
    if args.global_batch_size is None and args.local_batch_size is None and rules.global_batch_size:
        out.append(Assumption("global batch", str(rules.global_batch_size), f"rules {rules.name}: fixed"))
    if args.nodes is None:
        out.append(Assumption("nodes", " ".join(map(str, rules.scales)), f"rules {rules.name}: the scales"))
    locals_ = sorted({s.local_batch_size for s in scales})
    if locals_ != [bench_batch]:
        out.append(Assumption("local batch", ", ".join(map(str, locals_)),
                              f"assumption: the per-accelerator rates measured at local batch {bench_batch} "
                              "hold at these local batches"))
    if args.mode == "baseline" and locals_ != [BASELINE_LOCAL_BATCH]:
        out.append(Assumption("baseline", f"local batch {', '.join(map(str, locals_))}",
                              f"not a compliant baseline: its local batch is fixed at {BASELINE_LOCAL_BATCH} "
                              "(shared/spec/benchmark.md)"))
    return out


def _fixed_assumptions(args, network: Network, rules) -> list[Assumption]:
    def given(flag: str, value: float, default: float, source: str) -> str:
        return f"{flag} (given)" if value != default else f"default: {source}"

    overlap = (f"on: only the all-reduce beyond {network.overlap_fraction:.3g} of the step's compute counts"
               if network.overlap else "off: the whole all-reduce counts")
    return [
        Assumption("data set", f"{TRAIN_SAMPLES:,} training, {EVAL_SAMPLES:,} validation samples per epoch",
                   "the real DeepCAM data set (shared/spec/benchmark.md)"),
        Assumption("gradients", f"{PARAMETERS:,} fp32 = {GRADIENT_BYTES / 1e6:.1f} MB all-reduced per step",
                   "the network's trainable parameters (shared/spec/model.md)"),
        Assumption("inter-node bandwidth", f"{network.inter_node_gbps:g} Gbit/s per node",
                   given("--link-gbps", network.inter_node_gbps, DEFAULT_LINK_GBPS,
                         "Kestrel GPU node, two 200 Gb/s Slingshot 11 NICs (nrel.gov)")),
        Assumption("intra-node bandwidth", f"{network.intra_node_gbps:g} Gbit/s per accelerator",
                   given("--intra-node-gbps", network.intra_node_gbps, DEFAULT_INTRA_NODE_GBPS,
                         "H100 SXM NVLink, 450 GB/s each way (NVIDIA datasheet); NCCL reaches less")),
        Assumption("all-reduce", "hierarchical ring, latency ignored", "model (fastcam/projection/model.py)"),
        Assumption("overlap", overlap, _overlap_source(network)),
        Assumption("initialisation", "not counted", "the time to target runs from run_start, after init_stop"),
        Assumption("rules", f"{rules.name}: {rules.title}", "--rules" if args.rules != DEFAULT_RULES else "default"),
    ]


def _overlap_source(network: Network) -> str:
    if not network.overlap:
        return "--no-overlap (given)"
    if network.overlap_fraction != DEFAULT_OVERLAP_FRACTION:
        return "--overlap-fraction (given)"
    return "default: DDP overlaps bucketed all-reduces with the backward pass, about 2/3 of a step's FLOPs"


def _validate(args) -> None:
    checks = [
        (all(n >= 1 for n in args.nodes or ()), f"--nodes must be >= 1, got {' '.join(map(str, args.nodes or ()))}"),
        (args.staging_minutes is None or args.staging_minutes >= 0, "--staging-minutes must be >= 0"),
        (args.accelerators_per_node >= 1, "--accelerators-per-node must be >= 1"),
        (args.local_batch_size is None or args.local_batch_size >= 1, "--local_batch_size must be >= 1"),
        (args.global_batch_size is None or args.global_batch_size >= 1, "--global_batch_size must be >= 1"),
        (_positive(args.link_gbps), f"--link-gbps must be a positive number, got {args.link_gbps}"),
        (_positive(args.intra_node_gbps), f"--intra-node-gbps must be a positive number, got {args.intra_node_gbps}"),
        (0.0 <= args.overlap_fraction <= 1.0, f"--overlap-fraction must lie in [0, 1], got {args.overlap_fraction}"),
        (args.epochs is None or _positive(args.epochs), f"--epochs must be a positive number, got {args.epochs}"),
        (args.train_samples_per_s is None or _positive(args.train_samples_per_s),
         "--train-samples-per-s must be a positive number"),
        (args.eval_samples_per_s is None or _positive(args.eval_samples_per_s),
         "--eval-samples-per-s must be a positive number"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0
