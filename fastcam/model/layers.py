"""Building blocks of the aligned-Xception encoder (see shared/spec/model.md).

Module and attribute names follow the reference implementation exactly, so
that its state-dict keys are native to fastcam's model (``rep.<i>``,
``conv1``/``pointwise``, ``skip``/``skipbn``, ``bn``).
"""

from __future__ import annotations

import torch
from torch import nn


class BatchNorm(nn.Module):
    """A ``BatchNorm2d`` held as the child ``bn``.

    The reference wraps every BatchNorm (its keys read ``....bn.weight``). The
    wrapper keeps that naming, and because the BatchNorm is a plain child,
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` can swap it later without
    changing any key.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def same_padding(kernel_size: int, dilation: int) -> int:
    """Symmetric padding that keeps the size at stride 1 (``k_eff`` is odd)."""
    effective_kernel = kernel_size + (kernel_size - 1) * (dilation - 1)
    return (effective_kernel - 1) // 2


class SepConv(nn.Module):
    """Depthwise 3x3 (``conv1``) then pointwise 1x1 (``pointwise``), no bias."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size=3,
            stride=stride,
            padding=same_padding(3, dilation),
            dilation=dilation,
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


def _triple(in_channels: int, out_channels: int, dilation: int) -> list[nn.Module]:
    return [SepConv(in_channels, out_channels, 1, dilation), BatchNorm(out_channels), nn.ReLU(inplace=True)]


class Block(nn.Module):
    """Xception residual unit: ``rep(x) + skip(x)``, then ReLU if ``end_relu``.

    ``rep`` is a list of [SepConv, BN, ReLU] triples whose last ReLU is dropped
    (so the indices count the ReLUs, as in the reference's keys), followed by
    a BN-less strided SepConv (``stride != 1``) or a BN-less SepConv
    (``is_last``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        reps: int,
        stride: int = 1,
        dilation: int = 1,
        grow_first: bool = True,
        end_relu: bool = False,
        is_last: bool = False,
    ) -> None:
        super().__init__()
        if out_channels != in_channels or stride != 1:
            self.skip: nn.Module | None = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.skipbn: nn.Module | None = BatchNorm(out_channels)
        else:
            self.skip = None
            self.skipbn = None

        layers: list[nn.Module] = []
        width = in_channels
        if grow_first:
            layers += _triple(in_channels, out_channels, dilation)
            width = out_channels
        for _ in range(reps - 1):
            layers += _triple(width, width, dilation)
        if not grow_first:
            layers += _triple(in_channels, out_channels, dilation)
        layers = layers[:-1]  # the reference drops the last ReLU
        if stride != 1:
            layers.append(SepConv(out_channels, out_channels, stride=2, dilation=1))
        elif is_last:
            layers.append(SepConv(out_channels, out_channels, stride=1, dilation=1))
        self.rep = nn.Sequential(*layers)
        self.end_relu = end_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rep(x)
        if self.skip is not None:
            assert self.skipbn is not None
            skip = self.skipbn(self.skip(x))
        else:
            skip = x
        out = out + skip
        if self.end_relu:
            out = torch.relu_(out)
        return out
