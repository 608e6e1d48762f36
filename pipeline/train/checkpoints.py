"""STA checkpoints (WS/checkpoints/sta/): where they live, reading one, checking that it fits a run
before resuming from it, and the RNG states they carry for exact resume."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.common.settings_diff import setting_changes
from pipeline.train.config import STATrainConfig, TrainError

CHECKPOINT_FORMAT = "avfix-sta-checkpoint"
CHECKPOINT_SCHEMA = 1
CHECKPOINT_DIR = Path("checkpoints") / "sta"


def checkpoint_dir(workspace: str | Path) -> Path:
    return Path(workspace) / CHECKPOINT_DIR


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read an STA checkpoint (a trusted local file: it holds RNG states, so it is fully unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such checkpoint")
    try:
        saved = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise TrainError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not an avfix STA checkpoint (written by `avfix train`)")
    if saved.get("schema_version") != CHECKPOINT_SCHEMA:
        raise TrainError(
            f"{path}: STA checkpoint schema {saved.get('schema_version')!r}, this avfix reads {CHECKPOINT_SCHEMA}"
        )
    return saved


def check_resumable(path: Path, saved: dict[str, Any], config: STATrainConfig, data_key: str) -> None:
    """A checkpoint of another backbone, architecture, training setup or data is an error, not a guess."""
    hint = "use another workspace, or --restart to discard it and train anew"
    if saved.get("backbone") != config.backbone:
        raise TrainError(f"{path} was trained with backbone {saved.get('backbone')!r}, this run asks for "
                         f"{config.backbone!r}: {hint}")  # fmt: skip
    compared = (("architecture", saved.get("model_settings", {}), config.model_settings()),
                ("training settings", saved.get("run_settings", {}), config.run_settings()))
    for what, saved_settings, wanted in compared:
        differences = [f"{key}: {a!r} in the checkpoint, {b!r} now" for key, a, b in setting_changes(saved_settings, wanted)]
        if differences:
            shown = "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
            raise TrainError(f"{path} has other {what} ({shown}): {hint}")
    if saved.get("data_key") != data_key:
        raise TrainError(f"{path} was trained on other pseudo-labels (pseudo.zarr changed since): {hint}")


def rng_states() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
