"""Uncertainty of reported numbers: seeded percentile-bootstrap 95% intervals.

What is resampled is what varies between repetitions of an experiment:

* mIoU (and pixel accuracy, mean F1, base / novel mIoU): *images*; each resample sums the per-image confusion
  matrices of the images drawn (with repetition) and recomputes the metric from that sum
  (:func:`bootstrap_confusion`), so the interval is that of the dataset-level metric, not of a per-image mean;
* rates (success, hit rate, recall): *cases* (:func:`bootstrap_rate`);
* means of per-object values (IoU of the top-1 mask): *objects* (:func:`bootstrap_mean`).

Every function takes ``seed`` (default :data:`SEED`) and ``resamples`` (default :data:`RESAMPLES`) so that the
same data give the same interval on every machine. A difference between two numbers measured on the same items
(e.g. novel - base mIoU over the same images) is bootstrapped *paired*: one resample of the items feeds both
(:func:`bootstrap_confusion` with a ``metric`` that returns the difference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SEED", "RESAMPLES", "LEVEL", "Interval", "bootstrap_rate", "bootstrap_mean", "bootstrap_confusion",
           "format_interval", "interval_text", "parse_interval", "error_ends",
           "noise_verdict"]

#: Seed of every bootstrap (numpy ``default_rng``).
SEED = 0
#: Resamples per interval: the percentile ends then move by well under 0.5 points between seeds.
RESAMPLES = 2000
#: Two-sided coverage of the intervals.
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval; all on the metric's own scale (e.g. [0, 1])."""

    value: float  # the estimate on all n items (not a bootstrap mean)
    lo: float  # 2.5th percentile of the resampled estimates
    hi: float  # 97.5th percentile
    n: int  # items resampled (images, cases or objects)
    unit: str  # what was resampled: "images", "cases", "objects"

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        return {"value": _r(self.value, digits), "ci95": [_r(self.lo, digits), _r(self.hi, digits)], "n": self.n,
                "unit": self.unit}

    def scaled(self, factor: float) -> "Interval":
        """The same interval with every number multiplied (e.g. 100 for percentages)."""
        return Interval(self.value * factor, self.lo * factor, self.hi * factor, self.n, self.unit)


def _r(v: float, digits: int) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def _draws(n: int, seed: int, resamples: int) -> np.ndarray:
    """(resamples, n) int64 counts: how often each item is drawn in each resample (multinomial, sums to n)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)


def bootstrap_mean(values: Sequence[float], unit: str = "objects", seed: int = SEED,
                   resamples: int = RESAMPLES) -> Interval:
    """Mean of ``values`` (NaN dropped) with a 95% interval over resampled items. n = 0 gives NaNs."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, unit)
    counts = _draws(v.size, seed, resamples)  # (R, n)
    means = counts @ v / v.size  # (R,)
    lo, hi = _percentiles(means)
    return Interval(float(v.mean()), lo, hi, int(v.size), unit)


def bootstrap_rate(successes: Sequence[bool | float], seed: int = SEED, resamples: int = RESAMPLES) -> Interval:
    """Fraction of successes (bools or 0/1) with a 95% interval over resampled cases."""
    return bootstrap_mean([float(s) for s in successes], unit="cases", seed=seed, resamples=resamples)


def bootstrap_confusion(cms: np.ndarray, metric: Callable[[np.ndarray], float], seed: int = SEED,
                        resamples: int = RESAMPLES) -> Interval:
    """A dataset-level metric of summed confusion matrices, with a 95% interval over resampled images.

    Args:
        cms: (n, C, C) int64 per-image confusion matrices (rows = ground truth).
        metric: maps one (C, C) matrix (the sum over the images of a resample) to a float, e.g.
            ``lambda cm: metrics_from_confusion(cm).miou``; NaN results are left out of the percentiles.
    """
    cms = np.asarray(cms)
    n = len(cms)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, "images")
    flat = cms.reshape(n, -1).astype(np.float64)  # (n, C*C)
    counts = _draws(n, seed, resamples).astype(np.float64)  # (R, n)
    totals = counts @ flat  # (R, C*C): each resample's summed matrix (exact: integer counts in float64)
    c = cms.shape[1]
    samples = np.array([metric(t.reshape(c, c)) for t in totals], np.float64)  # (R,)
    lo, hi = _percentiles(samples)
    return Interval(float(metric(cms.sum(axis=0))), lo, hi, n, "images")


def format_interval(iv: Interval, scale: float = 100.0, digits: int = 1) -> str:
    """``"79.3 [76.1, 82.4]"`` (scaled, e.g. to percent); ``"-"`` for no data."""
    if iv.n == 0 or not np.isfinite(iv.value):
        return "-"
    return f"{iv.value * scale:.{digits}f} [{iv.lo * scale:.{digits}f}, {iv.hi * scale:.{digits}f}]"


def interval_text(iv: Interval | None, scale: float = 1.0, digits: int = 3) -> str | None:
    """``"[lo, hi]"`` of an interval (times ``scale``, ``digits`` decimals), the ``*_ci95`` column of a table; None
    for no interval, no data or undefined ends."""
    if iv is None or iv.n == 0 or not np.isfinite(iv.lo):
        return None
    return f"[{iv.lo * scale:.{digits}f}, {iv.hi * scale:.{digits}f}]"


def parse_interval(text: str) -> tuple[float, float]:
    """(lo, hi) of an :func:`interval_text` string ``"[lo, hi]"``."""
    lo, hi = (float(t) for t in text.strip("[]").split(","))
    return lo, hi


def noise_verdict(lo: float, hi: float, higher: str, lower: str) -> str:
    """A paired difference's 95% interval in words: inside the noise when it contains 0, else ``higher`` (all
    above 0) or ``lower``."""
    if lo <= 0 <= hi:
        return "inside the noise (the interval contains 0)"
    return higher if lo > 0 else lower


def error_ends(text: str | None, value: float) -> tuple[float, float]:
    """(below, above): how far an :func:`interval_text` interval reaches from ``value``, for error bars; (0, 0)
    without one, never negative."""
    if not text:
        return 0.0, 0.0
    lo, hi = parse_interval(text)
    return max(value - lo, 0.0), max(hi - value, 0.0)
