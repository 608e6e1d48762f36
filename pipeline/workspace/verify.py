"""`avfix verify`: every chunk of every complete video of a workspace's stores re-read against its
checksum. A damaged or missing chunk names its store, video, array and chunk; the video is marked not
complete, so the stage that wrote it makes it again on the next run (`avfix run` or the stage's command)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stores.inspect import stores_of
from stores.integrity import StoreCheck, verify_workspace


@dataclass
class VerifySummary:
    workspace: str
    stores: list[StoreCheck] = field(default_factory=list)
    seconds: float = 0.0
    marked: bool = True
    interrupted: bool = False

    @property
    def damaged(self) -> int:
        return sum(len(check.damaged) for check in self.stores)

    @property
    def ok(self) -> bool:
        return self.damaged == 0

    @property
    def gigabytes_per_s(self) -> float:
        return sum(check.bytes for check in self.stores) / 1e9 / max(self.seconds, 1e-9)

    def lines(self) -> list[str]:
        """One line per damaged video (what was found, and what was done), then the summary."""
        action = "marked not complete: made again on the next run" if self.marked else "left as it is (--no-mark)"
        found = [f"DAMAGED {video_id}: {problem} [{action}]" for check in self.stores
                 for video_id, problem in sorted(check.damaged.items())]  # fmt: skip
        unchecked = sum(len(check.unchecked) for check in self.stores)
        if unchecked:
            found.append(f"note: {unchecked} array(s) not checked against checksums (written by an earlier avfix, "
                         "or in a layout only zarr reads)")  # fmt: skip
        return found + [self.line()]

    def line(self) -> str:
        videos = sum(check.videos for check in self.stores)
        chunks = sum(check.chunks for check in self.stores)
        size = sum(check.bytes for check in self.stores) / 1e9
        return (f"verify: {len(self.stores)} store(s), {videos} videos, {chunks} chunks, {size:.2f} GB in "
                f"{self.seconds:.1f} s ({self.gigabytes_per_s:.2f} GB/s); {self.damaged} damaged")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "damaged": self.damaged, "ok": self.ok, "gigabytes_per_s": self.gigabytes_per_s}


def run_verify(workspace: str | Path, mark: bool = True) -> VerifySummary:
    """Check every store of `workspace` (see the module docstring)."""
    checks, seconds = verify_workspace(list(stores_of(workspace).values()), mark)
    return VerifySummary(str(workspace), checks, seconds, mark)
