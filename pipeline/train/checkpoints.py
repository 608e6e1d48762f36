"""STA checkpoints (WS/checkpoints/sta/): where they live, reading one (whole, or its header alone), and
the RNG states they carry for exact resume.

Every value in a checkpoint is a tensor or a plain Python value, so torch's safe loader
(`weights_only=True`) reads it: no code runs when a checkpoint is opened. `read_header` reads the
settings and position from the checkpoint's pickle alone, without torch (`pipeline.common.plain_pickle`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.plain_pickle import UnreadablePickle, holds_torch_values, read_torch_pickle
from pipeline.train.config import TrainError

CHECKPOINT_FORMAT = "avfix-sta-checkpoint"
CHECKPOINT_SCHEMA = 2  # 2: safe-loadable (RNG states as tensors), settings classified by field metadata
CHECKPOINT_DIR = Path("checkpoints") / "sta"
_STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng")


def checkpoint_dir(workspace: str | Path) -> Path:
    return Path(workspace) / CHECKPOINT_DIR


def _load(path: Path, mmap: bool) -> dict[str, Any]:
    if not path.is_file():
        raise TrainError(f"{path}: no such checkpoint")
    import torch  # here: a workspace's checkpoint headers are read (`avfix status`) without torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise TrainError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    return _checked(saved, path)


def _checked(saved: Any, path: Path) -> dict[str, Any]:
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not an avfix STA checkpoint (written by `avfix train`)")
    if saved.get("schema_version") != CHECKPOINT_SCHEMA:
        raise TrainError(f"{path}: STA checkpoint schema {saved.get('schema_version')!r}, this avfix reads "
                         f"{CHECKPOINT_SCHEMA} (written by another avfix: train again)")  # fmt: skip
    return saved


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a whole STA checkpoint on the CPU."""
    return _load(Path(path), mmap=False)


def read_header(path: str | Path) -> dict[str, Any]:
    """A checkpoint's settings, data key and position, without reading its weights: from the pickle alone
    when every header value is plain (no torch import), else by torch, memory-mapped."""
    path = Path(path)
    try:
        saved = read_torch_pickle(path)
    except UnreadablePickle:  # e.g. not a checkpoint at all: torch's reading gives the clear message
        saved = None
    if isinstance(saved, dict) and not holds_torch_values(_header_of(saved)):
        return _header_of(_checked(saved, path))
    return _header_of(_load(path, mmap=True))


def _header_of(saved: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in saved.items() if key not in _STATE_KEYS}


def rng_states() -> dict[str, Any]:
    import torch

    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def restore_rng(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(_as_tuples(states["python"]))


def _as_tuples(value: Any) -> Any:
    """Python's random state as `random.setstate` wants it (a checkpoint may hand back lists)."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value
