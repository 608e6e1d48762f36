"""Fencing tokens: each taking of a store's lock writes a new token; a job carrying an older token (its
run was killed and another run took the lock) stops before its next chunk write, and writes nothing."""

from __future__ import annotations

import contextvars
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import chunk_files
import zarr

from stores import fencing
from stores import pseudo as pstore
from stores.chunks import rows_of
from stores.fencing import Fence, FencedOut, fenced
from stores.lock import StoreLock, held_fence, lock_path


def maps_group(path):
    group = zarr.open_group(str(path), mode="w")
    group.create_array("pseudo_gt", shape=(32, 4, 4), chunks=(16, 4, 4), dtype="float16", fill_value=0)
    return group


def test_each_taking_of_the_lock_writes_a_new_token_that_the_holder_hands_out(tmp_path):
    target = tmp_path / "pseudo.zarr"
    assert held_fence(target) is None  # not held: jobs carry no fence and check nothing
    with StoreLock(target):
        first = held_fence(target)
        assert first is not None and first.lock_file == str(lock_path(target).resolve())
        assert json.loads(lock_path(target).read_text())["token"] == first.token == fencing.read_token(first.lock_file)
        with StoreLock(target):  # nested in the same process: the same hold, the same token
            assert held_fence(target) == first
    assert held_fence(target) is None
    with StoreLock(target):
        assert held_fence(target).token != first.token


def test_a_job_whose_run_lost_the_lock_stops_before_writing(tmp_path):
    target = tmp_path / "pseudo.zarr"
    group = maps_group(target)
    ones = np.ones((16, 4, 4), dtype=np.float16)
    with StoreLock(target):
        fence = held_fence(target)
        with fenced(fence):
            pstore.write_block(group, 0, {"pseudo_gt": ones})  # the run holds its lock: written
    with StoreLock(target):  # the run was killed; a new run took the lock
        with fenced(fence), pytest.raises(FencedOut, match="no longer holds the lock \\(another run took it\\)"):
            pstore.write_block(group, 16, {"pseudo_gt": ones})
        with fenced(fence), pytest.raises(FencedOut):
            rows_of(group["pseudo_gt"]).write(16, ones)  # the row writer of caches and features checks too
    np.testing.assert_array_equal(group["pseudo_gt"][:16], ones)
    np.testing.assert_array_equal(group["pseudo_gt"][16:], 0)  # nothing of the stale job's landed
    lock_path(target).unlink()
    with fenced(fence), pytest.raises(FencedOut, match="the lock file is gone"):
        pstore.write_block(group, 16, {"pseudo_gt": ones})
    pstore.write_block(group, 16, {"pseudo_gt": ones})  # outside a fenced job nothing is checked


def test_a_jobs_helper_thread_checks_the_jobs_fence(tmp_path):
    target = tmp_path / "pseudo.zarr"
    group = maps_group(target)
    stale = Fence(str(lock_path(target)), "a-run-before")
    with StoreLock(target), fenced(stale), ThreadPoolExecutor(1) as writer:
        write = rows_of(group["pseudo_gt"]).write
        with pytest.raises(FencedOut):
            writer.submit(contextvars.copy_context().run, write, 0, np.ones((16, 4, 4), dtype=np.float16)).result()
    np.testing.assert_array_equal(group["pseudo_gt"][:], 0)


def stale_fence(store) -> Fence:
    """The fence of a run killed earlier: its lock file now names another run's token."""
    return Fence(str(lock_path(store).resolve()), "a-run-killed-before")


def test_extract_segments_of_a_run_that_lost_the_lock_write_no_chunk(tmp_path, monkeypatch):
    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.extract import run as extract_run
    from pipeline.extract.config import ExtractConfig
    from pipeline.synth.generate import SynthConfig, generate

    generate(tmp_path / "videos", SynthConfig(classes=2, videos_per_class=1, seconds=1.6, fps=10, width=64, height=64))
    monkeypatch.setattr(extract_run, "held_fence", stale_fence)
    with pytest.raises(FencedOut, match="no longer holds the lock"):
        extract_run.run_extract(tmp_path / "videos", tmp_path / "ws", ExtractConfig(size=64), SchedulerConfig(workers=1))
    # The writer thread checked the segment's fence: not one frame, flow or audio chunk was written (the
    # time axes are the coordinator's, written before the segments went out).
    videos = tmp_path / "ws/features.zarr/videos"
    assert [p for name in ("frames", "flow", "audio") for p in chunk_files(videos) if p.parent.name == name] == []
    assert len([p for p in chunk_files(videos) if p.parent.name == "t"]) == 2
