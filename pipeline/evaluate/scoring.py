"""Scoring one batch of the evaluate stage: the ground truth as tensors, every row's maps (map sources
and baselines) post-processed and resized to the truth's size (SPEC §5.2 steps 2-3), and their scores
(`models/metrics.py`), plus the settings and state a run shares between batches."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models import metrics
from pipeline.common.progress import Progress
from pipeline.evaluate import baselines as base
from pipeline.evaluate import fixations as fx
from pipeline.evaluate.cache import ScoreCache
from pipeline.evaluate.config import EvaluateConfig, EvaluateSummary
from pipeline.evaluate.maps import ModelMaps

# --- ground truth batches ------------------------------------------------------------------------------


@dataclass
class TruthBatch:
    items: list[fx.Item]
    size: tuple[int, int]
    points: list[np.ndarray]  # per item, (K, 2) x, y inside the frame
    fixations: Tensor  # (B, H, W) bool
    density: Tensor  # (B, H, W) float64
    other: Tensor  # (B, H, W) negatives of the shuffled AUC: bool (each pixel once) or int (fixation counts)
    rgb: list[np.ndarray] | None = None  # images layout, when a CAM baseline needs them


def _pad_points(points: list[np.ndarray], device: torch.device) -> tuple[Tensor, Tensor]:
    longest = max([len(p) for p in points] + [1])
    packed = torch.zeros(len(points), longest, 2, dtype=torch.float64)
    valid = torch.zeros(len(points), longest, dtype=torch.bool)
    for row, xy in enumerate(points):
        if len(xy):
            packed[row, : len(xy)] = torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float64))
            valid[row, : len(xy)] = True
    return packed.to(device), valid.to(device)


def fixation_tensors(points: list[np.ndarray], size: tuple[int, int], device: torch.device) -> Tensor:
    packed, valid = _pad_points(points, device)
    return metrics.fixation_map(packed, valid, size)


def fixation_count_tensors(points: list[np.ndarray], size: tuple[int, int], device: torch.device) -> Tensor:
    """(B, H, W) int32: how many of each list's points fall on each pixel."""
    packed, valid = _pad_points(points, device)
    return metrics.fixation_counts(packed, valid, size)


def density_from_points(points: list[np.ndarray], size: tuple[int, int], sigma_px: float,
                        device: torch.device) -> Tensor:
    packed, valid = _pad_points(points, device)
    return metrics.fixation_density(packed, valid, size, sigma_px)


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass
class ProcessedMaps:
    maps: Tensor  # (B, H, W) float64 at the truth's size; rows of absent maps are NaN
    status: list[str]  # per item: "ok", "missing" or "empty-map"
    resized: int  # maps whose size differed from the ground truth's


def process_maps(raw: list[np.ndarray | None] | Tensor, size: tuple[int, int], post_sigma: float,
                 device: torch.device) -> ProcessedMaps:
    """postprocessMap at each map's own size, then resize to the truth's size (SPEC §5.2 steps 2-3)."""
    if isinstance(raw, Tensor):
        groups = {tuple(raw.shape[-2:]): (list(range(raw.shape[0])), raw.to(device))}
        batch = raw.shape[0]
    else:
        batch = len(raw)
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, array in enumerate(raw):
            if array is not None:
                by_shape[tuple(array.shape[:2])].append(index)
        groups = {shape: (rows, torch.from_numpy(np.stack([raw[r] for r in rows])).to(device))
                  for shape, rows in by_shape.items()}
    out: Tensor | None = None
    status = ["missing"] * batch
    resized = 0
    for shape, (rows, stack) in groups.items():
        if stack.shape[0] > 1 and stack.stride(0) == 0:  # one map for every item (the centre bias): once
            empty = metrics.empty_maps(stack[:1]).tolist() * len(rows)
            processed = metrics.resize_maps(metrics.postprocess_map(stack[:1], post_sigma), size)
            processed = processed.expand(len(rows), -1, -1)
        else:
            empty = metrics.empty_maps(stack).tolist()
            processed = metrics.resize_maps(metrics.postprocess_map(stack, post_sigma), size)
        if len(rows) == batch:  # every map present and of one size: no scatter copy
            out = processed
        else:
            if out is None:
                out = torch.full((batch, *size), torch.nan, dtype=torch.float64, device=device)
            out[torch.tensor(rows, device=device)] = processed
        for row, is_empty in zip(rows, empty):
            status[row] = "empty-map" if is_empty else "ok"
        resized += len(rows) if tuple(shape) != tuple(size) else 0
    if out is None:
        out = torch.full((batch, *size), torch.nan, dtype=torch.float64, device=device)
    return ProcessedMaps(out, status, resized)


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Torch intra-op CPU threads set to `count` inside the block (0: leave as is)."""
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def score_rows(truth: TruthBatch, processed: dict[str, ProcessedMaps],
               draws: metrics.Draws) -> dict[str, list[dict[str, float | None]]]:
    """Per row, per item {metric: score or None}, every row against the same draws. None for absent maps,
    undefined scores (NaN), and metrics whose ground truth is empty (NSS, AUC-J, s-AUC without a
    fixation; CC, SIM, KLD with an all-zero density)."""
    batch = len(truth.items)
    maps = {name: result.maps for name, result in processed.items() if "ok" in result.status}
    # Cache-sized slices on the CPU; a GPU takes the whole batch in one go.
    chunk = metrics.CHUNK_PIXELS if truth.density.device.type == "cpu" else truth.density[0].numel() * batch
    scores = metrics.score_rows(maps, truth.density, truth.fixations, draws, chunk) if maps else {}
    no_fixation = ~truth.fixations.flatten(1).any(dim=1).cpu().numpy()
    no_density = ~(truth.density > 0).flatten(1).any(dim=1).cpu().numpy()
    out = {}
    for name, result in processed.items():
        absent = np.array([status != "ok" for status in result.status])
        values = {}
        for metric in metrics.METRICS:
            array = scores[name][metric].cpu().numpy().copy() if name in scores else np.full(batch, np.nan)
            array[absent | (no_fixation if metric in metrics.FIXATION_METRICS else no_density)] = np.nan
            values[metric] = array
        out[name] = [{metric: _finite_or_none(values[metric][i]) for metric in metrics.METRICS} for i in range(batch)]
    return out


def item_draws(truth: TruthBatch, seed_parts: tuple, n_splits: int) -> metrics.Draws:
    """The batch's random draws, one generator per item seeded by the item's identity: an item gets the
    same negatives and noise whatever batch it is scored in, and every row is scored against them."""
    generators = [_generator(*seed_parts, item.item_id) for item in truth.items]
    return metrics.draw(truth.fixations, truth.other, n_splits, generators)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _generator(*parts: Any) -> torch.Generator:
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


# --- one batch of every row ----------------------------------------------------------------------------


@dataclass
class EvaluateContext:
    """The settings and state one run shares between its units and batches."""

    config: EvaluateConfig
    device: torch.device
    sources: list[ModelMaps]
    baselines: tuple[str, ...]
    cam: base.CamBaseline | None
    problems: fx.Problems
    cache: ScoreCache
    progress: Progress
    summary: EvaluateSummary
    settings_key: str
    used_keys: set[str] = field(default_factory=set)

    @property
    def rows(self) -> list[str]:
        return [s.name for s in self.sources] + list(self.baselines)


def method_maps(context: EvaluateContext, truth: TruthBatch,
                load: Any) -> tuple[dict[str, ProcessedMaps], dict[str, list]]:
    """Processed maps of every row for one truth batch (`load(source)` gives a source's raw maps), and
    the CAM baseline's top-1 class and probability per item."""
    config = context.config
    batch, size = len(truth.items), truth.size
    raw: dict[str, Any] = {source.name: load(source) for source in context.sources}
    cam_top: dict[str, list] = {}
    if context.baselines:
        center = base.center_maps(batch, size, config.baseline, context.device)
        raw[base.CENTER] = center
        if context.cam is not None:
            assert truth.rgb is not None
            cams = context.cam.maps(truth.rgb, size)
            raw[base.CAM] = cams.maps
            raw[base.CENTER_CAM] = cams.maps * center
            cam_top = {item.item_id: [c, p] for item, c, p in zip(truth.items, cams.top_class, cams.top_probability)}
    out = {name: process_maps(raw[name], size, config.post_sigma, context.device) for name in context.rows}
    return out, cam_top


def score_batch(context: EvaluateContext, truth: TruthBatch, load: Any, seed_parts: tuple,
                unit: dict[str, Any]) -> None:
    """Score every row on one batch; append the per-item records and counts to `unit`."""
    processed, cam_top = method_maps(context, truth, load)
    truth.rgb = None  # frees the decoded images before scoring
    unit.setdefault("cam_top", {}).update(cam_top)
    resized = unit["resized"]
    records = unit["records"]
    n_fixations = truth.fixations.flatten(1).sum(dim=1).tolist()
    empty_density = (~(truth.density > 0).flatten(1).any(dim=1)).cpu().numpy()
    per_row = score_rows(truth, processed, item_draws(truth, seed_parts, context.config.shuffle_splits))
    for name, maps in processed.items():
        resized[name] = resized.get(name, 0) + maps.resized
    for index, item in enumerate(truth.items):
        records.append({
            "id": item.item_id, "video": item.video, "frame": item.frame, "image": item.image,
            "n_fixations": int(n_fixations[index]), "empty_density": bool(empty_density[index]),
            "scores": {name: per_row[name][index] for name in processed},
            "status": {name: processed[name].status[index] for name in processed},
        })  # fmt: skip
