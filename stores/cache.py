"""Caches of a frozen pretrained backbone's maps, computed once per stored frame and read every epoch.

scam-cache.zarr (the pseudolabel stage's, with `backbone_mode = "frozen"`):
    coarse           the backbone's stride-32 map of each frame at the coarse size
    fine             the same of each frame's selection box (its crop at the fine size)
    audio_embedding  the frozen audio encoder's embedding of each frame's window
sta-cache.zarr (the train stage's, with `frozen_backbone`): the three backbone levels the STA network reads.

A video's part is valid while `parts[name]` holds the fingerprint of what it was computed from (the
backbone, its weights, the input size, the video's features, the selection boxes...); it is recorded
only after the whole array is written, so a killed run recomputes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stores.schema import StoreAttrs, StoreSchema, VideoAttrs, doc
from stores.zarr_io import ArraySpec

CHUNK_T = 16

COARSE = ArraySpec("coarse", ("t", "channel", "y", "x"), "float16", CHUNK_T, zstd_level=1,
                   doc="backbone stride-32 map of the frame at the coarse size")
FINE = ArraySpec("fine", ("t", "channel", "fine_y", "fine_x"), "float16", CHUNK_T, zstd_level=1,
                 doc="backbone stride-32 map of the frame's selection box at the fine size")
AUDIO_EMBEDDING = ArraySpec("audio_embedding", ("t", "embedding"), "float32", 4 * CHUNK_T, zstd_level=1,
                            doc="the frozen audio encoder's embedding of the frame's window")
STRIDE32 = ArraySpec("stride32", ("t", "channel32", "y32", "x32"), "float16", CHUNK_T, zstd_level=1,
                     doc="backbone stride-32 level of the frame at the network's input size")
STRIDE16 = ArraySpec("stride16", ("t", "channel16", "y16", "x16"), "float16", CHUNK_T, zstd_level=1,
                     doc="backbone stride-16 level")
STRIDE8 = ArraySpec("stride8", ("t", "channel8", "y8", "x8"), "float16", CHUNK_T, zstd_level=1,
                    doc="backbone stride-8 level")


@dataclass(kw_only=True)
class CacheStoreAttrs(StoreAttrs):
    backbone: str = doc("the frozen backbone the maps come from", "")


@dataclass(kw_only=True)
class CacheVideo(VideoAttrs):
    n_frames: int = doc("frames", 0)
    parts: dict[str, str] = doc("array name -> fingerprint of what it was computed from (written last)",
                                default_factory=dict)


SCAM_CACHE: StoreSchema[CacheStoreAttrs, CacheVideo] = StoreSchema(
    kind="scam-cache", file_name="scam-cache.zarr", made_by="avfix pseudolabel",
    description="a frozen backbone's maps and audio embeddings the classifiers train on (backbone_mode frozen)",
    arrays=(COARSE, FINE, AUDIO_EMBEDDING), store_type=CacheStoreAttrs, video_type=CacheVideo,
    reuse_attrs=("parts",),
)  # fmt: skip

STA_CACHE: StoreSchema[CacheStoreAttrs, CacheVideo] = StoreSchema(
    kind="sta-cache", file_name="sta-cache.zarr", made_by="avfix train",
    description="a frozen backbone's levels the STA network trains on (frozen_backbone)",
    arrays=(STRIDE32, STRIDE16, STRIDE8), store_type=CacheStoreAttrs, video_type=CacheVideo,
    reuse_attrs=("parts",),
)  # fmt: skip
