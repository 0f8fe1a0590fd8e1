"""``fastcam bench``: training-step, loader and whole-epoch throughput, one process, one device.

Parts (``--parts``, default all):

- ``step``: the training step of the baseline configuration and of the
  optimized one on synthetic tensors (samples/s, ms/step, peak memory,
  achieved TFLOP/s from 1.97 TFLOP per 768x1152 sample scaled by image area);
- ``loader``: the reference HDF5 reader (DataLoader with ``--workers``) and the
  staged loader (after staging, timed separately), no training;
- ``epoch``: loader plus step for each mode over ``--steps`` batches, no evaluation.

Both modes run the trainer's own code (fastcam.train.setup / loop), so what is
measured is what ``fastcam train`` executes. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

FLOP_PER_FULL_SAMPLE = 1.97e12  # forward + backward, 768x1152 (shared/spec/model.md)
FULL_AREA = 768 * 1152
PARTS = ("step", "loader", "epoch")
MODES = ("baseline", "optimized")


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure step, loader and epoch throughput (table + JSON)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1152)
    p.add_argument("--batch-size", type=int, default=8, help="local batch size (default 8)")
    p.add_argument("--steps", type=int, default=20, help="timed steps/batches per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of baseline, optimized")
    p.add_argument("--data", help="data set for the loader/epoch parts (default: synthesize one)")
    p.add_argument("--workers", type=int, default=4, help="reference loader workers (default 4)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile for the optimized mode (default auto: CUDA only)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="optimized mode's precision (default auto: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--json", default="bench.json", help="write results here (default bench.json)")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from fastcam.config import atomic_write_text
    from fastcam.errors import ConfigError

    parts = _split(args.parts, PARTS, "--parts")
    modes = _split(args.modes, MODES, "--modes")
    if args.height % 16 or args.width % 16 or args.height <= 0 or args.width <= 0:
        raise ConfigError(f"--height/--width must be positive multiples of 16, got {args.height}x{args.width}")
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be >= 1 and --warmup >= 0")
    results = measure(args, parts, modes)
    print(format_table(results))
    atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def measure(args, parts, modes) -> dict:
    import torch

    from fastcam.train.execution import resolve_device

    device = resolve_device(args.device)
    results = {"device": _device_name(device), "torch": torch.__version__, "host": platform.node(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "height": args.height, "width": args.width,
               "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
               "step": {}, "loader": {}, "epoch": {}}
    configs = {mode: _config(mode, args) for mode in modes}
    if "step" in parts:
        for mode, config in configs.items():
            results["step"][mode] = _bench_step(config, device, args)
    if "loader" in parts or "epoch" in parts:
        with tempfile.TemporaryDirectory(prefix="fastcam-bench-") as tmp:
            data = Path(args.data) if args.data else _synthesize(Path(tmp) / "data", args)
            staged_root = Path(tmp) / "staged"
            if "loader" in parts:
                results["loader"] = _bench_loaders(data, staged_root, device, args)
            if "epoch" in parts:
                for mode, config in configs.items():
                    results["epoch"][mode] = _bench_epoch(config, data, staged_root, device, args)
    return results


def _config(mode: str, args):
    from fastcam.config import recipe

    config = recipe(mode)
    config.run.device = args.device
    config.hyperparameters.local_batch_size = args.batch_size
    if mode == "optimized":
        config.optimizations.compile = args.compile
        config.optimizations.precision = args.precision
    return config.validate()


def _single(device):
    from fastcam.distributed import init_distributed

    return init_distributed("single", device.type)


def _timed_steps(c, ctx, batches, args) -> float:
    """Seconds for ``args.steps`` training steps through the trainer's own loop,
    after ``args.warmup`` untimed ones; ``batches`` is any iterable of batches."""
    import itertools

    from fastcam.train.loop import StepState, train_epoch

    kwargs = dict(criterion=c.criterion, optimizer=c.optimizer, scheduler=c.scheduler, grad_scaler=c.scaler,
                  execution=c.execution, ctx=ctx, state=StepState(), accumulation=1, logging_frequency=0)
    iterator = iter(batches)
    if args.warmup:
        train_epoch(c.net, list(itertools.islice(iterator, args.warmup)), **kwargs)
    _sync(c.execution.device)
    start = time.perf_counter()
    result = train_epoch(c.net, itertools.islice(iterator, args.steps), **kwargs)
    _sync(c.execution.device)
    if result.steps < args.steps:
        from fastcam.errors import DataError

        raise DataError(f"the loader delivered only {args.warmup + result.steps} batches; "
                        f"need --warmup + --steps = {args.warmup + args.steps}")
    return time.perf_counter() - start


def _bench_step(config, device, args) -> dict:
    import torch

    from fastcam.train.inputs import input_dtype
    from fastcam.train.setup import build_components, synthetic_batch, warm_up

    torch.manual_seed(0)
    ctx = _single(device)
    c = build_components(config, ctx, device)
    dtype = input_dtype(config)
    _reset_peak(device)
    compile_s = None
    if c.execution.compile:
        compile_s = warm_up(c, ctx, batch_size=args.batch_size, channels=16, height=args.height,
                            width=args.width, input_dtype=dtype)
    batch = synthetic_batch(args.batch_size, 16, args.height, args.width, device, dtype)
    if c.execution.channels_last:
        batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
    seconds = _timed_steps(c, ctx, [batch] * (args.warmup + args.steps), args)
    samples_per_s = args.steps * args.batch_size / seconds
    flop = FLOP_PER_FULL_SAMPLE * args.height * args.width / FULL_AREA
    return {"samples_per_s": samples_per_s, "ms_per_step": 1000 * seconds / args.steps,
            "peak_memory_gb": _peak_gb(device), "tflops": samples_per_s * flop / 1e12,
            "compile_warmup_s": compile_s, "execution": c.execution.switches()}


def _synthesize(root: Path, args) -> Path:
    from fastcam.data.synth import synthesize

    count = max(args.batch_size * (args.steps + args.warmup), 2 * args.batch_size)
    print(f"synthesizing {count} samples of {args.height}x{args.width} for the loader benchmark", flush=True)
    synthesize(root, count, 1, height=args.height, width=args.width, seed=1, progress=True)
    return root


def _drain(loader, device, limit: int) -> tuple[int, float]:
    start, samples = time.perf_counter(), 0
    for i, (inputs, labels, _) in enumerate(loader):
        inputs = inputs.to(device, non_blocking=True)
        samples += inputs.shape[0]
        if i + 1 >= limit:
            break
    _sync(device)
    return samples, time.perf_counter() - start


def _bench_loaders(data: Path, staged_root: Path, device, args) -> dict:
    from fastcam.data.reader import build_reference_loaders
    from fastcam.data.stage import stage_dataset
    from fastcam.data.staged import StagedLoader

    out = {}
    reference = build_reference_loaders(data, local_batch_size=args.batch_size, workers=args.workers,
                                        pin_memory=device.type == "cuda")
    samples, seconds = _drain(reference.train, device, args.steps)
    out["hdf5"] = {"samples_per_s": samples / seconds, "workers": min(args.workers, args.batch_size)}
    start = time.perf_counter()
    stage_dataset(data, staged_root, workers=max(1, args.workers), progress=False)
    staging_s = time.perf_counter() - start
    loader = StagedLoader(staged_root, "train", batch_size=args.batch_size, shuffle=True, drop_last=True,
                          seed=0, device=device)
    samples, seconds = _drain(loader, device, args.steps)
    out["staged"] = {"samples_per_s": samples / seconds, "staging_s": staging_s}
    return out


def _bench_epoch(config, data: Path, staged_root: Path, device, args) -> dict:
    import torch

    from fastcam.train.inputs import build_loaders, stage_inputs
    from fastcam.train.setup import build_components, warm_up

    torch.manual_seed(0)
    ctx = _single(device)
    config = dataclasses.replace(config, run=dataclasses.replace(
        config.run, data_dir_prefix=str(data), stage_dir=str(staged_root.parent / f"staged-{config.mode}"),
        max_inter_threads=args.workers))
    c = build_components(config, ctx, device)
    loaders = build_loaders(config, ctx, device, 0, stage_inputs(config, ctx, say=lambda _m: None))
    if c.execution.compile:
        warm_up(c, ctx, batch_size=args.batch_size, channels=16, height=args.height, width=args.width,
                input_dtype=loaders.input_dtype)
    seconds = _timed_steps(c, ctx, loaders.train, args)
    return {"samples_per_s": args.steps * args.batch_size / seconds, "loader": config.optimizations.loader}


def format_table(r: dict) -> str:
    lines = [f"fastcam bench on {r['device']} (torch {r['torch']}), {r['height']}x{r['width']}, "
             f"local batch {r['batch_size']}, {r['steps']} timed steps",
             "", "| part | variant | samples/s | ms/step | peak GB | TFLOP/s | notes |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode, m in r["step"].items():
        notes = f"compile warm-up {m['compile_warmup_s']:.0f} s" if m.get("compile_warmup_s") else ""
        lines.append(f"| step | {mode} | {m['samples_per_s']:.1f} | {m['ms_per_step']:.1f} | "
                     f"{_fmt(m['peak_memory_gb'])} | {m['tflops']:.2f} | {notes} |")
    for name, m in r["loader"].items():
        notes = f"staging {m['staging_s']:.1f} s" if "staging_s" in m else f"{m.get('workers')} workers"
        lines.append(f"| loader | {name} | {m['samples_per_s']:.1f} | | | | {notes} |")
    for mode, m in r["epoch"].items():
        lines.append(f"| epoch | {mode} | {m['samples_per_s']:.1f} | | | | {m['loader']} loader |")
    if "baseline" in r["step"] and "optimized" in r["step"]:
        ratio = r["step"]["optimized"]["samples_per_s"] / r["step"]["baseline"]["samples_per_s"]
        lines.append(f"\noptimized / baseline step throughput: {ratio:.2f}x")
    if "baseline" in r["epoch"] and "optimized" in r["epoch"]:
        ratio = r["epoch"]["optimized"]["samples_per_s"] / r["epoch"]["baseline"]["samples_per_s"]
        lines.append(f"optimized / baseline epoch throughput: {ratio:.2f}x")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _split(text: str, allowed, flag: str) -> list[str]:
    from fastcam.errors import ConfigError

    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise ConfigError(f"{flag} takes a comma list of {', '.join(allowed)}, got {text!r}")
    return items


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from fastcam.distributed import _cpu_model

    return f"CPU: {_cpu_model()}"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device):
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    # CPU: the process's peak resident set (includes everything loaded so far).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
