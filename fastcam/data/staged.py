"""The staged loader: batches from a ``fastcam data stage`` cache, prefetched in threads.

Each batch is read with positional reads (``os.preadv``: one system call per
sample, the GIL released, no page-fault storm as with a memory map) straight
into a host buffer of shape N x H x W x C float16 (float32 for a cache staged
with ``dtype="fp32"``: the stage dtype is read from its index) and N x H x W uint8. Reads
run in ``threads`` background threads, ``prefetch`` batches ahead.

On CUDA the host buffers are pinned and reused round-robin; the copy to the
device runs on a side stream, one batch ahead of the one being consumed. The
consumer's stream waits on that batch's copy event, and the device tensors are
``record_stream``-ed on it so the caching allocator does not reuse their
memory while the model still reads them; a host buffer is refilled only after
the event of its last copy completed. Labels are converted to int64 on the
device (an eighth of the bytes cross the bus). This stream path uses
torch.cuda's Stream/Event, so it serves the ``cuda`` device type only (CUDA,
and ROCm, whose HIP build answers to torch.cuda). Elsewhere (CPU, XPU) the
same code runs without pinning and without a side stream -- on XPU a plain
blocking copy per batch -- and the labels are converted to int64 in the
reading threads. The CPU batches are the host buffers themselves, from a
ring of ``prefetch + 3`` reused buffers (a fresh buffer per batch cost about
6x the CPU time; issue 13). Ownership: a batch's buffer is
reused only once nothing refers to the batch any more -- its tensors, or any
view or NumPy array of them (each batch is handed out as a new tensor aliasing
the buffer, whose views keep it alive; the ring checks a weak reference to
it). A consumer that drops a batch when it asks for the next (the Trainer)
gets the ring; one that keeps every batch (``list(loader)``) gets fresh
buffers for those it keeps, never an overwritten batch.

Inputs come out in the stage dtype, N x C x H x W in channels-last memory format (a
permuted view of the N x H x W x C batch), labels as int64 N x H x W, names
as the source file paths, like the reference loader. The training order is a
permutation of the rank's shard drawn from ``seed + epoch`` (as
``DistributedSampler`` does): identical for the same seed and epoch, different
across epochs. Float16 storage error: see :mod:`fastcam.data.stage`.
"""

from __future__ import annotations

import os
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from fastcam.data import stage
from fastcam.errors import ConfigError, DataError

_TORCH_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}  # the stage dtypes (stage_format.INPUT_DTYPES)


@dataclass
class _HostBatch:
    inputs: torch.Tensor  # N x H x W x C in the stage dtype
    labels: torch.Tensor  # N x H x W uint8
    names: list[str]
    copied: "torch.cuda.Event | None" = None  # last copy out of these buffers (CUDA only)
    handed_out: tuple = ()  # CPU: weak references to the tensors last handed out of these buffers

    def in_use(self) -> bool:
        return any(ref() is not None for ref in self.handed_out)


class StagedLoader:
    """One split of one rank's staged cache, as ``(inputs, labels, names)`` batches."""

    def __init__(self, dst: str | os.PathLike, split: str, *, batch_size: int, shuffle: bool, drop_last: bool,
                 seed: int, device: torch.device | str = torch.device("cpu"), prefetch: int = 3, threads: int = 2):
        if batch_size < 1 or prefetch < 1 or threads < 1:
            raise ConfigError(f"staged loader: batch_size {batch_size}, prefetch {prefetch} and threads "
                              f"{threads} must be >= 1")
        self.directory = Path(dst) / split
        self.index = stage.read_index(self.directory)
        if not self.index.get("complete"):
            raise DataError(f"{self.directory}: staging is incomplete; run fastcam data stage again to finish it")
        self.count, self.height, self.width, self.channels = self.index["inputs"]["shape"]
        root = Path(self.index["source"]["root"]) / split
        self.names = [str(root / entry[0]) for entry in self.index["source"]["files"]]
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.device = torch.device(device)
        self.prefetch, self.threads = prefetch, threads
        self.epoch = 0
        if self.drop_last and self.count < batch_size:
            raise DataError(f"{self.directory}: {self.count} samples on this rank, fewer than the batch size "
                            f"{batch_size}")
        self.stage_dtype = stage.stage_dtype_of(self.index)  # "fp16" or "fp32"
        self._inputs_file = stage.INPUT_FILES[self.stage_dtype]
        self._input_dtype = _TORCH_DTYPES[self.stage_dtype]
        self._input_bytes = self.height * self.width * self.channels * stage.INPUT_DTYPES[self.stage_dtype].itemsize
        self._label_bytes = self.height * self.width * stage.LABEL_DTYPE.itemsize
        self._fds = {}
        try:
            for name, size in ((self._inputs_file, self.count * self._input_bytes),
                               (stage.LABELS_FILE, self.count * self._label_bytes)):
                self._fds[name] = os.open(self.directory / name, os.O_RDONLY)
                if os.fstat(self._fds[name]).st_size != size:
                    raise DataError(f"{self.directory / name}: {os.fstat(self._fds[name]).st_size} bytes, "
                                    f"the index says {size}; stage the data again")
        except OSError as err:
            self.close()
            raise DataError(f"{self.directory}: cannot open the staged files ({err})") from None
        except DataError:
            self.close()
            raise

    @property
    def rank(self) -> int:
        return int(self.index["rank"])

    @property
    def world_size(self) -> int:
        return int(self.index["world_size"])

    @property
    def global_samples(self) -> int:
        """Samples of this split over all ranks (the MLPerf train/eval_samples)."""
        return int(self.index["global_samples"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return batch_count(self.count, self.batch_size, self.drop_last)

    def order(self) -> list[int]:
        """This epoch's sample order (before batching)."""
        return epoch_order(self.count, self.shuffle, self.seed, self.epoch)

    def close(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)
        self._fds = {}

    def __del__(self):
        self.close()

    def __enter__(self) -> "StagedLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        order = self.order()
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)][:len(self)]
        cuda = self.device.type == "cuda"  # the torch.cuda stream path (module docstring); XPU takes the plain one
        # A pinned host buffer is in one of: filling (prefetch), copying (one ahead), just copied.
        # CPU: filling (prefetch), ready (one ahead), held by the consumer, and the one it just dropped.
        slots: list[_HostBatch | None] = [self._allocate(self.batch_size, pinned=True)
                                          for _ in range(self.prefetch + 2)] if cuda else [None] * (self.prefetch + 3)
        side = torch.cuda.Stream(self.device) if cuda else None
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="staged-loader")
        filling: deque[tuple[_HostBatch, list[Future]]] = deque()
        ready: deque = deque()
        submitted = 0

        def submit() -> None:
            nonlocal submitted
            indices = batches[submitted]
            slot = submitted % len(slots)
            host = slots[slot]
            if host is None or (not cuda and host.in_use()):  # never overwrite a batch someone holds
                host = slots[slot] = self._allocate(self.batch_size, pinned=False)
            host.names = [self.names[i] for i in indices]
            filling.append((host, [pool.submit(self._read, host, row, i) for row, i in enumerate(indices)]))
            submitted += 1

        def transfer() -> None:
            host, futures = filling.popleft()
            for future in futures:
                future.result()  # re-raises a read error here, in the consumer
            ready.append(self._to_device(host, len(futures), side))
            if submitted < len(batches):  # its slot's previous copy was issued at least one batch ago
                submit()

        try:
            while submitted < min(self.prefetch, len(batches)):
                submit()
            for _ in batches:
                while len(ready) < 2 and filling:
                    transfer()
                inputs, labels, names, copied = ready.popleft()
                if copied is not None:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(copied)
                    inputs.record_stream(stream)
                    labels.record_stream(stream)
                yield inputs.permute(0, 3, 1, 2), labels, names
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _allocate(self, rows: int, pinned: bool) -> _HostBatch:
        """Pinned buffers hold uint8 labels (converted on the device); unpinned ones int64 labels,
        converted row by row in the reading threads rather than in the consumer's."""
        shape = (rows, self.height, self.width)
        return _HostBatch(torch.empty(*shape, self.channels, dtype=self._input_dtype, pin_memory=pinned),
                          torch.empty(shape, dtype=torch.uint8 if pinned else torch.int64, pin_memory=pinned), [])

    def _read(self, host: _HostBatch, row: int, sample: int) -> None:
        if host.copied is not None:
            host.copied.synchronize()  # the previous batch in this pinned buffer has left it
        read_exact(self._fds[self._inputs_file], host.inputs[row].numpy(), sample * self._input_bytes,
                   self.directory)
        labels = host.labels[row]
        staged = labels if labels.dtype == torch.uint8 else torch.empty(labels.shape, dtype=torch.uint8)
        read_exact(self._fds[stage.LABELS_FILE], staged.numpy(), sample * self._label_bytes, self.directory)
        if staged is not labels:
            labels.copy_(staged)

    def _to_device(self, host: _HostBatch, rows: int, side: "torch.cuda.Stream | None"):
        inputs, labels = host.inputs[:rows], host.labels[:rows]
        if side is None:
            if self.device.type != "cpu":
                inputs, labels = inputs.to(self.device), labels.to(self.device)
            else:
                inputs, labels = _alias(inputs), _alias(labels)
                host.handed_out = (weakref.ref(inputs), weakref.ref(labels))
            return inputs, labels, host.names, None
        with torch.cuda.stream(side):
            inputs = inputs.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True).long()
            host.copied = torch.cuda.Event()
            host.copied.record(side)
        return inputs, labels, host.names, host.copied


def _alias(view: torch.Tensor) -> torch.Tensor:
    """A new base tensor on ``view``'s memory (``set_``, not a view): every view taken of it
    refers back to it, so a weak reference to it says whether anything still reads the memory."""
    out = torch.empty(0, dtype=view.dtype)
    out.set_(view.untyped_storage(), view.storage_offset(), view.shape, view.stride())
    return out


def epoch_order(count: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """A split's sample order for one epoch: ``randperm`` under ``seed + epoch``
    (shared with fastcam.data.dali, so both loaders give the same batches)."""
    if not shuffle:
        return list(range(count))
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    return torch.randperm(count, generator=generator).tolist()


def batch_count(count: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch of ``count`` samples."""
    full, rest = divmod(count, batch_size)
    return full if drop_last or not rest else full + 1


def read_exact(fd: int, buffer: np.ndarray, offset: int, directory: Path) -> None:
    view = memoryview(buffer).cast("B")
    done = 0
    while done < len(view):
        try:
            got = os.preadv(fd, [view[done:]], offset + done)
        except OSError as err:
            raise DataError(f"{directory}: cannot read the staged data ({err})") from None
        if got == 0:
            raise DataError(f"{directory}: staged file ends early; stage the data again")
        done += got


def build_staged_loaders(dst: str | os.PathLike, *, local_batch_size: int, seed: int,
                         device: torch.device | str = torch.device("cpu"), prefetch: int = 3,
                         threads: int = 2, validation_batch_size: int = 1) -> tuple[StagedLoader, StagedLoader]:
    """(training, validation) loaders set up like the reference's: training shuffled with
    drop-last batches of ``local_batch_size``, validation in order with batch size 1
    (``validation_batch_size``: batched evaluation, the last batch partial)."""
    train = StagedLoader(dst, "train", batch_size=local_batch_size, shuffle=True, drop_last=True, seed=seed,
                         device=device, prefetch=prefetch, threads=threads)
    validation = StagedLoader(dst, "validation", batch_size=validation_batch_size, shuffle=False, drop_last=False,
                              seed=seed,
                              device=device, prefetch=prefetch, threads=threads)
    return train, validation
