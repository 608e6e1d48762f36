"""Settings of the pseudolabel stage and the per-video record it works on.

A change redoes only what depends on it: each setting's scope (classifiers, maps, final) says what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.common.settings import device_setting, output_setting, path_setting, run_setting

SMOOTHING_MODES = ("flow", "plain", "none")
BACKBONE_MODES = ("finetune", "frozen")


@dataclass(frozen=True)
class TrainConfig:
    """SPEC §2: SGD lr 1e-3, momentum 0.9. Adam suits small networks trained from scratch (the demo)."""

    epochs: int = output_setting(30)
    max_steps: int | None = output_setting(None)
    batch_size: int = output_setting(16)
    optimizer: str = output_setting("sgd")
    lr: float = output_setting(1e-3)
    momentum: float = output_setting(0.9)
    weight_decay: float = output_setting(0.0)
    patience: int = output_setting(5)
    # True: BatchNorm keeps the running statistics it starts with (the pretrained ones) and normalises with
    # them in training too. Then a torchrun job's classifiers equal one process's (up to the order of
    # float sums): CPU processes cannot share batch statistics, each would normalise its own share.
    freeze_batchnorm: bool = output_setting(False)
    num_workers: int = run_setting(0)
    seed: int = output_setting(0)


@dataclass(frozen=True)
class PseudolabelConfig:
    """Defaults follow the paper's sizes (SPEC §2-3) with the offline ImageNet backbone. Each setting's
    scope says what it invalidates: classifiers retrain them; maps redo the coarse maps and boxes (and
    hence the fine classifiers, trained on those boxes); final only redoes fusion, smoothing and the
    threshold."""

    # Bumped when the stage makes other classifiers or maps for the same inputs and settings.
    # 2: a training sample's flip is drawn per (seed, epoch, sample), not from the process's random state.
    ALGORITHM_VERSION: ClassVar[int] = 2

    backbone: str = output_setting("efficientnet_lite0", scope=("classifiers",))
    # finetune: the backbone is trained with each classifier (the paper's); frozen: the pretrained backbone
    # runs once per frame and crop, its maps are cached and only the classifiers' heads are trained.
    backbone_mode: str = output_setting("finetune", scope=("classifiers",))
    weights: str | None = path_setting(None, scope=("classifiers",))
    random_init: bool = output_setting(False, scope=("classifiers",))
    coarse_size: int = output_setting(256, scope=("classifiers",))  # SPEC §2: coarse classifiers see 256 px frames
    fine_size: int = output_setting(356, scope=("classifiers",))  # SPEC §3.2: fine classifiers see 356 px crops
    map_size: int = output_setting(356, scope=("maps",))  # maps and pseudo-GT are stored at this size (SPEC §3.1 step 4)
    feature_channels: int | None = output_setting(None, scope=("classifiers",))  # None: the paper's widths
    audio_width: int = output_setting(64, scope=("classifiers",))  # 64 = VGGSound ResNet-18
    vggsound: str | None = path_setting(None, scope=("classifiers",))  # a VGGSound checkpoint: event audio by keyword match (SPEC §1.4a)
    vggsound_classes: str | None = path_setting(None, scope=("classifiers",))  # its class names, one per output (e.g. VGGSound's stat.csv)
    event_threshold: float = output_setting(0.5, scope=("classifiers", "maps"))
    box_factor: float = output_setting(2.0, scope=("maps",))  # SPEC §3.1 step 3
    gt_factor: float = output_setting(3.0, scope=("final",))  # SPEC §3.5
    smoothing: str = output_setting("flow", scope=("final",))  # flow | plain | none
    smoothing_radius: int = output_setting(2, scope=("final",))  # ±2 frames: the paper's 5-frame average
    fine_stage: bool = output_setting(True, scope=("final",))  # False: pseudo-GT from the coarse CAMs alone
    val_fraction: float = output_setting(0.2, scope=("classifiers",))
    train: TrainConfig = output_setting(default_factory=TrainConfig, scope=("classifiers",))
    device: str = device_setting("auto")
    threads: int = run_setting(1)  # torch CPU threads (0: torch's choice); see models.device.set_cpu_threads
    infer_batch: int = run_setting(32)
    # A longer video's passes go out in segments of about this many frames (whole batches and chunks),
    # spread over the processes like videos; the maps do not depend on it.
    segment_frames: int = run_setting(256)
    seed: int = output_setting(0, scope=("classifiers",))

    @property
    def frozen(self) -> bool:
        return self.backbone_mode == "frozen"

    def __post_init__(self) -> None:
        if self.backbone_mode not in BACKBONE_MODES:
            raise ValueError(f"backbone_mode must be one of {', '.join(BACKBONE_MODES)}, got {self.backbone_mode!r}")
        if self.backbone_mode == "frozen" and self.random_init:
            raise ValueError("a frozen backbone must be pretrained: random_init and backbone_mode frozen exclude each other")
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
        if self.smoothing_radius < 0 or self.infer_batch < 1 or self.threads < 0 or self.segment_frames < 1:
            raise ValueError("smoothing_radius and threads must be >= 0, infer_batch and segment_frames >= 1")


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
