"""Turning loader batches into classifier inputs, batched on the device (SPEC §2-3).

Frames arrive as uint8 (B, H, W, 3) or (B, 3, H, W, 3) at the stored size; here they become float
RGB in [0, 1], channel-first, resized (or cropped to a selection box and resized) to the stage's
input size, and randomly flipped for training — one flip per sample, shared by its three frames, drawn
from the sample's per-epoch noise (`classifier_loop.EpochBatches.noise`), so it is the same whichever
process or batch the sample lands in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.classifiers import Branch
from models.selection import crop_and_resize


def to_chw_float(frames: Tensor) -> Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    return frames.movedim(-1, -3).float().div_(255.0)


def resize(images: Tensor, size: int) -> Tensor:
    """(N, 3, H, W) -> (N, 3, size, size), antialiased when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = images.shape[-1] > size or images.shape[-2] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def flip_samples(images: Tensor, flip: Tensor) -> Tensor:
    """Flip the samples of (B, ..., H, W) where `flip` (B,) is true, all frames of a sample alike."""
    flip = flip.to(images.device)
    shape = (-1,) + (1,) * (images.dim() - 1)
    return torch.where(flip.view(shape), images.flip(-1), images)


def visual_input(
    frames: Tensor, branch: Branch, size: int, boxes: Tensor | None = None, flip: Tensor | None = None
) -> Tensor:
    """Frames of a batch as the classifier input: (B, 3, s, s) for S/SA, (B, 3, 3, s, s) for ST.

    `boxes` (B, 4) [y0, y1, x0, x1] inclusive, in stored-frame pixels: crop each sample (all three of
    its frames for ST) to its box before resizing (the fine stage, SPEC §3.1 step 4). `flip` (B,) bool:
    the samples to flip (training).
    """
    images = to_chw_float(frames)
    temporal = images.dim() == 5
    if branch != Branch.ST and temporal:
        images = images[:, 1]
        temporal = False
    if branch == Branch.ST and not temporal:
        raise ValueError("the ST branch needs frames t-1, t, t+1 (a dataset with neighbours=True)")
    batch = images.shape[0]
    flat = images.flatten(0, 1) if temporal else images
    if boxes is not None:
        flat_boxes = boxes.repeat_interleave(3, dim=0) if temporal else boxes
        flat = crop_and_resize(flat, flat_boxes, (size, size))
    else:
        flat = resize(flat, size)
    out = flat.view(batch, 3, *flat.shape[1:]) if temporal else flat
    return flip_samples(out, flip) if flip is not None else out


def classifier_logits(
    model: nn.Module,
    batch: dict[str, Tensor],
    size: int,
    boxes: Tensor | None = None,
    event_prob: Tensor | None = None,
    train: bool = False,
) -> Tensor:
    """Logits of an S/ST/SA classifier for a batch (see `visual_input`); in training, the samples whose
    noise is below 0.5 are flipped."""
    frames = visual_input(batch["frames"], model.branch, size, boxes, batch["noise"] < 0.5 if train else None)
    if model.branch == Branch.SA:
        return model(frames, batch["audio"].unsqueeze(1), event_prob).logits
    return model(frames).logits
