"""Crash consistency of every write path: each stage's command is stopped by SIGKILL or SIGINT at a
reproducible write (`stores.faults`: after the n-th chunk, attribute or file write), run again, and what
it wrote must equal, array by array and attribute by attribute, what an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import first_run_overrides, interruptible, make_sets

from pipeline.workspace.config import Overrides, load_config, write_config
from pipeline.workspace.dag import run_stage
from pipeline.workspace.registry import NAMES
from stores import faults
from stores.compare import checkpoint_differences, store_differences

REPO = Path(__file__).resolve().parents[2]
VOLATILE_REPORT = {"created", "seconds"}


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(live root, {"<stage>": the root after that stage ran uninterrupted, "": before any stage})."""
    base = tmp_path_factory.mktemp("crash")
    live = base / "root"
    train, test = make_sets(live)
    # A checkpoint after every training step: the train stage has write points to be stopped at.
    loaded = load_config(live / "ws", first_run_overrides(train, test, "train.checkpoint_every=1"))
    write_config(loaded.path, loaded.config)
    taken = {"": _snapshot(live, base / "before")}
    for name in NAMES:
        summary = run_stage(name, live / "ws", Overrides(), progress=False)
        assert summary.ok, summary.line()
        taken[name] = _snapshot(live, base / f"after-{name}")
    return live, taken


# The `fast` preset's frozen pretrained backbone at the tests' sizes: the caches' write paths.
FROZEN = ("train.input_size=64", "train.checkpoint_every=1", "train.model.width=8", "train.model.switch_hidden=16")


@pytest.fixture(scope="module")
def frozen_snapshots(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """As `snapshots`, for extract -> pseudolabel -> train with the `fast` preset (frozen backbone)."""
    base = tmp_path_factory.mktemp("crash-frozen")
    live = base / "root"
    train, test = make_sets(live)
    overrides = replace(first_run_overrides(train, test, *FROZEN), preset="fast")
    loaded = load_config(live / "ws", overrides)
    assert loaded.config.pseudolabel.frozen and loaded.config.train.frozen_backbone
    write_config(loaded.path, loaded.config)
    taken = {"": _snapshot(live, base / "before")}
    for name in ("extract", "pseudolabel", "train"):
        summary = run_stage(name, live / "ws", Overrides(), progress=False)
        assert summary.ok, summary.line()
        taken[name] = _snapshot(live, base / f"after-{name}")
    return live, taken


def _snapshot(live: Path, to: Path) -> Path:
    shutil.copytree(live, to)
    return to


def _restore(live: Path, snapshot: Path) -> None:
    shutil.rmtree(live)
    shutil.copytree(snapshot, live)  # modification times kept: the sources read as unchanged


def command(name: str, root: Path) -> list[str]:
    inputs = {"extract": [str(root / "train")], "predict": [str(root / "test")],
              "evaluate": [str(root / "test" / "truth.csv")]}  # fmt: skip
    return [sys.executable, "-m", "cli", name, *inputs.get(name, []), "--workspace", str(root / "ws"), "--quiet"]


# (stage, fault): the n-th write of a kind at which the command is stopped
CASES = [
    ("extract", "KILL:attrs:2"),  # while a video's group is being made (before its arrays exist)
    ("extract", "KILL:chunk:3"),
    ("extract", "INT:chunk:9"),
    ("extract", "INT:attrs:6"),
    ("pseudolabel", "KILL:file:3"),  # a classifier checkpoint
    ("pseudolabel", "KILL:chunk:14"),  # the coarse or fine maps
    ("pseudolabel", "INT:attrs:5"),
    ("train", "KILL:file:2"),  # after the second step's checkpoint
    ("train", "INT:file:1"),
    ("predict", "KILL:chunk:4"),
    ("predict", "INT:attrs:5"),
    ("predict", "INT:attrs:10"),  # the store's failure list, written after the last video
    ("evaluate", "KILL:file:1"),  # report.json written, report.md not yet
    ("evaluate", "INT:file:2"),
]


@pytest.mark.parametrize("name, fault", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_a_stopped_stage_rerun_ends_equal_to_an_uninterrupted_run(snapshots, name, fault):
    live, taken = snapshots
    stop_rerun_and_compare(live, taken, name, fault)


def stop_rerun_and_compare(live: Path, taken: dict[str, Path], name: str, fault: str) -> None:
    """Stop `name` with `fault` from its upstream's snapshot, rerun it, compare with the uninterrupted run."""
    _restore(live, taken[NAMES[NAMES.index(name) - 1]] if NAMES.index(name) else taken[""])
    env = {**os.environ, faults.ENV: fault, "OMP_NUM_THREADS": "1"}
    stopped = subprocess.run(command(name, live), cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                             preexec_fn=interruptible)  # fmt: skip
    expected_code = -signal.SIGKILL if fault.startswith("KILL") else 130
    assert stopped.returncode == expected_code, (stopped.returncode, stopped.stdout[-800:], stopped.stderr[-2000:])
    summary = run_stage(name, live / "ws", Overrides(), progress=False)
    assert summary.ok, summary.line()
    assert_outputs_equal(name, live / "ws", taken[name] / "ws")


FROZEN_CASES = [
    ("pseudolabel", "KILL:chunk:2"),  # the coarse maps' cache
    ("pseudolabel", "INT:attrs:4"),  # a cache video's parts
    ("pseudolabel", "KILL:chunk:30"),  # the fine maps' cache or the maps
    ("train", "KILL:chunk:2"),  # the levels' cache
    ("train", "INT:attrs:3"),
    ("train", "KILL:file:2"),
]


@pytest.mark.parametrize("name, fault", FROZEN_CASES, ids=[f"{c[0]} {c[1]}" for c in FROZEN_CASES])
def test_a_stopped_frozen_backbone_stage_rerun_ends_equal_to_an_uninterrupted_run(frozen_snapshots, name, fault):
    live, taken = frozen_snapshots
    stop_rerun_and_compare(live, taken, name, fault)


def assert_outputs_equal(name: str, got: Path, expected: Path) -> None:
    if name == "extract":
        assert_stores_equal(got / "features.zarr", expected / "features.zarr")
    elif name == "pseudolabel":
        assert_stores_equal(got / "pseudo.zarr", expected / "pseudo.zarr")
        assert (got / "scam-cache.zarr").exists() == (expected / "scam-cache.zarr").exists()
        if (expected / "scam-cache.zarr").exists():
            assert_stores_equal(got / "scam-cache.zarr", expected / "scam-cache.zarr")
        for path in sorted((expected / "checkpoints" / "pseudolabel").glob("*.pt")):
            assert_checkpoints_equal(got / path.relative_to(expected), path)
    elif name == "train":
        assert (got / "sta-cache.zarr").exists() == (expected / "sta-cache.zarr").exists()
        if (expected / "sta-cache.zarr").exists():
            assert_stores_equal(got / "sta-cache.zarr", expected / "sta-cache.zarr")
        for checkpoint in ("last.pt", "best.pt"):
            assert_checkpoints_equal(got / "checkpoints/sta" / checkpoint, expected / "checkpoints/sta" / checkpoint)
    elif name == "predict":
        assert_stores_equal(got / "predictions.zarr", expected / "predictions.zarr")
        assert_stores_equal(got / "predict-features.zarr", expected / "predict-features.zarr")
    else:
        reports = [json.loads((ws / "report.json").read_text()) for ws in (got, expected)]
        assert [{k: v for k, v in r.items() if k not in VOLATILE_REPORT} for r in reports][0] == \
            [{k: v for k, v in r.items() if k not in VOLATILE_REPORT} for r in reports][1]  # fmt: skip
        assert (got / "report.md").is_file() and not list(got.glob(".*.partial"))


def assert_stores_equal(got: Path, expected: Path) -> None:
    assert store_differences(got, expected) == []


def assert_checkpoints_equal(got: Path, expected: Path) -> None:
    assert checkpoint_differences(got, expected) == []


SYNTH = ["--classes", "2", "--videos-per-class", "2", "--seconds", "1.2", "--fps", "10", "--width", "64",
         "--height", "64", "--quiet"]  # fmt: skip


@pytest.mark.parametrize("fault", ["KILL:file:2", "INT:file:3"])
def test_a_stopped_synth_rerun_ends_equal_to_an_uninterrupted_run(tmp_path, fault):
    reference, stopped_set = tmp_path / "reference", tmp_path / "stopped"
    done = subprocess.run([sys.executable, "-m", "cli", "synth", str(reference), *SYNTH], cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr
    env = {**os.environ, faults.ENV: fault}
    stopped = subprocess.run([sys.executable, "-m", "cli", "synth", str(stopped_set), *SYNTH], cwd=REPO, env=env,
                             capture_output=True, text=True, preexec_fn=interruptible)  # fmt: skip
    assert stopped.returncode == (-signal.SIGKILL if fault.startswith("KILL") else 130), stopped.stderr[-2000:]
    rerun = subprocess.run([sys.executable, "-m", "cli", "synth", str(stopped_set), *SYNTH], cwd=REPO, capture_output=True)
    assert rerun.returncode == 0, rerun.stderr
    files = {p.relative_to(reference) for p in reference.rglob("*") if p.is_file()}
    assert files == {p.relative_to(stopped_set) for p in stopped_set.rglob("*") if p.is_file()}
    for relative in sorted(files):
        assert (reference / relative).read_bytes() == (stopped_set / relative).read_bytes(), relative
