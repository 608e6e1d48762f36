"""Training one classifier from tags: a loop shared by the audio-event, S, ST and SA classifiers.

Train/validation split by video is the caller's; here: epochs (or a step budget), validation accuracy
after each epoch, early stop when it has not improved for `patience` epochs (SPEC §8.14: no fixed
"300 epochs"), a checkpoint after every epoch (model, optimizer, RNG, best weights) so a killed run
resumes, and a finished checkpoint is reused as long as its fingerprint (settings + data) matches.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from models.device import autocast
from pipeline.common.estimate import StepTimer
from pipeline.common.files import save_torch_atomic, sha256_file
from pipeline.common.progress import Progress
from pipeline.pseudolabel.config import TrainConfig  # noqa: F401 - its settings live with the stage's

log = logging.getLogger(__name__)

# (model, batch already on the device, training?) -> (logits, labels)
ForwardFn = Callable[[nn.Module, dict[str, Tensor], bool], tuple[Tensor, Tensor]]


@dataclass
class TrainResult:
    name: str
    train_accuracy: float
    val_accuracy: float
    epochs: int
    steps: int
    checkpoint: str
    sha256: str
    reused: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r} (sgd or adam)")


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader, forward: ForwardFn, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for batch in loader:
        with autocast(device):
            logits, labels = forward(model, _to_device(batch, device), False)
        correct += int((logits.argmax(dim=1) == labels).sum())
        total += int(labels.numel())
    return correct / total if total else float("nan")


def train_classifier(
    name: str,
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    forward: ForwardFn,
    config: TrainConfig,
    checkpoint: Path,
    fingerprint: str,
    device: torch.device,
    report: Callable[[str], None] = log.info,
    progress: Progress | None = None,
    on_rate: Callable[[float, int], None] | None = None,
) -> TrainResult:
    """Train `model` in place (it ends holding its best-validation weights) and return the scores.

    A checkpoint is written after every epoch; an interrupted run resumes at the last finished epoch
    with the same data order and random state, so it ends with the same weights as an uninterrupted one.
    `on_rate(seconds_per_batch, batches_left)` is called once, after the first batches are timed
    (`batches_left`: the most this run may still train, early stopping aside).
    """
    progress = progress or Progress(enabled=False)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    model.to(device)
    optimizer = _make_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    state: dict[str, Any] = {"epoch": 0, "steps": 0, "best_val": -1.0, "best_state": None, "stale": 0, "finished": False}
    # Loaded on the CPU: the RNG state must stay a CPU tensor; parameters are copied to the device.
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False) if checkpoint.exists() else None
    if saved is not None and saved.get("fingerprint") == fingerprint:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
        if state["finished"]:
            model.load_state_dict(state["best_state"])
            report(f"{name}: reusing {checkpoint.name} (validation accuracy {state['best_val']:.3f})")
            return _result(name, state, checkpoint, reused=True)
        report(f"{name}: resuming after epoch {state['epoch']}")
    else:
        if saved is not None:
            report(f"{name}: {checkpoint.name} was trained with other settings or data; training anew")
        torch.manual_seed(config.seed)

    if len(train_set) == 0:
        raise ValueError(f"{name}: no training samples")
    generator = torch.Generator()
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True, generator=generator,
        num_workers=config.num_workers, drop_last=len(train_set) > config.batch_size,
    )  # fmt: skip
    val_loader = DataLoader(val_set, batch_size=config.batch_size * 2, num_workers=config.num_workers)
    loss_fn = nn.CrossEntropyLoss()
    timer = StepTimer()
    while state["epoch"] < config.epochs and not _out_of_steps(state, config):
        model.train()
        correct = seen = batches = 0
        # Each epoch's order depends on its number only, so a resumed run sees the same batches.
        generator.manual_seed(config.seed + state["epoch"])
        bar = progress.bar(len(train_loader), f"{name} epoch {state['epoch'] + 1}/{config.epochs}", "batch")
        for batch in train_loader:
            with autocast(device):
                logits, labels = forward(model, _to_device(batch, device), True)
                loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += int(labels.numel())
            state["steps"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            batches += 1
            rate = timer.tick()
            if rate is not None and on_rate is not None:
                on_rate(rate, _batches_left(state, config, len(train_loader), batches))
            if _out_of_steps(state, config):
                break
        bar.close()
        state["epoch"] += 1
        state["train_acc"] = correct / max(seen, 1)
        val_acc = accuracy(model, val_loader, forward, device) if len(val_set) else state["train_acc"]
        state["last_val"] = val_acc
        if val_acc > state["best_val"]:
            state["best_val"], state["stale"] = val_acc, 0
            state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["stale"] += 1
        # Saved before anything else can be interrupted: a rerun resumes after this epoch.
        save_torch_atomic(_checkpoint(model, optimizer, scaler, state, fingerprint), checkpoint)
        report(
            f"{name}: epoch {state['epoch']} loss {loss.item():.3f} train acc {state['train_acc']:.3f} "
            f"val acc {val_acc:.3f}"
        )
        if state["stale"] >= config.patience:
            report(f"{name}: early stop (validation accuracy has not improved for {config.patience} epochs)")
            break
    state["finished"] = True
    model.load_state_dict(state["best_state"])
    save_torch_atomic(_checkpoint(model, optimizer, scaler, state, fingerprint), checkpoint)
    return _result(name, state, checkpoint, reused=False)


def _batches_left(state: dict[str, Any], config: TrainConfig, per_epoch: int, done_this_epoch: int) -> int:
    left = per_epoch - done_this_epoch + per_epoch * (config.epochs - state["epoch"] - 1)
    return left if config.max_steps is None else min(left, config.max_steps - state["steps"])


def _out_of_steps(state: dict[str, Any], config: TrainConfig) -> bool:
    return config.max_steps is not None and state["steps"] >= config.max_steps


def _checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, state: dict,
                fingerprint: str) -> dict:  # fmt: skip
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "state": state,
        "fingerprint": fingerprint,
    }


def _result(name: str, state: dict[str, Any], checkpoint: Path, reused: bool) -> TrainResult:
    return TrainResult(
        name=name,
        train_accuracy=float(state.get("train_acc", float("nan"))),
        val_accuracy=float(state["best_val"]),
        epochs=int(state["epoch"]),
        steps=int(state["steps"]),
        checkpoint=str(checkpoint),
        sha256=sha256_file(checkpoint),
        reused=reused,
    )
