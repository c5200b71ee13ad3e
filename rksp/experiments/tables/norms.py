"""Table and figure builders of notebooks 01-03: normalization (Table 1, Fig. 1), predictors
(Table 2) and calibration (App. H, Fig. 5), all on the pooled plain recall runs
(:func:`rksp.experiments.plans.recall_pool`).

Conventions:

* :func:`pool_runs` deduplicates the pool by config hash (the No-Norm runs of the LR band and of
  the normalization sweep overlap) and adds the derived columns ``m_near_unit`` (= ``prof_score``,
  the layer mean of M≈1 at init), ``m_expansive``, ``rho`` (layer mean of the spectral radius),
  ``kappa`` (layer mean of κ(V)), ``log10_kappa``, ``m_x_log10_kappa`` and ``log10_lr``.
* The init profile depends on (norm, seed) only, not on the LR, so the spectral columns of
  Table 1 and the M≈1 ordering tests use one value per distinct initialization
  (:func:`init_rows`); divergence, accuracy and every AUROC are per run, as in the paper.
* Nothing here raises on degenerate data (no run diverged, one class in a stratum, NaN profile
  fields): values are NaN and a ``note`` says why.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import stats as _sps

from rksp import defaults
from rksp.core.dmd import whitened_dmd
from rksp.core.snapshots import capture_hidden, transitions
from rksp.experiments import paper as P
from rksp.experiments.prediction_stats import (auroc_ci, auroc_diff_ci, cv_logistic, ece, ece_ci, predictor_table,
                                               reliability_plot)
from rksp.experiments.stats import divergence_rate_table, finite_numeric, fisher_exact, rate_difference, wilson
from rksp.experiments.stats import mean_ci  # noqa: F401 (NT.mean_ci in notebook 01)
from rksp.experiments.tables.common import data_used
from rksp.harness.build import model_at_init
from rksp.harness.config import TrainConfig
from rksp.models.gpt import NORM_NAMES, NORMS

NAN = float('nan')

__all__ = ['pool_runs', 'init_rows', 'mean_ci', 'mean_diff', 'norm_table', 'format_norm_table', 'nonorm_vs_rest',
           'TABLE2_PREDICTORS', 'GRADIENT_BASELINES', 'NORM_IDENTITY_PREDICTORS', 'norm_identity_table', 'table2', 'stratified_table', 'LOGISTIC_SETS',
           'logistic_table', 'paired_best_baseline', 'ece_ci', 'calibration_table', 'init_model',
           'init_eigenvalues', 'eigenvalue_figure', 'roc_figure', 'reliability_figure']


# ----------------------------------------------------------------------------- the pool


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return finite_numeric(df[name]) if name in df else pd.Series(NAN, index=df.index, dtype=float)


def _log10(s: pd.Series) -> pd.Series:
    s = finite_numeric(s)
    return np.log10(s.where(s > 0))


def pool_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """The pooled runs: finished runs (status 'ok'), one row per config hash, derived columns added
    (module doc). ``diverged`` becomes 0/1 (NaN if unknown)."""
    df = rows.copy()
    if 'status' in df:
        df = df[df['status'] == 'ok']
    if 'hash' in df:
        df = df.drop_duplicates('hash', keep='first')
    df = df.reset_index(drop=True)
    div = df['diverged'] if 'diverged' in df else pd.Series(np.nan, index=df.index)
    df['diverged'] = pd.Series([NAN if v is None or (isinstance(v, float) and math.isnan(v)) else float(bool(v))
                                for v in div], index=df.index, dtype=float)
    df['m_near_unit'] = _col(df, 'prof_score')
    df['m_expansive'] = _col(df, 'prof_m_expansive_mean')
    df['rho'] = _col(df, 'prof_rho_mean')
    df['kappa'] = _col(df, 'prof_kappa_mean')
    df['log10_kappa'] = _log10(df['kappa'])
    df['m_x_log10_kappa'] = df['m_near_unit'] * df['log10_kappa']
    df['log10_lr'] = _log10(_col(df, 'lr'))
    df['init_id'] = init_ids(df)
    return _mask_early_stops(df)


INIT_KEYS = ('norm', 'seed', 'd_model', 'n_layer', 'n_head', 'init', 'init_std')


def init_ids(pool: pd.DataFrame) -> np.ndarray:
    """One integer per distinct initialization (:data:`INIT_KEYS`): the independent unit of the
    pooled runs (runs that differ only in LR share their init profile), which bootstraps resample."""
    keys = [k for k in INIT_KEYS if k in pool]
    if not keys or not len(pool):
        return np.arange(len(pool))
    return pool[keys].astype(str).agg('|'.join, axis=1).factorize()[0]


def init_rows(pool: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct initialization (norm, seed and model size): the init profile does not
    depend on the LR, so runs that differ only in LR share it."""
    keys = [k for k in INIT_KEYS if k in pool]
    return pool.drop_duplicates(keys, keep='first').reset_index(drop=True)


def mean_diff(a: Any, b: Any, alpha: float = 0.05) -> Dict[str, Any]:
    """mean(a) - mean(b) with a Welch t-test (two-sided p) and its ``1 - alpha`` CI.

    Needs >= 2 finite values per group, else NaN with a note. When both groups have zero spread
    the Welch statistic is the limit sd -> 0: p = 0 and CI = [delta, delta] if the means differ
    (p = 1 if they are equal), noted as such."""
    va = finite_numeric(pd.Series(np.asarray(a, dtype=float).ravel())).dropna().to_numpy()
    vb = finite_numeric(pd.Series(np.asarray(b, dtype=float).ravel())).dropna().to_numpy()
    out = dict(delta=NAN, lo=NAN, hi=NAN, p=NAN, n_a=int(va.size), n_b=int(vb.size), note='')
    if va.size == 0 or vb.size == 0:
        out['note'] = 'an empty group'
        return out
    out['delta'] = float(va.mean() - vb.mean())
    if va.size < 2 or vb.size < 2:
        out['note'] = f'fewer than 2 values in a group (n_a={va.size}, n_b={vb.size}): no test'
        return out
    sa, sb = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
    se = math.sqrt(sa + sb)
    if se == 0:
        d = out['delta']
        out.update(lo=d, hi=d, p=0.0 if d != 0 else 1.0,
                   note='zero spread in both groups (Welch limit sd -> 0)')
        return out
    df = (sa + sb) ** 2 / ((sa ** 2 / (va.size - 1) if sa > 0 else 0.0) + (sb ** 2 / (vb.size - 1) if sb > 0 else 0.0))
    t = out['delta'] / se
    half = float(_sps.t.ppf(1 - alpha / 2, df)) * se
    out.update(lo=out['delta'] - half, hi=out['delta'] + half, p=float(2 * _sps.t.sf(abs(t), df)))
    return out


# ----------------------------------------------------------------------------- Table 1

def norm_table(pool: pd.DataFrame, norms: Sequence[str] = NORMS,
               paper: Optional[Mapping[str, Mapping[str, float]]] = None) -> pd.DataFrame:
    """Table 1: one row per normalization.

    Per run: n, diverged k, Div.% with Wilson 95% CI, Fisher p of this norm against all other norms
    pooled, Acc.% (mean, sd of val_acc over the runs that did not diverge; n_acc of them).
    Per distinct initialization (n_inits): mean and sd of M≈1, M>1 and ρ at init (layer means).
    ``paper_*`` from :data:`rksp.experiments.paper.TABLE1`; ``data`` says which data trained the runs and
    ``init`` which weight init (e.g. 'gpt2 σ=0.02', 'normal σ=0.04')."""
    paper = P.TABLE1 if paper is None else paper
    lab = pool.dropna(subset=['diverged'])
    rates = divergence_rate_table(lab, 'norm') if len(lab) else pd.DataFrame(columns=['norm', 'p'])
    p_rest = dict(zip(rates['norm'], rates['p']))
    inits = init_rows(pool)
    out = []
    for norm in norms:
        g = lab[lab['norm'] == norm]
        gi = inits[inits['norm'] == norm]
        n, k = len(g), int(g['diverged'].sum()) if len(g) else 0
        lo, hi = wilson(k, n) if n else (NAN, NAN)
        conv = g[g['diverged'] == 0]
        acc = 100.0 * _col(conv, 'val_acc').dropna()
        notes = []
        if n == 0:
            notes.append('no runs')
        elif len(acc) == 0:
            notes.append('every run diverged: no accuracy')
        nan_prof = int(gi['m_near_unit'].isna().sum())
        if nan_prof:
            notes.append(f'{nan_prof} init(s) without an RKSP profile')
        row = {'norm': NORM_NAMES.get(norm, norm), 'n': n, 'n_div': k,
               'div_pct': 100.0 * k / n if n else NAN, 'div_ci_lo': 100.0 * lo, 'div_ci_hi': 100.0 * hi,
               'fisher_p_vs_rest': p_rest.get(norm, NAN), 'n_inits': len(gi)}
        for col in ('m_near_unit', 'm_expansive', 'rho'):
            v = gi[col].dropna()
            row[f'{col}_mean'] = float(v.mean()) if len(v) else NAN
            row[f'{col}_sd'] = float(v.std(ddof=1)) if len(v) > 1 else NAN
        row.update({'acc_pct_mean': float(acc.mean()) if len(acc) else NAN,
                    'acc_pct_sd': float(acc.std(ddof=1)) if len(acc) > 1 else NAN, 'n_acc': int(len(acc))})
        pr = paper.get(norm, {})
        row.update({f'paper_{k2}': pr.get(k2, NAN) for k2 in ('n', 'div_pct', 'm_near_unit', 'm_expansive', 'rho',
                                                            'acc_pct')})
        row['data'] = data_used(g)
        row['init'] = _inits_used(g)
        row['note'] = '; '.join(notes)
        out.append(row)
    return pd.DataFrame(out)


def norm_lr_table(pool: pd.DataFrame, norms: Sequence[str] = NORMS) -> pd.DataFrame:
    """Table 1 by learning rate (issue 21: does the regime learn?): one row per (norm, lr) with n,
    diverged k, Div.%, and acc_pct = the mean validation accuracy (%) of the runs that did not
    diverge (sd, n_acc of them)."""
    lab = pool.dropna(subset=['diverged'])
    out = []
    for norm in norms:
        g = lab[lab['norm'] == norm]
        for lr, gl in g.groupby('lr', sort=True):
            k = int(gl['diverged'].sum())
            acc = 100.0 * _col(gl[gl['diverged'] == 0], 'val_acc').dropna()
            out.append({'norm': NORM_NAMES.get(norm, norm), 'lr': float(lr), 'n': len(gl), 'n_div': k,
                        'div_pct': 100.0 * k / len(gl), 'acc_pct': float(acc.mean()) if len(acc) else NAN,
                        'acc_pct_sd': float(acc.std(ddof=1)) if len(acc) > 1 else NAN, 'n_acc': int(len(acc))})
    return pd.DataFrame(out, columns=['norm', 'lr', 'n', 'n_div', 'div_pct', 'acc_pct', 'acc_pct_sd', 'n_acc'])


def _inits_used(rows: pd.DataFrame) -> str:
    """'gpt2 σ=0.02' / 'normal σ=0.04' / 'torch' (joined with '; ' when the rows mix inits) for
    the weight init of the rows (the `init` / `init_std` columns of rksp.harness.sweep; '' if absent)."""
    if 'init' not in rows or not len(rows):
        return ''
    out = []
    std = rows['init_std'] if 'init_std' in rows else pd.Series(NAN, index=rows.index)
    for init, sd in dict.fromkeys(zip(rows['init'], std)):
        try:
            sdf = float(sd)
        except (TypeError, ValueError):
            sdf = NAN
        out.append(str(init) + (f' σ={sdf:g}' if not math.isnan(sdf) else ''))
    return '; '.join(out)


def _pm(m: float, sd: float, digits: int = 2) -> str:
    if m is None or not np.isfinite(m):
        return 'n/a'
    return f'{m:.{digits}f}' + (f'±{sd:.{digits}f}' if sd is not None and np.isfinite(sd) else '')


def format_norm_table(t: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as the paper prints it (mean±sd strings, ours then the paper's value), for display."""
    rows = []
    for _, r in t.iterrows():
        rows.append({
            'Norm': r['norm'], 'n (paper)': f"{r['n']} ({r['paper_n']:g})",
            'Div.% [95% CI] (paper)': (f"{r['div_pct']:.1f} [{r['div_ci_lo']:.0f}, {r['div_ci_hi']:.0f}] "
                                      f"({r['paper_div_pct']:g})") if r['n'] else 'n/a',
            'Fisher p vs rest': f"{r['fisher_p_vs_rest']:.2g}",
            'M≈1 (paper)': f"{_pm(r['m_near_unit_mean'], r['m_near_unit_sd'])} ({r['paper_m_near_unit']:.2f})",
            'M>1 (paper)': f"{_pm(r['m_expansive_mean'], r['m_expansive_sd'])} ({r['paper_m_expansive']:.2f})",
            'ρ (paper)': f"{_pm(r['rho_mean'], r['rho_sd'])} ({r['paper_rho']:.2f})",
            'n_inits': r['n_inits'],
            'Acc.% of n_acc runs (paper)': f"{_pm(r['acc_pct_mean'], r['acc_pct_sd'], 1)} of {r['n_acc']} "
                                           f"({r['paper_acc_pct']:g})",
        })
    return pd.DataFrame(rows)


def nonorm_vs_rest(pool: pd.DataFrame, norm: str = 'none') -> Dict[str, Any]:
    """Divergence of `norm` vs every other normalization pooled (Table 1 caption: No-Norm vs
    others, Fisher exact p < 1e-50): counts, the rate difference with Newcombe's 95% CI and the
    two-sided Fisher p (fractions)."""
    lab = pool.dropna(subset=['diverged'])
    a, b = lab[lab['norm'] == norm], lab[lab['norm'] != norm]
    k1, n1, k2, n2 = int(a['diverged'].sum()), len(a), int(b['diverged'].sum()), len(b)
    rd = rate_difference(k1, n1, k2, n2)
    f = fisher_exact(k1, n1, k2, n2)
    return dict(k_norm=k1, n_norm=n1, k_rest=k2, n_rest=n2, delta=rd['delta'], lo=rd['lo'], hi=rd['hi'],
                odds_ratio=f['odds_ratio'], p=f['p'],
                note='' if (n1 and n2) else 'a group is empty')


# ----------------------------------------------------------------------------- Table 2

# display name (the keys of rksp.experiments.paper.TABLE2) -> (column of pool_runs, when it is known)
TABLE2_PREDICTORS: Dict[str, Tuple[str, str]] = {
    'M≈1 at init': ('m_near_unit', 'init (before training)'),
    'M≈1 × log10 κ(V) at init': ('m_x_log10_kappa', 'init (before training)'),
    'Spectral radius ρ at init': ('rho', 'init (before training)'),
    'Eigenvector condition κ(V) at init': ('kappa', 'init (before training)'),
    'Initial gradient norm': ('grad_norm_step1', 'step 1'),
    'Gradient norm at step 100': ('grad_norm_step100', 'step 100'),
    'Gradient variance, steps 1–100': ('grad_var_1_100', 'steps 1–100'),
    'Loss spike count, steps 1–500': ('loss_spikes_1_500', 'steps 1–500'),
}
GRADIENT_BASELINES = ('Initial gradient norm', 'Gradient norm at step 100', 'Gradient variance, steps 1–100',
                      'Loss spike count, steps 1–500')
_HORIZON = {'grad_norm_step1': 1, 'grad_norm_step100': 100, 'grad_var_1_100': 100, 'loss_spikes_1_500': 500}


def baseline_horizon(pool: pd.DataFrame, col: str) -> float:
    """The step a gradient baseline is read at: the paper's (1, 100, 500), or the planned number of
    steps when the runs are shorter; NaN for a column that is not a gradient baseline."""
    h = _HORIZON.get(col)
    if h is None:
        return NAN
    planned = _col(pool, 'steps')
    return float(min(h, np.nanmax(planned))) if planned.notna().any() else float(h)


def _mask_early_stops(df: pd.DataFrame) -> pd.DataFrame:
    """Gradient baselines are read at their step (:func:`baseline_horizon`) and only for runs that
    trained to it: a run that diverged (or stopped) before the step would otherwise give a baseline
    read just before its divergence, which sees the outcome. Those values become NaN."""
    steps = _col(df, 'steps_done')
    for col in _HORIZON:
        if col in df:
            h = baseline_horizon(df, col)
            df[col] = finite_numeric(df[col]).where(steps >= h)
    return df


def _horizon_note(pool: pd.DataFrame, col: str) -> str:
    """How a gradient baseline was read: at which step, and how many runs were left out because they
    stopped (diverged) before it (:func:`_mask_early_stops`)."""
    h = baseline_horizon(pool, col)
    if not np.isfinite(h) or not len(pool):
        return ''
    steps = _col(pool, 'steps_done')
    excluded = int((steps < h).sum())
    parts = [f'read at step {int(h)}' + ('' if h == _HORIZON[col] else f' (the runs train {int(h)} < {_HORIZON[col]} steps)')]
    if excluded:
        parts.append(f'{excluded} run(s) that stopped before step {int(h)} excluded '
                     f'({int(((pool["diverged"] == 1) & (steps < h)).sum())} of them diverged)')
    return '; '.join(parts)


def _pool_cols(pool: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    df = pool.copy()
    for c in cols:
        if c not in df:
            df[c] = NAN
        df[c] = finite_numeric(df[c])
    return df


# Table 2's extra rows (issue 14): how much of the pooled AUROC the normalization identity alone
# explains, and what M≈1 adds to it. Not in the paper (paper columns NaN).
NORM_IDENTITY_PREDICTORS = ('Normalization identity (one-hot), CV logistic',
                            'Normalization identity, per-norm divergence rate (in-sample upper bound)',
                            'M≈1 at init + normalization one-hot, CV logistic')


def _norm_onehot(df: pd.DataFrame) -> Tuple[pd.DataFrame, List[str]]:
    df = df.copy()
    norms = [n for n in dict.fromkeys(df['norm'].astype(str))] if 'norm' in df else []
    cols = []
    for n in norms:
        c = f'norm_is_{n}'
        df[c] = (df['norm'].astype(str) == n).astype(float)
        cols.append(c)
    return df, cols


def norm_identity_table(pool: pd.DataFrame, n_boot: int = defaults.BOOTSTRAP_RESAMPLES,
                        seed: int = 0) -> pd.DataFrame:
    """AUROC for divergence of the normalization identity alone, over the pooled runs:

    * a cross-validated logistic on the one-hot of ``norm`` (out-of-fold probabilities, as the
      other CV rows);
    * each run scored by its norm's divergence rate over the pool (in-sample: the highest AUROC
      *any* score that depends on the norm only can reach on these runs, so a pooled M≈1 AUROC
      at or below it says nothing beyond which norm a run has);
    * a cross-validated logistic on [M≈1, one-hot of norm]: what M≈1 adds once the norm is known.
    The within-norm AUROCs of M≈1 are :func:`stratified_table`'s."""
    df = _pool_cols(pool, ['m_near_unit'])
    df = df.dropna(subset=['diverged'])
    df, cols = _norm_onehot(df)
    rate = df.groupby('norm')['diverged'].transform('mean') if cols else pd.Series(NAN, index=df.index)
    preds = {
        NORM_IDENTITY_PREDICTORS[0]: lambda d: cv_logistic(d, cols, 'diverged', n_boot=n_boot, seed=seed),
        NORM_IDENTITY_PREDICTORS[1]: lambda d: rate.loc[d.index],
        NORM_IDENTITY_PREDICTORS[2]: lambda d: cv_logistic(d, ['m_near_unit'] + cols, 'diverged', n_boot=n_boot,
                                                           seed=seed),
    }
    if not cols:
        t = pd.DataFrame({'predictor': list(preds), 'auroc': NAN, 'lo': NAN, 'hi': NAN, 'n': 0, 'n_pos': 0,
                          'n_neg': 0, 'note': 'no norm column'})
    else:
        t = predictor_table(df, preds, 'diverged', n_boot=n_boot, seed=seed)
    n_norms = len(cols)
    t['note'] = ['; '.join(x for x in (str(nt), f'{n_norms} normalization(s) in the pool') if x and x != 'nan')
                 for nt in t['note']]
    return t


def table2(pool: pd.DataFrame, n_boot: int = defaults.BOOTSTRAP_RESAMPLES, seed: int = 0,
           predictors: Mapping[str, Tuple[str, str]] = TABLE2_PREDICTORS,
           norm_identity: bool = False) -> pd.DataFrame:
    """Table 2: AUROC of each predictor for divergence over the pooled runs, stratified bootstrap
    95% CI, when the predictor is known (``timing``) and the paper's AUROC / CI. With
    ``norm_identity`` the rows of :func:`norm_identity_table` follow (not in the paper)."""
    df = _pool_cols(pool, [c for c, _ in predictors.values()])
    t = predictor_table(df, {k: c for k, (c, _) in predictors.items()}, 'diverged', n_boot=n_boot, seed=seed,
                        cluster='init_id' if 'init_id' in df else None)
    timing = {k: v[1] for k, v in predictors.items()}
    if norm_identity:
        t = pd.concat([t, norm_identity_table(pool, n_boot=n_boot, seed=seed)], ignore_index=True)
        timing.update({k: 'init (the normalization is known before training)' for k in NORM_IDENTITY_PREDICTORS})
    t.insert(1, 'timing', [timing[k] for k in t['predictor']])
    t['paper_auroc'] = [P.TABLE2.get(k, (NAN,) * 3)[0] for k in t['predictor']]
    t['paper_lo'] = [P.TABLE2.get(k, (NAN,) * 3)[1] for k in t['predictor']]
    t['paper_hi'] = [P.TABLE2.get(k, (NAN,) * 3)[2] for k in t['predictor']]
    t['data'] = data_used(pool)
    t['note'] = ['; '.join(x for x in (str(nt), _horizon_note(pool, predictors[k][0]) if k in predictors else '') if x)
                 for k, nt in zip(t['predictor'], t['note'])]
    return t


def stratified_table(pool: pd.DataFrame, n_boot: int = defaults.BOOTSTRAP_RESAMPLES, seed: int = 0,
                     predictors: Optional[Mapping[str, Any]] = None) -> pd.DataFrame:
    """AUROC of each predictor within each normalization (Table 2 by stratum), plus log10 LR itself
    as a reference score (it is not known from the init profile) and the cross-validated logistic
    on [M≈1, log10 LR]. ``both_classes`` says where an AUROC is measurable at all."""
    if predictors is None:
        predictors = {k: c for k, (c, _) in TABLE2_PREDICTORS.items()}
        predictors = {**predictors, 'log10 LR (reference, not an init score)': 'log10_lr',
                      'CV logistic [M≈1, log10 LR]':
                          lambda d: cv_logistic(d, ['m_near_unit', 'log10_lr'], 'diverged', n_boot=n_boot, seed=seed)}
    cols = [c for c in predictors.values() if isinstance(c, str)]
    df = _pool_cols(pool, cols).dropna(subset=['diverged'])
    rank = {n: i for i, n in enumerate(NORMS)}
    key = df['norm'].map(lambda n: rank.get(n, len(NORMS))).to_numpy()
    df = df.iloc[np.argsort(key, kind='stable')]
    t = predictor_table(df, predictors, 'diverged', by='norm', n_boot=n_boot, seed=seed,
                        cluster='init_id' if 'init_id' in df else None)
    counts = df.groupby('norm')['diverged'].agg(['size', 'sum'])
    t['n_runs'] = [int(counts.loc[n, 'size']) for n in t['norm']]
    t['n_div'] = [int(counts.loc[n, 'sum']) for n in t['norm']]
    t['both_classes'] = [0 < k < n for k, n in zip(t['n_div'], t['n_runs'])]
    const = {n: bool(g['m_near_unit'].dropna().nunique() == 1 and 0 < g['diverged'].sum() < len(g))
             for n, g in df.groupby('norm')}
    t['note'] = ['; '.join(x for x in (str(nt), 'M≈1 is constant in this stratum: it cannot rank runs'
                                       if const.get(n) and p.startswith('M≈1 at init') else '') if x)
                 for nt, n, p in zip(t['note'], t['norm'], t['predictor'])]
    t['norm'] = t['norm'].map(lambda n: NORM_NAMES.get(n, n))
    return t


# name -> features of the cross-validated logistic predictors
LOGISTIC_SETS: Dict[str, List[str]] = {
    'CV logistic [M≈1]': ['m_near_unit'],
    'CV logistic [log10 LR]': ['log10_lr'],
    'CV logistic [M≈1, log10 LR]': ['m_near_unit', 'log10_lr'],
    'CV logistic [M≈1, ρ, log10 κ, log10 LR]': ['m_near_unit', 'rho', 'log10_kappa', 'log10_lr'],
}


def logistic_table(pool: pd.DataFrame, n_boot: int = defaults.BOOTSTRAP_RESAMPLES, seed: int = 0,
                   sets: Mapping[str, Sequence[str]] = LOGISTIC_SETS) -> Tuple[pd.DataFrame, Dict[str, pd.Series]]:
    """Cross-validated (stratified 5-fold) logistic predictors on the pooled runs: AUROC of the
    out-of-fold probabilities with a bootstrap CI and the standardized coefficients of the full
    fit (``coef_<feature>``, per standard deviation; NaN where a set lacks the feature). Returns
    (table, {name: out-of-fold probabilities aligned with ``pool``})."""
    all_feats = list(dict.fromkeys(f for fs in sets.values() for f in fs))
    df = _pool_cols(pool, all_feats)
    rows, probs = [], {}
    for name, feats in sets.items():
        r = cv_logistic(df, list(feats), 'diverged', n_boot=n_boot, seed=seed)
        probs[name] = r['probs']
        row = {'predictor': name, 'features': ', '.join(feats), 'auroc': r['auroc'], 'lo': r['lo'],
               'hi': r['hi'], 'n': r['n'], 'n_pos': r['n_pos'], 'n_neg': r['n_neg'], 'n_folds': r['n_splits']}
        row.update({f'coef_{f}': r['coef'].get(f, NAN) for f in all_feats})
        row.update({'data': data_used(pool), 'note': r['note']})
        rows.append(row)
    return pd.DataFrame(rows), probs


# ----------------------------------------------------------------------------- App. H


def calibration_table(pool: pd.DataFrame, variants: Mapping[str, pd.Series], n_bins: int = defaults.ECE_BINS,
                      n_boot: int = defaults.BOOTSTRAP_RESAMPLES, seed: int = 0,
                      paper_raw: Optional[str] = None) -> Tuple[pd.DataFrame, Dict[str, pd.DataFrame]]:
    """App. H: ECE (``n_bins`` equal-width bins) of each variant's P(diverge) with a bootstrap CI;
    the paper's ECE (0.283) sits beside the variant named ``paper_raw``. Returns (table,
    {variant: the bins of :func:`rksp.experiments.stats.ece`} for the reliability diagrams)."""
    rows, bins = [], {}
    y = pool['diverged']
    for name, p in variants.items():
        p = pd.Series(np.asarray(p, dtype=float), index=pool.index)
        e = ece(p, y, n_bins=n_bins)
        keep = p.notna() & y.notna()
        n_pos = int(y[keep].sum())
        lo, hi = ece_ci(p, y, n_bins=n_bins, n_boot=n_boot, seed=seed)
        notes = [e['note']] + ([f'one class only (n_pos={n_pos}, n={int(keep.sum())}): the ECE only measures '
                                'how far the predictions sit from that class'] if keep.any() and n_pos in (0, int(keep.sum())) else [])
        if p.isna().all():
            notes.append('no predictions (the logistic could not be cross-validated)')
        rows.append({'variant': name, 'ece': e['ece'], 'ece_ci_lo': lo, 'ece_ci_hi': hi, 'mce': e['mce'],
                     'n': e['n'], 'n_pos': n_pos, 'n_bins': n_bins,
                     'paper_ece': P.ECE if name == paper_raw else NAN,
                     'data': data_used(pool), 'note': '; '.join(x for x in notes if x)})
        bins[name] = e['bins']
    return pd.DataFrame(rows), bins


# ----------------------------------------------------------------------------- Fig. 1

def init_model(cfg: Mapping[str, Any]):
    """(model, inputs) exactly as the harness profiles a run at init (:func:`rksp.harness.build.model_at_init`)."""
    return model_at_init(cfg)


def init_eigenvalues(cfg: Mapping[str, Any]) -> List[np.ndarray]:
    """Whitened-DMD eigenvalues (Eqs. 6-9) of every layer transition of the config's model at init,
    on the same snapshots as the run's RKSP profile (Fig. 1)."""
    c = TrainConfig.from_dict(dict(cfg))
    model, x = init_model(cfg)
    hidden = capture_hidden(model, x, c.profile_n_snapshots, seed=c.profile_seed)
    return [whitened_dmd(X, Y, vectors=False).eigvals.cpu().numpy() for X, Y in transitions(hidden)]


def eigenvalue_figure(eigs: Mapping[str, Sequence[np.ndarray]], ncols: int = 3, title: str = '',
                      r_view: float = 2.5):
    """Fig. 1: one panel per normalization, eigenvalues of every layer in the complex plane, the
    unit circle and the near-unit band |λ| in [0.90, 1.05] (shaded, dashed edges), coloured by depth.
    Eigenvalues with |λ| > ``r_view`` are drawn on the rim of the view (×) and counted in the panel."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Wedge
    names = list(eigs)
    nrows = max(1, math.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 3.7 * nrows), squeeze=False)
    t = np.linspace(0, 2 * np.pi, 400)
    cmap = plt.get_cmap('coolwarm')
    lo_n, hi_n = 1.0 - defaults.EPS_N, 1.0 + defaults.EPS_U
    for ax, name in zip(axes.ravel(), names):
        ev = [np.asarray(e) for e in eigs[name]]
        allv = np.concatenate(ev) if ev else np.zeros(0, complex)
        amax = float(np.abs(allv).max()) if allv.size else 1.0
        rv = min(max(1.25, 1.05 * amax), r_view)
        ax.add_patch(Wedge((0, 0), hi_n, 0, 360, width=hi_n - lo_n, color='#fdae6b', alpha=0.45, lw=0,
                           label='near-unit band'))
        ax.plot(np.cos(t), np.sin(t), 'k-', lw=0.9, label='|λ| = 1')
        ax.plot(lo_n * np.cos(t), lo_n * np.sin(t), 'k--', lw=0.5, label='|λ| = 0.90, 1.05')
        ax.plot(hi_n * np.cos(t), hi_n * np.sin(t), 'k--', lw=0.5)
        L = len(ev)
        for l, e in enumerate(ev):
            out = np.abs(e) > rv
            c = cmap(l / max(1, L - 1))
            ax.scatter(e.real[~out], e.imag[~out], s=7, color=c, alpha=0.75, lw=0,
                       label=f'layer {l}' if l in (0, L - 1) else None)
            if out.any():
                rim = rv * np.exp(1j * np.angle(e[out]))
                ax.scatter(rim.real, rim.imag, s=16, color=c, marker='x', lw=0.8)
        n_out = int((np.abs(allv) > rv).sum())
        if n_out:
            ax.text(0.02, 0.02, f'{n_out} of {allv.size} off scale (|λ| ≤ {amax:.3g}): × on the rim',
                    transform=ax.transAxes, fontsize=6.5)
        near = float(np.mean((np.abs(allv) >= lo_n) & (np.abs(allv) <= hi_n))) if allv.size else NAN
        ax.set_title(f'{name}: M≈1 = {near:.2f}', fontsize=10)
        ax.set_xlim(-rv * 1.05, rv * 1.05)
        ax.set_ylim(-rv * 1.05, rv * 1.05)
        ax.set_aspect('equal')
        ax.set_xlabel('Re λ')
        ax.set_ylabel('Im λ')
        ax.legend(fontsize=6, loc='upper left')
    for ax in axes.ravel()[len(names):]:
        ax.axis('off')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- figures

def roc_figure(labels: pd.Series, scores: Mapping[str, Any], title: str = 'ROC curves'):
    """ROC curves of several scores for the same runs (rows with a NaN score or label dropped per
    curve; a score with one class only is listed without a curve)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], 'k:', lw=0.8, label='chance')
    y_all = finite_numeric(pd.Series(np.asarray(labels, dtype=float)))
    for name, s in scores.items():
        s = finite_numeric(pd.Series(np.asarray(s, dtype=float)))
        keep = (s.notna() & y_all.notna()).to_numpy()
        y, v = y_all[keep].to_numpy(), s[keep].to_numpy()
        if len(np.unique(y)) < 2:
            ax.plot([], [], ' ', label=f'{name}: n/a (one class)')
            continue
        fpr, tpr, _ = roc_curve(y, v)
        a = auroc_ci(v, y, n_boot=0)['auroc']
        ax.plot(fpr, tpr, lw=1.4, label=f'{name} ({a:.3f})')
    ax.set_xlabel('false positive rate')
    ax.set_ylabel('true positive rate')
    ax.set_title(title)
    ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    return fig


def reliability_figure(bins: Mapping[str, pd.DataFrame], eces: Mapping[str, float]):
    """Fig. 5: one row per variant, reliability diagram (left) and predictions by outcome (right)."""
    import matplotlib.pyplot as plt
    names = list(bins)
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 3.6 * len(names)), squeeze=False)
    for (ax_r, ax_h), name in zip(axes, names):
        reliability_plot(bins[name], ax=(ax_r, ax_h), title=name, ece_value=eces.get(name))
    fig.tight_layout()
    return fig


def paired_best_baseline(pool: pd.DataFrame, t2: pd.DataFrame, score: str = 'M≈1 at init',
                         baselines: Sequence[str] = GRADIENT_BASELINES,
                         n_boot: int = defaults.BOOTSTRAP_RESAMPLES, seed: int = 0) -> Dict[str, Any]:
    """The gradient baseline with the highest AUROC in ``t2`` (Table 2) and the paired bootstrap CI
    of AUROC(score) - AUROC(that baseline) on the same runs (:func:`rksp.experiments.stats.auroc_diff_ci`)."""
    sub = t2[t2['predictor'].isin(baselines)].dropna(subset=['auroc'])
    if not len(sub):
        return dict(baseline=None, diff=NAN, lo=NAN, hi=NAN, auroc_b=NAN, lo_b=NAN, hi_b=NAN,
                    note='no gradient baseline has an AUROC')
    best = sub.loc[sub['auroc'].idxmax()]
    ca, cb = TABLE2_PREDICTORS[score][0], TABLE2_PREDICTORS[best['predictor']][0]
    df = _pool_cols(pool, [ca, cb])
    d = auroc_diff_ci(df[ca], df[cb], df['diverged'], n_boot=n_boot, seed=seed,
                      clusters=df['init_id'] if 'init_id' in df else None)
    return dict(baseline=best['predictor'], diff=d['diff'], lo=d['lo'], hi=d['hi'], auroc_b=float(best['auroc']),
                lo_b=float(best['lo']), hi_b=float(best['hi']), note=d['note'])


def table1_figure(table1: pd.DataFrame):
    """Table 1: near-unit mass at init by normalization, ours (mean ± sd over inits) beside the paper."""
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(table1))
    ax.bar(x - 0.2, table1["m_near_unit_mean"], 0.4, yerr=np.nan_to_num(table1["m_near_unit_sd"]), capsize=3,
           label="ours (mean ± sd over inits)")
    ax.bar(x + 0.2, table1["paper_m_near_unit"], 0.4, color="grey", label="paper")
    ax.set_xticks(x, table1["norm"])
    ax.set(ylabel="M≈1 at init", ylim=(0, 1.1), title="Table 1: near-unit mass at init by normalization")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
