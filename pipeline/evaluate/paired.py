"""Is one row's lead over another real? Paired differences of every metric over items (images, or
videos), with a seeded percentile-bootstrap confidence interval that resamples the items.

Every pair of rows and every metric is resampled with the same draws of items: an item left out of a
resample is left out of every comparison. A resample's mean is over the items of the resample where both
rows have a score (items without one are resampled like any other and skipped in the mean), so a
metric's interval stays the bootstrap of the same mean the table reports. All pairs and metrics of a data
set share one resampling pass, as a product of resample counts with the difference matrix (scipy's
`bootstrap` would redraw per pair and metric: 1.8 s each for 4,000 items).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.metrics import LOWER_IS_BETTER, METRICS

RESAMPLES = 10_000
CONFIDENCE = 0.95
_BLOCK = 1_000  # resamples per matrix product (keeps the count matrix at a few tens of MB)


@dataclass(frozen=True)
class Interval:
    difference: float  # mean of (a - b) over the items where both are defined
    low: float
    high: float
    n: int  # items where both are defined

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def bootstrap_means(differences: np.ndarray, defined: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(P, n) differences (any value where not defined) and (P, n) defined masks -> (resamples, P) means,
    each resample a draw of n items with replacement, the same draws for every row of `differences`."""
    n_rows, n_items = differences.shape
    rng = np.random.default_rng(seed)
    weights = np.where(defined, differences, 0.0).T  # (n, P)
    counts_of = defined.T.astype(np.float64)
    out = np.empty((resamples, n_rows))
    for start in range(0, resamples, _BLOCK):
        block = min(_BLOCK, resamples - start)
        picks = rng.integers(0, n_items, size=(block, n_items))
        offsets = (np.arange(block) * n_items)[:, None]
        counts = np.bincount((picks + offsets).ravel(), minlength=block * n_items).reshape(block, n_items)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + block] = (counts @ weights) / (counts @ counts_of)
    return out


def intervals(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
              seed: int = 0) -> list[Interval | None]:
    """(P, n) scores of two rows (NaN: undefined) -> per line the paired difference a - b and its interval;
    None where no item has both scores."""
    differences = a - b
    defined = np.isfinite(differences)
    n = defined.sum(axis=1)
    if differences.shape[1] == 0:
        return [None] * differences.shape[0]
    means = bootstrap_means(differences, defined, resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(means, [tail, 1 - tail], axis=0)
    out: list[Interval | None] = []
    for row in range(differences.shape[0]):
        if n[row] == 0:
            out.append(None)
            continue
        mean = float(differences[row][defined[row]].mean())
        # A constant difference has a zero-width interval; quantiles of equal floats can differ by an ulp.
        if np.ptp(differences[row][defined[row]]) == 0:
            low[row] = high[row] = mean
        out.append(Interval(mean, float(low[row]), float(high[row]), int(n[row])))
    return out


def paired_table(items: list[dict[str, Any]], rows: list[str], seed: int, resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """For each pair of rows (in row order: a is listed first), every metric's paired difference over
    `items` (each {"scores": {row: {metric: value or None}}}), its interval, and which row it favours."""
    def scores(row: str) -> np.ndarray:
        return np.array([[np.nan if item["scores"][row][m] is None else item["scores"][row][m] for item in items]
                         for m in METRICS], dtype=np.float64).reshape(len(METRICS), len(items))

    by_row = {row: scores(row) for row in rows}
    table = []
    for i, first in enumerate(rows):
        for second in rows[i + 1 :]:
            found = intervals(by_row[first], by_row[second], resamples, confidence, seed)
            entry: dict[str, Any] = {"a": first, "b": second, "metrics": {}}
            for metric, interval in zip(METRICS, found):
                entry["metrics"][metric] = None if interval is None else {
                    "difference": interval.difference, "low": interval.low, "high": interval.high, "n": interval.n,
                    "significant": interval.significant, "better": _better(interval, metric, first, second),
                }  # fmt: skip
            table.append(entry)
    return table


def _better(interval: Interval, metric: str, first: str, second: str) -> str | None:
    """The row a significant difference favours (KLD: lower is better)."""
    if not interval.significant:
        return None
    first_higher = interval.low > 0
    return first if first_higher != (metric in LOWER_IS_BETTER) else second
