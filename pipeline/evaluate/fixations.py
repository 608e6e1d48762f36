"""Readers of human fixations in the three layouts `avfix evaluate` accepts.

- **stavis**: the STAViS data release (SPEC §5.1): `annotations/<DB>/<video>/maps/eyeMap_%05d.jpg`
  (continuous fixation density), `annotations/<DB>/<video>/fixMap_%05d.mat` (variable `eyeMap`, binary
  fixations), `fold_lists/<DB>_list_test_<split>_fps.txt` (lines `name nframes fps`; DIEM has one list,
  `DIEM_list_test_fps.txt`, shared by its three splits), optional `video_frames/<DB>/<video>/img_%05d.jpg`.
  Frame numbers there are 1-based; here every frame index is 0-based (STAViS frame j is frame j - 1).
- **csv**: one CSV of video fixations, columns `video,frame,x,y[,observer]` (others ignored): `frame` is
  the 0-based index at the video's native rate, x = column and y = row in pixels of the source video.
- **images**: a CSV `image,observer,x,y[,...]` beside a folder of images (`stimuli/` by default), the
  layout of the scene-fixations set.

Pixel convention inside avfix: pixel (row r, column c) covers [c, c+1) x [r, r+1) ("corner" origin: (0, 0)
is the top-left corner of the image), so a fixation at (x, y) falls on column floor(x), row floor(y);
fixations outside [0, W) x [0, H) are dropped and counted. Coordinates given with the "center" origin
((0, 0) is the centre of the top-left pixel, as `avfix synth` writes them) are shifted by half a pixel
on reading; the CSV layout assumes that origin by default, the images layout the corner origin (the
scene-fixations data lie in [0, W) x [0, H)).
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pipeline.common.errors import BadInput

Layout = Literal["stavis", "csv", "images"]
Origin = Literal["corner", "center"]
ORIGINS: tuple[str, ...] = ("corner", "center")
DEFAULT_ORIGIN: dict[str, Origin] = {"csv": "center", "images": "corner", "stavis": "corner"}
LAYOUTS: tuple[str, ...] = ("stavis", "csv", "images")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class FixationInputError(BadInput, ValueError):
    """The fixation input as a whole cannot be read (one line naming the file and the reason)."""


@dataclass(frozen=True)
class Item:
    """One evaluated frame (video, 0-based frame) or image."""

    item_id: str
    video: str | None = None
    frame: int | None = None
    image: str | None = None


def frame_item(video: str, frame: int) -> Item:
    return Item(item_id=f"{video}/{frame:05d}", video=video, frame=frame)


@dataclass
class Problems:
    """Bad input met while reading: per-file failure lines and counts (reported, never silent)."""

    failures: list[dict[str, str]] = field(default_factory=list)
    dropped_outside: int = 0
    bad_rows: int = 0

    def fail(self, path: str | Path, reason: str) -> None:
        self.failures.append({"path": str(path), "reason": reason})


def inside(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mask of (K, 2) x, y points inside an (H, W) frame."""
    height, width = size
    return (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)


def keep_inside(points: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """(points inside the frame, number dropped)."""
    mask = inside(points, size)
    return points[mask], int((~mask).sum())


def pixel_centres(binary: np.ndarray) -> np.ndarray:
    """Non-zero pixels of a binary fixation map as (K, 2) x, y points at the pixel centres."""
    rows, cols = np.nonzero(binary)
    return np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)


# --- videos -------------------------------------------------------------------------------------------


@dataclass
class VideoFixations:
    """One video's ground truth. `size` is known for STAViS (from its maps), None for the CSV layout
    (the size comes from the saliency maps there)."""

    video: str
    frames: list[int]  # 0-based frames that have ground truth
    size: tuple[int, int] | None = None
    points: dict[int, np.ndarray] | None = None  # CSV: all points in memory
    annotation_dir: Path | None = None  # STAViS: annotations/<DB>/<video>
    frames_dir: Path | None = None  # STAViS: video_frames/<DB>/<video>, for pictures only

    def load_points(self, problems: Problems) -> dict[int, np.ndarray]:
        """Fixations of every frame (STAViS: read from the fixMap files; unreadable ones are reported and
        left out)."""
        if self.points is not None:
            return self.points
        assert self.annotation_dir is not None
        loaded: dict[int, np.ndarray] = {}
        for frame in self.frames:
            path = self.annotation_dir / f"fixMap_{frame + 1:05d}.mat"
            try:
                binary = read_fixmap(path)
            except (OSError, ValueError, KeyError, NotImplementedError) as error:
                problems.fail(path, f"unreadable fixation map: {error}")
                continue
            if self.size is not None and binary.shape != self.size:
                problems.fail(path, f"fixation map is {binary.shape[1]}x{binary.shape[0]}, the density map "
                                    f"{self.size[1]}x{self.size[0]}")
                continue
            loaded[frame] = pixel_centres(binary)
        return loaded

    def load_density(self, frame: int) -> np.ndarray | None:
        """STAViS `eyeMap` of a frame as float64 in [0, 1] (`im2double`); None when the layout has none."""
        if self.annotation_dir is None:
            return None
        path = self.annotation_dir / "maps" / f"eyeMap_{frame + 1:05d}.jpg"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
        if image is None:
            raise OSError(f"{path}: missing or not an image")
        return to_unit_range(image if image.ndim == 2 else image[..., 2])

    def frame_image(self, frame: int) -> np.ndarray | None:
        """RGB uint8 of a frame when the data set ships frames (for the example pictures)."""
        if self.frames_dir is None:
            return None
        path = self.frames_dir / f"img_{frame + 1:05d}.jpg"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """MATLAB `im2double`: integers scaled by their type's maximum, floats kept."""
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    return image.astype(np.float64)


def read_fixmap(path: Path) -> np.ndarray:
    """The binary `eyeMap` of a STAViS `fixMap_%05d.mat` (MATLAB v5 through scipy, v7.3 through h5py)."""
    import scipy.io

    if not path.is_file():
        raise OSError("missing file")
    try:
        data = scipy.io.loadmat(str(path), variable_names=["eyeMap"])
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        try:
            import h5py
        except ModuleNotFoundError as error:
            raise ValueError("a MATLAB v7.3 (HDF5) file: install h5py to read it") from error
        with h5py.File(path, "r") as handle:
            return np.asarray(handle["eyeMap"]).T != 0  # HDF5 stores MATLAB arrays column-major
    except Exception as error:  # scipy raises its own MatReadError (and others) for corrupt files
        raise ValueError(f"not a MATLAB file ({error})") from error
    if "eyeMap" not in data:
        raise KeyError("no variable 'eyeMap'")
    return np.asarray(data["eyeMap"]) != 0


@dataclass
class VideoDataset:
    """Videos of one data set, their test splits and how split scores are combined."""

    name: str
    layout: Layout
    videos: dict[str, VideoFixations]
    splits: dict[str, list[str]]
    aggregation: Literal["pooled", "per-split"] = "pooled"
    source: str = ""


_FOLD_LIST = re.compile(r"^(?P<db>.+)_list_test(?:_(?P<split>\d+))?_fps\.txt$", re.IGNORECASE)


def read_stavis(root: Path, datasets: list[str] | None, problems: Problems) -> list[VideoDataset]:
    """Every data set under `root/annotations/` (or those named), with its fold lists."""
    annotations = root / "annotations"
    if not annotations.is_dir():
        raise FixationInputError(f"{root}: no annotations/ folder (not a STAViS data release)")
    available = sorted(p.name for p in annotations.iterdir() if p.is_dir())
    if datasets:
        lookup = {name.lower(): name for name in available}
        unknown = [name for name in datasets if name.lower() not in lookup]
        if unknown:
            raise FixationInputError(f"{annotations}: no data set {', '.join(unknown)} (found: {', '.join(available)})")
        available = [lookup[name.lower()] for name in datasets]
    return [_read_stavis_dataset(root, name, problems) for name in available]


def _read_stavis_dataset(root: Path, name: str, problems: Problems) -> VideoDataset:
    lists = _fold_lists(root / "fold_lists", name)
    entries: dict[str, int | None] = {}
    splits: dict[str, list[str]] = {}
    aggregation: Literal["pooled", "per-split"] = "pooled"
    for split, path in lists:
        names = []
        for line_number, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                n_frames = int(float(fields[1])) if len(fields) > 1 else None
            except ValueError:
                problems.fail(path, f"line {line_number}: frame count {fields[1]!r} is not a number")
                n_frames = None
            entries.setdefault(fields[0], n_frames)
            names.append(fields[0])
        if split is None:
            # DIEM: one list, evaluated once per split and the three split means averaged (SPEC §5.2).
            aggregation = "per-split"
            splits.update({str(k): list(names) for k in (1, 2, 3)})
        else:
            splits[split] = names
    annotation_root = root / "annotations" / name
    if not lists:  # no fold list: every annotated video, one split
        entries = {p.name: None for p in sorted(annotation_root.iterdir()) if p.is_dir()}
        splits = {"all": list(entries)}
    videos: dict[str, VideoFixations] = {}
    for video, n_frames in entries.items():
        folder = annotation_root / video
        if not folder.is_dir():
            problems.fail(folder, "video listed in the fold lists has no annotation folder")
            continue
        if n_frames is None:
            n_frames = len(list(folder.glob("fixMap_*.mat")))
        frames_dir = root / "video_frames" / name / video
        videos[video] = VideoFixations(
            video=video,
            frames=list(range(n_frames)),
            size=_first_map_size(folder, problems),
            annotation_dir=folder,
            frames_dir=frames_dir if frames_dir.is_dir() else None,
        )
    videos = {video: fixations for video, fixations in videos.items() if fixations.size is not None}
    splits = {split: [v for v in names if v in videos] for split, names in splits.items()}
    return VideoDataset(name, "stavis", videos, splits, aggregation, source=str(annotation_root))


def _fold_lists(folder: Path, dataset: str) -> list[tuple[str | None, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        match = _FOLD_LIST.match(path.name)
        if match and match["db"].lower() == dataset.lower():
            found.append((match["split"], path))
    numbered = [(split, path) for split, path in found if split is not None]
    return numbered or found


def _first_map_size(folder: Path, problems: Problems) -> tuple[int, int] | None:
    maps = sorted((folder / "maps").glob("eyeMap_*.jpg"))
    for path in maps[:3]:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is not None:
            return int(image.shape[0]), int(image.shape[1])
    problems.fail(folder / "maps", "no readable eyeMap_%05d.jpg")
    return None


def _shift(origin: Origin) -> float:
    """What to add to a coordinate to bring it to the corner origin."""
    if origin not in ORIGINS:
        raise FixationInputError(f"unknown pixel origin {origin!r}; use corner or center")
    return 0.5 if origin == "center" else 0.0


def read_video_csv(path: Path, problems: Problems, origin: Origin = "center") -> VideoDataset:
    """A CSV `video,frame,x,y[,observer]` of fixations (extra columns such as `avfix synth`'s
    `label,audible,radius` are ignored)."""
    shift = _shift(origin)
    points: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for line_number, row in _csv_rows(path, ("video", "frame", "x", "y"), problems):
        try:
            frame = int(float(row["frame"]))
            x, y = float(row["x"]), float(row["y"])
            if frame < 0 or not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError("negative frame or non-finite position")
        except (TypeError, ValueError) as error:
            _bad_row(problems, path, line_number, error)
            continue
        points[row["video"]][frame].append((x + shift, y + shift))
    videos = {
        video: VideoFixations(
            video=video,
            frames=sorted(frames),
            points={frame: np.asarray(xy, dtype=np.float64).reshape(-1, 2) for frame, xy in frames.items()},
        )
        for video, frames in sorted(points.items())
    }
    return VideoDataset(path.stem, "csv", videos, {"all": list(videos)}, "pooled", source=str(path))


def _csv_rows(path: Path, required: tuple[str, ...], problems: Problems) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV that must have the `required` columns."""
    if not path.is_file():
        raise FixationInputError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in (reader.fieldnames or [])]
        missing = [name for name in required if name not in columns]
        if missing:
            found = ", ".join(columns) or "none"
            raise FixationInputError(f"{path}: missing column(s) {', '.join(missing)} (found: {found})")
        reader.fieldnames = columns
        for line_number, row in enumerate(reader, start=2):
            yield line_number, row


def _bad_row(problems: Problems, path: Path, line_number: int, error: Exception) -> None:
    problems.bad_rows += 1
    if problems.bad_rows <= 5:  # the first few name the line; the rest are counted
        problems.fail(path, f"line {line_number}: {error}")


# --- images -------------------------------------------------------------------------------------------


@dataclass
class ImageFixations:
    image: str  # file name under the images folder (the CSV's `image`)
    path: Path
    size: tuple[int, int]  # (H, W) of the stored image
    points: np.ndarray  # (K, 2) x, y inside the image
    observers: int

    def load_rgb(self) -> np.ndarray:
        image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"{self.path}: not a readable image")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class ImageDataset:
    name: str
    images: list[ImageFixations]
    source: str = ""
    layout: Layout = "images"


def read_images(csv_path: Path, images_dir: Path, problems: Problems, origin: Origin = "corner") -> ImageDataset:
    """Fixations `image,observer,x,y` on the images of `images_dir` (sizes read from the files)."""
    shift = _shift(origin)
    if not images_dir.is_dir():
        raise FixationInputError(f"{images_dir}: no such images folder (pass --images DIR)")
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    observers: dict[str, set[str]] = defaultdict(set)
    for line_number, row in _csv_rows(csv_path, ("image", "x", "y"), problems):
        try:
            x, y = float(row["x"]), float(row["y"])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError("non-finite position")
        except (TypeError, ValueError) as error:
            _bad_row(problems, csv_path, line_number, error)
            continue
        points[row["image"]].append((x + shift, y + shift))
        observers[row["image"]].add(str(row.get("observer", "")))
    images = []
    for name in sorted(points):
        path = images_dir / name
        size = image_size(path)
        if size is None:
            problems.fail(path, "missing or unreadable image; its fixations are skipped")
            continue
        kept, dropped = keep_inside(np.asarray(points[name], dtype=np.float64), size)
        problems.dropped_outside += dropped
        images.append(ImageFixations(name, path, size, kept, len(observers[name])))
    dataset_name = images_dir.parent.name if csv_path.parent == images_dir.parent else csv_path.stem
    return ImageDataset(dataset_name, images, source=str(csv_path))


def image_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file header (PIL reads no pixels for this)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
        return int(height), int(width)
    except (OSError, UnidentifiedImageError):
        return None


# --- layout detection -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixationSource:
    layout: Layout
    path: Path  # STAViS root, video CSV, or images CSV
    images_dir: Path | None = None


def locate(fixations: Path, layout: str = "auto", images_dir: Path | None = None) -> FixationSource:
    """Decide the layout of FIXATIONS (or check the one asked for) and find its files."""
    fixations = Path(fixations)
    if not fixations.exists():
        raise FixationInputError(f"{fixations}: no such file or folder")
    if layout == "auto":
        layout = _detect(fixations)
    if layout == "stavis":
        if not fixations.is_dir():
            raise FixationInputError(f"{fixations}: the stavis layout is a folder (the STAViS data root)")
        return FixationSource("stavis", fixations)
    if layout == "images":
        csv_path = fixations / "fixations.csv" if fixations.is_dir() else fixations
        folder = images_dir or (csv_path.parent / "stimuli")
        return FixationSource("images", csv_path, folder)
    if layout == "csv":
        if fixations.is_dir():
            raise FixationInputError(f"{fixations}: the csv layout is a CSV file of video,frame,x,y rows")
        return FixationSource("csv", fixations)
    raise FixationInputError(f"unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")


def _detect(path: Path) -> Layout:
    if path.is_dir():
        if (path / "annotations").is_dir():
            return "stavis"
        if (path / "fixations.csv").is_file():
            return "images"
        raise FixationInputError(f"{path}: neither a STAViS release (annotations/) nor an images set (fixations.csv)")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = [name.strip() for name in next(csv.reader(handle), [])]
    if "video" in header:
        return "csv"
    if "image" in header:
        return "images"
    raise FixationInputError(f"{path}: a fixation CSV needs a 'video' (csv layout) or 'image' (images layout) column")
