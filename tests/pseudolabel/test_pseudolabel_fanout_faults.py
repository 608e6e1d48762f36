"""Faults in pseudolabel's fanned-out passes: dask workers killed in the middle of a job, the coordinator
killed while its dask workers run jobs, and a whole torchrun job killed in the middle of a pass. In every
case the run (or a rerun) ends with the pseudo.zarr and classifiers one uninterrupted process writes, no
video is marked complete before all of its arrays are written, and no video is counted twice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    ArmedWorkers, all_gone, assert_lock_free, complete_videos, extracted_set, incomplete_differences, kill_tree, run_until_killed,
    video_attrs, wait_until,
)  # fmt: skip
from test_pseudolabel_fanout import PLACES, SETTINGS

from pipeline.common.scheduling import SchedulerConfig
from pipeline.pseudolabel.run import PseudolabelSummary, run_pseudolabel
from pipeline.workspace.config import Overrides, config_path, load_config, write_config
from pipeline.workspace.dag import run_stage
from stores import faults
from stores.compare import checkpoint_differences, store_differences

REPO = Path(__file__).resolve().parents[2]
N_VIDEOS = 4
# Map chunk writes of one video's job at SETTINGS (16 frames, batches of 8): the coarse pass's 2, the fine
# pass's 4, smoothing's 1 (the per-frame rows are the coordinator's to write). A worker armed to die at its
# 3rd chunk write from now dies inside a coarse or a fine job, having written some of its chunks.
MID_JOB_CHUNK = 3


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    ws = extracted_set(tmp_path_factory.mktemp("faults"), classes=2, videos_per_class=N_VIDEOS // 2)
    write_config(config_path(ws), load_config(ws, Overrides(preset="cpu", settings=SETTINGS)).config)
    return ws


@pytest.fixture(scope="module")
def one_process(extracted, tmp_path_factory) -> tuple[Path, PseudolabelSummary]:
    """The uninterrupted one-process run: its workspace and summary."""
    ws = shutil.copytree(extracted, tmp_path_factory.mktemp("single") / "ws")
    summary = run_pseudolabel(ws, load_config(ws).config.pseudolabel)
    assert summary.ok and summary.done == N_VIDEOS, summary.line()
    return ws, summary


def coarse_done(store: Path) -> set[str]:
    """The videos whose coarse arrays the coordinator has recorded as written."""
    return {video_id for video_id, attrs in video_attrs(store).items() if attrs.get("coarse_fingerprint")}


def assert_equal_to_one_process(ws: Path, reference: Path) -> None:
    assert store_differences(ws / "pseudo.zarr", reference / "pseudo.zarr", ignore=PLACES) == []
    expected = sorted(p.name for p in (reference / "checkpoints" / "pseudolabel").glob("*.pt"))
    assert sorted(p.name for p in (ws / "checkpoints" / "pseudolabel").glob("*.pt")) == expected
    for name in expected:
        assert checkpoint_differences(ws / "checkpoints/pseudolabel" / name,
                                      reference / "checkpoints/pseudolabel" / name) == []  # fmt: skip


def test_dask_workers_killed_mid_job_in_both_passes_lose_nothing_and_double_nothing(extracted, one_process,
                                                                                      tmp_path):  # fmt: skip
    reference, expected = one_process
    ws = shutil.copytree(extracted, tmp_path / "ws")
    store = ws / "pseudo.zarr"
    armed: dict[str, list[int]] = {"coarse": [], "final": []}  # pids of the workers set to die, by pass
    # Each armed worker SIGKILLs itself at its MID_JOB_CHUNK-th chunk write from then on.
    plan = f"KILL:chunk:{MID_JOB_CHUNK}"
    with ArmedWorkers() as workers:
        # Both idle workers get a coarse job at once: the armed one dies inside it.
        armed["coarse"] += workers.arm(plan, first_only=True)
        # Once the coarse pass is done the coordinator trains the fine classifiers: every live worker then
        # dies in its first fine job.
        workers.arm_all_once(lambda: len(coarse_done(store)) == N_VIDEOS, "the coarse pass", plan, armed["final"])
        summary = run_pseudolabel(ws, load_config(ws).config.pseudolabel,
                                  scheduler=SchedulerConfig(address=workers.address))  # fmt: skip
        survivors = workers.survivors()
    problems = workers.problems
    assert not problems, problems
    assert armed["coarse"] and armed["final"]
    # Every armed worker did die (in a job: it had written some but not all of that job's chunks).
    assert not survivors & set(armed["coarse"] + armed["final"]), (survivors, armed)
    # Each video completed exactly once: counted once, and nothing failed or was skipped.
    assert (summary.ok, summary.done, summary.skipped, summary.failed) == (True, N_VIDEOS, 0, 0), summary.line()
    assert (summary.frames, summary.frames_with_pseudo_gt) == (expected.frames, expected.frames_with_pseudo_gt)
    assert complete_videos(store) == complete_videos(reference / "pseudo.zarr")
    assert_equal_to_one_process(ws, reference)


# The coordinator's attribute writes in a pseudolabel run, in order (its dask workers write only array
# chunks, so only it counts these): 1 the store's, 2-5 the videos' groups, 6-9 "coarse arrays written",
# 10-13 "in progress" before the final pass, 14-17 "complete", 18 the store's at the end.
# Killed at the 14th: the final pass's first video is complete, three are out. (The torchrun test below
# kills in the coarse pass; each kill costs a run with its own dask workers, so one is enough here.)
COORDINATOR_KILL, COARSE_DONE, COMPLETE = "KILL:attrs:14", N_VIDEOS, 1


def test_a_coordinator_killed_while_its_dask_workers_run_jobs_is_finished_by_a_rerun(extracted, one_process,
                                                                                       tmp_path):  # fmt: skip
    reference, expected = one_process
    ws = shutil.copytree(extracted, tmp_path / "ws")
    store = ws / "pseudo.zarr"
    env = {**os.environ, faults.ENV: COORDINATOR_KILL, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stopped.log"
    command = [sys.executable, "-m", "cli", "pseudolabel", "--workspace", str(ws), "-j", "2", "--quiet"]
    run_until_killed(command, REPO, env, log)
    assert (len(coarse_done(store)), len(complete_videos(store))) == (COARSE_DONE, COMPLETE)  # mid-pass
    assert incomplete_differences(store, reference / "pseudo.zarr", PLACES) == []
    assert_lock_free(store)

    summary = run_stage("pseudolabel", ws, Overrides(), progress=False)  # one process; takes the lock itself
    assert (summary.ok, summary.done, summary.skipped) == (True, N_VIDEOS - COMPLETE, COMPLETE), summary.line()
    assert (summary.frames, summary.frames_with_pseudo_gt) == (expected.frames, expected.frames_with_pseudo_gt)
    assert_equal_to_one_process(ws, reference)


# Each rank freezes (SIGSTOP) at its MID_JOB_CHUNK-th chunk write, inside its second coarse job.
TORCHRUN_STOP = f"STOP:chunk:{MID_JOB_CHUNK}"


def test_a_torchrun_job_killed_mid_pass_is_finished_by_a_rerun(extracted, one_process, tmp_path):
    reference, expected = one_process
    ws = shutil.copytree(extracted, tmp_path / "ws")
    # The one process's classifiers, reused: the job goes straight to the passes (classifiers trained
    # across processes agree with one process's only to float rounding, so maps would not be bitwise).
    shutil.copytree(reference / "checkpoints", ws / "checkpoints")
    store = ws / "pseudo.zarr"
    # Both ranks freeze inside their second job; then every process of the job is killed.
    env = {**os.environ, faults.ENV: TORCHRUN_STOP, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stopped.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "cli", "pseudolabel", "--workspace", str(ws), "--quiet"]  # fmt: skip
    import psutil  # comes with dask.distributed

    def both_ranks_frozen() -> bool:
        assert launcher.poll() is None, log.read_text()[-3000:]  # it must not end (nor fail) by itself
        try:
            # torchrun's children: the two ranks (`python -m cli ...`)
            ranks = [p for p in psutil.Process(launcher.pid).children() if "cli" in p.cmdline()]
            return len(ranks) == 2 and all(p.status() == psutil.STATUS_STOPPED for p in ranks)
        except psutil.Error:  # a process that went meanwhile: look again
            return False

    with open(log, "w") as out:
        launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        try:
            wait_until(both_ranks_frozen, "both ranks to freeze in their second job", timeout=240)
        finally:
            killed = kill_tree(launcher.pid)
            launcher.wait(timeout=30)
    wait_until(lambda: all_gone(killed), "the killed job's processes to go", timeout=30)
    # Killed inside the coarse pass: every video's group made, no coarse result recorded yet.
    assert (len(video_attrs(store)), len(coarse_done(store)), len(complete_videos(store))) == (N_VIDEOS, 0, 0)
    assert_lock_free(store)

    summary = run_stage("pseudolabel", ws, Overrides(), progress=False)
    assert (summary.ok, summary.done, summary.skipped) == (True, N_VIDEOS, 0), summary.line()
    assert (summary.frames, summary.frames_with_pseudo_gt) == (expected.frames, expected.frames_with_pseudo_gt)
    assert_equal_to_one_process(ws, reference)
