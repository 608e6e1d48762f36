"""Extract throughput and memory against a bare PyAV decode loop of the same file, in the same run.

    .venv/bin/python benchmarks/extract.py [--seconds 300] [--width 1280 --height 720 --fps 30]

Prints frames/s of a bare decode (the practical upper bound: FFmpeg's default threading and frame
threading, the faster counts), of `avfix extract` with 1 worker pinned to one core, 1 worker and 2
workers (threads, the default; the stage's own time from its summary, the command's wall and CPU time
beside it), their ratios, peak memory of the whole process tree, and stored bytes per frame against
JPEG (q95) of the same stored frames. Targets (issue #2): extract ≥ 0.5× bare decode with 1 worker;
2 workers ≥ 1.7× one worker; peak RSS < 1.5 GB.

One worker's task runs three threads (read-ahead decoding and scaling; flow and audio; compression and
writing), so on a 2-core machine one worker already uses both cores and a second worker has none left:
the scaling a second core brings shows as "1 worker, 1 core" → "1 worker, 2 cores".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import psutil
import zarr

CACHE = Path(tempfile.gettempdir()) / "avfix-bench"


def make_video(path: Path, seconds: float, width: int, height: int, fps: int) -> None:
    """A textured scene panning under a moving bright disc, with a tone whose pitch steps each second."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 255, (height // 8, width // 4, 3), dtype=np.uint8), (width * 2, height))
    yy, xx = np.mgrid[0:height, 0:width]
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        n_frames = int(seconds * fps)
        samples_per_frame = 48000 // fps
        audio_pts = 0
        for k in range(n_frames):
            shift = (k * 3) % width
            frame = texture[:, shift : shift + width].copy()
            cx = width / 2 + width / 3 * np.sin(k / 40)
            cy = height / 2 + height / 3 * np.cos(k / 53)
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 < 40**2] = (255, 220, 40)
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            t = (audio_pts + np.arange(samples_per_frame)) / 48000
            tone = (0.3 * np.sin(2 * np.pi * (300 + 100 * (k // fps % 5)) * t)).astype(np.float32)
            aframe = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts = 48000, audio_pts
            audio_pts += samples_per_frame
            for packet in audio.encode(aframe):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    tmp.rename(path)


def bare_decode(path: Path, thread_type: str | None) -> tuple[int, float]:
    """Frames and seconds of decoding every frame; `thread_type` None keeps FFmpeg's default."""
    began = time.perf_counter()
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if thread_type:
            stream.thread_type = thread_type
        for _ in container.decode(stream):
            n += 1
    return n, time.perf_counter() - began


class PeakRSS:
    """Samples the memory of a process and its children every 0.5 s: summed PSS and summed RSS.

    A sample reads /proc/<pid>/smaps of each process: ~12 ms of CPU for a process that has imported
    torch, taken from the cores the measured command runs on; every 0.1 s that cost the command ~5%.

    PSS counts a shared page once across the tree (each of n sharers is charged 1/n), so it is the
    tree's real footprint; summed RSS counts shared libraries (torch's are ~600 MB) once per process.
    """

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                infos = [p.memory_full_info() for p in procs if p.is_running()]
                self.peak = max(self.peak, sum(i.pss for i in infos))
                self.peak_rss = max(self.peak_rss, sum(i.rss for i in infos))
            except psutil.Error:
                pass
            time.sleep(0.5)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peak, self.peak_rss


def run_extract(source: Path, workspace: Path, workers: int, cores: set[int] | None = None
                ) -> tuple[dict, float, float, tuple[int, int]]:  # fmt: skip
    """The command's summary, wall seconds, CPU seconds and peak (PSS, summed RSS); `cores` pins it."""
    videos = workspace / "in" / "bench"
    videos.mkdir(parents=True, exist_ok=True)
    link = videos / source.name
    if not link.exists():
        link.symlink_to(source)
    command = [
        str(Path(sys.executable).parent / "avfix"), "extract", str(workspace / "in"),
        "--workspace", str(workspace), "--workers", str(workers), "--quiet", "--json",
    ]  # fmt: skip
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=pin)
    rss = PeakRSS(proc.pid)
    out, _ = proc.communicate()
    wall = time.perf_counter() - began
    peak = rss.stop()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"extract failed ({proc.returncode}): {out}")
    return json.loads(out), wall, cpu, peak


def stored_bytes(store: Path, array: str) -> int:
    return sum(f.stat().st_size for f in store.rglob("*") if f.is_file() and f"/{array}/" in str(f))


def jpeg_bytes(store: Path, n_sample: int = 300) -> tuple[float, int]:
    root = zarr.open_group(str(store), mode="r")
    video = next(iter(root["videos"].group_values()))
    frames = video["frames"]
    idx = np.linspace(0, frames.shape[0] - 1, min(n_sample, frames.shape[0])).astype(int)
    sizes = [
        len(cv2.imencode(".jpg", frames[i][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]) for i in idx
    ]
    return float(np.mean(sizes)), frames.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()

    source = CACHE / f"bench_{args.width}x{args.height}_{args.fps}fps_{int(args.seconds)}s.mp4"
    print(f"source: {source} (generating if missing)", flush=True)
    make_video(source, args.seconds, args.width, args.height, args.fps)

    bare = {}
    for name, thread_type in (("FFmpeg's default threading", None), ("frame threading (AUTO)", "AUTO")):
        n_decoded, t_bare = bare_decode(source, thread_type)
        bare[name] = n_decoded / t_bare
        print(f"bare PyAV decode, {name}: {n_decoded} frames in {t_bare:.1f} s = {bare[name]:.0f} frames/s", flush=True)
    bare_rate = max(bare.values())

    runs = {"1 worker, 1 core": (1, {min(os.sched_getaffinity(0))}), "1 worker": (1, None), "2 workers": (2, None)}
    results = {}
    with tempfile.TemporaryDirectory(prefix="avfix-bench-") as tmp:
        for k, (name, (workers, cores)) in enumerate(runs.items()):
            workspace = Path(tmp) / f"ws{k}"
            summary, wall, cpu, peak = run_extract(source, workspace, workers, cores)
            # The stage's own time (its summary) leaves out the command's start-up (imports: ~3-5 s here).
            rate = summary["frames_written"] / summary["seconds"]
            results[name] = (rate, peak[0])
            print(
                f"extract, {name}: {summary['frames_written']} frames in {summary['seconds']:.1f} s "
                f"= {rate:.0f} frames/s ({rate / bare_rate:.2f}x bare decode; the whole command {wall:.1f} s, "
                f"{cpu / summary['frames_written'] * 1e3:.1f} ms of CPU per frame), peak memory of the process "
                f"tree: PSS {peak[0] / 2**30:.2f} GB (summed RSS {peak[1] / 2**30:.2f} GB)",
                flush=True,
            )
        store = Path(tmp) / "ws1" / "features.zarr"
        n_frames = summary["frames_written"]
        per_frame = {a: stored_bytes(store, a) / n_frames for a in ("frames", "flow", "audio")}
        jpeg_mean, _ = jpeg_bytes(store)

    one, two, pinned = results["1 worker"][0], results["2 workers"][0], results["1 worker, 1 core"][0]
    print(f"1 worker vs bare decode: {one / bare_rate:.2f}x (target >= 0.5x)")
    print(f"2 workers vs 1 worker: {two / one:.2f}x (target >= 1.7x)")
    print(f"1 worker on 2 cores vs on 1 core: {one / pinned:.2f}x")
    print(f"peak PSS: {max(p for _, p in results.values()) / 2**30:.2f} GB (target < 1.5 GB)")
    total = sum(per_frame.values())
    print(
        "stored bytes/frame: "
        + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in per_frame.items())
        + f", total {total / 1024:.1f} KiB; JPEG q95 of the same frames {jpeg_mean / 1024:.1f} KiB "
        f"(frames array = {per_frame['frames'] / jpeg_mean:.2f}x JPEG, lossless)"
    )


if __name__ == "__main__":
    main()
