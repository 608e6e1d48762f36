"""The STA network on a frozen pretrained backbone: the levels cache, their augmentation, training only
the rest, and that validation on cached levels scores what the whole network computes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import chunk_file, chunk_files, write_sta_stores

from models.backbones import build_backbone
from models.sta import BackboneLevels
from pipeline.common.progress import Progress
from pipeline.train.augment import augment_batch, augment_levels, draw_affine, identity_affine, resize_frames
from pipeline.train.checkpoints import load_checkpoint
from pipeline.train.config import STATrainConfig, TrainError
from pipeline.train.frozen import LEVELS, build_level_cache
from pipeline.train.model import build_sta
from pipeline.train.run import run_train
from pipeline.workspace.presets import preset_config
from stores import cache as cstore
from stores import features as fstore
from stores import pseudo as pstore
from stores.samples import STASamples, index_videos

SIZE = 64


def frozen_config(**overrides) -> STATrainConfig:
    """The `fast` preset's training at the tests' sizes."""
    base = {"input_size": SIZE, "epochs": 1, "batch_size": 8, "num_workers": 0, "checkpoint_every": 50,
            "log_every": 2, "val_batch_size": 16}  # fmt: skip
    config = replace(preset_config("fast", "train"), **{**base, **overrides})
    assert config.frozen_backbone and not config.random_init
    return config


def samples(ws: Path, levels: bool) -> tuple[STASamples, STASamples]:
    videos, events, _ = index_videos(fstore.SCHEMA.path(ws), pstore.SCHEMA.path(ws))
    path = cstore.STA_CACHE.path(ws) if levels else None
    sets = [[v for v in videos if v.split == split] for split in ("train", "val")]
    return tuple(STASamples(fstore.SCHEMA.path(ws), pstore.SCHEMA.path(ws), s, events, levels_path=path) for s in sets)


def test_a_frozen_backbone_needs_pretrained_weights():
    with pytest.raises(ValueError, match="frozen_backbone needs a pretrained backbone"):
        STATrainConfig(frozen_backbone=True, random_init=True)


def test_the_whole_network_on_its_levels_equals_the_network_on_the_frames():
    torch.manual_seed(0)
    config = frozen_config()
    model = build_sta(config.model_settings(), None, random_init=False).eval()
    frames = torch.rand(2, 3, 3, SIZE, SIZE)
    spectrogram, has_audio = torch.randn(2, 257, 48), torch.tensor([True, False])
    with torch.no_grad():
        whole = model(frames, spectrogram, has_audio)
        levels = BackboneLevels(model.backbone_levels(frames), (SIZE, SIZE))
        parts = model(levels, spectrogram, has_audio)
    assert levels.levels["stride32"].shape[:2] == (2, 3) and levels.levels["stride8"].shape[0] == 2
    torch.testing.assert_close(parts.saliency_logits, whole.saliency_logits)
    torch.testing.assert_close(parts.switch_logits, whole.switch_logits)


def test_level_augmentation_moves_levels_and_target_with_one_affine():
    g = torch.Generator().manual_seed(0)
    levels = {"stride32": torch.rand(4, 3, 5, 2, 2, generator=g), "stride16": torch.rand(4, 6, 4, 4, generator=g),
              "stride8": torch.rand(4, 7, 8, 8, generator=g)}  # fmt: skip
    target = torch.rand(4, 16, 16, generator=g)
    same = augment_levels(levels, target, identity_affine(4), 16)
    for name, level in levels.items():
        torch.testing.assert_close(same.levels[name], level)
    flip = identity_affine(4)
    flip[:, 0, 0] = -1.0  # a horizontal mirror: an exact permutation on every grid
    mirrored = augment_levels(levels, target, flip, 16)
    for name, level in levels.items():
        torch.testing.assert_close(mirrored.levels[name], level.flip(-1))
    torch.testing.assert_close(mirrored.pseudo_gt, target.flip(-1))
    # The target goes exactly as it does with pixel augmentation (same θ, same output grid).
    theta = draw_affine(4, preset_config("fast", "train").augment, torch.Generator().manual_seed(1))
    frames = torch.randint(0, 255, (4, 3, 32, 32, 3), dtype=torch.uint8)
    flow = torch.randn(4, 2, 16, 16, generator=g)
    by_pixels = augment_batch(frames, target, theta, 16, flow)
    by_levels = augment_levels(levels, target, theta, 16, flow, (32, 32))
    torch.testing.assert_close(by_levels.pseudo_gt, by_pixels.pseudo_gt)
    torch.testing.assert_close(by_levels.flow, by_pixels.flow)


def test_level_cache_holds_each_frames_levels_and_is_reused_until_its_inputs_change(tmp_path):
    write_sta_stores(tmp_path, n_videos=2, n_frames=20, size=SIZE)
    config = frozen_config()
    backbone = build_backbone(config.backbone)
    videos, _, _ = index_videos(fstore.SCHEMA.path(tmp_path), pstore.SCHEMA.path(tmp_path))
    path = build_level_cache(tmp_path, config, backbone, torch.device("cpu"), videos, Progress(enabled=False))
    group = zarr.open_group(str(path), mode="r", path="videos/vid01")
    frames = zarr.open_group(str(tmp_path / "features.zarr"), mode="r", path="videos/vid01")["frames"][:]
    with torch.no_grad():
        expected = backbone.forward_levels(backbone.normalize(resize_frames(torch.from_numpy(frames[None, :3]), SIZE)[0]))
    for name in LEVELS:
        assert group[name].shape[0] == 20 and group[name].dtype == np.float16
        np.testing.assert_allclose(group[name][:3].astype(np.float32), expected[name].numpy(), atol=2e-2, rtol=1e-2)
    assert set(group.attrs["parts"]) == set(LEVELS) and group.attrs["status"] == "complete"

    def chunk_times() -> dict[str, float]:
        return {str(p): p.stat().st_mtime_ns for p in chunk_files(path)}

    before = chunk_times()
    build_level_cache(tmp_path, config, backbone, torch.device("cpu"), videos, Progress(enabled=False))
    assert chunk_times() == before  # reused, not recomputed
    build_level_cache(tmp_path, replace(config, input_size=96), backbone, torch.device("cpu"), videos,
                      Progress(enabled=False))  # fmt: skip
    assert zarr.open_group(str(path), mode="r", path="videos/vid01")["stride32"].shape[-1] == 3  # 96 / 32


def test_cached_samples_carry_the_levels_of_t_and_its_neighbours(tmp_path):
    write_sta_stores(tmp_path, n_videos=2, n_frames=20, size=SIZE, val_videos=1)
    config = frozen_config()
    videos, _, _ = index_videos(fstore.SCHEMA.path(tmp_path), pstore.SCHEMA.path(tmp_path))
    build_level_cache(tmp_path, config, build_backbone(config.backbone), torch.device("cpu"), videos,
                      Progress(enabled=False))  # fmt: skip
    train, _ = samples(tmp_path, levels=True)
    cache = zarr.open_group(str(cstore.STA_CACHE.path(tmp_path)), mode="r", path="videos/vid00")
    batch = train.__getitems__([0, 5])  # frames 0 (t-1 clamped) and 5
    assert "frames" not in batch and batch["stride32"].shape == (2, 3, 1280, 2, 2)
    assert batch["stride32"].dtype == torch.float16
    np.testing.assert_array_equal(batch["stride32"][0].numpy(), cache["stride32"][[0, 0, 1]])
    np.testing.assert_array_equal(batch["stride32"][1].numpy(), cache["stride32"][[4, 5, 6]])
    np.testing.assert_array_equal(batch["stride8"][1].numpy(), cache["stride8"][5])


def test_frozen_training_keeps_the_backbone_and_its_validation_scores_the_whole_network(tmp_path):
    write_sta_stores(tmp_path, n_videos=3, n_frames=20, size=SIZE, val_videos=1)
    config = frozen_config(epochs=2)
    notes: list[str] = []
    summary = run_train(tmp_path, config, report=notes.append)
    assert summary.ok and summary.steps == 2 * (40 // 8)
    saved = load_checkpoint(tmp_path / "checkpoints/sta/last.pt")
    pretrained = build_sta(config.model_settings(), None, random_init=False)
    trained = build_sta(config.model_settings(), None, random_init=False)
    trained.load_state_dict(saved["model"])
    for name, value in pretrained.backbone.state_dict().items():
        torch.testing.assert_close(trained.backbone.state_dict()[name], value, msg=name)  # frozen, BN statistics too
    assert not torch.equal(trained.reduce32.weight, pretrained.reduce32.weight)  # the rest learned
    assert any("s/step here" in note and "steps left" in note for note in notes)
    # The stored validation CC (on cached levels) is the whole network's on the frames.
    _, val = samples(tmp_path, levels=False)
    batch = val.__getitems__(list(range(len(val))))
    trained.eval()
    with torch.no_grad():
        out = trained(resize_frames(batch["frames"], SIZE), batch["audio"], batch["has_audio"])
    from models import metrics

    prediction = torch.sigmoid(out.saliency_logits)
    target = torch.nn.functional.interpolate(batch["pseudo_gt"].float()[:, None], size=(SIZE, SIZE),
                                             mode="bilinear", align_corners=False)[:, 0]  # fmt: skip
    assert summary.val["cc"] == pytest.approx(float(metrics.cc(prediction, target).mean()), abs=2e-3)


def test_a_damaged_level_chunk_is_one_line_and_the_rerun_makes_that_video_again(tmp_path):
    write_sta_stores(tmp_path, n_videos=3, n_frames=20, size=SIZE, val_videos=1)
    assert run_train(tmp_path, frozen_config(epochs=1)).ok
    chunk = chunk_file(cstore.STA_CACHE.path(tmp_path) / "videos/vid00/stride8", 1)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x40
    chunk.write_bytes(bytes(data))
    with pytest.raises(TrainError) as failed:
        run_train(tmp_path, frozen_config(epochs=2))  # the next epoch reads the levels again
    message = str(failed.value)
    assert "sta-cache.zarr" in message and "vid00" in message and "stride8" in message and "\n" not in message
    video = zarr.open_group(str(cstore.STA_CACHE.path(tmp_path)), mode="r", path="videos/vid00")
    assert video.attrs["damage"] and "parts" not in video.attrs  # its levels are made again
    summary = run_train(tmp_path, frozen_config(epochs=2))
    assert summary.ok and summary.epochs_done == 2
    video = zarr.open_group(str(cstore.STA_CACHE.path(tmp_path)), mode="r", path="videos/vid00")
    assert video.attrs["damage"] is None and set(video.attrs["parts"]) == set(LEVELS)
