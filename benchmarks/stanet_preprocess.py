"""The original STANet preprocessing, restated as a baseline for `benchmarks/extract.py` (written from
its description, SPEC §1.2-1.3, not from its code):

- frames: OpenCV reads every frame of the video, resizes it to 356x356 (`cv2.resize`, its default
  bilinear interpolation) and writes it as its own JPEG file at quality 95 (OpenCV's default 4:2:0);
- audio: the soundtrack as 16 kHz mono, and per frame the 0.5 s window starting at the frame's time
  (zero-padded past the end) turned into one `scipy.signal.spectrogram` (nperseg 512, noverlap 353:
  257 x 48), its log written as float32 to its own HDF5 file under the key "dataset" (the layout
  `benchmarks/loader.py` reads as "the original layout").

One plain loop in one process, as the released scripts ran.

    .venv/bin/python benchmarks/stanet_preprocess.py [--clip bigbuckbunny]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import h5py
import numpy as np

SIZE = 356
RATE = 16000
WINDOW = RATE // 2
LOG_EPS = 1e-7


def soundtrack(path: Path) -> np.ndarray:
    """The audio stream as 16 kHz mono float32 (empty when the file has none)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        frames = [*container.decode(audio=0), None]  # None flushes the resampler
        pieces = [out.to_ndarray().reshape(-1) for frame in frames for out in resampler.resample(frame)]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def preprocess(video: Path, out: Path) -> int:
    """Write `out`/NNNN.jpg and `out`/NNNN_asp.h5 for every frame of `video`; returns the frame count."""
    from scipy.signal import spectrogram

    out.mkdir(parents=True, exist_ok=True)
    signal = soundtrack(video)
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        small = cv2.resize(frame, (SIZE, SIZE))
        cv2.imwrite(str(out / f"{count:04d}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 95])
        start = int(round(count / fps * RATE))
        window = np.zeros(WINDOW, np.float32)
        piece = signal[start : start + WINDOW]
        window[: piece.size] = piece
        _, _, spectrum = spectrogram(window, fs=RATE, nperseg=512, noverlap=353)
        with h5py.File(out / f"{count:04d}_asp.h5", "w") as handle:
            handle.create_dataset("dataset", data=np.log(spectrum + LOG_EPS).astype(np.float32)[None])
        count += 1
    capture.release()
    return count


def stored_bytes(folder: Path) -> dict[str, int]:
    """Bytes on disk of the frames' JPEGs and of the audio windows' HDF5 files."""
    return {
        "frames": sum(p.stat().st_size for p in folder.rglob("*.jpg")),
        "audio": sum(p.stat().st_size for p in folder.rglob("*_asp.h5")),
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import footage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="bigbuckbunny", choices=sorted(footage.CLIPS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avfix-stanet-") as tmp:
        began = time.perf_counter()
        n = preprocess(footage.clip(args.clip), Path(tmp))
        seconds = time.perf_counter() - began
        sizes = stored_bytes(Path(tmp))
    print(f"{args.clip}: {n} frames in {seconds:.1f} s = {n / seconds:.0f} frames/s; per frame: JPEG "
          f"{sizes['frames'] / n / 1024:.1f} KiB + HDF5 window {sizes['audio'] / n / 1024:.1f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
