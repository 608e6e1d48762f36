"""Whether a CUDA GPU is there, without importing torch (about 2 s, more on a loaded machine) when the
machine plainly has none: `avfix status` and `--help` need the answer only to pick the default preset."""

from __future__ import annotations

import sys
from pathlib import Path

# Device nodes of a GPU driver torch's CUDA (or ROCm, which torch also reports as CUDA) can use:
# NVIDIA, AMD ROCm, WSL2's GPU paravirtualisation.
_DRIVER_NODES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def cuda_available() -> bool:
    """torch.cuda.is_available(); asked without importing torch only where no GPU driver exists."""
    if "torch" not in sys.modules and not _driver_may_exist():
        return False
    import torch

    return torch.cuda.is_available()


def _driver_may_exist() -> bool:
    if sys.platform == "darwin":  # torch has no CUDA build for macOS
        return False
    if not sys.platform.startswith("linux"):
        return True  # no cheap test elsewhere: torch decides
    return any(Path(node).exists() for node in _DRIVER_NODES)
