"""How much flow precision and resolution its two consumers need, on real footage.

    .venv/bin/python benchmarks/flow_storage.py [--clip bigbuckbunny] [--size 356]

Flow is computed as extract computes it (DIS ultrafast on a grid at 0.5x the stored 356 px frame) and
then stored in reduced forms: quantised to steps of s pixels (int8 or int16, clipped), area-averaged
to a coarser grid, or computed on a coarser grid directly. Each form is compared with the float
reference where it is used:
- pseudolabel: flow-guided temporal smoothing (`models.selection.temporal_smooth`, radius 2, then
  `threshold_pseudo_gt`) of stand-in saliency maps (blurred gradient magnitude of each frame to the 4th power, at the
  356 px map size), as mean |Δ pseudo-GT| against the reference and next to what dropping the flow
  altogether (plain smoothing) changes;
Stored size: KiB per frame of the form's integers (or float16) after zstd level 1, as extract stores it.
- train (`models.sta.FlowEncoder`'s input): the flow resized to the 356 px input, in FLOW_UNIT_PIXELS,
  average-pooled to 4x the L4 grid (48x48) as the encoder does; RMS error against the reference's RMS.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from numcodecs import Zstd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import footage  # noqa: E402
from models.selection import temporal_smooth, threshold_pseudo_gt  # noqa: E402
from models.sta import FLOW_UNIT_PIXELS  # noqa: E402
from pipeline.common.flow import FlowComputer, FlowConfig  # noqa: E402
from pipeline.pseudolabel.maps import flow_on_map_grid  # noqa: E402
from pipeline.train.augment import resize_flow  # noqa: E402


def frames_of(path: Path, size: int) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([cv2.resize(f.to_ndarray(format="rgb24"), (size, size), interpolation=cv2.INTER_AREA)
                         for f in container.decode(video=0)])  # fmt: skip


def flow_of(frames: np.ndarray, scale: float) -> np.ndarray:
    computer = FlowComputer(FlowConfig(scale=scale, stored_scale=scale), (frames.shape[2], frames.shape[1]))
    return np.stack([computer.next(frame) for frame in frames])


def quantised(flow: np.ndarray, step: float, bits: int = 8) -> np.ndarray:
    limit = 2 ** (bits - 1) - 1
    return (np.clip(np.round(flow / step), -limit, limit) * step).astype(np.float32)


def stored_kib(form: np.ndarray, name: str) -> float:
    """KiB per frame of the form as stored: integers (int8/int16 steps) or float16, then zstd level 1."""
    step = float(name.split("step ")[1].split(" px")[0].replace("1/", "")) if "step" in name else 0.0
    step = 1 / step if "step 1/" in name else step
    dtype = np.int8 if name.startswith("int8") else np.int16
    values = np.round(form / step).astype(dtype) if step else form.astype(np.float16)
    return len(Zstd(level=1).encode(np.ascontiguousarray(values))) / form.shape[0] / 1024


def area(flow: np.ndarray, factor: int) -> np.ndarray:
    t, c, h, w = flow.shape
    return F.adaptive_avg_pool2d(torch.from_numpy(flow), (h // factor, w // factor)).numpy()


def stand_in_maps(frames: np.ndarray) -> torch.Tensor:
    maps = []
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        magnitude = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
        blurred = cv2.GaussianBlur(magnitude, (0, 0), frames.shape[1] / 40)
        # Raised to a power so that, like a saliency map, a few regions stand out above 3x the mean.
        maps.append((blurred / max(float(blurred.max()), 1e-6)) ** 4)
    return torch.from_numpy(np.stack(maps))


def pseudo_gt(maps: torch.Tensor, flow: np.ndarray | None, size: int) -> torch.Tensor:
    valid = torch.ones(maps.shape[0], dtype=torch.bool)
    grid = flow_on_map_grid(flow, (size, size), size) if flow is not None else None
    return threshold_pseudo_gt(temporal_smooth(maps, valid, 2, grid), 3.0)


def encoder_input(flow: np.ndarray, size: int) -> torch.Tensor:
    resized = resize_flow(torch.from_numpy(flow), (size, size), size)
    return F.adaptive_avg_pool2d(resized / FLOW_UNIT_PIXELS, (48, 48))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="bigbuckbunny", choices=sorted(footage.CLIPS))
    parser.add_argument("--size", type=int, default=356)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frames = frames_of(footage.clip(args.clip), args.size)
    reference = flow_of(frames, 0.5)
    magnitude = np.hypot(reference[:, 0], reference[:, 1])
    print(f"{args.clip}: {len(frames)} frames at {args.size} px; reference flow {reference.shape[2:]} grid, "
          f"|flow| mean {magnitude.mean():.2f} px, 99th pct {np.percentile(magnitude, 99):.1f}, "
          f"max {magnitude.max():.1f} px")  # fmt: skip
    coarse = flow_of(frames, 0.25)
    forms = {
        "float16, 0.5x grid (today)": reference.astype(np.float16).astype(np.float32),
        "int8 step 0.25 px, 0.5x grid": quantised(reference, 0.25),
        "int8 step 0.5 px, 0.5x grid": quantised(reference, 0.5),
        "float, 0.25x grid (area of 0.5x)": area(reference, 2),
        "int8 step 0.25 px, 0.25x grid (area)": quantised(area(reference, 2), 0.25),
        "int8 step 0.5 px, 0.25x grid (area)": quantised(area(reference, 2), 0.5),
        "int8 step 0.25 px, 0.125x grid (area)": quantised(area(reference, 4), 0.25),
        "int16 step 1/32 px, 0.5x grid": quantised(reference, 1 / 32, 16),
        "int16 step 1/32 px, 0.25x grid (area): extract's": quantised(area(reference, 2), 1 / 32, 16),
        "int16 step 1/16 px, 0.25x grid (area)": quantised(area(reference, 2), 1 / 16, 16),
        "float, computed at 0.25x": coarse,
        "int8 step 0.25 px, computed at 0.25x": quantised(coarse, 0.25),
    }
    maps = stand_in_maps(frames)
    gt_ref = pseudo_gt(maps, reference, args.size)
    plain = (pseudo_gt(maps, None, args.size) - gt_ref).abs().mean().item()
    enc_ref = encoder_input(reference, args.size)
    enc_rms = enc_ref.pow(2).mean().sqrt().item()
    print(f"plain smoothing (no flow) vs flow-guided: mean |Δ pseudo-GT| {plain:.4f} "
          f"(pseudo-GT mean {gt_ref.mean().item():.4f}, {(gt_ref > 0).float().mean().item():.1%} of pixels > 0)")
    print(f"{'stored form':50s} {'KiB/frame':>9s} {'|Δ pseudo-GT|':>13s} {'/plain':>7s} {'enc. input RMS err':>19s}")
    for name, form in forms.items():
        gt_diff = (pseudo_gt(maps, form, args.size) - gt_ref).abs().mean().item()
        enc_err = (encoder_input(form, args.size) - enc_ref).pow(2).mean().sqrt().item()
        print(f"{name:50s} {stored_kib(form, name):>9.1f} {gt_diff:>13.5f} {gt_diff / plain:>7.3f} "
              f"{enc_err:>8.4f} ({enc_err / enc_rms:.1%})")  # fmt: skip


if __name__ == "__main__":
    main()
