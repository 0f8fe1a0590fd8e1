"""The measured rates a projection needs, read from a ``fastcam bench`` JSON.

Contract (``"bench_schema": 2``): ``height``, ``width``, ``batch_size`` at the
top level; ``epoch.<mode>.samples_per_s`` (loader + training step, whole
batches through the trainer's loop), ``step.<mode>.samples_per_s`` (the step
alone, synthetic tensors) and ``eval.<mode>.samples_per_s`` (evaluation), each
on one device. The training rate is the epoch part's where there is one (it
includes the loader, as a real epoch does), else the step part's. A flag
(``--train-samples-per-s``, ``--eval-samples-per-s``) wins over the file.

A bench taken at another size than 768 x 1152 is scaled to full size by pixel
area: the network is fully convolutional, so its FLOPs per sample are
proportional to the pixels (the same scaling ``fastcam bench`` uses for its
TFLOP/s); this ignores per-step overheads that do not grow with the image, so
it flatters small benches, and the assumption is printed as such.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from fastcam.errors import ConfigError, DataError
from fastcam.projection.model import FULL_HEIGHT, FULL_WIDTH, Assumption, Rates

BENCH_SCHEMA = 2


@dataclass
class BenchRates:
    rates: Rates  # per accelerator, full size
    batch_size: int  # the local batch the training rate was measured at
    device: str
    loader: str | None  # the epoch part's loader (hdf5, staged, ...), None where not measured
    assumptions: list[Assumption] = field(default_factory=list)


def read_bench(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot read the bench JSON {path}: {err.strerror or err}") from None
    try:
        bench = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not JSON ({err.msg}, line {err.lineno}); pass the file `fastcam bench` "
                        "wrote") from None
    if not isinstance(bench, dict):
        raise DataError(f"{path} holds a JSON {type(bench).__name__}, not the object `fastcam bench` writes")
    _check_schema(bench, path)
    return bench


def _check_schema(bench: dict, path: Path) -> None:
    schema = bench.get("bench_schema")
    if schema == BENCH_SCHEMA:
        return
    version = bench.get("fastcam_version")
    origin = f"fastcam {version}" if version else "no fastcam_version field"
    found = "has no \"bench_schema\" field" if schema is None else f"has \"bench_schema\": {schema!r}"
    raise ConfigError(f"{path} is from another fastcam version ({origin}): it {found}, this fastcam reads "
                      f"\"bench_schema\": {BENCH_SCHEMA}; re-run `fastcam bench`")


def measured_rates(bench: dict, path: str | os.PathLike, mode: str, *, train_override: float | None = None,
                   eval_override: float | None = None) -> BenchRates:
    """The per-accelerator full-size rates for ``mode``, with an assumption line for each."""
    height, width = (_field(bench, path, key, int) for key in ("height", "width"))
    batch = _field(bench, path, "batch_size", int)
    device = str(bench.get("device", "unknown device"))
    area = height * width / (FULL_HEIGHT * FULL_WIDTH)
    at = f"{device}, {height}x{width}"
    assumptions = []
    if area != 1.0 and (train_override is None or eval_override is None):
        assumptions.append(Assumption(
            "image size", f"bench at {height}x{width}: rates x {area:.4g} to 768x1152",
            "assumption: time per sample proportional to pixel area (FLOPs of a fully convolutional net); "
            "ignores fixed per-step costs, so it flatters a small bench"))
    if train_override is not None:
        train = train_override
        assumptions.append(Assumption("training rate", f"{train:.4g} samples/s per accelerator",
                                      "--train-samples-per-s (given, full size)"))
    else:
        part, measured = _training_figure(bench, path, mode)
        train = measured * area
        assumptions.append(Assumption(
            "training rate", f"{train:.4g} samples/s per accelerator",
            f"measured: bench {part}.{mode}.samples_per_s = {measured:.4g} ({at}, local batch {batch}"
            f"{', loader + step' if part == 'epoch' else ', step on synthetic tensors, no loader'})"))
    if eval_override is not None:
        evaluation = eval_override
        assumptions.append(Assumption("evaluation rate", f"{evaluation:.4g} samples/s per accelerator",
                                      "--eval-samples-per-s (given, full size)"))
    else:
        measured = _eval_figure(bench, path, mode)
        evaluation = measured * area
        eval_batch = (bench.get("eval", {}).get(mode) or {}).get("batch_size")
        assumptions.append(Assumption(
            "evaluation rate", f"{evaluation:.4g} samples/s per accelerator",
            f"measured: bench eval.{mode}.samples_per_s = {measured:.4g} ({at}"
            f"{f', batch {eval_batch}' if eval_batch else ''})"))
    epoch = (bench.get("epoch") or {}).get(mode)
    loader = epoch.get("loader") if isinstance(epoch, dict) else None
    return BenchRates(Rates(train=train, eval=evaluation), batch, device, loader, assumptions)


def _training_figure(bench: dict, path, mode: str) -> tuple[str, float]:
    for part in ("epoch", "step"):
        value = _nested(bench, part, mode)
        if value is not None:
            return part, _positive(value, path, f"{part}.{mode}.samples_per_s")
    raise ConfigError(f"{path} has no training throughput for mode {mode} (neither epoch.{mode}.samples_per_s "
                      f"nor step.{mode}.samples_per_s); re-run `fastcam bench --modes {mode}` "
                      "or pass --train-samples-per-s")


def _eval_figure(bench: dict, path, mode: str) -> float:
    value = _nested(bench, "eval", mode)
    if value is None:
        raise ConfigError(f"{path} has no evaluation throughput eval.{mode}.samples_per_s; re-run `fastcam bench` "
                          "with its eval part or pass --eval-samples-per-s")
    return _positive(value, path, f"eval.{mode}.samples_per_s")


def _nested(bench: dict, part: str, mode: str):
    section = bench.get(part)
    entry = section.get(mode) if isinstance(section, dict) else None
    return entry.get("samples_per_s") if isinstance(entry, dict) else None


def _field(bench: dict, path, key: str, kind: type):
    if key not in bench:
        raise ConfigError(f"{path} lacks the field {key!r}; re-run `fastcam bench`")
    value = bench[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or int(value) != value:
        raise ConfigError(f"{path}: {key} must be a positive integer, got {value!r}")
    return kind(value)


def _positive(value, path, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{path}: {name} must be a positive number of samples/s, got {value!r}")
    return float(value)
