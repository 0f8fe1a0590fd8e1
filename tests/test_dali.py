"""The DALI loader (fastcam.data.dali) against the staged loader, on real staged caches.

The CPU tests run the pipeline definition the GPU uses, on ``device="cpu"``;
the GPU-only tests (marked ``gpu``) are skipped without CUDA.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

pytest.importorskip("nvidia.dali")

from fastcam.data import layout, stage  # noqa: E402
from fastcam.data.dali import DaliLoader, build_dali_loaders, build_pipeline  # noqa: E402
from fastcam.data.dali_source import StagedBatchSource  # noqa: E402
from fastcam.data.stage import stage_dataset  # noqa: E402
from fastcam.data.staged import StagedLoader, build_staged_loaders  # noqa: E402
from fastcam.errors import ConfigError, DataError  # noqa: E402


def needs_cuda(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


@pytest.fixture(scope="module")
def caches(tiny_synthetic, tmp_path_factory):
    """Staged caches of the 16 + 5 sample tiny set for every rank of 1, 2 and 3 ranks."""
    root = tmp_path_factory.mktemp("dali-staged")
    out = {}
    for world_size in (1, 2, 3):
        for rank in range(world_size):
            dst = root / f"rank{rank}-of-{world_size}"
            stage_dataset(tiny_synthetic, dst, rank=rank, world_size=world_size, workers=1, progress=False)
            out[rank, world_size] = dst
    return out


def epoch_batches(loader, epoch: int) -> list:
    loader.set_epoch(epoch)
    return list(loader)


def assert_same_batches(got: list, expected: list, dtype=torch.float16) -> None:
    assert len(got) == len(expected)
    bits = {torch.float16: torch.int16, torch.float32: torch.int32}[dtype]
    for (inputs, labels, names), (ref_inputs, ref_labels, ref_names) in zip(got, expected):
        assert names == ref_names
        assert inputs.dtype == ref_inputs.dtype == dtype and labels.dtype == ref_labels.dtype == torch.int64
        assert inputs.shape == ref_inputs.shape and labels.shape == ref_labels.shape
        assert inputs.stride() == ref_inputs.stride() and labels.stride() == ref_labels.stride()
        assert inputs.is_contiguous(memory_format=torch.channels_last)
        assert inputs.device == ref_inputs.device and labels.device == ref_labels.device
        assert torch.equal(inputs.view(bits), ref_inputs.view(bits))  # bitwise
        assert torch.equal(labels, ref_labels)


SETUPS = {  # split, batch size, shuffle, drop last: the trainer's two and a kept partial batch
    "train-drop-last": ("train", 3, True, True),
    "validation": ("validation", 1, False, False),
    "train-partial-last": ("train", 3, True, False),
}


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("seed", [0, 5])
def test_same_batches_as_the_staged_loader(caches, setup, seed):
    split, batch_size, shuffle, drop_last = SETUPS[setup]
    kwargs = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
    dali, staged = DaliLoader(caches[0, 1], split, **kwargs), StagedLoader(caches[0, 1], split, **kwargs)
    orders = []
    for epoch in range(3):
        got = epoch_batches(dali, epoch)
        assert len(got) == len(dali) == len(staged)
        assert_same_batches(got, epoch_batches(staged, epoch))
        orders.append([name for batch in got for name in batch[2]])
    expected_sizes = {"train-drop-last": [3] * 5, "validation": [1] * 5, "train-partial-last": [3] * 5 + [1]}
    assert [batch[0].shape[0] for batch in got] == expected_sizes[setup]
    if shuffle:
        assert orders[0] != orders[1] != orders[2]  # the epoch really reshuffles
    dali.close()


def test_a_float32_cache_gives_the_staged_loaders_float32_batches(tiny_synthetic, tmp_path):
    dst = tmp_path / "fp32"
    stage_dataset(tiny_synthetic, dst, workers=1, progress=False, dtype="fp32")
    kwargs = dict(batch_size=3, shuffle=True, drop_last=True, seed=2)
    dali, staged = DaliLoader(dst, "train", **kwargs), StagedLoader(dst, "train", **kwargs)
    assert dali.stage_dtype == staged.stage_dtype == "fp32"
    assert_same_batches(epoch_batches(dali, 1), epoch_batches(staged, 1), torch.float32)
    dali.close()


def test_builder_mirrors_build_staged_loaders(caches):
    dali = build_dali_loaders(caches[1, 2], local_batch_size=2, seed=3)
    staged = build_staged_loaders(caches[1, 2], local_batch_size=2, seed=3)
    for mine, theirs in zip(dali, staged):
        for attribute in ("count", "height", "width", "channels", "names", "batch_size", "shuffle", "drop_last",
                          "rank", "world_size", "global_samples", "device"):
            assert getattr(mine, attribute) == getattr(theirs, attribute), attribute
        assert len(mine) == len(theirs)
        mine.set_epoch(4)
        theirs.set_epoch(4)
        assert_same_batches(list(mine), list(theirs))
        mine.close()
    assert dali[0].rank == 1 and dali[0].world_size == 2 and dali[1].batch_size == 1


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_sample_once_per_epoch_across_ranks(caches, tiny_synthetic, world_size):
    train_files = [str(p) for p in layout.list_files(tiny_synthetic, "train")]
    validation_files = [str(p) for p in layout.list_files(tiny_synthetic, "validation")]
    loaders = [build_dali_loaders(caches[rank, world_size], local_batch_size=1, seed=9)
               for rank in range(world_size)]
    for epoch in (0, 1):
        train = {rank: [n for batch in epoch_batches(t, epoch) for n in batch[2]]
                 for rank, (t, _) in enumerate(loaders)}
        validation = [n for _, v in loaders for batch in epoch_batches(v, epoch) for n in batch[2]]
        seen = [n for names in train.values() for n in names]
        assert len(seen) == len(set(seen)) == world_size * (len(train_files) // world_size)
        for rank, names in train.items():
            assert sorted(names) == sorted(str(p) for p in stage.train_shard(train_files, rank, world_size))
        assert sorted(validation) == sorted(validation_files)  # uneven shards, each file once
    for train, validation in loaders:
        train.close()
        validation.close()


def test_batches_kept_past_the_next_iteration_stay_intact(caches):
    loader = DaliLoader(caches[0, 1], "train", batch_size=2, shuffle=True, drop_last=False, seed=1, prefetch=1)
    kept, copies = [], []
    for epoch in range(3):
        for inputs, labels, _names in epoch_batches(loader, epoch):
            kept.append((inputs, labels))
            copies.append((inputs.clone(), labels.clone()))
    assert len({inputs.data_ptr() for inputs, _ in kept}) == len(kept) == 3 * 8
    for (inputs, labels), (inputs_then, labels_then) in zip(kept, copies):
        assert torch.equal(inputs, inputs_then) and torch.equal(labels, labels_then)
    loader.close()


def test_out_of_sequence_epochs_and_abandoned_passes(caches):
    kwargs = dict(batch_size=3, shuffle=True, drop_last=True, seed=2)
    dali, staged = DaliLoader(caches[0, 1], "train", **kwargs), StagedLoader(caches[0, 1], "train", **kwargs)
    for _batch in dali:
        break  # abandoned after one batch: the next pass must still be the whole epoch 0
    assert_same_batches(list(dali), epoch_batches(staged, 0))
    assert_same_batches(list(dali), epoch_batches(staged, 0))  # same epoch again, as the staged loader does
    assert_same_batches(epoch_batches(dali, 5), epoch_batches(staged, 5))
    assert_same_batches(epoch_batches(dali, 6), epoch_batches(staged, 6))
    dali.close()


def test_parallel_reading_in_spawned_workers(caches):
    kwargs = dict(batch_size=3, shuffle=True, drop_last=False, seed=7)
    dali = DaliLoader(caches[0, 1], "train", parallel=True, py_workers=2, **kwargs)
    staged = StagedLoader(caches[0, 1], "train", **kwargs)
    kept = []
    for epoch in range(3):
        got = epoch_batches(dali, epoch)
        assert_same_batches(got, epoch_batches(staged, epoch))
        kept += [(batch, batch[0].clone()) for batch in got]
    assert all(torch.equal(batch[0], copy) for batch, copy in kept)
    assert len(multiprocessing.active_children()) == 2
    dali.close()
    assert multiprocessing.active_children() == []  # the workers end with the loader


@pytest.mark.parametrize("parallel", [False, True])
def test_a_read_error_is_one_data_error(caches, tmp_path, parallel):
    dst = tmp_path / "copy"
    (dst / "train").mkdir(parents=True)
    for name in os.listdir(caches[0, 1] / "train"):
        (dst / "train" / name).write_bytes((caches[0, 1] / "train" / name).read_bytes())
    loader = DaliLoader(dst, "train", batch_size=2, shuffle=False, drop_last=True, seed=0, parallel=parallel)
    os.truncate(dst / "train" / stage.INPUTS_FILE, 3 * loader.height * loader.width * loader.channels * 2)
    with pytest.raises(DataError, match="staged file ends early"):
        list(loader)
    loader.close()


def test_bad_arguments_and_caches_are_one_clear_error(caches, tmp_path):
    with pytest.raises(ConfigError, match="py_workers"):
        DaliLoader(caches[0, 1], "train", batch_size=2, shuffle=True, drop_last=True, seed=0, parallel=True,
                   py_workers=0)
    with pytest.raises(ConfigError, match="cpu or cuda"):
        DaliLoader(caches[0, 1], "train", batch_size=2, shuffle=True, drop_last=True, seed=0, device="meta")
    with pytest.raises(ConfigError, match="batch_size"):
        DaliLoader(caches[0, 1], "train", batch_size=0, shuffle=True, drop_last=True, seed=0)
    with pytest.raises(DataError, match="stage the data first"):
        build_dali_loaders(tmp_path / "nothing", local_batch_size=2, seed=0)


def test_gpu_pipeline_definition_serialises_on_the_cpu(caches):
    loader = StagedLoader(caches[0, 1], "train", batch_size=2, shuffle=True, drop_last=True, seed=0)
    source = StagedBatchSource(loader.directory, count=loader.count, height=loader.height, width=loader.width,
                               channels=loader.channels, batch_size=2, shuffle=True, drop_last=True, seed=0,
                               first_epoch=0)
    serialised = {device: build_pipeline(source, device=device, device_id=None, batch_size=2, threads=1,
                                         prefetch=2).serialize() for device in ("cpu", "gpu")}
    for graph in serialised.values():
        assert b"ExternalSource" in graph and b"Cast" in graph
    # The one difference: the labels' cast (and the inputs) live on the GPU.
    assert b"gpu" not in serialised["cpu"] and b"\x03gpu" in serialised["gpu"]
    loader.close()


def test_missing_dali_is_one_config_error_line():
    script = textwrap.dedent("""
        import sys
        sys.modules["nvidia.dali"] = None  # as if DALI were not installed
        from fastcam.errors import FastcamError
        try:
            import fastcam.data.dali
        except FastcamError as err:
            print(type(err).__name__, err)
            sys.exit(err.exit_code)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr == ""
    assert result.stdout.splitlines() == ["ConfigError the DALI loader needs NVIDIA DALI; install it with: "
                                          "pip install 'fastcam[dali]'"]


@needs_cuda
@pytest.mark.parametrize("parallel", [False, True])
def test_gpu_graph_gives_the_cpu_graphs_batches(caches, parallel):
    kwargs = dict(batch_size=3, shuffle=True, drop_last=False, seed=3, parallel=parallel)
    gpu = DaliLoader(caches[0, 1], "train", device="cuda", **kwargs)
    cpu = DaliLoader(caches[0, 1], "train", device="cpu", **kwargs)
    for epoch in range(2):
        for (inputs, labels, names), (ref_inputs, ref_labels, ref_names) in zip(epoch_batches(gpu, epoch),
                                                                                 epoch_batches(cpu, epoch)):
            assert inputs.device.type == labels.device.type == "cuda" and names == ref_names
            assert inputs.stride() == ref_inputs.stride() and labels.dtype == torch.int64
            assert torch.equal(inputs.cpu().view(torch.int16), ref_inputs.view(torch.int16))
            assert torch.equal(labels.cpu(), ref_labels)
    gpu.close()
    cpu.close()


@needs_cuda
def test_gpu_throughput_against_the_staged_loader(caches, tmp_path):
    """Measures, does not judge speed: both loaders deliver whole epochs; samples/s go to JSON."""
    figures = {}
    for name, cls in (("staged", StagedLoader), ("dali", DaliLoader)):
        loader = cls(caches[0, 1], "train", batch_size=2, shuffle=True, drop_last=True, seed=0, device="cuda")
        samples, start = 0, time.perf_counter()
        for epoch in range(5):
            samples += sum(batch[0].shape[0] for batch in epoch_batches(loader, epoch))
        torch.cuda.synchronize()
        figures[name] = {"samples_per_s": samples / (time.perf_counter() - start)}
        assert samples == 5 * len(loader) * 2
        loader.close()
    out = os.environ.get("FASTCAM_DALI_BENCH_JSON", str(tmp_path / "dali-bench.json"))
    with open(out, "w") as f:
        json.dump(figures, f, indent=1)
    print(json.dumps(figures))


def test_optimized_training_with_the_dali_loader_logs_it(tiny_synthetic, tmp_path):
    from conftest import small_network
    from fastcam.train import train
    from fastcam.train.cli import parse_train_config

    out = tmp_path / "out"
    result = train(parse_train_config([
        "--mode", "optimized", "--loader", "dali", "--device", "cpu", "--data_dir_prefix", str(tiny_synthetic),
        "--output_dir", str(out), "--max_epochs", "2", "--local_batch_size", "4", "--max_inter_threads", "0",
        "--seed", "5", "--run_tag", "dali"]), model_factory=small_network)
    assert [r.epoch for r in result.history] == [1, 2] and all(r.eval_samples == 5 for r in result.history)
    lines = (out / "logs" / "dali.log").read_text().splitlines()
    events = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in lines]
    assert next(e["value"] for e in events if e["key"] == "fastcam_loader") == "dali"
    assert [e["key"] for e in events].count("eval_accuracy") == 2
