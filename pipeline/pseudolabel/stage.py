"""The pseudolabel stage's contract: when its classifiers and a video's pseudo-labels are up to date.

Classifiers (WS/checkpoints/pseudolabel/<name>.pt) are reused when the fingerprint stored in the
checkpoint equals `classifier_fingerprint`: the classifier settings, the weight files they start from,
the classes, the training and validation videos with their features' fingerprints, and the
checkpoints it depends on. A video's maps are up to date when its fingerprint equals
`video_fingerprint`: the classifier checkpoints' hashes, the map and final settings, its features'
fingerprint and the algorithm version. The run computes these to decide what to retrain and redo;
`state` computes them from the checkpoints on disk and compares, so both always agree.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common.errors import BadInput
from pipeline.common.files import sha256_file
from pipeline.common.plain_pickle import UnreadablePickle, holds_torch_values, read_torch_pickle
from pipeline.common.settings import describe_changes, output_settings
from pipeline.pseudolabel.config import PseudolabelConfig, VideoInfo
from pipeline.stage import (
    COMPLETE, MISSING, STALE, TRAINING_VIDEOS, Stage, StageRun, StageState, VideoState, failed_state, summarise,
    unfinished_state, version_change,
)  # fmt: skip
from stores import features as fstore
from stores import pseudo as pstore
from stores import zarr_io
from stores.cache import SCAM_CACHE

if TYPE_CHECKING:
    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.pseudolabel.run import PseudolabelSummary
    from pipeline.workspace.config import WorkspaceConfig

EVENT_MODEL = "event_audio"
PSEUDOLABEL_TASKS = "pipeline.pseudolabel.runners"  # the module of the tasks pseudolabel's dask workers run
COARSE, FINE = "_coarse", "_fine"


class PseudolabelError(BadInput):
    """The stage cannot run at all (no usable features store, fewer than two classes, ...)."""


def checkpoint_folder(workspace: Path) -> Path:
    return Path(workspace) / "checkpoints" / "pseudolabel"


# --- the videos the stage learns from -------------------------------------------------------------


@dataclass
class Videos:
    """The complete videos of the features store the stage can use, and the ones it cannot."""

    classes: list[str]
    usable: list[VideoInfo]
    unusable: dict[str, tuple[str, str]]  # video id -> (reason, features fingerprint)


def usable_videos(features: Any) -> Videos:
    """Complete videos whose label is one of the store's classes; raises when they cannot be learnt from."""
    classes = list(fstore.SCHEMA.read_store(features).classes)
    usable, unusable = [], {}
    for video_id in fstore.SCHEMA.complete_videos(features):
        attrs = fstore.SCHEMA.read_video(features, video_id)
        assert attrs is not None
        if attrs.label not in classes:
            unusable[video_id] = (f"label {attrs.label!r} is not in the store's class list", str(attrs.fingerprint))
            continue
        usable.append(VideoInfo(
            video_id=video_id, label=str(attrs.label), class_index=classes.index(attrs.label),
            n_frames=attrs.n_frames, has_audio=attrs.has_audio, frame_hw=(attrs.height, attrs.width),
            fingerprint=str(attrs.fingerprint),
        ))  # fmt: skip
    present = {v.label for v in usable}
    if len(present) < 2:
        raise PseudolabelError(
            f"need complete videos of at least 2 classes to learn from tags, found {sorted(present) or 'none'}"
        )
    sizes = {v.frame_hw for v in usable}
    if len(sizes) > 1:
        raise PseudolabelError(
            f"the stored frames have different sizes {sorted(sizes)}; pseudolabel trains on batches of one size: "
            "extract again without --keep-aspect"
        )
    return Videos(classes, usable, unusable)


def split_by_video(videos: list[VideoInfo], val_fraction: float, seed: int) -> tuple[list[VideoInfo], list[VideoInfo]]:
    """Per class, about `val_fraction` of its videos (at least one when it has two or more) go to validation."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({v.label for v in videos}):
        group = sorted((v for v in videos if v.label == label), key=lambda v: v.video_id)
        rng.shuffle(group)
        n_val = 0 if len(group) < 2 or val_fraction == 0 else max(1, round(len(group) * val_fraction))
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def weight_files_key(config: PseudolabelConfig) -> dict[str, str]:
    """Hashes of the files the classifiers start from (a replaced file means retraining)."""
    key = {}
    for name in ("weights", "vggsound", "vggsound_classes"):
        path = getattr(config, name)
        if path is not None:
            if not Path(path).is_file():
                raise PseudolabelError(f"{name} file not found: {path}")
            key[name] = sha256_file(path)
    return key


# --- fingerprints ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingKey:
    """What every classifier of one run is trained from, besides its upstream checkpoints."""

    classes: list[str]
    data: list[Any]  # training videos with their features' fingerprints, validation videos
    weight_files: dict[str, str]

    @classmethod
    def of(cls, classes: list[str], train: list[VideoInfo], val: list[VideoInfo], config: PseudolabelConfig) -> "TrainingKey":
        data = [sorted((v.video_id, v.fingerprint) for v in train), sorted(v.video_id for v in val)]
        return cls(classes, data, weight_files_key(config))


def classifier_upstream(name: str, trained: Iterable[str]) -> list[str]:
    """The classifiers whose checkpoints `name` depends on, among those `trained`."""
    trained = set(trained)
    if name == EVENT_MODEL:
        wanted: list[str] = []
    elif name.endswith(COARSE):
        wanted = [EVENT_MODEL] if name.startswith("SA") else []
    else:  # fine classifiers learn on the coarse stage's crops
        wanted = [EVENT_MODEL] + sorted(n for n in trained if n.endswith(COARSE))
    return [n for n in wanted if n in trained]


def classifier_fingerprint(name: str, config: PseudolabelConfig, key: TrainingKey, shas: dict[str, str],
                           without: tuple[str, ...] = ()) -> str:  # fmt: skip
    """What classifier `name` is made from; `shas` holds the checkpoints trained before it; `without`: the
    videos whose crops a fine classifier lacks (their coarse pass failed), so that a run which has them
    all trains it again."""
    upstream = [shas[d] for d in classifier_upstream(name, shas)]
    maps = output_settings(config, "maps") if name.endswith(FINE) else {}
    parts = [name, output_settings(config, "classifiers"), key.weight_files, key.classes, key.data, upstream, maps,
             config.ALGORITHM_VERSION]  # fmt: skip
    return zarr_io.fingerprint(parts + [sorted(without)] if without else parts)


def coarse_shas(shas: dict[str, str]) -> list[tuple[str, str]]:
    """The checkpoints the coarse maps depend on (every classifier but the fine ones)."""
    return sorted((name, sha) for name, sha in shas.items() if not name.endswith(FINE))


def coarse_fingerprint(shas: dict[str, str], config: PseudolabelConfig, features_fingerprint: str) -> str:
    """What a video's coarse maps and boxes are made from (reused when only later settings change)."""
    return zarr_io.fingerprint([coarse_shas(shas), output_settings(config, "maps"), features_fingerprint,
                                config.ALGORITHM_VERSION])  # fmt: skip


def video_fingerprint(shas: dict[str, str], config: PseudolabelConfig, features_fingerprint: str) -> str:
    """What a video's pseudo-labels are made from."""
    return zarr_io.fingerprint([coarse_fingerprint(shas, config, features_fingerprint), sorted(shas.items()),
                                output_settings(config, "final")])  # fmt: skip


def read_classifier_header(path: Path) -> dict[str, Any]:
    """A classifier checkpoint's fingerprint and whether it finished: from its pickle alone when both are
    plain values (no torch import, `pipeline.common.plain_pickle`), else with torch's safe loader,
    memory-mapped (its tensors are not read)."""
    try:
        header = _classifier_header(read_torch_pickle(path))
    except UnreadablePickle:
        header = None
    if header is not None and not holds_torch_values(header):
        return header
    import torch

    return _classifier_header(torch.load(path, map_location="cpu", weights_only=True, mmap=True))


def _classifier_header(saved: Any) -> dict[str, Any] | None:
    if not isinstance(saved, dict) or not isinstance(saved.get("state", {}), dict):
        return None
    return {"fingerprint": saved.get("fingerprint"), "finished": bool(saved.get("state", {}).get("finished"))}


def classifiers_reason(folder: Path, recorded: dict[str, str], config: PseudolabelConfig, key: TrainingKey,
                       fine_without: Callable[[dict[str, str]], tuple[str, ...]] = lambda shas: (),
                       ) -> tuple[str, dict[str, str]]:  # fmt: skip
    """("", current checkpoint hashes) when a run would reuse every recorded classifier, else (why not, {}).
    `fine_without(coarse checkpoint hashes)`: the videos a run would train the fine classifiers without
    (their coarse maps are not there: see `classifier_fingerprint`)."""
    shas: dict[str, str] = {}
    without: tuple[str, ...] | None = None
    order = sorted(recorded, key=lambda n: (n != EVENT_MODEL, n.endswith(FINE), n))  # the order they train in
    for name in order:
        path = folder / f"{name}.pt"
        if not path.is_file():
            return f"classifier checkpoint {path} is gone: trains again", {}
        try:
            header = read_classifier_header(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is retrained; the reason says why
            return f"classifier checkpoint {path} is unreadable ({type(exc).__name__}): trains again", {}
        if name.endswith(FINE) and without is None:
            without = fine_without(shas)
        if header["fingerprint"] != classifier_fingerprint(name, config, key, shas, without or ()):
            return f"classifier {name} trains again: its settings, data or upstream classifiers changed", {}
        if not header["finished"]:
            return f"classifier {name} is unfinished: its training resumes", {}
        shas[name] = sha256_file(path)
    return "", shas


# --- the per-video rule ---------------------------------------------------------------------------


def pseudo_video_state(video_id: str, features_fingerprint: str, attrs: pstore.PseudoVideo | None, expected: str,
                       config: PseudolabelConfig, recorded_settings: dict, failure: dict | None) -> VideoState:  # fmt: skip
    """A video's state given the fingerprint a run would give it now (`expected`)."""
    if attrs is not None and attrs.status == zarr_io.STATUS_COMPLETE:
        if attrs.fingerprint == expected:
            return VideoState(video_id, COMPLETE)
        if attrs.features_fingerprint != features_fingerprint:
            return VideoState(video_id, STALE, "its features were extracted again since")
        changed_version = version_change("pseudolabel", attrs.algorithm_version, config.ALGORITHM_VERSION)
        if changed_version:
            return VideoState(video_id, STALE, changed_version)
        changed = describe_changes(recorded_settings, output_settings(config))
        return VideoState(video_id, STALE, f"settings changed: {changed}" if changed
                          else "the classifiers changed since the maps were made")  # fmt: skip
    return unfinished_state(video_id, attrs, failure, features_fingerprint, "not labelled yet")


class PseudolabelStage(Stage):
    name = "pseudolabel"
    upstream = ("extract",)
    worker_modules = (PSEUDOLABEL_TASKS,)
    config_type = PseudolabelConfig
    video_set = TRAINING_VIDEOS

    def outputs(self, workspace: Path) -> tuple[Path, ...]:
        return pstore.SCHEMA.path(workspace), checkpoint_folder(workspace), SCAM_CACHE.path(workspace)

    def state(self, workspace: Path, config: WorkspaceConfig) -> StageState:
        settings = config.pseudolabel
        output = pstore.SCHEMA.path(workspace)
        features_path = fstore.SCHEMA.path(workspace)
        if not features_path.exists():
            return StageState(self.name, MISSING, "no features store yet (extract first)", str(output))
        try:
            videos = usable_videos(fstore.SCHEMA.open_for_reading(features_path))
            train, val = split_by_video(videos.usable, settings.val_fraction, settings.seed)
            key = TrainingKey.of(videos.classes, train, val, settings)
        except (BadInput, zarr_io.StoreError) as exc:
            return StageState(self.name, MISSING, str(exc), str(output))
        root = pstore.SCHEMA.open_for_reading(output) if output.exists() else None
        recorded = pstore.SCHEMA.read_store(root) if root is not None else pstore.PseudoStoreAttrs()
        attrs_of = {video.video_id: pstore.SCHEMA.read_video(root, video.video_id) for video in videos.usable}

        def fine_without(coarse: dict[str, str]) -> tuple[str, ...]:
            """The failed videos whose coarse maps are not those of the coarse classifiers `coarse` (a video
            merely interrupted gets its coarse maps in the next run, before the fine classifiers train)."""
            def has_coarse(video: VideoInfo) -> bool:
                attrs = attrs_of[video.video_id]
                return attrs is not None and attrs.coarse_fingerprint == coarse_fingerprint(coarse, settings,
                                                                                            video.fingerprint)  # fmt: skip
            failed = [v for v in videos.usable if v.video_id in recorded.failures]
            return tuple(sorted(v.video_id for v in failed if not has_coarse(v)))

        why, shas = classifiers_reason(checkpoint_folder(workspace), recorded.checkpoints, settings, key, fine_without)
        states = []
        for video in videos.usable:
            attrs = attrs_of[video.video_id]
            expected = "" if why else video_fingerprint(shas, settings, video.fingerprint)
            state = pseudo_video_state(video.video_id, video.fingerprint, attrs, expected, settings, recorded.settings,
                                       recorded.failures.get(video.video_id))  # fmt: skip
            if why and state.state == STALE and attrs is not None and attrs.features_fingerprint == video.fingerprint:
                state.reason = version_change("pseudolabel", attrs.algorithm_version, settings.ALGORITHM_VERSION) or why
            states.append(state)
        for video_id, (reason, features_fingerprint) in sorted(videos.unusable.items()):
            failure = recorded.failures.get(video_id) or {"reason": reason, "input": features_fingerprint}
            states.append(failed_state(video_id, failure, features_fingerprint))
        states.sort(key=lambda v: v.video_id)
        return summarise(self.name, output, states, missing_output=root is None)

    def run(self, run: StageRun) -> PseudolabelSummary:
        # Under torchrun every process runs the stage; only the first trains, creates groups and writes
        # attributes (the others run its pass jobs on groups it made), so only it holds the lock.
        if int(os.environ.get("RANK", "0")) != 0:
            return self.work(run)
        return super().run(run)  # type: ignore[return-value]

    def work(self, run: StageRun) -> PseudolabelSummary:
        from pipeline.common.progress import Progress
        from pipeline.pseudolabel.run import run_pseudolabel

        return run_pseudolabel(run.workspace, run.config.pseudolabel, Progress(enabled=run.progress),
                               scheduler=self.scheduler(run.config))  # fmt: skip

    def scheduler(self, config: WorkspaceConfig) -> SchedulerConfig:
        # Local workers are processes: each runs torch passes, whose Python glue threads would serialise.
        return dataclasses.replace(config.scheduler(), threads=False)

    def forget(self, workspace: Path, config: WorkspaceConfig) -> None:
        pstore.SCHEMA.forget_completion(pstore.SCHEMA.path(workspace))
        for checkpoint in checkpoint_folder(workspace).glob("*.pt"):
            checkpoint.unlink()  # the classifiers are part of this stage's work: train them again
        shutil.rmtree(SCAM_CACHE.path(workspace), ignore_errors=True)  # a frozen backbone's maps: made again
