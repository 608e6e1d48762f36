"""`avfix status`: where each stage of a workspace stands, per stage and per video.

Each stage answers for itself (`Stage.state`, the same rule its own run skips by; see `pipeline.stage`
for what complete, stale, failed and missing mean); here the registry is walked in order and a stage
whose upstream must run first is reported stale too. Nothing is run and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.stage import (
    COMPLETE, FAILED, NOT_CONFIGURED, PREDICT_VIDEOS, STALE, TRAINING_VIDEOS, VIDEO_STATES, StageState,
)  # fmt: skip
from pipeline.workspace.config import Overrides, WorkspaceConfig, load_config
from pipeline.workspace.registry import STAGES


@dataclass
class WorkspaceStatus:
    workspace: str
    config_file: str
    config_exists: bool
    stages: list[StageState]

    @property
    def ok(self) -> bool:
        return all(s.state in (COMPLETE, NOT_CONFIGURED) for s in self.stages)

    def stage(self, name: str) -> StageState:
        return next(s for s in self.stages if s.stage == name)

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "config_file": self.config_file, "config_exists": self.config_exists,
                "ok": self.ok, "stages": [s.to_dict() for s in self.stages]}  # fmt: skip


def workspace_status(workspace: str | Path, config: WorkspaceConfig, config_file: Path, config_exists: bool) -> WorkspaceStatus:
    """Every stage's state; a stage whose upstream must run first is stale too (it will rerun after it)."""
    workspace = Path(workspace)
    states: dict[str, StageState] = {}
    for stage in STAGES:
        state = stage.state(workspace, config)
        behind = [states[name] for name in stage.upstream if states[name].needs_run]
        if behind and state.state in (COMPLETE, FAILED):
            state.state, state.reason = STALE, f"{behind[0].stage} is {behind[0].state}: runs again after it"
        states[stage.name] = state
    return WorkspaceStatus(str(workspace), str(config_file), config_exists, list(states.values()))


def status_table(status: WorkspaceStatus, per_video: bool = True) -> str:
    """The stage table, then one row per video with its state in each per-video stage, then the reasons."""
    lines = [f"workspace {status.workspace} ({'config ' + status.config_file if status.config_exists else 'no avfix.toml yet: defaults'})", ""]
    header = f"{'stage':<12} {'state':<15} {'complete':>8} {'stale':>6} {'failed':>6} {'missing':>7}  detail / reason"
    lines += [header, "-" * len(header)]
    for stage in status.stages:
        counts = stage.counts()
        cells = [f"{counts[s]:>{w}}" if stage.videos else f"{'-':>{w}}" for s, w in zip(VIDEO_STATES, (8, 6, 6, 7))]
        text = "; ".join(part for part in (stage.detail, stage.reason) if part)
        lines.append(f"{stage.stage:<12} {stage.state:<15} {' '.join(cells)}  {text}")
    if not per_video:
        return "\n".join(lines)
    reasons = []
    # The training videos and the videos to predict are different sets (they may even share ids).
    for title in (TRAINING_VIDEOS, PREDICT_VIDEOS):
        names = [s.name for s in STAGES if s.video_set == title]
        stages = [state for state in status.stages if state.stage in names and state.videos]
        ids = sorted({v.video_id for s in stages for v in s.videos})
        if not ids:
            continue
        width = max(len(title), *(len(i) for i in ids))
        lines += ["", f"{title:<{width}}  " + " ".join(f"{s.stage:<12}" for s in stages)]
        videos = {s.stage: {v.video_id: v for v in s.videos} for s in stages}
        for video_id in ids:
            cells = []
            for s in stages:
                video = videos[s.stage].get(video_id)
                cells.append(f"{video.state if video else '-':<12}")
                if video is not None and video.state != COMPLETE:
                    reasons.append(f"  {s.stage} {video_id}: {video.state}: {video.reason}")
            lines.append(f"{video_id:<{width}}  " + " ".join(cells).rstrip())
    if reasons:
        lines += ["", "why:"] + reasons
    return "\n".join(lines)


def read_status(workspace: str | Path, overrides: Overrides | None = None) -> WorkspaceStatus:
    """The status of `workspace` against WS/avfix.toml (or the defaults) with `overrides`; writes nothing."""
    loaded = load_config(workspace, overrides)
    return workspace_status(workspace, loaded.config, loaded.path, loaded.existed)
