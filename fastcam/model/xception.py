"""The modified aligned-Xception encoder, output stride 16 (module ``xception_features``)."""

from __future__ import annotations

import torch
from torch import nn

from fastcam.model.layers import BatchNorm, Block, SepConv

#: Number of identical 728-channel middle-flow blocks (block4 ... block19).
MIDDLE_BLOCKS = 16
#: Channels of the low-level feature handed to the decoder (block1's output).
LOW_LEVEL_CHANNELS = 128
#: Channels of the encoder output handed to the ASPP bottleneck.
OUT_CHANNELS = 2048


class Xception(nn.Module):
    """Encoder returning ``(features, low_level_features)``.

    ``features`` has stride 16 and 2048 channels; ``low_level_features`` is
    the rectified block1 output (stride 4, 128 channels).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNorm(32)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=1, padding=1, bias=False)
        self.bn2 = BatchNorm(64)

        self.block1 = Block(64, LOW_LEVEL_CHANNELS, reps=2, stride=2, grow_first=True, end_relu=False)
        self.block2 = Block(LOW_LEVEL_CHANNELS, 256, reps=2, stride=2, grow_first=True, end_relu=True)
        self.block3 = Block(256, 728, reps=2, stride=2, grow_first=True, end_relu=True, is_last=True)
        for index in range(4, 4 + MIDDLE_BLOCKS):
            block = Block(728, 728, reps=3, stride=1, dilation=1, grow_first=True, end_relu=True)
            self.add_module(f"block{index}", block)
        self.block20 = Block(
            728, 1024, reps=2, stride=1, dilation=1, grow_first=False, end_relu=False, is_last=True
        )

        self.conv3 = SepConv(1024, 1536, dilation=2)
        self.bn3 = BatchNorm(1536)
        self.conv4 = SepConv(1536, 1536, dilation=2)
        self.bn4 = BatchNorm(1536)
        self.conv5 = SepConv(1536, OUT_CHANNELS, dilation=2)
        self.bn5 = BatchNorm(OUT_CHANNELS)

        # Names, not module references, so that wrappers that replace children
        # (e.g. activation checkpointing) are picked up.
        self._middle_block_names = tuple(f"block{i}" for i in range(4, 4 + MIDDLE_BLOCKS))
        kaiming_init_convs(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu_(self.bn1(self.conv1(x)))
        x = torch.relu_(self.bn2(self.conv2(x)))
        # The reference rectifies block1's output in place after taking the
        # low-level reference, so the decoder sees the rectified map.
        low_level = torch.relu_(self.block1(x))
        x = self.block2(low_level)
        x = self.block3(x)
        for name in self._middle_block_names:
            x = getattr(self, name)(x)
        x = self.block20(x)
        x = torch.relu_(self.bn3(self.conv3(x)))
        x = torch.relu_(self.bn4(self.conv4(x)))
        x = torch.relu_(self.bn5(self.conv5(x)))
        return x, low_level


def kaiming_init_convs(module: nn.Module) -> None:
    """Kaiming-normal (PyTorch defaults: fan-in, gain sqrt(2)) for every Conv2d in ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight)
