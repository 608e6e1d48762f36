"""The extract stage's contract: when an extracted video is up to date, and the stage as the DAG runs it.

A video is up to date when it is complete in the store, from the same file (path, size and
modification time; its SHA-256 enters the fingerprint), with the same output settings and the same
extract algorithm version. `run_extract` skips exactly the videos this rule calls complete; `avfix
status` and `avfix run` ask the same rule (for predict's decoded inputs too).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.common.files import file_stamp
from pipeline.common.inputs import InputError, discover
from pipeline.common.settings import describe_changes, output_settings
from pipeline.extract.config import ExtractConfig
from pipeline.stage import (
    COMPLETE, FAILED, MISSING, NOT_CONFIGURED, STALE, TRAINING_VIDEOS, Stage, StageRun, StageState, VideoState,
    summarise, unfinished_state, version_change,
)  # fmt: skip
from stores import features as fstore
from stores import zarr_io
from stores.records import VideoRecord

if TYPE_CHECKING:
    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.extract.run import ExtractSummary
    from pipeline.workspace.config import WorkspaceConfig


EXTRACT_TASKS = "pipeline.extract.run"  # the module of the tasks extract's dask workers run


def video_fingerprint(config: ExtractConfig, source_sha256: str) -> str:
    """What an extracted video is made from: the file's content, the output settings, the algorithm."""
    return zarr_io.fingerprint([output_settings(config), source_sha256, config.ALGORITHM_VERSION])


def extracted_video_state(record: VideoRecord, attrs: fstore.FeaturesVideo | None, config: ExtractConfig,
                          failure: dict | None) -> VideoState:  # fmt: skip
    """Is `record` extracted, complete, from the same file and settings? (`attrs`: its group's, if any.)"""
    video_id, path = record.video_id, Path(record.path)
    if attrs is not None and attrs.status == zarr_io.STATUS_COMPLETE:
        if attrs.source_path != str(path.resolve()):
            return VideoState(video_id, STALE, f"extracted from {attrs.source_path}, now {path.resolve()}")
        stamp = file_stamp(path)
        if stamp == "absent":
            return VideoState(video_id, STALE, "the source file is gone")
        if (attrs.source_size, attrs.source_mtime_ns) != (stamp["size"], stamp["mtime_ns"]):
            return VideoState(video_id, STALE, "the source file changed since it was extracted")
        changed_version = version_change("extract", attrs.algorithm_version, config.ALGORITHM_VERSION)
        if changed_version:
            return VideoState(video_id, STALE, changed_version)
        if attrs.fingerprint != video_fingerprint(config, attrs.source_sha256):
            changed = describe_changes(attrs.settings, output_settings(config))
            return VideoState(video_id, STALE, f"settings changed: {changed}" if changed else "its fingerprint differs")
        return VideoState(video_id, COMPLETE)
    return unfinished_state(video_id, attrs, failure, file_stamp(path), "not extracted yet")


def extraction_state(stage: str, source: Path, store: Path, config: ExtractConfig, require_labels: bool) -> StageState:
    """Per input video of `source`: its state in the features store `store`."""
    try:
        inputs = discover(source, require_labels)
    except InputError as exc:
        return StageState(stage, MISSING, str(exc), str(store))
    root = None
    if store.exists():
        try:
            root = fstore.SCHEMA.open_for_reading(store)
        except zarr_io.StoreError as exc:
            return StageState(stage, MISSING, str(exc), str(store))
    failures = fstore.SCHEMA.read_store(root).failures if root is not None else {}
    videos = [extracted_video_state(record, fstore.SCHEMA.read_video(root, record.video_id), config,
                                    failures.get(record.video_id)) for record in inputs.records]  # fmt: skip
    for problem in inputs.problems:  # decided by the input listing alone: the same on every run
        videos.append(VideoState(problem.video_id, FAILED, problem.reason, retry=False))
    return summarise(stage, store, videos, missing_output=root is None)


class ExtractStage(Stage):
    name = "extract"
    worker_modules = (EXTRACT_TASKS,)
    config_type = ExtractConfig
    video_set = TRAINING_VIDEOS

    def outputs(self, workspace: Path) -> tuple[Path, ...]:
        return (fstore.SCHEMA.path(workspace),)

    def state(self, workspace: Path, config: WorkspaceConfig) -> StageState:
        store = fstore.SCHEMA.path(workspace)
        if config.run.videos is None:
            return StageState(self.name, NOT_CONFIGURED, "no training videos: pass VIDEOS or set [run] videos", str(store))
        return extraction_state(self.name, Path(config.run.videos), store, config.extract, require_labels=True)

    def work(self, run: StageRun) -> ExtractSummary:
        from pipeline.common.progress import Progress
        from pipeline.common.scheduling import start_worker_server

        config = run.config
        if config.run.videos is None:
            raise InputError("no training videos: pass VIDEOS or set [run] videos")
        scheduler = self.scheduler(config)
        if scheduler.local_processes:  # their server imports what they run while this process imports it too
            start_worker_server(self.worker_modules)
        from pipeline.extract.run import run_extract

        progress = Progress(enabled=run.progress)
        return run_extract(config.run.videos, run.workspace, config.extract, scheduler, progress,
                           on_failure=lambda path, reason: progress.message(f"FAILED {path}: {reason}"))  # fmt: skip

    def scheduler(self, config: WorkspaceConfig) -> SchedulerConfig:
        # Local workers are processes unless `[run] threads` says otherwise: forked from a preloaded server
        # they start in a fraction of a second and share no GIL, which a worker's threads hold ~1.2 ms a
        # frame: on 2 cores 1.03-1.07x two threads' frames/s, and by that hold 4-5 threads would fill the GIL;
        # a worker's crash fails its video alone (README, Benchmarks).
        return config.scheduler(threads=False)

    def forget(self, workspace: Path, config: WorkspaceConfig) -> None:
        fstore.SCHEMA.forget_completion(fstore.SCHEMA.path(workspace))
