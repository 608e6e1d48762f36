"""Shared fixtures: tiny generated media written with PyAV (no files in git, no network)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest
import torch


@dataclass(frozen=True)
class TestVideo:
    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    frame_times: tuple[float, ...]


def textured_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (DIS needs texture to find motion), RGB uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(height // 4 + 2, width // 4 + 2, 3))
    ys = np.linspace(0, coarse.shape[0] - 1.001, height)
    xs = np.linspace(0, coarse.shape[1] - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )
    return img.astype(np.uint8)


def write_video(
    path: Path,
    n_frames: int = 12,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    audio_channels: int = 1,
    audio_rate: int = 16000,
    with_audio: bool = True,
    audio_first: bool = False,
    data_stream: bool = False,
    vfr: bool = False,
    shift_per_frame: tuple[int, int] = (0, 0),
    tone: tuple[float, int] | None = None,
    marker: bool = True,
    gop: int | None = None,
) -> TestVideo:
    """Write a small video. Frame k carries a marker: a white column at x = 2k (for decoding checks).

    `shift_per_frame` translates a texture by an integer (dx, dy) each frame (for flow checks);
    `tone=(hz, frame)` adds a sine that starts at that frame's timestamp; `vfr` alternates frame
    gaps of 1 and 2 periods (time base 1/1000); `data_stream` writes MPEG-TS with a data stream first;
    `gop` puts a keyframe on every gop-th frame and nowhere else (libx264).
    """
    width, height = size
    container = av.open(str(path), "w", format="mpegts" if data_stream else None)
    audio_stream = None
    data = None
    if data_stream:  # first in the file, so stream 0 is neither video nor audio
        data = container.add_data_stream()
        data.time_base = Fraction(1, 90000)

    def add_audio() -> av.AudioStream:
        layout = {1: "mono", 2: "stereo", 6: "5.1"}[audio_channels]
        return container.add_stream("aac" if codec != "mpeg2video" else "mp2", rate=audio_rate, layout=layout)

    if with_audio and audio_first:
        audio_stream = add_audio()
    options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"} if gop else None
    video = container.add_stream(codec, rate=fps, options=options)
    video.width, video.height = width, height
    video.pix_fmt = "yuv444p" if (codec == "libx264" and (width % 2 or height % 2)) else "yuv420p"
    if vfr:
        video.time_base = Fraction(1, 1000)
    if with_audio and not audio_first:
        audio_stream = add_audio()
    texture = textured_image(width + 64, height + 64)
    times = []
    pts_ms = 0
    for k in range(n_frames):
        dx, dy = shift_per_frame
        ox, oy = 32 - dx * k, 32 - dy * k
        img = texture[oy : oy + height, ox : ox + width].copy()
        if marker and 2 * k < width:
            img[:, 2 * k] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if vfr:
            frame.pts = pts_ms
            frame.time_base = Fraction(1, 1000)
            times.append(pts_ms / 1000)
            pts_ms += int(1000 / fps) * (1 + k % 2)
        else:
            times.append(k / fps)
        for packet in video.encode(frame):
            container.mux(packet)
        if data is not None:
            note = av.Packet(b"telemetry")
            note.stream, note.time_base = data, Fraction(1, 90000)
            note.pts = note.dts = int(times[-1] * 90000)
            container.mux(note)
    for packet in video.encode():
        container.mux(packet)
    if audio_stream is not None:
        duration = times[-1] + 1 / fps
        n = int(duration * audio_rate)
        t = np.arange(n) / audio_rate
        signal = np.zeros(n, dtype=np.float32)
        if tone is not None:
            hz, onset_frame = tone
            signal = np.where(t >= times[onset_frame], 0.5 * np.sin(2 * np.pi * hz * t), 0).astype(np.float32)
        planes = np.repeat(signal[None], audio_channels, axis=0)
        fmt = "fltp" if codec != "mpeg2video" else "s16p"
        if fmt == "s16p":
            planes = (planes * 32767).astype(np.int16)
        step = 1024 if fmt == "fltp" else 1152
        for start in range(0, n, step):
            chunk = np.ascontiguousarray(planes[:, start : start + step])
            aframe = av.AudioFrame.from_ndarray(chunk, format=fmt, layout=audio_stream.layout.name)
            aframe.sample_rate = audio_rate
            aframe.pts = start
            for packet in audio_stream.encode(aframe):
                container.mux(packet)
        for packet in audio_stream.encode():
            container.mux(packet)
    container.close()
    return TestVideo(path, n_frames, float(fps), width, height, tuple(times))


def interruptible() -> None:
    """`preexec_fn` of a child that a test stops with SIGINT: a shell that runs tests in the background
    ignores SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session", autouse=True)
def preloaded_worker_processes():
    """The tests' dask worker processes fork from one server that imported what every stage's workers run
    (as `avfix run` starts it), instead of each importing torch anew: the suite starts dozens of worker
    processes, and the nanny restarts one after each kill of the fault tests. The tests' own local
    clusters (`LocalCluster(processes=True)`) fork from it too."""
    import dask

    from pipeline.common.scheduling import WORKER_START_METHOD, start_worker_server
    from pipeline.workspace.dag import worker_modules
    from pipeline.workspace.registry import STAGES

    if not start_worker_server(worker_modules(STAGES)):
        yield
        return
    with dask.config.set({"distributed.worker.multiprocessing-method": WORKER_START_METHOD}):
        yield


@pytest.fixture
def worker_server_requests(monkeypatch) -> list[tuple[str, ...]]:
    """The modules of each `start_worker_server` call the test makes, in order (each is still made)."""
    from pipeline.common import scheduling

    requests: list[tuple[str, ...]] = []
    real = scheduling.start_worker_server

    def recorded(modules):
        requests.append(tuple(modules))
        return real(modules)

    monkeypatch.setattr(scheduling, "start_worker_server", recorded)
    return requests


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tests' networks are tiny and the CI's 2 cores are shared: one intra-op thread is faster there
    (see models.device.set_cpu_threads); each test gets torch's setting back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def video_factory(tmp_path):
    def make(name: str = "v.mp4", **kwargs) -> TestVideo:
        path = tmp_path / "media" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_video(path, **kwargs)

    return make


# --- STA stores (train / predict tests) -------------------------------------------------------------


@dataclass(frozen=True)
class STAStores:
    workspace: Path
    video_ids: tuple[str, ...]
    blob_centres: dict  # video_id -> (T, 2) (y, x) of the bright square in frame pixels


def write_sta_stores(
    workspace: Path,
    n_videos: int = 6,
    n_frames: int = 20,
    size: int = 64,
    map_size: int = 32,
    val_videos: int = 1,
    gt_every: int = 1,
    no_audio: tuple[int, ...] = (),
    seed: int = 0,
) -> STAStores:
    """features.zarr + pseudo.zarr written directly (no extract, no pseudolabel): a bright square moves
    over a smooth texture; the pseudo-GT (at `map_size`) is a Gaussian blob on it. Frames whose index
    is not a multiple of `gt_every` have no pseudo-GT (`gt_every=0`: none has one). The audio window
    carries a band of energy when the frame's stored event probability is high; videos listed in
    `no_audio` have no audio. The stored flow is the square's motion."""
    from stores import features as fstore
    from stores import pseudo as pstore

    rng = np.random.default_rng(seed)
    features = fstore.SCHEMA.open_for_writing(fstore.SCHEMA.path(workspace))
    fstore.SCHEMA.update_store(features, classes=["thing"], settings={"size": size, "fps": None, "keep_aspect": False})
    pseudo = pstore.SCHEMA.open_for_writing(pstore.SCHEMA.path(workspace))
    ids = tuple(f"vid{k:02d}" for k in range(n_videos))
    val = set(ids[n_videos - val_videos:])
    pstore.SCHEMA.update_store(
        pseudo, classes=["thing"], settings={"event_threshold": 0.5, "map_size": map_size},
        train_videos=[v for v in ids if v not in val], val_videos=sorted(val),
    )
    ys_map = (np.arange(map_size) + 0.5) / map_size
    centres = {}
    for k, video_id in enumerate(ids):
        texture = textured_image(size, size, seed=seed + k)
        start = rng.uniform(0.25, 0.75, size=2) * size
        velocity = rng.uniform(-1.5, 1.5, size=2)
        path = np.clip(start + velocity * np.arange(n_frames)[:, None], 8, size - 9)
        frames = np.repeat(texture[None], n_frames, axis=0) // 2
        for t, (cy, cx) in enumerate(path.astype(int)):
            frames[t, cy - 4 : cy + 4, cx - 4 : cx + 4] = 255
        centres[video_id] = path.astype(int) + 0.0
        has_audio = k not in no_audio
        event = rng.uniform(0, 1, n_frames).astype(np.float32) * has_audio
        audio = rng.normal(0, 1, (n_frames, 257, 48)).astype(np.float32) * has_audio
        audio[event >= 0.5, 40:60] += 3.0
        shape = fstore.VideoShape(n_frames, size, size, size // 2, size // 2, 257, 48)
        attrs = fstore.FeaturesVideo(label="thing", n_frames=n_frames, height=size, width=size, has_audio=has_audio)
        group = fstore.SCHEMA.create_video(features, video_id, attrs, shape.array_shapes())
        arrays = fstore.open_video_arrays(fstore.SCHEMA.path(workspace), video_id)
        flow = np.zeros((n_frames, 2, size // 2, size // 2), np.float32)
        flow[1:, 0], flow[1:, 1] = velocity[1], velocity[0]
        fstore.write_segment(arrays, 0, frames, flow, audio if has_audio else None)
        fstore.write_axes(group, np.arange(n_frames) / 10.0, np.zeros(257, np.float32), np.zeros(48, np.float32))
        fstore.SCHEMA.mark_complete(group, f"features-{video_id}", 1)
        centre_map = path.astype(int) / size  # the square spans [c - 4, c + 4): its centre is c
        blob = np.exp(-(((ys_map[None, :, None] - centre_map[:, 0, None, None]) ** 2)
                        + ((ys_map[None, None, :] - centre_map[:, 1, None, None]) ** 2)) / (2 * 0.06**2))
        has_gt = (np.arange(n_frames) % gt_every) == 0 if gt_every else np.zeros(n_frames, bool)
        zeros_t3 = np.zeros((n_frames, 3, map_size, map_size), np.float16)
        maps = pstore.VideoMaps(
            coarse_cam=zeros_t3, fine_cam=zeros_t3, branch_prob=np.zeros((n_frames, 2, 3), np.float32),
            branch_valid=np.ones((n_frames, 3), bool), event_prob=event, box=np.zeros((n_frames, 4), np.int32),
            has_box=has_gt, fused=blob.astype(np.float16),
            pseudo_gt=(blob * has_gt[:, None, None]).astype(np.float16), has_pseudo_gt=has_gt,
        )
        split = "val" if video_id in val else "train"
        video = pstore.PseudoVideo(label="thing", split=split, n_frames=n_frames, map_size=map_size)
        pstore.write_video(pseudo, video_id, maps, video, f"pseudo-{video_id}", 1)
    return STAStores(workspace, ids, centres)


# --- small generated DAG workspaces -------------------------------------------------------------------

# Sizes that keep a whole DAG run to a few seconds on one CPU thread.
TINY = (
    "extract.size=64", "pseudolabel.coarse_size=64", "pseudolabel.fine_size=64", "pseudolabel.map_size=32",
    "pseudolabel.infer_batch=16", "pseudolabel.train.epochs=1", "pseudolabel.train.batch_size=16",
    "train.epochs=1", "train.batch_size=4", "train.val_batch_size=16", "run.torch_threads=1",
)  # fmt: skip


def make_sets(root: Path) -> tuple[Path, Path]:
    """2 classes x 2 training videos and 2 x 1 test videos, 1.2 s at 10 fps, 64 px."""
    from pipeline.synth.generate import SynthConfig, generate

    synth = dict(classes=2, seconds=1.2, fps=10, width=64, height=64)
    generate(root / "train", SynthConfig(videos_per_class=2, seed=0, **synth))
    generate(root / "test", SynthConfig(videos_per_class=1, seed=1, **synth))
    return root / "train", root / "test"


def extracted_set(root: Path, classes: int = 3, videos_per_class: int = 2) -> Path:
    """A generated set (1.6 s at 10 fps, 64 px), extracted into root/ws; returns the workspace."""
    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.extract.config import ExtractConfig
    from pipeline.extract.run import run_extract
    from pipeline.synth.generate import SynthConfig, generate

    synth = SynthConfig(classes=classes, videos_per_class=videos_per_class, seconds=1.6, fps=10, width=64, height=64)
    generate(root / "videos", synth)
    run_extract(root / "videos", root / "ws", ExtractConfig(size=64), SchedulerConfig(workers=1))
    return root / "ws"


def first_run_overrides(train: Path, test: Path, *extra: str):
    from pipeline.workspace.config import Overrides

    return Overrides(videos=train, predict_videos=test, fixations=test / "truth.csv", fixations_layout="csv",
                     preset="cpu", settings=TINY + extra)  # fmt: skip


# --- killed fanned-out runs (tests/*/test_*_fanout_faults.py) -------------------------------------


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def session_processes(session: int) -> list[int]:
    """The live processes of a session: a child started with `start_new_session=True` (its pid is the
    session's id) and whatever it started that stayed in its session (dask's local workers do)."""
    import psutil  # comes with dask.distributed

    alive = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == session and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except (OSError, psutil.Error):  # gone meanwhile, or not ours to look at
            continue
    return alive


def assert_session_ends(session: int, timeout: float = 30.0) -> None:
    """What a killed command started (its dask workers) must not outlive it: it could write behind a
    rerun's back. Whatever is left after `timeout` seconds is killed, and the test fails."""
    try:
        wait_until(lambda: not session_processes(session), f"the processes of killed session {session} to exit",
                   timeout)  # fmt: skip
    finally:
        for pid in session_processes(session):
            os.kill(pid, signal.SIGKILL)


def video_attrs(store: Path) -> dict[str, dict]:
    """Every video group's attributes, read from its zarr.json (a killed writer never consolidated, and
    zarr's own listing warns about the temporary files of a writer that is running)."""
    found = {}
    for path in sorted((store / "videos").glob("*/zarr.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text(encoding="utf-8")).get("attributes", {})
        except FileNotFoundError:  # the group is being made again meanwhile
            continue
    return found


def complete_videos(store: Path) -> set[str]:
    return {video_id for video_id, attrs in video_attrs(store).items() if attrs.get("status") == "complete"}


def incomplete_differences(store: Path, reference: Path, ignore: frozenset[str]) -> list[str]:
    """How the videos `store` marks complete differ from the same videos of `reference` (an uninterrupted
    run): nothing may be marked complete before all of its arrays are written."""
    from stores.compare import store_differences

    return [difference for video_id in sorted(complete_videos(store))
            for difference in store_differences(store / "videos" / video_id, reference / "videos" / video_id,
                                                ignore=ignore)]  # fmt: skip


def assert_lock_free(target: Path, timeout: float = 30.0) -> None:
    """A dead writer's lock is taken over (`stores.lock`): raises StoreLocked if it is still held after
    `timeout`. Not at once: a killed multi-threaded process shows as a zombie while its other threads
    are still exiting, and the kernel drops its flock only when the last of them has gone."""
    from stores.lock import StoreLock, StoreLocked, lock_path

    assert lock_path(target).exists()  # the killed run did hold it
    deadline = time.monotonic() + timeout
    while True:
        try:
            with StoreLock(target):
                return
        except StoreLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and every process it started, wherever their sessions (torchrun gives each rank
    its own, so killing the launcher's process group misses them); returns their pids."""
    import psutil  # comes with dask.distributed

    try:
        everything = [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for each in everything:
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return everything


def all_gone(pids: list[int]) -> bool:
    import psutil

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return not any(alive(pid) for pid in pids)


def run_until_killed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    """Run a command that a fault plan in `env` SIGKILLs, in its own session (so the dask workers it
    starts can be seen to outlive it or not); fails unless it was killed and its session ends."""
    with open(log, "w") as out:
        stopped = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            code = stopped.wait(timeout=300)
        finally:
            if stopped.poll() is None:  # it was not killed where it should have been
                kill_tree(stopped.pid)
        assert code == -signal.SIGKILL, log.read_text()[-3000:]
    assert_session_ends(stopped.pid)  # its dask workers notice their parent is gone and exit at once


def chunk_files(folder: Path) -> list[Path]:
    """Every chunk file under `folder` (a store's, a video's or an array's): flat keys ("c.3.0.0", what
    avfix writes) or zarr's nested default ("c/3/0/0", stores written before)."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and (path.name.startswith("c.") or "c" in path.relative_to(folder).parts[:-1]):
            found.append(path)
    return sorted(found)


def chunk_file(array_folder: Path, index: int) -> Path:
    """The file of chunk `index` (along t) of the array in `array_folder`."""
    for path in chunk_files(array_folder):
        key = path.name.split(".") if path.name.startswith("c.") else path.relative_to(array_folder).parts
        if int(key[1]) == index:
            return path
    raise FileNotFoundError(f"{array_folder}: no chunk {index}")


class ArmedWorkers:
    """A local cluster of dask worker processes that a test arms to SIGKILL themselves at a given write
    (`stores.faults` plans such as "KILL:chunk:3", counted from the arming on); the nanny starts a fresh,
    unarmed worker in each dead one's place. Use as a context manager; `address` is for the run."""

    def __init__(self, n_workers: int = 2) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=":0", memory_limit=0)  # fmt: skip
        self.client = Client(self.cluster)
        self.problems: list[BaseException] = []  # raised in the arming threads
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return self.cluster.scheduler_address

    def arm(self, plan: str, first_only: bool = False) -> list[int]:
        """Give every live worker (or the first, by address) `plan`; returns their pids."""
        from stores import faults

        pids = dict(sorted(self.client.run(os.getpid).items()))
        if first_only:
            pids = dict(list(pids.items())[:1])
        self.client.run(faults.arm, plan, workers=list(pids))
        return list(pids.values())

    def arm_all_once(self, condition: Callable[[], bool], what: str, plan: str, into: list[int],
                     timeout: float = 120.0) -> None:  # fmt: skip
        """In a thread: once `condition()` holds, arm every live worker with `plan`, their pids into `into`."""

        def wait_then_arm() -> None:
            try:
                wait_until(condition, what, timeout=timeout)
                into.extend(self.arm(plan))
            except BaseException as exc:  # noqa: BLE001 - the test asserts `problems` is empty
                self.problems.append(exc)

        thread = threading.Thread(target=wait_then_arm, daemon=True)
        thread.start()
        self._threads.append(thread)

    def survivors(self) -> set[int]:
        """The pids of the workers alive now (the arming threads joined first)."""
        for thread in self._threads:
            thread.join(timeout=60)
        return set(self.client.run(os.getpid).values())

    def __enter__(self) -> "ArmedWorkers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.cluster.close()


@pytest.fixture
def crashing_workers():
    """`crashing_workers(module, function, video_of, video_id)`: a context giving the `SchedulerConfig` of a
    2-worker local cluster whose worker processes exit, as a segfault in native code would end them,
    whenever `module.function(*args)` is called with `video_of(*args) == video_id`. dask retries such a
    task once on a fresh worker (allowed-failures 1) and then fails it with `KilledWorker`; each worker
    runs one task at a time (worker-saturation 1.0), so a death blames the crashing task alone."""
    import dask
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import WorkerPlugin

    from pipeline.common.scheduling import SchedulerConfig

    class CrashOn(WorkerPlugin):  # local, so pickled by value: the workers cannot import the tests
        def __init__(self, *target) -> None:  # noqa: ANN002
            self.target = target

        def setup(self, worker) -> None:  # noqa: ANN001
            import importlib

            module, function, video_of, video_id = self.target
            owner = importlib.import_module(module)
            real = getattr(owner, function)

            def crashing(*args, **kwargs):  # noqa: ANN002, ANN003
                if video_of(*args) == video_id:
                    os._exit(1)
                return real(*args, **kwargs)

            setattr(owner, function, crashing)

    @contextmanager
    def cluster_of(module: str, function: str, video_of: Callable, video_id: str):
        settings = {"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}
        with dask.config.set(settings), LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                     dashboard_address=":0") as cluster:  # fmt: skip
            with Client(cluster, set_as_default=False) as client:
                client.register_plugin(CrashOn(module, function, video_of, video_id))
                yield SchedulerConfig(address=cluster.scheduler_address)

    return cluster_of
