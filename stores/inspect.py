"""Small helpers for looking at a workspace's stores in Jupyter (examples/inspect_stores.ipynb).

Everything here reads only; nothing needs avfix's models or stages:

    stores_of(ws)                 {name: path} of the stores the workspace holds
    video_table(path)             one row per video group: id, status, label, frames, failure
    open_video(path, video_id)    one video of any store as an xarray.Dataset (named dims, coordinates)
    overlay(frame, saliency)      a map blended over a frame as a heat map (RGB uint8)
    flow_to_rgb(flow)             optical flow as colour: hue = direction, brightness = speed
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb

from stores import zarr_io
from stores.schema import StoreSchema, schemas


def _store_names() -> tuple[str, ...]:
    from stores import features

    names = [schema.file_name for schema in schemas()]
    return tuple(names[:2] + [features.PREDICT_FILE_NAME] + names[2:])


def _schema_of(kind: str) -> StoreSchema:
    return next(schema for schema in schemas() if schema.kind == kind)


def stores_of(workspace: str | Path) -> dict[str, Path]:
    """The avfix stores present in `workspace`, by file name."""
    workspace = Path(workspace)
    return {name: workspace / name for name in _store_names() if (workspace / name).is_dir()}


def store_kind(path: str | Path) -> str:
    return str(zarr_io.open_root(path, mode="r").attrs.get("store_kind"))


def video_ids(path: str | Path, complete_only: bool = True) -> list[str]:
    """The videos of a store (only those marked complete, unless `complete_only` is False)."""
    root = zarr_io.open_root(path, mode="r")
    schema = _schema_of(store_kind(path))
    return schema.complete_videos(root) if complete_only else schema.video_ids(root)


def video_table(path: str | Path) -> list[dict[str, Any]]:
    """One row per video group, failures included: id, status, label, frames, and the recorded error."""
    root = zarr_io.open_root(path, mode="r")
    schema = _schema_of(store_kind(path))
    failures = schema.read_store(root).failures
    rows = []
    for video_id in video_ids(path, complete_only=False):
        attrs = schema.read_video(root, video_id)
        rows.append({"video": video_id, "status": attrs.status, "label": getattr(attrs, "label", "") or "",
                     "frames": getattr(attrs, "n_frames", None),
                     "error": failures.get(video_id, {}).get("reason", "")})  # fmt: skip
    for video_id, failure in sorted(failures.items()):
        if all(row["video"] != video_id for row in rows):
            rows.append({"video": video_id, "status": "failed", "label": "", "frames": None,
                         "error": failure.get("reason", "")})  # fmt: skip
    return rows


def open_video(path: str | Path, video_id: str) -> xr.Dataset:
    """One video of a features, pseudo or predictions store as an xarray Dataset, with coordinate labels
    for the categorical dimensions (branch S/ST/SA, stage coarse/fine, flow component dx/dy)."""
    return _schema_of(store_kind(path)).open_dataset(path, video_id)


def _resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 2-D float map resized with pixel-centre-aligned bilinear interpolation."""
    src_h, src_w = image.shape
    ys = np.clip((np.arange(height) + 0.5) * src_h / height - 0.5, 0, src_h - 1)
    xs = np.clip((np.arange(width) + 0.5) * src_w / width - 0.5, 0, src_w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, src_h - 1), np.minimum(x0 + 1, src_w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def overlay(frame: np.ndarray, saliency: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """`saliency` (any size, any range; scaled to its maximum) as a heat map over `frame` (H, W, 3) uint8.

    The colour covers a pixel in proportion to its saliency, so non-salient areas show the frame as it is.
    """
    saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float64))
    peak = saliency.max()
    level = saliency / peak if peak > 0 else np.zeros_like(saliency)
    level = np.clip(_resize_bilinear(level, frame.shape[0], frame.shape[1]), 0.0, 1.0)
    heat = colormaps[colormap](level)[..., :3] * 255.0
    weight = alpha * level[..., None]
    return np.clip(frame.astype(np.float64) * (1 - weight) + heat * weight + 0.5, 0, 255).astype(np.uint8)


def flow_to_rgb(flow: np.ndarray, max_speed: float | None = None) -> np.ndarray:
    """Flow (2, H, W) (dx, dy in pixels) as RGB uint8: hue = direction, brightness = speed / `max_speed`
    (default: the largest speed in the field)."""
    dx, dy = np.asarray(flow, dtype=np.float64)
    speed = np.hypot(dx, dy)
    top = max_speed if max_speed else (speed.max() or 1.0)
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    hsv = np.stack([hue, np.ones_like(hue), np.clip(speed / top, 0, 1)], axis=-1)
    return (hsv_to_rgb(hsv) * 255 + 0.5).astype(np.uint8)
