"""The overlay's heat map: a colormap as a 256-entry lookup table and its blend over the frames.

A pixel of saliency s (0-255) becomes frame · (1 − w) + colour[s] · w with w = alpha · s / 255, so both the
colour and the weight depend on s alone: each is one table lookup (`cv2.LUT`), and the blend is one
`cv2.blendLinear` pass per frame. Numpy did the same in float32 over a whole batch: several passes over
arrays 4x the frames' size, 110-150 ms per 720p frame against 20-30 ms (the loaded 2-core machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def colormap_lut(name: str = "jet") -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of a matplotlib colormap."""
    from matplotlib import colormaps  # here: the predict settings are read at start-up, matplotlib costs ~0.2 s

    try:
        cmap = colormaps[name]
    except KeyError as exc:
        raise ValueError(f"unknown colormap {name!r} (any matplotlib colormap name, e.g. jet, inferno)") from exc
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Heatmap:
    """The lookup tables of one colormap and opacity, made once per video."""

    colours: np.ndarray  # (256, 1, 3) uint8: colour of each saliency value, in the frames' channel order
    weights: np.ndarray  # (256,) float32: the colour's weight alpha · s / 255
    keeps: np.ndarray  # (256,) float32: the frame's weight 1 − alpha · s / 255

    @classmethod
    def of(cls, lut: np.ndarray, alpha: float) -> Heatmap:
        weights = (np.float32(alpha) / np.float32(255.0)) * np.arange(256, dtype=np.float32)
        return cls(np.ascontiguousarray(lut.reshape(256, 1, 3)), weights, np.float32(1.0) - weights)

    def blend_frame(self, frame: np.ndarray, saliency: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) and a map uint8 (H, W) → blended uint8 (H, W, 3)."""
        saliency = np.ascontiguousarray(saliency)
        colour = cv2.LUT(cv2.merge((saliency, saliency, saliency)), self.colours)
        # blendLinear divides by the weights' sum (plus 1e-5), which is 1 here: keep + weight for every s.
        return cv2.blendLinear(np.ascontiguousarray(frame), colour, cv2.LUT(saliency, self.keeps),
                               cv2.LUT(saliency, self.weights))  # fmt: skip


def blend(frames: np.ndarray, saliency: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    """RGB uint8 (n, H, W, 3) and maps uint8 (n, H, W) → blended uint8 (n, H, W, 3).

    The heat colour covers a pixel in proportion to its saliency (weight alpha · s/255), so
    non-salient areas show the frame unchanged. Values are rounded to nearest (a tie may go either way).
    """
    heatmap = Heatmap.of(lut, alpha)
    out = np.empty_like(frames)
    for k, (frame, level) in enumerate(zip(frames, saliency)):
        out[k] = heatmap.blend_frame(frame, level)
    return out
