"""How good are the pseudo-fixation maps? Scored against the known position of the sounding object.

    .venv/bin/python benchmarks/pseudolabel_quality.py [--classes 4 --videos-per-class 8 --seconds 5]
                                                        [--workdir /tmp/avfix-quality]
                                                        [--presets cpu fast paper] [--paper-epochs 1]

Generates a tagged audio-visual set (`avfix synth`: each class an object with its own look and sound,
moving over clutter among silent distractors of the other classes' looks), runs extract once and
pseudolabel under each preset given (`cpu`: the tiny network from scratch; `fast`: the pretrained
backbone frozen; `paper`: it fine-tuned, for `--paper-epochs` per classifier to fit a CPU) on the CPU,
then scores maps against the sounding object's centre per frame with NSS and
AUC-Judd (fixation = the centre's pixel) and CC (against a Gaussian of σ = half the object's radius),
as SPEC §5.3 defines them (`models.metrics`). Rows:

- centre bias: a Gaussian in the middle of the frame (σ = a quarter of the side);
- coarse CAMs only: the probability-weighted fusion of the coarse S/ST/SA CAMs (SPEC §3.1), raw;
- coarse only, smoothed: the same inside the selection box (what `--no-fine` stores), through
  flow-guided smoothing and the 3 × mean threshold;
- coarse + fine, unsmoothed: fused fine CAMs (SPEC §3.4) thresholded without temporal smoothing;
- coarse + fine, plain smoothing: the paper's 5-frame average, then the threshold;
- coarse + fine, flow smoothing: the stored `pseudo_gt` (the default pipeline).

Every row is scored on the same frames: those that got a pseudo-GT; a map without contrast on one of them
(undefined NSS/CC/AUC) scores as chance. Steps are resumable: rerunning with
the same --workdir reuses the generated set, the features and the trained classifiers.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import zarr

from models.metrics import auc_judd, cc, center_bias, fixation_density, fixation_map, nss
from models.selection import box_masks, probability_weighted_fusion, temporal_smooth, threshold_pseudo_gt
from pipeline.common.scheduling import SchedulerConfig
from pipeline.extract.config import ExtractConfig
from pipeline.extract.run import run_extract
from pipeline.pseudolabel.maps import flow_on_map_grid
from pipeline.pseudolabel.run import PseudolabelConfig, run_pseudolabel
from pipeline.synth.generate import SynthConfig, generate
from pipeline.synth.truth import TRUTH_FILE, read_truth
from pipeline.workspace.presets import PRESET_NAMES, preset_config

CHANCE = {"NSS": 0.0, "CC": 0.0, "AUC-J": 0.5}
ROWS = (
    "centre bias",
    "coarse CAMs only",
    "coarse only, smoothed",
    "coarse + fine, unsmoothed",
    "coarse + fine, plain smoothing",
    "coarse + fine, flow smoothing",
)


def variant_maps(group: zarr.Group, flow: torch.Tensor, config: PseudolabelConfig) -> dict[str, torch.Tensor]:
    """Every row's maps (T, M, M) for one video, from the arrays pseudolabel stored."""
    coarse = torch.from_numpy(group["coarse_cam"][:].astype(np.float32))
    valid = torch.from_numpy(group["branch_valid"][:])
    probs = torch.from_numpy(np.nan_to_num(group["branch_prob"][:, 0]))
    has_box = torch.from_numpy(group["has_box"][:])
    boxes = torch.from_numpy(group["box"][:]).long()
    fused = torch.from_numpy(group["fused"][:].astype(np.float32))
    coarse_fused = probability_weighted_fusion(coarse, probs, valid)
    radius = config.smoothing_radius

    def finish(maps: torch.Tensor, motion: torch.Tensor | None, smooth: bool = True) -> torch.Tensor:
        smoothed = temporal_smooth(maps, has_box, radius, motion) if smooth else maps
        return threshold_pseudo_gt(smoothed, config.gt_factor) * has_box[:, None, None]

    size = coarse.shape[-2:]
    return {
        "centre bias": center_bias(tuple(size)).float().expand(coarse.shape[0], -1, -1),
        "coarse CAMs only": coarse_fused,
        "coarse only, smoothed": finish(coarse_fused * box_masks(boxes, tuple(size)), flow),
        "coarse + fine, unsmoothed": finish(fused, None, smooth=False),
        "coarse + fine, plain smoothing": finish(fused, None),
        "coarse + fine, flow smoothing": torch.from_numpy(group["pseudo_gt"][:].astype(np.float32)),
    }


def score_video(maps: dict[str, torch.Tensor], truth, frames: np.ndarray, source_wh: tuple[int, int],
                map_size: int, generator: torch.Generator) -> dict[str, dict[str, np.ndarray]]:  # fmt: skip
    """NSS, CC and AUC-Judd of each row on the given frames."""
    width, height = source_wh
    scale = np.array([map_size / width, map_size / height])
    # truth.csv puts (0, 0) at the centre of the top-left pixel; the metrics' pixel c spans [c, c + 1).
    centres = (np.stack([truth.x[frames], truth.y[frames]], axis=1) + 0.5) * scale
    points = torch.from_numpy(centres).unsqueeze(1)
    present = torch.ones(len(frames), 1, dtype=torch.bool)
    grid = (map_size, map_size)
    fixations = fixation_map(points, present, grid)
    sigma = torch.from_numpy(truth.radius[frames] * scale.mean() / 2)
    density = fixation_density(points, present, grid, sigma)
    scores = {}
    for row, stack in maps.items():
        selected = stack[torch.from_numpy(frames)].double()
        scores[row] = {
            "NSS": nss(selected, fixations).numpy(),
            "CC": cc(selected, density).numpy(),
            "AUC-J": auc_judd(selected, fixations, generator=generator).numpy(),
        }
    return scores


def preset_pseudolabel(preset: str, epochs: int | None, steps: int | None) -> PseudolabelConfig:
    """The preset's pseudolabel settings, its classifier training shortened when asked (to fit a CPU)."""
    config = preset_config(preset, "pseudolabel")
    train = config.train
    if epochs is not None:
        train = replace(train, epochs=epochs)
    if steps is not None:
        train = replace(train, max_steps=steps)
    return replace(config, train=train)


def score_workspace(workspace: Path, videos: Path, config: PseudolabelConfig) -> tuple[dict, int, int]:
    """Every row's scores (per metric, one array per video) on the frames that got a pseudo-GT."""
    truth = read_truth(videos / TRUTH_FILE)
    root = zarr.open_group(str(workspace / "pseudo.zarr"), mode="r")
    features = zarr.open_group(str(workspace / "features.zarr"), mode="r")
    generator = torch.Generator().manual_seed(0)
    collected: dict[str, dict[str, list[np.ndarray]]] = {row: {"NSS": [], "CC": [], "AUC-J": []} for row in ROWS}
    n_frames = n_scored = 0
    for video_id, group in sorted(root["videos"].groups()):
        has_gt = group["has_pseudo_gt"][:]
        n_frames += has_gt.size
        frames = np.flatnonzero(has_gt)
        n_scored += frames.size
        if not frames.size:
            continue
        video = features[f"videos/{video_id}"]
        frame_hw = (int(video.attrs["height"]), int(video.attrs["width"]))
        flow = flow_on_map_grid(video["flow"][:], frame_hw, config.map_size)
        maps = variant_maps(group, flow, replace(config, smoothing="flow"))
        source_wh = (int(video.attrs["source_width"]), int(video.attrs["source_height"]))
        for row, scores in score_video(maps, truth[video_id], frames, source_wh, config.map_size, generator).items():
            for metric, values in scores.items():
                collected[row][metric].append(values)
    return collected, n_scored, n_frames


def print_table(results: dict[str, tuple[dict, int, int]]) -> None:
    print(f"| {'preset':6s} | {'maps':32s} | {'NSS':>13s} | {'CC':>13s} | {'AUC-Judd':>13s} | frames |")
    print(f"|{'-' * 8}|{'-' * 34}|{'-' * 15}|{'-' * 15}|{'-' * 15}|{'-' * 8}|")
    for preset, (collected, n_scored, n_frames) in results.items():
        for row in ROWS:
            cells = []
            for metric in ("NSS", "CC", "AUC-J"):
                values = np.concatenate(collected[row][metric]) if collected[row][metric] else np.zeros(0)
                # A map without contrast (e.g. thresholded to all zeros) is undefined: it scores as chance.
                values = np.where(np.isfinite(values), values, CHANCE[metric])
                cells.append(f"{values.mean():6.3f} ± {values.std():5.3f}" if values.size else f"{'-':>13s}")
            print(f"| {preset:6s} | {row:32s} | " + " | ".join(cells) + f" | {n_scored}/{n_frames} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--videos-per-class", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=128, help="Side of the generated and stored frames.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--presets", nargs="+", choices=PRESET_NAMES, default=["cpu", "fast"],
                        help="Each preset's pseudolabel settings, on the same extracted set.")  # fmt: skip
    parser.add_argument("--paper-epochs", type=int, default=1, help="Epochs per classifier of the paper preset.")
    parser.add_argument("--paper-steps", type=int, default=None, help="Steps per classifier of the paper preset.")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/avfix-quality"))
    args = parser.parse_args()

    timings = {}
    began = time.perf_counter()
    videos, extracted_ws = args.workdir / "videos", args.workdir / "ws"
    synth = SynthConfig(classes=args.classes, videos_per_class=args.videos_per_class, seconds=args.seconds,
                        fps=args.fps, width=args.size, height=args.size, seed=args.seed)  # fmt: skip
    generate(videos, synth)
    timings["synth"] = time.perf_counter() - began
    began = time.perf_counter()
    extracted = run_extract(videos, extracted_ws, ExtractConfig(size=args.size), SchedulerConfig(workers=2))
    timings["extract"] = time.perf_counter() - began
    if not extracted.ok:
        raise SystemExit(f"extract failed: {extracted.failures}")
    results = {}
    for preset in args.presets:
        # The cpu preset keeps the original workspace (reruns of older versions of this script reuse it).
        workspace = extracted_ws if preset == "cpu" else args.workdir / f"ws-{preset}"
        if workspace != extracted_ws and not (workspace / "features.zarr").exists():
            workspace.mkdir(parents=True, exist_ok=True)
            shutil.copytree(extracted_ws / "features.zarr", workspace / "features.zarr")
        shorter = preset == "paper"
        config = preset_pseudolabel(preset, args.paper_epochs if shorter else None, args.paper_steps if shorter else None)
        began = time.perf_counter()
        summary = run_pseudolabel(workspace, config, report=lambda line: print(line, flush=True))
        timings[f"pseudolabel {preset}"] = time.perf_counter() - began
        print(summary.line(), flush=True)
        results[preset] = score_workspace(workspace, videos, config)

    print("\nEach preset is scored on the frames that got a pseudo-GT under it (mean ± std over frames; the "
          "centre bias on the same frames)\n")  # fmt: skip
    print_table(results)
    print("\nminutes: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
