"""Seed statistics for the tables: mean ± sample std (ddof=1), and the difference between two arms with its Welch
95% confidence interval and two-sided p-value (scipy), plus the paired-by-seed p when both arms ran the same seeds.
With 3 seeds per arm only large effects reach p < 0.05; the tables print p so a reader can judge."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def fmt_mean_std(values: list[float], digits: int = 4) -> str:
    """'2.4524 ± 0.0031'; one value or no spread (a count, a size): the value alone; digits 0: thousands separators."""
    m, s = mean_std(values)
    if math.isnan(m):
        return "–"
    spec = f",.{digits}f" if digits == 0 else f".{digits}f"
    return f"{m:{spec}}" + (f" ± {s:{spec}}" if not math.isnan(s) and s > 1e-12 * max(1.0, abs(m)) else "")


@dataclass(frozen=True)
class Difference:
    diff: float  # mean(a) - mean(b)
    ci_low: float
    ci_high: float
    p_welch: float
    p_paired: float | None  # both arms ran exactly the same seeds

    def text(self, digits: int = 4) -> str:
        if math.isnan(self.diff):
            return "–"
        ci = "" if math.isnan(self.ci_low) else f" [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}]"
        p = "" if math.isnan(self.p_welch) else f" p={self.p_welch:.3g}"
        paired = f" (paired p={self.p_paired:.3g})" if self.p_paired is not None and not math.isnan(self.p_paired) else ""
        return f"{self.diff:+.{digits}f}{ci}{p}{paired}"


def difference(a: dict[int, float], b: dict[int, float]) -> Difference:
    """a, b: seed -> value. Welch's t for unequal variances; the CI uses the Welch-Satterthwaite dof."""
    va = np.array([v for v in a.values() if v is not None and math.isfinite(v)], dtype=np.float64)
    vb = np.array([v for v in b.values() if v is not None and math.isfinite(v)], dtype=np.float64)
    if va.size == 0 or vb.size == 0:
        return Difference(float("nan"), float("nan"), float("nan"), float("nan"), None)
    diff = float(va.mean() - vb.mean())
    if va.size < 2 or vb.size < 2:
        return Difference(diff, float("nan"), float("nan"), float("nan"), None)
    sa, sb = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
    se = math.sqrt(sa + sb)
    tiny = 1e-12 * max(1.0, float(np.abs(np.concatenate((va, vb))).max()))
    if se <= tiny:  # no spread at all (e.g. a deterministic metric): no test to run
        return Difference(diff, diff, diff, float("nan"), None)
    dof = (sa + sb) ** 2 / (sa**2 / (va.size - 1) + sb**2 / (vb.size - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    p_welch = float(stats.ttest_ind(va, vb, equal_var=False).pvalue)
    p_paired = None
    seeds = sorted(set(a) & set(b))
    if set(a) == set(b) and len(seeds) >= 2:
        d = np.array([a[s] - b[s] for s in seeds])
        p_paired = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue) if np.ptp(d) > tiny else float("nan")
    return Difference(diff, diff - half, diff + half, p_welch, p_paired)
