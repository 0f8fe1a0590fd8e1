"""DeepCAM's training loss: class-weighted cross-entropy, plain pixel mean.

The reference (MLCommons deepcam ``utils/losses.py``) builds
``CrossEntropyLoss(weight=w, reduction="none")`` and takes ``torch.mean`` of
the per-pixel losses. That is *not* PyTorch's ``reduction="mean"`` with
weights, which divides by the sum of the weights of the targets instead of the
pixel count. We compute the same value without materialising the per-pixel
loss map twice: the weighted NLL summed, divided by the number of pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastcam.data.layout import CLASS_FREQUENCIES


def class_weights(frequencies=CLASS_FREQUENCIES, device=None) -> torch.Tensor:
    """``w_c = f_c ** -0.125`` for the benchmark's class frequencies."""
    return torch.tensor([f ** -0.125 for f in frequencies], dtype=torch.float32, device=device)


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over all pixels of ``w[y] * -log softmax(logits)[y]``.

    ``logits`` is N x C x H x W, ``labels`` N x H x W integer. Computed in
    float32 whatever the logits' dtype: under autocast the class weights would
    otherwise be rounded to fp16/bf16 (2.6146 -> 2.6094), and the optimized
    mode may change how the network runs, never what it computes.
    """
    summed = F.cross_entropy(logits.float(), labels.long(), weight=weights.float(), reduction="sum")
    return summed / labels.numel()


def per_sample_weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                                      weights: torch.Tensor) -> torch.Tensor:
    """The loss of each sample of a batch (N values): what batch-1 evaluation
    computes for each, so a batched evaluation can average them over samples."""
    per_pixel = F.cross_entropy(logits.float(), labels.long(), weight=weights.float(), reduction="none")
    return per_pixel.flatten(1).sum(dim=1) / labels[0].numel()


class WeightedCrossEntropy(torch.nn.Module):
    """Module form holding the weights as a buffer (moves with ``.to(device)``)."""

    def __init__(self, frequencies=CLASS_FREQUENCIES):
        super().__init__()
        self.register_buffer("weights", class_weights(frequencies), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return weighted_cross_entropy(logits, labels, self.weights)

    def per_sample(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return per_sample_weighted_cross_entropy(logits, labels, self.weights)
