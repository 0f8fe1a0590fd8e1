"""`fastcam data check`: a good data set passes; each kind of damage is one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from fastcam.cli import main
from fastcam.data import layout
from fastcam.data.check import check_dataset, value_sample
from fastcam.data.synth import synthesize
from fastcam.errors import DataError

HEIGHT, WIDTH = 64, 96


@pytest.fixture
def dataset(tmp_path) -> Path:
    return synthesize(tmp_path / "ds", 4, 2, height=HEIGHT, width=WIDTH, seed=1, workers=1,
                      progress=False).root


def run_check(root: Path, capsys, *extra: str) -> tuple[int, str, str]:
    rc = main(["data", "check", str(root), "--no-progress", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def rewrite(path: Path, data: np.ndarray | None = None, labels: np.ndarray | None = None) -> None:
    """Replace one sample file's datasets (read the current ones for what is not given)."""
    with h5py.File(path, "r") as f:
        old_data, old_labels = f[layout.DATA_KEY][...], f[layout.LABEL_KEY][...]
    path.unlink()
    with h5py.File(path, "w") as f:
        f[layout.DATA_KEY] = old_data if data is None else data
        f[layout.LABEL_KEY] = old_labels if labels is None else labels


def test_good_dataset_passes_with_a_summary_table(dataset, capsys):
    rc, out, err = run_check(dataset, capsys)
    assert rc == 0, err
    assert "train" in out and "validation" in out and out.rstrip().endswith("OK")
    assert f"{HEIGHT} x {WIDTH} x 16 float32" in out and "contiguous" in out
    summary = check_dataset(dataset)
    counts = np.zeros(3, np.int64)
    for path in [*layout.list_files(dataset, "train"), *layout.list_files(dataset, "validation")]:
        with h5py.File(path, "r") as f:
            counts += np.bincount(f[layout.LABEL_KEY][...].ravel(), minlength=3)
    np.testing.assert_allclose(summary.class_frequencies, counts / counts.sum())
    assert [(s.files, s.values_checked) for s in summary.splits] == [(4, 4), (2, 2)]


def garbage(root: Path) -> None:
    (root / "train" / "data-000001.h5").write_bytes(b"this is not HDF5 at all\n" * 100)


def truncated(root: Path) -> None:
    path = root / "train" / "data-000001.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def missing_stats(root: Path) -> None:
    (root / layout.STATS_FILE).unlink()


def wrong_channels(root: Path) -> None:
    rewrite(root / "train" / "data-000001.h5", data=np.zeros((HEIGHT, WIDTH, 15), np.float32))


def other_size(root: Path) -> None:
    rewrite(root / "validation" / "data-000001.h5", data=np.zeros((HEIGHT, WIDTH + 16, 16), np.float32),
            labels=np.zeros((HEIGHT, WIDTH + 16), np.int32))


def not_multiple_of_16(root: Path) -> None:
    rewrite(root / "train" / "data-000000.h5", data=np.zeros((40, 56, 16), np.float32),
            labels=np.zeros((40, 56), np.int32))


def int64_labels(root: Path) -> None:
    rewrite(root / "train" / "data-000002.h5", labels=np.zeros((HEIGHT, WIDTH), np.int64))


def float64_data(root: Path) -> None:
    rewrite(root / "train" / "data-000001.h5", data=np.zeros((HEIGHT, WIDTH, 16), np.float64))


def float_labels(root: Path) -> None:
    rewrite(root / "train" / "data-000001.h5", labels=np.zeros((HEIGHT, WIDTH), np.float32))


def missing_labels(root: Path) -> None:
    path = root / "train" / "data-000001.h5"
    with h5py.File(path, "a") as f:
        del f[layout.LABEL_KEY]


def label_value(value: int):
    def damage(root: Path) -> None:
        labels = np.zeros((HEIGHT, WIDTH), np.int32)
        labels[5, 7] = value
        rewrite(root / "train" / "data-000001.h5", labels=labels)
    damage.__name__ = f"label_{value}"
    return damage


def nan_value(root: Path) -> None:
    path = root / "train" / "data-000001.h5"
    with h5py.File(path, "a") as f:
        f[layout.DATA_KEY][3, 4, 2] = np.nan


def empty_split(root: Path) -> None:
    for path in (root / "validation").iterdir():
        path.unlink()


def missing_split(root: Path) -> None:
    shutil.rmtree(root / "validation")


@pytest.mark.parametrize("damage, file, fragments", [
    (garbage, "train/data-000001.h5", ["not a readable HDF5"]),
    (truncated, "train/data-000001.h5", []),
    (missing_stats, "stats.h5", ["missing stats file"]),
    (wrong_channels, "train/data-000001.h5", ["shape (64, 96, 15)", "H x W x 16"]),
    (other_size, "validation/data-000001.h5",
     ["shape (64, 112, 16) differs from (64, 96, 16)", "train/data-000000.h5"]),
    (not_multiple_of_16, "train/data-000000.h5", ["40 x 56", "multiple of 16"]),
    (int64_labels, "train/data-000002.h5", ["dtype int64 differs from int32"]),
    (float64_data, "train/data-000001.h5", ["float64", "expected float32"]),
    (float_labels, "train/data-000001.h5", ["labels_0", "float32", "integer"]),
    (missing_labels, "train/data-000001.h5", ["missing dataset 'climate/labels_0'"]),
    (label_value(3), "train/data-000001.h5", ["label 3", "row 5, column 7", "{0, 1, 2}"]),
    (label_value(-1), "train/data-000001.h5", ["label -1", "{0, 1, 2}"]),
    (nan_value, "train/data-000001.h5", ["non-finite", "nan", "row 3, column 4, channel 2 (V850)"]),
    (empty_split, "validation", ["no data-*.h5 files"]),
    (missing_split, "validation", ["missing 'validation' directory"]),
], ids=lambda value: getattr(value, "__name__", None) if callable(value) else None)
def test_damage_is_one_clear_error_line(dataset, capsys, damage, file, fragments):
    damage(dataset)
    rc, out, err = run_check(dataset, capsys)
    assert rc != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastcam: error: "), err
    assert "Traceback" not in err and "OK" not in out
    assert str(dataset / file) in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_truncated_file_is_named_as_unreadable_or_truncated(dataset):
    truncated(dataset)
    with pytest.raises(DataError, match=r"data-000001\.h5: (truncated|not a readable HDF5)"):
        check_dataset(dataset)


def test_max_files_bounds_the_value_reads_but_headers_are_checked_on_all(dataset, capsys):
    assert value_sample(4, 2) == [0, 3] and value_sample(4, None) == [0, 1, 2, 3] and value_sample(4, 0) == []
    nan_value(dataset)  # file 1: not among the two files read at --max-files 2
    rc, out, _ = run_check(dataset, capsys, "--max-files", "2")
    assert rc == 0 and "OK" in out
    assert run_check(dataset, capsys, "--max-files", "-1")[0] != 0
    wrong_channels(dataset)  # a header problem is found whatever --max-files says
    rc, _, err = run_check(dataset, capsys, "--max-files", "0")
    assert rc != 0 and "H x W x 16" in err


def test_missing_root_and_bad_max_files(tmp_path, capsys):
    rc, _, err = run_check(tmp_path / "nowhere", capsys)
    assert rc != 0 and "nowhere: no such data set directory" in err
    rc, _, err = run_check(tmp_path, capsys, "--max-files", "-3")
    assert rc != 0 and "--max-files -3" in err
