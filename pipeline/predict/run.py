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
from pipeline.common import media
from pipeline.common.files import file_stamp, sha256_file
from pipeline.common.inputs import discover
from pipeline.common.progress import Progress
from pipeline.common.scheduling import SchedulerConfig
from pipeline.common.settings import jsonable, output_settings
from pipeline.extract.run import run_extract
from pipeline.predict.config import MAPS, PredictConfig
from pipeline.predict.overlay import write_overlay
from pipeline.predict.stage import (
    PredictError, extract_config_for, features_path, find_checkpoint, maps_fingerprint, overlay_fingerprint,
    overlay_path, predicted_video_state,
)  # fmt: skip
from pipeline.stage import COMPLETE, VideoCounts
from pipeline.train.augment import resize_flow, resize_frames
from pipeline.train.checkpoints import load_checkpoint
from pipeline.train.config import TrainError
from pipeline.train.model import build_sta
from stores import features as fstore
from stores import predictions as pred_store
from stores import zarr_io
from stores.chunks import ChunkError
from stores.integrity import mark_damaged
from stores.records import VideoRecord

log = logging.getLogger(__name__)

MIN_CONTEXT_FRAMES = 3  # t−1, t, t+1


@dataclass(kw_only=True)
class PredictSummary(VideoCounts):
    checkpoint: str = ""
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
    """Predict saliency for every video of `videos`; see the module docstring."""
    began = time.perf_counter()
    workspace = Path(workspace)
    progress = progress or Progress(enabled=False)
    report = on_failure or (lambda path, reason: None)
    device = resolve_device(config.device)
    checkpoint = find_checkpoint(workspace, config.checkpoint)
    model, saved = load_model(checkpoint, device)
    checkpoint_sha = sha256_file(checkpoint)
    store = pred_store.SCHEMA.path(workspace)
    summary = PredictSummary(store=str(store), checkpoint=str(checkpoint))
    records = discover(videos, require_labels=False).records

    decoded_path = features_path(workspace)
    extracted = run_extract(videos, workspace, extract_config_for(workspace, saved), scheduler or SchedulerConfig(),
                            progress, on_failure, store=decoded_path, require_labels=False)  # fmt: skip
    summary.failed += extracted.failed
    summary.failures += extracted.failures
    if extracted.interrupted:
        summary.interrupted = True
        summary.seconds = time.perf_counter() - began
        return summary

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
    progress.start(len(todo))

    def fail(record: VideoRecord, reason: str, input_stamp: Any) -> None:
        summary.failed += 1
        summary.failures.append({"video_id": record.video_id, "path": str(record.path), "reason": reason})
        failures[record.video_id] = {"path": str(record.path), "reason": reason, "input": input_stamp}
        report(str(record.path), reason)

    try:
        for record in todo:
            try:
                _predict_video(context, record.video_id, summary, progress)
                failures.pop(record.video_id, None)
            except ChunkError as exc:  # its decoded frames are damaged: decoded again on the next run
                fail(record, f"{exc}; {mark_damaged(exc)}", "damaged")
            except media.MediaError as exc:
                fail(record, str(exc), file_stamp(record.path))
            except OSError as exc:  # this video's input or output; any other exception is a bug
                fail(record, f"{type(exc).__name__}: {exc}", file_stamp(record.path))
            progress.advance_video()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        progress.close()
        pred_store.SCHEMA.update_store(root, failures=failures)
        zarr_io.consolidate(store)
    summary.seconds = time.perf_counter() - began
    return summary


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


def _predict_video(context: _Context, video_id: str, summary: PredictSummary, progress: Progress) -> None:
    config, root = context.config, context.root
    decoded = fstore.SCHEMA.read_video(context.features, video_id)
    assert decoded is not None
    n_frames = decoded.n_frames
    source_hw = (decoded.source_height, decoded.source_width)
    if n_frames < MIN_CONTEXT_FRAMES:
        summary.short_videos[video_id] = n_frames
    fingerprint = maps_fingerprint(context.checkpoint_sha, config, str(decoded.fingerprint))
    overlay = overlay_path(context.workspace, video_id)
    attrs = pred_store.SCHEMA.read_video(root, video_id)
    state = predicted_video_state(video_id, attrs, fingerprint, replace(config, overlay=False), False, {}, None, None)
    group = zarr_io.video_group(root, video_id)
    if state.state == COMPLETE:
        assert attrs is not None and group is not None
        summary.skipped += 1
        summary.frames += n_frames
        summary.empty_maps += attrs.empty_maps
    else:
        progress.add_frames(n_frames)
        overlay.unlink(missing_ok=True)  # stale: the maps change
        video = pred_store.PredictionsVideo(
            source_path=decoded.source_path, source_sha256=decoded.source_sha256, fps=decoded.fps,
            n_frames=n_frames, height=source_hw[0], width=source_hw[1], features_settings=decoded.settings,
            checkpoint_sha256=context.checkpoint_sha, short_video=n_frames < MIN_CONTEXT_FRAMES,
        )  # fmt: skip
        group = pred_store.SCHEMA.create_video(root, video_id, video, pred_store.array_shapes(n_frames, *source_hw))
        reader = fstore.VideoReader(context.features_path, video_id)
        group[pred_store.TIMES.name][:] = reader.read(fstore.TIMES.name, 0, n_frames)
        empty = 0
        for start in range(0, n_frames, config.batch_size):
            stop = min(start + config.batch_size, n_frames)
            maps = predict_frames(context.model, reader, start, stop, decoded.has_audio, context.saved,
                                  source_hw, config, context.device)  # fmt: skip
            pred_store.write_frames(group, start, maps, np.ones(stop - start, dtype=bool))
            empty += int((maps.reshape(maps.shape[0], -1).max(axis=1) == 0).sum())
            progress.advance_frames(stop - start)
        pred_store.SCHEMA.mark_complete(group, fingerprint, config.ALGORITHM_VERSION, empty_maps=empty)
        summary.empty_maps += empty
        summary.done += 1
        summary.frames += n_frames
    wanted = overlay_fingerprint(fingerprint, config)
    attrs = pred_store.SCHEMA.read_video(root, video_id)
    if config.overlay and (not overlay.exists() or attrs.overlay_fingerprint != wanted):
        write_overlay(
            decoded.source_path, overlay, decoded.settings.get("fps"), n_frames,
            lambda start, stop: pred_store.read_saliency(root, video_id, start, stop)[0],
            alpha=config.overlay_alpha, colormap=config.colormap,
        )  # fmt: skip
        pred_store.SCHEMA.update_video(group, overlay_fingerprint=wanted)
        summary.overlays += 1


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
