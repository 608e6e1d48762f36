"""The networks' settings as plain dataclasses, and constants other settings default to: no torch import, so reading a workspace's configuration
(`avfix status`, the presets) does not pay torch's start-up. The networks import them from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

VGGSOUND_WIDTH = 64
VGGSOUND_CLUSTERS = 16
PAPER_BLUR_SIGMA = 7.0  # pixels, at the paper's 356 × 356 map (SPEC §4.6)
PAPER_MAP_SIZE = 356
SHUFFLED_AUC_SPLITS = 100  # random splits of the shuffled AUC (`models.metrics`)


@dataclass(frozen=True)
class AudioEncoderConfig:
    # Channels of the first stage; stages use width x (1, 2, 4, 8). 64 = VGGSound ResNet-18,
    # 8 or 16 give a tiny encoder for tests and the CPU demo.
    width: int = VGGSOUND_WIDTH
    # "netvlad" is needed to load a VGGSound checkpoint's pooling; "avg" is plain global average pooling.
    pooling: Literal["avg", "netvlad"] = "avg"
    netvlad_clusters: int = VGGSOUND_CLUSTERS
    # Initial assignment sharpness: larger alpha = harder assignment of descriptors to centroids.
    netvlad_alpha: float = 100.0


@dataclass(frozen=True)
class STAConfig:
    """Architecture of the STA network. Defaults are the paper's widths (SPEC §4.2)."""

    width: int = 32  # channels of every reduced level (downv2/3/4 in the paper)
    audio_channels: int = 32  # audio upsampler channels (Aup1-3)
    switch_hidden: int = 256  # hidden units of the audio switch head
    use_flow: bool = False  # stored optical flow of frame t as an extra input
    flow_channels: int = 16
    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)

    def __post_init__(self) -> None:
        for name in ("width", "audio_channels", "switch_hidden", "flow_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"STA {name} must be positive, got {getattr(self, name)}")
        if isinstance(self.audio_encoder, dict):  # rebuilt from a checkpoint's settings
            object.__setattr__(self, "audio_encoder", AudioEncoderConfig(**self.audio_encoder))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LossWeights:
    kl: float = 0.0  # SPEC §9 (V2) adds a KL term; V1 trains with BCE only
    switch: float = 1.0
