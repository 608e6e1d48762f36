"""`avfix run`: the DAG of DESIGN.md in one command.

    extract -> pseudolabel -> train -> predict -> evaluate

Before each stage its state is read from what the stores record (`pipeline.workspace.status`): a stage whose
output is complete and made from the current inputs and settings is skipped with a one-line reason;
otherwise it runs, and the stage itself skips the per-video work that is already done, so only what
is missing or stale is redone. States are read again after each stage ran, so a change propagates
exactly as far as it changes fingerprints downstream.

`until` stops after a stage; `force` redoes stages even when they are up to date: extract,
pseudolabel and predict forget their stores' completion markers (pseudolabel also its classifier
checkpoints), train starts anew, evaluate drops its score cache. After a stage ran, its store records
the configuration it ran with (`config`) and the inputs of the videos that failed (`failed_inputs`),
so the next run does not retry a failure whose input did not change.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline.common.inputs import InputError
from pipeline.common.progress import Progress
from pipeline.evaluate.cache import CACHE_NAME
from pipeline.evaluate.config import EvaluateError
from pipeline.evaluate.fixations import FixationInputError
from pipeline.evaluate.run import run_evaluate
from pipeline.extract.run import run_extract
from pipeline.predict.run import PREDICT_FEATURES, PredictError, run_predict
from pipeline.pseudolabel.run import PseudolabelError, run_pseudolabel
from pipeline.pseudolabel.training import checkpoint_folder
from pipeline.train.config import TrainError
from pipeline.train.run import TrainProgress, run_train
from pipeline.workspace.config import (
    ConfigError,
    Overrides,
    WorkspaceConfig,
    ensure_config_file,
    load_config,
    output_table,
    section_table,
)  # fmt: skip
from pipeline.workspace.status import (
    FAILED,
    NOT_CONFIGURED,
    STAGES,
    StageState,
    evaluate_stamp,
    report_digest,
    source_stamp,
    stage_state,
    write_run_record,
)  # fmt: skip
from stores import features as fstore
from stores import predictions as pred_store
from stores import pseudo as pstore
from stores import stage_records, zarr_io

log = logging.getLogger(__name__)

# A stage that raises one of these cannot run at all; the stages after it are not reached.
STAGE_ERRORS = (InputError, PseudolabelError, TrainError, PredictError, EvaluateError, FixationInputError,
                FileNotFoundError, ValueError, RuntimeError, OSError)  # fmt: skip

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunRequest:
    """What to run: up to `until` (None: every stage), `force` stages even when up to date."""

    until: str | None = None
    force: tuple[str, ...] = ()
    progress: bool = True

    def __post_init__(self) -> None:
        for name in (self.until, *self.force):
            if name is not None and name not in STAGES:
                raise ConfigError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}")
        if self.until is not None:
            late = [s for s in self.force if STAGES.index(s) > STAGES.index(self.until)]
            if late:
                raise ConfigError(f"--force {late[0]} comes after --until {self.until}: it would not run")

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES if self.until is None else STAGES[: STAGES.index(self.until) + 1]


@dataclass
class StageOutcome:
    stage: str
    action: str  # ran | skipped | not configured | error | interrupted
    line: str
    seconds: float = 0.0
    ok: bool = True
    summary: dict[str, Any] | None = None  # the stage's own summary, when it ran
    error: str | None = None  # why the stage could not run at all


@dataclass
class RunSummary:
    workspace: str
    config_file: str
    config_written: bool = False
    stages: list[StageOutcome] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.error is None and all(s.ok for s in self.stages)

    def outcome(self, stage: str) -> StageOutcome | None:
        return next((s for s in self.stages if s.stage == stage), None)

    def line(self) -> str:
        ran = [s.stage for s in self.stages if s.action == "ran"]
        skipped = [s.stage for s in self.stages if s.action == "skipped"]
        if self.interrupted:
            return f"run: interrupted during {self.stages[-1].stage} after {self.seconds:.1f} s [rerun to resume]"
        if self.error is not None:
            return f"run: stopped at {self.stages[-1].stage}: {self.error} ({self.seconds:.1f} s)"
        if not ran:
            text = f"run: nothing to do, {len(skipped)} stage(s) up to date ({self.seconds:.1f} s)"
        else:
            text = f"run: ran {', '.join(ran)}" + (f"; up to date: {', '.join(skipped)}" if skipped else "")
            text += f" ({self.seconds:.1f} s)"
        failed = [s.stage for s in self.stages if not s.ok]
        return text + (f"; with failures in {', '.join(failed)} (see `avfix status`)" if failed else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class _StageRun:
    """What one stage's runner gets."""

    workspace: Path
    config: WorkspaceConfig
    state: StageState
    forced: bool
    progress: bool

    def bars(self) -> Progress:
        return Progress(enabled=self.progress)

    def on_failure(self, progress: Progress) -> Callable[[str, str], None]:
        return lambda path, reason: progress.message(f"FAILED {path}: {reason}")


def run_dag(workspace: str | Path, overrides: Overrides, request: RunRequest, echo: Echo = print) -> RunSummary:
    """Run every stage of `request` that is missing or stale; see the module docstring.

    Raises ConfigError when the configuration cannot be used (nothing has run then).
    """
    began = time.perf_counter()
    workspace = Path(workspace)
    loaded = load_config(workspace, overrides)
    config = loaded.config
    if config.run.videos is None and not fstore.store_path(workspace).exists():
        raise ConfigError(f"no training videos: pass VIDEOS or set [run] videos in {loaded.path}")
    summary = RunSummary(str(workspace), str(loaded.path))
    workspace.mkdir(parents=True, exist_ok=True)
    summary.config_written = ensure_config_file(loaded)
    if summary.config_written:
        echo(f"wrote {loaded.path}: every setting of every stage (edit it, or override with --set)")
    threads = torch.get_num_threads()
    if config.run.torch_threads:
        torch.set_num_threads(config.run.torch_threads)
    try:
        for stage in request.stages:
            outcome = _stage(stage, workspace, config, request, echo)
            summary.stages.append(outcome)
            if outcome.action == "interrupted":
                summary.interrupted = True
                break
            if outcome.action == "error":
                summary.error = outcome.error
                break
    finally:
        torch.set_num_threads(threads)
    summary.seconds = time.perf_counter() - began
    return summary


def _stage(stage: str, workspace: Path, config: WorkspaceConfig, request: RunRequest, echo: Echo) -> StageOutcome:
    began = time.perf_counter()
    try:
        state = stage_state(stage, workspace, config)
        forced = stage in request.force
        if state.state == NOT_CONFIGURED:
            outcome = StageOutcome(stage, "not configured", f"{stage}: not configured ({state.reason})")
        elif not forced and not state.needs_run:
            failed = f"; {state.reason}" if state.state == FAILED else ""
            outcome = StageOutcome(stage, "skipped", f"{stage}: up to date ({state.detail}){failed}", ok=state.state != FAILED)
        else:
            echo(f"{stage}: running ({'forced' if forced else state.reason})")
            outcome = RUNNERS[stage](_StageRun(workspace, config, state, forced, request.progress))
    except KeyboardInterrupt:
        outcome = StageOutcome(stage, "interrupted", f"{stage}: interrupted [rerun to resume]", ok=False)
    except STAGE_ERRORS as exc:
        log.debug("%s failed", stage, exc_info=True)
        outcome = StageOutcome(stage, "error", f"{stage}: {exc}", ok=False, error=str(exc))
    outcome.seconds = time.perf_counter() - began
    echo(outcome.line)
    return outcome


def _ran(stage: str, summary: Any) -> StageOutcome:
    interrupted = bool(getattr(summary, "interrupted", False))
    return StageOutcome(stage, "interrupted" if interrupted else "ran", summary.line(), ok=summary.ok,
                        summary=summary.to_dict())  # fmt: skip


def _failed_sources(root: Any) -> dict[str, Any]:
    return {video_id: source_stamp(failure.get("path", "")) if failure.get("path") else "absent"
            for video_id, failure in zarr_io.failures_of(root).items()}  # fmt: skip


# --- the stages ------------------------------------------------------------------------------------------


def _extract(run: _StageRun) -> StageOutcome:
    path = fstore.store_path(run.workspace)
    if run.forced:
        stage_records.forget_completion(path)
    progress = run.bars()
    summary = run_extract(run.config.run.videos, run.workspace, run.config.extract, run.config.scheduler(), progress,
                          on_failure=run.on_failure(progress))  # fmt: skip
    if not summary.interrupted:
        root = zarr_io.open_root(path, mode="r")
        stage_records.record_run(path, {**section_table(run.config, "extract"), "inputs": run.config.run.videos},
                                 _failed_sources(root))  # fmt: skip
    return _ran("extract", summary)


def _pseudolabel(run: _StageRun) -> StageOutcome:
    path = pstore.store_path(run.workspace)
    if run.forced:
        stage_records.forget_completion(path)
        for checkpoint in checkpoint_folder(run.workspace).glob("*.pt"):
            checkpoint.unlink()  # the classifiers are part of this stage's work: train them again
    summary = run_pseudolabel(run.workspace, run.config.pseudolabel, run.bars())
    if not summary.interrupted:
        features = fstore.open_for_reading(fstore.store_path(run.workspace))
        root = zarr_io.open_root(path, mode="r")
        failed = {vid: str((fstore.video_attrs(features, vid) or {}).get("fingerprint"))
                  for vid in zarr_io.failures_of(root)}  # fmt: skip
        stage_records.record_run(path, section_table(run.config, "pseudolabel"), failed)
    return _ran("pseudolabel", summary)


def _train(run: _StageRun) -> StageOutcome:
    # Checkpoints of other settings or data cannot be resumed: the state says when to start anew.
    restart = run.forced or run.state.restart
    progress = TrainProgress(enabled=run.progress)
    summary = run_train(run.workspace, run.config.train, progress, report=progress.message, restart=restart)
    return _ran("train", summary)


def _predict(run: _StageRun) -> StageOutcome:
    path = pred_store.store_path(run.workspace)
    if run.forced:
        stage_records.forget_completion(path)
    progress = run.bars()
    videos = run.config.run.predict_videos
    summary = run_predict(videos, run.workspace, run.config.predict, run.config.scheduler(), progress,
                          on_failure=run.on_failure(progress))  # fmt: skip
    if not summary.interrupted:
        for store, config in ((run.workspace / PREDICT_FEATURES, {"inputs": videos}),
                              (path, {**section_table(run.config, "predict"), "inputs": videos})):  # fmt: skip
            if store.exists():
                stage_records.record_run(store, config, _failed_sources(zarr_io.open_root(store, mode="r")))
    return _ran("predict", summary)


def _evaluate(run: _StageRun) -> StageOutcome:
    if run.forced:
        (run.workspace / CACHE_NAME).unlink(missing_ok=True)
    stamp = evaluate_stamp(run.workspace, run.config)  # of the inputs as they are when scoring starts
    summary = run_evaluate(Path(run.config.run.fixations), run.workspace, run.config.evaluate, run.bars())
    if not summary.interrupted and summary.report_json:
        write_run_record(run.workspace, "evaluate", {
            "stamp": stamp, "config": output_table(run.config, "evaluate"), **report_digest(Path(summary.report_json)),
        })  # fmt: skip
    return _ran("evaluate", summary)


RUNNERS: dict[str, Callable[[_StageRun], StageOutcome]] = {
    "extract": _extract,
    "pseudolabel": _pseudolabel,
    "train": _train,
    "predict": _predict,
    "evaluate": _evaluate,
}
