"""Batched, shared augmentation of STA training samples on the device (SPEC §4.5 with the §8.6 fix).

One random crop, horizontal flip and rotation is drawn **per sample** and applied identically to its
three frames, its pseudo-GT target and (when used) its optical flow. The released code re-drew the
joint transform for each frame, so frames and target were not aligned.

Each draw is one 2×3 affine matrix θ in normalised coordinates (`F.affine_grid`): output point p maps
to input point θ·[p, 1]. One grid per sample then resamples every input of that sample with
`F.grid_sample`, whatever its resolution: the pseudo-GT may be stored at another size than the
frames, and the flow at a lower grid; normalised coordinates make them line up. No per-sample Python
loop: a batch is one `affine_grid` and one `grid_sample` per input kind (the 3 frames together).

Draws come from a CPU `torch.Generator`, so they do not depend on the device and a run seeded per
step repeats exactly after a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.train.config import AugmentConfig  # noqa: F401 - the settings live with the stage's


def draw_affine(batch: int, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """(B, 2, 3) float32 on the CPU: per sample, rotate by a random angle, flip at random, scale to the
    crop fraction and shift to a random crop position that stays inside the frame."""
    uniform = torch.rand(batch, 4, generator=generator, dtype=torch.float64)
    angle = (2 * uniform[:, 0] - 1) * math.radians(config.max_rotation_degrees)
    flip = torch.where(uniform[:, 1] < config.flip_probability, -1.0, 1.0).to(torch.float64)
    scale = config.crop_fraction
    slack = 1.0 - scale  # the crop centre may move this far from the frame centre (normalised units)
    shift = (2 * uniform[:, 2:] - 1) * slack
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    # [[cos, -sin], [sin, cos]] @ diag(flip, 1), times the crop scale.
    theta[:, 0, 0] = scale * cos * flip
    theta[:, 0, 1] = -scale * sin
    theta[:, 1, 0] = scale * sin * flip
    theta[:, 1, 1] = scale * cos
    theta[:, :, 2] = shift
    return theta.float()


def identity_affine(batch: int) -> Tensor:
    return torch.eye(2, 3).unsqueeze(0).repeat(batch, 1, 1)


def sampling_grid(theta: Tensor, size: int, device: torch.device) -> Tensor:
    """(B, size, size, 2) normalised input coordinates of each output pixel; valid for inputs of any size."""
    return F.affine_grid(theta.to(device, torch.float32), [theta.shape[0], 1, size, size], align_corners=False)


def warp(images: Tensor, grid: Tensor) -> Tensor:
    """(B, C, h, w) resampled at `grid` (B, S, S, 2), bilinear; outside the input is zero."""
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def transform_flow(flow: Tensor, theta: Tensor, source_hw: tuple[int, int], grid: Tensor) -> Tensor:
    """Flow (B, 2, fh, fw) in pixels of a frame of `source_hw` → (B, 2, size, size) in output pixels.

    The field is resampled like the frames, and each vector is mapped by the inverse of θ's linear
    part: a displacement d_in between input points is A·d_out between the output points they came
    from (θ = [A | b]), so d_out = A⁻¹·d_in, in normalised units on both sides.
    """
    height, width = source_hw
    size = grid.shape[1]
    theta = theta.to(flow.device, torch.float32)
    sampled = warp(flow.float(), grid)
    to_normalised = flow.new_tensor([2.0 / width, 2.0 / height], dtype=torch.float32).view(1, 2, 1, 1)
    inverse = torch.linalg.inv(theta[:, :, :2])  # (B, 2, 2)
    normalised_out = torch.einsum("bij,bjyx->biyx", inverse, sampled * to_normalised)
    return normalised_out * (size / 2.0)


@dataclass
class AugmentedBatch:
    frames: Tensor          # (B, 3, 3, S, S) float RGB in [0, 1]
    pseudo_gt: Tensor       # (B, S, S) float in [0, 1]
    flow: Tensor | None     # (B, 2, S, S) in output pixels


def augment_batch(frames: Tensor, pseudo_gt: Tensor, theta: Tensor, size: int,
                  flow: Tensor | None = None) -> AugmentedBatch:  # fmt: skip
    """Apply each sample's θ to its 3 frames (uint8 (B, 3, H, W, 3)), its target (B, m, m) and flow.

    Frames and target use bilinear sampling (the paper rotated the GT with nearest neighbour; a soft
    target keeps its values in [0, 1] under bilinear interpolation and loses no mass to aliasing).
    """
    batch, _, height, width, _ = frames.shape
    # The 3 frames as 9 channels of one image: one grid_sample computes each sample's interpolation
    # weights once for all of them. Reordering as uint8 before the float conversion moves 4x fewer bytes.
    stacked = frames.permute(0, 1, 4, 2, 3).reshape(batch, 9, height, width).float()
    grid = sampling_grid(theta, size, frames.device)
    warped = warp(stacked, grid).mul_(1.0 / 255.0).view(batch, 3, 3, size, size)
    target = warp(pseudo_gt.float().unsqueeze(1), grid).squeeze(1)
    motion = transform_flow(flow, theta, (height, width), grid) if flow is not None else None
    return AugmentedBatch(warped, target, motion)


@dataclass
class AugmentedLevels:
    levels: dict[str, Tensor]  # as given, resampled
    pseudo_gt: Tensor          # (B, S, S)
    flow: Tensor | None        # (B, 2, S, S) in output pixels


def augment_levels(levels: dict[str, Tensor], pseudo_gt: Tensor, theta: Tensor, size: int,
                   flow: Tensor | None = None, frame_hw: tuple[int, int] | None = None,
                   ) -> AugmentedLevels:  # fmt: skip
    """Each sample's θ applied to a frozen backbone's levels of its frames (computed on the unaugmented
    frames resized to `size`: `stride32` (B, 3, C, h, w), the others (B, C, h, w)), its target and flow.

    Normalised coordinates make one θ mean the same crop on every grid; resampling the levels rather
    than the pixels is the approximation that lets the backbone run once per frame (its maps of a
    rotated crop are not exactly the rotated crop of its maps). The target and flow are exact.
    """
    device = pseudo_gt.device
    warped: dict[str, Tensor] = {}
    for name, level in levels.items():
        shape = level.shape
        flat = level.float().reshape(shape[0], -1, *shape[-2:])  # stride32's 3 frames as channels
        grid = F.affine_grid(theta.to(device, torch.float32), [shape[0], 1, *shape[-2:]], align_corners=False)
        warped[name] = warp(flat, grid).view(shape)
    grid = sampling_grid(theta, size, device)
    target = warp(pseudo_gt.float().unsqueeze(1), grid).squeeze(1)
    motion = None
    if flow is not None:
        assert frame_hw is not None, "the flow's frame size is needed to transform it"
        motion = transform_flow(flow, theta, frame_hw, grid)
    return AugmentedLevels(warped, target, motion)


def resize_frames(frames: Tensor, size: int) -> Tensor:
    """Inference / validation input: uint8 (B, 3, H, W, 3) → float (B, 3, 3, size, size), antialiased."""
    return resize_images(frames.flatten(0, 1), size).view(frames.shape[0], 3, 3, size, size)


def resize_images(images: Tensor, size: int) -> Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, size, size) in [0, 1], antialiased when shrinking."""
    images = images.movedim(-1, -3).float().div_(255.0)
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    shrink = height > size or width > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def resize_map(maps: Tensor, size: int) -> Tensor:
    """(B, h, w) → (B, size, size) bilinear (targets for validation)."""
    if tuple(maps.shape[-2:]) == (size, size):
        return maps.float()
    return F.interpolate(maps.float().unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False).squeeze(1)


def resize_flow(flow: Tensor, source_hw: tuple[int, int], size: int) -> Tensor:
    """Stored flow (B, 2, fh, fw) in pixels of a `source_hw` frame → (B, 2, size, size) in input pixels."""
    height, width = source_hw
    resized = F.interpolate(flow.float(), size=(size, size), mode="bilinear", align_corners=False)
    scale = resized.new_tensor([size / width, size / height]).view(1, 2, 1, 1)
    return resized * scale
