"""The reference-faithful HDF5 input path (the baseline's loader).

Mirrors the MLCommons reference (``data/cam_hdf5_dataset.py`` and
``data/__init__.py::get_dataloaders``): one h5py open/read per sample,
NumPy normalisation ``(x - minval) / (maxval - minval)``, transpose to
channel-first; the training file list sorted, shuffled once with NumPy's
``RandomState(12345)`` (``CamDataset(shuffle=True)``'s fixed seed) and drawn
through a ``DistributedSampler(shuffle=True, drop_last=True)`` with its
default seed 0 and ``set_epoch(epoch)``, so the data order depends on the
epoch, the rank and the rank count but never on ``--seed``; validation split
across ranks so that every sample is seen exactly once (uneven shards allowed)
with batch size 1. Files are opened inside
``__getitem__``, so nothing HDF5 is open when DataLoader workers fork.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fastcam.data import layout
from fastcam.errors import DataError

# The reference's default is 4 workers, which torch warns about on small
# hosts (it suggests one per core); the count is the user's explicit choice.
warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)


def read_sample(path: Path, channels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw (H x W x C float32 data, H x W labels) of one file, or a DataError naming it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            data = f[layout.DATA_KEY]
            if data.ndim != 3:
                raise DataError(f"{path}: {layout.DATA_KEY} has shape {data.shape}, expected H x W x C")
            if channels is not None and channels and max(channels) >= data.shape[-1]:
                raise DataError(f"{path}: {data.shape[-1]} channels, but channel {max(channels)} was selected")
            data = data[...] if channels is None else data[..., list(channels)]
            label = f[layout.LABEL_KEY][...]
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"{path}: unreadable sample ({err})") from None
    return data, label


def check_sample(path: Path, data: np.ndarray, label: np.ndarray, channels: int,
                 shape: tuple[int, int] | None) -> None:
    """A DataError naming ``path`` unless its data is H x W x ``channels``, its labels H x W and in
    0..2, and H x W is ``shape`` (the first file's): otherwise a bad file ends as a traceback far
    from it (collate's "resize storage", the loss's "Target 5 is out of bounds"; issue 17, defect 2).
    Values are not checked for being finite here: fastcam data check does, and the trainer's loss."""
    if data.shape[-1] != channels:
        raise DataError(f"{path}: {data.shape[-1]} channels, stats file has {channels}")
    if shape is not None and tuple(data.shape[:2]) != tuple(shape):
        raise DataError(f"{path}: sample is {data.shape[0]} x {data.shape[1]}, the data set's first file "
                        f"{shape[0]} x {shape[1]}; all samples must have the same size")
    if label.shape != data.shape[:2]:
        raise DataError(f"{path}: labels are {' x '.join(map(str, label.shape))}, the data "
                        f"{data.shape[0]} x {data.shape[1]}")
    if not np.issubdtype(label.dtype, np.integer):
        raise DataError(f"{path}: labels are {label.dtype}, expected integers")
    low, high = int(label.min()), int(label.max())
    if low < 0 or high >= layout.NUM_CLASSES:
        bad = low if low < 0 else high
        raise DataError(f"{path}: holds label {bad}; labels must be in 0..{layout.NUM_CLASSES - 1}")


def shard_validation(files: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """The reference's ``allow_uneven_distribution`` split: a contiguous bulk
    block per rank, then the remainder dealt round-robin. Every file lands on
    exactly one rank."""
    per_rank = len(files) // world_size
    mine = list(files[rank * per_rank:(rank + 1) * per_rank])
    mine += [files[i] for i in range(world_size * per_rank, len(files)) if i % world_size == rank]
    return mine


class CamDataset(Dataset):
    """One sample per HDF5 file, normalised and transposed to C x H x W."""

    def __init__(self, files: Sequence[Path], minval: np.ndarray, maxval: np.ndarray,
                 channels: Sequence[int] | None = None, transpose: bool = True,
                 sample_shape: tuple[int, int] | None = None):
        if not files:
            raise DataError("no sample files to read")
        self.files = list(files)
        self.channels = None if channels is None else list(channels)
        # Same float32 arithmetic as the reference: scale = 1 / (max - min).
        self.shift = np.asarray(minval, dtype=np.float32).reshape(1, 1, -1)
        span = np.asarray(maxval, dtype=np.float32) - np.asarray(minval, dtype=np.float32)
        self.scale = (1.0 / span).astype(np.float32).reshape(1, 1, -1)
        self.transpose = transpose
        self.sample_shape = sample_shape  # H, W every file must have (None: not checked)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        data, label = read_sample(path, self.channels)
        check_sample(path, data, label, self.shift.shape[-1], self.sample_shape)
        data = self.scale * (data - self.shift)
        if self.transpose:
            data = np.ascontiguousarray(np.transpose(data, (2, 0, 1)))
        return torch.from_numpy(data), torch.from_numpy(label.astype(np.int64, copy=False)), str(path)


@dataclass
class Loaders:
    """What the trainer needs from an input pipeline (reference or staged)."""

    train: Iterable
    validation: Iterable
    train_sampler: Any  # anything with set_epoch(epoch): reshuffles the training shard
    train_samples: int  # files in the training set (the MLPerf train_samples: 121266 on the real set)
    validation_samples: int  # global
    sample_shape: tuple[int, int]  # H, W
    input_dtype: torch.dtype = torch.float32  # what the loader delivers (staged: float16)

    def set_epoch(self, epoch: int) -> None:
        self.train_sampler.set_epoch(epoch)


# The reference's fixed seeds (data/cam_hdf5_dataset.py and DistributedSampler's default).
FILE_SHUFFLE_SEED = 12345
SAMPLER_SEED = 0


def reference_train_order(files: Sequence[Path]) -> list[Path]:
    """The training files in the order the reference's dataset holds them:
    sorted, then shuffled once with ``RandomState(12345)``."""
    order = sorted(files)
    np.random.RandomState(FILE_SHUFFLE_SEED).shuffle(order)
    return order


def build_reference_loaders(data_dir: str | os.PathLike, *, local_batch_size: int, workers: int,
                            rank: int = 0, world_size: int = 1,
                            channels: Sequence[int] | None = None, pin_memory: bool = False,
                            validation_batch_size: int = 1) -> Loaders:
    """Training and validation DataLoaders exactly as the reference builds them
    (``validation_batch_size`` > 1: batched evaluation, the last batch partial)."""
    minval, maxval = layout.load_stats(data_dir, None if channels is None else list(channels))
    train_files = layout.list_files(data_dir, "train")
    val_files = layout.list_files(data_dir, "validation")
    height, width, _ = sample_shape(train_files[0])
    train_set = CamDataset(reference_train_order(train_files), minval, maxval, channels,
                           sample_shape=(height, width))
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=SAMPLER_SEED, drop_last=True)
    if len(sampler) < local_batch_size:
        raise DataError(
            f"{layout.split_dir(data_dir, 'train')}: {len(train_files)} training files give "
            f"{len(sampler)} per rank, fewer than the local batch size {local_batch_size}")
    # The reference uses min(max_inter_threads, local_batch_size) workers.
    num_workers = min(workers, local_batch_size)
    train = DataLoader(train_set, batch_size=local_batch_size, sampler=sampler, num_workers=num_workers,
                       pin_memory=pin_memory, drop_last=True)
    val_set = CamDataset(shard_validation(val_files, rank, world_size), minval, maxval, channels,
                         sample_shape=(height, width)) \
        if len(val_files) >= world_size else _too_few_validation(data_dir, len(val_files), world_size)
    validation = DataLoader(val_set, batch_size=validation_batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=pin_memory, drop_last=False)
    return Loaders(train, validation, sampler, len(train_files), len(val_files), (height, width))


def _too_few_validation(data_dir, count: int, world_size: int):
    raise DataError(f"{layout.split_dir(data_dir, 'validation')}: {count} validation files "
                    f"for {world_size} ranks; every rank needs at least one")


def sample_shape(path: Path) -> tuple[int, int, int]:
    """(H, W, C) of a sample file's data from its header, or a DataError naming it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            shape = f[layout.DATA_KEY].shape
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: unreadable sample ({err})") from None
    if len(shape) != 3:
        raise DataError(f"{path}: {layout.DATA_KEY} has shape {shape}, expected H x W x C")
    return int(shape[0]), int(shape[1]), int(shape[2])
