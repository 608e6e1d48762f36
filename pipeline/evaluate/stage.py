"""The evaluate stage's contract: when WS/report.json is up to date.

`inputs_stamp` hashes everything a report is made from: the output settings, the algorithm version, the
fixations (a file's content hash; a folder's names, sizes and times) and every map source (a
predictions store's per-video fingerprints; a folder's names, sizes and times). `run_evaluate` records
the stamp of the inputs as they were when it started in the report itself; the report is up to date
while the stamp of the inputs now equals it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common.errors import BadInput
from pipeline.common.files import sha256_file
from pipeline.common.settings import describe_changes, output_settings
from pipeline.evaluate.config import EvaluateConfig
from pipeline.stage import COMPLETE, MISSING, NOT_CONFIGURED, STALE, Stage, StageRun, StageState, count, version_change
from stores import predictions as pred_store
from stores import zarr_io

if TYPE_CHECKING:
    from pipeline.evaluate.config import EvaluateSummary
    from pipeline.workspace.config import WorkspaceConfig

REPORT_JSON = "report.json"


def _folder_stamp(path: Path) -> list[Any]:
    """A file's content hash (a fixation CSV may be rewritten unchanged, as `avfix synth` does), or the
    names, sizes and times of every file under a folder (a fixation release holds thousands)."""
    if path.is_file():
        return [[path.name, sha256_file(path)]]
    found = []
    for folder, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            stat = (Path(folder) / name).stat()
            found.append([os.path.relpath(Path(folder) / name, path), stat.st_size, stat.st_mtime_ns])
    return found


def _maps_stamp(path: Path) -> Any:
    if path.suffix == ".zarr" or (path / "zarr.json").exists():
        try:
            root = pred_store.SCHEMA.open_for_reading(path)
        except zarr_io.StoreError:
            return "absent"
        return {vid: str(pred_store.SCHEMA.read_video(root, vid).fingerprint) for vid in pred_store.SCHEMA.complete_videos(root)}
    return _folder_stamp(path) if path.exists() else "absent"


def _where(path: Path, workspace: Path) -> str:
    """A path as the stamp keeps it: relative to the workspace when inside it (a moved workspace stays
    up to date), else absolute."""
    path, workspace = path.resolve(), workspace.resolve()
    return str(path.relative_to(workspace)) if path.is_relative_to(workspace) else str(path)


def inputs_stamp(fixations: Path, workspace: Path, config: EvaluateConfig) -> str:
    """A fingerprint of what the report is made from (see the module docstring)."""
    settings = output_settings(config)
    settings.pop("maps", None)  # stamped by content below
    maps = [Path(p) for p in config.maps] or [pred_store.SCHEMA.path(workspace)]
    return zarr_io.fingerprint([
        settings, config.ALGORITHM_VERSION, _where(fixations, workspace),
        _folder_stamp(fixations) if fixations.exists() else "absent",
        {_where(path, workspace): _maps_stamp(path) for path in maps},
    ])  # fmt: skip


def read_report(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


class EvaluateStage(Stage):
    name = "evaluate"
    upstream = ("predict",)
    config_type = EvaluateConfig

    def outputs(self, workspace: Path) -> tuple[Path, ...]:
        from pipeline.evaluate.cache import CACHE_NAME
        from pipeline.evaluate.report import PLOTS_DIR

        workspace = Path(workspace)
        return workspace / REPORT_JSON, workspace / "report.md", workspace / PLOTS_DIR, workspace / CACHE_NAME

    def state(self, workspace: Path, config: WorkspaceConfig) -> StageState:
        path = Path(workspace) / REPORT_JSON
        if config.run.fixations is None:
            return StageState(self.name, NOT_CONFIGURED, "no fixations: pass --fixations or set [run] fixations", str(path))
        report = read_report(path) if path.is_file() else None
        if report is None:
            return StageState(self.name, MISSING, "no report yet", str(path))
        recorded = dict(report.get("settings", {}))
        if "inputs_stamp" not in recorded:
            return StageState(self.name, STALE, "the report has no record of its inputs (made by an earlier avfix)", str(path))
        changed_version = version_change("evaluate", recorded.get("algorithm_version"), config.evaluate.ALGORITHM_VERSION)
        if changed_version:
            return StageState(self.name, STALE, changed_version, str(path))
        if recorded["inputs_stamp"] != inputs_stamp(Path(config.run.fixations), Path(workspace), config.evaluate):
            changed = describe_changes(recorded.get("output_settings", {}), output_settings(config.evaluate))
            why = f"settings changed: {changed}" if changed else "the maps or the fixations changed since"
            return StageState(self.name, STALE, why, str(path))
        items = sum(len(d.get("items", [])) for d in report.get("datasets", []))
        problems = len(report.get("problems", {}).get("failures", []))
        detail = count(items, "item") + (f", {count(problems, 'problem')}" if problems else "")
        return StageState(self.name, COMPLETE, "", str(path), detail=detail)

    def work(self, run: StageRun) -> EvaluateSummary:
        from pipeline.common.progress import Progress
        from pipeline.evaluate.run import run_evaluate

        config = run.config
        if config.run.fixations is None:
            raise BadInput("no fixations: pass FIXATIONS (or --fixations) or set [run] fixations")
        progress = Progress(enabled=run.progress)
        summary = run_evaluate(Path(config.run.fixations), run.workspace, config.evaluate, progress)
        for failure in summary.failures[:20]:
            progress.message(f"PROBLEM {failure['path']}: {failure['reason']}")
        if len(summary.failures) > 20:
            progress.message(f"... and {len(summary.failures) - 20} more problems (all in WS/report.json)")
        return summary

    def forget(self, workspace: Path, config: WorkspaceConfig) -> None:
        from pipeline.evaluate.cache import CACHE_NAME

        (Path(workspace) / CACHE_NAME).unlink(missing_ok=True)
