"""``fastcam data check``: validate a data set before a long run trips on it.

Two passes. The header pass opens *every* sample file (cheap: metadata only)
and checks that ``climate/data`` and ``climate/labels_0`` exist, that the data
is H x W x 16 float32 and the labels an H x W integer array, that every file
has the same shapes and dtypes; HDF5 itself refuses a truncated file at open
(its superblock records the end of file). The value pass fully reads up to
``max_files`` files per split (spread evenly over the split, first and last
included; default 16, ``None`` for all) and checks that all data values are
finite and all labels in {0, 1, 2}. ``stats.h5`` must pass
:func:`fastcam.data.layout.load_stats`. The first problem raises a
:class:`DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastcam.data import layout
from fastcam.errors import ConfigError, DataError

DEFAULT_MAX_FILES = 16
CLASS_NAMES = ("background", "cyclone", "river")


@dataclass(frozen=True)
class Header:
    data_shape: tuple[int, ...]
    data_dtype: np.dtype
    label_shape: tuple[int, ...]
    label_dtype: np.dtype
    contiguous: bool


@dataclass
class SplitSummary:
    name: str
    files: int
    values_checked: int
    bytes_on_disk: int
    class_counts: np.ndarray = field(default_factory=lambda: np.zeros(layout.NUM_CLASSES, np.int64))


@dataclass
class CheckSummary:
    root: Path
    header: Header
    splits: list[SplitSummary]
    stats_channels: int

    @property
    def class_frequencies(self) -> np.ndarray:
        counts = sum(split.class_counts for split in self.splits)
        total = counts.sum()
        return counts / total if total else np.zeros(layout.NUM_CLASSES)

    def format_table(self) -> str:
        h = self.header
        lines = [f"data set    {self.root}",
                 f"{'split':<12}{'files':>8}{'values read':>13}{'size on disk':>14}"]
        for split in self.splits:
            lines.append(f"{split.name:<12}{split.files:>8}{split.values_checked:>13}"
                         f"{_human_bytes(split.bytes_on_disk):>14}")
        lines.append(f"sample      data {' x '.join(map(str, h.data_shape))} {h.data_dtype}, "
                     f"labels {' x '.join(map(str, h.label_shape))} {h.label_dtype}, "
                     f"{'contiguous' if h.contiguous else 'chunked or compressed'}")
        lines.append(f"stats       {layout.STATS_FILE}: minval/maxval for {self.stats_channels} channels")
        if any(split.values_checked for split in self.splits):
            measured = self.class_frequencies
            lines.append("classes     " + "  ".join(
                f"{name} {100 * f:.3f}% (real {100 * real:.3f}%)"
                for name, f, real in zip(CLASS_NAMES, measured, layout.CLASS_FREQUENCIES)))
        return "\n".join(lines)


def _human_bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1000
    raise AssertionError("unreachable")


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def read_header(path: Path) -> Header:
    """Shapes, dtypes and storage of one sample file; DataError if unusable."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            datasets = []
            for key in (layout.DATA_KEY, layout.LABEL_KEY):
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise DataError(f"{path}: missing dataset '{key}'")
                datasets.append(f[key])
            data, labels = datasets
            contiguous = all(d.chunks is None and d.compression is None for d in datasets)
            return Header(data.shape, data.dtype, labels.shape, labels.dtype, contiguous)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise DataError(f"{path}: not a readable HDF5 sample file ({_one_line(err)})") from None


def _check_header(path: Path, header: Header, reference: tuple[Path, Header] | None) -> None:
    if header.data_dtype != np.float32:
        raise DataError(f"{path}: '{layout.DATA_KEY}' is {header.data_dtype}, expected float32")
    if len(header.data_shape) != 3 or header.data_shape[2] != layout.NUM_CHANNELS:
        raise DataError(f"{path}: '{layout.DATA_KEY}' has shape {header.data_shape}, "
                        f"expected H x W x {layout.NUM_CHANNELS}")
    if not np.issubdtype(header.label_dtype, np.integer):
        raise DataError(f"{path}: '{layout.LABEL_KEY}' is {header.label_dtype}, expected an integer type")
    if header.label_shape != header.data_shape[:2]:
        raise DataError(f"{path}: '{layout.LABEL_KEY}' has shape {header.label_shape}, "
                        f"expected {header.data_shape[:2]} to match the data")
    if reference is not None:
        first_path, first = reference
        if header.data_shape != first.data_shape:
            raise DataError(f"{path}: '{layout.DATA_KEY}' shape {header.data_shape} differs from "
                            f"{first.data_shape} in {first_path}; all files must match")
        if header.label_dtype != first.label_dtype:
            raise DataError(f"{path}: '{layout.LABEL_KEY}' dtype {header.label_dtype} differs from "
                            f"{first.label_dtype} in {first_path}; all files must match")
    else:
        height, width = header.data_shape[:2]
        if height % 16 or width % 16:
            raise DataError(f"{path}: image size {height} x {width} is not a multiple of 16 "
                            f"(the network's output stride)")


def check_values(path: Path) -> np.ndarray:
    """Read one file fully; return its class counts or raise DataError."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            data = f[layout.DATA_KEY][...]
            labels = f[layout.LABEL_KEY][...]
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise DataError(f"{path}: unreadable values ({_one_line(err)})") from None
    finite = np.isfinite(data)
    if not finite.all():
        row, col, channel = np.argwhere(~finite)[0]
        raise DataError(f"{path}: '{layout.DATA_KEY}' holds {int((~finite).sum())} non-finite value(s), "
                        f"first {data[row, col, channel]} at row {row}, column {col}, "
                        f"channel {channel} ({layout.CHANNELS[channel]})")
    bad = (labels < 0) | (labels >= layout.NUM_CLASSES)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{path}: '{layout.LABEL_KEY}' holds label {labels[row, col]} at row {row}, "
                        f"column {col}; labels must be in {{0, 1, 2}}")
    return np.bincount(labels.ravel().astype(np.intp), minlength=layout.NUM_CLASSES)


def value_sample(count: int, max_files: int | None) -> list[int]:
    """Indices of the files to read fully: evenly spread, first and last included."""
    if max_files is None or max_files >= count:
        return list(range(count))
    if max_files <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, max_files)})


def check_dataset(root: str | os.PathLike, max_files: int | None = DEFAULT_MAX_FILES,
                  progress: bool = False) -> CheckSummary:
    """Validate a data set; return what was found or raise the first problem."""
    from tqdm import tqdm

    if max_files is not None and max_files < 0:
        raise ConfigError(f"--max-files {max_files}: must be >= 0")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data set directory")
    files = {split: layout.list_files(root, split) for split in layout.SPLITS}
    minval, _ = layout.load_stats(root)

    reference: tuple[Path, Header] | None = None
    contiguous = True
    all_files = [path for split in layout.SPLITS for path in files[split]]
    for path in tqdm(all_files, desc="headers", unit="file", disable=not progress):
        header = read_header(path)
        _check_header(path, header, reference)
        reference = reference or (path, header)
        contiguous &= header.contiguous
    assert reference is not None  # list_files never returns an empty list

    splits = []
    for split in layout.SPLITS:
        chosen = value_sample(len(files[split]), max_files)
        summary = SplitSummary(split, len(files[split]), len(chosen),
                               sum(path.stat().st_size for path in files[split]))
        for index in tqdm(chosen, desc=f"values {split}", unit="file", disable=not progress):
            summary.class_counts += check_values(files[split][index])
        splits.append(summary)
    return CheckSummary(root, dataclasses.replace(reference[1], contiguous=contiguous), splits, int(minval.size))
