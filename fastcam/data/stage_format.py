"""The on-disk format of a staged cache (see fastcam.data.stage).

Per split, ``DST/<split>/`` holds ``inputs.f16`` (N x H x W x C float16, the
normalised inputs; ``inputs.f32``, float32, when staged with ``dtype="fp32"``:
no rounding, for runs whose rules forbid precision changes), ``labels.u8`` (N x H x W uint8), ``checksums.u64`` (per
sample: 0 = not staged, else the DONE bit plus a crc32 of its bytes) and
``index.json``. Shared by the stager, its worker processes and the loader.
"""

from __future__ import annotations

import json
import mmap
import os
import zlib
from pathlib import Path

import numpy as np

from fastcam.errors import DataError

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
# The stage dtypes (fastcam.config.STAGE_DTYPES) and their files; fp16 is the default.
INPUT_DTYPES = {"fp16": np.dtype(np.float16), "fp32": np.dtype(np.float32)}
INPUT_FILES = {"fp16": "inputs.f16", "fp32": "inputs.f32"}
INPUTS_FILE = INPUT_FILES["fp16"]
LABELS_FILE = "labels.u8"
MARKS_FILE = "checksums.u64"
LOCK_FILE = ".stage.lock"
INPUT_DTYPE = INPUT_DTYPES["fp16"]
LABEL_DTYPE = np.dtype(np.uint8)
DONE = np.uint64(1 << 32)  # marker bit above the 32-bit crc
FLOAT16_UNIT_ROUNDOFF = 2.0 ** -11
FLOAT16_SUBNORMAL_ERROR = 2.0 ** -25
FLOAT16_MAX = float(np.finfo(np.float16).max)
TRAIN_MAX_ABS_ERROR = 2.0 ** -12


def stage_dtype_of(index: dict) -> str:
    """The stage dtype name ("fp16" or "fp32") a split's index records."""
    names = {dtype.name: name for name, dtype in INPUT_DTYPES.items()}
    try:
        return names[index["inputs"]["dtype"]]
    except (KeyError, TypeError):
        raise DataError(f"staging index: unknown input dtype {index.get('inputs')!r}; stage the data again") from None


def checksum(inputs: np.ndarray | memoryview, labels: np.ndarray | memoryview) -> int:
    return zlib.crc32(labels, zlib.crc32(inputs))


def read_index(directory: str | os.PathLike) -> dict:
    """A split's ``index.json``, or a DataError naming it."""
    path = Path(directory) / INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; stage the data first (fastcam data stage SRC DST)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable staging index ({err})") from None
    if not isinstance(index, dict) or index.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: not a format-{FORMAT_VERSION} staging index; stage the data again")
    return index


def map_file(path: Path, writable: bool) -> mmap.mmap:
    """The whole file, memory-mapped (the caller closes it)."""
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
    finally:
        os.close(fd)
