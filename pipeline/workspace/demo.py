"""`avfix demo`: the whole DAG on a generated tagged audio-visual set, on the CPU, in minutes.

1. `avfix synth` writes a training set (DemoConfig: classes x videos, each class an object with its own
   look and sound moving over clutter among silent distractors, the sounding object's true position
   saved) and a held-out test set (another seed) into WS/videos/.
2. `avfix run` (pipeline.dag) with the `fast` preset (a new workspace; `--preset` picks another) — the
   pretrained EfficientNet-Lite0, frozen, its maps cached, as a researcher runs it on a CPU: extract ->
   pseudolabel -> train on the training set, predict (with overlay videos) on the test set, evaluate
   against the test set's truth.csv with the centre-bias baseline.
3. The pseudo-labels of the training set are scored against the true positions (NSS and AUC-Judd
   against the object's centre pixel, CC against a Gaussian of half its radius, at the map size, the
   centre bias scored on the same frames); the predictions' scores come from evaluate's report.
4. Where the minutes went and both score tables are printed and written to WS/demo_report.{md,json}.

Every size and epoch knob is in DemoConfig. A rerun reuses what is done (the set, every stage).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models.metrics import auc_judd, cc, center_bias, fixation_density, fixation_map, nss
from pipeline.common.files import write_text_atomic
from pipeline.common.progress import Progress
from pipeline.predict.stage import OVERLAYS
from pipeline.synth.generate import SynthConfig, generate
from pipeline.synth.truth import TRUTH_FILE, TruthTrack, read_truth
from pipeline.workspace.config import Overrides, config_path
from pipeline.workspace.dag import RunRequest, run_dag
from pipeline.workspace.presets import FAST_ON_CPU, PRESET_NAMES
from stores import features as fstore
from stores import pseudo as pstore

METRICS = ("NSS", "CC", "AUC-J")
DEMO_PRESET = FAST_ON_CPU  # the demo shows the real method, pretrained, as a CPU runs it
PREDICTION_ROW, CENTER_ROW, PSEUDO_ROW = "predictions", "center", "pseudo-GT"
REPORT_MD, REPORT_JSON = "demo_report.md", "demo_report.json"

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """Every size and epoch knob of the demo (the defaults fit `make demo` on a 2-core CPU)."""

    classes: int = 4
    videos_per_class: int = 6  # training videos per class (`--videos`)
    test_videos_per_class: int = 2
    seconds: float = 4.0
    fps: float = 10.0
    size: int = 128  # generated and stored frame side
    distractors: int = 2
    seed: int = 0
    test_seed: int = 1
    # None: `fast` (the real method as a CPU runs it) on a new workspace, then what its avfix.toml says;
    # a name resets the workspace's settings to that preset ("cpu": the tiny networks, a faster smoke test).
    preset: str | None = None
    pseudolabel_epochs: int = 6
    train_epochs: int = 6
    # Torch intra-op threads (0: torch's default, every core): both presets ran 1.5x faster on the two
    # cores of the CI machine than on one (README: "avfix demo").
    torch_threads: int = 0
    workers: int = 1  # dask workers for decoding
    overlay: bool = True
    settings: tuple[str, ...] = field(default_factory=tuple)  # further --set overrides of WS/avfix.toml

    def __post_init__(self) -> None:
        if self.videos_per_class < 2 or self.test_videos_per_class < 1:
            raise ValueError("the demo needs at least 2 training videos per class (one is held out for "
                             "validation) and 1 test video per class")  # fmt: skip
        if self.preset is not None and self.preset not in PRESET_NAMES:
            raise ValueError(f"preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")

    def synth(self, test: bool) -> SynthConfig:
        return SynthConfig(
            classes=self.classes, videos_per_class=self.test_videos_per_class if test else self.videos_per_class,
            seconds=self.seconds, fps=self.fps, width=self.size, height=self.size, distractors=self.distractors,
            seed=self.test_seed if test else self.seed,
        )  # fmt: skip

    def overrides(self, workspace: Path, first_run: bool) -> Overrides:
        videos = workspace / "videos"
        settings = (
            f"extract.size={self.size}", f"pseudolabel.train.epochs={self.pseudolabel_epochs}",
            f"train.epochs={self.train_epochs}", f"predict.overlay={str(self.overlay).lower()}",
            f"run.torch_threads={self.torch_threads}", 'evaluate.baselines=["center"]',
        ) + self.settings  # fmt: skip
        preset = self.preset if self.preset is not None else DEMO_PRESET if first_run else None
        return Overrides(
            videos=videos / "train", predict_videos=videos / "test", fixations=videos / "test" / TRUTH_FILE,
            fixations_layout="csv", preset=preset, workers=self.workers, settings=settings,
        )  # fmt: skip


@dataclass
class DemoSummary:
    workspace: str
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall seconds
    pseudo_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    pseudo_frames: tuple[int, int] = (0, 0)  # frames scored (with a pseudo-GT), frames in all
    prediction_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    overlays: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    report: str = ""
    interrupted: bool = False
    error: str | None = None

    @property
    def beats_baseline(self) -> dict[str, bool]:
        """Per table: better than the centre bias on every metric."""
        out = {}
        for name, scores, row in (("pseudo-labels", self.pseudo_scores, PSEUDO_ROW),
                                  ("predictions", self.prediction_scores, PREDICTION_ROW)):  # fmt: skip
            if row in scores and CENTER_ROW in scores:
                out[name] = all(scores[row][m] > scores[CENTER_ROW][m] for m in METRICS)
        return out

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.error is None and bool(self.run.get("ok"))

    def line(self) -> str:
        if self.interrupted:
            return "demo: interrupted [rerun to resume]"
        if self.error is not None:
            return f"demo: stopped: {self.error}"
        verdict = ", ".join(f"{name} {'beat' if good else 'do NOT beat'} the centre bias"
                            for name, good in self.beats_baseline.items())  # fmt: skip
        return f"demo: {verdict} ({sum(self.seconds.values()) / 60:.1f} min) -> {self.report}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "beats_baseline": self.beats_baseline, "ok": self.ok}


def run_demo(workspace: str | Path, config: DemoConfig, progress: bool = True, echo: Echo = print) -> DemoSummary:
    """Generate the sets, run the DAG, score, report; see the module docstring."""
    workspace = Path(workspace).resolve()
    summary = DemoSummary(str(workspace))
    began = time.perf_counter()
    for name, test in (("train", False), ("test", True)):
        made = generate(workspace / "videos" / name, config.synth(test), Progress(enabled=progress), overwrite=True)
        if made.interrupted:
            summary.interrupted = True
            return summary
    summary.seconds["synth"] = time.perf_counter() - began
    echo(f"demo: data sets in {workspace / 'videos'} ({config.classes} classes; {config.videos_per_class} training "
         f"and {config.test_videos_per_class} test videos per class; {config.seconds:g} s at {config.fps:g} fps, "
         f"{config.size} px)")  # fmt: skip
    first_run = not config_path(workspace).exists()
    run = run_dag(workspace, config.overrides(workspace, first_run), RunRequest(progress=progress), echo)
    summary.run = run.to_dict()
    summary.seconds.update({outcome.stage: outcome.seconds for outcome in run.stages})
    if run.interrupted or run.error is not None:
        summary.interrupted, summary.error = run.interrupted, run.error
        return summary
    began = time.perf_counter()
    threads = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        summary.pseudo_scores, summary.pseudo_frames = score_pseudo_labels(
            workspace, read_truth(workspace / "videos" / "train" / TRUTH_FILE))
    finally:
        torch.set_num_threads(threads)
    summary.prediction_scores = prediction_scores(workspace / "report.json")
    summary.seconds["scoring"] = time.perf_counter() - began
    summary.overlays = sorted(str(p) for p in (workspace / OVERLAYS).glob("*.mp4"))
    summary.report = str(workspace / REPORT_MD)
    write_report(workspace, config, summary)
    echo(report_text(summary))
    return summary


# --- scores ---------------------------------------------------------------------------------------------


def score_frames(maps: torch.Tensor, track: TruthTrack, frames: np.ndarray, source_hw: tuple[int, int],
                 generator: torch.Generator) -> dict[str, torch.Tensor]:  # fmt: skip
    """NSS, AUC-Judd (the centre's pixel as the fixation) and CC (a Gaussian of half the object's radius)
    of maps (n, M, M) on the given frames of one video, at the map size."""
    size = tuple(maps.shape[-2:])
    height, width = source_hw
    scale = np.array([size[1] / width, size[0] / height])
    # truth.csv puts (0, 0) at the centre of the top-left pixel; the metrics' pixel c spans [c, c + 1).
    centres = (np.stack([track.x[frames], track.y[frames]], axis=1) + 0.5) * scale
    points = torch.from_numpy(centres).unsqueeze(1)
    present = torch.ones(len(frames), 1, dtype=torch.bool)
    fixations = fixation_map(points, present, size)
    density = fixation_density(points, present, size, torch.from_numpy(track.radius[frames] * scale.mean() / 2))
    maps = maps.double()
    return {"NSS": nss(maps, fixations), "CC": cc(maps, density), "AUC-J": auc_judd(maps, fixations, generator=generator)}


def score_pseudo_labels(workspace: Path, truth: dict[str, TruthTrack]) -> tuple[dict[str, dict[str, float]], tuple[int, int]]:
    """Mean NSS, CC, AUC-Judd over the frames that have a pseudo-GT, for the pseudo-GT and the centre bias."""
    pseudo = pstore.SCHEMA.open_for_reading(pstore.SCHEMA.path(workspace))
    features = fstore.SCHEMA.open_for_reading(fstore.SCHEMA.path(workspace))
    generator = torch.Generator().manual_seed(0)
    collected: dict[str, dict[str, list[torch.Tensor]]] = {row: {m: [] for m in METRICS} for row in (PSEUDO_ROW, CENTER_ROW)}
    n_frames = n_scored = 0
    for video_id in pstore.SCHEMA.complete_videos(pseudo):
        if video_id not in truth:
            continue
        stored = pstore.read_video(pseudo, video_id)
        frames = np.flatnonzero(stored["has_pseudo_gt"])
        n_frames += stored["has_pseudo_gt"].size
        n_scored += frames.size
        if not frames.size:
            continue
        attrs = fstore.SCHEMA.read_video(features, video_id)
        source_hw = (attrs.source_height, attrs.source_width)
        pseudo_gt = torch.from_numpy(stored["pseudo_gt"][frames].astype(np.float32))
        rows = {PSEUDO_ROW: pseudo_gt, CENTER_ROW: center_bias(tuple(pseudo_gt.shape[-2:])).expand_as(pseudo_gt)}
        for row, maps in rows.items():
            for metric, values in score_frames(maps, truth[video_id], frames, source_hw, generator).items():
                collected[row][metric].append(values)
    scores = {}
    for row, by_metric in collected.items():
        scores[row] = {}
        for metric, values in by_metric.items():
            joined = torch.cat(values) if values else torch.empty(0, dtype=torch.float64)
            finite = joined[torch.isfinite(joined)]  # a map without contrast has no score; counted out
            scores[row][metric] = float(finite.mean()) if finite.numel() else float("nan")
    return scores, (n_scored, n_frames)


def prediction_scores(report_json: Path) -> dict[str, dict[str, float]]:
    """Each row's mean NSS, CC and AUC-Judd from evaluate's report (the first data set)."""
    report = json.loads(report_json.read_text())
    summary = report["datasets"][0]["summary"]
    return {row: {metric: float(summary[row][metric]["mean"]) for metric in METRICS} for row in summary}


# --- report -------------------------------------------------------------------------------------------


def _score_table(scores: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| maps | " + " | ".join(f"{m} ↑" for m in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for row, values in scores.items():
        lines.append(f"| {row} | " + " | ".join(f"{values[m]:.3f}" for m in METRICS) + " |")
    return lines


def report_text(summary: DemoSummary) -> str:
    total = sum(summary.seconds.values())
    lines = ["", "## Where the minutes went", "", "| step | minutes | share |", "|---|---|---|"]
    for step, seconds in summary.seconds.items():
        lines.append(f"| {step} | {seconds / 60:.2f} | {100 * seconds / max(total, 1e-9):.0f} % |")
    lines.append(f"| total | {total / 60:.2f} | |")
    scored, frames = summary.pseudo_frames
    lines += ["", f"## Pseudo-labels of the training set against the true positions ({scored} of {frames} frames "
              "have a pseudo-GT; scored on those, at the map size)", ""]  # fmt: skip
    lines += _score_table(summary.pseudo_scores)
    lines += ["", "## Predictions on the held-out test set (evaluate's protocol, SPEC §5.2; report.md has all metrics)", ""]
    lines += _score_table(summary.prediction_scores)
    verdict = summary.beats_baseline
    lines += ["", "Better than the centre bias on NSS, CC and AUC-Judd: "
              + ", ".join(f"{name}: {'yes' if good else 'NO'}" for name, good in verdict.items())]  # fmt: skip
    if summary.overlays:
        lines += ["", f"Overlay videos ({len(summary.overlays)}): {Path(summary.overlays[0]).parent}/"]
    return "\n".join(lines)


def write_report(workspace: Path, config: DemoConfig, summary: DemoSummary) -> None:
    text = "# avfix demo\n\n" + f"Settings: `{json.dumps(asdict(config))}`\n" + report_text(summary) + "\n"
    for name, content in ((REPORT_MD, text), (REPORT_JSON, json.dumps(summary.to_dict(), indent=2, default=str))):
        write_text_atomic(workspace / name, content)

