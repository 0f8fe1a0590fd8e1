"""``fastcam data stage``: this rank's shards as one compact cache on node-local disk.

Layout, per split (``DST/train``, ``DST/validation``):

- ``inputs.f16``: raw N x H x W x C float16 (``inputs.f32``, float32, when
  staged with ``dtype="fp32"``), normalised exactly as the
  reference reader does it (:class:`fastcam.data.reader.CamDataset` with the
  ``stats.h5`` of the source), height-width-channel order, so that a batch
  read into an N x H x W x C buffer becomes a channels-last N x C x H x W
  tensor by ``permute(0, 3, 1, 2)``, without a copy;
- ``labels.u8``: raw N x H x W uint8 (the labels are 0, 1, 2);
- ``checksums.u64``: per sample ``DONE | crc32(input bytes, label bytes)``,
  0 while the sample is not staged: the completion marker and the checksum;
- ``index.json``: format version, shape and dtypes, the source (root, file
  names in order with size and mtime, minval/maxval, channel selection), rank
  and world size, whether staging is complete and how long it took.

Sharding. Validation: :func:`fastcam.data.reader.shard_validation`, so every
sample is evaluated exactly once across ranks. Training: the sorted file list
dealt round-robin, ``files[rank::world_size]``, truncated to
``len(files) // world_size`` so every rank has the same count. Each rank then
trains on its fixed shard, reshuffled every epoch (:mod:`fastcam.data.staged`)
-- what NVIDIA's MLPerf HPC DeepCAM implementation does with node-local
staging -- instead of the reference's global reshuffle through a
``DistributedSampler``; over the run each sample is still seen once per epoch.

Float16 error. Staged value = float16(reference float32 value), nothing else
differs. Round-to-nearest float16 has 11 significant bits, so the error is at
most ``2**-11 * |x|`` (unit roundoff, :data:`FLOAT16_UNIT_ROUNDOFF`) for
normal numbers and ``2**-25`` (half the smallest subnormal) below ``2**-14``.
Training inputs lie in [0, 1] (the stats are the training set's min and max),
hence an absolute error of at most ``2**-12 ~ 2.4e-4`` (:data:`TRAIN_MAX_ABS_ERROR`;
the largest error is for values in [0.5, 1)). Validation values may lie slightly
outside [0, 1]; the relative bound still holds. Labels are exact.

Staging runs in spawned worker processes, each writing its samples at their
offsets into the preallocated memory-mapped files and flushing them; the parent
then sets and flushes the sample's checksum marker. A worker re-reads what it
wrote and compares checksums. An interrupted staging (an error, Ctrl-C,
SIGKILL) resumes on the next call: samples marked done are re-verified against
their checksums, the rest are staged. A complete stage whose index matches the
source is reused without reading the source, after a check of its stored
checksums (``verify``): by default of :data:`DEFAULT_VERIFY_SAMPLES` samples
per split spread over it, first and last included; ``"full"`` checks every
sample. A mismatch (a cache changed since staging: issue 17, defect 1 trained
two epochs on overwritten inputs) is reported in one line, and the split is
resumed: every sample is verified and the changed ones staged again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from fastcam.data import layout
from fastcam.data.reader import sample_shape, shard_validation
from fastcam.data.stage_format import (  # noqa: F401  (re-exported: the format is part of this API)
    DONE,
    FLOAT16_MAX,
    FLOAT16_SUBNORMAL_ERROR,
    FLOAT16_UNIT_ROUNDOFF,
    FORMAT_VERSION,
    INDEX_FILE,
    INPUT_DTYPE,
    INPUT_DTYPES,
    INPUT_FILES,
    INPUTS_FILE,
    LABEL_DTYPE,
    LABELS_FILE,
    LOCK_FILE,
    MARKS_FILE,
    TRAIN_MAX_ABS_ERROR,
    checksum,
    map_file,
    read_index,
    stage_dtype_of,
)
from fastcam.data.stage_worker import _Pool, _Task
from fastcam.errors import ConfigError, DataError

MAX_DEFAULT_WORKERS = 8
VERIFY_MODES = ("sample", "full")
DEFAULT_VERIFY_SAMPLES = 16  # per split: ~0.5 GB of crc32 on the real set, well under a second

# What the reader of a cache needs; everything in the index except bookkeeping.
_BOOKKEEPING = ("complete", "staging_seconds", "resumed")


def train_shard(files: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """Round-robin, equal-sized: ``files[rank::world_size][:len(files) // world_size]``."""
    return list(files[rank::world_size])[:len(files) // world_size]


def shard(files: Sequence[Path], split: str, rank: int, world_size: int) -> list[Path]:
    return train_shard(files, rank, world_size) if split == "train" else shard_validation(files, rank, world_size)



@dataclass(frozen=True)
class SplitStage:
    split: str
    directory: Path
    count: int
    staged: int  # samples written by this call
    reverified: int  # samples from an interrupted call, verified and kept
    reused: bool  # a complete stage matched the source: nothing read
    seconds: float
    nbytes: int  # size of the cache files


@dataclass(frozen=True)
class StageSummary:
    dst: Path
    rank: int
    world_size: int
    workers: int
    seconds: float
    splits: tuple[SplitStage, ...]

    @property
    def reused(self) -> bool:
        return all(s.reused for s in self.splits)

    @property
    def staged(self) -> int:
        return sum(s.staged for s in self.splits)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.splits)

    def split(self, name: str) -> SplitStage:
        return next(s for s in self.splits if s.split == name)


@dataclass
class _Plan:
    split: str
    directory: Path
    files: list[Path]
    identity: dict
    shape: tuple[int, int, int, int]  # N, H, W, C
    dtype: str = "fp16"  # the stage dtype (stage_format.INPUT_DTYPES)
    changed: list[int] = field(default_factory=list)  # samples of a reused cache that failed their checksum

    @property
    def sizes(self) -> dict[str, int]:
        n, h, w, c = self.shape
        return {INPUT_FILES[self.dtype]: n * h * w * c * INPUT_DTYPES[self.dtype].itemsize,
                LABELS_FILE: n * h * w, MARKS_FILE: n * 8}


def stage_dataset(src: str | os.PathLike, dst: str | os.PathLike, *, rank: int = 0, world_size: int = 1,
                  workers: int | None = None, progress: bool = True, channels: Sequence[int] | None = None,
                  on_sample: Callable[[str, int], None] | None = None, verify: str = "sample",
                  dtype: str = "fp16") -> StageSummary:
    """Stage this rank's training and validation shards of ``src`` into ``dst``.

    ``channels`` selects input channels (the reference's ``--channels``; default
    all). ``on_sample(split, index)`` is called in this process after each
    sample is written, verified and marked done (for tests; raising stops staging).
    ``verify`` says how much of a reused cache is checked against its stored
    checksums: ``"sample"`` (default) or ``"full"``. ``dtype`` is the inputs'
    dtype: ``"fp16"`` (default; rounds, see the module doc) or ``"fp32"`` (the
    reference reader's values exactly, twice the bytes).
    Each rank needs its own ``dst`` (the cache holds one rank's shards); a
    second staging into a ``dst`` in use is refused.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"--rank {rank} --world-size {world_size}: need 0 <= rank < world size")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if verify not in VERIFY_MODES:
        raise ConfigError(f"cache verification {verify!r}: choose one of {', '.join(VERIFY_MODES)}")
    if dtype not in INPUT_DTYPES:
        raise ConfigError(f"stage dtype {dtype!r}: choose one of {', '.join(INPUT_DTYPES)}")
    start = time.perf_counter()
    with _exclusive(Path(dst)):
        return _stage_locked(Path(src), Path(dst), rank, world_size, workers, progress, channels, on_sample, start,
                             verify, dtype)


def _stage_locked(src: Path, dst: Path, rank: int, world_size: int, workers: int | None, progress: bool,
                  channels: Sequence[int] | None, on_sample: Callable[[str, int], None] | None,
                  start: float, verify_mode: str, dtype: str) -> StageSummary:
    from tqdm import tqdm

    channel_list = None if channels is None else [int(c) for c in channels]
    minval, maxval = layout.load_stats(src, channel_list)
    stats = (tuple(minval.tolist()), tuple(maxval.tolist()), None if channel_list is None else tuple(channel_list))
    plans = [_plan(src, dst, split, rank, world_size, channel_list, minval, maxval, dtype)
             for split in layout.SPLITS]
    complete = [p for p in plans if _is_complete(p)]
    todo = [p for p in plans if p not in complete]
    for plan in complete:
        changed = _check_reused(plan, stats, verify_mode, workers, progress)
        if changed:
            print(f"fastcam: {len(changed)} staged sample(s) in {plan.directory} differ from their stored "
                  f"checksums (first: {plan.files[changed[0]]}); verifying all and staging changed ones again",
                  flush=True)
            index = read_index(plan.directory)
            _write_index(plan.directory, {**index, "complete": False})  # a crash now leaves it to resume
            todo.append(plan)
    marks = {p.split: _prepare(p) for p in todo}
    for plan in todo:
        for i in getattr(plan, "changed", ()):
            _set_mark(marks[plan.split], i, 0)
    verify = [_Task("verify", p.split, str(p.directory), int(i), str(p.files[i]), p.shape[1:], stats,
                    int(marks[p.split][i]), p.dtype) for p in todo for i in np.flatnonzero(marks[p.split])]
    default = max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))
    workers = max(1, min(workers or default, len(verify) + sum(p.shape[0] for p in todo)))
    staged = {p.split: 0 for p in plans}
    reverified = {p.split: 0 for p in plans}
    try:
        with _Pool(workers) as pool:
            with tqdm(total=len(verify), desc="verify", unit="sample", disable=not progress or not verify) as bar:
                for task, ok in pool.run(verify):
                    if ok:
                        reverified[task.split] += 1
                    else:  # changed since it was marked done: stage it again
                        _set_mark(marks[task.split], task.index, 0)
                    bar.update()
            tasks = [_Task("stage", p.split, str(p.directory), int(i), str(p.files[i]), p.shape[1:], stats, 0,
                           p.dtype) for p in todo for i in np.flatnonzero(marks[p.split] == 0)]
            with tqdm(total=len(tasks), desc="stage", unit="sample", disable=not progress or not tasks) as bar:
                for task, crc in pool.run(tasks):
                    _set_mark(marks[task.split], task.index, int(DONE) | crc)
                    staged[task.split] += 1
                    bar.update()
                    if on_sample is not None:
                        on_sample(task.split, task.index)
    finally:
        for array in marks.values():
            array.flush()
        marks.clear()
    seconds = time.perf_counter() - start
    pending = {p.split for p in todo}
    for plan in todo:
        _write_index(plan.directory, {**plan.identity, "complete": True, "staging_seconds": round(seconds, 3),
                                      "resumed": reverified[plan.split] > 0})
    splits = tuple(SplitStage(p.split, p.directory, p.shape[0], staged[p.split], reverified[p.split],
                              p.split not in pending, seconds, sum(p.sizes.values())) for p in plans)
    return StageSummary(dst, rank, world_size, workers, seconds, splits)


def _check_reused(plan: _Plan, stats: tuple, mode: str, workers: int | None, progress: bool) -> list[int]:
    """Indices of a complete split's checked samples whose bytes no longer match their checksums
    (also kept on ``plan.changed``). ``sample`` mode reads a few in this process; ``full`` all, in workers."""
    from tqdm import tqdm

    from fastcam.data.check import value_sample

    count = plan.shape[0]
    try:
        stored = np.fromfile(plan.directory / MARKS_FILE, dtype=np.uint64, count=count)
    except (OSError, ValueError) as err:
        raise DataError(f"{plan.directory / MARKS_FILE}: cannot read ({err})") from None
    chosen = range(count) if mode == "full" else value_sample(count, DEFAULT_VERIFY_SAMPLES)
    tasks = [_Task("verify", plan.split, str(plan.directory), int(i), str(plan.files[i]), plan.shape[1:], stats,
                   int(stored[i]), plan.dtype) for i in chosen]
    pool_size = 1 if mode == "sample" else max(1, min(workers or os.cpu_count() or 1, MAX_DEFAULT_WORKERS))
    changed = []
    with _Pool(pool_size) as pool, tqdm(total=len(tasks), desc=f"verify {plan.split} cache", unit="sample",
                                        disable=not progress or mode == "sample") as bar:
        for task, ok in pool.run(tasks):
            if not ok:
                changed.append(task.index)
            bar.update()
    plan.changed = sorted(changed)
    return plan.changed


@contextlib.contextmanager
def _exclusive(dst: Path) -> Iterator[None]:
    """Hold ``DST/.stage.lock`` while staging. A second process staging the
    same directory (e.g. two tuning workers sharing an output directory) waits
    for the first and then finds the stage complete and reuses it; ranks never
    share a directory (fastcam.train.inputs.stage_root names it by rank)."""
    import fcntl

    try:
        dst.mkdir(parents=True, exist_ok=True)
        lock = open(dst / LOCK_FILE, "a")
    except OSError as err:
        raise DataError(f"{dst}: cannot create the staging directory ({err})") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"fastcam: another process is staging into {dst}; waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _plan(src: Path, dst: Path, split: str, rank: int, world_size: int, channels: list[int] | None,
          minval: np.ndarray, maxval: np.ndarray, dtype: str = "fp16") -> _Plan:
    files = layout.list_files(src, split)
    if len(files) < world_size:
        raise DataError(f"{layout.split_dir(src, split)}: {len(files)} {split} files for {world_size} ranks; "
                        "every rank needs at least one")
    mine = shard(files, split, rank, world_size)
    height, width, _ = sample_shape(mine[0])
    channel_count = len(minval)  # the reader checks each file's channel count against the stats
    shape = (len(mine), height, width, channel_count)
    identity = {
        "format_version": FORMAT_VERSION, "split": split, "rank": rank, "world_size": world_size,
        "count": len(mine), "global_samples": len(mine) * world_size if split == "train" else len(files),
        "inputs": {"file": INPUT_FILES[dtype], "dtype": INPUT_DTYPES[dtype].name, "shape": list(shape),
                   "order": "NHWC"},
        "labels": {"file": LABELS_FILE, "dtype": LABEL_DTYPE.name, "shape": list(shape[:3])},
        "checksums": {"file": MARKS_FILE, "dtype": "uint64", "meaning": "0: not staged; 2**32 | crc32(inputs, labels)"},
        "sharding": "round-robin files[rank::world_size], truncated to len(files) // world_size"
                    if split == "train" else "fastcam.data.reader.shard_validation (every file on one rank)",
        "source": {"root": str(src.resolve()), "files": [_file_identity(p) for p in mine],
                   "channels": channels, "minval": minval.tolist(), "maxval": maxval.tolist()},
    }
    return _Plan(split, dst / split, mine, identity, shape, dtype)


def _file_identity(path: Path) -> list:
    try:
        info = path.stat()
    except OSError as err:
        raise DataError(f"{path}: cannot stat sample ({err})") from None
    return [path.name, info.st_size, info.st_mtime_ns]


def _matches(plan: _Plan) -> dict | None:
    """The existing index when it describes exactly this plan and its files have the right sizes."""
    try:
        index = read_index(plan.directory)
    except DataError:
        return None
    if {k: v for k, v in index.items() if k not in _BOOKKEEPING} != plan.identity:
        return None
    for name, size in plan.sizes.items():
        path = plan.directory / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return index


def _is_complete(plan: _Plan) -> bool:
    index = _matches(plan)
    return bool(index and index.get("complete"))


def _prepare(plan: _Plan) -> np.memmap:
    """Open (resume) or create the cache files of an incomplete split; returns the marks."""
    if _matches(plan) is None:
        _create(plan)
    try:
        return np.memmap(plan.directory / MARKS_FILE, dtype=np.uint64, mode="r+", shape=(plan.shape[0],))
    except (OSError, ValueError) as err:
        raise DataError(f"{plan.directory / MARKS_FILE}: cannot open ({err})") from None


def _create(plan: _Plan) -> None:
    directory = plan.directory
    try:
        if directory.exists() and not directory.is_dir():
            raise DataError(f"{directory}: exists and is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / INDEX_FILE).unlink(missing_ok=True)  # first: an index never describes stale files
        for name in {*plan.sizes, *INPUT_FILES.values()}:  # also another dtype's inputs
            (directory / name).unlink(missing_ok=True)
        needed, free = sum(plan.sizes.values()), shutil.disk_usage(directory).free
        if needed > free:
            raise DataError(f"{directory}: staging needs {needed / 1e9:.2f} GB, only {free / 1e9:.2f} GB free")
        for name, size in plan.sizes.items():
            fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                # Reserve the blocks now: running out of space later would be a SIGBUS in a
                # worker writing through its memory map. The marks file must read as zeros.
                os.ftruncate(fd, size)
                if hasattr(os, "posix_fallocate") and name != MARKS_FILE:
                    os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        _write_index(directory, {**plan.identity, "complete": False, "staging_seconds": None, "resumed": False})
    except OSError as err:
        raise DataError(f"{directory}: cannot create the staging files ({err})") from None


def _set_mark(marks: np.memmap, index: int, value: int) -> None:
    marks[index] = np.uint64(value)
    marks.flush()  # after the worker flushed the sample's data


def _write_index(directory: Path, index: dict) -> None:
    from fastcam.config import atomic_write_text

    atomic_write_text(directory / INDEX_FILE, json.dumps(index, indent=1) + "\n")
