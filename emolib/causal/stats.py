"""Stage 3-4 statistics: per-item margins, paired bootstrap deltas, empirical p against random sets, Holm, power.

Conventions:
- A "delta" is ablated minus baseline, per item, so a drop is negative.
- The test of an own effect (emolib.causal.effects) is the two-sided t prediction test: the own set's mean margin change
  against R random sets' mean changes, t = (own - mean) / (sd sqrt(1 + 1/R)) with R - 1 degrees of freedom
  (normal_p), Holm-corrected over the family. The sd is that of the random sets' means on the same items, so it
  holds both the set-to-set spread and the item noise: nothing else is subtracted or added.
- Its power (t_power) is exact for that test under its own model (own = random + delta, same spread): a noncentral
  t with R - 1 df and noncentrality delta / (sd sqrt(1 + 1/R)), at the two-sided level alpha / m of Holm's first
  step (Holm never rejects less). delta_for_power inverts it.
- The interval that matches the test (prediction_ci) is own - mean +- t_{R-1} sd sqrt(1 + 1/R): it excludes 0
  exactly when the unadjusted p is below 1 - level, and covers a planted contrast at its nominal rate.
- empirical_p can never go below 1 / (R + 1) with R random sets, so under Holm over m tests it needs
  R >= min_random_sets(alpha, m) to call anything; it is not used for verdicts.
- An item whose true label ties for the top score counts 1/k (k labels tied): a random tie-break, neither right
  nor wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist

import numpy as np

_N = NormalDist()


def t_sf(x: float, df: int) -> float:
    """Upper tail P(T > x) of Student's t with df degrees of freedom."""
    from scipy.stats import t

    return float(t.sf(x, df))


def t_isf(p: float, df: int) -> float:
    """The x with t_sf(x, df) = p."""
    from scipy.stats import t

    return float(t.isf(p, df))


def margin(scores: np.ndarray, true_idx: np.ndarray) -> np.ndarray:
    """Per item, the true label's score minus the best other label's score ([N, labels] -> [N])."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(true_idx, dtype=int)
    rows = np.arange(len(s))
    true = s[rows, y]
    other = s.copy()
    other[rows, y] = -np.inf
    return true - other.max(1)


def correct(scores: np.ndarray, true_idx: np.ndarray) -> np.ndarray:
    """Per item, 1.0 when the true label alone scores highest, 1/k when it ties with k - 1 others, else 0.0."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(true_idx, dtype=int)
    true = s[np.arange(len(s)), y]
    top = s.max(1)
    tied = (s == top[:, None]).sum(1)
    return np.where(true == top, 1.0 / np.maximum(tied, 1), 0.0)


@dataclass
class Delta:
    """A paired mean difference (treated - baseline) with its percentile bootstrap CI."""

    mean: float
    lo: float
    hi: float
    sd: float  # per-item SD of the paired difference (ddof=1)
    n: int


def _boot_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] item indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def paired_delta(
    baseline: np.ndarray, treated: np.ndarray, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> Delta:
    """Mean of treated - baseline over items, with a percentile bootstrap CI that resamples items."""
    d = np.asarray(treated, dtype=float) - np.asarray(baseline, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("paired_delta: baseline and treated must be equal-length 1-D arrays of items")
    boots = d[_boot_index(len(d), n_boot, seed)].mean(1)
    a = (1 - ci) / 2
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    return Delta(float(d.mean()), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), sd, len(d))


def own_effect(
    base_scores: np.ndarray,
    ablated_scores: np.ndarray,
    true_idx: np.ndarray,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Delta]:
    """Paired deltas of margin and accuracy (fraction, not pp) between ablated and baseline scores of the same items."""
    return {
        "margin": paired_delta(margin(base_scores, true_idx), margin(ablated_scores, true_idx), n_boot, ci, seed),
        "accuracy": paired_delta(correct(base_scores, true_idx), correct(ablated_scores, true_idx), n_boot, ci, seed),
    }


def empirical_p(own: float, null: np.ndarray, tail: str = "less") -> float:
    """Empirical p of own among the random-set values: less = (1 + #{null <= own}) / (1 + n); greater uses >=."""
    null = np.asarray(null, dtype=float)
    null = null[~np.isnan(null)]
    if tail == "less":
        k = int((null <= own).sum())
    elif tail == "greater":
        k = int((null >= own).sum())
    elif tail == "two-sided":
        return min(1.0, 2 * min(empirical_p(own, null, "less"), empirical_p(own, null, "greater")))
    else:
        raise ValueError(f"tail: must be less, greater or two-sided, got {tail!r}")
    return (1 + k) / (1 + len(null))


def normal_p(own: float, null: np.ndarray, tail: str = "less") -> float:
    """Parametric p of own among n random-set values: t = (own - mean) / (sd * sqrt(1 + 1/n)), Student t, n-1 df."""
    null = np.asarray(null, dtype=float)
    null = null[~np.isnan(null)]
    n = len(null)
    if n < 2:
        raise ValueError("normal_p: needs at least 2 random-set values")
    if tail not in ("less", "greater", "two-sided"):
        raise ValueError(f"tail: must be less, greater or two-sided, got {tail!r}")
    sd = null.std(ddof=1)
    diff = own - null.mean()
    if sd == 0:  # a degenerate null: only an exact tie is unremarkable
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    else:
        t = diff / (sd * math.sqrt(1 + 1 / n))
    if tail == "less":
        return 1.0 - t_sf(t, n - 1) if math.isfinite(t) else float(t > 0)
    if tail == "greater":
        return t_sf(t, n - 1) if math.isfinite(t) else float(t < 0)
    return min(1.0, 2 * t_sf(abs(t), n - 1)) if math.isfinite(t) else 0.0


def holm(pvals) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, made monotone, capped at 1); NaNs stay NaN and are not counted."""
    p = np.asarray(pvals, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p.ravel()))
    m = len(ok)
    if m == 0:
        return out
    flat = p.ravel()[ok]
    order = np.argsort(flat, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * flat[order]))
    res = np.empty(m)
    res[order] = adj
    out.ravel()[ok] = res
    return out


def verdict(p_adjusted, alpha: float = 0.05) -> list[str]:
    """'effect' where the adjusted p is below alpha, else 'no detectable effect' (NaN: 'not tested')."""
    return [
        "not tested" if np.isnan(p) else "effect" if p < alpha else "no detectable effect"
        for p in np.atleast_1d(np.asarray(p_adjusted, dtype=float))
    ]


def t_power(delta: float, sd: float, n_random: int, alpha: float = 0.05, m: int = 1) -> float:
    """Power of the two-sided t prediction test (R = n_random sets, level alpha / m) to reject for a true shift delta
    of the own set from the random sets' mean, whose means spread with SD sd: a noncentral t, R - 1 df (a normal
    approximation where scipy's noncentral t gives no finite value, as it can past a noncentrality of about 7)."""
    from scipy.stats import nct, t

    if n_random < 2 or not np.isfinite(sd):
        return float("nan")
    if sd <= 0:
        return 1.0 if delta else alpha / m
    df = n_random - 1
    crit = float(t.isf(alpha / m / 2, df))
    nc = abs(delta) / (sd * math.sqrt(1 + 1 / n_random))
    with np.errstate(all="ignore"):
        pw = float(nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc))
    if not math.isfinite(pw):
        pw = normal_power(nc, crit, df)
    return min(1.0, max(0.0, pw))


def normal_power(nc: float, crit: float, df: int) -> float:
    """Power of a two-sided t test at critical value crit for noncentrality nc, by the normal approximation to the
    noncentral t: P(T > c) ~ Phi((nc - c) / sqrt(1 + c^2 / (2 df)))."""
    s = math.sqrt(1 + crit**2 / (2 * df))
    return _N.cdf((nc - crit) / s) + _N.cdf((-nc - crit) / s)


def delta_for_power(sd: float, n_random: int, alpha: float = 0.05, m: int = 1, target: float = 0.8) -> float:
    """The smallest shift |delta| (in sd's units) at which t_power reaches target (bisection)."""
    if n_random < 2 or not np.isfinite(sd):
        return float("nan")
    if sd <= 0:
        return 0.0
    lo, hi = 0.0, sd
    while t_power(hi, sd, n_random, alpha, m) < target:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_power(mid, sd, n_random, alpha, m) < target else (lo, mid)
    return hi


def prediction_ci(own: float, null: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(own - mean, lo, hi): the interval for the own set's shift from the random sets that inverts the t prediction
    test, own - mean +- t_{R-1} sd sqrt(1 + 1/R)."""
    null = np.asarray(null, dtype=float)
    null = null[~np.isnan(null)]
    if len(null) < 2:
        return float("nan"), float("nan"), float("nan")
    d = float(own - null.mean())
    half = t_isf((1 - level) / 2, len(null) - 1) * null.std(ddof=1) * math.sqrt(1 + 1 / len(null))
    return d, d - half, d + half


def tost_p(own: float, null: np.ndarray, margin: float) -> float:
    """Equivalence p of own against the random sets within +-margin: two one-sided t prediction tests (R - 1 df) of
    H0: own - mean <= -margin and H0: own - mean >= +margin; the larger p (equivalence is shown when it is below
    the level)."""
    null = np.asarray(null, dtype=float)
    null = null[~np.isnan(null)]
    n = len(null)
    if n < 2:
        return float("nan")
    s = null.std(ddof=1) * math.sqrt(1 + 1 / n)
    d = own - null.mean()
    if s == 0:
        return 0.0 if abs(d) < margin else 1.0
    return max(t_sf((d + margin) / s, n - 1), t_sf((margin - d) / s, n - 1))


def equivalence_bound(own: float, null: np.ndarray, alpha: float = 0.05) -> float:
    """The smallest margin delta for which tost_p(own, null, delta) < alpha: |own - mean| + t_{1-alpha} sd sqrt(1 +
    1/R)."""
    null = np.asarray(null, dtype=float)
    null = null[~np.isnan(null)]
    n = len(null)
    if n < 2:
        return float("nan")
    return float(abs(own - null.mean()) + t_isf(alpha, n - 1) * null.std(ddof=1) * math.sqrt(1 + 1 / n))


def z_crit(alpha: float = 0.05, m: int = 1) -> float:
    """One-sided critical z at alpha / m (Holm's first step)."""
    return _N.inv_cdf(1 - alpha / m)


def power(d: float, sd: float, n: float, alpha: float = 0.05, m: int = 1, tau: float = 0.0) -> float:
    """Normal-approximation power to detect a true drop d: Phi(|d| / sqrt(tau^2 + sd^2 / n) - z_{1-alpha/m})."""
    se = math.sqrt(tau**2 + sd**2 / n)
    return _N.cdf(abs(d) / se - z_crit(alpha, m)) if se > 0 else 1.0


def n_required(d: float, sd: float, alpha: float = 0.05, m: int = 1, target: float = 0.8, tau: float = 0.0) -> float:
    """Items for target power: ceil(sd^2 / ((|d| / (z_{1-alpha/m} + z_target))^2 - tau^2)), inf if tau is too big."""
    room = (abs(d) / (z_crit(alpha, m) + _N.inv_cdf(target))) ** 2 - tau**2
    if room <= 0:
        return math.inf
    return float(max(1, math.ceil(sd**2 / room - 1e-9)))


def item_sd_from_null(null_deltas: np.ndarray, n: int) -> float:
    """Per-item SD implied by the spread of random-set mean deltas measured on n items: SD(null) * sqrt(n)."""
    return float(np.std(np.asarray(null_deltas, dtype=float), ddof=1) * math.sqrt(n))


def between_set_sd(null_deltas: np.ndarray, sd: float, n: int) -> float:
    """Set-to-set SD tau that more items cannot remove: sqrt(max(0, Var(null) - sd^2 / n))."""
    v = float(np.var(np.asarray(null_deltas, dtype=float), ddof=1))
    return math.sqrt(max(0.0, v - sd**2 / n))


def smallest_significant(null_sd: float, alpha: float = 0.05, m: int = 1, n_random: int | None = None) -> float:
    """Smallest |own - mean(random)| with p < alpha/m: z_{1-alpha/m} sd, or t_{n-1} sd sqrt(1 + 1/n) given n_random."""
    if n_random is None:
        return z_crit(alpha, m) * null_sd
    return t_isf(alpha / m, n_random - 1) * null_sd * math.sqrt(1 + 1 / n_random)


def min_random_sets(alpha: float = 0.05, m: int = 1) -> int:
    """Fewest random sets for which empirical_p can pass Holm at all: the smallest R with m / (R + 1) < alpha."""
    bound = Fraction(m) / Fraction(str(alpha))  # R + 1 > m / alpha
    return int(math.floor(bound))
