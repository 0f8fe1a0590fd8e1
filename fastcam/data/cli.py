"""The ``fastcam data`` command group: ``synth``, ``check`` and ``stage``.

Heavy imports (numpy, h5py) happen inside the handlers so that
``fastcam --help`` stays fast.
"""

from __future__ import annotations

import argparse

from fastcam.config import STAGE_DTYPES
from fastcam.data import layout


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="synthesize or check a DeepCAM data set")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda args: data.print_help() or 2)

    synth = actions.add_parser(
        "synth", help="write a synthetic data set in the real layout",
        description="Write train/, validation/ and stats.h5 with CAM5-like fields and "
                    "learnable cyclone (1) and atmospheric river (2) labels.")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--train", type=int, default=64, help="training samples (default 64)")
    synth.add_argument("--validation", type=int, default=16, help="validation samples (default 16)")
    synth.add_argument("--height", type=int, default=layout.FULL_HEIGHT,
                       help=f"image height, a multiple of 16 (default {layout.FULL_HEIGHT})")
    synth.add_argument("--width", type=int, default=layout.FULL_WIDTH,
                       help=f"image width, a multiple of 16 (default {layout.FULL_WIDTH})")
    synth.add_argument("--seed", type=int, default=0,
                       help="same seed, same arrays, for any number of workers (default 0)")
    synth.add_argument("--workers", type=int, default=None,
                       help="generator processes (default min(cpu count, 8))")
    synth.add_argument("--force", action="store_true", help="replace a data set already in --out")
    synth.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    synth.set_defaults(func=_run_synth)

    check = actions.add_parser(
        "check", help="validate a data set",
        description="Check layout, every file's datasets, shapes and dtypes, and the values "
                    "(finite data, labels in {0,1,2}) of a sample of files per split.")
    check.add_argument("root", metavar="DIR", help="data set directory")
    check.add_argument("--max-files", type=int, default=16,
                       help="files per split whose values are read fully, spread evenly over the "
                            "split (default 16; 0 = headers only; -1 = all)")
    check.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    check.set_defaults(func=_run_check)

    stage = actions.add_parser(
        "stage", help="stage this rank's shards into a float16 (or float32) cache for the optimized loader",
        description="Convert this rank's training shard and validation shard of SRC into "
                    "normalised float16 (--dtype fp32: float32) inputs (height-width-channel) and uint8 labels in DST "
                    "(node-local disk), in parallel; resumable, verified, reused when up to date.")
    stage.add_argument("src", metavar="SRC", help="data set directory (train/, validation/, stats.h5)")
    stage.add_argument("dst", metavar="DST", help="staging directory (node-local)")
    stage.add_argument("--rank", type=int, default=0, help="this rank (default 0)")
    stage.add_argument("--world-size", "--world_size", dest="world_size", type=int, default=1,
                       help="number of ranks (default 1)")
    stage.add_argument("--workers", type=int, default=None,
                       help="staging processes (default min(cpu count, 8))")
    stage.add_argument("--channels", type=int, nargs="+", default=None,
                       help="input channels to keep (default all 16)")
    stage.add_argument("--verify", choices=("sample", "full"), default="sample",
                       help="how much of a reused cache to check against its checksums (default sample)")
    stage.add_argument("--dtype", choices=STAGE_DTYPES, default="fp16",
                       help="input dtype: fp16 (default, rounds) or fp32 (exact; where the rules forbid "
                            "precision changes)")
    stage.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    stage.set_defaults(func=_run_stage)


def _run_synth(args: argparse.Namespace) -> int:
    from fastcam.data.synth import synthesize

    summary = synthesize(args.out, args.train, args.validation, height=args.height, width=args.width,
                         seed=args.seed, workers=args.workers, progress=args.progress, force=args.force)
    print(f"wrote {summary.n_train} train + {summary.n_validation} validation samples "
          f"({summary.height} x {summary.width}) to {summary.root} in {summary.seconds:.1f} s: "
          f"{summary.samples_per_second:.2f} samples/s, {summary.megabytes_per_second:.0f} MB/s, "
          f"{summary.workers} worker(s)")
    print("class frequencies: " + ", ".join(
        f"{name} {100 * f:.3f}% (real {100 * real:.3f}%)"
        for name, f, real in zip(("background", "cyclone", "river"), summary.class_frequencies,
                                 layout.CLASS_FREQUENCIES)))
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from fastcam.data.check import check_dataset

    max_files = None if args.max_files == -1 else args.max_files
    summary = check_dataset(args.root, max_files=max_files, progress=args.progress)
    print(summary.format_table())
    print("OK")
    return 0


def _run_stage(args: argparse.Namespace) -> int:
    from fastcam.data.stage import stage_dataset

    summary = stage_dataset(args.src, args.dst, rank=args.rank, world_size=args.world_size,
                            workers=args.workers, progress=args.progress, channels=args.channels,
                            verify=args.verify, dtype=args.dtype)
    for split in summary.splits:
        state = ("up to date, reused" if split.reused else
                 f"staged {split.staged}" + (f", {split.reverified} kept from an interrupted run"
                                             if split.reverified else ""))
        print(f"{split.split}: {split.count} samples in {split.directory} "
              f"({split.nbytes / 1e6:.1f} MB): {state}")
    rate = summary.staged / max(summary.seconds, 1e-9)
    print(f"rank {summary.rank} of {summary.world_size}: {summary.seconds:.1f} s"
          + (f", {rate:.2f} samples/s with {summary.workers} worker(s)" if summary.staged else ""))
    return 0
