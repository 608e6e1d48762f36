"""The preset table's defaults per machine, and the first line of a torch stage: which preset and device
run, and why."""

from __future__ import annotations

import pytest
import torch
from conftest import first_run_overrides, make_sets

from pipeline.workspace import announce, presets
from pipeline.workspace.config import Overrides, preset_defaults
from pipeline.workspace.dag import RunRequest, run_dag
from pipeline.workspace.registry import stage


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU 80GB")


def test_the_default_preset_is_fast_on_a_cpu_and_paper_with_a_gpu(fake_gpu, monkeypatch):
    assert presets.default_preset() == "paper"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert presets.default_preset() == "fast"
    assert preset_defaults("fast").pseudolabel.frozen and preset_defaults("fast").train.frozen_backbone
    assert not preset_defaults("paper").pseudolabel.frozen and not preset_defaults("paper").train.frozen_backbone


def test_fast_differs_from_paper_in_freezing_and_sizes_only_where_it_says():
    fast, paper = preset_defaults("fast"), preset_defaults("paper")
    assert fast.pseudolabel.backbone == paper.pseudolabel.backbone == "efficientnet_lite0"
    assert not fast.pseudolabel.random_init and not fast.train.random_init
    assert fast.extract == paper.extract  # the same stored frames: a workspace can switch preset and keep them


def test_the_run_line_names_preset_and_device_and_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = preset_defaults("fast").pseudolabel
    line = announce.run_line("pseudolabel", settings, "fast", announce.DEFAULT, "ws/avfix.toml")
    assert line == "pseudolabel: preset fast (the default without a CUDA GPU), device cpu (auto: no CUDA GPU found)"
    paper = announce.run_line("train", preset_defaults("paper").train, "paper", announce.FROM_FILE, "ws/avfix.toml")
    assert paper.startswith("train: preset paper ([run] preset in ws/avfix.toml; on a CPU it takes hours: "
                            "--preset fast trains heads on a frozen backbone in minutes), device cpu")  # fmt: skip
    chosen = announce.run_line("predict", stage("predict").config_type(device="cpu"), "cpu", announce.FROM_OPTION, "x")
    assert chosen == "predict: preset cpu (--preset), device cpu (as set)"
    assert announce.run_line("extract", preset_defaults("fast").extract, "fast", announce.DEFAULT, "x") is None


def test_the_run_line_on_a_gpu_names_it_and_amp(fake_gpu):
    line = announce.run_line("train", preset_defaults("paper").train, "paper", announce.DEFAULT, "x")
    assert line == "train: preset paper (the default with a CUDA GPU), device cuda (auto: Fake GPU 80GB, AMP)"


def test_avfix_run_prints_the_run_line_of_each_torch_stage_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train, test = make_sets(tmp_path)
    lines: list[str] = []
    summary = run_dag(tmp_path / "ws", first_run_overrides(train, test), RunRequest(until="pseudolabel", progress=False),
                      echo=lines.append)  # fmt: skip
    assert summary.ok
    assert "pseudolabel: preset cpu (--preset), device cpu (auto: no CUDA GPU found)" in lines
    assert not any(line.startswith("extract: preset") for line in lines)
    lines.clear()
    run_dag(tmp_path / "ws", Overrides(), RunRequest(until="pseudolabel", force=("pseudolabel",), progress=False),
            echo=lines.append)  # fmt: skip
    assert f"pseudolabel: preset cpu ([run] preset in {tmp_path / 'ws' / 'avfix.toml'}), device cpu " \
           "(auto: no CUDA GPU found)" in lines  # fmt: skip


def test_the_demo_starts_from_fast_keeps_the_workspace_s_preset_and_resets_it_when_asked(tmp_path):
    from click.testing import CliRunner

    from cli import main
    from pipeline.workspace.config import config_path, load_config, write_config
    from pipeline.workspace.demo import DemoConfig

    ws = tmp_path / "ws"
    first = load_config(ws, DemoConfig().overrides(ws, first_run=True)).config
    assert (first.run.preset, first.run.torch_threads) == ("fast", 0)
    assert first.pseudolabel.frozen and first.train.frozen_backbone
    ws.mkdir()
    write_config(config_path(ws), preset_defaults("cpu"))  # a workspace someone switched to cpu
    # A later run keeps what the workspace's file says ...
    assert load_config(ws, DemoConfig().overrides(ws, first_run=False)).config.pseudolabel.backbone == "tiny"
    # ... unless --preset resets it.
    again = load_config(ws, DemoConfig(preset="fast").overrides(ws, first_run=False)).config
    assert again.run.preset == "fast" and again.pseudolabel.frozen
    with pytest.raises(ValueError, match="preset must be one of paper, fast, cpu, got 'tiny'"):
        DemoConfig(preset="tiny")
    result = CliRunner().invoke(main, ["demo", "-w", str(ws), "--preset", "tiny"])
    assert result.exit_code == 2 and "'tiny' is not one of 'paper', 'fast', 'cpu'" in result.output
