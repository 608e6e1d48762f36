"""Settings of the extract stage, each classified by what it changes (`pipeline.common.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.common.audio_window import AudioWindowConfig
from pipeline.common.flow import FlowConfig
from pipeline.common.settings import output_setting, run_setting
from stores import features as fstore

MIN_FRAMES = 3
FRAME_CODECS = ("jpeg", "lossless")


@dataclass(frozen=True)
class FrameStorageConfig:
    """How the frames are stored: `jpeg` (lossy, one JPEG per frame; `quality` 1-100, chroma
    `subsampling` 444, 422 or 420) or `lossless` (uint8 + zstd).

    jpeg q95 4:4:4 by default, measured on real 720p footage at 356 px (`benchmarks/frame_codecs.py`,
    `stores.codecs`): 71 KiB per frame at 42.4 dB PSNR against 321 KiB lossless; 4:2:0, the JPEG
    default, stays under 40 dB (39.6 dB at q95). Training decodes each JPEG frame once, when a sample
    first asks for it (`stores.datasets.ChunkCache`).
    """

    codec: str = output_setting("jpeg")
    quality: int = output_setting(95)
    subsampling: str = output_setting("444")


@dataclass(frozen=True)
class ExtractConfig:
    """How videos become frames, flow and audio windows (SPEC §1.2-1.3)."""

    # Bumped when extract writes other data for the same file and settings (it enters the fingerprints).
    # 2: flow averaged onto its stored grid before storing (`FlowConfig.stored_scale`).
    ALGORITHM_VERSION: ClassVar[int] = 2

    fps: float | None = output_setting(None)  # None: the native frame rate
    size: int = output_setting(356)
    keep_aspect: bool = output_setting(False)
    frames: FrameStorageConfig = output_setting(default_factory=FrameStorageConfig)
    flow: FlowConfig = output_setting(default_factory=FlowConfig)
    audio: AudioWindowConfig = output_setting(default_factory=AudioWindowConfig)
    # Videos with fewer frames fail. Training needs t-1, t, t+1; predict clamps them and accepts 1.
    min_frames: int = output_setting(MIN_FRAMES)
    segment_frames: int = run_setting(512)  # frames per task; segments of any length write the same data
    decoder_threads: int = run_setting(0)  # 0: as cpu_threads
    # Threads each task gives OpenCV and torch (0: their own choice, one per core). A task already runs
    # three threads of its own (read-ahead decoding, flow and audio, writing), which kept both cores of
    # our 2-core machine busy; the libraries' own pools on top only fought them (1 thread: 5.4 ms of CPU
    # per 720p frame; their default: 7.2 ms, and 20% fewer frames/s).
    cpu_threads: int = run_setting(1)

    def __post_init__(self) -> None:
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {self.size}")
        if self.flow.method not in ("dis", "none"):
            raise ValueError(f"flow must be 'dis' or 'none', got {self.flow.method!r}")
        if not 0 < self.flow.scale <= 1:
            raise ValueError(f"flow scale must be in (0, 1], got {self.flow.scale}")
        if not 0 < self.flow.stored_scale <= 1 or self.flow.step < 0:
            raise ValueError(f"flow stored_scale must be in (0, 1] and step >= 0, got {self.flow.stored_scale}, "
                             f"{self.flow.step}")  # fmt: skip
        if self.frames.codec not in FRAME_CODECS:
            raise ValueError(f"frames codec must be one of {', '.join(FRAME_CODECS)}, got {self.frames.codec!r}")
        if not 1 <= self.frames.quality <= 100 or self.frames.subsampling not in ("444", "422", "420"):
            raise ValueError(f"frames quality must be in 1..100 and subsampling 444, 422 or 420, got "
                             f"{self.frames.quality}, {self.frames.subsampling!r}")  # fmt: skip
        if self.segment_frames % fstore.CHUNK_T:
            raise ValueError(f"segment_frames must be a multiple of {fstore.CHUNK_T}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {self.min_frames}")
