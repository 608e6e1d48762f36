"""Reading weight files the user brings (the only file I/O models/ does) and matching them to a network.

Accepted layouts: a bare state dict; `{"state_dict": ...}` / `{"model_state_dict": ...}` / `{"model": ...}`
checkpoints; a fully pickled `nn.Module` (what `torch.save(model)` writes, as the original STANet code did).
`module.` prefixes left by DataParallel/DDP are stripped.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Wrapper keys seen in checkpoints, tried in this order.
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")
_SHOWN_KEYS = 5


def read_state_dict(path: str | Path, *, allow_full_pickle: bool = True) -> dict[str, Tensor]:
    """Load a weights file from disk and return a flat `{name: tensor}` dict.

    The safe `weights_only` loader is tried first. A fully pickled model needs the unrestricted
    unpickler, which executes code from the file: it is used only for a local file the user named,
    and can be refused with `allow_full_pickle=False`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as safe_error:
        if not allow_full_pickle:
            raise ValueError(f"{path}: not loadable as plain weights ({safe_error})") from safe_error
        log.warning("%s is not a plain state dict; unpickling it in full (trusted local file)", path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a weights file"
            raise ValueError(f"{path}: cannot be read as a PyTorch weights file ({error})") from error
    return _flatten_checkpoint(obj, path)


def _flatten_checkpoint(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path}: no state dict found (got {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{path}: the checkpoint holds no tensors (keys: {_preview(obj.keys())})")
    return strip_prefix(tensors, "module.")


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Remove `prefix` from every key that starts with it (repeatedly, for nested wrappers)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        while key.startswith(prefix):
            key = key[len(prefix):]
        out[key] = value
    return out


def _preview(keys: Iterable[object]) -> str:
    keys = sorted(str(k) for k in keys)
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOWN_KEYS else "")


def load_matching_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str | Path,
    target: str,
    optional: Callable[[str], bool] = lambda key: False,
) -> set[str]:
    """Copy `state_dict` into `module`, failing loudly on any mismatch.

    Keys for which `optional(key)` is true may be missing from the file, or present with a different
    shape (e.g. a classifier head for another class count): they are left at their initial values.
    Returns the optional keys that were not loaded. Everything else must match exactly, otherwise
    `ValueError` names the file, the target network and a few offending keys.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict and not optional(k)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape and not optional(k)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatches: {_preview(wrong_shape)}")
        raise ValueError(f"{source}: weights do not match {target} ({'; '.join(parts)})")
    skipped = {k for k in expected if k not in state_dict or state_dict[k].shape != expected[k].shape}
    loadable = {k: v for k, v in state_dict.items() if k not in skipped}
    module.load_state_dict(loadable, strict=False)
    return skipped
