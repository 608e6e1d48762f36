"""One declaration per store kind: its file name, its arrays, and its store- and per-video attributes as
dataclasses. Everything that reads or writes a store goes through a `StoreSchema`; nothing else names
an attribute by string.

Attributes every store keeps (`StoreAttrs`) and every video group keeps (`VideoAttrs`) are declared
here; each kind (stores.features, stores.pseudo, stores.predictions) adds its own by subclassing them.
Attributes are written as JSON and read back into the dataclass: keys a dataclass does not declare
(left by an older avfix) are ignored, declared keys a store lacks take their defaults.

`python -m stores.schema` prints the README's "Stores" section; a test checks that the README holds it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import zarr

from stores import faults, zarr_io
from stores.zarr_io import STATUS_COMPLETE, STATUS_IN_PROGRESS, VIDEOS, ArraySpec

# Bumped when a store's layout changes so that this avfix cannot read an older one.
SCHEMA_VERSION = zarr_io.SCHEMA_VERSION


def doc(text: str, default: Any = None, default_factory: Any = None) -> Any:
    """An attribute with its description (shown in the README's schema section)."""
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(kw_only=True)
class StoreAttrs:
    """Attributes of every store's root group."""

    store_kind: str = doc("features, pseudo or predictions", "")
    schema_version: int = doc("the layout version (a store of another version is refused)", SCHEMA_VERSION)
    avfix_version: str = doc("the avfix release that last wrote the store (provenance only)", "")
    settings: dict[str, Any] = doc("the stage's output settings of its last run", default_factory=dict)
    config: dict[str, Any] = doc("the stage's whole [section] of its last run, run settings included", default_factory=dict)
    failures: dict[str, dict[str, Any]] = doc(
        "video_id -> {path, reason, input}: why a video failed, and the stamp of the input it failed on",
        default_factory=dict,
    )


@dataclass(kw_only=True)
class VideoAttrs:
    """Bookkeeping of every video group."""

    status: str = doc('"in_progress" while written; "complete" is written last', STATUS_IN_PROGRESS)
    fingerprint: str | None = doc("hash of the inputs, output settings and algorithm version it was made from")
    algorithm_version: int | None = doc("the stage's algorithm version that made it")
    completed_at: float | None = doc("when it was marked complete (seconds since the epoch)")
    damage: str | None = doc("set when a reader found a chunk missing or damaged: the video is made again")


S = TypeVar("S", bound=StoreAttrs)
V = TypeVar("V", bound=VideoAttrs)


def to_attrs(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_attrs(cls: type, attrs: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in attrs.items() if key in names})


@dataclass(frozen=True)
class StoreSchema(Generic[S, V]):
    """One store kind: where it lives, what it holds, and its typed attributes."""

    kind: str
    file_name: str
    made_by: str  # the command that writes it (named in "run ... first" errors)
    description: str
    arrays: tuple[ArraySpec, ...]
    store_type: type[S]
    video_type: type[V]
    # Attributes that let a stage reuse part of an unfinished video's work; `forget_completion` drops them.
    reuse_attrs: tuple[str, ...] = ()
    # Labels of categorical dimensions (e.g. branch: S, ST, SA), applied by `open_dataset`.
    coords: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # --- the store ---------------------------------------------------------------------------------

    def path(self, workspace: str | Path, file_name: str | None = None) -> Path:
        return Path(workspace) / (file_name or self.file_name)

    def open_for_writing(self, path: str | Path) -> zarr.Group:
        """Open (creating when missing) a store of this kind; one of another kind or schema is an error."""
        return zarr_io.open_kind_for_writing(path, self.kind)

    def open_for_reading(self, path: str | Path) -> zarr.Group:
        """Open an existing store of this kind, with a clear error when it is missing or of another kind."""
        return zarr_io.open_kind_for_reading(path, self.kind, self.made_by)

    def read_store(self, root: zarr.Group) -> S:
        return from_attrs(self.store_type, dict(root.attrs))

    def update_store(self, root: zarr.Group, **changes: Any) -> None:
        """Write store-level attributes (coordinating process only); each key must be declared. A new
        store gets every declared attribute (the defaults where `changes` does not say)."""
        self._check_keys(self.store_type, changes)
        current = {} if "store_kind" in root.attrs else to_attrs(self.store_type())
        root.update_attributes({**current, **changes, "store_kind": self.kind, "schema_version": SCHEMA_VERSION,
                           "avfix_version": zarr_io.package_version()})  # fmt: skip
        faults.reached("attrs")

    # --- videos ------------------------------------------------------------------------------------

    def read_video(self, root: zarr.Group | None, video_id: str) -> V | None:
        group = zarr_io.video_group(root, video_id) if root is not None else None
        return None if group is None else self.read_group(group)

    def read_group(self, group: zarr.Group) -> V:
        """The attributes of a video's group already at hand."""
        return from_attrs(self.video_type, dict(group.attrs))

    def video_ids(self, root: zarr.Group) -> list[str]:
        """Every video group, complete or not."""
        return sorted(name for name, _ in root[VIDEOS].groups()) if VIDEOS in root else []

    def complete_videos(self, root: zarr.Group) -> list[str]:
        return zarr_io.complete_video_ids(root)

    def create_video(self, root: zarr.Group, video_id: str, attrs: V, shapes: dict[str, tuple[int, ...]],
                     encodings: dict[str, zarr_io.Encoding] | None = None) -> zarr.Group:  # fmt: skip
        """(Re)create a video's group with every array at its final shape, marked in progress; `encodings`
        names the arrays whose codecs are not the default zstd + crc32c."""
        missing = [spec.name for spec in self.arrays if spec.name not in shapes]
        if missing:
            raise ValueError(f"no shape for array(s) {', '.join(missing)} of a {self.kind} video")
        group = zarr_io.new_video_group(root, video_id, to_attrs(dataclasses.replace(attrs, status=STATUS_IN_PROGRESS)))
        for spec in self.arrays:  # not opened: nobody needs them yet
            zarr_io.make_array(group, spec, shapes[spec.name], (encodings or {}).get(spec.name))
        return group

    def replace_array(self, group: zarr.Group, name: str, shape: tuple[int, ...]) -> zarr.Array:
        """One array of a video made anew at another shape (e.g. a cache's maps at another size)."""
        spec = next(spec for spec in self.arrays if spec.name == name)
        return zarr_io.create_array(group, spec, shape)

    def update_video(self, group: zarr.Group, **changes: Any) -> None:
        self._check_keys(self.video_type, changes)
        group.update_attributes(changes)
        faults.reached("attrs")

    def mark_complete(self, group: zarr.Group, fingerprint: str, algorithm_version: int, **changes: Any) -> None:
        """Written last: only now does the video count as done."""
        self._check_keys(self.video_type, changes)
        group.update_attributes({**changes, "fingerprint": fingerprint, "algorithm_version": algorithm_version,
                            "completed_at": time.time(), "status": STATUS_COMPLETE})  # fmt: skip
        faults.reached("attrs")

    def mark_in_progress(self, group: zarr.Group) -> None:
        """Before a complete video is partly rewritten: a kill midway must not leave it looking complete."""
        group.attrs["status"] = STATUS_IN_PROGRESS
        faults.reached("attrs")

    def forget_completion(self, path: str | Path) -> int:
        """Mark every video unfinished and drop its partial-reuse records, so the stage's next run redoes
        each one from the start; returns how many videos were reset. Nothing is deleted."""
        if not Path(path).exists():
            return 0
        root = zarr_io.open_root(path, mode="r+")
        ids = self.video_ids(root)
        for video_id in ids:
            self.forget_video(root, video_id)
        return len(ids)

    def forget_video(self, root: zarr.Group, video_id: str, damage: str | None = None) -> None:
        """Mark one video unfinished (`damage`: why), dropping its partial-reuse records: made again."""
        group = zarr_io.video_group(root, video_id)
        assert group is not None
        kept = {k: v for k, v in dict(group.attrs).items() if k not in self.reuse_attrs}
        group.attrs.put({**kept, "status": STATUS_IN_PROGRESS, "damage": damage})
        faults.reached("attrs")

    def open_dataset(self, path: str | Path, video_id: str) -> Any:
        """One video as an xarray Dataset, with labels for the categorical dimensions."""
        import xarray as xr

        dataset = xr.open_zarr(str(path), group=f"{VIDEOS}/{video_id}", consolidated=False)
        labels = {dim: list(values) for dim, values in self.coords.items() if dim in dataset.dims}
        return dataset.assign_coords(labels)

    @staticmethod
    def _check_keys(cls: type, changes: dict[str, Any]) -> None:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise KeyError(f"{cls.__name__} declares no attribute {', '.join(unknown)}")

    # --- the README's schema section ---------------------------------------------------------------

    def markdown(self) -> str:
        """This kind's layout: its own attributes (beyond every store's) and its arrays."""
        lines = [f"{self.file_name}/  ({self.made_by}): {self.description}", "  attrs:"]
        lines += [f"    {name:<22} {text}" for name, text in _attribute_docs(self.store_type, StoreAttrs)]
        lines += [f"  {VIDEOS}/<video_id>/", "    attrs:"]
        lines += [f"      {name:<22} {text}" for name, text in _attribute_docs(self.video_type, VideoAttrs)]
        for spec in self.arrays:
            lines.append(f"    {spec.name:<13} {spec.dtype:<8} ({', '.join(spec.dims)})")
            lines.append(f"    {'':<13} {spec.doc}")
        return "\n".join(lines)


def _attribute_docs(cls: type, base: type | None = None) -> list[tuple[str, str]]:
    """(name, description) of the attributes `cls` declares beyond `base`'s."""
    inherited = {f.name for f in dataclasses.fields(base)} if base is not None else set()
    return [(f.name, str(f.metadata.get("doc", ""))) for f in dataclasses.fields(cls) if f.name not in inherited]


def common_markdown() -> str:
    """The attributes every store and every video group carry."""
    lines = ["every store/        attrs:"]
    lines += [f"  {name:<22} {text}" for name, text in _attribute_docs(StoreAttrs)]
    lines += [f"  {VIDEOS}/<video_id>/  attrs:"]
    lines += [f"    {name:<20} {text}" for name, text in _attribute_docs(VideoAttrs)]
    return "\n".join(lines)


def schemas() -> tuple[StoreSchema, ...]:
    """Every store kind, in the order of the stages that write them."""
    from stores import cache, features, predictions, pseudo

    return features.SCHEMA, pseudo.SCHEMA, predictions.SCHEMA, cache.SCAM_CACHE, cache.STA_CACHE


def readme_section() -> str:
    """The schema part of the README's "Stores" section (tests check that the README holds it)."""
    blocks = [common_markdown()] + [schema.markdown() for schema in schemas()]
    return "\n\n".join(f"```\n{block}\n```" for block in blocks)


if __name__ == "__main__":
    print(readme_section())
