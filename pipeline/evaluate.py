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

Map folder naming (`--maps DIR`): video maps in `DIR/<video>/` (or `DIR/<data set>/<video>/` for the
STAViS layout), one image per frame: `<anything>_<n>.<ext>` is STAViS's 1-based numbering (`img_00001.jpg`
is frame 0), an all-digit stem is AVE's 0-based numbering (`0000.png` is frame 0); image maps are
`DIR/<image stem>.<ext>`. Any format OpenCV reads; colour maps use their red channel (MATLAB's
`(:,:,1)`); integer images are scaled by their type's maximum (`im2double`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import torch
from torch import Tensor

from models import metrics
from models.device import resolve_device
from pipeline import baselines as base
from pipeline import fixations as fx
from pipeline import report as rep
from pipeline.progress import Progress
from stores import predictions as pstore

SHUFFLE_VARIANTS: dict[str, str] = {
    "same-video": "fixations of every frame of the same video, minus the current frame's fixated pixels (STAViS)",
    "other-images": "fixations of every other image of the set, rescaled to this image's size",
    "random-10": "fixations of 10 randomly chosen other images of the set (seeded), rescaled (MIT benchmark)",
}
_SHUFFLE_FOR_LAYOUT = {"stavis": ("same-video",), "csv": ("same-video",), "images": ("other-images", "random-10")}
SIGMA_UNITS: tuple[str, ...] = ("frac", "px", "deg")
CACHE_NAME = "evaluate_cache.jsonl"


class EvaluateError(ValueError):
    """Settings or inputs that make the whole evaluation impossible."""


@dataclass(frozen=True)
class DensityConfig:
    """σ of the Gaussian that turns fixation points into a density (CSV and images layouts)."""

    sigma: float = 0.03
    unit: Literal["frac", "px", "deg"] = "frac"  # frac: of the frame's longer side
    pixels_per_degree: float | None = None

    def __post_init__(self) -> None:
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.unit not in SIGMA_UNITS:
            raise ValueError(f"sigma unit must be one of {', '.join(SIGMA_UNITS)}, got {self.unit!r}")
        if self.unit == "deg" and not self.pixels_per_degree:
            raise ValueError("sigma in degrees needs the pixels per degree of the display (--ppd)")

    def pixels(self, size: tuple[int, int]) -> float:
        if self.unit == "px":
            return self.sigma
        if self.unit == "deg":
            return self.sigma * float(self.pixels_per_degree)
        return self.sigma * max(size)

    def describe(self) -> str:
        if self.unit == "px":
            return f"σ = {self.sigma:g} px"
        if self.unit == "deg":
            return f"σ = {self.sigma:g}° at {self.pixels_per_degree:g} px/°"
        return f"σ = {self.sigma:g} x the longer side"


@dataclass(frozen=True)
class EvaluateConfig:
    layout: str = "auto"
    maps: tuple[Path, ...] = ()
    baselines: tuple[str, ...] = (base.CENTER,)
    datasets: tuple[str, ...] = ()  # STAViS: evaluate only these data sets
    images_dir: Path | None = None
    shuffle: str = "auto"
    density: DensityConfig = field(default_factory=DensityConfig)
    frame_size: tuple[int, int] | None = None  # (H, W) for CSV videos no map gives a size for
    origin: str = "auto"  # pixel origin of CSV coordinates: corner, center, auto (fixations.DEFAULT_ORIGIN)
    post_sigma: float = 2.0
    shuffle_splits: int = metrics.SHUFFLED_AUC_SPLITS
    seed: int = 0
    baseline: base.BaselineConfig = field(default_factory=base.BaselineConfig)
    device: str = "auto"
    batch_pixels: int = 1 << 21
    examples: int = 4
    # Torch CPU threads of the stage (0: torch's own choice). The metrics run on cache-sized slices
    # where intra-op threads mostly synchronise: on the shared 2-core test machine the scene-fixations
    # run took 23 s with 1 thread and 77 s with 2 (spin-waiting threads). Scale out with more processes.
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [name for name in self.baselines if name not in base.BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(base.BASELINES)}")
        if self.shuffle != "auto" and self.shuffle not in SHUFFLE_VARIANTS:
            raise ValueError(f"unknown shuffle variant {self.shuffle!r}; use auto, {', '.join(SHUFFLE_VARIANTS)}")
        if self.post_sigma < 0:
            raise ValueError(f"post-processing sigma must be >= 0, got {self.post_sigma}")
        if self.shuffle_splits < 1:
            raise ValueError(f"shuffled AUC needs at least one split, got {self.shuffle_splits}")
        if self.origin != "auto" and self.origin not in fx.ORIGINS:
            raise ValueError(f"unknown pixel origin {self.origin!r}; use auto, {', '.join(fx.ORIGINS)}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.batch_pixels < 1:
            raise ValueError(f"batch pixels must be positive, got {self.batch_pixels}")

    def scoring_settings(self) -> dict[str, Any]:
        """Everything that changes a score (enters the resume key)."""
        return {
            "density": asdict(self.density),
            "post_sigma": self.post_sigma,
            "shuffle_splits": self.shuffle_splits,
            "seed": self.seed,
            "baseline": asdict(self.baseline),
            "batch_pixels": self.batch_pixels,  # batches decide the random streams
            "frame_size": self.frame_size,
            "origin": self.origin,
            "metrics_version": 1,
        }


@dataclass
class EvaluateSummary:
    workspace: str
    report_md: str | None = None
    report_json: str | None = None
    plots: list[str] = field(default_factory=list)
    datasets: int = 0
    items: int = 0
    rows: list[str] = field(default_factory=list)
    units_done: int = 0
    units_cached: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted

    def line(self) -> str:
        if self.interrupted:
            return (f"evaluate: interrupted after {self.units_done} units ({self.seconds:.1f} s); "
                    f"rerun to resume from {Path(self.workspace) / CACHE_NAME}")
        text = (f"evaluate: {self.datasets} data set(s), {self.items} items, {len(self.rows)} rows "
                f"({', '.join(self.rows)}); {self.units_done} units scored, {self.units_cached} from cache, "
                f"{len(self.failures)} problems, {self.seconds:.1f} s -> {self.report_md}")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# --- map sources ---------------------------------------------------------------------------------------


class ModelMaps(Protocol):
    """A source of saliency maps to score (one row of the report)."""

    name: str
    description: str

    def video_size(self, dataset: str, video: str) -> tuple[int, int] | None: ...
    def stamp(self, dataset: str, unit: str) -> str: ...
    def frames(self, dataset: str, video: str, frames: list[int]) -> list[np.ndarray | None]: ...
    def images(self, names: list[str]) -> list[np.ndarray | None]: ...


def read_map_file(path: Path) -> np.ndarray:
    """A saliency map image as float64 in [0, 1]: `im2double(imread(path))(:,:,1)`."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"{path}: not a readable image")
    if image.ndim == 3:
        image = image[..., 2] if image.shape[2] >= 3 else image[..., 0]  # OpenCV is BGR(A): red is index 2
    return fx.to_unit_range(image)


class PredictionsStoreMaps:
    """`predictions.zarr` (stores/predictions.py): frame t of video v is `saliency[t]`; frames with
    `has_saliency == False`, beyond the store's length, or of incomplete videos are missing."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.root = pstore.open_for_reading(path)
        self.complete = set(pstore.complete_videos(self.root))
        self.description = f"avfix predictions store {path}"

    def video_size(self, dataset: str, video: str) -> tuple[int, int] | None:
        attrs = pstore.video_attrs(self.root, video) if video in self.complete else None
        return None if attrs is None else (int(attrs["height"]), int(attrs["width"]))

    def stamp(self, dataset: str, unit: str) -> str:
        attrs = pstore.video_attrs(self.root, unit) if unit in self.complete else None
        return "absent" if attrs is None else str(attrs.get("fingerprint"))

    def frames(self, dataset: str, video: str, frames: list[int]) -> list[np.ndarray | None]:
        if video not in self.complete or not frames:
            return [None] * len(frames)
        n_frames = int(pstore.video_attrs(self.root, video)["n_frames"])
        inside = [f for f in frames if f < n_frames]
        if not inside:
            return [None] * len(frames)
        start, stop = min(inside), max(inside) + 1
        saliency, has = pstore.read_saliency(self.root, video, start, stop)
        return [
            saliency[f - start].astype(np.float64) / 255.0 if f < n_frames and has[f - start] else None
            for f in frames
        ]

    def images(self, names: list[str]) -> list[np.ndarray | None]:
        raise EvaluateError(f"{self.path}: a predictions store holds videos, not image maps")


_ONE_BASED = re.compile(r"^.*_(\d+)$")
_ZERO_BASED = re.compile(r"^(\d+)$")


def frame_of_map_file(stem: str) -> int | None:
    """0-based frame of a map file: `img_00001` -> 0 (STAViS, 1-based), `0000` -> 0 (AVE, 0-based)."""
    if match := _ZERO_BASED.match(stem):
        return int(match[1])
    if match := _ONE_BASED.match(stem):
        return int(match[1]) - 1
    return None


class FolderMaps:
    """Map images in a folder (naming in the module docstring)."""

    def __init__(self, path: Path, name: str, problems: fx.Problems | None = None) -> None:
        self.path = path
        self.name = name
        self.problems = problems or fx.Problems()
        self.description = f"map folder {path}"
        self._video_index: dict[tuple[str, str], dict[int, Path]] = {}
        self._image_index: dict[str, Path] | None = None

    def _video_folder(self, dataset: str, video: str) -> Path:
        nested = self.path / dataset / video
        return nested if nested.is_dir() else self.path / video

    def _frames_of(self, dataset: str, video: str) -> dict[int, Path]:
        key = (dataset, video)
        if key not in self._video_index:
            folder = self._video_folder(dataset, video)
            index: dict[int, Path] = {}
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    if path.suffix.lower() in fx.IMAGE_SUFFIXES:
                        frame = frame_of_map_file(path.stem)
                        if frame is not None and frame >= 0:
                            index.setdefault(frame, path)
            self._video_index[key] = index
        return self._video_index[key]

    def video_size(self, dataset: str, video: str) -> tuple[int, int] | None:
        for path in list(self._frames_of(dataset, video).values())[:3]:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is not None:
                return int(image.shape[0]), int(image.shape[1])
        return None

    def stamp(self, dataset: str, unit: str) -> str:
        paths = list(self._frames_of(dataset, unit).values()) if unit != "#images" else list(self._images().values())
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
        return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]

    def frames(self, dataset: str, video: str, frames: list[int]) -> list[np.ndarray | None]:
        index = self._frames_of(dataset, video)
        return [self._read(index.get(frame)) for frame in frames]

    def _images(self) -> dict[str, Path]:
        if self._image_index is None:
            self._image_index = {}
            if self.path.is_dir():
                for path in sorted(self.path.iterdir()):
                    if path.suffix.lower() in fx.IMAGE_SUFFIXES:
                        self._image_index.setdefault(path.stem, path)
        return self._image_index

    def images(self, names: list[str]) -> list[np.ndarray | None]:
        index = self._images()
        return [self._read(index.get(Path(name).stem)) for name in names]

    def _read(self, path: Path | None) -> np.ndarray | None:
        if path is None:
            return None
        try:
            return read_map_file(path)
        except OSError as error:
            self.problems.fail(path, f"unreadable map, counted as missing ({error})")
            return None


def open_map_sources(paths: tuple[Path, ...], workspace: Path, layout: str, problems: fx.Problems) -> list[ModelMaps]:
    """One source per `--maps`; for video layouts without `--maps`, WS/predictions.zarr when it exists."""
    if not paths and layout != "images" and pstore.store_path(workspace).exists():
        paths = (pstore.store_path(workspace),)
    sources: list[ModelMaps] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise EvaluateError(f"{path}: no such maps store or folder")
        is_store = (path / "zarr.json").is_file()
        name = _unique_name("predictions" if is_store and path.name == pstore.STORE_NAME else path.stem or path.name,
                            [s.name for s in sources])
        if is_store and layout == "images":
            raise EvaluateError(f"{path}: a predictions store holds videos; image maps come from a folder")
        if is_store:
            try:
                sources.append(PredictionsStoreMaps(path, name))
            except (ValueError, FileNotFoundError) as error:
                raise EvaluateError(str(error)) from error
        elif path.is_dir():
            sources.append(FolderMaps(path, name, problems))
        else:
            raise EvaluateError(f"{path}: --maps takes a predictions store or a folder of map images")
    return sources


def _unique_name(name: str, taken: list[str]) -> str:
    candidate, k = name, 2
    while candidate in taken or candidate in base.BASELINES:
        candidate, k = f"{name}-{k}", k + 1
    return candidate


# --- ground truth batches ------------------------------------------------------------------------------


@dataclass
class TruthBatch:
    items: list[fx.Item]
    size: tuple[int, int]
    points: list[np.ndarray]  # per item, (K, 2) x, y inside the frame
    fixations: Tensor  # (B, H, W) bool
    density: Tensor  # (B, H, W) float64
    other: Tensor  # (B, H, W) bool: negatives of the shuffled AUC
    rgb: list[np.ndarray] | None = None  # images layout, when a CAM baseline needs them


def _pad_points(points: list[np.ndarray], device: torch.device) -> tuple[Tensor, Tensor]:
    longest = max([len(p) for p in points] + [1])
    packed = torch.zeros(len(points), longest, 2, dtype=torch.float64)
    valid = torch.zeros(len(points), longest, dtype=torch.bool)
    for row, xy in enumerate(points):
        if len(xy):
            packed[row, : len(xy)] = torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float64))
            valid[row, : len(xy)] = True
    return packed.to(device), valid.to(device)


def _fixation_tensors(points: list[np.ndarray], size: tuple[int, int], device: torch.device) -> Tensor:
    packed, valid = _pad_points(points, device)
    return metrics.fixation_map(packed, valid, size)


def _density_from_points(points: list[np.ndarray], size: tuple[int, int], sigma_px: float,
                         device: torch.device) -> Tensor:
    packed, valid = _pad_points(points, device)
    return metrics.fixation_density(packed, valid, size, sigma_px)


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass
class ProcessedMaps:
    maps: Tensor  # (B, H, W) float64 at the truth's size; rows of absent maps are NaN
    status: list[str]  # per item: "ok", "missing" or "empty-map"
    resized: int  # maps whose size differed from the ground truth's


def process_maps(raw: list[np.ndarray | None] | Tensor, size: tuple[int, int], post_sigma: float,
                 device: torch.device) -> ProcessedMaps:
    """postprocessMap at each map's own size, then resize to the truth's size (SPEC §5.2 steps 2-3)."""
    if isinstance(raw, Tensor):
        groups = {tuple(raw.shape[-2:]): (list(range(raw.shape[0])), raw.to(device))}
        batch = raw.shape[0]
    else:
        batch = len(raw)
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, array in enumerate(raw):
            if array is not None:
                by_shape[tuple(array.shape[:2])].append(index)
        groups = {shape: (rows, torch.from_numpy(np.stack([raw[r] for r in rows])).to(device))
                  for shape, rows in by_shape.items()}
    out: Tensor | None = None
    status = ["missing"] * batch
    resized = 0
    for shape, (rows, stack) in groups.items():
        empty = metrics.empty_maps(stack).tolist()
        processed = metrics.resize_maps(metrics.postprocess_map(stack, post_sigma), size)
        if len(rows) == batch:  # every map present and of one size: no scatter copy
            out = processed
        else:
            if out is None:
                out = torch.full((batch, *size), torch.nan, dtype=torch.float64, device=device)
            out[torch.tensor(rows, device=device)] = processed
        for row, is_empty in zip(rows, empty):
            status[row] = "empty-map" if is_empty else "ok"
        resized += len(rows) if tuple(shape) != tuple(size) else 0
    if out is None:
        out = torch.full((batch, *size), torch.nan, dtype=torch.float64, device=device)
    return ProcessedMaps(out, status, resized)


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Torch intra-op CPU threads set to `count` inside the block (0: leave as is)."""
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def score_maps(truth: TruthBatch, processed: ProcessedMaps, generator: torch.Generator, n_splits: int,
               no_fixation: np.ndarray, no_density: np.ndarray) -> list[dict[str, float | None]]:
    """Per item {metric: score or None}; None for absent maps, undefined scores (NaN), and metrics whose
    ground truth is empty (`no_fixation`: NSS, AUC-J, s-AUC; `no_density`: CC, SIM, KLD)."""
    batch = len(truth.items)
    present = [i for i, s in enumerate(processed.status) if s == "ok"]
    values = {name: np.full(batch, np.nan) for name in metrics.METRICS}
    if present:
        def pick(tensor: Tensor) -> Tensor:
            return tensor if len(present) == batch else tensor[torch.tensor(present, device=tensor.device)]

        # Cache-sized slices on the CPU; a GPU takes the whole batch in one go.
        chunk = metrics.CHUNK_PIXELS if processed.maps.device.type == "cpu" else processed.maps[0].numel() * batch
        scores = metrics.all_metrics(
            pick(processed.maps), pick(truth.density), pick(truth.fixations), pick(truth.other),
            generator=generator, n_splits=n_splits, chunk_pixels=chunk,
        )  # fmt: skip
        for name, tensor in scores.items():
            values[name][present] = tensor.cpu().numpy()
    for name in metrics.FIXATION_METRICS:
        values[name][no_fixation] = np.nan
    for name in metrics.DENSITY_METRICS:
        values[name][no_density] = np.nan
    return [{name: _finite_or_none(values[name][i]) for name in metrics.METRICS} for i in range(batch)]


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _generator(*parts: Any) -> torch.Generator:
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


# --- resume cache ----------------------------------------------------------------------------------------


class ScoreCache:
    """Finished units' results, one JSON line each; a torn last line (killed mid-write) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, entry: dict[str, Any]) -> None:
        self.entries[entry["key"]] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def keep_only(self, keys: set[str]) -> None:
        """Drop entries of other settings or inputs (atomic rewrite)."""
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            for key in keys:
                if key in self.entries:
                    handle.write(json.dumps(self.entries[key]) + "\n")
        os.replace(temporary, self.path)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


# --- the stage -------------------------------------------------------------------------------------------


@dataclass
class _Context:
    config: EvaluateConfig
    device: torch.device
    sources: list[ModelMaps]
    baselines: tuple[str, ...]
    cam: base.CamBaseline | None
    problems: fx.Problems
    cache: ScoreCache
    progress: Progress
    summary: EvaluateSummary
    settings_key: str
    used_keys: set[str] = field(default_factory=set)

    @property
    def rows(self) -> list[str]:
        return [s.name for s in self.sources] + list(self.baselines)


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
    shuffle = _resolve_shuffle(config.shuffle, source.layout)
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
    settings_key = _key(config.scoring_settings(), shuffle, sorted(baselines), source.layout)
    context = _Context(config, device, sources, baselines, cam, problems, ScoreCache(workspace / CACHE_NAME),
                       progress, summary, settings_key)
    summary.rows = context.rows
    results: list[dict[str, Any]] = []
    try:
        with cpu_threads(config.threads):
            _start_progress(progress, datasets, config)
            for dataset in datasets:
                if isinstance(dataset, fx.ImageDataset):
                    results.append(_evaluate_images(dataset, context, shuffle))
                else:
                    results.append(_evaluate_videos(dataset, context, shuffle))
            progress.close()
            context.cache.keep_only(context.used_keys)
            seconds = time.perf_counter() - began
            report = rep.build_report(results, _report_settings(config, shuffle, context, source), problems, seconds)
            # Written last, each file atomically: an interrupted run leaves the previous report or none.
            written = rep.write_report(report, workspace, examples=[r.get("example_data", []) for r in results])
            summary.report_md, summary.report_json, summary.plots = written.markdown, written.json, written.plots
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        progress.close()
    summary.failures = list(problems.failures)
    summary.datasets = len(results)
    summary.items = sum(r["n_items"] for r in results)
    summary.seconds = time.perf_counter() - began
    return summary


def _resolve_shuffle(requested: str, layout: str) -> str:
    allowed = _SHUFFLE_FOR_LAYOUT[layout]
    if requested == "auto":
        return allowed[0]
    if requested not in allowed:
        raise EvaluateError(f"shuffle variant {requested!r} is not available for the {layout} layout "
                            f"(use {' or '.join(allowed)})")
    return requested


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
        units = sum(len(_image_units(d, config.batch_pixels)) for d in datasets)
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


def _report_settings(config: EvaluateConfig, shuffle: str, context: _Context,
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


def _method_maps(context: _Context, truth: TruthBatch, load: Any) -> tuple[dict[str, ProcessedMaps], dict[str, list]]:
    """Processed maps of every row for one truth batch (`load(source)` gives a source's raw maps), and
    the CAM baseline's top-1 class and probability per item."""
    config = context.config
    batch, size = len(truth.items), truth.size
    raw: dict[str, Any] = {source.name: load(source) for source in context.sources}
    cam_top: dict[str, list] = {}
    if context.baselines:
        center = base.center_maps(batch, size, config.baseline, context.device)
        raw[base.CENTER] = center
        if context.cam is not None:
            assert truth.rgb is not None
            cams = context.cam.maps(truth.rgb, size)
            raw[base.CAM] = cams.maps
            raw[base.CENTER_CAM] = cams.maps * center
            cam_top = {item.item_id: [c, p] for item, c, p in zip(truth.items, cams.top_class, cams.top_probability)}
    out = {name: process_maps(raw[name], size, config.post_sigma, context.device) for name in context.rows}
    return out, cam_top


def _score_batch(context: _Context, truth: TruthBatch, load: Any, generator_parts: tuple,
                 unit: dict[str, Any]) -> None:
    """Score every row on one batch; append the per-item records and counts to `unit`."""
    processed, cam_top = _method_maps(context, truth, load)
    truth.rgb = None  # frees the decoded images before scoring
    unit.setdefault("cam_top", {}).update(cam_top)
    resized = unit["resized"]
    records = unit["records"]
    n_fixations = truth.fixations.flatten(1).sum(dim=1).tolist()
    empty_density = (~(truth.density > 0).flatten(1).any(dim=1)).cpu().numpy()
    no_fixation = np.asarray(n_fixations) == 0
    per_row = {}
    for name, maps in processed.items():
        per_row[name] = score_maps(truth, maps, _generator(*generator_parts, name),
                                   context.config.shuffle_splits, no_fixation, empty_density)
        resized[name] = resized.get(name, 0) + maps.resized
    for index, item in enumerate(truth.items):
        records.append({
            "id": item.item_id, "video": item.video, "frame": item.frame, "image": item.image,
            "n_fixations": int(n_fixations[index]), "empty_density": bool(empty_density[index]),
            "scores": {name: per_row[name][index] for name in processed},
            "status": {name: processed[name].status[index] for name in processed},
        })  # fmt: skip


# --- videos -----------------------------------------------------------------------------------------------


def _video_size(video: fx.VideoFixations, dataset: fx.VideoDataset, context: _Context) -> tuple[int, int] | None:
    if video.size is not None:
        return video.size
    for source in context.sources:
        size = source.video_size(dataset.name, video.video)
        if size is not None:
            return size
    return context.config.frame_size


def _evaluate_videos(dataset: fx.VideoDataset, context: _Context, shuffle: str) -> dict[str, Any]:
    config = context.config
    units: list[dict[str, Any]] = []
    for video in dataset.videos.values():
        stamps = [source.stamp(dataset.name, video.video) for source in context.sources]
        key = _key(context.settings_key, dataset.name, dataset.source, video.video, len(video.frames), stamps,
                   _truth_stamp(video))
        context.used_keys.add(key)
        cached = context.cache.get(key)
        if cached is not None:
            units.append(cached)
            context.summary.units_cached += 1
            context.progress.advance_video()
            continue
        unit = _score_video(dataset, video, context, shuffle, key)
        context.cache.put(unit)
        units.append(unit)
        context.summary.units_done += 1
        context.progress.advance_video()
    result = {"dataset": dataset, "kind": "videos", "units": units, "n_items": sum(len(u["records"]) for u in units)}
    result["example_data"] = _video_examples(dataset, context, units) if config.examples else []
    return result


def _points_digest(points: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(points, dtype=np.float64).tobytes()).hexdigest()[:16]


def _truth_stamp(video: fx.VideoFixations) -> str:
    """Changes whenever the video's ground truth does (a rerun then scores the video again)."""
    if video.points is not None:
        text = "".join(f"{frame}:{_points_digest(p)}" for frame, p in sorted(video.points.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    assert video.annotation_dir is not None
    files = [p for folder in (video.annotation_dir, video.annotation_dir / "maps") if folder.is_dir()
             for p in sorted(folder.iterdir()) if p.is_file()]
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def _video_truth_points(video: fx.VideoFixations, size: tuple[int, int],
                        problems: fx.Problems) -> tuple[dict[int, np.ndarray], int]:
    """Every frame's fixations inside the frame, and how many fell outside."""
    points = video.load_points(problems)
    kept: dict[int, np.ndarray] = {}
    dropped = 0
    for frame, xy in points.items():
        kept[frame], n = fx.keep_inside(xy, size)
        dropped += n
    return kept, dropped


def _score_video(dataset: fx.VideoDataset, video: fx.VideoFixations, context: _Context, shuffle: str,
                 key: str) -> dict[str, Any]:
    config = context.config
    unit: dict[str, Any] = {"key": key, "unit": video.video, "records": [], "resized": {}, "dropped_outside": 0,
                            "truth_missing": 0, "size": None}
    size = _video_size(video, dataset, context)
    if size is None:
        context.problems.fail(video.video, "no frame size: no map covers this video (pass --frame-size WxH)")
        unit["truth_missing"] = len(video.frames)
        return unit
    unit["size"] = list(size)
    points, unit["dropped_outside"] = _video_truth_points(video, size, context.problems)
    frames = [f for f in video.frames if f in points]
    unit["truth_missing"] = len(video.frames) - len(frames)
    context.progress.add_frames(len(frames))
    # STAViS's shuffle map: every fixated pixel of the video (createShuffmap1.m), the frame's own removed.
    all_points = [np.concatenate([points[f] for f in frames])] if frames else [np.zeros((0, 2))]
    union = _fixation_tensors(all_points, size, context.device)[0]
    per_batch = max(1, config.batch_pixels // (size[0] * size[1]))
    for start in range(0, len(frames), per_batch):
        chunk = frames[start : start + per_batch]
        truth, unreadable = _video_truth_batch(video, chunk, points, union, size, context, context.problems)
        unit["truth_missing"] += unreadable
        if truth is not None:
            frames_of = [item.frame for item in truth.items]
            _score_batch(context, truth, lambda s, f=frames_of: s.frames(dataset.name, video.video, f),
                         (config.seed, dataset.name, video.video, start), unit)
        context.progress.advance_frames(len(chunk))
    return unit


def _video_truth_batch(video: fx.VideoFixations, frames: list[int], points: dict[int, np.ndarray], union: Tensor,
                       size: tuple[int, int], context: _Context, problems: fx.Problems) -> tuple[TruthBatch | None, int]:
    """Ground truth of some frames of a video, and how many of them had an unreadable density map."""
    items, densities, kept_points = [], [], []
    for frame in frames:
        if video.annotation_dir is not None:
            try:
                density = video.load_density(frame)
            except OSError as error:
                problems.fail(video.annotation_dir, str(error))
                continue
            if density is not None and density.shape != size:
                problems.fail(video.annotation_dir / "maps", f"eyeMap of frame {frame + 1} is "
                                      f"{density.shape[1]}x{density.shape[0]}, expected {size[1]}x{size[0]}")
                continue
            densities.append(density)
        items.append(fx.frame_item(video.video, frame))
        kept_points.append(points[frame])
    unreadable = len(frames) - len(items)
    if not items:
        return None, unreadable
    device = context.device
    fixations = _fixation_tensors(kept_points, size, device)
    if densities:
        density = torch.from_numpy(np.stack(densities)).to(device)
    else:
        density = _density_from_points(kept_points, size, context.config.density.pixels(size), device)
    return TruthBatch(items, size, kept_points, fixations, density, union.unsqueeze(0) & ~fixations), unreadable


def _video_examples(dataset: fx.VideoDataset, context: _Context, units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records = [r for u in units for r in u["records"]]
    chosen = _pick_examples(records, context.rows, context.config.examples)
    examples = []
    for record in chosen:
        video = dataset.videos[record["video"]]
        size = _video_size(video, dataset, context)
        if size is None:
            continue
        scratch = fx.Problems()  # problems of these inputs were reported when they were scored
        points, _ = _video_truth_points(video, size, scratch)
        frame = record["frame"]
        if frame not in points:
            continue
        union = _fixation_tensors([np.concatenate(list(points.values()))], size, context.device)[0]
        truth, _ = _video_truth_batch(video, [frame], points, union, size, context, scratch)
        if truth is None:
            continue
        processed, _ = _method_maps(context, truth, lambda s: s.frames(dataset.name, video.video, [frame]))
        examples.append(_example(record, truth, processed, video.frame_image(frame)))
    return examples


# --- images -----------------------------------------------------------------------------------------------


def _image_units(dataset: fx.ImageDataset, batch_pixels: int) -> list[list[fx.ImageFixations]]:
    """Same-size images together, in batches of at most `batch_pixels` pixels (at least one image)."""
    by_size: dict[tuple[int, int], list[fx.ImageFixations]] = defaultdict(list)
    for image in dataset.images:
        by_size[image.size].append(image)
    units = []
    for size, images in sorted(by_size.items()):
        per_batch = max(1, batch_pixels // (size[0] * size[1]))
        units.extend(images[i : i + per_batch] for i in range(0, len(images), per_batch))
    return units


def _evaluate_images(dataset: fx.ImageDataset, context: _Context, shuffle: str) -> dict[str, Any]:
    config = context.config
    all_points = {image.image: (image.points, image.size) for image in dataset.images}
    names = sorted(all_points)
    units: list[dict[str, Any]] = []
    for group in _image_units(dataset, config.batch_pixels):
        stamps = [source.stamp(dataset.name, "#images") for source in context.sources]
        files = [(i.image, i.path.stat().st_size, i.path.stat().st_mtime_ns, _points_digest(i.points)) for i in group]
        key = _key(context.settings_key, dataset.name, dataset.source, files, stamps, len(names))
        context.used_keys.add(key)
        cached = context.cache.get(key)
        if cached is not None:
            units.append(cached)
            context.summary.units_cached += 1
        else:
            unit = {"key": key, "unit": group[0].image, "records": [], "resized": {}, "cam_top": {}}
            truth = _image_truth_batch(group, all_points, names, shuffle, context, with_rgb=context.cam is not None)
            if truth is not None:
                _score_batch(context, truth, lambda s, t=truth: s.images([i.image for i in t.items]),
                             (config.seed, dataset.name, group[0].image), unit)
            context.cache.put(unit)
            units.append(unit)
            context.summary.units_done += 1
        context.progress.advance_frames(len(group))
        context.progress.advance_video()
    result = {"dataset": dataset, "kind": "images", "units": units, "n_items": sum(len(u["records"]) for u in units),
              "dropped_outside": context.problems.dropped_outside}
    if config.examples:
        result["example_data"] = _image_examples(dataset, context, units, all_points, names, shuffle)
    return result


def _other_points(image: fx.ImageFixations, all_points: dict[str, tuple[np.ndarray, tuple[int, int]]],
                  names: list[str], shuffle: str, seed: int) -> np.ndarray:
    """Fixations of the other images that serve as s-AUC negatives, rescaled to this image's size."""
    others = [name for name in names if name != image.image]
    if shuffle == "random-10":
        digest = hashlib.sha256(f"{seed}/{image.image}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        others = list(rng.choice(others, size=min(10, len(others)), replace=False)) if others else []
    height, width = image.size
    scaled = []
    for name in others:
        xy, (other_h, other_w) = all_points[name]
        scaled.append(xy * np.array([width / other_w, height / other_h]))
    if not scaled:
        return np.zeros((0, 2))
    points = np.concatenate(scaled)
    return fx.keep_inside(points, image.size)[0]


def _image_truth_batch(group: list[fx.ImageFixations], all_points: dict[str, tuple[np.ndarray, tuple[int, int]]],
                       names: list[str], shuffle: str, context: _Context, with_rgb: bool) -> TruthBatch | None:
    rgb: list[np.ndarray] | None = [] if with_rgb else None
    images = []
    for image in group:
        if rgb is not None:
            try:
                rgb.append(image.load_rgb())
            except OSError as error:
                context.problems.fail(image.path, str(error))
                continue
        images.append(image)
    if not images:
        return None
    size = images[0].size
    device = context.device
    points = [image.points for image in images]
    fixations = _fixation_tensors(points, size, device)
    density = _density_from_points(points, size, context.config.density.pixels(size), device)
    others = [_other_points(image, all_points, names, shuffle, context.config.seed) for image in images]
    other = _fixation_tensors(others, size, device)
    items = [fx.Item(item_id=image.image, image=image.image) for image in images]
    return TruthBatch(items, size, points, fixations, density, other, rgb)


def _image_examples(dataset: fx.ImageDataset, context: _Context, units: list[dict[str, Any]],
                    all_points: dict, names: list[str], shuffle: str) -> list[dict[str, Any]]:
    records = [r for u in units for r in u["records"]]
    chosen = _pick_examples(records, context.rows, context.config.examples)
    by_name = {image.image: image for image in dataset.images}
    examples = []
    for record in chosen:
        image = by_name[record["image"]]
        truth = _image_truth_batch([image], all_points, names, shuffle, context, with_rgb=True)
        if truth is None:
            continue
        background = truth.rgb[0] if truth.rgb else None
        if context.cam is None:
            truth.rgb = None
        processed, _ = _method_maps(context, truth, lambda s: s.images([image.image]))
        examples.append(_example(record, truth, processed, background))
    return examples


# --- examples ---------------------------------------------------------------------------------------------


def _pick_examples(records: list[dict[str, Any]], rows: list[str], count: int) -> list[dict[str, Any]]:
    """`count` items spread over the first row's NSS ranking (best ... worst), for the example pictures."""
    if not records or count <= 0:
        return []
    first = rows[0]
    scored = [r for r in records if r["scores"].get(first, {}).get("NSS") is not None]
    if not scored:
        return records[: count]
    scored.sort(key=lambda r: -r["scores"][first]["NSS"])
    picks = np.unique(np.linspace(0, len(scored) - 1, min(count, len(scored))).round().astype(int))
    return [scored[i] for i in picks]


_EXAMPLE_SIDE = 480  # longest side of the pictures' maps


def _example(record: dict[str, Any], truth: TruthBatch, processed: dict[str, ProcessedMaps],
             background: np.ndarray | None) -> dict[str, Any]:
    height, width = truth.size
    scale = min(1.0, _EXAMPLE_SIDE / max(height, width))
    out_size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def shrink(array: np.ndarray) -> np.ndarray:
        return cv2.resize(array, out_size, interpolation=cv2.INTER_AREA) if scale < 1 else array

    maps = {}
    for name, result in processed.items():
        array = result.maps[0].cpu().numpy()
        maps[name] = None if result.status[0] != "ok" else shrink(np.nan_to_num(array).astype(np.float32))
    return {
        "id": record["id"],
        "points": truth.points[0] * scale,
        "density": shrink(truth.density[0].cpu().numpy().astype(np.float32)),
        "background": None if background is None else shrink(background),
        "maps": maps,
        "scores": record["scores"],
    }

