"""DeepCAM's accuracy: per-sample mean-class IoU, empty unions count as 1.

Same definition as the reference's ``utils/metric.py::compute_score``: for each
sample and class, tp/fp/fn of the argmax prediction, ``iou = tp/(tp+fp+fn)``
(1 where the union is empty), averaged over classes, then over samples. The
reference loops over classes with four boolean masks each; we build each
sample's C x C confusion matrix with one ``index_add_`` instead.
"""

from __future__ import annotations

import torch


def confusion_matrices(prediction: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N x C x C counts, ``[n, p, g]`` = pixels of sample n predicted p with truth g."""
    n = labels.shape[0]
    pred = prediction.reshape(n, -1).long()
    truth = labels.reshape(n, -1).long()
    sample_offset = torch.arange(n, device=labels.device).unsqueeze(1) * (num_classes * num_classes)
    index = sample_offset + pred * num_classes + truth
    # index_add_ into a known size instead of bincount: on CUDA bincount reads
    # the maximum back to the host, a sync per validation sample.
    flat = index.reshape(-1)
    counts = torch.zeros(n * num_classes * num_classes, dtype=torch.long, device=labels.device)
    counts.index_add_(0, flat, torch.ones_like(flat))
    return counts.reshape(n, num_classes, num_classes)


def per_sample_iou(prediction: torch.Tensor, labels: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """Mean-class IoU of each sample (length-N float64 tensor)."""
    cm = confusion_matrices(prediction, labels, num_classes).double()
    tp = torch.diagonal(cm, dim1=1, dim2=2)
    predicted = cm.sum(dim=2)  # tp + fp per class
    actual = cm.sum(dim=1)  # tp + fn per class
    union = predicted + actual - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.ones_like(tp))
    return iou.mean(dim=1)


def iou_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch mean of the per-sample IoU of ``argmax(logits)`` (a 0-dim tensor)."""
    return per_sample_iou(logits.argmax(dim=1), labels, logits.shape[1]).mean()
