"""Audio encoder on the per-frame log-spectrogram (SPEC §1.3) and the audio-only event classifier (§1.4).

The encoder is the VGGSound ResNet-18: a 1-channel 7x7/2 stem, BasicBlock stages [2, 2, 2, 2], and
optionally NetVLAD pooling (16 clusters x 512 = 8192-d). For a (1, 257, 48) spectrogram the layer-4 map
is 512 x 9 x 2. Parameter names follow torchvision's ResNet, so a VGGSound (AVENet) checkpoint maps onto
it by renaming a few prefixes (`load_vggsound_checkpoint`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from models.config import VGGSOUND_CLUSTERS, VGGSOUND_WIDTH, AudioEncoderConfig  # noqa: F401 - re-exported
from models.weights import load_matching_state_dict, read_state_dict

log = logging.getLogger(__name__)

class AudioFeatures(NamedTuple):
    feature_map: Tensor  # (B, 8*width, h, w): layer-4 map, 9 x 2 for a 257 x 48 input
    embedding: Tensor    # (B, embedding_dim): pooled vector


class NetVLAD(nn.Module):
    """NetVLAD pooling (Arandjelović et al. 2016): soft-assigned residuals to learned centroids,
    intra-normalised per cluster, flattened, then L2-normalised globally."""

    def __init__(self, n_clusters: int, dim: int, alpha: float) -> None:
        super().__init__()
        self.n_clusters = n_clusters
        self.dim = dim
        self.conv = nn.Conv2d(dim, n_clusters, kernel_size=1, bias=True)
        self.centroids = nn.Parameter(torch.rand(n_clusters, dim))
        # Start from assignments by distance to the centroids: ||x - c||^2 differs from
        # -2 x.c + ||c||^2 only by a per-descriptor constant that the softmax ignores.
        with torch.no_grad():
            self.conv.weight.copy_((2.0 * alpha * self.centroids)[:, :, None, None])
            self.conv.bias.copy_(-alpha * self.centroids.norm(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        descriptors = F.normalize(x, p=2, dim=1)
        assignment = self.conv(descriptors).flatten(2).softmax(dim=1)  # (B, K, N)
        flat = descriptors.flatten(2)                                   # (B, D, N)
        # sum_n a_kn (x_n - c_k) = (sum_n a_kn x_n) - c_k sum_n a_kn, without a (B, K, D, N) tensor.
        weighted_sum = torch.einsum("bkn,bdn->bkd", assignment, flat)
        vlad = weighted_sum - assignment.sum(dim=2, keepdim=True) * self.centroids.unsqueeze(0)
        vlad = F.normalize(vlad, p=2, dim=2)
        return F.normalize(vlad.flatten(1), p=2, dim=1)


class AudioEncoder(nn.Module):
    """ResNet-18 on (B, 1, F, T) log-spectrograms -> layer-4 map and pooled embedding."""

    def __init__(self, config: AudioEncoderConfig = AudioEncoderConfig()) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.conv1 = nn.Conv2d(1, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(width, width, stride=1)
        self.layer2 = self._stage(width, 2 * width, stride=2)
        self.layer3 = self._stage(2 * width, 4 * width, stride=2)
        self.layer4 = self._stage(4 * width, 8 * width, stride=2)
        self.map_channels = 8 * width
        self.netvlad: NetVLAD | None = None
        if config.pooling == "netvlad":
            self.netvlad = NetVLAD(config.netvlad_clusters, self.map_channels, config.netvlad_alpha)
            self.embedding_dim = config.netvlad_clusters * self.map_channels
        elif config.pooling == "avg":
            self.embedding_dim = self.map_channels
        else:
            raise ValueError(f"unknown audio pooling {config.pooling!r}; use 'avg' or 'netvlad'")
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not getattr(self.netvlad, "conv", None):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        return nn.Sequential(BasicBlock(in_channels, out_channels, stride, downsample),
                             BasicBlock(out_channels, out_channels))

    def forward(self, spectrogram: Tensor) -> AudioFeatures:
        """spectrogram: (B, 1, F, T) or (B, F, T) standardised log-spectrogram (SPEC §1.3)."""
        if spectrogram.dim() == 3:
            spectrogram = spectrogram.unsqueeze(1)
        if spectrogram.dim() != 4 or spectrogram.shape[1] != 1:
            raise ValueError(f"audio encoder expects (B, 1, F, T) or (B, F, T), got {tuple(spectrogram.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(spectrogram))))
        feature_map = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.netvlad is not None:
            embedding = self.netvlad(feature_map)
        else:
            embedding = feature_map.mean(dim=(2, 3))
        return AudioFeatures(feature_map, embedding)


def _vggsound_to_encoder_names(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """AVENet names (`audnet.conv1...`, `audnet.avgpool.*` = NetVLAD, `audnet.fc_.*` = 309-way head)
    -> this encoder's names, with the head split off."""
    encoder_state: dict[str, Tensor] = {}
    head_state: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("audnet."):
            key = key[len("audnet."):]
        if key.startswith("fc_.") or key.startswith("fc."):
            head_state[key.split(".", 1)[1]] = value
        elif key.startswith("avgpool."):
            encoder_state["netvlad." + key[len("avgpool."):]] = value
        else:
            encoder_state[key] = value
    return encoder_state, head_state


def load_vggsound_checkpoint(encoder: AudioEncoder, path: str | Path) -> nn.Linear | None:
    """Load a VGGSound ResNet-18 checkpoint (AVENet naming, `checkpoint['model_state_dict']`, optional
    `module.` prefix) or a state dict saved from an `AudioEncoder` into `encoder`.

    Returns the checkpoint's classifier head (e.g. 8192 -> 309 VGGSound classes) when it has one.
    NetVLAD weights are dropped with a warning when `encoder` pools by averaging (only the trunk is used).
    Raises FileNotFoundError for a missing file and ValueError naming mismatching keys otherwise.
    """
    state, head_state = _vggsound_to_encoder_names(read_state_dict(path))
    if encoder.netvlad is None and any(k.startswith("netvlad.") for k in state):
        log.warning("%s: NetVLAD weights ignored, the encoder uses average pooling "
                    "(build it with pooling='netvlad' to use them)", path)
        state = {k: v for k, v in state.items() if not k.startswith("netvlad.")}
    load_matching_state_dict(encoder, state, source=path,
                             target=f"audio encoder (ResNet-18 width {encoder.config.width}, "
                                    f"{encoder.config.pooling} pooling)")
    if {"weight", "bias"} <= head_state.keys():
        weight = head_state["weight"]
        head = nn.Linear(weight.shape[1], weight.shape[0])
        head.load_state_dict({"weight": weight, "bias": head_state["bias"]})
        return head
    return None


class AudioEventClassifier(nn.Module):
    """Audio-only classifier over the N tag classes; decides whether a frame's sound is event-related.

    Replaces the VGGSound keyword match + 2-way switch of SPEC §1.4: a frame's audio is event-related
    when P(video's tag | audio) >= threshold. Returns logits (trained with cross-entropy); the softmax is
    taken only at use (fix of the double softmax, SPEC §8.4).
    """

    def __init__(self, n_classes: int, encoder: AudioEncoder | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else AudioEncoder()
        self.n_classes = n_classes
        self.fc = nn.Linear(self.encoder.embedding_dim, n_classes)

    def forward(self, spectrogram: Tensor) -> Tensor:
        return self.fc(self.encoder(spectrogram).embedding)

    def event_probability(self, spectrogram: Tensor, class_index: Tensor) -> Tensor:
        """(B,) probability of each sample's tag class `class_index` (B,) given its audio."""
        probs = self.forward(spectrogram).softmax(dim=1)
        return probs.gather(1, class_index.long().view(-1, 1)).squeeze(1)


def event_related(event_prob: Tensor, threshold: float = 0.5) -> Tensor:
    """Boolean (B,) decision from `AudioEventClassifier.event_probability`."""
    return event_prob >= threshold


# SPEC §1.4(a): the keyword of an AVE category that must appear in the VGGSound top-1 class name.
# Categories not listed use their own lower-cased name.
AVE_TAG_KEYWORDS: dict[str, str] = {
    "acoustic guitar": "guitar",
    "baby cry, infant cry": "cry",
    "church bell": "bell",
    "female speech, woman speaking": "speech",
    "fixed-wing aircraft, airplane": "airplane",
    "frying (food)": "food",
    "male speech, man speaking": "speaking",
    "race car, auto racing": "car",
    "rodents, rats, mice": "rats",
    "toilet flush": "flush",
    "train horn": "horn",
    "violin, fiddle": "violin",
}


def tag_keyword(tag: str) -> str:
    """The keyword looked for in VGGSound class names for a tag (SPEC §1.4a)."""
    name = tag.strip().lower()
    return AVE_TAG_KEYWORDS.get(name, name)


class KeywordEventScorer(nn.Module):
    """P(event-related audio) from a pretrained VGGSound classifier, as SPEC §1.4(a) decides it.

    The original marks a frame event-related when the VGGSound top-1 class name contains the tag's
    keyword. To give a probability rather than a yes/no, this returns the summed softmax probability
    of every VGGSound class whose name contains the keyword; with a 0.5 threshold that agrees with the
    top-1 rule whenever the matching classes dominate.
    """

    def __init__(self, encoder: AudioEncoder, head: nn.Linear, source_classes: list[str], tags: list[str]) -> None:
        super().__init__()
        if head.out_features != len(source_classes):
            raise ValueError(f"the classifier head has {head.out_features} outputs but {len(source_classes)} "
                             "class names were given")
        self.encoder = encoder
        self.head = head
        names = [name.lower() for name in source_classes]
        keywords = [tag_keyword(tag) for tag in tags]
        match = torch.tensor([[keyword in name for name in names] for keyword in keywords], dtype=torch.float32)
        self.register_buffer("match", match, persistent=False)  # (n_tags, n_source_classes)
        self.unmatched_tags = [tag for tag, row in zip(tags, match) if not bool(row.any())]

    def forward(self, spectrogram: Tensor) -> Tensor:
        return self.head(self.encoder(spectrogram).embedding)

    def event_probability(self, spectrogram: Tensor, class_index: Tensor) -> Tensor:
        probs = self.forward(spectrogram).softmax(dim=1)
        return (probs * self.match[class_index.long()]).sum(dim=1)
