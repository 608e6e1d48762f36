"""Choosing the torch device and mixed precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cpu"; "cuda" or "cuda:N" (an error without a GPU)."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but no CUDA GPU is available; use 'cpu' or 'auto'")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        return device
    raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda'")


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bfloat16/float16 autocast on CUDA; nothing on CPU (CPU autocast is slower for these convs)."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast(device_type="cuda", dtype=dtype):
            yield
    else:
        yield


def set_cpu_threads(device: torch.device, threads: int) -> None:
    """Intra-op CPU threads for work on `device` (0 keeps torch's choice; nothing changes for a GPU).

    Measured on the 2-core CI machine: the small convolutions of the CPU presets ran 3-6x slower with 2
    threads than with 1 as soon as any other process wanted a core (the threads spin-wait for each other).
    """
    if device.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
