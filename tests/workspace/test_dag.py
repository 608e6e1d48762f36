"""`avfix run` and `avfix status` on a tiny generated set: a second run does nothing, a changed setting
reruns only the stages it affects, a deleted output redoes only that video, failures are reported and
not retried while their input is unchanged, --until / --force, Ctrl-C; and WS/avfix.toml round-trips."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from conftest import TINY, first_run_overrides, make_sets
from test_startup import NOT_FOR_STATUS, run_cli

from cli import main
from pipeline.common.settings import jsonable
from pipeline.workspace import dag, registry
from pipeline.workspace.config import PRESETS, ConfigError, Overrides, load_config, preset_defaults, write_config
from pipeline.workspace.dag import RunRequest, run_dag
from pipeline.workspace.registry import NAMES as STAGES
from pipeline.workspace.status import read_status


def run(ws: Path, *settings: str, until: str | None = None, force: tuple[str, ...] = ()) -> tuple[dag.RunSummary, list[str]]:
    """One `avfix run` from Python: its summary and the lines it printed."""
    lines: list[str] = []
    summary = run_dag(ws, Overrides(settings=settings), RunRequest(until, force, progress=False), lines.append)
    return summary, lines


def actions(summary: dag.RunSummary) -> dict[str, str]:
    return {outcome.stage: outcome.action for outcome in summary.stages}


def states(ws: Path, *settings: str) -> dict[str, str]:
    return {stage.stage: stage.state for stage in read_status(ws, Overrides(settings=settings)).stages}


def video_states(ws: Path, stage: str) -> dict[str, tuple[str, str]]:
    found = read_status(ws).stage(stage)
    return {v.video_id: (v.state, v.reason) for v in found.videos}


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> tuple[Path, dag.RunSummary]:
    """A workspace after one complete `avfix run` (through the command line), and its summary."""
    root = tmp_path_factory.mktemp("dag")
    train, test = make_sets(root)
    ws = root / "ws"
    args = ["run", str(train), "-w", str(ws), "--predict", str(test), "--fixations", str(test / "truth.csv"),
            "--layout", "csv", "--preset", "cpu", "--quiet", "--json"] + [a for s in TINY for a in ("--set", s)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    return ws, summary


def copy_of(done: tuple[Path, dict], tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(done[0], ws)
    return ws


def test_first_run_runs_every_stage_and_records_its_config(done):
    ws, summary = done
    assert summary["ok"] and [s["action"] for s in summary["stages"]] == ["ran"] * 5
    assert summary["config_written"]
    toml = tomllib.loads((ws / "avfix.toml").read_text())
    assert toml["run"]["preset"] == "cpu" and toml["pseudolabel"]["map_size"] == 32 and toml["train"]["epochs"] == 1
    config = load_config(ws).config
    for store, section in (("features.zarr", "extract"), ("pseudo.zarr", "pseudolabel"), ("predictions.zarr", "predict")):
        recorded = dict(zarr.open_group(str(ws / store), mode="r").attrs["config"])
        assert recorded == jsonable(config.section(section)), store
    assert torch.load(ws / "checkpoints/sta/last.pt", weights_only=True)["config"]["epochs"] == 1
    report = json.loads((ws / "report.json").read_text())
    assert sum(len(d["items"]) for d in report["datasets"]) == 24


def test_status_of_a_finished_workspace_reads_its_checkpoint_without_torch(done):
    ws, _ = done
    code, out, modules = run_cli("status", "--workspace", str(ws), "--json")
    assert code == 0
    assert json.loads(out)["stages"] == read_status(ws).to_dict()["stages"]
    assert [stage["state"] for stage in json.loads(out)["stages"]] == ["complete"] * 5
    assert modules.isdisjoint(NOT_FOR_STATUS), sorted(modules & set(NOT_FOR_STATUS))


def test_second_run_does_nothing_and_says_so_per_stage(done, tmp_path):
    ws = copy_of(done, tmp_path)  # a moved workspace is still up to date
    result = CliRunner().invoke(main, ["run", "-w", str(ws), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == ["extract: up to date (4 videos)", "pseudolabel: up to date (4 videos)"]
    assert re.fullmatch(r"train: up to date \(1 epoch, \d+ steps?\)", lines[2])
    assert lines[3:5] == ["predict: up to date (2 videos)", "evaluate: up to date (24 items)"]
    assert len(lines) == 6
    assert lines[-1].startswith("run: nothing to do, 5 stage(s) up to date")
    assert states(ws) == dict.fromkeys(STAGES, "complete")


def test_changed_setting_reruns_only_that_stage_and_what_follows(done, tmp_path):
    ws = copy_of(done, tmp_path)
    before = {vid: g["pseudo_gt"][:] for vid, g in zarr.open_group(str(ws / "pseudo.zarr/videos"), mode="r").groups()}
    classifiers = {p.name: p.stat().st_mtime_ns for p in (ws / "checkpoints/pseudolabel").glob("*.pt")}
    found = read_status(ws, Overrides(settings=("pseudolabel.smoothing=plain",)))
    assert [s.state for s in found.stages] == ["complete", "stale", "stale", "stale", "stale"]
    assert "smoothing: 'flow' -> 'plain'" in found.stage("pseudolabel").reason
    assert found.stage("train").reason == "pseudolabel is stale: runs again after it"

    summary, lines = run(ws, "pseudolabel.smoothing=plain")
    assert actions(summary) == {"extract": "skipped", "pseudolabel": "ran", "train": "ran", "predict": "ran",
                                "evaluate": "ran"}  # fmt: skip
    assert "train: running (the pseudo-labels changed since training)" in lines
    pseudo = summary.outcome("pseudolabel").summary
    assert (pseudo["done"], pseudo["skipped"]) == (4, 0)
    # Only smoothing changed: the classifiers were reused, the maps are the plain average now.
    assert {p.name: p.stat().st_mtime_ns for p in (ws / "checkpoints/pseudolabel").glob("*.pt")} == classifiers
    after = {vid: g["pseudo_gt"][:] for vid, g in zarr.open_group(str(ws / "pseudo.zarr/videos"), mode="r").groups()}
    assert any(not np.array_equal(before[v], after[v]) for v in before)
    assert zarr.open_group(str(ws / "pseudo.zarr"), mode="r").attrs["config"]["smoothing"] == "plain"
    assert actions(run(ws, "pseudolabel.smoothing=plain")[0]) == dict.fromkeys(STAGES, "skipped")
    # The override was for those runs only: WS/avfix.toml still says flow, so the stage is stale again.
    assert states(ws)["pseudolabel"] == "stale"


def test_deleting_one_videos_output_redoes_only_that_video(done, tmp_path):
    ws = copy_of(done, tmp_path)
    predictions = zarr.open_group(str(ws / "predictions.zarr/videos"), mode="r+")
    kept = predictions["c1_square_noise_000/saliency"][:]
    del predictions["c1_square_noise_000"]
    assert video_states(ws, "predict") == {"c0_disc_tone_000": ("complete", ""),
                                           "c1_square_noise_000": ("missing", "not predicted yet")}  # fmt: skip
    assert states(ws)["predict"] == "stale"
    summary, _ = run(ws)
    assert actions(summary) == {**dict.fromkeys(STAGES, "skipped"), "predict": "ran"}
    redone = summary.outcome("predict").summary
    assert (redone["done"], redone["skipped"]) == (1, 1)
    # The same checkpoint and features give the same map, so the report is still up to date.
    assert np.array_equal(zarr.open_group(str(ws / "predictions.zarr/videos"), mode="r")["c1_square_noise_000/saliency"][:], kept)

    features = zarr.open_group(str(ws / "features.zarr/videos"), mode="r+")
    del features["c0_disc_tone_001"]
    assert video_states(ws, "extract")["c0_disc_tone_001"] == ("missing", "not extracted yet")
    summary, _ = run(ws)
    extracted = summary.outcome("extract").summary
    assert (extracted["done"], extracted["skipped"]) == (1, 3)
    # Re-extracted from the same file with the same settings: the same fingerprint, nothing downstream reruns.
    assert actions(summary) == {**dict.fromkeys(STAGES, "skipped"), "extract": "ran"}


def test_failed_video_is_reported_with_its_error_and_not_retried_until_its_file_changes(tmp_path):
    train, test = make_sets(tmp_path)
    broken = train / "c0_disc_tone" / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    ws = tmp_path / "ws"
    overrides = first_run_overrides(train, test)
    summary = run_dag(ws, overrides, RunRequest(until="pseudolabel", progress=False), lambda line: None)
    assert not summary.ok and actions(summary) == {"extract": "ran", "pseudolabel": "ran"}
    result = CliRunner().invoke(main, ["status", "-w", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    extract = status["stages"][0]
    assert (extract["state"], extract["counts"]) == ("failed", {"complete": 4, "stale": 0, "failed": 1, "missing": 0})
    assert {"video_id": "broken", "state": "failed", "reason": "not a media file PyAV can read (invalid data)"} in extract["videos"]
    assert [s["state"] for s in status["stages"]] == ["failed", "complete", "missing", "missing", "missing"]
    text = CliRunner().invoke(main, ["status", "-w", str(ws)]).output
    assert "extract broken: failed: not a media file PyAV can read (invalid data)" in text

    again = run_dag(ws, Overrides(), RunRequest(until="pseudolabel", progress=False), lambda line: None)
    assert actions(again) == {"extract": "skipped", "pseudolabel": "skipped"} and not again.ok
    assert again.outcome("extract").line.startswith("extract: up to date (5 videos); 1 of 5 failed, unchanged since")

    shutil.copy(train / "c0_disc_tone" / "c0_disc_tone_000.mp4", broken)  # the file is fixed
    assert video_states(ws, "extract")["broken"] == (
        "stale", "failed before (not a media file PyAV can read (invalid data)); its input changed since")
    fixed = run_dag(ws, Overrides(), RunRequest(until="pseudolabel", progress=False), lambda line: None)
    assert fixed.ok and (fixed.outcome("extract").summary["done"], fixed.outcome("pseudolabel").summary["done"]) == (1, 5)
    assert states(ws)["extract"] == "complete"


def test_until_and_force(done, tmp_path):
    ws = copy_of(done, tmp_path)
    classifiers = {p.name: p.stat().st_mtime_ns for p in (ws / "checkpoints/pseudolabel").glob("*.pt")}
    summary, lines = run(ws, until="pseudolabel", force=("pseudolabel",))
    assert actions(summary) == {"extract": "skipped", "pseudolabel": "ran"}
    assert "pseudolabel: running (forced)" in lines
    assert summary.outcome("pseudolabel").summary["done"] == 4
    assert all(p.stat().st_mtime_ns != classifiers[p.name] for p in (ws / "checkpoints/pseudolabel").glob("*.pt"))
    # Retrained with the same seeds on the CPU: the same pseudo-labels, so training is still up to date.
    assert states(ws) == dict.fromkeys(STAGES, "complete")

    summary, _ = run(ws, until="train", force=("train",))
    assert actions(summary) == {"extract": "skipped", "pseudolabel": "skipped", "train": "ran"}
    assert summary.outcome("train").summary["resumed_from_step"] is None  # started anew

    summary, _ = run(ws, until="extract", force=("extract",))
    assert summary.outcome("extract").summary["done"] == 4
    with pytest.raises(ConfigError, match="--force predict comes after --until pseudolabel"):
        RunRequest(until="pseudolabel", force=("predict",))
    result = CliRunner().invoke(main, ["run", "-w", str(ws), "--until", "pseudolabel", "--force", "predict"])
    assert result.exit_code == 1 and "comes after --until pseudolabel" in result.output


def test_ctrl_c_stops_the_run_with_exit_130_and_a_rerun_resumes(done, tmp_path, monkeypatch):
    ws = copy_of(done, tmp_path)
    (ws / "checkpoints/sta/last.pt").unlink()
    (ws / "checkpoints/sta/best.pt").unlink()

    def interrupted(self, stage_run):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(registry.stage("train")), "run", interrupted)
    result = CliRunner().invoke(main, ["run", "-w", str(ws), "--quiet"])
    assert result.exit_code == 130
    assert "train: interrupted [rerun to resume]" in result.output and "predict:" not in result.output
    monkeypatch.undo()
    summary, _ = run(ws)
    assert actions(summary)["train"] == "ran" and summary.ok


def test_worker_processes_of_later_stages_fork_with_their_modules_preloaded(done, tmp_path, monkeypatch,
                                                                              worker_server_requests):  # fmt: skip
    """The server local worker processes fork from is started by the first stage that runs on them, with the
    modules of every later stage that will too (the first start decides what it imports)."""
    ws = copy_of(done, tmp_path)
    asked: dict[str, list[tuple[str, ...]]] = {}

    class Ran:
        ok = True

        def line(self) -> str:
            return "ran"

        def to_dict(self) -> dict:
            return {}

    def recorded(self, stage_run):
        asked[self.name] = list(worker_server_requests)  # what had been asked when the stage began
        return Ran()

    for name in STAGES:
        monkeypatch.setattr(type(registry.stage(name)), "run", recorded)
    extract, pseudolabel, predict = "pipeline.extract.run", "pipeline.pseudolabel.runners", "pipeline.predict.segments"

    def run_asking(*settings: str, until: str | None = None) -> dict[str, list[tuple[str, ...]]]:
        asked.clear()
        worker_server_requests.clear()
        summary, _ = run(ws, *settings, until=until, force=tuple(STAGES[: STAGES.index(until or "evaluate") + 1]))
        assert summary.ok and set(actions(summary).values()) == {"ran"}
        return asked

    # Worker processes everywhere: extract starts the server with every stage's modules (the later stages'
    # own requests change nothing: the server runs).
    got = run_asking("run.workers=2", "run.threads=false")
    assert got["extract"] == [(extract, pseudolabel, predict)]
    assert got["evaluate"] == [(extract, pseudolabel, predict), (pseudolabel, extract, predict), (extract, predict)]
    assert run_asking("run.workers=2", "run.threads=false", until="extract")["extract"] == [(extract,)]
    # By default extract's workers are processes and predict's threads: no predict modules.
    got = run_asking("run.workers=2")
    assert got["extract"] == [(extract, pseudolabel)] == got["evaluate"][:1]
    assert got["evaluate"] == [(extract, pseudolabel), (pseudolabel,)]
    # Worker threads for extract and predict; pseudolabel's workers are processes regardless.
    got = run_asking("run.workers=2", "run.threads=true")
    assert got["extract"] == [] and got["pseudolabel"] == [(pseudolabel,)] == got["evaluate"]
    # One worker: no worker process, no server.
    assert run_asking("run.workers=1", "run.threads=false")["evaluate"] == []
    assert dag.worker_modules(registry.STAGES) == (extract, pseudolabel, predict)


def test_status_of_an_empty_workspace_and_bad_config(tmp_path):
    found = read_status(tmp_path / "nothing")
    assert [(s.stage, s.state) for s in found.stages] == [
        ("extract", "not configured"), ("pseudolabel", "missing"), ("train", "missing"),
        ("predict", "not configured"), ("evaluate", "not configured"),
    ]  # fmt: skip
    result = CliRunner().invoke(main, ["run", "-w", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no training videos: pass VIDEOS" in result.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "avfix.toml").write_text("[pseudolabel]\nsmothing = 'plain'\n")
    result = CliRunner().invoke(main, ["status", "-w", str(tmp_path / "bad")])
    assert result.exit_code == 1 and "avfix.toml: [pseudolabel] has no setting 'smothing' (did you mean 'smoothing'?)" in result.output


def _leaf_fields(obj) -> set[str]:
    out = set()
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        out |= {f"{field.name}.{k}" for k in _leaf_fields(value)} if dataclasses.is_dataclass(value) else {field.name}
    return out


def _leaf_keys(table: dict) -> set[str]:
    return {f"{k}.{sub}" if isinstance(v, dict) else k for k, v in table.items()
            for sub in (_leaf_keys(v) if isinstance(v, dict) else [None])}  # fmt: skip


@pytest.mark.parametrize("preset", PRESETS)
def test_toml_is_written_with_every_default_and_read_back_identically(preset, tmp_path):
    defaults = preset_defaults(preset)
    write_config(tmp_path / "avfix.toml", defaults)
    written = tomllib.loads((tmp_path / "avfix.toml").read_text())
    assert list(written) == ["run", "extract", "pseudolabel", "train", "predict", "evaluate"]
    for section in written:
        expected = _leaf_fields(getattr(defaults, section)) - ({"layout"} if section == "evaluate" else set())
        assert _leaf_keys(written[section]) == expected, section
    assert written["extract"]["fps"] == "none" and written["train"]["model"]["audio_encoder"]["pooling"] == "avg"
    assert load_config(tmp_path).config == defaults


def test_overrides_and_their_errors(tmp_path):
    (tmp_path / "avfix.toml").write_text('[run]\npreset = "cpu"\nvideos = "clips"\n[train]\nlr = 1\n')
    loaded = load_config(tmp_path, Overrides(device="cpu", workers=2, settings=(
        "train.model.width=8", "pseudolabel.weights=w.pth", "predict.overlay=true",
    )), cwd=tmp_path / "elsewhere")  # fmt: skip
    config = loaded.config
    assert config.run.videos == str(tmp_path / "clips")  # relative to the file's folder
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.model.width == 8 and config.train.batch_size == preset_defaults("cpu").train.batch_size
    assert config.pseudolabel.weights == str(tmp_path / "elsewhere" / "w.pth")  # relative to where run was typed
    assert config.predict.overlay and config.run.workers == 2
    assert {config.pseudolabel.device, config.train.device, config.predict.device, config.evaluate.device} == {"cpu"}
    for setting, message in (
        ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
        ("pseudolabel.smoothing=wavy", "smoothing must be one of flow, plain, none, got 'wavy'"),
        ("train.modle.width=8", "train has no 'modle' (did you mean 'model'?)"),
        ("train.model=8", "train.model is a table; set one of its keys"),
        ("extract.size", "expected section.key=value"),
        ("evaluate.layout=csv", "evaluate has no 'layout'"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(tmp_path, Overrides(settings=(setting,)))
