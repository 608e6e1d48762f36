"""The contract every stage implements once, and the states it reports.

A stage says: its name and upstream stages, its config dataclass (each field classified by
`pipeline.common.settings`), the files it writes, `state` (per video: complete / stale with the reason
/ failed / missing), `run` and `forget` (what `--force` discards). The stage's own skip decision,
`avfix status` and `avfix run` all ask the same per-video rule; nothing else restates it.

A video of a stage is

- **complete**: written, marked complete, and made from the current inputs and settings;
- **stale**: complete, but its input, its upstream or the settings changed since (the reason says which);
- **failed**: the stage recorded an error for it (the reason is that error); a run retries it only
  when its input changed since, or when no run recorded the input it failed on;
- **missing**: not written yet, or only partly (an interrupted run).

A stage is complete when every video is; stale when any is stale or missing (or its settings
changed); failed when the only videos not complete are failures a run would not retry; missing when
its output does not exist.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stores.lock import StoreLock
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.workspace.config import WorkspaceConfig

COMPLETE, STALE, FAILED, MISSING, NOT_CONFIGURED = "complete", "stale", "failed", "missing", "not configured"
VIDEO_STATES = (COMPLETE, STALE, FAILED, MISSING)
TRAINING_VIDEOS, PREDICT_VIDEOS = "training videos", "videos to predict"


@dataclass
class VideoState:
    video_id: str
    state: str
    reason: str = ""
    retry: bool = True  # failed only: whether the next run tries it again

    def to_dict(self) -> dict[str, Any]:
        return {"video_id": self.video_id, "state": self.state, "reason": self.reason}


@dataclass
class StageState:
    stage: str
    state: str
    reason: str
    output: str
    videos: list[VideoState] = field(default_factory=list)
    detail: str = ""  # what is there: "24 videos", "8 epochs, 96 steps"
    restart: bool = False  # train: its checkpoints do not fit the settings or the data; train anew

    @property
    def needs_run(self) -> bool:
        return self.state in (STALE, MISSING)

    def counts(self) -> dict[str, int]:
        return {state: sum(v.state == state for v in self.videos) for state in VIDEO_STATES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "state": self.state, "reason": self.reason, "output": self.output,
            "detail": self.detail, "counts": self.counts(), "videos": [v.to_dict() for v in self.videos],
        }  # fmt: skip


def count(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def summarise(stage: str, output: Path, videos: list[VideoState], missing_output: bool = False) -> StageState:
    """The stage's state from its videos' states (`missing_output`: the stage's store does not exist)."""
    n = len(videos)
    counts = {state: sum(v.state == state for v in videos) for state in VIDEO_STATES}
    retry = [v for v in videos if v.state == FAILED and v.retry]
    detail = count(n, "video")
    if missing_output and (counts[MISSING] or not n):
        return StageState(stage, MISSING, f"{output.name} does not exist", str(output), videos, detail)
    if counts[STALE] or counts[MISSING] or retry:
        parts = [f"{counts[s]} {s}" for s in (STALE, MISSING) if counts[s]]
        if retry:
            parts.append(f"{len(retry)} failed, retried")
        first = next(v for v in videos if v.state in (STALE, MISSING) or (v.state == FAILED and v.retry))
        return StageState(stage, STALE, f"{', '.join(parts)} of {n} (e.g. {first.video_id}: {first.reason})",
                          str(output), videos, detail)  # fmt: skip
    if counts[FAILED]:
        first = next(v for v in videos if v.state == FAILED)
        return StageState(stage, FAILED, f"{counts[FAILED]} of {n} failed, unchanged since (e.g. {first.video_id}: "
                          f"{first.reason})", str(output), videos, detail)  # fmt: skip
    if not n:
        return StageState(stage, MISSING, "no videos", str(output), videos, detail)
    return StageState(stage, COMPLETE, "", str(output), videos, detail)


def failed_state(video_id: str, failure: dict[str, Any], current_input: Any) -> VideoState:
    """A recorded failure: not retried while the input it failed on is unchanged (`failure["input"]`)."""
    reason = str(failure.get("reason", "failed"))
    if "input" not in failure:
        return VideoState(video_id, FAILED, reason, retry=True)
    if failure["input"] != current_input:
        return VideoState(video_id, STALE, f"failed before ({reason}); its input changed since")
    return VideoState(video_id, FAILED, reason, retry=False)


def unfinished_state(video_id: str, attrs: Any, failure: dict[str, Any] | None, current_input: Any,
                     not_yet: str) -> VideoState:  # fmt: skip
    """A video that is not complete: failed (`failed_state`), damaged or partly written (`attrs`: its
    group's attributes, None when it has no group), or not made yet."""
    if failure is not None:
        return failed_state(video_id, failure, current_input)
    if attrs is not None and attrs.damage:
        return VideoState(video_id, MISSING, f"damaged, made again: {attrs.damage}")
    if attrs is not None:
        return VideoState(video_id, MISSING, "partly written (interrupted)")
    return VideoState(video_id, MISSING, not_yet)


def version_change(what: str, recorded: int | None, current: int) -> str:
    """Why a video made by another algorithm version is stale ("" when it is the current one)."""
    if recorded == current:
        return ""
    if recorded is None:
        return f"made before {what} recorded its algorithm version (now {current}): made again once"
    return f"made by {what} algorithm version {recorded}, now {current}"


@dataclass(kw_only=True)
class VideoCounts:
    """What the per-video stages' summaries share: how many videos were done, skipped and failed (with
    why), how long it took, and whether Ctrl-C stopped it."""

    store: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None  # why the run could not record its outcome (e.g. the disk filled up)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted and self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class StageSummary(Protocol):
    """What every stage's run returns."""

    interrupted: bool

    @property
    def ok(self) -> bool: ...

    def line(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StageRun:
    """What a stage's `run` gets: where, with which configuration, and how to report."""

    workspace: Path
    config: WorkspaceConfig
    forced: bool = False  # redo the work even where it is up to date (the run calls `forget` first)
    restart: bool = False  # train only: discard checkpoints that do not fit (the state said so)
    progress: bool = True  # progress bars; the stage's FAILED and warning lines show either way


class Stage(ABC):
    """One stage of the DAG (see the module docstring)."""

    name: ClassVar[str]
    upstream: ClassVar[tuple[str, ...]] = ()
    config_type: ClassVar[type]
    # Which set of videos `avfix status` lists this stage's per-video states under (None: not per video).
    video_set: ClassVar[str | None] = None
    # The modules the tasks of the stage's local dask worker processes import: their server imports them
    # once for every worker (`pipeline.common.scheduling.start_worker_server`).
    worker_modules: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def outputs(self, workspace: Path) -> tuple[Path, ...]:
        """The stores and files the stage writes in `workspace`."""

    @abstractmethod
    def state(self, workspace: Path, config: WorkspaceConfig) -> StageState:
        """Where the stage stands; reads only, writes nothing."""

    def run(self, run: StageRun) -> StageSummary:
        """Do the work that is missing or stale; the stage skips the rest by the same rule as `state`.
        With `run.forced` it first discards what it would reuse (`forget`). The stage's output is locked
        meanwhile (`lock_target`): a second writer is refused at once."""
        with StoreLock(self.lock_target(run.workspace)):
            if run.forced:
                self.forget(run.workspace, run.config)
            return self.work(run)

    def scheduler(self, config: WorkspaceConfig) -> SchedulerConfig:
        """Where the stage's per-video work runs (`[run] workers`, `threads`, `scheduler`); local workers are
        threads unless the stage or `[run] threads` chooses otherwise."""
        return config.scheduler()

    def lock_target(self, workspace: Path) -> Path:
        """What a run holds the lock of: its first output (`stores.lock`)."""
        return self.outputs(workspace)[0]

    @abstractmethod
    def work(self, run: StageRun) -> StageSummary:
        """The stage's run proper (see `run`)."""

    @abstractmethod
    def forget(self, workspace: Path, config: WorkspaceConfig) -> None:
        """Discard what `--force` redoes (completion markers, checkpoints, caches)."""
