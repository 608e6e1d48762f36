"""The evaluate stage: saliency maps against real human fixations -> WS/report.md, WS/report.json, WS/plots/.

Inputs: fixations in one of three layouts (`pipeline/fixations.py`), the maps to score (an avfix
predictions store and/or folders of map images; each is one row of the report) and the reference
baselines (`pipeline/baselines.py`). Protocol (SPEC §5.2), for every item (a frame or an image) and map:
STAViS `postprocessMap` (σ = 2 blur at the map's own size), bicubic resize to the ground truth's size,
then CC, NSS, AUC-Judd, shuffled AUC, SIM and KLD (`models/metrics.py`). Frame scores are averaged per
video, videos over the data set's test splits (pooled, or DIEM's per-split means); image scores over
images. NaN scores are dropped from every mean and counted, never averaged in.

Work is grouped in units (a video, or a batch of same-size images). Each finished unit's per-item scores
are appended to `WS/evaluate_cache.jsonl` under a key built from the settings and the unit's inputs, so an
interrupted run resumes where it stopped and a rerun with nothing changed only rewrites the report.

Map sources and their folder naming: `pipeline/evaluate/maps.py`. Settings: `pipeline/evaluate/config.py`;
one batch's scores: `pipeline/evaluate/scoring.py`; videos and image batches: `pipeline/evaluate/units.py`;
the resume cache: `pipeline/evaluate/cache.py`; when the report is up to date: `pipeline/evaluate/stage.py`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from models.device import resolve_device
from pipeline.common.progress import Progress
from pipeline.common.settings import output_settings
from pipeline.evaluate import baselines as base
from pipeline.evaluate import fixations as fx
from pipeline.evaluate import report as rep
from pipeline.evaluate.cache import CACHE_NAME, ScoreCache, cache_key
from pipeline.evaluate.config import SHUFFLE_VARIANTS, EvaluateConfig, EvaluateError, EvaluateSummary, resolve_shuffle
from pipeline.evaluate.maps import open_map_sources
from pipeline.evaluate.scoring import EvaluateContext, cpu_threads
from pipeline.evaluate.stage import inputs_stamp
from pipeline.evaluate.units import evaluate_images, evaluate_videos, image_units
from stores.chunks import ChunkError
from stores.integrity import mark_damaged


def run_evaluate(fixations: Path, workspace: Path, config: EvaluateConfig,
                 progress: Progress | None = None) -> EvaluateSummary:
    """Score every map source and baseline against FIXATIONS; write the report into `workspace`.

    Raises `fx.FixationInputError` / `EvaluateError` when nothing can be evaluated at all.
    """
    began = time.perf_counter()
    progress = progress or Progress(enabled=False)
    workspace = Path(workspace)
    summary = EvaluateSummary(workspace=str(workspace))
    source = fx.locate(Path(fixations), config.layout, config.images_dir)
    shuffle = resolve_shuffle(config.shuffle, source.layout)
    baselines = tuple(dict.fromkeys(config.baselines))
    if source.layout != "images" and any(b in baselines for b in (base.CAM, base.CENTER_CAM)):
        raise EvaluateError("the cam and center-cam baselines need images: they run on the images layout only")
    problems = fx.Problems()
    sources = open_map_sources(config.maps, workspace, source.layout, problems)
    if not sources and not baselines:
        raise EvaluateError("nothing to evaluate: pass --maps and/or --baseline")
    datasets = _read_datasets(source, config, problems)
    device = resolve_device(config.device)
    cam = base.CamBaseline(config.baseline, device) if {base.CAM, base.CENTER_CAM} & set(baselines) else None
    workspace.mkdir(parents=True, exist_ok=True)
    stamp = inputs_stamp(Path(fixations), workspace, config)  # of the inputs as they are when scoring starts
    settings_key = cache_key(config.scoring_settings(), shuffle, sorted(baselines), source.layout)
    context = EvaluateContext(config, device, sources, baselines, cam, problems, ScoreCache(workspace / CACHE_NAME),
                              progress, summary, settings_key)
    summary.rows = context.rows
    results: list[dict[str, Any]] = []
    try:
        with cpu_threads(config.threads):
            _start_progress(progress, datasets, config)
            for dataset in datasets:
                if isinstance(dataset, fx.ImageDataset):
                    results.append(evaluate_images(dataset, context, shuffle))
                else:
                    results.append(evaluate_videos(dataset, context, shuffle))
            progress.close()
            context.cache.keep_only(context.used_keys)
            seconds = time.perf_counter() - began
            settings = {**_report_settings(config, shuffle, context, source), "inputs_stamp": stamp,
                        "output_settings": output_settings(config),
                        "algorithm_version": config.ALGORITHM_VERSION}  # what `avfix status` compares
            report = rep.build_report(results, settings, problems, seconds)
            # Written last, each file atomically: an interrupted run leaves the previous report or none.
            written = rep.write_report(report, workspace, examples=[r.get("example_data", []) for r in results])
            summary.report_md, summary.report_json, summary.plots = written.markdown, written.json, written.plots
    except KeyboardInterrupt:
        summary.interrupted = True
    except ChunkError as exc:  # a predicted map is damaged: predict makes it again on the next run
        raise EvaluateError(f"{exc}; {mark_damaged(exc)}") from exc
    finally:
        progress.close()
    summary.failures = list(problems.failures)
    summary.datasets = len(results)
    summary.items = sum(r["n_items"] for r in results)
    summary.seconds = time.perf_counter() - began
    return summary


def _origin(config: EvaluateConfig, layout: str) -> fx.Origin:
    return fx.DEFAULT_ORIGIN[layout] if config.origin == "auto" else config.origin  # type: ignore[return-value]


def _read_datasets(source: fx.FixationSource, config: EvaluateConfig, problems: fx.Problems) -> list[Any]:
    if source.layout == "stavis":
        return fx.read_stavis(source.path, list(config.datasets) or None, problems)
    if source.layout == "csv":
        return [fx.read_video_csv(source.path, problems, _origin(config, "csv"))]
    assert source.images_dir is not None
    return [fx.read_images(source.path, source.images_dir, problems, _origin(config, "images"))]


def _start_progress(progress: Progress, datasets: list[Any], config: EvaluateConfig) -> None:
    if all(isinstance(d, fx.ImageDataset) for d in datasets):
        units = sum(len(image_units(d, config.batch_pixels)) for d in datasets)
        progress.start(units)
        progress.add_frames(sum(len(d.images) for d in datasets))
        _rename_bars(progress, ("batches", "batch"), ("images", "image"))
    else:
        progress.start(sum(len(d.videos) for d in datasets))


def _rename_bars(progress: Progress, units: tuple[str, str], items: tuple[str, str]) -> None:
    """Progress's two bars say videos/frames; for images they count batches and images."""
    if progress.videos is not None and progress.frames is not None:
        progress.videos.set_description(units[0])
        progress.videos.unit = units[1]
        progress.frames.set_description(items[0])
        progress.frames.unit = items[1]


def _report_settings(config: EvaluateConfig, shuffle: str, context: EvaluateContext,
                     source: fx.FixationSource) -> dict[str, Any]:
    methods = {s.name: s.description for s in context.sources}
    methods.update({name: text for name, text in config.baseline.describe().items() if name in context.baselines})
    return {
        "fixations": str(source.path),
        "layout": source.layout,
        "shuffle": shuffle,
        "shuffle_description": SHUFFLE_VARIANTS[shuffle],
        "shuffle_splits": config.shuffle_splits,
        "density": config.density.describe() if source.layout != "stavis" else "the data set's eyeMap images",
        "pixel_origin": _origin(config, source.layout),
        "post_sigma": config.post_sigma,
        "resize": "bicubic with antialiasing to the ground truth's size",
        "seed": config.seed,
        "device": str(context.device),
        "rows": context.rows,
        "methods": methods,
    }
