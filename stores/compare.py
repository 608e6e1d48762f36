"""Are two stores (or checkpoints) the same, array by array and attribute by attribute? What the
crash-consistency tests and `benchmarks/fault_sweep.py` compare a rerun with an uninterrupted run by."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

# When a video was written says nothing about what was written.
VOLATILE_ATTRS = frozenset({"completed_at"})


def store_differences(got: str | Path, expected: str | Path, ignore: frozenset[str] = VOLATILE_ATTRS) -> list[str]:
    """Every difference between two stores: groups, arrays (values, NaN = NaN) and attributes."""
    a = zarr.open_group(str(got), mode="r", use_consolidated=False)
    b = zarr.open_group(str(expected), mode="r", use_consolidated=False)
    return _group_differences(a, b, str(got), ignore)


def _group_differences(a: Any, b: Any, where: str, ignore: frozenset[str]) -> list[str]:
    found = []
    attrs_a = {k: v for k, v in dict(a.attrs).items() if k not in ignore}
    attrs_b = {k: v for k, v in dict(b.attrs).items() if k not in ignore}
    found += [f"{where}: attribute {key!r} differs" for key in sorted(set(attrs_a) | set(attrs_b))
              if attrs_a.get(key) != attrs_b.get(key)]  # fmt: skip
    groups_a, groups_b = {n for n, _ in a.groups()}, {n for n, _ in b.groups()}
    arrays_a, arrays_b = {n for n, _ in a.arrays()}, {n for n, _ in b.arrays()}
    found += [f"{where}/{name}: only in one of them" for name in sorted((groups_a ^ groups_b) | (arrays_a ^ arrays_b))]
    for name in sorted(arrays_a & arrays_b):
        x, y = np.asarray(a[name][...]), np.asarray(b[name][...])
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            found.append(f"{where}/{name}: values differ")
    for name in sorted(groups_a & groups_b):
        found += _group_differences(a[name], b[name], f"{where}/{name}", ignore)
    return found


def checkpoint_differences(got: str | Path, expected: str | Path) -> list[str]:
    """Every difference between two torch checkpoints (tensors exactly, everything else by value)."""
    return _value_differences(torch.load(got, weights_only=True), torch.load(expected, weights_only=True), str(got))


def _value_differences(a: Any, b: Any, where: str) -> list[str]:
    if isinstance(b, dict):
        if not isinstance(a, dict) or set(a) != set(b):
            return [f"{where}: other keys"]
        return [d for key in b for d in _value_differences(a[key], b[key], f"{where}[{key!r}]")]
    if isinstance(b, (list, tuple)):
        if not isinstance(a, (list, tuple)) or len(a) != len(b):
            return [f"{where}: other length"]
        return [d for k, (x, y) in enumerate(zip(a, b)) for d in _value_differences(x, y, f"{where}[{k}]")]
    if isinstance(b, torch.Tensor):
        return [] if isinstance(a, torch.Tensor) and torch.equal(a, b) else [f"{where}: tensors differ"]
    if isinstance(b, float) and math.isnan(b):
        return [] if isinstance(a, float) and math.isnan(a) else [f"{where}: {a!r} != nan"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]
