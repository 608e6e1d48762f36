"""STA training samples per second: the Zarr stores against the original one-file-per-item layout.

Both layouts are built in this run from the same generated frames:
- stores: features.zarr (frames stored as extract stores them, JPEG by default; audio windows) +
  pseudo.zarr (pseudo-GT), read by `stores.samples` with the chunk-aware batch order
  (`ChunkBatchSampler`) and 2 reader threads (as `avfix train`), and for comparison with 2 DataLoader
  worker processes;
- original (SPEC §1.2-1.3, §3.5): one JPEG per frame, one HDF5 file per audio window (key "dataset"),
  one grayscale JPEG per pseudo-GT, decoded with PIL and h5py in a plain shuffled DataLoader with 2
  worker processes, as the released code read them.
A sample is frames t−1, t, t+1 + the audio window of t + the pseudo-GT of t. Each loader is timed
twice: delivering batches (what a GPU run waits for: there the shared
augmentation runs on the GPU), and with the same augmentation (`pipeline.train.augment`) applied to every
batch in the main process on the CPU (what a CPU-only run sees). Also printed: the CPU time one
process spends per sample (reading + collating, in the loaders' batch orders; unlike wall-clock rates
it hardly depends on what else runs on the machine), the augmentation's own cost, the stores read in
fully random order (what the chunk-aware order buys), and the training steps/s of the tiny CPU
configuration next to the loader's rate at the same sizes.

    .venv/bin/python benchmarks/loader.py              # --size 356 --videos 16 --frames 64
    .venv/bin/python benchmarks/loader.py --quick      # smaller, for a smoke test
    .venv/bin/python benchmarks/loader.py --frame-codec lossless   # frames stored as uint8 + zstd

Other processes on the machine change the figures; ratios are measured in the same run, and each
loader's rate is the best of two alternating runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's avfix, not an installed one

from models.sta import sta_loss  # noqa: E402
from pipeline.common.flow import FlowConfig  # noqa: E402
from pipeline.train.augment import AugmentConfig, augment_batch, draw_affine  # noqa: E402
from pipeline.train.model import build_sta  # noqa: E402
from pipeline.workspace.presets import preset_config  # noqa: E402
from stores import features as fstore  # noqa: E402
from stores import pseudo as pstore  # noqa: E402
from stores.samples import ChunkBatchSampler, STASamples, index_videos  # noqa: E402

N_FREQ, N_TIME = 257, 48


def generated_video(size: int, n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (T, S, S, 3) uint8 with a moving bright square over a smooth texture, audio windows
    (T, 257, 48), and a Gaussian pseudo-GT (T, S, S) on the square."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (size // 8 + 2, size // 8 + 2, 3)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR))
    frames = np.repeat(texture[None] // 2, n_frames, axis=0)
    path = np.clip(rng.uniform(0.3, 0.7, 2) * size + rng.uniform(-2, 2, 2) * np.arange(n_frames)[:, None],
                   size // 10, size - size // 10 - 1).astype(int)  # fmt: skip
    half = max(size // 32, 2)
    coords = np.arange(size)
    gt = np.empty((n_frames, size, size), dtype=np.float32)
    for t, (cy, cx) in enumerate(path):
        frames[t, cy - half : cy + half, cx - half : cx + half] = 255
        gt[t] = np.exp(-((coords[:, None] - cy) ** 2 + (coords[None, :] - cx) ** 2) / (2 * (size / 12) ** 2))
    audio = rng.normal(0, 1, (n_frames, N_FREQ, N_TIME)).astype(np.float32)
    return frames, audio, gt


def build_layouts(root: Path, n_videos: int, n_frames: int, size: int, frame_codec: str = "jpeg") -> None:
    features = fstore.SCHEMA.open_for_writing(fstore.SCHEMA.path(root))
    fstore.SCHEMA.update_store(features, classes=["thing"], settings={"size": size})
    pseudo = pstore.SCHEMA.open_for_writing(pstore.SCHEMA.path(root))
    ids = [f"video{k:03d}" for k in range(n_videos)]
    pstore.SCHEMA.update_store(pseudo, classes=["thing"], settings={"event_threshold": 0.5}, train_videos=ids,
                               val_videos=[])  # fmt: skip
    for k, video_id in enumerate(ids):
        frames, audio, gt = generated_video(size, n_frames, seed=k)
        flow_side = max(8, round(size * FlowConfig().stored_scale))
        shape = fstore.VideoShape(n_frames, size, size, flow_side, flow_side, N_FREQ, N_TIME)
        video = fstore.FeaturesVideo(label="thing", n_frames=n_frames, height=size, width=size, has_audio=True)
        encodings = fstore.encodings(frame_codec, flow_step=FlowConfig().step)  # extract's defaults
        group = fstore.SCHEMA.create_video(features, video_id, video, shape.array_shapes(), encodings)
        arrays = fstore.open_video_arrays(fstore.SCHEMA.path(root), video_id)
        fstore.write_segment(arrays, 0, frames, np.zeros((n_frames, 2, flow_side, flow_side), np.float32), audio)
        fstore.SCHEMA.mark_complete(group, video_id, 1)
        zeros = np.zeros((n_frames, 3, 1, 1), np.float16)
        maps = pstore.VideoMaps(
            coarse_cam=zeros, fine_cam=zeros, branch_prob=np.zeros((n_frames, 2, 3), np.float32),
            branch_valid=np.ones((n_frames, 3), bool), event_prob=np.full(n_frames, 0.7, np.float32),
            box=np.zeros((n_frames, 4), np.int32), has_box=np.ones(n_frames, bool), fused=gt.astype(np.float16),
            pseudo_gt=gt.astype(np.float16), has_pseudo_gt=np.ones(n_frames, bool),
        )  # fmt: skip
        pstore.write_video(pseudo, video_id, maps, pstore.PseudoVideo(split="train"), video_id, 1)
        # The original layout: <video>/<NNNN>.jpg, <NNNN>_asp.h5, <NNNN>_c.jpg (SPEC §1.2, §1.3, §3.5).
        folder = root / "original" / video_id
        folder.mkdir(parents=True)
        for t in range(n_frames):
            Image.fromarray(frames[t]).save(folder / f"{t:04d}.jpg", quality=95)
            with h5py.File(folder / f"{t:04d}_asp.h5", "w") as handle:
                handle.create_dataset("dataset", data=audio[t][None])
            Image.fromarray((gt[t] * 255).astype(np.uint8)).save(folder / f"{t:04d}_c.jpg", quality=95)


class OriginalLayout(Dataset):
    """The released loaders' way: every item opens and decodes its own files."""

    def __init__(self, root: Path) -> None:
        self.videos = sorted(p for p in (root / "original").iterdir())
        lengths = {v: len(list(v.glob("*_c.jpg"))) for v in self.videos}
        self.items = [(v, t, lengths[v]) for v in self.videos for t in range(lengths[v])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        folder, t, n = self.items[index]
        frames = np.stack([np.asarray(Image.open(folder / f"{min(max(s, 0), n - 1):04d}.jpg").convert("RGB"))
                           for s in (t - 1, t, t + 1)])  # fmt: skip
        with h5py.File(folder / f"{t:04d}_asp.h5", "r") as handle:
            audio = np.asarray(handle["dataset"][0], dtype=np.float32)
        gt = np.asarray(Image.open(folder / f"{t:04d}_c.jpg").convert("L"), dtype=np.float32) / 255.0
        return {"frames": torch.from_numpy(frames), "audio": torch.from_numpy(audio),
                "event_prob": torch.tensor(0.7), "has_audio": torch.tensor(True),
                "pseudo_gt": torch.from_numpy(gt)}  # fmt: skip


WARMUP_BATCHES = 8  # worker start-up, first file and array opens, the allocator's first pages


def samples_per_second(loader: Iterable[dict[str, torch.Tensor]], input_size: int | None, max_batches: int) -> float:
    """Samples per second (augmented to `input_size` unless None) over `max_batches` batches after a warm-up."""
    generator = torch.Generator().manual_seed(0)
    augment = AugmentConfig()
    count, started = 0, time.perf_counter()
    for k, batch in enumerate(loader):
        if input_size is not None:
            theta = draw_affine(batch["frames"].shape[0], augment, generator)
            augment_batch(batch["frames"], batch["pseudo_gt"], theta, input_size)
        if k < WARMUP_BATCHES:
            started = time.perf_counter()
            continue
        count += batch["frames"].shape[0]
        if k >= WARMUP_BATCHES + max_batches - 1:
            break
    return count / (time.perf_counter() - started)


def store_dataset(root: Path) -> STASamples:
    videos, events, _ = index_videos(fstore.SCHEMA.path(root), pstore.SCHEMA.path(root))
    return STASamples(fstore.SCHEMA.path(root), pstore.SCHEMA.path(root), videos, events, cache_chunks=48)


def loaders(root: Path, batch_size: int, workers: int) -> dict[str, DataLoader]:
    stores = store_dataset(root)
    chunk_order = ChunkBatchSampler(stores.chunk_blocks(), batch_size, window=8, streams=max(workers, 1), seed=0)
    random_order = BatchSampler(RandomSampler(stores, generator=torch.Generator().manual_seed(0)), batch_size, True)
    original = OriginalLayout(root)
    return {
        "stores": stores.loader(chunk_order, workers),
        "stores_one_reader": store_dataset(root).loader(
            ChunkBatchSampler(stores.chunk_blocks(), batch_size, window=8, streams=1, seed=0), 1),
        "stores_worker_processes": store_dataset(root).loader(chunk_order, workers, processes=True),
        "stores_random_order": stores.loader(random_order, workers),
        "original": DataLoader(original, batch_size=batch_size, shuffle=True, num_workers=workers,
                               generator=torch.Generator().manual_seed(0)),
    }  # fmt: skip


def loader_rates(root: Path, batch_size: int, workers: int, input_size: int | None, max_batches: int,
                 repeats: int = 2) -> dict[str, float]:  # fmt: skip
    """The best of `repeats` runs of each loader (the runs alternate between loaders, so a burst of other
    work on the machine does not land on one loader only)."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, loader in loaders(root, batch_size, workers).items():
            best[name] = max(best.get(name, 0.0), samples_per_second(loader, input_size, max_batches))
    return best


def cpu_ms_per_sample(read_batch: Callable[[list[int]], Any], batches: list[list[int]]) -> float:
    """CPU time (all threads of this process) per sample to read `batches` collated, after one untimed
    batch (opening files and arrays)."""
    read_batch(batches[0])
    started = time.process_time()
    for batch in batches[1:]:
        read_batch(batch)
    return (time.process_time() - started) / sum(map(len, batches[1:])) * 1000


def cpu_costs(root: Path, batch_size: int, max_batches: int) -> dict[str, float]:
    stores = store_dataset(root)
    chunk_order = list(ChunkBatchSampler(stores.chunk_blocks(), batch_size, window=8, seed=0))[:max_batches]
    shuffled = torch.randperm(len(stores), generator=torch.Generator().manual_seed(0)).tolist()
    random_order = [shuffled[k : k + batch_size] for k in range(0, batch_size * max_batches, batch_size)]
    original = OriginalLayout(root)
    return {
        "stores": cpu_ms_per_sample(stores.__getitems__, chunk_order),
        "stores_random_order": cpu_ms_per_sample(store_dataset(root).__getitems__, random_order),
        "original": cpu_ms_per_sample(lambda batch: default_collate([original[i] for i in batch]), random_order),
    }


def augmentation_ms_per_sample(size: int, batch_size: int, repeats: int = 3) -> float:
    frames = torch.randint(0, 256, (batch_size, 3, size, size, 3), dtype=torch.uint8)
    target = torch.rand(batch_size, size, size).half()
    theta = draw_affine(batch_size, AugmentConfig(), torch.Generator().manual_seed(0))
    augment_batch(frames, target, theta, size)
    started = time.perf_counter()
    for _ in range(repeats):
        augment_batch(frames, target, theta, size)
    return (time.perf_counter() - started) / repeats / batch_size * 1000


def tiny_training_rate(root: Path, steps: int) -> tuple[float, int]:
    """Steps/s of the tiny CPU configuration on a fixed batch from the stores (no loading in the loop)."""
    config = preset_config("cpu", "train")
    torch.manual_seed(0)
    model = build_sta(config.model_settings())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch = store_dataset(root).__getitems__(list(range(config.batch_size)))
    theta = draw_affine(config.batch_size, config.augment, torch.Generator().manual_seed(0))
    augmented = augment_batch(batch["frames"], batch["pseudo_gt"], theta, config.input_size)
    started = None
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        output = model(augmented.frames, batch["audio"], batch["has_audio"], batch["event_prob"])
        loss = sta_loss(output, augmented.pseudo_gt, batch["event_prob"] >= 0.5, batch["has_audio"], config.loss).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - started), config.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=356, help="Stored frame and pseudo-GT side (SPEC: 356).")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=64, help="Frames per video.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40, help="Timed batches per loader (after 8 untimed).")
    parser.add_argument("--steps", type=int, default=20, help="Timed training steps of the tiny configuration.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (augmentation, training); with 2 readers on 2 cores "
                             "more threads only spin against them")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="Small sizes, few batches (a smoke test).")
    parser.add_argument("--frame-codec", choices=("jpeg", "lossless"), default="jpeg",
                        help="How the stores hold the frames (extract's [extract.frames] codec).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.videos, args.frames, args.batches, args.steps = 128, 8, 32, 6, 5
    tiny = preset_config("cpu", "train")
    work = Path(tempfile.mkdtemp(prefix="avfix-loader-"))
    try:
        print(f"torch threads {torch.get_num_threads()}, {args.workers} readers per loader, batch {args.batch_size}, "
              f"stored frames: {args.frame_codec}")
        began = time.perf_counter()
        build_layouts(work / "paper", args.videos, args.frames, args.size, args.frame_codec)
        build_layouts(work / "tiny", args.videos, args.frames, tiny.input_size, args.frame_codec)
        os.sync()  # the written files' writeback must not compete with the first loader timed
        print(f"built both layouts from the same frames in {time.perf_counter() - began:.1f} s "
              f"({args.videos} videos x {args.frames} frames at {args.size} px, and at {tiny.input_size} px)")
        plain = loader_rates(work / "paper", args.batch_size, args.workers, None, args.batches)
        augmented = loader_rates(work / "paper", args.batch_size, args.workers, args.size, args.batches)
        print(f"\n{args.size} px frames and pseudo-GT (SPEC sizes), samples/s    delivered   + CPU augmentation")
        labels = {"stores": f"stores ({args.workers} reader threads)", "stores_one_reader": "stores (1 reader thread)",
                  "stores_worker_processes": "stores (worker processes)",
                  "stores_random_order": "stores (fully random order)", "original": "original JPEG + HDF5 layout"}
        for name, label in labels.items():
            print(f"  {label:<30} {plain[name]:16.1f} {augmented[name]:19.1f}")
        for name in ("stores", "stores_one_reader"):
            print(f"  {'ratio ' + labels[name] + ' / original':<44} {plain[name] / plain['original']:6.2f}x "
                  f"{augmented[name] / augmented['original']:18.2f}x   (target >= 3x)")
        costs = cpu_costs(work / "paper", args.batch_size, args.batches)
        print("  CPU ms per sample, one process: " + ", ".join(f"{name} {ms:.2f}" for name, ms in costs.items())
              + f" (original / stores = {costs['original'] / costs['stores']:.1f}x)")
        print(f"  shared augmentation alone: {augmentation_ms_per_sample(args.size, args.batch_size):.1f} ms/sample "
              f"on the CPU ({torch.get_num_threads()} threads)")
        tiny_rates = loader_rates(work / "tiny", tiny.batch_size, args.workers, tiny.input_size, args.batches)
        steps_per_s, batch = tiny_training_rate(work / "tiny", args.steps)
        print(f"\ntiny CPU configuration ({tiny.input_size} px, batch {batch}):")
        print(f"  training                     {steps_per_s:8.2f} steps/s = {steps_per_s * batch:.1f} samples/s")
        print(f"  stores loader                {tiny_rates['stores']:8.1f} samples/s "
              f"({tiny_rates['stores'] / (steps_per_s * batch):.1f}x what training consumes)")
        print(f"  original layout loader       {tiny_rates['original']:8.1f} samples/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
