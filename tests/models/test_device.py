"""Device choice and mixed precision: the CUDA paths, exercised on a CPU with the CUDA calls stubbed."""

from __future__ import annotations

import contextlib

import pytest
import torch

from models import device as device_module
from models.device import autocast, resolve_device


def test_auto_is_the_gpu_when_there_is_one_and_cuda_without_one_is_a_clear_error(monkeypatch):
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(RuntimeError, match="only 1 GPU"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("bf16, dtype", [(True, torch.bfloat16), (False, torch.float16)])
def test_autocast_on_cuda_uses_bfloat16_where_supported_else_float16(monkeypatch, bf16, dtype):
    entered: list[tuple[str, torch.dtype]] = []

    @contextlib.contextmanager
    def recording_autocast(device_type: str, dtype: torch.dtype):
        entered.append((device_type, dtype))
        yield

    monkeypatch.setattr(device_module.torch, "autocast", recording_autocast)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    with autocast(torch.device("cuda")):
        pass
    with autocast(torch.device("cuda"), enabled=False):
        pass
    with autocast(torch.device("cpu")):
        pass
    assert entered == [("cuda", dtype)]  # only on CUDA, only when enabled
