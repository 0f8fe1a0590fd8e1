"""Loss and metric against direct, obviously-correct computations."""

import math

import numpy as np
import pytest
import torch

from fastcam.data.layout import CLASS_FREQUENCIES
from fastcam.loss import WeightedCrossEntropy, class_weights, weighted_cross_entropy
from fastcam.metric import iou_from_logits, per_sample_iou


def test_class_weights_follow_the_spec_formula():
    w = class_weights()
    for c, f in enumerate(CLASS_FREQUENCIES):
        assert w[c].item() == pytest.approx(f ** -0.125, rel=1e-6)


def direct_loss(logits, labels, weights):
    """Per pixel: w[y] * -log(softmax[y]); then the plain mean over pixels."""
    n, c, h, w = logits.shape
    total = 0.0
    for i in range(n):
        for y in range(h):
            for x in range(w):
                z = logits[i, :, y, x].double()
                logp = z - torch.logsumexp(z, 0)
                cls = int(labels[i, y, x])
                total += -float(weights[cls]) * float(logp[cls])
    return total / (n * h * w)


def test_loss_is_weighted_plain_pixel_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 7)
    labels = torch.randint(0, 3, (2, 5, 7))
    weights = class_weights()
    got = weighted_cross_entropy(logits, labels, weights).item()
    assert got == pytest.approx(direct_loss(logits, labels, weights), rel=1e-5)
    # And it differs from PyTorch's weight-normalised mean whenever labels mix classes.
    torch_mean = torch.nn.functional.cross_entropy(logits, labels, weight=weights).item()
    assert not math.isclose(got, torch_mean, rel_tol=1e-3)
    assert WeightedCrossEntropy()(logits, labels).item() == pytest.approx(got, rel=1e-6)


def direct_iou(pred, truth, num_classes=3):
    """Per sample, per class with explicit sets; empty union counts as 1."""
    scores = []
    for p, g in zip(pred, truth):
        p, g = p.reshape(-1).tolist(), g.reshape(-1).tolist()
        per_class = []
        for c in range(num_classes):
            tp = sum(1 for a, b in zip(p, g) if a == c and b == c)
            fp = sum(1 for a, b in zip(p, g) if a == c and b != c)
            fn = sum(1 for a, b in zip(p, g) if a != c and b == c)
            union = tp + fp + fn
            per_class.append(tp / union if union else 1.0)
        scores.append(sum(per_class) / num_classes)
    return scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_matches_direct_computation(seed):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, 3, (4, 6, 9), generator=gen)
    truth = torch.randint(0, 3, (4, 6, 9), generator=gen)
    got = per_sample_iou(pred, truth).tolist()
    assert got == pytest.approx(direct_iou(pred, truth), abs=1e-12)


def test_iou_empty_union_counts_as_one():
    truth = torch.zeros(2, 4, 4, dtype=torch.long)
    pred = torch.zeros(2, 4, 4, dtype=torch.long)
    # Sample 0: perfect and only class 0 anywhere -> classes 1, 2 have empty unions.
    # Sample 1: one pixel wrongly predicted as class 2.
    pred[1, 0, 0] = 2
    got = per_sample_iou(pred, truth).tolist()
    assert got[0] == pytest.approx(1.0)
    expected = (15 / 16 + 1.0 + 0.0) / 3  # class 0: 15/16, class 1: empty -> 1, class 2: 0/1
    assert got[1] == pytest.approx(expected)
    assert got == pytest.approx(direct_iou(pred, truth))


def test_iou_from_logits_uses_argmax_and_batch_mean():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 3, 8, 8, generator=gen)
    truth = torch.randint(0, 3, (3, 8, 8), generator=gen)
    expected = float(np.mean(direct_iou(logits.argmax(1), truth)))
    assert iou_from_logits(logits, truth).item() == pytest.approx(expected)
