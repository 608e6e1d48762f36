"""The settings of the train stage: `STATrainConfig` (its SPEC defaults and the tiny CPU demo), the
`paper` and `cpu` presets with the options that were given (`train_config`), and `TrainError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from models.audio_encoder import AudioEncoderConfig
from models.sta import LossWeights, STAConfig
from pipeline.common.errors import BadInput
from pipeline.train.augment import AugmentConfig


class TrainError(BadInput):
    """Training cannot start: missing stores, nothing to train on, an incompatible checkpoint."""


@dataclass(frozen=True)
class STATrainConfig:
    """Defaults follow SPEC §4.4-4.5 (SGD 1e-3, momentum 0.9, 356 input, shared crop/flip/±10°) with the
    offline ImageNet backbone; `cpu_demo()` is the tiny configuration for tests and the demo."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # backbone weights file (e.g. the paper's ResNeXt-101 WSL)
    random_init: bool = False
    audio_weights: str | None = None  # a VGGSound ResNet-18 checkpoint for the audio encoder
    input_size: int = 356
    model: STAConfig = field(default_factory=STAConfig)
    epochs: int = 15
    max_steps: int | None = None
    batch_size: int = 8  # per process
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    backbone_lr_scale: float = 1.0  # lr of the pretrained visual backbone relative to the rest
    schedule: str = "constant"  # constant | cosine (per step, after `warmup_steps` of linear warm-up)
    warmup_steps: int = 0
    grad_clip: float = 5.0  # max global gradient norm; 0 = off
    loss: LossWeights = field(default_factory=LossWeights)
    teacher_forcing: bool = True  # gate = stored event_prob in training; False: the switch head's own
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    freeze_batchnorm: bool | None = None  # None: freeze the statistics of pretrained parts only
    num_workers: int = 2  # reader threads (processes with `worker_processes`); 0 = read between steps
    worker_processes: bool = False
    shuffle_window: int = 8  # chunk blocks mixed per window of batches (see ChunkBatchSampler)
    # Interleaved batch streams; equal to the loader workers, each worker decodes only its own chunks.
    # Part of the data order (so of exact resume), hence a setting of its own rather than `num_workers`.
    shuffle_streams: int = 2
    val_fraction: float = 0.2  # used only for videos the pseudolabel stage gave no split
    val_batch_size: int = 32
    checkpoint_every: int = 200  # steps
    log_every: int = 10  # steps between metrics.jsonl train lines
    device: str = "auto"
    amp: bool = True  # CUDA only
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.input_size < 32:
            raise ValueError(f"input_size must be at least 32 pixels, got {self.input_size}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")

    @classmethod
    def cpu_demo(cls, **overrides: Any) -> "STATrainConfig":
        """Tiny backbone, 64 px input, narrow layers, Adam: trains on a CPU in a couple of minutes."""
        base = cls(
            backbone="tiny", random_init=True, input_size=64,
            model=STAConfig(width=16, audio_channels=16, switch_hidden=32, flow_channels=8,
                            audio_encoder=AudioEncoderConfig(width=8)),
            epochs=8, batch_size=16, optimizer="adam", lr=2e-3, num_workers=0, val_batch_size=64,
            checkpoint_every=50, log_every=5,
        )  # fmt: skip
        return replace(base, **overrides)

    def model_settings(self) -> dict[str, Any]:
        """What the architecture depends on (a checkpoint must match it to be loaded)."""
        return {"backbone": self.backbone, "input_size": self.input_size, "sta": self.model.to_dict(),
                "audio_pooling": self.model.audio_encoder.pooling}  # fmt: skip

    def run_settings(self) -> dict[str, Any]:
        """What the weights of a step depend on besides the architecture and the data. Epochs, max_steps,
        workers, device and logging are left out, so a finished run can be extended and resumed."""
        return {
            "weights": self.weights, "random_init": self.random_init, "audio_weights": self.audio_weights,
            "batch_size": self.batch_size, "optimizer": self.optimizer, "lr": self.lr, "momentum": self.momentum,
            "weight_decay": self.weight_decay, "backbone_lr_scale": self.backbone_lr_scale,
            "schedule": self.schedule, "warmup_steps": self.warmup_steps, "grad_clip": self.grad_clip,
            "loss": asdict(self.loss), "teacher_forcing": self.teacher_forcing, "augment": asdict(self.augment),
            "freeze_batchnorm": self.freeze_batchnorm, "shuffle_window": self.shuffle_window,
            "shuffle_streams": self.shuffle_streams,
            "val_fraction": self.val_fraction, "seed": self.seed,
        }  # fmt: skip


def train_config(preset: str, options: dict[str, Any]) -> STATrainConfig:
    """The configuration of a preset ("paper" or "cpu") with the options that were given (not None)."""
    if preset not in ("paper", "cpu"):
        raise ValueError(f"unknown preset {preset!r} (paper or cpu)")
    base = STATrainConfig.cpu_demo() if preset == "cpu" else STATrainConfig()
    given = {key: value for key, value in options.items() if value is not None}
    if "batchnorm" in given:
        given["freeze_batchnorm"] = {"auto": None, "frozen": True, "train": False}[given.pop("batchnorm")]
    model_keys = {"use_flow"}
    loss_keys = {"kl_weight": "kl", "switch_weight": "switch"}
    model = replace(base.model, **{k: given.pop(k) for k in list(given) if k in model_keys})
    loss = replace(base.loss, **{loss_keys[k]: given.pop(k) for k in list(given) if k in loss_keys})
    for key in ("weights", "audio_weights"):
        if key in given:
            given[key] = str(given[key])
            if key == "weights":
                given["random_init"] = False
    return replace(base, model=model, loss=loss, **given)
