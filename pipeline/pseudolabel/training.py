"""Training the pseudolabel stage's classifiers from tags: the audio event classifier, then the coarse
S/ST/SA classifiers on whole frames, then the fine ones on the coarse stage's crops (SPEC §1.4, §2, §3.2).

Each classifier is checkpointed under `WS/checkpoints/pseudolabel/<name>.pt` with a fingerprint of its
settings, its training data and the checkpoints it depends on; a rerun reuses a finished checkpoint
with the same fingerprint, resumes an unfinished one, and retrains a stale one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from models.audio_encoder import AudioEncoder, AudioEncoderConfig, AudioEventClassifier
from models.backbones import build_backbone
from models.classifiers import Branch, ClassifierConfig, SCAMClassifier, Stage
from pipeline.common.estimate import duration, slow_hint
from pipeline.common.progress import Progress
from pipeline.pseudolabel.batches import classifier_logits
from pipeline.pseudolabel.classifier_loop import ForwardFn, Team, TrainJob, TrainResult, run_train_job
from pipeline.pseudolabel.frozen import COARSE as CACHED_COARSE
from pipeline.pseudolabel.frozen import FINE as CACHED_FINE
from pipeline.pseudolabel.frozen import ScamCache
from pipeline.pseudolabel.config import PseudolabelConfig, VideoInfo
from pipeline.pseudolabel.stage import COARSE, EVENT_MODEL, FINE, TrainingKey, checkpoint_folder, classifier_fingerprint
from stores import features as fstore
from stores.datasets import FrameItem, FrameSamples

BRANCHES = (Branch.S, Branch.ST, Branch.SA)
# Fine-tuned, a batch's time grew faster than the pixels it reads: on the 2-core machine ST_fine
# (5.8x S_coarse's pixels) took 16.6-19.4x its time per batch, ST_coarse (3x) 3.9-5.1x, S_fine
# (1.9x) 2.0-2.2x (README: the paper-vs-fast table; the quality benchmark's paper run). Pixels^1.5 puts
# the six classifiers' sum within 15 % of both runs; plain pixels put it at half.
PIXEL_COST_EXPONENT = 1.5

# Per video: selection boxes in stored-frame pixels (T, 4) and whether each frame has one (T,).
Boxes = dict[str, tuple[np.ndarray, np.ndarray]]
Keep = Callable[[VideoInfo, int], bool]


class ClassifierTrainer:
    """Trains (or reuses) each classifier with a shared checkpoint folder and fingerprint base."""

    def __init__(self, workspace: Path, config: PseudolabelConfig, key: TrainingKey, train_videos: list[VideoInfo],
                 val_videos: list[VideoInfo], device: torch.device, report: Callable[[str], None],
                 progress: Progress, team: Team | None = None) -> None:  # fmt: skip
        self.team = team or Team()
        self.folder = checkpoint_folder(workspace)
        self.config = config
        self.features_path = fstore.SCHEMA.path(workspace)
        self.key = key
        self.train_videos = train_videos
        self.val_videos = val_videos
        self.device = device
        self.report = report
        self.progress = progress
        self.results: dict[str, TrainResult] = {}
        self.cache: ScamCache | None = None  # the frozen backbone's maps (backbone_mode frozen)

    @property
    def classes(self) -> list[str]:
        return self.key.classes

    def shas(self) -> dict[str, str]:
        """The checkpoints trained (or reused) so far, by name."""
        return {name: result.sha256 for name, result in self.results.items()}

    def train(self, name: str, model: nn.Module, train_set: FrameSamples, val_set: FrameSamples,
              forward: ForwardFn, without: tuple[str, ...] = ()) -> TrainResult:  # fmt: skip
        """`without`: the videos whose data it lacks (see `classifier_fingerprint`)."""
        job = TrainJob(name, model, train_set, val_set, forward, self.config.train, self.folder / f"{name}.pt",
                       classifier_fingerprint(name, self.config, self.key, self.shas(), without))  # fmt: skip
        self.team.announce(job)  # the other processes of a torchrun job train it with this one
        result = run_train_job(job, self.device, self.team.processes, report=self.report, progress=self.progress,
                               on_rate=lambda rate, left: self.report(self._estimate(name, rate, left)))  # fmt: skip
        self.results[name] = result
        return result

    def _estimate(self, name: str, seconds_per_batch: float, batches_left: int) -> str:
        """The time `name` may still take, and the visual classifiers after it scaled by their cost."""
        bound = seconds_per_batch * batches_left
        stages = (COARSE, FINE) if self.config.fine_stage else (COARSE,)
        order = [f"{b}{s}" for s in stages for b in BRANCHES]  # the order they are trained in
        after = order[order.index(name) + 1 :] if name in order else []
        text = f"{name}: {seconds_per_batch:.2f} s/batch here: up to {duration(bound)} for its {batches_left} batches"
        total = bound
        if after and name != EVENT_MODEL:
            total += bound * sum(self._relative_cost(other) for other in after) / self._relative_cost(name)
            others = "the classifier" if len(after) == 1 else f"the {len(after)} classifiers"
            text += f"; about {duration(total)} with {others} after it"
        return text + " (early stopping often ends sooner)" + slow_hint(total, self.device, self.config.frozen)

    def _relative_cost(self, name: str) -> float:
        """A visual classifier's cost per batch relative to the others: fine-tuned, from the backbone's
        pixels (ST reads three frames; the fine crops are larger); frozen, the heads, about alike."""
        if self.config.frozen:
            return 1.0
        frames = 3 if name.startswith(f"{Branch.ST}_") else 1
        size = self.config.fine_size if name.endswith(FINE) else self.config.coarse_size
        return float(frames * size * size) ** PIXEL_COST_EXPONENT

    def items(self, keep: Keep | None = None) -> tuple[list[FrameItem], list[FrameItem]]:
        return frame_items(self.train_videos, keep), frame_items(self.val_videos, keep)


def frame_items(videos: list[VideoInfo], keep: Keep | None = None) -> list[FrameItem]:
    return [FrameItem(v.video_id, t, v.class_index) for v in videos for t in range(v.n_frames) if keep is None or keep(v, t)]


def build_classifier(config: PseudolabelConfig, branch: Branch, stage: Stage, n_classes: int,
                     cache: ScamCache | None = None) -> SCAMClassifier:  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # fresh weights depend on the seed only, not on what ran before
        return _build_classifier(config, branch, stage, n_classes, cache)


def _build_classifier(config: PseudolabelConfig, branch: Branch, stage: Stage, n_classes: int,
                      cache: ScamCache | None) -> SCAMClassifier:  # fmt: skip
    widths: dict[str, int | None] = {}
    if config.feature_channels is not None:
        widths = dict.fromkeys(("feature_channels", "audio_channels", "attention_channels"), config.feature_channels)
        if branch == Branch.S and stage == Stage.FINE:
            widths["feature_channels"] = None  # S_fine pools the backbone map itself (SPEC §3.2)
    # Frozen: the heads alone, on the cached maps, SA on the cached audio embeddings.
    embedding = cache.layout.embedding if cache is not None and branch == Branch.SA else None
    classifier_config = ClassifierConfig(
        branch=branch, stage=stage, n_classes=n_classes,
        audio_encoder=AudioEncoderConfig(width=config.audio_width), audio_embedding_dim=embedding, **widths,
    )  # fmt: skip
    if cache is not None:
        return SCAMClassifier(classifier_config, None, backbone_channels=cache.layout.coarse[0])
    backbone = build_backbone(config.backbone, config.weights, random_init=config.random_init)
    return SCAMClassifier(classifier_config, backbone)


def train_event_classifier(trainer: ClassifierTrainer) -> AudioEventClassifier | None:
    """The tag classifier on audio alone; None when no training video has audio."""
    config = trainer.config
    with_audio: Keep = lambda video, t: video.has_audio  # noqa: E731
    train_items, val_items = trainer.items(with_audio)
    if not train_items:
        trainer.report("no training video has audio: the SA branch and the event-audio decision are skipped")
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = AudioEventClassifier(len(trainer.classes), AudioEncoder(AudioEncoderConfig(width=config.audio_width)))
    trainer.train(
        EVENT_MODEL, model,
        FrameSamples(trainer.features_path, train_items, audio=True, frames=False),
        FrameSamples(trainer.features_path, val_items, audio=True, frames=False),
        event_forward,
    )  # fmt: skip
    return model


def event_related(event_of: dict[str, np.ndarray], threshold: float) -> Keep:
    return lambda video, t: bool(event_of[video.video_id][t] >= threshold)


def train_coarse(trainer: ClassifierTrainer, event_of: dict[str, np.ndarray], with_sa: bool) -> dict[Branch, SCAMClassifier]:
    """S and ST on every frame; SA only on frames whose audio is event-related (SPEC §2.3)."""
    config = trainer.config
    models: dict[Branch, SCAMClassifier] = {}
    for branch in BRANCHES:
        if branch == Branch.SA and not with_sa:
            continue
        keep = event_related(event_of, config.event_threshold) if branch == Branch.SA else None
        train_items, val_items = trainer.items(keep)
        if not train_items:
            trainer.report(f"{branch}_coarse: no training frame has event-related audio; the SA branch is skipped")
            continue
        model = build_classifier(config, branch, Stage.COARSE, len(trainer.classes), trainer.cache)
        trainer.train(
            f"{branch}{COARSE}", model, *_datasets(trainer, branch, Stage.COARSE, train_items, val_items),
            _forward(trainer, config.coarse_size, event_of, train_items, val_items, branch),
        )  # fmt: skip
        models[branch] = model
    return models


def train_fine(trainer: ClassifierTrainer, event_of: dict[str, np.ndarray], boxes: Boxes,
               branches: list[Branch]) -> dict[Branch, SCAMClassifier]:  # fmt: skip
    """Each branch retrained on the crops of the frames the coarse stage selected a region in (SPEC §3.2)."""
    config = trainer.config
    models: dict[Branch, SCAMClassifier] = {}
    # A video whose coarse pass failed has no boxes, and gives no crop.
    has_box: Keep = lambda video, t: video.video_id in boxes and bool(boxes[video.video_id][1][t])  # noqa: E731
    without = tuple(sorted(v.video_id for v in (*trainer.train_videos, *trainer.val_videos) if v.video_id not in boxes))
    if without:
        trainer.report(f"the fine classifiers train without the {len(without)} video(s) whose coarse maps failed; "
                       "a run that has them all trains them again")  # fmt: skip
    for branch in branches:
        if branch == Branch.SA:
            related = event_related(event_of, config.event_threshold)
            keep: Keep = lambda video, t: has_box(video, t) and related(video, t)  # noqa: E731
        else:
            keep = has_box
        train_items, val_items = trainer.items(keep)
        if not train_items:
            trainer.report(f"{branch}_fine: the coarse stage selected no region in any training frame; skipped")
            continue
        model = build_classifier(config, branch, Stage.FINE, len(trainer.classes), trainer.cache)
        trainer.train(
            f"{branch}{FINE}", model, *_datasets(trainer, branch, Stage.FINE, train_items, val_items),
            _forward(trainer, config.fine_size, event_of, train_items, val_items, branch, boxes), without,
        )  # fmt: skip
        models[branch] = model
    return models


def _datasets(trainer: ClassifierTrainer, branch: Branch, stage: Stage, train_items: list[FrameItem],
              val_items: list[FrameItem]) -> tuple[FrameSamples, FrameSamples]:  # fmt: skip
    if trainer.cache is not None:
        array = CACHED_COARSE if stage == Stage.COARSE else CACHED_FINE
        return trainer.cache.datasets(array, branch == Branch.ST, branch == Branch.SA, train_items, val_items)
    kwargs = {"neighbours": branch == Branch.ST, "audio": branch == Branch.SA}
    return FrameSamples(trainer.features_path, train_items, **kwargs), FrameSamples(trainer.features_path, val_items, **kwargs)


def _forward(trainer: ClassifierTrainer, size: int, event_of: dict[str, np.ndarray], train_items: list[FrameItem],
             val_items: list[FrameItem], branch: Branch, boxes: Boxes | None = None) -> ClassifierForward:  # fmt: skip
    """The batch → (logits, labels) function of one classifier, with its items' event probabilities and
    boxes looked up once."""

    def per_item(items: list[FrameItem]) -> ItemLookups:
        events = torch.tensor([float(event_of[i.video_id][i.t]) for i in items] or [0.0])
        item_boxes = None
        if boxes is not None and items:
            item_boxes = torch.from_numpy(np.stack([boxes[i.video_id][0][i.t] for i in items])).long()
        return ItemLookups(events, item_boxes)

    return ClassifierForward(branch, size, trainer.cache is not None, per_item(train_items), per_item(val_items))


@dataclass
class ItemLookups:
    """Per item of one split (by the batch's item index): its frame's event probability and, for the
    fine stage, its selection box."""

    events: Tensor
    boxes: Tensor | None


@dataclass
class ClassifierForward:
    """An S/ST/SA classifier's batch → (logits, labels); per-item event probabilities and boxes are
    looked up by the batch's item indices. A class, not a closure: it travels to the other processes of
    a torchrun job with the classifier's training."""

    branch: Branch
    size: int
    frozen: bool  # cached backbone maps (of the crops, for the fine stage); not augmented
    train_items: ItemLookups
    val_items: ItemLookups

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        index = batch["index"].cpu()
        device = batch["frames"].device
        lookups = self.train_items if train else self.val_items
        event_prob = lookups.events[index].to(device) if self.branch == Branch.SA else None
        if self.frozen:
            embedding = batch["audio"] if self.branch == Branch.SA else None
            maps = batch["frames"].float()
            return model.forward_maps(maps, event_prob=event_prob, audio_embedding=embedding).logits, batch["label"]
        crop = lookups.boxes[index].to(device) if lookups.boxes is not None else None
        return classifier_logits(model, batch, self.size, crop, event_prob, train), batch["label"]


def event_forward(model: nn.Module, batch: dict[str, Tensor], train: bool) -> tuple[Tensor, Tensor]:
    """The audio event classifier's batch → (logits, labels)."""
    return model(batch["audio"].unsqueeze(1)), batch["label"]
