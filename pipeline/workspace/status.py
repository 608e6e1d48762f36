"""Where each stage of a workspace stands, per stage and per video, read from what the stages recorded.

A video of a stage is

- **complete**: written, marked complete, and made from the current inputs and settings;
- **stale**: complete, but its input or the settings changed since (the reason says which);
- **failed**: the stage recorded an error for it (the reason is that error); a run retries it only
  when its input changed since, or when no run recorded the input it failed on;
- **missing**: not written yet, or only partly (an interrupted run).

A stage is complete when every video is; stale when any is stale or missing (or its settings
changed); failed when the only videos not complete are failures a run would not retry; missing when
its output does not exist. Nothing is run and nothing is written here: the fingerprints are the ones
the stages keep (features `fingerprint` and source size/mtime/SHA-256, pseudo `features_fingerprint`
and classifier checkpoint hashes, the training checkpoint's settings and data key, predictions
`fingerprint`), recomputed from the current settings and compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline.common.files import sha256_file
from pipeline.common.inputs import InputError, discover
from pipeline.common.settings_diff import jsonable, setting_changes
from pipeline.extract.run import ExtractConfig, stat_source, video_fingerprint
from pipeline.predict.run import OVERLAYS, PREDICT_FEATURES, PredictError, extract_config_for, find_checkpoint
from pipeline.pseudolabel.training import checkpoint_folder
from pipeline.train.checkpoints import checkpoint_dir
from pipeline.train.config import STATrainConfig
from pipeline.train.run import training_data_key, training_finished
from pipeline.workspace.config import Overrides, WorkspaceConfig, load_config, output_table
from stores import features as fstore
from stores import predictions as pred_store
from stores import pseudo as pstore
from stores import stage_records, zarr_io
from stores.records import VideoRecord
from stores.samples import index_videos

COMPLETE, STALE, FAILED, MISSING, NOT_CONFIGURED = "complete", "stale", "failed", "missing", "not configured"
VIDEO_STATES = (COMPLETE, STALE, FAILED, MISSING)
STAGES = ("extract", "pseudolabel", "train", "predict", "evaluate")
UPSTREAM = {"pseudolabel": "extract", "train": "pseudolabel", "predict": "train", "evaluate": "predict"}
RUN_RECORDS = "run_records.json"  # what `avfix run` recorded for outputs that are not stores (the report)
REPORT = "report.json"


@dataclass
class VideoState:
    video_id: str
    state: str
    reason: str = ""
    retry: bool = True  # failed only: whether the next run tries it again

    def to_dict(self) -> dict[str, Any]:
        return {"video_id": self.video_id, "state": self.state, "reason": self.reason}


@dataclass
class StageState:
    stage: str
    state: str
    reason: str
    output: str
    videos: list[VideoState] = field(default_factory=list)
    detail: str = ""  # what is there: "24 videos", "8 epochs, 96 steps"
    restart: bool = False  # train: its checkpoints do not fit the settings or the data; train anew

    @property
    def needs_run(self) -> bool:
        return self.state in (STALE, MISSING)

    def counts(self) -> dict[str, int]:
        return {state: sum(v.state == state for v in self.videos) for state in VIDEO_STATES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "state": self.state, "reason": self.reason, "output": self.output,
            "detail": self.detail, "counts": self.counts(), "videos": [v.to_dict() for v in self.videos],
        }  # fmt: skip


@dataclass
class WorkspaceStatus:
    workspace: str
    config_file: str
    config_exists: bool
    stages: list[StageState]

    @property
    def ok(self) -> bool:
        return all(s.state in (COMPLETE, NOT_CONFIGURED) for s in self.stages)

    def stage(self, name: str) -> StageState:
        return next(s for s in self.stages if s.stage == name)

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "config_file": self.config_file, "config_exists": self.config_exists,
                "ok": self.ok, "stages": [s.to_dict() for s in self.stages]}  # fmt: skip


# --- helpers ----------------------------------------------------------------------------------------


def changes(old: Any, new: Any) -> list[str]:
    """"key: old -> new" for every setting that differs (nested tables by dotted key)."""
    return [f"{key}: {a!r} -> {b!r}" for key, a, b in setting_changes(old, new)]


def _shown(items: list[str], limit: int = 3) -> str:
    return "; ".join(items[:limit]) + ("; ..." if len(items) > limit else "")


def source_stamp(path: str | Path) -> dict[str, int] | str:
    """Size and modification time of an input file: what a failed input is remembered by."""
    try:
        stat = stat_source(Path(path))
    except OSError:
        return "absent"
    return {"size": stat.size, "mtime_ns": stat.mtime_ns}


def _failed_state(video_id: str, failure: dict[str, Any], recorded: dict[str, Any], current: Any) -> VideoState:
    reason = str(failure.get("reason", "failed"))
    if video_id not in recorded:
        return VideoState(video_id, FAILED, reason, retry=True)
    if jsonable(recorded[video_id]) != jsonable(current):
        return VideoState(video_id, STALE, f"failed before ({reason}); its input changed since")
    return VideoState(video_id, FAILED, reason, retry=False)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _summarise(stage: str, output: Path, videos: list[VideoState], detail_unit: str = "video") -> StageState:
    """The stage's state from its videos' states."""
    n = len(videos)
    counts = {state: sum(v.state == state for v in videos) for state in VIDEO_STATES}
    retry = [v for v in videos if v.state == FAILED and v.retry]
    detail = _count(n, detail_unit)
    if counts[STALE] or counts[MISSING] or retry:
        parts = [f"{counts[s]} {s}" for s in (STALE, MISSING) if counts[s]]
        if retry:
            parts.append(f"{len(retry)} failed, retried")
        first = next(v for v in videos if v.state in (STALE, MISSING) or (v.state == FAILED and v.retry))
        return StageState(stage, STALE, f"{', '.join(parts)} of {n} (e.g. {first.video_id}: {first.reason})",
                          str(output), videos, detail)  # fmt: skip
    if counts[FAILED]:
        first = next(v for v in videos if v.state == FAILED)
        return StageState(stage, FAILED, f"{counts[FAILED]} of {n} failed, unchanged since (e.g. {first.video_id}: "
                          f"{first.reason})", str(output), videos, detail)  # fmt: skip
    if not n:
        return StageState(stage, MISSING, "no videos", str(output), videos, detail)
    return StageState(stage, COMPLETE, "", str(output), videos, detail)


def _open_store(path: Path, kind: str) -> Any:
    root = zarr_io.open_root(path, mode="r")
    zarr_io.check_schema(root, kind, path)
    return root


# --- extract ------------------------------------------------------------------------------------------


def extract_state(workspace: Path, config: WorkspaceConfig) -> StageState:
    output = fstore.store_path(workspace)
    if config.run.videos is None:
        return StageState("extract", NOT_CONFIGURED, "no training videos: pass VIDEOS or set [run] videos", str(output))
    return _extracted_state("extract", Path(config.run.videos), output, config.extract, require_labels=True)


def _extracted_state(stage: str, source: Path, output: Path, config: ExtractConfig, require_labels: bool) -> StageState:
    """Per input video: is it in the store `output`, complete, from the same file and settings?"""
    try:
        inputs = discover(source, require_labels)
    except InputError as exc:
        return StageState(stage, MISSING, str(exc), str(output))
    if not output.exists():
        videos = [VideoState(r.video_id, MISSING, "not extracted yet") for r in inputs.records]
        videos += [VideoState(p.video_id, FAILED, p.reason, retry=False) for p in inputs.problems]
        state = _summarise(stage, output, videos)
        return StageState(stage, MISSING, f"{output.name} does not exist", str(output), videos, state.detail)
    try:
        root = _open_store(output, fstore.STORE_KIND)
    except ValueError as exc:
        return StageState(stage, MISSING, str(exc), str(output))
    failures, recorded = zarr_io.failures_of(root), stage_records.failed_inputs(root)
    videos = [_extracted_video(root, record, config, failures, recorded) for record in inputs.records]
    for problem in inputs.problems:  # decided by the input listing alone: the same on every run
        videos.append(VideoState(problem.video_id, FAILED, problem.reason, retry=False))
    return _summarise(stage, output, videos)


def _extracted_video(root: Any, record: VideoRecord, config: ExtractConfig, failures: dict, recorded: dict) -> VideoState:
    video_id, path = record.video_id, Path(record.path)
    attrs = fstore.video_attrs(root, video_id)
    if attrs and attrs.get("status") == zarr_io.STATUS_COMPLETE:
        if attrs.get("source_path") != str(path.resolve()):
            return VideoState(video_id, STALE, f"extracted from {attrs.get('source_path')}, now {path.resolve()}")
        stamp = source_stamp(path)
        if stamp == "absent":
            return VideoState(video_id, STALE, "the source file is gone")
        if (attrs.get("source_size"), attrs.get("source_mtime_ns")) != (stamp["size"], stamp["mtime_ns"]):
            return VideoState(video_id, STALE, "the source file changed since it was extracted")
        if attrs.get("fingerprint") != video_fingerprint(config, attrs.get("source_sha256", "")):
            changed = changes(attrs.get("settings", {}), config.output_settings())
            return VideoState(video_id, STALE, f"settings changed: {_shown(changed)}" if changed
                              else "extracted by another avfix version")  # fmt: skip
        return VideoState(video_id, COMPLETE)
    if video_id in failures:
        return _failed_state(video_id, failures[video_id], recorded, source_stamp(path))
    if attrs:
        return VideoState(video_id, MISSING, "partly written (interrupted)")
    return VideoState(video_id, MISSING, "not extracted yet")


# --- pseudolabel --------------------------------------------------------------------------------------


def pseudolabel_state(workspace: Path, config: WorkspaceConfig) -> StageState:
    output = pstore.store_path(workspace)
    features_path = fstore.store_path(workspace)
    if not features_path.exists():
        return StageState("pseudolabel", MISSING, "no features store yet (extract first)", str(output))
    features = _open_store(features_path, fstore.STORE_KIND)
    inputs = {vid: str((fstore.video_attrs(features, vid) or {}).get("fingerprint")) for vid in fstore.complete_videos(features)}
    if not output.exists():
        videos = [VideoState(vid, MISSING, "not labelled yet") for vid in sorted(inputs)]
        state = _summarise("pseudolabel", output, videos)
        return StageState("pseudolabel", MISSING, f"{output.name} does not exist", str(output), videos, state.detail)
    try:
        root = _open_store(output, pstore.STORE_KIND)
    except ValueError as exc:
        return StageState("pseudolabel", MISSING, str(exc), str(output))
    attrs = dict(root.attrs)
    whole_stage = _pseudolabel_changes(workspace, attrs, config, set(inputs))
    failures, recorded = zarr_io.failures_of(root), stage_records.failed_inputs(root)
    videos = []
    for video_id, features_fingerprint in sorted(inputs.items()):
        group_attrs = pstore.video_attrs(root, video_id)
        if group_attrs and group_attrs.get("status") == zarr_io.STATUS_COMPLETE:
            if group_attrs.get("features_fingerprint") != features_fingerprint:
                videos.append(VideoState(video_id, STALE, "its features were extracted again since"))
            elif whole_stage:
                videos.append(VideoState(video_id, STALE, whole_stage))
            else:
                videos.append(VideoState(video_id, COMPLETE))
        elif video_id in failures:
            videos.append(_failed_state(video_id, failures[video_id], recorded, features_fingerprint))
        elif group_attrs:
            videos.append(VideoState(video_id, MISSING, "partly written (interrupted)"))
        else:
            videos.append(VideoState(video_id, MISSING, "not labelled yet"))
    state = _summarise("pseudolabel", output, videos)
    if whole_stage and state.state == STALE:
        state.reason = whole_stage
    return state


def _pseudolabel_changes(workspace: Path, attrs: dict[str, Any], config: WorkspaceConfig, video_ids: set[str]) -> str:
    """Why every video is stale (settings, classifier checkpoints, the set of videos), or ""."""
    changed = changes(attrs.get("settings", {}), config.pseudolabel.all_settings())
    if changed:
        return f"settings changed: {_shown(changed)}"
    folder = checkpoint_folder(workspace)
    for name, sha in sorted(dict(attrs.get("checkpoints", {})).items()):
        path = folder / f"{name}.pt"
        if not path.is_file():
            return f"classifier checkpoint {path} is gone"
        if sha256_file(path) != sha:
            return f"classifier checkpoint {path} changed since the maps were made"
    trained_on = set(attrs.get("train_videos", [])) | set(attrs.get("val_videos", []))
    # Videos it could not use (e.g. an unknown label) are failures, not new videos.
    added = video_ids - trained_on - set(dict(attrs.get("failures", {})))
    removed = trained_on - video_ids
    if trained_on and (added or removed):
        return f"the classifiers were trained on another set of videos (+{len(added)}, -{len(removed)} since)"
    return ""


# --- train ---------------------------------------------------------------------------------------------


def read_checkpoint_header(path: Path) -> dict[str, Any]:
    """An STA checkpoint's settings and position without reading its tensors (memory-mapped)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, ValueError):  # an old-style (non-zip) file cannot be memory-mapped
        saved = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not an avfix STA checkpoint")
    return {key: value for key, value in saved.items() if key not in ("model", "optimizer", "scheduler", "scaler", "rng")}


def train_data_key(workspace: Path, config: STATrainConfig) -> str:
    """The data key `avfix train` records in its checkpoints, computed from the stores as train does."""
    videos, _, _ = index_videos(fstore.store_path(workspace), pstore.store_path(workspace), config.val_fraction,
                                config.seed)  # fmt: skip
    return training_data_key(videos, pstore.open_for_reading(pstore.store_path(workspace)))


def train_finished(position: dict[str, Any], config: STATrainConfig) -> bool:
    return training_finished(position.get("epoch", 0), position.get("step", 0), position.get("validated_step"), config)


def train_state(workspace: Path, config: WorkspaceConfig) -> StageState:
    folder = checkpoint_dir(workspace)
    last = folder / "last.pt"
    if not pstore.store_path(workspace).exists():
        return StageState("train", MISSING, "no pseudo-label store yet (pseudolabel first)", str(folder))
    if not last.is_file():
        return StageState("train", MISSING, "not trained yet", str(folder))
    wanted = config.train
    try:
        saved = read_checkpoint_header(last)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint means: train anew
        return StageState("train", STALE, f"{last} is unreadable ({exc})", str(folder), restart=True)
    settings_changed = changes({"backbone": saved.get("backbone"), **saved.get("model_settings", {}),
                                **saved.get("run_settings", {})},
                               {"backbone": wanted.backbone, **wanted.model_settings(), **wanted.run_settings()})  # fmt: skip
    if settings_changed:
        return StageState("train", STALE, f"settings changed: {_shown(settings_changed)}", str(folder), restart=True)
    try:
        data_key = train_data_key(workspace, wanted)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        return StageState("train", MISSING, f"no training data ({exc})", str(folder))
    if saved.get("data_key") != data_key:
        return StageState("train", STALE, "the pseudo-labels changed since training", str(folder), restart=True)
    position = dict(saved.get("position", {}))
    detail = f"{_count(position.get('epoch', 0), 'epoch')}, {_count(position.get('step', 0), 'step')}"
    if not train_finished(position, wanted):
        target = f"{wanted.epochs} epochs" + (f" or {wanted.max_steps} steps" if wanted.max_steps else "")
        return StageState("train", STALE, f"stopped after {detail} of {target}: resumes", str(folder), detail=detail)
    return StageState("train", COMPLETE, "", str(folder), detail=detail)


# --- predict -------------------------------------------------------------------------------------------


def predict_state(workspace: Path, config: WorkspaceConfig) -> StageState:
    output = pred_store.store_path(workspace)
    if config.run.predict_videos is None:
        return StageState("predict", NOT_CONFIGURED, "no videos to predict: pass --predict or set [run] predict_videos",
                          str(output))  # fmt: skip
    try:
        checkpoint = find_checkpoint(workspace, config.predict.checkpoint)
        saved = read_checkpoint_header(checkpoint)
        extract_config = extract_config_for(workspace, saved)
    except (PredictError, ValueError, KeyError, OSError, RuntimeError) as exc:
        return StageState("predict", MISSING, f"no usable checkpoint ({exc})", str(output))
    features = _extracted_state("predict", Path(config.run.predict_videos), workspace / PREDICT_FEATURES,
                                extract_config, require_labels=False)  # fmt: skip
    if not features.videos:
        return StageState("predict", MISSING, features.reason, str(output))
    checkpoint_sha = sha256_file(checkpoint)
    root = _open_store(output, pred_store.STORE_KIND) if output.exists() else None
    failures = zarr_io.failures_of(root) if root is not None else {}
    recorded = stage_records.failed_inputs(root) if root is not None else {}
    features_path = workspace / PREDICT_FEATURES
    features_root = _open_store(features_path, fstore.STORE_KIND) if features_path.exists() else None
    decode_failures = zarr_io.failures_of(features_root) if features_root is not None else {}
    paths = {r.video_id: r.path for r in discover(Path(config.run.predict_videos), require_labels=False).records}
    settings = config.predict.output_settings()
    videos = []
    for extracted in features.videos:
        video_id = extracted.video_id
        attrs = pred_store.video_attrs(root, video_id) if root is not None else None
        if extracted.state == FAILED or video_id in decode_failures:
            videos.append(extracted)  # the video could not be decoded: its extraction's state says why
        elif attrs and attrs.get("status") == zarr_io.STATUS_COMPLETE:
            features_fp = str((fstore.video_attrs(features_root, video_id) or {}).get("fingerprint"))
            if extracted.state != COMPLETE:
                videos.append(VideoState(video_id, STALE, f"input: {extracted.reason}"))
            elif attrs.get("fingerprint") != zarr_io.fingerprint([checkpoint_sha, settings, features_fp]):
                why = ("the network was trained again since" if attrs.get("checkpoint_sha256") != checkpoint_sha
                       else "settings or features changed since")  # fmt: skip
                videos.append(VideoState(video_id, STALE, why))
            elif config.predict.overlay and not (workspace / OVERLAYS / f"{video_id}.mp4").is_file():
                videos.append(VideoState(video_id, MISSING, "no overlay video yet"))
            else:
                videos.append(VideoState(video_id, COMPLETE))
        elif video_id in failures:
            videos.append(_failed_state(video_id, failures[video_id], recorded, source_stamp(paths[video_id]) if video_id in paths else "absent"))
        elif attrs:
            videos.append(VideoState(video_id, MISSING, "partly written (interrupted)"))
        else:
            videos.append(VideoState(video_id, MISSING, "not predicted yet"))
    state = _summarise("predict", output, videos)
    if root is None and state.state != COMPLETE:
        state.state, state.reason = MISSING, f"{output.name} does not exist"
    return state


# --- evaluate ------------------------------------------------------------------------------------------


def _folder_stamp(path: Path) -> list[Any]:
    """A file's content hash (a fixation CSV may be rewritten unchanged, as `avfix synth` does), or the
    names, sizes and times of every file under a folder (a fixation release holds thousands)."""
    if path.is_file():
        return [[path.name, sha256_file(path)]]
    found = []
    for folder, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            stat = (Path(folder) / name).stat()
            found.append([os.path.relpath(Path(folder) / name, path), stat.st_size, stat.st_mtime_ns])
    return found


def _maps_stamp(path: Path) -> Any:
    if path.suffix == ".zarr" or (path / "zarr.json").exists():
        try:
            root = _open_store(path, pred_store.STORE_KIND)
        except (FileNotFoundError, ValueError):
            return "absent"
        ids = pred_store.complete_videos(root)
        return {vid: (pred_store.video_attrs(root, vid) or {}).get("fingerprint") for vid in ids}
    return _folder_stamp(path) if path.exists() else "absent"


def evaluate_stamp(workspace: Path, config: WorkspaceConfig) -> str:
    """A fingerprint of what the report is made from: settings, fixations, and every map source's content."""
    assert config.run.fixations is not None
    table = output_table(config, "evaluate")
    table.pop("threads", None)  # where the work runs, not what it gives
    maps = [Path(p) for p in config.evaluate.maps] or [pred_store.store_path(workspace)]
    fixations = Path(config.run.fixations)
    return zarr_io.fingerprint([
        table, config.run.fixations_layout, _where(fixations, workspace),
        _folder_stamp(fixations) if fixations.exists() else "absent",
        {_where(path, workspace): _maps_stamp(path) for path in maps},
    ])  # fmt: skip


def _where(path: Path, workspace: Path) -> str:
    """A path as the stamp keeps it: relative to the workspace when inside it (a moved workspace stays
    up to date), else absolute."""
    path, workspace = path.resolve(), workspace.resolve()
    return str(path.relative_to(workspace)) if path.is_relative_to(workspace) else str(path)


def read_run_records(workspace: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((workspace / RUN_RECORDS).read_text()))
    except (OSError, ValueError):
        return {}


def write_run_record(workspace: Path, stage: str, record: dict[str, Any]) -> None:
    records = read_run_records(workspace)
    records[stage] = {**record, "recorded_at": time.time()}
    partial = workspace / f".{RUN_RECORDS}.partial"
    partial.write_text(json.dumps(records, indent=2, default=str))
    partial.replace(workspace / RUN_RECORDS)


def evaluate_state(workspace: Path, config: WorkspaceConfig) -> StageState:
    report = workspace / REPORT
    if config.run.fixations is None:
        return StageState("evaluate", NOT_CONFIGURED, "no fixations: pass --fixations or set [run] fixations", str(report))
    if not report.is_file():
        return StageState("evaluate", MISSING, "no report yet", str(report))
    record = read_run_records(workspace).get("evaluate")
    if record is None:
        return StageState("evaluate", STALE, "the report was not made by `avfix run` (no record of its inputs)", str(report))
    if record.get("sha256") != sha256_file(report):
        return StageState("evaluate", STALE, "the report was rewritten since `avfix run` made it", str(report))
    if record.get("stamp") != evaluate_stamp(workspace, config):
        changed = changes(record.get("config", {}), output_table(config, "evaluate"))
        why = f"settings changed: {_shown(changed)}" if changed else "the maps or the fixations changed since"
        return StageState("evaluate", STALE, why, str(report))
    failures = record.get("problems", 0)
    detail = _count(int(record.get("items", 0)), "item") + (f", {_count(failures, 'problem')}" if failures else "")
    return StageState("evaluate", COMPLETE, "", str(report), detail=detail)


# --- all stages -----------------------------------------------------------------------------------------

STAGE_STATE: dict[str, Callable[[Path, WorkspaceConfig], StageState]] = {
    "extract": extract_state,
    "pseudolabel": pseudolabel_state,
    "train": train_state,
    "predict": predict_state,
    "evaluate": evaluate_state,
}


def stage_state(stage: str, workspace: str | Path, config: WorkspaceConfig) -> StageState:
    return STAGE_STATE[stage](Path(workspace), config)


def workspace_status(workspace: str | Path, config: WorkspaceConfig, config_file: Path, config_exists: bool) -> WorkspaceStatus:
    """Every stage's state; a stage whose upstream must run first is stale too (it will rerun after it)."""
    workspace = Path(workspace)
    states: dict[str, StageState] = {}
    for stage in STAGES:
        state = stage_state(stage, workspace, config)
        upstream = states.get(UPSTREAM.get(stage, ""))
        if upstream is not None and upstream.needs_run and state.state in (COMPLETE, FAILED):
            state.state, state.reason = STALE, f"{upstream.stage} is {upstream.state}: runs again after it"
        states[stage] = state
    return WorkspaceStatus(str(workspace), str(config_file), config_exists, list(states.values()))


def status_table(status: WorkspaceStatus, per_video: bool = True) -> str:
    """The stage table, then one row per video with its state in each per-video stage, then the reasons."""
    lines = [f"workspace {status.workspace} ({'config ' + status.config_file if status.config_exists else 'no avfix.toml yet: defaults'})", ""]
    header = f"{'stage':<12} {'state':<15} {'complete':>8} {'stale':>6} {'failed':>6} {'missing':>7}  detail / reason"
    lines += [header, "-" * len(header)]
    for stage in status.stages:
        counts = stage.counts()
        cells = [f"{counts[s]:>{w}}" if stage.videos else f"{'-':>{w}}" for s, w in zip(VIDEO_STATES, (8, 6, 6, 7))]
        text = "; ".join(part for part in (stage.detail, stage.reason) if part)
        lines.append(f"{stage.stage:<12} {stage.state:<15} {' '.join(cells)}  {text}")
    if not per_video:
        return "\n".join(lines)
    by_stage = {s.stage: s for s in status.stages}
    reasons = []
    # The training videos and the videos to predict are different sets (they may even share ids).
    for title, names in (("training videos", ("extract", "pseudolabel")), ("videos to predict", ("predict",))):
        stages = [by_stage[name] for name in names if by_stage[name].videos]
        ids = sorted({v.video_id for s in stages for v in s.videos})
        if not ids:
            continue
        width = max(len(title), *(len(i) for i in ids))
        lines += ["", f"{title:<{width}}  " + " ".join(f"{s.stage:<12}" for s in stages)]
        videos = {s.stage: {v.video_id: v for v in s.videos} for s in stages}
        for video_id in ids:
            cells = []
            for s in stages:
                video = videos[s.stage].get(video_id)
                cells.append(f"{video.state if video else '-':<12}")
                if video is not None and video.state != COMPLETE:
                    reasons.append(f"  {s.stage} {video_id}: {video.state}: {video.reason}")
            lines.append(f"{video_id:<{width}}  " + " ".join(cells).rstrip())
    if reasons:
        lines += ["", "why:"] + reasons
    return "\n".join(lines)


def report_digest(report_path: Path) -> dict[str, Any]:
    """Items and problems of a report (what the run record keeps beside the stamp)."""
    report = json.loads(report_path.read_text())
    items = sum(len(d.get("items", [])) for d in report.get("datasets", []))
    problems = len(report.get("problems", {}).get("failures", []))
    return {"items": items, "problems": problems, "sha256": hashlib.sha256(report_path.read_bytes()).hexdigest()}



def read_status(workspace: str | Path, overrides: Overrides | None = None) -> WorkspaceStatus:
    """The status of `workspace` against WS/avfix.toml (or the defaults) with `overrides`; writes nothing."""
    loaded = load_config(workspace, overrides)
    return workspace_status(workspace, loaded.config, loaded.path, loaded.existed)
