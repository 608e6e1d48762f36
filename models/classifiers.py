"""One parametrised SCAM classifier for the S, ST and SA branches at the coarse and fine stages.

The original code had one copied script per branch and stage (SPEC §2, §3.2); here the branch and the
stage select which parts are built. Every variant returns its logits and the feature map that is
global-average-pooled into its final Linear ("cam_features"), so CAMs need no forward hooks.

SPEC §8 decisions made here:
- §8.2: one class count for every branch (`n_classes`, from the data: 28 on AVE). The released SA heads
  had 27 classes because their loaders skipped the last class folder.
- §8.4: the audio switch is a tensor input `event_prob` (B,), the probability that the frame's audio is
  event-related, used as `p` in V' = ReLU(p * sigmoid(att) * V + V).
- §8.9: ST_fine gets the same RFB(C, 64) reduction as ST_coarse (the released ST_fine fed C channels into
  a 64-channel Conv3d); the SA audio upsampler output is resized to the visual map, whatever the input
  size (the released SA_coarse broke at 256 input: 8x8 visual vs 7x7 audio); SA_fine's audio upsampler
  has 64 channels so that cat(audio, visual) has the 128 channels its attention conv expects (the
  November 2020 version; the release had 32 + 64 = 96).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.backbones import VisualBackbone
from models.blocks import ReceptiveFieldBlock
from models.cam import class_activation_maps


class Branch(StrEnum):
    S = "S"    # spatial: one frame
    ST = "ST"  # spatio-temporal: frames t-1, t, t+1
    SA = "SA"  # spatial-audio: one frame + its audio window


class Stage(StrEnum):
    COARSE = "coarse"  # whole frames
    FINE = "fine"      # crops of the selected region (SPEC §3.1-3.2)


@dataclass(frozen=True)
class _Widths:
    feature: int | None        # reduction of the backbone map; None = no reduction (S fine)
    audio: int | None = None   # audio upsampler channels (SA)
    attention: int | None = None  # hidden channels of the audio-visual attention (SA)


# Channel widths of the released models (SPEC §2.1-2.3, §3.2), with the §8.9 fixes.
PAPER_WIDTHS: dict[tuple[Branch, Stage], _Widths] = {
    (Branch.S, Stage.COARSE): _Widths(feature=128),
    (Branch.S, Stage.FINE): _Widths(feature=None),
    (Branch.ST, Stage.COARSE): _Widths(feature=64),
    (Branch.ST, Stage.FINE): _Widths(feature=64),
    (Branch.SA, Stage.COARSE): _Widths(feature=128, audio=128, attention=128),
    (Branch.SA, Stage.FINE): _Widths(feature=64, audio=64, attention=128),
}


@dataclass(frozen=True)
class ClassifierConfig:
    branch: Branch
    stage: Stage
    n_classes: int
    # None = the paper's width for this branch and stage (PAPER_WIDTHS); smaller values suit the CPU demo.
    feature_channels: int | None = None
    audio_channels: int | None = None
    attention_channels: int | None = None
    # Used only when an SA classifier is built without an explicit audio encoder.
    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    # Set: the SA classifier has no audio encoder of its own and reads audio embeddings of this size
    # (a frozen, shared encoder's, e.g. precomputed once per frame).
    audio_embedding_dim: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "branch", Branch(self.branch))
        object.__setattr__(self, "stage", Stage(self.stage))
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")

    def widths(self) -> _Widths:
        paper = PAPER_WIDTHS[(self.branch, self.stage)]
        return _Widths(
            feature=self.feature_channels if self.feature_channels is not None else paper.feature,
            audio=self.audio_channels if self.audio_channels is not None else paper.audio,
            attention=self.attention_channels if self.attention_channels is not None else paper.attention,
        )


class ClassifierOutput(NamedTuple):
    logits: Tensor        # (B, n_classes)
    cam_features: Tensor  # (B, C, h, w): pooled into the final Linear; CAM = fc.weight[c] . cam_features
    audio_attention: Tensor | None = None  # (B, 1, h, w) sigmoid attention of SA, else None


class AudioUpsampler(nn.Module):
    """Audio embedding (B, D) as a 1x1 map -> transposed convolutions -> resized to the visual map.

    Coarse: three ConvT k3 s1 (1 -> 3 -> 5 -> 7); fine: ConvT k4 s2, k4 s2, k3 s1 (1 -> 4 -> 10 -> 12),
    no nonlinearity between them (as released). The final bilinear resize is the §8.9 fix.
    """

    def __init__(self, embedding_dim: int, channels: int, stage: Stage) -> None:
        super().__init__()
        plan = [(3, 1), (3, 1), (3, 1)] if stage == Stage.COARSE else [(4, 2), (4, 2), (3, 1)]
        layers: list[nn.Module] = []
        in_channels = embedding_dim
        for kernel, stride in plan:
            layers.append(nn.ConvTranspose2d(in_channels, channels, kernel, stride=stride))
            in_channels = channels
        self.layers = nn.Sequential(*layers)

    def forward(self, embedding: Tensor, size: tuple[int, int]) -> Tensor:
        audio_map = self.layers(embedding[:, :, None, None])
        if tuple(audio_map.shape[-2:]) != tuple(size):
            audio_map = F.interpolate(audio_map, size=size, mode="bilinear", align_corners=False)
        return audio_map


class SCAMClassifier(nn.Module):
    """S / ST / SA classifier at the coarse or fine stage.

    Inputs (RGB in [0, 1]; the backbone's own normalisation is applied inside):
      S:  frames (B, 3, H, W)
      ST: frames (B, 3, 3, H, W) = (batch, time [t-1, t, t+1], RGB, H, W); the centre frame is t
      SA: frames (B, 3, H, W), spectrogram (B, 1, F, T) or (B, F, T), event_prob (B,) in [0, 1]
    S and ST ignore `spectrogram` and `event_prob`, so one data loader can feed every branch.

    `forward_maps` takes the backbone's maps instead of frames (a frozen backbone's, computed once per
    frame): built with `backbone=None` and `backbone_channels`, the classifier is its heads alone.
    """

    def __init__(self, config: ClassifierConfig, backbone: VisualBackbone | None,
                 audio_encoder: AudioEncoder | None = None, backbone_channels: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.branch = config.branch
        self.stage = config.stage
        self.backbone = backbone
        widths = config.widths()
        if backbone is None and backbone_channels is None:
            raise ValueError("a classifier without a backbone needs backbone_channels")
        backbone_channels = backbone.out_channels if backbone is not None else int(backbone_channels)  # type: ignore[arg-type]

        if self.branch == Branch.S:
            if widths.feature is None:
                # S_fine (§3.2): the backbone map itself is pooled into the classifier.
                self.reduce: nn.Module = nn.Identity()
                cam_channels = backbone_channels
            else:
                self.reduce = ReceptiveFieldBlock(backbone_channels, widths.feature)
                cam_channels = widths.feature
        elif self.branch == Branch.ST:
            channels = self._required(widths.feature, "feature_channels")
            self.reduce = ReceptiveFieldBlock(backbone_channels, channels)
            # Sees the 3 frames at once; no temporal padding, so 3 time steps collapse to 1.
            self.temporal_gate = nn.Conv3d(channels, channels, kernel_size=(3, 3, 3), padding=(0, 1, 1))
            self.refine = nn.Conv2d(channels, channels, 1)
            cam_channels = channels
        else:
            channels = self._required(widths.feature, "feature_channels")
            audio_channels = self._required(widths.audio, "audio_channels")
            attention_channels = self._required(widths.attention, "attention_channels")
            if config.audio_embedding_dim is not None:
                self.audio_encoder: AudioEncoder | None = None
                embedding_dim = config.audio_embedding_dim
            else:
                self.audio_encoder = audio_encoder if audio_encoder is not None else AudioEncoder(config.audio_encoder)
                embedding_dim = self.audio_encoder.embedding_dim
            self.audio_upsampler = AudioUpsampler(embedding_dim, audio_channels, self.stage)
            if self.stage == Stage.COARSE:
                self.reduce = ReceptiveFieldBlock(backbone_channels, channels)
                gated_channels = channels
            else:
                # SA_fine (§3.2): a 1x1 reduction feeds the attention, but the gate acts on the backbone map.
                self.reduce = nn.Conv2d(backbone_channels, channels, 1)
                gated_channels = backbone_channels
            self.attention_hidden = nn.Conv2d(audio_channels + channels, attention_channels, 1)
            self.attention = nn.Conv2d(attention_channels, 1, 1)
            self.refine = nn.Conv2d(gated_channels, gated_channels, 1)
            cam_channels = gated_channels
        self.cam_channels = cam_channels
        self.fc = nn.Linear(cam_channels, config.n_classes)

    @staticmethod
    def _required(value: int | None, name: str) -> int:
        if value is None:
            raise ValueError(f"{name} must be set for this branch")
        return value

    def forward(self, frames: Tensor, spectrogram: Tensor | None = None,
                event_prob: Tensor | None = None) -> ClassifierOutput:
        self._check_frames(frames, 5 if self.branch == Branch.ST else 4)
        if self.backbone is None:
            raise ValueError("this classifier has no backbone: call forward_maps with the backbone's maps")
        maps = self.backbone(self.backbone.normalize(frames.flatten(0, 1) if self.branch == Branch.ST else frames))
        if self.branch == Branch.ST:
            maps = maps.view(frames.shape[0], 3, *maps.shape[1:])
        return self.forward_maps(maps, spectrogram, event_prob)

    def forward_maps(self, maps: Tensor, spectrogram: Tensor | None = None, event_prob: Tensor | None = None,
                     audio_embedding: Tensor | None = None) -> ClassifierOutput:
        """The classifier on backbone maps: (B, C, h, w), or (B, 3, C, h, w) for ST (frames t-1, t, t+1).
        SA takes the audio as a spectrogram, or as `audio_embedding` (B, D) for an encoder-less one."""
        audio_attention = None
        if self.branch == Branch.S:
            cam_features = self.reduce(maps)
        elif self.branch == Branch.ST:
            cam_features = self._spatio_temporal(maps)
        else:
            cam_features, audio_attention = self._spatial_audio(maps, spectrogram, event_prob, audio_embedding)
        logits = self.fc(cam_features.mean(dim=(2, 3)))
        return ClassifierOutput(logits, cam_features, audio_attention)

    def _check_frames(self, frames: Tensor, dims: int) -> None:
        expected = "(B, 3, H, W)" if dims == 4 else "(B, 3 frames, 3, H, W)"
        if frames.dim() != dims or frames.shape[-3] != 3 or (dims == 5 and frames.shape[1] != 3):
            raise ValueError(f"{self.branch} classifier expects frames {expected}, got {tuple(frames.shape)}")

    def _spatio_temporal(self, backbone_maps: Tensor) -> Tensor:
        batch = backbone_maps.shape[0]
        # All 3 frames' maps are reduced as one batch of B*3.
        maps = self.reduce(backbone_maps.flatten(0, 1))
        maps = maps.view(batch, 3, *maps.shape[1:]).transpose(1, 2)  # (B, C, 3, h, w)
        gate = self.temporal_gate(maps).squeeze(2)                    # (B, C, h, w)
        centre = maps[:, :, 1]
        fused = torch.relu(centre * torch.sigmoid(gate) + centre)
        return self.refine(fused)

    def _spatial_audio(self, backbone_map: Tensor, spectrogram: Tensor | None, event_prob: Tensor | None,
                       audio_embedding: Tensor | None) -> tuple[Tensor, Tensor]:  # fmt: skip
        if event_prob is None or (spectrogram is None and audio_embedding is None):
            raise ValueError("SA classifier needs its audio (spectrogram or embedding) and event_prob "
                             "(the audio switch, SPEC §8.4)")  # fmt: skip
        batch = backbone_map.shape[0]
        if event_prob.shape != (batch,):
            raise ValueError(f"event_prob must be ({batch},), got {tuple(event_prob.shape)}")
        if audio_embedding is None:
            if self.audio_encoder is None:
                raise ValueError("this SA classifier has no audio encoder: pass audio_embedding")
            audio_embedding = self.audio_encoder(spectrogram).embedding
        visual = self.reduce(backbone_map)
        audio_map = self.audio_upsampler(audio_embedding.to(visual.dtype), visual.shape[-2:])
        attention = torch.sigmoid(self.attention(self.attention_hidden(torch.cat([audio_map, visual], dim=1))))
        gated = visual if self.stage == Stage.COARSE else backbone_map
        switch = event_prob.to(gated.dtype).view(batch, 1, 1, 1)
        fused = torch.relu(switch * attention * gated + gated)
        return self.refine(fused), attention

    def class_activation_maps(self, output: ClassifierOutput, class_index: Tensor,
                              size: tuple[int, int] | None = None) -> Tensor:
        """CAMs of `output` for the given (ground-truth) classes; see `models.cam.class_activation_maps`."""
        return class_activation_maps(output.cam_features, self.fc.weight, class_index, size)
