"""The embedded default data set of ``fastcam train`` (the README's first command):
its documented shape and counts, a background-only score a learning run can
clearly beat, and a cache name that changes with every setting."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from fastcam.data import layout
from fastcam.data.check import check_dataset
from fastcam.data.synth import make_sample, sample_rng, synthesize
from fastcam.errors import ConfigError
from fastcam.train import default_data
from fastcam.train.default_data import DEFAULT, all_background_iou, default_dataset

# Predicting background everywhere must score below this on the default
# validation set, leaving a learning run a clear margin (the README's figures).
ALL_BACKGROUND_BOUND = 0.40


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTCAM_CACHE", str(cache))
        return default_dataset(progress=False)


def validation_labels(root) -> np.ndarray:
    arrays = []
    for path in layout.list_files(root, "validation"):
        with h5py.File(path, "r") as f:
            arrays.append(f[layout.LABEL_KEY][...])
    return np.stack(arrays)


def test_default_data_set_has_the_documented_shape_counts_and_settings(generated):
    assert generated.name == DEFAULT.cache_name and (generated / ".complete").is_file()
    checked = check_dataset(generated)
    assert [(s.name, s.files) for s in checked.splits] == [("train", DEFAULT.n_train),
                                                           ("validation", DEFAULT.n_validation)]
    assert checked.header.data_shape == (DEFAULT.height, DEFAULT.width, layout.NUM_CHANNELS)
    # Whole steps of the baseline's local batch 8 (drop-last sharding loses nothing).
    assert DEFAULT.n_train % 8 == 0
    # Made with the documented generator settings: a sample is the generator's
    # for (seed, split, index, feature scale).
    data, labels = make_sample(DEFAULT.height, DEFAULT.width, sample_rng(DEFAULT.seed, "validation", 3),
                               DEFAULT.feature_scale)
    with h5py.File(generated / "validation" / "data-000003.h5", "r") as f:
        np.testing.assert_array_equal(f[layout.DATA_KEY][...], data)
        np.testing.assert_array_equal(f[layout.LABEL_KEY][...], labels)


def test_all_background_score_is_low_and_matches_the_metric_by_hand(generated):
    labels = validation_labels(generated)
    score = all_background_iou(generated)
    # By hand: predicting 0 everywhere, class 0's IoU is its pixel share and a
    # class that is present scores 0, an absent one 1 (empty union).
    pixels = labels[0].size
    by_hand = np.mean([((lab == 0).sum() / pixels + sum(not (lab == c).any() for c in (1, 2))) / 3
                       for lab in labels])
    assert score == pytest.approx(by_hand, abs=1e-12)
    assert score < ALL_BACKGROUND_BOUND
    # Both feature classes are in the validation set, in several samples each.
    assert (labels == 1).any(axis=(1, 2)).sum() >= DEFAULT.n_validation // 2
    assert (labels == 2).any(axis=(1, 2)).sum() >= DEFAULT.n_validation // 2


def test_cache_name_changes_with_every_setting_and_an_old_cache_is_not_reused(tmp_path, monkeypatch):
    changed = {"height": 64, "width": 96, "n_train": 128, "n_validation": 32, "seed": 2, "feature_scale": 1.0}
    names = {dataclasses.replace(DEFAULT, **{field: value}).cache_name for field, value in changed.items()}
    assert len(names) == len(changed) and DEFAULT.cache_name not in names
    current = DEFAULT.cache_name
    monkeypatch.setattr(default_data, "GENERATOR_VERSION", default_data.GENERATOR_VERSION + 1)
    assert DEFAULT.cache_name != current  # a changed generator is a new cache
    monkeypatch.undo()
    # The previous default's cache (64 x 96, real-sized features) is left alone, not reused.
    monkeypatch.setenv("FASTCAM_CACHE", str(tmp_path))
    old = tmp_path / "synthetic-64x96-128-32-seed1"
    old.mkdir()
    (old / ".complete").write_text("ok\n")
    small = dataclasses.replace(DEFAULT, n_train=2, n_validation=1)
    root = default_dataset(progress=False, spec=small)
    assert root != old and root.name == small.cache_name
    assert check_dataset(root).header.data_shape == (DEFAULT.height, DEFAULT.width, layout.NUM_CHANNELS)
    assert default_dataset(progress=False, spec=small) == root  # cached: reused as is


def test_feature_scale_widens_features_and_rejects_bad_values(tmp_path):
    def feature_pixels(scale: float) -> int:
        return sum(int((make_sample(32, 48, sample_rng(5, "train", i), scale)[1] > 0).sum()) for i in range(8))

    assert feature_pixels(4.0) > 2 * feature_pixels(1.0)
    for bad in (0.0, -1.0, float("nan"), 9.0):
        with pytest.raises(ConfigError, match="feature scale"):
            synthesize(tmp_path / "bad", 1, 1, height=32, width=48, feature_scale=bad, progress=False)
