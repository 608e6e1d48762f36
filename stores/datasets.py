"""torch Datasets over features.zarr: training samples read chunk by chunk, never a whole store.

A sample is one frame t of one video, optionally with its neighbours t−1 and t+1 (clamped at the
video's ends) and its audio window. Frames come out as uint8 (H, W, 3) at the stored size: resizing,
normalisation and augmentation happen batched on the device, not here.

Each process (the main one or a DataLoader worker) opens the store lazily and keeps a small LRU cache
of decoded chunks, so neighbouring samples of one video cost one chunk read.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from stores import zarr_io
from stores.chunks import DirectChunks


@dataclass(frozen=True)
class FrameItem:
    video_id: str
    t: int
    label: int


class ChunkCache:
    """Reads arrays of one store by (video, name, t) through an LRU cache of whole t-chunks."""

    def __init__(self, store: str | Path, max_chunks: int = 24, max_bytes: int | None = None) -> None:
        self.store = str(store)
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes  # when set, the cache holds chunks up to this many bytes instead
        self._bytes = 0
        self._root: zarr.Group | None = None
        self._chunks: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()
        # Opening an array reads its metadata from the store: done once per array, not once per read.
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        self._direct: dict[tuple[str, str], DirectChunks | None] = {}

    def __getstate__(self) -> dict:
        # Workers re-open the store themselves; handles and cached chunks do not travel.
        return {"store": self.store, "max_chunks": self.max_chunks, "max_bytes": self.max_bytes, "_bytes": 0,
                "_root": None, "_chunks": OrderedDict(), "_arrays": {}, "_direct": {}}  # fmt: skip

    def array(self, video_id: str, name: str) -> zarr.Array:
        handle = self._arrays.get((video_id, name))
        if handle is None:
            if self._root is None:
                self._root = zarr_io.open_root(self.store, mode="r")
            handle = self._root[f"{zarr_io.VIDEOS}/{video_id}/{name}"]  # type: ignore[assignment]
            self._arrays[(video_id, name)] = handle
        return handle

    def read(self, video_id: str, name: str, t: int) -> np.ndarray:
        array = self.array(video_id, name)
        chunk_len = array.chunks[0]
        key = (video_id, name, t // chunk_len)
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = self._read_chunk(video_id, name, array, key[2])
            self._chunks[key] = chunk
            self._bytes += chunk.nbytes
            while len(self._chunks) > 1 and self._over_budget():
                self._bytes -= self._chunks.popitem(last=False)[1].nbytes
        else:
            self._chunks.move_to_end(key)
        return chunk[t % chunk_len]

    def _read_chunk(self, video_id: str, name: str, array: zarr.Array, index: int) -> np.ndarray:
        if (video_id, name) not in self._direct:
            self._direct[(video_id, name)] = DirectChunks.for_array(self.store, array)
        direct = self._direct[(video_id, name)]
        if direct is not None:
            # JPEG frames decode one by one as samples ask for them (a neighbour at a chunk's edge, or
            # random order, costs one frame's decoding, not a chunk's).
            return direct.read_lazy(index)  # type: ignore[return-value]
        start = index * array.chunks[0]
        return np.asarray(array[start : start + array.chunks[0]])

    def _over_budget(self) -> bool:
        if self.max_bytes is not None:
            return self._bytes > self.max_bytes
        return len(self._chunks) > self.max_chunks

    def length(self, video_id: str, name: str = "frames") -> int:
        return int(self.array(video_id, name).shape[0])


class FrameSamples(Dataset):
    """Frame t (and optionally t−1, t+1) with its audio window and the video's class index.

    Returns a dict: `frames` uint8 tensor (H, W, 3), or (3, H, W, 3) with neighbours (unless `frames` is
    False); `audio` float32 (F, T) when `audio` is set; `label` int64; `index` (position in `items`).
    """

    def __init__(self, store: str | Path, items: list[FrameItem], *, neighbours: bool = False, audio: bool = False,
                 frames: bool = True, cache_bytes: int = 512 << 20, frames_array: str = "frames",
                 audio_array: str = "audio"):  # fmt: skip
        self.items = items
        self.neighbours = neighbours
        self.audio = audio
        self.frames = frames  # False: audio-only samples (the event classifier never decodes frames)
        # What a sample's "frames" and "audio" are read from: the stored frames and spectrogram windows,
        # or a cache of a frozen backbone's maps and a frozen audio encoder's embeddings.
        self.frames_array = frames_array
        self.audio_array = audio_array
        # Samples are drawn in random order across videos: a cache of whole chunks that can hold a small
        # data set entirely reads each chunk once instead of once per sample.
        self.cache = ChunkCache(store, max_bytes=cache_bytes)

    def __len__(self) -> int:
        return len(self.items)

    def frames_at(self, video_id: str, t: int) -> np.ndarray:
        if not self.neighbours:
            return self.cache.read(video_id, self.frames_array, t)
        last = self.cache.length(video_id, self.frames_array) - 1
        return np.stack([self.cache.read(video_id, self.frames_array, min(max(s, 0), last)) for s in (t - 1, t, t + 1)])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index]
        sample = {
            "label": torch.tensor(item.label, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.frames:
            sample["frames"] = torch.from_numpy(np.ascontiguousarray(self.frames_at(item.video_id, item.t)))
        if self.audio:
            window = self.cache.read(item.video_id, self.audio_array, item.t)
            sample["audio"] = torch.from_numpy(window.astype(np.float32))
        return sample

