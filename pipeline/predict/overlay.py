"""Overlay MP4s: the predicted saliency as a heat map blended over the source frames, with the source's
audio kept.

Frames are decoded with the extract stage's decoder (`pipeline.common.media`) at the same output times as the
stored features, so overlay frame k shows exactly the frame whose map is saliency[k], at the source
size. Video is H.264 (yuv420p; yuv444p when a side is odd, which 4:2:0 cannot hold); timestamps are
the frames' own, so variable frame rates survive. Audio is decoded and re-encoded to AAC (MP4 cannot
hold every source codec, e.g. Vorbis, PCM or MP2), aligned so that the sample at source time T plays at
T − (time of the first stored frame). The AAC encoder takes only some sample rates and no layout
without channel positions (PCM in .avi/.mkv), so such audio is resampled to the next rate it takes
and given the standard layout for its channel count.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from pipeline.common import media
from pipeline.common.files import atomic_output
from pipeline.predict.heatmap import Heatmap, colormap_lut

TIME_BASE = Fraction(1, 90000)
AAC_FRAME = 1024  # samples per AAC frame


def write_overlay(
    source: str | Path,
    out_path: str | Path,
    fps: float | None,
    n_frames: int,
    read_saliency: Callable[[int, int], np.ndarray],
    alpha: float = 0.5,
    colormap: str = "jet",
    chunk: int = 16,
) -> Path:
    """Write `out_path` (MP4) for `source`, whose stored frames were taken at `fps` (None = native).

    `read_saliency(start, stop)` gives the uint8 maps (n, H, W) of frames [start, stop) at the source
    size. The file appears only when complete (written next to it, then renamed).
    """
    out_path = Path(out_path)
    probe = media.probe(source)
    times = media.target_times(probe, fps)
    if times.size != n_frames:
        raise media.MediaError(f"{source}: decodes to {times.size} frames now, the predictions have {n_frames} "
                               "(the file changed since predict?)")  # fmt: skip
    heatmap = Heatmap.of(colormap_lut(colormap), alpha)
    with atomic_output(out_path) as partial:
        _encode_overlay(partial, probe, times, fps, n_frames, read_saliency, heatmap, chunk)
    return out_path


def _encode_overlay(partial: Path, probe: media.MediaProbe, times: np.ndarray, fps: float | None, n_frames: int,
                    read_saliency: Callable[[int, int], np.ndarray], heatmap: Heatmap, chunk: int) -> None:
    container = av.open(str(partial), mode="w", format="mp4")
    try:
        video = container.add_stream("libx264", rate=_stream_rate(probe, fps))
        video.width, video.height = probe.width, probe.height
        video.pix_fmt = "yuv420p" if probe.width % 2 == 0 and probe.height % 2 == 0 else "yuv444p"
        video.time_base = TIME_BASE
        # x264's frame threads encode while the next frames are decoded and blended; with PyAV's default, slice
        # threads, every encode call waits for its frame. Same settings and quality; 1.0-1.7x the encoder's
        # frames/s in interleaved runs on the loaded 2-core machine (more where a core is idle).
        video.codec_context.thread_type = "FRAME"
        audio = _AudioTrack(container, probe, float(times[0])) if probe.has_audio else None
        frames = media.decode_frames(probe, times, (probe.width, probe.height))
        for start in range(0, n_frames, chunk):
            stop = min(start + chunk, n_frames)
            # Maps are read a chunk at a time (one store read), blended a frame at a time (stays in cache).
            for k, saliency in enumerate(read_saliency(start, stop)):
                frame = av.VideoFrame.from_ndarray(heatmap.blend_frame(next(frames), saliency), format="rgb24")
                frame.pts = int(round((times[start + k] - times[0]) / TIME_BASE))
                frame.time_base = TIME_BASE
                container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is not None:
            audio.copy()
    finally:
        container.close()


def _stream_rate(probe: media.MediaProbe, fps: float | None) -> Fraction:
    return Fraction(fps if fps is not None else probe.native_fps).limit_denominator(1001)


def _aac_rate(rate: int) -> int:
    """`rate` if the AAC encoder takes it, else the next higher rate it takes (so no band is lost), else its
    highest: it refuses any other rate (e.g. 37800 or 192000 Hz) with EINVAL."""
    rates = sorted(av.codec.Codec("aac", "w").audio_rates or (rate,))
    return next((r for r in rates if r >= rate), rates[-1])


def _aac_layout(layout: av.AudioLayout | None, source: str) -> str:
    """The source's layout, or FFmpeg's standard one for its channel count when the source names no channel
    positions (PCM in .avi/.mkv decodes as "2 channels"), which the AAC encoder refuses with EINVAL."""
    if layout is None or not layout.nb_channels:
        return "stereo"
    if all(channel.name != "NONE" for channel in layout.channels):
        return layout.name
    if layout.nb_channels > 8:  # FFmpeg has no standard layout beyond 7.1 to map the channels onto
        raise media.MediaError(f"{source}: {layout.nb_channels} audio channels without positions cannot go into "
                               "an AAC overlay")  # fmt: skip
    return av.AudioLayout(f"{layout.nb_channels}c").name


class _AudioTrack:
    """The source's audio stream, decoded and re-encoded to AAC with its rate and channel layout (adjusted
    to what AAC takes, see `_aac_rate` and `_aac_layout`)."""

    def __init__(self, container: av.container.OutputContainer, probe: media.MediaProbe, start_time: float) -> None:
        self.container = container
        self.probe = probe
        self.start_time = start_time
        source = av.open(probe.path)
        try:
            stream = source.streams[probe.audio_stream]
            self.rate = _aac_rate(int(stream.codec_context.sample_rate or probe.audio_rate or 48000))
            layout = _aac_layout(stream.codec_context.layout, probe.path)
        finally:
            source.close()
        self.stream = container.add_stream("aac", rate=self.rate, layout=layout)
        self.layout = self.stream.layout.name
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)

    def copy(self) -> None:
        pending = np.zeros((len(self.stream.layout.channels), 0), dtype=np.float32)
        written = 0
        for samples in self._aligned_samples():
            pending = np.concatenate([pending, samples], axis=1)
            while pending.shape[1] >= AAC_FRAME:
                written = self._encode(pending[:, :AAC_FRAME], written)
                pending = pending[:, AAC_FRAME:]
        if pending.shape[1]:
            written = self._encode(pending, written)
        self.container.mux(self.stream.encode(None))

    def _encode(self, samples: np.ndarray, written: int) -> int:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = written
        frame.time_base = Fraction(1, self.rate)
        self.container.mux(self.stream.encode(frame))
        return written + samples.shape[1]

    def _aligned_samples(self) -> Iterator[np.ndarray]:
        """Planar float32 blocks starting at the first stored frame's time (silence-padded or trimmed)."""
        source = media.open_container(self.probe.path)
        try:
            stream = source.streams[self.probe.audio_stream]
            skip: int | None = None  # samples still to drop before the first stored frame's time
            for decoded in media.decode_tolerant(source, stream):
                for frame in self.resampler.resample(decoded):
                    samples = frame.to_ndarray().astype(np.float32, copy=False)
                    if skip is None:
                        frame_time = decoded.time if decoded.time is not None else 0.0
                        offset = int(round((frame_time - self.start_time) * self.rate))
                        if offset > 0:
                            yield np.zeros((samples.shape[0], offset), dtype=np.float32)
                        skip = max(-offset, 0)
                    if skip:
                        dropped = min(skip, samples.shape[1])
                        samples, skip = samples[:, dropped:], skip - dropped
                    if samples.shape[1]:
                        yield samples
            for frame in self.resampler.resample(None):
                yield frame.to_ndarray().astype(np.float32, copy=False)
        finally:
            source.close()
