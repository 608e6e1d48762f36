"""The STA network (SPEC §4.2): saliency of frame t from frames t−1, t, t+1 and the audio window of t.

Structure (channel widths are the paper's 32 by default; every spatial size is derived from the input):
- the visual backbone runs on the 3 frames as one batch; its stride-8/16/32 maps are L2/L3/L4;
- L4 → 1×1 conv → X (B, w, 3, h, w'); temporal gate: Conv3d (3,1,1) over the 3 frames →
  S_T = ReLU(X_t·σ(gate) + X_t);
- audio: encoder embedding → `AudioUpsampler` (ConvT 4/2, 4/2, 3/1, then resized to the L4 grid) →
  attention over cat(audio map, X_t) → S_A = ReLU(switch·σ(attention)·X_t + X_t);
- optional motion input (`use_flow`): the stored optical flow of frame t → a small conv encoder,
  concatenated into the fusion;
- fusion 1×1 conv of cat(S_T, S_A, X_t[, motion]) → decoder over L3_t and L2_t (SPEC §4.2 step 6) →
  1-channel map, bilinearly upsampled to the input size.

SPEC §8 decisions made here:
- §8.5: the network returns **logits**; the sigmoid is taken only at inference (the release returned a
  sigmoid and trained it with BCE-with-logits, a double sigmoid).
- §8.4 and the class-agnostic switch: the released gate came from a separate, frozen VGGSound switch
  network trained with CE on softmax outputs (double softmax) and read as `switch.view(B,1,1,1)` on a
  (B, 2) tensor. Here a small head on the shared audio embedding gives 2 logits (softmax at use) and
  the gate is P(event-related audio) = softmax(logits)[:, 1]. The pseudolabel stage's `event_prob` is
  conditional on the video's tag, which a new video does not have, so training may feed that stored
  probability as the gate (teacher forcing) while the head learns to predict the stored decision;
  at inference the head's own probability is the gate. A video without audio gets gate 0.
- §8.9: no hard-coded map sizes: the audio map is resized to the visual grid, the decoder upsamples to
  the sizes of L3 and L2, and the output to the input size, so any input size works.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.audio_encoder import AudioEncoder
from models.backbones import VisualBackbone
from models.classifiers import AudioUpsampler, Stage
# The settings live in a torch-free module (read at start-up); imported here for the network's users.
from models.config import PAPER_BLUR_SIGMA, PAPER_MAP_SIZE, AudioEncoderConfig, LossWeights, STAConfig  # noqa: F401

# Flow arrives in input pixels; dividing by the stride of the finest level keeps typical motions
# (a few pixels to a few tens) near unit scale, whatever the input size.
FLOW_UNIT_PIXELS = 8.0


class STAOutput(NamedTuple):
    saliency_logits: Tensor  # (B, H, W) at the input size; sigmoid gives the saliency map
    switch_logits: Tensor    # (B, 2); softmax[:, 1] = P(event-related audio)
    gate: Tensor             # (B,) the switch value the audio branch was gated with


class BackboneLevels(NamedTuple):
    """The backbone's levels of a batch (`STANet.backbone_levels`) and the input size they stand for."""

    levels: dict[str, Tensor]
    out_size: tuple[int, int]


class FlowEncoder(nn.Module):
    """Motion of frame t (B, 2, H, W) in input pixels → (B, C, h, w) on the L4 grid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(2, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, flow: Tensor, size: tuple[int, int]) -> Tensor:
        # Pooled to 4x the L4 grid first, so the three stride-2 convs land on (about) the L4 grid.
        pooled = F.adaptive_avg_pool2d(flow / FLOW_UNIT_PIXELS, (4 * size[0], 4 * size[1]))
        encoded = self.layers(pooled)
        if tuple(encoded.shape[-2:]) != tuple(size):
            encoded = F.interpolate(encoded, size=size, mode="bilinear", align_corners=False)
        return encoded


class STANet(nn.Module):
    """Inputs (RGB in [0, 1]; the backbone's normalisation is applied inside):

    frames (B, 3, 3, H, W) = frames t−1, t, t+1; spectrogram (B, F, T) or (B, 1, F, T) of frame t;
    has_audio (B,) bool (False: gate 0); event_prob (B,) or None: the gate to use (teacher forcing),
    None = the switch head's own P(event-related); flow (B, 2, H, W) in input pixels when `use_flow`.
    """

    def __init__(self, config: STAConfig, backbone: VisualBackbone, audio_encoder: AudioEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.audio_encoder = audio_encoder if audio_encoder is not None else AudioEncoder(config.audio_encoder)
        width = config.width
        channels = backbone.level_channels
        self.reduce32 = nn.Conv2d(channels["stride32"], width, 1)
        self.temporal_gate = nn.Conv3d(width, 1, kernel_size=(3, 1, 1))  # no padding: 3 time steps -> 1
        self.audio_upsampler = AudioUpsampler(self.audio_encoder.embedding_dim, config.audio_channels, Stage.FINE)
        self.attention_hidden = nn.Conv2d(config.audio_channels + width, config.audio_channels + width, 1)
        self.attention = nn.Conv2d(config.audio_channels + width, 1, 1)
        self.switch_head = nn.Sequential(
            nn.Linear(self.audio_encoder.embedding_dim, config.switch_hidden), nn.ReLU(inplace=True),
            nn.Linear(config.switch_hidden, 2),
        )  # fmt: skip
        self.flow_encoder = FlowEncoder(config.flow_channels) if config.use_flow else None
        fused_in = 3 * width + (config.flow_channels if config.use_flow else 0)
        self.fuse = nn.Conv2d(fused_in, width, 1)
        # Decoder of SPEC §4.2 step 6: no BN, no ReLU inside (as released).
        self.reduce16 = nn.Conv2d(channels["stride16"], width, 1)
        self.refine16 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.reduce8 = nn.Conv2d(channels["stride8"], width, 1)
        self.refine8 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.predict = nn.Conv2d(width, 1, 1)

    def forward(self, frames: Tensor | BackboneLevels, spectrogram: Tensor, has_audio: Tensor,
                event_prob: Tensor | None = None, flow: Tensor | None = None) -> STAOutput:  # fmt: skip
        """`frames` may also be their backbone levels (a frozen backbone's, computed once per frame)."""
        if isinstance(frames, BackboneLevels):
            return self.forward_levels(frames.levels, spectrogram, has_audio, event_prob, flow, frames.out_size)
        self._check_inputs(frames, has_audio, event_prob, flow)
        levels = self.backbone_levels(frames)
        return self.forward_levels(levels, spectrogram, has_audio, event_prob, flow, tuple(frames.shape[-2:]))

    def backbone_levels(self, frames: Tensor) -> dict[str, Tensor]:
        """What the network reads of the backbone for frames (B, 3, 3, H, W): stride32 of the three
        frames (B, 3, C, h, w), stride16 and stride8 of the centre frame (B, C, h, w)."""
        batch = frames.shape[0]
        levels = self.backbone.forward_levels(self.backbone.normalize(frames.flatten(0, 1)))
        return {"stride32": levels["stride32"].view(batch, 3, *levels["stride32"].shape[1:]),
                "stride16": self._centre(levels["stride16"], batch), "stride8": self._centre(levels["stride8"], batch)}

    def forward_levels(self, levels: dict[str, Tensor], spectrogram: Tensor, has_audio: Tensor,
                       event_prob: Tensor | None, flow: Tensor | None, out_size: tuple[int, int]) -> STAOutput:
        """The network on the backbone's levels (`backbone_levels`; a frozen backbone's, computed once
        per frame), its saliency logits at `out_size`."""
        batch = levels["stride32"].shape[0]
        maps = self.reduce32(levels["stride32"].flatten(0, 1))
        maps = maps.view(batch, 3, *maps.shape[1:]).transpose(1, 2)  # (B, w, 3, h, w')
        centre = maps[:, :, 1]
        grid = tuple(centre.shape[-2:])

        temporal = torch.relu(centre * torch.sigmoid(self.temporal_gate(maps).squeeze(2)) + centre)

        embedding = self.audio_encoder(spectrogram).embedding
        switch_logits = self.switch_head(embedding)
        if event_prob is None:
            gate = switch_logits.float().softmax(dim=1)[:, 1]
        else:
            gate = event_prob.float()
        gate = gate * has_audio.to(gate.dtype)
        audio_map = self.audio_upsampler(embedding, grid)
        attention = torch.sigmoid(self.attention(self.attention_hidden(torch.cat([audio_map, centre], dim=1))))
        audio = torch.relu(gate.to(centre.dtype).view(batch, 1, 1, 1) * attention * centre + centre)

        parts = [temporal, audio, centre]
        if self.flow_encoder is not None:
            assert flow is not None
            parts.append(self.flow_encoder(flow, grid))
        fused = self.fuse(torch.cat(parts, dim=1))

        stride16 = levels["stride16"]
        decoded = self.refine16(torch.cat([self._upsample(fused, stride16), self.reduce16(stride16)], dim=1))
        stride8 = levels["stride8"]
        decoded = self.refine8(torch.cat([self._upsample(decoded, stride8), self.reduce8(stride8)], dim=1))
        logits = F.interpolate(self.predict(decoded), size=out_size, mode="bilinear", align_corners=False)
        return STAOutput(logits.squeeze(1), switch_logits, gate)

    def _check_inputs(self, frames: Tensor, has_audio: Tensor, event_prob: Tensor | None, flow: Tensor | None) -> int:
        if frames.dim() != 5 or frames.shape[1] != 3 or frames.shape[2] != 3:
            raise ValueError(f"STA expects frames (B, 3 frames, 3, H, W), got {tuple(frames.shape)}")
        batch = frames.shape[0]
        if has_audio.shape != (batch,):
            raise ValueError(f"has_audio must be ({batch},), got {tuple(has_audio.shape)}")
        if event_prob is not None and event_prob.shape != (batch,):
            raise ValueError(f"event_prob must be ({batch},), got {tuple(event_prob.shape)}")
        if self.flow_encoder is not None:
            expected = (batch, 2, *frames.shape[-2:])
            if flow is None or tuple(flow.shape) != expected:
                got = None if flow is None else tuple(flow.shape)
                raise ValueError(f"this STA network uses optical flow: expected flow {expected}, got {got}")
        return batch

    @staticmethod
    def _centre(level: Tensor, batch: int) -> Tensor:
        return level.view(batch, 3, *level.shape[1:])[:, 1]

    @staticmethod
    def _upsample(x: Tensor, like: Tensor) -> Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


# --- loss and validation scores (batched; one value per sample unless reduced) ----------------------
# CC and KLD for validation come from `models.metrics` (the evaluate stage's definitions); the KL term
# of the loss below is the differentiable float32 form of SPEC §9.

EPS = 1e-7


def _as_distribution(maps: Tensor) -> Tensor:
    flat = maps.flatten(1).clamp_min(0)
    return flat / flat.sum(dim=1, keepdim=True).clamp_min(EPS)


def kl_divergence(prediction: Tensor, target: Tensor) -> Tensor:
    """(B,) KL(target ‖ prediction) of maps (B, H, W) normalised to sum 1 (SPEC §9's KLD term):
    Σ g·log(ε + g / (p + ε))."""
    p, g = _as_distribution(prediction.float()), _as_distribution(target.float())
    return (g * torch.log(EPS + g / (p + EPS))).sum(dim=1)


def weighted_nss(prediction: Tensor, target: Tensor) -> Tensor:
    """(B,) NSS against a continuous target: the mean of the z-scored prediction weighted by the target.

    With a binary fixation map as target this is the usual NSS (mean z-score at the fixated pixels,
    `models.metrics.nss`); a pseudo-GT is soft, so each pixel counts in proportion to its value. The
    z-score uses the N − 1 standard deviation as MATLAB's `std`; a constant prediction or an all-zero
    target gives NaN, as the MIT code does.
    """
    p = prediction.double().flatten(1)
    g = target.double().flatten(1).clamp_min(0)
    constant = p.amax(dim=1, keepdim=True) == p.amin(dim=1, keepdim=True)
    std = torch.where(constant, torch.nan, p.std(dim=1, keepdim=True))
    z = (p - p.mean(dim=1, keepdim=True)) / std
    return (z * g).sum(dim=1) / g.sum(dim=1)


class LossTerms(NamedTuple):
    total: Tensor
    bce: Tensor
    kl: Tensor
    switch: Tensor


def sta_loss(output: STAOutput, pseudo_gt: Tensor, event_target: Tensor, has_audio: Tensor,
             weights: LossWeights) -> LossTerms:  # fmt: skip
    """BCE-with-logits against the soft pseudo-GT of frame t (SPEC §4.3, §8.5-8.6), optional KL term
    (SPEC §9), and the switch cross-entropy against the stored event decision.

    Every term is a mean over the batch with the batch size as denominator (the switch term counts
    only samples with audio but still divides by B), so averaging gradients over DDP processes equals
    the gradient of one process on the combined batch.
    """
    logits = output.saliency_logits.float()
    target = pseudo_gt.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    zero = logits.new_zeros(())
    kl = kl_divergence(torch.sigmoid(logits), target).mean() if weights.kl > 0 else zero
    per_sample = F.cross_entropy(output.switch_logits.float(), event_target.long(), reduction="none")
    switch = (per_sample * has_audio.float()).sum() / max(per_sample.shape[0], 1)
    total = bce + weights.kl * kl + weights.switch * switch
    return LossTerms(total, bce.detach(), kl.detach(), switch.detach())


# --- inference post-processing (SPEC §4.6) ------------------------------------------------------------

GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """(B, H, W) blurred as `scipy.ndimage.gaussian_filter(map, sigma)` per map: a kernel of radius
    int(4σ + 0.5), separable, with scipy's default 'reflect' border (the edge sample repeated)."""
    if sigma <= 0:
        return maps
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    height, width = maps.shape[-2:]
    rows = _reflect_index(height, radius, maps.device)
    cols = _reflect_index(width, radius, maps.device)
    padded = maps.index_select(-2, rows).index_select(-1, cols).unsqueeze(1)
    blurred = F.conv2d(padded, kernel.view(1, 1, -1, 1))
    return F.conv2d(blurred, kernel.view(1, 1, 1, -1)).squeeze(1)


def _reflect_index(length: int, pad: int, device: torch.device) -> Tensor:
    """Source index of each padded position for 'reflect' (d c b a | a b c d | d c b a), any pad."""
    period = torch.remainder(torch.arange(-pad, length + pad, device=device), 2 * length)
    return torch.where(period < length, period, 2 * length - 1 - period)


def postprocess_saliency(probability: Tensor, out_hw: tuple[int, int],
                         sigma_at_paper_size: float = PAPER_BLUR_SIGMA) -> Tensor:
    """Sigmoid outputs (B, S, S) → uint8 maps (B, H, W) at the source size, as SPEC §4.6:
    quantise to 8 bits, Gaussian blur (σ = 7 at 356 px, scaled with the map size), divide by the
    maximum (an all-zero map stays zero), resize (bilinear) to the source frame size."""
    maps = torch.floor(probability.float() * 255.0) / 255.0
    sigma = sigma_at_paper_size * maps.shape[-1] / PAPER_MAP_SIZE
    maps = gaussian_blur(maps, sigma)
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    maps = torch.where(peak > 0, maps / peak.clamp_min(1e-12), torch.zeros_like(maps)) * 255.0
    if tuple(maps.shape[-2:]) != tuple(out_hw):
        maps = F.interpolate(maps.unsqueeze(1), size=tuple(out_hw), mode="bilinear", align_corners=False).squeeze(1)
    return maps.round().clamp(0, 255).to(torch.uint8)
