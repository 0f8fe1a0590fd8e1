"""The DeepCAM data set layout: directories, file names, datasets, statistics.

A data set directory holds ``train/data-*.h5``, ``validation/data-*.h5`` and
``stats.h5`` (see ../shared/spec/benchmark.md, "Data"). Each sample file has
``climate/data`` (H x W x 16 float32) and ``climate/labels_0`` (H x W integer).
``stats.h5`` has per-channel ``climate/minval`` and ``climate/maxval``; a real
file may hold more statistics, which are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastcam.errors import DataError

# Channel order of the real CAM5 fields, as the benchmark lists them.
CHANNELS = (
    "TMQ", "U850", "V850", "UBOT", "VBOT", "QREFHT", "PS", "PSL",
    "T200", "T500", "PRECT", "TS", "TREFHT", "Z1000", "Z200", "ZBOT",
)
NUM_CHANNELS = len(CHANNELS)
NUM_CLASSES = 3
# Class frequencies over the real data set (background, cyclone, river).
CLASS_FREQUENCIES = (0.986267818390377, 0.0004578708870701058, 0.01327431072255291)
FULL_HEIGHT, FULL_WIDTH = 768, 1152
# Sample counts of the real data set (the MLPerf log's train/eval_samples).
REAL_TRAIN_SAMPLES, REAL_EVAL_SAMPLES = 121266, 15158

DATA_KEY = "climate/data"
LABEL_KEY = "climate/labels_0"
MINVAL_KEY = "climate/minval"
MAXVAL_KEY = "climate/maxval"
STATS_FILE = "stats.h5"
SPLITS = ("train", "validation")
FILE_GLOB = "data-*.h5"


def split_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / split


def list_files(root: str | os.PathLike, split: str) -> list[Path]:
    """Sorted sample files of one split; a missing or empty split is an error."""
    directory = split_dir(root, split)
    if not directory.is_dir():
        raise DataError(f"{directory}: missing '{split}' directory")
    files = sorted(directory.glob(FILE_GLOB))
    if not files:
        raise DataError(f"{directory}: no {FILE_GLOB} files")
    return files


def load_stats(root: str | os.PathLike, channels: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (minval, maxval) as float32 arrays, validated.

    ``channels`` selects a subset (the reference's ``--channels``); by default
    all 16. Raises :class:`DataError` naming the file for anything unusable.
    """
    import h5py

    path = Path(root) / STATS_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing stats file")
    try:
        with h5py.File(path, "r") as f:
            if MINVAL_KEY not in f or MAXVAL_KEY not in f:
                raise DataError(f"{path}: needs datasets '{MINVAL_KEY}' and '{MAXVAL_KEY}'")
            minval = np.asarray(f[MINVAL_KEY][...], dtype=np.float32).reshape(-1)
            maxval = np.asarray(f[MAXVAL_KEY][...], dtype=np.float32).reshape(-1)
    except DataError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: unreadable stats file ({err})") from None
    if minval.shape != maxval.shape or minval.size < NUM_CHANNELS:
        raise DataError(
            f"{path}: minval/maxval must hold {NUM_CHANNELS} values each, "
            f"got {minval.size} and {maxval.size}"
        )
    if channels is not None:
        if any(c < 0 or c >= minval.size for c in channels):
            raise DataError(f"{path}: channel list {channels} out of range 0..{minval.size - 1}")
        minval, maxval = minval[channels], maxval[channels]
    if not (np.all(np.isfinite(minval)) and np.all(np.isfinite(maxval))):
        raise DataError(f"{path}: minval/maxval hold non-finite values")
    if np.any(maxval <= minval):
        bad = int(np.argmax(maxval <= minval))
        raise DataError(f"{path}: maxval <= minval for channel {bad}")
    return minval, maxval
