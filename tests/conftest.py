"""Shared fixtures: tiny data sets written with real h5py, in the real layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fastcam.data import layout


def write_random_dataset(root: Path, n_train: int, n_validation: int, height: int = 32, width: int = 48,
                         seed: int = 0) -> Path:
    """Random fields and labels (not learnable: for I/O tests only)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("validation", n_validation)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            with h5py.File(root / split / f"data-{i:06d}.h5", "w") as f:
                f[layout.DATA_KEY] = rng.normal(size=(height, width, layout.NUM_CHANNELS)).astype(np.float32) * 10
                f[layout.LABEL_KEY] = rng.integers(0, 3, size=(height, width)).astype(np.int32)
    with h5py.File(root / layout.STATS_FILE, "w") as f:
        f[layout.MINVAL_KEY] = np.full(layout.NUM_CHANNELS, -50.0, dtype=np.float32)
        f[layout.MAXVAL_KEY] = np.full(layout.NUM_CHANNELS, 50.0, dtype=np.float32)
    return root


@pytest.fixture
def random_dataset(tmp_path):
    return write_random_dataset(tmp_path / "data", n_train=12, n_validation=7)


@pytest.fixture(autouse=True)
def _few_threads():
    # The CI machine has 2 cores; intra-op threading on tiny tensors only adds overhead.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A learnable synthetic data set from the real generator, 32 x 48 pixels."""
    from fastcam.data.synth import synthesize

    root = tmp_path_factory.mktemp("synthetic") / "data"
    synthesize(root, 16, 5, height=32, width=48, seed=11, workers=1, progress=False)
    return root


def small_network() -> torch.nn.Module:
    """A stand-in for the 56.5M-parameter reference network in tests of the loop
    mechanics (logging, resume, ranks, tuning): 16 input channels, 3-class logits
    at the input's size, a batchnorm so BN statistics and SyncBatchNorm paths run."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(layout.NUM_CHANNELS, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, layout.NUM_CLASSES, 1))
