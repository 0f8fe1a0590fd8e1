"""``fastcam data synth``: a synthetic DeepCAM data set in the real layout.

The real data set (8.8 TB) is rarely at hand. This writes ``train/`` and
``validation/`` sample files and ``stats.h5`` exactly as the real set stores
them: ``climate/data`` (H x W x 16 float32) and ``climate/labels_0`` (H x W
int32; readers cast labels to int64, and int32 halves the label bytes),
contiguous and uncompressed, with CAM5-like fields and learnable cyclone and
river labels (see :mod:`fastcam.data.fields`).

Each sample's random stream is derived from ``(seed, split, index)`` only, so
a data set is bit-for-bit the same for any number of workers. Each file is
written under a temporary name and renamed, so a killed run leaves no
half-written ``data-*.h5``; ``stats.h5`` is written last.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fastcam.data import fields, layout
from fastcam.errors import ConfigError, DataError

SPLIT_IDS = {"train": 0, "validation": 1}
TEMP_SUFFIX = ".tmp"  # data-000000.h5.tmp: never matched by layout.FILE_GLOB
SIZE_MULTIPLE = 16  # DeepLabv3+'s output stride (shared/spec/model.md)
MAX_DEFAULT_WORKERS = 8
# Beyond ~8x a river is as wide as the tropics and a cyclone covers a hemisphere.
MAX_FEATURE_SCALE = 8.0


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    n_train: int
    n_validation: int
    height: int
    width: int
    seed: int
    workers: int
    seconds: float
    bytes_written: int
    class_frequencies: tuple[float, float, float]

    @property
    def samples(self) -> int:
        return self.n_train + self.n_validation

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_written / 1e6 / max(self.seconds, 1e-9)


def validate_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value <= 0 or value % SIZE_MULTIPLE:
            raise ConfigError(
                f"--{name} {value}: must be a positive multiple of {SIZE_MULTIPLE} "
                f"(the network's output stride); the real data set is "
                f"{layout.FULL_HEIGHT} x {layout.FULL_WIDTH}"
            )


def make_sample(height: int, width: int, rng: np.random.Generator,
                feature_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One sample as stored: (H x W x 16 float32 data, H x W int32 labels)."""
    channels, labels = fields.generate(fields.make_grid(height, width), rng, feature_scale)
    return np.ascontiguousarray(channels.transpose(1, 2, 0)), labels


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def sample_path(root: Path, split: str, index: int) -> Path:
    return layout.split_dir(root, split) / f"data-{index:06d}.h5"


def write_sample(path: Path, data: np.ndarray, labels: np.ndarray) -> int:
    """Write one file (h5py's default: contiguous, uncompressed) atomically; returns its size."""
    import h5py

    temporary = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with h5py.File(temporary, "w") as f:
            f.create_dataset(layout.DATA_KEY, data=data)
            f.create_dataset(layout.LABEL_KEY, data=labels)
        os.replace(temporary, path)
        return path.stat().st_size
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write sample ({err})") from None


@dataclass(frozen=True)
class _Task:
    root: str
    split: str
    index: int
    height: int
    width: int
    seed: int
    feature_scale: float


@dataclass(frozen=True)
class _Result:
    split: str
    minval: np.ndarray  # per channel
    maxval: np.ndarray
    class_counts: np.ndarray
    nbytes: int


def _produce(task: _Task) -> _Result:
    """Generate and write one sample (runs in a worker process)."""
    rng = sample_rng(task.seed, task.split, task.index)
    channels, labels = fields.generate(fields.make_grid(task.height, task.width), rng, task.feature_scale)
    flat = channels.reshape(layout.NUM_CHANNELS, -1)  # channel-first: contiguous reductions
    minval, maxval = flat.min(axis=1), flat.max(axis=1)
    data = np.ascontiguousarray(channels.transpose(1, 2, 0))
    nbytes = write_sample(sample_path(Path(task.root), task.split, task.index), data, labels)
    counts = np.bincount(labels.ravel(), minlength=layout.NUM_CLASSES)
    return _Result(task.split, minval, maxval, counts, nbytes)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def _run(tasks: list[_Task], workers: int) -> Iterator[_Result]:
    if workers == 1:  # in-process: simplest to debug, no start-up cost
        yield from map(_produce, tasks)
        return
    # spawn, not fork: forking a parent that holds threads (BLAS, torch, tqdm's
    # monitor) can deadlock the child.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(_produce, tasks)


def _prepare(root: Path, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise DataError(f"{root}: not empty; pass --force to replace the data set there")
        for split in layout.SPLITS:  # only what synth itself writes
            directory = layout.split_dir(root, split)
            for stale in [*directory.glob(layout.FILE_GLOB), *directory.glob("*" + TEMP_SUFFIX)]:
                stale.unlink()
        (root / layout.STATS_FILE).unlink(missing_ok=True)
    for split in layout.SPLITS:
        layout.split_dir(root, split).mkdir(parents=True, exist_ok=True)


def _remove_temporaries(root: Path) -> None:
    for split in layout.SPLITS:
        for temporary in layout.split_dir(root, split).glob("*" + TEMP_SUFFIX):
            temporary.unlink(missing_ok=True)


def write_stats(root: Path, minval: np.ndarray, maxval: np.ndarray) -> int:
    import h5py

    path = root / layout.STATS_FILE
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    with h5py.File(temporary, "w") as f:
        f.create_dataset(layout.MINVAL_KEY, data=minval.astype(np.float32))
        f.create_dataset(layout.MAXVAL_KEY, data=maxval.astype(np.float32))
    os.replace(temporary, path)
    return path.stat().st_size


def synthesize(out_dir: str | os.PathLike, n_train: int, n_validation: int,
               height: int = layout.FULL_HEIGHT, width: int = layout.FULL_WIDTH, seed: int = 0,
               workers: int | None = None, progress: bool = True, force: bool = False,
               feature_scale: float = 1.0) -> SynthSummary:
    """Write a synthetic data set to ``out_dir``; see the module docstring.
    ``feature_scale`` widens cyclones and rivers (fastcam.data.fields)."""
    from tqdm import tqdm

    validate_size(height, width)
    for name, count in (("--train", n_train), ("--validation", n_validation)):
        if count < 1:
            raise ConfigError(f"{name} {count}: need at least one sample per split")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: must be >= 0")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if not (isinstance(feature_scale, (int, float)) and 0 < feature_scale <= MAX_FEATURE_SCALE):
        raise ConfigError(f"feature scale {feature_scale}: must be in (0, {MAX_FEATURE_SCALE}]")
    root = Path(out_dir)
    _prepare(root, force)
    tasks = [_Task(str(root), split, index, height, width, seed, float(feature_scale))
             for split, count in (("train", n_train), ("validation", n_validation))
             for index in range(count)]
    workers = min(workers or default_workers(), len(tasks))

    start = time.perf_counter()
    minval = np.full(layout.NUM_CHANNELS, np.inf, np.float32)
    maxval = np.full(layout.NUM_CHANNELS, -np.inf, np.float32)
    counts = np.zeros(layout.NUM_CLASSES, np.int64)
    nbytes = 0
    try:
        with tqdm(total=len(tasks), desc="synth", unit="sample", disable=not progress) as bar:
            for result in _run(tasks, workers):
                if result.split == "train":  # stats come from the training files, as in the real set
                    np.minimum(minval, result.minval, out=minval)
                    np.maximum(maxval, result.maxval, out=maxval)
                counts += result.class_counts
                nbytes += result.nbytes
                bar.update()
        nbytes += write_stats(root, minval, maxval)
    except BaseException:
        _remove_temporaries(root)
        raise
    seconds = time.perf_counter() - start
    frequencies = tuple(float(c) for c in counts / counts.sum())
    return SynthSummary(root, n_train, n_validation, height, width, seed, workers, seconds, nbytes,
                        frequencies)  # type: ignore[arg-type]
