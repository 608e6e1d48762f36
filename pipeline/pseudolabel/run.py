"""The pseudolabel stage: category tags → SCAM maps → pseudo fixation maps in pseudo.zarr (SPEC §1.4-3).

1. Event-related audio per frame (`pipeline.pseudolabel.event_audio`): an audio classifier trained on the tags, or
   a VGGSound checkpoint's keyword match.
2. Coarse S, ST, SA classifiers trained on whole frames (SA on event-related frames only).
3. Coarse pass over every video: CAMs, fusion and selection boxes, written to pseudo.zarr.
4. Fine S, ST, SA classifiers trained on the crops of those boxes.
5. Fine pass: fine CAMs pasted back and fused; then smoothed over ±2 frames (warped along the stored
   optical flow by default; the paper's plain average as an option) and thresholded (§3.5).

Classifiers are checkpointed and reused while their settings and data are unchanged. Per video, the
coarse results carry their own fingerprint (reused when only later settings change) and the video is
marked complete only once its pseudo-GT is written; a rerun redoes only what is missing or stale. The
passes go out as one job per video, or per segment of a long video (`pipeline.pseudolabel.passes`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from models.device import resolve_device, set_cpu_threads
from models.selection import scale_boxes
from pipeline.common.allocator import tune_allocator
from pipeline.common.progress import Progress
from pipeline.common.scheduling import SchedulerConfig
from pipeline.common.settings import jsonable, output_settings
from pipeline.pseudolabel.config import PseudolabelConfig, VideoInfo
from pipeline.pseudolabel.event_audio import load_vggsound_scorer, video_event_probabilities
from pipeline.pseudolabel.frozen import ScamCache
from pipeline.pseudolabel.maps import SCAMModels
from pipeline.pseudolabel.passes import (
    CACHE_PASSES, CACHED_CROPS, CACHED_FRAMES, COARSE_PASS, FINE_PASS, SMOOTH_PASS, PassJob, classifier_names,
    segment_bounds,
)  # fmt: skip
from pipeline.pseudolabel.runners import PassRunner, pass_runner, serve
from pipeline.pseudolabel.stage import (
    EVENT_MODEL, PseudolabelError, TrainingKey, Videos, coarse_fingerprint, pseudo_video_state, split_by_video,
    usable_videos, video_fingerprint,
)  # fmt: skip
from pipeline.pseudolabel.training import Boxes, ClassifierTrainer, train_coarse, train_event_classifier, train_fine
from pipeline.stage import COMPLETE, VideoCounts
from pipeline.common.processes import Distributed
from stores import features as fstore
from stores import pseudo as pstore
from stores import zarr_io
from stores.chunks import ChunkError
from stores.integrity import mark_damaged
from stores.lock import held_fence

log = logging.getLogger(__name__)

__all__ = ["PseudolabelConfig", "PseudolabelError", "PseudolabelSummary", "run_pseudolabel"]


@dataclass(kw_only=True)
class PseudolabelSummary(VideoCounts):
    rank: int = 0  # this process's rank in a torchrun job (only the first prints the summary)
    frames: int = 0
    frames_with_pseudo_gt: int = 0
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per classifier and per pass
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        accuracy = ", ".join(f"{name} {scores['val']:.2f}" for name, scores in self.accuracy.items())
        text = (
            f"pseudolabel: {self.done} done, {self.skipped} skipped, {self.failed} failed; "
            f"{self.frames_with_pseudo_gt}/{self.frames} frames have a pseudo-GT; "
            f"validation accuracy: {accuracy or 'n/a'} ({self.seconds:.1f} s) -> {self.store}"
        )
        return text + (" [interrupted: rerun to resume]" if self.interrupted else "")


# --- inputs -------------------------------------------------------------------------------------


def load_videos(features: Any, summary: PseudolabelSummary, warn: Callable[[str], None]) -> Videos:
    """The usable videos of the features store; the unusable ones are recorded as failures and shown."""
    videos = usable_videos(features)
    for video_id, (reason, features_fingerprint) in sorted(videos.unusable.items()):
        _fail(summary, video_id, reason, features_fingerprint, warn)
    for missing in sorted(set(videos.classes) - {v.label for v in videos.usable}):
        _warn(summary, f"class {missing!r} has no usable video: its classifier output is never trained", warn)
    for video in videos.usable:
        if not video.has_audio:
            _warn(summary, f"{video.video_id}: no audio stream: the SA branch is not used for this video", warn)
    return videos


def _fail(summary: PseudolabelSummary, video_id: str, reason: str, features_fingerprint: str,
          warn: Callable[[str], None]) -> None:  # fmt: skip
    summary.failed += 1
    # The input's stamp: `avfix run` does not retry a failure whose features did not change.
    summary.failures.append({"video_id": video_id, "reason": reason, "input": features_fingerprint})
    warn(f"FAILED {video_id}: {reason}")


def _warn(summary: PseudolabelSummary, text: str, warn: Callable[[str], None]) -> None:
    summary.warnings.append(text)
    warn(f"warning: {text}")


# --- the stage -----------------------------------------------------------------------------------


def run_pseudolabel(
    workspace: str | Path, config: PseudolabelConfig, progress: Progress | None = None,
    report: Callable[[str], None] | None = None, scheduler: SchedulerConfig | None = None,
) -> PseudolabelSummary:  # fmt: skip
    """Train the SCAM classifiers from the tags of `workspace/features.zarr` and write `pseudo.zarr`.

    The per-video passes go to the dask workers of `scheduler` when it has several (or an address), or,
    under `torchrun`, to every process: the first coordinates, and all train each classifier together
    and share each pass's jobs.
    """
    tune_allocator()
    with Distributed.from_env(config.device) as processes:
        if not processes.is_main:
            serve(processes, str(processes.device(config.device)), config.threads)
            return PseudolabelSummary(store=str(pstore.SCHEMA.path(Path(workspace))), rank=processes.rank)
        with pass_runner(processes, scheduler or SchedulerConfig(), config.device) as runner:
            return _run_pseudolabel(Path(workspace), config, progress, report, runner)


def _run_pseudolabel(workspace: Path, config: PseudolabelConfig, progress: Progress | None,
                     report: Callable[[str], None] | None, runner: PassRunner) -> PseudolabelSummary:  # fmt: skip
    began = time.perf_counter()
    progress = progress or Progress(enabled=False)
    # Informational lines (epochs, reuse) show with the progress bars; failures and warnings always do.
    report = report or (progress.message if progress.enabled else log.info)
    features_path = fstore.SCHEMA.path(workspace)
    try:
        features = fstore.SCHEMA.open_for_reading(features_path)
    except zarr_io.StoreError as exc:
        raise PseudolabelError(str(exc)) from exc
    store = pstore.SCHEMA.path(workspace)
    summary = PseudolabelSummary(store=str(store))
    found = load_videos(features, summary, progress.message)
    classes, videos = found.classes, found.usable
    try:
        device = resolve_device(config.device)
    except (RuntimeError, ValueError) as exc:
        raise PseudolabelError(str(exc)) from exc
    set_cpu_threads(device, config.threads)
    train_videos, val_videos = split_by_video(videos, config.val_fraction, config.seed)
    key = TrainingKey.of(classes, train_videos, val_videos, config)
    trainer = ClassifierTrainer(workspace, config, key, train_videos, val_videos, device, report, progress,
                                runner.team())  # fmt: skip
    root = pstore.SCHEMA.open_for_writing(store)
    pstore.SCHEMA.update_store(
        root, classes=classes, settings=output_settings(config), config=jsonable(config),
        features_store=str(features_path), train_videos=[v.video_id for v in train_videos],
        val_videos=[v.video_id for v in val_videos],
    )  # fmt: skip
    stage = _LabelRun(workspace, config, videos, val_videos, trainer, root, device, summary, progress, report,
                      runner)  # fmt: skip
    try:
        stage.run()
    except KeyboardInterrupt:
        summary.interrupted = True
    except ChunkError as exc:  # a classifier's training data is damaged: nothing can be learnt until it is made again
        raise PseudolabelError(f"{exc}; {mark_damaged(exc)}") from exc
    finally:
        summary.accuracy = {name: {"train": r.train_accuracy, "val": r.val_accuracy} for name, r in trainer.results.items()}
        pstore.SCHEMA.update_store(
            root, checkpoints=trainer.shas(), accuracy=summary.accuracy,
            failures={f["video_id"]: {k: v for k, v in f.items() if k != "video_id"} for f in summary.failures},
        )  # fmt: skip
        progress.close()
        zarr_io.consolidate(store)
    summary.seconds = time.perf_counter() - began
    return summary


class _LabelRun:
    """One run of the stage: the order of training and passes, and the per-video bookkeeping."""

    def __init__(self, workspace: Path, config: PseudolabelConfig, videos: list[VideoInfo],
                 val_videos: list[VideoInfo], trainer: ClassifierTrainer, root: Any, device: torch.device,
                 summary: PseudolabelSummary, progress: Progress, report: Callable[[str], None],
                 runner: PassRunner) -> None:  # fmt: skip
        self.workspace = workspace
        self.features_path = fstore.SCHEMA.path(workspace)
        self.config = config
        self.videos = videos
        self.val_ids = {v.video_id for v in val_videos}
        self.trainer = trainer
        self.root = root
        self.device = device
        self.summary = summary
        self.progress = progress
        self.report = report
        self.runner = runner
        self.failed: set[str] = set()
        self._coarse_fingerprints: dict[str, str] = {}  # of the videos whose coarse job is out
        self._final_fingerprints: dict[str, str] = {}

    def run(self) -> None:
        config, trainer = self.config, self.trainer
        with self._timed("event audio"):
            scorer = self._event_scorer()
            event_of = self._event_probabilities(scorer)
        if config.frozen:
            with self._timed("cached backbone maps"):
                trainer.cache = self._coarse_cache(scorer)
        with self._timed("coarse classifiers"):
            models = SCAMModels(coarse=train_coarse(trainer, event_of, with_sa=scorer is not None))
        coarse = trainer.shas()
        with self._timed("coarse maps"):
            self._pass(COARSE_PASS, lambda info: self._coarse(info, event_of, coarse), self._coarse_done)
        if config.fine_stage:
            boxes = self._boxes()
            if trainer.cache is not None:
                with self._timed("cached backbone maps"):
                    cache = trainer.cache
                    keyed = [(info, cache.fine_key(info, self._coarse_key(info))) for info in self._usable()]
                    self._fill_cache(cache, CACHED_CROPS, keyed, boxes)
            with self._timed("fine classifiers"):
                models.fine = train_fine(trainer, event_of, boxes, list(models.coarse))
        every = trainer.shas()
        with self._timed("fine maps and smoothing"):
            self._pass(FINE_PASS, lambda info: self._final(info, every), lambda info: None)
            self._pass(SMOOTH_PASS, self._smoothing, self._final_done)

    def _coarse_cache(self, scorer: Any) -> ScamCache:
        """The frozen backbone's maps of every frame, and the frozen audio encoder's embeddings."""
        encoder = getattr(scorer, "encoder", None)
        if EVENT_MODEL in self.trainer.results:
            encoder_key = self.trainer.results[EVENT_MODEL].sha256
        else:
            encoder_key = str(self.trainer.key.weight_files.get("vggsound", "none"))
        cache = ScamCache(self.workspace, self.config, self.device, self.progress,
                          encoder.embedding_dim if encoder is not None else 1)  # fmt: skip
        videos = self._usable()
        self._fill_cache(cache, CACHED_FRAMES, [(info, cache.coarse_key(info)) for info in videos])
        cache.ensure_audio(videos, encoder, encoder_key)  # a small network: here, not worth a job
        return cache

    def _fill_cache(self, cache: ScamCache, kind: str, keyed: list[tuple[VideoInfo, str]],
                    boxes: Boxes | None = None) -> None:  # fmt: skip
        """The stale videos' part `kind` of the frozen backbone's cache, as jobs: this process prepares
        each part and records it once its job wrote the rows. A part that could not be made stops the
        stage: the classifiers would otherwise read rows that were never written."""
        what = CACHE_PASSES[kind]
        keys = {info.video_id: key for info, key in cache.stale(what, keyed)}

        def prepare(info: VideoInfo) -> list[PassJob] | None:
            if info.video_id not in keys:
                return None
            cache.prepare(what, info)
            return self._segments(replace(self._job(kind, info), boxes=None if boxes is None else boxes[info.video_id]))

        failures: list[str] = []
        self._pass(kind, prepare, lambda info: cache.record(what, info, keys[info.video_id]), failures)
        if failures:
            raise PseudolabelError(f"the frozen backbone's {kind} could not be made: " + "; ".join(failures))

    def _usable(self) -> list[VideoInfo]:
        return [info for info in self.videos if info.video_id not in self.failed]

    def _coarse_key(self, info: VideoInfo) -> str:
        """What a video's selection boxes are made from (the fine maps are cached per boxes)."""
        attrs = pstore.SCHEMA.read_video(self.root, info.video_id)
        return str(attrs.coarse_fingerprint if attrs is not None else None)

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
            scorer = load_vggsound_scorer(config.vggsound, config.vggsound_classes, self.trainer.key.classes)
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

    def _pass(self, kind: str, prepare: Callable[[VideoInfo], list[PassJob] | None],
              finish: Callable[[VideoInfo], None], failures: list[str] | None = None) -> None:  # fmt: skip
        """One pass over the videos: `prepare` skips a video (None) or creates what its jobs write into and
        returns them (one per segment), the runner runs the jobs here or elsewhere, this process writes
        each job's per-frame rows, and `finish` records a video once all its jobs are back. A failed job
        fails its video (or, with `failures`, is only listed there)."""
        bar = self.progress.bar(sum(info.n_frames for info in self.videos), kind, "frame")
        jobs: list[PassJob] = []
        left: dict[str, int] = {}  # video -> its jobs not back yet
        for info in self.videos:
            video_jobs = None if info.video_id in self.failed else prepare(info)
            if not video_jobs:
                bar.update(info.n_frames)
                continue
            jobs += video_jobs
            left[info.video_id] = len(video_jobs)
        broken: set[str] = set()  # videos with a failed job: their other jobs' results are dropped
        for outcome in self.runner.run(jobs):
            info = outcome.job.info
            left[info.video_id] -= 1
            if outcome.failure is not None and info.video_id not in broken:
                broken.add(info.video_id)
                if failures is not None:
                    failures.append(f"{info.video_id}: {outcome.failure}")
                else:
                    self.failed.add(info.video_id)
                    _fail(self.summary, info.video_id, outcome.failure, outcome.input_stamp, self.progress.message)
            elif info.video_id not in broken:
                if outcome.rows is not None:
                    outcome.rows.write(zarr_io.video_group(self.root, info.video_id))
                if left[info.video_id] == 0:
                    finish(info)
            segment = outcome.job.segment
            bar.update(segment.stop - segment.start)
        bar.close()

    def _segments(self, job: PassJob) -> list[PassJob]:
        """The job of a whole video cut into the jobs of its segments (a video of no frame keeps one job, so
        that it is recorded like the others)."""
        bounds = segment_bounds(job.info.n_frames, self.config) or [(0, 0)]
        return [replace(job, frames=frames) for frames in bounds]

    def _job(self, kind: str, info: VideoInfo, event_prob: np.ndarray | None = None) -> PassJob:
        trainer = self.trainer
        names = classifier_names(list(trainer.results), kind)
        embedding = trainer.cache.layout.embedding if trainer.cache is not None else 1
        return PassJob(kind, str(self.workspace), self.config, info, len(trainer.classes),
                       tuple((name, trainer.results[name].sha256) for name in names), embedding, event_prob,
                       fence=held_fence(pstore.SCHEMA.path(self.workspace)))  # fmt: skip

    def _coarse(self, info: VideoInfo, event_of: dict[str, np.ndarray], shas: dict[str, str]) -> list[PassJob] | None:
        fingerprint = coarse_fingerprint(shas, self.config, info.fingerprint)
        attrs = pstore.SCHEMA.read_video(self.root, info.video_id)
        if attrs is not None and attrs.coarse_fingerprint == fingerprint:
            return None
        video = pstore.PseudoVideo(
            label=info.label, class_index=info.class_index, has_audio=info.has_audio, n_frames=info.n_frames,
            map_size=self.config.map_size, features_fingerprint=info.fingerprint,
            sa_skipped_reason=None if info.has_audio else "no audio stream: SA branch not used",
            split="val" if info.video_id in self.val_ids else "train",
        )  # fmt: skip
        shapes = pstore.array_shapes(info.n_frames, self.config.map_size)
        pstore.SCHEMA.create_video(self.root, info.video_id, video, shapes)
        self._coarse_fingerprints[info.video_id] = fingerprint
        return self._segments(self._job(COARSE_PASS, info, event_of[info.video_id]))

    def _coarse_done(self, info: VideoInfo) -> None:
        # The coarse arrays (coarse_cam, probabilities, boxes, event_prob) are written and may be reused.
        group = zarr_io.video_group(self.root, info.video_id)
        pstore.SCHEMA.update_video(group, coarse_fingerprint=self._coarse_fingerprints.pop(info.video_id))

    def _boxes(self) -> Boxes:
        """Selection boxes of every video in stored-frame pixels, from the coarse pass."""
        boxes = {}
        for info in self.videos:
            if info.video_id in self.failed:
                continue
            stored = pstore.read_block(zarr_io.video_group(self.root, info.video_id), ("box", "has_box"))
            map_grid = (self.config.map_size, self.config.map_size)
            frame_boxes = scale_boxes(torch.from_numpy(stored["box"]).long(), map_grid, info.frame_hw)
            boxes[info.video_id] = (frame_boxes.numpy(), stored["has_box"])
        return boxes

    def _final(self, info: VideoInfo, shas: dict[str, str]) -> list[PassJob] | None:
        """The fine pass's jobs of a video whose pseudo-GT is not up to date (it is marked in progress)."""
        fingerprint = video_fingerprint(shas, self.config, info.fingerprint)
        group = zarr_io.video_group(self.root, info.video_id)
        assert group is not None
        state = pseudo_video_state(info.video_id, info.fingerprint, pstore.SCHEMA.read_video(self.root, info.video_id),
                                   fingerprint, self.config, {}, None)  # fmt: skip
        if state.state == COMPLETE:
            self.summary.skipped += 1
            self._count(pstore.read_block(group, ("has_pseudo_gt",))["has_pseudo_gt"])
            return None
        pstore.SCHEMA.mark_in_progress(group)
        self._final_fingerprints[info.video_id] = fingerprint
        return self._segments(self._job(FINE_PASS, info))

    def _smoothing(self, info: VideoInfo) -> list[PassJob] | None:
        """The smoothing jobs of a video whose fine pass this run made (all of its fused maps are written)."""
        if info.video_id not in self._final_fingerprints:
            return None
        return self._segments(self._job(SMOOTH_PASS, info))

    def _final_done(self, info: VideoInfo) -> None:
        group = zarr_io.video_group(self.root, info.video_id)
        pstore.SCHEMA.mark_complete(group, self._final_fingerprints.pop(info.video_id),
                                    self.config.ALGORITHM_VERSION,
                                    final_settings=output_settings(self.config, "final"))  # fmt: skip
        self.summary.done += 1
        self._count(pstore.read_block(group, ("has_pseudo_gt",))["has_pseudo_gt"])

    def _count(self, has_gt: np.ndarray) -> None:
        self.summary.frames += int(has_gt.size)
        self.summary.frames_with_pseudo_gt += int(has_gt.sum())

