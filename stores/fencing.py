"""Fencing tokens: a job that outlived the run that sent it stops before its next chunk write.

A command that spreads its work (dask workers of an external `--scheduler`, torchrun ranks) holds the
lock of the store it writes (`stores.lock`), and each time it takes the lock it writes a new token into
the lock file. Its jobs carry that token (`Fence`); a process running a job writes inside `fenced(fence)`,
and every chunk write first checks (`check`) that the lock file still names the same token. When the
coordinating process is killed, jobs already running on the cluster go on; once a new run has taken the
lock (possibly with other settings), the old jobs' next write raises `FencedOut` instead of racing the
new run's writes. What is left is the time of one chunk write between the check and the write.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from stores.zarr_io import StoreError


class FencedOut(StoreError):
    """The run that sent this job no longer holds the lock of the store the job writes."""


@dataclass(frozen=True)
class Fence:
    """The lock file of the store a job writes, and the token its run wrote into it."""

    lock_file: str
    token: str


# Per thread (dask runs a job per worker thread); a job's own helper threads get it through
# `contextvars.copy_context().run`.
_current: contextvars.ContextVar[Fence | None] = contextvars.ContextVar("avfix_fence", default=None)


def read_token(lock_file: str | Path) -> str | None:
    """The token the lock file names now (None: no file, or one written before tokens)."""
    try:
        return json.loads(Path(lock_file).read_text(encoding="utf-8")).get("token")
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def fenced(fence: Fence | None) -> Iterator[None]:
    """This thread's writes check `fence` (None: they do not, as in a run that holds no lock)."""
    token = _current.set(fence)
    try:
        yield
    finally:
        _current.reset(token)


def check() -> None:
    """Raise `FencedOut` when this thread writes for a run that has lost its store's lock."""
    fence = _current.get()
    if fence is None:
        return
    now = read_token(fence.lock_file)
    if now != fence.token:
        raise FencedOut(
            f"{fence.lock_file}: the run that sent this job no longer holds the lock "
            f"({'another run took it' if now else 'the lock file is gone'}); the job stops before writing more"
        )
