"""The pseudolabel stage: category tags → SCAM maps → pseudo fixation maps in pseudo.zarr (SPEC §1.4-3).

1. Event-related audio per frame (`pipeline.pseudolabel.event_audio`): an audio classifier trained on the tags, or
   a VGGSound checkpoint's keyword match.
2. Coarse S, ST, SA classifiers trained on whole frames (SA on event-related frames only).
3. Coarse pass over every video: CAMs, fusion and selection boxes, written to pseudo.zarr.
4. Fine S, ST, SA classifiers trained on the crops of those boxes.
5. Fine pass: fine CAMs pasted back and fused, smoothed over ±2 frames (warped along the stored optical
   flow by default; the paper's plain average as an option) and thresholded (§3.5).

Classifiers are checkpointed and reused while their settings and data are unchanged. Per video, the
coarse results carry their own fingerprint (reused when only later settings change) and the video is
marked complete only once its pseudo-GT is written; a rerun redoes only what is missing or stale.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from models.device import resolve_device, set_cpu_threads
from models.selection import scale_boxes
from pipeline.common.errors import BadInput
from pipeline.common.files import sha256_file
from pipeline.common.progress import Progress
from pipeline.pseudolabel.config import PseudolabelConfig, VideoInfo
from pipeline.pseudolabel.event_audio import load_vggsound_scorer, video_event_probabilities
from pipeline.pseudolabel.maps import SCAMModels, coarse_pass, fine_pass, smoothing_pass
from pipeline.pseudolabel.training import (
    Boxes,
    ClassifierTrainer,
    train_coarse,
    train_event_classifier,
    train_fine,
)
from stores import features as fstore
from stores import pseudo as pstore
from stores import zarr_io

log = logging.getLogger(__name__)

__all__ = ["PseudolabelConfig", "PseudolabelError", "PseudolabelSummary", "run_pseudolabel"]


class PseudolabelError(BadInput):
    """The stage cannot run at all (no usable features store, fewer than two classes, ...)."""


@dataclass
class PseudolabelSummary:
    store: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    frames_with_pseudo_gt: int = 0
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per classifier and per pass
    failures: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted

    def line(self) -> str:
        accuracy = ", ".join(f"{name} {scores['val']:.2f}" for name, scores in self.accuracy.items())
        text = (
            f"pseudolabel: {self.done} done, {self.skipped} skipped, {self.failed} failed; "
            f"{self.frames_with_pseudo_gt}/{self.frames} frames have a pseudo-GT; "
            f"validation accuracy: {accuracy or 'n/a'} ({self.seconds:.1f} s) -> {self.store}"
        )
        return text + (" [interrupted: rerun to resume]" if self.interrupted else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# --- inputs -------------------------------------------------------------------------------------


def load_videos(features: Any, summary: PseudolabelSummary, warn: Callable[[str], None]) -> tuple[list[str], list[VideoInfo]]:
    """The complete videos of the features store, with their class index; problems are recorded and shown."""
    classes = list(features.attrs.get("classes", []))
    videos: list[VideoInfo] = []
    for video_id in fstore.complete_videos(features):
        attrs = fstore.video_attrs(features, video_id) or {}
        label = attrs.get("label")
        if label not in classes:
            _fail(summary, video_id, f"label {label!r} is not in the store's class list", warn)
            continue
        videos.append(VideoInfo(
            video_id=video_id, label=label, class_index=classes.index(label), n_frames=int(attrs["n_frames"]),
            has_audio=bool(attrs.get("has_audio")), frame_hw=(int(attrs["height"]), int(attrs["width"])),
            fingerprint=str(attrs.get("fingerprint")),
        ))  # fmt: skip
    present = {v.label for v in videos}
    for missing in sorted(set(classes) - present):
        _warn(summary, f"class {missing!r} has no usable video: its classifier output is never trained", warn)
    if len(present) < 2:
        raise PseudolabelError(
            f"need complete videos of at least 2 classes to learn from tags, found {sorted(present) or 'none'}"
        )
    sizes = {v.frame_hw for v in videos}
    if len(sizes) > 1:
        raise PseudolabelError(
            f"the stored frames have different sizes {sorted(sizes)}; pseudolabel trains on batches of one size: "
            "extract again without --keep-aspect"
        )
    for video in videos:
        if not video.has_audio:
            _warn(summary, f"{video.video_id}: no audio stream: the SA branch is not used for this video", warn)
    return classes, videos


def _fail(summary: PseudolabelSummary, video_id: str, reason: str, warn: Callable[[str], None]) -> None:
    summary.failed += 1
    summary.failures.append({"video_id": video_id, "reason": reason})
    warn(f"FAILED {video_id}: {reason}")


def _warn(summary: PseudolabelSummary, text: str, warn: Callable[[str], None]) -> None:
    summary.warnings.append(text)
    warn(f"warning: {text}")


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


def _inputs_key(config: PseudolabelConfig) -> dict[str, str]:
    """Hashes of the weight files the classifiers start from (a replaced file means retraining)."""
    key = {}
    for name in ("weights", "vggsound", "vggsound_classes"):
        path = getattr(config, name)
        if path is not None:
            if not Path(path).is_file():
                raise PseudolabelError(f"{name} file not found: {path}")
            key[name] = sha256_file(Path(path))
    return key


# --- the stage -----------------------------------------------------------------------------------


def run_pseudolabel(
    workspace: str | Path, config: PseudolabelConfig, progress: Progress | None = None,
    report: Callable[[str], None] | None = None,
) -> PseudolabelSummary:  # fmt: skip
    """Train the SCAM classifiers from the tags of `workspace/features.zarr` and write `pseudo.zarr`."""
    began = time.perf_counter()
    workspace = Path(workspace)
    progress = progress or Progress(enabled=False)
    # Informational lines (epochs, reuse) show with the progress bars; failures and warnings always do.
    report = report or (progress.message if progress.enabled else log.info)
    features_path = fstore.store_path(workspace)
    try:
        features = fstore.open_for_reading(features_path)
    except (FileNotFoundError, ValueError) as exc:
        raise PseudolabelError(str(exc)) from exc
    store = pstore.store_path(workspace)
    summary = PseudolabelSummary(store=str(store))
    classes, videos = load_videos(features, summary, progress.message)
    try:
        device = resolve_device(config.device)
    except (RuntimeError, ValueError) as exc:
        raise PseudolabelError(str(exc)) from exc
    set_cpu_threads(device, config.threads)
    train_videos, val_videos = split_by_video(videos, config.val_fraction, config.seed)
    trainer = ClassifierTrainer(workspace, config, classes, train_videos, val_videos, device, report, progress,
                                _inputs_key(config))  # fmt: skip
    root = pstore.open_for_writing(store)
    pstore.write_store_attrs(root, {
        "classes": classes, "settings": config.all_settings(), "features_store": str(features_path),
        "train_videos": [v.video_id for v in train_videos], "val_videos": [v.video_id for v in val_videos],
    })  # fmt: skip
    stage = _Stage(workspace, config, videos, val_videos, trainer, root, device, summary, progress, report)
    try:
        stage.run()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.accuracy = {name: {"train": r.train_accuracy, "val": r.val_accuracy} for name, r in trainer.results.items()}
        root.attrs.update({
            "checkpoints": {name: r.sha256 for name, r in trainer.results.items()}, "accuracy": summary.accuracy,
        })  # fmt: skip
        zarr_io.record_failures(root, {f["video_id"]: f for f in summary.failures})
        progress.close()
        zarr_io.consolidate(store)
    summary.seconds = time.perf_counter() - began
    return summary


class _Stage:
    """One run of the stage: the order of training and passes, and the per-video bookkeeping."""

    def __init__(self, workspace: Path, config: PseudolabelConfig, videos: list[VideoInfo],
                 val_videos: list[VideoInfo], trainer: ClassifierTrainer, root: Any, device: torch.device,
                 summary: PseudolabelSummary, progress: Progress, report: Callable[[str], None]) -> None:  # fmt: skip
        self.features_path = fstore.store_path(workspace)
        self.config = config
        self.videos = videos
        self.val_ids = {v.video_id for v in val_videos}
        self.trainer = trainer
        self.root = root
        self.device = device
        self.summary = summary
        self.progress = progress
        self.report = report
        self.failed: set[str] = set()

    def run(self) -> None:
        config, trainer = self.config, self.trainer
        with self._timed("event audio"):
            scorer = self._event_scorer()
            event_of = self._event_probabilities(scorer)
        with self._timed("coarse classifiers"):
            models = SCAMModels(coarse=train_coarse(trainer, event_of, with_sa=scorer is not None))
        coarse_key = self._checkpoint_key()
        with self._timed("coarse maps"):
            self._for_each_video("coarse maps", lambda info, reader: self._coarse(info, reader, models, event_of, coarse_key))
        if config.fine_stage:
            with self._timed("fine classifiers"):
                models.fine = train_fine(trainer, event_of, self._boxes(), list(models.coarse))
        final_key = zarr_io.fingerprint([coarse_key, self._checkpoint_key(), config.final_settings(), config.fine_stage])
        with self._timed("fine maps and smoothing"):
            self._for_each_video("pseudo-GT", lambda info, reader: self._final(info, reader, models, coarse_key, final_key))

    @contextlib.contextmanager
    def _timed(self, what: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.summary.timings[what] = round(time.perf_counter() - began, 2)

    def _event_scorer(self) -> Any:
        config = self.config
        if config.vggsound is not None:
            scorer = load_vggsound_scorer(config.vggsound, config.vggsound_classes, self.trainer.classes)
            for tag in scorer.unmatched_tags:
                _warn(self.summary, f"no VGGSound class name contains the keyword of {tag!r}: its frames are never "
                      "event-related", self.progress.message)  # fmt: skip
            return scorer.to(self.device)
        return train_event_classifier(self.trainer)

    def _event_probabilities(self, scorer: Any) -> dict[str, np.ndarray]:
        probs = {}
        bar = self.progress.bar(len(self.videos), "event audio", "video")
        for info in self.videos:
            reader = fstore.VideoReader(self.features_path, info.video_id)
            probs[info.video_id] = video_event_probabilities(
                scorer, reader, info.class_index, info.has_audio, self.device, self.config.infer_batch
            )
            bar.update(1)
        bar.close()
        return probs

    def _checkpoint_key(self) -> list[tuple[str, str]]:
        return sorted((name, result.sha256) for name, result in self.trainer.results.items())

    def _for_each_video(self, what: str, work: Callable[[VideoInfo, fstore.VideoReader], None]) -> None:
        bar = self.progress.bar(len(self.videos), what, "video")
        for info in self.videos:
            if info.video_id not in self.failed:
                try:
                    work(info, fstore.VideoReader(self.features_path, info.video_id))
                except (OSError, ValueError, RuntimeError, KeyError) as exc:
                    # One unreadable or inconsistent video must not stop the others.
                    self.failed.add(info.video_id)
                    _fail(self.summary, info.video_id, f"{what}: {type(exc).__name__}: {exc}", self.progress.message)
            bar.update(1)
        bar.close()

    def _coarse_fingerprint(self, info: VideoInfo, coarse_key: list) -> str:
        return zarr_io.fingerprint([coarse_key, self.config.map_settings(), info.fingerprint])

    def _coarse(self, info: VideoInfo, reader: fstore.VideoReader, models: SCAMModels,
                event_of: dict[str, np.ndarray], coarse_key: list) -> None:  # fmt: skip
        fingerprint = self._coarse_fingerprint(info, coarse_key)
        if pstore.coarse_is_done(pstore.open_video_group(self.root, info.video_id), fingerprint):
            return
        attrs = {
            "label": info.label, "class_index": info.class_index, "has_audio": info.has_audio,
            "n_frames": info.n_frames, "map_size": self.config.map_size, "features_fingerprint": info.fingerprint,
            "sa_skipped_reason": None if info.has_audio else "no audio stream: SA branch not used",
            "split": "val" if info.video_id in self.val_ids else "train",
        }  # fmt: skip
        group = pstore.preallocate_video(self.root, info.video_id, info.n_frames, self.config.map_size, attrs)
        coarse_pass(info, reader, group, models, event_of[info.video_id], self.config, self.device)
        pstore.mark_coarse_done(group, fingerprint)

    def _boxes(self) -> Boxes:
        """Selection boxes of every video in stored-frame pixels, from the coarse pass."""
        boxes = {}
        for info in self.videos:
            if info.video_id in self.failed:
                continue
            stored = pstore.read_block(pstore.open_video_group(self.root, info.video_id), ("box", "has_box"))
            map_grid = (self.config.map_size, self.config.map_size)
            frame_boxes = scale_boxes(torch.from_numpy(stored["box"]).long(), map_grid, info.frame_hw)
            boxes[info.video_id] = (frame_boxes.numpy(), stored["has_box"])
        return boxes

    def _final(self, info: VideoInfo, reader: fstore.VideoReader, models: SCAMModels, coarse_key: list,
               final_key: str) -> None:  # fmt: skip
        fingerprint = zarr_io.fingerprint([final_key, self._coarse_fingerprint(info, coarse_key)])
        group = pstore.open_video_group(self.root, info.video_id)
        if pstore.is_up_to_date(self.root, info.video_id, fingerprint):
            self.summary.skipped += 1
            self._count(pstore.read_block(group, ("has_pseudo_gt",))["has_pseudo_gt"])
            return
        pstore.mark_in_progress(group)
        fine_pass(info, reader, group, models, self.config, self.device)
        smoothing_pass(info, reader, group, self.config, self.device)
        pstore.mark_complete(group, fingerprint, {"final_settings": self.config.final_settings()})
        self.summary.done += 1
        self._count(pstore.read_block(group, ("has_pseudo_gt",))["has_pseudo_gt"])

    def _count(self, has_gt: np.ndarray) -> None:
        self.summary.frames += int(has_gt.size)
        self.summary.frames_with_pseudo_gt += int(has_gt.sum())

