"""DeepLabv3+ around the Xception encoder: ASPP bottleneck, deconvolution decoder.

Names follow the reference implementation (shared/spec/model.md and
reference_state_dict.json), so its checkpoints load without key conversion.
"""

from __future__ import annotations

import torch
from torch import nn

from fastcam.errors import ConfigError, FastcamError
from fastcam.model.layers import BatchNorm
from fastcam.model.xception import LOW_LEVEL_CHANNELS, OUT_CHANNELS, Xception, kaiming_init_convs

#: Height and width of the input must be multiples of this (the encoder's stride).
OUTPUT_STRIDE = 16
ASPP_CHANNELS = 256
ASPP_RATES = (1, 6, 12, 18)
LOW_LEVEL_REDUCED_CHANNELS = 48


class InputShapeError(FastcamError, ValueError):
    """The network was given an input it cannot segment at full resolution."""


class ASPPBranch(nn.Module):
    """1x1 conv (rate 1) or 3x3 atrous conv (dilation = padding = rate); BN; ReLU."""

    def __init__(self, in_channels: int, out_channels: int, rate: int) -> None:
        super().__init__()
        kernel_size, padding = (1, 0) if rate == 1 else (3, rate)
        self.atrous_convolution = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=rate, bias=False
        )
        self.bn = BatchNorm(out_channels)
        kaiming_init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(self.bn(self.atrous_convolution(x)))


class ChannelAffine(nn.Module):
    """``y = weights * x + bias`` per channel (parameters shaped C x 1 x 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights + self.bias


class GlobalPoolBranch(nn.Module):
    """Image-level ASPP branch: pool to 1x1, 1x1 conv, affine, ReLU, broadcast.

    The reference broadcasts to a hard-coded 48x72; this broadcasts to the
    spatial size of whatever arrives, so smaller inputs work too.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.global_average_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            ChannelAffine(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.global_average_pool(x)
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class Bottleneck(nn.Module):
    """ASPP: four atrous branches and the global-pool branch, fused by a 1x1 conv."""

    def __init__(self, in_channels: int = OUT_CHANNELS, out_channels: int = ASPP_CHANNELS) -> None:
        super().__init__()
        self.aspp1, self.aspp2, self.aspp3, self.aspp4 = (
            ASPPBranch(in_channels, out_channels, rate) for rate in ASPP_RATES
        )
        self.global_avg_pool = GlobalPoolBranch(in_channels, out_channels)
        self.conv = nn.Conv2d(5 * out_channels, out_channels, 1, bias=False)
        self.bn = BatchNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), self.global_avg_pool(x)]
        return torch.relu_(self.bn(self.conv(torch.cat(branches, dim=1))))


def _deconv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """3x3 transposed conv that exactly doubles height and width."""
    return nn.ConvTranspose2d(
        in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False
    )


class DeconvUpsampler(nn.Module):
    """Decoder: x4 by deconvolution, fuse the low-level map, x4 back to input size."""

    def __init__(self, num_classes: int, channels: int = ASPP_CHANNELS) -> None:
        super().__init__()
        c = channels
        self.deconv1 = nn.Sequential(
            _deconv(c, c), BatchNorm(c), nn.ReLU(inplace=True),
            _deconv(c, c), BatchNorm(c), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.conv1 = nn.Sequential(
            nn.Conv2d(c + LOW_LEVEL_REDUCED_CHANNELS, c, 3, padding=1, bias=False), BatchNorm(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False), BatchNorm(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 1, bias=True),
        )  # fmt: skip
        self.deconv2 = nn.Sequential(_deconv(c, c), BatchNorm(c), nn.ReLU(inplace=True))
        self.last_deconv = nn.Sequential(_deconv(c, num_classes))

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        x = self.deconv1(x)
        # Channel order (decoder map first, then low-level) fixes the layout of
        # upsample.conv1.0.weight's 304 input channels, as in the reference.
        x = self.conv1(torch.cat((x, low_level), dim=1))
        x = self.deconv2(x)
        return self.last_deconv(x)


class DeepCAM(nn.Module):
    """DeepLabv3+ (aligned Xception, output stride 16): ``N x C x H x W`` -> logits ``N x K x H x W``."""

    def __init__(self, in_channels: int = 16, num_classes: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.xception_features = Xception(in_channels)
        self.bottleneck = Bottleneck()
        self.conv2 = nn.Conv2d(LOW_LEVEL_CHANNELS, LOW_LEVEL_REDUCED_CHANNELS, 1, bias=False)
        self.bn2 = BatchNorm(LOW_LEVEL_REDUCED_CHANNELS)
        self.upsample = DeconvUpsampler(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x.shape, self.in_channels)
        features, low_level = self.xception_features(x)
        features = self.bottleneck(features)
        low_level = torch.relu_(self.bn2(self.conv2(low_level)))
        return self.upsample(features, low_level)


def check_input_shape(shape: torch.Size, in_channels: int) -> None:
    """Raise :class:`InputShapeError` unless ``shape`` is ``N x in_channels x H x W``, H and W multiples of 16."""
    if len(shape) != 4 or shape[1] != in_channels:
        raise InputShapeError(
            f"model input must be N x {in_channels} x H x W, got shape {tuple(shape)}"
        )
    height, width = shape[-2], shape[-1]
    if height % OUTPUT_STRIDE or width % OUTPUT_STRIDE or height == 0 or width == 0:
        raise InputShapeError(
            f"model input height and width must be positive multiples of {OUTPUT_STRIDE} "
            f"(the network's output stride), got {height} x {width}"
        )


def build_model(in_channels: int = 16, num_classes: int = 3) -> nn.Module:
    """The DeepCAM network with the reference initialisation, on the CPU in float32."""
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model {name} must be a positive integer, got {value!r}")
    return DeepCAM(in_channels, num_classes)
