"""`avfix --help` and `avfix status` answer without importing torch and the other heavy libraries: each
is run in a fresh interpreter and its `sys.modules` read afterwards (the speed itself is measured by
benchmarks/startup.py, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import first_run_overrides, make_sets
from pipeline.workspace.dag import RunRequest, run_dag

REPO = Path(__file__).resolve().parents[1]
# What neither command needs: torch and its family (seconds), dask.distributed, the media and plot libraries.
NOT_FOR_STATUS = ("torch", "torchvision", "torchaudio", "distributed", "matplotlib", "av")
# --help needs nothing beyond click: not even the stores.
NOT_FOR_HELP = NOT_FOR_STATUS + ("zarr", "numpy", "cv2", "dask")

_CHILD = """
import json, runpy, sys
sys.argv = ["avfix", *json.loads(sys.argv[1])]
try:
    runpy.run_module("cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def run_cli(*args: str) -> tuple[int, str, set[str]]:
    """Exit code, stdout and the imported top-level packages of `avfix ARGS` in a fresh interpreter
    (run from the repository, so it is this checkout's cli and pipeline that run)."""
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["exit"], done.stdout, {name.split(".")[0] for name in report["modules"]}


def test_help_imports_none_of_the_heavy_libraries():
    code, out, modules = run_cli("--help")
    assert code == 0 and "Usage: avfix" in out
    assert modules.isdisjoint(NOT_FOR_HELP), sorted(modules & set(NOT_FOR_HELP))
    # A command's help lists the presets and stages, read from their tables (which read the stores' names).
    for command in ("status", "run"):
        code, out, modules = run_cli(command, "--help")
        assert code == 0 and "--preset [paper|fast|cpu]" in out
        assert modules.isdisjoint(NOT_FOR_STATUS), sorted(modules & set(NOT_FOR_STATUS))


def test_status_of_an_extracted_workspace_imports_no_torch(tmp_path):
    train, test = make_sets(tmp_path)
    ws = tmp_path / "ws"
    summary = run_dag(ws, first_run_overrides(train, test), RunRequest(until="extract", progress=False),
                      echo=lambda text: None)  # fmt: skip
    assert summary.ok
    code, out, modules = run_cli("status", "--workspace", str(ws))
    # It did read the workspace: the configuration written by the run, the extracted videos, the rest to do.
    assert code == 0 and f"config {ws / 'avfix.toml'}" in out
    assert out.splitlines()[4].split()[:3] == ["extract", "complete", "4"]
    assert modules.isdisjoint(NOT_FOR_STATUS), sorted(modules & set(NOT_FOR_STATUS))
    # and what a preset change would redo, which builds every preset's settings
    code, out, modules = run_cli("status", "--workspace", str(ws), "--preset", "fast", "--brief")
    assert "extract" in out and modules.isdisjoint(NOT_FOR_STATUS), sorted(modules & set(NOT_FOR_STATUS))


def test_a_workspace_without_configuration_has_a_status_without_torch(tmp_path):
    code, out, modules = run_cli("status", "--workspace", str(tmp_path / "new"), "--json")
    assert code == 0 and json.loads(out)["config_exists"] is False
    assert modules.isdisjoint(NOT_FOR_STATUS), sorted(modules & set(NOT_FOR_STATUS))


def test_evaluate_imports_torchvision_only_for_the_cam_baseline():
    # Its modules in a fresh interpreter: torchvision (seconds) comes with the CAM baseline's backbone alone.
    code = "import sys, pipeline.evaluate.run; print('torchvision' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=True)  # fmt: skip
    assert done.stdout.split() == ["False"]
