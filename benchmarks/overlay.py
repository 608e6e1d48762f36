"""How fast `avfix predict --overlay` renders a 720p overlay, against the rendering it replaced.

Generates a 1280×720, 30 fps clip with stereo AAC audio (PyAV, nothing downloaded) and a moving saliency
blob per frame, then renders the overlay MP4 (heat map blended over the frames, audio re-encoded) in the
same run, alternating:
- baseline: the former rendering, restated below: the matplotlib lookup table applied by numpy indexing,
  the blend in float32 numpy over chunks of 16 frames, frames handed to libx264 as RGB with its
  default settings;
- new: `pipeline.predict.overlay.write_overlay`.
Prints frames/s of each (best of --rounds), their ratio, and each overlay's PSNR against the rendering
before compression (the new one must look the same), size and audio length.

    .venv/bin/python benchmarks/overlay.py            # --frames 300, --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pipeline, not an installed one

from pipeline.common import media  # noqa: E402
from pipeline.common.files import atomic_output  # noqa: E402
from pipeline.predict import overlay  # noqa: E402
from pipeline.predict.heatmap import colormap_lut  # noqa: E402

WIDTH, HEIGHT, FPS, RATE = 1280, 720, 30, 44100


def make_clip(path: Path, n_frames: int) -> None:
    """A slowly panning smooth texture with a moving bright disc (content x264 must work for), 440 Hz tone."""
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 256, (HEIGHT // 16 + 8, WIDTH // 16 + 8, 3), dtype=np.uint8),
                         (WIDTH + 128, HEIGHT + 128), interpolation=cv2.INTER_CUBIC)  # fmt: skip
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    audio = container.add_stream("aac", rate=RATE, layout="stereo")
    for k in range(n_frames):
        image = np.ascontiguousarray(texture[k % 128 : k % 128 + HEIGHT, k % 128 : k % 128 + WIDTH])
        cv2.circle(image, (100 + 7 * k % (WIDTH - 200), HEIGHT // 2), 60, (250, 240, 200), -1)
        container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(video.encode())
    samples = int(n_frames / FPS * RATE)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / RATE)).astype(np.float32)
    for start in range(0, samples, 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.stack([tone[start : start + 1024]] * 2)),
                                           format="fltp", layout="stereo")  # fmt: skip
        frame.sample_rate, frame.pts = RATE, start
        container.mux(audio.encode(frame))
    container.mux(audio.encode())
    container.close()


def make_saliency(n_frames: int) -> np.ndarray:
    """uint8 (n, H, W): a Gaussian blob crossing the frame, as a blurred prediction looks."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    maps = np.empty((n_frames, HEIGHT, WIDTH), dtype=np.uint8)
    for k in range(n_frames):
        cx = 100 + 7 * k % (WIDTH - 200)
        maps[k] = 255 * np.exp(-(((xs - cx) / 180) ** 2 + ((ys - HEIGHT / 2) / 140) ** 2))
    return maps


# --- the former rendering, restated -----------------------------------------------------------------


def old_blend(frames: np.ndarray, saliency: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    weight = (alpha / 255.0) * saliency.astype(np.float32)[..., None]
    mixed = frames.astype(np.float32) * (1.0 - weight) + lut[saliency].astype(np.float32) * weight
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def old_write_overlay(source: Path, out_path: Path, n_frames: int, read_saliency: Callable[[int, int], np.ndarray],
                      alpha: float = 0.5, colormap: str = "jet", chunk: int = 16) -> None:  # fmt: skip
    probe = media.probe(source)
    times = media.target_times(probe, None)
    lut = colormap_lut(colormap)
    with atomic_output(out_path) as partial:
        container = av.open(str(partial), mode="w", format="mp4")
        try:
            video = container.add_stream("libx264", rate=overlay._stream_rate(probe, None))
            video.width, video.height = probe.width, probe.height
            video.pix_fmt = "yuv420p"
            video.time_base = overlay.TIME_BASE
            audio = overlay._AudioTrack(container, probe, float(times[0])) if probe.has_audio else None
            frames = media.decode_frames(probe, times, (probe.width, probe.height))
            for start in range(0, n_frames, chunk):
                stop = min(start + chunk, n_frames)
                rgb = np.stack([next(frames) for _ in range(stop - start)])
                for k, image in enumerate(old_blend(rgb, read_saliency(start, stop), lut, alpha)):
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    frame.pts = int(round((times[start + k] - times[0]) / overlay.TIME_BASE))
                    frame.time_base = overlay.TIME_BASE
                    container.mux(video.encode(frame))
            container.mux(video.encode())
            if audio is not None:
                audio.copy()
        finally:
            container.close()


# --- measuring -------------------------------------------------------------------------------------------


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    error = np.mean((frames.astype(np.float64) - reference) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0)) / RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avfix-overlay-") as work:
        source, old_out, new_out = Path(work) / "clip.mp4", Path(work) / "old.mp4", Path(work) / "new.mp4"
        make_clip(source, args.frames)
        maps = make_saliency(args.frames)
        read = lambda start, stop: maps[start:stop]  # noqa: E731
        print(f"{args.frames} frames of {WIDTH}x{HEIGHT} at {FPS} fps with stereo AAC; best of {args.rounds} rounds")
        best = {"baseline (former rendering)": float("inf"), "new (write_overlay)": float("inf")}
        for _ in range(args.rounds):
            began = time.perf_counter()
            old_write_overlay(source, old_out, args.frames, read)
            best["baseline (former rendering)"] = min(best["baseline (former rendering)"], time.perf_counter() - began)
            began = time.perf_counter()
            overlay.write_overlay(source, new_out, None, args.frames, read)
            best["new (write_overlay)"] = min(best["new (write_overlay)"], time.perf_counter() - began)
        for name, seconds in best.items():
            print(f"  {name:<28} {args.frames / seconds:6.1f} frames/s  ({seconds:.2f} s)")
        old_s, new_s = best.values()
        print(f"  ratio new/baseline: {old_s / new_s:.2f}x")
        # Both against the rendering before compression (the former blend of the decoded source frames).
        probe = media.probe(source)
        frames = media.decode_frames(probe, media.target_times(probe, None), (WIDTH, HEIGHT))
        reference = np.stack([old_blend(next(frames)[None], maps[k : k + 1], colormap_lut("jet"), 0.5)[0]
                              for k in range(args.frames)])  # fmt: skip
        for name, path in (("baseline", old_out), ("new", new_out)):
            print(f"  {name:<8} overlay: {len(decoded(path))} frames, PSNR {psnr(decoded(path), reference):.2f} dB "
                  f"against the uncompressed rendering, {path.stat().st_size / 1e6:.2f} MB, audio "
                  f"{audio_seconds(path):.2f} s")  # fmt: skip

if __name__ == "__main__":
    main()
