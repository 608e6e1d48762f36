"""Where extract's CPU goes, by thread: one `avfix extract` run (1 local worker) on copies of the real clip,
with the CPU time each Python thread used (read at the thread's own end, so short-lived per-segment
threads count whole; those still running at the end, as the kernel counted them), grouped by role, and
the rest of the process (threads that native libraries start, e.g. swscale's or OpenMP's) as "native
threads". Linux only (/proc).

    .venv/bin/python benchmarks/extract_threads.py [--copies 8] [--workers 1]

Roles: "decode + resize" is the read-ahead thread (`pipeline.common.read_ahead`), "flow + audio" the dask
task's own thread, "compress + write" the task's writer, "dask event loop" and "zarr event loop" the
libraries' own loops, "zarr I/O" the threads zarr hands file work to, "coordinator" the main thread. A
profiler that samples instead (py-spy, perf) sees all threads but names none of them apart.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROLES = (  # thread-name prefix -> role
    ("avfix-read-ahead", "decode + resize"),
    ("Dask-Default-Threads", "flow + audio (task thread)"),
    ("ThreadPoolExecutor", "compress + write"),
    ("IO loop", "dask event loop"),
    ("zarr_io", "zarr event loop"),
    ("asyncio", "zarr I/O"),
    ("MainThread", "coordinator"),
)

USED: dict[str, float] = defaultdict(float)
_lock = threading.Lock()


def _role(name: str) -> str:
    for prefix, role in ROLES:
        if prefix in name:
            return role
    return f"other ({name.rstrip('0123456789_-')})"


def count_thread_cpu() -> None:
    """Every Python thread started from now on adds its own CPU time to its role when it ends."""
    run = threading.Thread.run

    def counted(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            with _lock:
                USED[_role(self.name)] += time.thread_time()

    threading.Thread.run = counted  # type: ignore[method-assign]


def count_live_threads() -> None:
    """Python threads still running (zarr's event loop and its I/O pool) report what the kernel counted for
    them; they start inside the measured run."""
    tick = os.sysconf("SC_CLK_TCK")
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.native_id is None:
            continue
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:  # ended meanwhile: it reported itself
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        USED[_role(thread.name)] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="bigbuckbunny", help="Real clip (benchmarks/footage.py).")
    parser.add_argument("--copies", type=int, default=8, help="Videos extracted (copies of the clip).")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    import footage

    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.extract.config import ExtractConfig
    from pipeline.extract.run import run_extract

    count_thread_cpu()
    with tempfile.TemporaryDirectory(prefix="avfix-threads-") as name:
        tmp = Path(name)
        folder = tmp / "in" / "bench"
        folder.mkdir(parents=True)
        source = footage.clip(args.clip)
        for k in range(args.copies):
            (folder / f"{source.stem}_{k:02d}{source.suffix}").symlink_to(source)
        main_before, before = time.thread_time(), cpu_seconds()
        summary = run_extract(tmp / "in", tmp / "ws", ExtractConfig(), SchedulerConfig(workers=args.workers))
        total = cpu_seconds() - before
        USED["coordinator"] += time.thread_time() - main_before
        count_live_threads()
    frames = summary.frames_written
    print(f"{frames} frames, {total / frames * 1e3:.2f} ms CPU/frame in all:")
    for role, seconds in sorted(USED.items(), key=lambda item: -item[1]):
        print(f"  {role:30s} {seconds / frames * 1e3:5.2f} ms/frame")
    rest = total - sum(USED.values())
    print(f"  {'native threads (not Python)':30s} {rest / frames * 1e3:5.2f} ms/frame")


if __name__ == "__main__":
    main()
