"""Settings of the pseudolabel stage and the per-video record it works on.

The settings are split by what they invalidate, so a change redoes only what depends on it:
classifier settings retrain the classifiers; map settings redo the coarse maps and boxes (and hence
the fine classifiers, trained on those boxes); final settings only redo fusion, smoothing and the
threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pipeline.pseudolabel.classifier_loop import TrainConfig

SMOOTHING_MODES = ("flow", "plain", "none")


@dataclass(frozen=True)
class PseudolabelConfig:
    """Defaults follow the paper's sizes (SPEC §2-3) with the offline ImageNet backbone."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    random_init: bool = False
    coarse_size: int = 256  # SPEC §2: coarse classifiers see 256 px frames
    fine_size: int = 356  # SPEC §3.2: fine classifiers see 356 px crops
    map_size: int = 356  # maps and pseudo-GT are stored at this size (SPEC §3.1 step 4)
    feature_channels: int | None = None  # None: the paper's widths
    audio_width: int = 64  # 64 = VGGSound ResNet-18
    vggsound: str | None = None  # a VGGSound checkpoint: event audio by keyword match (SPEC §1.4a)
    vggsound_classes: str | None = None  # its class names, one per output (e.g. VGGSound's stat.csv)
    event_threshold: float = 0.5
    box_factor: float = 2.0  # SPEC §3.1 step 3
    gt_factor: float = 3.0  # SPEC §3.5
    smoothing: str = "flow"  # flow | plain | none
    smoothing_radius: int = 2  # ±2 frames: the paper's 5-frame average
    fine_stage: bool = True  # False: pseudo-GT from the coarse CAMs alone
    val_fraction: float = 0.2
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    threads: int = 1  # torch CPU threads (0: torch's choice); see models.device.set_cpu_threads
    infer_batch: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {', '.join(SMOOTHING_MODES)}, got {self.smoothing!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("coarse_size", "fine_size", "map_size"):
            if getattr(self, name) < 32:
                raise ValueError(f"{name} must be at least 32 pixels, got {getattr(self, name)}")
        if not 0 <= self.event_threshold <= 1:
            raise ValueError(f"event_threshold must be in [0, 1], got {self.event_threshold}")
        if (self.vggsound is None) != (self.vggsound_classes is None):
            raise ValueError("a VGGSound checkpoint needs its class-name list too (--vggsound-classes), and back")
        if self.smoothing_radius < 0 or self.infer_batch < 1 or self.threads < 0:
            raise ValueError("smoothing_radius and threads must be >= 0 and infer_batch >= 1")

    @classmethod
    def cpu_demo(cls, **overrides: Any) -> "PseudolabelConfig":
        """A tiny network trained from scratch at small sizes: minutes on 2 CPU cores."""
        base = cls(
            backbone="tiny", random_init=True, coarse_size=128, fine_size=96, map_size=64,
            feature_channels=32, audio_width=8, infer_batch=32,
            train=TrainConfig(epochs=8, batch_size=32, optimizer="adam", lr=2e-3, patience=3),
        )  # fmt: skip
        return replace(base, **overrides)

    def classifier_settings(self) -> dict[str, Any]:
        """What determines the trained classifiers (enters their checkpoints' fingerprints)."""
        return {
            "backbone": self.backbone, "weights": self.weights, "random_init": self.random_init,
            "coarse_size": self.coarse_size, "fine_size": self.fine_size,
            "feature_channels": self.feature_channels, "audio_width": self.audio_width,
            "vggsound": self.vggsound, "vggsound_classes": self.vggsound_classes,
            "event_threshold": self.event_threshold, "val_fraction": self.val_fraction,
            "train": asdict(self.train), "seed": self.seed,
        }  # fmt: skip

    def map_settings(self) -> dict[str, Any]:
        """What the coarse maps and selection boxes depend on besides the classifiers."""
        return {"map_size": self.map_size, "box_factor": self.box_factor, "event_threshold": self.event_threshold}

    def final_settings(self) -> dict[str, Any]:
        """What only fusion, smoothing and the threshold depend on."""
        return {
            "gt_factor": self.gt_factor, "smoothing": self.smoothing,
            "smoothing_radius": self.smoothing_radius, "fine_stage": self.fine_stage,
        }  # fmt: skip

    def all_settings(self) -> dict[str, Any]:
        return {**self.classifier_settings(), **self.map_settings(), **self.final_settings()}


@dataclass(frozen=True)
class VideoInfo:
    """One complete video of the features store, as the pseudolabel stage sees it."""

    video_id: str
    label: str
    class_index: int
    n_frames: int
    has_audio: bool
    frame_hw: tuple[int, int]
    fingerprint: str
