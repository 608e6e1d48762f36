"""Class activation maps for a batch, as one tensor contraction (SPEC §2-3, decision §8.7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.normalize import minmax_per_map


def class_activation_maps(
    cam_features: Tensor,
    fc_weight: Tensor,
    class_index: Tensor,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """CAM_b = sum_c fc_weight[class_index[b], c] * cam_features[b, c], min-max normalised per map.

    cam_features: (B, C, h, w), the map that is global-average-pooled into the final Linear.
    fc_weight: (K, C), that Linear's weight. class_index: (B,) integer class per sample.
    size: optional (H, W) to upsample the normalised maps to (bilinear).
    Returns (B, h, w) or (B, H, W) float in [0, 1].

    §8.7 decisions: the class is the ground-truth tag (the original mixed predicted and GT classes and,
    for ST, read a Conv3d weight instead of the classifier's); no ReLU, no bias (a constant shift that the
    min-max normalisation removes anyway).
    """
    if cam_features.dim() != 4:
        raise ValueError(f"cam_features must be (B, C, h, w), got {tuple(cam_features.shape)}")
    batch, channels = cam_features.shape[:2]
    if fc_weight.dim() != 2 or fc_weight.shape[1] != channels:
        raise ValueError(f"fc_weight must be (K, {channels}), got {tuple(fc_weight.shape)}")
    if class_index.shape != (batch,):
        raise ValueError(f"class_index must be ({batch},), got {tuple(class_index.shape)}")
    class_weights = fc_weight[class_index.long()].to(cam_features.dtype)  # (B, C)
    cams = minmax_per_map(torch.einsum("bchw,bc->bhw", cam_features, class_weights).float())
    if size is not None and tuple(size) != tuple(cams.shape[-2:]):
        # Bilinear interpolation is a convex combination, so the maps stay in [0, 1].
        cams = F.interpolate(cams.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    return cams
