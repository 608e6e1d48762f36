"""The frozen-backbone path of the pseudolabel stage (`backbone_mode = "frozen"`).

The pretrained backbone runs once per stored frame at the coarse size and once per selection box at the
fine size (after the coarse pass made the boxes), and the frozen audio encoder of the event classifier
once per frame's window; their outputs are kept in WS/scam-cache.zarr (`stores.cache`) and only the
classifiers' heads are trained on them, every epoch reading the cache instead of running the backbone.
ST's three frames and SA's visual half read the same per-frame maps; CAMs come from the same heads and
maps. A cached part is reused while the backbone, its weights, the size, the video's features (and the
boxes, for the fine maps; the audio encoder, for the embeddings) are those it was computed from.

Two approximations against fine-tuning, both deliberate: the maps are not augmented (no random flip),
and ST_fine sees each neighbour frame's own crop rather than frame t's box applied to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from models.backbones import VisualBackbone, build_backbone
from models.device import autocast
from models.selection import crop_and_resize, scale_boxes
from pipeline.common.feature_cache import CacheBuilder, CachedVideo
from pipeline.common.files import sha256_file
from pipeline.common.progress import Progress
from pipeline.pseudolabel.batches import resize, to_chw_float
from pipeline.pseudolabel.config import PseudolabelConfig, VideoInfo
from stores import cache as cstore
from stores import features as fstore
from stores import zarr_io
from stores.chunks import read_rows
from stores.datasets import FrameItem, FrameSamples

COARSE, FINE = cstore.COARSE.name, cstore.FINE.name


def frozen_backbone(config: PseudolabelConfig, device: torch.device) -> VisualBackbone:
    """The pretrained backbone in inference mode, its weights fixed."""
    backbone = build_backbone(config.backbone, config.weights, random_init=config.random_init)
    backbone.requires_grad_(False)
    return backbone.to(device).eval()


def backbone_identity(config: PseudolabelConfig) -> list[Any]:
    """What a cached map depends on of the backbone: its name and its weights."""
    weights = sha256_file(config.weights) if config.weights else None
    return [config.backbone, weights, config.random_init]


@dataclass
class Layout:
    """The shapes of one video's cached arrays."""

    coarse: tuple[int, int, int]  # (channels, h, w)
    fine: tuple[int, int, int]
    embedding: int

    def shapes(self, n_frames: int) -> dict[str, tuple[int, ...]]:
        return {COARSE: (n_frames, *self.coarse), FINE: (n_frames, *self.fine),
                cstore.AUDIO_EMBEDDING.name: (n_frames, self.embedding)}  # fmt: skip


class ScamCache:
    """WS/scam-cache.zarr: built part by part, read by the classifiers' datasets and the passes."""

    def __init__(self, workspace: Path, config: PseudolabelConfig, device: torch.device, progress: Progress,
                 embedding_dim: int, writable: bool = True) -> None:  # fmt: skip
        """`writable` False: a worker's, which fills the rows of prepared parts and reads the maps."""
        self.path = cstore.SCAM_CACHE.path(workspace)
        self.features_path = fstore.SCHEMA.path(workspace)
        self.config = config
        self.device = device
        self.backbone = frozen_backbone(config, device)
        self.identity = backbone_identity(config)
        self.layout = Layout(self._map_shape(config.coarse_size), self._map_shape(config.fine_size), embedding_dim)
        self.builder = CacheBuilder(cstore.SCAM_CACHE, self.path, progress, config.infer_batch, config.backbone,
                                    writable=writable)  # fmt: skip

    @torch.no_grad()
    def _map_shape(self, size: int) -> tuple[int, int, int]:
        probe = torch.zeros(1, 3, size, size, device=self.device)
        return tuple(self.backbone(self.backbone.normalize(probe)).shape[1:])  # type: ignore[return-value]

    def _cached(self, info: VideoInfo) -> CachedVideo:
        layout_key = zarr_io.fingerprint([self.identity, info.n_frames])
        return CachedVideo(info.video_id, info.n_frames, layout_key, self.layout.shapes(info.n_frames))

    # --- what a part is made from ----------------------------------------------------------------------

    def coarse_key(self, info: VideoInfo) -> str:
        return zarr_io.fingerprint(["coarse", self.config.coarse_size, info.fingerprint])

    def fine_key(self, info: VideoInfo, boxes_key: str) -> str:
        """`boxes_key`: what the video's selection boxes are made from."""
        return zarr_io.fingerprint(["fine", self.config.fine_size, info.fingerprint, boxes_key])

    def audio_key(self, info: VideoInfo, encoder_key: str) -> str:
        return zarr_io.fingerprint(["audio", encoder_key, info.fingerprint])

    # --- building, step by step (the coordinating process: stale, prepare, record; any: fill) -----------

    def stale(self, what: str, keyed: list[tuple[VideoInfo, str]]) -> list[tuple[VideoInfo, str]]:
        """The (video, key) pairs whose part `what` is missing or was made from something else."""
        by_id = {info.video_id: info for info, _ in keyed}
        todo = self.builder.stale((what,), [(self._cached(info), key) for info, key in keyed])
        return [(by_id[video.video_id], key) for video, key in todo]

    def prepare(self, what: str, info: VideoInfo) -> None:
        self.builder.prepare((what,), self._cached(info))

    def fill(self, what: str, info: VideoInfo, boxes: tuple[np.ndarray, np.ndarray] | None = None,
             frames: slice | None = None) -> None:  # fmt: skip
        """Write a prepared part's rows (of the whole video, or of its segment `frames`): the coarse maps,
        or the fine maps of `boxes` (the video's)."""
        compute = self._compute(what, info, boxes)
        self.builder.fill((what,), self._cached(info), lambda block: {what: compute(block)}, frames=frames)

    def record(self, what: str, info: VideoInfo, key: str) -> None:
        self.builder.record((what,), self._cached(info), key)

    # --- building here --------------------------------------------------------------------------------

    def _ensure(self, what: str, keyed: list[tuple[VideoInfo, str]],
                compute: Callable[[VideoInfo], Callable[[slice], np.ndarray]], unit: str) -> None:  # fmt: skip
        """`compute(info)`: the function of a block of the video's frames giving the rows of `what`."""
        by_id = {info.video_id: info for info, _ in keyed}

        def per_video(video: CachedVideo) -> Callable[[slice], dict[str, np.ndarray]]:
            rows = compute(by_id[video.video_id])
            return lambda block: {what: rows(block)}

        self.builder.ensure((what,), [(self._cached(info), key) for info, key in keyed], per_video, unit)

    def ensure_coarse(self, videos: list[VideoInfo]) -> None:
        self._ensure(COARSE, [(info, self.coarse_key(info)) for info in videos],
                     lambda info: self._compute(COARSE, info), "frame")  # fmt: skip

    def ensure_fine(self, videos: list[VideoInfo], boxes: dict[str, tuple[np.ndarray, np.ndarray]],
                    boxes_key: Callable[[VideoInfo], str]) -> None:  # fmt: skip
        """`boxes[video]`: (T, 4) selection boxes in stored-frame pixels and (T,) whether each is valid."""
        self._ensure(FINE, [(info, self.fine_key(info, boxes_key(info))) for info in videos],
                     lambda info: self._compute(FINE, info, boxes[info.video_id]), "crop")  # fmt: skip

    def ensure_audio(self, videos: list[VideoInfo], encoder: nn.Module | None, encoder_key: str) -> None:
        """Embeddings of every frame's window by the frozen `encoder` (zeros without audio or encoder)."""
        if encoder is not None:
            encoder.eval()

        def per_video(info: VideoInfo) -> Callable[[slice], np.ndarray]:
            reader = fstore.VideoReader(self.features_path, info.video_id)

            @torch.no_grad()
            def compute(block: slice) -> np.ndarray:
                n = block.stop - block.start
                if encoder is None or not info.has_audio:
                    return np.zeros((n, self.layout.embedding), dtype=np.float32)
                windows = reader.read("audio", block.start, block.stop)
                spectrogram = torch.from_numpy(windows.astype(np.float32)).to(self.device).unsqueeze(1)
                with autocast(self.device):
                    return encoder(spectrogram).embedding.float().cpu().numpy()

            return compute

        self._ensure(cstore.AUDIO_EMBEDDING.name, [(info, self.audio_key(info, encoder_key)) for info in videos],
                     per_video, "frame")  # fmt: skip

    def _compute(self, what: str, info: VideoInfo,
                 boxes: tuple[np.ndarray, np.ndarray] | None = None) -> Callable[[slice], np.ndarray]:  # fmt: skip
        """The backbone's maps of a block of the video's frames (COARSE), or of their crops (FINE)."""
        reader = fstore.VideoReader(self.features_path, info.video_id)
        if what == COARSE:
            def coarse(block: slice) -> np.ndarray:
                frames = torch.from_numpy(reader.read("frames", block.start, block.stop)).to(self.device)
                return self._maps(resize(to_chw_float(frames), self.config.coarse_size))

            return coarse
        assert boxes is not None, "the fine maps need the video's selection boxes"
        frame_boxes, valid = boxes

        def fine(block: slice) -> np.ndarray:
            frames = reader.read("frames", block.start, block.stop)
            images = to_chw_float(torch.from_numpy(frames).to(self.device))
            box = torch.from_numpy(frame_boxes[block]).long().to(self.device)
            whole = torch.tensor([0, images.shape[-2] - 1, 0, images.shape[-1] - 1], device=self.device)
            box = torch.where(torch.from_numpy(valid[block]).to(self.device)[:, None], box, whole)
            size = self.config.fine_size
            return self._maps(crop_and_resize(images, box, (size, size)))

        return fine

    @torch.no_grad()
    def _maps(self, images: Tensor) -> np.ndarray:
        with autocast(self.device):
            maps = self.backbone(self.backbone.normalize(images))
        return maps.half().cpu().numpy()

    # --- reading ------------------------------------------------------------------------------------

    def datasets(self, stage_array: str, neighbours: bool, audio: bool, train_items: list[FrameItem],
                 val_items: list[FrameItem]) -> tuple[FrameSamples, FrameSamples]:  # fmt: skip
        kwargs = {"neighbours": neighbours, "audio": audio, "frames_array": stage_array,
                  "audio_array": cstore.AUDIO_EMBEDDING.name}  # fmt: skip
        return FrameSamples(self.path, train_items, **kwargs), FrameSamples(self.path, val_items, **kwargs)

    def block(self, video_id: str, array: str, sl: slice, triplets: bool) -> Tensor:
        """Maps of frames [sl) as a float tensor on the device: (n, C, h, w), or with `triplets` the
        maps of t-1, t, t+1 (n, 3, C, h, w), clamped at the video's ends."""
        group = self.builder.group(video_id)
        if not triplets:
            return torch.from_numpy(read_rows(group[array], sl.start, sl.stop)).to(self.device).float()
        n_frames = group[array].shape[0]
        lo = max(sl.start - 1, 0)
        rows = read_rows(group[array], lo, sl.stop + 1)
        t = np.arange(sl.start, sl.stop)
        pick = [np.clip(t + step, 0, n_frames - 1) - lo for step in (-1, 0, 1)]
        return torch.from_numpy(np.stack([rows[index] for index in pick], axis=1)).to(self.device).float()

    def embeddings(self, video_id: str, sl: slice) -> Tensor:
        group = self.builder.group(video_id)
        return torch.from_numpy(read_rows(group[cstore.AUDIO_EMBEDDING.name], sl.start, sl.stop)).to(self.device)


def frame_boxes(stored: dict[str, np.ndarray], map_size: int, frame_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A video's selection boxes (from the coarse pass, on the map grid) in stored-frame pixels."""
    boxes = scale_boxes(torch.from_numpy(stored["box"]).long(), (map_size, map_size), frame_hw)
    return boxes.numpy(), stored["has_box"]
