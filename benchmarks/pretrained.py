"""The pretrained configuration in minutes: the reference set through `avfix run` with the `fast` preset
(pretrained EfficientNet-Lite0, frozen, its maps cached), what fine-tuning it (the `paper` preset) costs
per classifier epoch on the same data, and the pseudolabel wall time on AVE both ways.

    .venv/bin/python benchmarks/pretrained.py [--workdir /tmp/avfix-pretrained] [--preset fast]

1. Reference set: `avfix synth` 4 classes x 6 videos x 4 s at 10 fps (960 frames) for training and a
   held-out set (2 videos per class, another seed) to predict; `avfix run` (extract -> pseudolabel ->
   train -> predict -> evaluate) with `--preset`; wall time per stage against the targets
   (pseudolabel <= 10 min, extract..predict <= 20 min); the predictions against the centre bias (NSS, CC
   on the held-out set's true positions, from evaluate's report).
2. Classifier training per epoch, same data, same run: each of the six SCAM classifiers timed over its
   first batches (2 warm-up, 5 timed; batch 16 of the stored frames) fine-tuned at the `paper` sizes,
   and as heads on the frozen backbone's maps at the `fast` sizes and at the `paper` sizes; per epoch =
   seconds per batch x the batches of an epoch of the reference set's training frames.
3. AVE (4,143 clips x 10 s x 25 fps): the per-frame costs measured here (backbone forward, forward +
   backward, the heads) are scaled to one GPU by the ratio of an assumed GPU throughput for
   EfficientNet-B0-class networks at 224 px (`--gpu-train-images-per-s`, `--gpu-infer-images-per-s`;
   NVIDIA's published A100 AMP figures are in the thousands) to this CPU's throughput for the same
   network and size. Everything else (decoding, reading the stores, the audio classifier, the CAM
   passes' post-processing) is left out: read the figures as a lower bound of the order of magnitude.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from models.backbones import build_backbone
from models.classifiers import Branch, ClassifierConfig, SCAMClassifier, Stage
from pipeline.common.progress import Progress
from pipeline.synth.generate import SynthConfig, generate
from pipeline.synth.truth import TRUTH_FILE
from pipeline.workspace.config import Overrides
from pipeline.workspace.dag import RunRequest, run_dag
from pipeline.workspace.presets import preset_config
from stores import features as fstore

AVE_FRAMES = 4143 * 10 * 25
REFERENCE = SynthConfig(classes=4, videos_per_class=6, seconds=4.0, fps=10.0, seed=0)
HELD_OUT = SynthConfig(classes=4, videos_per_class=2, seconds=4.0, fps=10.0, seed=1)
BATCH = 16
WARMUP, TIMED = 2, 5


def run_reference(workdir: Path, preset: str) -> dict:
    for name, config in (("train", REFERENCE), ("test", HELD_OUT)):
        generate(workdir / "videos" / name, config, Progress(enabled=False))
    overrides = Overrides(
        videos=workdir / "videos" / "train", predict_videos=workdir / "videos" / "test",
        fixations=workdir / "videos" / "test" / TRUTH_FILE, fixations_layout="csv", preset=preset,
        settings=('evaluate.baselines=["center"]',),
    )  # fmt: skip
    shutil.rmtree(workdir / "ws", ignore_errors=True)  # every stage timed from scratch
    summary = run_dag(workdir / "ws", overrides, RunRequest(progress=True))
    assert summary.ok, [stage.line for stage in summary.stages]
    seconds = {stage.stage: stage.seconds for stage in summary.stages}
    report = json.loads((workdir / "ws" / "report.json").read_text())
    return {"seconds": seconds, "scores": _report_scores(report)}


def _report_scores(report: dict) -> dict[str, dict[str, float]]:
    """Mean NSS and CC per row of evaluate's report (its first data set, means over videos)."""
    summary = report["datasets"][0]["summary"]
    return {row: {metric: float(values[metric]["mean"]) for metric in ("NSS", "CC")} for row, values in summary.items()}


# --- per-classifier step timing -----------------------------------------------------------------------


def time_steps(step: Callable[[], None]) -> float:
    """Seconds per step after a warm-up."""
    for _ in range(WARMUP):
        step()
    began = time.perf_counter()
    for _ in range(TIMED):
        step()
    return (time.perf_counter() - began) / TIMED


def stored_frames(workspace: Path, n: int) -> Tensor:
    """n stored frames of the reference set as float (n, 3, H, W) in [0, 1]."""
    root = fstore.SCHEMA.open_for_reading(fstore.SCHEMA.path(workspace))
    video_id = fstore.SCHEMA.complete_videos(root)[0]
    frames = fstore.VideoReader(fstore.SCHEMA.path(workspace), video_id).read("frames", 0, n)
    return torch.from_numpy(frames).movedim(-1, 1).float() / 255


def classifier_step(branch: Branch, stage: Stage, size: int, frames: Tensor, frozen: bool, n_classes: int = 4,
                    feature_channels: int | None = None) -> Callable[[], None]:  # fmt: skip
    """One SGD step of a classifier on a batch: fine-tuned (backbone included) or frozen (heads on maps
    the backbone computed once, outside the timed step)."""
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0")
    images = nn.functional.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    widths = {}
    if feature_channels is not None:
        widths = dict.fromkeys(("feature_channels", "audio_channels", "attention_channels"), feature_channels)
        if branch == Branch.S and stage == Stage.FINE:
            widths["feature_channels"] = None
    event_prob = torch.rand(BATCH)
    spectrogram = torch.randn(BATCH, 1, 257, 48)
    labels = torch.randint(0, n_classes, (BATCH,))
    if frozen:
        with torch.no_grad():
            maps = backbone.eval()(backbone.normalize(images))
        embedding = torch.randn(BATCH, 512)
        config = ClassifierConfig(branch, stage, n_classes, audio_embedding_dim=512 if branch == Branch.SA else None,
                                  **widths)  # fmt: skip
        model: nn.Module = SCAMClassifier(config, None, backbone_channels=maps.shape[1])
        triple = maps.unsqueeze(1).expand(-1, 3, -1, -1, -1).contiguous()

        def forward() -> Tensor:
            if branch == Branch.ST:
                return model.forward_maps(triple).logits
            if branch == Branch.SA:
                return model.forward_maps(maps, None, event_prob, audio_embedding=embedding).logits
            return model.forward_maps(maps).logits
    else:
        model = SCAMClassifier(ClassifierConfig(branch, stage, n_classes, **widths), backbone)
        clip = images.unsqueeze(1).expand(-1, 3, -1, -1, -1).contiguous()

        def forward() -> Tensor:
            if branch == Branch.ST:
                return model(clip).logits
            if branch == Branch.SA:
                return model(images, spectrogram, event_prob).logits
            return model(images).logits

    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step() -> None:
        loss = nn.functional.cross_entropy(forward(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def classifier_epochs(workspace: Path, train_frames: int) -> dict[str, dict[str, float]]:
    """Seconds per epoch of each classifier: paper fine-tuned, fast frozen, frozen at the paper sizes."""
    paper, fast = preset_config("paper", "pseudolabel"), preset_config("fast", "pseudolabel")
    frames = stored_frames(workspace, BATCH)
    batches = math.ceil(train_frames / BATCH)
    rows: dict[str, dict[str, float]] = {}
    for stage in (Stage.COARSE, Stage.FINE):
        for branch in (Branch.S, Branch.ST, Branch.SA):
            sizes = {"paper": paper.coarse_size if stage == Stage.COARSE else paper.fine_size,
                     "fast": fast.coarse_size if stage == Stage.COARSE else fast.fine_size}  # fmt: skip
            timed = {
                "paper fine-tuned": time_steps(classifier_step(branch, stage, sizes["paper"], frames, False)),
                "fast frozen": time_steps(classifier_step(branch, stage, sizes["fast"], frames, True,
                                                          feature_channels=fast.feature_channels)),
                "frozen at paper sizes": time_steps(classifier_step(branch, stage, sizes["paper"], frames, True,
                                                                    feature_channels=fast.feature_channels)),
            }  # fmt: skip
            rows[f"{branch}_{stage}"] = {name: seconds * batches for name, seconds in timed.items()}
            print(f"  {branch}_{stage}: " + ", ".join(f"{k} {v:.1f} s/epoch" for k, v in rows[f'{branch}_{stage}'].items()),
                  flush=True)  # fmt: skip
    return rows


# --- AVE estimate ----------------------------------------------------------------------------------------


def per_image_seconds(size: int, train: bool, batch: int = 8) -> float:
    """EfficientNet-Lite0 forward (or forward + backward) seconds per image at `size` on this machine."""
    backbone = build_backbone("efficientnet_lite0")
    images = torch.rand(batch, 3, size, size)
    if train:
        backbone.train()

        def step() -> None:
            backbone(backbone.normalize(images)).mean().backward()
    else:
        backbone.eval()

        @torch.no_grad()
        def step() -> None:
            backbone(backbone.normalize(images))

    return time_steps(step) / batch


def ave_estimate(epochs: dict[str, dict[str, float]], train_frames: int, gpu_train: float, gpu_infer: float,
                 classifier_epochs_run: int) -> dict[str, float]:  # fmt: skip
    """Pseudolabel hours on AVE on one GPU, both ways (see the module docstring)."""
    paper, fast = preset_config("paper", "pseudolabel"), preset_config("fast", "pseudolabel")
    cpu_train_224, cpu_infer_224 = per_image_seconds(224, True), per_image_seconds(224, False)
    to_gpu_train = (1 / gpu_train) / cpu_train_224
    to_gpu_infer = (1 / gpu_infer) / cpu_infer_224
    scale = AVE_FRAMES / train_frames
    # Fine-tuned: every epoch of every classifier runs the backbone forward and backward (measured per
    # epoch above, on the reference set), then the coarse and fine CAM passes run it forward (S, ST's 3
    # frames, SA: 5 images per frame at each stage).
    tuned_epoch = sum(row["paper fine-tuned"] for row in epochs.values()) * scale * to_gpu_train
    passes = AVE_FRAMES * 5 * (per_image_seconds(paper.coarse_size, False) + per_image_seconds(paper.fine_size, False))
    tuned = classifier_epochs_run * tuned_epoch + passes * to_gpu_infer
    # Frozen: the backbone once per frame and once per crop, then only heads.
    cache = AVE_FRAMES * (per_image_seconds(fast.coarse_size, False) + per_image_seconds(fast.fine_size, False))
    heads_epoch = sum(row["fast frozen"] for row in epochs.values()) * scale * to_gpu_train
    frozen = cache * to_gpu_infer + classifier_epochs_run * heads_epoch
    return {"paper fine-tuned h": tuned / 3600, "fast frozen h": frozen / 3600,
            "cpu train img/s at 224": 1 / cpu_train_224, "cpu infer img/s at 224": 1 / cpu_infer_224}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/avfix-pretrained"))
    parser.add_argument("--preset", default="fast", help="The preset of the reference run.")
    parser.add_argument("--epochs", type=int, default=10, help="Classifier epochs assumed on AVE (early stopping).")
    parser.add_argument("--gpu-train-images-per-s", type=float, default=2500.0)
    parser.add_argument("--gpu-infer-images-per-s", type=float, default=8000.0)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    print(f"reference run (--preset {args.preset}) in {args.workdir}", flush=True)
    reference = run_reference(args.workdir, args.preset)
    seconds = reference["seconds"]
    whole = sum(seconds.get(name, 0.0) for name in ("extract", "pseudolabel", "train", "predict"))
    train_frames = round(REFERENCE.classes * REFERENCE.videos_per_class * REFERENCE.seconds * REFERENCE.fps * 0.8)

    print("\nclassifier epochs on the reference set's training frames (same data, same run):", flush=True)
    epochs = classifier_epochs(args.workdir / "ws", train_frames)
    estimate = ave_estimate(epochs, train_frames, args.gpu_train_images_per_s, args.gpu_infer_images_per_s,
                            args.epochs)  # fmt: skip

    print("\n| stage | wall s |\n|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.1f} |")
    print(f"| extract..predict | {whole:.1f} (target <= 1200) |")
    print(f"\npseudolabel {seconds.get('pseudolabel', float('nan')):.1f} s (target <= 600)")
    print("\n| row | NSS | CC |\n|---|---|---|")
    for row, scores in reference["scores"].items():
        print(f"| {row} | {scores['NSS']:.3f} | {scores['CC']:.3f} |")
    print("\n| classifier | paper fine-tuned s/epoch | fast frozen s/epoch | speed-up | frozen at paper sizes | speed-up |")
    print("|---|---|---|---|---|---|")
    total = {k: 0.0 for k in ("paper fine-tuned", "fast frozen", "frozen at paper sizes")}
    for name, row in epochs.items():
        for key in total:
            total[key] += row[key]
        print(f"| {name} | {row['paper fine-tuned']:.1f} | {row['fast frozen']:.2f} | "
              f"{row['paper fine-tuned'] / row['fast frozen']:.0f}x | {row['frozen at paper sizes']:.2f} | "
              f"{row['paper fine-tuned'] / row['frozen at paper sizes']:.0f}x |")  # fmt: skip
    print(f"| all six | {total['paper fine-tuned']:.1f} | {total['fast frozen']:.2f} | "
          f"{total['paper fine-tuned'] / total['fast frozen']:.0f}x | {total['frozen at paper sizes']:.2f} | "
          f"{total['paper fine-tuned'] / total['frozen at paper sizes']:.0f}x |")  # fmt: skip
    print(f"\nAVE pseudolabel on one GPU ({AVE_FRAMES:,} frames, {args.epochs} epochs per classifier, GPU "
          f"{args.gpu_train_images_per_s:.0f} train / {args.gpu_infer_images_per_s:.0f} inference img/s at 224 "
          f"against this CPU's {estimate['cpu train img/s at 224']:.1f} / {estimate['cpu infer img/s at 224']:.1f}): "
          f"paper fine-tuned ~{estimate['paper fine-tuned h']:.1f} h, fast frozen ~{estimate['fast frozen h']:.1f} h")  # fmt: skip
    (args.workdir / "pretrained.json").write_text(json.dumps(
        {"reference": reference, "epochs": epochs, "ave": estimate, "args": {k: str(v) for k, v in vars(args).items()}},
        indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
