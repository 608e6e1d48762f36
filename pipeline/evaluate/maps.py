"""Sources of the saliency maps the evaluate stage scores, each one row of the report: an avfix
predictions store or a folder of map images.

Map folder naming (`--maps DIR`): video maps in `DIR/<video>/` (or `DIR/<data set>/<video>/` for the
STAViS layout), one image per frame: `<anything>_<n>.<ext>` is STAViS's 1-based numbering (`img_00001.jpg`
is frame 0), an all-digit stem is AVE's 0-based numbering (`0000.png` is frame 0); image maps are
`DIR/<image stem>.<ext>`. Any format OpenCV reads; colour maps use their red channel (MATLAB's
`(:,:,1)`); integer images are scaled by their type's maximum (`im2double`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline.evaluate import baselines as base
from pipeline.evaluate import fixations as fx
from pipeline.evaluate.config import EvaluateError
from stores import predictions as pstore
from stores.zarr_io import StoreError


class ModelMaps(Protocol):
    """A source of saliency maps to score (one row of the report)."""

    name: str
    description: str

    def video_size(self, dataset: str, video: str) -> tuple[int, int] | None: ...
    def stamp(self, dataset: str, unit: str) -> str: ...  # changes when a video's maps do
    def image_stamps(self, names: list[str]) -> list[str]: ...  # per image: changes when its map does
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
        self.root = pstore.SCHEMA.open_for_reading(path)
        self.complete = set(pstore.SCHEMA.complete_videos(self.root))
        self.description = f"avfix predictions store {path}"

    def video_size(self, dataset: str, video: str) -> tuple[int, int] | None:
        attrs = pstore.SCHEMA.read_video(self.root, video) if video in self.complete else None
        return None if attrs is None else (attrs.height, attrs.width)

    def stamp(self, dataset: str, unit: str) -> str:
        attrs = pstore.SCHEMA.read_video(self.root, unit) if unit in self.complete else None
        return "absent" if attrs is None else str(attrs.fingerprint)

    def frames(self, dataset: str, video: str, frames: list[int]) -> list[np.ndarray | None]:
        if video not in self.complete or not frames:
            return [None] * len(frames)
        n_frames = pstore.SCHEMA.read_video(self.root, video).n_frames
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

    def image_stamps(self, names: list[str]) -> list[str]:
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
        return _file_stamp(list(self._frames_of(dataset, unit).values()))

    def image_stamps(self, names: list[str]) -> list[str]:
        index = self._images()
        return [_file_stamp([index[Path(name).stem]]) if Path(name).stem in index else "absent" for name in names]

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


def _file_stamp(paths: list[Path]) -> str:
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def open_map_sources(paths: tuple[Path, ...], workspace: Path, layout: str, problems: fx.Problems) -> list[ModelMaps]:
    """One source per `--maps`; for video layouts without `--maps`, WS/predictions.zarr when it exists."""
    if not paths and layout != "images" and pstore.SCHEMA.path(workspace).exists():
        paths = (pstore.SCHEMA.path(workspace),)
    sources: list[ModelMaps] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise EvaluateError(f"{path}: no such maps store or folder")
        is_store = (path / "zarr.json").is_file()
        name = _unique_name("predictions" if is_store and path.name == pstore.SCHEMA.file_name else path.stem or path.name,
                            [s.name for s in sources])
        if is_store and layout == "images":
            raise EvaluateError(f"{path}: a predictions store holds videos; image maps come from a folder")
        if is_store:
            try:
                sources.append(PredictionsStoreMaps(path, name))
            except StoreError as error:
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
