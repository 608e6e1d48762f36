"""Building blocks shared by the SCAM classifiers."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ReceptiveFieldBlock(nn.Module):
    """RFB(in, out) of the coarse classifiers (SPEC §2), without batch norm as in the released code.

    Four parallel branches see growing receptive fields: 1x1; and for k = 3, 5, 7:
    1x1 -> (1xk) -> (kx1) -> 3x3 dilated by k. Their concatenation (4*out) is fused by a 3x3 conv and
    added to a 1x1 projection of the input; the sum goes through one ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.branch0 = nn.Conv2d(in_channels, out_channels, 1)
        self.branch1 = self._dilated_branch(in_channels, out_channels, 3)
        self.branch2 = self._dilated_branch(in_channels, out_channels, 5)
        self.branch3 = self._dilated_branch(in_channels, out_channels, 7)
        self.conv_cat = nn.Conv2d(4 * out_channels, out_channels, 3, padding=1)
        self.conv_res = nn.Conv2d(in_channels, out_channels, 1)

    @staticmethod
    def _dilated_branch(in_channels: int, out_channels: int, k: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1),
            nn.Conv2d(out_channels, out_channels, (1, k), padding=(0, k // 2)),
            nn.Conv2d(out_channels, out_channels, (k, 1), padding=(k // 2, 0)),
            nn.Conv2d(out_channels, out_channels, 3, padding=k, dilation=k),
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)
        return torch.relu(self.conv_cat(branches) + self.conv_res(x))

