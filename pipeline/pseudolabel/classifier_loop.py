"""Training one classifier from tags: a loop shared by the audio-event, S, ST and SA classifiers.

Train/validation split by video is the caller's; here: epochs (or a step budget), validation accuracy
after each epoch, early stop when it has not improved for `patience` epochs (SPEC §8.14: no fixed
"300 epochs"), a checkpoint after every epoch (model, optimizer, RNG, best weights) so a killed run
resumes, and a finished checkpoint is reused as long as its fingerprint (settings + data) matches.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from models.device import autocast
from pipeline.common.allocator import training_heap
from pipeline.common.estimate import StepTimer
from pipeline.common.files import save_torch_atomic, sha256_file
from pipeline.common.processes import Distributed
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
def _correct(model: nn.Module, loader: DataLoader, forward: ForwardFn, device: torch.device) -> tuple[int, int]:
    """How many of the loader's samples the model classifies right, and how many it saw."""
    model.eval()
    correct = total = 0
    for batch in loader:
        with autocast(device):
            logits, labels = forward(model, _to_device(batch, device), False)
        correct += int((logits.argmax(dim=1) == labels).sum())
        total += int(labels.numel())
    return correct, total


@dataclass
class TrainJob:
    """One classifier's training, as the first process of a torchrun job hands it to the others (all
    train it together, each on its share of every batch)."""

    name: str
    model: nn.Module
    train_set: Dataset
    val_set: Dataset
    forward: ForwardFn  # picklable (a module-level function or class) to reach the other processes
    config: TrainConfig
    checkpoint: Path
    fingerprint: str


@dataclass
class Team:
    """The processes that train each classifier together: this one alone, or a torchrun job's, whose
    first process `announce`s each job to the others before training its own share."""

    processes: Distributed = field(default_factory=Distributed)
    announce: Callable[[TrainJob], None] = lambda job: None


class EpochBatches(Sampler[list[int]]):
    """One epoch's batches: a permutation of the samples seeded by (seed, epoch), cut into global batches
    of `batch_size` (the last, partial one dropped when there is more than one batch), of each of which
    this process takes its contiguous share. The batches depend on the epoch only, so a resumed run sees
    the ones an uninterrupted run would have, whatever the number of processes."""

    def __init__(self, n_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def global_sizes(self) -> list[int]:
        if self.n_items <= self.batch_size:
            return [self.n_items] if self.n_items else []
        return [self.batch_size] * (self.n_items // self.batch_size)

    def __len__(self) -> int:
        return len(self.global_sizes())

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n_items, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        for i, size in enumerate(self.global_sizes()):
            batch = order[i * self.batch_size : i * self.batch_size + size]
            yield batch.tensor_split(self.world_size)[self.rank].tolist()

    def noise(self) -> Tensor:
        """A uniform number per sample for this epoch (the sample's random choices, e.g. its flip): the
        same whichever process or batch the sample lands in."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 2 + 1)
        return torch.rand(self.n_items, generator=generator)


@training_heap()
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
    processes: Distributed | None = None,
) -> TrainResult:
    """Train `model` in place (it ends holding its best-validation weights) and return the scores.

    A checkpoint is written after every epoch; an interrupted run resumes at the last finished epoch
    with the same data order and random state, so it ends with the same weights as an uninterrupted one
    (with the same number of processes). `on_rate(seconds_per_batch, batches_left)` is called once,
    after the first batches are timed (`batches_left`: the most this run may still train, early
    stopping aside). Under torchrun (`processes`), every process calls this with the same job: each
    runs its share of every batch and of the validation set, the gradients are averaged, and the first
    process writes the checkpoints.
    """
    processes = processes or Distributed()
    progress = progress or Progress(enabled=False)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    model.to(device)
    if processes.active and device.type == "cuda" and not config.freeze_batchnorm:
        # Statistics over the global batch; CPU processes (gloo) cannot sync them and keep their own.
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = _make_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    state: dict[str, Any] = {"epoch": 0, "steps": 0, "best_val": -1.0, "best_state": None, "stale": 0, "finished": False}
    processes.barrier()  # the first process may still be writing the checkpoint the others are about to read
    # Loaded on the CPU: the RNG state must stay a CPU tensor; parameters are copied to the device.
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False) if checkpoint.exists() else None
    if saved is not None and saved.get("fingerprint") == fingerprint:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(_own_rng(saved, processes))
        state = saved["state"]
        if state["finished"]:
            model.load_state_dict(state["best_state"])
            report(f"{name}: reusing {checkpoint.name} (validation accuracy {state['best_val']:.3f})")
            return _result(name, state, checkpoint, reused=True, processes=processes)
        report(f"{name}: resuming after epoch {state['epoch']}")
    else:
        if saved is not None:
            report(f"{name}: {checkpoint.name} was trained with other settings or data; training anew")
        torch.manual_seed(config.seed + processes.rank)  # dropout masks differ between processes

    if len(train_set) == 0:
        raise ValueError(f"{name}: no training samples")
    batches = EpochBatches(len(train_set), config.batch_size, config.seed, processes.rank, processes.world_size)
    if min(batches.global_sizes()) < processes.world_size:
        raise ValueError(f"{name}: a batch of {min(batches.global_sizes())} samples cannot be shared by "
                         f"{processes.world_size} processes: raise the batch size or use fewer processes")  # fmt: skip
    train_loader = DataLoader(train_set, batch_sampler=batches, num_workers=config.num_workers)
    val_loader = DataLoader(_share(val_set, processes), batch_size=config.batch_size * 2,
                            num_workers=config.num_workers)  # fmt: skip
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    parameters = [p for p in model.parameters() if p.requires_grad]
    frozen_bn = _batchnorm_modules(model) if config.freeze_batchnorm else []
    timer = StepTimer()
    while state["epoch"] < config.epochs and not _out_of_steps(state, config):
        model.train()
        for module in frozen_bn:
            module.eval()
        correct = seen = done = 0
        batches.epoch = state["epoch"]
        noise = batches.noise()
        bar = progress.bar(len(train_loader), f"{name} epoch {state['epoch'] + 1}/{config.epochs}", "batch")
        for batch, global_size in zip(train_loader, batches.global_sizes()):
            if "index" in batch:
                batch["noise"] = noise[batch["index"]]
            with autocast(device):
                logits, labels = forward(model, _to_device(batch, device), True)
                summed = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            # Each process's sum over its share, scaled so that averaging the gradients over the
            # processes gives the gradient of the global batch's mean loss.
            scaler.scale(summed * (processes.world_size / global_size)).backward()
            processes.average_gradients(parameters)
            scaler.step(optimizer)
            scaler.update()
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += int(labels.numel())
            state["steps"] += 1
            bar.update(1)
            loss = summed.item() / max(int(labels.numel()), 1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            done += 1
            rate = timer.tick()
            if rate is not None and on_rate is not None:
                on_rate(rate, _batches_left(state, config, len(train_loader), done))
            if _out_of_steps(state, config):
                break
        bar.close()
        state["epoch"] += 1
        counts = processes.sum(torch.tensor([correct, seen], dtype=torch.float64))
        state["train_acc"] = float(counts[0] / max(float(counts[1]), 1.0))
        processes.broadcast_buffers(model)  # the first process's running statistics are the ones saved
        val_acc = _accuracy(model, val_loader, forward, device, processes) if len(val_set) else state["train_acc"]
        state["last_val"] = val_acc
        if val_acc > state["best_val"]:
            state["best_val"], state["stale"] = val_acc, 0
            state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["stale"] += 1
        # Saved before anything else can be interrupted: a rerun resumes after this epoch.
        _save(model, optimizer, scaler, state, fingerprint, checkpoint, processes)
        report(
            f"{name}: epoch {state['epoch']} loss {loss:.3f} train acc {state['train_acc']:.3f} "
            f"val acc {val_acc:.3f}"
        )
        if state["stale"] >= config.patience:
            report(f"{name}: early stop (validation accuracy has not improved for {config.patience} epochs)")
            break
    state["finished"] = True
    model.load_state_dict(state["best_state"])
    _save(model, optimizer, scaler, state, fingerprint, checkpoint, processes)
    return _result(name, state, checkpoint, reused=False, processes=processes)


def run_train_job(job: TrainJob, device: torch.device, processes: Distributed, **kwargs: Any) -> TrainResult:
    return train_classifier(job.name, job.model, job.train_set, job.val_set, job.forward, job.config, job.checkpoint,
                            job.fingerprint, device, processes=processes, **kwargs)  # fmt: skip


def _share(data: Dataset, processes: Distributed) -> Dataset:
    """This process's contiguous share of the validation samples."""
    if not processes.active:
        return data
    bounds = torch.linspace(0, len(data), processes.world_size + 1).round().long().tolist()
    return Subset(data, range(bounds[processes.rank], bounds[processes.rank + 1]))


def _accuracy(model: nn.Module, loader: DataLoader, forward: ForwardFn, device: torch.device,
              processes: Distributed) -> float:  # fmt: skip
    correct, total = _correct(model, loader, forward, device)
    counts = processes.sum(torch.tensor([correct, total], dtype=torch.float64))
    return float(counts[0] / counts[1]) if counts[1] else float("nan")


def _batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _own_rng(saved: dict[str, Any], processes: Distributed) -> Tensor:
    """This process's random state from a checkpoint: its own when the run has as many processes."""
    per_process = saved.get("rngs")
    if per_process is not None and len(per_process) == processes.world_size:
        return per_process[processes.rank]
    return saved["rng"]


def _save(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, state: dict,
          fingerprint: str, checkpoint: Path, processes: Distributed) -> None:  # fmt: skip
    rngs = processes.gather([torch.get_rng_state()])  # every process takes part; the first writes
    if processes.is_main:
        save_torch_atomic(_checkpoint(model, optimizer, scaler, state, fingerprint, rngs), checkpoint)


def _batches_left(state: dict[str, Any], config: TrainConfig, per_epoch: int, done_this_epoch: int) -> int:
    left = per_epoch - done_this_epoch + per_epoch * (config.epochs - state["epoch"] - 1)
    return left if config.max_steps is None else min(left, config.max_steps - state["steps"])


def _out_of_steps(state: dict[str, Any], config: TrainConfig) -> bool:
    return config.max_steps is not None and state["steps"] >= config.max_steps


def _checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, state: dict,
                fingerprint: str, rngs: list[Tensor]) -> dict:  # fmt: skip
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rngs[0],
        "rngs": rngs,  # of every process, in rank order
        "state": state,
        "fingerprint": fingerprint,
    }


def _result(name: str, state: dict[str, Any], checkpoint: Path, reused: bool, processes: Distributed) -> TrainResult:
    return TrainResult(
        name=name,
        train_accuracy=float(state.get("train_acc", float("nan"))),
        val_accuracy=float(state["best_val"]),
        epochs=int(state["epoch"]),
        steps=int(state["steps"]),
        checkpoint=str(checkpoint),
        sha256=sha256_file(checkpoint) if processes.is_main else "",  # the first process's file
        reused=reused,
    )
