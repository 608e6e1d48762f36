"""The plain Python values of a `torch.save` file, read without importing torch.

`avfix status` reads each STA checkpoint's settings and position, a few hundred bytes beside megabytes of
weights; importing torch for them cost seconds. A `torch.save` file is a zip archive whose `<name>/data.pkl`
pickles the saved object, with every tensor's bytes in a record of its own. Unpickled here with each torch
object (tensor, storage, dtype, size) stood in for by a `TorchValue` and any other class refused, that
pickle gives the plain values exactly; the caller keeps only those and lets torch read anything else.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

# What plain values pickle by reference: torch's safe loader allows the same.
_ALLOWED = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
            ("builtins", "complex"), ("builtins", "bytearray")}  # fmt: skip


class TorchValue:
    """Stands for a torch object (a tensor and its parts) in a pickle read without torch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class UnreadablePickle(Exception):
    """Not the layout or the classes this reader knows: torch must read the file."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch."):
            return TorchValue
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnreadablePickle(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> TorchValue:  # a tensor's storage, kept in its own record
        return TorchValue()


def read_torch_pickle(path: str | Path) -> Any:
    """The object `torch.save` wrote to `path`, torch objects as `TorchValue`s. Raises UnreadablePickle
    for a file this reader does not know (the legacy non-zip format, a class beyond plain values)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
            if len(names) != 1:
                raise UnreadablePickle(f"{path}: no single data.pkl")
            with archive.open(names[0]) as handle:
                return _Unpickler(handle).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise UnreadablePickle(f"{path}: {exc}") from exc


def holds_torch_values(value: Any) -> bool:
    if isinstance(value, TorchValue):
        return True
    if isinstance(value, dict):
        return any(holds_torch_values(key) or holds_torch_values(item) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(holds_torch_values(item) for item in value)
    return False
