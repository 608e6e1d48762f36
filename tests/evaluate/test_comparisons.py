"""Comparing rows: paired bootstrap differences, rows scored against the same draws, and a resume cache
whose keys cover everything a score depends on."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.stats

from models import metrics
from pipeline.evaluate import config as ec
from pipeline.evaluate import fixations as fx
from pipeline.evaluate import paired
from pipeline.evaluate import run as ev
from pipeline.evaluate import units as eu

# --- the bootstrap ------------------------------------------------------------------------------------------


def test_bootstrap_interval_covers_the_true_difference():
    rng = np.random.default_rng(0)
    true_difference, replications, covered = 0.1, 200, 0
    for replication in range(replications):
        b = rng.normal(0.3, 0.2, size=(1, 40))
        a = b + true_difference + rng.normal(0.0, 0.15, size=(1, 40))
        interval = paired.intervals(a, b, resamples=2000, seed=replication)[0]
        assert interval is not None and interval.low < interval.difference < interval.high
        covered += interval.low <= true_difference <= interval.high
    assert 0.88 <= covered / replications <= 0.99  # nominal 0.95; binomial sd over 200 replications is 0.015


def test_bootstrap_interval_agrees_with_scipys_percentile_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, 0.2, size=(1, 300)), rng.gamma(2.0, 0.18, size=(1, 300))
    ours = paired.intervals(a, b, resamples=20_000, seed=3)[0]
    theirs = scipy.stats.bootstrap(((a - b)[0],), np.mean, n_resamples=20_000, method="percentile",
                                   rng=np.random.default_rng(4)).confidence_interval
    assert ours.difference == pytest.approx(float((a - b).mean()), abs=1e-15)
    width = theirs.high - theirs.low
    assert ours.low == pytest.approx(theirs.low, abs=0.03 * width)
    assert ours.high == pytest.approx(theirs.high, abs=0.03 * width)


def test_undefined_scores_are_left_out_and_kld_favours_the_lower_row():
    first = {"CC": 0.5, "NSS": 1.0, "AUC-J": 0.8, "s-AUC": 0.6, "SIM": 0.4, "KLD": 0.5}
    items = []
    for k in range(30):
        a = {m: v + 0.1 + 0.001 * k for m, v in first.items()}
        a["KLD"] = first["KLD"] - 0.2 - 0.001 * k
        b = dict(first)
        if k < 5:
            b["NSS"] = None  # undefined for b: these items leave the NSS comparison, not the others
        items.append({"scores": {"a": a, "b": b}})
    table = paired.paired_table(items, ["a", "b"], seed=0, resamples=500)
    assert [(p["a"], p["b"]) for p in table] == [("a", "b")]
    nss = table[0]["metrics"]["NSS"]
    assert nss["n"] == 25 and nss["difference"] == pytest.approx(0.1 + 0.001 * np.mean(range(5, 30)))
    assert table[0]["metrics"]["CC"]["n"] == 30 and table[0]["metrics"]["CC"]["better"] == "a"
    kld = table[0]["metrics"]["KLD"]
    assert kld["difference"] < 0 and kld["significant"] and kld["better"] == "a"


# --- whole evaluations ----------------------------------------------------------------------------------------


def make_image_set(root: Path, count: int) -> Path:
    """`count` images of distinct sizes (one per batch, so one per cache entry), 5 fixations each."""
    stimuli = root / "stimuli"
    stimuli.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(count):
        height, width = 20 + k, 26 + k
        cv2.imwrite(str(stimuli / f"{k:03d}.jpg"), rng.uniform(0, 255, (height, width, 3)).astype(np.uint8))
        rows += [(f"{k:03d}.jpg", 1 + j % 2, rng.uniform(0, width), rng.uniform(0, height)) for j in range(5)]
    write_fixations(root, rows)
    return root


def write_fixations(root: Path, rows: list[tuple]) -> None:
    with open(root / "fixations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "observer", "x", "y"])
        writer.writerows(rows)


def read_fixations(root: Path) -> list[tuple]:
    with open(root / "fixations.csv", newline="") as handle:
        return [(r["image"], int(r["observer"]), float(r["x"]), float(r["y"])) for r in csv.DictReader(handle)]


def make_maps(folder: Path, root: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for path in sorted((root / "stimuli").iterdir()):
        height, width = cv2.imread(str(path)).shape[:2]
        cv2.imwrite(str(folder / f"{path.stem}.png"), rng.uniform(0, 255, (height, width)).astype(np.uint8))
    return folder


def items_of(workspace: Path) -> dict[str, dict]:
    dataset = json.loads((workspace / "report.json").read_text())["datasets"][0]
    return {item["id"]: item["scores"] for item in dataset["items"]}


def test_identical_maps_score_identically_with_a_zero_width_interval(tmp_path):
    root = make_image_set(tmp_path / "set", 6)
    first = make_maps(tmp_path / "first", root, seed=1)
    twin = shutil.copytree(first, tmp_path / "twin")
    config = ec.EvaluateConfig(maps=(first, twin), examples=0)
    summary = ev.run_evaluate(root, tmp_path / "ws", config)
    assert summary.ok and summary.rows == ["first", "twin", "center"]
    for scores in items_of(tmp_path / "ws").values():
        assert scores["first"] == scores["twin"]  # s-AUC and AUC-J too: the same draws
        assert scores["first"]["s-AUC"] is not None and scores["first"] != scores["center"]
    report = json.loads((tmp_path / "ws" / "report.json").read_text())
    pairs = {(p["a"], p["b"]): p["metrics"] for p in report["datasets"][0]["paired"]["pairs"]}
    assert set(pairs) == {("first", "twin"), ("first", "center"), ("twin", "center")}
    for metric in metrics.METRICS:
        same = pairs[("first", "twin")][metric]
        assert (same["difference"], same["low"], same["high"], same["n"]) == (0.0, 0.0, 0.0, 6)
        assert not same["significant"] and same["better"] is None
    markdown = (tmp_path / "ws" / "report.md").read_text()
    assert "| first − twin | +0.000 [+0.000, +0.000] |" in markdown
    assert (tmp_path / "ws" / "plots" / "set_paired.png").stat().st_size > 0


def test_cache_keys_cover_everything_a_score_depends_on_and_nothing_else(tmp_path):
    root = make_image_set(tmp_path / "set", 14)
    maps = make_maps(tmp_path / "maps", root, seed=2)
    config = ec.EvaluateConfig(maps=(maps,), examples=0, shuffle="random-10")
    assert ev.run_evaluate(root, tmp_path / "ws", config).units_done == 14

    def rerun_and_compare(expected_done: int, settings: ec.EvaluateConfig = config) -> None:
        again = ev.run_evaluate(root, tmp_path / "ws", settings)
        assert (again.units_done, again.units_cached) == (expected_done, 14 - expected_done)
        fresh = tmp_path / f"fresh{expected_done}"
        ev.run_evaluate(root, fresh, settings)
        assert items_of(tmp_path / "ws") == items_of(fresh)  # nothing stale was served
        shutil.rmtree(fresh)

    rerun_and_compare(0)
    # Another image's fixations: image 005 itself and every image drawing its negatives from 005.
    rows = read_fixations(root)
    moved = next(i for i, row in enumerate(rows) if row[0] == "005.jpg")
    rows[moved] = (*rows[moved][:2], rows[moved][2] / 2, rows[moved][3] / 2)
    write_fixations(root, rows)
    dataset = fx.read_images(root / "fixations.csv", root / "stimuli", fx.Problems())
    negatives = eu.ImageNegatives(dataset, "random-10", seed=0)
    affected = {i.image for i in dataset.images if i.image == "005.jpg" or "005.jpg" in negatives.sources(i)}
    assert 1 < len(affected) < 14
    rerun_and_compare(len(affected))
    # One map: that image alone.
    cv2.imwrite(str(maps / "002.png"), np.full(cv2.imread(str(maps / "002.png")).shape[:2], 7, np.uint8))
    rerun_and_compare(1)
    # A setting every score depends on: everything.
    rerun_and_compare(14, ec.EvaluateConfig(maps=(maps,), examples=0, shuffle="random-10", post_sigma=1.0))
