"""Which settings change a stage's output: every field of a config dataclass says so once, in its metadata.

    output   changes what the stage writes: enters its fingerprints and `avfix status`'s diffs
    run      changes only how the work runs (threads, workers, logging, inference batch sizes)
    path     names an input file: its path (and, where a stage hashes it, its content) enters the
             fingerprints; a relative path in avfix.toml is relative to the file's folder
    device   where the work runs (auto, cpu, cuda:N): `--device` sets every one; never in a fingerprint

A field holding a nested dataclass is classified by its holder, and the nested dataclass's own fields
may refine that (a `run` field inside an `output` table stays out of fingerprints). Dataclasses from
`models/` carry no metadata (models are pure torch): their fields take their holder's role.

`scope` names the parts of a stage's work a setting invalidates, so a change redoes only those parts
(pseudolabel: classifiers, maps, final; train: architecture; predict: maps, overlay). A field left
without scope takes its holder's.

Fingerprints, status diffs and the TOML table all derive from this; a test walks every config
dataclass and fails on an unclassified field.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any, Iterator

ROLE = "avfix_role"
SCOPE = "avfix_scope"


class Role(str, enum.Enum):
    OUTPUT = "output"
    RUN = "run"
    PATH = "path"
    DEVICE = "device"


_MISSING: Any = dataclasses.MISSING


def _setting(role: Role, default: Any, default_factory: Any, scope: tuple[str, ...]) -> Any:
    metadata = {ROLE: role, SCOPE: tuple(scope)}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def output_setting(default: Any = _MISSING, *, default_factory: Any = _MISSING, scope: tuple[str, ...] = ()) -> Any:
    """A setting that changes what the stage writes."""
    return _setting(Role.OUTPUT, default, default_factory, scope)


def run_setting(default: Any = _MISSING, *, default_factory: Any = _MISSING) -> Any:
    """A setting that changes only how the work runs, never its result."""
    return _setting(Role.RUN, default, default_factory, ())


def path_setting(default: Any = None, *, scope: tuple[str, ...] = ()) -> Any:
    """An input file (or folder) the stage reads."""
    return _setting(Role.PATH, default, _MISSING, scope)


def device_setting(default: str = "auto") -> Any:
    """The device the work runs on."""
    return _setting(Role.DEVICE, default, _MISSING, ())


# --- reading the classification -------------------------------------------------------------------


def role_of(field: dataclasses.Field) -> Role | None:
    return field.metadata.get(ROLE)


def _classified_fields(obj: Any, role: Role | None, scope: tuple[str, ...]) -> Iterator[tuple[dataclasses.Field, Role, tuple[str, ...]]]:
    """Each field of a dataclass (instance or class) with its role and scope, inherited from the holder
    where the field does not say."""
    for field in dataclasses.fields(obj):
        own_role = role_of(field)
        own_scope = field.metadata.get(SCOPE) or ()
        yield field, own_role or role, own_scope or scope  # type: ignore[misc]


def settings(obj: Any, roles: set[Role], scope: str | None = None, _role: Role | None = None,
             _scope: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """The JSON-able values of the fields of `obj` whose role is in `roles` (and, when `scope` is given,
    whose scope names it), nested dataclasses as nested dicts (left out when nothing in them qualifies)."""
    values: dict[str, Any] = {}
    for field, role, field_scope in _classified_fields(obj, _role, _scope):
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            nested = settings(value, roles, scope, role, field_scope)
            if nested:
                values[field.name] = nested
        elif role in roles and (scope is None or scope in field_scope):
            values[field.name] = jsonable(value)
    return values


def output_settings(obj: Any, scope: str | None = None) -> dict[str, Any]:
    """What changes the output: the output and path settings (of one scope, when given)."""
    return settings(obj, {Role.OUTPUT, Role.PATH}, scope)


def keys_with_role(cls: type, role: Role, _role: Role | None = None, _prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted keys (as tuples) of every field of `cls` with `role` (nested dataclasses walked)."""
    keys = []
    for field, field_role, _ in _classified_fields(cls, _role, ()):
        nested_cls = _dataclass_type(cls, field)
        if nested_cls is not None:
            keys += keys_with_role(nested_cls, role, field_role, _prefix + (field.name,))
        elif field_role == role:
            keys.append(_prefix + (field.name,))
    return keys


def unclassified_fields(cls: type, _prefix: str = "") -> list[str]:
    """Dotted names of fields that have no role of their own and none from a holder (for the tests)."""
    missing = []
    for field in dataclasses.fields(cls):
        name = f"{_prefix}{field.name}"
        if role_of(field) is None:
            missing.append(name)
            continue
        nested_cls = _dataclass_type(cls, field)
        if nested_cls is not None and _owns_metadata(nested_cls):
            missing += unclassified_fields(nested_cls, f"{name}.")
    return missing


def _owns_metadata(cls: type) -> bool:
    """Pipeline dataclasses classify their own fields; models' (pure torch) inherit their holder's role."""
    return not cls.__module__.startswith("models.")


def _dataclass_type(cls: type, field: dataclasses.Field) -> type | None:
    """The dataclass a field holds, found from its default (every nested config here has one)."""
    if field.default_factory is not _MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        value = field.default
    return type(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else None


def nested_config_types(cls: type) -> list[type]:
    """`cls` and every dataclass type nested in it."""
    found = [cls]
    for field in dataclasses.fields(cls):
        nested = _dataclass_type(cls, field)
        if nested is not None:
            found += nested_config_types(nested)
    return found


def jsonable(value: Any) -> Any:
    """Tuples as lists, paths as strings, dataclasses as dicts: values as JSON (and fingerprints) hold them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def setting_changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every setting that differs; nested tables are compared key by key, and
    values as they read back from JSON (a recorded tuple is a list)."""
    old, new = json.loads(json.dumps(jsonable(old))), json.loads(json.dumps(jsonable(new)))
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


def describe_changes(old: Any, new: Any, limit: int = 3) -> str:
    """"key: old -> new; ..." for the first `limit` settings that differ, or "" when none does."""
    found = [f"{key}: {a!r} -> {b!r}" for key, a, b in setting_changes(old, new)]
    return "; ".join(found[:limit]) + ("; ..." if len(found) > limit else "")


def from_settings(cls: type, values: dict[str, Any]) -> Any:
    """A config dataclass from recorded settings (e.g. a store's `settings`): nested tables become nested
    dataclasses, lists of tuple fields tuples; settings it does not record keep their defaults."""
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value = values[field.name]
        nested = _dataclass_type(cls, field)
        if nested is not None and isinstance(value, dict):
            value = from_settings(nested, value)
        elif isinstance(value, list) and isinstance(_default_of(field), tuple):
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def _default_of(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not _MISSING else field.default  # type: ignore[misc]
