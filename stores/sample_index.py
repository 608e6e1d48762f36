"""Which videos STA training can draw samples from: complete in both features.zarr and pseudo.zarr, with
their splits and event probabilities. Without torch, so that `avfix status` can compute the training
data's key; the samples themselves are read by `stores.samples`."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stores import features as fstore
from stores import pseudo as pstore
from stores import zarr_io
from stores.chunks import read_rows


class SampleError(zarr_io.StoreError):
    """The stores hold nothing to train on, or cannot be combined (clear message for the user)."""


@dataclass(frozen=True)
class VideoSamples:
    """What the sample index needs to know about one video."""

    video_id: str
    n_frames: int
    frame_hw: tuple[int, int]
    has_audio: bool
    split: str  # "train" or "val"
    gt_frames: tuple[int, ...]  # frames that have a pseudo-GT


def split_of(video: pstore.PseudoVideo, store: pstore.PseudoStoreAttrs, video_id: str) -> str | None:
    """The video's split as the pseudolabel stage recorded it: the video's `split`, else the store's
    `train_videos` / `val_videos` lists; None when neither says."""
    if video.split in ("train", "val"):
        return video.split
    if video_id in store.val_videos:
        return "val"
    if video_id in store.train_videos:
        return "train"
    return None


def index_videos(features_path: str | Path, pseudo_path: str | Path, val_fraction: float = 0.2,
                 seed: int = 0) -> tuple[list[VideoSamples], dict[str, np.ndarray], list[str]]:  # fmt: skip
    """Videos complete in both stores, their splits and event probabilities, and notes for the user.

    Returns (videos, event_prob per video, notes). Videos that the pseudolabel stage gave no split are
    assigned by a seeded shuffle (about `val_fraction` of them, at least one when there are two).
    """
    features = fstore.SCHEMA.open_for_reading(features_path)
    pseudo = pstore.SCHEMA.open_for_reading(pseudo_path)
    pseudo_attrs = pstore.SCHEMA.read_store(pseudo)
    notes: list[str] = []
    feature_ids = set(fstore.SCHEMA.complete_videos(features))
    videos: list[VideoSamples] = []
    events: dict[str, np.ndarray] = {}
    unsplit: list[str] = []
    for video_id in pstore.SCHEMA.complete_videos(pseudo):
        if video_id not in feature_ids:
            notes.append(f"{video_id}: has pseudo-labels but no complete features in {features_path}; skipped")
            continue
        group = zarr_io.video_group(pseudo, video_id)
        feature_attrs = fstore.SCHEMA.read_video(features, video_id)
        pseudo_video = pstore.SCHEMA.read_video(pseudo, video_id)
        assert feature_attrs is not None and pseudo_video is not None
        n_frames = feature_attrs.n_frames
        has_gt = read_rows(group[pstore.HAS_PSEUDO_GT.name]).astype(bool)
        if has_gt.shape[0] != n_frames:
            notes.append(f"{video_id}: pseudo-labels cover {has_gt.shape[0]} frames but the features have "
                         f"{n_frames} (features re-extracted since?); skipped")  # fmt: skip
            continue
        split = split_of(pseudo_video, pseudo_attrs, video_id)
        if split is None:
            unsplit.append(video_id)
        events[video_id] = np.nan_to_num(read_rows(group[pstore.EVENT_PROB.name]).astype(np.float32))
        videos.append(
            VideoSamples(
                video_id=video_id, n_frames=n_frames,
                frame_hw=(feature_attrs.height, feature_attrs.width), has_audio=feature_attrs.has_audio,
                split=split or "",
                gt_frames=tuple(int(t) for t in np.flatnonzero(has_gt)),
            )  # fmt: skip
        )
    if unsplit:
        rng = random.Random(seed)
        order = sorted(unsplit)
        rng.shuffle(order)
        n_val = 0 if len(order) < 2 or val_fraction <= 0 else max(1, round(len(order) * val_fraction))
        val = set(order[:n_val])
        videos = [v if v.split else replace(v, split="val" if v.video_id in val else "train") for v in videos]
        notes.append(f"{len(unsplit)} video(s) had no split in {pseudo_path}; {n_val} of them held out for validation")
    return videos, events, notes
