"""fastcam.rcp against the figures the MLPerf HPC 3.0.0 RCP check applies to DeepCAM."""

import pytest

from fastcam.errors import ConfigError
from fastcam.rcp import point_for, reference_points


def test_pruned_points_are_the_checks_limits():
    # 256 and 512 converge slower than the interpolation of their neighbours and are pruned.
    assert [p.global_batch_size for p in reference_points()] == [128, 1024, 2048]
    assert len(reference_points(pruned=False)) == 5
    means = {b: round(point_for(b).mean_epochs, 2) for b in (128, 256, 512, 1024, 2048)}
    assert means == {128: 6.94, 256: 7.81, 512: 9.54, 1024: 13.0, 2048: 22.62}


def test_interpolated_point_lies_between_neighbours_and_accepts_less_than_its_mean():
    p = point_for(768)
    assert p.interpolated and point_for(128).mean_epochs < p.mean_epochs < point_for(1024).mean_epochs
    assert 0 < p.min_epochs < p.mean_epochs


def test_outside_the_range_uses_the_nearest_point():
    assert point_for(16).mean_epochs == point_for(128).mean_epochs and point_for(16).interpolated


def test_unknown_ruleset_is_one_clear_error():
    with pytest.raises(ConfigError, match="9.9.9"):
        reference_points("9.9.9")
