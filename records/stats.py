"""The challenge's statistical rule for a new record (HARNESS.md A9).

A new record must beat the current one by at least 0.005 nats, shown at p < 0.01 (one-sided). Our logs give
bits per byte; nats per token = val_loss, and val_bpb / val_loss = tokens-per-byte / ln 2 is the same for
every run on one validation set, so the margin in bpb is 0.005 * (val_bpb / val_loss) of the candidate.

Test: Welch's one-sided t-test of the candidate's per-seed bpb against the baseline's per-seed bpb shifted
down by the margin; with a single baseline value, a one-sample one-sided t-test against (baseline - margin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_GAIN_NATS = 0.005
P_MAX = 0.01
RELAXED_P_MAX = 0.25  # what the maintainers later accepted for the leaderboard (informational only)


@dataclass(frozen=True)
class Significance:
    candidate_mean_bpb: float
    baseline_mean_bpb: float
    margin_bpb: float  # 0.005 nats expressed in bpb
    gain_bpb: float  # baseline mean - candidate mean (positive = better)
    gain_nats: float
    t_statistic: float
    p_value: float
    df: float
    test: str
    n_candidate: int
    n_baseline: int

    @property
    def passes(self) -> bool:
        return self.gain_nats >= MIN_GAIN_NATS and self.p_value < P_MAX

    def summary(self) -> str:
        return (f"gain {self.gain_nats:+.5f} nats ({self.gain_bpb:+.5f} bpb; rule: >= {MIN_GAIN_NATS} nats = "
                f"{self.margin_bpb:.5f} bpb), {self.test} t={self.t_statistic:.3f} df={self.df:.2f} p={self.p_value:.3g} "
                f"(rule: p < {P_MAX}; n={self.n_candidate} vs {self.n_baseline})")


def significance(candidate_bpb: list[float], candidate_loss: list[float], baseline_bpb: list[float]) -> Significance:
    """Test the candidate seeds against the baseline; needs >= 2 candidate seeds."""
    from scipy import stats

    if len(candidate_bpb) < 2:
        raise ValueError(f"the rule needs at least 2 seeds of the candidate (3 is usual); got {len(candidate_bpb)}")
    if not baseline_bpb:
        raise ValueError("the baseline has no per-seed or mean val_bpb")
    if any(not (loss and loss > 0) for loss in candidate_loss):
        raise ValueError("every candidate seed needs its val_loss to convert the 0.005-nat margin to bpb")
    bpb_per_nat = sum(b / l for b, l in zip(candidate_bpb, candidate_loss)) / len(candidate_bpb)
    margin = MIN_GAIN_NATS * bpb_per_nat
    cand_mean = sum(candidate_bpb) / len(candidate_bpb)
    base_mean = sum(baseline_bpb) / len(baseline_bpb)
    shifted = [b - margin for b in baseline_bpb]
    if len(set(candidate_bpb)) == 1 and len(set(baseline_bpb)) == 1:  # no spread at all: a t-test is undefined
        gain = base_mean - cand_mean
        return Significance(cand_mean, base_mean, margin, gain, gain / bpb_per_nat, math.nan, math.nan, math.nan,
                            "t-test undefined (every seed scored the same)", len(candidate_bpb), len(baseline_bpb))
    if len(baseline_bpb) >= 2:
        res = stats.ttest_ind(candidate_bpb, shifted, equal_var=False, alternative="less")
        test = "Welch one-sided"
    else:
        res = stats.ttest_1samp(candidate_bpb, shifted[0], alternative="less")
        test = "one-sample one-sided"
    t, p = float(res.statistic), float(res.pvalue)
    df = float(getattr(res, "df", len(candidate_bpb) - 1))
    gain = base_mean - cand_mean
    return Significance(cand_mean, base_mean, margin, gain, gain / bpb_per_nat, t, p, df, test, len(candidate_bpb), len(baseline_bpb))
