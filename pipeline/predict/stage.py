"""The predict stage's contract: when a video's predicted maps (and its overlay video) are up to date.

The inputs are decoded by the extract stage's own rule into WS/predict-features.zarr, with the extract
settings the network was trained on. A video's maps are up to date when they are complete with the
fingerprint `maps_fingerprint` (the checkpoint's SHA-256, the map settings, the decoded features'
fingerprint, the algorithm version); its overlay, when asked for, when the file exists and was made
with `overlay_fingerprint`. `run_predict` and `avfix status` both use these.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common.errors import BadInput
from pipeline.common.files import file_stamp, sha256_file
from pipeline.common.inputs import InputError, discover
from pipeline.common.settings import describe_changes, from_settings, output_settings
from pipeline.extract.config import ExtractConfig
from pipeline.extract.stage import EXTRACT_TASKS, extraction_state
from pipeline.predict.config import MAPS, OVERLAY, PredictConfig
from pipeline.stage import (
    COMPLETE, FAILED, MISSING, NOT_CONFIGURED, PREDICT_VIDEOS, STALE, Stage, StageRun, StageState, VideoState,
    summarise, unfinished_state, version_change,
)  # fmt: skip
from pipeline.train.checkpoints import checkpoint_dir, read_header
from pipeline.train.stage import BEST, LAST
from stores import features as fstore
from stores import predictions as pred_store
from stores import zarr_io

if TYPE_CHECKING:
    from pipeline.predict.run import PredictSummary
    from pipeline.workspace.config import WorkspaceConfig

OVERLAYS = "overlays"
# What predict's local worker processes run: extract's tasks (decoding the inputs), then its segments.
PREDICT_WORKER_MODULES = (EXTRACT_TASKS, "pipeline.predict.segments")


class PredictError(BadInput):
    """predict cannot run at all (no checkpoint, an unreadable one, no inputs)."""


def features_path(workspace: Path) -> Path:
    return fstore.SCHEMA.path(workspace, fstore.PREDICT_FILE_NAME)


def overlay_path(workspace: Path, video_id: str) -> Path:
    return Path(workspace) / OVERLAYS / f"{video_id}.mp4"


def find_checkpoint(workspace: Path, explicit: str | Path | None) -> Path:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise PredictError(f"{path}: no such checkpoint")
        return path
    folder = checkpoint_dir(workspace)
    for name in (BEST, LAST):
        if (folder / name).is_file():
            return folder / name
    raise PredictError(f"no STA checkpoint in {folder} (run `avfix train` first, or pass --checkpoint)")


def extract_config_for(workspace: Path, header: dict[str, Any]) -> ExtractConfig:
    """The extract settings the network was trained on (recorded in the checkpoint, else those of
    WS/features.zarr, else the defaults); flow only when the network reads it; any length accepted."""
    settings = header.get("features_settings") or {}
    if not settings and fstore.SCHEMA.path(workspace).exists():
        settings = fstore.SCHEMA.read_store(fstore.SCHEMA.open_for_reading(fstore.SCHEMA.path(workspace))).settings
    config = from_settings(ExtractConfig, settings)
    if not header["model_settings"]["model"].get("use_flow"):
        config = replace(config, flow=replace(config.flow, method="none"))  # not read: not computed
    return replace(config, min_frames=1)


def maps_fingerprint(checkpoint_sha: str, config: PredictConfig, features_fingerprint: str) -> str:
    return zarr_io.fingerprint([checkpoint_sha, output_settings(config, MAPS), features_fingerprint,
                                config.ALGORITHM_VERSION])  # fmt: skip


def overlay_fingerprint(maps: str, config: PredictConfig) -> str:
    return zarr_io.fingerprint([maps, output_settings(config, OVERLAY), config.ALGORITHM_VERSION])


def predicted_video_state(video_id: str, attrs: pred_store.PredictionsVideo | None, expected: str,
                          config: PredictConfig, overlay_exists: bool, recorded_settings: dict,
                          failure: dict | None, current_input: Any) -> VideoState:  # fmt: skip
    """A video's state given the maps fingerprint a run would give it now (`expected`)."""
    if attrs is not None and attrs.status == zarr_io.STATUS_COMPLETE:
        if attrs.fingerprint != expected:
            changed_version = version_change("predict", attrs.algorithm_version, config.ALGORITHM_VERSION)
            changed = describe_changes(recorded_settings, output_settings(config, MAPS))
            why = (changed_version or (f"settings changed: {changed}" if changed else "")
                   or "the network or the decoded frames changed since")  # fmt: skip
            return VideoState(video_id, STALE, why)
        if config.overlay and not overlay_exists:
            return VideoState(video_id, MISSING, "no overlay video yet")
        if config.overlay and attrs.overlay_fingerprint != overlay_fingerprint(expected, config):
            return VideoState(video_id, STALE, "its overlay was made with other overlay settings")
        return VideoState(video_id, COMPLETE)
    return unfinished_state(video_id, attrs, failure, current_input, "not predicted yet")


class PredictStage(Stage):
    name = "predict"
    upstream = ("train",)
    worker_modules = PREDICT_WORKER_MODULES
    config_type = PredictConfig
    video_set = PREDICT_VIDEOS

    def outputs(self, workspace: Path) -> tuple[Path, ...]:
        return pred_store.SCHEMA.path(workspace), features_path(workspace), Path(workspace) / OVERLAYS

    def state(self, workspace: Path, config: WorkspaceConfig) -> StageState:
        output = pred_store.SCHEMA.path(workspace)
        settings = config.predict
        if config.run.predict_videos is None:
            return StageState(self.name, NOT_CONFIGURED,
                              "no videos to predict: pass --predict or set [run] predict_videos", str(output))  # fmt: skip
        try:
            checkpoint = find_checkpoint(workspace, settings.checkpoint)
            header = read_header(checkpoint)
            extract_config = extract_config_for(workspace, header)
        except (BadInput, zarr_io.StoreError) as exc:
            return StageState(self.name, MISSING, f"no usable checkpoint ({exc})", str(output))
        decoded_path = features_path(workspace)
        decoded = extraction_state(self.name, Path(config.run.predict_videos), decoded_path, extract_config,
                                   require_labels=False)  # fmt: skip
        if not decoded.videos:
            return StageState(self.name, MISSING, decoded.reason, str(output))
        checkpoint_sha = sha256_file(checkpoint)
        root = pred_store.SCHEMA.open_for_reading(output) if output.exists() else None
        recorded = pred_store.SCHEMA.read_store(root) if root is not None else pred_store.PredictionsStoreAttrs()
        features_root = fstore.SCHEMA.open_for_reading(decoded_path) if decoded_path.exists() else None
        decode_failures = fstore.SCHEMA.read_store(features_root).failures if features_root is not None else {}
        paths = {r.video_id: r.path for r in discover(Path(config.run.predict_videos), require_labels=False).records}
        videos = []
        for extracted in decoded.videos:
            video_id = extracted.video_id
            if extracted.state == FAILED or video_id in decode_failures:
                videos.append(extracted)  # the video could not be decoded: its extraction's state says why
                continue
            attrs = pred_store.SCHEMA.read_video(root, video_id)
            decoded_attrs = fstore.SCHEMA.read_video(features_root, video_id)
            if attrs is not None and attrs.status == zarr_io.STATUS_COMPLETE and extracted.state != COMPLETE:
                videos.append(VideoState(video_id, STALE, f"input: {extracted.reason}"))
                continue
            expected = maps_fingerprint(checkpoint_sha, settings, str(decoded_attrs.fingerprint) if decoded_attrs else "")
            videos.append(predicted_video_state(
                video_id, attrs, expected, settings, overlay_path(workspace, video_id).is_file(),
                recorded.settings, recorded.failures.get(video_id), file_stamp(paths[video_id]),
            ))  # fmt: skip
        return summarise(self.name, output, videos, missing_output=root is None)

    def run(self, run: StageRun) -> PredictSummary:
        # Under torchrun every process runs the stage; only the first writes groups and attributes (the
        # others fill map chunks of groups it made), so only it holds the lock.
        if int(os.environ.get("RANK", "0")) != 0:
            return self.work(run)
        return super().run(run)  # type: ignore[return-value]

    def work(self, run: StageRun) -> PredictSummary:
        from pipeline.common.progress import Progress
        from pipeline.predict.run import run_predict

        config = run.config
        if config.run.predict_videos is None:
            raise InputError("no videos to predict: pass VIDEOS (or --predict) or set [run] predict_videos")
        progress = Progress(enabled=run.progress)
        return run_predict(config.run.predict_videos, run.workspace, config.predict, self.scheduler(config), progress,
                           on_failure=lambda path, reason: progress.message(f"FAILED {path}: {reason}"))  # fmt: skip

    def forget(self, workspace: Path, config: WorkspaceConfig) -> None:
        pred_store.SCHEMA.forget_completion(pred_store.SCHEMA.path(workspace))
