"""Per-video SCAM inference (SPEC §3), block by block so memory does not grow with video length.

Coarse pass: CAMs of the ground-truth class from the coarse S, ST, SA classifiers → probability-weighted
fusion → the box of pixels above `box_factor` × mean (§3.1). Fine pass: crops of those boxes through the
fine classifiers → CAMs pasted back (§3.3) → fusion (§3.4). Smoothing pass: ±radius frames, warped along
the stored optical flow or plainly averaged, then the `gt_factor` × mean threshold (§3.5).

Decisions (SPEC §8): CAMs use the ground-truth class (§8.7); fusion weights are each branch's
probability of the ground-truth class (§8.8: a branch's top-1 probability would weight a map of the true
class by its confidence in another class); the SA branch enters only for frames whose audio is
event-related, as in `computecrop.m`; boxes found on the map grid are scaled to the stored frame before
cropping (§8.9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.classifiers import Branch, ClassifierOutput, SCAMClassifier
from models.device import autocast
from models.selection import (
    box_masks, paste_back, probability_weighted_fusion, scale_boxes, selection_boxes, temporal_smooth,
    threshold_pseudo_gt,
)  # fmt: skip
from pipeline.pseudolabel.batches import visual_input
from pipeline.pseudolabel.config import PseudolabelConfig, VideoInfo
from pipeline.pseudolabel.frozen import COARSE, FINE, ScamCache
from stores import pseudo as pstore
from stores.features import VideoReader

BRANCHES = (Branch.S, Branch.ST, Branch.SA)
SA = BRANCHES.index(Branch.SA)
# Frames per smoothing block; each block reads `radius` extra frames on both sides.
SMOOTH_BLOCK = 64


@dataclass
class SCAMModels:
    coarse: dict[Branch, SCAMClassifier] = field(default_factory=dict)
    fine: dict[Branch, SCAMClassifier] = field(default_factory=dict)


def blocks(n: int, size: int, frames: slice | None = None) -> list[slice]:
    """Blocks of `size` frames of [0, n), or of the segment `frames` (which starts on a block boundary)."""
    frames = frames or slice(0, n)
    return [slice(s, min(s + size, frames.stop)) for s in range(frames.start, frames.stop, size)]


def frame_triplets(reader: VideoReader, start: int, stop: int) -> np.ndarray:
    """uint8 (n, 3, H, W, 3): frames t−1, t, t+1 for t in [start, stop), clamped at the video's ends."""
    lo = max(start - 1, 0)
    block = reader.read("frames", lo, stop + 1)
    t = np.arange(start, stop)
    last = reader.n_frames - 1
    pick = [np.clip(t + step, 0, last) - lo for step in (-1, 0, 1)]
    return np.stack([block[index] for index in pick], axis=1)


@torch.no_grad()
def branch_cams(model: SCAMClassifier, frames: Tensor, audio: Tensor | None, event_prob: Tensor, size: int,
                class_index: int, boxes: Tensor | None = None,
                cam_size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """CAMs of the ground-truth class (B, h, w) — at the feature map's resolution, or `cam_size` — and
    each sample's probability of that class (B,)."""
    model.eval()
    inputs = visual_input(frames, model.branch, size, boxes)
    with autocast(inputs.device):
        if model.branch == Branch.SA:
            if audio is None:
                raise ValueError("the SA branch needs the frames' audio windows")
            output = model(inputs, audio.unsqueeze(1), event_prob)
        else:
            output = model(inputs)
    return _gt_cams(model, output, class_index, cam_size)


@torch.no_grad()
def branch_cams_from_maps(model: SCAMClassifier, triplets: Tensor, embeddings: Tensor, event_prob: Tensor,
                          class_index: int, cam_size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """`branch_cams` on a frozen backbone's cached maps: `triplets` (B, 3, C, h, w) of frames t-1, t, t+1."""
    model.eval()
    with autocast(triplets.device):
        if model.branch == Branch.ST:
            output = model.forward_maps(triplets)
        elif model.branch == Branch.SA:
            output = model.forward_maps(triplets[:, 1], event_prob=event_prob, audio_embedding=embeddings)
        else:
            output = model.forward_maps(triplets[:, 1])
    return _gt_cams(model, output, class_index, cam_size)


def _gt_cams(model: SCAMClassifier, output: ClassifierOutput, class_index: int,
             cam_size: tuple[int, int] | None) -> tuple[Tensor, Tensor]:  # fmt: skip
    labels = torch.full((output.logits.shape[0],), class_index, device=output.logits.device)
    cams = model.class_activation_maps(output, labels, cam_size).float()
    probs = output.logits.float().softmax(dim=1)[:, class_index]
    return cams, probs


def _read_audio(reader: VideoReader, info: VideoInfo, sl: slice, device: torch.device) -> Tensor | None:
    if not info.has_audio:
        return None
    return torch.from_numpy(reader.read("audio", sl.start, sl.stop).astype(np.float32)).to(device)


def coarse_pass(info: VideoInfo, reader: VideoReader, group: object, models: SCAMModels, event_prob: np.ndarray,
                config: PseudolabelConfig, device: torch.device, cache: ScamCache | None = None,
                frames: slice | None = None) -> pstore.FrameRows:  # fmt: skip
    """Write coarse_cam of one video, or of its segment `frames` (from the frames, or with `cache` from the
    frozen backbone's cached maps); return its rows of branch_prob[:, coarse], branch_valid, event_prob,
    box and has_box."""
    m = config.map_size
    sa_usable = info.has_audio and Branch.SA in models.coarse
    rows = pstore.FrameRows((frames or slice(0, info.n_frames)).start)
    for sl in blocks(info.n_frames, config.infer_batch, frames):
        n = sl.stop - sl.start
        event = torch.from_numpy(event_prob[sl]).to(device)
        cams_of = _block_cams(info, reader, sl, config.coarse_size, event, cache, COARSE, device)
        valid = torch.ones(n, len(BRANCHES), dtype=torch.bool, device=device)
        valid[:, SA] = (event >= config.event_threshold) & sa_usable
        cams = torch.zeros(n, len(BRANCHES), m, m, device=device)
        probs = torch.zeros(n, len(BRANCHES), device=device)
        for b, branch in enumerate(BRANCHES):
            model = models.coarse.get(branch)
            if model is None or (branch == Branch.SA and not sa_usable):
                continue
            cams[:, b], probs[:, b] = cams_of(model, None, (m, m))
        fused = probability_weighted_fusion(cams, probs, valid)
        box, has_box = selection_boxes(fused, config.box_factor)
        pstore.write_block(group, sl.start, {"coarse_cam": cams.cpu().numpy()})
        rows.add({"branch_valid": valid.cpu().numpy(), "event_prob": event_prob[sl], "box": box.cpu().numpy(),
                  "has_box": has_box.cpu().numpy()}, 0, probs.cpu().numpy())  # fmt: skip
    return rows


def fine_pass(info: VideoInfo, reader: VideoReader, group: object, models: SCAMModels,
              config: PseudolabelConfig, device: torch.device, cache: ScamCache | None = None,
              frames: slice | None = None) -> pstore.FrameRows:  # fmt: skip
    """Write fine_cam and the fused map of one video, or of its segment `frames` (from the coarse pass's
    boxes); return its rows of branch_prob[:, fine].

    Without fine classifiers (`fine_stage` off) the fused map is the fusion of the coarse CAMs inside the
    box: a broad coarse map left whole would rarely pass the 3 × mean threshold of SPEC §3.5.
    """
    m = config.map_size
    rows = pstore.FrameRows((frames or slice(0, info.n_frames)).start)
    for sl in blocks(info.n_frames, config.infer_batch, frames):
        stored = pstore.read_block(group, ("box", "has_box", "branch_valid", "event_prob", "branch_prob"), sl.start, sl.stop)
        box = torch.from_numpy(stored["box"]).long().to(device)
        has_box = torch.from_numpy(stored["has_box"]).to(device)
        valid = torch.from_numpy(stored["branch_valid"]).to(device) & has_box[:, None]
        if not models.fine:
            # Coarse only: the fused coarse map inside the selection box, as a fine map would be pasted.
            coarse = torch.from_numpy(pstore.read_block(group, ("coarse_cam",), sl.start, sl.stop)["coarse_cam"])
            probs = torch.from_numpy(stored["branch_prob"][:, 0]).to(device).nan_to_num(0.0)
            fused = probability_weighted_fusion(coarse.float().to(device), probs, valid) * box_masks(box, (m, m))
            # No fine map: written as zeros, as every chunk is (a missing one would read as damage).
            no_fine = np.zeros((sl.stop - sl.start, len(BRANCHES), m, m), dtype=np.float16)
            pstore.write_block(group, sl.start, {"fused": fused.cpu().numpy(), "fine_cam": no_fine})
            continue
        n = sl.stop - sl.start
        event = torch.from_numpy(stored["event_prob"]).to(device)
        crop_boxes = scale_boxes(box, (m, m), info.frame_hw)
        cams_of = _block_cams(info, reader, sl, config.fine_size, event, cache, FINE, device)
        cams = torch.zeros(n, len(BRANCHES), m, m, device=device)
        probs = torch.zeros(n, len(BRANCHES), device=device)
        for b, branch in enumerate(BRANCHES):
            model = models.fine.get(branch)
            if model is None or not bool(valid[:, b].any()):
                continue
            cam, probs[:, b] = cams_of(model, crop_boxes, None)
            # Pasted from the CAM's own resolution: the bilinear sampling then upsamples it smoothly.
            cams[:, b] = paste_back(cam, box, (m, m)) * valid[:, b, None, None]
        fused = probability_weighted_fusion(cams, probs, valid) * has_box[:, None, None]
        pstore.write_block(group, sl.start, {"fine_cam": cams.cpu().numpy(), "fused": fused.cpu().numpy()})
        rows.add({}, 1, probs.cpu().numpy())
    return rows


CamsOf = Callable[[SCAMClassifier, Tensor | None, tuple[int, int] | None], tuple[Tensor, Tensor]]


def _block_cams(info: VideoInfo, reader: VideoReader, sl: slice, size: int, event: Tensor, cache: ScamCache | None,
                array: str, device: torch.device) -> CamsOf:  # fmt: skip
    """CAMs of the ground-truth class for frames [sl) by a classifier: read once per block, from the frames
    (cropped to `boxes` in stored-frame pixels, for the fine stage) or from the cached maps `array`."""
    if cache is not None:
        triplets = cache.block(info.video_id, array, sl, triplets=True)
        embeddings = cache.embeddings(info.video_id, sl)
        return lambda model, boxes, cam_size: branch_cams_from_maps(model, triplets, embeddings, event,
                                                                    info.class_index, cam_size)  # fmt: skip
    frames = torch.from_numpy(frame_triplets(reader, sl.start, sl.stop)).to(device)
    audio = _read_audio(reader, info, sl, device)
    return lambda model, boxes, cam_size: branch_cams(model, frames, audio, event, size, info.class_index, boxes,
                                                      cam_size)  # fmt: skip


def flow_on_map_grid(flow: np.ndarray, frame_hw: tuple[int, int], map_size: int) -> Tensor:
    """Stored flow (T, 2, fh, fw) in stored-frame pixels → (T, 2, M, M) in map pixels."""
    tensor = torch.from_numpy(flow.astype(np.float32))
    resized = F.interpolate(tensor, size=(map_size, map_size), mode="bilinear", align_corners=False)
    scale = torch.tensor([map_size / frame_hw[1], map_size / frame_hw[0]]).view(1, 2, 1, 1)
    return resized * scale


def smoothing_pass(info: VideoInfo, reader: VideoReader, group: object, config: PseudolabelConfig,
                   device: torch.device, frames: slice | None = None) -> pstore.FrameRows:  # fmt: skip
    """Smooth the fused maps over ±radius frames, threshold them and write pseudo_gt (of the whole video,
    or of its segment `frames`, once the whole video's fused maps are written); return its rows of
    has_pseudo_gt.

    Each block reads `radius` frames of context on both sides, so the result equals smoothing the whole
    video at once.
    """
    radius = config.smoothing_radius if config.smoothing != "none" else 0
    rows = pstore.FrameRows((frames or slice(0, info.n_frames)).start)
    for sl in blocks(info.n_frames, SMOOTH_BLOCK, frames):
        lo, hi = max(sl.start - radius, 0), min(sl.stop + radius, info.n_frames)
        stored = pstore.read_block(group, ("fused", "has_box"), lo, hi)
        fused = torch.from_numpy(stored["fused"]).float().to(device)
        has_box = torch.from_numpy(stored["has_box"]).to(device)
        if config.smoothing == "none":
            smoothed = fused
        else:
            flow = None
            if config.smoothing == "flow":
                flow = flow_on_map_grid(reader.read("flow", lo, hi), info.frame_hw, config.map_size).to(device)
            smoothed = temporal_smooth(fused, has_box, radius, flow)
        keep = slice(sl.start - lo, sl.stop - lo)
        pseudo_gt = threshold_pseudo_gt(smoothed[keep], config.gt_factor) * has_box[keep, None, None]
        # A map with no contrast thresholds to all zeros: that is "no pseudo-GT", not a flat fixation map.
        has_gt = has_box[keep] & (pseudo_gt.amax(dim=(1, 2)) > 0)
        pstore.write_block(group, sl.start, {"pseudo_gt": pseudo_gt.cpu().numpy()})
        rows.add({"has_pseudo_gt": has_gt.cpu().numpy()})
    return rows
