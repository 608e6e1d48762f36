"""Where per-video work runs: a local dask cluster (threads or processes) or a dask.distributed scheduler."""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class SchedulerConfig:
    """`address` of a running dask scheduler, or a local cluster of `workers` single-threaded workers.

    Several local workers are threads of this process by default: decoding, resizing, flow and
    compression release the GIL, so threads need no second torch import and no copies between processes.
    `threads=False` makes them processes; a single worker runs in this process. A worker's task already
    keeps about two cores busy (see `pipeline.extract.run`): more workers pay off on machines with more cores.
    """

    workers: int = 1
    address: str | None = None
    threads: bool = True


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


@contextmanager
def dask_client(config: SchedulerConfig) -> Iterator[Client]:
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
    processes = config.workers > 1 and not config.threads
    with ExitStack() as stack:
        # Set while the cluster lives: its servers read these at start-up (worker processes get a copy).
        stack.enter_context(dask.config.set(local_cluster_config()))
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
