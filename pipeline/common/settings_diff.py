"""Which recorded settings differ from the current ones: shared by `avfix status` and `avfix train`."""

from __future__ import annotations

import json
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, paths strings), so records compare equal."""
    return json.loads(json.dumps(value, default=str))


def setting_changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every setting that differs; nested tables are compared key by key."""
    old, new = jsonable(old), jsonable(new)
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [(prefix.rstrip(".") or "value", old, new)]
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += setting_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out
