"""The pseudolabel stage end to end on a generated tagged set: store contents, reuse and resume, bad input."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from click.testing import CliRunner
from conftest import extracted_set

from cli import main
from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.selection import temporal_smooth, threshold_pseudo_gt
from pipeline.pseudolabel import maps as scam_maps
from pipeline.pseudolabel.classifier_loop import TrainConfig, train_classifier
from pipeline.pseudolabel.config import VideoInfo
from pipeline.pseudolabel.event_audio import load_vggsound_scorer, read_class_names
from pipeline.pseudolabel.run import PseudolabelError, run_pseudolabel
from pipeline.workspace.presets import preset_config
from stores import features as fstore
from stores import pseudo as pstore

TINY = replace(preset_config("cpu", "pseudolabel"), 
    coarse_size=64, fine_size=64, map_size=32, infer_batch=16,
    train=TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=2e-3, patience=2),
)  # fmt: skip


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, object, list[str]]:
    """One pseudolabel run shared by the tests that only read its results."""
    root = tmp_path_factory.mktemp("pseudo")
    ws = extracted_set(root)
    lines: list[str] = []
    summary = run_pseudolabel(ws, TINY, report=lines.append)
    return ws, summary, lines


def copy_workspace(ws: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(ws, target)
    return target


def test_store_holds_maps_boxes_and_pseudo_gt_for_every_frame(labelled):
    ws, summary, _ = labelled
    assert summary.ok and (summary.done, summary.skipped, summary.failed) == (6, 0, 0)
    assert summary.frames == 6 * 16 and 0 < summary.frames_with_pseudo_gt <= summary.frames
    root = zarr.open_group(str(ws / "pseudo.zarr"), mode="r")
    assert root.attrs["store_kind"] == "pseudo" and root.attrs["branches"] == ["S", "ST", "SA"]
    assert set(root.attrs["accuracy"]) == {"event_audio", "S_coarse", "ST_coarse", "SA_coarse", "S_fine", "ST_fine", "SA_fine"}
    assert set(root.attrs["checkpoints"]) == set(root.attrs["accuracy"])
    for name in root.attrs["checkpoints"]:
        assert (ws / "checkpoints" / "pseudolabel" / f"{name}.pt").is_file()
    group = root["videos/c0_disc_tone_000"]
    assert group.attrs["status"] == "complete" and group.attrs["split"] in ("train", "val")
    shapes = {
        "coarse_cam": ((16, 3, 32, 32), np.float16), "fine_cam": ((16, 3, 32, 32), np.float16),
        "branch_prob": ((16, 2, 3), np.float32), "branch_valid": ((16, 3), np.bool_),
        "event_prob": ((16,), np.float32), "box": ((16, 4), np.int32), "has_box": ((16,), np.bool_),
        "fused": ((16, 32, 32), np.float16), "pseudo_gt": ((16, 32, 32), np.float16),
        "has_pseudo_gt": ((16,), np.bool_),
    }  # fmt: skip
    for name, (shape, dtype) in shapes.items():
        assert group[name].shape == shape and group[name].dtype == dtype, name
    pseudo_gt, has_gt = group["pseudo_gt"][:].astype(np.float32), group["has_pseudo_gt"][:]
    assert pseudo_gt.min() >= 0 and pseudo_gt.max() <= 1
    # A frame has a pseudo-GT exactly when its map is not all zeros, and only where a box was selected.
    np.testing.assert_array_equal(has_gt, pseudo_gt.max(axis=(1, 2)) > 0)
    assert not np.any(has_gt & ~group["has_box"][:])
    boxes, has_box = group["box"][:], group["has_box"][:]
    assert np.all(boxes[~has_box] == -1)
    inside = boxes[has_box]
    assert np.all((inside[:, 0] <= inside[:, 1]) & (inside[:, 2] <= inside[:, 3]))
    assert np.all((inside >= 0) & (inside < 32))
    # The fine CAMs were pasted into their boxes: nothing outside a frame's box.
    fine = group["fine_cam"][:].astype(np.float32)
    rows, cols = np.arange(32)[None, :, None], np.arange(32)[None, None, :]
    outside = ~(
        (rows >= boxes[:, 0, None, None]) & (rows <= boxes[:, 1, None, None])
        & (cols >= boxes[:, 2, None, None]) & (cols <= boxes[:, 3, None, None])
    )  # fmt: skip
    assert np.all(fine[np.broadcast_to(outside[:, None], fine.shape)] == 0)
    # SA maps only for frames whose audio is event-related.
    event, valid = group["event_prob"][:], group["branch_valid"][:]
    np.testing.assert_array_equal(valid[:, 2], event >= TINY.event_threshold)
    assert np.all(valid[:, :2])


def test_xarray_opens_a_video_with_named_dimensions(labelled):
    ws, _, _ = labelled
    ds = pstore.SCHEMA.open_dataset(ws / "pseudo.zarr", "c1_square_noise_000")
    assert ds.pseudo_gt.dims == ("t", "y", "x")
    assert ds.coarse_cam.dims == ("t", "branch", "y", "x")
    assert list(ds.branch.values) == ["S", "ST", "SA"]
    assert ds.coarse_cam.sel(branch="ST").shape == (16, 32, 32)
    consolidated = xr.open_zarr(str(ws / "pseudo.zarr"), group="videos/c1_square_noise_000")
    assert consolidated.sizes["t"] == 16


def test_event_probability_is_the_audio_classifiers_probability_of_the_tag(labelled):
    ws, _, _ = labelled
    from models.audio_encoder import AudioEventClassifier

    saved = torch.load(ws / "checkpoints" / "pseudolabel" / "event_audio.pt", weights_only=False)
    model = AudioEventClassifier(3, AudioEncoder(AudioEncoderConfig(width=TINY.audio_width)))
    model.load_state_dict(saved["state"]["best_state"])
    model.eval()
    audio = zarr.open_group(str(ws / "features.zarr"), mode="r")["videos/c2_triangle_pulses_001/audio"][:]
    with torch.no_grad():
        expected = model(torch.from_numpy(audio.astype(np.float32)).unsqueeze(1)).softmax(1)[:, 2].numpy()
    stored = zarr.open_group(str(ws / "pseudo.zarr"), mode="r")["videos/c2_triangle_pulses_001/event_prob"][:]
    np.testing.assert_allclose(stored, expected, atol=1e-5)


def test_rerun_reuses_everything_and_a_smoothing_change_redoes_only_the_final_maps(labelled, tmp_path):
    ws = copy_workspace(labelled[0], tmp_path)
    lines: list[str] = []
    again = run_pseudolabel(ws, TINY, report=lines.append)
    assert (again.done, again.skipped, again.failed) == (0, 6, 0)
    assert sum("reusing" in line for line in lines) == 7 and not any("epoch" in line for line in lines)

    before = zarr.open_group(str(ws / "pseudo.zarr"), mode="r")["videos/c0_disc_tone_001"]
    coarse_before, gt_before = before["coarse_cam"][:], before["pseudo_gt"][:]
    lines.clear()
    plain = run_pseudolabel(ws, replace(TINY, smoothing="plain"), report=lines.append)
    assert (plain.done, plain.skipped) == (6, 0)
    assert sum("reusing" in line for line in lines) == 7  # no classifier retrained
    after = zarr.open_group(str(ws / "pseudo.zarr"), mode="r")["videos/c0_disc_tone_001"]
    np.testing.assert_array_equal(after["coarse_cam"][:], coarse_before)  # coarse pass reused
    assert after.attrs["final_settings"]["smoothing"] == "plain"
    assert not np.array_equal(after["pseudo_gt"][:], gt_before)


def test_an_unfinished_video_is_redone_and_the_others_skipped(labelled, tmp_path):
    ws = copy_workspace(labelled[0], tmp_path)
    group = zarr.open_group(str(ws / "pseudo.zarr"), mode="r+")["videos/c1_square_noise_001"]
    expected = group["pseudo_gt"][:]
    group.attrs["status"] = "in_progress"  # as after a kill during its fine pass
    group["pseudo_gt"][:] = 0
    summary = run_pseudolabel(ws, TINY)
    assert (summary.done, summary.skipped) == (1, 5)
    np.testing.assert_array_equal(group["pseudo_gt"][:], expected)


def test_smoothing_in_blocks_equals_smoothing_the_whole_video(labelled, tmp_path, monkeypatch):
    ws = copy_workspace(labelled[0], tmp_path)
    video_id = "c2_triangle_pulses_000"
    group = zarr.open_group(str(ws / "pseudo.zarr"), mode="r+")[f"videos/{video_id}"]
    features = zarr.open_group(str(ws / "features.zarr"), mode="r")
    info = VideoInfo(video_id, "c2_triangle_pulses", 2, 16, True, (64, 64), "x")
    monkeypatch.setattr(scam_maps, "SMOOTH_BLOCK", 5)  # 16 frames in 4 blocks, each with a ±2 halo
    scam_maps.smoothing_pass(info, fstore.VideoReader(ws / "features.zarr", video_id), group, TINY, torch.device("cpu"))
    fused = torch.from_numpy(group["fused"][:].astype(np.float32))
    has_box = torch.from_numpy(group["has_box"][:])
    flow = scam_maps.flow_on_map_grid(features[f"videos/{video_id}/flow"][:], (64, 64), 32)
    whole = threshold_pseudo_gt(temporal_smooth(fused, has_box, 2, flow), TINY.gt_factor) * has_box[:, None, None]
    np.testing.assert_allclose(group["pseudo_gt"][:].astype(np.float32), whole.numpy(), atol=1e-3)


def test_interrupted_classifier_training_resumes_to_the_same_weights(tmp_path):
    from torch.utils.data import TensorDataset

    class Samples(TensorDataset):
        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            return {"x": x, "label": y, "index": torch.tensor(index)}

    g = torch.Generator().manual_seed(0)
    data = Samples(torch.randn(40, 6, generator=g), torch.arange(40) % 2)
    forward = lambda model, batch, train: (model(batch["x"]), batch["label"])  # noqa: E731
    config = TrainConfig(epochs=3, batch_size=8, optimizer="sgd", lr=0.1, patience=5)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))

    straight = fresh()
    train_classifier("toy", straight, data, data, forward, config, tmp_path / "a.pt", "fp", torch.device("cpu"))

    def stop_after_first_epoch(line: str) -> None:
        if "epoch 1 " in line:
            raise KeyboardInterrupt

    resumed = fresh()
    with pytest.raises(KeyboardInterrupt):
        train_classifier("toy", resumed, data, data, forward, config, tmp_path / "b.pt", "fp", torch.device("cpu"),
                         report=stop_after_first_epoch)  # fmt: skip
    lines: list[str] = []
    resumed = fresh()
    result = train_classifier("toy", resumed, data, data, forward, config, tmp_path / "b.pt", "fp",
                              torch.device("cpu"), report=lines.append)  # fmt: skip
    assert lines[0] == "toy: resuming after epoch 1" and result.epochs == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_video_without_audio_skips_sa_for_it_only(tmp_path):
    ws = extracted_set(tmp_path, classes=2, videos_per_class=2)
    # Drop one video's audio, as extract stores a video without an audio stream.
    root = zarr.open_group(str(ws / "features.zarr"), mode="r+")
    silent = root["videos/c1_square_noise_000"]
    silent.attrs["has_audio"] = False
    silent["audio"][:] = 0
    lines: list[str] = []
    config = replace(TINY, train=replace(TINY.train, epochs=1), fine_stage=False)
    summary = run_pseudolabel(ws, config, report=lines.append)
    assert summary.ok and summary.done == 4
    assert summary.warnings == ["c1_square_noise_000: no audio stream: the SA branch is not used for this video"]
    group = zarr.open_group(str(ws / "pseudo.zarr"), mode="r")["videos/c1_square_noise_000"]
    assert group.attrs["sa_skipped_reason"] == "no audio stream: SA branch not used"
    assert not group["branch_valid"][:, 2].any() and np.all(group["event_prob"][:] == 0)
    assert np.all(group["coarse_cam"][:, 2] == 0)
    # Without the fine stage the fused map is the fusion of the coarse CAMs and no fine CAM exists.
    assert np.all(group["fine_cam"][:] == 0) and group["fused"][:].max() > 0


def test_missing_or_foreign_store_and_a_single_class_are_clear_errors(tmp_path):
    with pytest.raises(PseudolabelError, match="no features store \\(run `avfix extract` first\\)"):
        run_pseudolabel(tmp_path / "nothing", TINY)
    foreign = tmp_path / "foreign" / "features.zarr"
    zarr.open_group(str(foreign), mode="w").attrs["store_kind"] = "pseudo"
    with pytest.raises(PseudolabelError, match="not an avfix features store"):
        run_pseudolabel(tmp_path / "foreign", TINY)
    ws = extracted_set(tmp_path / "one", classes=2, videos_per_class=1)
    root = zarr.open_group(str(ws / "features.zarr"), mode="r+")
    root["videos/c1_square_noise_000"].attrs["status"] = "in_progress"
    with pytest.raises(PseudolabelError, match="need complete videos of at least 2 classes"):
        run_pseudolabel(ws, TINY)


def test_cli_json_summary_and_one_line_errors(labelled, tmp_path):
    ws = copy_workspace(labelled[0], tmp_path)
    args = ["pseudolabel", "--workspace", str(ws), "--preset", "cpu", "--coarse-size", "64", "--fine-size", "64",
            "--map-size", "32", "--epochs", "2", "--batch-size", "16", "--quiet", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] is True and summary["frames"] == 96
    missing = CliRunner().invoke(main, ["pseudolabel", "--workspace", str(tmp_path / "none"), "-q"])
    assert missing.exit_code == 1
    assert "no features store (run `avfix extract` first)" in missing.output
    bad = CliRunner().invoke(main, ["pseudolabel", "--workspace", str(ws), "--map-size", "8"])
    assert bad.exit_code == 2 and "map_size must be at least 32 pixels" in bad.output


def test_vggsound_keyword_match_sums_the_matching_classes(tmp_path):
    # A VGGSound-shaped checkpoint (AVENet names, NetVLAD pooling, 4-way head) with random weights.
    torch.manual_seed(0)
    from models.audio_encoder import AudioEncoder

    encoder = AudioEncoder(AudioEncoderConfig(width=64, pooling="netvlad")).eval()
    state = {f"audnet.{k}": v for k, v in encoder.state_dict().items()}
    state = {k.replace("audnet.netvlad.", "audnet.avgpool."): v for k, v in state.items()}
    head = torch.nn.Linear(encoder.embedding_dim, 4)
    state.update({"audnet.fc_.weight": head.weight.detach(), "audnet.fc_.bias": head.bias.detach()})
    torch.save({"model_state_dict": state}, tmp_path / "vggsound.pth")
    (tmp_path / "stat.csv").write_text("playing violin\ndog barking\nplaying acoustic guitar\n\"train horning\"\n")
    assert read_class_names(tmp_path / "stat.csv") == ["dog barking", "playing acoustic guitar", "playing violin", "train horning"]
    scorer = load_vggsound_scorer(tmp_path / "vggsound.pth", tmp_path / "stat.csv",
                                  ["Acoustic guitar", "Train horn", "Violin, fiddle", "Helicopter"]).eval()  # fmt: skip
    assert scorer.unmatched_tags == ["Helicopter"]
    spectrogram = torch.randn(5, 1, 257, 48)
    with torch.no_grad():
        probs = head(encoder(spectrogram).embedding).softmax(1)
        got = scorer.event_probability(spectrogram, torch.tensor([0, 1, 2, 3, 2]))
    expected = torch.stack([probs[0, 1], probs[1, 3], probs[2, 2], torch.tensor(0.0), probs[4, 2]])
    torch.testing.assert_close(got, expected)
