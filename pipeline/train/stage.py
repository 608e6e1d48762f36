"""The train stage's contract: when WS/checkpoints/sta/last.pt is up to date, to resume, or to start anew.

A checkpoint fits a run when it was written by the same training algorithm version, with the same
output settings (`pipeline.common.settings`) and weight files, on the same data (the videos with their
splits and pseudo-label fingerprints, and the pseudolabel settings). A fitting checkpoint is complete
once its epochs (or `max_steps`, validated) are done, else training resumes from it; one that does not
fit is trained anew. `run_train` and `avfix status` both ask `checkpoint_verdict`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common.errors import BadInput
from pipeline.common.files import sha256_file
from pipeline.common.settings import describe_changes, output_settings
from pipeline.stage import COMPLETE, MISSING, STALE, Stage, StageRun, StageState, count, version_change
from pipeline.train.checkpoints import checkpoint_dir, read_header
from pipeline.train.config import STATrainConfig
from stores import features as fstore
from stores import pseudo as pstore
from stores import zarr_io
from stores.cache import STA_CACHE
from stores.lock import StoreLock

if TYPE_CHECKING:
    from pipeline.train.run import TrainSummary
    from pipeline.workspace.config import WorkspaceConfig

LAST, BEST, METRICS = "last.pt", "best.pt", "metrics.jsonl"


def weight_files_key(config: STATrainConfig) -> dict[str, str | None]:
    """Hashes of the weight files the network starts from (a replaced file means training anew)."""
    return {name: sha256_file(path) if path is not None and Path(path).is_file() else path
            for name, path in (("weights", config.weights), ("audio_weights", config.audio_weights))}  # fmt: skip


def training_data_key(videos: list[Any], pseudo: Any) -> str:
    """What a training run's data is: the videos with their split and pseudo-label fingerprint, and the
    pseudolabel settings."""
    return zarr_io.fingerprint([
        sorted((v.video_id, v.split, str((pstore.SCHEMA.read_video(pseudo, v.video_id) or pstore.PseudoVideo()).fingerprint))
               for v in videos),
        pstore.SCHEMA.read_store(pseudo).settings,
    ])  # fmt: skip


def workspace_data_key(workspace: Path, config: STATrainConfig) -> str:
    """The data key of the workspace's stores as they are now."""
    from stores.sample_index import index_videos

    videos, _, _ = index_videos(fstore.SCHEMA.path(workspace), pstore.SCHEMA.path(workspace), config.val_fraction,
                                config.seed)  # fmt: skip
    return training_data_key(videos, pstore.SCHEMA.open_for_reading(pstore.SCHEMA.path(workspace)))


def checkpoint_header(config: STATrainConfig, data_key: str) -> dict[str, Any]:
    """What every checkpoint of a run records about the run (compared by `checkpoint_verdict`)."""
    return {
        "algorithm_version": config.ALGORITHM_VERSION, "backbone": config.backbone,
        "model_settings": config.model_settings(), "settings": output_settings(config),
        "weight_files": weight_files_key(config), "data_key": data_key,
    }  # fmt: skip


def training_finished(epoch: int, step: int, validated_step: int | None, config: STATrainConfig) -> bool:
    """All epochs done, or the step budget spent and its last step validated."""
    if epoch >= config.epochs:
        return True
    return config.max_steps is not None and step >= config.max_steps and validated_step == step


@dataclass(frozen=True)
class Verdict:
    state: str  # complete, or stale (resume, or restart when `restart`)
    reason: str = ""
    restart: bool = False
    detail: str = ""


def checkpoint_verdict(header: dict[str, Any], config: STATrainConfig, data_key: str) -> Verdict:
    """Whether a checkpoint with `header` is complete, resumable or to be trained anew (see the module)."""
    changed_version = version_change("train", header.get("algorithm_version"), config.ALGORITHM_VERSION)
    if changed_version:
        return Verdict(STALE, changed_version, restart=True)
    if header.get("backbone") != config.backbone:
        return Verdict(STALE, f"it was trained with backbone {header.get('backbone')!r}, this run asks for "
                       f"{config.backbone!r}", restart=True)  # fmt: skip
    changed = describe_changes(header.get("settings", {}), output_settings(config))
    if changed:
        return Verdict(STALE, f"settings changed: {changed}", restart=True)
    if header.get("weight_files") != weight_files_key(config):
        return Verdict(STALE, "a weights file it started from changed", restart=True)
    if header.get("data_key") != data_key:
        return Verdict(STALE, "the pseudo-labels changed since training", restart=True)
    position = dict(header.get("position", {}))
    detail = f"{count(position.get('epoch', 0), 'epoch')}, {count(position.get('step', 0), 'step')}"
    if not training_finished(position.get("epoch", 0), position.get("step", 0), position.get("validated_step"), config):
        target = f"{config.epochs} epochs" + (f" or {config.max_steps} steps" if config.max_steps else "")
        return Verdict(STALE, f"stopped after {detail} of {target}: resumes", detail=detail)
    return Verdict(COMPLETE, detail=detail)


class TrainStage(Stage):
    name = "train"
    upstream = ("pseudolabel",)
    config_type = STATrainConfig

    def outputs(self, workspace: Path) -> tuple[Path, ...]:
        return checkpoint_dir(workspace), STA_CACHE.path(workspace)

    def state(self, workspace: Path, config: WorkspaceConfig) -> StageState:
        folder = checkpoint_dir(workspace)
        last = folder / LAST
        if not pstore.SCHEMA.path(workspace).exists():
            return StageState(self.name, MISSING, "no pseudo-label store yet (pseudolabel first)", str(folder))
        if not last.is_file():
            return StageState(self.name, MISSING, "not trained yet", str(folder))
        try:
            header = read_header(last)
        except BadInput as exc:
            return StageState(self.name, STALE, f"{exc}: trains anew", str(folder), restart=True)
        try:
            data_key = workspace_data_key(workspace, config.train)
        except (BadInput, zarr_io.StoreError, ValueError) as exc:
            return StageState(self.name, MISSING, f"no training data ({exc})", str(folder))
        verdict = checkpoint_verdict(header, config.train, data_key)
        return StageState(self.name, verdict.state, verdict.reason, str(folder), detail=verdict.detail,
                          restart=verdict.restart)  # fmt: skip

    def run(self, run: StageRun) -> TrainSummary:
        # Forced, or checkpoints that do not fit: run_train discards them itself, in step with every
        # process of a torchrun job (`forget` in one process could race the others). Only the first
        # process writes checkpoints, so only it holds the lock.
        if int(os.environ.get("RANK", "0")) != 0:
            return self.work(run)
        with StoreLock(self.lock_target(run.workspace)):
            return self.work(run)

    def work(self, run: StageRun) -> TrainSummary:
        from pipeline.train.run import TrainProgress, run_train

        progress = TrainProgress(enabled=run.progress)
        return run_train(run.workspace, run.config.train, progress, report=progress.message,
                         restart=run.forced or run.restart)  # fmt: skip

    def forget(self, workspace: Path, config: WorkspaceConfig) -> None:
        for name in (LAST, BEST, METRICS):
            (checkpoint_dir(workspace) / name).unlink(missing_ok=True)
        shutil.rmtree(STA_CACHE.path(workspace), ignore_errors=True)  # a frozen backbone's levels: made again
