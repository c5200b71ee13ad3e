"""Counting statistics for the paper's tables: Fisher, Wilson, Newcombe, risk ratios, trends, correlations,
means with intervals. AUROC, CV logistic and ECE are `prediction_stats.py` (conventions below cover both).

Pure functions: array-likes / pandas in, floats / dicts / DataFrames out. Degenerate input
(one class only, too few rows, NaN) never raises; it gives NaN and a ``note`` saying why.
Malformed input (labels other than 0/1, probabilities outside [0, 1]) raises
:class:`rksp.errors.RKSPInputError`.

Conventions (see also docs/choices.md "Choices beyond the paper"):

* **AUROC** is the Mann-Whitney U statistic divided by ``n_pos * n_neg``; a tie between a
  positive and a negative counts 1/2, exactly as ``sklearn.metrics.roc_auc_score``. Higher
  score = predicted "diverged" (label 1). Rows whose score or label is NaN are dropped.
* **Bootstrap CI** (paper §4: 95% CI, 1000 resamples = ``defaults.BOOTSTRAP_RESAMPLES``):
  percentile interval (the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled AUROCs,
  numpy's linear interpolation). By default the resampling is **stratified**: positives and
  negatives are resampled separately with replacement, so every resample keeps ``n_pos`` and
  ``n_neg`` and has both classes. With ``stratified=False`` the rows are resampled together
  and resamples that happen to contain one class only are **skipped** (not redrawn); the
  number skipped is reported in ``note``. All resamples are computed at once from a
  ``(n_boot, n)`` index matrix: scores are replaced by their dense ranks, per-resample
  class histograms over the ranks come from one ``bincount``, and U follows from a cumulative
  sum — no Python loop over resamples (only over memory-sized chunks of them).
* **ECE** (App. H): ``defaults.ECE_BINS`` equal-width bins on [0, 1], bin ``i`` is
  ``[i/B, (i+1)/B)`` and the last bin is closed; ECE = sum_b n_b/N |mean_pred_b - frac_pos_b|.
  NOTES.md: report it for the raw score used as a probability and for a cross-validated
  logistic (Platt) calibration of the score (:func:`calibration`).
* **Fisher** exact test is two-sided (``scipy.stats.fisher_exact``); **Wilson** score
  interval for a proportion; Newcombe's hybrid score interval for a difference of two.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Dict, Tuple

import numpy as np
import pandas as pd
from scipy import stats as _sps

from rksp.errors import RKSPInputError

__all__ = [
    "mean_ci", "fisher_exact", "wilson", "rate_difference", "risk_ratio", "cochran_armitage", "divergence_rate_table",
    "pearson", "pearson_ci", "spearman", "loglinear_fit", "mean_sd", "as_float", "as_labels", "join_notes",
    "finite_numeric", "holm", "p_from_ci",
]

NAN = float("nan")


def finite_numeric(s: Any) -> pd.Series:
    """A column as numbers; non-numeric and +-inf become NaN."""
    return pd.to_numeric(s, errors='coerce').replace([np.inf, -np.inf], np.nan)


def as_float(x: Any) -> np.ndarray:
    """Any array-like as a flat float64 array (NaN kept)."""
    return np.asarray(pd.Series(np.asarray(x).ravel()).astype("float64"), dtype=float)


def join_notes(*notes: str) -> str:
    """Non-empty notes joined by '; '."""
    return "; ".join(n for n in notes if n)


# ----------------------------------------------------------------------------------------
# divergence rates: Fisher, Wilson, Newcombe
# ----------------------------------------------------------------------------------------
def _check_counts(k: int, n: int) -> None:
    if not (0 <= k <= n):
        raise RKSPInputError(f"need 0 <= k <= n, got k={k}, n={n}")


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> dict:
    """Two-sided Fisher exact test of k1/n1 vs k2/n2 (table [[k1, n1-k1], [k2, n2-k2]]).

    Returns ``dict(odds_ratio, p, note)``; NaN when a group is empty.
    """
    k1, n1, k2, n2 = (int(v) for v in (k1, n1, k2, n2))
    _check_counts(k1, n1)
    _check_counts(k2, n2)
    if n1 == 0 or n2 == 0:
        return dict(odds_ratio=NAN, p=NAN, note="empty group")
    res = _sps.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided")
    return dict(odds_ratio=float(res.statistic), p=float(res.pvalue), note="")


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (fractions in [0, 1]); (NaN, NaN) if n = 0."""
    k, n = int(k), int(n)
    _check_counts(k, n)
    if n == 0:
        return NAN, NAN
    z = float(_sps.norm.ppf(1 - alpha / 2))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if k == 0 else max(0.0, centre - half)      # exact bounds at 0/n and n/n (no rounding residue)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def rate_difference(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05) -> dict:
    """Difference of proportions p1 - p2 with Newcombe's hybrid score CI and the Fisher p.

    For "KSS reduces divergence": group 1 = KSS, group 2 = baseline, expected sign negative.
    Returns ``dict(delta, lo, hi, p, p1, p2)`` as fractions.
    """
    k1, n1, k2, n2 = (int(v) for v in (k1, n1, k2, n2))
    _check_counts(k1, n1)
    _check_counts(k2, n2)
    if n1 == 0 or n2 == 0:
        return dict(delta=NAN, lo=NAN, hi=NAN, p=NAN, p1=NAN, p2=NAN)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, alpha)
    l2, u2 = wilson(k2, n2, alpha)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return dict(delta=d, lo=lo, hi=hi, p=fisher_exact(k1, n1, k2, n2)["p"], p1=p1, p2=p2)


def divergence_rate_table(df: pd.DataFrame, group_col: str, label: str = "diverged",
                          reference: Any = None, alpha: float = 0.05) -> pd.DataFrame:
    """Divergence rate per group with Wilson CI and a two-sided Fisher test.

    Columns: group_col, n, n_div, rate (%), lo, hi (% Wilson ``1 - alpha``), vs, odds_ratio, p.
    ``reference=None``: each group is tested against all other groups pooled (as the paper's
    "No-Norm vs others"); otherwise against the group ``reference`` (its own row has NaN p).
    Rows with a NaN label are dropped. Groups keep their order of first appearance.
    """
    for c in (group_col, label):
        if c not in df.columns:
            raise RKSPInputError(f"column {c!r} not in the frame")
    y = as_labels(df[label])
    d = pd.DataFrame({"g": df[group_col].to_numpy(), "y": y})[~np.isnan(y)]
    agg = d.groupby("g", sort=False, dropna=False)["y"].agg(["size", "sum"])
    tot_n, tot_k = int(agg["size"].sum()), int(agg["sum"].sum())
    if reference is not None and reference not in agg.index:
        raise RKSPInputError(f"reference group {reference!r} not in column {group_col!r}")
    rows = []
    for g, (n, k) in agg.iterrows():
        n, k = int(n), int(k)
        lo, hi = wilson(k, n, alpha)
        if reference is None:
            rn, rk, vs = tot_n - n, tot_k - k, "rest"
        elif g == reference:
            rn, rk, vs = 0, 0, "(reference)"
        else:
            rn, rk, vs = int(agg.loc[reference, "size"]), int(agg.loc[reference, "sum"]), str(reference)
        f = fisher_exact(k, n, rk, rn) if rn > 0 else dict(odds_ratio=NAN, p=NAN)
        rows.append({group_col: g, "n": n, "n_div": k, "rate": 100.0 * k / n if n else NAN,
                     "lo": 100.0 * lo, "hi": 100.0 * hi, "vs": vs, "odds_ratio": f["odds_ratio"], "p": f["p"]})
    return pd.DataFrame(rows, columns=[group_col, "n", "n_div", "rate", "lo", "hi", "vs", "odds_ratio", "p"])


# ----------------------------------------------------------------------------------------
# correlation / fits / formatting
# ----------------------------------------------------------------------------------------
def _clean_xy(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = as_float(x)
    y = as_float(y)
    if x.shape != y.shape:
        raise RKSPInputError(f"x and y differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def pearson(x: Any, y: Any) -> dict:
    """Pearson r with two-sided p over the finite pairs. ``dict(r, p, n, note)``; NaN if n < 3 or constant."""
    return _correlation(*_clean_xy(x, y), _sps.pearsonr)


def _correlation(x: np.ndarray, y: np.ndarray, test) -> dict:
    """``test`` (scipy's pearsonr / spearmanr) on finite pairs; NaN with a note if n < 3 or constant."""
    n = int(x.size)
    if n < 3:
        return dict(r=NAN, p=NAN, n=n, note="fewer than 3 finite pairs")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return dict(r=NAN, p=NAN, n=n, note="constant input")
    res = test(x, y)
    return dict(r=float(res.statistic), p=float(res.pvalue), n=n, note="")


def loglinear_fit(x: Any, y: Any) -> dict:
    """Least-squares fit y = slope * log10(x) + intercept over finite pairs with x > 0.

    Returns ``dict(slope, intercept, r, p, stderr, n, note)`` (p: two-sided test of slope = 0).
    """
    x, y = _clean_xy(x, y)
    pos = x > 0
    note = f"dropped {int((~pos).sum())} pair(s) with x <= 0" if (~pos).any() else ""
    x, y = x[pos], y[pos]
    n = int(x.size)
    if n < 2 or np.ptp(x) == 0:
        return dict(slope=NAN, intercept=NAN, r=NAN, p=NAN, stderr=NAN, n=n,
                    note=join_notes(note, "need >= 2 distinct x values"))
    lx = np.log10(x)
    if n == 2 or np.ptp(y) == 0:
        slope, intercept = np.polyfit(lx, y, 1)
        r = NAN if np.ptp(y) == 0 else float(np.sign(slope))
        return dict(slope=float(slope), intercept=float(intercept), r=r, p=NAN, stderr=NAN, n=n, note=note)
    res = _sps.linregress(lx, y)
    return dict(slope=float(res.slope), intercept=float(res.intercept), r=float(res.rvalue), p=float(res.pvalue),
                stderr=float(res.stderr), n=n, note=note)


def mean_sd(series: Any, digits: int = 2, ddof: int = 1) -> str:
    """Format as the paper's tables do: "0.16±0.01" (sample SD, ``ddof=1``); NaN dropped.

    One value gives "0.16 (n=1)"; none gives "n/a".
    """
    v = as_float(series)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    m = float(v.mean())
    if v.size <= ddof:
        return f"{m:.{digits}f} (n={v.size})"
    return f"{m:.{digits}f}±{float(v.std(ddof=ddof)):.{digits}f}"


def mean_ci(x, alpha: float = 0.05) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n): Student-t (1 - alpha) interval of the mean over the finite values;
    (mean, NaN, NaN, n) for n < 2; a zero spread gives the degenerate interval [mean, mean]."""
    v = pd.to_numeric(pd.Series(np.asarray(x, dtype=object).ravel()), errors='coerce').to_numpy(float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if n < 2:
        return m, math.nan, math.nan, n
    half = float(_sps.t.ppf(1 - alpha / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return m, m - half, m + half, n


def risk_ratio(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05) -> Dict[str, Any]:
    """Risk ratio (k1/n1) / (k2/n2) with Katz's log CI. When a count is 0 (or k = n, where the
    log-variance term vanishes) 0.5 is added to each k and 1 to each n (noted). NaN if a group
    is empty or both counts are 0. Paper use: "KSS's 5.3x reduction" = rate(No control) / rate(KSS)."""
    k1, n1, k2, n2 = (int(v) for v in (k1, n1, k2, n2))
    if n1 == 0 or n2 == 0:
        return dict(rr=NAN, lo=NAN, hi=NAN, note='empty group')
    if k1 == 0 and k2 == 0:
        return dict(rr=NAN, lo=NAN, hi=NAN, note='no divergence in either group')
    note = ''
    a, b, c, d = float(k1), float(n1), float(k2), float(n2)
    if k1 == 0 or k2 == 0:
        a, b, c, d = a + 0.5, b + 1.0, c + 0.5, d + 1.0
        note = 'a zero count: 0.5 added to each k and 1 to each n'
    rr = (a / b) / (c / d)
    se = math.sqrt(max(0.0, 1 / a - 1 / b + 1 / c - 1 / d))
    z = float(_sps.norm.ppf(1 - alpha / 2))
    return dict(rr=rr, lo=rr * math.exp(-z * se), hi=rr * math.exp(z * se), note=note)


def cochran_armitage(doses: Sequence[float], k: Sequence[int], n: Sequence[int]) -> Dict[str, Any]:
    """Cochran-Armitage test for a linear trend of a proportion across ordered doses.

    T = sum_i x_i (k_i - n_i p), Var T = p (1 - p) [sum n_i x_i^2 - (sum n_i x_i)^2 / N], z = T / sqrt(Var),
    two-sided normal p (p = pooled rate, N = sum n). z < 0: the rate falls with the dose.
    Groups with n = 0 are dropped. ``dict(z, p, n_groups, note)``; NaN with a note when fewer
    than 2 doses, no variation in the doses, or a pooled rate of 0 or 1."""
    x, k, n = (np.asarray(v, float) for v in (doses, k, n))
    keep = n > 0
    x, k, n = x[keep], k[keep], n[keep]
    out = dict(z=NAN, p=NAN, n_groups=int(x.size), note='')
    if x.size < 2 or np.ptp(x) == 0:
        out['note'] = 'fewer than 2 distinct doses with runs'
        return out
    N = n.sum()
    pbar = k.sum() / N
    if pbar in (0.0, 1.0):
        out['note'] = 'no divergence at any dose' if pbar == 0 else 'every run diverged'
        return out
    T = float((x * (k - n * pbar)).sum())
    var = pbar * (1 - pbar) * float((n * x * x).sum() - (n * x).sum() ** 2 / N)
    z = T / math.sqrt(var)
    out.update(z=z, p=float(2 * _sps.norm.sf(abs(z))))
    return out


def spearman(x: Any, y: Any, exact_max_n: int = 8, n_resamples: int = 20000) -> Dict[str, Any]:
    """Spearman rank correlation over the finite pairs with a permutation two-sided p: exact (all
    n! pairings) for n <= ``exact_max_n``, else ``n_resamples`` random pairings (seed 0). The
    t-approximation scipy uses by default is wrong at small n (rho = -1 over 3 points has exact
    p = 1/3, not 0). ``dict(r, p, n, note)``, NaN when n < 3 or an input is constant."""
    x = np.asarray(pd.to_numeric(pd.Series(list(x)), errors='coerce'), float)
    y = np.asarray(pd.to_numeric(pd.Series(list(y)), errors='coerce'), float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = _correlation(x, y, _sps.spearmanr)
    if not math.isfinite(out['r']):
        return out
    exact = x.size <= exact_max_n

    def stat(a):
        return _sps.spearmanr(a, y).statistic
    res = _sps.permutation_test((x,), stat, permutation_type='pairings', alternative='two-sided',
                                n_resamples=np.inf if exact else n_resamples, rng=np.random.default_rng(0))
    out['p'] = float(res.pvalue)
    out['note'] = join_notes(out['note'], f"{'exact' if exact else 'Monte Carlo'} permutation p over {x.size} pairs")
    return out


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), NaN entries kept NaN and left out
    of the family. Monotone, >= the raw p, capped at 1."""
    p = np.asarray(p, float)
    out = np.full(p.shape, NAN)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind='stable')]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def p_from_ci(est: float, lo: float, hi: float, alpha: float = 0.05) -> float:
    """Two-sided Wald p of ``est = 0`` read off a ``1 - alpha`` CI: the standard error is the half
    of the CI that faces 0 divided by z (so p < alpha exactly when the CI excludes 0, also for an
    asymmetric bootstrap CI). An approximation for effects reported with a CI only, so that they
    can enter a multiplicity adjustment; NaN when the CI is missing or empty."""
    try:
        est, lo, hi = (float(v) for v in (est, lo, hi))
    except (TypeError, ValueError):
        return NAN
    if not all(math.isfinite(v) for v in (est, lo, hi)) or hi < lo or not lo <= est <= hi:
        return NAN
    half = (est - lo) if est > 0 else (hi - est)
    if half <= 0:
        return 0.0 if est != 0 else 1.0
    se = half / float(_sps.norm.ppf(1 - alpha / 2))
    return float(2 * _sps.norm.sf(abs(est) / se))


def pearson_ci(r: float, n: int, alpha: float = 0.05) -> Tuple[float, float]:
    """Fisher-z confidence interval of a Pearson r from n pairs; NaN when n <= 3 or r is NaN."""
    if r is None or not np.isfinite(r) or n <= 3:
        return NAN, NAN
    r = float(np.clip(r, -0.999999999, 0.999999999))
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    q = float(_sps.norm.ppf(1 - alpha / 2))
    return math.tanh(z - q * se), math.tanh(z + q * se)


# ----------------------------------------------------------------------------------------
# input cleaning
# ----------------------------------------------------------------------------------------
def as_labels(labels: Any) -> np.ndarray:
    """Labels as float array (NaN kept); anything other than 0/1/NaN raises."""
    y = np.asarray(pd.Series(np.asarray(labels).ravel()).astype("float64"), dtype=float)
    bad = ~np.isnan(y) & (y != 0) & (y != 1)
    if bad.any():
        raise RKSPInputError(f"labels must be 0/1 (or bool); got values {np.unique(y[bad])[:5].tolist()}")
    return y
