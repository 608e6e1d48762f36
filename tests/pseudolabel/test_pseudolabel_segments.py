"""A long video's passes go out in segments (`pseudolabel.segment_frames`), one job each: pseudo.zarr and
the frozen backbone's cache come out the same bit for bit however the video is cut, in this process and on
2 dask worker processes, and a video whose segments fail fails once."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import chunk_file, chunk_files

from pipeline.common.scheduling import SchedulerConfig
from pipeline.extract.config import ExtractConfig
from pipeline.extract.run import run_extract
from pipeline.pseudolabel import runners
from pipeline.pseudolabel.config import PseudolabelConfig
from pipeline.pseudolabel.passes import COARSE_PASS, FINE_PASS, SMOOTH_PASS, segment_bounds, segment_step
from pipeline.pseudolabel.run import run_pseudolabel
from pipeline.synth.generate import SynthConfig, generate
from pipeline.workspace.presets import preset_config
from stores import cache as cstore
from stores import pseudo as pstore
from stores.compare import VOLATILE_ATTRS, store_differences

LONG = "c0_disc_tone_long"  # 13 s at 10 fps: 130 frames, the others 16
TINY = replace(preset_config("cpu", "pseudolabel"), coarse_size=64, fine_size=64, map_size=32, infer_batch=8,
               device="cpu", threads=1)  # fmt: skip
TINY = replace(TINY, train=replace(TINY.train, epochs=1, batch_size=16))
FAST = preset_config("fast", "pseudolabel")
FROZEN = replace(FAST, coarse_size=64, fine_size=64, map_size=32, infer_batch=16, device="cpu", threads=1,
                 train=replace(FAST.train, epochs=1, batch_size=16))  # fmt: skip
WHOLE = 10_000  # segment_frames longer than any video: one job per video
PLACES = VOLATILE_ATTRS | {"features_store", "config"}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """4 short videos of 2 classes and a long one of class c0, extracted."""
    root = tmp_path_factory.mktemp("segments")
    small = dict(fps=10, width=64, height=64)
    generate(root / "videos", SynthConfig(classes=2, videos_per_class=2, seconds=1.6, **small))
    generate(root / "long", SynthConfig(classes=2, videos_per_class=1, seconds=13.0, seed=5, **small))
    shutil.copy(root / "long/c0_disc_tone/c0_disc_tone_000.mp4", root / f"videos/c0_disc_tone/{LONG}.mp4")
    run_extract(root / "videos", root / "ws", ExtractConfig(size=64), SchedulerConfig(workers=1))
    return root / "ws"


def labelled(extracted: Path, folder: Path, config: PseudolabelConfig, checkpoints: Path | None = None,
             scheduler: SchedulerConfig | None = None) -> Path:  # fmt: skip
    """A copy of the extracted workspace labelled with `config` (reusing the classifiers of `checkpoints`)."""
    ws = shutil.copytree(extracted, folder / "ws")
    if checkpoints is not None:
        shutil.copytree(checkpoints, ws / "checkpoints")
    summary = run_pseudolabel(ws, config, scheduler=scheduler)
    assert summary.ok and (summary.done, summary.failed) == (5, 0), summary.line()
    assert summary.frames == 4 * 16 + 130
    return ws


@pytest.fixture(scope="module")
def whole(extracted, tmp_path_factory) -> Path:
    return labelled(extracted, tmp_path_factory.mktemp("whole"), replace(TINY, segment_frames=WHOLE))


@pytest.fixture(scope="module")
def whole_frozen(extracted, tmp_path_factory) -> Path:
    return labelled(extracted, tmp_path_factory.mktemp("whole_frozen"), replace(FROZEN, segment_frames=WHOLE))


def test_segments_are_whole_blocks_and_chunks_and_cover_the_video():
    assert segment_step(TINY) == 64  # lcm of the batch (8), the smoothing block (64), the chunks (16)
    assert segment_step(replace(TINY, infer_batch=12)) == 192
    assert segment_bounds(130, replace(TINY, segment_frames=64)) == [(0, 64), (64, 128), (128, 130)]
    assert segment_bounds(130, replace(TINY, segment_frames=65)) == [(0, 128), (128, 130)]  # rounded up to steps
    assert segment_bounds(130, replace(TINY, segment_frames=1)) == [(0, 64), (64, 128), (128, 130)]
    assert segment_bounds(16, TINY) == [(0, 16)]
    with pytest.raises(ValueError, match="segment_frames >= 1"):
        replace(TINY, segment_frames=0)


def test_segments_in_one_process_write_what_whole_videos_write(extracted, whole, tmp_path, monkeypatch):
    seen: dict[str, list[tuple[int, int] | None]] = {}
    run_pass = runners.run_pass

    def spy(job, device=None):
        if job.info.video_id == LONG:
            seen.setdefault(job.kind, []).append(job.frames)
        return run_pass(job, device)

    monkeypatch.setattr(runners, "run_pass", spy)
    ws = labelled(extracted, tmp_path, replace(TINY, segment_frames=64), whole / "checkpoints")
    cut = [(0, 64), (64, 128), (128, 130)]
    assert seen == {COARSE_PASS: cut, FINE_PASS: cut, SMOOTH_PASS: cut}
    assert store_differences(ws / "pseudo.zarr", whole / "pseudo.zarr", ignore=PLACES) == []


def test_segments_on_two_dask_worker_processes_write_what_whole_videos_write(extracted, whole, tmp_path):
    ws = labelled(extracted, tmp_path, replace(TINY, segment_frames=64), whole / "checkpoints",
                  SchedulerConfig(workers=2, threads=False))  # fmt: skip
    assert store_differences(ws / "pseudo.zarr", whole / "pseudo.zarr", ignore=PLACES) == []


def test_the_frozen_backbones_cache_made_in_segments_on_two_dask_workers_is_the_same(extracted, whole_frozen, tmp_path):
    ws = labelled(extracted, tmp_path, replace(FROZEN, segment_frames=64), whole_frozen / "checkpoints",
                  SchedulerConfig(workers=2, threads=False))  # fmt: skip
    cache = cstore.SCAM_CACHE.path(ws)
    assert store_differences(cache, cstore.SCAM_CACHE.path(whole_frozen), ignore=PLACES) == []
    assert store_differences(ws / "pseudo.zarr", whole_frozen / "pseudo.zarr", ignore=PLACES) == []


def test_a_video_whose_segments_fail_fails_once_and_the_others_complete(extracted, whole, tmp_path):
    ws = shutil.copytree(extracted, tmp_path / "ws")
    shutil.copytree(whole / "checkpoints", ws / "checkpoints")
    # Frames 128-143 of the long video's flow: smoothing segments [64, 128) (its ±2 halo) and [128, 130) read it.
    chunk_file(ws / f"features.zarr/videos/{LONG}/flow", 8).unlink()
    summary = run_pseudolabel(ws, replace(TINY, segment_frames=64))
    assert (summary.done, summary.failed) == (4, 1), summary.line()
    assert [failure["video_id"] for failure in summary.failures] == [LONG]
    assert "array flow, chunk 8: missing" in summary.failures[0]["reason"]
    root = pstore.SCHEMA.open_for_reading(pstore.SCHEMA.path(ws))
    assert LONG not in set(pstore.SCHEMA.complete_videos(root))
    assert len(set(pstore.SCHEMA.complete_videos(root))) == 4


def test_pass_jobs_of_a_run_that_lost_the_lock_write_no_chunk(extracted, whole, tmp_path, monkeypatch):
    from pipeline.pseudolabel import run as pseudolabel_run
    from stores.fencing import Fence, FencedOut
    from stores.lock import lock_path

    ws = shutil.copytree(extracted, tmp_path / "ws")
    shutil.copytree(whole / "checkpoints", ws / "checkpoints")
    # As if this run's coordinator had been killed and another run had taken pseudo.zarr's lock since.
    stale = lambda store: Fence(str(lock_path(store).resolve()), "a-run-killed-before")  # noqa: E731
    monkeypatch.setattr(pseudolabel_run, "held_fence", stale)
    with pytest.raises(FencedOut, match="no longer holds the lock"):
        run_pseudolabel(ws, replace(TINY, segment_frames=64), scheduler=SchedulerConfig(workers=2, threads=False))
    assert [p for p in chunk_files(ws / "pseudo.zarr/videos") if p.parent.name == "coarse_cam"] == []
