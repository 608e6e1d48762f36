"""The evaluation report: per-item scores -> summary statistics -> WS/report.md, WS/report.json, WS/plots/*.png.

Statistics never average a NaN: an undefined score (a constant map, a frame without fixations, ...) is
left out of its mean and counted in the report. Videos: frame scores are averaged per video, then the
per-video means over the data set's test splits, pooled (AVAD, Coutrot, SumMe, ETMD) or as the mean of the
per-split means (DIEM), as STAViS's `compute_all_<db>.m` does (SPEC §5.2). Images: over images. The ±
figure is the standard deviation (N - 1) over the same videos or images.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics import FIXATION_METRICS, LOWER_IS_BETTER, METRICS
from pipeline import __version__
from pipeline.common.files import write_text_atomic
from pipeline.evaluate import paired
from pipeline.evaluate import plots as plots_of

PLOTS_DIR = "plots"


@dataclass
class WrittenReport:
    markdown: str
    json: str
    plots: list[str] = field(default_factory=list)


# --- statistics --------------------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if n > 1 else 0.0, "n": n}


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def video_means(records: list[dict[str, Any]], rows: list[str]) -> list[dict[str, Any]]:
    """Per video and row: the mean of each metric over the frames where it is defined."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_video.setdefault(record["video"], []).append(record)
    out = []
    for video, frames in by_video.items():
        scores, valid = {}, {}
        for row in rows:
            scores[row], valid[row] = {}, {}
            for metric in METRICS:
                values = [f["scores"][row][metric] for f in frames if f["scores"][row][metric] is not None]
                scores[row][metric] = _mean_or_none(values)
                valid[row][metric] = len(values)
        out.append({"video": video, "frames": len(frames), "scores": scores, "valid_frames": valid})
    return out


def aggregate_videos(videos: list[dict[str, Any]], splits: dict[str, list[str]], aggregation: str,
                     rows: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary {row: {metric: stats}}, split means {row: {split: {metric: mean}}})."""
    score_of = {v["video"]: v["scores"] for v in videos}
    summary: dict[str, Any] = {}
    split_means: dict[str, Any] = {}
    for row in rows:
        summary[row], split_means[row] = {}, {}
        for metric in METRICS:
            unique = [score_of[v][row][metric] for v in score_of if score_of[v][row][metric] is not None]
            stats = _stats(unique)
            stats["without_score"] = len(score_of) - len(unique)
            per_split = {}
            for split, names in splits.items():
                values = [score_of[v][row][metric] for v in names
                          if v in score_of and score_of[v][row][metric] is not None]
                per_split[split] = _mean_or_none(values)
                split_means[row].setdefault(split, {})[metric] = per_split[split]
            if aggregation == "per-split":
                defined = [m for m in per_split.values() if m is not None]
                stats["mean"] = _mean_or_none(defined)
            else:  # pooled: every entry of every split's test list (as compute_all_<db>.m loops them)
                pooled = [score_of[v][row][metric] for names in splits.values() for v in names
                          if v in score_of and score_of[v][row][metric] is not None]
                stats["mean"] = _mean_or_none(pooled)
            summary[row][metric] = stats
    return summary, split_means


def aggregate_items(records: list[dict[str, Any]], rows: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for row in rows:
        summary[row] = {}
        for metric in METRICS:
            values = [r["scores"][row][metric] for r in records if r["scores"][row][metric] is not None]
            stats = _stats(values)
            stats["without_score"] = len(records) - len(values)
            summary[row][metric] = stats
    return summary


def count_problems(records: list[dict[str, Any]], units: list[dict[str, Any]], rows: list[str]) -> dict[str, Any]:
    """Everything left out of a mean, and why."""
    no_fixation = sum(1 for r in records if r["n_fixations"] == 0)
    no_density = sum(1 for r in records if r["empty_density"])
    per_row = {}
    for row in rows:
        status = Counter(r["status"][row] for r in records)
        undefined = {}
        for metric in METRICS:
            skipped = (lambda r: r["n_fixations"] == 0) if metric in FIXATION_METRICS else (lambda r: r["empty_density"])
            undefined[metric] = sum(1 for r in records if r["status"][row] == "ok" and not skipped(r)
                                    and r["scores"][row][metric] is None)
        per_row[row] = {
            "missing_maps": status.get("missing", 0),
            "empty_maps": status.get("empty-map", 0),
            "resized_maps": sum(u.get("resized", {}).get(row, 0) for u in units),
            "undefined_scores": undefined,
        }
    return {
        "items": len(records),
        "items_without_fixations": no_fixation,
        "items_with_empty_density": no_density,
        "frames_without_ground_truth": sum(u.get("truth_missing", 0) for u in units),
        "fixations_outside_dropped": sum(u.get("dropped_outside", 0) for u in units),
        "rows": per_row,
    }


def build_report(results: list[dict[str, Any]], settings: dict[str, Any], problems: Any,
                 seconds: float) -> dict[str, Any]:
    rows = settings["rows"]
    datasets = []
    for result in results:
        dataset = result["dataset"]
        units = result["units"]
        records = [r for u in units for r in u["records"]]
        counts = count_problems(records, units, rows)
        entry: dict[str, Any] = {
            "name": dataset.name,
            "layout": dataset.layout,
            "kind": result["kind"],
            "source": dataset.source,
            "shuffle": settings["shuffle"],
            "counts": counts,
        }
        if result["kind"] == "videos":
            videos = video_means(records, rows)
            summary, split_means = aggregate_videos(videos, dataset.splits, dataset.aggregation, rows)
            entry.update({"aggregation": dataset.aggregation, "splits": dataset.splits, "n_videos": len(videos),
                          "summary": summary, "split_means": split_means, "videos": videos})
        else:
            counts["fixations_outside_dropped"] = result.get("dropped_outside", 0)
            entry.update({"aggregation": "over images", "n_images": len(records),
                          "summary": aggregate_items(records, rows)})
            cam_top = {k: v for u in units for k, v in (u.get("cam_top") or {}).items() if v}
            if cam_top:
                entry["cam_top_classes"] = cam_top
        compared = entry["videos"] if result["kind"] == "videos" else records
        entry["paired"] = {
            "over": "videos" if result["kind"] == "videos" else "images", "resamples": paired.RESAMPLES,
            "confidence": paired.CONFIDENCE, "seed": settings["seed"],
            "pairs": paired.paired_table(compared, rows, settings["seed"]) if len(rows) > 1 else [],
        }  # fmt: skip
        entry["items"] = records
        datasets.append(entry)
    return {
        "avfix_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": seconds,
        "settings": settings,
        "metrics": list(METRICS),
        "lower_is_better": sorted(LOWER_IS_BETTER),
        "datasets": datasets,
        "problems": {"failures": list(problems.failures), "bad_csv_rows": problems.bad_rows},
    }


# --- markdown ----------------------------------------------------------------------------------------------


def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def summary_table(summary: dict[str, Any], rows: list[str]) -> list[str]:
    header = "| row | " + " | ".join(f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(_cell(summary[row][m]) for m in METRICS) + " |")
    return lines


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "dataset"


def render_markdown(report: dict[str, Any], plots: dict[str, list[str]]) -> str:
    settings = report["settings"]
    rows = settings["rows"]
    lines = [
        "# avfix evaluation report",
        "",
        f"Fixations: `{settings['fixations']}` ({settings['layout']} layout). "
        f"Created {report['created']}, {report['seconds']:.1f} s on {settings['device']}, "
        f"avfix {report['avfix_version']}.",
        "",
        "Protocol (SPEC §5): each map gets STAViS's `postprocessMap` (min-max, Gaussian "
        f"σ = {settings['post_sigma']:g} px at the map's size), is resized to the ground truth's size ({settings['resize']}), then scored with the MIT "
        "benchmark definitions of CC, NSS, AUC-Judd (jitter 1e-7), shuffled AUC, SIM and KLD. "
        f"Fixation density: {settings['density']}.",
        "",
        f"**Shuffled AUC variant: `{settings['shuffle']}`** — negatives are {settings['shuffle_description']}; "
        f"{settings['shuffle_splits']} random splits, thresholds 0:0.1:max. "
        "Scores from different variants are not comparable.",
        "",
        "Rows:",
        "",
    ]
    lines += [f"- **{name}**: {text}" for name, text in settings["methods"].items()]
    for dataset in report["datasets"]:
        lines += ["", *_dataset_markdown(dataset, rows, plots.get(dataset["name"], []))]
    failures = report["problems"]["failures"]
    lines += ["", "## Problems", ""]
    if not failures and not report["problems"]["bad_csv_rows"]:
        lines.append("None.")
    for failure in failures[:50]:
        lines.append(f"- `{failure['path']}`: {failure['reason']}")
    if len(failures) > 50:
        lines.append(f"- ... and {len(failures) - 50} more (all in report.json)")
    if report["problems"]["bad_csv_rows"]:
        lines.append(f"- {report['problems']['bad_csv_rows']} unreadable CSV row(s) skipped")
    return "\n".join(lines) + "\n"


def _dataset_markdown(dataset: dict[str, Any], rows: list[str], plots: list[str]) -> list[str]:
    counts = dataset["counts"]
    if dataset["kind"] == "videos":
        title = f"## {dataset['name']} — {dataset['n_videos']} videos, {counts['items']} frames"
        how = ("Mean ± std over videos (frame scores averaged per video first); "
               + ("DIEM-style: the mean of the per-split means." if dataset["aggregation"] == "per-split"
                  else f"pooled over the test lists of split(s) {', '.join(dataset['splits'])}."))
    else:
        title = f"## {dataset['name']} — {dataset['n_images']} images"
        how = "Mean ± std over images."
    lines = [title, "", f"s-AUC variant: `{dataset['shuffle']}`. {how}", "",
             *summary_table(dataset["summary"], rows), ""]
    lines += _counts_markdown(counts, dataset, rows)
    if dataset["paired"]["pairs"]:
        lines += ["", *paired_markdown(dataset["paired"])]
    if dataset.get("cam_top_classes"):
        common = Counter(c for c, _ in dataset["cam_top_classes"].values()).most_common(8)
        lines += ["", "CAM baseline, most frequent top-1 ImageNet classes: "
                  + ", ".join(f"{name} ({n})" for name, n in common) + "."]
    if plots:
        lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return lines


def _difference_cell(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "n/a"
    mark = " ★" if stats["significant"] else ""
    return f"{stats['difference']:+.3f} [{stats['low']:+.3f}, {stats['high']:+.3f}]{mark}"


def paired_markdown(comparison: dict[str, Any]) -> list[str]:
    over = comparison["over"]
    lines = [
        f"Paired differences a − b, mean over {over} where both rows have a score, with a "
        f"{comparison['confidence']:.0%} percentile-bootstrap interval ({comparison['resamples']:,} resamples of "
        f"the {over}, seed {comparison['seed']}, the same resamples for every pair and metric). "
        "★: the interval excludes 0, so the lead is unlikely to be chance on this set "
        "(higher is better except KLD).",
        "",
        "| a − b | " + " | ".join(f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in METRICS) + " |",
        "|" + "---|" * (len(METRICS) + 1),
    ]
    for pair in comparison["pairs"]:
        cells = [_difference_cell(pair["metrics"][m]) for m in METRICS]
        lines.append(f"| {pair['a']} − {pair['b']} | " + " | ".join(cells) + " |")
    return lines


def _counts_markdown(counts: dict[str, Any], dataset: dict[str, Any], rows: list[str]) -> list[str]:
    unit = "frames" if dataset["kind"] == "videos" else "images"
    lines = [
        f"- {counts['items']} {unit} scored; {counts['items_without_fixations']} without fixations "
        f"(left out of NSS, AUC-J, s-AUC), {counts['items_with_empty_density']} with an empty density "
        f"(left out of CC, SIM, KLD); {counts['fixations_outside_dropped']} fixations outside the frame dropped"
        + (f"; {counts['frames_without_ground_truth']} frames without readable ground truth"
           if dataset["kind"] == "videos" else "") + "."
    ]
    for row in rows:
        info = counts["rows"][row]
        undefined = {m: n for m, n in info["undefined_scores"].items() if n}
        parts = [f"{info['missing_maps']} missing maps", f"{info['empty_maps']} all-zero maps",
                 f"{info['resized_maps']} resized"]
        if undefined:
            parts.append("undefined scores " + ", ".join(f"{m}: {n}" for m, n in undefined.items()))
        without = {m: s["without_score"] for m, s in dataset["summary"][row].items() if s.get("without_score")}
        if without:
            parts.append(f"{'videos' if dataset['kind'] == 'videos' else 'images'} without a score "
                         + ", ".join(f"{m}: {n}" for m, n in without.items()))
        lines.append(f"- {row}: " + "; ".join(parts) + ".")
    return lines


# --- writing -----------------------------------------------------------------------------------------------


def write_report(report: dict[str, Any], workspace: Path, examples: list[list[dict[str, Any]]]) -> WrittenReport:
    """report.json, the plots, then report.md (which links them)."""
    rows = report["settings"]["rows"]
    plots_dir = workspace / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, list[str]] = {}
    written: list[str] = []
    for dataset, dataset_examples in zip(report["datasets"], examples):
        slug = _slug(dataset["name"])
        paths = [plots_dir / f"{slug}_metrics.png", plots_dir / f"{slug}_distributions.png"]
        plots_of.plot_metric_bars(dataset, rows, paths[0])
        plots_of.plot_distributions(dataset, rows, paths[1])
        if dataset["paired"]["pairs"]:
            paths.append(plots_dir / f"{slug}_paired.png")
            plots_of.plot_paired(dataset, paths[-1])
        if dataset_examples:
            paths.append(plots_dir / f"{slug}_examples.png")
            plots_of.plot_examples(dataset, rows, dataset_examples, paths[-1])
        dataset["plots"] = [f"{PLOTS_DIR}/{p.name}" for p in paths]
        plots[dataset["name"]] = dataset["plots"]
        written += [str(p) for p in paths]
    json_path = workspace / "report.json"
    write_text_atomic(json_path, json.dumps(report, indent=1, default=_json_default))
    md_path = workspace / "report.md"
    write_text_atomic(md_path, render_markdown(report, plots))
    return WrittenReport(str(md_path), str(json_path), written)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
