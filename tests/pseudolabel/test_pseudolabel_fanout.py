"""Pseudolabel spread over processes. 2 dask worker processes write the same pseudo.zarr as one process, bit
for bit (the classifiers train in the coordinating process). A 2-process torchrun job trains each
classifier together (with frozen BatchNorm: what one process trains, up to the order of float sums), and
with the same classifiers its passes write the same pseudo.zarr bit for bit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import extracted_set

from pipeline.common.scheduling import SchedulerConfig
from pipeline.pseudolabel.run import run_pseudolabel
from pipeline.workspace.config import Overrides, config_path, load_config, write_config
from stores.compare import VOLATILE_ATTRS, store_differences

REPO = Path(__file__).resolve().parents[2]
SETTINGS = (
    "pseudolabel.coarse_size=64", "pseudolabel.fine_size=64", "pseudolabel.map_size=32", "pseudolabel.infer_batch=8",
    "pseudolabel.train.epochs=1", "pseudolabel.train.batch_size=16", "pseudolabel.device=cpu", "run.torch_threads=1",
    "pseudolabel.train.freeze_batchnorm=true",
    # SGD: its step is linear in the gradient, so the order of a sum across processes moves the weights
    # by float rounding only. Adam's first steps are about lr x sign(gradient): a gradient near zero whose
    # sign the summation order flips moves a weight by ~lr (2e-3 seen on SA_coarse with the cpu preset's Adam).
    "pseudolabel.train.optimizer=sgd", "pseudolabel.train.lr=0.01",
)  # fmt: skip
PLACES = VOLATILE_ATTRS | {"features_store", "config"}  # where each run's files lie, and run-only settings


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    ws = extracted_set(tmp_path_factory.mktemp("fanout"), classes=2, videos_per_class=2)
    write_config(config_path(ws), load_config(ws, Overrides(preset="cpu", settings=SETTINGS)).config)
    return ws


@pytest.fixture(scope="module")
def one_process(extracted, tmp_path_factory) -> Path:
    ws = shutil.copytree(extracted, tmp_path_factory.mktemp("single") / "ws")
    summary = run_pseudolabel(ws, load_config(ws).config.pseudolabel)
    assert summary.ok and summary.done == 4, summary.line()
    return ws / "pseudo.zarr"


def test_two_dask_worker_processes_write_what_one_process_writes(extracted, one_process, tmp_path):
    ws = shutil.copytree(extracted, tmp_path / "ws")
    summary = run_pseudolabel(ws, load_config(ws).config.pseudolabel,
                              scheduler=SchedulerConfig(workers=2, threads=False))  # fmt: skip
    assert summary.ok and summary.done == 4, summary.line()
    assert store_differences(ws / "pseudo.zarr", one_process, ignore=PLACES) == []


def _torchrun_pseudolabel(ws: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "cli", "pseudolabel", "--workspace", str(ws), "--quiet"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("pseudolabel: 4 done, 0 skipped, 0 failed") == 1, done.stdout  # by rank 0 only


def test_two_torchrun_processes_write_what_one_process_writes(extracted, one_process, tmp_path):
    ws = shutil.copytree(extracted, tmp_path / "ws")
    # The one process's classifiers, reused: the passes alone are compared.
    shutil.copytree(one_process.parent / "checkpoints", ws / "checkpoints")
    _torchrun_pseudolabel(ws)
    assert store_differences(ws / "pseudo.zarr", one_process, ignore=PLACES) == []


def test_two_torchrun_processes_train_the_classifiers_one_process_trains(extracted, one_process, tmp_path):
    ws = shutil.copytree(extracted, tmp_path / "ws")
    _torchrun_pseudolabel(ws)
    alone, together = one_process.parent / "checkpoints" / "pseudolabel", ws / "checkpoints" / "pseudolabel"
    names = sorted(path.name for path in alone.glob("*.pt"))
    assert names == sorted(path.name for path in together.glob("*.pt")) and len(names) == 7
    for name in names:
        a = torch.load(alone / name, map_location="cpu", weights_only=False)
        b = torch.load(together / name, map_location="cpu", weights_only=False)
        assert a["state"]["best_val"] == b["state"]["best_val"] and a["state"]["steps"] == b["state"]["steps"], name
        for key, value in a["model"].items():
            torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")


def test_a_video_whose_pass_crashes_its_worker_process_fails_alone(extracted, one_process, tmp_path,
                                                                  crashing_workers):  # fmt: skip
    import zarr

    from pipeline.common.scheduling import WORKER_DIED
    from pipeline.pseudolabel.stage import PseudolabelStage
    from pipeline.stage import COMPLETE, FAILED

    ws = shutil.copytree(extracted, tmp_path / "ws")
    ids = sorted(zarr.open_group(str(ws / "features.zarr"), mode="r")["videos"].group_keys())
    poisoned = ids[0]
    with crashing_workers("pipeline.pseudolabel.passes", "run_pass", lambda job, *rest: job.info.video_id,
                          poisoned) as scheduler:  # fmt: skip
        summary = run_pseudolabel(ws, load_config(ws).config.pseudolabel, scheduler=scheduler)
    assert (summary.done, summary.failed) == (3, 1), summary.line()
    [failure] = summary.failures
    assert failure["video_id"] == poisoned and failure["reason"].endswith(WORKER_DIED), failure
    # Status agrees with the run: the fine classifiers trained without the failed video are the ones a run
    # would use while it fails (not stale), the other videos are complete.
    state = PseudolabelStage().state(ws, load_config(ws).config)
    assert {v.video_id: v.state for v in state.videos} == {v: FAILED if v == poisoned else COMPLETE for v in ids}
    assert not state.needs_run, state.reason
    # The rerun (nothing crashes here) trains the fine classifiers again, now with the failed video's crops,
    # and so redoes every video's final maps: it ends with the store of a run that never failed.
    again = run_pseudolabel(ws, load_config(ws).config.pseudolabel)
    assert again.ok and (again.done, again.failed) == (4, 0), again.line()
    assert store_differences(ws / "pseudo.zarr", one_process, ignore=PLACES) == []


def test_status_of_a_run_killed_in_a_coarse_pass_keeps_the_fine_classifiers(one_process, tmp_path):
    """A video whose coarse maps are missing because a run was stopped (not because it failed) gets them in
    the next run before the fine classifiers train: they stay valid, and only that video is to do."""
    import zarr

    from pipeline.pseudolabel.stage import PseudolabelStage
    from pipeline.stage import COMPLETE, MISSING
    from stores import pseudo as pstore
    from stores import zarr_io

    ws = shutil.copytree(one_process.parent, tmp_path / "ws")
    root = zarr.open_group(str(ws / "pseudo.zarr"), mode="r+")
    ids = sorted(root["videos"].group_keys())
    pstore.SCHEMA.update_video(zarr_io.video_group(root, ids[0]), coarse_fingerprint=None,
                               status=zarr_io.STATUS_IN_PROGRESS)  # fmt: skip
    state = PseudolabelStage().state(ws, load_config(ws).config)
    assert {v.video_id: v.state for v in state.videos} == {v: MISSING if v == ids[0] else COMPLETE for v in ids}
