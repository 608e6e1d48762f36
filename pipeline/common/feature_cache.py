"""Building a cache store of a frozen network's outputs (`stores.cache`), part by part and video by video.

A part (one array of one video) is valid while the video's `parts[name]` holds the key of what it was
computed from (which includes its size); the key is recorded only after the whole array is written, so
a killed run recomputes the part, and a part a reader found damaged loses its key
(`StoreSchema.forget_video`). A part computed at another size gets its array made anew at the new
shape; the other parts stay. A video's group is made again, every part with it, when its layout key
(the network and its weights, the number of frames) changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.common.progress import Progress
from stores import cache as cstore
from stores import zarr_io
from stores.chunks import rows_of


def block_step(chunk_rows: list[int], block_rows: int) -> int:
    """Frames per block written by `CacheBuilder.fill`: whole chunks of every array, about `block_rows`."""
    whole = math.lcm(*chunk_rows)
    return whole * max(1, block_rows // whole)


@dataclass(frozen=True)
class CachedVideo:
    """One video of a cache: its group is remade when `layout_key` changes."""

    video_id: str
    n_frames: int
    layout_key: str
    shapes: dict[str, tuple[int, ...]]  # array name -> its full shape now


class CacheBuilder:
    """Computes the missing or stale parts of a cache store's videos, `block_rows` frames at a time.

    `ensure` does it all in this process. Spread over processes, the coordinating one finds the `stale`
    parts, `prepare`s their groups and arrays and `record`s each part once its rows are written; a
    worker, with a reading builder (`writable=False`), only `fill`s the rows of its videos.
    """

    def __init__(self, schema: Any, path: Path, progress: Progress, block_rows: int, backbone: str,
                 writable: bool = True) -> None:  # fmt: skip
        self.schema = schema
        self.path = path
        self.progress = progress
        self.block_rows = block_rows
        if writable:
            self.root = schema.open_for_writing(path)
            schema.update_store(self.root, backbone=backbone)
        else:
            self.root = zarr_io.open_root(path, mode="r+")  # rows only: the coordinator writes attributes
        self.part_names = tuple(spec.name for spec in schema.arrays)

    def parts(self, video: CachedVideo) -> dict[str, str]:
        """The video's valid parts: name -> key."""
        attrs = self.schema.read_video(self.root, video.video_id)
        return dict(attrs.parts) if attrs is not None and attrs.fingerprint == video.layout_key else {}

    def stale(self, names: tuple[str, ...], videos: list[tuple[CachedVideo, str]]) -> list[tuple[CachedVideo, str]]:
        """The (video, key) pairs for which any of the parts `names` has another recorded key."""
        def outdated(video: CachedVideo, key: str) -> bool:
            parts = self.parts(video)  # one read of the video's attributes, whatever the number of names
            return any(parts.get(name) != key for name in names)

        return [(video, key) for video, key in videos if outdated(video, key)]

    def prepare(self, names: tuple[str, ...], video: CachedVideo) -> None:
        """The video's group and the arrays `names` at their shapes, marked in progress without them."""
        parts = {name: value for name, value in self.parts(video).items() if name not in names}
        group = self._group(video)
        self.schema.update_video(group, parts=parts, status=zarr_io.STATUS_IN_PROGRESS)
        for name in names:
            if tuple(group[name].shape) != tuple(video.shapes[name]):
                self.schema.replace_array(group, name, video.shapes[name])

    def fill(self, names: tuple[str, ...], video: CachedVideo,
             compute_block: Callable[[slice], dict[str, np.ndarray]], bar: Any = None,
             frames: slice | None = None) -> None:  # fmt: skip
        """Write the rows of the (prepared) parts `names`, a block of frames at a time: of the whole video,
        or of its segment `frames`, which must start on a multiple of `block_step`."""
        group = self.group(video.video_id)
        writers = {name: rows_of(group[name]) for name in names}
        step = block_step([group[name].chunks[0] for name in names], self.block_rows)
        frames = frames or slice(0, video.n_frames)
        if frames.start % step:
            raise ValueError(f"a segment of {video.video_id} starts at frame {frames.start}, not on a block of {step}")
        for start in range(frames.start, frames.stop, step):
            block = slice(start, min(start + step, frames.stop))
            rows = compute_block(block)
            for name in names:
                writers[name].write(start, rows[name])
            if bar is not None:
                bar.update(block.stop - block.start)

    def record(self, names: tuple[str, ...], video: CachedVideo, key: str) -> None:
        """The parts `names` are written: valid for `key` (the video complete once every part is)."""
        group = self.group(video.video_id)
        parts = {**self.parts(video), **dict.fromkeys(names, key)}
        done = all(name in parts for name in self.part_names)
        self.schema.update_video(group, parts=parts, damage=None,
                                 status=zarr_io.STATUS_COMPLETE if done else zarr_io.STATUS_IN_PROGRESS)  # fmt: skip

    def ensure(self, names: tuple[str, ...], videos: list[tuple[CachedVideo, str]],
               compute: Callable[[CachedVideo], Callable[[slice], dict[str, np.ndarray]]], unit: str) -> None:  # fmt: skip
        """Compute the parts `names` (one pass gives all of them) of each stale (video, key), here.
        `compute(video)` opens what the video's blocks are read from and returns the function of a
        block of frames."""
        todo = self.stale(names, videos)
        if not todo:
            return
        bar = self.progress.bar(sum(video.n_frames for video, _ in todo), f"cache {', '.join(names)}", unit)
        for video, key in todo:
            compute_block = compute(video)
            self.prepare(names, video)
            self.fill(names, video, compute_block, bar)
            self.record(names, video, key)
        bar.close()

    def group(self, video_id: str) -> Any:
        group = zarr_io.video_group(self.root, video_id)
        assert group is not None, f"{video_id} is not in {self.path}"
        return group

    def _group(self, video: CachedVideo) -> Any:
        attrs = self.schema.read_video(self.root, video.video_id)
        if attrs is None or attrs.fingerprint != video.layout_key:
            attrs = cstore.CacheVideo(n_frames=video.n_frames, fingerprint=video.layout_key)
            return self.schema.create_video(self.root, video.video_id, attrs, video.shapes)
        return self.group(video.video_id)
