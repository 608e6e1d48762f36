"""The predict stage: saliency maps for new videos with a trained STA network → WS/predictions.zarr.

1. The inputs go through the extract stage itself (`run_extract` into WS/predict-features.zarr, with
   the extract settings the network was trained on), so decoding, audio features, resuming, parallel
   workers and bad-input handling are the same code as for training. Tags are not needed: a single
   file, a flat folder, a `<class>/<video>` folder or a manifest (with or without `label`) all work.
2. Per video, frames t−1, t, t+1 (clamped at the ends, so every frame of a video of any length gets a
   map) and the audio window of t go through the network in batches; the audio switch is the
   network's own head (no tag at predict time; no audio stream → switch 0).
3. Post-processing as SPEC §4.6 (`models.sta.postprocess_saliency`): sigmoid, 8-bit quantisation,
   Gaussian σ = 7 at 356 px (scaled with the map size), max-normalisation, resize to the source size.
4. Maps stream into predictions.zarr chunk by chunk; a video is marked complete last, and a rerun
   skips complete videos whose features, checkpoint and settings are unchanged.
5. `overlay`: WS/overlays/<video>.mp4, the heat map blended over the source frames with the audio.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models.device import autocast, resolve_device
from models.sta import STANet, postprocess_saliency
from pipeline.common.allocator import tune_allocator
from pipeline.common import media
from pipeline.common.files import file_stamp, sha256_file
from pipeline.common.inputs import discover
from pipeline.common.progress import Progress
from pipeline.common.scheduling import SchedulerConfig
from pipeline.common.settings import jsonable, output_settings
from pipeline.extract.run import run_extract
from pipeline.predict.config import MAPS, PredictConfig
from pipeline.predict.overlay import write_overlay
from pipeline.predict.segments import (
    Segment, SegmentOutcome, no_missing_maps, predict_segment, predict_segments, remember_model, segment_bounds,
)  # fmt: skip
from pipeline.predict.stage import (
    PREDICT_WORKER_MODULES, PredictError, extract_config_for, features_path, find_checkpoint, maps_fingerprint,
    overlay_fingerprint, overlay_path, predicted_video_state,
)  # fmt: skip
from pipeline.stage import COMPLETE, VideoCounts
from pipeline.train.augment import resize_flow, resize_frames
from pipeline.train.checkpoints import load_checkpoint
from pipeline.train.config import TrainError
from pipeline.train.model import build_sta
from pipeline.common.processes import Distributed
from stores import features as fstore
from stores import predictions as pred_store
from stores import zarr_io
from stores.records import VideoRecord
from stores.lock import held_fence

log = logging.getLogger(__name__)

MIN_CONTEXT_FRAMES = 3  # t−1, t, t+1


@dataclass(kw_only=True)
class PredictSummary(VideoCounts):
    checkpoint: str = ""
    rank: int = 0  # this process's rank in a torchrun job (only the first prints the summary)
    frames: int = 0
    overlays: int = 0
    empty_maps: int = 0  # frames whose map is all zero (see `line`)
    short_videos: dict[str, int] = field(default_factory=dict)  # video id -> frame count (< 3)

    def line(self) -> str:
        text = (f"predict: {self.done} done, {self.skipped} skipped, {self.failed} failed "
                f"({self.frames} frames, {self.overlays} overlays, {self.seconds:.1f} s) -> {self.store}")  # fmt: skip
        if self.short_videos:
            shown = ", ".join(f"{k} ({n} frame{'s' if n != 1 else ''})" for k, n in sorted(self.short_videos.items()))
            text += f"; shorter than 3 frames, predicted with t-1/t+1 clamped: {shown}"
        if self.empty_maps:
            text += (f"; {self.empty_maps} frame(s) got an all-zero map (the network's probability stays "
                     "below 1/255 everywhere, and SPEC §4.6 quantises before normalising)")  # fmt: skip
        return text + (" [interrupted: rerun to resume]" if self.interrupted else "")


def load_model(path: Path, device: torch.device) -> tuple[STANet, dict[str, Any]]:
    try:
        saved = load_checkpoint(path)
    except TrainError as exc:
        raise PredictError(str(exc)) from exc
    try:
        model = build_sta(saved["model_settings"], random_init=True)  # the weights come from the checkpoint
        model.load_state_dict(saved["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PredictError(f"{path}: the STA checkpoint does not fit its own settings ({exc})") from exc
    return model.to(device).eval(), saved


def run_predict(
    videos: str | Path,
    workspace: str | Path,
    config: PredictConfig,
    scheduler: SchedulerConfig | None = None,
    progress: Progress | None = None,
    on_failure: Callable[[str, str], None] | None = None,
) -> PredictSummary:
    """Predict saliency for every video of `videos`; see the module docstring.

    Under `torchrun` every process runs this: the first coordinates (decodes the inputs, creates the
    groups, marks videos complete) and each predicts its share of the segments. Otherwise the segments
    go to the dask workers of `scheduler` when it has several (or an address), else run here.
    """
    tune_allocator()
    scheduler = scheduler or SchedulerConfig()
    with Distributed.from_env(config.device) as processes:
        if scheduler.local_processes and not processes.active:
            # Both of the workers' stages, before extract's cluster (decoding the inputs) starts the
            # server with its own modules alone: predict's workers then need not import theirs each.
            from pipeline.common.scheduling import start_worker_server

            start_worker_server(PREDICT_WORKER_MODULES)
        return _run_predict(videos, Path(workspace), config, scheduler, processes,
                            progress if processes.is_main else None, on_failure)  # fmt: skip


def _run_predict(videos: str | Path, workspace: Path, config: PredictConfig, scheduler: SchedulerConfig,
                 processes: Distributed, progress: Progress | None,
                 on_failure: Callable[[str, str], None] | None) -> PredictSummary:  # fmt: skip
    began = time.perf_counter()
    progress = progress or Progress(enabled=False)
    checkpoint = find_checkpoint(workspace, config.checkpoint)
    summary = PredictSummary(store=str(pred_store.SCHEMA.path(workspace)), checkpoint=str(checkpoint),
                             rank=processes.rank)
    plan: _Plan | None = None
    if processes.is_main:
        plan = _prepare(videos, workspace, config, scheduler, checkpoint, summary, progress, on_failure)
    if processes.active:  # every process learns the segments (None: nothing to predict, stop)
        plan_segments = processes.broadcast(None if plan is None else plan.segments)
    else:
        plan_segments = None if plan is None else plan.segments
    if plan_segments is None:
        summary.seconds = time.perf_counter() - began
        return summary
    try:
        if processes.active:
            mine = predict_segments(plan_segments[processes.rank :: processes.world_size],
                                    str(processes.device(config.device)))  # fmt: skip
            outcomes = processes.gather(mine)
            if plan is not None:
                for outcome in outcomes:
                    plan.finish(outcome, summary)
        elif plan is not None:
            _run_segments(plan, scheduler, summary)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if plan is not None:
            plan.close()
    summary.seconds = time.perf_counter() - began
    return summary


def _run_segments(plan: _Plan, scheduler: SchedulerConfig, summary: PredictSummary) -> None:
    """The segments on the dask workers of `scheduler` when it has several (or an address), else here."""
    if not plan.segments:
        return
    if scheduler.workers <= 1 and not scheduler.address:
        for segment in plan.segments:
            plan.finish(predict_segment(segment), summary)
        return
    from distributed import KilledWorker, as_completed

    from pipeline.common.scheduling import WORKER_DIED, dask_client

    with dask_client(scheduler, worker_modules=PREDICT_WORKER_MODULES) as client:
        # A worker that dies takes its tasks with it; the scheduler runs them again on another worker.
        futures = client.map(predict_segment, plan.segments, pure=False)
        segments = {future.key: segment for future, segment in zip(futures, plan.segments)}
        for future in as_completed(futures, loop=client.loop):
            try:
                outcome = future.result()
            except KilledWorker:  # it killed every worker that ran it: its video fails, the others go on
                outcome = SegmentOutcome(segments[future.key], failure=WORKER_DIED, input_changed=True)
            plan.finish(outcome, summary)


def _prepare(videos: str | Path, workspace: Path, config: PredictConfig, scheduler: SchedulerConfig,
             checkpoint: Path, summary: PredictSummary, progress: Progress,
             on_failure: Callable[[str, str], None] | None) -> _Plan | None:  # fmt: skip
    """Decode the inputs, create the groups of the videos to predict, and plan their segments (the
    coordinating process only). None when the decoding was interrupted."""
    report = on_failure or (lambda path, reason: None)
    device = resolve_device(config.device)
    model, saved = load_model(checkpoint, device)
    checkpoint_sha = sha256_file(checkpoint)
    remember_model(checkpoint, checkpoint_sha, device, model, saved)
    store = pred_store.SCHEMA.path(workspace)
    records = discover(videos, require_labels=False).records

    decoded_path = features_path(workspace)
    extracted = run_extract(videos, workspace, extract_config_for(workspace, saved), scheduler, progress, on_failure,
                            store=decoded_path, require_labels=False)  # fmt: skip
    summary.failed += extracted.failed
    summary.failures += extracted.failures
    if extracted.interrupted:
        summary.interrupted = True
        return None

    features = fstore.SCHEMA.open_for_reading(decoded_path)
    complete = set(fstore.SCHEMA.complete_videos(features))
    root = pred_store.SCHEMA.open_for_writing(store)
    recorded = pred_store.SCHEMA.read_store(root)
    pred_store.SCHEMA.update_store(
        root, checkpoint=str(checkpoint.resolve()), checkpoint_sha256=checkpoint_sha,
        settings=output_settings(config, MAPS), config=jsonable(config), features_store=str(decoded_path),
    )  # fmt: skip
    failures = recorded.failures
    for failure in extracted.failures:
        failures[failure["video_id"]] = {"path": failure["path"], "reason": failure["reason"],
                                         "input": file_stamp(failure["path"])}  # fmt: skip
    failed_now = {f["video_id"] for f in extracted.failures}
    todo = [r for r in records if r.video_id in complete and r.video_id not in failed_now]
    context = _Context(model, saved, checkpoint_sha, config, device, workspace, features, decoded_path, root)
    plan = _Plan(context, checkpoint, store, failures, progress, report)
    progress.start(len(todo))
    try:
        for record in todo:
            plan.add(record, summary)
    except KeyboardInterrupt:
        summary.interrupted = True
        plan.close()
        return None
    return plan


@dataclass
class _Context:
    """What every video's prediction uses."""

    model: STANet
    saved: dict[str, Any]  # the checkpoint (its settings)
    checkpoint_sha: str
    config: PredictConfig
    device: torch.device
    workspace: Path
    features: Any  # the predict features store's root group
    features_path: Path
    root: Any  # the predictions store's root group


@dataclass
class _Pending:
    """A video whose segments are out: what its completion needs."""

    record: VideoRecord
    fingerprint: str
    n_frames: int
    segments_left: int
    empty_maps: int = 0
    failure: str | None = None
    input_changed: bool = False


class _Plan:
    """The coordinator's side of a run: the videos to predict, their segments, and what happens when a
    segment comes back (the video is marked complete, or failed, once all of its segments are in)."""

    def __init__(self, context: _Context, checkpoint: Path, store: Path, failures: dict[str, Any], progress: Progress,
                 report: Callable[[str, str], None]) -> None:  # fmt: skip
        self.context, self.checkpoint, self.store = context, checkpoint, store
        self.failures, self.progress, self.report = failures, progress, report
        self.segments: list[Segment] = []
        self.pending: dict[str, _Pending] = {}

    def add(self, record: VideoRecord, summary: PredictSummary) -> None:
        """Skip a complete video (making its overlay if wanted), or create its group and plan its segments."""
        context, config = self.context, self.context.config
        video_id = record.video_id
        decoded = fstore.SCHEMA.read_video(context.features, video_id)
        assert decoded is not None
        n_frames = decoded.n_frames
        source_hw = (decoded.source_height, decoded.source_width)
        if n_frames < MIN_CONTEXT_FRAMES:
            summary.short_videos[video_id] = n_frames
        fingerprint = maps_fingerprint(context.checkpoint_sha, config, str(decoded.fingerprint))
        attrs = pred_store.SCHEMA.read_video(context.root, video_id)
        state = predicted_video_state(video_id, attrs, fingerprint, replace(config, overlay=False), False, {}, None,
                                      None)  # fmt: skip
        if state.state == COMPLETE:
            assert attrs is not None
            summary.skipped += 1
            summary.frames += n_frames
            summary.empty_maps += attrs.empty_maps
            self._overlay(record, summary)
            self.failures.pop(video_id, None)
            self.progress.advance_video()
            return
        self.progress.add_frames(n_frames)
        overlay_path(context.workspace, video_id).unlink(missing_ok=True)  # stale: the maps change
        video = pred_store.PredictionsVideo(
            source_path=decoded.source_path, source_sha256=decoded.source_sha256, fps=decoded.fps,
            n_frames=n_frames, height=source_hw[0], width=source_hw[1], features_settings=decoded.settings,
            checkpoint_sha256=context.checkpoint_sha, short_video=n_frames < MIN_CONTEXT_FRAMES,
        )  # fmt: skip
        group = pred_store.SCHEMA.create_video(context.root, video_id, video,
                                               pred_store.array_shapes(n_frames, *source_hw))  # fmt: skip
        reader = fstore.VideoReader(context.features_path, video_id)
        group[pred_store.TIMES.name][:] = reader.read(fstore.TIMES.name, 0, n_frames)
        bounds = segment_bounds(n_frames, config.batch_size, config.segment_frames)
        self.pending[video_id] = _Pending(record, fingerprint, n_frames, len(bounds))
        self.segments += [
            Segment(video_id, start, stop, decoded.has_audio, source_hw, str(self.checkpoint), context.checkpoint_sha,
                    str(context.features_path), str(self.store), config, held_fence(self.store))
            for start, stop in bounds
        ]  # fmt: skip
        if not bounds:  # no frame: complete as it is
            self._complete(self.pending.pop(video_id), summary)

    def finish(self, outcome: SegmentOutcome, summary: PredictSummary) -> None:
        """One segment is back: a video whose last segment it was is marked complete (or failed)."""
        pending = self.pending[outcome.segment.video_id]
        pending.segments_left -= 1
        pending.empty_maps += outcome.empty_maps
        if outcome.failure is not None and pending.failure is None:
            pending.failure, pending.input_changed = outcome.failure, outcome.input_changed
        self.progress.advance_frames(outcome.segment.stop - outcome.segment.start)
        if pending.segments_left == 0:
            del self.pending[outcome.segment.video_id]
            self._complete(pending, summary)

    def _complete(self, pending: _Pending, summary: PredictSummary) -> None:
        record = pending.record
        if pending.failure is not None:
            summary.failed += 1
            summary.failures.append({"video_id": record.video_id, "path": str(record.path), "reason": pending.failure})
            stamp = file_stamp(record.path) if pending.input_changed else "damaged"
            self.failures[record.video_id] = {"path": str(record.path), "reason": pending.failure, "input": stamp}
            self.report(str(record.path), pending.failure)
        else:
            group = zarr_io.video_group(self.context.root, record.video_id)
            pred_store.write_has_saliency(group, no_missing_maps(pending.n_frames))
            pred_store.SCHEMA.mark_complete(group, pending.fingerprint, self.context.config.ALGORITHM_VERSION,
                                            empty_maps=pending.empty_maps)  # fmt: skip
            summary.empty_maps += pending.empty_maps
            summary.done += 1
            summary.frames += pending.n_frames
            self.failures.pop(record.video_id, None)
            self._overlay(record, summary)
        self.progress.advance_video()

    def _overlay(self, record: VideoRecord, summary: PredictSummary) -> None:
        context, config = self.context, self.context.config
        video_id = record.video_id
        if not config.overlay:
            return
        try:
            attrs = pred_store.SCHEMA.read_video(context.root, video_id)
            maps = maps_fingerprint(context.checkpoint_sha, config, self._features_fingerprint(video_id))
            wanted = overlay_fingerprint(maps, config)
            overlay = overlay_path(context.workspace, video_id)
            if overlay.exists() and attrs.overlay_fingerprint == wanted:
                return
            write_overlay(
                attrs.source_path, overlay, attrs.features_settings.get("fps"), attrs.n_frames,
                lambda start, stop: pred_store.read_saliency(context.root, video_id, start, stop)[0],
                alpha=config.overlay_alpha, colormap=config.colormap,
            )  # fmt: skip
            pred_store.SCHEMA.update_video(zarr_io.video_group(context.root, video_id), overlay_fingerprint=wanted)
            summary.overlays += 1
        except media.MediaError as exc:
            self._overlay_failed(record, str(exc), summary)
        except OSError as exc:
            self._overlay_failed(record, f"{type(exc).__name__}: {exc}", summary)

    def _features_fingerprint(self, video_id: str) -> str:
        decoded = fstore.SCHEMA.read_video(self.context.features, video_id)
        assert decoded is not None
        return str(decoded.fingerprint)

    def _overlay_failed(self, record: VideoRecord, reason: str, summary: PredictSummary) -> None:
        summary.failed += 1
        summary.failures.append({"video_id": record.video_id, "path": str(record.path), "reason": reason})
        self.failures[record.video_id] = {"path": str(record.path), "reason": reason, "input": file_stamp(record.path)}
        self.report(str(record.path), reason)

    def close(self) -> None:
        pred_store.SCHEMA.update_store(self.context.root, failures=self.failures)
        zarr_io.consolidate(self.store)


@torch.no_grad()
def predict_frames(model: STANet, reader: fstore.VideoReader, start: int, stop: int, has_audio: bool,
                   saved: dict[str, Any], source_hw: tuple[int, int], config: PredictConfig,
                   device: torch.device) -> np.ndarray:  # fmt: skip
    """uint8 maps (stop − start, H, W) at the source size for frames [start, stop) of one video."""
    n_frames = reader.n_frames
    first = max(start - 1, 0)
    block = reader.read(fstore.FRAMES.name, first, stop + 1)
    t = np.arange(start, stop)
    neighbours = np.clip(t[:, None] + np.array([-1, 0, 1]), 0, n_frames - 1) - first  # clamped at the ends
    size = int(saved["model_settings"]["input_size"])
    frames = resize_frames(torch.from_numpy(block[neighbours]).to(device), size)
    audio = torch.from_numpy(reader.read(fstore.AUDIO.name, start, stop).astype(np.float32)).to(device)
    has = torch.full((stop - start,), has_audio, dtype=torch.bool, device=device)
    flow = None
    if model.flow_encoder is not None:
        stored = torch.from_numpy(reader.read(fstore.FLOW.name, start, stop).astype(np.float32)).to(device)
        flow = resize_flow(stored, tuple(block.shape[1:3]), size)  # type: ignore[arg-type]
    with autocast(device, config.amp):
        output = model(frames, audio, has, None, flow)
    probability = torch.sigmoid(output.saliency_logits.float())
    return postprocess_saliency(probability, source_hw, config.blur_sigma).cpu().numpy()
