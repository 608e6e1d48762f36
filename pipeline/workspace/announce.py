"""The first line of a torch stage: which preset and device run, and why (a CPU user should learn at once
that the `paper` preset takes hours here, and a GPU user that the GPU is used)."""

from __future__ import annotations

from typing import Any

from pipeline.common.cuda import cuda_available
from pipeline.workspace.config import LoadedConfig, Overrides
from pipeline.workspace.presets import FAST_ON_CPU

DEFAULT, FROM_FILE, FROM_OPTION = "default", "file", "option"


def preset_origin(loaded: LoadedConfig, overrides: Overrides) -> str:
    if overrides.preset is not None:
        return FROM_OPTION
    return FROM_FILE if loaded.existed else DEFAULT


def run_line(stage_name: str, settings: Any, preset: str, origin: str, config_file: str) -> str | None:
    """"<stage>: preset P (why), device D (why)" for a stage with a torch device setting, else None."""
    device_name = getattr(settings, "device", None)
    if device_name is None:
        return None
    device = _device_text(device_name, bool(getattr(settings, "amp", True)))
    return f"{stage_name}: preset {preset} ({_preset_reason(preset, origin, config_file)}), {device}"


def _preset_reason(preset: str, origin: str, config_file: str) -> str:
    if origin == FROM_OPTION:
        why = "--preset"
    elif origin == FROM_FILE:
        why = f"[run] preset in {config_file}"
    elif cuda_available():
        why = "the default with a CUDA GPU"
    else:
        why = "the default without a CUDA GPU"
    if preset == "paper" and not cuda_available():
        why += f"; on a CPU it takes hours: --preset {FAST_ON_CPU} trains heads on a frozen backbone in minutes"
    return why


def _device_text(name: str, amp: bool) -> str:
    # Imported here: only a stage about to run torch names its device (`avfix run` with nothing to do needs no torch).
    import torch

    from models.device import resolve_device

    try:
        device = resolve_device(name)
    except (RuntimeError, ValueError):
        return f"device {name}"  # the stage itself names the problem
    how = "auto" if name == "auto" else "as set"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"device {device} ({how}: {torch.cuda.get_device_name(index)}{', AMP' if amp else ''})"
    return f"device cpu ({'auto: no CUDA GPU found' if name == 'auto' else 'as set'})"
