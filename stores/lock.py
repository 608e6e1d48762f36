"""One writer per store: an advisory lock file beside each store a command writes.

`WS/.features.zarr.lock` (and so on) is locked with `flock` by the command that writes the store and
names its holder (pid, host, command, since when). A second writer is refused at once with one line
naming the holder; readers (`avfix status`, the notebook) never take the lock. The kernel releases a
lock when its holder dies, however it dies, so a lock left by a killed process is simply taken over.
On network file systems without `flock` support the lock holds per machine only (README: "On a
cluster"). Each taking of the lock writes a new token into the file: jobs sent to other processes carry
it and stop writing once another run has taken the lock (`stores.fencing`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from stores.fencing import Fence
from stores.zarr_io import StoreError


class StoreLocked(StoreError):
    """Another live process is writing this store."""


# Locks this process holds, with how many `StoreLock`s hold each: nested holders (`avfix run` around a
# stage, a stage around the extraction it runs) share one flock, since a second flock of the same file
# from this process would be refused like any other.
_held: dict[Path, list[Any]] = {}


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


class StoreLock:
    """Holds the lock of `target` (a store, or any output a stage writes) while in a `with` block."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._handle: Any = None

    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        key = self.path.resolve()
        if key in _held:
            _held[key][1] += 1
            self._handle = _held[key][0]
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(self.path)
            handle.close()
            raise StoreLocked(f"{self.target}: in use by {holder}; wait for it to finish or stop it") from None
        handle.seek(0)
        handle.truncate()
        token = uuid.uuid4().hex
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                   "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]), "token": token}, handle)  # fmt: skip
        handle.flush()
        os.fsync(handle.fileno())  # the token is what other machines' jobs check before each write
        self._handle = handle
        _held[key] = [handle, 1, token]

    def release(self) -> None:
        if self._handle is None:
            return
        key = self.path.resolve()
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            self._handle.close()  # closing releases the flock; the file stays for the next holder
        self._handle = None


def held_fence(target: str | Path) -> Fence | None:
    """The fence of the lock of `target` this process holds (None: it holds none), for its jobs to carry."""
    path = lock_path(target)
    held = _held.get(path.resolve())
    return Fence(str(path.resolve()), held[2]) if held is not None else None


def _describe(path: Path) -> str:
    """The holder as its lock file names it."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["since"])))
        return f"pid {holder['pid']} on {holder['host']} since {since} ({holder.get('command') or 'avfix'})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder yet)"
