"""The extract stage: tagged videos → features.zarr (frames, optical flow, per-frame audio windows).

Work is split into tasks that dask runs anywhere: one *probe* per video (index the timestamps, hash the
source) and one *segment* task per run of frames of a video (decode after a seek, resize, flow, audio
features, write). Segments start on chunk boundaries, so workers never write the same chunk. This
process alone creates groups, writes attributes and marks a video complete, after all its segments
have been written; a rerun skips complete videos whose source and settings are unchanged, and resumes
a half-done video at its first unwritten segment.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from distributed import Client, KilledWorker, as_completed

from pipeline.common.allocator import tune_allocator
from pipeline.common import media
from pipeline.common.audio_features import (
    HOP, N_FFT, SAMPLE_RATE, AudioWindowConfig, frame_audio_features, resample_to_16k,
)  # fmt: skip
from pipeline.common.files import file_stamp, sha256_file
from pipeline.common.flow import FlowComputer
from pipeline.common.inputs import InputSet, discover
from pipeline.common.progress import Progress
from pipeline.common.read_ahead import read_ahead
from pipeline.common.scheduling import WORKER_DIED, SchedulerConfig, dask_client
from pipeline.common.settings import jsonable, output_settings
from pipeline.extract.config import ExtractConfig
from pipeline.extract.stage import EXTRACT_TASKS, extracted_video_state, video_fingerprint
from pipeline.stage import COMPLETE, VideoCounts
from stores import features as fstore
from stores import zarr_io
from stores.fencing import Fence, fenced
from stores.lock import StoreLock, held_fence
from stores.records import VideoRecord

log = logging.getLogger(__name__)

AUDIO_MARGIN_S = 0.1  # decoded on each side of a segment so resampling has no edge effects inside it


# --- tasks (run on dask workers; arguments and results are small and picklable) ---------------


@dataclass(frozen=True)
class SourceStat:
    size: int
    mtime_ns: int
    sha256: str = ""


@dataclass
class ProbeOutcome:
    record: VideoRecord
    probe: media.MediaProbe | None = None
    stat: SourceStat | None = None
    error: str | None = None


@dataclass
class SegmentOutcome:
    video_id: str
    start: int
    n_frames: int
    seconds: float
    error: str | None = None


def probe_task(record: VideoRecord, config: ExtractConfig) -> ProbeOutcome:
    path = Path(record.path)
    try:
        if not path.exists():
            raise media.MediaError("no such file")
        if path.is_dir():
            raise media.MediaError("is a folder, not a video file")
        if not os.access(path, os.R_OK):
            raise media.MediaError("cannot read the file (permission denied)")
        st = path.stat()
        stat = SourceStat(size=st.st_size, mtime_ns=st.st_mtime_ns)
        if stat.size == 0:
            raise media.MediaError("empty file (0 bytes)")
        found = media.probe(path)
        n_out = media.target_times(found, config.fps).size
        if n_out < config.min_frames:
            raise media.MediaError(f"only {n_out} frame(s) at the chosen rate (need at least {config.min_frames})")
        stat = SourceStat(stat.size, stat.mtime_ns, sha256_file(path))
        return ProbeOutcome(record, found, stat)
    except media.MediaError as exc:
        return ProbeOutcome(record, error=str(exc))
    except OSError as exc:  # the file could not be read; any other exception is a bug and stops the run
        return ProbeOutcome(record, error=f"cannot read: {exc.strerror or exc}")


def segment_task(
    store: str, video_id: str, probe_: media.MediaProbe, start: int, stop: int, config: ExtractConfig,
    fence: Fence | None = None,
) -> SegmentOutcome:
    """`fence`: the coordinator's hold of the store's lock; the segment stops writing once it is lost."""
    tune_allocator()  # a worker of a cluster avfix did not start
    began = time.perf_counter()
    try:
        with fenced(fence):
            _extract_segment(store, video_id, probe_, start, stop, config)
        return SegmentOutcome(video_id, start, stop - start, time.perf_counter() - began)
    except media.MediaError as exc:
        return SegmentOutcome(video_id, start, 0, time.perf_counter() - began, str(exc))
    except OSError as exc:  # reading the source or writing the store failed; anything else is a bug
        return SegmentOutcome(video_id, start, 0, time.perf_counter() - began, f"{type(exc).__name__}: {exc}")


def _limit_threads(threads: int) -> None:
    if threads > 0:
        cv2.setNumThreads(threads)
        torch.set_num_threads(threads)


def _extract_segment(
    store: str, video_id: str, probe_: media.MediaProbe, start: int, stop: int, config: ExtractConfig
) -> None:
    _limit_threads(config.cpu_threads)
    times = media.target_times(probe_, config.fps)
    out_wh = media.output_size(probe_.width, probe_.height, config.size, config.keep_aspect)
    arrays = fstore.open_video_arrays(store, video_id)
    flow = FlowComputer(config.flow, out_wh) if config.flow.method == "dis" else None
    # The frame before the segment is decoded too, so the segment's first flow is real.
    first = start - 1 if (start > 0 and flow is not None) else start
    decoder_threads = config.decoder_threads or config.cpu_threads
    grid_w, grid_h = config.flow.stored_grid(*out_wh)
    # Three threads overlap, each releasing the GIL in its heavy part: decoding and scaling run ahead in
    # one, flow and audio features run in this one, compressing and writing the previous chunk in a
    # third. Two chunks read ahead and one write in flight bound memory at a few chunks. Decoding starts
    # first, so it runs while this thread decodes the segment's audio.
    frames = read_ahead(
        lambda: media.decode_frames(probe_, times[first:stop], out_wh, decoder_threads), depth=2 * fstore.CHUNK_T
    )
    with closing(frames), ThreadPoolExecutor(max_workers=1) as writer:
        audio = _SegmentAudio(probe_, times, start, stop, config.audio) if probe_.has_audio else None
        if first < start:
            assert flow is not None
            flow.prime(next(frames))
        # Two sets of chunk buffers, filled in turn: the writer reads one while this thread fills the
        # other. Fresh 6 MB arrays per chunk cost a page fault per 4 KiB (the kernel zeroing each page)
        # on top of the copy.
        width, height = out_wh
        rgb_buffers = [np.empty((fstore.CHUNK_T, height, width, 3), dtype=np.uint8) for _ in range(2)]
        motion_buffers = [np.zeros((fstore.CHUNK_T, 2, grid_h, grid_w), dtype=np.float32) for _ in range(2)]
        pending: Future | None = None
        for k, chunk_start in enumerate(range(start, stop, fstore.CHUNK_T)):
            n = min(chunk_start + fstore.CHUNK_T, stop) - chunk_start
            rgb, motion = rgb_buffers[k % 2][:n], motion_buffers[k % 2][:n]
            for i in range(n):
                rgb[i] = next(frames)
            if flow is not None:
                for i in range(n):
                    flow.next(rgb[i], out=motion[i])
            spectra = audio.features(chunk_start, chunk_start + n) if audio is not None else None
            if pending is not None:
                pending.result()  # the writer is done with the other buffers
            # In this thread's context: the writer checks this job's fence.
            pending = writer.submit(contextvars.copy_context().run, fstore.write_segment, arrays, chunk_start, rgb,
                                    motion, spectra)  # fmt: skip
        if pending is not None:
            pending.result()


class _SegmentAudio:
    """The 16 kHz mono signal around one segment, decoded once, windowed per chunk."""

    def __init__(
        self, probe_: media.MediaProbe, times: np.ndarray, start: int, stop: int, config: AudioWindowConfig
    ) -> None:
        self.times = times
        self.config = config
        begin = times[start] - AUDIO_MARGIN_S
        end = times[stop - 1] + config.seconds + AUDIO_MARGIN_S
        samples, self.signal_start, rate = media.decode_audio_mono(probe_, begin, end)
        self.signal = resample_to_16k(samples, rate)

    def features(self, start: int, stop: int) -> np.ndarray:
        return frame_audio_features(self.signal, self.signal_start, self.times[start:stop], self.config)


# --- coordination ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class ExtractSummary(VideoCounts):
    frames_written: int = 0
    # Seconds the workers spent in segment tasks, summed over workers: frames_written / segment_seconds
    # is one worker's rate once it runs, without start-up (worker processes importing torch) or tail.
    segment_seconds: float = 0.0

    def line(self) -> str:
        rate = self.frames_written / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"extract: {self.done} done, {self.skipped} skipped, {self.failed} failed "
            f"({self.frames_written} frames in {self.seconds:.1f} s, {rate:.0f} frames/s) -> {self.store}"
        )
        text += f"; {self.error}" if self.error else ""
        return text + (" [interrupted: rerun to resume]" if self.interrupted else "")


def video_shape(probe_: media.MediaProbe, config: ExtractConfig) -> fstore.VideoShape:
    width, height = media.output_size(probe_.width, probe_.height, config.size, config.keep_aspect)
    flow_w, flow_h = config.flow.stored_grid(width, height)
    n_freq, n_time = config.audio.shape
    return fstore.VideoShape(
        n_frames=int(media.target_times(probe_, config.fps).size),
        height=height,
        width=width,
        flow_height=flow_h,
        flow_width=flow_w,
        n_freq=n_freq,
        n_time=n_time,
    )


def segment_bounds(
    times: np.ndarray, keyframe_times: np.ndarray, segment_frames: int, chunk: int = fstore.CHUNK_T
) -> list[tuple[int, int]]:
    """(start, stop) of the segments of output frames at `times`: on chunk boundaries, at least
    `segment_frames` long (bar the last), cut just after keyframes where one is near.

    A segment's decoder seeks to the keyframe at or before the frame preceding its start (decoded to
    prime the flow) and decodes from there. Cut on the first chunk boundary past a keyframe, that costs
    at most a chunk of frames decoded for nothing; cut anywhere else it costs up to a keyframe interval
    (x264 defaults: 250 frames, half of a 512-frame segment). Without a keyframe within a segment's
    length of the plain cut (or in files that cannot seek), the plain cut stands.
    """
    n_frames = int(times.size)
    first_at = np.searchsorted(times, keyframe_times - media.TIME_EPS)  # first output frame showing it
    cuts = np.unique(-(-(first_at + 1) // chunk) * chunk)  # + 1: the primer frame comes after it too
    starts = [0]
    while starts[-1] + segment_frames < n_frames:
        plain = starts[-1] + segment_frames
        near = cuts[(cuts >= plain) & (cuts < min(plain + segment_frames, n_frames))]
        starts.append(int(near[0]) if near.size else plain)
    return list(zip(starts, starts[1:] + [n_frames]))


def _audio_axes(config: AudioWindowConfig) -> tuple[np.ndarray, np.ndarray]:
    n_freq, n_time = config.shape
    freqs = np.arange(n_freq, dtype=np.float32) * SAMPLE_RATE / N_FFT
    seg_times = (np.arange(n_time, dtype=np.float32) * HOP + N_FFT / 2) / SAMPLE_RATE
    return freqs, seg_times


class _VideoJob:
    """The coordinator's book-keeping for one video being written."""

    def __init__(self, record: VideoRecord, outcome: ProbeOutcome, fingerprint: str, n_frames: int) -> None:
        self.record = record
        self.outcome = outcome
        self.fingerprint = fingerprint
        self.n_frames = n_frames
        self.pending: set[int] = set()
        self.bounds: dict[int, int] = {}  # segment start → stop
        self.done_segments: list[int] = []
        self.error: str | None = None
        # The video's group, kept open: looking it up again costs a store read per segment.
        self.group: Any = None


def _prepare_video(root: Any, outcome: ProbeOutcome, config: ExtractConfig) -> tuple[_VideoJob, list[int]]:
    """Preallocate (or reuse a half-written) group; return the job and the segment starts still to do."""
    assert outcome.probe is not None and outcome.stat is not None
    record, probe_ = outcome.record, outcome.probe
    shape = video_shape(probe_, config)
    fingerprint = video_fingerprint(config, outcome.stat.sha256)
    job = _VideoJob(record, outcome, fingerprint, shape.n_frames)
    times = media.target_times(probe_, config.fps)
    job.bounds = dict(segment_bounds(times, probe_.keyframe_times, config.segment_frames))
    starts = sorted(job.bounds)
    group = zarr_io.video_group(root, record.video_id)
    attrs = None if group is None else fstore.SCHEMA.read_group(group)
    if attrs is not None and attrs.status == zarr_io.STATUS_IN_PROGRESS and attrs.pending_fingerprint == fingerprint:
        # Pairs, so a segment counts only when cut the same way (how cuts are chosen may change).
        done = {tuple(pair) for pair in attrs.segments_done if isinstance(pair, list)}
        job.done_segments = sorted(s for s in starts if (s, job.bounds[s]) in done)
        job.group = group
        return job, [s for s in starts if s not in job.done_segments]
    video = fstore.FeaturesVideo(
        label=record.label, source_path=str(Path(record.path).resolve()), source_size=outcome.stat.size,
        source_name=record.source_name or Path(record.path).name,
        source_mtime_ns=outcome.stat.mtime_ns, source_sha256=outcome.stat.sha256, source_codec=probe_.codec,
        source_width=probe_.width, source_height=probe_.height, source_fps=probe_.native_fps,
        source_frames=probe_.n_source_frames, source_audio_rate=probe_.audio_rate,
        source_audio_channels=probe_.audio_channels, fps=config.fps or probe_.mean_fps, n_frames=shape.n_frames,
        width=shape.width, height=shape.height, has_audio=probe_.has_audio, settings=output_settings(config),
    )  # fmt: skip
    frames = config.frames
    encodings = fstore.encodings(frames.codec, frames.quality, frames.subsampling, config.flow.step)
    group = fstore.SCHEMA.create_video(root, record.video_id, video, shape.array_shapes(), encodings)
    fstore.write_axes(group, times - times[0], *_audio_axes(config.audio))
    # Only now, with every array and axis in place, may a rerun resume this group rather than remake it.
    fstore.SCHEMA.update_video(group, pending_fingerprint=fingerprint)
    job.group = group
    return job, starts


def run_extract(
    source: str | Path,
    workspace: str | Path,
    config: ExtractConfig,
    scheduler: SchedulerConfig,
    progress: Progress | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    store: str | Path | None = None,
    require_labels: bool = True,
) -> ExtractSummary:
    """Extract every video of `source` into `workspace/features.zarr` (or `store`); see the module docstring.

    `require_labels=False` accepts untagged inputs (predict): a single file, a flat folder, a manifest
    without `label`.
    """
    began = time.perf_counter()
    tune_allocator()
    inputs: InputSet = discover(source, require_labels)
    store = Path(store) if store is not None else fstore.SCHEMA.path(workspace)
    Path(workspace).mkdir(parents=True, exist_ok=True)
    with StoreLock(store):
        return _extract_all(inputs, store, config, scheduler, progress, on_failure, began)


def _extract_all(inputs: InputSet, store: Path, config: ExtractConfig, scheduler: SchedulerConfig,
                 progress: Progress | None, on_failure: Callable[[str, str], None] | None,
                 began: float) -> ExtractSummary:  # fmt: skip
    root = fstore.SCHEMA.open_for_writing(store)
    recorded = fstore.SCHEMA.read_store(root)
    classes = sorted(set(recorded.classes) | set(inputs.classes))
    fstore.SCHEMA.update_store(root, classes=classes, settings=output_settings(config), config=jsonable(config))
    summary = ExtractSummary(store=str(store))
    progress = progress or Progress(enabled=False)
    failures = recorded.failures
    report = on_failure or (lambda path, reason: None)

    def fail(video_id: str, path: str, reason: str, key: str | None = None) -> None:
        summary.failed += 1
        # The input's stamp: `avfix run` does not retry a failure whose file did not change.
        failures[key or video_id] = {"path": path, "reason": reason, "input": file_stamp(path)}
        summary.failures.append({"video_id": video_id, "path": path, "reason": reason})
        report(path, reason)
        progress.advance_video()

    progress.start(n_videos=len(inputs.records) + len(inputs.problems))
    for problem in inputs.problems:
        # Recorded by its file: it took no id, and a good input may hold the same one (clip.wav, clip.mp4).
        fail(problem.video_id, problem.path, problem.reason, key=problem.path)

    todo = []
    for record in inputs.records:
        state = extracted_video_state(record, fstore.SCHEMA.read_video(root, record.video_id), config, None)
        if state.state == COMPLETE:
            summary.skipped += 1
            failures.pop(record.video_id, None)
            progress.advance_video()
        else:
            todo.append(record)

    try:
        if todo:  # a cluster (worker processes and their server, which imports torch) only when there is work
            with dask_client(scheduler, worker_modules=(EXTRACT_TASKS,)) as client:
                _run_tasks(client, root, str(store), todo, config, summary, failures, fail, progress)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        progress.close()
        try:
            fstore.SCHEMA.update_store(root, failures=failures)
            zarr_io.consolidate(store)
        except OSError as exc:  # e.g. the disk filled up: the videos' own records stand, a rerun redoes the rest
            summary.error = f"could not record the run in {store}: {exc.strerror or exc}"
    summary.seconds = time.perf_counter() - began
    return summary


def _run_tasks(
    client: Client,
    root: Any,
    store: str,
    records: list[VideoRecord],
    config: ExtractConfig,
    summary: ExtractSummary,
    failures: dict[str, dict[str, str]],
    fail: Callable[[str, str, str], None],
    progress: Progress,
) -> None:
    jobs: dict[str, _VideoJob] = {}
    probes = client.map(probe_task, records, config=config, pure=False)
    owners = {future.key: record for future, record in zip(probes, records)}  # whose video each task works on
    futures = as_completed(probes, loop=client.loop)
    try:
        for future in futures:
            try:
                result = future.result()
            except KilledWorker:  # e.g. a decoder crashed each worker that tried: this video fails
                record = owners[future.key]
                _fail_video(jobs, record.video_id, str(record.path), WORKER_DIED, fail)
                continue
            try:
                if isinstance(result, ProbeOutcome):
                    _on_probe(client, futures, owners, root, store, result, config, jobs, summary, failures, fail,
                              progress)  # fmt: skip
                else:
                    _on_segment(root, result, jobs, summary, failures, fail, progress)
            except OSError as exc:  # the store could not be written (disk full, read-only, ...): this video fails
                _fail_job(jobs, result, f"cannot write {store}: {exc.strerror or exc}", fail)
    except BaseException:
        for future in list(futures.futures):
            future.cancel()
        raise


def _fail_video(jobs: dict[str, _VideoJob], video_id: str, path: str, reason: str,
                fail: Callable[[str, str, str], None]) -> None:  # fmt: skip
    """The video fails once, for `reason`; its other segments' outcomes are ignored."""
    job = jobs.get(video_id)
    if job is not None and job.error is not None:
        return
    if job is not None:
        job.error = reason
    fail(video_id, path, reason)


def _fail_job(jobs: dict[str, _VideoJob], result: ProbeOutcome | SegmentOutcome, reason: str,
              fail: Callable[[str, str, str], None]) -> None:  # fmt: skip
    """A video's bookkeeping write failed: it fails once, and its other segments are ignored."""
    video_id = result.record.video_id if isinstance(result, ProbeOutcome) else result.video_id
    job = jobs.get(video_id)
    path = str(result.record.path) if isinstance(result, ProbeOutcome) else str(job.record.path if job else "")
    _fail_video(jobs, video_id, path, reason, fail)


def _on_probe(client, futures, owners, root, store, outcome, config, jobs, summary, failures, fail, progress) -> None:  # noqa: ANN001
    record = outcome.record
    if outcome.error is not None:
        fail(record.video_id, str(record.path), outcome.error)
        return
    job, starts = _prepare_video(root, outcome, config)
    jobs[record.video_id] = job
    progress.add_frames(job.n_frames)
    progress.advance_frames(job.n_frames - sum(job.bounds[s] - s for s in starts))
    if not starts:
        _finish_video(root, job, summary, failures, progress)
        return
    for start in starts:
        stop = job.bounds[start]
        job.pending.add(start)
        future = client.submit(segment_task, store, record.video_id, outcome.probe, start, stop, config,
                               held_fence(store), pure=False)  # fmt: skip
        owners[future.key] = record
        futures.add(future)


def _on_segment(root, result: SegmentOutcome, jobs, summary, failures, fail, progress) -> None:  # noqa: ANN001
    job = jobs[result.video_id]
    job.pending.discard(result.start)
    if result.error is not None:
        if job.error is None:
            job.error = result.error
            fail(job.record.video_id, str(job.record.path), result.error)
        return
    if job.error is not None:
        return
    summary.frames_written += result.n_frames
    summary.segment_seconds += result.seconds
    progress.advance_frames(result.n_frames)
    job.done_segments.append(result.start)
    # [start, stop] pairs: let an interrupted video resume
    done = [[s, job.bounds[s]] for s in sorted(job.done_segments)]
    if job.pending:
        fstore.SCHEMA.update_video(job.group, segments_done=done)
    else:  # the same attributes in the one write that marks the video complete
        _finish_video(root, job, summary, failures, progress, segments_done=done)


def _finish_video(root: Any, job: _VideoJob, summary: ExtractSummary, failures: dict, progress: Progress,
                  **changes: Any) -> None:  # fmt: skip
    """All segments are written: only now is the video marked complete (with `changes` to its attributes)."""
    group = job.group if job.group is not None else zarr_io.video_group(root, job.record.video_id)
    fstore.SCHEMA.mark_complete(group, job.fingerprint, ExtractConfig.ALGORITHM_VERSION, **changes)
    failures.pop(job.record.video_id, None)
    summary.done += 1
    progress.advance_video()
