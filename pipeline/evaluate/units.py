"""The evaluate stage's units of work: each video, and each batch of same-size images. A unit's ground
truth is built here, its scores come from the resume cache or `pipeline/evaluate_scoring.py`, and a few
of its items become the report's example pictures."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from pipeline.evaluate import fixations as fx
from pipeline.evaluate.cache import cache_key, points_digest, truth_stamp
from pipeline.evaluate.scoring import (
    EvaluateContext, ProcessedMaps, TruthBatch, density_from_points, fixation_count_tensors, fixation_tensors,
    method_maps, score_batch,
)  # fmt: skip

# --- videos -----------------------------------------------------------------------------------------------


def _video_size(video: fx.VideoFixations, dataset: fx.VideoDataset,
                context: EvaluateContext) -> tuple[int, int] | None:
    if video.size is not None:
        return video.size
    for source in context.sources:
        size = source.video_size(dataset.name, video.video)
        if size is not None:
            return size
    return context.config.frame_size


def evaluate_videos(dataset: fx.VideoDataset, context: EvaluateContext, shuffle: str) -> dict[str, Any]:
    config = context.config
    units: list[dict[str, Any]] = []
    for video in dataset.videos.values():
        stamps = [source.stamp(dataset.name, video.video) for source in context.sources]
        key = cache_key(context.settings_key, dataset.name, dataset.source, video.video, len(video.frames), stamps,
                        truth_stamp(video))
        context.used_keys.add(key)
        cached = context.cache.get(key)
        if cached is not None:
            units.append(cached)
            context.summary.units_cached += 1
            context.progress.advance_video()
            continue
        unit = _score_video(dataset, video, context, shuffle, key)
        context.cache.put(unit)
        units.append(unit)
        context.summary.units_done += 1
        context.progress.advance_video()
    result = {"dataset": dataset, "kind": "videos", "units": units, "n_items": sum(len(u["records"]) for u in units)}
    result["example_data"] = _video_examples(dataset, context, units) if config.examples else []
    return result


def _video_truth_points(video: fx.VideoFixations, size: tuple[int, int],
                        problems: fx.Problems) -> tuple[dict[int, np.ndarray], int]:
    """Every frame's fixations inside the frame, and how many fell outside."""
    points = video.load_points(problems)
    kept: dict[int, np.ndarray] = {}
    dropped = 0
    for frame, xy in points.items():
        kept[frame], n = fx.keep_inside(xy, size)
        dropped += n
    return kept, dropped


def _score_video(dataset: fx.VideoDataset, video: fx.VideoFixations, context: EvaluateContext, shuffle: str,
                 key: str) -> dict[str, Any]:
    config = context.config
    unit: dict[str, Any] = {"key": key, "unit": video.video, "records": [], "resized": {}, "dropped_outside": 0,
                            "truth_missing": 0, "size": None}
    size = _video_size(video, dataset, context)
    if size is None:
        context.problems.fail(video.video, "no frame size: no map covers this video (pass --frame-size WxH)")
        unit["truth_missing"] = len(video.frames)
        return unit
    unit["size"] = list(size)
    points, unit["dropped_outside"] = _video_truth_points(video, size, context.problems)
    frames = [f for f in video.frames if f in points]
    unit["truth_missing"] = len(video.frames) - len(frames)
    context.progress.add_frames(len(frames))
    # STAViS's shuffle map: every fixated pixel of the video (createShuffmap1.m), the frame's own removed.
    all_points = [np.concatenate([points[f] for f in frames])] if frames else [np.zeros((0, 2))]
    union = fixation_tensors(all_points, size, context.device)[0]
    per_batch = max(1, config.batch_pixels // (size[0] * size[1]))
    for start in range(0, len(frames), per_batch):
        chunk = frames[start : start + per_batch]
        truth, unreadable = _video_truth_batch(video, chunk, points, union, size, context, context.problems)
        unit["truth_missing"] += unreadable
        if truth is not None:
            frames_of = [item.frame for item in truth.items]
            score_batch(context, truth, lambda s, f=frames_of: s.frames(dataset.name, video.video, f),
                        (config.seed, dataset.name), unit)
        context.progress.advance_frames(len(chunk))
    return unit


def _video_truth_batch(video: fx.VideoFixations, frames: list[int], points: dict[int, np.ndarray], union: Tensor,
                       size: tuple[int, int], context: EvaluateContext,
                       problems: fx.Problems) -> tuple[TruthBatch | None, int]:
    """Ground truth of some frames of a video, and how many of them had an unreadable density map."""
    items, densities, kept_points = [], [], []
    for frame in frames:
        if video.annotation_dir is not None:
            try:
                density = video.load_density(frame)
            except OSError as error:
                problems.fail(video.annotation_dir, str(error))
                continue
            if density is not None and density.shape != size:
                problems.fail(video.annotation_dir / "maps", f"eyeMap of frame {frame + 1} is "
                                      f"{density.shape[1]}x{density.shape[0]}, expected {size[1]}x{size[0]}")
                continue
            densities.append(density)
        items.append(fx.frame_item(video.video, frame))
        kept_points.append(points[frame])
    unreadable = len(frames) - len(items)
    if not items:
        return None, unreadable
    device = context.device
    fixations = fixation_tensors(kept_points, size, device)
    if densities:
        density = torch.from_numpy(np.stack(densities)).to(device)
    else:
        density = density_from_points(kept_points, size, context.config.density.pixels(size), device)
    return TruthBatch(items, size, kept_points, fixations, density, union.unsqueeze(0) & ~fixations), unreadable


def _video_examples(dataset: fx.VideoDataset, context: EvaluateContext,
                    units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records = [r for u in units for r in u["records"]]
    chosen = _pick_examples(records, context.rows, context.config.examples)
    examples = []
    for record in chosen:
        video = dataset.videos[record["video"]]
        size = _video_size(video, dataset, context)
        if size is None:
            continue
        scratch = fx.Problems()  # problems of these inputs were reported when they were scored
        points, _ = _video_truth_points(video, size, scratch)
        frame = record["frame"]
        if frame not in points:
            continue
        union = fixation_tensors([np.concatenate(list(points.values()))], size, context.device)[0]
        truth, _ = _video_truth_batch(video, [frame], points, union, size, context, scratch)
        if truth is None:
            continue
        processed, _ = method_maps(context, truth, lambda s: s.frames(dataset.name, video.video, [frame]))
        examples.append(_example(record, truth, processed, video.frame_image(frame)))
    return examples


# --- images -----------------------------------------------------------------------------------------------


def image_units(dataset: fx.ImageDataset, batch_pixels: int) -> list[list[fx.ImageFixations]]:
    """Same-size images together, in batches of at most `batch_pixels` pixels (at least one image)."""
    by_size: dict[tuple[int, int], list[fx.ImageFixations]] = defaultdict(list)
    for image in dataset.images:
        by_size[image.size].append(image)
    units = []
    for size, images in sorted(by_size.items()):
        per_batch = max(1, batch_pixels // (size[0] * size[1]))
        units.extend(images[i : i + per_batch] for i in range(0, len(images), per_batch))
    return units


@dataclass
class ImageNegatives:
    """Where every image's s-AUC negatives come from: the other images' fixations (variant
    `other-images`) or those of 10 of them chosen by the seed (`random-10`), rescaled to the image."""

    dataset: fx.ImageDataset
    shuffle: str
    seed: int

    def __post_init__(self) -> None:
        self.by_name = {image.image: image for image in self.dataset.images}
        self.names = sorted(self.by_name)
        self.digests = {name: points_digest(image.points) for name, image in self.by_name.items()}
        # other-images uses every image: one digest of all of them serves every key
        self.everything = hashlib.sha256(json.dumps(
            [(name, self.by_name[name].size, self.digests[name]) for name in self.names]).encode()).hexdigest()[:16]

    def sources(self, image: fx.ImageFixations) -> list[str]:
        others = [name for name in self.names if name != image.image]
        if self.shuffle == "random-10" and others:
            digest = hashlib.sha256(f"{self.seed}/{image.image}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            others = sorted(rng.choice(others, size=min(10, len(others)), replace=False).tolist())
        return others

    def stamp(self, image: fx.ImageFixations) -> Any:
        """Changes exactly when this image's negatives do (an image's own fixations are stamped apart)."""
        if self.shuffle == "other-images":
            return self.everything
        return [(name, self.by_name[name].size, self.digests[name]) for name in self.sources(image)]

    def points(self, image: fx.ImageFixations) -> np.ndarray:
        """The negatives as (K, 2) points inside the image, one per fixation."""
        height, width = image.size
        scaled = []
        for name in self.sources(image):
            other = self.by_name[name]
            other_h, other_w = other.size
            scaled.append(other.points * np.array([width / other_w, height / other_h]))
        if not scaled:
            return np.zeros((0, 2))
        return fx.keep_inside(np.concatenate(scaled), image.size)[0]

    def tensor(self, images: list[fx.ImageFixations], device: torch.device) -> Tensor:
        """(B, H, W) negatives: fixation counts for other-images (each fixation a negative, however many
        share a pixel), the binary union for random-10 (the MIT benchmark's `otherMap > 0`)."""
        points = [self.points(image) for image in images]
        if self.shuffle == "other-images":
            return fixation_count_tensors(points, images[0].size, device)
        return fixation_tensors(points, images[0].size, device)


def evaluate_images(dataset: fx.ImageDataset, context: EvaluateContext, shuffle: str) -> dict[str, Any]:
    config = context.config
    negatives = ImageNegatives(dataset, shuffle, config.seed)
    units: list[dict[str, Any]] = []
    for group in image_units(dataset, config.batch_pixels):
        key = _image_group_key(group, dataset, negatives, context)
        context.used_keys.add(key)
        cached = context.cache.get(key)
        if cached is not None:
            units.append(cached)
            context.summary.units_cached += 1
        else:
            unit = {"key": key, "unit": group[0].image, "records": [], "resized": {}, "cam_top": {}}
            truth = _image_truth_batch(group, negatives, context, with_rgb=context.cam is not None)
            if truth is not None:
                score_batch(context, truth, lambda s, t=truth: s.images([i.image for i in t.items]),
                            (config.seed, dataset.name), unit)
            context.cache.put(unit)
            units.append(unit)
            context.summary.units_done += 1
        context.progress.advance_frames(len(group))
        context.progress.advance_video()
    result = {"dataset": dataset, "kind": "images", "units": units, "n_items": sum(len(u["records"]) for u in units),
              "dropped_outside": context.problems.dropped_outside}
    if config.examples:
        result["example_data"] = _image_examples(dataset, context, units, negatives)
    return result


def _image_group_key(group: list[fx.ImageFixations], dataset: fx.ImageDataset, negatives: ImageNegatives,
                     context: EvaluateContext) -> str:
    """Everything a group's scores depend on: the settings, each image's file, fixations and negatives,
    and each row's map of it. A change elsewhere in the set leaves the key alone."""
    names = [image.image for image in group]
    maps = [source.image_stamps(names) for source in context.sources]
    images = [(i.image, i.path.stat().st_size, i.path.stat().st_mtime_ns, negatives.digests[i.image],
               negatives.stamp(i)) for i in group]
    return cache_key(context.settings_key, dataset.name, dataset.source, images, maps)


def _image_truth_batch(group: list[fx.ImageFixations], negatives: ImageNegatives, context: EvaluateContext,
                       with_rgb: bool) -> TruthBatch | None:
    rgb: list[np.ndarray] | None = [] if with_rgb else None
    images = []
    for image in group:
        if rgb is not None:
            try:
                rgb.append(image.load_rgb())
            except OSError as error:
                context.problems.fail(image.path, str(error))
                continue
        images.append(image)
    if not images:
        return None
    size = images[0].size
    device = context.device
    points = [image.points for image in images]
    fixations = fixation_tensors(points, size, device)
    density = density_from_points(points, size, context.config.density.pixels(size), device)
    items = [fx.Item(item_id=image.image, image=image.image) for image in images]
    return TruthBatch(items, size, points, fixations, density, negatives.tensor(images, device), rgb)


def _image_examples(dataset: fx.ImageDataset, context: EvaluateContext, units: list[dict[str, Any]],
                    negatives: ImageNegatives) -> list[dict[str, Any]]:
    records = [r for u in units for r in u["records"]]
    chosen = _pick_examples(records, context.rows, context.config.examples)
    by_name = {image.image: image for image in dataset.images}
    examples = []
    for record in chosen:
        image = by_name[record["image"]]
        truth = _image_truth_batch([image], negatives, context, with_rgb=True)
        if truth is None:
            continue
        background = truth.rgb[0] if truth.rgb else None
        if context.cam is None:
            truth.rgb = None
        processed, _ = method_maps(context, truth, lambda s: s.images([image.image]))
        examples.append(_example(record, truth, processed, background))
    return examples


# --- examples ---------------------------------------------------------------------------------------------


def _pick_examples(records: list[dict[str, Any]], rows: list[str], count: int) -> list[dict[str, Any]]:
    """`count` items spread over the first row's NSS ranking (best ... worst), for the example pictures."""
    if not records or count <= 0:
        return []
    first = rows[0]
    scored = [r for r in records if r["scores"].get(first, {}).get("NSS") is not None]
    if not scored:
        return records[: count]
    scored.sort(key=lambda r: -r["scores"][first]["NSS"])
    picks = np.unique(np.linspace(0, len(scored) - 1, min(count, len(scored))).round().astype(int))
    return [scored[i] for i in picks]


_EXAMPLE_SIDE = 480  # longest side of the pictures' maps


def _example(record: dict[str, Any], truth: TruthBatch, processed: dict[str, ProcessedMaps],
             background: np.ndarray | None) -> dict[str, Any]:
    height, width = truth.size
    scale = min(1.0, _EXAMPLE_SIDE / max(height, width))
    out_size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def shrink(array: np.ndarray) -> np.ndarray:
        return cv2.resize(array, out_size, interpolation=cv2.INTER_AREA) if scale < 1 else array

    maps = {}
    for name, result in processed.items():
        array = result.maps[0].cpu().numpy()
        maps[name] = None if result.status[0] != "ok" else shrink(np.nan_to_num(array).astype(np.float32))
    return {
        "id": record["id"],
        "points": truth.points[0] * scale,
        "density": shrink(truth.density[0].cpu().numpy().astype(np.float32)),
        "background": None if background is None else shrink(background),
        "maps": maps,
        "scores": record["scores"],
    }
