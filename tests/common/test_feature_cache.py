"""Building a cache store part by part (`pipeline.common.feature_cache.CacheBuilder`)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.common.feature_cache import CacheBuilder, CachedVideo
from pipeline.common.progress import Progress
from stores import cache as cstore


def sta_video(video_id: str, n_frames: int = 20) -> CachedVideo:
    shapes = {"stride32": (n_frames, 2, 3, 3), "stride16": (n_frames, 2, 6, 6), "stride8": (n_frames, 2, 12, 12)}
    return CachedVideo(video_id, n_frames, layout_key="layout-1", shapes=shapes)


def rows_of_levels(video: CachedVideo) -> Callable[[slice], dict[str, np.ndarray]]:
    def block(frames: slice) -> dict[str, np.ndarray]:
        n = frames.stop - frames.start
        return {name: np.full((n, *shape[1:]), frames.start, dtype=np.float16) for name, shape in video.shapes.items()}

    return block


def test_stale_parts_are_found_with_one_read_of_each_videos_attributes(tmp_path, monkeypatch):
    builder = CacheBuilder(cstore.STA_CACHE, tmp_path / "sta-cache.zarr", Progress(enabled=False), 16, "net")
    names = ("stride32", "stride16", "stride8")
    videos = [sta_video("a"), sta_video("b")]
    builder.ensure(names, [(video, "key-1") for video in videos], rows_of_levels, "frame")

    reads: list[str] = []
    schema_type = type(cstore.STA_CACHE)  # a frozen dataclass: its method is patched on the class
    read_video = schema_type.read_video
    monkeypatch.setattr(schema_type, "read_video", lambda self, root, vid: reads.append(vid) or read_video(self, root, vid))
    assert builder.stale(names, [(video, "key-1") for video in videos]) == []
    assert sorted(reads) == ["a", "b"]
    reads.clear()
    stale = builder.stale(names, [(videos[0], "key-1"), (videos[1], "key-2")])
    assert [(video.video_id, key) for video, key in stale] == [("b", "key-2")]
    assert sorted(reads) == ["a", "b"]
