"""Coarse-to-fine selection and pseudo-GT construction (SPEC §3) as batched tensor operations.

Boxes are integer tensors [y0, y1, x0, x1] with inclusive pixel bounds (MATLAB's
`min_row:max_row, min_col:max_col`, 0-based here); an invalid box is all -1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from models.normalize import minmax_per_map

# Keeps the fusion defined when every branch weight is zero (SPEC §3.1 step 2).
FUSION_EPS = 1e-4


def probability_weighted_fusion(maps: Tensor, probs: Tensor, valid: Tensor) -> Tensor:
    """F = norm((sum_k p_k M_k + 1e-4) / (sum_k p_k + 1e-4)) over the valid branches (SPEC §3.1, §3.4).

    maps: (B, K, H, W) one map per branch (S, SA, ST ...); each is min-max normalised first.
    probs: (B, K) branch weights. Which probability (a branch's top-1 as in the MATLAB code, or that of
    the ground-truth class, SPEC §8.8) is the caller's choice.
    valid: (B, K) bool; False drops a branch for that sample, e.g. the SA map of a frame whose audio is
    not event-related. A sample with no valid branch fuses to all zeros.
    Returns (B, H, W) in [0, 1].
    """
    if maps.dim() != 4 or probs.shape != maps.shape[:2] or valid.shape != maps.shape[:2]:
        raise ValueError(f"expected maps (B, K, H, W) with probs and valid (B, K); got "
                         f"{tuple(maps.shape)}, {tuple(probs.shape)}, {tuple(valid.shape)}")
    weights = probs.to(maps.dtype) * valid.to(maps.dtype)
    numerator = torch.einsum("bk,bkhw->bhw", weights, minmax_per_map(maps)) + FUSION_EPS
    denominator = weights.sum(dim=1)[:, None, None] + FUSION_EPS
    return minmax_per_map(numerator / denominator)


def selection_boxes(fused: Tensor, factor: float = 2.0) -> tuple[Tensor, Tensor]:
    """The single box enclosing every pixel above factor * mean of its map (SPEC §3.1 step 3).

    fused: (B, H, W). Returns boxes (B, 4) int64 [y0, y1, x0, x1] inclusive and valid (B,) bool;
    a map with no pixel above the threshold (e.g. all zeros) gets valid False and box -1 (no crop and
    hence no pseudo-GT for that frame, SPEC §8.15).
    The mean is that of the whole map; MATLAB's `mean` of a matrix is per column, and which one the
    released script meant cannot be checked (the paper text was unavailable).
    """
    if fused.dim() != 3:
        raise ValueError(f"fused must be (B, H, W), got {tuple(fused.shape)}")
    height, width = fused.shape[-2:]
    above = fused > factor * fused.mean(dim=(1, 2), keepdim=True)
    rows = above.any(dim=2)  # (B, H)
    cols = above.any(dim=1)  # (B, W)
    valid = rows.any(dim=1)
    # argmax over a bool (as int) returns the first True; on the flipped axis, the last True.
    y0 = rows.int().argmax(dim=1)
    y1 = height - 1 - rows.flip(1).int().argmax(dim=1)
    x0 = cols.int().argmax(dim=1)
    x1 = width - 1 - cols.flip(1).int().argmax(dim=1)
    boxes = torch.stack([y0, y1, x0, x1], dim=1).long()
    boxes = torch.where(valid[:, None], boxes, torch.full_like(boxes, -1))
    return boxes, valid


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Map inclusive pixel boxes from a (H, W) grid to another (SPEC §8.9: coarse CAMs at 256, crop at 356).

    The covered area [y0, y1 + 1) is scaled and rounded outwards, so the new box covers at least the
    same part of the image. Invalid (-1) boxes stay -1.
    """
    scale = torch.tensor([to_size[0] / from_size[0]] * 2 + [to_size[1] / from_size[1]] * 2,
                         dtype=torch.float64, device=boxes.device)
    limits = torch.tensor([to_size[0], to_size[0], to_size[1], to_size[1]], device=boxes.device) - 1
    starts = torch.floor(boxes[:, [0, 2]].double() * scale[[0, 2]] + 1e-9)
    ends = torch.ceil((boxes[:, [1, 3]].double() + 1) * scale[[1, 3]] - 1e-9) - 1
    scaled = torch.stack([starts[:, 0], ends[:, 0], starts[:, 1], ends[:, 1]], dim=1).long()
    scaled = torch.minimum(scaled.clamp(min=0), limits)
    invalid = (boxes < 0).any(dim=1, keepdim=True)
    return torch.where(invalid, torch.full_like(scaled, -1), scaled)


def crop_and_resize(frames: Tensor, boxes: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Crop each frame to its box and resize it to out_size, in one `roi_align` call (SPEC §3.1 step 4).

    frames: (B, C, H, W) float. boxes: (B, 4) inclusive [y0, y1, x0, x1] in frame pixels.
    With aligned=True pixel i covers [i, i + 1), so the box spans [x0, x1 + 1); each output pixel is the
    bilinear average over an adaptive number of samples, which also anti-aliases downscaling.
    Invalid boxes give meaningless crops: filter them with the `valid` flags.
    """
    if frames.dim() != 4 or boxes.shape != (frames.shape[0], 4):
        raise ValueError(f"expected frames (B, C, H, W) and boxes (B, 4); got {tuple(frames.shape)}, "
                         f"{tuple(boxes.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be floating point, got {frames.dtype}")
    b = boxes.to(frames.dtype)
    batch_index = torch.arange(frames.shape[0], device=frames.device, dtype=frames.dtype)
    rois = torch.stack([batch_index, b[:, 2], b[:, 0], b[:, 3] + 1, b[:, 1] + 1], dim=1)
    return roi_align(frames, rois, output_size=tuple(out_size), spatial_scale=1.0, sampling_ratio=-1,
                     aligned=True)


def paste_back(fine_maps: Tensor, boxes: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """Resize each fine CAM to its box and place it in a zero canvas (SPEC §3.3), vectorised.

    fine_maps: (B, h, w); boxes: (B, 4) inclusive [y0, y1, x0, x1] in canvas pixels.
    Inside the box, canvas pixel (y, x) samples the fine map bilinearly at the point a
    `F.interpolate(..., size=box size, align_corners=False)` would (MATLAB's imresize is bicubic; bilinear
    keeps the maps in [0, 1]); outside it is 0. Pass the CAM at its own resolution: sampling a map much
    larger than the box would alias. Invalid (-1) boxes give an all-zero canvas.
    """
    if fine_maps.dim() != 3 or boxes.shape != (fine_maps.shape[0], 4):
        raise ValueError(f"expected fine_maps (B, h, w) and boxes (B, 4); got {tuple(fine_maps.shape)}, "
                         f"{tuple(boxes.shape)}")
    height, width = canvas_size
    device = fine_maps.device
    dtype = fine_maps.dtype if fine_maps.is_floating_point() else torch.float32
    b = boxes.to(dtype)
    y0, y1, x0, x1 = b[:, 0, None], b[:, 1, None], b[:, 2, None], b[:, 3, None]
    ys = torch.arange(height, device=device, dtype=dtype)[None]
    xs = torch.arange(width, device=device, dtype=dtype)[None]
    # Normalised grid coordinate of each canvas pixel centre within its box (-1..1 at the box edges).
    grid_y = 2 * (ys - y0 + 0.5) / (y1 - y0 + 1) - 1  # (B, H)
    grid_x = 2 * (xs - x0 + 0.5) / (x1 - x0 + 1) - 1  # (B, W)
    grid = torch.stack(torch.broadcast_tensors(grid_x[:, None, :], grid_y[:, :, None]), dim=-1)
    pasted = F.grid_sample(fine_maps.to(dtype).unsqueeze(1), grid, mode="bilinear", padding_mode="border",
                           align_corners=False).squeeze(1)
    return torch.where(box_masks(boxes, canvas_size), pasted, torch.zeros((), dtype=dtype, device=device))


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) bool: True inside each inclusive box [y0, y1, x0, x1]; all False for an invalid (-1) box."""
    ys = torch.arange(size[0], device=boxes.device)[None]
    xs = torch.arange(size[1], device=boxes.device)[None]
    rows = (ys >= boxes[:, 0, None]) & (ys <= boxes[:, 1, None])
    cols = (xs >= boxes[:, 2, None]) & (xs <= boxes[:, 3, None])
    return rows[:, :, None] & cols[:, None, :] & (boxes >= 0).all(dim=1)[:, None, None]


def _warp_with_flow(stack: Tensor, flow: Tensor, sign: float) -> Tensor:
    """stack (N, C, H, W) sampled at (x + sign*dx, y + sign*dy), flow (N, 2, H, W) given on the target grid.

    Zero padding outside the frame: warping a weight channel along with the values makes a sample that
    falls partly or wholly outside the frame count only as much as it is inside.
    """
    height, width = stack.shape[-2:]
    ys = torch.arange(height, device=stack.device, dtype=stack.dtype)[:, None]
    xs = torch.arange(width, device=stack.device, dtype=stack.dtype)[None, :]
    sample_x = xs + sign * flow[:, 0]
    sample_y = ys + sign * flow[:, 1]
    grid = torch.stack([(2 * sample_x + 1) / width - 1, (2 * sample_y + 1) / height - 1], dim=-1)
    return F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def temporal_smooth(maps: Tensor, valid: Tensor, radius: int = 2, flow: Tensor | None = None) -> Tensor:
    """Average each frame's map with its valid neighbours t-radius..t+radius (SPEC §3.5).

    maps: (T, H, W), one video's fused maps; valid: (T,) bool, False for frames without a map (their
    values are ignored). Each map is min-max normalised, the average is taken per pixel over the
    contributing neighbours, and the result is min-max normalised again. Frames that are not valid
    come out as zeros: they have no crop, hence no pseudo-GT (SPEC §8.15).

    DECISION: a non-recursive centred moving average. The MATLAB script overwrote the newest buffer
    slot with the smoothed map (a recursive filter, SPEC §3.5), which makes every map depend on the
    whole past of the video in a way nobody documented; the plain window is what the paper describes.

    flow: optional (T, 2, H, W) optical flow on the maps' grid; channel 0 = dx, 1 = dy, in pixels;
    flow[t] goes from frame t-1 to frame t: frame_{t-1}(y, x) ~ frame_t(y + dy, x + dx), with flow[0] = 0.
    With flow, each neighbour's map is first warped onto frame t, so a moving object stays sharp:
    - a later neighbour is pulled back exactly: M_{t+1->t}(p) = M_{t+1}(p + flow[t+1](p));
    - an earlier neighbour is pushed forward by inverting the flow with its value at the target
      pixel: M_{t-1->t}(p) = M_{t-1}(p - flow[t](p)) (exact for locally constant flow);
    - neighbours two or more frames away are warped by chaining these one-frame warps.
    Samples from outside the frame do not count towards a pixel's average.
    """
    if maps.dim() != 3 or valid.shape != maps.shape[:1]:
        raise ValueError(f"expected maps (T, H, W) and valid (T,); got {tuple(maps.shape)}, {tuple(valid.shape)}")
    frames = maps.shape[0]
    if flow is not None and flow.shape != (frames, 2, *maps.shape[1:]):
        raise ValueError(f"flow must be (T, 2, H, W) = {(frames, 2, *maps.shape[1:])} on the maps' grid, "
                         f"got {tuple(flow.shape)}; resize it and scale its vectors first")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    valid_f = valid.to(device=maps.device, dtype=dtype)[:, None, None]
    # Channel 0: the map times its validity; channel 1: the validity (how much the value counts).
    own = torch.stack([minmax_per_map(maps.to(dtype)) * valid_f, valid_f.expand(-1, *maps.shape[1:])], dim=1)
    accumulated = own.clone()
    between = None if flow is None else flow[1:].to(dtype)  # flow between frames t-1 and t, for t = 1..T-1
    empty = torch.zeros_like(own[:1])
    for later in (True, False):
        # neighbour[t] = (value, weight) of frame t +/- step, warped onto frame t; built one step at a time.
        neighbour = own
        for _ in range(min(radius, frames - 1)):
            if later:
                source = neighbour[1:]   # frame t+1's entry, to be brought to frame t = 0..T-2
                warped = source if between is None else _warp_with_flow(source, between, 1.0)
                neighbour = torch.cat([warped, empty])
            else:
                source = neighbour[:-1]  # frame t-1's entry, to be brought to frame t = 1..T-1
                warped = source if between is None else _warp_with_flow(source, between, -1.0)
                neighbour = torch.cat([empty, warped])
            accumulated = accumulated + neighbour
    total, weight = accumulated[:, 0], accumulated[:, 1]
    averaged = torch.where(weight > 1e-6, total / weight.clamp(min=1e-6), torch.zeros_like(total))
    return minmax_per_map(averaged) * valid_f


def threshold_pseudo_gt(maps: Tensor, factor: float = 3.0) -> Tensor:
    """Min-max normalise each map, then zero the pixels below factor * its mean (SPEC §3.5)."""
    normalised = minmax_per_map(maps if maps.is_floating_point() else maps.float())
    keep = normalised >= factor * normalised.mean(dim=(-2, -1), keepdim=True)
    return torch.where(keep, normalised, torch.zeros_like(normalised))
