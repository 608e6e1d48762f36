"""Media decoding with PyAV: stream choice, a timestamp index, frames at target times, audio ranges.

Frames are chosen by timestamp, never by dropping every n-th packet: output frame k shows the latest
source frame whose presentation time is at or before the k-th target time (sample and hold). The target
times are the source frames' own times (native rate) or a regular grid (`fps`).

The index pass only demuxes (no decoding), so it is cheap; it gives the exact number of output frames
before any pixel is decoded, which lets the stores preallocate and lets long videos be cut into
segments that are decoded independently after a seek.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from pipeline.common.errors import BadInput

log = logging.getLogger(__name__)

# Two timestamps closer than this are the same instant (container time bases are ≥ 1/90000 s).
TIME_EPS = 1e-6


class MediaError(BadInput):
    """A file that cannot be used, with a reason a user can act on."""


@dataclass(frozen=True)
class MediaProbe:
    """What the index pass learned about one file."""

    path: str
    video_stream: int
    audio_stream: int | None
    width: int
    height: int
    codec: str
    frame_times: np.ndarray  # presentation times (s, absolute, sorted) of every source frame
    native_fps: float
    seekable: bool  # False when some packets had no timestamp: decode such files front to back
    audio_rate: int | None
    audio_channels: int | None
    # Presentation times (s, absolute, sorted) of the keyframes, where a seek lands; empty when unseekable.
    keyframe_times: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def has_audio(self) -> bool:
        return self.audio_stream is not None

    @property
    def n_source_frames(self) -> int:
        return int(self.frame_times.size)

    @property
    def mean_fps(self) -> float:
        """The frames' average rate, (n - 1) / (last time - first time): the rate frames stored at their
        own times really have. `native_fps` (the typical gap's rate) is what a frame is shown for, and
        differs from it in variable-frame-rate files. One frame: the container's rate."""
        span = float(self.frame_times[-1] - self.frame_times[0]) if self.frame_times.size else 0.0
        if span <= TIME_EPS:
            return self.native_fps
        return (self.frame_times.size - 1) / span

    @property
    def end_time(self) -> float:
        """Time at which the last source frame stops being shown."""
        return float(self.frame_times[-1] + 1.0 / self.native_fps)


def open_container(
    path: str | Path, options: dict[str, str] | None = None, stream_options: list[dict[str, str]] | None = None
) -> av.container.InputContainer:
    """The file opened for reading; `options` and `stream_options` (FFmpeg's, by stream index) apply while
    FFmpeg probes the streams, not to the decoders opened later."""
    try:
        return av.open(str(path), mode="r", options=options or {}, stream_options=stream_options or [])
    except av.error.FileNotFoundError as exc:
        raise MediaError("no such file") from exc
    except av.error.PermissionError as exc:
        raise MediaError("cannot read the file (permission denied)") from exc
    except av.error.InvalidDataError as exc:
        raise MediaError("not a media file PyAV can read (invalid data)") from exc
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot open: {exc.strerror or exc}") from exc


def _is_cover_art(stream: av.stream.Stream) -> bool:
    disposition = getattr(stream, "disposition", None)
    return bool(disposition is not None and disposition & av.stream.Disposition.attached_pic)


def choose_streams(container: av.container.InputContainer) -> tuple[av.VideoStream, av.AudioStream | None]:
    """The video stream to use (cover art excluded) and the audio stream, by FFmpeg's "best" rule.

    Files may carry data or subtitle streams, put audio first, or have several of each: stream
    indices are never assumed.
    """
    videos = [s for s in container.streams.video if not _is_cover_art(s)]
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise MediaError(f"no video stream (streams: {', '.join(kinds)})")
    best_video = container.streams.best("video")
    video = best_video if best_video in videos else videos[0]
    audio = container.streams.best("audio") if container.streams.audio else None
    return video, audio


def _stream_rate(stream: av.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 25.0


def _open_for_probe(path: str | Path) -> av.container.InputContainer:
    """The file opened for `probe`, without decoding video frames where that cannot change what it finds.

    Opening a file decodes its first frames to learn each stream's parameters (FFmpeg's
    find_stream_info): 15 ms of CPU for 720p H.264, 0.1 ms per frame of a 5 s clip, and the probe uses
    none of what only decoding tells (pixel format, decoder delay). Which stream is "best" can depend on
    how many packets that probing read, so the quick open is kept only when there is no choice to make
    (one video stream besides cover art, at most one audio stream) and the video's frame size is known;
    anything else is opened again the usual way.
    """
    try:
        container = open_container(path, options={"skip_frame": "all", "threads": "1"})
    except MediaError:
        return open_container(path)  # raises the usual error, if any
    videos = [s for s in container.streams.video if not _is_cover_art(s)]
    if len(videos) == 1 and len(container.streams.audio) <= 1 and videos[0].codec_context.width \
            and videos[0].codec_context.height:  # fmt: skip
        return container
    container.close()
    return open_container(path)


def probe(path: str | Path) -> MediaProbe:
    """Demux the whole file once (no decoding) and index the video frames' presentation times."""
    container = _open_for_probe(path)
    try:
        video, audio = choose_streams(container)
        time_base = float(video.time_base)
        rate = _stream_rate(video)
        pts: list[int] = []
        key_pts: list[int] = []
        missing = 0
        try:
            for packet in container.demux(video):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    missing += 1
                else:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        key_pts.append(packet.pts)
        except av.error.FFmpegError as exc:
            # A truncated file ends the demux early; what was read is still indexed.
            log.info("%s: demux stopped early: %s", path, exc)
        if missing:
            times = _decoded_frame_times(path, rate)
            seekable = False
            keyframe_times = np.zeros(0)
        else:
            times = np.unique(np.asarray(pts, dtype=np.int64)).astype(np.float64) * time_base
            seekable = True
            keyframe_times = np.unique(np.asarray(key_pts, dtype=np.int64)).astype(np.float64) * time_base
        if times.size >= 2:
            rate = _median_rate(times, rate)
        width, height = video.codec_context.width, video.codec_context.height
        if not width or not height:
            raise MediaError("video stream has no frame size")
        return MediaProbe(
            path=str(path),
            video_stream=video.index,
            audio_stream=audio.index if audio is not None else None,
            width=width,
            height=height,
            codec=video.codec_context.name,
            frame_times=times,
            native_fps=rate,
            seekable=seekable,
            audio_rate=audio.codec_context.sample_rate if audio is not None else None,
            audio_channels=audio.codec_context.channels if audio is not None else None,
            keyframe_times=keyframe_times,
        )
    finally:
        container.close()


def _median_rate(times: np.ndarray, fallback: float) -> float:
    gaps = np.diff(times)
    gaps = gaps[gaps > TIME_EPS]
    return float(1.0 / np.median(gaps)) if gaps.size else fallback


def _decoded_frame_times(path: str | Path, rate: float) -> np.ndarray:
    """Frame times by decoding, for files whose packets carry no timestamps (rare: raw streams)."""
    times = list(_iter_frame_times(path, rate))
    return np.asarray(times, dtype=np.float64)


def _iter_frame_times(path: str | Path, rate: float) -> Iterator[float]:
    container = open_container(path)
    try:
        video, _ = choose_streams(container)
        clock = _FrameClock(rate)
        for frame in decode_tolerant(container, video):
            yield clock.time_of(frame)
    finally:
        container.close()


class _FrameClock:
    """A frame's time: its timestamp when it has one, else one frame period after the previous."""

    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate
        self.last: float | None = None

    def time_of(self, frame: av.VideoFrame) -> float:
        t = frame.time
        if t is None:
            t = 0.0 if self.last is None else self.last + self.period
        self.last = t
        return float(t)


def decode_tolerant(container: av.container.InputContainer, stream: av.stream.Stream) -> Iterator:
    """Decode a stream, ending quietly at the first unrecoverable error (truncated files)."""
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError as exc:
                log.info("skipping a damaged packet: %s", exc)
    except av.error.FFmpegError as exc:
        log.info("decoding stopped early: %s", exc)


def target_times(probe_: MediaProbe, fps: float | None) -> np.ndarray:
    """Absolute times of the output frames: the source frames' own times, or a grid at `fps`."""
    if fps is None:
        return probe_.frame_times.copy()
    start = float(probe_.frame_times[0])
    n = int(np.floor((probe_.end_time - start) * fps + TIME_EPS))
    return start + np.arange(max(n, 0), dtype=np.float64) / fps


def output_size(width: int, height: int, size: int, keep_aspect: bool) -> tuple[int, int]:
    """(width, height) of stored frames: a `size` square (SPEC §1.2), or the shorter side = `size`."""
    if not keep_aspect:
        return size, size
    if width <= height:
        return size, max(1, round(height * size / width))
    return max(1, round(width * size / height)), size


def decode_frames(
    probe_: MediaProbe,
    times: np.ndarray,
    out_wh: tuple[int, int],
    threads: int = 0,
) -> Iterator[np.ndarray]:
    """RGB uint8 frames (h, w, 3) for each of the sorted absolute `times`, in order.

    Seeks to the keyframe before the first time (when the file is seekable) and decodes forward;
    memory stays constant whatever the video's length. `threads` (0: FFmpeg's choice) is given to the
    decoder and to the scaler alike.
    """
    if times.size == 0:
        return
    container = open_container(probe_.path)
    try:
        video = container.streams[probe_.video_stream]
        if threads:  # 0 keeps FFmpeg's default, which beat frame threading here (it competes with the scaler)
            video.thread_count = threads
        if probe_.seekable and times[0] > probe_.frame_times[0] + TIME_EPS:
            container.seek(int(times[0] / float(video.time_base)), stream=video, backward=True)
        yield from _hold_frames(decode_tolerant(container, video), times, out_wh, probe_.native_fps, threads)
    finally:
        container.close()


def _hold_frames(
    frames: Iterator[av.VideoFrame], times: np.ndarray, out_wh: tuple[int, int], rate: float, threads: int = 0
) -> Iterator[np.ndarray]:
    width, height = out_wh
    clock = _FrameClock(rate)
    held: av.VideoFrame | None = None
    held_rgb: np.ndarray | None = None
    k = 0
    # One scaler for the whole run: `VideoFrame.reformat` builds a new swscale context (its filter
    # tables) for every frame, which doubled the cost of an area resize of 720p.
    scaler = VideoReformatter()

    def rgb_of(frame: av.VideoFrame) -> np.ndarray:
        return resize_to_rgb(frame, width, height, scaler, threads)

    for frame in frames:
        t = clock.time_of(frame)
        # Every target before this frame's time is shown by the held frame (or by this one, when
        # nothing is held yet: targets before the first decodable frame show the first frame).
        while k < times.size and times[k] < t - TIME_EPS:
            if held is None:
                held, held_rgb = frame, None
            if held_rgb is None:
                held_rgb = rgb_of(held)
            yield held_rgb
            k += 1
        if k == times.size:
            return
        held, held_rgb = frame, None
    if held is None:
        raise MediaError("no decodable video frame")
    # After the last decoded frame, the remaining targets hold it (damaged or truncated tails).
    while k < times.size:
        if held_rgb is None:
            held_rgb = rgb_of(held)
        yield held_rgb
        k += 1


def resize_to_rgb(
    frame: av.VideoFrame, width: int, height: int, scaler: VideoReformatter | None = None, threads: int = 0
) -> np.ndarray:
    """Area-averaged resize to (height, width, 3) RGB; pass one `scaler` for a run of frames.

    Scaling in YUV 4:2:0 and converting the small result to RGB is about 3x faster than scaling in RGB
    (half the bytes go through the scaler); 4:2:0 needs even sizes, so odd ones take the RGB route.
    `threads` 0 lets swscale slice each frame over threads of its own, one per core: the same pixels as 1
    thread, for more CPU (decode + resize of 720p alone: 3.5 ms per frame against 3.0 with 1 thread,
    `benchmarks/extract.py`); a caller that already keeps the cores busy passes 1.
    """
    scaler = scaler or VideoReformatter()
    sws_threads = threads or None
    if width % 2 or height % 2:
        return scaler.reformat(frame, width=width, height=height, format="rgb24", interpolation="AREA",
                               threads=sws_threads).to_ndarray()  # fmt: skip
    yuv = scaler.reformat(frame, width=width, height=height, format="yuv420p", interpolation="AREA",
                          threads=sws_threads).to_ndarray()  # fmt: skip
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)


def _open_for_audio(probe_: MediaProbe) -> av.container.InputContainer:
    """The file opened to decode its audio stream, without decoding video frames on the way.

    Opening a file decodes the first frames of every stream to learn their parameters (FFmpeg's
    find_stream_info): 15 ms of CPU for 720p H.264, 0.1 ms per frame of a 5 s clip, while reading the
    audio needs none of the video's. The probe already chose the streams, so the video stream is told to
    skip its frames; formats whose streams only show up while reading (MPEG-TS), or a stream that does
    not match the probe's, get the usual full open, which is what the audio then decodes with.
    """
    skip = [{} for _ in range(probe_.video_stream)] + [{"skip_frame": "all", "threads": "1"}]
    try:
        container = open_container(probe_.path, stream_options=skip)
    except ValueError:  # PyAV: this format exposes no streams before it reads packets
        return open_container(probe_.path)
    streams = container.streams
    audio = probe_.audio_stream
    if audio is None or audio >= len(streams) or streams[audio].type != "audio" or not (
        streams[audio].codec_context.sample_rate == probe_.audio_rate
        and streams[audio].codec_context.channels == probe_.audio_channels
    ):
        container.close()
        return open_container(probe_.path)
    return container


def decode_audio_mono(
    probe_: MediaProbe, start: float, stop: float
) -> tuple[np.ndarray, float, int]:
    """Mono float32 samples covering absolute times [start, stop), their start time and rate.

    Channels are averaged (SPEC §1.3 step 1). The returned range may start a little before `start`;
    times outside what the file holds are simply absent (the caller pads with silence).
    """
    if probe_.audio_stream is None:
        raise MediaError("no audio stream")
    container = _open_for_audio(probe_)
    try:
        audio = container.streams[probe_.audio_stream]
        if probe_.seekable and start > 1.0:
            container.seek(int(max(start - 0.5, 0.0) / float(audio.time_base)), stream=audio, backward=True)
        to_planar = av.AudioResampler(format="fltp")
        pieces: list[np.ndarray] = []
        first_time: float | None = None
        rate = int(probe_.audio_rate or audio.codec_context.sample_rate)
        expected_next: float | None = None
        for frame in decode_tolerant(container, audio):
            frame_time = frame.time if frame.time is not None else expected_next
            if frame_time is None:
                frame_time = 0.0
            for planar in to_planar.resample(frame):
                samples = planar.to_ndarray().astype(np.float32, copy=False)
                mono = samples.mean(axis=0) if samples.ndim == 2 else samples
                if first_time is None:
                    first_time = float(frame_time)
                pieces.append(mono)
            expected_next = float(frame_time) + frame.samples / rate
            if frame_time > stop:
                break
        if first_time is None:
            return np.zeros(0, dtype=np.float32), start, rate
        return np.concatenate(pieces), first_time, rate
    finally:
        container.close()
