"""Per-map min-max normalisation, the `MatrixNormalization` used throughout SPEC §3."""

from __future__ import annotations

import torch
from torch import Tensor


def minmax_per_map(maps: Tensor, eps: float = 0.0) -> Tensor:
    """Rescale each map (the last two dims) to [0, 1]; a constant map becomes all zeros.

    The MATLAB original leaves a constant map unchanged; zeros are used here instead so that a map
    with no contrast never passes a mean-relative threshold as "salient everywhere".
    """
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    constant = span <= eps
    return torch.where(constant, torch.zeros_like(maps), (maps - low) / torch.where(constant, 1.0, span))
