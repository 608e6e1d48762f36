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
    """`method` 'dis' or 'none'; flow is computed at `scale` × the stored frame size."""

    method: str = output_setting("dis")
    scale: float = output_setting(0.5)
    preset: str = output_setting("ultrafast")

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the flow grid."""
        return max(8, round(width * self.scale)), max(8, round(height * self.scale))


class FlowComputer:
    """Flow from frame t−1 to frame t on a `scale`-sized grid: frame_{t−1}(y, x) ≈ frame_t(y+dy, x+dx).

    Values are in pixels of the stored frame whatever the grid, so they read the same at any flow
    scale; a consumer working on another grid multiplies by its own size ratio.
    """

    def __init__(self, config: FlowConfig, frame_wh: tuple[int, int]) -> None:
        self.config = config
        self.grid_wh = config.grid(*frame_wh)
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

    def next(self, rgb: np.ndarray) -> np.ndarray:
        """(2, h, w) float32 flow from the previous frame to `rgb` (zeros for the very first frame)."""
        gray = self._gray(rgb)
        if self.previous is None:
            flow = np.zeros((2, gray.shape[0], gray.shape[1]), dtype=np.float32)
        else:
            flow = np.ascontiguousarray(self.dis.calc(self.previous, gray, None).transpose(2, 0, 1)) * self.to_frame
        self.previous = gray
        return flow
