"""Run under `torchrun --nproc-per-node 2` by test_classifier_ddp.py: a small classifier (BatchNorm,
dropout, a flip drawn from each sample's noise) trained by both processes together, straight and
interrupted-then-resumed, with BatchNorm learning and frozen; the first process also trains it alone.
The first process saves every result's weights and scores to the file named on the command line, and
the time it began to leave the job; the second writes the time it left beside it (OUT.left)."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pipeline.common.processes import Distributed
from pipeline.pseudolabel.classifier_loop import TrainConfig, train_classifier


class Samples(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=g)
        self.y = (self.x[:, 0] + 0.5 * self.x[:, 1] > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "label": self.y[index], "index": torch.tensor(index)}


def forward(model: nn.Module, batch: dict[str, torch.Tensor], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = batch["x"]
    if train:  # a "flip" of the second feature, as the classifiers flip frames
        x = torch.where((batch["noise"] < 0.5)[:, None], x * torch.tensor([1.0, -1.0, 1, 1, 1, 1]), x)
    return model(x), batch["label"]


def fresh(dropout: float) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def main(out: Path) -> None:
    with Distributed.from_env("cpu") as processes:
        train_together_and_alone(processes, out)
    if not processes.is_main:
        out.with_suffix(".left").write_text(repr(time.time()))


def train_together_and_alone(processes: Distributed, out: Path) -> None:
    folder = out.parent
    train, val = Samples(52, 0), Samples(21, 1)  # 52: 3 batches of 16 and a dropped rest; 21: uneven shares
    config = TrainConfig(epochs=3, batch_size=16, optimizer="sgd", lr=0.1, patience=5)
    cpu = torch.device("cpu")
    results: dict[str, object] = {}

    def run(name: str, model: nn.Module, cfg: TrainConfig, team: Distributed | None, **kwargs: object) -> None:
        result = train_classifier(name, model, train, val, forward, cfg, folder / f"{name}.pt", "fp", cpu,
                                  processes=team, **kwargs)  # fmt: skip
        results[name] = {"weights": {k: v.clone() for k, v in model.state_dict().items()},
                         "val": result.val_accuracy, "train": result.train_accuracy, "steps": result.steps}

    straight = fresh(0.3)
    run("straight", straight, config, processes)

    def stop_after_first_epoch(line: str) -> None:
        if "epoch 1 " in line:
            raise KeyboardInterrupt

    try:
        run("resumed", fresh(0.3), config, processes, report=stop_after_first_epoch)
    except KeyboardInterrupt:
        pass
    lines: list[str] = []
    run("resumed", fresh(0.3), config, processes, report=lines.append)
    results["resume_line"] = lines[0]

    frozen = replace(config, freeze_batchnorm=True)
    run("frozen_bn_together", fresh(0.0), frozen, processes)
    if processes.is_main:
        run("frozen_bn_alone", fresh(0.0), frozen, None)
        results["leaving"] = time.time()
        torch.save(results, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
