"""Where pseudolabel's work runs: its per-video pass jobs (`pipeline.pseudolabel.passes`) in this process,
on the dask workers of a scheduler, or spread over the processes of a torchrun job; its classifiers in
this process or, under torchrun, by all processes together (each on its share of every batch).

Under torchrun the first process coordinates: it sends each piece of work to the others (`serve`) as
a message, (PASSES, jobs) or (TRAIN, job), and None when the run ends."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Protocol

import torch

from models.device import resolve_device, set_cpu_threads
from pipeline.common.processes import Distributed
from pipeline.common.scheduling import SchedulerConfig
from pipeline.pseudolabel.classifier_loop import Team, run_train_job
from pipeline.pseudolabel.passes import PassJob, PassOutcome, run_pass, run_passes
from pipeline.pseudolabel.stage import PSEUDOLABEL_TASKS

PASSES, TRAIN = "passes", "train"


class PassRunner(Protocol):
    def run(self, jobs: list[PassJob]) -> Iterator[PassOutcome]:
        """Every job's outcome, in any order, as they finish."""

    def team(self) -> Team:
        """The processes that train the classifiers."""


class InlineRunner:
    def __init__(self, device: str) -> None:
        self.device = device

    def team(self) -> Team:
        return Team()

    def run(self, jobs: list[PassJob]) -> Iterator[PassOutcome]:
        for job in jobs:
            yield run_pass(job, self.device)


class DaskRunner:
    """The jobs on the workers of a dask scheduler; a worker that dies takes its jobs with it and the
    scheduler runs them again on another."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def team(self) -> Team:
        return Team()  # the classifiers train here: dask workers share no process group

    def run(self, jobs: list[PassJob]) -> Iterator[PassOutcome]:
        from distributed import KilledWorker, as_completed

        from pipeline.common.scheduling import WORKER_DIED

        if not jobs:
            return
        futures = self.client.map(run_pass, jobs, pure=False)
        owners = {future.key: job for future, job in zip(futures, jobs)}
        for future in as_completed(futures, loop=self.client.loop):
            try:
                yield future.result()
            except KilledWorker:  # it killed every worker that ran it: its video fails, the others go on
                job = owners[future.key]
                yield PassOutcome(job, f"{job.kind}: {WORKER_DIED}", job.info.fingerprint)


class TorchrunRunner:
    """The jobs spread over the processes of a torchrun job by position (the first process's share
    included), and each classifier trained by all of them; the other processes `serve` until `close`."""

    def __init__(self, processes: Distributed, device: str) -> None:
        self.processes, self.device = processes, device

    def run(self, jobs: list[PassJob]) -> Iterator[PassOutcome]:
        self.processes.broadcast((PASSES, jobs))
        mine = run_passes(jobs[:: self.processes.world_size], self.device)
        yield from self.processes.gather(mine)

    def team(self) -> Team:
        return Team(self.processes, lambda job: self.processes.broadcast((TRAIN, job)))

    def close(self) -> None:
        self.processes.broadcast(None)  # no more work: the other processes return


def serve(processes: Distributed, device: str, threads: int) -> None:
    """The other processes of a torchrun job: run their share of each pass's jobs, and train each
    classifier with the first process, until told to stop."""
    set_cpu_threads(resolve_device(device), threads)
    while True:
        message = processes.broadcast(None)
        if message is None:
            return
        kind, work = message
        if kind == PASSES:
            processes.gather(run_passes(work[processes.rank :: processes.world_size], device))
        elif kind == TRAIN:
            run_train_job(work, torch.device(device), processes)
        else:
            raise RuntimeError(f"unknown message {kind!r} from the first process")


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

        with dask_client(scheduler, worker_modules=(PSEUDOLABEL_TASKS,)) as client:
            yield DaskRunner(client)
        return
    yield InlineRunner(str(resolve_device(device)))
