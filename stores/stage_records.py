"""What `avfix run` keeps in a store beside the stage's own attributes, and how it makes a stage redo its work.

Store attributes written here (by the coordinating process, after the stage has finished):

    config         the effective [section] of WS/avfix.toml the stage ran with
    failed_inputs  {video_id: stamp of the input when it failed}: a failed video whose input is
                   unchanged is not retried by the next run (it would fail the same way)

The stage's own records (per-video `status`, `fingerprint`, `failures`, `settings`) stay the stage's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zarr

from stores import zarr_io

CONFIG_ATTR = "config"
FAILED_INPUTS_ATTR = "failed_inputs"
# Per-video attributes that let a stage reuse part of a video's work (extract's finished segments,
# pseudolabel's coarse maps); forgetting them makes the stage redo the video from the start.
_REUSE_ATTRS = ("segments_done", "pending_fingerprint", "coarse_fingerprint")


def record_run(path: str | Path, config: dict[str, Any], failed_inputs: dict[str, Any]) -> None:
    """Record the configuration a stage ran with and the inputs that failed (then reconsolidate)."""
    root = zarr_io.open_root(path, mode="r+")
    root.attrs.update({CONFIG_ATTR: config, FAILED_INPUTS_ATTR: failed_inputs})
    zarr_io.consolidate(path)


def failed_inputs(root: zarr.Group) -> dict[str, Any]:
    return dict(root.attrs.get(FAILED_INPUTS_ATTR, {}))


def video_ids(root: zarr.Group) -> list[str]:
    """Every video group, complete or not."""
    if zarr_io.VIDEOS not in root:
        return []
    return sorted(name for name, _ in root[zarr_io.VIDEOS].groups())


def forget_completion(path: str | Path) -> int:
    """Mark every video of the store unfinished and drop its partial-reuse records, so the stage's next
    run redoes each one from the start; returns how many videos were reset. Nothing is deleted."""
    if not Path(path).exists():
        return 0
    root = zarr_io.open_root(path, mode="r+")
    reset = 0
    for video_id in video_ids(root):
        group = zarr_io.video_group(root, video_id)
        assert group is not None
        attrs = {k: v for k, v in dict(group.attrs).items() if k not in _REUSE_ATTRS}
        attrs["status"] = zarr_io.STATUS_IN_PROGRESS
        group.attrs.put(attrs)
        reset += 1
    return reset
