"""How well a score predicts divergence: AUROC with bootstrap CIs (Table 2), predictor tables,
cross-validated logistic models, ECE and reliability diagrams (App. H).

The counting statistics (Wilson, Fisher, rate differences, trends, correlations) are `stats.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable, Mapping, Tuple

import numpy as np
import pandas as pd

from rksp import defaults
from rksp.errors import RKSPInputError
from rksp.experiments.stats import NAN, as_float, as_labels, finite_numeric, join_notes


_CHUNK_CELLS = 2_000_000  # resample rows per chunk * max(n, n_unique) cells held at once


def _clean_pair(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, int]:
    s = as_float(scores)
    y = as_labels(labels)
    if s.shape != y.shape:
        raise RKSPInputError(f"scores and labels differ in length: {s.size} vs {y.size}")
    keep = ~(np.isnan(s) | np.isnan(y))
    return s[keep], y[keep].astype(np.int8), int((~keep).sum())


def _dropped_note(n_dropped: int) -> str:
    return f"dropped {n_dropped} row(s) with NaN score or label" if n_dropped else ""


# ----------------------------------------------------------------------------------------
# AUROC
# ----------------------------------------------------------------------------------------
def _dense_codes(s: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, codes = np.unique(s, return_inverse=True)
    return codes.ravel().astype(np.int64), int(uniq.size)


def _auc_rows(codes: np.ndarray, y: np.ndarray, idx: np.ndarray, n_unique: int) -> np.ndarray:
    """AUROC of every row of the resample index matrix ``idx`` (shape (B, n)), vectorized.

    ``codes`` are dense ranks of the scores (ties share a code). For row b the histograms of
    positives / negatives over the codes give U = sum_v pos[v] * (neg[<v] + neg[v] / 2).
    Rows with one class only give NaN.
    """
    n_rows, n = idx.shape
    out = np.empty(n_rows, dtype=float)
    chunk = max(1, _CHUNK_CELLS // max(n, n_unique, 1))
    for start in range(0, n_rows, chunk):  # loop over memory chunks only, not resamples
        sub = idx[start:start + chunk]
        b = sub.shape[0]
        flat = (np.arange(b, dtype=np.int64)[:, None] * n_unique + codes[sub]).ravel()
        yy = y[sub].ravel().astype(float)
        pos = np.bincount(flat, weights=yy, minlength=b * n_unique).reshape(b, n_unique)
        neg = np.bincount(flat, weights=1.0 - yy, minlength=b * n_unique).reshape(b, n_unique)
        neg_below = np.cumsum(neg, axis=1) - neg
        u = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
        n_pos = pos.sum(axis=1)
        n_neg = neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = u / (n_pos * n_neg)
        auc[(n_pos == 0) | (n_neg == 0)] = NAN
        out[start:start + b] = auc
    return out


def auroc(scores: Any, labels: Any, return_note: bool = False) -> float | tuple[float, str]:
    """AUROC of ``scores`` for ``labels`` (1 = positive / diverged), ties counted 1/2.

    Equals ``sklearn.metrics.roc_auc_score``. NaN when only one class is present (after
    dropping NaN rows); ``return_note=True`` also returns the reason as a string.
    """
    s, y, dropped = _clean_pair(scores, labels)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        val, note = NAN, join_notes(f"one class only (n_pos={n_pos}, n_neg={n_neg})", _dropped_note(dropped))
    else:
        codes, nu = _dense_codes(s)
        val = float(_auc_rows(codes, y, np.arange(y.size)[None, :], nu)[0])
        note = _dropped_note(dropped)
    return (val, note) if return_note else val


def auroc_permutation_p(scores: Any, labels: Any, n_resamples: int = 20000) -> float:
    """Two-sided permutation p of AUROC = 0.5 (the Mann-Whitney rank sum with the labels permuted):
    exact over all C(n, n_pos) label arrangements when there are at most ``n_resamples``, else
    ``n_resamples`` random ones (seed 0). Mid-ranks handle ties. NaN with a single class."""
    from scipy.stats import rankdata
    s, y = as_float(scores), as_labels(labels)
    keep = ~(np.isnan(s) | np.isnan(y))
    s, y = s[keep], y[keep].astype(bool)
    n, k = y.size, int(y.sum())
    if k == 0 or k == n:
        return NAN
    k = min(k, n - k)                            # the smaller class: same two-sided null
    r = rankdata(s)
    centre = k * (n + 1) / 2.0
    obs = abs(r[y].sum() - centre) if k == int(y.sum()) else abs(r[~y].sum() - centre)
    if math.comb(n, k) <= n_resamples:
        from itertools import combinations
        pos = np.fromiter((i for c in combinations(range(n), k) for i in c), dtype=np.int64).reshape(-1, k)
    else:
        rng = np.random.default_rng(0)
        pos = np.argsort(rng.random((n_resamples, n)), axis=1)[:, :k]
    hits = int((np.abs(r[pos].sum(1) - centre) >= obs - 1e-9).sum())
    return hits / len(pos) if math.comb(n, k) <= n_resamples else (hits + 1) / (len(pos) + 1)


def _boot_index(y: np.ndarray, n_boot: int, rng: np.random.Generator, stratified: bool) -> np.ndarray:
    n = y.size
    if not stratified:
        return rng.integers(0, n, size=(n_boot, n))
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    ip = pos[rng.integers(0, pos.size, size=(n_boot, pos.size))]
    ineg = neg[rng.integers(0, neg.size, size=(n_boot, neg.size))]
    return np.concatenate([ip, ineg], axis=1)


def _cluster_boot(stat, clusters: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``stat(idx)`` over ``n_boot`` resamples of whole clusters (the independent units, e.g. the
    initializations that several runs share), drawn with replacement; NaN for a one-class resample."""
    ids, inv = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inv == i) for i in range(ids.size)]
    out = np.full(n_boot, NAN)
    for b, pick in enumerate(rng.integers(0, ids.size, size=(n_boot, ids.size))):
        idx = np.concatenate([members[i] for i in pick])
        if 0 < y[idx].sum() < idx.size:
            out[b] = stat(idx[None, :])[0]
    return out


def _clean_clusters(clusters: Any, keep: np.ndarray) -> np.ndarray | None:
    if clusters is None:
        return None
    c = np.asarray(clusters).ravel()
    if c.size != keep.size:
        raise RKSPInputError(f"clusters has {c.size} entries, the scores {keep.size}")
    return c[keep]


def _percentile_ci(boot: np.ndarray, alpha: float) -> tuple[float, float, int]:
    ok = boot[~np.isnan(boot)]
    if ok.size == 0:
        return NAN, NAN, 0
    lo, hi = np.percentile(ok, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), int(boot.size - ok.size)


def auroc_ci(scores: Any, labels: Any, n_boot: int = defaults.BOOTSTRAP_RESAMPLES, seed: int = 0,
             alpha: float = 0.05, stratified: bool = True, clusters: Any = None) -> dict:
    """AUROC with a percentile bootstrap ``1 - alpha`` CI and an exact (or Monte Carlo)
    permutation p of AUROC = 0.5 (:func:`auroc_permutation_p`).

    Returns ``dict(auroc, lo, hi, p, n, n_pos, n_neg, n_clusters, note)``. With ``clusters`` (one
    id per score) the bootstrap resamples whole clusters, the independent units; else stratified
    resampling by default (class counts fixed); plain resampling skips one-class resamples (see
    module doc). ``n_boot=0`` skips the bootstrap (lo = hi = NaN). Deterministic given ``seed``.
    """
    raw_s, raw_y = as_float(scores), as_labels(labels)
    keep = ~(np.isnan(raw_s) | np.isnan(raw_y)) if raw_s.shape == raw_y.shape else None
    s, y, dropped = _clean_pair(scores, labels)
    cl = _clean_clusters(clusters, keep) if keep is not None else None
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    out = dict(auroc=NAN, lo=NAN, hi=NAN, p=NAN, n=int(y.size), n_pos=n_pos, n_neg=n_neg,
               n_clusters=int(np.unique(cl).size) if cl is not None else int(y.size), note="")
    if n_pos == 0 or n_neg == 0:
        out["note"] = join_notes(f"one class only (n_pos={n_pos}, n_neg={n_neg})", _dropped_note(dropped))
        return out
    codes, nu = _dense_codes(s)
    out["auroc"] = float(_auc_rows(codes, y, np.arange(y.size)[None, :], nu)[0])
    out["p"] = auroc_permutation_p(s, y)
    notes = [_dropped_note(dropped)]
    if n_boot and n_boot > 0:
        rng = np.random.default_rng(seed)
        if cl is not None:
            boot = _cluster_boot(lambda idx: _auc_rows(codes, y, idx, nu), cl, y, int(n_boot), rng)
            notes.append(f"bootstrap over {out['n_clusters']} clusters (inits)")
        else:
            boot = _auc_rows(codes, y, _boot_index(y, int(n_boot), rng, stratified), nu)
        out["lo"], out["hi"], skipped = _percentile_ci(boot, alpha)
        if skipped:
            notes.append(f"{skipped} of {n_boot} resamples had one class and were skipped")
    if min(n_pos, n_neg) < 5:
        notes.append(f"few of a class (n_pos={n_pos}, n_neg={n_neg}): CI unreliable")
    out["note"] = join_notes(*notes)
    return out


def auroc_diff_ci(scores_a: Any, scores_b: Any, labels: Any, n_boot: int = defaults.BOOTSTRAP_RESAMPLES,
                  seed: int = 0, alpha: float = 0.05, stratified: bool = True, clusters: Any = None) -> dict:
    """Paired bootstrap CI of AUROC(a) - AUROC(b) on the same runs (same resample rows for both).

    Rows where either score or the label is NaN are dropped. Returns
    ``dict(diff, lo, hi, auroc_a, auroc_b, n, n_pos, n_neg, note)``.
    """
    a = as_float(scores_a)
    b = as_float(scores_b)
    y = as_labels(labels)
    if not (a.shape == b.shape == y.shape):
        raise RKSPInputError("scores_a, scores_b and labels must have the same length")
    keep = ~(np.isnan(a) | np.isnan(b) | np.isnan(y))
    dropped = int((~keep).sum())
    cl = _clean_clusters(clusters, keep)
    a, b, y = a[keep], b[keep], y[keep].astype(np.int8)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    out = dict(diff=NAN, lo=NAN, hi=NAN, auroc_a=NAN, auroc_b=NAN, n=int(y.size), n_pos=n_pos,
               n_neg=n_neg, note="")
    if n_pos == 0 or n_neg == 0:
        out["note"] = join_notes(f"one class only (n_pos={n_pos}, n_neg={n_neg})", _dropped_note(dropped))
        return out
    ca, nua = _dense_codes(a)
    cb, nub = _dense_codes(b)
    full = np.arange(y.size)[None, :]
    out["auroc_a"] = float(_auc_rows(ca, y, full, nua)[0])
    out["auroc_b"] = float(_auc_rows(cb, y, full, nub)[0])
    out["diff"] = out["auroc_a"] - out["auroc_b"]
    notes = [_dropped_note(dropped)]
    if n_boot and n_boot > 0:
        rng = np.random.default_rng(seed)
        if cl is not None:
            d = _cluster_boot(lambda idx: _auc_rows(ca, y, idx, nua) - _auc_rows(cb, y, idx, nub), cl, y,
                              int(n_boot), rng)
            notes.append(f"bootstrap over {np.unique(cl).size} clusters (inits)")
        else:
            idx = _boot_index(y, int(n_boot), rng, stratified)
            d = _auc_rows(ca, y, idx, nua) - _auc_rows(cb, y, idx, nub)
        out["lo"], out["hi"], skipped = _percentile_ci(d, alpha)
        if skipped:
            notes.append(f"{skipped} of {n_boot} resamples had one class and were skipped")
    out["note"] = join_notes(*notes)
    return out


# ----------------------------------------------------------------------------------------
# Table 2: one row per predictor
# ----------------------------------------------------------------------------------------
def _predictor_row(sub: pd.DataFrame, spec: Any, label: str, n_boot: int, seed: int, alpha: float,
                   stratified: bool, cluster: str | None = None) -> dict:
    if callable(spec):
        val = spec(sub)
    elif isinstance(spec, str):
        if spec not in sub.columns:
            raise RKSPInputError(f"predictor column {spec!r} not in the frame")
        val = sub[spec]
    else:
        raise RKSPInputError(f"predictor must be a column name or a callable, got {type(spec).__name__}")
    if isinstance(val, Mapping):  # precomputed result, e.g. lambda d: cv_logistic(d, [...], label)
        keys = ("auroc", "lo", "hi", "p", "n", "n_pos", "n_neg", "note")
        return {k: val.get(k, NAN if k != "note" else "") for k in keys}
    return auroc_ci(val, sub[label], n_boot=n_boot, seed=seed, alpha=alpha, stratified=stratified,
                    clusters=sub[cluster].to_numpy() if cluster else None)


def predictor_table(df: pd.DataFrame, predictors: Mapping[str, str | Callable], label: str = "diverged",
                    by: str | None = None, n_boot: int = defaults.BOOTSTRAP_RESAMPLES, seed: int = 0,
                    alpha: float = 0.05, stratified: bool = True, cluster: str | None = None) -> pd.DataFrame:
    """AUROC + bootstrap CI + permutation p for each predictor (Table 2 shape); ``cluster``: a
    column of ``df`` naming the independent unit the bootstrap resamples (e.g. ``init_id``).

    ``predictors`` maps a display name to a column of ``df`` or a callable ``f(df)`` returning
    scores (array/Series aligned with ``df``) or a ready result dict with key ``auroc`` (e.g.
    ``lambda d: cv_logistic(d, ["m_near_unit", "log_lr"], "diverged")``). With ``by=`` the
    AUROC is computed within each stratum (NaN and note "one class only" where a stratum has
    a single class). Columns: predictor, [by], auroc, lo, hi, n, n_pos, n_neg, note.
    """
    if label not in df.columns:
        raise RKSPInputError(f"label column {label!r} not in the frame")
    rows = []
    groups = [(None, df)] if by is None else list(df.groupby(by, sort=False, dropna=False))
    for name, spec in predictors.items():
        for key, sub in groups:
            r = _predictor_row(sub, spec, label, n_boot, seed, alpha, stratified, cluster)
            if by is not None and math.isnan(r["auroc"]) and "one class only" not in str(r["note"]):
                n_pos, n_neg = r.get("n_pos", NAN), r.get("n_neg", NAN)
                if n_pos == 0 or n_neg == 0:
                    r = dict(r, note=join_notes("one class only", str(r["note"])))
            row = {"predictor": name}
            if by is not None:
                row[by] = key
            row.update({k: r.get(k, NAN) for k in ("auroc", "lo", "hi", "p", "n", "n_pos", "n_neg", "note")})
            rows.append(row)
    cols = ["predictor"] + ([by] if by is not None else []) + ["auroc", "lo", "hi", "p", "n", "n_pos", "n_neg", "note"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------------------
# cross-validated logistic regression (the "[M~1, log LR]" predictor, Platt calibration)
# ----------------------------------------------------------------------------------------
def cv_logistic(df: pd.DataFrame, features: Sequence[str], label: str = "diverged", n_splits: int = 5,
                seed: int = 0, n_boot: int = defaults.BOOTSTRAP_RESAMPLES, alpha: float = 0.05,
                C: float = 1.0) -> dict:
    """Standardized features -> L2 logistic regression, stratified K-fold out-of-fold probabilities.

    Returns ``dict(auroc, lo, hi, n, n_pos, n_neg, probs, coef, intercept, model, n_splits, note)``:
    ``probs`` is a Series aligned with ``df.index`` (out-of-fold P(label=1); NaN for rows with a
    NaN feature/label or when CV was impossible); AUROC + bootstrap CI are computed on those
    out-of-fold probabilities (the CI resamples runs, not the CV split). ``coef`` (per feature,
    standardized units) and ``model`` (a fitted sklearn Pipeline) come from a fit on all rows.
    If the minority class has fewer than ``n_splits`` rows the folds are reduced to that count;
    with fewer than 2 of a class the AUROC is NaN with a note.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = [features] if isinstance(features, str) else list(features)
    missing = [c for c in features + [label] if c not in df.columns]
    if missing:
        raise RKSPInputError(f"columns not in the frame: {missing}")
    X_all = df[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    y_all = as_labels(df[label])
    keep = ~(np.isnan(X_all).any(axis=1) | np.isnan(y_all) | np.isinf(X_all).any(axis=1))
    X, y = X_all[keep], y_all[keep].astype(int)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    probs = pd.Series(NAN, index=df.index, dtype=float, name="p_oof")
    out = dict(auroc=NAN, lo=NAN, hi=NAN, n=int(y.size), n_pos=n_pos, n_neg=n_neg, probs=probs,
               coef={f: NAN for f in features}, intercept=NAN, model=None, n_splits=0, note="")
    notes = [f"dropped {int((~keep).sum())} row(s) with NaN/inf feature or label" if (~keep).any() else ""]

    def _model():
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))

    if n_pos >= 1 and n_neg >= 1:
        model = _model().fit(X, y)
        lr = model[-1]
        out.update(model=model, coef=dict(zip(features, lr.coef_.ravel().tolist())),
                   intercept=float(lr.intercept_[0]))
    k = min(int(n_splits), n_pos, n_neg)
    if k < 2:
        notes.append(f"too few of a class for cross-validation (n_pos={n_pos}, n_neg={n_neg})")
        out["note"] = join_notes(*notes)
        return out
    if k < n_splits:
        notes.append(f"folds reduced from {n_splits} to {k} (minority class has {min(n_pos, n_neg)})")
    oof = np.full(y.size, NAN)
    for tr, te in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y):
        oof[te] = _model().fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    probs.loc[df.index[keep]] = oof
    res = auroc_ci(oof, y, n_boot=n_boot, seed=seed, alpha=alpha)
    out.update(auroc=res["auroc"], lo=res["lo"], hi=res["hi"], probs=probs, n_splits=k)
    notes.append(res["note"])
    out["note"] = join_notes(*notes)
    return out


# ----------------------------------------------------------------------------------------
# calibration (App. H)
# ----------------------------------------------------------------------------------------
def ece(probs: Any, labels: Any, n_bins: int = defaults.ECE_BINS) -> dict:
    """Expected calibration error over ``n_bins`` equal-width bins on [0, 1].

    Returns ``dict(ece, mce, n, bins, note)``; ``bins`` has one row per bin (empty bins too):
    bin_lo, bin_hi, n, n_pos, n_neg, mean_pred, frac_pos, gap (= frac_pos - mean_pred).
    ``mce`` is the largest |gap| over non-empty bins. Probabilities outside [0, 1] raise.
    """
    p, y, dropped = _clean_pair(probs, labels)
    tol = 1e-9
    if p.size and (p.min() < -tol or p.max() > 1 + tol):
        raise RKSPInputError(f"probabilities must lie in [0, 1]; got range [{p.min():.4g}, {p.max():.4g}]")
    p = np.clip(p, 0.0, 1.0)
    n_bins = int(n_bins)
    b = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    cnt = np.bincount(b, minlength=n_bins).astype(float)
    npos = np.bincount(b, weights=y.astype(float), minlength=n_bins)
    sump = np.bincount(b, weights=p, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = sump / cnt
        frac_pos = npos / cnt
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = pd.DataFrame({
        "bin_lo": edges[:-1], "bin_hi": edges[1:], "n": cnt.astype(int), "n_pos": npos.astype(int),
        "n_neg": (cnt - npos).astype(int), "mean_pred": mean_pred, "frac_pos": frac_pos,
        "gap": frac_pos - mean_pred,
    })
    n = int(p.size)
    if n == 0:
        return dict(ece=NAN, mce=NAN, n=0, bins=bins, note=join_notes("no rows", _dropped_note(dropped)))
    nz = cnt > 0
    gaps = np.abs(frac_pos[nz] - mean_pred[nz])
    return dict(ece=float((cnt[nz] / n * gaps).sum()), mce=float(gaps.max()), n=n, bins=bins,
                note=_dropped_note(dropped))


def calibration(df: pd.DataFrame, score: str, label: str = "diverged", n_bins: int = defaults.ECE_BINS,
                n_splits: int = 5, seed: int = 0) -> dict:
    """ECE of the raw score used as P(label=1) and of a cross-validated Platt (logistic) fit.

    Returns ``dict(raw=ece(...), platt=ece(...), platt_probs=Series, note)``. The Platt
    probabilities are out-of-fold (:func:`cv_logistic` on the single feature ``score``).
    """
    raw = ece(df[score], df[label], n_bins=n_bins)
    cv = cv_logistic(df, [score], label, n_splits=n_splits, seed=seed, n_boot=0)
    platt = ece(cv["probs"], df[label], n_bins=n_bins)
    return dict(raw=raw, platt=platt, platt_probs=cv["probs"], note=cv["note"])


def reliability_plot(bins_df: pd.DataFrame, ax=None, title: str = "Reliability diagram",
                     ece_value: float | None = None):
    """Reliability diagram + prediction histogram split by outcome (App. H Fig. 5 shape).

    ``bins_df`` is ``ece(...)["bins"]``. ``ax``: None (a new 1x2 figure), a pair of Axes
    (reliability, histogram), or one Axes (reliability only, histogram on a twin y-axis).
    Returns the Figure.
    """
    import matplotlib.pyplot as plt

    twin = False
    if ax is None:
        fig, (ax_rel, ax_hist) = plt.subplots(1, 2, figsize=(9, 3.8))
    elif isinstance(ax, (list, tuple, np.ndarray)):
        ax_rel, ax_hist = ax[0], ax[1]
        fig = ax_rel.figure
    else:
        ax_rel, ax_hist = ax, ax.twinx()
        fig = ax.figure
        twin = True
    lo = bins_df["bin_lo"].to_numpy(float)
    hi = bins_df["bin_hi"].to_numpy(float)
    width = hi - lo
    nz = bins_df["n"].to_numpy() > 0
    ax_rel.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax_rel.bar(lo[nz], bins_df["frac_pos"].to_numpy(float)[nz], width=width[nz], align="edge",
               color="#6baed6", edgecolor="k", lw=0.5, alpha=0.8, label="observed frequency")
    ax_rel.plot(bins_df["mean_pred"].to_numpy(float)[nz], bins_df["frac_pos"].to_numpy(float)[nz], "o",
                color="#d62728", ms=4, label="bin mean prediction")
    ax_rel.set_xlim(0, 1)
    ax_rel.set_ylim(0, 1)
    ax_rel.set_xlabel("predicted divergence probability")
    ax_rel.set_ylabel("observed divergence frequency")
    t = title if ece_value is None or not np.isfinite(ece_value) else f"{title} (ECE = {ece_value:.3f})"
    ax_rel.set_title(t)
    ax_rel.legend(loc="upper left", fontsize=7)
    n_neg = bins_df["n_neg"].to_numpy(float)
    n_pos = bins_df["n_pos"].to_numpy(float)
    alpha_h = 0.35 if twin else 0.8
    ax_hist.bar(lo, n_neg, width=width, align="edge", color="#74c476", edgecolor="k", lw=0.4,
                alpha=alpha_h, label="converged")
    ax_hist.bar(lo, n_pos, width=width, bottom=n_neg, align="edge", color="#fb6a4a", edgecolor="k", lw=0.4,
                alpha=alpha_h, label="diverged")
    ax_hist.set_ylabel("runs")
    if not twin:
        ax_hist.set_xlim(0, 1)
        ax_hist.set_xlabel("predicted divergence probability")
        ax_hist.set_title("predictions by outcome")
    ax_hist.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def ece_ci(probs: Any, labels: Any, n_bins: int = defaults.ECE_BINS, n_boot: int = defaults.BOOTSTRAP_RESAMPLES,
           seed: int = 0, alpha: float = 0.05) -> Tuple[float, float]:
    """Percentile bootstrap CI of the ECE (runs resampled with replacement); (NaN, NaN) with fewer
    than 2 finite rows or ``n_boot = 0``. The binned ECE is biased upward and so are its
    resamples: for a well-calibrated score the interval can sit above the point estimate."""
    p = finite_numeric(pd.Series(np.asarray(probs, dtype=float).ravel()))
    y = finite_numeric(pd.Series(np.asarray(labels, dtype=float).ravel()))
    keep = p.notna() & y.notna()
    p, y = p[keep].to_numpy(), y[keep].to_numpy()
    if p.size < 2 or not n_boot:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, p.size, size=(int(n_boot), p.size))
    b = np.clip(np.floor(np.clip(p, 0, 1) * n_bins).astype(int), 0, n_bins - 1)
    vals = np.empty(int(n_boot))
    for i, ix in enumerate(idx):      # n_boot small histograms; cheap for a few hundred runs
        bb, pp, yy = b[ix], p[ix], y[ix]
        cnt = np.bincount(bb, minlength=n_bins)
        gap = np.abs(np.bincount(bb, weights=yy, minlength=n_bins) - np.bincount(bb, weights=pp, minlength=n_bins))
        vals[i] = gap.sum() / cnt.sum()
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)
