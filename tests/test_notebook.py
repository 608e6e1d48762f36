"""`avfix demo` on a tiny set, the notebook that inspects its stores (executed top to bottom with nbclient),
the helpers it uses (stores.inspect), and the demo's pseudo-label scoring on hand-made cases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pytest
import torch
from matplotlib import colormaps
from nbclient import NotebookClient

from pipeline.synth.truth import TruthTrack
from pipeline.workspace.demo import DemoConfig, prediction_scores, run_demo, score_frames
from stores import inspect as si

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "inspect_stores.ipynb"
TINY_DEMO = DemoConfig(
    classes=2, videos_per_class=2, test_videos_per_class=1, seconds=1.2, size=64, pseudolabel_epochs=1,
    train_epochs=1, settings=("pseudolabel.coarse_size=64", "pseudolabel.fine_size=64", "pseudolabel.map_size=32",
                              "pseudolabel.infer_batch=16", "train.batch_size=4", "train.val_batch_size=16",
                              "train.input_size=64"),
)  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    ws = tmp_path_factory.mktemp("demo") / "ws"
    lines: list[str] = []
    threads = torch.get_num_threads()
    summary = run_demo(ws, TINY_DEMO, progress=False, echo=lines.append)
    torch.set_num_threads(threads)
    return ws, summary, "\n".join(lines)


def test_demo_runs_the_dag_and_reports_minutes_and_scores_next_to_the_centre_bias(demo):
    ws, summary, printed = demo
    assert summary.ok, summary.line()
    assert list(summary.seconds) == ["synth", "extract", "pseudolabel", "train", "predict", "evaluate", "scoring"]
    assert all(seconds >= 0 for seconds in summary.seconds.values())
    assert set(summary.pseudo_scores) == {"pseudo-GT", "center"}
    assert all(np.isfinite(v) for row in summary.pseudo_scores.values() for v in row.values())
    scored, frames = summary.pseudo_frames
    assert frames == 4 * 12 and 0 < scored <= frames
    report = json.loads((ws / "report.json").read_text())["datasets"][0]["summary"]
    assert summary.prediction_scores["center"]["NSS"] == report["center"]["NSS"]["mean"]
    assert set(summary.prediction_scores) == {"predictions", "center"}
    assert sorted(Path(p).name for p in summary.overlays) == ["c0_disc_tone_000.mp4", "c1_square_noise_000.mp4"]
    text = (ws / "demo_report.md").read_text()
    for needed in ("## Where the minutes went", "| pseudolabel |", "| pseudo-GT |", "| predictions |", "| center |"):
        assert needed in text and needed in printed
    assert json.loads((ws / "demo_report.json").read_text())["pseudo_frames"] == [scored, frames]
    assert "c0_disc_tone_000,0," in (ws / "videos" / "test" / "truth.csv").read_text()


def test_demo_rerun_reuses_the_sets_and_every_stage(demo):
    ws, _, _ = demo
    videos = sorted((ws / "videos").rglob("*.mp4"))
    times = [p.stat().st_mtime_ns for p in videos]
    lines: list[str] = []
    again = run_demo(ws, TINY_DEMO, progress=False, echo=lines.append)
    assert [s["action"] for s in again.run["stages"]] == ["skipped"] * 5
    assert [p.stat().st_mtime_ns for p in videos] == times
    assert again.pseudo_scores == demo[1].pseudo_scores


def test_pseudo_label_scoring_puts_the_truth_on_the_right_pixel():
    """truth.csv's centre (x 40.2, y 9.7, pixel centres at integers) of a 64-pixel video falls on pixel
    (2, 10) of a 16-pixel map. Frame 0: that is the map's only hot pixel; frame 1: a map of distinct values
    0..255 (raster order). NSS and AUC-Judd against the MIT definitions computed by hand."""
    size, source = 16, 64
    track = TruthTrack("c", np.arange(2), np.array([40.2, 40.2]), np.array([9.7, 9.7]), np.array([8.0, 8.0]),
                       np.ones(2, bool))  # fmt: skip
    maps = torch.zeros(2, size, size, dtype=torch.float64)
    maps[0, 2, 10] = 1.0
    maps[1] = torch.arange(size * size, dtype=torch.float64).reshape(size, size) / 255
    scores = score_frames(maps, track, np.arange(2), (source, source), torch.Generator().manual_seed(0))
    expected_nss, expected_auc = [], []
    for k in range(2):
        flat = maps[k].numpy().ravel()
        fixated = maps[k, 2, 10].item()
        expected_nss.append((fixated - flat.mean()) / flat.std(ddof=1))
        # One fixation: one threshold at its value; false positives = the other pixels at or above it.
        false_positive = ((flat >= fixated).sum() - 1) / (flat.size - 1)
        expected_auc.append(1 - false_positive / 2)
    assert scores["NSS"].numpy() == pytest.approx(expected_nss)
    assert scores["AUC-J"].numpy() == pytest.approx(expected_auc, abs=1e-6)
    assert expected_auc == pytest.approx([1.0, 1 - 213 / 510])
    assert scores["CC"][0] > 0.1 and scores["CC"].shape == (2,)


def test_prediction_scores_are_read_from_the_report(tmp_path):
    row = {m: {"mean": v} for m, v in (("NSS", 1.5), ("CC", 0.25), ("AUC-J", 0.75), ("SIM", 0.1))}
    report = {"datasets": [{"summary": {"predictions": row, "center": row}}]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert prediction_scores(tmp_path / "report.json") == {r: {"NSS": 1.5, "CC": 0.25, "AUC-J": 0.75}
                                                          for r in ("predictions", "center")}  # fmt: skip


def test_overlay_resize_and_flow_colours_against_other_computations():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    small = rng.uniform(0, 1, (12, 16))
    ours = si._resize_bilinear(small, 48, 64)
    theirs = cv2.resize(small, (64, 48), interpolation=cv2.INTER_LINEAR)
    assert np.abs(ours - theirs).max() < 1e-6

    saliency = np.zeros((48, 64))
    saliency[10, 20] = 5.0  # scaled to its maximum: this pixel is at level 1
    blended = si.overlay(frame, saliency, alpha=0.6, colormap="jet")
    jet_top = np.array(colormaps["jet"](1.0)[:3]) * 255
    expected = np.floor(frame[10, 20] * 0.4 + jet_top * 0.6 + 0.5)
    assert blended.dtype == np.uint8 and blended.shape == frame.shape
    assert np.array_equal(blended[10, 20], expected.astype(np.uint8))
    assert np.array_equal(blended[40, 60], frame[40, 60])  # saliency 0: the frame as it is

    flow = np.zeros((2, 2, 3), np.float32)
    flow[0, 0, 0] = 2.0  # rightwards, fastest
    flow[1, 0, 1] = 1.0  # downwards, half speed
    colours = si.flow_to_rgb(flow)
    assert colours[0, 0].tolist() == [255, 0, 0] and colours[0, 1].tolist() == [64, 128, 0]
    assert colours[1, 2].tolist() == [0, 0, 0]


def test_store_helpers_on_the_demo_workspace(demo):
    ws, _, _ = demo
    stores = si.stores_of(ws)
    assert list(stores) == ["features.zarr", "pseudo.zarr", "predict-features.zarr", "predictions.zarr",
                            "scam-cache.zarr", "sta-cache.zarr"]  # the fast preset caches its backbone maps
    assert si.video_ids(stores["features.zarr"]) == ["c0_disc_tone_000", "c0_disc_tone_001", "c1_square_noise_000",
                                                     "c1_square_noise_001"]  # fmt: skip
    table = si.video_table(stores["features.zarr"])
    assert {(row["status"], row["frames"], row["error"]) for row in table} == {("complete", 12, "")}
    pseudo = si.open_video(stores["pseudo.zarr"], "c0_disc_tone_000")
    assert pseudo.coarse_cam.dims == ("t", "branch", "y", "x") and list(pseudo.branch.values) == ["S", "ST", "SA"]
    assert pseudo.pseudo_gt.shape == (12, 32, 32) and pseudo.pseudo_gt.dtype == np.float16
    features = si.open_video(stores["features.zarr"], "c0_disc_tone_000")
    assert list(features.flow_component.values) == ["dx", "dy"] and features.frames.shape == (12, 64, 64, 3)


def _python3_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a kernel spec running this interpreter; registered in a temporary folder if missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(prefix=str(tmp_path / "jupyter"))
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    return "python3"


def test_notebook_executes_top_to_bottom_on_the_demo_workspace(demo, tmp_path, monkeypatch):
    ws, _, _ = demo
    monkeypatch.setenv("AVFIX_WORKSPACE", str(ws))
    # The kernel imports this checkout's avfix (whose codecs wrote the demo's stores), not an installed one.
    paths = [str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=180, kernel_name=_python3_kernel(tmp_path, monkeypatch),
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})  # fmt: skip
    client.execute()  # raises CellExecutionError naming the cell when any cell fails
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # the frame/CAM panel, the curves, the clip
    assert any("<video" in o.get("data", {}).get("text/html", "") for o in outputs)  # the overlay MP4, embedded
