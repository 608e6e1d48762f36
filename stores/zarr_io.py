"""What every avfix store shares: opening, per-video groups, arrays with named dimensions and
checksummed chunks, completion markers and consolidation.

Rules that keep writers safe on Zarr v3 (one command writes a store at a time: `stores.lock`):
- the coordinating process alone writes store-level attributes and (re)creates a video's group;
- a worker writes only chunks of its own video's arrays, which were preallocated beforehand;
- a video is complete only when its group carries `status == "complete"` and a fingerprint, written last.
Every chunk is written, even an all-fill one, and ends with its CRC32C (`stores.chunks`), so a missing
or damaged chunk is told from an empty one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from stores import faults

SCHEMA_VERSION = 1
VIDEOS = "videos"

# Every chunk is written, even an all-fill one: a missing chunk then always means damage. The setting is
# zarr's per process (an array's own `config` is not kept when it is opened again).
zarr.config.set({"array.write_empty_chunks": True})

STATUS_COMPLETE = "complete"
STATUS_IN_PROGRESS = "in_progress"


class StoreError(ValueError):
    """A store that cannot be used: missing, of another kind or schema, or damaged. The message names it."""


class StoreMissing(StoreError, FileNotFoundError):
    """The store does not exist (yet)."""


@dataclass(frozen=True)
class ArraySpec:
    """Name, dimensions, dtype and chunk length along the first axis of one per-video array."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    chunk_t: int = 16
    fill_value: Any = 0
    zstd_level: int = 3
    doc: str = ""  # what it holds (the README's schema section)


@dataclass(frozen=True)
class Encoding:
    """An array's codecs when they are not `codecs(spec.zstd_level)`: zarr's filters (array-to-array),
    serializer (array-to-bytes, "auto" = plain bytes) and compressors (bytes-to-bytes, ending with
    crc32c so that every chunk stays checked)."""

    filters: tuple[Any, ...] = ()
    serializer: Any = "auto"
    compressors: tuple[Any, ...] = ()


def compressor(level: int = 3) -> ZstdCodec:
    return ZstdCodec(level=level)


def codecs(level: int = 3) -> tuple[Any, ...]:
    """The bytes-to-bytes codecs of avfix's arrays: zstd, then the chunk's CRC32C."""
    return ZstdCodec(level=level), Crc32cCodec()


def open_root(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a store's root group. `mode` 'r' reads only; 'a' creates the store when missing."""
    path = Path(path)
    if mode == "r" and not path.exists():
        raise StoreMissing(f"{path}: no such store")
    # Never through consolidated metadata: it is a snapshot from the end of the last run, stale for
    # groups created since (and after a killed run); it is written for outside readers such as xarray.
    root = zarr.open_group(str(path), mode=mode, zarr_format=3, use_consolidated=False)
    if mode != "r" and VIDEOS not in root:
        root.create_group(VIDEOS)
    return root


def open_kind_for_writing(path: str | Path, kind: str) -> zarr.Group:
    """Open (creating when missing) a store of `kind`; an existing store of another kind or schema is an error."""
    root = open_root(path, mode="a")
    if "store_kind" in root.attrs:
        check_schema(root, kind, path)
    return root


def open_kind_for_reading(path: str | Path, kind: str, made_by: str) -> zarr.Group:
    """Open an existing store of `kind`, with a clear error when it is missing (naming the command
    `made_by` that makes it) or of another kind or schema."""
    if not Path(path).exists():
        raise StoreMissing(f"{path}: no {kind} store (run `{made_by}` first)")
    root = open_root(path, mode="r")
    check_schema(root, kind, path)
    return root


def check_schema(root: zarr.Group, kind: str, path: str | Path) -> None:
    """Raise a clear error when the store is not a `kind` store of this schema version."""
    attrs = dict(root.attrs)
    found_kind = attrs.get("store_kind")
    if found_kind != kind:
        raise StoreError(f"{path}: not an avfix {kind} store (store_kind={found_kind!r})")
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: {kind} store has schema version {version!r}, this avfix reads version {SCHEMA_VERSION}"
        )


def package_version() -> str:
    try:
        return importlib.metadata.version("avfix")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def video_group(root: zarr.Group, video_id: str) -> zarr.Group | None:
    key = f"{VIDEOS}/{video_id}"
    return root[key] if key in root else None  # type: ignore[return-value]


def open_video_for_rows(path: str | Path, video_id: str) -> zarr.Group:
    """A video's group for a worker filling its arrays (the coordinating process created it); opened past
    any consolidated metadata, which would not know a group created since it was written."""
    group = video_group(open_root(path, mode="r+"), video_id)
    if group is None:
        raise KeyError(f"{path}: no group for video {video_id!r}")
    return group


def new_video_group(root: zarr.Group, video_id: str, attrs: dict[str, Any]) -> zarr.Group:
    """(Re)create a video's group, empty and marked in progress (coordinating process only).

    In a local store its zarr.json (zarr's own, attributes included) is written straight to its folder:
    zarr-python's `create_group` reads the parents' metadata first, and the root's holds the consolidated
    metadata of every video once a run has ended, so each new group cost time in proportion to the
    store (106 ms at 1,200 videos of features, against 2.4 ms before the first consolidation): a rerun
    that resumes or adds videos to an AVE-sized store would spend most of its time there.
    """
    videos = root[VIDEOS]
    attrs = {**attrs, "status": STATUS_IN_PROGRESS}
    store_root = getattr(root.store, "root", None)  # a local store: its folder
    if store_root is not None:
        folder = Path(store_root) / root.path / VIDEOS / video_id
        if folder.exists():  # removed as files: a group left half-written by a killed run may not even open
            shutil.rmtree(folder)
        _write_node(folder, _group_json(attrs))
        group = videos[video_id]
    else:
        if video_id in videos:
            del videos[video_id]
        group = videos.create_group(video_id, overwrite=True)
        group.update_attributes(attrs)
    faults.reached("attrs")
    return group  # type: ignore[return-value]


def _group_json(attrs: dict[str, Any]) -> str:
    from zarr.core.group import GroupMetadata

    return _zarr_json(GroupMetadata(attributes=attrs))


def _zarr_json(metadata: Any) -> str:
    """The zarr.json text zarr-python writes for a node's `metadata`."""
    from zarr.core.buffer import default_buffer_prototype

    return metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes().decode()


def _write_node(folder: Path, document: str) -> None:
    """A new node's zarr.json in `folder` (made), written under a partial name and renamed into place."""
    folder.mkdir(parents=True)
    partial = folder / ".zarr.json.partial"
    partial.write_text(document, encoding="utf-8")
    partial.replace(folder / "zarr.json")


# Chunk files side by side in their array's folder ("c.3.0.0.0"), not nested as zarr's default "/" keys
# nest them ("c/3/0/0/0"): each chunk of a 4-d array then made four folders, which cost 0.35 ms of kernel
# time apiece here, 0.2-0.6 ms per extracted frame; AVE at 16 frames a chunk would hold ~750,000 folders,
# and shared cluster file systems make folders slower still. Arrays written with "/" keys still read.
CHUNK_KEYS = {"name": "default", "separator": "."}


def create_array(group: zarr.Group, spec: ArraySpec, shape: tuple[int, ...],
                 encoding: Encoding | None = None) -> zarr.Array:  # fmt: skip
    """(Re)create array `spec` of `group` at `shape`, empty (its chunks are written afterwards), and open it."""
    make_array(group, spec, shape, encoding)
    return group[spec.name]  # type: ignore[return-value]


def make_array(group: zarr.Group, spec: ArraySpec, shape: tuple[int, ...], encoding: Encoding | None = None) -> None:
    """`create_array` without opening the array: its zarr.json written directly in a local store, made
    by zarr-python in any other."""
    if not write_array_metadata(group, spec, shape, encoding):
        chunks, kwargs = _array_arguments(spec, shape, encoding)
        group.create_array(spec.name, shape=shape, chunks=chunks, overwrite=True, **kwargs)


def write_array_metadata(group: zarr.Group, spec: ArraySpec, shape: tuple[int, ...],
                         encoding: Encoding | None = None) -> bool:  # fmt: skip
    """In a local store, (re)create array `spec` of `group` by writing its zarr.json straight to its
    folder (atomically), without opening it; False for any other kind of store (nothing written).

    zarr-python makes an array through its event loop, checking and writing the parents as it goes: 4-6 ms
    each, ~20 ms of the ~33 ms extract's coordinator spent per video on creating one. The file written here
    is zarr's own: its metadata for the same arguments, made once per kind of array (`_metadata_template`)
    with this array's length put in. (zarr-python also reads the parents' metadata, the root's with the
    consolidated metadata of the whole store in it: see `new_video_group`.)
    """
    store_root = getattr(group.store, "root", None)
    if store_root is None:
        return False
    chunks, _ = _array_arguments(spec, shape, encoding)
    document = json.loads(_metadata_template(spec, tuple(shape[1:]), encoding))
    document["shape"] = list(shape)
    document["chunk_grid"]["configuration"]["chunk_shape"] = list(chunks)
    folder = Path(store_root) / group.path / spec.name
    if folder.exists():  # as zarr's overwrite: the chunks of the array it replaces go with it
        shutil.rmtree(folder)
    _write_node(folder, json.dumps(document, indent=2))
    return True


def _array_arguments(spec: ArraySpec, shape: tuple[int, ...], encoding: Encoding | None) -> tuple[tuple[int, ...], dict]:
    chunks = (max(1, min(spec.chunk_t, shape[0] or 1)),) + tuple(shape[1:])
    encoding = encoding or Encoding(compressors=codecs(spec.zstd_level))
    return chunks, dict(dtype=spec.dtype, fill_value=spec.fill_value, filters=encoding.filters,
                        serializer=encoding.serializer, compressors=encoding.compressors,
                        dimension_names=spec.dims, chunk_key_encoding=CHUNK_KEYS)  # fmt: skip


_TEMPLATES: dict[str, str] = {}


def _metadata_template(spec: ArraySpec, row_shape: tuple[int, ...], encoding: Encoding | None) -> str:
    """The zarr.json zarr-python writes for array `spec` with rows of `row_shape` (its length aside)."""
    key = repr((spec, row_shape, encoding))
    if key not in _TEMPLATES:
        from zarr.storage import MemoryStore

        shape = (1, *row_shape)
        chunks, kwargs = _array_arguments(spec, shape, encoding)
        _TEMPLATES[key] = _zarr_json(zarr.create_array(MemoryStore(), shape=shape, chunks=chunks, **kwargs).metadata)
    return _TEMPLATES[key]


def is_complete(group: zarr.Group | None, fingerprint: str | None = None) -> bool:
    if group is None:
        return False
    attrs = group.attrs
    if attrs.get("status") != STATUS_COMPLETE:
        return False
    return fingerprint is None or attrs.get("fingerprint") == fingerprint


def complete_video_ids(root: zarr.Group) -> list[str]:
    if VIDEOS not in root:
        return []
    videos = root[VIDEOS]
    return sorted(name for name, g in videos.groups() if is_complete(g))


def consolidate(path: str | Path) -> None:
    """Consolidate metadata once the writers are done (never while they run)."""
    with warnings.catch_warnings():
        # Consolidated metadata is not yet part of the Zarr v3 spec; zarr-python reads and writes it.
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(path))


def fingerprint(parts: Iterable[Any]) -> str:
    """A stable hash of JSON-able parts (settings, input hashes, code version)."""
    text = json.dumps(list(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
