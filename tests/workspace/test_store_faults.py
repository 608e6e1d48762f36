"""Faults around the stores: damage found by a downstream stage, a second writer, a dead writer's lock,
and a full disk. Each ends in one line (exit code 1), nothing half-written counts as complete, and a
rerun finishes the job with the stores an uninterrupted run writes."""

from __future__ import annotations

import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import chunk_file, first_run_overrides, make_sets
from test_crash_consistency import assert_stores_equal

from cli import main
from pipeline.workspace.config import Overrides, load_config, write_config
from pipeline.workspace.dag import RunRequest, run_dag
from pipeline.workspace.status import read_status
from stores import features as fstore
from stores import zarr_io
from stores.integrity import verify_store
from stores.lock import lock_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[Path, Path]:
    """(the sets' root, a copy of a workspace after an uninterrupted extract)."""
    root = tmp_path_factory.mktemp("faults")
    train, test = make_sets(root)
    ws = root / "reference"
    loaded = load_config(ws, first_run_overrides(train, test))
    write_config(loaded.path, loaded.config)
    summary = run_dag(ws, Overrides(), RunRequest(until="extract", progress=False), lambda line: None)
    assert summary.ok, summary.line()
    return root, ws


def fresh_workspace(extracted: tuple[Path, Path], tmp_path: Path) -> Path:
    """A workspace with the reference's configuration and no output yet."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(extracted[1] / "avfix.toml", ws / "avfix.toml")
    return ws


def extract_command(root: Path, ws: Path) -> list[str]:
    return [sys.executable, "-m", "cli", "extract", str(root / "train"), "--workspace", str(ws), "--quiet"]


def test_damage_found_downstream_is_named_and_made_again_on_the_next_run(extracted, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(extracted[1], ws)
    chunk_file(ws / "features.zarr/videos/c1_square_noise_000/frames", 0).unlink()
    result = CliRunner().invoke(main, ["pseudolabel", "-w", str(ws), "-q"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "video c1_square_noise_000, array frames, chunk 0: missing" in lines[0], result.output
    assert "marked not complete: the stage that wrote features.zarr makes it again on the next run" in lines[0]
    extract = read_status(ws).stage("extract")
    damaged = {v.video_id: v for v in extract.videos}["c1_square_noise_000"]
    assert extract.state == "stale" and damaged.state == "missing" and damaged.reason.startswith("damaged, made again")
    summary = run_dag(ws, Overrides(), RunRequest(until="pseudolabel", progress=False), lambda line: None)
    assert summary.ok and summary.outcome("extract").summary["done"] == 1, summary.line()
    assert_stores_equal(ws / "features.zarr", extracted[1] / "features.zarr")


def hold_lock(target: Path) -> subprocess.Popen:
    """Another process holding the lock of `target` (until it is killed)."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from stores.lock import StoreLock\n"
        f"lock = StoreLock({str(target)!r}); lock.acquire(); print('held', flush=True); time.sleep(600)"
    )], cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_at_once_with_the_holder_named(extracted, tmp_path):
    ws = fresh_workspace(extracted, tmp_path)
    holder = hold_lock(ws / "features.zarr")
    try:
        result = CliRunner().invoke(main, ["extract", str(extracted[0] / "train"), "-w", str(ws)])
        assert result.exit_code == 1
        line = result.output.strip().splitlines()
        assert len(line) == 1 and f"features.zarr: in use by pid {holder.pid} on {socket.gethostname()} since " in line[0]
        # `avfix run` asks for every lock it may need before it writes anything.
        result = CliRunner().invoke(main, ["run", "-w", str(ws), "-q"])
        assert result.exit_code == 1 and f"in use by pid {holder.pid}" in result.output
        assert CliRunner().invoke(main, ["status", "-w", str(ws)]).exit_code == 0  # readers never wait
        assert not (ws / "features.zarr").exists() and not (ws / "pseudo.zarr").exists()
    finally:
        holder.kill()
        holder.wait()


def test_two_runs_at_once_one_is_refused_and_the_store_equals_a_single_runs(extracted, tmp_path):
    ws = fresh_workspace(extracted, tmp_path)
    runs = [subprocess.Popen(extract_command(extracted[0], ws), cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outcomes = sorted((run.wait(timeout=300), run.communicate()[1]) for run in runs)
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert "features.zarr: in use by pid" in outcomes[1][1]
    assert_stores_equal(ws / "features.zarr", extracted[1] / "features.zarr")


def test_a_dead_writers_lock_is_taken_over(extracted, tmp_path):
    ws = fresh_workspace(extracted, tmp_path)
    holder = hold_lock(ws / "features.zarr")
    assert f"pid {holder.pid}" in CliRunner().invoke(main, ["extract", str(extracted[0] / "train"), "-w", str(ws)]).output
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = CliRunner().invoke(main, ["extract", str(extracted[0] / "train"), "-w", str(ws), "-q"])
    assert result.exit_code == 0, result.output
    assert f'"pid": {holder.pid}' not in lock_path(ws / "features.zarr").read_text()
    assert_stores_equal(ws / "features.zarr", extracted[1] / "features.zarr")


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_is_one_line_per_video_a_summary_and_a_rerun_finishes(extracted, tmp_path):
    ws = fresh_workspace(extracted, tmp_path)
    # Files may grow to 6 kB: metadata fits, the frames' chunks do not (no root needed to fill a "disk").
    full = subprocess.run(extract_command(extracted[0], ws), cwd=REPO, capture_output=True, text=True,
                          preexec_fn=lambda: _limit_file_size(6000), timeout=300)  # fmt: skip
    assert full.returncode == 1, full.stderr[-3000:]
    assert "Traceback" not in full.stderr + full.stdout
    failed = [line for line in full.stdout.splitlines() + full.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 4 and all("File too large" in line for line in failed), failed
    assert full.stdout.strip().splitlines()[-1].startswith("extract: 0 done, 0 skipped, 4 failed")
    root = zarr_io.open_root(ws / "features.zarr")
    assert fstore.SCHEMA.complete_videos(root) == [] and verify_store(ws / "features.zarr").damaged == {}
    again = subprocess.run(extract_command(extracted[0], ws), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_stores_equal(ws / "features.zarr", extracted[1] / "features.zarr")
    assert CliRunner().invoke(main, ["verify", "-w", str(ws)]).exit_code == 0


def test_a_read_only_workspace_is_one_line_not_a_traceback(extracted, tmp_path, monkeypatch):
    import errno

    from stores.schema import StoreSchema

    ws = fresh_workspace(extracted, tmp_path)

    def read_only(self, root, **changes):
        raise OSError(errno.EROFS, "Read-only file system", str(ws / "features.zarr" / "zarr.json"))

    monkeypatch.setattr(StoreSchema, "update_store", read_only)  # as a read-only mount answers (root ignores chmod)
    result = CliRunner().invoke(main, ["extract", str(extracted[0] / "train"), "-w", str(ws), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == f"Error: {ws / 'features.zarr' / 'zarr.json'}: Read-only file system"
