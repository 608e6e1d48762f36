"""Settings, errors and the run summary of the evaluate stage (`pipeline/evaluate.py`): the density σ of
fixation points, the shuffled-AUC variants each layout allows, and everything that enters a score."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from models.config import SHUFFLED_AUC_SPLITS
from pipeline.common.errors import BadInput
from pipeline.common.settings import device_setting, output_setting, output_settings, path_setting, run_setting
from pipeline.evaluate import baseline_config as base
from pipeline.evaluate import fixations as fx
from pipeline.evaluate.cache import CACHE_NAME

SHUFFLE_VARIANTS: dict[str, str] = {
    "same-video": "the fixated pixels of every frame of the same video, minus the current frame's, each pixel "
                  "once (STAViS `createShuffmap1.m`)",
    "random-10": "the fixated pixels of 10 other images of the set (chosen per image, seeded), rescaled to this "
                 "image's size, each pixel once (MIT benchmark: `otherMap` is the union of 10 fixation maps)",
    "other-images": "every fixation of every other image of the set, rescaled to this image's size, drawn per "
                    "fixation (a pixel fixated n times is n negatives)",
}
# The first variant of a layout is its default: what the STAViS code (videos) and the MIT benchmark
# (images) use. A pool of distinct pixels from a large union is less central than real fixations (the
# popular spots collapse), so for `other-images` each fixation is a negative of its own.
_SHUFFLE_FOR_LAYOUT = {"stavis": ("same-video",), "csv": ("same-video",), "images": ("random-10", "other-images")}
SIGMA_UNITS: tuple[str, ...] = ("frac", "px", "deg")


class EvaluateError(BadInput, ValueError):
    """Settings or inputs that make the whole evaluation impossible."""


@dataclass(frozen=True)
class DensityConfig:
    """σ of the Gaussian that turns fixation points into a density (CSV and images layouts)."""

    sigma: float = output_setting(0.03)
    unit: Literal["frac", "px", "deg"] = output_setting("frac")  # frac: of the frame's longer side
    pixels_per_degree: float | None = output_setting(None)

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


SCORES = "scores"  # the settings a score depends on (they enter every cached unit's key)


@dataclass(frozen=True)
class EvaluateConfig:
    # Bumped when a score changes for the same maps, fixations and settings (it enters the cache keys).
    # 2: draws per item shared by every row, other-images negatives with multiplicity, exact min-max.
    ALGORITHM_VERSION: ClassVar[int] = 2

    layout: str = output_setting("auto")
    maps: tuple[Path, ...] = path_setting(())
    baselines: tuple[str, ...] = output_setting((base.CENTER,))
    datasets: tuple[str, ...] = output_setting(())  # STAViS: evaluate only these data sets
    images_dir: Path | None = path_setting(None)
    shuffle: str = output_setting("auto")
    density: DensityConfig = output_setting(default_factory=DensityConfig, scope=(SCORES,))
    frame_size: tuple[int, int] | None = output_setting(None, scope=(SCORES,))  # (H, W) of CSV videos without a map
    # Pixel origin of CSV coordinates: corner, center, auto (fixations.DEFAULT_ORIGIN).
    origin: str = output_setting("auto", scope=(SCORES,))
    post_sigma: float = output_setting(2.0, scope=(SCORES,))
    shuffle_splits: int = output_setting(SHUFFLED_AUC_SPLITS, scope=(SCORES,))
    seed: int = output_setting(0, scope=(SCORES,))
    baseline: base.BaselineConfig = output_setting(default_factory=base.BaselineConfig, scope=(SCORES,))
    # Pixels scored per batch. Draws are made per item, so the batches change no score.
    batch_pixels: int = run_setting(1 << 21)
    examples: int = output_setting(4)
    device: str = device_setting("auto")
    # Torch CPU threads of the stage (0: torch's own choice). The metrics run on cache-sized slices
    # where intra-op threads mostly synchronise: on the shared 2-core test machine the scene-fixations
    # run took 23 s with 1 thread and 77 s with 2 (spin-waiting threads). Scale out with more processes.
    threads: int = run_setting(1)

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
        return {**output_settings(self, SCORES), "algorithm_version": self.ALGORITHM_VERSION}


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


def resolve_shuffle(requested: str, layout: str) -> str:
    allowed = _SHUFFLE_FOR_LAYOUT[layout]
    if requested == "auto":
        return allowed[0]
    if requested not in allowed:
        raise EvaluateError(f"shuffle variant {requested!r} is not available for the {layout} layout "
                            f"(use {' or '.join(allowed)})")
    return requested
