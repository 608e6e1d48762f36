"""`avfix evaluate` on real human fixations: the scene-fixations set (100 images, 12 observers).

    .venv/bin/python benchmarks/evaluate_scene.py [--data /work/shared/data/scene-fixations] [--workspace DIR]
                                                  [--shuffle auto] [--against-rev REV] [--large] [--no-speed]
                                                  [--device auto] [--threads 1]

1. Runs the evaluate stage with the centre-bias, ImageNet-CAM and centre x CAM baselines and prints the
   table of all metrics (mean ± std over images), the paired differences between the rows with their
   bootstrap intervals, the wall and CPU time and the peak RSS. The same as
   `avfix evaluate DATA --workspace WS --baseline center --baseline cam --baseline center-cam`.
   With `--against-rev REV` the stage of that git revision (exported to a temporary folder) runs first on
   the same data in a subprocess, and the times of the two are printed side by side (the "before" of a
   change, measured in the same run on the same machine state). `--large` keeps only the images larger
   than 256 x 256 in pixels (24 of them, up to 3264 x 2448), where the per-pixel work dominates.
2. Speed of the batched metrics (`models.metrics.all_metrics`, all six metrics on every 256 x 256 image of
   the set at once) against a per-map NumPy restatement that follows the MATLAB code (a threshold loop
   for AUC-Judd, a split loop with `randperm` for the shuffled AUC), on the same maps in the same run,
   both on one CPU thread (the stage's default, `--threads`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import metrics  # noqa: E402
from pipeline.common.progress import Progress  # noqa: E402
from pipeline.evaluate import fixations as fx  # noqa: E402
from pipeline.evaluate.baselines import BaselineConfig  # noqa: E402
from pipeline.evaluate.config import DensityConfig, EvaluateConfig  # noqa: E402
from pipeline.evaluate.report import paired_markdown  # noqa: E402
from pipeline.evaluate.run import run_evaluate  # noqa: E402

DEFAULT_DATA = Path("/work/shared/data/scene-fixations")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_stage(data: Path, workspace: Path, device: str, threads: int, shuffle: str) -> tuple[float, float]:
    """The stage as a user runs it; prints its tables and returns its (wall, CPU) seconds."""
    config = EvaluateConfig(baselines=("center", "cam", "center-cam"), device=device, threads=threads,
                            shuffle=shuffle)
    began, cpu = time.perf_counter(), cpu_seconds()
    summary = run_evaluate(data, workspace, config, Progress(enabled=True, unit="batch"))
    seconds, cpu = time.perf_counter() - began, cpu_seconds() - cpu
    print(summary.line())
    report = json.loads(Path(summary.report_json).read_text())
    dataset = report["datasets"][0]
    print(f"\n{dataset['name']}: {dataset['n_images']} images, s-AUC variant {dataset['shuffle']} "
          f"({report['settings']['shuffle_description']}), density {report['settings']['density']}\n")
    header = "| row | " + " | ".join(metrics.METRICS) + " |"
    print(header)
    print("|" + "---|" * (len(metrics.METRICS) + 1))
    for row in report["settings"]["rows"]:
        cells = [f"{dataset['summary'][row][m]['mean']:.3f} ± {dataset['summary'][row][m]['std']:.3f}" for m in metrics.METRICS]
        print(f"| {row} | " + " | ".join(cells) + " |")
    if dataset.get("paired", {}).get("pairs"):
        print()
        print("\n".join(paired_markdown(dataset["paired"])))
    print(f"\nevaluate stage ({threads or 'default'} torch thread(s)): {seconds:.1f} s wall, {cpu:.1f} s CPU, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    return seconds, cpu


_OLD_STAGE = """
import json, resource, sys, time, torch
from pathlib import Path
torch.set_grad_enabled(False)
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.run import run_evaluate
data, workspace, device, threads, shuffle = sys.argv[1:6]
config = EvaluateConfig(baselines=("center", "cam", "center-cam"), device=device, threads=int(threads),
                        shuffle=shuffle)
usage = resource.getrusage(resource.RUSAGE_SELF)
began, cpu = time.perf_counter(), usage.ru_utime + usage.ru_stime
run_evaluate(Path(data), Path(workspace), config)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps([time.perf_counter() - began, usage.ru_utime + usage.ru_stime - cpu]))
"""


def large_images_only(data: Path, scratch: Path) -> Path:
    """A copy of the set (links to its images) holding only the images larger than 256 x 256."""
    import csv

    import cv2

    subset = scratch / "large-set"
    (subset / "stimuli").mkdir(parents=True)
    kept = set()
    for image in sorted((data / "stimuli").iterdir()):
        height, width = cv2.imread(str(image), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape[:2]
        if height * width > 32 * 32:  # at a eighth of the size: larger than 256 x 256
            (subset / "stimuli" / image.name).symlink_to(image.resolve())
            kept.add(image.name)
    with open(data / "fixations.csv", newline="") as source, open(subset / "fixations.csv", "w", newline="") as out:
        reader = csv.reader(source)
        writer = csv.writer(out)
        writer.writerow(next(reader))
        writer.writerows(row for row in reader if row[0] in kept)
    return subset


def run_revision(revision: str, data: Path, scratch: Path, device: str, threads: int,
                 shuffle: str) -> tuple[float, float]:
    """The evaluate stage of another git revision on the same data, in a subprocess: (wall, CPU) seconds."""
    tree = scratch / "revision"
    tree.mkdir()
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    done = subprocess.run([sys.executable, "-c", _OLD_STAGE, str(data), str(scratch / "old-ws"), device, str(threads),
                           shuffle], cwd=tree, check=True, capture_output=True, text=True)
    wall, cpu = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, cpu


# --- the per-map NumPy restatement (the baseline of the speed figure) -----------------------------------


def loop_metrics(sal: np.ndarray, density: np.ndarray, fix: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> list[float]:
    """All six metrics of one map, written the way the MATLAB code is (NumPy per map, loops over
    thresholds and splits)."""
    eps = np.finfo(float).eps
    s, g, f = sal.ravel(), density.ravel(), fix.ravel() > 0
    zs = (s - s.mean()) / s.std(ddof=1)
    zg = (g - g.mean()) / g.std(ddof=1)
    cc = float(np.corrcoef(zs, zg)[0, 1])
    nss = float(zs[f].mean())
    a = (s - s.min()) / (s.max() - s.min())
    a, b = a / a.sum(), (g - g.min()) / (g.max() - g.min())
    sim = float(np.minimum(a, b / b.sum()).sum())
    p, q = s / s.sum(), g / g.sum()
    kld = float((q * np.log(eps + q / (p + eps))).sum())
    jittered = s + rng.random(s.size) / 1e7
    jittered = (jittered - jittered.min()) / (jittered.max() - jittered.min())
    thresholds = np.sort(jittered[f])[::-1]
    n_fix, n_pix = thresholds.size, s.size
    tp, fp = [0.0], [0.0]
    for i, t in enumerate(thresholds, start=1):
        tp.append(i / n_fix)
        fp.append((np.sum(jittered >= t) - i) / (n_pix - n_fix))
    auc_j = float(np.trapezoid(tp + [1.0], fp + [1.0]))
    normed = (s - s.min()) / (s.max() - s.min())
    sth = normed[f]
    ind = np.flatnonzero(other.ravel())
    n_other = min(n_fix, ind.size)
    aucs = []
    for _ in range(metrics.SHUFFLED_AUC_SPLITS):
        curfix = normed[rng.permutation(ind)[:n_other]]
        steps = np.arange(0, max(sth.max(), curfix.max()) + 1e-12, 0.1)[::-1]
        tp = [0.0] + [np.mean(sth >= t) for t in steps] + [1.0]
        fp = [0.0] + [np.mean(curfix >= t) for t in steps] + [1.0]
        aucs.append(np.trapezoid(tp, fp))
    return [cc, nss, auc_j, float(np.mean(aucs)), sim, kld]


def speed(data: Path, device: str, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    problems = fx.Problems()
    dataset = fx.read_images(data / "fixations.csv", data / "stimuli", problems)
    images = [image for image in dataset.images if image.size == (256, 256)]
    size = (256, 256)
    points = [image.points for image in images]
    longest = max(len(p) for p in points)
    packed = torch.zeros(len(images), longest, 2, dtype=torch.float64)
    valid = torch.zeros(len(images), longest, dtype=torch.bool)
    for row, xy in enumerate(points):
        packed[row, : len(xy)] = torch.from_numpy(xy)
        valid[row, : len(xy)] = True
    fix = metrics.fixation_map(packed, valid, size)
    density = metrics.fixation_density(packed, valid, size, DensityConfig().pixels(size))
    other = fix.any(dim=0, keepdim=True) & ~fix  # the other 256 x 256 images' fixated pixels
    rng = np.random.default_rng(0)
    sal = metrics.postprocess_map(metrics.center_bias(size, BaselineConfig().center_sigma).expand(len(images), -1, -1)
                                  + torch.from_numpy(rng.random((len(images), *size))) * 0.3)
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    tensors = [t.to(dev) for t in (sal, density, fix, other)]
    metrics.all_metrics(*[t[:2] for t in tensors], generator=torch.Generator().manual_seed(0))  # warm-up
    began = time.perf_counter()
    batched = metrics.all_metrics(*tensors, generator=torch.Generator().manual_seed(0))
    t_batched = time.perf_counter() - began
    began = time.perf_counter()
    looped = np.array([loop_metrics(sal[b].numpy(), density[b].numpy(), fix[b].numpy(), other[b].numpy(), rng)
                       for b in range(len(images))])
    t_loop = time.perf_counter() - began
    deterministic = [metrics.METRICS.index(m) for m in ("CC", "NSS", "SIM", "KLD")]
    agree = max(abs(batched[metrics.METRICS[k]].cpu().numpy() - looped[:, k]).max() for k in deterministic)
    print(f"\nmetrics on {len(images)} maps of 256x256 ({int(fix.sum())} fixations), {dev}:")
    print(f"  batched torch: {t_batched:.2f} s; per-map NumPy loops: {t_loop:.2f} s; speed-up {t_loop / t_batched:.1f}x")
    print(f"  largest difference of CC, NSS, SIM, KLD between the two: {agree:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workspace", type=Path, default=None, help="Default: a fresh temporary folder.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="Torch CPU threads (0: torch's choice).")
    parser.add_argument("--shuffle", default="auto", help="s-AUC negatives: auto (random-10), random-10, other-images.")
    parser.add_argument("--against-rev", default=None, help="Also time the stage of this git revision, first.")
    parser.add_argument("--large", action="store_true", help="Only the images larger than 256 x 256.")
    parser.add_argument("--no-speed", action="store_true", help="Skip the batched-vs-loop speed figure.")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(prefix="avfix-eval-") as scratch:
        if args.large:
            args.data = large_images_only(args.data, Path(scratch))
        before = None
        if args.against_rev:
            before = run_revision(args.against_rev, args.data, Path(scratch), args.device, args.threads,
                                  args.shuffle if args.shuffle != "auto" else "random-10")
        workspace = args.workspace or Path(scratch) / "ws"
        wall, cpu = run_stage(args.data, workspace, args.device, args.threads, args.shuffle)
        if before is not None:
            print(f"revision {args.against_rev}: {before[0]:.1f} s wall, {before[1]:.1f} s CPU; this tree: "
                  f"{wall:.1f} s wall, {cpu:.1f} s CPU; CPU ratio {before[1] / cpu:.2f}x, wall ratio "
                  f"{before[0] / wall:.2f}x")
    if not args.no_speed:
        speed(args.data, args.device, args.threads)


if __name__ == "__main__":
    main()
