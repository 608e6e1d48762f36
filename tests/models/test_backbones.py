"""Visual backbones by name and their weights: local files in the layouts people have, clear errors otherwise."""

from __future__ import annotations

import pytest
import torch
import torchvision

from models.backbones import available_backbones, build_backbone
from models.weights import read_state_dict


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision ResNet-18 state dict with recognisable (random) weights."""
    torch.manual_seed(3)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_torchvision_state_dict_loads_with_its_imagenet_head(resnet18_file):
    path, net = resnet18_file
    backbone = build_backbone("resnet18", path).eval()
    torch.testing.assert_close(backbone.layer3[0].conv1.weight, net.layer3[0].conv1.weight)
    assert backbone.imagenet_classifier is net.fc or torch.equal(backbone.imagenet_classifier.weight, net.fc.weight)
    x = torch.rand(2, 3, 64, 64)
    levels = backbone.forward_levels(backbone.normalize(x))
    assert {k: tuple(v.shape) for k, v in levels.items()} == {
        "stride8": (2, 128, 8, 8), "stride16": (2, 256, 4, 4), "stride32": (2, 512, 2, 2)
    }  # fmt: skip
    with torch.no_grad():
        net.eval()
        expected = net(backbone.normalize(x))
        got = backbone.imagenet_classifier(levels["stride32"].mean(dim=(2, 3)))
    torch.testing.assert_close(got, expected)


def test_wrapped_pickled_and_ddp_prefixed_checkpoints_read_the_same(resnet18_file, tmp_path):
    path, net = resnet18_file
    plain = read_state_dict(path)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, tmp_path / "ddp.pth")
    torch.save(net, tmp_path / "whole_model.pt")  # what the original STANet scripts saved
    for other in (tmp_path / "ddp.pth", tmp_path / "whole_model.pt"):
        loaded = read_state_dict(other)
        assert loaded.keys() == plain.keys()
        assert all(torch.equal(loaded[k], plain[k]) for k in plain)


def test_feature_only_checkpoint_loads_without_a_head(resnet18_file, tmp_path):
    _, net = resnet18_file
    torch.save({k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}, tmp_path / "trunk.pth")
    backbone = build_backbone("resnet18", tmp_path / "trunk.pth")
    assert backbone.imagenet_classifier is None


def test_missing_mismatched_and_forgotten_weights_are_clear_errors(resnet18_file, tmp_path):
    path, _ = resnet18_file
    with pytest.raises(FileNotFoundError, match="weights file not found for backbone 'resnet50': .*nope.pth"):
        build_backbone("resnet50", tmp_path / "nope.pth")
    with pytest.raises(ValueError, match=r"resnet18.pth: weights do not match backbone 'resnet50' \(missing keys: "):
        build_backbone("resnet50", path)
    with pytest.raises(ValueError, match="backbone 'resnext101_32x8d' needs pretrained weights: pass a local weights file"):
        build_backbone("resnext101_32x8d")
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'; available: efficientnet_lite0, resnet18"):
        build_backbone("vgg16")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: cannot be read as a PyTorch weights file"):
        build_backbone("resnet18", tmp_path / "junk.pth")
    assert "resnext101_32x8d" in available_backbones()


def test_random_init_only_when_asked(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ValueError, match="either a weights file or random_init=True, not both"):
        build_backbone("resnet18", path, random_init=True)
    assert build_backbone("resnet18", random_init=True).imagenet_classifier is None


def test_packaged_efficientnet_lite0_loads_with_tensorflow_preprocessing():
    backbone = build_backbone("efficientnet_lite0").eval()
    assert backbone.level_channels == {"stride8": 40, "stride16": 112, "stride32": 1280}
    # The converted TF-lite weights expect (pixel - 127) / 128 on 0..255 pixels, not ImageNet mean/std.
    grey = torch.full((1, 3, 8, 8), 127 / 255)
    assert torch.allclose(backbone.normalize(grey), torch.zeros(1)) and torch.allclose(
        backbone.normalize(torch.ones(1, 3, 8, 8)), torch.full((1,), 1.0)
    )
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        levels = backbone.forward_levels(backbone.normalize(x))
        logits = backbone.imagenet_classifier(levels["stride32"].mean(dim=(2, 3)))
    assert levels["stride32"].shape == (2, 1280, 7, 7) and levels["stride8"].shape == (2, 40, 28, 28)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    # Pretrained (not random) weights: a noise image does not give a near-uniform class distribution.
    assert float(logits.softmax(1).max()) > 10 / 1000
