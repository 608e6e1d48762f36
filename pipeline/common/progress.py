"""Progress bars for long commands: one over videos and, for long work, one over frames."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """Two tqdm bars on stderr; `enabled=False` (``--quiet``) shows nothing. Messages go above the bars."""

    def __init__(self, enabled: bool = True, unit: str = "video") -> None:
        self.enabled = enabled
        self.unit = unit
        self.videos: tqdm | None = None
        self.frames: tqdm | None = None

    def start(self, n_videos: int) -> None:
        if self.enabled:
            self.videos = tqdm(total=n_videos, unit=self.unit, desc="videos", position=0, file=sys.stderr)
            self.frames = tqdm(total=0, unit="frame", desc="frames", position=1, file=sys.stderr, unit_scale=True)

    def advance_video(self, n: int = 1) -> None:
        if self.videos is not None:
            self.videos.update(n)

    def add_frames(self, n: int) -> None:
        if self.frames is not None:
            self.frames.total += n
            self.frames.refresh()

    def advance_frames(self, n: int) -> None:
        if self.frames is not None and n:
            self.frames.update(n)

    def bar(self, total: int, desc: str, unit: str = "it") -> tqdm:
        """A transient bar for one piece of work (an epoch, a pass); disabled under --quiet."""
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not self.enabled,
                    position=2 if self.videos is not None else 0)

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        for bar in (self.frames, self.videos):
            if bar is not None:
                bar.close()
        self.videos = self.frames = None
