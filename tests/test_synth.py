"""The synthetic data generator: layout, determinism, class balance, learnability."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from fastcam.cli import main
from fastcam.data import layout, synth
from fastcam.data.check import check_dataset
from fastcam.data.synth import make_sample, sample_rng, synthesize

SMALL = dict(height=64, width=96)
CH = {name: i for i, name in enumerate(layout.CHANNELS)}


def read_split(root: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    arrays = []
    for path in layout.list_files(root, split):
        with h5py.File(path, "r") as f:
            arrays.append((f[layout.DATA_KEY][...], f[layout.LABEL_KEY][...]))
    return arrays


def test_make_sample_has_stored_layout_and_physical_ranges():
    data, labels = make_sample(64, 96, sample_rng(0, "train", 0))
    assert data.shape == (64, 96, layout.NUM_CHANNELS) and data.dtype == np.float32
    assert data.flags.c_contiguous
    assert labels.shape == (64, 96) and labels.dtype == np.int32
    assert set(np.unique(labels)) <= {0, 1, 2}
    ranges = {"TMQ": (0, 120), "U850": (-80, 80), "VBOT": (-80, 80), "QREFHT": (0, 0.04),
              "PS": (4e4, 1.1e5), "PSL": (8.5e4, 1.1e5), "T200": (190, 240), "T500": (220, 285),
              "PRECT": (0, 1e-4), "TS": (190, 320), "TREFHT": (190, 320), "Z1000": (-800, 800),
              "Z200": (9500, 13000), "ZBOT": (35, 80)}
    for name, (low, high) in ranges.items():
        channel = data[..., CH[name]]
        assert low <= channel.min() and channel.max() <= high, name
    # Latitude structure: the tropics (middle rows) are warmer and moister than the poles.
    tropics, poles = data[28:36], np.concatenate([data[:4], data[-4:]])
    for name, margin in (("TS", 20.0), ("T500", 10.0), ("TMQ", 15.0)):
        assert tropics[..., CH[name]].mean() > poles[..., CH[name]].mean() + margin, name


def test_synth_output_passes_check_and_stats_match_training_files(tmp_path):
    root = tmp_path / "synth"
    summary = synthesize(root, 3, 2, **SMALL, workers=1, progress=False)
    checked = check_dataset(root)
    assert [(s.name, s.files) for s in checked.splits] == [("train", 3), ("validation", 2)]
    assert checked.header.data_shape == (64, 96, 16) and checked.header.contiguous
    assert not list(root.rglob("*.tmp"))
    train = read_split(root, "train")
    minval, maxval = layout.load_stats(root)
    stacked = np.stack([data for data, _ in train])
    np.testing.assert_array_equal(minval, stacked.min(axis=(0, 1, 2)))
    np.testing.assert_array_equal(maxval, stacked.max(axis=(0, 1, 2)))
    with h5py.File(root / "train" / "data-000000.h5", "r") as f:  # like the real files
        for key in (layout.DATA_KEY, layout.LABEL_KEY):
            assert f[key].chunks is None and f[key].compression is None
    assert summary.samples == 5 and summary.bytes_written == sum(p.stat().st_size for p in root.rglob("*.h5"))


def test_same_seed_same_arrays_for_any_worker_count_and_other_seed_differs(tmp_path):
    one = synthesize(tmp_path / "one", 3, 2, **SMALL, seed=7, workers=1, progress=False).root
    two = synthesize(tmp_path / "two", 3, 2, **SMALL, seed=7, workers=2, progress=False).root
    other = synthesize(tmp_path / "other", 3, 2, **SMALL, seed=8, workers=1, progress=False).root
    for split in layout.SPLITS:
        for (d1, l1), (d2, l2), (d3, _) in zip(read_split(one, split), read_split(two, split),
                                               read_split(other, split)):
            np.testing.assert_array_equal(d1, d2)
            np.testing.assert_array_equal(l1, l2)
            assert not np.array_equal(d1, d3)
    # Train and validation samples with the same index are different samples.
    assert not np.array_equal(read_split(one, "train")[0][0], read_split(one, "validation")[0][0])


def class_frequencies(height: int, width: int, samples: int) -> np.ndarray:
    counts = np.zeros(layout.NUM_CLASSES)
    for index in range(samples):
        _, labels = make_sample(height, width, sample_rng(0, "train", index))
        counts += np.bincount(labels.ravel(), minlength=layout.NUM_CLASSES)
    return counts / counts.sum()


def assert_near_real(frequencies: np.ndarray) -> None:
    ratio = frequencies / np.asarray(layout.CLASS_FREQUENCIES)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), f"frequencies {frequencies}, ratio to real {ratio}"


def test_class_frequencies_near_real_ones():
    assert_near_real(class_frequencies(192, 288, samples=48))


@pytest.mark.slow
def test_class_frequencies_near_real_ones_at_full_size():
    assert_near_real(class_frequencies(layout.FULL_HEIGHT, layout.FULL_WIDTH, samples=16))


def test_labels_follow_the_fields():
    """Cyclone pixels: low pressure, strong cyclonic wind; river pixels: moister
    than the background at the same latitude."""
    psl_drop, wind_ratio, spin, tmq_excess = [], [], [], []
    height, width = 192, 288
    lat = -90 + (np.arange(height) + 0.5) * 180 / height
    for index in range(12):
        data, labels = make_sample(height, width, sample_rng(3, "train", index))
        background = labels == 0
        row_mean = {name: np.nanmean(np.where(background, data[..., CH[name]], np.nan), axis=1, keepdims=True)
                    for name in ("PSL", "TMQ")}
        u, v = data[..., CH["U850"]], data[..., CH["V850"]]
        speed = np.hypot(u, v)
        # Relative vorticity dv/dx - du/dy on the grid (rows northward, columns eastward).
        vorticity = np.gradient(v, axis=1) - np.gradient(u, axis=0)
        cyclone, river = labels == 1, labels == 2
        if cyclone.any():
            psl_drop.append((data[..., CH["PSL"]] - row_mean["PSL"])[cyclone].mean())
            wind_ratio.append(speed[cyclone].mean() / speed[background].mean())
            hemisphere = np.sign(np.broadcast_to(lat[:, None], labels.shape))[cyclone]
            spin.append(np.mean(np.sign(vorticity[cyclone]) == hemisphere))
        if river.any():
            tmq_excess.append((data[..., CH["TMQ"]] - row_mean["TMQ"])[river].mean())
    assert len(psl_drop) >= 5 and len(tmq_excess) >= 10
    assert np.mean(psl_drop) < -1000  # Pa
    assert np.mean(wind_ratio) > 1.5
    assert np.mean(spin) > 0.8  # cyclonic: counter-clockwise north, clockwise south
    assert np.mean(tmq_excess) > 8  # kg/m2


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastcam: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("option", ["--height", "--width"])
def test_size_not_multiple_of_16_is_refused(tmp_path, capsys, option):
    out = tmp_path / "refused"
    rc, _, err = run_cli(["data", "synth", "--out", str(out), option, "100", "--no-progress"], capsys)
    assert rc != 0
    assert_one_error_line(err, f"{option} 100", "multiple of 16")
    assert not out.exists()


def test_cli_refuses_non_empty_directory_unless_forced(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--height", "64", "--width", "96", "--workers", "1",
            "--no-progress"]
    assert run_cli(args + ["--train", "4", "--validation", "2"], capsys)[0] == 0
    rc, _, err = run_cli(args + ["--train", "2", "--validation", "1"], capsys)
    assert rc != 0
    assert_one_error_line(err, str(out), "--force")
    rc, out_text, _ = run_cli(args + ["--train", "2", "--validation", "1", "--force"], capsys)
    assert rc == 0 and "2 train + 1 validation" in out_text
    # The stale files of the bigger set are gone, not mixed into the new one.
    assert len(layout.list_files(out, "train")) == 2 and len(layout.list_files(out, "validation")) == 1


def test_failed_write_leaves_no_partial_files(tmp_path, monkeypatch, capsys):
    real_replace = synth.os.replace
    calls = []

    def replace_then_fail(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(synth.os, "replace", replace_then_fail)
    out = tmp_path / "ds"
    rc, _, err = run_cli(["data", "synth", "--out", str(out), "--height", "64", "--width", "96",
                          "--train", "3", "--validation", "1", "--workers", "1", "--no-progress"], capsys)
    assert rc != 0
    assert_one_error_line(err, "data-000001.h5", "No space left")
    assert not list(out.rglob("*.tmp")) and not (out / layout.STATS_FILE).exists()
    assert [p.name for p in out.rglob("*.h5")] == ["data-000000.h5"]  # the one finished file, whole
    read_split(out, "train")
