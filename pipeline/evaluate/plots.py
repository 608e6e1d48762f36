"""The evaluation report's pictures (WS/plots/*.png): per data set the metric means, the per-item score
distributions, the paired differences between rows with their intervals, and example maps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from models.metrics import LOWER_IS_BETTER, METRICS


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_bars(dataset: dict[str, Any], rows: list[str], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, metric in zip(axes, METRICS):
        means = [dataset["summary"][row][metric]["mean"] for row in rows]
        stds = [dataset["summary"][row][metric]["std"] for row in rows]
        heights = [m if m is not None else 0.0 for m in means]
        errors = [s if s is not None else 0.0 for s in stds]
        axis.bar(range(len(rows)), heights, yerr=errors, capsize=3,
                 color=[colours[i % len(colours)] for i in range(len(rows))])
        axis.set_xticks(range(len(rows)), rows, rotation=30, ha="right", fontsize=8)
        axis.set_title(f"{metric} {'↓' if metric in LOWER_IS_BETTER else '↑'}")
    figure.suptitle(f"{dataset['name']}: mean ± std over {'videos' if dataset['kind'] == 'videos' else 'images'}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _distribution_values(dataset: dict[str, Any], row: str, metric: str) -> list[float]:
    if dataset["kind"] == "videos":
        return [v["scores"][row][metric] for v in dataset["videos"] if v["scores"][row][metric] is not None]
    return [r["scores"][row][metric] for r in dataset["items"] if r["scores"][row][metric] is not None]


def plot_distributions(dataset: dict[str, Any], rows: list[str], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 3.2))
    for axis, metric in zip(axes, METRICS):
        data = [_distribution_values(dataset, row, metric) for row in rows]
        # boxplot needs at least one value per box; an empty row is drawn as an empty box position.
        axis.boxplot([d if d else [math.nan] for d in data], showmeans=True)
        axis.set_xticks(range(1, len(rows) + 1), rows, rotation=30, ha="right", fontsize=8)
        axis.set_title(metric)
    figure.suptitle(f"{dataset['name']}: per-{'video' if dataset['kind'] == 'videos' else 'image'} scores")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_paired(dataset: dict[str, Any], path: Path) -> None:
    """Per metric, every pair's difference with its interval; intervals that exclude 0 in colour."""
    plt = _pyplot()
    pairs = dataset["paired"]["pairs"]
    figure, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 0.9 + 0.45 * len(pairs)), sharey=True)
    labels = [f"{pair['a']} − {pair['b']}" for pair in pairs]
    for axis, metric in zip(axes, METRICS):
        for y, pair in enumerate(pairs):
            stats = pair["metrics"][metric]
            if stats is None:
                continue
            colour = "tab:red" if stats["significant"] else "tab:gray"
            error = [[stats["difference"] - stats["low"]], [stats["high"] - stats["difference"]]]
            axis.errorbar(stats["difference"], y, xerr=error, fmt="o", color=colour, capsize=3)
        axis.axvline(0.0, color="black", linewidth=0.8)
        axis.set_yticks(range(len(pairs)), labels, fontsize=8)
        axis.set_ylim(-0.5, len(pairs) - 0.5)
        axis.invert_yaxis()
        axis.set_title(f"{metric} {'↓' if metric in LOWER_IS_BETTER else '↑'}")
    comparison = dataset["paired"]
    figure.suptitle(f"{dataset['name']}: paired differences a − b over {comparison['over']}, "
                    f"{comparison['confidence']:.0%} bootstrap intervals (red: excludes 0)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_examples(dataset: dict[str, Any], rows: list[str], examples: list[dict[str, Any]], path: Path) -> None:
    """Per example: the ground-truth density, then every row's map, each with the fixations drawn."""
    plt = _pyplot()
    n_cols = len(rows) + 1
    figure, axes = plt.subplots(len(examples), n_cols, figsize=(2.6 * n_cols, 2.3 * len(examples)), squeeze=False)
    for line, example in zip(axes, examples):
        panels = [("fixations", example["density"], None)] + [(row, example["maps"].get(row), row) for row in rows]
        for axis, (title, heat, row) in zip(line, panels):
            if example["background"] is not None:
                axis.imshow(example["background"])
                if heat is not None:
                    axis.imshow(heat, cmap="jet", alpha=0.5)
            elif heat is not None:
                axis.imshow(heat, cmap="gray" if row is None else "jet")
            points = example["points"]
            if len(points):
                axis.scatter(points[:, 0], points[:, 1], s=6, c="white", edgecolors="black", linewidths=0.4)
            if row is not None:
                nss = example["scores"].get(row, {}).get("NSS")
                title = f"{row}\nNSS {nss:.2f}" if nss is not None else f"{row}\n(no map)"
            else:
                title = f"{example['id']}"
            axis.set_title(title, fontsize=7)
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


