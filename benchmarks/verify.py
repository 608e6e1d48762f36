"""How fast `avfix verify` checks a store, against reading the same chunk files' bytes and nothing else.

Builds a features store of generated 356 px videos (frames that barely compress, as real photos, with
their flow and audio arrays), then times, in the same run and over the same warm files:
- baseline: every chunk file read into memory (the least any check must do),
- verify: `stores.integrity.verify_store`, each chunk read and checked against its CRC32C.

    .venv/bin/python benchmarks/verify.py            # --frames 2000 for a larger store
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from stores import features as fstore
from stores.integrity import verify_store


def build_store(path: Path, n_videos: int, frames_per_video: int, size: int) -> None:
    schema = fstore.SCHEMA
    root = schema.open_for_writing(path)
    schema.update_store(root, classes=["thing"])
    rng = np.random.default_rng(0)
    for k in range(n_videos):
        video_id = f"video{k:03d}"
        shape = fstore.VideoShape(frames_per_video, size, size, size // 2, size // 2, 257, 48)
        video = fstore.FeaturesVideo(label="thing", n_frames=frames_per_video, height=size, width=size, has_audio=True)
        group = schema.create_video(root, video_id, video, shape.array_shapes())
        arrays = fstore.open_video_arrays(path, video_id)
        for start in range(0, frames_per_video, fstore.CHUNK_T):
            n = min(fstore.CHUNK_T, frames_per_video - start)
            frames = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            flow = rng.normal(0, 2, (n, 2, size // 2, size // 2)).astype(np.float32)
            audio = rng.normal(0, 1, (n, 257, 48)).astype(np.float32)
            fstore.write_segment(arrays, start, frames, flow, audio)
        fstore.write_axes(group, np.arange(frames_per_video) / 25.0, np.zeros(257, np.float32), np.zeros(48, np.float32))
        schema.mark_complete(group, video_id, 1)


def read_all_bytes(path: Path) -> tuple[int, float]:
    began = time.perf_counter()
    total = sum(len(chunk.read_bytes()) for chunk in (path / "videos").rglob("c[./]*") if chunk.is_file())
    return total, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="Frames in all (spread over --videos videos).")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--size", type=int, default=356)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avfix-verify-") as work:
        store = Path(work) / "features.zarr"
        began = time.perf_counter()
        build_store(store, args.videos, args.frames // args.videos, args.size)
        print(f"built {args.frames} frames of {args.size} px in {time.perf_counter() - began:.1f} s")
        read_all_bytes(store)  # warm the page cache for both
        baseline, verified = [], []
        for _ in range(args.rounds):
            size, seconds = read_all_bytes(store)
            baseline.append(size / 1e9 / seconds)
            began = time.perf_counter()
            check = verify_store(store, mark=False)
            verified.append(check.bytes / 1e9 / (time.perf_counter() - began))
            assert not check.damaged and check.videos == args.videos
        print(f"store: {size / 1e9:.2f} GB in {check.chunks} chunks of {args.videos} videos")
        print(f"read the chunk files:   {np.median(baseline):.2f} GB/s (median of {args.rounds})")
        print(f"avfix verify:           {np.median(verified):.2f} GB/s = {np.median(verified) / np.median(baseline):.2f}x "
              "the plain read")  # fmt: skip


if __name__ == "__main__":
    main()
