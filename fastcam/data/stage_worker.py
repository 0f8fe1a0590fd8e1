"""Staging's worker side: one sample per task, in spawned processes (or in-process for one worker).

Workers die with their parent: ProcessPoolExecutor's workers wait on their
task queue forever when the parent is SIGKILLed (issue 17, defect 5 found
them alive, ~243 MB each, a minute later). Each worker asks Linux for SIGKILL
when its parent dies (``prctl(PR_SET_PDEATHSIG)``, prctl(2)) and, on any
system, watches its parent id in a thread and exits when it changes.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from fastcam.data.stage_format import (
    DONE,
    FLOAT16_MAX,
    INPUT_DTYPES,
    INPUT_FILES,
    LABEL_DTYPE,
    LABELS_FILE,
    checksum,
    map_file,
)
from fastcam.errors import DataError


@dataclass(frozen=True)
class _Task:
    action: str  # "stage" or "verify"
    split: str
    directory: str
    index: int
    source: str
    sample_shape: tuple[int, int, int]  # H, W, C
    stats: tuple  # (minval, maxval, channels), plain tuples: cheap to pickle
    mark: int  # verify: the marker recorded for the sample
    dtype: str = "fp16"  # the stage dtype (stage_format.INPUT_DTYPES)

    @property
    def inputs_file(self) -> str:
        return INPUT_FILES[self.dtype]


class _Pool:
    """Spawned worker processes (spawn, not fork: forking a parent that holds
    threads -- BLAS, torch, tqdm's monitor -- can deadlock the child), or
    in-process work for a single worker."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> "_Pool":
        if self.workers > 1:
            self.executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker, initargs=(os.getpid(),))
        return self

    def __exit__(self, *exc) -> None:
        if self.executor is not None:  # on an error: drop queued tasks, let running ones finish
            self.executor.shutdown(wait=True, cancel_futures=True)

    def run(self, tasks: Iterable[_Task]) -> Iterator[tuple[_Task, object]]:
        if self.executor is None:
            yield from map(_work, tasks)
            return
        futures = [self.executor.submit(_work, task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            # concurrent.futures reports a killed worker instead of hanging like multiprocessing.Pool.
            raise DataError("a staging worker process died (killed or out of memory); "
                            "run the same command again to resume") from None


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 1.0


def _init_worker(parent: int) -> None:
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(1)  # one process per core already; more threads only oversubscribe


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # the watcher below still ends this worker
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)  # re-parented: nobody will collect the results

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _work(task: _Task) -> tuple[_Task, object]:
    return task, (_verify_sample(task) if task.action == "verify" else _stage_sample(task))


def _sample_ranges(task: _Task) -> tuple[tuple[int, int], tuple[int, int]]:
    """(offset, length) in bytes of the sample in the inputs and in the labels file."""
    height, width, channels = task.sample_shape
    inputs = height * width * channels * INPUT_DTYPES[task.dtype].itemsize
    labels = height * width * LABEL_DTYPE.itemsize
    return (task.index * inputs, inputs), (task.index * labels, labels)


def _stage_sample(task: _Task) -> int:
    """Read, normalise (the reference reader's code), convert, write, flush, re-read; the checksum."""
    import torch

    from fastcam.data.reader import CamDataset

    source = Path(task.source)
    minval, maxval, channels = task.stats
    dataset = CamDataset([source], np.asarray(minval, np.float32), np.asarray(maxval, np.float32),
                         None if channels is None else list(channels), transpose=False,
                         sample_shape=task.sample_shape[:2])
    data, label, _ = dataset[0]  # torch: float32 H x W x C, int64 H x W
    if tuple(data.shape) != task.sample_shape or tuple(label.shape) != task.sample_shape[:2]:
        raise DataError(f"{source}: data {tuple(data.shape)} and labels {tuple(label.shape)} differ from the "
                        f"shard's first file ({task.sample_shape}); all samples must have the same size")
    # One min/max pass instead of isfinite: NaN fails both comparisons, inf the range check.
    low, high = (float(v) for v in torch.aminmax(data))
    limit = FLOAT16_MAX if task.dtype == "fp16" else float("inf")
    if not -limit <= low <= high <= limit:
        beyond = " or beyond float16's range" if task.dtype == "fp16" else ""
        raise DataError(f"{source}: normalised values span [{low}, {high}]: non-finite{beyond}")
    label_low, label_high = (int(v) for v in torch.aminmax(label))
    if label_low < 0 or label_high > np.iinfo(LABEL_DTYPE).max:
        raise DataError(f"{source}: labels outside 0..255 cannot be staged as uint8")
    # torch's float16 conversion is vectorised; NumPy's astype is several times slower.
    inputs = (data.to(torch.float16) if task.dtype == "fp16" else data.contiguous()).numpy()
    labels = label.to(torch.uint8).numpy()
    expected = checksum(inputs, labels)
    directory = Path(task.directory)
    for name, array, (offset, length) in zip((task.inputs_file, LABELS_FILE), (inputs, labels),
                                             _sample_ranges(task)):
        try:
            mapped = map_file(directory / name, writable=True)
        except OSError as err:
            raise DataError(f"{directory / name}: cannot open for writing ({err})") from None
        with mapped, memoryview(mapped) as view:
            view[offset:offset + length] = memoryview(array).cast("B")
            aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
            mapped.flush(aligned, offset + length - aligned)  # the data is durable before its marker
    if _read_checksum(task) != expected:
        raise DataError(f"{directory}: sample {task.index} ({source}) reads back differently than written")
    return expected


def _read_checksum(task: _Task) -> int:
    directory = Path(task.directory)
    (input_offset, input_length), (label_offset, label_length) = _sample_ranges(task)
    with map_file(directory / task.inputs_file, writable=False) as inputs, \
            map_file(directory / LABELS_FILE, writable=False) as labels, \
            memoryview(inputs) as input_view, memoryview(labels) as label_view:
        return checksum(input_view[input_offset:input_offset + input_length],
                        label_view[label_offset:label_offset + label_length])


def _verify_sample(task: _Task) -> bool:
    """Whether a sample marked done still holds the bytes whose checksum was recorded."""
    if not task.mark & int(DONE):
        return False
    try:
        return _read_checksum(task) == task.mark & 0xFFFFFFFF
    except OSError:
        return False
