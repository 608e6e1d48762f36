"""Settings of the predict stage, each classified by what it changes (`pipeline.common.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from models.config import PAPER_BLUR_SIGMA
from pipeline.common.settings import device_setting, output_setting, path_setting, run_setting
from pipeline.predict.heatmap import colormap_lut

MAPS, OVERLAY = "maps", "overlay"  # the two outputs a setting can change: the stored maps, the overlay videos


@dataclass(frozen=True)
class PredictConfig:
    # Bumped when predict writes other maps or overlays for the same inputs and settings.
    ALGORITHM_VERSION: ClassVar[int] = 1

    # None: WS/checkpoints/sta/best.pt, else last.pt; its content (SHA-256) enters the maps' fingerprints.
    checkpoint: str | None = path_setting(None)
    # σ of the Gaussian blur at a 356-pixel map (SPEC §4.6); scaled with the map size.
    blur_sigma: float = output_setting(PAPER_BLUR_SIGMA, scope=(MAPS,))
    overlay: bool = output_setting(False, scope=(OVERLAY,))
    overlay_alpha: float = output_setting(0.5, scope=(OVERLAY,))
    colormap: str = output_setting("jet", scope=(OVERLAY,))
    batch_size: int = run_setting(16)
    # Frames per piece of work a process (dask worker, torchrun rank) takes; rounded up to whole batches
    # and store chunks. Which process predicts which frames changes no map.
    segment_frames: int = run_setting(256)
    device: str = device_setting("auto")
    amp: bool = run_setting(True)  # CUDA only

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.segment_frames < 1:
            raise ValueError(f"segment_frames must be positive, got {self.segment_frames}")
        if not 0 <= self.overlay_alpha <= 1:
            raise ValueError(f"overlay_alpha must be in [0, 1], got {self.overlay_alpha}")
        if self.overlay:
            colormap_lut(self.colormap)  # an unknown name fails before any work
