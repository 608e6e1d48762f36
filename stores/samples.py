"""STA training samples over features.zarr + pseudo.zarr, and a chunk-aware batch order.

A sample is frame t of one video that has a pseudo-GT: frames t−1, t, t+1 (clamped at the video's
ends) as uint8 at the stored size, the audio window of t, the stored event probability of t, whether
the video has audio, the pseudo-GT of t at the pseudo store's map size and, optionally, the stored
flow of t. Resizing and augmentation happen batched on the device, not here.

Reads go through `stores.datasets.ChunkCache` (one per store and process, re-opened in each DataLoader
worker): a whole t-chunk is decoded once and serves every sample that falls into it. To make that pay
off, `ChunkBatchSampler` orders samples so that a batch draws from a small window of chunks; the
order is a pure function of its settings and the epoch, which makes it resumable at any batch.
Batches are filled in place (`__getitems__`): each value is copied once, from a cached chunk into the
batch tensor, which in a DataLoader worker already lies in shared memory — about ten times less CPU
per sample than per-sample tensors stacked by `default_collate`. `STASamples.loader()` reads ahead
with threads (`ThreadLoader`, the default: Zarr's decompression and numpy's copies release the GIL, and
no batch has to cross to another process) or with DataLoader worker processes.
"""

from __future__ import annotations

import copy
import math
import queue
import random
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from stores import features as fstore
from stores import pseudo as pstore
from stores.cache import STRIDE8, STRIDE16, STRIDE32
from stores.datasets import ChunkCache
# The index of videos and splits lives in a torch-free module (`avfix status` reads it); re-exported here.
from stores.sample_index import SampleError, VideoSamples, index_videos, split_of  # noqa: F401


@dataclass(frozen=True)
class SampleItem:
    video_id: str
    t: int


class STASamples(Dataset):
    """Training samples of the STA network; see the module docstring.

    A batch (`__getitems__`) is a dict: `frames` uint8 (B, 3, H, W, 3), `audio` float32 (B, F, T),
    `event_prob` float32 (B,), `has_audio` bool (B,), `pseudo_gt` float16 (B, m, m), `flow` float16
    (B, 2, fh, fw) when `flow` is set, and `index` int64 (B,) (positions in the index). One item
    (`dataset[i]`) is the same without the batch dimension. With `levels_path` (a frozen backbone's
    cache) `stride32` float16 (B, 3, C, h, w) of the three frames and `stride16`, `stride8` (B, C, h, w)
    of frame t replace `frames`.
    """

    def __init__(self, features_path: str | Path, pseudo_path: str | Path, videos: list[VideoSamples],
                 events: dict[str, np.ndarray], *, flow: bool = False, cache_chunks: int = 64,
                 levels_path: str | Path | None = None) -> None:  # fmt: skip
        self.videos = list(videos)
        # Two flat arrays rather than a list of objects: an AVE-sized index (~10^6 frames) stays a few MB
        # and DataLoader workers share it without copying.
        self.item_video = np.concatenate([np.full(len(v.gt_frames), k, np.int32) for k, v in enumerate(videos)] or
                                         [np.zeros(0, np.int32)])  # fmt: skip
        self.item_t = np.concatenate([np.asarray(v.gt_frames, np.int32) for v in videos] or [np.zeros(0, np.int32)])
        self.events = events
        self.flow = flow
        self.frame_hw = _common_frame_size(videos)
        self.features = ChunkCache(features_path, max_chunks=cache_chunks)
        self.pseudo = ChunkCache(pseudo_path, max_chunks=cache_chunks)
        # A frozen backbone's cached levels (stores.cache.STA_CACHE) stand in for the frames.
        self.levels = ChunkCache(levels_path, max_chunks=cache_chunks) if levels_path is not None else None

    def __len__(self) -> int:
        return int(self.item_t.size)

    def item(self, index: int) -> SampleItem:
        return SampleItem(self.videos[self.item_video[index]].video_id, int(self.item_t[index]))

    @property
    def items(self) -> list[SampleItem]:
        return [self.item(index) for index in range(len(self))]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: values[0] for name, values in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        first = self.videos[self.item_video[indices[0]]].video_id
        shapes = self._visual_shapes(first)
        shapes |= {
            "audio": (self.features.array(first, fstore.AUDIO.name).shape[1:], torch.float32),
            "pseudo_gt": (self.pseudo.array(first, pstore.PSEUDO_GT.name).shape[1:], torch.float16),
        }
        if self.flow:
            shapes["flow"] = (self.features.array(first, fstore.FLOW.name).shape[1:], torch.float16)
        batch = {name: _batch_tensor((len(indices), *shape), dtype) for name, (shape, dtype) in shapes.items()}
        event_prob, has_audio = np.empty(len(indices), np.float32), np.empty(len(indices), bool)

        def put(target: torch.Tensor, value: np.ndarray) -> None:
            # torch's copy releases the GIL (numpy's assignment does not), so reader threads copy in parallel.
            target.copy_(torch.from_numpy(value))

        for row, index in enumerate(indices):
            video = self.videos[self.item_video[index]]
            t, last = int(self.item_t[index]), video.n_frames - 1
            for k, s in enumerate((t - 1, t, t + 1)):  # clamped at the video's ends
                s = min(max(s, 0), last)
                if self.levels is None:
                    put(batch["frames"][row, k], self.features.read(video.video_id, fstore.FRAMES.name, s))
                else:
                    put(batch[STRIDE32.name][row, k], self.levels.read(video.video_id, STRIDE32.name, s))
            if self.levels is not None:
                for name in (STRIDE16.name, STRIDE8.name):
                    put(batch[name][row], self.levels.read(video.video_id, name, t))
            put(batch["audio"][row], self.features.read(video.video_id, fstore.AUDIO.name, t))
            put(batch["pseudo_gt"][row], self.pseudo.read(video.video_id, pstore.PSEUDO_GT.name, t))
            if self.flow:
                put(batch["flow"][row], self.features.read(video.video_id, fstore.FLOW.name, t))
            event_prob[row], has_audio[row] = self.events[video.video_id][t], video.has_audio
        batch["event_prob"] = torch.from_numpy(event_prob)
        batch["has_audio"] = torch.from_numpy(has_audio)
        batch["index"] = torch.tensor(indices, dtype=torch.int64)
        return batch

    def _visual_shapes(self, video_id: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        if self.levels is None:
            return {"frames": ((3, *self.frame_hw, 3), torch.uint8)}
        rows = {spec.name: self.levels.array(video_id, spec.name).shape[1:] for spec in (STRIDE32, STRIDE16, STRIDE8)}
        rows[STRIDE32.name] = (3, *rows[STRIDE32.name])  # frames t-1, t, t+1
        return {name: (shape, torch.float16) for name, shape in rows.items()}

    def loader(self, batch_sampler: Iterable[list[int]], num_workers: int = 0, *, processes: bool = False,
               pin_memory: bool = False, persistent_workers: bool = False) -> Iterable[dict[str, torch.Tensor]]:
        """This dataset's batches in `batch_sampler`'s order, read ahead by `num_workers` threads, or by
        DataLoader worker processes with `processes` (0: read on demand in this thread)."""
        if processes:
            return DataLoader(self, batch_sampler=batch_sampler, num_workers=num_workers,
                              collate_fn=already_collated, pin_memory=pin_memory,
                              persistent_workers=persistent_workers and num_workers > 0)  # fmt: skip
        return ThreadLoader(self, batch_sampler, num_workers, pin_memory=pin_memory)

    def with_own_caches(self) -> "STASamples":
        """A copy that shares the index but reads through chunk caches of its own (one per thread)."""
        twin = copy.copy(self)
        twin.features = copy.copy(self.features)  # ChunkCache copies start empty (see its __getstate__)
        twin.pseudo = copy.copy(self.pseudo)
        twin.levels = copy.copy(self.levels)
        return twin

    def chunk_blocks(self, chunk_len: int = fstore.CHUNK_T) -> list[list[int]]:
        """Item indices grouped by (video, t-chunk of the frames array), in store order."""
        blocks: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (video, t) in enumerate(zip(self.item_video.tolist(), self.item_t.tolist())):
            blocks[(video, t // chunk_len)].append(index)
        return [blocks[key] for key in sorted(blocks)]


class ThreadLoader:
    """Batches of an `STASamples` read ahead by `threads` threads and yielded in order.

    Thread w reads batches w, w + T, w + 2T, ... through chunk caches of its own, as DataLoader worker w
    would (see `ChunkBatchSampler`'s streams), so threads share no mutable state. Compared with worker
    processes nothing crosses a process boundary: at 356 px a sample is 1.4 MB, and moving it through
    shared memory costs more than reading it from the stores.
    """

    def __init__(self, dataset: STASamples, batch_sampler: Iterable[list[int]], threads: int, depth: int = 2,
                 pin_memory: bool = False) -> None:  # fmt: skip
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.threads = threads
        self.depth = depth
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def _ready(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: tensor.pin_memory() for name, tensor in batch.items()} if self.pin_memory else batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = list(self.batch_sampler)
        if self.threads <= 0:
            for indices in batches:
                yield self._ready(self.dataset.__getitems__(indices))
            return
        stop = threading.Event()
        outboxes: list[queue.Queue] = [queue.Queue(maxsize=self.depth) for _ in range(self.threads)]

        def deliver(outbox: queue.Queue, item: tuple) -> bool:
            while not stop.is_set():
                try:
                    outbox.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read(worker: int) -> None:
            reader = self.dataset.with_own_caches()
            try:
                for indices in batches[worker :: self.threads]:
                    if not deliver(outboxes[worker], (self._ready(reader.__getitems__(indices)), None)):
                        return
            except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
                deliver(outboxes[worker], (None, error))

        workers = [threading.Thread(target=read, args=(w,), daemon=True, name=f"sta-reader-{w}")
                   for w in range(self.threads)]  # fmt: skip
        for worker in workers:
            worker.start()
        try:
            for k in range(len(batches)):
                batch, error = outboxes[k % self.threads].get()
                if error is not None:
                    raise error
                yield batch
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=5)


def already_collated(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader's collate function for datasets whose `__getitems__` returns whole batches."""
    return batch


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    # In a DataLoader worker the batch travels to the main process through shared memory; allocating it
    # there from the start (as `default_collate` does for its stacks) saves copying it once more.
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


def _common_frame_size(videos: list[VideoSamples]) -> tuple[int, int]:
    sizes = sorted({v.frame_hw for v in videos})
    if len(sizes) > 1:
        examples = ", ".join(f"{h}x{w}" for h, w in sizes[:4])
        raise SampleError(
            f"the stored frames have {len(sizes)} different sizes ({examples}): a batch needs one size; "
            "extract with a square --size (without --keep-aspect)"
        )
    return sizes[0] if sizes else (0, 0)


class ChunkBatchSampler(Sampler[list[int]]):
    """Global batches of `batch_size × world_size` items; this process gets its `rank`-th slice.

    Order per epoch (a pure function of `seed`, the epoch and `streams`): chunk blocks are shuffled and
    taken `window` blocks at a time; the items of a window are shuffled together and cut into batches.
    A batch thus reads at most about `window` chunks per array, and a chunk is decoded about once per
    epoch instead of once per sample, while batches still mix many videos.

    Windows are dealt to `streams` interleaved streams (batch k comes from stream k mod `streams`).
    A DataLoader hands batch k to worker k mod num_workers, so with `streams` = the number of workers
    each worker reads only its own windows' chunks; other worker counts stay correct, only some chunks
    are then decoded by more than one worker. The streams' leftovers are pooled into the last batches
    and only the final incomplete global batch is dropped, so every epoch has N // global_batch batches
    and every process the same number of items. `start_batch` skips the first batches (exact resume).
    """

    def __init__(self, blocks: list[list[int]], batch_size: int, *, window: int = 16, streams: int = 1,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        if batch_size < 1 or window < 1 or streams < 1:
            raise ValueError("batch_size, window and streams must be positive")
        self.blocks = blocks
        self.batch_size = batch_size
        self.window = window
        self.streams = streams
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{epoch}")
        blocks = list(self.blocks)
        rng.shuffle(blocks)
        streams: list[list[int]] = [[] for _ in range(self.streams)]
        for k, start in enumerate(range(0, len(blocks), self.window)):
            pooled = [index for block in blocks[start : start + self.window] for index in block]
            rng.shuffle(pooled)
            streams[k % self.streams] += pooled
        size = self.global_batch
        cut = [[stream[b * size : (b + 1) * size] for b in range(len(stream) // size)] for stream in streams]
        batches = [batches[k] for k in range(max(map(len, cut), default=0)) for batches in cut if k < len(batches)]
        leftovers = [index for stream in streams for index in stream[len(stream) // size * size :]]
        return batches + [leftovers[b * size : (b + 1) * size] for b in range(len(leftovers) // size)]

    def __len__(self) -> int:
        return max(0, sum(len(b) for b in self.blocks) // self.global_batch - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches(self.epoch)[self.start_batch :]:
            yield batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
