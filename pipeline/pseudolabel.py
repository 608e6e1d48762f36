"""The pseudolabel stage: category tags → SCAM maps → pseudo fixation maps in pseudo.zarr (SPEC §1.4-3).

1. An audio classifier trained on the tags gives P(video's tag | audio window) per frame: the frame's
   audio is event-related when it passes `event_threshold` (replaces SPEC §1.4's VGGSound keyword match).
2. Coarse S, ST, SA classifiers are trained on whole frames (SA only on event-related frames).
3. Coarse CAMs of the ground-truth class → probability-weighted fusion → the box of pixels above
   2 × mean (SPEC §3.1), scaled to the stored frame.
4. Fine S, ST, SA classifiers are trained on the crops; their CAMs are pasted back (SPEC §3.2-3.3) and
   fused (§3.4), smoothed over ±2 frames — warped along the stored optical flow by default, the paper's
   plain average as an option — and thresholded at 3 × mean (§3.5).
Classifiers are checkpointed and reused while their settings and data are unchanged; per-video maps
are written whole and marked complete, so a rerun redoes only what is missing or stale.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.audio_encoder import AudioEncoder, AudioEncoderConfig, AudioEventClassifier
from models.backbones import build_backbone
from models.classifiers import Branch, ClassifierConfig, SCAMClassifier, Stage
from models.device import autocast, resolve_device
from models.selection import (
    paste_back,
    probability_weighted_fusion,
    scale_boxes,
    selection_boxes,
    temporal_smooth,
    threshold_pseudo_gt,
)
from pipeline.classifier_training import TrainConfig, TrainResult, train_classifier
from pipeline.progress import Progress
from pipeline.scam_batches import classifier_logits, visual_input
from stores import features as fstore
from stores import pseudo as pstore
from stores import zarr_io
from stores.datasets import FrameItem, FrameSamples, read_video_arrays

log = logging.getLogger(__name__)

BRANCHES = (Branch.S, Branch.ST, Branch.SA)


@dataclass(frozen=True)
class PseudolabelConfig:
    """Defaults follow the paper's sizes (SPEC §2-3) with the offline ImageNet backbone."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    random_init: bool = False
    coarse_size: int = 256
    fine_size: int = 356
    map_size: int = 356
    feature_channels: int | None = None  # None: the paper's widths
    audio_width: int = 64  # 64 = VGGSound ResNet-18
    event_threshold: float = 0.5
    box_factor: float = 2.0
    gt_factor: float = 3.0
    smoothing: str = "flow"  # flow | plain | none
    smoothing_radius: int = 2
    val_fraction: float = 0.2
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    infer_batch: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.smoothing not in ("flow", "plain", "none"):
            raise ValueError(f"smoothing must be flow, plain or none, got {self.smoothing!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @classmethod
    def cpu_demo(cls, **overrides: Any) -> "PseudolabelConfig":
        """A tiny network at small sizes: the whole stage runs in minutes on 2 CPU cores."""
        base = cls(
            backbone="tiny", random_init=True, coarse_size=64, fine_size=64, map_size=64,
            feature_channels=32, audio_width=8, infer_batch=64,
            train=TrainConfig(epochs=12, batch_size=32, optimizer="adam", lr=2e-3, patience=4),
        )  # fmt: skip
        return replace(base, **overrides)

    def model_settings(self) -> dict[str, Any]:
        """What determines the classifiers (enters their checkpoints' fingerprints)."""
        return {
            "backbone": self.backbone, "weights": self.weights, "random_init": self.random_init,
            "coarse_size": self.coarse_size, "fine_size": self.fine_size, "map_size": self.map_size,
            "feature_channels": self.feature_channels, "audio_width": self.audio_width,
            "event_threshold": self.event_threshold, "box_factor": self.box_factor,
            "val_fraction": self.val_fraction, "train": asdict(self.train), "seed": self.seed,
        }  # fmt: skip

    def map_settings(self) -> dict[str, Any]:
        return {**self.model_settings(), "gt_factor": self.gt_factor, "smoothing": self.smoothing,
                "smoothing_radius": self.smoothing_radius}  # fmt: skip


@dataclass
class VideoInfo:
    video_id: str
    label: str
    class_index: int
    n_frames: int
    has_audio: bool
    frame_hw: tuple[int, int]
    fingerprint: str


@dataclass
class PseudolabelSummary:
    store: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    frames_with_pseudo_gt: int = 0
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def line(self) -> str:
        acc = ", ".join(f"{k} {v['val']:.2f}" for k, v in self.accuracy.items())
        return (
            f"pseudolabel: {self.done} done, {self.skipped} skipped, {self.failed} failed; "
            f"{self.frames_with_pseudo_gt}/{self.frames} frames have a pseudo-GT; "
            f"validation accuracy: {acc or 'n/a'} ({self.seconds:.1f} s) -> {self.store}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class PseudolabelError(Exception):
    """The stage cannot run at all (no features store, fewer than two classes, ...)."""


# --- inputs -------------------------------------------------------------------------------------


def load_videos(features: Any, summary: PseudolabelSummary) -> tuple[list[str], list[VideoInfo]]:
    classes = list(features.attrs.get("classes", []))
    videos: list[VideoInfo] = []
    for video_id in fstore.complete_videos(features):
        attrs = fstore.video_attrs(features, video_id) or {}
        label = attrs.get("label")
        if label not in classes:
            reason = f"label {label!r} is not in the store's class list {classes}"
            summary.failed += 1
            summary.failures.append({"video_id": video_id, "reason": reason})
            continue
        videos.append(
            VideoInfo(
                video_id=video_id, label=label, class_index=classes.index(label),
                n_frames=int(attrs["n_frames"]), has_audio=bool(attrs.get("has_audio")),
                frame_hw=(int(attrs["height"]), int(attrs["width"])), fingerprint=str(attrs.get("fingerprint")),
            )  # fmt: skip
        )
    present = {v.label for v in videos}
    for missing in sorted(set(classes) - present):
        summary.warnings.append(f"class {missing!r} has no usable video: it can never be predicted")
    if len(present) < 2:
        raise PseudolabelError(f"need videos of at least 2 classes to train from tags, found {sorted(present)}")
    return classes, videos


def split_by_video(videos: list[VideoInfo], val_fraction: float, seed: int) -> tuple[list[VideoInfo], list[VideoInfo]]:
    """Per class, about `val_fraction` of its videos (at least one when it has two or more) go to validation."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({v.label for v in videos}):
        group = sorted((v for v in videos if v.label == label), key=lambda v: v.video_id)
        rng.shuffle(group)
        n_val = 0 if len(group) < 2 or val_fraction == 0 else max(1, round(len(group) * val_fraction))
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def frame_items(videos: list[VideoInfo], keep: Callable[[VideoInfo, int], bool] | None = None) -> list[FrameItem]:
    return [
        FrameItem(v.video_id, t, v.class_index)
        for v in videos
        for t in range(v.n_frames)
        if keep is None or keep(v, t)
    ]


# --- models ---------------------------------------------------------------------------------------


def build_classifier(config: PseudolabelConfig, branch: Branch, stage: Stage, n_classes: int) -> SCAMClassifier:
    backbone = build_backbone(config.backbone, config.weights, random_init=config.random_init)
    widths = {}
    if config.feature_channels is not None:
        widths = {"feature_channels": config.feature_channels, "audio_channels": config.feature_channels,
                  "attention_channels": config.feature_channels}  # fmt: skip
        if branch == Branch.S and stage == Stage.FINE:
            widths["feature_channels"] = None
    classifier_config = ClassifierConfig(
        branch=branch, stage=stage, n_classes=n_classes,
        audio_encoder=AudioEncoderConfig(width=config.audio_width), **widths,
    )  # fmt: skip
    return SCAMClassifier(classifier_config, backbone)


class _Trainer:
    """Trains (or reuses) each classifier, with a shared checkpoint folder and fingerprint base."""

    def __init__(self, workspace: Path, config: PseudolabelConfig, classes: list[str], train_videos: list[VideoInfo],
                 val_videos: list[VideoInfo], device: torch.device, report: Callable[[str], None]) -> None:  # fmt: skip
        self.folder = workspace / "checkpoints" / "pseudolabel"
        self.config = config
        self.classes = classes
        self.device = device
        self.report = report
        self.data_key = [sorted((v.video_id, v.fingerprint) for v in train_videos), sorted(v.video_id for v in val_videos)]
        self.results: dict[str, TrainResult] = {}

    def fingerprint(self, name: str, depends_on: list[str]) -> str:
        upstream = [self.results[d].sha256 for d in depends_on]
        return zarr_io.fingerprint([name, self.config.model_settings(), self.classes, self.data_key, upstream])

    def train(self, name: str, model: nn.Module, train_set: Any, val_set: Any, forward: Any, depends_on: list[str]) -> TrainResult:
        result = train_classifier(
            name, model, train_set, val_set, forward, self.config.train, self.folder / f"{name}.pt",
            self.fingerprint(name, depends_on), self.device, self.report,
        )  # fmt: skip
        self.results[name] = result
        return result

    def is_finished(self, name: str, depends_on: list[str]) -> bool:
        path = self.folder / f"{name}.pt"
        if not path.exists():
            return False
        saved = torch.load(path, map_location="cpu", weights_only=False)
        return saved.get("fingerprint") == self.fingerprint(name, depends_on) and saved["state"]["finished"]


# --- per-video inference ---------------------------------------------------------------------------


@dataclass
class _Models:
    event: AudioEventClassifier | None
    coarse: dict[Branch, SCAMClassifier]
    fine: dict[Branch, SCAMClassifier] = field(default_factory=dict)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _video_batch(frames: np.ndarray, audio: np.ndarray | None, sl: slice, device: torch.device) -> dict[str, Tensor]:
    """Frames t-1, t, t+1 (clamped) for the frames of `sl`, as a loader batch would hold them."""
    t = np.arange(sl.start, sl.stop)
    last = frames.shape[0] - 1
    stacks = np.stack([frames[np.clip(t - 1, 0, last)], frames[t], frames[np.clip(t + 1, 0, last)]], axis=1)
    batch = {"frames": torch.from_numpy(stacks).to(device)}
    if audio is not None:
        batch["audio"] = torch.from_numpy(audio[sl].astype(np.float32)).to(device)
    return batch


@torch.no_grad()
def event_probabilities(model: AudioEventClassifier | None, audio: np.ndarray | None, class_index: int,
                        device: torch.device, batch: int) -> np.ndarray:  # fmt: skip
    """P(tag | audio window) per frame; zeros without audio (no frame is event-related then)."""
    if model is None or audio is None:
        n = 0 if audio is None else audio.shape[0]
        return np.zeros(n, dtype=np.float32)
    model.eval()
    out = []
    for sl in _batches(audio.shape[0], batch):
        spec = torch.from_numpy(audio[sl].astype(np.float32)).to(device).unsqueeze(1)
        labels = torch.full((spec.shape[0],), class_index, device=device)
        with autocast(device):
            out.append(model.event_probability(spec, labels).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def branch_maps(model: SCAMClassifier, batch: dict[str, Tensor], size: int, map_size: int, class_index: int,
                event_prob: Tensor | None, boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """CAMs of the GT class (B, s, s) at the classifier's input size and P(GT class) (B,)."""
    model.eval()
    frames = visual_input(batch["frames"], model.branch, size, boxes)
    with autocast(frames.device):
        if model.branch == Branch.SA:
            output = model(frames, batch["audio"].unsqueeze(1), event_prob)
        else:
            output = model(frames)
    labels = torch.full((frames.shape[0],), class_index, device=frames.device)
    cams = model.class_activation_maps(output, labels, (size, size)).float()
    probs = output.logits.float().softmax(dim=1)[:, class_index]
    return cams, probs


def video_maps(info: VideoInfo, arrays: dict[str, np.ndarray], models: _Models, config: PseudolabelConfig,
               device: torch.device) -> pstore.VideoMaps:  # fmt: skip
    frames, flow = arrays["frames"], arrays["flow"]
    audio = arrays["audio"] if info.has_audio else None
    n, m = info.n_frames, config.map_size
    event = event_probabilities(models.event, audio, info.class_index, device, config.infer_batch)
    if audio is None:
        event = np.zeros(n, dtype=np.float32)
    sa_usable = audio is not None and Branch.SA in models.coarse
    valid = np.zeros((n, 3), dtype=bool)
    valid[:, 0] = valid[:, 1] = True
    valid[:, 2] = sa_usable & (event >= config.event_threshold)
    coarse = torch.zeros(n, 3, m, m)
    fine = torch.zeros(n, 3, m, m)
    probs = torch.full((n, 2, 3), float("nan"))
    boxes_map = torch.full((n, 4), -1, dtype=torch.long)
    has_box = torch.zeros(n, dtype=torch.bool)
    frame_hw = info.frame_hw
    for sl in _batches(n, config.infer_batch):
        batch = _video_batch(frames, audio, sl, device)
        event_t = torch.from_numpy(event[sl]).to(device)
        valid_t = torch.from_numpy(valid[sl]).to(device)
        cams, ps = [], []
        for b, branch in enumerate(BRANCHES):
            if branch in models.coarse and (branch != Branch.SA or sa_usable):
                cam, p = branch_maps(models.coarse[branch], batch, config.coarse_size, m, info.class_index, event_t)
                cam = F.interpolate(cam.unsqueeze(1), size=(m, m), mode="bilinear", align_corners=False).squeeze(1)
            else:
                cam, p = torch.zeros(sl.stop - sl.start, m, m, device=device), torch.zeros(sl.stop - sl.start, device=device)
            cams.append(cam)
            ps.append(p)
        coarse_b, probs_b = torch.stack(cams, 1), torch.stack(ps, 1)
        fused = probability_weighted_fusion(coarse_b, probs_b, valid_t)
        box, ok = selection_boxes(fused, config.box_factor)
        coarse[sl], probs[sl, 0], boxes_map[sl], has_box[sl] = coarse_b.cpu(), probs_b.cpu(), box.cpu(), ok.cpu()
        if not models.fine:
            continue
        crop_boxes = scale_boxes(box, (m, m), frame_hw)
        fine_cams, fine_ps = [], []
        for b, branch in enumerate(BRANCHES):
            if branch in models.fine and (branch != Branch.SA or sa_usable):
                cam, p = branch_maps(models.fine[branch], batch, config.fine_size, m, info.class_index, event_t, crop_boxes)
                pasted = paste_back(cam, box, (m, m))
            else:
                pasted, p = torch.zeros(sl.stop - sl.start, m, m, device=device), torch.zeros(sl.stop - sl.start, device=device)
            fine_cams.append(pasted * ok.view(-1, 1, 1))
            fine_ps.append(p)
        fine[sl], probs[sl, 1] = torch.stack(fine_cams, 1).cpu(), torch.stack(fine_ps, 1).cpu()
    valid_t = torch.from_numpy(valid)
    stage_maps, stage_probs = (fine, probs[:, 1]) if models.fine else (coarse, probs[:, 0])
    fused = probability_weighted_fusion(stage_maps, stage_probs.nan_to_num(0.0), valid_t & has_box.view(-1, 1))
    fused = fused * has_box.view(-1, 1, 1)
    smoothed = smooth(fused, has_box, flow, frame_hw, config)
    pseudo_gt = threshold_pseudo_gt(smoothed, config.gt_factor) * has_box.view(-1, 1, 1)
    return pstore.VideoMaps(
        coarse_cam=coarse.numpy(), fine_cam=fine.numpy(), branch_prob=probs.numpy(), branch_valid=valid,
        event_prob=event, box=boxes_map.int().numpy(), has_box=has_box.numpy(), fused=fused.numpy(),
        pseudo_gt=pseudo_gt.numpy(), has_pseudo_gt=has_box.numpy(),
    )  # fmt: skip


def flow_on_map_grid(flow: np.ndarray, frame_hw: tuple[int, int], map_size: int) -> Tensor:
    """Stored flow (T, 2, fh, fw) in frame pixels → (T, 2, M, M) in map pixels."""
    tensor = torch.from_numpy(flow.astype(np.float32))
    resized = F.interpolate(tensor, size=(map_size, map_size), mode="bilinear", align_corners=False)
    scale = torch.tensor([map_size / frame_hw[1], map_size / frame_hw[0]]).view(1, 2, 1, 1)
    return resized * scale


def smooth(fused: Tensor, has_box: Tensor, flow: np.ndarray, frame_hw: tuple[int, int], config: PseudolabelConfig) -> Tensor:
    if config.smoothing == "none":
        return fused
    motion = flow_on_map_grid(flow, frame_hw, config.map_size) if config.smoothing == "flow" else None
    return temporal_smooth(fused, has_box, config.smoothing_radius, motion)


# --- the stage -----------------------------------------------------------------------------------


def run_pseudolabel(
    workspace: str | Path, config: PseudolabelConfig, progress: Progress | None = None,
    report: Callable[[str], None] = log.info,
) -> PseudolabelSummary:  # fmt: skip
    began = time.perf_counter()
    workspace = Path(workspace)
    progress = progress or Progress(enabled=False)
    features_path = fstore.store_path(workspace)
    try:
        features = fstore.open_for_reading(features_path)
    except (FileNotFoundError, ValueError) as exc:
        raise PseudolabelError(str(exc)) from exc
    store = pstore.store_path(workspace)
    summary = PseudolabelSummary(store=str(store))
    classes, videos = load_videos(features, summary)
    device = resolve_device(config.device)
    train_videos, val_videos = split_by_video(videos, config.val_fraction, config.seed)
    trainer = _Trainer(workspace, config, classes, train_videos, val_videos, device, report)
    models = _train_all(trainer, features_path, classes, train_videos, val_videos, config, device, report)
    summary.accuracy = {name: {"train": r.train_accuracy, "val": r.val_accuracy} for name, r in trainer.results.items()}

    root = pstore.open_for_writing(store)
    pstore.write_store_attrs(root, {
        "classes": classes, "settings": config.map_settings(), "features_store": str(features_path),
        "checkpoints": {name: r.sha256 for name, r in trainer.results.items()},
        "accuracy": summary.accuracy, "train_videos": [v.video_id for v in train_videos],
        "val_videos": [v.video_id for v in val_videos],
    })  # fmt: skip
    checkpoint_key = sorted((name, r.sha256) for name, r in trainer.results.items())
    progress.start(len(videos))
    try:
        for info in videos:
            fingerprint = zarr_io.fingerprint([config.map_settings(), checkpoint_key, info.fingerprint])
            if pstore.is_up_to_date(root, info.video_id, fingerprint):
                summary.skipped += 1
                _count_frames(summary, pstore.read_video(root, info.video_id)["has_pseudo_gt"])
                progress.advance_video()
                continue
            arrays = read_video_arrays(features_path, info.video_id, ("frames", "flow", "audio"))
            maps = video_maps(info, arrays, models, config, device)
            attrs = {
                "label": info.label, "class_index": info.class_index, "has_audio": info.has_audio,
                "n_frames": info.n_frames, "map_size": config.map_size, "features_fingerprint": info.fingerprint,
                "sa_skipped_reason": None if info.has_audio else "no audio stream: SA branch not used",
                "split": "val" if info in val_videos else "train",
            }  # fmt: skip
            pstore.write_video(root, info.video_id, maps, attrs, fingerprint)
            summary.done += 1
            _count_frames(summary, maps.has_pseudo_gt)
            progress.advance_video()
    finally:
        progress.close()
        zarr_io.record_failures(root, {f["video_id"]: f for f in summary.failures})
        zarr_io.consolidate(store)
    summary.seconds = time.perf_counter() - began
    return summary


def _count_frames(summary: PseudolabelSummary, has_gt: np.ndarray) -> None:
    summary.frames += int(has_gt.size)
    summary.frames_with_pseudo_gt += int(has_gt.sum())


def _train_all(trainer: _Trainer, features_path: Path, classes: list[str], train_videos: list[VideoInfo],
               val_videos: list[VideoInfo], config: PseudolabelConfig, device: torch.device,
               report: Callable[[str], None]) -> _Models:  # fmt: skip
    n_classes = len(classes)
    with_audio = [v for v in train_videos if v.has_audio], [v for v in val_videos if v.has_audio]

    event_model = None
    if with_audio[0]:
        event_model = AudioEventClassifier(n_classes, AudioEncoder(AudioEncoderConfig(width=config.audio_width)))
        trainer.train(
            "event_audio", event_model,
            FrameSamples(features_path, frame_items(with_audio[0]), audio=True),
            FrameSamples(features_path, frame_items(with_audio[1]), audio=True),
            lambda model, batch, train: (model(batch["audio"].unsqueeze(1)), batch["label"]), [],
        )  # fmt: skip
    else:
        report("no training video has audio: the SA branch and the audio switch are skipped")

    event_of = _event_lookup(event_model, features_path, train_videos + val_videos, device, config)
    coarse: dict[Branch, SCAMClassifier] = {}
    for branch in BRANCHES:
        if branch == Branch.SA and event_model is None:
            continue
        keep = (lambda v, t: event_of[v.video_id][t] >= config.event_threshold) if branch == Branch.SA else None
        train_items, val_items = frame_items(train_videos, keep), frame_items(val_videos, keep)
        if not train_items:
            report(f"{branch}: no training frame qualifies (no event-related audio); branch skipped")
            continue
        model = build_classifier(config, branch, Stage.COARSE, n_classes)
        coarse[branch] = model
        trainer.train(
            f"{branch}_coarse", model,
            *_datasets(features_path, branch, train_items, val_items),
            _forward(config.coarse_size, event_of, train_items, val_items, branch), ["event_audio"] if event_model and branch == Branch.SA else [],
        )  # fmt: skip
    models = _Models(event_model, coarse)

    coarse_names = [f"{b}_coarse" for b in coarse]
    fine_needed = any(not trainer.is_finished(f"{b}_fine", coarse_names) for b in coarse)
    boxes = _coarse_boxes(models, features_path, train_videos + val_videos, config, device) if fine_needed else {}
    for branch in coarse:
        model = build_classifier(config, branch, Stage.FINE, n_classes)
        keep_box = (lambda v, t: bool(boxes[v.video_id][1][t])) if boxes else None
        keep_sa = (lambda v, t: event_of[v.video_id][t] >= config.event_threshold) if branch == Branch.SA else None
        keep = _both(keep_box, keep_sa)
        train_items, val_items = frame_items(train_videos, keep), frame_items(val_videos, keep)
        models.fine[branch] = model
        trainer.train(
            f"{branch}_fine", model,
            *_datasets(features_path, branch, train_items, val_items),
            _forward(config.fine_size, event_of, train_items, val_items, branch, boxes), coarse_names,
        )  # fmt: skip
    return models


def _both(a: Callable | None, b: Callable | None) -> Callable | None:
    if a is None or b is None:
        return a or b
    return lambda v, t: a(v, t) and b(v, t)


def _datasets(store: Path, branch: Branch, train_items: list[FrameItem], val_items: list[FrameItem]) -> tuple[FrameSamples, FrameSamples]:
    kwargs = {"neighbours": branch == Branch.ST, "audio": branch == Branch.SA}
    return FrameSamples(store, train_items, **kwargs), FrameSamples(store, val_items, **kwargs)


def _forward(size: int, event_of: dict[str, np.ndarray], train_items: list[FrameItem], val_items: list[FrameItem],
             branch: Branch, boxes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Callable:  # fmt: skip
    """The batch → logits function of one classifier; per-item event probabilities and boxes by index."""

    def per_item(items: list[FrameItem]) -> tuple[Tensor, Tensor | None]:
        events = torch.tensor([float(event_of[i.video_id][i.t]) for i in items] or [0.0])
        item_boxes = torch.tensor(np.stack([boxes[i.video_id][0][i.t] for i in items])) if boxes and items else None
        return events, item_boxes

    lookups = {True: per_item(train_items), False: per_item(val_items)}

    def forward(model: nn.Module, batch: dict[str, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        events, item_boxes = lookups[train]
        index = batch["index"].cpu()
        event_prob = events[index].to(batch["frames"].device) if branch == Branch.SA else None
        crop = item_boxes[index].to(batch["frames"].device) if item_boxes is not None else None
        return classifier_logits(model, batch, size, crop, event_prob, train), batch["label"]

    return forward


def _event_lookup(event_model: AudioEventClassifier | None, store: Path, videos: list[VideoInfo], device: torch.device,
                  config: PseudolabelConfig) -> dict[str, np.ndarray]:  # fmt: skip
    lookup = {}
    for info in videos:
        audio = read_video_arrays(store, info.video_id, ("audio",))["audio"] if info.has_audio else None
        probs = event_probabilities(event_model, audio, info.class_index, device, config.infer_batch)
        lookup[info.video_id] = probs if audio is not None else np.zeros(info.n_frames, dtype=np.float32)
    return lookup


def _coarse_boxes(models: _Models, store: Path, videos: list[VideoInfo], config: PseudolabelConfig,
                  device: torch.device) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Per video: selection boxes in stored-frame pixels (T, 4) and whether each frame has one (T,)."""
    coarse_only = _Models(models.event, models.coarse)
    boxes = {}
    for info in videos:
        arrays = read_video_arrays(store, info.video_id, ("frames", "flow", "audio"))
        maps = video_maps(info, arrays, coarse_only, replace(config, smoothing="none"), device)
        frame_boxes = scale_boxes(torch.from_numpy(maps.box).long(), (config.map_size,) * 2, info.frame_hw)
        boxes[info.video_id] = (frame_boxes.numpy(), maps.has_box)
    return boxes
