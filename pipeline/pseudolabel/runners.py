"""Where pseudolabel's per-video pass jobs (`pipeline.pseudolabel.passes`) run: in this process, on the
dask workers of a scheduler, or spread over the processes of a torchrun job."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any, Iterator, Protocol

from models.device import resolve_device, set_cpu_threads
from pipeline.common.scheduling import SchedulerConfig
from pipeline.pseudolabel.passes import PassJob, PassOutcome, run_pass, run_passes
from pipeline.train.processes import Distributed

# How long the other processes of a torchrun job wait for the first between two passes: it trains the
# classifiers meanwhile (hours for the fine-tuned paper configuration on a slow GPU).
PASS_WAIT = timedelta(hours=48)


class PassRunner(Protocol):
    def run(self, jobs: list[PassJob]) -> Iterator[PassOutcome]:
        """Every job's outcome, in any order, as they finish."""


class InlineRunner:
    def __init__(self, device: str) -> None:
        self.device = device

    def run(self, jobs: list[PassJob]) -> Iterator[PassOutcome]:
        for job in jobs:
            yield run_pass(job, self.device)


class DaskRunner:
    """The jobs on the workers of a dask scheduler; a worker that dies takes its jobs with it and the
    scheduler runs them again on another."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def run(self, jobs: list[PassJob]) -> Iterator[PassOutcome]:
        from distributed import as_completed

        if not jobs:
            return
        for future in as_completed(self.client.map(run_pass, jobs, pure=False), loop=self.client.loop):
            yield future.result()


class TorchrunRunner:
    """The jobs spread over the processes of a torchrun job by position (the first process's share
    included); the other processes run `serve_passes` until `close`."""

    def __init__(self, processes: Distributed, device: str) -> None:
        self.processes, self.device = processes, device

    def run(self, jobs: list[PassJob]) -> Iterator[PassOutcome]:
        self.processes.broadcast(jobs)
        mine = run_passes(jobs[:: self.processes.world_size], self.device)
        yield from self.processes.gather(mine)

    def close(self) -> None:
        self.processes.broadcast(None)  # no more passes: the other processes return


def serve_passes(processes: Distributed, device: str, threads: int) -> None:
    """The other processes of a torchrun job: run their share of each pass's jobs until told to stop."""
    set_cpu_threads(resolve_device(device), threads)
    while True:
        jobs = processes.broadcast(None)
        if jobs is None:
            return
        processes.gather(run_passes(jobs[processes.rank :: processes.world_size], device))


@contextlib.contextmanager
def pass_runner(processes: Distributed, scheduler: SchedulerConfig, device: str) -> Iterator[PassRunner]:
    """The runner of this run: torchrun's processes, the scheduler's dask workers (several, or an
    address), or this process."""
    if processes.active:
        runner = TorchrunRunner(processes, str(processes.device(device)))
        try:
            yield runner
        finally:
            runner.close()
        return
    if scheduler.workers > 1 or scheduler.address:
        from pipeline.common.scheduling import dask_client

        with dask_client(scheduler) as client:
            yield DaskRunner(client)
        return
    yield InlineRunner(str(resolve_device(device)))
