"""Which frame codec: bytes per frame, encode and decode CPU, PSNR, on real footage at the stored size.

    .venv/bin/python benchmarks/frame_codecs.py [--clip bigbuckbunny] [--size 356] [--every 3]

Frames are decoded and resized as extract does (`media.decode_frames`), then stored 16 to a chunk as
extract stores them: lossless (uint8 + zstd level 1, the former default) and `stores.codecs`' JPEG
chunks at several qualities and chroma subsamplings (4:2:0 is JPEG's usual default and the original
STANet layout's). CPU is this process's, one thread. Target: PSNR >= 40 dB at the fewest bytes.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import cv2
import numpy as np
from numcodecs import Zstd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import footage  # noqa: E402
from pipeline.common import media  # noqa: E402
from stores import codecs  # noqa: E402

CHUNK = 16


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def measure(frames: np.ndarray, encode, decode) -> tuple[float, float, float, float]:  # noqa: ANN001
    """KiB per frame, encode and decode ms per frame, PSNR of the decoded frames."""
    chunks = [frames[k : k + CHUNK] for k in range(0, len(frames), CHUNK)]
    began = cpu_seconds()
    encoded = [encode(chunk) for chunk in chunks]
    encode_ms = (cpu_seconds() - began) / len(frames) * 1e3
    began = cpu_seconds()
    decoded = np.concatenate([decode(data, chunk.shape) for data, chunk in zip(encoded, chunks)])
    decode_ms = (cpu_seconds() - began) / len(frames) * 1e3
    kib = sum(map(len, encoded)) / len(frames) / 1024
    quality = psnr(decoded, frames) if not np.array_equal(decoded, frames) else float("inf")
    return kib, encode_ms, decode_ms, quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="bigbuckbunny", choices=sorted(footage.CLIPS))
    parser.add_argument("--size", type=int, default=356)
    parser.add_argument("--every", type=int, default=1, help="Keep every n-th frame (a shorter run).")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    found = media.probe(footage.clip(args.clip))
    out_wh = media.output_size(found.width, found.height, args.size, False)
    frames = np.stack(list(media.decode_frames(found, media.target_times(found, None), out_wh, 1)))[:: args.every]
    print(f"{args.clip}: {len(frames)} frames at {out_wh[0]}x{out_wh[1]}")
    zstd = Zstd(level=1)
    rows = {"lossless (uint8 + zstd 1)": measure(
        frames, lambda chunk: bytes(zstd.encode(chunk)),
        lambda data, shape: np.frombuffer(zstd.decode(data), np.uint8).reshape(shape),
    )}  # fmt: skip
    for subsampling in ("420", "444"):
        for quality in (90, 93, 95, 97):
            rows[f"JPEG q{quality} {subsampling}"] = measure(
                frames, lambda chunk, q=quality, s=subsampling: codecs.encode_jpeg_frames(chunk, q, s),
                lambda data, shape: codecs.decode_jpeg_frames(data, np.empty(shape, np.uint8)),
            )  # fmt: skip
    print(f"{'codec':28s} {'KiB/frame':>9s} {'encode ms':>9s} {'decode ms':>9s} {'PSNR dB':>8s}")
    for name, (kib, encode_ms, decode_ms, quality) in rows.items():
        print(f"{name:28s} {kib:9.1f} {encode_ms:9.2f} {decode_ms:9.2f} {quality:8.2f}")


if __name__ == "__main__":
    main()
