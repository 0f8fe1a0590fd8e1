"""The reference-faithful HDF5 reader: normalisation, sharding, bad files."""

from collections import Counter

import h5py
import numpy as np
import pytest
import torch

from fastcam.data import layout
from fastcam.data.reader import CamDataset, build_reference_loaders, shard_validation
from fastcam.errors import DataError


def test_sample_is_normalised_and_channel_first(random_dataset):
    files = layout.list_files(random_dataset, "train")
    minval, maxval = layout.load_stats(random_dataset)
    data, label, name = CamDataset(files, minval, maxval)[3]
    with h5py.File(files[3]) as f:
        raw = f[layout.DATA_KEY][...]
        raw_label = f[layout.LABEL_KEY][...]
    assert data.shape == (16, 32, 48) and data.dtype == torch.float32
    expected = (raw - minval) / (maxval - minval)
    np.testing.assert_allclose(data.numpy(), np.transpose(expected, (2, 0, 1)), rtol=1e-6, atol=1e-6)
    assert torch.equal(label, torch.from_numpy(raw_label.astype(np.int64)))
    assert name == str(files[3])


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("count", [7, 9, 10])
def test_validation_shards_cover_every_file_exactly_once(world_size, count):
    files = [f"f{i}" for i in range(count)]
    seen = Counter(f for r in range(world_size) for f in shard_validation(files, r, world_size))
    assert set(seen) == set(files) and set(seen.values()) == {1}


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_loaders_shard_training_disjoint_equal_and_validation_once(random_dataset, world_size):
    train_shards, val_names = [], Counter()
    for rank in range(world_size):
        loaders = build_reference_loaders(random_dataset, local_batch_size=2, workers=0, rank=rank,
                                          world_size=world_size)
        loaders.train_sampler.set_epoch(1)
        names = [n for _, _, batch in loaders.train for n in batch]
        train_shards.append(names)
        val_names.update(n for _, label, batch in loaders.validation for n in batch)
        assert loaders.validation.batch_size == 1
    sizes = {len(s) for s in train_shards}
    assert len(sizes) == 1  # equal-sized
    flat = [n for s in train_shards for n in s]
    assert len(flat) == len(set(flat))  # disjoint, no repeats within a shard
    assert sizes.pop() == (12 // world_size) // 2 * 2  # drop_last batches of 2
    assert sorted(val_names) == sorted(str(p) for p in layout.list_files(random_dataset, "validation"))
    assert set(val_names.values()) == {1}


def reference_order(files, epoch: int, rank: int, world_size: int) -> list[str]:
    """The reference's documented order, written from its semantics: the sorted
    list shuffled once by RandomState(12345), then DistributedSampler with seed
    0 (torch.randperm under manual_seed(0 + epoch)), drop_last, every
    world_size-th index from this rank."""
    names = sorted(str(f) for f in files)
    np.random.RandomState(12345).shuffle(names)
    g = torch.Generator()
    g.manual_seed(epoch)
    perm = torch.randperm(len(names), generator=g).tolist()
    total = len(names) // world_size * world_size
    return [names[i] for i in perm[:total][rank:total:world_size]]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_training_order_is_the_references_for_every_epoch_and_rank(random_dataset, world_size):
    files = layout.list_files(random_dataset, "train")
    for rank in range(world_size):
        loaders = build_reference_loaders(random_dataset, local_batch_size=2, workers=0, rank=rank,
                                          world_size=world_size)
        for epoch in (0, 1, 5):
            loaders.set_epoch(epoch)
            got = [n for _, _, batch in loaders.train for n in batch]
            expected = reference_order(files, epoch, rank, world_size)
            assert got == expected[:len(expected) // 2 * 2]  # drop_last batches of 2
    assert reference_order(files, 0, 0, 1) != reference_order(files, 1, 0, 1)


def test_loader_with_worker_processes_reads_the_same_samples(random_dataset):
    a = build_reference_loaders(random_dataset, local_batch_size=2, workers=2)
    b = build_reference_loaders(random_dataset, local_batch_size=2, workers=0)
    for (xa, ya, _), (xb, yb, _) in zip(a.train, b.train):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_corrupt_file_is_named(random_dataset):
    bad = layout.list_files(random_dataset, "train")[2]
    bad.write_bytes(b"not an hdf5 file" * 10)
    minval, maxval = layout.load_stats(random_dataset)
    with pytest.raises(DataError, match=str(bad.name)):
        CamDataset([bad], minval, maxval)[0]


def test_missing_dataset_and_stats_errors(random_dataset):
    (random_dataset / layout.STATS_FILE).unlink()
    with pytest.raises(DataError, match="stats"):
        build_reference_loaders(random_dataset, local_batch_size=2, workers=0)


def test_too_few_files_for_batch_is_refused(tmp_path):
    from conftest import write_random_dataset

    root = write_random_dataset(tmp_path / "d", n_train=3, n_validation=1)
    with pytest.raises(DataError, match="fewer than the local batch size"):
        build_reference_loaders(root, local_batch_size=4, workers=0)
