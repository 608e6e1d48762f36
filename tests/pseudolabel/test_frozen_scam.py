"""The pseudolabel stage on a frozen pretrained backbone (`backbone_mode = "frozen"`, the `fast` preset):
the backbone runs once per frame and per crop into scam-cache.zarr, only the heads are trained, and a
cached part is reused until what it was computed from changes."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import chunk_files, extracted_set

from pipeline.pseudolabel.batches import resize, to_chw_float
from pipeline.pseudolabel.frozen import frozen_backbone
from pipeline.pseudolabel.run import run_pseudolabel
from pipeline.workspace.presets import preset_config
from stores import cache as cstore


FAST = preset_config("fast", "pseudolabel")
FROZEN = replace(FAST, coarse_size=64, fine_size=64, map_size=32, infer_batch=16, threads=1,
                 train=replace(FAST.train, epochs=2, batch_size=16))  # fmt: skip
PARTS = {"coarse", "fine", "audio_embedding"}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    return extracted_set(tmp_path_factory.mktemp("frozen"))


@pytest.fixture(scope="module")
def frozen_run(extracted, tmp_path_factory) -> tuple[Path, object]:
    ws = shutil.copytree(extracted, tmp_path_factory.mktemp("frozen_run") / "ws")
    return ws, run_pseudolabel(ws, FROZEN)


def chunk_times(path: Path, array: str) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in chunk_files(path / "videos") if p.parent.name == array}


def test_the_heads_learn_on_cached_maps_of_every_frame_and_crop(frozen_run):
    ws, summary = frozen_run
    assert FROZEN.frozen and summary.ok and (summary.done, summary.failed) == (6, 0)
    assert 0 < summary.frames_with_pseudo_gt <= summary.frames == 96
    cache = zarr.open_group(str(cstore.SCAM_CACHE.path(ws)), mode="r")
    assert cache.attrs["store_kind"] == "scam-cache" and cache.attrs["backbone"] == "efficientnet_lite0"
    video = cache["videos/c0_disc_tone_000"]
    assert video.attrs["status"] == "complete" and set(video.attrs["parts"]) == PARTS
    assert video["coarse"].shape == (16, 1280, 2, 2) and video["coarse"].dtype == np.float16
    assert video["fine"].shape == (16, 1280, 2, 2) and video["audio_embedding"].shape[0] == 16
    # The cached coarse maps are the pretrained backbone's on the stored frames at the coarse size.
    frames = zarr.open_group(str(ws / "features.zarr"), mode="r", path="videos/c0_disc_tone_000")["frames"][:4]
    backbone = frozen_backbone(FROZEN, torch.device("cpu"))
    with torch.no_grad():
        expected = backbone(backbone.normalize(resize(to_chw_float(torch.from_numpy(frames)), 64))).numpy()
    np.testing.assert_allclose(video["coarse"][:4].astype(np.float32), expected, atol=2e-2, rtol=1e-2)
    for name in ("S_coarse", "ST_fine", "SA_fine"):  # the checkpoints hold the heads, never the backbone
        saved = torch.load(ws / "checkpoints" / "pseudolabel" / f"{name}.pt", map_location="cpu", weights_only=False)
        assert saved["model"] and not any(key.startswith("backbone.") for key in saved["model"])
    maps = zarr.open_group(str(ws / "pseudo.zarr"), mode="r", path="videos/c0_disc_tone_000")
    coarse_cam = maps["coarse_cam"][:].astype(np.float32)
    assert coarse_cam.min() >= 0 and coarse_cam.max() <= 1 and coarse_cam.max() > 0.5


def test_a_rerun_reuses_the_cache_and_a_new_fine_size_keeps_the_coarse_maps(frozen_run, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(frozen_run[0], ws)
    cache = cstore.SCAM_CACHE.path(ws)
    before = {name: chunk_times(cache, name) for name in PARTS}
    assert all(before.values())
    again = run_pseudolabel(ws, FROZEN)
    assert again.ok and again.skipped == 6 and again.done == 0
    assert {name: chunk_times(cache, name) for name in PARTS} == before
    bigger = run_pseudolabel(ws, replace(FROZEN, fine_size=96))
    assert bigger.ok and bigger.done == 6
    video = zarr.open_group(str(cache), mode="r", path="videos/c0_disc_tone_000")
    assert video["fine"].shape == (16, 1280, 3, 3) and set(video.attrs["parts"]) == PARTS
    assert chunk_times(cache, "coarse") == before["coarse"]  # the frames at the coarse size: still valid
    assert chunk_times(cache, "fine") != before["fine"]
    # (The audio embeddings are made again too: every classifier's fingerprint holds every classifier
    # setting, so the event classifier was retrained, and the embeddings are its encoder's.)


def test_two_dask_worker_processes_make_the_cache_and_maps_one_process_makes(extracted, frozen_run, tmp_path):
    from pipeline.common.scheduling import SchedulerConfig
    from stores.compare import VOLATILE_ATTRS, store_differences

    ws = shutil.copytree(extracted, tmp_path / "ws")
    summary = run_pseudolabel(ws, FROZEN, scheduler=SchedulerConfig(workers=2, threads=False))
    assert summary.ok and summary.done == 6, summary.line()
    single = frozen_run[0]
    places = VOLATILE_ATTRS | {"features_store", "config"}
    for store in (cstore.SCAM_CACHE.file_name, "pseudo.zarr"):  # the backbone ran in the workers, bit for bit
        assert store_differences(ws / store, single / store, ignore=places) == [], store


def test_dask_workers_killed_in_both_cache_fills_lose_nothing(extracted, frozen_run, tmp_path):
    """A worker SIGKILLed just after writing a chunk of the frozen backbone's cache (its job's rows are
    on disk, unrecorded): dask runs the job again elsewhere and the cache and maps come out as one
    process makes them. Once in the frames' fill (the run's first jobs), once in the crops' fill."""
    from conftest import ArmedWorkers, video_attrs

    from pipeline.common.scheduling import SchedulerConfig
    from stores.compare import VOLATILE_ATTRS, store_differences

    ws = shutil.copytree(extracted, tmp_path / "ws")
    armed: list[int] = []

    def coarse_pass_done() -> bool:  # the coarse maps are written last before the crops' fill
        return sum(bool(a.get("coarse_fingerprint")) for a in video_attrs(ws / "pseudo.zarr").values()) == 6

    with ArmedWorkers() as workers:  # each armed worker dies at its next chunk write
        armed += workers.arm("KILL:chunk:1", first_only=True)  # the frames' fill: the run's first jobs
        workers.arm_all_once(coarse_pass_done, "the coarse pass", "KILL:chunk:1", armed, timeout=180)
        summary = run_pseudolabel(ws, FROZEN, scheduler=SchedulerConfig(address=workers.address))
        survivors = workers.survivors()
    problems = workers.problems
    assert not problems, problems
    assert len(armed) == 3 and not survivors & set(armed), (armed, survivors)  # every armed worker died
    assert summary.ok and (summary.done, summary.failed, summary.skipped) == (6, 0, 0), summary.line()
    single = frozen_run[0]
    places = VOLATILE_ATTRS | {"features_store", "config"}
    for store in (cstore.SCAM_CACHE.file_name, "pseudo.zarr"):
        assert store_differences(ws / store, single / store, ignore=places) == [], store
