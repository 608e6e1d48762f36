"""`avfix run`: the DAG of DESIGN.md in one command, over the stage registry.

    extract -> pseudolabel -> train -> predict -> evaluate

Before each stage its state is asked of the stage itself (`Stage.state`, the rule the stage's own
run skips by): a stage whose output is complete and made from the current inputs and settings is
skipped with a one-line reason; otherwise it runs, and the stage skips the per-video work that is
already done, so only what is missing or stale is redone. States are read again before each stage,
so a change propagates exactly as far as it changes fingerprints downstream.

`until` stops after a stage; `force` redoes stages even when they are up to date (the stage's run
first calls its `forget`, which discards what it would otherwise reuse). The stage commands (`avfix extract`, ...) run one
stage through `run_stage`, with the same configuration the workspace's `avfix run` would use.

A stage that cannot run at all (bad input: `pipeline.common.errors.is_problem`) stops the run with its
one-line reason; any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipeline.common.errors import is_problem, one_line
from pipeline.stage import FAILED, NOT_CONFIGURED, Stage, StageRun, StageSummary
from pipeline.workspace.announce import preset_origin, run_line
from pipeline.workspace.config import (
    ConfigError, Overrides, WorkspaceConfig, config_path, ensure_config_file, load_config,
)  # fmt: skip
from pipeline.workspace.registry import NAMES, STAGES, stage
from stores import features as fstore
from stores.lock import StoreLock

Echo = Callable[[str], None]


class OptionError(ConfigError):
    """A stage command's own option has a value the stage cannot use (a usage error)."""


@dataclass(frozen=True)
class RunRequest:
    """What to run: up to `until` (None: every stage), `force` stages even when up to date."""

    until: str | None = None
    force: tuple[str, ...] = ()
    progress: bool = True

    def __post_init__(self) -> None:
        for name in (self.until, *self.force):
            if name is not None and name not in NAMES:
                raise ConfigError(f"unknown stage {name!r}; the stages are {', '.join(NAMES)}")
        if self.until is not None:
            late = [s for s in self.force if NAMES.index(s) > NAMES.index(self.until)]
            if late:
                raise ConfigError(f"--force {late[0]} comes after --until {self.until}: it would not run")

    @property
    def stages(self) -> tuple[Stage, ...]:
        return STAGES if self.until is None else STAGES[: NAMES.index(self.until) + 1]


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


def run_dag(workspace: str | Path, overrides: Overrides, request: RunRequest, echo: Echo = print) -> RunSummary:
    """Run every stage of `request` that is missing or stale; see the module docstring.

    Raises ConfigError when the configuration cannot be used (nothing has run then).
    """
    began = time.perf_counter()
    workspace = Path(workspace)
    loaded = load_config(workspace, overrides)
    config = loaded.config
    if config.run.videos is None and not fstore.SCHEMA.path(workspace).exists():
        raise ConfigError(f"no training videos: pass VIDEOS or set [run] videos in {loaded.path}")
    summary = RunSummary(str(workspace), str(loaded.path))
    workspace.mkdir(parents=True, exist_ok=True)
    summary.config_written = ensure_config_file(loaded)
    if summary.config_written:
        echo(f"wrote {loaded.path}: every setting of every stage (edit it, or override with --set)")
    with torch_threads(config), ExitStack() as locks:
        # Every output the run may write, locked before anything runs: a second run on this workspace
        # is refused at once, not after it has started writing what this one reads.
        for chosen in request.stages:
            locks.enter_context(StoreLock(chosen.lock_target(workspace)))
        origin = preset_origin(loaded, overrides)
        _stages(summary, workspace, config, request, echo, origin)
    summary.seconds = time.perf_counter() - began
    return summary


def _stages(summary: RunSummary, workspace: Path, config: WorkspaceConfig, request: RunRequest, echo: Echo,
            origin: str) -> None:  # fmt: skip
    chosen_stages = request.stages
    for k, chosen in enumerate(chosen_stages):
        outcome = _stage(chosen, workspace, config, request, echo, origin, chosen_stages[k + 1 :])
        summary.stages.append(outcome)
        if outcome.action == "interrupted":
            summary.interrupted = True
            return
        if outcome.action == "error":
            summary.error = outcome.error
            return


def _stage(chosen: Stage, workspace: Path, config: WorkspaceConfig, request: RunRequest, echo: Echo,
           origin: str, later: tuple[Stage, ...]) -> StageOutcome:  # fmt: skip
    began = time.perf_counter()
    name = chosen.name
    try:
        state = chosen.state(workspace, config)
        forced = name in request.force
        if state.state == NOT_CONFIGURED:
            outcome = StageOutcome(name, "not configured", f"{name}: not configured ({state.reason})")
        elif not forced and not state.needs_run:
            failed = f"; {state.reason}" if state.state == FAILED else ""
            outcome = StageOutcome(name, "skipped", f"{name}: up to date ({state.detail}){failed}",
                                   ok=state.state != FAILED)  # fmt: skip
        else:
            echo(f"{name}: running ({'forced' if forced else state.reason})")
            line = run_line(name, config.section(name), config.run.preset, origin, str(config_path(workspace)))
            if line:
                echo(line)
            run = StageRun(workspace, config, forced=forced, restart=state.restart, progress=request.progress)
            _start_worker_server(config, chosen, later)
            outcome = _ran(name, chosen.run(run))
    except KeyboardInterrupt:
        outcome = StageOutcome(name, "interrupted", f"{name}: interrupted [rerun to resume]", ok=False)
    except Exception as exc:  # noqa: BLE001 - bad input stops the run with one line; a bug propagates
        if not is_problem(exc):
            raise
        outcome = StageOutcome(name, "error", f"{name}: {one_line(exc)}", ok=False, error=one_line(exc))
    outcome.seconds = time.perf_counter() - began
    echo(outcome.line)
    return outcome


def worker_modules(stages: Iterable[Stage], config: WorkspaceConfig | None = None) -> tuple[str, ...]:
    """What the local worker processes of `stages` import, each module once, in the stages' order; given
    `config`, of only the stages it has work on local worker processes."""
    chosen = [s for s in stages if config is None or s.scheduler(config).local_processes]
    return tuple(dict.fromkeys(module for stage_ in chosen for module in stage_.worker_modules))


def _start_worker_server(config: WorkspaceConfig, running: Stage, later: tuple[Stage, ...]) -> None:
    """When `running` works on local worker processes: their server, with the modules of every later stage
    that will too. The first start of a process decides what the server imports, so otherwise (extract
    first, say) the later stages' workers would each import their own modules, torch's network code
    among them."""
    if not running.worker_modules or not running.scheduler(config).local_processes:
        return
    from pipeline.common.scheduling import start_worker_server

    start_worker_server(worker_modules((running, *later), config))


def _ran(name: str, summary: StageSummary) -> StageOutcome:
    interrupted = bool(getattr(summary, "interrupted", False))
    return StageOutcome(name, "interrupted" if interrupted else "ran", summary.line(), ok=summary.ok,
                        summary=summary.to_dict())  # fmt: skip


def run_stage(name: str, workspace: str | Path, overrides: Overrides, progress: bool = True,
              forced: bool = False) -> StageSummary:  # fmt: skip
    """One stage, as its command runs it: the workspace's configuration (WS/avfix.toml or the preset's
    defaults) with the command's options; `forced` redoes what is up to date. The stage skips what is
    up to date by its own rule. Nothing but the stage's output is written."""
    workspace = Path(workspace)
    load_config(workspace)  # a bad WS/avfix.toml is the file's problem, and named so
    try:
        loaded = load_config(workspace, overrides)
    except ConfigError as exc:
        raise OptionError(str(exc)) from exc
    config = loaded.config
    line = run_line(name, config.section(name), config.run.preset, preset_origin(loaded, overrides), str(loaded.path))
    if progress and line and os.environ.get("RANK", "0") == "0":  # one line per torchrun job, not per process
        print(line, file=sys.stderr, flush=True)
    with torch_threads(config):
        return stage(name).run(StageRun(workspace, config, forced=forced, progress=progress))


@contextmanager
def torch_threads(config: WorkspaceConfig) -> Iterator[None]:
    """torch's CPU threads as `[run] torch_threads` says (0: torch's own choice) while a stage runs."""
    import torch

    threads = torch.get_num_threads()
    if config.run.torch_threads:
        torch.set_num_threads(config.run.torch_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
