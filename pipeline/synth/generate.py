"""`avfix synth`: generated tagged audio-visual sets with known truth, for tests, the demo and benchmarks.

Each video belongs to one class (synth_classes): the object of that class moves smoothly over a drifting
cluttered background and makes its class's sound, except in one optional silent stretch; distractors
with the looks of other classes move too but never sound. Distractors are drawn at 85–100 % of
`distractor_scale` (0.7) times the sounding object's radius, and the sounding object is drawn on top: a
single frame's class is then identifiable (the biggest object), and the class-activation maps of a
tag-trained classifier have one right answer.

Layout written (the AVE layout `avfix extract` reads):

    OUT/<class>/<class>_<NNN>.mp4   H.264 + AAC (mono, 16 kHz), written to a hidden partial file first
    OUT/truth.csv                   the sounding object per frame (synth_truth)
    OUT/distractors.csv             the distractors per frame
    OUT/synth.json                  settings, classes, videos; "status": "complete" once all is written

Everything is seeded per video (seed, class index, video index), so the same settings give the same
truth and the same decoded pixels (x264 runs single-threaded and without MB-tree), and a video does not
change when only the number of videos changes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline import __version__
from pipeline.common.errors import BadInput
from pipeline.common.files import atomic_output, write_text_atomic
from pipeline.common.progress import Progress
from pipeline.common.settings import output_setting
from pipeline.synth.classes import MAX_CLASSES, ClassSpec, class_specs
from pipeline.synth.render import Background, Track, draw_objects, smooth_path
from pipeline.synth.sound import soundtrack
from pipeline.synth.truth import DISTRACTORS_FILE, TRUTH_FILE, TruthTrack, write_distractors, write_truth

GENERATOR_VERSION = 1  # bump when the pictures or sounds change, so old folders are not reused
MANIFEST_FILE = "synth.json"
MIN_SIDE = 32  # objects of radius 10–15 % of the shorter side need ≥ 3 px to keep their shape
MIN_FRAMES = 3  # what `avfix extract` accepts
AAC_RATES = (16000, 22050, 24000, 32000, 44100, 48000)  # ≥ 16 kHz: the highest class band is 6.55 kHz
CHUNK_FRAMES = 16  # frames rendered at once: bounded memory whatever the video's length
AUDIO_BLOCK = 1024  # samples per AAC frame


class SynthError(BadInput):
    """The output folder cannot be used as asked; the message names it and says why."""


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. The defaults are the demo-sized set (4 × 6 videos of 4 s, 10 fps, 128²)."""

    classes: int = output_setting(4)
    videos_per_class: int = output_setting(6)
    seconds: float = output_setting(4.0)
    fps: float = output_setting(10.0)
    width: int = output_setting(128)
    height: int = output_setting(128)
    distractors: int = output_setting(2)
    silent_fraction: float = output_setting(0.2)
    seed: int = output_setting(0)
    audio_rate: int = output_setting(16000)
    radius_fraction: tuple[float, float] = output_setting((0.10, 0.15))  # of the shorter side
    distractor_scale: float = output_setting(0.7)
    object_speed: tuple[float, float] = output_setting((0.15, 0.35))  # shorter sides per second
    background_speed: float = output_setting(0.04)  # shorter sides per second
    crf: int = output_setting(18)

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= MAX_CLASSES:
            raise ValueError(f"--classes must be between 2 and {MAX_CLASSES}, got {self.classes}")
        if self.videos_per_class < 1:
            raise ValueError(f"--videos-per-class must be at least 1, got {self.videos_per_class}")
        if not self.fps > 0:
            raise ValueError(f"--fps must be positive, got {self.fps}")
        if not self.seconds > 0:
            raise ValueError(f"--seconds must be positive, got {self.seconds}")
        if self.n_frames < MIN_FRAMES:
            raise ValueError(
                f"--seconds {self.seconds} at --fps {self.fps} gives {self.n_frames} frame(s); "
                f"at least {MIN_FRAMES} are needed"
            )
        if min(self.width, self.height) < MIN_SIDE:
            raise ValueError(
                f"frame size {self.width}x{self.height} is too small for the objects: "
                f"width and height must be at least {MIN_SIDE} pixels"
            )
        if self.distractors < 0:
            raise ValueError(f"--distractors must be 0 or more, got {self.distractors}")
        if not 0 <= self.silent_fraction < 1:
            raise ValueError(f"--silent-fraction must be in [0, 1), got {self.silent_fraction}")
        if self.n_silent_frames >= self.n_frames:
            raise ValueError(
                f"--silent-fraction {self.silent_fraction} silences all {self.n_frames} frames; "
                "at least one must be audible"
            )
        if self.audio_rate not in AAC_RATES:
            raise ValueError(f"audio_rate must be one of {AAC_RATES}, got {self.audio_rate}")
        if not 0 < self.radius_fraction[0] <= self.radius_fraction[1] <= 0.25:
            raise ValueError(f"radius_fraction must be 0 < low <= high <= 0.25, got {self.radius_fraction}")
        if not 0 < self.distractor_scale <= 1:
            raise ValueError(f"distractor_scale must be in (0, 1], got {self.distractor_scale}")

    @property
    def frame_rate(self) -> Fraction:
        """The exact rate written into the stream (29.97 becomes 2997/100)."""
        return Fraction(self.fps).limit_denominator(1001)

    @property
    def n_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def n_silent_frames(self) -> int:
        return int(round(self.silent_fraction * self.n_frames))

    def settings(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class VideoPlan:
    """Everything that decides one video, drawn from its seed without rendering a pixel."""

    video_id: str
    spec: ClassSpec
    sounding: Track
    distractors: tuple[Track, ...]
    audible: np.ndarray  # bool (n_frames,)
    background_seed: np.random.SeedSequence
    audio_seed: np.random.SeedSequence

    @property
    def relative_path(self) -> Path:
        return Path(self.spec.name) / f"{self.video_id}.mp4"


def _object_track(
    rng: np.random.Generator, spec: ClassSpec, config: SynthConfig, times: np.ndarray, radius: float
) -> Track:
    side = float(min(config.width, config.height))
    speed = side * rng.uniform(*config.object_speed)
    x, y = smooth_path(rng, times, config.width, config.height, radius, speed)
    return Track(spec, float(radius), x, y)


def plan_video(config: SynthConfig, specs: tuple[ClassSpec, ...], spec: ClassSpec, index: int) -> VideoPlan:
    # Independent streams per aspect, so e.g. changing the distractor count leaves the path alone.
    sounding_seq, distractor_seq, silence_seq, background_seq, audio_seq = np.random.SeedSequence(
        [config.seed, spec.index, index]
    ).spawn(5)
    times = np.arange(config.n_frames) / float(config.frame_rate)
    rng = np.random.default_rng(sounding_seq)
    radius = min(config.width, config.height) * rng.uniform(*config.radius_fraction)
    sounding = _object_track(rng, spec, config, times, radius)

    rng = np.random.default_rng(distractor_seq)
    others = [s for s in specs if s.index != spec.index]
    chosen = rng.choice(len(others), size=config.distractors, replace=config.distractors > len(others))
    # Always smaller than the sounding object (see the module docstring).
    distractors = tuple(
        _object_track(rng, others[int(i)], config, times, radius * config.distractor_scale * rng.uniform(0.85, 1.0))
        for i in chosen
    )

    audible = np.ones(config.n_frames, dtype=bool)
    if config.n_silent_frames:
        start = int(np.random.default_rng(silence_seq).integers(0, config.n_frames - config.n_silent_frames + 1))
        audible[start : start + config.n_silent_frames] = False
    return VideoPlan(
        video_id=f"{spec.name}_{index:03d}", spec=spec, sounding=sounding, distractors=distractors,
        audible=audible, background_seed=background_seq, audio_seed=audio_seq,
    )  # fmt: skip


def plan_set(config: SynthConfig) -> list[VideoPlan]:
    specs = class_specs(config.classes)
    return [plan_video(config, specs, spec, i) for spec in specs for i in range(config.videos_per_class)]


def _truth_of(track: Track, audible: np.ndarray | None) -> TruthTrack:
    n = track.x.size
    return TruthTrack(
        label=track.spec.name, frame=np.arange(n, dtype=np.int64), x=track.x, y=track.y,
        radius=np.full(n, track.radius), audible=audible if audible is not None else np.zeros(n, dtype=bool),
    )  # fmt: skip


# --- writing one video -------------------------------------------------------------------------


def _add_video_stream(container: av.container.OutputContainer, config: SynthConfig) -> av.VideoStream:
    stream = container.add_stream("libx264", rate=config.frame_rate)
    stream.width, stream.height = config.width, config.height
    # 4:2:0 needs even sides; odd sizes keep full chroma instead of being refused.
    stream.pix_fmt = "yuv420p" if config.width % 2 == 0 and config.height % 2 == 0 else "yuv444p"
    stream.time_base = 1 / config.frame_rate
    # The same bits on every run: single-threaded, and without MB-tree rate control, which gave
    # different streams for the same frames on 2-6 of 8 single-threaded runs (PyAV 18.1's libx264).
    stream.codec_context.thread_count = 1
    stream.options = {"crf": str(config.crf), "preset": "veryfast", "x264-params": "mbtree=0"}
    return stream


def _add_audio_stream(container: av.container.OutputContainer, config: SynthConfig) -> av.AudioStream:
    stream = container.add_stream("aac", rate=config.audio_rate, layout="mono")
    stream.bit_rate = 96000
    stream.options = {"aac_coder": "fast"}  # 4x faster than the default search; the sounds are simple
    return stream


class _AudioFeeder:
    """Encodes a prepared soundtrack in AAC-sized blocks, up to a given time, so packets interleave."""

    def __init__(self, container: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray) -> None:
        self.container, self.stream, self.samples = container, stream, samples
        self.cursor = 0

    def _encode(self, block: np.ndarray | None) -> None:
        frame = None
        if block is not None:
            frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
            frame.sample_rate = self.stream.codec_context.sample_rate
            frame.pts = self.cursor
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def feed_until(self, sample: int) -> None:
        while self.cursor + AUDIO_BLOCK <= min(sample, self.samples.size):
            self._encode(self.samples[self.cursor : self.cursor + AUDIO_BLOCK])
            self.cursor += AUDIO_BLOCK

    def finish(self) -> None:
        self.feed_until(self.samples.size)
        if self.cursor < self.samples.size:
            self._encode(self.samples[self.cursor :])
            self.cursor = self.samples.size
        self._encode(None)


def render_chunk(plan: VideoPlan, background: Background, config: SynthConfig, start: int, stop: int) -> np.ndarray:
    """RGB uint8 frames (stop − start, h, w, 3) of frames [start, stop) of a video."""
    times = np.arange(start, stop) / float(config.frame_rate)
    frames = background.frames(times, config.width, config.height)
    draw_objects(frames, [*plan.distractors, plan.sounding], start)  # the sounding object on top
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def write_video(plan: VideoPlan, config: SynthConfig, path: Path, progress: Progress) -> None:
    """Render, encode and write one video to `path` (the caller renames it into place)."""
    duration = config.n_frames / float(config.frame_rate)
    background = Background.generate(
        np.random.default_rng(plan.background_seed), config.width, config.height, duration,
        config.background_speed * min(config.width, config.height),
    )  # fmt: skip
    audio = soundtrack(plan.spec, plan.audible, float(config.frame_rate), config.audio_rate,
                       np.random.default_rng(plan.audio_seed))  # fmt: skip
    container = av.open(str(path), mode="w", format="mp4")
    try:
        video = _add_video_stream(container, config)
        feeder = _AudioFeeder(container, _add_audio_stream(container, config), audio)
        for start in range(0, config.n_frames, CHUNK_FRAMES):
            stop = min(start + CHUNK_FRAMES, config.n_frames)
            for offset, rgb in enumerate(render_chunk(plan, background, config, start, stop)):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = start + offset
                for packet in video.encode(frame):
                    container.mux(packet)
            feeder.feed_until(int(stop / float(config.frame_rate) * config.audio_rate))
            progress.advance_frames(stop - start)
        for packet in video.encode():
            container.mux(packet)
        feeder.finish()
    finally:
        container.close()


# --- the output folder -------------------------------------------------------------------------


@dataclass
class SynthSummary:
    out: str
    classes: list[str]
    videos: int = 0
    written: int = 0
    skipped: int = 0
    frames_written: int = 0
    seconds: float = 0.0
    truth: str | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted

    def line(self) -> str:
        if self.interrupted:
            return (
                f"synth: interrupted after {self.written} of {self.videos} videos written "
                f"({self.skipped} kept) -> {self.out} [rerun the same command to finish]"
            )
        return (
            f"synth: {self.videos} videos in {len(self.classes)} classes ({self.written} written, "
            f"{self.skipped} kept), {self.frames_written} frames in {self.seconds:.1f} s -> {self.out} "
            f"(truth: {self.truth})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _manifest(config: SynthConfig, plans: list[VideoPlan], status: str) -> dict[str, Any]:
    specs = class_specs(config.classes)
    return {
        "generator": "avfix synth",
        "generator_version": GENERATOR_VERSION,
        "avfix_version": __version__,
        "settings": config.settings(),
        "classes": [s.name for s in specs],
        "class_info": [
            {"name": s.name, "shape": s.shape, "colour": list(s.colour), "pattern": s.pattern,
             "sound": s.sound, "band_hz": list(s.band_hz)}
            for s in specs
        ],  # fmt: skip
        "videos": [str(p.relative_path) for p in plans],
        "status": status,
    }


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2))


def _settings_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
    return ", ".join(changed) or "generator version"


def _remove_old_set(out: Path, old: dict[str, Any]) -> None:
    """Delete what a previous `avfix synth` run listed, and nothing else."""
    for relative in old.get("videos", []):
        (out / relative).unlink(missing_ok=True)
    for name in (TRUTH_FILE, DISTRACTORS_FILE, MANIFEST_FILE):
        (out / name).unlink(missing_ok=True)
    for class_name in old.get("classes", []):
        folder = out / class_name
        if folder.is_dir():
            for partial in folder.glob(".*.partial"):
                partial.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()


def prepare_folder(out: Path, config: SynthConfig, overwrite: bool) -> bool:
    """Make `out` ready; True when it holds an earlier run with the same settings (keep its videos)."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a folder")
    if not out.exists():
        out.mkdir(parents=True)
        return False
    manifest_path = out / MANIFEST_FILE
    if not manifest_path.exists():
        if any(out.iterdir()):
            raise SynthError(f"{out}: folder is not empty and holds no {MANIFEST_FILE}; choose an empty or new folder")
        return False
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise SynthError(f"{manifest_path}: unreadable ({exc}); delete the folder or choose another") from exc
    same = old.get("generator_version") == GENERATOR_VERSION and old.get("settings") == config.settings()
    if same:
        return True
    if not overwrite:
        raise SynthError(
            f"{out}: holds a set generated with other settings ({_settings_change(old.get('settings', {}), config.settings())}); "
            "choose another folder or pass --overwrite"
        )
    _remove_old_set(out, old)
    return False


def generate(
    out: str | Path, config: SynthConfig, progress: Progress | None = None, overwrite: bool = False
) -> SynthSummary:
    """Write the set described by `config` into `out`; see the module docstring.

    A rerun with the same settings keeps the videos already written (each one was renamed into place
    only once complete) and writes the missing ones. Ctrl-C stops after cleaning up the partial file;
    `truth.csv` and the manifest's "complete" status are written only when every video exists.
    """
    began = time.perf_counter()
    out = Path(out)
    plans = plan_set(config)
    keep_existing = prepare_folder(out, config, overwrite)
    summary = SynthSummary(out=str(out), classes=[s.name for s in class_specs(config.classes)], videos=len(plans))
    progress = progress or Progress(enabled=False)
    _write_manifest(out, _manifest(config, plans, "in_progress"))
    progress.start(len(plans))
    progress.add_frames(len(plans) * config.n_frames)
    try:
        for plan in plans:
            final = out / plan.relative_path
            if keep_existing and final.is_file():
                summary.skipped += 1
                progress.advance_frames(config.n_frames)
            else:
                try:
                    # The partial name has no video suffix: extract ignores it.
                    with atomic_output(final) as partial:
                        write_video(plan, config, partial, progress)
                except (OSError, av.error.FFmpegError) as exc:
                    raise SynthError(f"{final}: cannot write ({exc})") from exc
                summary.written += 1
                summary.frames_written += config.n_frames
            progress.advance_video()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        progress.close()
    if not summary.interrupted:
        write_truth(out / TRUTH_FILE, {p.video_id: _truth_of(p.sounding, p.audible) for p in plans})
        write_distractors(
            out / DISTRACTORS_FILE, {p.video_id: [_truth_of(d, None) for d in p.distractors] for p in plans}
        )
        _write_manifest(out, _manifest(config, plans, "complete"))
        summary.truth = str(out / TRUTH_FILE)
    summary.seconds = time.perf_counter() - began
    return summary
