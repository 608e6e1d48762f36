"""The one preset table: every stage's settings under each preset. Every command and `avfix run` take
their defaults from here (a stage a preset does not name keeps its dataclass defaults).

    paper  the SPEC's sizes, the packaged ImageNet EfficientNet-Lite0 fine-tuned (the default with a CUDA GPU)
    fast   the same pretrained backbone frozen: its maps computed once per frame and cached, only the
           classifiers' heads and the STA network's decoder learn (the default without one)
    cpu    a tiny network trained from scratch at small sizes: the whole DAG in minutes on 2 CPU cores
           (a smoke test of the plumbing, not the method)
"""

from __future__ import annotations

from typing import Any

from models.config import AudioEncoderConfig, STAConfig
from pipeline.common.cuda import cuda_available
from pipeline.extract.config import ExtractConfig
from pipeline.pseudolabel.config import PseudolabelConfig, TrainConfig
from pipeline.train.config import STATrainConfig
from pipeline.workspace.registry import stage

FAST_ON_CPU = "fast"  # the preset a CPU user is pointed to


def default_preset() -> str:
    """`paper` with a CUDA GPU, else `fast` (on 2 CPU cores `paper` takes hours on the smallest set)."""
    return "paper" if cuda_available() else FAST_ON_CPU


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "fast": {
        "pseudolabel": PseudolabelConfig(
            backbone_mode="frozen", coarse_size=224, fine_size=224, map_size=128, feature_channels=64,
            audio_width=16, threads=0,
            train=TrainConfig(epochs=6, batch_size=16, optimizer="adam", lr=1e-3, patience=2),
        ),
        "train": STATrainConfig(
            frozen_backbone=True, input_size=224, epochs=6, batch_size=8, optimizer="adam", lr=1e-3,
            model=STAConfig(audio_encoder=AudioEncoderConfig(width=16)), checkpoint_every=100,
        ),
    },
    "cpu": {
        # The cpu classifiers read 128 px frames: storing them at 128 px saves decoding and disk.
        "extract": ExtractConfig(size=128),
        "pseudolabel": PseudolabelConfig(
            backbone="tiny", random_init=True, coarse_size=128, fine_size=96, map_size=64, feature_channels=32,
            audio_width=8, infer_batch=32,
            train=TrainConfig(epochs=8, batch_size=32, optimizer="adam", lr=2e-3, patience=3),
        ),
        "train": STATrainConfig(
            backbone="tiny", random_init=True, input_size=64,
            model=STAConfig(width=16, audio_channels=16, switch_hidden=32, flow_channels=8,
                            audio_encoder=AudioEncoderConfig(width=8)),
            epochs=8, batch_size=16, optimizer="adam", lr=2e-3, num_workers=0, val_batch_size=64,
            checkpoint_every=50, log_every=5,
        ),
    },
}  # fmt: skip
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)


def preset_config(preset: str, stage_name: str) -> Any:
    """The settings of one stage under `preset`."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; use {' or '.join(PRESET_NAMES)}")
    return PRESETS[preset].get(stage_name) or stage(stage_name).config_type()
