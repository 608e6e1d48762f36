"""The STA network built from the settings it depends on (`STATrainConfig.model_settings`, which every
STA checkpoint records): for a fresh training run and to load a checkpoint's weights into."""

from __future__ import annotations

from typing import Any

from models.audio_encoder import AudioEncoder, load_vggsound_checkpoint
from models.backbones import build_backbone
from models.sta import STAConfig, STANet


def build_sta(model_settings: dict[str, Any], weights: str | None = None, random_init: bool = True,
              audio_weights: str | None = None) -> STANet:  # fmt: skip
    """The STA network of `model_settings` (see `STATrainConfig.model_settings`)."""
    sta = STAConfig(**model_settings["model"])
    backbone = build_backbone(model_settings["backbone"], weights, random_init=random_init and weights is None)
    audio = AudioEncoder(sta.audio_encoder)
    if audio_weights is not None:
        load_vggsound_checkpoint(audio, audio_weights)
    return STANet(sta, backbone, audio)
