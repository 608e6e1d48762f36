"""The settings of the train stage (`STATrainConfig`, each field classified by what it changes) and
`TrainError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from models.config import LossWeights, STAConfig
from pipeline.common.errors import BadInput
from pipeline.common.settings import device_setting, output_setting, output_settings, path_setting, run_setting

ARCHITECTURE = "architecture"  # the settings a checkpoint's network is built from


class TrainError(BadInput):
    """Training cannot start: missing stores, nothing to train on, an incompatible checkpoint."""


@dataclass(frozen=True)
class AugmentConfig:
    """SPEC §4.5: frames resized to 400, random 356 crop (a side fraction of 0.89), flip p = 0.5,
    rotation uniform in ±10°."""

    crop_fraction: float = output_setting(356 / 400)
    flip_probability: float = output_setting(0.5)
    max_rotation_degrees: float = output_setting(10.0)

    def __post_init__(self) -> None:
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if not 0 <= self.flip_probability <= 1:
            raise ValueError(f"flip_probability must be in [0, 1], got {self.flip_probability}")
        if self.max_rotation_degrees < 0:
            raise ValueError(f"max_rotation_degrees must be >= 0, got {self.max_rotation_degrees}")


@dataclass(frozen=True)
class STATrainConfig:
    """Defaults follow SPEC §4.4-4.5 (SGD 1e-3, momentum 0.9, 356 input, shared crop/flip/±10°) with the
    offline ImageNet backbone. `epochs` and `max_steps` only say how long to train, so a finished run can
    be extended and resumed (with the cosine schedule the total enters the learning rate of each step)."""

    # Bumped when training makes other weights for the same data and settings.
    ALGORITHM_VERSION: ClassVar[int] = 1

    backbone: str = output_setting("efficientnet_lite0", scope=(ARCHITECTURE,))
    weights: str | None = path_setting(None)  # backbone weights file (e.g. the paper's ResNeXt-101 WSL)
    random_init: bool = output_setting(False)
    audio_weights: str | None = path_setting(None)  # a VGGSound ResNet-18 checkpoint for the audio encoder
    input_size: int = output_setting(356, scope=(ARCHITECTURE,))
    # The pretrained visual backbone stays fixed: its levels are computed once per stored frame at the
    # input size (WS/sta-cache.zarr) and the crop / flip / rotation are applied to them (pipeline.train.frozen).
    frozen_backbone: bool = output_setting(False)
    model: STAConfig = output_setting(default_factory=STAConfig, scope=(ARCHITECTURE,))
    epochs: int = run_setting(15)
    max_steps: int | None = run_setting(None)
    batch_size: int = output_setting(8)  # per process
    optimizer: str = output_setting("sgd")  # sgd | adam | adamw
    lr: float = output_setting(1e-3)
    momentum: float = output_setting(0.9)
    weight_decay: float = output_setting(0.0)
    backbone_lr_scale: float = output_setting(1.0)  # lr of the pretrained visual backbone relative to the rest
    schedule: str = output_setting("constant")  # constant | cosine (per step, after `warmup_steps` of linear warm-up)
    warmup_steps: int = output_setting(0)
    grad_clip: float = output_setting(5.0)  # max global gradient norm; 0 = off
    loss: LossWeights = output_setting(default_factory=LossWeights)
    teacher_forcing: bool = output_setting(True)  # gate = stored event_prob in training; False: the switch head's own
    augment: AugmentConfig = output_setting(default_factory=AugmentConfig)
    freeze_batchnorm: bool | None = output_setting(None)  # None: freeze the statistics of pretrained parts only
    num_workers: int = run_setting(2)  # reader threads (processes with `worker_processes`); 0 = read between steps
    worker_processes: bool = run_setting(False)
    shuffle_window: int = output_setting(8)  # chunk blocks mixed per window of batches (see ChunkBatchSampler)
    # Interleaved batch streams; equal to the loader workers, each worker decodes only its own chunks.
    # Part of the data order (so of exact resume), hence a setting of its own rather than `num_workers`.
    shuffle_streams: int = output_setting(2)
    val_fraction: float = output_setting(0.2)  # used only for videos the pseudolabel stage gave no split
    val_batch_size: int = run_setting(32)
    checkpoint_every: int = run_setting(200)  # steps
    log_every: int = run_setting(10)  # steps between metrics.jsonl train lines
    device: str = device_setting("auto")
    amp: bool = run_setting(True)  # CUDA only
    seed: int = output_setting(0)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.input_size < 32:
            raise ValueError(f"input_size must be at least 32 pixels, got {self.input_size}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be positive")
        if self.frozen_backbone and self.random_init and self.weights is None:
            raise ValueError("frozen_backbone needs a pretrained backbone: a random one would stay random "
                             "(set random_init = false or give weights)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")

    def model_settings(self) -> dict[str, Any]:
        """What the architecture depends on (a checkpoint must match it to be loaded): the settings of
        scope "architecture"."""
        return output_settings(self, ARCHITECTURE)


