"""What making one more video's group and arrays costs as a store grows, against zarr-python doing it.

A coordinator (extract's, pseudolabel's, predict's) makes each video's group and preallocated arrays.
zarr-python's `create_group` / `create_array` read the parents' metadata first, and the root's holds the
consolidated metadata of every node once a run has ended, so with zarr each new video cost time in
proportion to the store: a rerun resuming or adding videos to an AVE-sized store (~4,100 videos) paid
that per video. avfix writes zarr's own zarr.json files straight to the new folders
(`stores.zarr_io.new_video_group`, `write_array_metadata`).

For stores of N consolidated features videos (the real schema: frames, flow, audio and three axes), in
the same run: ms per new video made by `SCHEMA.create_video` against zarr-python's calls for the same
group and arrays (the baseline), and what consolidating the store at the end of a run costs.

    .venv/bin/python benchmarks/store_scale.py                # N = 100, 1000, 4000
    .venv/bin/python benchmarks/store_scale.py --sizes 100 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stores import features as fstore  # noqa: E402
from stores import zarr_io  # noqa: E402
from stores.schema import to_attrs  # noqa: E402

SHAPE = fstore.VideoShape(n_frames=250, height=356, width=356, flow_height=89, flow_width=89, n_freq=257,
                          n_time=48)  # fmt: skip  # a 10 s AVE clip at 25 fps
VIDEO = fstore.FeaturesVideo(label="dog", source_path="/data/dog.mp4", n_frames=250, fps=25.0)
ENCODINGS = fstore.encodings("jpeg", 95, "444", 1 / 32)
TIMED = {"avfix": 20, "zarr": 5}  # new videos timed per store size (zarr's take seconds each at 4,000)


def with_zarr(root, video_id: str) -> None:  # noqa: ANN001
    """The baseline: the same group and arrays made by zarr-python's own calls."""
    group = root[zarr_io.VIDEOS].create_group(video_id, overwrite=True)
    group.update_attributes({**to_attrs(VIDEO), "status": zarr_io.STATUS_IN_PROGRESS})
    shapes = SHAPE.array_shapes()
    for spec in fstore.SCHEMA.arrays:
        chunks = (max(1, min(spec.chunk_t, shapes[spec.name][0])), *shapes[spec.name][1:])
        encoding = ENCODINGS.get(spec.name) or zarr_io.Encoding(compressors=zarr_io.codecs(spec.zstd_level))
        group.create_array(spec.name, shape=shapes[spec.name], chunks=chunks, dtype=spec.dtype,
                           fill_value=spec.fill_value, filters=encoding.filters, serializer=encoding.serializer,
                           compressors=encoding.compressors, dimension_names=spec.dims,
                           chunk_key_encoding=zarr_io.CHUNK_KEYS, overwrite=True)  # fmt: skip


def with_avfix(root, video_id: str) -> None:  # noqa: ANN001
    fstore.SCHEMA.create_video(root, video_id, VIDEO, SHAPE.array_shapes(), ENCODINGS)


def per_video_ms(make, root, prefix: str, count: int) -> float:  # noqa: ANN001
    began = time.perf_counter()
    for k in range(count):
        make(root, f"{prefix}{k:03d}")
    return (time.perf_counter() - began) / count * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avfix-store-scale-") as name:
        store = Path(name) / "features.zarr"
        fstore.SCHEMA.open_for_writing(store)
        made = 0
        for size in sorted(args.sizes):
            root = fstore.SCHEMA.open_for_writing(store)
            while made < size:
                with_avfix(root, f"v{made:05d}")
                made += 1
            began = time.perf_counter()
            zarr_io.consolidate(store)
            consolidate = time.perf_counter() - began
            root = fstore.SCHEMA.open_for_writing(store)  # as a rerun opens it
            theirs = per_video_ms(with_zarr, root, f"zarr{size}-", TIMED["zarr"])
            ours = per_video_ms(with_avfix, root, f"avfix{size}-", TIMED["avfix"])
            print(f"{size:5d} consolidated videos: a new video's group and arrays {ours:6.1f} ms (avfix) against "
                  f"{theirs:7.1f} ms (zarr-python): {theirs / ours:5.1f}x; consolidating the store "
                  f"{consolidate:5.2f} s ({consolidate / size * 1e3:.1f} ms per video)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
