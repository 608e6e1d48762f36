"""Dense optical flow between consecutive stored frames, with OpenCV's DIS (CPU)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.common.settings import output_setting

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass(frozen=True)
class FlowConfig:
    """`method` 'dis' or 'none'; flow is computed at `scale` × the stored frame size, and stored
    area-averaged at `stored_scale` × that size in steps of `step` pixels (0: as float16).

    What the consumers need (`benchmarks/flow_storage.py`, real 720p footage at 356 px): averaging the
    0.5x flow onto a 0.25x grid changed the STA flow encoder's input by 1.4% RMS and flow-guided
    smoothing's pseudo-GT by 1.7% of what dropping the flow altogether changes; 1/32 px steps on top,
    1.6% and 2.8% (int8 in 1/4 px steps: 7% and 10%). Computing at 0.25x directly instead changed them
    by 58% and 54%: DIS needs the finer grid, the consumers do not. Stored so, flow took 3.8 KiB per
    frame instead of 53.6 KiB.
    """

    method: str = output_setting("dis")
    scale: float = output_setting(0.5)
    preset: str = output_setting("ultrafast")
    stored_scale: float = output_setting(0.25)
    step: float = output_setting(1 / 32)

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the grid flow is computed on."""
        return max(8, round(width * self.scale)), max(8, round(height * self.scale))

    def stored_grid(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the stored flow: `stored_scale` of the frame, never finer than `grid`."""
        scale = min(self.stored_scale, self.scale)
        return max(8, round(width * scale)), max(8, round(height * scale))


class FlowComputer:
    """Flow from frame t−1 to frame t on a `scale`-sized grid: frame_{t−1}(y, x) ≈ frame_t(y+dy, x+dx).

    Values are in pixels of the stored frame whatever the grid, so they read the same at any flow
    scale; a consumer working on another grid multiplies by its own size ratio.
    """

    def __init__(self, config: FlowConfig, frame_wh: tuple[int, int]) -> None:
        self.config = config
        self.grid_wh = config.grid(*frame_wh)
        self.stored_wh = config.stored_grid(*frame_wh)
        self.dis = cv2.DISOpticalFlow_create(PRESETS[config.preset])
        self.previous: np.ndarray | None = None
        # Per-axis factors from grid pixels to frame pixels (grids round, so x and y may differ).
        self.to_frame = np.array(
            [frame_wh[0] / self.grid_wh[0], frame_wh[1] / self.grid_wh[1]], dtype=np.float32
        )[:, None, None]

    def _gray(self, rgb: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if gray.shape[::-1] != self.grid_wh:
            gray = cv2.resize(gray, self.grid_wh, interpolation=cv2.INTER_AREA)
        return gray

    def prime(self, rgb: np.ndarray) -> None:
        """Set the frame before the first one `next` is called with (segments that start mid-video)."""
        self.previous = self._gray(rgb)

    def next(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(2, h, w) float32 flow on the stored grid from the previous frame to `rgb` (zeros for the very
        first frame), written into `out` when given."""
        gray = self._gray(rgb)
        shape = (2, self.stored_wh[1], self.stored_wh[0])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be {shape} float32, got {out.shape} {out.dtype}")
        if self.previous is None:
            self.previous = gray
            out[...] = 0.0
            return out
        flow = self.dis.calc(self.previous, gray, None)
        if flow.shape[1::-1] != self.stored_wh:
            flow = cv2.resize(flow, self.stored_wh, interpolation=cv2.INTER_AREA)
        self.previous = gray
        np.multiply(flow.transpose(2, 0, 1), self.to_frame, out=out)
        return out
