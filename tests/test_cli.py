"""The command line's two conventions: options not given leave the decision to the workspace's
configuration (one preset table, WS/avfix.toml), and failures are either bad input (one line, exit 1;
a bad option value, exit 2) or a bug (its traceback, exit 70), never one dressed up as the other."""

from __future__ import annotations

import pytest
import zarr
from click.testing import CliRunner

from cli import BUG_EXIT_CODE, main
from pipeline.common.errors import BUG_EXIT_CODE as PIPELINE_BUG_EXIT_CODE
from pipeline.extract.stage import ExtractStage
from pipeline.workspace.config import Overrides, load_config, write_config
from pipeline.workspace.dag import RunRequest, run_dag


@pytest.fixture
def videos(video_factory):
    made = [video_factory(name, n_frames=6, size=(48, 32)) for name in ("cat/a.mp4", "cat/b.mp4")]
    return made[0].path.parents[1]


def stored_width(ws, video_id="a") -> int:
    return int(zarr.open_group(str(ws / "features.zarr"), mode="r", path=f"videos/{video_id}")["frames"].shape[2])


def test_stage_commands_take_the_workspace_configuration_and_options_override_it(videos, tmp_path):
    ws = tmp_path / "ws"
    loaded = load_config(ws, Overrides(settings=("extract.size=40", "extract.flow.method=none")))
    write_config(loaded.path, loaded.config)
    result = CliRunner().invoke(main, ["extract", str(videos), "-w", str(ws), "-q"])
    assert result.exit_code == 0, result.output
    assert stored_width(ws) == 40  # [extract] size of WS/avfix.toml, not the command's own default
    result = CliRunner().invoke(main, ["extract", str(videos), "-w", str(ws), "-q", "--size", "48"])
    assert result.exit_code == 0 and "2 done, 0 skipped" in result.output, result.output
    assert stored_width(ws) == 48


def test_extract_workers_are_processes_unless_the_command_asks_for_threads(videos, tmp_path, worker_server_requests):
    """With -j 2 extract's local workers are processes (forked from the server, which it starts), with
    --threads threads of the command; predict's are threads unless --processes, pseudolabel's processes."""
    from pipeline.workspace.registry import stage

    result = CliRunner().invoke(main, ["extract", str(videos), "-w", str(tmp_path / "ws"), "-q", "-j", "2"])
    assert result.exit_code == 0 and "2 done" in result.output, result.output
    assert worker_server_requests and set(worker_server_requests) == {("pipeline.extract.run",)}
    worker_server_requests.clear()
    args = ["extract", str(videos), "-w", str(tmp_path / "ws2"), "-q", "-j", "2", "--threads"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "2 done" in result.output, result.output
    assert worker_server_requests == []

    def threads(*settings: str) -> list[bool]:
        config = load_config(tmp_path / "ws", Overrides(settings=("run.workers=2", *settings))).config
        return [stage(name).scheduler(config).threads for name in ("extract", "pseudolabel", "predict")]

    assert threads() == [False, False, True]
    assert threads("run.threads=true") == [True, False, True]
    assert threads("run.threads=false") == [False, False, False]


def test_the_cpu_preset_of_a_stage_command_is_the_one_preset_table(videos, tmp_path):
    ws = tmp_path / "ws"
    result = CliRunner().invoke(main, ["extract", str(videos), "-w", str(ws), "-q", "--preset", "cpu"])
    assert result.exit_code == 0, result.output
    assert stored_width(ws) == load_config(ws, Overrides(preset="cpu")).config.extract.size == 128


def test_bad_input_is_one_line_with_exit_code_1(tmp_path):
    result = CliRunner().invoke(main, ["extract", str(tmp_path / "nowhere"), "-w", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {tmp_path / 'nowhere'}: no such folder or manifest"]


def test_a_bad_option_value_is_one_line_with_exit_code_2(videos, tmp_path):
    result = CliRunner().invoke(main, ["extract", str(videos), "-w", str(tmp_path / "ws"), "--size", "8"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "[extract] size must be at least 16 pixels, got 8" in lines[0], result.output


def test_a_bad_workspace_file_is_named_with_exit_code_1(videos, tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "avfix.toml").write_text("[extract]\nsise = 3\n")
    result = CliRunner().invoke(main, ["extract", str(videos), "-w", str(tmp_path / "ws")])
    assert result.exit_code == 1 and "avfix.toml: [extract] has no setting 'sise' (did you mean 'size'?)" in result.output


def test_a_bug_shows_its_traceback_and_its_own_exit_code(videos, tmp_path, monkeypatch):
    def broken(self, run):
        raise ZeroDivisionError("a bug in a stage")

    monkeypatch.setattr(ExtractStage, "run", broken)
    result = CliRunner().invoke(main, ["extract", str(videos), "-w", str(tmp_path / "ws")])
    assert result.exit_code == BUG_EXIT_CODE == PIPELINE_BUG_EXIT_CODE == 70
    assert "Traceback (most recent call last)" in result.output
    assert "ZeroDivisionError: a bug in a stage" in result.output and "this is a bug" in result.output
    # `avfix run` does not turn it into a stage "error" either: it propagates.
    with pytest.raises(ZeroDivisionError):
        run_dag(tmp_path / "ws2", Overrides(videos=videos), RunRequest(until="extract", progress=False), lambda line: None)
    result = CliRunner().invoke(main, ["run", str(videos), "-w", str(tmp_path / "ws3"), "--until", "extract", "-q"])
    assert result.exit_code == 70 and "ZeroDivisionError" in result.output
