"""Predict's network pass spread over processes: a 2-worker dask LocalCluster and a 2-process torchrun job
write the same predictions.zarr as one process, bit for bit; a worker killed mid-run loses nothing."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import chunk_files, write_sta_stores, write_video

from pipeline.common.scheduling import SchedulerConfig
from pipeline.predict.config import PredictConfig
from pipeline.predict.run import run_predict
from pipeline.predict.segments import segment_bounds
from pipeline.train.run import run_train
from pipeline.workspace.presets import preset_config
from stores.compare import VOLATILE_ATTRS, store_differences

REPO = Path(__file__).resolve().parents[2]
# Where each run's own files lie: the only attributes that may differ between two workspaces.
PLACES = VOLATILE_ATTRS | {"checkpoint", "features_store", "config"}
CONFIG = PredictConfig(batch_size=4, segment_frames=8, device="cpu")  # several segments per video


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("trained")
    write_sta_stores(ws, n_videos=4, n_frames=16, val_videos=1)
    torch.set_num_threads(1)
    run_train(ws, replace(preset_config("cpu", "train"), epochs=1, batch_size=8, num_workers=0))
    return ws


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_video(folder / "long.mp4", n_frames=30, size=(48, 40))
    write_video(folder / "short.mp4", n_frames=5, size=(40, 32))
    write_video(folder / "silent.mp4", n_frames=13, size=(36, 36), with_audio=False)
    return folder


@pytest.fixture(scope="module")
def one_process(trained, clips, tmp_path_factory) -> Path:
    ws = workspace_with(trained, tmp_path_factory.mktemp("single"))
    summary = run_predict(clips, ws, CONFIG)
    assert (summary.done, summary.failed, summary.frames) == (3, 0, 48), summary.line()
    return ws / "predictions.zarr"


def workspace_with(trained: Path, folder: Path) -> Path:
    ws = folder / "ws"
    shutil.copytree(trained / "checkpoints", ws / "checkpoints")
    return ws


def differences(got: Path, expected: Path) -> list[str]:
    return store_differences(got, expected, ignore=PLACES)


def test_segments_start_on_whole_batches_and_chunks():
    assert segment_bounds(30, 4, 8) == [(0, 16), (16, 30)]  # lcm(4, 16 frames per chunk) = 16
    assert segment_bounds(40, 16, 40) == [(0, 40)]
    assert segment_bounds(100, 16, 40) == [(0, 48), (48, 96), (96, 100)]
    assert segment_bounds(0, 16, 40) == []


def test_two_dask_worker_processes_write_what_one_process_writes(trained, clips, one_process, tmp_path,
                                                                 worker_server_requests):  # fmt: skip
    started = worker_server_requests
    ws = workspace_with(trained, tmp_path)
    summary = run_predict(clips, ws, CONFIG, SchedulerConfig(workers=2, threads=False))
    assert (summary.done, summary.failed, summary.frames) == (3, 0, 48), summary.line()
    assert differences(ws / "predictions.zarr", one_process) == []
    # The workers' server, asked for first, preloads both of their stages' tasks, not extract's alone.
    assert started[0] == ("pipeline.extract.run", "pipeline.predict.segments")
    assert callable(importlib.import_module(started[0][0]).segment_task)
    assert callable(importlib.import_module(started[0][1]).predict_segment)


def test_two_torchrun_processes_write_what_one_process_writes(trained, clips, one_process, tmp_path):
    """...also when the first process prepares the inputs for longer than torch's default timeout of a
    collective (shortened to 2 s by the job), as a large folder takes it hours."""
    ws = workspace_with(trained, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(Path(__file__).with_name("slow_first_process_job.py")), "predict", str(clips),
               "--workspace", str(ws), "--batch-size", "4", "--segment-frames", "8", "--device", "cpu",
               "--quiet"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("predict: 3 done, 0 skipped, 0 failed") == 1, done.stdout  # printed once, by rank 0
    assert differences(ws / "predictions.zarr", one_process) == []


def test_a_worker_killed_mid_run_loses_nothing_and_doubles_nothing(trained, clips, one_process, tmp_path):
    from distributed import Client, LocalCluster

    ws = workspace_with(trained, tmp_path)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           memory_limit=0)  # fmt: skip
    address = cluster.scheduler_address
    client = Client(cluster)
    killed = threading.Event()
    victims: list[int] = []

    def kill_a_worker_once_work_started() -> None:
        # Wait until a segment is running, then kill that worker's process outright.
        while not killed.is_set():
            processing = client.processing()
            busy = [worker for worker, tasks in processing.items() if tasks]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, 9)
                victims.append(pid)
                killed.set()
                return
            threading.Event().wait(0.01)

    killer = threading.Thread(target=kill_a_worker_once_work_started, daemon=True)
    killer.start()
    try:
        summary = run_predict(clips, ws, CONFIG, SchedulerConfig(address=address))
    finally:
        killed.set()
        client.close()
        cluster.close()
    assert len(victims) == 1  # a worker did die while segments were running
    assert summary.ok, summary.line()
    assert (summary.done, summary.frames) == (3, 48)
    assert differences(ws / "predictions.zarr", one_process) == []


def test_segments_of_a_run_that_lost_the_lock_write_no_map(trained, clips, tmp_path, monkeypatch):
    from pipeline.predict import run as predict_run
    from stores.fencing import Fence, FencedOut
    from stores.lock import lock_path

    ws = workspace_with(trained, tmp_path)
    # As if this run's coordinator had been killed and another run had taken predictions.zarr's lock since:
    # the segments carry a token the lock file no longer holds, and check it before each chunk.
    stale = lambda store: Fence(str(lock_path(store).resolve()), "a-run-killed-before")  # noqa: E731
    monkeypatch.setattr(predict_run, "held_fence", stale)
    with pytest.raises(FencedOut, match="no longer holds the lock"):
        run_predict(clips, ws, CONFIG, SchedulerConfig(workers=2, threads=False))
    written = chunk_files(ws / "predictions.zarr/videos")
    assert [p for p in written if p.parent.name in ("saliency", "has_saliency")] == []
    assert {p.parent.parent.name for p in written if p.parent.name == "t"}  # the coordinator's own writes went on


def test_a_video_whose_segment_crashes_its_worker_process_fails_alone(trained, clips, one_process, tmp_path,
                                                                     crashing_workers):  # fmt: skip
    from pipeline.common.scheduling import WORKER_DIED

    ws = workspace_with(trained, tmp_path)
    with crashing_workers("pipeline.predict.segments", "predict_segment", lambda segment, *rest: segment.video_id,
                          "long") as scheduler:  # fmt: skip
        summary = run_predict(clips, ws, CONFIG, scheduler)
    assert (summary.done, summary.failed, summary.frames) == (2, 1, 18), summary.line()
    assert summary.failures == [{"video_id": "long", "path": str(clips / "long.mp4"), "reason": WORKER_DIED}]
    again = run_predict(clips, ws, CONFIG)  # nothing crashes here: long is predicted, the others kept
    assert (again.done, again.skipped, again.failed) == (1, 2, 0), again.line()
    assert differences(ws / "predictions.zarr", one_process) == []
