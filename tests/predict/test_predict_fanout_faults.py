"""A predict coordinator killed while its dask worker processes predict segments: its workers go with it,
its lock is taken over, nothing is marked complete before all of its maps are written, and a rerun ends
with the predictions.zarr one uninterrupted process writes. (A worker killed mid-run:
`test_predict_fanout.test_a_worker_killed_mid_run_loses_nothing_and_doubles_nothing`.)"""

from __future__ import annotations

import os
import shutil
import sys

import test_predict_fanout as fanout
from conftest import (
    assert_lock_free, complete_videos, incomplete_differences, run_until_killed, video_attrs,
)  # fmt: skip
from test_predict_fanout import CONFIG, PLACES, REPO, differences

from pipeline.predict.run import run_predict
from stores import faults

# The fan-out tests' own fixtures: the same trained network, clips and uninterrupted run.
trained, clips, one_process = fanout.trained, fanout.clips, fanout.one_process

# The coordinator's attribute writes when the decoded inputs are already complete (its dask workers write
# only map chunks, so only it counts these): 1-2 the decoded store's, 3 the predictions store's, 4-6 the
# three videos' groups, 7-9 "complete", 10 the store's failure list. Killed at the first "complete": one
# video is done, the others' segments are still out.
KILL_AT_FIRST_COMPLETE = "KILL:attrs:7"


def test_a_coordinator_killed_while_its_dask_workers_predict_is_finished_by_a_rerun(trained, clips, one_process,
                                                                                     tmp_path):  # fmt: skip
    reference = one_process.parent
    ws = tmp_path / "ws"
    shutil.copytree(trained / "checkpoints", ws / "checkpoints")
    # The inputs decoded already (kills while decoding: tests/workspace/test_crash_consistency.py): the
    # kill falls in the network pass, and the run starts one dask cluster, not two.
    shutil.copytree(reference / "predict-features.zarr", ws / "predict-features.zarr")
    store = ws / "predictions.zarr"
    env = {**os.environ, faults.ENV: KILL_AT_FIRST_COMPLETE, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stopped.log"
    command = [sys.executable, "-m", "cli", "predict", str(clips), "--workspace", str(ws), "--batch-size", "4",
               "--segment-frames", "8", "--device", "cpu", "-j", "2", "--processes", "--quiet"]  # fmt: skip
    run_until_killed(command, REPO, env, log)
    assert (len(video_attrs(store)), len(complete_videos(store))) == (3, 1)  # killed mid-pass
    assert incomplete_differences(store, one_process, PLACES) == []
    assert_lock_free(store)
    assert_lock_free(ws / "predict-features.zarr")

    summary = run_predict(clips, ws, CONFIG)  # one process
    assert (summary.ok, summary.done, summary.skipped, summary.frames) == (True, 2, 1, 48), summary.line()
    assert differences(store, one_process) == []
    assert differences(ws / "predict-features.zarr", reference / "predict-features.zarr") == []
