"""avfix command line: parse options, call pipeline/, print results. No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from pipeline import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="avfix")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """avfix: pseudo human-fixation maps from category-tagged videos, and an audio-visual
    saliency network trained on them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _finish(summary: Any, as_json: bool) -> None:
    """Print a stage's summary (text or JSON) and exit 130 when interrupted, 1 when anything failed."""
    _emit_summary(summary.to_dict(), as_json, summary.line())
    if summary.interrupted:
        sys.exit(130)
    if not summary.ok:
        sys.exit(1)


def _emit_summary(summary: dict, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(text)


# --- extract -----------------------------------------------------------------------------------


@main.command()
@click.argument("videos", type=click.Path(path_type=Path))
@click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Workspace folder.")
@click.option("--fps", type=float, default=None, help="Frame rate to store (by timestamps). Default: native.")
@click.option("--size", type=int, default=356, help="Side of the stored square frames (SPEC §1.2).")
@click.option("--keep-aspect", is_flag=True, help="Keep the aspect ratio: the shorter side becomes --size.")
@click.option("--flow", type=click.Choice(["dis", "none"]), default="dis", help="Optical flow method.")
@click.option("--flow-scale", type=float, default=0.5, help="Flow grid size as a fraction of the frame size.")
@click.option("--flow-preset", type=click.Choice(["ultrafast", "fast", "medium"]), default="ultrafast")
@click.option("--audio-window", type=float, default=0.5, help="Audio window per frame, seconds (SPEC §1.3).")
@click.option("--segment-frames", type=int, default=512, help="Frames per task (long videos are split).")
@click.option("-j", "--workers", type=int, default=1, help="Local dask workers; each keeps about two cores busy.")
@click.option("--threads/--processes", default=True, help="Local workers are threads of this process, or processes.")
@click.option("--scheduler", default=None, help="Address of a running dask.distributed scheduler.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def extract(
    videos: Path, workspace: Path, fps: float | None, size: int, keep_aspect: bool, flow: str,
    flow_scale: float, flow_preset: str, audio_window: float, segment_frames: int, workers: int,
    threads: bool, scheduler: str | None, quiet: bool, as_json: bool,
) -> None:  # fmt: skip
    """Decode VIDEOS (a <class>/<video> folder or a path,label CSV) into WS/features.zarr:
    frames, optical flow and per-frame audio spectrogram windows.

    Example: avfix extract AVE/ --workspace ws --fps 10 -j 2
    """
    from pipeline.common.audio_features import AudioWindowConfig
    from pipeline.common.flow import FlowConfig
    from pipeline.common.inputs import InputError
    from pipeline.common.progress import Progress
    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.extract.run import ExtractConfig, run_extract

    try:
        config = ExtractConfig(
            fps=fps, size=size, keep_aspect=keep_aspect,
            flow=FlowConfig(method=flow, scale=flow_scale, preset=flow_preset),
            audio=AudioWindowConfig(seconds=audio_window), segment_frames=segment_frames,
        )  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    progress = Progress(enabled=not quiet)
    try:
        summary = run_extract(
            videos, workspace, config, SchedulerConfig(workers, scheduler, threads), progress,
            on_failure=lambda path, reason: progress.message(f"FAILED {path}: {reason}"),
        )  # fmt: skip
    except InputError as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(summary, as_json)

# --- synth -------------------------------------------------------------------------------------


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--classes", type=int, default=4, help="Number of classes (2-8), each a look and a sound.")
@click.option("--videos-per-class", type=int, default=6, help="Videos generated per class.")
@click.option("--seconds", type=float, default=4.0, help="Length of each video.")
@click.option("--fps", type=float, default=10.0, help="Frame rate.")
@click.option("--width", type=int, default=128, help="Frame width in pixels.")
@click.option("--height", type=int, default=128, help="Frame height in pixels.")
@click.option("--distractors", type=int, default=2, help="Silent objects with other classes' looks per video.")
@click.option("--silent-fraction", type=float, default=0.2, help="Share of each video's frames in one silent stretch.")
@click.option("--seed", type=int, default=0, help="Same seed and settings give the same videos and truth.")
@click.option("--overwrite", is_flag=True, help="Replace a set generated in OUT with other settings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def synth(
    out: Path, classes: int, videos_per_class: int, seconds: float, fps: float, width: int, height: int,
    distractors: int, silent_fraction: float, seed: int, overwrite: bool, quiet: bool, as_json: bool,
) -> None:  # fmt: skip
    """Generate a tagged audio-visual test set in OUT: OUT/<class>/<video>.mp4 (H.264 + AAC) and
    OUT/truth.csv (video,frame,x,y,label,audible,radius: the sounding object's centre per frame).

    Example: avfix synth demo_set --classes 4 --videos-per-class 6 --seconds 4
    """
    from pipeline.common.progress import Progress
    from pipeline.synth.generate import SynthConfig, SynthError, generate

    try:
        config = SynthConfig(
            classes=classes, videos_per_class=videos_per_class, seconds=seconds, fps=fps, width=width,
            height=height, distractors=distractors, silent_fraction=silent_fraction, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        error = click.ClickException(str(exc))  # one line, no usage block
        error.exit_code = 2
        raise error from exc
    try:
        summary = generate(out, config, Progress(enabled=not quiet), overwrite=overwrite)
    except SynthError as exc:
        raise click.ClickException(str(exc)) from exc
    _emit_summary(summary.to_dict(), as_json, summary.line())
    if summary.interrupted:
        sys.exit(130)


# --- pseudolabel -------------------------------------------------------------------------------


@main.command()
@click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Workspace folder.")
@click.option("--preset", type=click.Choice(["paper", "cpu"]), default="paper",
              help="paper: SPEC sizes on the packaged EfficientNet-Lite0; cpu: a tiny network at small sizes.")
@click.option("--backbone", default=None, help="efficientnet_lite0, resnet18, resnet50, resnext101_32x8d, tiny.")
@click.option("--weights", type=click.Path(path_type=Path), default=None, help="Local backbone weights file.")
@click.option("--random-init", is_flag=True, default=None, help="Train the backbone from scratch.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--threads", type=int, default=None, help="Torch CPU threads (0: torch's choice).  [default: 1]")
@click.option("--epochs", type=int, default=None, help="Epochs per classifier (early stop on validation).")
@click.option("--steps", type=int, default=None, help="Cap on training steps per classifier.")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None)
@click.option("--coarse-size", type=int, default=None, help="Coarse classifier input (SPEC: 256).")
@click.option("--fine-size", type=int, default=None, help="Fine classifier input (SPEC: 356).")
@click.option("--map-size", type=int, default=None, help="Size of the stored maps (SPEC: 356).")
@click.option("--smoothing", type=click.Choice(["flow", "plain", "none"]), default=None,
              help="flow: warp neighbours along the optical flow (default); plain: the paper's average.")
@click.option("--no-fine", is_flag=True, help="Pseudo-GT from the coarse CAMs alone.")
@click.option("--event-threshold", type=float, default=None, help="P(event audio) that makes a frame event-related.")
@click.option("--vggsound", type=click.Path(path_type=Path), default=None, help="VGGSound checkpoint (SPEC §1.4).")
@click.option("--vggsound-classes", type=click.Path(path_type=Path), default=None, help="Its class names (stat.csv).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def pseudolabel(workspace: Path, preset: str, quiet: bool, as_json: bool, **options: object) -> None:
    """Learn S/ST/SA classifiers from the tags in WS/features.zarr and write pseudo fixation maps
    (SPEC §1.4-3) to WS/pseudo.zarr. Trained classifiers and finished videos are reused on a rerun.

    Example: avfix pseudolabel --workspace ws --preset cpu
    """
    from pipeline.common.progress import Progress
    from pipeline.pseudolabel.options import pseudolabel_config
    from pipeline.pseudolabel.run import PseudolabelError, run_pseudolabel

    try:
        config = pseudolabel_config(preset, options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    progress = Progress(enabled=not quiet)
    try:
        summary = run_pseudolabel(workspace, config, progress)
    except (PseudolabelError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(summary, as_json)


# --- train -------------------------------------------------------------------------------------


@main.command()
@click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Workspace folder.")
@click.option("--preset", type=click.Choice(["paper", "cpu"]), default="paper",
              help="paper: SPEC §4 on the packaged EfficientNet-Lite0; cpu: a tiny network at 64 px.")
@click.option("--backbone", default=None, help="efficientnet_lite0, resnet18, resnet50, resnext101_32x8d, tiny.")
@click.option("--weights", type=click.Path(path_type=Path), default=None, help="Local backbone weights file.")
@click.option("--random-init", is_flag=True, default=None, help="Train the backbone from scratch.")
@click.option("--audio-weights", type=click.Path(path_type=Path), default=None, help="VGGSound checkpoint.")
@click.option("--input-size", type=int, default=None, help="Network input side (SPEC: 356).")
@click.option("--epochs", type=int, default=None, help="Epochs (rerun with more to extend a finished run).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps in all.")
@click.option("--batch-size", type=int, default=None, help="Samples per step and process.")
@click.option("--lr", type=float, default=None)
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default=None)
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default=None)
@click.option("--kl-weight", type=float, default=None, help="Weight of the KL term (SPEC §9); 0 = BCE only.")
@click.option("--use-flow", is_flag=True, default=None, help="Feed the stored optical flow of frame t too.")
@click.option("--batchnorm", type=click.Choice(["auto", "frozen", "train"]), default=None,
              help="BatchNorm statistics: auto freezes those of pretrained parts.  [default: auto]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("-j", "--workers", "num_workers", type=int, default=None,
              help="Reader threads (0: read between steps).  [default: 2; cpu preset: 0]")
@click.option("--worker-processes", is_flag=True, default=None, help="Read with DataLoader worker processes instead.")
@click.option("--seed", type=int, default=None)
@click.option("--restart", is_flag=True, help="Discard existing checkpoints and train anew.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def train(workspace: Path, preset: str, restart: bool, quiet: bool, as_json: bool, **options: object) -> None:
    """Train the STA saliency network on WS/features.zarr + WS/pseudo.zarr into WS/checkpoints/sta/
    (last.pt, best.pt, metrics.jsonl). A rerun resumes exactly where it stopped.
    Several GPUs: torchrun --nproc-per-node G -m cli train --workspace WS ...

    Example: avfix train --workspace ws --preset cpu --epochs 5
    """
    from pipeline.train.config import TrainError, train_config
    from pipeline.train.run import TrainProgress, run_train

    try:
        config = train_config(preset, options)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        summary = run_train(workspace, config, TrainProgress(enabled=not quiet),
                            report=lambda text: click.echo(text, err=True), restart=restart)  # fmt: skip
    except (TrainError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if summary.rank == 0:
        _emit_summary(summary.to_dict(), as_json, summary.line())
    if summary.interrupted:
        sys.exit(130)


# --- predict -----------------------------------------------------------------------------------


@main.command()
@click.argument("videos", type=click.Path(path_type=Path))
@click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Workspace folder.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="STA checkpoint.  [default: WS/checkpoints/sta/best.pt, else last.pt]")
@click.option("--overlay", is_flag=True, help="Also write WS/overlays/<video>.mp4: heat map over video, with audio.")
@click.option("--alpha", type=float, default=0.5, help="Overlay opacity at the most salient pixels.")
@click.option("--colormap", default="jet", help="Overlay colour map (any matplotlib name).")
@click.option("--batch-size", type=int, default=16, help="Frames per network batch.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("-j", "--workers", type=int, default=1,
              help="Local dask workers for decoding; each keeps about two cores busy.")
@click.option("--threads/--processes", default=True, help="Local workers are threads of this process, or processes.")
@click.option("--scheduler", default=None, help="Address of a running dask.distributed scheduler.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def predict(
    videos: Path, workspace: Path, checkpoint: Path | None, overlay: bool, alpha: float, colormap: str,
    batch_size: int, device: str, workers: int, threads: bool, scheduler: str | None, quiet: bool, as_json: bool,
) -> None:  # fmt: skip
    """Saliency maps for VIDEOS (a video file, a folder, <class>/<video> folders or a CSV manifest;
    no tags needed) into WS/predictions.zarr, at each video's own size.

    Example: avfix predict clips/ --workspace ws --overlay
    """
    from pipeline.common.inputs import InputError
    from pipeline.common.progress import Progress
    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.predict.run import PredictConfig, PredictError, run_predict

    try:
        config = PredictConfig(checkpoint=None if checkpoint is None else str(checkpoint), batch_size=batch_size,
                               device=device, overlay=overlay, overlay_alpha=alpha, colormap=colormap)  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    progress = Progress(enabled=not quiet)
    try:
        summary = run_predict(
            videos, workspace, config, SchedulerConfig(workers, scheduler, threads), progress,
            on_failure=lambda path, reason: progress.message(f"FAILED {path}: {reason}"),
        )  # fmt: skip
    except (PredictError, InputError) as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(summary, as_json)


# --- evaluate ----------------------------------------------------------------------------------


def _frame_size(text: str | None) -> tuple[int, int] | None:
    """'WxH' -> (H, W)."""
    if text is None:
        return None
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise click.BadParameter(f"expected WxH, e.g. 640x360, got {text!r}") from exc
    if width <= 0 or height <= 0:
        raise click.BadParameter(f"frame size must be positive, got {text!r}")
    return height, width


@main.command()
@click.argument("fixations", type=click.Path(path_type=Path))
@click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Where the report goes.")
@click.option("--maps", "maps", multiple=True, type=click.Path(path_type=Path),
              help="A predictions.zarr or a folder of map images; repeat for more rows.  "
                   "[default: WS/predictions.zarr when it exists (video layouts)]")
@click.option("--layout", type=click.Choice(["auto", "stavis", "csv", "images"]), default="auto",
              help="Fixation layout: STAViS release folder, video,frame,x,y CSV, or images + image,observer,x,y CSV.")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(["center", "cam", "center-cam", "none"]),
              help="Reference rows; repeat for more (cam, center-cam: images layout).  [default: center]")
@click.option("--dataset", "datasets", multiple=True, help="STAViS: evaluate only this data set (repeatable).")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Images folder of the images layout.  [default: stimuli/ beside the CSV]")
@click.option("--shuffle", type=click.Choice(["auto", "same-video", "other-images", "random-10"]), default="auto",
              help="Shuffled-AUC negatives; auto: same-video for videos, other-images for images.")
@click.option("--sigma", type=float, default=0.03, help="σ of the fixation density (CSV and images layouts).")
@click.option("--sigma-unit", type=click.Choice(["frac", "px", "deg"]), default="frac",
              help="frac: of the frame's longer side; deg needs --ppd.")
@click.option("--ppd", type=float, default=None, help="Display pixels per degree (for --sigma-unit deg).")
@click.option("--frame-size", default=None, help="WxH of CSV videos that no map gives a size for.")
@click.option("--origin", type=click.Choice(["auto", "corner", "center"]), default="auto",
              help="(0, 0) of CSV coordinates: the top-left pixel's corner or centre; auto: center for the csv "
                   "layout (avfix synth), corner for images.")
@click.option("--post-sigma", type=float, default=2.0, help="σ of STAViS's postprocessMap blur (0: none).")
@click.option("--shuffle-splits", type=int, default=100, help="Random splits of the shuffled AUC.")
@click.option("--center-sigma", type=float, default=0.25, help="Centre-bias σ as a fraction of width and height.")
@click.option("--cam-input", type=int, default=224, help="CAM baseline: classifier input side.")
@click.option("--cam-top-k", type=int, default=5, help="CAM baseline: probability-weighted top-k classes (1: top-1).")
@click.option("--examples", type=int, default=4, help="Example items drawn per data set.")
@click.option("--batch-pixels", type=int, default=1 << 21, help="Ground-truth pixels scored per batch (memory).")
@click.option("--seed", type=int, default=0, help="Seed of the AUC-Judd jitter and the shuffled-AUC draws.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=1, help="Torch CPU threads (0: torch's choice; see README).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def evaluate(
    fixations: Path, workspace: Path, maps: tuple[Path, ...], layout: str, baselines: tuple[str, ...],
    datasets: tuple[str, ...], images_dir: Path | None, shuffle: str, sigma: float, sigma_unit: str,
    ppd: float | None, frame_size: str | None, origin: str, post_sigma: float, shuffle_splits: int, center_sigma: float,
    cam_input: int, cam_top_k: int, examples: int, batch_pixels: int, seed: int, device: str, threads: int,
    quiet: bool, as_json: bool,
) -> None:  # fmt: skip
    """Score saliency maps against human FIXATIONS with CC, NSS, AUC-Judd, shuffled AUC, SIM and KLD
    (SPEC §5); write WS/report.md, WS/report.json and WS/plots/.

    Example: avfix evaluate /data/scene-fixations --workspace ws --baseline center --baseline cam --baseline center-cam
    """
    from pipeline.common.progress import Progress
    from pipeline.evaluate.baselines import BaselineConfig
    from pipeline.evaluate.config import DensityConfig, EvaluateConfig, EvaluateError
    from pipeline.evaluate.fixations import FixationInputError
    from pipeline.evaluate.run import run_evaluate

    chosen = ("center",) if not baselines else tuple(b for b in baselines if b != "none")
    try:
        config = EvaluateConfig(
            layout=layout, maps=maps, baselines=chosen, datasets=datasets, images_dir=images_dir, shuffle=shuffle,
            density=DensityConfig(sigma, sigma_unit, ppd), frame_size=_frame_size(frame_size), origin=origin,
            post_sigma=post_sigma,
            shuffle_splits=shuffle_splits, seed=seed, device=device, batch_pixels=batch_pixels, examples=examples,
            threads=threads,
            baseline=BaselineConfig(center_sigma=center_sigma, cam_input=cam_input, cam_top_k=cam_top_k),
        )  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    progress = Progress(enabled=not quiet)
    try:
        summary = run_evaluate(fixations, workspace, config, progress)
    except (EvaluateError, FixationInputError, FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    for failure in summary.failures[:20]:
        progress.message(f"PROBLEM {failure['path']}: {failure['reason']}")
    if len(summary.failures) > 20:
        progress.message(f"... and {len(summary.failures) - 20} more problems (all in WS/report.json)")
    _finish(summary, as_json)


# --- run ---------------------------------------------------------------------------------------

STAGE_NAMES = ("extract", "pseudolabel", "train", "predict", "evaluate")


def _workspace_config_options(function):  # noqa: ANN001, ANN201
    """--preset, --device, -j and --set: how `run` and `status` override WS/avfix.toml."""
    options = (
        click.option("--preset", type=click.Choice(["paper", "cpu"]), default=None,
                     help="Reset the extract, pseudolabel and train settings to this preset's.  "
                          "[default: the workspace's; a new workspace: paper]"),
        click.option("--device", default=None, help="auto, cpu, cuda or cuda:N for every stage."),
        click.option("-j", "--workers", type=int, default=None, help="Local dask workers for decoding."),
        click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override one setting of WS/avfix.toml for this run, e.g. pseudolabel.smoothing=plain "
                          "(repeatable)."),
    )  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


@main.command()
@click.argument("videos", required=False, type=click.Path(path_type=Path))
@click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Workspace folder.")
@click.option("--predict", "predict_videos", type=click.Path(path_type=Path), default=None,
              help="Videos to predict saliency for (no tags needed).  [default: [run] predict_videos]")
@click.option("--fixations", type=click.Path(path_type=Path), default=None,
              help="Fixations to score the predictions against.  [default: [run] fixations]")
@click.option("--layout", "fixations_layout", type=click.Choice(["auto", "stavis", "csv", "images"]), default=None,
              help="Layout of --fixations.  [default: [run] fixations_layout]")
@click.option("--until", type=click.Choice(STAGE_NAMES), default=None, help="Stop after this stage.")
@click.option("--force", multiple=True, type=click.Choice(STAGE_NAMES),
              help="Redo this stage even when it is up to date (repeatable).")
@_workspace_config_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(
    videos: Path | None, workspace: Path, predict_videos: Path | None, fixations: Path | None,
    fixations_layout: str | None, until: str | None, force: tuple[str, ...], preset: str | None, device: str | None,
    workers: int | None, settings: tuple[str, ...], quiet: bool, as_json: bool,
) -> None:  # fmt: skip
    """Run the whole DAG (extract -> pseudolabel -> train -> predict -> evaluate) on VIDEOS, skipping
    every stage whose output is up to date. The first run writes WS/avfix.toml with every setting.

    Example: avfix run AVE/ --workspace ws --predict clips/ --fixations STAViS_data/ --preset cpu
    """
    from pipeline.workspace.config import ConfigError, Overrides
    from pipeline.workspace.dag import RunRequest, run_dag

    try:
        overrides = Overrides(videos=videos, predict_videos=predict_videos, fixations=fixations,
                              fixations_layout=fixations_layout, preset=preset, device=device, workers=workers,
                              settings=settings)  # fmt: skip
        summary = run_dag(workspace, overrides, RunRequest(until, force, progress=not quiet),
                          echo=lambda text: click.echo(text, err=as_json))  # fmt: skip
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(summary, as_json)


# --- status ------------------------------------------------------------------------------------


@main.command()
@click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Workspace folder.")
@_workspace_config_options
@click.option("--brief", is_flag=True, help="Only the table of stages, not the table of videos.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(workspace: Path, preset: str | None, device: str | None, workers: int | None, settings: tuple[str, ...],
           brief: bool, as_json: bool) -> None:  # fmt: skip
    """What is done, stale, failed (with the recorded error) or missing in WS, per stage and per video,
    against WS/avfix.toml (with --set etc.: what a run with those options would redo). Runs nothing.

    Example: avfix status --workspace ws --set pseudolabel.smoothing=plain
    """
    from pipeline.workspace.config import ConfigError, Overrides
    from pipeline.workspace.status import read_status, status_table

    try:
        found = read_status(workspace, Overrides(preset=preset, device=device, workers=workers, settings=settings))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _emit_summary(found.to_dict(), as_json, status_table(found, per_video=not brief))


# --- demo --------------------------------------------------------------------------------------


@main.command()
@click.option("--workspace", "-w", default=Path("demo-workspace"), type=click.Path(path_type=Path),
              help="Workspace folder (the generated videos go to WS/videos/).")
@click.option("--videos", "videos_per_class", type=int, default=None,
              help="Training videos per class.  [default: 6]")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one setting of the demo's WS/avfix.toml (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(workspace: Path, videos_per_class: int | None, settings: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Generate a small tagged audio-visual data set with known object positions, run the whole DAG on
    the CPU, and report where the minutes went and the pseudo-label and prediction scores (NSS, CC,
    AUC-Judd) next to the centre-bias baseline; overlay videos go to WS/overlays/.

    Example: avfix demo --workspace demo-workspace --videos 8
    """
    from pipeline.workspace.config import ConfigError
    from pipeline.workspace.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(settings=settings, **({} if videos_per_class is None else {"videos_per_class": videos_per_class}))
        summary = run_demo(workspace, config, progress=not quiet, echo=lambda text: click.echo(text, err=as_json))
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(summary, as_json)


if __name__ == "__main__":
    main()
