"""``fastcam bench``: training-step, evaluation, loader and whole-epoch throughput, one process.

Takes ``fastcam train``'s flags (``--device``, ``--local_batch_size``,
``--max_inter_threads``, ``--precision``, ``--compile``, ...): run settings and
hyperparameters apply to both modes, execution flags to the optimized mode
only (the baseline is the reference's execution). Each mode is measured
through the same plan and Trainer that ``fastcam train`` runs.

Parts (``--parts``, default all):

- ``step``: ``Trainer.train_step`` on synthetic tensors, the modes' steps
  interleaved, median ms per step (fastcam.bench_step: why), samples/s, peak
  memory, TFLOP/s from 1.97 TFLOP per 768x1152 sample scaled by area, warm-up
  seconds, the optimizer implementation, host reads per step;
- ``eval``: ``Trainer.evaluate`` at the plan's validation batch (samples/s);
- ``loader``: the reference HDF5 reader, the staged loader and DALI (after
  staging, timed separately), no training;
- ``epoch``: each mode's own loader plus step over ``--steps`` batches.

Prints a table; the JSON (``bench_schema`` 2, read by ``fastcam project``) is
rewritten after every measurement, so a crash keeps what was measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import tempfile
import time
from pathlib import Path

BENCH_SCHEMA = 2
PARTS = ("step", "eval", "loader", "epoch")
MODES = ("baseline", "optimized")


def register(subparsers) -> None:
    from fastcam.train.cli import add_config_arguments

    p = subparsers.add_parser("bench", help="measure step, evaluation, loader and epoch throughput (table + JSON)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("bench")
    g.add_argument("--height", type=int, default=768)
    g.add_argument("--width", type=int, default=1152)
    g.add_argument("--steps", type=int, default=20, help="timed steps/batches per measurement (default 20)")
    g.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    g.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    g.add_argument("--modes", default=",".join(MODES), help="comma list of baseline, optimized")
    g.add_argument("--data", default=None, help="data set for the loader/epoch parts (default: synthesize one)")
    g.add_argument("--json", default="bench.json", help="write results here (default bench.json)")
    add_config_arguments(p, with_mode=False)
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from fastcam.errors import ConfigError

    parts = _split(args.parts, PARTS, "--parts")
    modes = _split(args.modes, MODES, "--modes")
    if args.height % 16 or args.width % 16 or args.height <= 0 or args.width <= 0:
        raise ConfigError(f"--height/--width must be positive multiples of 16, got {args.height}x{args.width}")
    if args.steps < 1 or args.warmup < 0:
        raise ConfigError("--steps must be >= 1 and --warmup >= 0")
    configs = {mode: bench_config(mode, args) for mode in modes}  # bad flags fail before any work
    results = measure(args, parts, configs)
    print(format_table(results))
    print(f"wrote {args.json}")
    return 0


def bench_config(mode: str, args: argparse.Namespace):
    """The mode's recipe with the given flags (execution flags: optimized only)."""
    from fastcam import schema
    from fastcam.config import SECTIONS, Config, recipe
    from fastcam.errors import ConfigError

    sections = tuple(s for s in SECTIONS if mode == "optimized" or s != "optimizations")
    data = schema.collect(args, sections)
    try:
        return Config.from_dict(data, base=recipe(mode), source="command line")
    except ConfigError as err:
        raise ConfigError(f"{mode} mode: {err}") from None


def measure(args, parts, configs) -> dict:
    import torch

    from fastcam import __version__
    from fastcam.accelerator import resolve_device
    from fastcam.distributed import init_distributed

    any_config = next(iter(configs.values()))
    device = resolve_device(any_config.run.device)
    batch = any_config.hyperparameters.local_batch_size
    results = {"bench_schema": BENCH_SCHEMA, "fastcam_version": __version__, "device": _device_name(device),
               "torch": torch.__version__, "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "height": args.height, "width": args.width, "batch_size": batch, "steps": args.steps,
               "warmup": args.warmup, "step": {}, "eval": {}, "loader": {}, "epoch": {}}
    ctx = init_distributed("single", device.type)
    with tempfile.TemporaryDirectory(prefix="fastcam-bench-") as tmp:
        data = Path(args.data) if args.data else _synthesize(Path(tmp) / "data", args, batch)
        configs = {mode: config.replace(run={"stage_dir": str(Path(tmp) / f"staged-{mode}")})
                   for mode, config in configs.items()}
        if "step" in parts:
            from fastcam.bench_step import bench_steps

            results["step"] = bench_steps(configs, ctx, device, data, args, _trainer, _sync, _reset_peak, _peak_gb)
            _write(args.json, results)
        for mode, config in configs.items():
            for part in ("eval", "epoch"):
                if part in parts:
                    results[part][mode] = PART_FUNCTIONS[part](config, ctx, device, data, args)
                    _write(args.json, results)
        if "loader" in parts:
            results["loader"] = _bench_loaders(any_config, ctx, device, data, Path(tmp) / "staged-loaders", args)
            _write(args.json, results)
    return results


def _trainer(config, ctx, device, data):
    import torch

    from fastcam.train import Trainer
    from fastcam.train.plan import resolve_plan

    torch.manual_seed(0)
    return Trainer(resolve_plan(config, ctx, device, data_dir=data), ctx)


def _bench_eval(config, ctx, device, data, args) -> dict:
    trainer = _trainer(config, ctx, device, data)
    size = trainer.plan.eval_batch_size  # the reference's 1 in baseline mode
    batch = trainer.synthetic_batch(size)
    trainer.evaluate([batch] * max(1, args.warmup))
    _sync(device)
    start = time.perf_counter()
    trainer.evaluate([batch] * args.steps)
    seconds = time.perf_counter() - start
    return {"samples_per_s": args.steps * size / seconds, "batch_size": size}


def _bench_epoch(config, ctx, device, data, args) -> dict:
    from fastcam.errors import DataError
    from fastcam.train.inputs import build_loaders, stage_inputs

    trainer = _trainer(config, ctx, device, data)
    stage_inputs(trainer.plan, ctx, say=lambda _m: None)
    loaders = build_loaders(trainer.plan, ctx, seed=0)
    if trainer.execution.warm_up:
        trainer.warm_up()
    batches = iter(loaders.train)
    trainer.train_epoch(list(itertools.islice(batches, args.warmup)))
    _sync(device)
    start = time.perf_counter()
    result = trainer.train_epoch(itertools.islice(batches, args.steps))
    _sync(device)
    if result.steps < args.steps:
        raise DataError(f"the loader delivered only {args.warmup + result.steps} batches; "
                        f"need --warmup + --steps = {args.warmup + args.steps}")
    batch = config.hyperparameters.local_batch_size
    return {"samples_per_s": args.steps * batch / (time.perf_counter() - start),
            "loader": config.optimizations.loader}


PART_FUNCTIONS = {"eval": _bench_eval, "epoch": _bench_epoch}


def _synthesize(root: Path, args, batch: int) -> Path:
    from fastcam.data.synth import synthesize

    count = max(batch * (args.steps + args.warmup), 2 * batch)
    print(f"synthesizing {count} samples of {args.height}x{args.width} for the benchmark", flush=True)
    synthesize(root, count, 2, height=args.height, width=args.width, seed=1, progress=True)
    return root


def _drain(loader, device, limit: int) -> tuple[int, float]:
    start, samples = time.perf_counter(), 0
    for i, (inputs, _labels, _) in enumerate(loader):
        inputs = inputs.to(device, non_blocking=True)
        samples += inputs.shape[0]
        if i + 1 >= limit:
            break
    _sync(device)
    return samples, time.perf_counter() - start


def _bench_loaders(config, ctx, device, data: Path, staged_root: Path, args) -> dict:
    from fastcam.accelerator import pin_memory
    from fastcam.data.reader import build_reference_loaders
    from fastcam.data.stage import stage_dataset
    from fastcam.data.staged import StagedLoader
    from fastcam.errors import ConfigError
    from fastcam.train.plan import reader_threads

    batch, workers = config.hyperparameters.local_batch_size, config.run.max_inter_threads
    out = {}
    reference = build_reference_loaders(data, local_batch_size=batch, workers=workers,
                                        pin_memory=pin_memory(device))
    samples, seconds = _drain(reference.train, device, args.steps)
    out["hdf5"] = {"samples_per_s": samples / seconds, "note": f"{min(workers, batch)} workers"}
    start = time.perf_counter()
    stage_dataset(data, staged_root, workers=max(1, workers), progress=False)
    staging_s = time.perf_counter() - start
    threads = reader_threads(workers)
    loader = StagedLoader(staged_root, "train", batch_size=batch, shuffle=True, drop_last=True, seed=0,
                          device=device, threads=threads)
    samples, seconds = _drain(loader, device, args.steps)
    out["staged"] = {"samples_per_s": samples / seconds, "note": f"staging {staging_s:.1f} s", "staging_s": staging_s}
    try:
        from fastcam.data.dali import DaliLoader
    except ConfigError as err:
        out["dali"] = {"samples_per_s": None, "note": str(err)}
        return out
    loader = DaliLoader(staged_root, "train", batch_size=batch, shuffle=True, drop_last=True, seed=0,
                        device=device, threads=threads)
    try:
        samples, seconds = _drain(loader, device, args.steps)
    finally:
        loader.close()
    out["dali"] = {"samples_per_s": samples / seconds, "note": "staged cache, DALI external source"}
    return out


def format_table(r: dict) -> str:
    lines = [f"fastcam bench on {r['device']} (torch {r['torch']}), {r['height']}x{r['width']}, "
             f"local batch {r['batch_size']}, {r['steps']} timed steps (step: median, modes interleaved)",
             "", "| part | variant | samples/s | ms/step | peak GB | TFLOP/s | notes |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode, m in r["step"].items():
        notes = [m["optimizer_implementation"], f"{m['host_syncs_per_step']} host reads/step"]
        if m.get("warmup_s"):
            notes.append(f"warm-up {m['warmup_s']:.0f} s")
        lines.append(f"| step | {mode} | {m['samples_per_s']:.1f} | {m['ms_per_step']:.1f} | "
                     f"{_fmt(m['peak_memory_gb'])} | {m['tflops']:.2f} | {'; '.join(notes)} |")
    for mode, m in r["eval"].items():
        lines.append(f"| eval | {mode} | {m['samples_per_s']:.1f} | | | | batch {m['batch_size']} |")
    for name, m in r["loader"].items():
        rate = "not measured" if m["samples_per_s"] is None else f"{m['samples_per_s']:.1f}"
        lines.append(f"| loader | {name} | {rate} | | | | {m['note']} |")
    for mode, m in r["epoch"].items():
        lines.append(f"| epoch | {mode} | {m['samples_per_s']:.1f} | | | | {m['loader']} loader |")
    for part in ("step", "epoch"):
        if "baseline" in r[part] and "optimized" in r[part]:
            ratio = r[part]["optimized"]["samples_per_s"] / r[part]["baseline"]["samples_per_s"]
            lines.append(f"optimized / baseline {part} throughput: {ratio:.2f}x")
    return "\n".join(lines)


def _write(path, results: dict) -> None:
    from fastcam.files import atomic_write_text

    atomic_write_text(path, json.dumps(results, indent=2) + "\n")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _split(text: str, allowed, flag: str) -> list[str]:
    from fastcam.errors import ConfigError

    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise ConfigError(f"{flag} takes a comma list of {', '.join(allowed)}, got {text!r}")
    return items


# Device-generic through fastcam.accelerator, imported late like torch (the CLI starts fast).
def _device_name(device) -> str:
    from fastcam.accelerator import device_name

    return device_name(device)


def _sync(device) -> None:
    from fastcam.accelerator import synchronize

    synchronize(device)


def _reset_peak(device) -> None:
    from fastcam.accelerator import reset_peak_memory

    reset_peak_memory(device)


def _peak_gb(device):
    """Peak tensor memory on an accelerator; on the CPU the process's peak resident set."""
    from fastcam.accelerator import peak_memory_bytes

    peak = peak_memory_bytes(device)
    return None if peak is None else peak / 1e9
