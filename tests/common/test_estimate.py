"""The estimate before long work: timed steps, the time left, and the faster way named on a CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.common import estimate
from pipeline.common.estimate import StepTimer, duration, slow_hint
from pipeline.pseudolabel.classifier_loop import TrainConfig, train_classifier


def test_the_timer_skips_the_warm_up_and_reports_once(monkeypatch):
    clock = iter([10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 99.0])  # read at the 2nd step, then at the 7th
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: next(clock))
    timer = StepTimer(warmup=2, measured=5)
    rates = [timer.tick() for _ in range(12)]
    assert rates[:6] == [None] * 6 and rates[7:] == [None] * 5
    assert rates[6] == pytest.approx((10.5 - 10.0) / 5)


def test_durations_read_naturally():
    assert [duration(s) for s in (4.2, 89, 600, 5399, 5400, 9000)] == ["4 s", "89 s", "10 min", "90 min", "1.5 h", "2.5 h"]


def test_over_an_hour_on_a_cpu_names_the_faster_way():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert slow_hint(3599, cpu, frozen=False) == ""
    assert "--preset fast" in slow_hint(3601, cpu, frozen=False)
    assert "--device cuda" in slow_hint(3601, cpu, frozen=True)
    assert slow_hint(10 * 3600, gpu, frozen=False) == ""


class Pairs(Dataset):
    def __init__(self, n: int) -> None:
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "label": torch.tensor(int(self.x[index, 0] > 0))}


def test_a_classifier_reports_its_rate_once_with_the_most_batches_it_may_still_take(tmp_path):
    calls: list[tuple[float, int]] = []

    def forward(model: nn.Module, batch: dict[str, torch.Tensor], training: bool):
        return model(batch["x"]), batch["label"]

    config = TrainConfig(epochs=4, batch_size=8, patience=10)
    result = train_classifier("toy", nn.Linear(4, 2), Pairs(80), Pairs(16), forward, config, tmp_path / "toy.pt", "k",
                              torch.device("cpu"), on_rate=lambda rate, left: calls.append((rate, left)))  # fmt: skip
    assert result.epochs == 4
    # Timed after the 2 warm-up and 5 measured batches of epoch 1 (10 per epoch): 3 + 3 x 10 left.
    assert len(calls) == 1 and calls[0][0] > 0 and calls[0][1] == 33


def test_the_pseudolabel_estimate_weighs_the_classifiers_after_by_their_cost(tmp_path):
    from dataclasses import replace

    from pipeline.common.progress import Progress
    from pipeline.pseudolabel.training import ClassifierTrainer
    from pipeline.workspace.presets import preset_config

    tuned = replace(preset_config("paper", "pseudolabel"), coarse_size=100, fine_size=200)
    trainer = ClassifierTrainer(tmp_path, tuned, None, [], [], torch.device("cpu"), print, Progress(enabled=False))
    # Fine-tuned, after S_coarse (1 frame of 100²), in pixels: ST_coarse 3, SA_coarse 1, S_fine 4, ST_fine 12,
    # SA_fine 4; their cost, pixels^1.5: 5.196 + 1 + 8 + 41.57 + 8 = 63.77 S_coarse batches each.
    text = trainer._estimate("S_coarse", 1.0, 30)
    assert text.startswith("S_coarse: 1.00 s/batch here: up to 30 s for its 30 batches; about 32 min with the "
                           "5 classifiers after it (early stopping often ends sooner)")  # 30 + 30 x 63.77 s
    assert "--preset fast" not in text
    assert "about 65 min" in trainer._estimate("S_coarse", 1.0, 60)
    assert "--preset fast" in trainer._estimate("S_coarse", 1.0, 60)  # over an hour on a CPU
    frozen = ClassifierTrainer(tmp_path, replace(tuned, backbone_mode="frozen"), None, [], [], torch.device("cpu"),
                               print, Progress(enabled=False))  # fmt: skip
    assert "about 6 min with the 5 classifiers after it" in frozen._estimate("S_coarse", 1.0, 60)
    assert "up to 60 s for its 60 batches (early" in frozen._estimate("event_audio", 1.0, 60)


def test_only_the_classifiers_still_ahead_count(tmp_path):
    from pipeline.common.progress import Progress
    from pipeline.pseudolabel.training import ClassifierTrainer
    from pipeline.workspace.presets import preset_config

    frozen = preset_config("fast", "pseudolabel")
    trainer = ClassifierTrainer(tmp_path, frozen, None, [], [], torch.device("cpu"), print, Progress(enabled=False))
    assert "with the 2 classifiers after it" in trainer._estimate("S_fine", 1.0, 60)  # ST_fine, SA_fine
    assert "after it" not in trainer._estimate("SA_fine", 1.0, 60)
