"""Maximum stable learning rate (paper Table 5), with and without KSS.

    from rksp.experiments.stability import max_stable_lr, lr_increase
    base = {'task': 'recall', 'preset': 'small', 'model_cfg': {'norm': 'none'}, 'steps': 1000}
    lr0, t0 = max_stable_lr(base, lrs=defaults.LR_GRID, trials=3, with_kss=False, out_dir='results/t5')
    lr1, t1 = max_stable_lr(base, lrs=defaults.LR_GRID, trials=3, with_kss=True, out_dir='results/t5')
    lr_increase(lr0, lr1)          # Table 5's "Increase" in %, e.g. +150.0

Definition (paper, Sec. 5 / Table 5: "stability criterion: < 20% divergence across trials"):
for each LR on the grid, `trials` runs are trained (the label of a run is the harness's
divergence label, `rksp.harness`); the LR is *stable* when its divergence fraction
n_diverged / n < `threshold` (0.20, strictly less: 1 of 5 = 20% is not stable).

  max_lr             the largest LR on the grid that is stable (the paper's wording; a stable
                     LR above an unstable one counts)
  max_lr_contiguous  the largest LR such that it and every smaller LR on the grid are stable
                     (None when the smallest LR is unstable); the conservative reading

Both are reported: `max_stable_lr` returns `max_lr` and puts both in `table.attrs`;
`compare_max_lr` gives a Table 5 row with the increase under each reading.

One route: `max_lr_summary(runs)` (runs -> per-LR table -> both readings -> whether each is a
bound of the grid) is what `max_stable_lr` returns and what Table 5 (`tables.maxlr`, notebook 07)
tabulates from the cached runs; `increase_bracket` turns two of them into the "Increase" column.

Trials: trial i uses seed `trial_seeds(trials)[i]`: 42, 123, 456 (the paper's seeds,
`defaults.SEEDS`), then 1000 + i for i >= 3 (ours). Each trial is the base config with only
`seed` changed (data_seed follows the seed unless the base fixes it), so a trial changes
the initialization, the batch order, the data and every hook's random stream.
KSS (with_kss=True) is the paper's recipe: the method row 'kss_0.15' ('KSS α=0.15': alpha 0.15,
every 10 steps, half the layers, r = 32, N = 2048); a dict gives other KSS hook kwargs.

Runs go through `rksp.harness.sweep.run`, one JSON record per run in `out_dir` (default: a fresh
temporary directory), so a second call with the same out_dir runs nothing new; runs that
failed (an exception, not divergence) do not count as trials and are reported in
`n_failed`.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from rksp import defaults
from rksp.errors import ConfigError
from rksp.harness.config import TrainConfig

__all__ = ['max_stable_lr', 'divergence_table', 'pick_max_stable_lr', 'lr_increase', 'trial_seeds',
           'stability_configs', 'compare_max_lr', 'is_stable', 'max_lr_summary', 'increase_bracket',
           'increase_for_claim', 'grid_bound', 'BOUND_EXACT', 'BOUND_LOWER', 'BOUND_UPPER']

_TABLE_COLUMNS = ['lr', 'n', 'n_diverged', 'div_rate', 'stable', 'n_failed']


def trial_seeds(trials: int) -> List[int]:
    """Seeds of `trials` trials: 42, 123, 456, then 1000 + i (i = 3, 4, ...)."""
    if not isinstance(trials, (int, np.integer)) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {trials!r}")
    base = list(defaults.SEEDS)
    return [base[i] if i < len(base) else 1000 + i for i in range(int(trials))]


def is_stable(n_diverged: int, n: int, threshold: float = defaults.MAX_LR_DIVERGENCE) -> bool:
    """n_diverged / n < threshold, decided exactly (1 of 5 at threshold 0.2 is not stable);
    False when n == 0 (no finished trial)."""
    if n <= 0:
        return False
    from fractions import Fraction
    return Fraction(int(n_diverged), int(n)) < Fraction(str(threshold))


def _check_threshold(threshold) -> float:
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold <= 1:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")
    return float(threshold)


def _check_lrs(lrs) -> List[float]:
    try:
        out = [float(x) for x in lrs]
    except (TypeError, ValueError):
        raise ConfigError(f"lrs must be a sequence of numbers, got {lrs!r}") from None
    if not out:
        raise ConfigError("lrs is empty")
    if any(not np.isfinite(x) or x <= 0 for x in out):
        raise ConfigError(f"every learning rate must be finite and > 0, got {out}")
    if len(set(out)) != len(out):
        raise ConfigError(f"lrs has duplicates: {out}")
    return sorted(out)


def pick_max_stable_lr(table: pd.DataFrame, threshold: Optional[float] = None) -> Tuple[Optional[float], Optional[float]]:
    """(max_lr, max_lr_contiguous) from a per-LR table with columns lr, n, n_diverged
    (and optionally `stable`; recomputed from the counts when `threshold` is given or the
    column is missing). See the module docstring for both definitions."""
    if not len(table):
        return None, None
    t = table.sort_values('lr').reset_index(drop=True)
    if threshold is not None or 'stable' not in t:
        thr = _check_threshold(defaults.MAX_LR_DIVERGENCE if threshold is None else threshold)
        stable = [is_stable(int(d), int(n), thr) for d, n in zip(t['n_diverged'], t['n'])]
    else:
        stable = [bool(s) for s in t['stable']]
    lrs = [float(x) for x in t['lr']]
    ok = [lr for lr, s in zip(lrs, stable) if s]
    max_lr = max(ok) if ok else None
    contiguous = None
    for lr, s in zip(lrs, stable):
        if not s:
            break
        contiguous = lr
    return max_lr, contiguous


def divergence_table(runs: pd.DataFrame, threshold: float = defaults.MAX_LR_DIVERGENCE) -> pd.DataFrame:
    """Per-LR table (lr, n, n_diverged, div_rate, stable, n_failed) from run rows with
    columns lr, status, diverged (e.g. `rksp.harness.sweep.run`'s DataFrame). Failed runs are left out."""
    thr = _check_threshold(threshold)
    rows = []
    for lr, g in runs.groupby('lr', sort=True):
        ok = g[g['status'] == 'ok'] if 'status' in g else g
        n = int(len(ok))
        nd = int(ok['diverged'].fillna(False).astype(bool).sum()) if n else 0
        rows.append({'lr': float(lr), 'n': n, 'n_diverged': nd,
                     'div_rate': nd / n if n else float('nan'),
                     'stable': is_stable(nd, n, thr), 'n_failed': int(len(g) - n)})
    return pd.DataFrame(rows, columns=_TABLE_COLUMNS)


def _kss_overrides(with_kss) -> Dict[str, Any]:
    if with_kss is False or with_kss is None:
        return {}
    from rksp.methods.stabilizers import KSSHooks
    from rksp.methods.rows import method_config
    if with_kss is True:
        return method_config('kss_0.15')
    if isinstance(with_kss, dict):
        KSSHooks(**with_kss)      # validate now, before any run
        return {'hooks': [{'target': 'kss', 'kwargs': dict(with_kss)}]}
    raise ConfigError(f"with_kss must be True, False or a dict of KSS hook kwargs, got {with_kss!r}")


def stability_configs(base_config: Union[Dict[str, Any], TrainConfig], lrs: Sequence[float], trials: int,
                      with_kss: Union[bool, Dict[str, Any]] = False) -> List[Dict[str, Any]]:
    """The configs `max_stable_lr` runs: every LR x every trial seed."""
    from rksp.methods.rows import merge_overrides
    base = base_config.to_dict() if isinstance(base_config, TrainConfig) else copy.deepcopy(dict(base_config))
    base = merge_overrides(base, _kss_overrides(with_kss))
    out = []
    for lr in _check_lrs(lrs):
        for s in trial_seeds(trials):
            out.append({**copy.deepcopy(base), 'lr': lr, 'seed': s})
    return out


def max_stable_lr(base_config: Union[Dict[str, Any], TrainConfig], lrs: Sequence[float] = defaults.LR_GRID,
                  trials: int = len(defaults.SEEDS), with_kss: Union[bool, Dict[str, Any]] = False, *,
                  out_dir: Optional[Union[str, Path]] = None, executor: str = 'serial',
                  n_workers: Optional[int] = None, threshold: float = defaults.MAX_LR_DIVERGENCE,
                  progress: bool = False, verbose: bool = False,
                  **run_kwargs) -> Tuple[Optional[float], pd.DataFrame]:
    """Largest stable LR on the grid (paper Table 5) and the per-LR table.

    Returns (max_lr or None, table) with table columns lr, n, n_diverged, div_rate, stable,
    n_failed (one row per LR, ascending) and `table.attrs`: max_lr, max_lr_contiguous,
    threshold, trials, seeds, with_kss, out_dir, n_run (runs trained by this call), n_cached.
    Extra keyword arguments go to `rksp.harness.sweep.run` (e.g. threads_per_run, dask_address).
    """
    from rksp.harness.sweep import run as sweep_run
    thr = _check_threshold(threshold)
    cfgs = stability_configs(base_config, lrs, trials, with_kss)
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix='rksp-maxlr-')
    df = sweep_run(cfgs, out_dir, executor=executor, n_workers=n_workers, progress=progress,
                   verbose=verbose, **run_kwargs)
    if 'lr' not in df:   # a sweep whose rows are all 'missing' (should not happen)
        df['lr'] = [c['lr'] for c in cfgs]
    summary = max_lr_summary(df, thr)     # the same reading as Table 5 (notebook 07, tables.maxlr)
    table, max_lr, contiguous = summary['table'], summary['max_lr'], summary['max_lr_contiguous']
    table.attrs.update(max_lr=max_lr, max_lr_contiguous=contiguous, bound=summary['bound'],
                       bound_contiguous=summary['bound_contiguous'], threshold=thr, trials=int(trials),
                       seeds=trial_seeds(trials), with_kss=with_kss if not isinstance(with_kss, dict) else dict(with_kss),
                       out_dir=str(df.attrs.get('out_dir', out_dir)), n_run=int(df.attrs.get('n_run', 0)),
                       n_cached=int(df.attrs.get('n_cached', 0)))
    return max_lr, table


def lr_increase(max_lr_without: Optional[float], max_lr_with: Optional[float]) -> Optional[float]:
    """Table 5's "Increase": 100 * (max_lr_with / max_lr_without - 1), in %; None if either is None."""
    if max_lr_without is None or max_lr_with is None:
        return None
    return 100.0 * (float(max_lr_with) / float(max_lr_without) - 1.0)


def compare_max_lr(base_config: Union[Dict[str, Any], TrainConfig], lrs: Sequence[float] = defaults.LR_GRID,
                   trials: int = len(defaults.SEEDS), with_kss: Union[bool, Dict[str, Any]] = True,
                   **kwargs) -> Dict[str, Any]:
    """One Table 5 row: max stable LR without and with KSS, the increase (%), both readings,
    and both per-LR tables ('table_without', 'table_with')."""
    lr0, t0 = max_stable_lr(base_config, lrs, trials, False, **kwargs)
    lr1, t1 = max_stable_lr(base_config, lrs, trials, with_kss, **kwargs)
    c0, c1 = t0.attrs['max_lr_contiguous'], t1.attrs['max_lr_contiguous']
    return {'max_lr_without': lr0, 'max_lr_with': lr1, 'increase_pct': lr_increase(lr0, lr1),
            'max_lr_contiguous_without': c0, 'max_lr_contiguous_with': c1,
            'increase_contiguous_pct': lr_increase(c0, c1),
            'table_without': t0, 'table_with': t1}


BOUND_EXACT, BOUND_LOWER, BOUND_UPPER = '=', '≥ top of grid', '< bottom of grid'


def per_lr_counts(table: pd.DataFrame) -> str:
    return ', '.join(f"{fmt_lr(lr)}: {int(nd)}/{int(n)}" for lr, n, nd in
                     zip(table['lr'], table['n'], table['n_diverged']))


def grid_bound(value: Optional[float], lrs: Sequence[float]) -> str:
    if value is None:
        return BOUND_UPPER
    return BOUND_LOWER if float(value) >= max(lrs) else BOUND_EXACT


def next_grid_lr(value: float, lrs: Sequence[float]) -> float:
    above = [x for x in sorted(lrs) if x > value]
    return above[0] if above else float('inf')


def increase_bracket(without: Optional[float], with_: Optional[float], lrs_without: Sequence[float],
                     lrs_with: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Increase of the max stable LR in % (Table 5 "Increase", `lr_increase`) and its grid bracket.

    The true max stable LR lies in [v, next grid LR above v): so the true increase lies in
    (100 (w / next(u) - 1), 100 (next(w) / u - 1)) for u = without, w = with. `reading`:
    'exact' (both measured), 'lower bound' (without measured, with ≥ top of grid: the bracket is
    (100 (w / next(u) - 1), +inf) and `at_least` the grid reading 100 (w / u - 1)), 'upper bound'
    (without ≥ top of grid, with measured: the bracket is (-inf, 100 (next(w) / u - 1)) and
    `at_most` the grid reading), 'undetermined' (both ≥ top of grid, or no stable LR on a side).
    The increase is NaN unless 'exact' (a bound is never reported as a value)."""
    lrs_with = lrs_without if lrs_with is None else lrs_with
    bw, bk = grid_bound(without, lrs_without), grid_bound(with_, lrs_with)
    nan, inf = float('nan'), float('inf')
    out = dict(increase_pct=nan, bracket_lo=nan, bracket_hi=nan, reading='undetermined', at_least=nan, at_most=nan)
    if bw == BOUND_EXACT and bk == BOUND_EXACT:
        out.update(increase_pct=lr_increase(without, with_), reading='exact',
                   bracket_lo=100.0 * (float(with_) / next_grid_lr(without, lrs_without) - 1.0),
                   bracket_hi=100.0 * (next_grid_lr(with_, lrs_with) / float(without) - 1.0))
    elif bw == BOUND_EXACT and bk == BOUND_LOWER:
        out.update(reading='lower bound', at_least=lr_increase(without, with_), bracket_hi=inf,
                   bracket_lo=100.0 * (float(with_) / next_grid_lr(without, lrs_without) - 1.0))
    elif bw == BOUND_LOWER and bk == BOUND_EXACT:
        out.update(reading='upper bound', at_most=lr_increase(without, with_), bracket_lo=-inf,
                   bracket_hi=100.0 * (next_grid_lr(with_, lrs_with) / float(without) - 1.0))
    return out


def increase_for_claim(increase_pct: float, reading: str, at_least: float, at_most: float,
                       bracket_lo: float, bracket_hi: float) -> Tuple[float, Optional[Tuple[float, float]]]:
    """(value, CI) of the max-stable-LR increase for a value claim: the exact increase with its grid
    bracket; for a one-sided reading the grid reading with its one-sided bracket (an infinite end,
    so the claim can be 'not reproduced' when the bound excludes the paper, never 'reproduced');
    (NaN, None) when undetermined."""
    if reading == 'exact':
        return float(increase_pct), (float(bracket_lo), float(bracket_hi))
    if reading in ('lower bound', 'upper bound'):
        v = at_least if reading == 'lower bound' else at_most
        return float(v), (float(bracket_lo), float(bracket_hi))
    return float('nan'), None


def max_lr_summary(runs: pd.DataFrame, threshold: float = defaults.MAX_LR_DIVERGENCE) -> Dict[str, Any]:
    """Max stable LR of one group of runs (columns lr, diverged[, status]) under both readings of
    `pick_max_stable_lr`, whether each is a bound of the grid, and the per-LR counts."""
    t = divergence_table(runs, threshold)
    lrs = [float(x) for x in t['lr']]
    max_lr, contiguous = pick_max_stable_lr(t)
    return dict(table=t, lrs=lrs, max_lr=max_lr, max_lr_contiguous=contiguous,
                bound=grid_bound(max_lr, lrs) if lrs else BOUND_UPPER,
                bound_contiguous=grid_bound(contiguous, lrs) if lrs else BOUND_UPPER,
                any_diverged=bool(t['n_diverged'].sum() > 0), n_per_lr=per_lr_counts(t))


def fmt_lr(x: float) -> str:
    return f"{float(x):g}"


def next_bracket_lr(summary: Dict[str, Any], ratio: float = defaults.MAX_LR_BRACKET,
                    extend: float = defaults.MAX_LR_EXTEND,
                    limits: Tuple[float, float] = defaults.MAX_LR_LIMITS) -> Optional[float]:
    """The LR to add to one arm's Table 5 grid (docs/regime.md Part 5 and its addendum), or None when
    the grid decides it. `summary` is `max_lr_summary` of the arm's runs. With a largest stable LR and
    an unstable LR above it farther than `ratio`, their geometric midpoint (3 significant digits);
    with no unstable LR, the top LR x `extend`; with no stable LR, the bottom LR / `extend`; never
    past `limits` (then the max stable LR stays a bound of the grid)."""
    lrs = sorted(summary['lrs'])
    if not lrs:
        return None
    lo_lim, hi_lim = limits
    best = summary['max_lr']
    if best is None:                               # nothing stable: look below the grid
        new = lrs[0] / extend
        return float(f"{new:.3g}") if new >= lo_lim * (1 - 1e-9) else None
    above = [x for x in lrs if x > best]
    if not above:                                  # nothing unstable above: look above the grid
        new = lrs[-1] * extend
        return float(f"{new:.3g}") if new <= hi_lim * (1 + 1e-9) else None
    nxt = above[0]
    if nxt / best <= ratio * (1 + 1e-9):
        return None
    mid = float(f"{float(np.sqrt(best * nxt)):.3g}")
    return mid if best < mid < nxt else None
