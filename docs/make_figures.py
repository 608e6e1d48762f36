"""The README's figures: the DAG (docs/dag.png) and an example overlay frame from a demo workspace
(docs/overlay_example.png).

    .venv/bin/python docs/make_figures.py [--workspace demo-workspace]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from pipeline.synth.truth import read_truth  # noqa: E402
from stores import inspect as si  # noqa: E402

DOCS = Path(__file__).resolve().parent

# (x, y) centres on a 16 x 5 canvas; stages are rounded boxes, stores and files square ones.
NODES = {
    "videos + tags": (1.2, 3.4, "input"),
    "extract": (3.6, 3.4, "stage"),
    "features.zarr": (6.0, 3.4, "store"),
    "pseudolabel": (8.4, 3.4, "stage"),
    "pseudo.zarr": (10.8, 3.4, "store"),
    "train": (8.4, 1.4, "stage"),
    "checkpoints/sta": (6.0, 1.4, "store"),
    "new videos": (1.2, 0.4, "input"),
    "predict": (3.6, 1.4, "stage"),
    "predictions.zarr\n+ overlays": (3.6, -0.4, "store"),
    "fixations": (6.0, -1.5, "input"),
    "evaluate": (6.0, -0.4, "stage"),
    "report.md/json\n+ plots": (8.4, -0.4, "store"),
}
EDGES = [
    ("videos + tags", "extract"), ("extract", "features.zarr"), ("features.zarr", "pseudolabel"),
    ("pseudolabel", "pseudo.zarr"), ("features.zarr", "train"), ("pseudo.zarr", "train"),
    ("train", "checkpoints/sta"), ("checkpoints/sta", "predict"), ("new videos", "predict"),
    ("predict", "predictions.zarr\n+ overlays"), ("predictions.zarr\n+ overlays", "evaluate"),
    ("fixations", "evaluate"), ("evaluate", "report.md/json\n+ plots"),
]  # fmt: skip
STYLE = {"stage": ("#2b6cb0", "white", "round,pad=0.15,rounding_size=0.25"),
         "store": ("#edf2f7", "#1a202c", "square,pad=0.15"),
         "input": ("#fefcbf", "#1a202c", "square,pad=0.15")}  # fmt: skip
NOTES = {
    "pseudolabel": "S / ST / SA classifiers from the tags,\ncoarse CAMs -> box -> fine CAMs,\nfusion, flow-guided smoothing",
    "train": "STA network on frames t-1, t, t+1\n+ audio, target: the pseudo-GT",
}


def draw_dag(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 5.0))
    ax.set_xlim(0, 12.2)
    ax.set_ylim(-2.0, 4.4)
    ax.axis("off")
    width, height = 1.7, 0.55
    for name, (x, y, kind) in NODES.items():
        face, text, box = STYLE[kind]
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle=box, fc=face,
                                    ec="#2d3748", lw=1.0))  # fmt: skip
        ax.text(x, y, name, ha="center", va="center", color=text, fontsize=9, weight="bold" if kind == "stage" else None)
    for name, note in NOTES.items():
        x, y, _ = NODES[name]
        ax.text(x, y + 0.55 if name == "pseudolabel" else y - 0.55, note, ha="center",
                va="bottom" if name == "pseudolabel" else "top", fontsize=7, color="#4a5568")  # fmt: skip
    for start, end in EDGES:
        (x0, y0, _), (x1, y1, _) = NODES[start], NODES[end]
        dx, dy = x1 - x0, y1 - y0
        shrink = 0.5 * (width if abs(dx) > abs(dy) else height) + 0.18
        length = np.hypot(dx, dy)
        a = (x0 + dx / length * shrink, y0 + dy / length * shrink) if abs(dx) > abs(dy) else (x0, y0 + np.sign(dy) * shrink)
        b = (x1 - dx / length * shrink, y1 - dy / length * shrink) if abs(dx) > abs(dy) else (x1, y1 - np.sign(dy) * shrink)
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color="#2d3748", lw=1.0))
    ax.text(0.1, 4.25, "avfix run: each stage runs only when its output is missing or stale", fontsize=9, color="#4a5568")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def draw_overlay(workspace: Path, out: Path) -> None:
    """Six frames of the first predicted test video, the map over the frame, the true sounding object ringed."""
    stores = si.stores_of(workspace)
    video_id = si.video_ids(stores["predictions.zarr"])[0]
    saliency = si.open_video(stores["predictions.zarr"], video_id)
    frames = si.open_video(stores["predict-features.zarr"], video_id)
    truth = read_truth(workspace / "videos" / "test" / "truth.csv").get(video_id)
    picks = np.linspace(1, saliency.sizes["t"] - 1, 4).round().astype(int)
    fig, axes = plt.subplots(1, len(picks), figsize=(9, 2.5))
    for ax, k in zip(axes, picks):
        frame = frames.frames.isel(t=k).values
        ax.imshow(si.overlay(frame, saliency.saliency.isel(t=k).values))
        if truth is not None:
            scale = frame.shape[1] / saliency.sizes["x"]
            ax.add_patch(plt.Circle((truth.x[k] * scale, truth.y[k] * scale), truth.radius[k] * scale, fill=False,
                                    color="white", lw=1.2, ls="--"))  # fmt: skip
        ax.set_title(f"t = {float(saliency.t[k]):.1f} s", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"predicted saliency on a held-out demo video ({video_id}); dashed: the sounding object", fontsize=9)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("demo-workspace"))
    args = parser.parse_args()
    draw_dag(DOCS / "dag.png")
    draw_overlay(args.workspace, DOCS / "overlay_example.png")
    for name in ("dag.png", "overlay_example.png"):
        print(f"{DOCS / name}: {(DOCS / name).stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main()
