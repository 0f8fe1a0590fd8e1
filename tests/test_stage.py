"""Staging (``fastcam data stage``) and the staged loader, on real HDF5 files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fastcam.cli import main
from fastcam.data import layout, stage
from fastcam.data.reader import CamDataset, shard_validation
from fastcam.data.stage import stage_dataset
from fastcam.data.staged import StagedLoader, build_staged_loaders
from fastcam.errors import ConfigError, DataError


def reference_samples(root: Path, split: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The float32 reference path (CamDataset, C x H x W) by source file name."""
    minval, maxval = layout.load_stats(root)
    dataset = CamDataset(layout.list_files(root, split), minval, maxval)
    return {name: (data.numpy(), label.numpy()) for data, label, name in (dataset[i] for i in range(len(dataset)))}


def staged_samples(dst: Path, split: str, dtype=torch.float16) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    loader = StagedLoader(dst, split, batch_size=3, shuffle=True, drop_last=False, seed=1)
    out = {}
    for inputs, labels, names in loader:
        assert inputs.dtype == dtype and labels.dtype == torch.int64
        assert inputs.is_contiguous(memory_format=torch.channels_last)
        for row, name in enumerate(names):
            out[name] = (inputs[row].float().numpy(), labels[row].numpy())
    return out


def stage_quietly(src: Path, dst: Path, **kwargs) -> stage.StageSummary:
    return stage_dataset(src, dst, workers=kwargs.pop("workers", 1), progress=False, **kwargs)


def test_round_trip_within_documented_float16_error(tiny_synthetic, tmp_path):
    dst = tmp_path / "staged"
    stage_quietly(tiny_synthetic, dst)
    worst = {}
    for split in layout.SPLITS:
        expected, staged = reference_samples(tiny_synthetic, split), staged_samples(dst, split)
        assert sorted(staged) == sorted(expected)
        error = 0.0
        for name, (data, label) in expected.items():
            values, labels = staged[name]
            difference = np.abs(values - data)
            # Round-to-nearest float16: relative 2**-11 for normal numbers, 2**-25 below them.
            assert np.all(difference <= stage.FLOAT16_UNIT_ROUNDOFF * np.abs(data) + stage.FLOAT16_SUBNORMAL_ERROR)
            np.testing.assert_array_equal(labels, label)
            error = max(error, float(difference.max()))
        worst[split] = error
    train = reference_samples(tiny_synthetic, "train").values()
    assert min(d.min() for d, _ in train) >= 0.0 and max(d.max() for d, _ in train) <= 1.0
    assert 0.0 < worst["train"] <= stage.TRAIN_MAX_ABS_ERROR  # > 0: the values really went through float16
    print(f"\nfloat16 staging: max abs error train {worst['train']:.3g}, validation {worst['validation']:.3g} "
          f"(bound for [0, 1]: {stage.TRAIN_MAX_ABS_ERROR:.3g})")


def test_fp32_staging_is_the_reference_readers_values_exactly_beside_a_float16_cache(tiny_synthetic, tmp_path):
    dst = tmp_path / "staged"
    stage_quietly(tiny_synthetic, dst, dtype="fp32")
    for split in layout.SPLITS:
        assert (dst / split / "inputs.f32").is_file() and not (dst / split / "inputs.f16").exists()
        assert stage.read_index(dst / split)["inputs"]["dtype"] == "float32"
        expected, staged = reference_samples(tiny_synthetic, split), staged_samples(dst, split, torch.float32)
        assert sorted(staged) == sorted(expected)
        for name, (data, label) in expected.items():
            np.testing.assert_array_equal(staged[name][0], data)  # bitwise: no rounding
            np.testing.assert_array_equal(staged[name][1], label)
    # Asking for the other dtype restages (one inputs file, never both) and reuses after.
    assert stage_quietly(tiny_synthetic, dst, dtype="fp16").staged == 21
    assert not (dst / "train" / "inputs.f32").exists() and (dst / "train" / "inputs.f16").is_file()
    assert stage_quietly(tiny_synthetic, dst, dtype="fp16").reused
    with pytest.raises(ConfigError, match="stage dtype 'bf16'"):
        stage_quietly(tiny_synthetic, dst, dtype="bf16")


def test_complete_stage_is_reused_and_redone_when_the_source_changes(random_dataset, tmp_path):
    dst = tmp_path / "staged"
    first = stage_quietly(random_dataset, dst)
    assert first.staged == 12 + 7 and not first.reused
    index = json.loads((dst / "train" / stage.INDEX_FILE).read_text())
    assert index["complete"] and index["staging_seconds"] >= 0 and index["inputs"]["shape"] == [12, 32, 48, 16]
    calls = []
    again = stage_quietly(random_dataset, dst, on_sample=lambda split, i: calls.append(i))
    assert again.reused and again.staged == 0 and calls == []
    with h5py.File(random_dataset / layout.STATS_FILE, "r+") as f:
        f[layout.MAXVAL_KEY][...] = np.full(layout.NUM_CHANNELS, 60.0, np.float32)
    changed = stage_quietly(random_dataset, dst)
    assert not changed.reused and changed.staged == 19
    expected = reference_samples(random_dataset, "validation")
    for name, (values, _labels) in staged_samples(dst, "validation").items():
        assert np.abs(values - expected[name][0]).max() <= stage.TRAIN_MAX_ABS_ERROR


def test_interrupted_staging_resumes_and_restages_what_no_longer_verifies(random_dataset, tmp_path):
    dst = tmp_path / "staged"

    def stop_after(count):
        done = []

        def hook(split, index):
            done.append((split, index))
            if len(done) == count:
                raise KeyboardInterrupt
        return hook, done

    hook, first = stop_after(5)
    with pytest.raises(KeyboardInterrupt):
        stage_quietly(random_dataset, dst, on_sample=hook)
    with pytest.raises(DataError, match="incomplete"):
        StagedLoader(dst, "train", batch_size=2, shuffle=True, drop_last=True, seed=0)
    # Damage one sample that was already marked done: the next call must notice and redo it.
    damaged_split, damaged = first[0]
    with open(dst / damaged_split / stage.INPUTS_FILE, "r+b") as f:
        f.seek(damaged * 32 * 48 * 16 * 2 + 100)
        f.write(b"\x7f\x7f")
    second = []
    summary = stage_quietly(random_dataset, dst, on_sample=lambda split, i: second.append((split, i)))
    assert summary.staged == 19 - 5 + 1 and sum(s.reverified for s in summary.splits) == 4
    assert set(second) == ({(s, i) for s in ("train",) for i in range(12)}
                           | {("validation", i) for i in range(7)}) - set(first[1:])
    assert json.loads((dst / "train" / stage.INDEX_FILE).read_text())["resumed"]
    expected = reference_samples(random_dataset, "train")
    for name, (values, labels) in staged_samples(dst, "train").items():
        assert np.abs(values - expected[name][0]).max() <= stage.TRAIN_MAX_ABS_ERROR
        np.testing.assert_array_equal(labels, expected[name][1])


def test_staging_killed_mid_way_resumes(random_dataset, tmp_path):
    dst = tmp_path / "staged"
    script = textwrap.dedent(f"""
        import os, signal
        from fastcam.data.stage import stage_dataset
        done = []
        def hook(split, index):
            done.append(index)
            if len(done) == 7:
                os.kill(os.getpid(), signal.SIGKILL)
        stage_dataset({str(random_dataset)!r}, {str(dst)!r}, workers=1, progress=False, on_sample=hook)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()
    summary = stage_quietly(random_dataset, dst)
    assert summary.staged == 19 - 7 and sum(s.reverified for s in summary.splits) == 7
    assert len(staged_samples(dst, "train")) == 12 and len(staged_samples(dst, "validation")) == 7


@pytest.mark.parametrize("damage", ["garbage", "nan"])
def test_corrupt_source_file_is_reported_by_name(random_dataset, tmp_path, capsys, damage):
    bad = layout.list_files(random_dataset, "train")[4]
    if damage == "garbage":
        bad.write_bytes(b"not an HDF5 file" * 100)
    else:
        with h5py.File(bad, "r+") as f:
            f[layout.DATA_KEY][3, 5, 2] = np.nan
    code = main(["data", "stage", str(random_dataset), str(tmp_path / "staged"), "--workers", "1", "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code != 0
    assert len(error.splitlines()) == 1 and error.startswith("fastcam: error: ") and str(bad) in error


@pytest.mark.slow  # spawns worker processes, each importing torch (several seconds on 2 cores)
def test_parallel_staging_writes_the_same_bytes_and_reports_worker_errors(random_dataset, tmp_path):
    stage_quietly(random_dataset, tmp_path / "one", workers=1)
    summary = stage_quietly(random_dataset, tmp_path / "two", workers=2)
    assert summary.workers == 2 and summary.staged == 19
    for split in layout.SPLITS:
        for name in (stage.INPUTS_FILE, stage.LABELS_FILE, stage.MARKS_FILE):
            assert (tmp_path / "one" / split / name).read_bytes() == (tmp_path / "two" / split / name).read_bytes()
    bad = layout.list_files(random_dataset, "validation")[2]
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(DataError, match=str(bad)):
        stage_quietly(random_dataset, tmp_path / "three", workers=2)


def test_each_epoch_yields_the_shard_once_in_a_seeded_order(tiny_synthetic, tmp_path):
    dst = tmp_path / "staged"
    stage_quietly(tiny_synthetic, dst)
    shard = [str(p) for p in layout.list_files(tiny_synthetic, "train")]

    def epoch_order(seed, epoch, batch_size=3, drop_last=False):
        loader = StagedLoader(dst, "train", batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=seed,
                              prefetch=2, threads=2)
        loader.set_epoch(epoch)
        names = [name for _, _, batch in loader for name in batch]
        assert len(names) == (len(loader) * batch_size if drop_last else len(shard))
        return names

    for epoch in range(3):
        assert Counter(epoch_order(7, epoch)) == Counter(shard)
    assert epoch_order(7, 0) != epoch_order(7, 1)
    assert epoch_order(7, 1) == epoch_order(7, 1)
    assert epoch_order(7, 1) != epoch_order(8, 1)
    dropped = epoch_order(7, 0, batch_size=5, drop_last=True)
    assert len(dropped) == 15 and len(set(dropped)) == 15 and set(dropped) <= set(shard)
    train, validation = build_staged_loaders(dst, local_batch_size=4, seed=7)
    assert (validation.batch_size, validation.shuffle, validation.drop_last) == (1, False, False)
    assert [n for _, _, (n,) in validation] == [str(p) for p in layout.list_files(tiny_synthetic, "validation")]
    assert len(train) == 4 and train.global_samples == 16 and validation.global_samples == 5


@pytest.mark.parametrize("world_size", [2, 5])
def test_ranks_get_disjoint_equal_training_shards_and_validation_once(random_dataset, tmp_path, world_size):
    train, validation = [], Counter()
    for rank in range(world_size):
        dst = tmp_path / f"rank{rank}"
        stage_quietly(random_dataset, dst, rank=rank, world_size=world_size)
        loaders = build_staged_loaders(dst, local_batch_size=1, seed=3)
        assert loaders[0].rank == rank and loaders[0].world_size == world_size
        train.append([n for _, _, batch in loaders[0] for n in batch])
        validation.update(n for _, _, batch in loaders[1] for n in batch)
    assert {len(names) for names in train} == {12 // world_size}
    flat = [n for names in train for n in names]
    assert len(flat) == len(set(flat))
    files = [str(p) for p in layout.list_files(random_dataset, "validation")]
    assert sorted(validation) == sorted(files) and set(validation.values()) == {1}
    for rank in range(world_size):  # the validation shard is the reference reader's
        assert [str(p) for p in shard_validation(layout.list_files(random_dataset, "validation"), rank,
                                                 world_size)] == \
            [n for _, _, batch in build_staged_loaders(tmp_path / f"rank{rank}", local_batch_size=1, seed=3)[1]
             for n in batch]


def test_cli_stages_one_rank(random_dataset, tmp_path, capsys):
    dst = tmp_path / "staged"
    argv = ["data", "stage", str(random_dataset), str(dst), "--rank", "1", "--world-size", "2", "--workers", "1",
            "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train: 6 samples" in out and "validation: 3 samples" in out and "rank 1 of 2" in out
    index = json.loads((dst / "validation" / stage.INDEX_FILE).read_text())
    assert (index["rank"], index["world_size"], index["count"], index["global_samples"]) == (1, 2, 3, 7)
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out
    assert main([*argv, "--dtype", "fp32"]) == 0 and "up to date" not in capsys.readouterr().out
    assert stage.read_index(dst / "train")["inputs"]["dtype"] == "float32"
    assert main(["data", "stage", str(random_dataset), str(dst), "--rank", "2", "--world-size", "2"]) != 0
    assert "--rank 2" in capsys.readouterr().err


def test_loader_rejects_a_batch_larger_than_the_shard(random_dataset, tmp_path):
    stage_quietly(random_dataset, tmp_path / "staged", rank=0, world_size=4)
    with pytest.raises(DataError, match="fewer than the batch size 4"):
        StagedLoader(tmp_path / "staged", "train", batch_size=4, shuffle=True, drop_last=True, seed=0)
    with pytest.raises(DataError, match="missing"):
        StagedLoader(tmp_path / "nothing", "train", batch_size=1, shuffle=True, drop_last=True, seed=0)


def test_loader_throughput_on_cpu(tiny_synthetic, tmp_path):
    """Not an assertion on speed: prints the figure for the report."""
    dst = tmp_path / "staged"
    stage_quietly(tiny_synthetic, dst)
    loader = StagedLoader(dst, "train", batch_size=4, shuffle=True, drop_last=True, seed=0)
    samples, start = 0, time.perf_counter()
    for epoch in range(20):
        loader.set_epoch(epoch)
        samples += sum(len(names) for _, _, names in loader)
    seconds = time.perf_counter() - start
    assert samples == 20 * 16
    print(f"\nstaged loader, CPU, 32 x 48: {samples / seconds:.0f} samples/s")


def test_a_directory_being_staged_waits_for_the_other_stager(random_dataset, tmp_path):
    import fcntl
    import threading

    dst = tmp_path / "staged"
    dst.mkdir()
    results = []
    with open(dst / stage.LOCK_FILE, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as another process staging there would
        worker = threading.Thread(target=lambda: results.append(stage_quietly(random_dataset, dst)))
        worker.start()
        worker.join(timeout=2)
        assert worker.is_alive() and not results  # waits instead of writing under the other stager
    worker.join(timeout=120)
    assert results and results[0].staged == 19
    assert stage_quietly(random_dataset, dst).reused  # and a later call reuses the finished stage
