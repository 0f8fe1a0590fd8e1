"""The DALI loader (``--loader dali``): the staged cache read through an NVIDIA DALI pipeline.

One ``@pipeline_def`` (:func:`staged_pipeline`) serves the CPU and the GPU; the
device is its only difference. A batch-mode ``fn.external_source``
(``batch=True, batch_info=True``) calls :class:`fastcam.data.dali_source.StagedBatchSource`,
which reads the cache with ``os.preadv`` in exactly
:class:`fastcam.data.staged.StagedLoader`'s per-epoch order, so both loaders
give the same batches for the same seed, epoch, rank and world size. Inputs
stay N x H x W x C float16 (moved by ``.gpu()`` on CUDA) and come out as a
channels-last N x C x H x W view, labels are cast to int64 on the chosen
device (after ``.gpu()``, so an eighth of the bytes cross the bus), and the
sample indices ride along on the CPU to name the samples.

The pipeline is built with ``device_id=None`` on the CPU (no CUDA needed) and
the torch device's index, the local rank, on CUDA. With ``parallel=True`` the
source runs in ``py_workers`` worker processes started with ``spawn``: forking
a process that holds a CUDA context is unsupported (DALI's ``py_start_method``
docs), and the trainer initialises CUDA before it builds its loaders. Without
it, the source runs in the consumer's thread, while DALI prefetches
``prefetch`` batches.

Epochs. DALI numbers its epochs from 0 in each pipeline (``BatchInfo.epoch_idx``,
advanced when the source raises StopIteration); the source reads epoch
``first_epoch + epoch_idx``. A pipeline is kept while the caller asks for the
epochs in sequence (``set_epoch(e)``, one full pass, ``set_epoch(e + 1)``,
...); an out-of-sequence epoch, or a pass abandoned half way, rebuilds it.

Batch ownership. Under DALI's default dynamic executor the iterator hands out
``torch.from_dlpack`` views of output buffers that DALI allocates per
iteration and frees only when the last view is gone, so a batch the caller
keeps is never overwritten (tested in tests/test_dali.py).
``LastBatchPolicy.PARTIAL`` is set, though with an external source and no
``size`` DALI leaves the last batch as the source made it: partial where
``drop_last`` is off (validation), dropped where it is on (training), as the
staged loader does.

Importing this module without DALI raises one :class:`ConfigError` line
naming the extra to install.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch

from fastcam import errors
from fastcam.data.dali_source import StagedBatchSource
from fastcam.data.staged import StagedLoader
from fastcam.errors import ConfigError, FastcamError

try:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
except ImportError:
    raise ConfigError("the DALI loader needs NVIDIA DALI; install it with: pip install 'fastcam[dali]'") from None

OUTPUTS = ("inputs", "labels", "indices")
# Room per sample in a parallel worker's shared-memory slot beyond the array bytes
# (DALI's ``bytes_per_sample_hint`` docs: samples carry some internal meta-data).
_SHM_SLACK_BYTES = 4096
_DALI_INPUT_TYPES = {"fp16": types.FLOAT16, "fp32": types.FLOAT}


@pipeline_def(enable_conditionals=False)
def staged_pipeline(source: StagedBatchSource, device: str, parallel: bool, source_prefetch: int):
    """Batches of ``source`` on ``device`` ("cpu" or "gpu"): inputs NHWC in the stage dtype (float16 or
    float32), labels int64, indices."""
    extra = {}
    if parallel:
        extra = {"prefetch_queue_depth": source_prefetch,
                 "bytes_per_sample_hint": source.input_bytes + source.label_bytes + 8 + _SHM_SLACK_BYTES}
    inputs, labels, indices = fn.external_source(
        source=source, num_outputs=3, batch=True, batch_info=True, parallel=parallel,
        layout=["HWC", "HW", ""], dtype=[_DALI_INPUT_TYPES[source.dtype], types.UINT8, types.INT64],
        ndim=[3, 2, 0], **extra)
    if device == "gpu":
        inputs, labels = inputs.gpu(), labels.gpu()
    return inputs, fn.cast(labels, dtype=types.INT64), indices


def build_pipeline(source: StagedBatchSource, *, device: str, device_id: int | None, batch_size: int,
                   threads: int, prefetch: int, parallel: bool = False, py_workers: int = 2, seed: int = 0):
    """The (unbuilt) DALI pipeline over ``source``; ``device_id`` None for a pipeline without CUDA."""
    return staged_pipeline(source, device, parallel, prefetch, batch_size=batch_size, num_threads=threads,
                           device_id=device_id, prefetch_queue_depth=prefetch, seed=seed,
                           py_num_workers=py_workers if parallel else 0, py_start_method="spawn")


def dali_device(device: torch.device) -> tuple[str, int | None]:
    """(DALI device, device_id) for a torch device: ("cpu", None) or ("gpu", the CUDA index)."""
    if device.type == "cpu":
        return "cpu", None
    if device.type == "cuda":
        return "gpu", device.index if device.index is not None else torch.cuda.current_device()
    raise ConfigError(f"the DALI loader runs on cpu or cuda devices, not {device}")


def worker_error(err: BaseException) -> FastcamError | None:
    """The fastcam error a parallel worker raised, rebuilt from what DALI passes on, or None.

    DALI turns a worker's exception into a RuntimeError of its message
    (``nvidia/dali/_multiproc/messages.py``, ``CompletedTask.failed``) and raises
    a bare Exception holding the worker's traceback text from it
    (``pool.py``, ``handle_error``); the traceback's last line names the type.
    """
    lines = [line for line in str(err).splitlines() if line.strip()]
    kind, _, message = lines[-1].partition(": ") if lines else ("", "", "")
    module, _, name = kind.rpartition(".")
    cls = getattr(errors, name, None) if module == errors.__name__ else None
    if isinstance(cls, type) and issubclass(cls, FastcamError):
        return cls(message)
    return None


class DaliLoader(StagedLoader):
    """A split of one rank's staged cache through DALI; the staged loader's attributes and batches.

    The staged loader's constructor validates the cache and the arguments and
    gives the metadata (``count``, ``height``, ``width``, ``names``, ``rank``,
    ``world_size``, ``global_samples``, ``len()``, ``order()``, ``set_epoch``);
    its file descriptors are closed at once, the source opens its own.
    """

    def __init__(self, dst: str | os.PathLike, split: str, *, batch_size: int, shuffle: bool, drop_last: bool,
                 seed: int, device: torch.device | str = torch.device("cpu"), prefetch: int = 3,
                 threads: int = 2, parallel: bool = False, py_workers: int = 2):
        if parallel and py_workers < 1:
            raise ConfigError(f"DALI loader: py_workers {py_workers} must be >= 1 with parallel reading")
        super().__init__(dst, split, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                         device=device, prefetch=prefetch, threads=threads)
        StagedLoader.close(self)
        self.dali_device, self.device_id = dali_device(self.device)
        self.parallel, self.py_workers = parallel, py_workers
        self._iterator = None
        self._next_epoch = 0  # the epoch the live pipeline delivers on its next pass

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        if self._iterator is None or self._next_epoch != self.epoch:
            self._start(self.epoch)
        finished = False
        try:
            for (batch,) in self._iterator:
                names = [self.names[i] for i in batch["indices"].tolist()]
                yield batch["inputs"].permute(0, 3, 1, 2), batch["labels"], names
            finished = True
        except Exception as err:
            original = worker_error(err)
            if original is not None:
                raise original from None
            raise
        finally:
            if finished:
                self._iterator.reset()  # starts prefetching the next epoch
                self._next_epoch += 1
            else:
                self._stop()  # abandoned mid-epoch: the pipeline's position is lost

    def _start(self, epoch: int) -> None:
        self._stop()
        source = StagedBatchSource(self.directory, count=self.count, height=self.height, width=self.width,
                                   channels=self.channels, batch_size=self.batch_size, shuffle=self.shuffle,
                                   drop_last=self.drop_last, seed=self.seed, first_epoch=epoch,
                                   reuse_buffers=not self.parallel, dtype=self.stage_dtype)
        pipe = build_pipeline(source, device=self.dali_device, device_id=self.device_id,
                              batch_size=self.batch_size, threads=self.threads, prefetch=self.prefetch,
                              parallel=self.parallel, py_workers=self.py_workers, seed=self.seed)
        try:
            pipe.build()
        except RuntimeError as err:
            if self.parallel and "Workers initialization failed" in str(err):
                raise ConfigError("DALI loader: the parallel reader processes failed to start (their error is "
                                  "above); they are spawned, so a script that builds the loader must do it under "
                                  "if __name__ == '__main__':") from None
            raise
        self._iterator = DALIGenericIterator([pipe], list(OUTPUTS), last_batch_policy=LastBatchPolicy.PARTIAL,
                                             prepare_first_batch=False)
        self._next_epoch = epoch

    def _stop(self) -> None:
        # Dropping the last references shuts the pipeline and its worker processes down
        # (Pipeline.__del__ and the pool's weakref finalizer in nvidia.dali.pipeline).
        self._iterator = None

    def close(self) -> None:
        self._stop()
        StagedLoader.close(self)


def build_dali_loaders(dst: str | os.PathLike, *, local_batch_size: int, seed: int,
                       device: torch.device | str = torch.device("cpu"), prefetch: int = 3, threads: int = 2,
                       parallel: bool = False, py_workers: int = 2,
                       validation_batch_size: int = 1) -> tuple[DaliLoader, DaliLoader]:
    """(training, validation) as :func:`fastcam.data.staged.build_staged_loaders` sets them up:
    training shuffled with drop-last batches of ``local_batch_size``, validation in order with
    batch size 1 (``validation_batch_size``: batched evaluation)."""
    common = dict(seed=seed, device=device, prefetch=prefetch, threads=threads, parallel=parallel,
                  py_workers=py_workers)
    train = DaliLoader(dst, "train", batch_size=local_batch_size, shuffle=True, drop_last=True, **common)
    validation = DaliLoader(dst, "validation", batch_size=validation_batch_size, shuffle=False, drop_last=False,
                            **common)
    return train, validation
