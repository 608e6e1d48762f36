"""The frozen-backbone path of the train stage (`frozen_backbone = true`).

The pretrained visual backbone runs once per stored frame, on the frame resized to the network's input
size, and its three levels are kept in WS/sta-cache.zarr (`stores.cache.STA_CACHE`); every epoch then
reads them instead of running the backbone three times per sample (frames t-1, t, t+1), and only the
rest of the network learns. The crop / flip / rotation of each sample is applied to the levels
(`pipeline.train.augment.augment_levels`); validation reads the levels as they are, which is exactly
what the whole network computes at predict time. A video's levels are reused while the backbone, its
weights, the input size and the video's features are those they were computed from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.backbones import VisualBackbone
from models.device import autocast
from pipeline.common.feature_cache import CacheBuilder, CachedVideo
from pipeline.common.files import sha256_file
from pipeline.common.progress import Progress
from pipeline.train.augment import resize_images
from pipeline.train.config import STATrainConfig
from stores import cache as cstore
from stores import features as fstore
from stores import zarr_io
from stores.samples import VideoSamples

LEVELS = (cstore.STRIDE32.name, cstore.STRIDE16.name, cstore.STRIDE8.name)
BLOCK_FRAMES = 32


def build_level_cache(workspace: Path, config: STATrainConfig, backbone: VisualBackbone, device: torch.device,
                      videos: list[VideoSamples], progress: Progress) -> Path:  # fmt: skip
    """Make WS/sta-cache.zarr hold the levels of every frame of `videos`; returns its path."""
    path = cstore.STA_CACHE.path(workspace)
    features_path = fstore.SCHEMA.path(workspace)
    features = fstore.SCHEMA.open_for_reading(features_path)
    backbone = backbone.to(device).eval()
    shapes = _level_shapes(backbone, config.input_size, device)
    identity = [config.backbone, sha256_file(config.weights) if config.weights else None, config.random_init]
    builder = CacheBuilder(cstore.STA_CACHE, path, progress, BLOCK_FRAMES, config.backbone)
    todo = []
    for video in videos:
        attrs = fstore.SCHEMA.read_video(features, video.video_id)
        assert attrs is not None, f"{video.video_id} is indexed but not in {features_path}"
        layout_key = zarr_io.fingerprint([identity, video.n_frames])
        cached = CachedVideo(video.video_id, video.n_frames, layout_key,
                             {name: (video.n_frames, *shape) for name, shape in shapes.items()})  # fmt: skip
        todo.append((cached, zarr_io.fingerprint(["sta levels", config.input_size, attrs.fingerprint])))

    def compute(video: CachedVideo) -> Callable[[slice], dict[str, np.ndarray]]:
        reader = fstore.VideoReader(features_path, video.video_id)

        @torch.no_grad()
        def levels_of(block: slice) -> dict[str, np.ndarray]:
            frames = reader.read(fstore.FRAMES.name, block.start, block.stop)
            images = resize_images(torch.from_numpy(frames).to(device), config.input_size)  # as validation resizes
            with autocast(device, config.amp):
                levels = backbone.forward_levels(backbone.normalize(images))
            return {name: levels[name].half().cpu().numpy() for name in LEVELS}

        return levels_of

    builder.ensure(LEVELS, todo, compute, "frame")
    zarr_io.consolidate(path)
    return path


@torch.no_grad()
def _level_shapes(backbone: VisualBackbone, size: int, device: torch.device) -> dict[str, tuple[int, ...]]:
    probe = backbone.forward_levels(backbone.normalize(torch.zeros(1, 3, size, size, device=device)))
    return {name: tuple(probe[name].shape[1:]) for name in LEVELS}
