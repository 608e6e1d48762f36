"""Pictures of generated videos: a drifting cluttered background and moving objects, rendered with numpy
over whole chunks of frames at once (arrays (t, y, x)), never pixel by pixel.

Coordinates: x is the column and y the row of a pixel centre, (0, 0) is the centre of the top-left pixel.
Objects are anti-aliased: a pixel's coverage is its signed distance to the shape's edge plus ½, clipped
to [0, 1], with the distance measured in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from pipeline.synth.classes import ClassSpec

PATTERN_DEPTH = 0.45  # how much darker a pattern's dark parts are than the object's colour
BACKGROUND_SATURATION = 0.3  # background colours are pulled this far from grey: never like an object's
BACKGROUND_RANGE = (60.0, 190.0)  # background brightness range, away from the objects' extremes

# A shape maps coordinates (u, v) in units of the object's radius, centred on the object, to the signed
# distance to its edge in the same units (positive inside). Every shape fits in the unit circle
# (the square's corners and the triangle's apex reach 1.02 and 1.1) and fills a good part of it.
ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_HEX_NORMALS = [(np.cos(a), np.sin(a)) for a in np.deg2rad([0.0, 60.0, 120.0])]
_TRIANGLE_NORMALS = [(0.0, 1.0), (np.sqrt(3) / 2, -0.5), (-np.sqrt(3) / 2, -0.5)]  # apex up (rows go down)


def _polygon(u: np.ndarray, v: np.ndarray, normals: list, inradius: float, symmetric: bool) -> np.ndarray:
    reach = [(u * nu + v * nv) for nu, nv in normals]
    if symmetric:
        reach = [np.abs(r) for r in reach]
    return inradius - np.maximum.reduce(reach)


SHAPES: dict[str, ShapeFn] = {
    "disc": lambda u, v: 1.0 - np.hypot(u, v),
    "square": lambda u, v: 0.72 - np.maximum(np.abs(u), np.abs(v)),
    "triangle": lambda u, v: _polygon(u, v, _TRIANGLE_NORMALS, 0.55, symmetric=False),
    "diamond": lambda u, v: (1.0 - np.abs(u) - np.abs(v)) / np.sqrt(2),
    "ring": lambda u, v: np.minimum(1.0 - np.hypot(u, v), np.hypot(u, v) - 0.55),
    "cross": lambda u, v: np.maximum(
        np.minimum(0.95 - np.abs(u), 0.33 - np.abs(v)), np.minimum(0.33 - np.abs(u), 0.95 - np.abs(v))
    ),
    "hexagon": lambda u, v: _polygon(u, v, _HEX_NORMALS, 0.88, symmetric=True),
    "bar": lambda u, v: np.minimum(1.0 - np.abs(u), 0.42 - np.abs(v)),
}


def _soft(x: np.ndarray) -> np.ndarray:
    return np.clip(0.5 + 1.5 * x, 0.0, 1.0)


def _nearest_grid_offset(x: np.ndarray, spacing: float) -> np.ndarray:
    return x - spacing * np.round(x / spacing)


# A pattern maps (u, v) to darkness in [0, 1]; all are point symmetric so the bright parts' centroid is
# the object's centre (and "rings", the triangle's, is rotation invariant, which its 3-fold shape needs).
PatternFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
PATTERNS: dict[str, PatternFn] = {
    "solid": lambda u, v: np.zeros_like(u),
    "stripes": lambda u, v: _soft(np.cos(2 * np.pi * 1.6 * v)),
    "checker": lambda u, v: _soft(np.sin(np.pi * 2.2 * u) * np.sin(np.pi * 2.2 * v)),
    "rings": lambda u, v: _soft(np.cos(2 * np.pi * 2.2 * np.hypot(u, v))),
    "dots": lambda u, v: np.clip(
        (0.2 - np.hypot(_nearest_grid_offset(u, 0.55), _nearest_grid_offset(v, 0.55))) * 12 + 0.5, 0.0, 1.0
    ),
    "grid": lambda u, v: np.clip(
        (0.08 - np.minimum(np.abs(_nearest_grid_offset(u, 0.6)), np.abs(_nearest_grid_offset(v, 0.6)))) * 12
        + 0.5,
        0.0,
        1.0,
    ),
}


@dataclass(frozen=True)
class Track:
    """Where one object is in every frame of a video."""

    spec: ClassSpec
    radius: float  # pixels
    x: np.ndarray  # (n_frames,) column of the centre
    y: np.ndarray  # (n_frames,) row of the centre


def bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold an unconstrained path into [low, high] as a ball bouncing off both walls (a triangle wave)."""
    span = high - low
    folded = np.mod(position - low, 2 * span)
    return low + np.where(folded <= span, folded, 2 * span - folded)


def smooth_path(
    rng: np.random.Generator, times: np.ndarray, width: int, height: int, radius: float, speed: float
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded smooth path at `speed` px/s whose heading turns at a constant rate, bouncing so the whole
    object stays inside the frame. Closed form in time, so it does not depend on the frame rate."""
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.8)  # rad/s
    heading0 = rng.uniform(0, 2 * np.pi)
    x0 = rng.uniform(radius, width - 1 - radius)
    y0 = rng.uniform(radius, height - 1 - radius)
    heading = heading0 + turn * times
    free_x = x0 + speed / turn * (np.sin(heading) - np.sin(heading0))
    free_y = y0 - speed / turn * (np.cos(heading) - np.cos(heading0))
    return bounce(free_x, radius, width - 1 - radius), bounce(free_y, radius, height - 1 - radius)


def object_coverage(shape: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape at normalised coordinates (u, v)."""
    return np.clip(SHAPES[shape](u, v) * radius + 0.5, 0.0, 1.0)


def draw_objects(frames: np.ndarray, tracks: list[Track], first_frame: int) -> None:
    """Composite each track (later ones on top) into float32 frames (t, y, x, 3) in place; the frames
    are video frames `first_frame`, `first_frame + 1`, ...

    Each object is drawn for the whole chunk at once, inside the box its path covers in the chunk."""
    n, height, width, _ = frames.shape
    for track in tracks:
        cx = track.x[first_frame : first_frame + n].astype(np.float32)
        cy = track.y[first_frame : first_frame + n].astype(np.float32)
        reach = track.radius * 1.15 + 1  # the triangle's apex reaches 1.1 radii
        x0, x1 = max(0, int(cx.min() - reach)), min(width, int(np.ceil(cx.max() + reach)) + 1)
        y0, y1 = max(0, int(cy.min() - reach)), min(height, int(np.ceil(cy.max() + reach)) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        u = (np.arange(x0, x1, dtype=np.float32)[None, None, :] - cx[:, None, None]) / track.radius
        v = (np.arange(y0, y1, dtype=np.float32)[None, :, None] - cy[:, None, None]) / track.radius
        u, v = np.broadcast_arrays(u, v)
        alpha = object_coverage(track.spec.shape, u, v, track.radius)[..., None]
        shade = 1.0 - PATTERN_DEPTH * PATTERNS[track.spec.pattern](u, v)[..., None]
        colour = np.asarray(track.spec.colour, dtype=np.float32) * shade
        region = frames[:, y0:y1, x0:x1]
        region *= 1.0 - alpha
        region += alpha * colour


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    coarse = rng.uniform(-1, 1, size=(max(2, int(height / cell) + 2), max(2, int(width / cell) + 2), 3))
    return cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


def cluttered_background(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """A muted RGB float32 canvas: smooth noise at three scales (texture for optical flow) under a few
    dozen soft blobs. `scale` is the frame's shorter side, so clutter looks alike at every size."""
    canvas = (
        _smooth_noise(rng, height, width, scale / 3) * 0.6
        + _smooth_noise(rng, height, width, scale / 10) * 0.3
        + _smooth_noise(rng, height, width, max(2.0, scale / 32)) * 0.25
    )
    canvas = 125.0 + 45.0 * canvas
    n_blobs = int(rng.integers(10, 20) * height * width / (scale * scale * 1.5)) + 4
    blob_layer = np.zeros_like(canvas)
    blob_alpha = np.zeros((height, width), dtype=np.float32)
    for _ in range(n_blobs):  # a few dozen calls into OpenCV's C drawing code, not a pixel loop
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (max(1, int(rng.uniform(0.03, 0.12) * scale)), max(1, int(rng.uniform(0.03, 0.12) * scale)))
        colour = tuple(float(c) for c in rng.uniform(40, 215, size=3))
        mask = np.zeros((height, width), dtype=np.uint8)
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
        alpha = mask.astype(np.float32) / 255.0 * float(rng.uniform(0.4, 0.8))
        blob_layer = blob_layer * (1 - alpha[..., None]) + np.asarray(colour, np.float32) * alpha[..., None]
        blob_alpha = blob_alpha * (1 - alpha) + alpha
    canvas = canvas * (1 - blob_alpha[..., None]) + blob_layer
    grey = canvas.mean(axis=2, keepdims=True)
    canvas = grey + BACKGROUND_SATURATION * (canvas - grey)
    low, high = BACKGROUND_RANGE
    return np.clip(canvas, low, high).astype(np.float32)


@dataclass(frozen=True)
class Background:
    """A canvas larger than the frame, seen through a window that drifts at constant velocity."""

    canvas: np.ndarray  # (H + 2 margin, W + 2 margin, 3) float32
    margin: int
    velocity: tuple[float, float]  # (dx, dy) px/s of the window over the canvas

    @classmethod
    def generate(
        cls, rng: np.random.Generator, width: int, height: int, duration: float, speed: float
    ) -> Background:
        angle = rng.uniform(0, 2 * np.pi)
        velocity = (speed * float(np.cos(angle)), speed * float(np.sin(angle)))
        margin = int(np.ceil(speed * duration)) + 2
        scale = float(min(width, height))
        canvas = cluttered_background(rng, height + 2 * margin, width + 2 * margin, scale)
        return cls(canvas, margin, velocity)

    def frames(self, times: np.ndarray, width: int, height: int) -> np.ndarray:
        """Float32 frames (t, y, x, 3) at `times` (s), bilinear so the drift is sub-pixel smooth."""
        out = np.empty((times.size, height, width, 3), dtype=np.float32)
        for k, t in enumerate(times):  # one OpenCV warp per frame
            shift = np.float32(
                [[1, 0, self.margin + self.velocity[0] * t], [0, 1, self.margin + self.velocity[1] * t]]
            )
            out[k] = cv2.warpAffine(
                self.canvas, shift, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT,
            )  # fmt: skip
        return out
