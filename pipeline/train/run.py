"""The train stage: the STA network learned from features.zarr + pseudo.zarr → WS/checkpoints/sta/.

Per step: a chunk-ordered batch from the stores (`stores.samples`), one shared random crop / flip /
rotation per sample on the device (`pipeline.train.augment`), BCE-with-logits against the pseudo-GT of frame
t (+ optional KL term, + the audio switch's cross-entropy), AMP on CUDA, gradient clipping, a
per-step learning-rate schedule.

Exact resume: the batch order is a pure function of (seed, epoch), the augmentation of a step is
drawn from a generator seeded with (seed, step), and `last.pt` holds the model, optimizer, scheduler
and scaler states, every RNG state, and the (epoch, batch, step) position. It is written atomically
every `checkpoint_every` steps, at the end of each epoch and on Ctrl-C, so a killed run, rerun, ends
with the same weights as an uninterrupted one (bit-exact on the CPU). `best.pt` keeps the weights of
the best validation CC. Validation (CC, NSS, KLD against held-out videos' pseudo-GT, and the switch's
accuracy) runs after each epoch; metrics go to `metrics.jsonl` and, when installed, TensorBoard.

Several processes: run under `torchrun`; each process takes its slice of every global batch
(`batch_size` per process), gradients are averaged by DDP (gloo on CPU, NCCL on GPUs), rank 0 writes
the checkpoints and logs.

The settings are `pipeline.train.config`'s, the checkpoint files `pipeline.train.checkpoints`', the
network `pipeline.train.model`'s and the process group and Ctrl-C handling `pipeline.common.processes`'.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from models import metrics
from models.backbones import build_backbone
from models.device import autocast
from models.sta import BackboneLevels, STANet, sta_loss, weighted_nss
from pipeline.common.allocator import training_heap, tune_allocator
from pipeline.common.estimate import StepTimer, duration, slow_hint
from pipeline.common.files import save_torch_atomic
from pipeline.common.progress import Progress
from pipeline.common.settings import jsonable
from pipeline.train.augment import augment_batch, augment_levels, draw_affine, resize_flow, resize_frames, resize_map
from pipeline.train.checkpoints import (
    CHECKPOINT_FORMAT, CHECKPOINT_SCHEMA, checkpoint_dir, load_checkpoint, read_header, restore_rng, rng_states,
)  # fmt: skip
from pipeline.train.config import STATrainConfig, TrainError
from pipeline.train.frozen import LEVELS, build_level_cache
from pipeline.train.model import build_sta
from pipeline.common.processes import Distributed, StopRequest
from pipeline.train.stage import (
    BEST, LAST, METRICS, checkpoint_header, checkpoint_verdict, training_data_key, training_finished,
)  # fmt: skip
from stores import cache as cstore
from stores import features as fstore
from stores import pseudo as pstore
from stores import zarr_io
from stores.cache import STRIDE32
from stores.chunks import ChunkError
from stores.integrity import mark_damaged
from stores.samples import ChunkBatchSampler, SampleError, STASamples, index_videos

log = logging.getLogger(__name__)

DEFAULT_EVENT_THRESHOLD = 0.5


@dataclass
class TrainSummary:
    checkpoint_dir: str
    epochs_done: int = 0
    steps: int = 0
    train_samples: int = 0
    val_samples: int = 0
    train_loss: float | None = None  # mean loss of the last epoch this run trained in
    val: dict[str, float] = field(default_factory=dict)
    best_cc: float | None = None
    best_epoch: int | None = None
    samples_per_s: float = 0.0
    seconds: float = 0.0
    up_to_date: bool = False
    resumed_from_step: int | None = None
    interrupted: bool = False
    world_size: int = 1
    rank: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.interrupted

    def line(self) -> str:
        if self.up_to_date:
            head = f"train: up to date ({self.epochs_done} epochs, {self.steps} steps)"
        else:
            resumed = f", resumed at step {self.resumed_from_step}" if self.resumed_from_step is not None else ""
            loss = f", loss {self.train_loss:.4f}" if self.train_loss is not None else ""
            head = (f"train: {self.epochs_done} epochs, {self.steps} steps{resumed}{loss}, "
                    f"{self.samples_per_s:.1f} samples/s")  # fmt: skip
        val = ""
        if self.val:
            val = f"; val CC {self.val['cc']:.3f} NSS {self.val['nss']:.3f} KLD {self.val['kld']:.3f}"
            if self.best_cc is not None:
                val += f" (best CC {self.best_cc:.3f} after epoch {self.best_epoch + 1})"
        text = f"{head}{val} in {self.seconds:.1f} s -> {self.checkpoint_dir}"
        return text + (" [interrupted: rerun to resume]" if self.interrupted else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: undefined scores (NaN) become null."""
        return _nan_to_none({**asdict(self), "ok": self.ok})


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    return value


# --- model and optimizer ----------------------------------------------------------------------------


def _backbone_is_pretrained(config: STATrainConfig) -> bool:
    # The tiny backbone has no pretrained weights; the others are pretrained unless asked otherwise.
    return config.weights is not None or (not config.random_init and config.backbone != "tiny")


def _frozen_batchnorm_modules(model: STANet, config: STATrainConfig) -> list[nn.Module]:
    """BatchNorm layers whose statistics stay fixed: those of pretrained parts by default (batches of a
    few samples would wreck them), all of them or none when asked."""
    if config.freeze_batchnorm is False:
        return []
    parts: list[nn.Module] = []
    if config.freeze_batchnorm or _backbone_is_pretrained(config):
        parts.append(model.backbone)
    if config.freeze_batchnorm or config.audio_weights is not None:
        parts.append(model.audio_encoder)
    return [m for part in parts for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _make_optimizer(model: STANet, config: STATrainConfig) -> torch.optim.Optimizer:
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    backbone = [p for p in model.parameters() if id(p) in backbone_ids and p.requires_grad]
    rest = [p for p in model.parameters() if id(p) not in backbone_ids and p.requires_grad]
    groups = [{"params": backbone, "lr": config.lr * config.backbone_lr_scale}, {"params": rest, "lr": config.lr}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _lr_factor(config: STATrainConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "cosine":
            span = max(total_steps - config.warmup_steps, 1)
            progress = min((step - config.warmup_steps) / span, 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


# --- progress ---------------------------------------------------------------------------------------


class TrainProgress(Progress):
    """A bar over optimisation steps with the running loss and sample rate."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(enabled=enabled, unit="step")
        self.steps: Any = None

    def start_steps(self, total: int, done: int) -> None:
        if self.enabled:
            self.steps = tqdm(total=total, initial=done, unit="step", desc="train", dynamic_ncols=True)

    def advance_steps(self, loss: float, samples_per_s: float) -> None:
        if self.steps is not None:
            self.steps.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.1f}", refresh=False)
            self.steps.update(1)

    def close(self) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None
        super().close()


# --- validation --------------------------------------------------------------------------------------------


@torch.no_grad()
def validate(model: nn.Module, loader: Iterable[dict[str, Tensor]], config: STATrainConfig, device: torch.device,
             event_threshold: float, processes: Distributed, frame_hw: tuple[int, int]) -> dict[str, float]:  # fmt: skip
    """Mean CC, NSS, KLD of the predicted maps against the held-out pseudo-GT, and the switch's accuracy.

    Inputs are resized (no augmentation) and the gate is the switch head's own, exactly as at predict
    time. Sums are reduced over processes, each of which scored its own share of the samples.
    """
    model.eval()
    # cc, nss, kld sums and counts (NaN scores, e.g. a constant map, are counted apart as MIT does),
    # samples, switch decisions right, samples with audio
    sums = torch.zeros(9, dtype=torch.float64)
    for batch in loader:
        has_audio = batch["has_audio"].to(device)
        flow = _flow_input(batch, config, frame_hw, device)
        with autocast(device, config.amp):
            output = model(_visual_input(batch, config.input_size, device), batch["audio"].to(device), has_audio, None, flow)
        prediction = torch.sigmoid(output.saliency_logits.float())
        target = resize_map(batch["pseudo_gt"].to(device), config.input_size)
        event_target = batch["event_prob"].to(device) >= event_threshold
        decided = output.switch_logits.argmax(dim=1).bool()
        scores = [metrics.cc(prediction, target), weighted_nss(prediction, target), metrics.kld(prediction, target)]
        values = [part for score in scores for part in (score.nan_to_num(0.0).sum(), score.isfinite().sum())]
        values += [torch.tensor(prediction.shape[0]), ((decided == event_target) & has_audio).sum(), has_audio.sum()]
        sums += torch.stack([v.double().cpu() for v in values])
    sums = processes.sum(sums)
    return {
        "cc": _ratio(sums[0], sums[1]), "nss": _ratio(sums[2], sums[3]), "kld": _ratio(sums[4], sums[5]),
        "n": int(sums[6]), "switch_accuracy": _ratio(sums[7], sums[8]),
    }  # fmt: skip


def _ratio(total: Tensor, count: Tensor) -> float:
    return float(total) / float(count) if count > 0 else float("nan")


def _visual_input(batch: dict[str, Tensor], size: int, device: torch.device) -> Tensor | BackboneLevels:
    """The frames resized to the input size, or a frozen backbone's cached levels of them."""
    if STRIDE32.name in batch:
        return BackboneLevels({name: batch[name].to(device).float() for name in LEVELS}, (size, size))
    return resize_frames(batch["frames"].to(device), size)


def _flow_input(batch: dict[str, Tensor], config: STATrainConfig, frame_hw: tuple[int, int],
                device: torch.device) -> Tensor | None:  # fmt: skip
    if not config.model.use_flow:
        return None
    return resize_flow(batch["flow"].to(device), frame_hw, config.input_size)


# --- the stage ----------------------------------------------------------------------------------------------


@dataclass
class _Position:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0
    batch: int = 0  # next batch of `epoch`
    step: int = 0
    best_cc: float = -math.inf
    best_epoch: int | None = None
    validated_step: int = -1  # step at which validation last ran


@dataclass
class _Run:
    """Everything one training run carries around."""

    config: STATrainConfig
    folder: Path
    device: torch.device
    processes: Distributed
    model: STANet
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    frozen_bn: list[nn.Module]
    position: _Position
    header: dict[str, Any]
    event_threshold: float
    log_file: Path
    frame_hw: tuple[int, int]  # of the stored frames (the flow's pixels)
    tensorboard: Any = None
    last_val: dict[str, float] = field(default_factory=dict)
    in_step: bool = False  # True while a step may have half-updated the weights: never save then
    report: Callable[[str], None] = log.info
    timer: StepTimer = field(default_factory=StepTimer)  # for the estimate of the time left
    total_steps: int = 0
    saved_position: dict[str, Any] | None = None

    def checkpoint(self, name: str, with_training_state: bool = True) -> None:
        if not self.processes.is_main or self.in_step:
            return
        if name == LAST and self.saved_position == asdict(self.position):
            return  # nothing new since the last save
        state = {**self.header, "model": self.model.state_dict(), "position": asdict(self.position),
                 "val": self.last_val, "avfix_version": zarr_io.package_version()}  # fmt: skip
        if with_training_state:
            state.update({
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_states(),
            })  # fmt: skip
        save_torch_atomic(state, self.folder / name)
        if name == LAST:
            self.saved_position = asdict(self.position)

    def log(self, record: dict[str, Any]) -> None:
        if not self.processes.is_main:
            return
        with open(self.log_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": time.time(), **record}) + "\n")
        if self.tensorboard is not None:
            kind = record["kind"]
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.tensorboard.add_scalar(f"{kind}/{key}", value, record["step"])

    def train_mode(self) -> None:
        self.wrapped.train()
        for module in self.frozen_bn:
            module.eval()


def _open_tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; metrics.jsonl is always written
        return None
    return SummaryWriter(log_dir=str(folder / "tensorboard"))


@dataclass
class _Data:
    train_set: STASamples
    val_set: STASamples
    sampler: ChunkBatchSampler
    info: dict[str, Any]  # recorded in every checkpoint: data_key, features_settings, event_threshold, classes
    notes: list[str]


def _data(workspace: Path, config: STATrainConfig, processes: Distributed, device: torch.device,
          progress: TrainProgress) -> _Data:  # fmt: skip
    """The training and validation samples of the workspace's stores, and the batch order."""
    features_path, pseudo_path = fstore.SCHEMA.path(workspace), pstore.SCHEMA.path(workspace)
    try:
        videos, events, notes = index_videos(features_path, pseudo_path, config.val_fraction, config.seed)
    except zarr_io.StoreError as exc:  # SampleError is one too
        raise TrainError(str(exc)) from exc
    train_videos = [v for v in videos if v.split == "train"]
    if not any(v.gt_frames for v in train_videos):
        raise TrainError(
            f"{pseudo_path}: no training frame has a pseudo-GT ({len(train_videos)} training video(s), "
            f"{sum(v.n_frames for v in train_videos)} frames, all with has_pseudo_gt = false): nothing to "
            "train on; check the pseudolabel stage's summary"
        )
    val_videos = [v for v in videos if v.split == "val"]
    levels_path = _level_cache(workspace, config, processes, device, train_videos + val_videos, progress)
    cache_chunks = 4 * config.shuffle_window + 8  # frames (two chunks at a boundary), audio, flow per block
    try:
        train_set = STASamples(features_path, pseudo_path, train_videos, events, flow=config.model.use_flow,
                               cache_chunks=cache_chunks, levels_path=levels_path)  # fmt: skip
        val_set = STASamples(features_path, pseudo_path, val_videos, events, flow=config.model.use_flow,
                             levels_path=levels_path)  # fmt: skip
    except SampleError as exc:
        raise TrainError(str(exc)) from exc
    sampler = ChunkBatchSampler(train_set.chunk_blocks(), config.batch_size, window=config.shuffle_window,
                                streams=config.shuffle_streams, seed=config.seed, rank=processes.rank,
                                world_size=processes.world_size)  # fmt: skip
    if len(sampler) == 0:
        raise TrainError(
            f"only {len(train_set)} training frames have a pseudo-GT, fewer than one batch of "
            f"{sampler.global_batch} ({config.batch_size} x {processes.world_size} processes): lower --batch-size"
        )
    if len(val_set) == 0:
        notes.append("no validation video has a pseudo-GT: no validation scores, no best.pt (predict uses last.pt)")
    features, pseudo = fstore.SCHEMA.open_for_reading(features_path), pstore.SCHEMA.open_for_reading(pseudo_path)
    pseudo_attrs = pstore.SCHEMA.read_store(pseudo)
    info = {
        "data_key": training_data_key(videos, pseudo),
        "features_settings": fstore.SCHEMA.read_store(features).settings,
        "event_threshold": float(pseudo_attrs.settings.get("event_threshold", DEFAULT_EVENT_THRESHOLD)),
        "classes": pseudo_attrs.classes,
    }
    return _Data(train_set, val_set, sampler, info, notes)


def _level_cache(workspace: Path, config: STATrainConfig, processes: Distributed, device: torch.device,
                 videos: list[Any], progress: TrainProgress) -> Path | None:  # fmt: skip
    """With a frozen backbone, WS/sta-cache.zarr made complete for `videos` (by the first process)."""
    if not config.frozen_backbone:
        return None
    path = cstore.STA_CACHE.path(workspace)
    if processes.is_main:
        backbone = build_backbone(config.backbone, config.weights, random_init=config.random_init and config.weights is None)
        build_level_cache(workspace, config, backbone, device, videos, progress)
    processes.barrier()
    return path


def _existing_checkpoint(folder: Path, config: STATrainConfig, data_key: str, processes: Distributed,
                         restart: bool) -> dict[str, Any] | None:  # fmt: skip
    """The checkpoint to resume from (it fits this run, by `checkpoint_verdict`), or None to start anew."""
    last = folder / LAST
    if not last.exists():
        return None
    if not restart:
        verdict = checkpoint_verdict(read_header(last), config, data_key)
        if verdict.restart:
            raise TrainError(f"{last}: {verdict.reason}: use another workspace, or --restart to discard it and "
                             "train anew")  # fmt: skip
        return load_checkpoint(last)
    processes.barrier()  # every process has seen the old files before rank 0 removes them
    if processes.is_main:
        for name in (LAST, BEST, METRICS):
            (folder / name).unlink(missing_ok=True)
    processes.barrier()
    return None


def _build_run(config: STATrainConfig, folder: Path, device: torch.device, processes: Distributed,
               data: _Data, saved: dict[str, Any] | None, total_steps: int) -> _Run:  # fmt: skip
    """The model, optimizer, schedule and scaler, fresh (seeded) or restored from `saved`."""
    # Every random state a checkpoint keeps starts from the seed: a run is a function of its settings.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    model = build_sta(config.model_settings(), config.weights, config.random_init, config.audio_weights)
    if config.frozen_backbone:
        model.backbone.requires_grad_(False)  # and out of the optimizer, which takes trainable parameters only
    model.to(device)
    if processes.active and device.type == "cuda" and config.freeze_batchnorm is not True:
        # Statistics over the global batch; CPU processes (gloo) cannot sync them and keep their own.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and config.amp)
    position = _Position()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        restore_rng(saved["rng"])
        position = _Position(**saved["position"])
    wrapped: nn.Module = model
    if processes.active:
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    header = {
        "format": CHECKPOINT_FORMAT, "schema_version": CHECKPOINT_SCHEMA, "config": jsonable(config),
        **checkpoint_header(config, data.info["data_key"]), **data.info,
    }  # fmt: skip
    run = _Run(config, folder, device, processes, model, wrapped, optimizer, scheduler, scaler,
               _frozen_batchnorm_modules(model, config), position, header, data.info["event_threshold"],
               folder / METRICS, data.train_set.frame_hw)  # fmt: skip
    if saved is not None:
        run.last_val = dict(saved.get("val") or {})
        run.saved_position = asdict(position)
    return run


def run_train(
    workspace: str | Path,
    config: STATrainConfig,
    progress: TrainProgress | None = None,
    report: Callable[[str], None] = log.info,
    restart: bool = False,
    step_hook: Callable[[int], None] | None = None,
) -> TrainSummary:
    """Train (or resume, or find up to date) the STA network of `workspace`; see the module docstring.

    `step_hook(step)` is called after every completed step (tests use it to simulate a kill).
    """
    began = time.perf_counter()
    tune_allocator()
    workspace = Path(workspace)
    with Distributed.from_env(config.device) as processes, training_heap():
        summary = _train_checked(workspace, config, processes, progress if processes.is_main else None, report,
                                 restart, step_hook)  # fmt: skip
    summary.seconds = time.perf_counter() - began
    return summary


def _train_checked(*args: Any) -> TrainSummary:
    """`_train`, a damaged chunk of its data marked for the stage that wrote it (one line, not a traceback)."""
    try:
        return _train(*args)
    except ChunkError as exc:
        raise TrainError(f"{exc}; {mark_damaged(exc)}") from exc


def _train(workspace: Path, config: STATrainConfig, processes: Distributed, progress: TrainProgress | None,
           report: Callable[[str], None], restart: bool,
           step_hook: Callable[[int], None] | None) -> TrainSummary:  # fmt: skip
    folder = checkpoint_dir(workspace)
    summary = TrainSummary(checkpoint_dir=str(folder), world_size=processes.world_size, rank=processes.rank)
    device = processes.device(config.device)
    progress = progress or TrainProgress(enabled=False)
    data = _data(workspace, config, processes, device, progress)
    summary.notes, summary.train_samples, summary.val_samples = data.notes, len(data.train_set), len(data.val_set)
    for note in data.notes:
        report(note)
    batches_per_epoch = len(data.sampler)
    total_steps = batches_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    folder.mkdir(parents=True, exist_ok=True)
    saved = _existing_checkpoint(folder, config, data.info["data_key"], processes, restart)
    run = _build_run(config, folder, device, processes, data, saved, total_steps)
    run.report, run.total_steps = report, total_steps
    position = run.position
    if _finished(position, config):
        summary.up_to_date = True
    else:
        summary.resumed_from_step = position.step if saved is not None else None
        _loop(run, data, batches_per_epoch, total_steps, progress, step_hook, summary)
    summary.steps, summary.epochs_done, summary.val = position.step, position.epoch, run.last_val
    if position.best_epoch is not None:
        summary.best_cc, summary.best_epoch = position.best_cc, position.best_epoch
    return summary


def _loop(run: _Run, data: _Data, batches_per_epoch: int, total_steps: int, progress: TrainProgress,
          step_hook: Callable[[int], None] | None, summary: TrainSummary) -> None:  # fmt: skip
    """Epochs until the budget is spent or a stop is requested; validation and checkpoints on the way."""
    config, position, processes, device = run.config, run.position, run.processes, run.device
    if processes.is_main:
        run.tensorboard = _open_tensorboard(run.folder)
    pin = device.type == "cuda"
    train_loader = data.train_set.loader(data.sampler, config.num_workers, processes=config.worker_processes,
                                         pin_memory=pin, persistent_workers=True)  # fmt: skip
    val_batches = _shards(len(data.val_set), config.val_batch_size, processes)
    val_loader = data.val_set.loader(val_batches, min(config.num_workers, 1), processes=config.worker_processes,
                                     pin_memory=pin)  # fmt: skip
    stop = StopRequest()
    progress.start_steps(total_steps, position.step)
    steps_at_start, clock = position.step, time.perf_counter()
    try:
        with stop.installed():
            while not _finished(position, config):
                if position.batch < batches_per_epoch and not _out_of_steps(position, config):
                    data.sampler.set_epoch(position.epoch, position.batch)
                    losses = _run_epoch(run, train_loader, stop, progress, step_hook, clock, steps_at_start)
                    if losses:
                        summary.train_loss = float(np.mean(losses))
                if processes.any_true(stop.requested):
                    summary.interrupted = True
                    break
                end_of_epoch = position.batch >= batches_per_epoch
                if (end_of_epoch or _out_of_steps(position, config)) and position.validated_step != position.step:
                    _validate_and_keep_best(run, val_loader, len(val_batches))
                if end_of_epoch:
                    position.epoch, position.batch = position.epoch + 1, 0
                run.checkpoint(LAST)
    finally:
        # Also on Ctrl-C and errors, unless a step was cut short (then the last periodic save stands).
        run.checkpoint(LAST)
        progress.close()
        if run.tensorboard is not None:
            run.tensorboard.close()
    # Not after an error: the other processes may be in another collective, or gone.
    processes.barrier()
    elapsed = time.perf_counter() - clock
    summary.samples_per_s = (position.step - steps_at_start) * data.sampler.global_batch / max(elapsed, 1e-9)


def _finished(position: _Position, config: STATrainConfig) -> bool:
    return training_finished(position.epoch, position.step, position.validated_step, config)


def _out_of_steps(position: _Position, config: STATrainConfig) -> bool:
    return config.max_steps is not None and position.step >= config.max_steps


def _shards(n_items: int, batch_size: int, processes: Distributed) -> list[list[int]]:
    """Validation batches of this process: a contiguous share of the samples."""
    per_process = math.ceil(n_items / processes.world_size)
    mine = list(range(processes.rank * per_process, min(n_items, (processes.rank + 1) * per_process)))
    return [mine[s : s + batch_size] for s in range(0, len(mine), batch_size)]



def _run_epoch(run: _Run, loader: Iterable[dict[str, Tensor]], stop: StopRequest, progress: TrainProgress,
               step_hook: Callable[[int], None] | None, clock: float, steps_at_start: int) -> list[float]:  # fmt: skip
    config, position, processes = run.config, run.position, run.processes
    losses: list[float] = []
    run.train_mode()
    batches = iter(loader)
    while True:
        if processes.any_true(stop.requested) or _out_of_steps(position, config):
            break
        try:
            batch = next(batches)
        except StopIteration:
            break
        except RuntimeError:
            if stop.requested:  # Ctrl-C also reaches worker processes, which exit
                break
            raise
        run.in_step = True
        terms = _train_step(run, batch)
        position.step += 1
        position.batch += 1
        run.in_step = False
        loss = float(terms.total.detach())
        losses.append(loss)
        samples = (position.step - steps_at_start) * config.batch_size * processes.world_size
        rate = samples / max(time.perf_counter() - clock, 1e-9)
        progress.advance_steps(loss, rate)
        if position.step % config.log_every == 0:
            run.log({"kind": "train", "epoch": position.epoch, "step": position.step, "loss": loss,
                     "bce": float(terms.bce), "kl": float(terms.kl), "switch": float(terms.switch),
                     "lr": run.scheduler.get_last_lr()[-1], "samples_per_s": rate})  # fmt: skip
        if position.step % config.checkpoint_every == 0:
            run.checkpoint(LAST)
        rate = run.timer.tick()
        if rate is not None and processes.is_main:
            run.report(_estimate(run, rate))
        if step_hook is not None:
            step_hook(position.step)
    return losses


def _estimate(run: _Run, seconds_per_step: float) -> str:
    left = run.total_steps - run.position.step
    seconds = seconds_per_step * left
    return (f"train: {seconds_per_step:.2f} s/step here: about {duration(seconds)} for the {left} steps left "
            f"(and a validation pass per epoch){slow_hint(seconds, run.device, run.config.frozen_backbone)}")  # fmt: skip


def _train_step(run: _Run, batch: dict[str, Tensor]) -> Any:
    config, device, processes = run.config, run.device, run.processes
    # The draws for the whole global batch come from a generator seeded by the step: identical in every
    # process (each takes its slice) and after a resume.
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + run.position.step)
    global_theta = draw_affine(config.batch_size * processes.world_size, config.augment, generator)
    theta = global_theta[processes.rank * config.batch_size : (processes.rank + 1) * config.batch_size]
    flow = batch["flow"].to(device, non_blocking=True) if config.model.use_flow else None
    pseudo_gt = batch["pseudo_gt"].to(device, non_blocking=True)
    visual: Tensor | BackboneLevels
    if STRIDE32.name in batch:  # a frozen backbone's cached levels
        levels = {name: batch[name].to(device, non_blocking=True) for name in LEVELS}
        warped = augment_levels(levels, pseudo_gt, theta, config.input_size, flow, run.frame_hw)
        visual = BackboneLevels(warped.levels, (config.input_size, config.input_size))
        target, motion = warped.pseudo_gt, warped.flow
    else:
        augmented = augment_batch(batch["frames"].to(device, non_blocking=True), pseudo_gt, theta, config.input_size, flow)
        visual, target, motion = augmented.frames, augmented.pseudo_gt, augmented.flow
    has_audio = batch["has_audio"].to(device)
    event_prob = batch["event_prob"].to(device)
    with autocast(device, config.amp):
        output = run.wrapped(visual, batch["audio"].to(device, non_blocking=True), has_audio,
                             event_prob if config.teacher_forcing else None, motion)  # fmt: skip
    terms = sta_loss(output, target, event_prob >= run.event_threshold, has_audio, config.loss)
    if not torch.isfinite(terms.total):
        run.in_step = False  # nothing was applied yet: the last completed step may still be saved
        raise TrainError(f"the loss became {float(terms.total)} at step {run.position.step + 1}: "
                         "lower the learning rate (--lr)")  # fmt: skip
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(terms.total).backward()
    if config.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return terms


def _validate_and_keep_best(run: _Run, loader: Iterable[dict[str, Tensor]], n_batches: int) -> None:
    position = run.position
    if n_batches == 0 and not run.processes.active:  # nothing to score (with DDP, every process must join)
        position.validated_step = position.step
        return
    scores = validate(run.wrapped, loader, run.config, run.device, run.event_threshold, run.processes, run.frame_hw)
    run.train_mode()
    position.validated_step = position.step
    if scores["n"] == 0:
        return
    run.last_val = scores
    run.log({"kind": "val", "epoch": position.epoch, "step": position.step, **scores})
    if scores["cc"] > position.best_cc:
        position.best_cc, position.best_epoch = scores["cc"], position.epoch
        run.checkpoint(BEST, with_training_state=False)
