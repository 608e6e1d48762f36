"""The evaluate stage: fixation layouts, map sources, the STAViS protocol, counts of bad input, reports,
resume after an interrupt and the command line. Every data set here is generated and tiny."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from click.testing import CliRunner

from cli import main
from models import metrics
from pipeline.evaluate import config as ec
from pipeline.evaluate import fixations as fx
from pipeline.evaluate import maps as em
from pipeline.evaluate import run as ev
from pipeline.evaluate import units as eu
from pipeline.evaluate.baselines import BaselineConfig, CamBaseline, expected_class_activation_maps
from stores import predictions as pstore

SIZE = (24, 32)  # (H, W) of the STAViS ground truth here
N_FRAMES = 5


# --- generated inputs ---------------------------------------------------------------------------------


def _blob(size: tuple[int, int], cy: float, cx: float, sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    return np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))


def _shared_and_own_fixations(video_index: int, frame: int) -> list[tuple[int, int]]:
    """(row, col) fixations: three pixels shared by every frame of the video, one of the frame's own.
    The same-video shuffle map minus the frame's fixations then holds exactly 4 pixels = Nf, so every
    shuffled-AUC split draws all of them and the score is deterministic."""
    shared = [(5, 6 + video_index), (12, 20), (18, 9)]
    return shared + [(2 + 4 * frame, 27 - video_index)]


def make_stavis(root: Path) -> None:
    """AVAD: three videos, one per split list; DIEM: two videos in its single list. Frame 3 (1-based) of
    AVAD v0 has no fixation at all."""
    for db, videos in (("AVAD", ["v0", "v1", "v2"]), ("DIEM", ["d0", "d1"])):
        for index, video in enumerate(videos):
            folder = root / "annotations" / db / video
            (folder / "maps").mkdir(parents=True)
            for frame in range(N_FRAMES):
                binary = np.zeros(SIZE, np.uint8)
                if not (db == "AVAD" and video == "v0" and frame == 2):
                    for r, c in _shared_and_own_fixations(index, frame):
                        binary[r, c] = 1
                scipy.io.savemat(folder / f"fixMap_{frame + 1:05d}.mat", {"eyeMap": binary})
                density = sum(_blob(SIZE, r, c, 2.5) for r, c in zip(*np.nonzero(binary))) if binary.any() else np.zeros(SIZE)
                density = density / density.max() if density.max() > 0 else density
                cv2.imwrite(str(folder / "maps" / f"eyeMap_{frame + 1:05d}.jpg"), (density * 255).astype(np.uint8))
    lists = root / "fold_lists"
    lists.mkdir()
    for split, video in enumerate(["v0", "v1", "v2"], start=1):
        (lists / f"AVAD_list_test_{split}_fps.txt").write_text(f"{video} {N_FRAMES} 30\n")
    (lists / "DIEM_list_test_fps.txt").write_text(f"d0 {N_FRAMES} 30\nd1 {N_FRAMES} 30\n")


def prediction_map(seed: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cy, cx = rng.uniform(0.2, 0.8, 2) * np.array(size)
    return _blob(size, cy, cx, size[0] / 4) * 0.8 + rng.uniform(0, 0.2, size)


def make_prediction_folder(root: Path) -> None:
    """STAViS-named maps (img_%05d, 1-based) for frames 2..4 only; AVAD maps at half size (resized on
    scoring), DIEM maps at full size under a DIEM/ subfolder; AVAD v1 frame 3 is all zero."""
    for db, videos, size, nested in (("AVAD", ["v0", "v1", "v2"], (12, 16), False),
                                     ("DIEM", ["d0", "d1"], SIZE, True)):
        for index, video in enumerate(videos):
            folder = root / (db if nested else "") / video
            folder.mkdir(parents=True, exist_ok=True)
            for frame in (1, 2, 3):  # 0-based; the first and the last frame get no map
                array = prediction_map(100 * index + frame, size)
                if db == "AVAD" and video == "v1" and frame == 2:
                    array = np.zeros(size)
                cv2.imwrite(str(folder / f"img_{frame + 1:05d}.png"), np.round(array * 65535).astype(np.uint16))


def expected_frame_scores(root: Path, maps: Path, db: str, video: str, index: int, frame: int, nested: bool) -> dict:
    """The protocol restated by hand for one frame (SPEC §5.2): postprocessMap, resize, then the metrics
    against the eyeMap, the fixMap and the union of the video's other fixations."""
    folder = root / "annotations" / db / video
    pred = cv2.imread(str(maps / (db if nested else "") / video / f"img_{frame + 1:05d}.png"), cv2.IMREAD_UNCHANGED) / 65535.0
    sal = metrics.resize_maps(metrics.postprocess_map(torch.from_numpy(pred)[None], 2.0), SIZE)
    density = torch.from_numpy(cv2.imread(str(folder / "maps" / f"eyeMap_{frame + 1:05d}.jpg"), 0) / 255.0)[None]
    fixmaps = [scipy.io.loadmat(folder / f"fixMap_{f + 1:05d}.mat")["eyeMap"] > 0 for f in range(N_FRAMES)]
    fix = torch.from_numpy(fixmaps[frame])[None]
    other = torch.from_numpy(np.any(fixmaps, axis=0) & ~fixmaps[frame])[None]
    return {
        "CC": metrics.cc(sal, density).item(),
        "NSS": metrics.nss(sal, fix).item(),
        "AUC-J": metrics.auc_judd(sal, fix, jitter=False).item(),
        "s-AUC": metrics.auc_shuffled(sal, fix, other, n_splits=1).item(),
        "SIM": metrics.sim(sal, density).item(),
        "KLD": metrics.kld(sal, density).item(),
    }


def make_images(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """stimuli/ + fixations.csv (the scene-fixations layout); image k gets 6 + k fixations, the last of
    image 0 outside the frame."""
    stimuli = root / "stimuli"
    stimuli.mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for k, (height, width) in enumerate(sizes):
        name = f"{k:03d}.jpg"
        image = (rng.uniform(0, 255, (height, width, 3))).astype(np.uint8)
        cv2.imwrite(str(stimuli / name), image)
        for j in range(6 + k):
            rows.append((name, 1 + j % 3, rng.uniform(0, width), rng.uniform(0, height), 0.1, 0.2))
    rows.append(("000.jpg", 1, sizes[0][1] + 3.0, 2.0, 0.1, 0.2))  # outside: dropped and counted
    with open(root / "fixations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "observer", "x", "y", "latency_s", "duration_s"])
        writer.writerows(rows)
    return root


# --- STAViS layout ------------------------------------------------------------------------------------


def test_stavis_protocol_scores_counts_and_split_aggregation(tmp_path):
    make_stavis(tmp_path / "stavis")
    make_prediction_folder(tmp_path / "maps")
    config = ec.EvaluateConfig(maps=(tmp_path / "maps",), examples=1)
    summary = ev.run_evaluate(tmp_path / "stavis", tmp_path / "ws", config)
    assert summary.ok and summary.datasets == 2 and summary.rows == ["maps", "center"]
    report = json.loads((tmp_path / "ws" / "report.json").read_text())
    avad, diem = report["datasets"]
    assert (avad["name"], avad["aggregation"], diem["name"], diem["aggregation"]) == ("AVAD", "pooled", "DIEM", "per-split")
    assert avad["splits"] == {"1": ["v0"], "2": ["v1"], "3": ["v2"]} and set(diem["splits"]) == {"1", "2", "3"}

    # Every frame scored against the hand-restated protocol (AUC-J within the 1e-7 jitter).
    by_id = {item["id"]: item for item in avad["items"] + diem["items"]}
    for db, videos, nested in (("AVAD", ["v0", "v1", "v2"], False), ("DIEM", ["d0", "d1"], True)):
        for index, video in enumerate(videos):
            for frame in (1, 2, 3):
                item = by_id[f"{video}/{frame:05d}"]
                if item["status"]["maps"] != "ok":
                    continue
                expected = expected_frame_scores(tmp_path / "stavis", tmp_path / "maps", db, video, index, frame, nested)
                got = item["scores"]["maps"]
                for metric, value in expected.items():
                    skipped = item["n_fixations"] == 0 if metric in metrics.FIXATION_METRICS else item["empty_density"]
                    if skipped:  # v0/00002 has no fixation at all: left out, not scored
                        assert got[metric] is None
                        continue
                    assert got[metric] == pytest.approx(value, abs=1e-5 if metric == "AUC-J" else 1e-9), (item["id"], metric)

    # Bad input, counted: frames 0 and 4 have no map; v1 frame 2 is all zero; v0 frame 2 has no fixation.
    counts = avad["counts"]
    assert counts["items"] == 15 and counts["items_without_fixations"] == 1
    assert counts["rows"]["maps"]["missing_maps"] == 6 and counts["rows"]["maps"]["empty_maps"] == 1
    assert counts["rows"]["maps"]["resized_maps"] == 9 and counts["rows"]["center"]["missing_maps"] == 0
    assert diem["counts"]["rows"]["maps"]["resized_maps"] == 0

    # Aggregation restated from the per-item scores: per-video means, then pooled / per-split means.
    for dataset in (avad, diem):
        for metric in metrics.METRICS:
            per_video = {}
            for item in dataset["items"]:
                value = item["scores"]["maps"][metric]
                if value is not None:
                    per_video.setdefault(item["video"], []).append(value)
            video_means = {v: float(np.mean(x)) for v, x in per_video.items()}
            if dataset["aggregation"] == "pooled":
                expected = np.mean([video_means[v] for names in dataset["splits"].values() for v in names if v in video_means])
            else:
                expected = np.mean([np.mean([video_means[v] for v in names]) for names in dataset["splits"].values()])
            assert dataset["summary"]["maps"][metric]["mean"] == pytest.approx(expected, abs=1e-12)
            assert dataset["summary"]["maps"][metric]["n"] == len(video_means)

    # Paired differences over videos: the per-video means of the two rows, restated.
    (pair,) = avad["paired"]["pairs"]
    assert avad["paired"]["over"] == "videos" and (pair["a"], pair["b"]) == ("maps", "center")
    for metric in metrics.METRICS:
        differences = [v["scores"]["maps"][metric] - v["scores"]["center"][metric] for v in avad["videos"]
                       if v["scores"]["maps"][metric] is not None and v["scores"]["center"][metric] is not None]
        stats = pair["metrics"][metric]
        assert stats["n"] == len(differences) and stats["difference"] == pytest.approx(np.mean(differences), abs=1e-12)
        assert stats["low"] <= stats["difference"] <= stats["high"]

    markdown = (tmp_path / "ws" / "report.md").read_text()
    assert "## AVAD — 3 videos, 15 frames" in markdown and "Shuffled AUC variant: `same-video`" in markdown
    assert "DIEM-style: the mean of the per-split means" in markdown
    assert "6 missing maps; 1 all-zero maps; 9 resized" in markdown
    for name in ("AVAD_metrics.png", "AVAD_distributions.png", "AVAD_examples.png", "DIEM_metrics.png"):
        assert (tmp_path / "ws" / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_stavis_unreadable_files_are_reported_and_the_rest_goes_on(tmp_path):
    make_stavis(tmp_path / "stavis")
    (tmp_path / "stavis" / "annotations" / "AVAD" / "v2" / "fixMap_00003.mat").write_bytes(b"not a mat file")
    (tmp_path / "stavis" / "annotations" / "AVAD" / "v1" / "maps" / "eyeMap_00002.jpg").unlink()
    summary = ev.run_evaluate(tmp_path / "stavis", tmp_path / "ws", ec.EvaluateConfig(datasets=("avad",), examples=0))
    assert not summary.ok and summary.datasets == 1
    reasons = {Path(f["path"]).name: f["reason"] for f in summary.failures}
    assert "unreadable fixation map" in reasons["fixMap_00003.mat"]
    assert any("eyeMap_00002.jpg" in f["reason"] for f in summary.failures)
    avad = json.loads((tmp_path / "ws" / "report.json").read_text())["datasets"][0]
    assert avad["counts"]["frames_without_ground_truth"] == 2 and avad["counts"]["items"] == 13


def test_fixmap_reader_reads_matlab_v5_and_v73(tmp_path):
    import h5py

    binary = np.zeros((4, 6), np.uint8)
    binary[1, 4] = binary[3, 0] = 1
    scipy.io.savemat(tmp_path / "v5.mat", {"eyeMap": binary})
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle["eyeMap"] = binary.T  # MATLAB writes column-major
    with open(path, "r+b") as handle:  # the v7.3 MAT header scipy recognises (version 0x0200, 'IM')
        handle.write(b"MATLAB 7.3 MAT-file".ljust(116))
        handle.seek(124)
        handle.write(b"\x00\x02IM")
    for name in ("v5.mat", "v73.mat"):
        assert np.array_equal(fx.read_fixmap(tmp_path / name), binary > 0), name
    np.testing.assert_array_equal(fx.pixel_centres(binary), [[4.5, 1.5], [0.5, 3.5]])


def test_map_file_naming():
    assert em.frame_of_map_file("img_00001") == 0 and em.frame_of_map_file("frame_12") == 11
    assert em.frame_of_map_file("0000") == 0 and em.frame_of_map_file("0042") == 42
    assert em.frame_of_map_file("thumbnail") is None


# --- CSV layout + predictions store ---------------------------------------------------------------------


def write_predictions(path: Path, videos: dict[str, np.ndarray], has: dict[str, np.ndarray]) -> None:
    root = pstore.SCHEMA.open_for_writing(path)
    pstore.SCHEMA.update_store(root, checkpoint="test")
    for video, saliency in videos.items():
        n, height, width = saliency.shape
        attrs = pstore.PredictionsVideo(fps=10.0, n_frames=n, height=height, width=width)
        group = pstore.SCHEMA.create_video(root, video, attrs, pstore.array_shapes(n, height, width))
        pstore.write_frames(group, 0, saliency, has[video])
        group[pstore.TIMES.name][:] = np.arange(n) / 10.0
        pstore.SCHEMA.mark_complete(group, f"fp-{video}", 1)


def test_csv_layout_scores_a_predictions_store(tmp_path):
    height, width, n = 20, 30, 4
    rng = np.random.default_rng(3)
    saliency = {v: (rng.uniform(0, 1, (n, height, width)) * 255).astype(np.uint8) for v in ("a", "b")}
    has = {"a": np.array([False, True, True, True]), "b": np.ones(n, bool)}
    write_predictions(tmp_path / "ws" / "predictions.zarr", saliency, has)
    rows = [("a", f, 5.0 + f, 7.0, "x", 1, 3.0) for f in range(n)] + [("b", f, 10.0, 4.0 + f, "x", 1, 3.0) for f in range(n)]
    rows += [("a", 1, 40.0, 3.0, "x", 1, 3.0), ("c", 0, 3.0, 3.0, "x", 1, 3.0)]  # outside; a video without maps
    with open(tmp_path / "truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "frame", "x", "y", "label", "audible", "radius"])  # avfix synth's columns
        writer.writerows(rows)
    config = ec.EvaluateConfig(density=ec.DensityConfig(2.0, "px"), examples=0)
    summary = ev.run_evaluate(tmp_path / "truth.csv", tmp_path / "ws", config)
    assert summary.rows == ["predictions", "center"]
    assert [f["reason"] for f in summary.failures] == ["no frame size: no map covers this video (pass --frame-size WxH)"]
    dataset = json.loads((tmp_path / "ws" / "report.json").read_text())["datasets"][0]
    counts = dataset["counts"]
    assert counts["items"] == 8 and counts["fixations_outside_dropped"] == 1 and counts["frames_without_ground_truth"] == 1
    assert counts["rows"]["predictions"]["missing_maps"] == 1  # a/0: has_saliency is False

    item = next(i for i in dataset["items"] if i["id"] == "b/00002")
    # Restated: the centre-origin point (10, 6) falls on pixel (row 6, col 10); density σ = 2 px.
    sal = metrics.resize_maps(metrics.postprocess_map(torch.from_numpy(saliency["b"][2] / 255.0)[None]), (height, width))
    fix = torch.zeros(1, height, width, dtype=torch.bool)
    fix[0, 6, 10] = True
    density = metrics.fixation_density(torch.tensor([[[10.5, 6.5]]], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool),
                                       (height, width), 2.0)
    assert item["scores"]["predictions"]["NSS"] == pytest.approx(metrics.nss(sal, fix).item(), abs=1e-9)
    assert item["scores"]["predictions"]["CC"] == pytest.approx(metrics.cc(sal, density).item(), abs=1e-9)

    # With --frame-size the video without maps is scored by the baseline and its frames count as missing.
    config = ec.EvaluateConfig(maps=(tmp_path / "ws" / "predictions.zarr",), density=ec.DensityConfig(2.0, "px"),
                               examples=0, frame_size=(height, width))
    ev.run_evaluate(tmp_path / "truth.csv", tmp_path / "ws2", config)
    dataset = json.loads((tmp_path / "ws2" / "report.json").read_text())["datasets"][0]
    assert dataset["counts"]["items"] == 9 and dataset["n_videos"] == 3
    assert dataset["counts"]["rows"]["predictions"]["missing_maps"] == 2
    assert dataset["summary"]["predictions"]["CC"]["without_score"] == 1  # video c: no defined score, not a NaN


# --- images layout ---------------------------------------------------------------------------------------


def test_images_layout_baselines_maps_folder_and_counts(tmp_path):
    root = make_images(tmp_path / "scene", [(30, 40), (30, 40), (36, 36)])
    maps = tmp_path / "maps"
    maps.mkdir()
    # 000: the exact density at another size (resized); 001: missing; 002: all zero.
    problems = fx.Problems()
    dataset = fx.read_images(root / "fixations.csv", root / "stimuli", problems)
    first = dataset.images[0]
    valid = torch.ones(1, len(first.points), dtype=torch.bool)
    density = metrics.fixation_density(torch.from_numpy(first.points)[None], valid, first.size, 0.03 * 40)[0].numpy()
    cv2.imwrite(str(maps / "000.png"), np.round(cv2.resize(density, (80, 60)) * 65535).astype(np.uint16))
    cv2.imwrite(str(maps / "002.png"), np.zeros((36, 36), np.uint8))
    config = ec.EvaluateConfig(maps=(maps,), post_sigma=0.0, examples=2)
    summary = ev.run_evaluate(root, tmp_path / "ws", config)
    assert summary.ok and summary.items == 3
    report = json.loads((tmp_path / "ws" / "report.json").read_text())
    scene = report["datasets"][0]
    assert scene["name"] == "scene" and scene["shuffle"] == "random-10"  # the MIT benchmark's, by default
    counts = scene["counts"]
    assert counts["fixations_outside_dropped"] == 1
    assert counts["rows"]["maps"] == {"missing_maps": 1, "empty_maps": 1, "resized_maps": 1,
                                      "undefined_scores": {m: 0 for m in metrics.METRICS}}
    item = next(i for i in scene["items"] if i["id"] == "000.jpg")
    assert item["scores"]["maps"]["CC"] > 0.99 and item["scores"]["maps"]["KLD"] < 0.01  # the density itself
    assert scene["summary"]["maps"]["CC"]["n"] == 1 and scene["summary"]["maps"]["CC"]["without_score"] == 2
    values = [i["scores"]["center"]["NSS"] for i in scene["items"]]
    assert scene["summary"]["center"]["NSS"]["mean"] == pytest.approx(np.mean(values))
    assert scene["summary"]["center"]["NSS"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert "Shuffled AUC variant: `random-10`" in (tmp_path / "ws" / "report.md").read_text()


def test_shuffle_negatives_of_other_images_are_rescaled_fixations():
    small = fx.ImageFixations("a.jpg", Path("a.jpg"), (10, 20), np.array([[1.0, 1.0]]), 1)
    big = fx.ImageFixations("b.jpg", Path("b.jpg"), (20, 40), np.array([[10.0, 4.0], [39.0, 19.0]]), 1)
    third = fx.ImageFixations("c.jpg", Path("c.jpg"), (10, 20), np.array([[5.0, 5.0]]), 1)
    dataset = fx.ImageDataset("set", [small, big, third])
    others = eu.ImageNegatives(dataset, "other-images", seed=0).points(small)
    np.testing.assert_allclose(others, [[5.0, 2.0], [19.5, 9.5], [5.0, 5.0]])  # b halved, c as is, a excluded
    assert len(eu.ImageNegatives(dataset, "random-10", seed=0).points(small)) == 3  # fewer than 10 others: all


def test_cam_baseline_rows_and_the_expected_cam_contraction(tmp_path):
    root = make_images(tmp_path / "scene", [(40, 48), (40, 48)])
    config = ec.EvaluateConfig(baselines=("center", "cam", "center-cam"), examples=0,
                               baseline=BaselineConfig(cam_input=64, cam_top_k=3))
    summary = ev.run_evaluate(root, tmp_path / "ws", config)
    assert summary.rows == ["center", "cam", "center-cam"]
    scene = json.loads((tmp_path / "ws" / "report.json").read_text())["datasets"][0]
    assert set(scene["cam_top_classes"]) == {"000.jpg", "001.jpg"}
    for row in ("cam", "center-cam"):
        assert all(scene["summary"][row][m]["n"] == 2 for m in metrics.METRICS)

    # The contraction restated as a loop over classes: Σ_k p_k (W_k · features), then min-max.
    features = torch.rand(2, 5, 3, 4, generator=torch.Generator().manual_seed(0))
    weight = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
    classes = torch.tensor([[3, 0, 6], [1, 2, 3]])
    got = expected_class_activation_maps(features, weight, probabilities, classes)
    for b in range(2):
        raw = sum(probabilities[b, k] * torch.einsum("chw,c->hw", features[b], weight[classes[b, k]]) for k in range(3))
        assert torch.allclose(got[b], (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    from models.cam import class_activation_maps

    top1 = expected_class_activation_maps(features, weight, torch.ones(2, 1), classes[:, :1])
    assert torch.allclose(top1, class_activation_maps(features, weight, classes[:, 0]), atol=1e-6)
    cam = CamBaseline(BaselineConfig(cam_input=64), torch.device("cpu"))
    result = cam.maps([np.zeros((40, 48, 3), np.uint8), np.full((40, 48, 3), 200, np.uint8)], (40, 48))
    assert result.maps.shape == (2, 40, 48) and result.maps.dtype == torch.float64
    assert float(result.maps.min()) >= 0.0 and float(result.maps.max()) <= 1.0 and len(result.top_class) == 2


# --- resume ----------------------------------------------------------------------------------------------


def test_interrupted_run_resumes_to_the_same_report(tmp_path, monkeypatch):
    make_stavis(tmp_path / "stavis")
    make_prediction_folder(tmp_path / "maps")
    config = ec.EvaluateConfig(maps=(tmp_path / "maps",), datasets=("AVAD",), examples=0)
    clean = ev.run_evaluate(tmp_path / "stavis", tmp_path / "clean", config)
    original = em.FolderMaps.frames
    calls = {"n": 0}

    def interrupt_second_video(self, dataset, video, frames):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if video == "v1":
            raise KeyboardInterrupt
        return original(self, dataset, video, frames)

    monkeypatch.setattr(em.FolderMaps, "frames", interrupt_second_video)
    stopped = ev.run_evaluate(tmp_path / "stavis", tmp_path / "ws", config)
    assert stopped.interrupted and stopped.units_done == 1 and not (tmp_path / "ws" / "report.json").exists()
    monkeypatch.setattr(em.FolderMaps, "frames", original)
    resumed = ev.run_evaluate(tmp_path / "stavis", tmp_path / "ws", config)
    assert (resumed.units_cached, resumed.units_done) == (1, 2) and clean.units_done == 3
    items = [json.loads((tmp_path / w / "report.json").read_text())["datasets"][0]["items"] for w in ("clean", "ws")]
    assert items[0] == items[1]
    again = ev.run_evaluate(tmp_path / "stavis", tmp_path / "ws", config)
    assert (again.units_cached, again.units_done) == (3, 0)
    # A changed setting is not served from the cache.
    changed = ev.run_evaluate(tmp_path / "stavis", tmp_path / "ws", ec.EvaluateConfig(
        maps=(tmp_path / "maps",), datasets=("AVAD",), examples=0, post_sigma=1.0))
    assert changed.units_done == 3


# --- command line ----------------------------------------------------------------------------------------


def test_cli_success_json_and_bad_input(tmp_path):
    root = make_images(tmp_path / "scene", [(30, 40), (30, 40)])
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(root), "-w", str(tmp_path / "ws"), "--json", "-q", "--examples", "0"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["ok"] and summary["items"] == 2 and summary["rows"] == ["center"]

    (root / "stimuli" / "001.jpg").write_bytes(b"broken")
    result = runner.invoke(main, ["evaluate", str(root), "-w", str(tmp_path / "ws"), "-q", "--examples", "0"])
    assert result.exit_code == 1 and "001.jpg: missing or unreadable image" in result.output

    cases = [
        (["evaluate", str(tmp_path / "nothing"), "-w", str(tmp_path / "ws")], 1, "no such file or folder"),
        (["evaluate", str(root), "-w", str(tmp_path / "ws"), "--sigma-unit", "deg"], 2, "pixels per degree"),
        (["evaluate", str(root), "-w", str(tmp_path / "ws"), "--shuffle", "same-video"], 1, "not available for the images"),
        (["evaluate", str(root), "-w", str(tmp_path / "ws"), "--baseline", "none"], 1, "nothing to evaluate"),
    ]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("video,x,y\na,1,2\n")
    cases.append((["evaluate", str(bad_csv), "-w", str(tmp_path / "ws")], 1, "missing column(s) frame"))
    cases.append((["evaluate", str(bad_csv), "-w", str(tmp_path / "ws"), "--baseline", "cam"], 1, "images layout only"))
    for args, code, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == code and message in result.output, (args, result.output)
        assert math.isfinite(code)
