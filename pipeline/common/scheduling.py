"""Where per-video work runs: a local dask cluster (threads or processes) or a dask.distributed scheduler."""

from __future__ import annotations

import logging
import multiprocessing
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class SchedulerConfig:
    """`address` of a running dask scheduler, or a local cluster of `workers` single-threaded workers.

    Several local workers are threads of this process (`threads`): decoding, resizing, flow and compression
    release the GIL, so threads need no server process and no copies between processes, but they share
    the GIL the glue between those calls holds. `threads=False` makes them processes forked from a
    preloaded server (`start_worker_server`), which `avfix extract` chooses unless told otherwise: no GIL
    to share, which is what caps threads on machines with more cores. A single worker runs in this process.
    A worker's task already keeps about two cores busy (see `pipeline.extract.run`): more workers pay off on
    machines with more cores.
    """

    workers: int = 1
    address: str | None = None
    threads: bool = True

    @property
    def local_processes(self) -> bool:
        """Whether the work runs on worker processes of a local cluster."""
        return self.workers > 1 and not self.threads and not self.address


# Why a task fails whose worker process died each time dask ran it (`distributed.scheduler.allowed-failures`
# retries, then `KilledWorker`): its video fails alone and the other videos go on. Only worker processes
# survive such a crash (a segfault in native code, the kernel's out-of-memory killer); with threads it
# ends the command.
WORKER_DIED = "its worker process died each time it ran (a crash in native code, or out of memory)"


# A local cluster's own diagnostics, which nobody sees (it has no dashboard), cost CPU in its event-loop
# thread all the while it runs, and take the GIL from the tasks each time: the worker's statistical
# profiler walks the stacks of the running tasks every 10 ms, and the event-loop health check ticks every
# 20 ms in the scheduler and in each worker (about 25 ms of CPU a second on its own). In `avfix extract`
# of 720p clips on our 2-core machine the event-loop thread took 0.28-0.51 ms of CPU per frame with them,
# 0.12-0.17 without (`benchmarks/extract_threads.py`). A slower tick only warns later about a blocked loop.
# Likewise each server's system monitor reads the process's CPU, memory, network and disk counters
# (psutil) every 0.5 s for the dashboard: every 5 s is plenty for a log line.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


def local_cluster_config() -> dict[str, object]:
    """`LOCAL_CLUSTER_CONFIG`, and the environment a local worker process starts with: dask's own (one
    OpenMP thread; its MALLOC_TRIM_THRESHOLD_ of 64 KiB, which returns every freed tensor to the kernel)
    with avfix's malloc settings over it (`pipeline.common.allocator`; the user's, where set)."""
    import dask

    from pipeline.common.allocator import ENVIRON, user_values

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.update({**ENVIRON, **user_values()})
    return {**LOCAL_CLUSTER_CONFIG, "distributed.nanny.pre-spawn-environ": environ}


# Local worker processes are forked from one server process that imported what their tasks need, once,
# instead of each being a fresh interpreter that imports torch and the rest itself (3.5-4.5 s of CPU each
# on our 2-core machine, again in each worker the nanny restarts after a crash). A worker then starts in
# about 0.3 s, and the workers share the imported modules' memory pages with the server. Forking a
# process that has only imported modules is safe: no thread, no OpenMP pool and no CUDA context exist yet
# (forking this process, which runs threads, would not be).
WORKER_START_METHOD = "forkserver"


def start_worker_server(modules: Sequence[str]) -> bool:
    """Start the server this process's local dask workers fork from, importing `modules` (and dask's own).

    It imports them in the background: called early, this process's own imports overlap with its. The
    first call of a process decides: the server lives as long as this process, and a worker whose task
    needs a module the server did not import imports it itself. It starts with the environment a local
    worker gets (`local_cluster_config`), which this process's own environment keeps out of.
    False where there is no such start method (Windows): workers are then spawned as fresh interpreters.
    """
    if WORKER_START_METHOD not in multiprocessing.get_all_start_methods():
        return False
    import dask
    from distributed.utils import get_mp_context
    from multiprocessing import forkserver

    with dask.config.set({"distributed.worker.multiprocessing-method": WORKER_START_METHOD}):
        context = get_mp_context()  # dask sets its own preload list on its first call: ours replaces it
    context.set_forkserver_preload(["distributed", *modules])
    spawn_environ = local_cluster_config()["distributed.nanny.pre-spawn-environ"]
    environ = {name: str(value) for name, value in spawn_environ.items()}
    saved = {name: os.environ.get(name) for name in environ}
    os.environ.update(environ)
    try:
        forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return True


@contextmanager
def dask_client(config: SchedulerConfig, worker_modules: Sequence[str] = ()) -> Iterator[Client]:
    """A client of the scheduler at `config.address`, or of a local cluster; `worker_modules`: what local
    worker processes' tasks import (preloaded by `start_worker_server`)."""
    # Imported here: dask.distributed costs about 0.3 s, which commands that decode nothing need not pay.
    import dask
    from distributed import Client, LocalCluster

    # dask's own INFO chatter (scheduler start, worker registration) is noise in a CLI's output.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if config.address:
        client = Client(config.address, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
        return
    processes = config.local_processes
    with ExitStack() as stack:
        # Set while the cluster lives: its servers read these at start-up (worker processes get a copy).
        stack.enter_context(dask.config.set(local_cluster_config()))
        if processes and start_worker_server(worker_modules):
            stack.enter_context(dask.config.set({"distributed.worker.multiprocessing-method": WORKER_START_METHOD}))
        cluster = LocalCluster(
            n_workers=max(1, config.workers),
            threads_per_worker=1,
            processes=processes,
            # Any free port: its scheduler serves HTTP (health, metrics) even without a dashboard, on 8787
            # by default, and a second avfix command running meanwhile would print dask's "Port 8787 is
            # already in use" warning.
            dashboard_address=":0",
            memory_limit=0,
            silence_logs=logging.ERROR,
        )
        stack.callback(cluster.close)
        client = Client(cluster, set_as_default=False)
        stack.callback(client.close)
        yield client
