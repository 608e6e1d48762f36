"""The STA network, its loss and scores, the shared augmentation and the SPEC §4.6 post-processing."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from models import metrics
from models.audio_encoder import AudioEncoderConfig
from models.backbones import build_backbone
from models.sta import (
    LossWeights, STAConfig, STANet, gaussian_blur, kl_divergence, postprocess_saliency, sta_loss, weighted_nss,
)  # fmt: skip
from pipeline.train.augment import AugmentConfig, augment_batch, draw_affine, identity_affine, resize_flow

TINY = STAConfig(width=8, audio_channels=8, switch_hidden=16, flow_channels=4,
                 audio_encoder=AudioEncoderConfig(width=8))


def tiny_sta(use_flow: bool = False, seed: int = 0) -> STANet:
    torch.manual_seed(seed)
    config = STAConfig(**{**TINY.to_dict(), "use_flow": use_flow, "audio_encoder": TINY.audio_encoder})
    return STANet(config, build_backbone("tiny"))


def inputs(batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.rand(batch, 3, 3, size, size, generator=g),
        "spectrogram": torch.randn(batch, 257, 48, generator=g),
        "has_audio": torch.tensor([True] * (batch - 1) + [False]),
    }


@pytest.mark.parametrize("size", [64, 96, 70])
def test_output_sizes_derive_from_the_input_size(size):
    model = tiny_sta(use_flow=True)
    batch = inputs(2, size)
    flow = torch.zeros(2, 2, size, size)
    out = model(batch["frames"], batch["spectrogram"], batch["has_audio"], None, flow)
    assert out.saliency_logits.shape == (2, size, size) and out.saliency_logits.dtype == torch.float32
    assert out.switch_logits.shape == (2, 2) and out.gate.shape == (2,)
    out.saliency_logits.mean().backward()  # the graph reaches the backbone at every size
    assert model.backbone.stem[0][0].weight.grad is not None


def test_gate_is_teacher_forced_or_the_heads_probability_and_zero_without_audio():
    model = tiny_sta().eval()
    batch = inputs(3, 64)
    event_prob = torch.tensor([0.2, 0.9, 0.7])
    with torch.no_grad():
        forced = model(batch["frames"], batch["spectrogram"], batch["has_audio"], event_prob)
        own = model(batch["frames"], batch["spectrogram"], batch["has_audio"], None)
    torch.testing.assert_close(forced.gate, torch.tensor([0.2, 0.9, 0.0]))
    expected = torch.softmax(own.switch_logits, dim=1)[:, 1] * torch.tensor([1.0, 1.0, 0.0])
    torch.testing.assert_close(own.gate, expected)
    # The gate changes the map only where the audio branch is switched on.
    assert not torch.allclose(forced.saliency_logits[:2], own.saliency_logits[:2])
    torch.testing.assert_close(forced.saliency_logits[2], own.saliency_logits[2])


def test_bad_inputs_are_clear_errors():
    model = tiny_sta(use_flow=True)
    batch = inputs(2, 64)
    with pytest.raises(ValueError, match=r"uses optical flow: expected flow \(2, 2, 64, 64\), got None"):
        model(batch["frames"], batch["spectrogram"], batch["has_audio"])
    with pytest.raises(ValueError, match=r"expects frames \(B, 3 frames, 3, H, W\)"):
        model(batch["frames"][:, 0], batch["spectrogram"], batch["has_audio"])


def blob_targets(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, 2, generator=g) * 0.6 + 0.2
    coords = (torch.arange(size) + 0.5) / size
    dy = coords.view(1, -1, 1) - centres[:, 0].view(-1, 1, 1)
    dx = coords.view(1, 1, -1) - centres[:, 1].view(-1, 1, 1)
    return torch.exp(-(dy**2 + dx**2) / (2 * 0.08**2))


def test_loss_goes_down_on_a_fixed_batch():
    model = tiny_sta()
    batch = inputs(4, 64)
    target = blob_targets(4, 64)
    # Bright squares where the target is: something the network can learn to see.
    batch["frames"] = batch["frames"] * 0.3 + 0.7 * (target > 0.5).float().view(4, 1, 1, 64, 64)
    event = torch.tensor([0.1, 0.8, 0.6, 0.0])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        out = model(batch["frames"], batch["spectrogram"], batch["has_audio"], event)
        terms = sta_loss(out, target, event >= 0.5, batch["has_audio"], LossWeights(kl=0.1))
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(float(terms.total.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_loss_terms_against_hand_computation():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 1.0]], [[3.0, -2.0], [0.5, 0.0]]])
    target = torch.tensor([[[0.0, 1.0], [0.5, 0.25]], [[1.0, 0.0], [0.0, 0.5]]])
    switch_logits = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    from models.sta import STAOutput

    out = STAOutput(logits, switch_logits, torch.zeros(2))
    has_audio = torch.tensor([True, False])
    terms = sta_loss(out, target, torch.tensor([True, True]), has_audio, LossWeights(kl=0.5, switch=2.0))

    def sigmoid(v: float) -> float:
        return 1 / (1 + math.exp(-v))

    pairs = list(zip(logits.flatten().tolist(), target.flatten().tolist()))
    bce = -sum(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)) for x, t in pairs) / len(pairs)
    # Sample 0 has audio and target class 1; sample 1 has no audio: it counts as zero but still divides.
    ce0 = -math.log(math.exp(-1.0) / (math.exp(2.0) + math.exp(-1.0)))
    switch = ce0 / 2
    kl = 0.0
    for b in range(2):
        p = [sigmoid(v) for v in logits[b].flatten().tolist()]
        g = target[b].flatten().tolist()
        p = [v / sum(p) for v in p]
        g = [v / sum(g) for v in g]
        kl += sum(gi * math.log(1e-7 + gi / (pi + 1e-7)) for gi, pi in zip(g, p)) / 2
    assert float(terms.bce) == pytest.approx(bce, rel=1e-5)
    assert float(terms.switch) == pytest.approx(switch, rel=1e-5)
    assert float(terms.kl) == pytest.approx(kl, rel=1e-4)
    assert float(terms.total) == pytest.approx(bce + 0.5 * kl + 2.0 * switch, rel=1e-5)
    torch.testing.assert_close(kl_divergence(torch.sigmoid(logits), target).mean(), terms.kl)


def test_weighted_nss_is_nss_for_a_binary_target_and_weights_a_soft_one():
    g = torch.Generator().manual_seed(1)
    prediction = torch.rand(3, 16, 16, generator=g)
    fixations = torch.rand(3, 16, 16, generator=g) > 0.9
    torch.testing.assert_close(weighted_nss(prediction, fixations.float()), metrics.nss(prediction, fixations))
    soft = torch.zeros(1, 16, 16)
    soft[0, 2, 3], soft[0, 5, 5] = 1.0, 3.0
    z = (prediction[0] - prediction[0].mean()) / prediction[0].std()
    expected = (z[2, 3] + 3 * z[5, 5]) / 4
    assert float(weighted_nss(prediction[:1], soft)) == pytest.approx(float(expected), rel=1e-6)
    assert math.isnan(float(weighted_nss(torch.ones(1, 16, 16), soft)))  # constant map, as MIT's NSS


def marker_frames(batch: int, size: int, spots: list[tuple[int, int]]) -> torch.Tensor:
    """uint8 (B, 3, size, size, 3) with a 2x2 white marker at spots[k] (top-left pixel) in frame k."""
    frames = torch.zeros(batch, 3, size, size, 3, dtype=torch.uint8)
    for k, (y, x) in enumerate(spots):
        frames[:, k, y : y + 2, x : x + 2] = 255
    return frames


def centroids(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) → (N, 2) brightness-weighted (y, x) centre in pixel-index coordinates."""
    n, height, width = maps.shape
    ys = torch.arange(height, dtype=torch.float64).view(1, -1, 1)
    xs = torch.arange(width, dtype=torch.float64).view(1, 1, -1)
    weights = maps.double().clamp_min(0)
    total = weights.sum(dim=(1, 2))
    return torch.stack([(weights * ys).sum(dim=(1, 2)) / total, (weights * xs).sum(dim=(1, 2)) / total], dim=1)


def expected_output_position(theta: torch.Tensor, point_yx_pixels: tuple[float, float], in_size: int,
                             out_size: int) -> np.ndarray:
    """Where a point of the input lands in the output, by inverting θ by hand (numpy, per sample)."""
    y, x = point_yx_pixels
    m = np.array([(x + 0.5) * 2 / in_size - 1, (y + 0.5) * 2 / in_size - 1])  # normalised (x, y)
    out = []
    for a in theta.double().numpy():
        p = np.linalg.solve(a[:, :2], m - a[:, 2])
        out.append([(p[1] + 1) * out_size / 2 - 0.5, (p[0] + 1) * out_size / 2 - 0.5])
    return np.array(out)


def test_shared_augmentation_keeps_frames_and_target_aligned():
    batch, size, map_size, out_size = 16, 64, 32, 48
    frames = marker_frames(batch, size, [(30, 34)] * 3)
    target = torch.zeros(batch, map_size, map_size)
    target[:, 15, 17] = 1.0  # the same place at half the resolution: frame pixels 30-31 x 34-35
    theta = draw_affine(batch, AugmentConfig(), torch.Generator().manual_seed(3))
    assert (theta[:, 0, 0] < 0).any() and (theta[:, 0, 0] > 0).any()  # both flipped and unflipped samples
    assert theta[:, 1, 0].abs().max() > 0.05  # rotations
    out = augment_batch(frames, target, theta, out_size)
    assert out.frames.shape == (batch, 3, 3, out_size, out_size) and out.pseudo_gt.shape == (batch, out_size, out_size)
    expected = expected_output_position(theta, (30.5, 34.5), size, out_size)
    for k in range(3):
        np.testing.assert_allclose(centroids(out.frames[:, k].mean(dim=1)).numpy(), expected, atol=0.3)
    np.testing.assert_allclose(centroids(out.pseudo_gt).numpy(), expected, atol=0.3)


def test_flow_vectors_follow_the_augmentation():
    batch, size, out_size = 16, 64, 64
    motion = (6.0, -4.0)  # (dx, dy): the marker moves from frame t-1 to frame t
    frames = marker_frames(batch, size, [(30, 30), (26, 36), (26, 36)])
    # Stored flow of frame t: frame[t-1](y, x) ≈ frame[t](y + dy, x + dx), on a half-size grid.
    flow = torch.empty(batch, 2, size // 2, size // 2)
    flow[:, 0], flow[:, 1] = motion
    theta = draw_affine(batch, AugmentConfig(), torch.Generator().manual_seed(5))
    out = augment_batch(frames, torch.zeros(batch, 8, 8), theta, out_size, flow)
    moved = centroids(out.frames[:, 1].mean(dim=1)) - centroids(out.frames[:, 0].mean(dim=1))  # (y, x)
    at_marker = out.flow[:, :, out_size // 2, out_size // 2]  # a uniform field: any inside point
    np.testing.assert_allclose(at_marker[:, [1, 0]].numpy(), moved.numpy(), atol=0.3)
    # Without augmentation the field is only resized and rescaled.
    plain = augment_batch(frames, torch.zeros(batch, 8, 8), identity_affine(batch), 32, flow)
    torch.testing.assert_close(plain.flow, resize_flow(flow, (size, size), 32))
    torch.testing.assert_close(plain.flow[:, 0], torch.full((batch, 32, 32), 3.0))


def test_gaussian_blur_matches_scipy():
    g = torch.Generator().manual_seed(0)
    for sigma, shape in [(1.26, (64, 64)), (7.0, (40, 30)), (3.0, (5, 9))]:
        maps = torch.rand(2, *shape, generator=g, dtype=torch.float64)
        expected = np.stack([scipy.ndimage.gaussian_filter(m, sigma) for m in maps.numpy()])
        np.testing.assert_allclose(gaussian_blur(maps, sigma).numpy(), expected, atol=1e-12)


def test_postprocess_follows_spec_4_6():
    """Against the original's steps: floor(p·255)/255, scipy σ = 7·S/356, /max·255, cv2.resize."""
    size, out_hw = 64, (47, 81)
    probability = torch.sigmoid(3 * blob_targets(3, size) - 1.5).double()
    got = postprocess_saliency(probability, out_hw)
    assert got.shape == (3, *out_hw) and got.dtype == torch.uint8
    for k in range(3):
        p = np.floor(probability[k].numpy() * 255) / 255
        p = scipy.ndimage.gaussian_filter(p, sigma=7 * size / 356)
        p = p / p.max() * 255
        expected = cv2.resize(p, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
        assert np.abs(got[k].numpy().astype(float) - expected).max() <= 1.0
        assert got[k].max() >= 250  # the peak itself may fall between output pixels
    assert postprocess_saliency(torch.zeros(1, size, size), out_hw).max() == 0  # no division by zero


def test_augment_config_rejects_bad_values():
    with pytest.raises(ValueError, match="crop_fraction"):
        AugmentConfig(crop_fraction=1.5)


def test_warp_with_identity_is_a_resize():
    frames = torch.randint(0, 255, (2, 3, 32, 32, 3), dtype=torch.uint8)
    out = augment_batch(frames, torch.rand(2, 32, 32), identity_affine(2), 32)
    torch.testing.assert_close(out.frames, frames.movedim(-1, -3).float() / 255, atol=1e-5, rtol=0)
    resized = augment_batch(frames, torch.rand(2, 16, 16), identity_affine(2), 64).frames
    reference = F.interpolate(frames.movedim(-1, -3).float().flatten(0, 1) / 255, size=(64, 64), mode="bilinear",
                              align_corners=False).view(2, 3, 3, 64, 64)  # fmt: skip
    # grid_sample pads with zeros beyond the border, interpolate clamps: compare the interior.
    torch.testing.assert_close(resized[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
