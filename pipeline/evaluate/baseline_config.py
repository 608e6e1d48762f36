"""The evaluation baselines' names and settings (`pipeline.evaluate.baselines` computes them), without
torch: the evaluate settings are read at start-up, by `avfix status` too."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.common.settings import output_setting

CENTER = "center"
CAM = "cam"
CENTER_CAM = "center-cam"
BASELINES: tuple[str, ...] = (CENTER, CAM, CENTER_CAM)


@dataclass(frozen=True)
class BaselineConfig:
    center_sigma: float = output_setting(0.25)  # σ as a fraction of the frame's width (across) and height (down)
    cam_backbone: str = output_setting("efficientnet_lite0")
    cam_input: int = output_setting(224)
    cam_top_k: int = output_setting(5)

    def __post_init__(self) -> None:
        if not 0 < self.center_sigma <= 10:
            raise ValueError(f"center sigma must be a positive fraction of the frame size, got {self.center_sigma}")
        if self.cam_input < 32:
            raise ValueError(f"CAM input size must be at least 32 pixels, got {self.cam_input}")
        if not 1 <= self.cam_top_k <= 1000:
            raise ValueError(f"CAM top-k must be in 1..1000, got {self.cam_top_k}")

    def describe(self) -> dict[str, str]:
        return {
            CENTER: f"Gaussian centred in the frame, σ = {self.center_sigma:g} x width across, x height down",
            CAM: (f"{self.cam_backbone} ImageNet CAM at {self.cam_input}x{self.cam_input}, "
                  + ("top-1 class" if self.cam_top_k == 1 else f"probability-weighted top-{self.cam_top_k} classes")),
            CENTER_CAM: "element-wise product of the centre bias and the CAM",
        }
