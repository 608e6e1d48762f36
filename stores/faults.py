"""Fault injection for the crash-consistency tests: a process sends itself a signal at a chosen write.

`AVFIX_FAULT="<signal>:<point>:<n>"` (e.g. `KILL:chunk:5`, `INT:attrs:3`) makes the n-th time this
process reaches `point` raise the signal (SIGKILL, SIGINT, ...) right there, so a test can stop a
command at a reproducible instant and check that a rerun ends with the stores an uninterrupted run
writes. The points every write path reports: `chunk` (a chunk file written), `attrs` (a group's
attributes written), `file` (a file renamed into place). Without the variable this does nothing.
`arm` sets the plan of a process that is already running (a dask worker, through `Client.run`).
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "AVFIX_FAULT"
_counts: dict[str, int] = {}
_lock = threading.Lock()


def _plan() -> tuple[int, str, int] | None:
    text = os.environ.get(ENV)
    if not text:
        return None
    name, point, n = text.split(":")
    return int(getattr(signal, f"SIG{name.upper()}")), point, int(n)


def reached(point: str) -> None:
    """One write of kind `point` is done (see the module docstring)."""
    plan = _plan()
    if plan is None or plan[1] != point:
        return
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        fire = _counts[point] == plan[2]
    if fire:
        os.kill(os.getpid(), plan[0])


def arm(plan: str | None) -> None:
    """Give this running process the plan `plan` (None: none), counting its writes from now on: a test
    arms one dask worker of a cluster this way, which an environment variable cannot single out."""
    with _lock:
        _counts.clear()
        if plan is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = plan
