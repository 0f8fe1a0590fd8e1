"""The batch source of the DALI loader: a staged cache read in the staged loader's order.

An instance is the callable given to a batch-mode ``fn.external_source``
(``batch=True, batch_info=True``). It is stateless in the sense DALI requires
of parallel sources (``fn.external_source`` docs: "callables should be
stateless - they should produce requested sample or batch solely based on the
BatchInfo"): batch ``info.iteration`` of epoch ``first_epoch +
info.epoch_idx`` is a pure function of the cache, the seed and those two
numbers, so the same object can run in the consumer's thread or be pickled
into any number of ``parallel=True`` worker processes and give the same
batches. The order and batching are :class:`fastcam.data.staged.StagedLoader`'s
(a ``torch.randperm`` drawn from ``seed + epoch``, drop-last or a partial last
batch), so both loaders deliver the same batches for the same seed and epoch.

Each call returns (inputs N x H x W x C float16 (float32 for an fp32 stage), labels N x H x W uint8,
sample indices N int64); the indices travel through the pipeline so that the
consumer names the samples it really received. With ``reuse_buffers`` (the
non-parallel source) the arrays are views of buffers reused from call to call:
DALI copies them on feed before the next call (``no_copy`` defaults to False).
A parallel worker must get fresh arrays per call: it hands the batch to a
dispatcher thread that serialises it into shared memory later, while its main
thread already runs the next call (``nvidia/dali/_multiproc/worker.py``; reused
buffers gave one batch another's samples). File descriptors and buffers are
opened per process, on first use, and never pickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastcam.data import stage_format
from fastcam.data.staged import batch_count, epoch_order, read_exact
from fastcam.errors import DataError


class StagedBatchSource:
    """``source(info)`` -> one batch of a split of a staged cache; StopIteration past the epoch's end."""

    def __init__(self, directory: str | os.PathLike, *, count: int, height: int, width: int, channels: int,
                 batch_size: int, shuffle: bool, drop_last: bool, seed: int, first_epoch: int,
                 reuse_buffers: bool = True, dtype: str = "fp16"):
        self.directory = Path(directory)
        self.count, self.height, self.width, self.channels = count, height, width, channels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.first_epoch, self.reuse_buffers = seed, first_epoch, reuse_buffers
        self.batches = batch_count(count, batch_size, drop_last)
        self.dtype = dtype  # the stage dtype: which inputs file, which element type
        self.input_dtype = stage_format.INPUT_DTYPES[dtype]
        self.inputs_file = stage_format.INPUT_FILES[dtype]
        self.input_bytes = height * width * channels * self.input_dtype.itemsize
        self.label_bytes = height * width * stage_format.LABEL_DTYPE.itemsize
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._fds: dict[str, int] = {}
        self._buffers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._order: tuple[int, list[int]] | None = None  # (epoch, order): one randperm per epoch

    def __getstate__(self) -> dict:
        # Descriptors and buffers belong to one process; a worker opens its own.
        state = self.__dict__.copy()
        for key in ("_fds", "_buffers", "_order"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_process_state()

    def order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.count, self.shuffle, self.seed, epoch))
        return self._order[1]

    def indices(self, iteration: int, epoch_idx: int) -> list[int]:
        """Sample indices of batch ``iteration`` of DALI epoch ``epoch_idx`` (empty past the end)."""
        if iteration >= self.batches:
            return []
        start = iteration * self.batch_size
        return self.order(self.first_epoch + epoch_idx)[start:start + self.batch_size]

    def __call__(self, info) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # DALI may call a few iterations past the end while prefetching; each must raise.
        indices = self.indices(info.iteration, info.epoch_idx)
        if not indices:
            raise StopIteration
        inputs, labels, names = self._batch_buffers()
        rows = len(indices)
        for row, sample in enumerate(indices):
            read_exact(self._fd(self.inputs_file), inputs[row], sample * self.input_bytes, self.directory)
            read_exact(self._fd(stage_format.LABELS_FILE), labels[row], sample * self.label_bytes, self.directory)
            names[row] = sample
        return inputs[:rows], labels[:rows], names[:rows]

    def _batch_buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._buffers is None or not self.reuse_buffers:
            shape = (self.batch_size, self.height, self.width)
            self._buffers = (np.empty((*shape, self.channels), self.input_dtype),
                             np.empty(shape, stage_format.LABEL_DTYPE), np.empty(self.batch_size, np.int64))
        return self._buffers

    def _fd(self, name: str) -> int:
        if name not in self._fds:
            try:
                self._fds[name] = os.open(self.directory / name, os.O_RDONLY)
            except OSError as err:
                raise DataError(f"{self.directory}: cannot open the staged files ({err})") from None
        return self._fds[name]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __del__(self):
        self.close()
