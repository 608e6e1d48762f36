"""Every stage of the registry: for each reason its output can be out of date (source changed, settings
changed, upstream changed, checkpoint changed, half-written, algorithm version bumped), `Stage.state`
(what `avfix status` and `avfix run` read) and the stage's own run agree: the run redoes exactly the
videos the state called stale or missing (train: restarts or resumes as the state said), and afterwards
the state says complete. A package version bump alone changes nothing."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import zarr
from conftest import first_run_overrides, make_sets

from pipeline.evaluate.config import EvaluateConfig
from pipeline.extract.config import ExtractConfig
from pipeline.predict.config import PredictConfig
from pipeline.predict.stage import overlay_path
from pipeline.pseudolabel.config import PseudolabelConfig
from pipeline.stage import COMPLETE, FAILED, MISSING, STALE, StageRun, StageState
from pipeline.train.config import STATrainConfig
from pipeline.workspace import registry
from pipeline.workspace.config import Overrides, load_config
from pipeline.workspace.dag import RunRequest, run_dag
from pipeline.workspace.status import read_status
from stores import features as fstore
from stores import predictions as pred_store
from stores import pseudo as pstore
from stores import zarr_io

PER_VIDEO = {"extract": fstore.SCHEMA, "pseudolabel": pstore.SCHEMA, "predict": pred_store.SCHEMA}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    """(live root, pristine copy): sets and a workspace after one complete run. Each test works in the
    live root, restored from the copy first, so source paths stay where the stores recorded them."""
    live = tmp_path_factory.mktemp("contract") / "root"
    train, test = make_sets(live)
    summary = run_dag(live / "ws", first_run_overrides(train, test), RunRequest(progress=False), lambda line: None)
    assert summary.ok, summary.line()
    copy = live.parent / "pristine"
    shutil.copytree(live, copy)
    return live, copy


@pytest.fixture
def root(pristine) -> Path:
    live, copy = pristine
    shutil.rmtree(live)
    shutil.copytree(copy, live)  # copy2 keeps modification times: the sources read as unchanged
    return live


# --- perturbations -----------------------------------------------------------------------------


def replace_source(relative: str, donor: str) -> Callable[[Path], None]:
    def perturb(root: Path) -> None:
        shutil.copyfile(root / donor, root / relative)

    return perturb


def half_written(kind: str, video_id: str) -> Callable[[Path], None]:
    def perturb(root: Path) -> None:
        group = zarr.open_group(str(PER_VIDEO[kind].path(root / "ws")), mode="r+", path=f"videos/{video_id}")
        group.attrs["status"] = zarr_io.STATUS_IN_PROGRESS

    return perturb


def new_fingerprint(store: str, video_id: str) -> Callable[[Path], None]:
    """The upstream stage remade one video (its fingerprint is all downstream stages see of it)."""

    def perturb(root: Path) -> None:
        zarr.open_group(str(root / "ws" / store), mode="r+", path=f"videos/{video_id}").attrs["fingerprint"] = "remade"

    return perturb


def re_extracted(relative: str, donor: str) -> Callable[[Path], None]:
    def perturb(root: Path) -> None:
        replace_source(relative, donor)(root)
        summary = run_dag(root / "ws", Overrides(), RunRequest(until="extract", progress=False), lambda line: None)
        assert summary.outcome("extract").summary["done"] == 1

    return perturb


def other_classifier(root: Path) -> None:
    """A finished classifier checkpoint replaced by one with other weights (as by a copied-in file)."""
    path = root / "ws" / "checkpoints" / "pseudolabel" / "S_fine.pt"
    saved = torch.load(path, weights_only=True)
    best = saved["state"]["best_state"]
    name = next(iter(best))
    best[name] = best[name] + 1e-3
    torch.save(saved, path)


def other_weights(root: Path) -> None:
    path = root / "ws" / "checkpoints" / "sta" / "best.pt"
    saved = torch.load(path, weights_only=True)
    name = next(iter(saved["model"]))
    saved["model"][name] = saved["model"][name] + 1e-3
    torch.save(saved, path)


def garbage_checkpoint(root: Path) -> None:
    (root / "ws" / "checkpoints" / "sta" / "last.pt").write_bytes(b"not a checkpoint")


def edited_fixations(root: Path) -> None:
    truth = root / "test" / "truth.csv"
    lines = truth.read_text().splitlines()
    fields = lines[1].split(",")
    fields[2] = str(float(fields[2]) + 5.0)  # x of the first fixation
    truth.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")


def nothing(root: Path) -> None:
    pass


def written_before_algorithm_versions(root: Path) -> None:
    """A video written before stores recorded the stage's algorithm version (its fingerprint held the
    avfix release then): stale once, with that reason."""
    group = zarr.open_group(str(root / "ws" / "features.zarr"), mode="r+", path="videos/c0_disc_tone_001")
    group.attrs.put({k: v for k, v in dict(group.attrs).items() if k != "algorithm_version"} | {"fingerprint": "old"})


VERSIONED = {"extract": ExtractConfig, "pseudolabel": PseudolabelConfig, "train": STATrainConfig,
             "predict": PredictConfig, "evaluate": EvaluateConfig}  # fmt: skip

# (stage, why, perturbation, --set overrides)
CASES: list[tuple[str, str, Callable[[Path], None], tuple[str, ...]]] = [
    ("extract", "source changed", replace_source("train/c0_disc_tone/c0_disc_tone_000.mp4",
                                                 "train/c0_disc_tone/c0_disc_tone_001.mp4"), ()),
    ("extract", "settings changed", nothing, ("extract.flow.preset=fast",)),
    ("extract", "half-written", half_written("extract", "c1_square_noise_001"), ()),
    ("extract", "written before algorithm versions", written_before_algorithm_versions, ()),
    ("pseudolabel", "settings changed", nothing, ("pseudolabel.smoothing=plain",)),
    ("pseudolabel", "upstream changed", re_extracted("train/c1_square_noise/c1_square_noise_001.mp4",
                                                     "train/c1_square_noise/c1_square_noise_000.mp4"), ()),
    ("pseudolabel", "checkpoint changed", other_classifier, ()),
    ("pseudolabel", "half-written", half_written("pseudolabel", "c0_disc_tone_000"), ()),
    ("train", "settings changed", nothing, ("train.lr=0.01",)),
    ("train", "upstream changed", new_fingerprint("pseudo.zarr", "c0_disc_tone_001"), ()),
    ("train", "checkpoint changed", garbage_checkpoint, ()),
    ("train", "half-written", nothing, ("train.epochs=2",)),  # as a run stopped after 1 of 2 epochs
    ("predict", "source changed", replace_source("test/c0_disc_tone/c0_disc_tone_000.mp4",
                                                 "test/c1_square_noise/c1_square_noise_000.mp4"), ()),
    ("predict", "settings changed", nothing, ("predict.blur_sigma=3.0",)),
    ("predict", "overlay settings changed", nothing, ("predict.overlay=true",)),
    ("predict", "checkpoint changed", other_weights, ()),
    ("predict", "half-written", half_written("predict", "c1_square_noise_000"), ()),
    ("evaluate", "settings changed", nothing, ("evaluate.post_sigma=3.0",)),
    ("evaluate", "upstream changed", new_fingerprint("predictions.zarr", "c0_disc_tone_000"), ()),
    ("evaluate", "source changed", edited_fixations, ()),
] + [(name, "algorithm version bumped", nothing, ()) for name in registry.NAMES]


def made(name: str, ws: Path) -> dict[str, Any]:
    """When each output of the stage was last written (per video where the stage works per video)."""
    if name in PER_VIDEO:
        schema = PER_VIDEO[name]
        root = zarr_io.open_root(schema.path(ws))
        marks: dict[str, Any] = {v: schema.read_video(root, v).completed_at for v in schema.video_ids(root)}
        if name == "predict":
            marks = {v: (mark, _mtime(overlay_path(ws, v))) for v, mark in marks.items()}
        return marks
    if name == "train":
        return {"last.pt": _mtime(ws / "checkpoints" / "sta" / "last.pt")}
    return {"report": _mtime(ws / "report.json")}


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def to_redo(state: StageState) -> set[str]:
    return {v.video_id for v in state.videos if v.state in (STALE, MISSING) or (v.state == FAILED and v.retry)}


def test_every_stage_has_every_case():
    reasons = {name: {why for stage, why, _, _ in CASES if stage == name} for name in registry.NAMES}
    for name, found in reasons.items():
        assert {"settings changed", "algorithm version bumped"} <= found, name
        assert found & {"source changed", "upstream changed"}, name
    assert set(reasons) == {name for name, *_ in CASES}


@pytest.mark.parametrize("name, why, perturb, settings", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_state_and_the_stages_own_run_agree(root, monkeypatch, name, why, perturb, settings):
    ws = root / "ws"
    perturb(root)
    if why == "algorithm version bumped":
        monkeypatch.setattr(VERSIONED[name], "ALGORITHM_VERSION", VERSIONED[name].ALGORITHM_VERSION + 1)
    overrides = Overrides(settings=settings)
    config = load_config(ws, overrides).config
    stage = registry.stage(name)
    before = stage.state(ws, config)
    assert before.state in (STALE, MISSING), (before.state, before.reason)
    version = VERSIONED[name].ALGORITHM_VERSION
    if why == "algorithm version bumped":
        assert f"algorithm version {version - 1}, now {version}" in before.reason, before.reason
    if why == "written before algorithm versions":
        assert f"made before extract recorded its algorithm version (now {version}): made again once" in before.reason
    status = read_status(ws, overrides).stage(name)  # what `avfix status` and `avfix run` see
    assert (status.state, status.reason) == (before.state, before.reason)

    marks = made(name, ws)
    summary = stage.run(StageRun(ws, config, restart=before.restart, progress=False))
    assert summary.ok and not summary.interrupted, summary.line()
    after_marks = made(name, ws)
    if name in PER_VIDEO:
        redone = {key for key, mark in after_marks.items() if mark != marks.get(key)}
        assert redone == to_redo(before), before.reason
        assert redone, "every case here makes at least one video out of date"
    elif name == "train":
        restarted = summary.resumed_from_step is None and not summary.up_to_date
        assert restarted == before.restart, (before.reason, summary.line())
        assert summary.steps > 0 and not summary.up_to_date
    else:
        assert after_marks != marks and summary.units_done > 0

    after = stage.state(ws, config)
    assert after.state == COMPLETE, after.reason  # what the run recorded is what the state computes
    assert all(v.state == COMPLETE for v in after.videos)


def test_a_package_version_bump_alone_leaves_the_workspace_up_to_date(root, monkeypatch):
    import pipeline

    monkeypatch.setattr(zarr_io, "package_version", lambda: "99.0.0")
    monkeypatch.setattr(pipeline, "__version__", "99.0.0")
    found = read_status(root / "ws")
    assert {s.stage: s.state for s in found.stages} == dict.fromkeys(registry.NAMES, COMPLETE)
