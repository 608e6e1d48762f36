"""Files every stage writes or fingerprints: content hashes and atomic replacement.

A file is always written under a hidden partial name in its own folder and renamed into place, so a
reader (or a rerun after SIGINT/SIGKILL) sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stores import faults

_BLOCK = 1 << 22
# sha256 by (path, size, mtime_ns): `avfix status` and a run ask for the same weights files' hashes.
_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's content (remembered while its size and modification time stay)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def partial_path(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed to `path`."""
    return path.with_name(f".{path.name}.partial")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield the partial path to write; on success it replaces `path`, on any exit by error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    faults.reached("file")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_output(path) as partial:
        partial.write_text(text, encoding="utf-8")


def save_torch_atomic(state: dict[str, Any], path: str | Path) -> None:
    """`torch.save` without ever leaving a half-written checkpoint."""
    import torch

    with atomic_output(path) as partial:
        torch.save(state, partial)


def file_stamp(path: str | Path) -> dict[str, int] | str:
    """Size and modification time of an input file ("absent" when it cannot be read): what a failed
    input is remembered by, and the cheap test of whether a file changed."""
    try:
        stat = Path(path).stat()
    except OSError:
        return "absent"
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
