"""SCAM: the S/ST/SA classifiers, CAMs, fusion, selection, crop/paste, smoothing and thresholding.

Batched implementations are checked against per-sample loops written independently here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.audio_encoder import AudioEncoderConfig
from models.backbones import build_backbone
from models.blocks import ReceptiveFieldBlock
from models.cam import class_activation_maps
from models.classifiers import Branch, ClassifierConfig, SCAMClassifier, Stage
from models.selection import (
    crop_and_resize, paste_back, probability_weighted_fusion, scale_boxes, selection_boxes, temporal_smooth,
    threshold_pseudo_gt,
)  # fmt: skip

N_CLASSES = 5
TINY_AUDIO = AudioEncoderConfig(width=8)


def loop_minmax(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    return np.zeros_like(m) if span == 0 else (m - m.min()) / span


def make_classifier(branch: str, stage: str, seed: int = 0) -> SCAMClassifier:
    torch.manual_seed(seed)
    config = ClassifierConfig(branch, stage, N_CLASSES, audio_encoder=TINY_AUDIO)
    return SCAMClassifier(config, build_backbone("tiny")).eval()


def inputs(branch: str, batch: int = 2, size: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand((batch, 3, 3, size, size) if branch == "ST" else (batch, 3, size, size), generator=g)
    spectrogram = torch.randn(batch, 1, 257, 48, generator=g)
    event_prob = torch.rand(batch, generator=g)
    return frames, spectrogram, event_prob


# ---------------------------------------------------------------- classifiers

EXPECTED_CAM_CHANNELS = {  # tiny backbone: stride-32 map has 64 channels
    ("S", "coarse"): 128, ("S", "fine"): 64, ("ST", "coarse"): 64, ("ST", "fine"): 64,
    ("SA", "coarse"): 128, ("SA", "fine"): 64,
}


@pytest.mark.parametrize("branch,stage", sorted(EXPECTED_CAM_CHANNELS))
def test_classifier_outputs_logits_and_the_pooled_cam_features(branch, stage):
    model = make_classifier(branch, stage)
    frames, spectrogram, event_prob = inputs(branch)
    with torch.no_grad():
        out = model(frames, spectrogram, event_prob)
    assert out.logits.shape == (2, N_CLASSES) and out.logits.dtype == torch.float32
    assert out.cam_features.shape == (2, EXPECTED_CAM_CHANNELS[(branch, stage)], 2, 2)
    # The logits are exactly the final Linear applied to the global average of cam_features.
    expected_logits = out.cam_features.mean(dim=(2, 3)) @ model.fc.weight.T + model.fc.bias
    torch.testing.assert_close(out.logits, expected_logits)
    if branch == "SA":
        assert out.audio_attention.shape == (2, 1, 2, 2)
        assert (out.audio_attention >= 0).all() and (out.audio_attention <= 1).all()
    else:
        assert out.audio_attention is None


@pytest.mark.parametrize("branch,stage", sorted(EXPECTED_CAM_CHANNELS))
def test_a_headless_classifier_on_cached_maps_equals_the_whole_classifier(branch, stage):
    """The frozen-backbone path: the backbone's maps computed apart (once per frame), and for SA the
    audio embedding too, give the same logits and CAM features through a classifier with no backbone
    and no audio encoder that holds the same head weights."""
    whole = make_classifier(branch, stage)
    frames, spectrogram, event_prob = inputs(branch)
    backbone = whole.backbone
    embedding_dim = whole.audio_encoder.embedding_dim if branch == "SA" else None
    config = ClassifierConfig(branch, stage, N_CLASSES, audio_encoder=TINY_AUDIO, audio_embedding_dim=embedding_dim)
    head = SCAMClassifier(config, None, backbone_channels=backbone.out_channels).eval()
    own = {k: v for k, v in whole.state_dict().items() if not k.startswith(("backbone.", "audio_encoder."))}
    head.load_state_dict(own, strict=True)  # exactly the head's parameters
    with torch.no_grad():
        expected = whole(frames, spectrogram, event_prob)
        maps = backbone(backbone.normalize(frames.flatten(0, 1) if branch == "ST" else frames))
        if branch == "ST":
            maps = maps.view(frames.shape[0], 3, *maps.shape[1:])
        embedding = whole.audio_encoder(spectrogram).embedding if branch == "SA" else None
        got = head.forward_maps(maps, None, event_prob, audio_embedding=embedding)
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.cam_features, expected.cam_features)
    with pytest.raises(ValueError, match="no backbone: call forward_maps"):
        head(frames, spectrogram, event_prob)


@pytest.mark.parametrize("branch", ["S", "ST", "SA"])
def test_classifier_batch_equals_one_sample_at_a_time(branch):
    model = make_classifier(branch, "coarse")
    frames, spectrogram, event_prob = inputs(branch, batch=3)
    with torch.no_grad():
        batched = model(frames, spectrogram, event_prob)
        for i in range(3):
            single = model(frames[i:i + 1], spectrogram[i:i + 1], event_prob[i:i + 1])
            torch.testing.assert_close(batched.logits[i:i + 1], single.logits, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(batched.cam_features[i:i + 1], single.cam_features, rtol=1e-4, atol=1e-5)


def test_st_classifier_uses_all_three_frames_in_order():
    model = make_classifier("ST", "coarse")
    frames, _, _ = inputs("ST", batch=1)
    with torch.no_grad():
        reference = model(frames).logits
        swapped = model(frames[:, [2, 1, 0]]).logits          # t-1 and t+1 exchanged
        neighbours_changed = model(torch.cat([torch.rand(1, 1, 3, 64, 64), frames[:, 1:2],
                                              torch.rand(1, 1, 3, 64, 64)], dim=1)).logits
    assert not torch.allclose(reference, swapped)
    assert not torch.allclose(reference, neighbours_changed)


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_sa_event_probability_switches_the_audio_gate(stage):
    model = make_classifier("SA", stage)
    frames, spectrogram, _ = inputs("SA")
    other_audio = torch.randn_like(spectrogram)
    off = torch.zeros(2)
    on = torch.ones(2)
    with torch.no_grad():
        # p = 0: V' = ReLU(V) whatever the audio says.
        torch.testing.assert_close(model(frames, spectrogram, off).logits, model(frames, other_audio, off).logits)
        assert not torch.allclose(model(frames, spectrogram, on).logits, model(frames, other_audio, on).logits)


def test_sa_works_when_the_visual_map_is_not_the_audio_upsampler_size():
    # 256 input -> 8x8 visual map; the coarse audio upsampler makes 7x7 (the released code crashed here).
    model = make_classifier("SA", "coarse")
    frames, spectrogram, event_prob = inputs("SA", batch=1, size=256)
    with torch.no_grad():
        out = model(frames, spectrogram, event_prob)
    assert out.cam_features.shape[-2:] == (8, 8)
    assert out.audio_attention.shape == (1, 1, 8, 8)


def test_sa_fine_gates_the_backbone_map():
    model = make_classifier("SA", "fine")
    assert model.refine.in_channels == model.backbone.out_channels
    assert model.attention_hidden.in_channels == 128  # 64 audio + 64 visual (SPEC §3.2 / §8.9)


def test_classifier_input_errors_are_explicit():
    sa = make_classifier("SA", "coarse")
    frames, spectrogram, _ = inputs("SA")
    with pytest.raises(ValueError, match="event_prob"):
        sa(frames, spectrogram)
    with pytest.raises(ValueError, match=r"event_prob must be \(2,\)"):
        sa(frames, spectrogram, torch.ones(2, 1))
    st = make_classifier("ST", "coarse")
    with pytest.raises(ValueError, match="3 frames"):
        st(frames)
    with pytest.raises(ValueError, match="n_classes"):
        ClassifierConfig("S", "coarse", 1)
    with pytest.raises(ValueError):
        ClassifierConfig("X", "coarse", 5)


def test_config_accepts_strings_and_overrides_widths():
    config = ClassifierConfig("ST", "fine", 28, feature_channels=16)
    assert config.branch is Branch.ST and config.stage is Stage.FINE
    model = SCAMClassifier(config, build_backbone("tiny"))
    assert model.cam_channels == 16 and model.fc.out_features == 28


def test_classifier_learns_object_classes_and_its_gt_cam_covers_the_object():
    # Class = the colour of a square placed at a random position on grey noise. A global-average-pooled
    # classifier must find the square to classify, so the CAM of the true class lights it up, while the
    # CAM of another class does not (which is why SPEC §8.7 takes the ground-truth class).
    torch.manual_seed(0)
    n_classes, n, size, side = 3, 48, 128, 32
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % n_classes
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])
    frames = 0.4 + 0.2 * torch.rand(n, 3, size, size, generator=g)
    ys = torch.randint(0, size - side, (n,), generator=g)
    xs = torch.randint(0, size - side, (n,), generator=g)
    rows, cols = torch.arange(size)[None, :, None], torch.arange(size)[None, None, :]
    inside = ((rows >= ys[:, None, None]) & (rows < ys[:, None, None] + side)
              & (cols >= xs[:, None, None]) & (cols < xs[:, None, None] + side))  # (n, size, size)
    frames = torch.where(inside[:, None], colours[labels][:, :, None, None], frames)
    model = SCAMClassifier(ClassifierConfig("S", "coarse", n_classes, feature_channels=16), build_backbone("tiny"))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(40):
        loss = F.cross_entropy(model(frames).logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        out = model(frames)
    assert (out.logits.argmax(1) == labels).float().mean() == 1.0

    def covers_object(cams: torch.Tensor) -> float:
        mean_in = (cams * inside).sum(dim=(1, 2)) / inside.sum(dim=(1, 2))
        mean_out = (cams * ~inside).sum(dim=(1, 2)) / (~inside).sum(dim=(1, 2))
        return float((mean_in > mean_out).float().mean())

    assert covers_object(model.class_activation_maps(out, labels, size=(size, size))) >= 0.9
    assert covers_object(model.class_activation_maps(out, (labels + 1) % n_classes, size=(size, size))) <= 0.5


# ---------------------------------------------------------------- RFB

def test_rfb_shapes_relu_and_no_batch_norm():
    torch.manual_seed(0)
    block = ReceptiveFieldBlock(16, 8)
    out = block(torch.randn(2, 16, 9, 7))
    assert out.shape == (2, 8, 9, 7) and (out >= 0).all()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.modules())
    # branch k: 1x1, 1xk, kx1, 3x3 dil k (all with bias); + branch0, cat conv and residual
    def conv(i, o, kh, kw):
        return i * o * kh * kw + o
    expected = conv(16, 8, 1, 1) + conv(32, 8, 3, 3) + conv(16, 8, 1, 1)
    for k in (3, 5, 7):
        expected += conv(16, 8, 1, 1) + conv(8, 8, 1, k) + conv(8, 8, k, 1) + conv(8, 8, 3, 3)
    assert sum(p.numel() for p in block.parameters()) == expected
    assert [m.dilation for m in (block.branch1[3], block.branch2[3], block.branch3[3])] == [(3, 3), (5, 5), (7, 7)]


# ---------------------------------------------------------------- CAM

def test_cam_matches_a_loop_restatement():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 6, 5, 7, generator=g)
    weight = torch.randn(3, 6, generator=g)
    classes = torch.tensor([0, 2, 1, 2])
    cams = class_activation_maps(features, weight, classes)
    assert cams.shape == (4, 5, 7) and cams.dtype == torch.float32
    for b in range(4):
        raw = sum(weight[classes[b], c].item() * features[b, c].numpy() for c in range(6))
        np.testing.assert_allclose(cams[b].numpy(), loop_minmax(raw), atol=1e-5)


def test_cam_constant_map_is_zero_and_upsampling_stays_in_unit_range():
    g = torch.Generator().manual_seed(1)
    features = torch.ones(2, 3, 4, 4)
    features[1] = torch.randn(3, 4, 4, generator=g)
    weight = torch.randn(2, 3, generator=g)
    classes = torch.tensor([0, 1])
    cams = class_activation_maps(features, weight, classes, size=(16, 12))
    assert cams.shape == (2, 16, 12)
    assert torch.count_nonzero(cams[0]) == 0
    assert cams.min() >= 0 and cams.max() <= 1
    small = class_activation_maps(features, weight, classes)
    expected = F.interpolate(small[:, None], size=(16, 12), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(cams, expected)


def test_cam_decomposes_the_logit():
    # mean over pixels of the un-normalised CAM + bias = the class logit: the CAM uses the right map.
    model = make_classifier("ST", "fine")
    frames, _, _ = inputs("ST")
    with torch.no_grad():
        out = model(frames)
    classes = torch.tensor([3, 1])
    raw = torch.einsum("bchw,bc->bhw", out.cam_features, model.fc.weight[classes])
    torch.testing.assert_close(raw.mean(dim=(1, 2)) + model.fc.bias[classes], out.logits[[0, 1], classes])
    torch.testing.assert_close(model.class_activation_maps(out, classes),
                               class_activation_maps(out.cam_features, model.fc.weight, classes))


def test_cam_errors_name_the_bad_shape():
    with pytest.raises(ValueError, match=r"fc_weight must be \(K, 6\)"):
        class_activation_maps(torch.randn(2, 6, 3, 3), torch.randn(4, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_index"):
        class_activation_maps(torch.randn(2, 6, 3, 3), torch.randn(4, 6), torch.tensor([0]))


# ---------------------------------------------------------------- fusion

def test_fusion_matches_a_loop_restatement_and_skips_invalid_branches():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(4, 3, 6, 5, generator=g) * 7 - 2
    probs = torch.rand(4, 3, generator=g)
    valid = torch.tensor([[True, True, True], [True, False, True], [False, False, True], [False, False, False]])
    fused = probability_weighted_fusion(maps, probs, valid)
    assert fused.shape == (4, 6, 5)
    for b in range(4):
        numerator = np.full((6, 5), 1e-4)
        denominator = 1e-4
        for k in range(3):
            if valid[b, k]:
                numerator = numerator + probs[b, k].item() * loop_minmax(maps[b, k].numpy())
                denominator += probs[b, k].item()
        np.testing.assert_allclose(fused[b].numpy(), loop_minmax(numerator / denominator), atol=1e-5)
    assert torch.count_nonzero(fused[3]) == 0
    # an excluded map has no influence at all
    changed = maps.clone()
    changed[1, 1] = torch.rand(6, 5)
    torch.testing.assert_close(probability_weighted_fusion(changed, probs, valid)[1], fused[1])


# ---------------------------------------------------------------- boxes

def test_selection_boxes_match_numpy():
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(6, 20, 30, generator=g) ** 6
    maps[4] = 0  # nothing above threshold
    maps[5] = 0
    maps[5, 7, 11] = 1.0  # a single pixel
    boxes, valid = selection_boxes(maps, factor=2.0)
    assert boxes.dtype == torch.int64 and boxes.shape == (6, 4) and valid.dtype == torch.bool
    for b in range(6):
        m = maps[b].numpy()
        points = np.argwhere(m > 2.0 * m.mean())
        if len(points) == 0:
            assert not valid[b] and boxes[b].tolist() == [-1, -1, -1, -1]
        else:
            assert valid[b]
            assert boxes[b].tolist() == [points[:, 0].min(), points[:, 0].max(), points[:, 1].min(), points[:, 1].max()]
    assert boxes[5].tolist() == [7, 7, 11, 11]


def test_scale_boxes_covers_the_same_region():
    boxes = torch.tensor([[0, 255, 0, 255], [64, 127, 10, 200], [-1, -1, -1, -1], [100, 100, 3, 3]])
    scaled = scale_boxes(boxes, (256, 256), (356, 356))
    for box, new in zip(boxes.tolist(), scaled.tolist()):
        if box[0] < 0:
            assert new == [-1, -1, -1, -1]
            continue
        s = 356 / 256
        assert new == [math.floor(box[0] * s), math.ceil((box[1] + 1) * s) - 1,
                       math.floor(box[2] * s), math.ceil((box[3] + 1) * s) - 1]
    assert scaled[0].tolist() == [0, 355, 0, 355]
    # non-square grids scale each axis on its own
    assert scale_boxes(torch.tensor([[0, 9, 0, 19]]), (10, 20), (20, 10)).tolist() == [[0, 19, 0, 9]]


# ---------------------------------------------------------------- crop / paste

def test_crop_and_resize_samples_a_linear_ramp_exactly():
    height, width = 40, 50
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    frames = torch.stack([ys, xs, 2 * ys + 3 * xs]).unsqueeze(0).repeat(2, 1, 1, 1)
    boxes = torch.tensor([[5, 24, 10, 39], [2, 37, 3, 45]])  # inside the frame: no border clamping
    out = crop_and_resize(frames, boxes, (8, 12))
    assert out.shape == (2, 3, 8, 12) and out.dtype == frames.dtype
    for b, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        # bin centres in pixel-centre coordinates
        cy = y0 + (torch.arange(8, dtype=torch.float64) + 0.5) * (y1 - y0 + 1) / 8 - 0.5
        cx = x0 + (torch.arange(12, dtype=torch.float64) + 0.5) * (x1 - x0 + 1) / 12 - 0.5
        torch.testing.assert_close(out[b, 0], cy[:, None].expand(8, 12))
        torch.testing.assert_close(out[b, 1], cx[None, :].expand(8, 12))


def test_crop_rejects_integer_frames():
    with pytest.raises(ValueError, match="floating point"):
        crop_and_resize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.tensor([[0, 3, 0, 3]]), (4, 4))


def test_paste_back_matches_a_loop_with_interpolate():
    g = torch.Generator().manual_seed(7)
    fine = torch.rand(4, 6, 5, generator=g)
    boxes = torch.tensor([[2, 20, 3, 30], [0, 31, 0, 39], [10, 10, 5, 9], [-1, -1, -1, -1]])
    canvas = paste_back(fine, boxes, (32, 40))
    assert canvas.shape == (4, 32, 40)
    for b in range(3):
        y0, y1, x0, x1 = boxes[b].tolist()
        expected = torch.zeros(32, 40)
        expected[y0:y1 + 1, x0:x1 + 1] = F.interpolate(fine[b][None, None], size=(y1 - y0 + 1, x1 - x0 + 1),
                                                        mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(canvas[b], expected, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(canvas[3]) == 0


def test_crop_then_paste_round_trip_restores_the_box():
    height, width = 48, 64
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    image = torch.sin(3 * xs + 2 * ys) + ys ** 2  # smooth, so resampling twice loses little
    frames = image.expand(3, 1, height, width).clone()
    boxes = torch.tensor([[4, 35, 8, 55], [10, 29, 20, 39], [0, 47, 0, 63]])
    crops = crop_and_resize(frames, boxes, (64, 96))
    restored = paste_back(crops[:, 0], boxes, (height, width))
    for b, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        inside = restored[b, y0:y1 + 1, x0:x1 + 1]
        torch.testing.assert_close(inside, image[y0:y1 + 1, x0:x1 + 1], atol=0.02, rtol=0)
        mask = torch.ones(height, width, dtype=torch.bool)
        mask[y0:y1 + 1, x0:x1 + 1] = False
        assert torch.count_nonzero(restored[b][mask]) == 0


# ---------------------------------------------------------------- temporal smoothing

def loop_plain_smooth(maps: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    frames = len(maps)
    out = np.zeros_like(maps)
    for t in range(frames):
        if not valid[t]:
            continue
        picked = [loop_minmax(maps[s]) for s in range(max(0, t - radius), min(frames, t + radius + 1)) if valid[s]]
        out[t] = loop_minmax(np.mean(picked, axis=0))
    return out


def test_plain_smoothing_matches_a_loop_and_ignores_invalid_frames():
    g = torch.Generator().manual_seed(11)
    maps = torch.rand(9, 6, 7, generator=g, dtype=torch.float64)
    valid = torch.tensor([True, True, False, True, True, True, False, True, True])
    for radius in (0, 1, 2, 3):
        smoothed = temporal_smooth(maps, valid, radius=radius)
        np.testing.assert_allclose(smoothed.numpy(), loop_plain_smooth(maps.numpy(), valid.numpy(), radius),
                                   atol=1e-10)
    changed = maps.clone()
    changed[2] = 100 * torch.rand(6, 7, dtype=torch.float64)  # an invalid frame's values are never used
    torch.testing.assert_close(temporal_smooth(changed, valid), temporal_smooth(maps, valid))
    assert torch.count_nonzero(temporal_smooth(maps, valid)[[2, 6]]) == 0


def test_zero_flow_equals_plain_smoothing():
    g = torch.Generator().manual_seed(12)
    maps = torch.rand(6, 10, 12, generator=g)
    valid = torch.tensor([True, False, True, True, True, True])
    torch.testing.assert_close(temporal_smooth(maps, valid, flow=torch.zeros(6, 2, 10, 12)),
                               temporal_smooth(maps, valid), atol=1e-6, rtol=1e-6)


def blob(height: int, width: int, cy: float, cx: float, sigma: float = 2.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma ** 2))


def spread_x(m: torch.Tensor) -> float:
    weights = m / m.sum()
    xs = torch.arange(m.shape[1], dtype=torch.float32)
    mean = (weights.sum(0) * xs).sum()
    return float((weights.sum(0) * (xs - mean) ** 2).sum())


@pytest.mark.parametrize("dx,dy", [(3.0, 0.0), (2.0, -1.5)])
def test_flow_guided_smoothing_keeps_a_moving_blob_sharp(dx, dy):
    frames, height, width = 7, 32, 48
    maps = torch.stack([blob(height, width, 16 + dy * (t - 3), 24 + dx * (t - 3)) for t in range(frames)])
    flow = torch.zeros(frames, 2, height, width)
    flow[1:, 0], flow[1:, 1] = dx, dy  # frame_{t-1}(y, x) = frame_t(y + dy, x + dx)
    valid = torch.ones(frames, dtype=torch.bool)
    guided = temporal_smooth(maps, valid, radius=2, flow=flow)
    plain = temporal_smooth(maps, valid, radius=2)
    centre = maps[3]
    # guided: the centre frame's map is reproduced (same peak place, same spread)
    assert torch.allclose(guided[3], centre, atol=0.03)
    assert divmod(int(guided[3].argmax()), width) == (16, 24)
    # plain averaging smears the blob along the motion: wider, and dimmer before renormalisation
    assert spread_x(plain[3]) > 2.0 * spread_x(centre)
    assert abs(spread_x(guided[3]) - spread_x(centre)) < 0.1 * spread_x(centre)
    raw_plain_peak = maps[1:6].mean(0).max()
    assert raw_plain_peak < 0.6


def test_flow_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="flow must be"):
        temporal_smooth(torch.rand(4, 8, 8), torch.ones(4, dtype=torch.bool), flow=torch.zeros(4, 2, 16, 16))


# ---------------------------------------------------------------- threshold

def test_threshold_pseudo_gt_matches_numpy():
    g = torch.Generator().manual_seed(13)
    maps = torch.rand(3, 9, 11, generator=g) ** 4 * 5 + 1
    maps[2] = 4.0
    out = threshold_pseudo_gt(maps, factor=3.0)
    assert out.shape == maps.shape and out.dtype == torch.float32
    for b in range(3):
        m = loop_minmax(maps[b].numpy())
        expected = np.where(m < 3.0 * m.mean(), 0.0, m)
        np.testing.assert_allclose(out[b].numpy(), expected, atol=1e-6)
    assert torch.count_nonzero(out[2]) == 0
    assert 0 < torch.count_nonzero(out[0]) < out[0].numel()
