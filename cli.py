"""avfix command line: parse options, call pipeline/, print results. No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

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
@click.option("-j", "--workers", type=int, default=1, help="Local dask workers (processes when > 1).")
@click.option("--threads", is_flag=True, help="Local workers are threads instead of processes.")
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
    from pipeline.audio_features import AudioWindowConfig
    from pipeline.extract import ExtractConfig, run_extract
    from pipeline.flow import FlowConfig
    from pipeline.inputs import InputError
    from pipeline.progress import Progress
    from pipeline.scheduling import SchedulerConfig

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
    _emit_summary(summary.to_dict(), as_json, summary.line())
    if summary.interrupted:
        sys.exit(130)
    if not summary.ok:
        sys.exit(1)

# --- synth -------------------------------------------------------------------------------------

# --- evaluate ----------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
