"""avfix command line: parse options, call pipeline/, print results. No logic lives here.

Every stage command reads the workspace's configuration (WS/avfix.toml, else the preset's defaults) and
overrides it with the options given: an option left out is "not given" and the configuration decides,
so `avfix evaluate ...` and `avfix run`'s [evaluate] can never disagree. Bad input is one line (exit
code 1; a bad option value: 2); an unexpected exception is a bug and prints its traceback (exit 70).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from pipeline import __version__
from pipeline.common.allocator import tune_allocator

BUG_EXIT_CODE = 70  # as pipeline.common.errors (not imported here: `avfix --help` stays light)


class AvfixGroup(click.Group):
    """Turns input problems into one line and bugs into a traceback with their own exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - sorted into bad input and bugs right here
            from pipeline.common.errors import is_problem, one_line
            from pipeline.workspace.dag import OptionError

            if isinstance(exc, OptionError):
                raise _usage_line(str(exc)) from exc
            if is_problem(exc):
                raise click.ClickException(one_line(exc)) from exc
            traceback.print_exc()
            click.echo(f"avfix: internal error ({type(exc).__name__}): this is a bug, not a problem with your input; "
                       "please report it with the traceback above", err=True)  # fmt: skip
            ctx.exit(BUG_EXIT_CODE)


def _usage_line(message: str) -> click.ClickException:
    """A bad option value: one line (no usage block), exit code 2 as for any usage error."""
    error = click.ClickException(message)
    error.exit_code = 2
    return error


class SettingOption(click.Option):
    """An option that sets one key of the workspace configuration; not given (None) leaves it to the
    configuration. `convert` maps the option's value to the setting's; `also` sets further keys (unless
    an option gave them)."""

    def __init__(self, *args: Any, key: str, convert: Callable[[Any], Any] | None = None,
                 also: dict[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        kwargs.setdefault("default", None)
        super().__init__(*args, **kwargs)
        self.key, self.convert, self.also = key, convert, also or {}


def setting(*declarations: str, key: str, **kwargs: Any) -> Callable:
    return click.option(*declarations, cls=SettingOption, key=key, **kwargs)


def _given_settings(ctx: click.Context) -> tuple[tuple[str, Any], ...]:
    given: dict[str, Any] = {}
    also: dict[str, Any] = {}
    for param in ctx.command.params:
        value = ctx.params.get(param.name) if isinstance(param, SettingOption) else None
        if value is None or value == () or (value is False and param.is_flag and not param.secondary_opts):
            continue
        given[param.key] = param.convert(value) if param.convert else value
        also.update(param.also)
    return tuple({**also, **given}.items())


def _workspace_overrides(ctx: click.Context, stage: str, preset: str | None = None, **inputs: Any) -> Any:
    from pipeline.workspace.config import Overrides

    return Overrides(preset=preset, preset_sections=(stage,), values=_given_settings(ctx), **inputs)


def _run_stage(ctx: click.Context, stage: str, workspace: Path, quiet: bool, as_json: bool, forced: bool = False,
               preset: str | None = None, **inputs: Any) -> None:  # fmt: skip
    from pipeline.workspace.dag import run_stage

    overrides = _workspace_overrides(ctx, stage, preset, **inputs)
    try:
        summary = run_stage(stage, workspace, overrides, progress=not quiet, forced=forced)
    except KeyboardInterrupt:  # e.g. in a stage's closing bookkeeping, after its own handler
        click.echo(f"{stage}: interrupted [rerun to resume]", err=True)
        sys.exit(130)
    if getattr(summary, "rank", 0) == 0:
        _emit_summary(summary.to_dict(), as_json, summary.line())
    _exit_code(summary)


def _exit_code(summary: Any) -> None:
    """Exit 130 when interrupted, 1 when anything failed."""
    if summary.interrupted:
        sys.exit(130)
    if not summary.ok:
        sys.exit(1)


def _emit_summary(summary: dict, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(text)


class _Registered(click.Choice):
    """Choices read from the stage registry or the preset table when first needed (importing them at
    start-up would load torch for `avfix --help`)."""

    def __init__(self, source: Callable[[], tuple[str, ...]]) -> None:
        self._source = source
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return self._source()


def _stage_names() -> tuple[str, ...]:
    from pipeline.workspace.registry import NAMES

    return NAMES


def _preset_names() -> tuple[str, ...]:
    from pipeline.workspace.presets import PRESET_NAMES

    return PRESET_NAMES


def _preset_option(what: str) -> Callable:
    return click.option("--preset", type=_Registered(_preset_names), default=None,
                        help=f"Reset this stage's settings to a preset's: paper ({what}), fast (the same "
                             "pretrained backbone frozen, its maps cached) or cpu (small sizes, tiny networks).  "
                             "[default: the workspace's; a new workspace: paper with a CUDA GPU, else fast]")  # fmt: skip


def _common(function: Callable) -> Callable:
    """--workspace, --quiet and --json, shared by the stage commands."""
    for option in reversed((
        click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Workspace folder."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    )):  # fmt: skip
        function = option(function)
    return function


def _decoding(function: Callable) -> Callable:
    """-j, --threads/--processes and --scheduler: where extract and predict spread their per-video work
    (decoding; predict's network pass)."""
    for option in reversed((
        click.option("-j", "--workers", type=int, default=None,
                     help="Local dask workers; each keeps about two cores busy.  [default: [run] workers, 1]"),
        setting("--threads/--processes", key="run.threads",
                help="Local workers are threads of this process, or processes.  [default: [run] threads; unset: extract processes, predict threads]"),
        setting("--scheduler", key="run.scheduler", help="Address of a running dask.distributed scheduler."),
    )):  # fmt: skip
        function = option(function)
    return function


def _passes(function: Callable) -> Callable:
    """-j and --scheduler: where pseudolabel's per-video passes run (local workers are processes)."""
    for option in reversed((
        click.option("-j", "--workers", type=int, default=None,
                     help="Local dask worker processes for the map passes.  [default: [run] workers, 1]"),
        setting("--scheduler", key="run.scheduler", help="Address of a running dask.distributed scheduler."),
    )):  # fmt: skip
        function = option(function)
    return function


@click.group(cls=AvfixGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="avfix")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """avfix: pseudo human-fixation maps from category-tagged videos, and an audio-visual
    saliency network trained on them.

    Every stage command takes its settings from WS/avfix.toml (else the preset's defaults); the
    options it is given override them for that run.
    """
    tune_allocator()  # before any thread starts: see pipeline.common.allocator
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# --- extract -----------------------------------------------------------------------------------


@main.command()
@click.argument("videos", type=click.Path(path_type=Path))
@_common
@_preset_option("356 px frames")
@setting("--fps", key="extract.fps", type=float, help="Frame rate to store (by timestamps).  [default: native]")
@setting("--size", key="extract.size", type=int, help="Side of the stored square frames (SPEC §1.2: 356).")
@setting("--keep-aspect", key="extract.keep_aspect", is_flag=True,
         help="Keep the aspect ratio: the shorter side becomes --size.")
@setting("--frame-codec", key="extract.frames.codec", type=click.Choice(["jpeg", "lossless"]),
         help="Frames stored as one JPEG per frame (lossy, 4:4:4) or uint8 + zstd.  [default: jpeg]")
@setting("--jpeg-quality", key="extract.frames.quality", type=click.IntRange(1, 100),
         help="JPEG quality of the stored frames.  [default: 95]")
@setting("--flow", key="extract.flow.method", type=click.Choice(["dis", "none"]), help="Optical flow method.  [default: dis]")
@setting("--flow-scale", key="extract.flow.scale", type=float,
         help="Flow grid size as a fraction of the frame size.  [default: 0.5]")
@setting("--flow-preset", key="extract.flow.preset", type=click.Choice(["ultrafast", "fast", "medium"]),
         help="[default: ultrafast]")
@setting("--audio-window", key="extract.audio.seconds", type=float,
         help="Audio window per frame, seconds (SPEC §1.3: 0.5).")
@setting("--segment-frames", key="extract.segment_frames", type=int,
         help="Frames per task (long videos are split).  [default: 512]")
@_decoding
def extract(videos: Path, workspace: Path, preset: str | None, workers: int | None, quiet: bool, as_json: bool,
            **_: Any) -> None:  # fmt: skip
    """Decode VIDEOS (a <class>/<video> folder or a path,label CSV) into WS/features.zarr:
    frames, optical flow and per-frame audio spectrogram windows.

    Example: avfix extract AVE/ --workspace ws --fps 10 -j 2
    """
    _run_stage(click.get_current_context(), "extract", workspace, quiet, as_json, preset=preset, videos=videos,
               workers=workers)  # fmt: skip


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
    from pipeline.synth.generate import SynthConfig, generate

    try:
        config = SynthConfig(
            classes=classes, videos_per_class=videos_per_class, seconds=seconds, fps=fps, width=width,
            height=height, distractors=distractors, silent_fraction=silent_fraction, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        raise _usage_line(str(exc)) from exc
    summary = generate(out, config, Progress(enabled=not quiet), overwrite=overwrite)
    _emit_summary(summary.to_dict(), as_json, summary.line())
    if summary.interrupted:
        sys.exit(130)


# --- pseudolabel -------------------------------------------------------------------------------


@main.command()
@_common
@_preset_option("SPEC sizes on the packaged EfficientNet-Lite0")
@setting("--backbone", key="pseudolabel.backbone",
         help="efficientnet_lite0, resnet18, resnet50, resnext101_32x8d, tiny.")
@setting("--weights", key="pseudolabel.weights", type=click.Path(path_type=Path), also={"pseudolabel.random_init": False},
         help="Local backbone weights file.")
@setting("--random-init", key="pseudolabel.random_init", is_flag=True, help="Train the backbone from scratch.")
@setting("--backbone-mode", key="pseudolabel.backbone_mode", type=click.Choice(["finetune", "frozen"]),
         help="finetune: train the backbone with each classifier (the paper's); frozen: run the pretrained "
              "backbone once per frame, cache its maps and train the heads alone.")
@setting("--device", key="pseudolabel.device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@setting("--threads", key="pseudolabel.threads", type=int, help="Torch CPU threads (0: torch's choice).  [default: 1; the fast preset: 0]")
@setting("--segment-frames", key="pseudolabel.segment_frames", type=int,
         help="A longer video's passes go to the dask workers or torchrun processes in segments of about "
              "this many frames.  [default: 256]")
@setting("--epochs", key="pseudolabel.train.epochs", type=int, help="Epochs per classifier (early stop on validation).")
@setting("--steps", key="pseudolabel.train.max_steps", type=int, help="Cap on training steps per classifier.")
@setting("--batch-size", key="pseudolabel.train.batch_size", type=int,
         help="Samples per step, shared by a torchrun job's processes.  [default: 16]")
@setting("--freeze-batchnorm", key="pseudolabel.train.freeze_batchnorm", is_flag=True,
         help="Keep BatchNorm's starting statistics (a torchrun job on CPUs then trains what one process does).")
@setting("--lr", key="pseudolabel.train.lr", type=float)
@setting("--optimizer", key="pseudolabel.train.optimizer", type=click.Choice(["sgd", "adam"]))
@setting("--coarse-size", key="pseudolabel.coarse_size", type=int, help="Coarse classifier input (SPEC: 256).")
@setting("--fine-size", key="pseudolabel.fine_size", type=int, help="Fine classifier input (SPEC: 356).")
@setting("--map-size", key="pseudolabel.map_size", type=int, help="Size of the stored maps (SPEC: 356).")
@setting("--smoothing", key="pseudolabel.smoothing", type=click.Choice(["flow", "plain", "none"]),
         help="flow: warp neighbours along the optical flow (default); plain: the paper's average.")
@setting("--no-fine", key="pseudolabel.fine_stage", is_flag=True, convert=lambda flag: not flag,
         help="Pseudo-GT from the coarse CAMs alone.")
@setting("--event-threshold", key="pseudolabel.event_threshold", type=float,
         help="P(event audio) that makes a frame event-related.")
@setting("--vggsound", key="pseudolabel.vggsound", type=click.Path(path_type=Path), help="VGGSound checkpoint (SPEC §1.4).")
@setting("--vggsound-classes", key="pseudolabel.vggsound_classes", type=click.Path(path_type=Path),
         help="Its class names (stat.csv).")
@_passes
def pseudolabel(workspace: Path, preset: str | None, workers: int | None, quiet: bool, as_json: bool,
                **_: Any) -> None:
    """Learn S/ST/SA classifiers from the tags in WS/features.zarr and write pseudo fixation maps
    (SPEC §1.4-3) to WS/pseudo.zarr. Trained classifiers and finished videos are reused on a rerun.

    Example: avfix pseudolabel --workspace ws --preset cpu
    """
    _run_stage(click.get_current_context(), "pseudolabel", workspace, quiet, as_json, preset=preset,
               workers=workers)  # fmt: skip


# --- train -------------------------------------------------------------------------------------

_BATCHNORM = {"auto": None, "frozen": True, "train": False}


@main.command()
@_common
@_preset_option("SPEC §4 on the packaged EfficientNet-Lite0")
@setting("--backbone", key="train.backbone", help="efficientnet_lite0, resnet18, resnet50, resnext101_32x8d, tiny.")
@setting("--weights", key="train.weights", type=click.Path(path_type=Path), also={"train.random_init": False},
         help="Local backbone weights file.")
@setting("--random-init", key="train.random_init", is_flag=True, help="Train the backbone from scratch.")
@setting("--frozen-backbone/--finetune-backbone", key="train.frozen_backbone", default=None,
         help="Keep the pretrained backbone fixed (its levels computed once per frame and cached) or train it.")
@setting("--audio-weights", key="train.audio_weights", type=click.Path(path_type=Path), help="VGGSound checkpoint.")
@setting("--input-size", key="train.input_size", type=int, help="Network input side (SPEC: 356).")
@setting("--epochs", key="train.epochs", type=int, help="Epochs (rerun with more to extend a finished run).")
@setting("--max-steps", key="train.max_steps", type=int, help="Stop after this many steps in all.")
@setting("--batch-size", key="train.batch_size", type=int, help="Samples per step and process.")
@setting("--lr", key="train.lr", type=float)
@setting("--optimizer", key="train.optimizer", type=click.Choice(["sgd", "adam", "adamw"]))
@setting("--schedule", key="train.schedule", type=click.Choice(["constant", "cosine"]))
@setting("--kl-weight", key="train.loss.kl", type=float, help="Weight of the KL term (SPEC §9); 0 = BCE only.")
@setting("--use-flow", key="train.model.use_flow", is_flag=True, help="Feed the stored optical flow of frame t too.")
@setting("--batchnorm", key="train.freeze_batchnorm", type=click.Choice(list(_BATCHNORM)), convert=_BATCHNORM.get,
         help="BatchNorm statistics: auto freezes those of pretrained parts.  [default: auto]")
@setting("--device", key="train.device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@setting("-j", "--workers", "num_workers", key="train.num_workers", type=int,
         help="Reader threads (0: read between steps).  [default: 2; cpu preset: 0]")
@setting("--worker-processes", key="train.worker_processes", is_flag=True,
         help="Read with DataLoader worker processes instead.")
@setting("--seed", key="train.seed", type=int)
@click.option("--restart", is_flag=True, help="Discard existing checkpoints and train anew.")
def train(workspace: Path, preset: str | None, restart: bool, quiet: bool, as_json: bool, **_: Any) -> None:
    """Train the STA saliency network on WS/features.zarr + WS/pseudo.zarr into WS/checkpoints/sta/
    (last.pt, best.pt, metrics.jsonl). A rerun resumes exactly where it stopped.
    Several GPUs: torchrun --nproc-per-node G -m cli train --workspace WS ...

    Example: avfix train --workspace ws --preset cpu --epochs 5
    """
    _run_stage(click.get_current_context(), "train", workspace, quiet, as_json, forced=restart, preset=preset)


# --- predict -----------------------------------------------------------------------------------


@main.command()
@click.argument("videos", type=click.Path(path_type=Path))
@_common
@setting("--checkpoint", key="predict.checkpoint", type=click.Path(path_type=Path),
         help="STA checkpoint.  [default: WS/checkpoints/sta/best.pt, else last.pt]")
@setting("--overlay", key="predict.overlay", is_flag=True,
         help="Also write WS/overlays/<video>.mp4: heat map over video, with audio.")
@setting("--alpha", key="predict.overlay_alpha", type=float, help="Overlay opacity at the most salient pixels.  [default: 0.5]")
@setting("--colormap", key="predict.colormap", help="Overlay colour map (any matplotlib name).  [default: jet]")
@setting("--batch-size", key="predict.batch_size", type=int, help="Frames per network batch.  [default: 16]")
@setting("--segment-frames", key="predict.segment_frames", type=int,
         help="Frames per piece of work of a dask worker or torchrun process.  [default: 256]")
@setting("--device", key="predict.device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@_decoding
def predict(videos: Path, workspace: Path, workers: int | None, quiet: bool, as_json: bool, **_: Any) -> None:
    """Saliency maps for VIDEOS (a video file, a folder, <class>/<video> folders or a CSV manifest;
    no tags needed) into WS/predictions.zarr, at each video's own size.

    Example: avfix predict clips/ --workspace ws --overlay
    """
    _run_stage(click.get_current_context(), "predict", workspace, quiet, as_json, predict_videos=videos,
               workers=workers)  # fmt: skip


# --- evaluate ----------------------------------------------------------------------------------


def _frame_size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W)."""
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
@setting("--maps", "maps", key="evaluate.maps", multiple=True, type=click.Path(path_type=Path),
         help="A predictions.zarr or a folder of map images; repeat for more rows.  "
              "[default: WS/predictions.zarr when it exists (video layouts)]")
@click.option("--layout", type=click.Choice(["auto", "stavis", "csv", "images"]), default=None,
              help="Fixation layout: STAViS release folder, video,frame,x,y CSV, or images + image,observer,x,y CSV.  "
                   "[default: [run] fixations_layout, auto]")
@setting("--baseline", "baselines", key="evaluate.baselines", multiple=True,
         type=click.Choice(["center", "cam", "center-cam", "none"]), convert=lambda chosen: tuple(b for b in chosen if b != "none"),
         help="Reference rows; repeat for more (cam, center-cam: images layout).  [default: center]")
@setting("--dataset", "datasets", key="evaluate.datasets", multiple=True, help="STAViS: evaluate only this data set (repeatable).")
@setting("--images", "images_dir", key="evaluate.images_dir", type=click.Path(path_type=Path),
         help="Images folder of the images layout.  [default: stimuli/ beside the CSV]")
@setting("--shuffle", key="evaluate.shuffle", type=click.Choice(["auto", "same-video", "other-images", "random-10"]),
         help="Shuffled-AUC negatives; auto: same-video for videos (STAViS), random-10 for images (MIT).")
@setting("--sigma", key="evaluate.density.sigma", type=float, help="σ of the fixation density (CSV and images layouts).  [default: 0.03]")
@setting("--sigma-unit", key="evaluate.density.unit", type=click.Choice(["frac", "px", "deg"]),
         help="frac: of the frame's longer side; deg needs --ppd.  [default: frac]")
@setting("--ppd", key="evaluate.density.pixels_per_degree", type=float, help="Display pixels per degree (for --sigma-unit deg).")
@setting("--frame-size", key="evaluate.frame_size", convert=_frame_size, help="WxH of CSV videos that no map gives a size for.")
@setting("--origin", key="evaluate.origin", type=click.Choice(["auto", "corner", "center"]),
         help="(0, 0) of CSV coordinates: the top-left pixel's corner or centre; auto: center for the csv "
              "layout (avfix synth), corner for images.")
@setting("--post-sigma", key="evaluate.post_sigma", type=float, help="σ of STAViS's postprocessMap blur (0: none).  [default: 2]")
@setting("--shuffle-splits", key="evaluate.shuffle_splits", type=int, help="Random splits of the shuffled AUC.  [default: 100]")
@setting("--center-sigma", key="evaluate.baseline.center_sigma", type=float,
         help="Centre-bias σ as a fraction of width and height.  [default: 0.25]")
@setting("--cam-input", key="evaluate.baseline.cam_input", type=int, help="CAM baseline: classifier input side.  [default: 224]")
@setting("--cam-top-k", key="evaluate.baseline.cam_top_k", type=int,
         help="CAM baseline: probability-weighted top-k classes (1: top-1).  [default: 5]")
@setting("--examples", key="evaluate.examples", type=int, help="Example items drawn per data set.  [default: 4]")
@setting("--batch-pixels", key="evaluate.batch_pixels", type=int, help="Ground-truth pixels scored per batch (memory).")
@setting("--seed", key="evaluate.seed", type=int, help="Seed of the AUC-Judd jitter and the shuffled-AUC draws.  [default: 0]")
@setting("--device", key="evaluate.device", help="auto, cpu, cuda or cuda:N.  [default: auto]")
@setting("--threads", key="evaluate.threads", type=int, help="Torch CPU threads (0: torch's choice; see README).  [default: 1]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def evaluate(fixations: Path, workspace: Path, layout: str | None, quiet: bool, as_json: bool, **_: Any) -> None:
    """Score saliency maps against human FIXATIONS with CC, NSS, AUC-Judd, shuffled AUC, SIM and KLD
    (SPEC §5); write WS/report.md, WS/report.json and WS/plots/.

    Example: avfix evaluate /data/scene-fixations --workspace ws --baseline center --baseline cam --baseline center-cam
    """
    _run_stage(click.get_current_context(), "evaluate", workspace, quiet, as_json, fixations=fixations,
               fixations_layout=layout)  # fmt: skip


# --- run ---------------------------------------------------------------------------------------


def _workspace_config_options(function: Callable) -> Callable:
    """--preset, --device, -j and --set: how `run` and `status` override WS/avfix.toml."""
    options = (
        click.option("--preset", type=_Registered(_preset_names), default=None,
                     help="Reset the extract, pseudolabel and train settings to this preset's.  "
                          "[default: the workspace's; a new workspace: paper with a CUDA GPU, else fast]"),
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
@click.option("--until", type=_Registered(_stage_names), default=None, help="Stop after this stage.")
@click.option("--force", multiple=True, type=_Registered(_stage_names),
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
    from pipeline.workspace.config import Overrides
    from pipeline.workspace.dag import RunRequest, run_dag

    overrides = Overrides(videos=videos, predict_videos=predict_videos, fixations=fixations,
                          fixations_layout=fixations_layout, preset=preset, device=device, workers=workers,
                          settings=settings)  # fmt: skip
    summary = run_dag(workspace, overrides, RunRequest(until, force, progress=not quiet),
                      echo=lambda text: click.echo(text, err=as_json))  # fmt: skip
    _emit_summary(summary.to_dict(), as_json, summary.line())
    _exit_code(summary)


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
    from pipeline.workspace.config import Overrides
    from pipeline.workspace.status import read_status, status_table

    found = read_status(workspace, Overrides(preset=preset, device=device, workers=workers, settings=settings))
    _emit_summary(found.to_dict(), as_json, status_table(found, per_video=not brief))


# --- verify ------------------------------------------------------------------------------------


@main.command()
@click.option("--workspace", "-w", required=True, type=click.Path(path_type=Path), help="Workspace folder.")
@click.option("--no-mark", is_flag=True, help="Only report: leave damaged videos marked complete.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def verify(workspace: Path, no_mark: bool, as_json: bool) -> None:
    """Re-read every chunk of every complete video of WS's stores against its checksum. Each damaged or
    missing chunk is named (store, video, array, chunk) and its video marked not complete, so the next
    run makes it again. Exit code 1 when anything is damaged.

    Example: avfix verify --workspace ws
    """
    from pipeline.workspace.verify import run_verify

    summary = run_verify(workspace, mark=not no_mark)
    _emit_summary(summary.to_dict(), as_json, "\n".join(summary.lines()))
    _exit_code(summary)


# --- demo --------------------------------------------------------------------------------------


@main.command()
@click.option("--workspace", "-w", default=Path("demo-workspace"), type=click.Path(path_type=Path),
              help="Workspace folder (the generated videos go to WS/videos/).")
@click.option("--videos", "videos_per_class", type=int, default=None,
              help="Training videos per class.  [default: 6]")
@click.option("--preset", type=_Registered(_preset_names), default=None,
              help="Reset the demo workspace's settings to this preset (a new one starts from `fast`, the "
                   "pretrained backbone frozen; `cpu`: the tiny networks, a quicker smoke test).")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one setting of the demo's WS/avfix.toml (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(workspace: Path, videos_per_class: int | None, preset: str | None, settings: tuple[str, ...], quiet: bool,
         as_json: bool) -> None:
    """Generate a small tagged audio-visual data set with known object positions, run the whole DAG on
    the CPU, and report where the minutes went and the pseudo-label and prediction scores (NSS, CC,
    AUC-Judd) next to the centre-bias baseline; overlay videos go to WS/overlays/.

    Example: avfix demo --workspace demo-workspace --videos 8   (avfix demo --preset cpu: a quicker smoke test)
    """
    from pipeline.workspace.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(settings=settings, preset=preset,
                            **({} if videos_per_class is None else {"videos_per_class": videos_per_class}))
    except ValueError as exc:
        raise _usage_line(str(exc)) from exc
    summary = run_demo(workspace, config, progress=not quiet, echo=lambda text: click.echo(text, err=as_json))
    _emit_summary(summary.to_dict(), as_json, summary.line())
    _exit_code(summary)


if __name__ == "__main__":
    main()
