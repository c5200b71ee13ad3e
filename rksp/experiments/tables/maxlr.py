"""Table 5 (notebook 07): the maximum stable learning rate with and without KSS.

Reads the recall runs of `rksp.experiments.plans.maxlr_configs`:
  `maxlr_per_lr` (divergence per norm x KSS x LR, Wilson CI, Fisher p of with vs without KSS at
  each LR), `maxlr_table` (one row per norm: max stable LR without / with KSS under both readings
  of `rksp.experiments.stability.pick_max_stable_lr`, the increase, the paper's values) and `table5_claims`.
  A max stable LR equal to the top of the grid is only a lower bound ('≥ top of grid'); no stable
  LR at all is '< bottom of grid'. An increase is only computed from two measured values; its
  grid bracket (the range the true increase can take, given the grid) is its uncertainty.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from rksp import defaults
from rksp.experiments import paper as P
from rksp.experiments.claims import Claim
from rksp.experiments.stability import divergence_table, lr_increase, pick_max_stable_lr
from rksp.experiments.stats import fisher_exact, wilson
from rksp.experiments.tables.common import dedupe_runs, fmt_lr, ok_runs

BOUND_EXACT, BOUND_LOWER, BOUND_UPPER = '=', '≥ top of grid', '< bottom of grid'


def _n_per_lr(table: pd.DataFrame) -> str:
    return ', '.join(f"{fmt_lr(lr)}: {int(nd)}/{int(n)}" for lr, n, nd in
                     zip(table['lr'], table['n'], table['n_diverged']))


def _bound(value: Optional[float], lrs: Sequence[float]) -> str:
    if value is None:
        return BOUND_UPPER
    return BOUND_LOWER if float(value) >= max(lrs) else BOUND_EXACT


def _next_lr(value: float, lrs: Sequence[float]) -> float:
    above = [x for x in sorted(lrs) if x > value]
    return above[0] if above else float('inf')


def increase_bracket(without: Optional[float], with_: Optional[float], lrs_without: Sequence[float],
                     lrs_with: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Increase of the max stable LR in % (Table 5 "Increase", `lr_increase`) and its grid bracket.

    The true max stable LR lies in [v, next grid LR above v): so the true increase lies in
    (100 (w / next(u) - 1), 100 (next(w) / u - 1)) for u = without, w = with. `reading`:
    'exact' (both measured), 'lower bound' (without measured, with ≥ top of grid: the increase is
    at least `increase_pct`), 'undetermined' (without ≥ top of grid, or no stable LR on a side).
    The increase is NaN unless 'exact' (a bound is never reported as a value)."""
    lrs_with = lrs_without if lrs_with is None else lrs_with
    bw, bk = _bound(without, lrs_without), _bound(with_, lrs_with)
    nan = float('nan')
    if bw == BOUND_EXACT and bk == BOUND_EXACT:
        inc = lr_increase(without, with_)
        lo = 100.0 * (float(with_) / _next_lr(without, lrs_without) - 1.0)
        hi = 100.0 * (_next_lr(with_, lrs_with) / float(without) - 1.0)
        return dict(increase_pct=inc, bracket_lo=lo, bracket_hi=hi, reading='exact', at_least=nan)
    if bw == BOUND_EXACT and bk == BOUND_LOWER:
        return dict(increase_pct=nan, bracket_lo=nan, bracket_hi=nan, reading='lower bound',
                    at_least=lr_increase(without, with_))
    return dict(increase_pct=nan, bracket_lo=nan, bracket_hi=nan, reading='undetermined', at_least=nan)


def max_lr_summary(runs: pd.DataFrame, threshold: float = defaults.MAX_LR_DIVERGENCE) -> Dict[str, Any]:
    """Max stable LR of one group of runs (columns lr, diverged[, status]) under both readings of
    `pick_max_stable_lr`, whether each is a bound of the grid, and the per-LR counts."""
    t = divergence_table(runs, threshold)
    lrs = [float(x) for x in t['lr']]
    max_lr, contiguous = pick_max_stable_lr(t)
    return dict(table=t, lrs=lrs, max_lr=max_lr, max_lr_contiguous=contiguous,
                bound=_bound(max_lr, lrs) if lrs else BOUND_UPPER,
                bound_contiguous=_bound(contiguous, lrs) if lrs else BOUND_UPPER,
                any_diverged=bool(t['n_diverged'].sum() > 0), n_per_lr=_n_per_lr(t))


def bound_note(label: str, s: Dict[str, Any]) -> str:
    if not s['lrs']:
        return f"{label}: no runs"
    if s['bound'] == BOUND_LOWER:
        why = "no LR of the grid diverged" if not s['any_diverged'] else "the top LR of the grid is stable"
        return f"{label}: {why}, max stable LR ≥ {fmt_lr(max(s['lrs']))} (top of grid; a lower bound)"
    if s['bound'] == BOUND_UPPER:
        return f"{label}: no LR of the grid is stable, max stable LR < {fmt_lr(min(s['lrs']))}"
    return ''


def none_to_nan(x: Optional[float]) -> float:
    return float('nan') if x is None else float(x)


def maxlr_per_lr(rows: pd.DataFrame, threshold: float = defaults.MAX_LR_DIVERGENCE) -> pd.DataFrame:
    """Table 5's evidence: one row per (norm, kss, lr) with n, divergences, rate (%) and its Wilson 95%
    CI, stable (< threshold), and on the KSS rows the Fisher p of with vs without KSS at that LR."""
    rows = dedupe_runs(ok_runs(rows), ['norm', 'kss'])
    out = []
    for norm in dict.fromkeys(rows['norm']):
        by_kss = {}
        for kss in (False, True):
            g = rows[(rows['norm'] == norm) & (rows['kss'].astype(bool) == kss)]
            if len(g):
                by_kss[kss] = divergence_table(g, threshold).set_index('lr')
        for kss, t in by_kss.items():
            for lr, r in t.iterrows():
                n, k = int(r['n']), int(r['n_diverged'])
                lo, hi = wilson(k, n) if n else (float('nan'), float('nan'))
                p = float('nan')
                if kss and False in by_kss and lr in by_kss[False].index:
                    b = by_kss[False].loc[lr]
                    p = fisher_exact(k, n, int(b['n_diverged']), int(b['n']))['p']
                out.append({'norm': norm, 'kss': kss, 'lr': float(lr), 'n': n, 'n_div': k,
                            'div_pct': 100.0 * k / n if n else float('nan'),
                            'div_ci_lo': 100.0 * lo, 'div_ci_hi': 100.0 * hi, 'stable': bool(r['stable']),
                            'fisher_p_vs_without_kss': p})
    return pd.DataFrame(out, columns=['norm', 'kss', 'lr', 'n', 'n_div', 'div_pct', 'div_ci_lo', 'div_ci_hi',
                                      'stable', 'fisher_p_vs_without_kss'])


def maxlr_table(rows: pd.DataFrame, norms: Optional[Sequence[str]] = None,
                threshold: float = defaults.MAX_LR_DIVERGENCE, norm_names: Optional[Dict[str, str]] = None,
                paper: Optional[Dict[str, Tuple[float, float, float]]] = None) -> pd.DataFrame:
    """Table 5: one row per norm. Max stable LR without / with KSS (< `threshold` divergence, largest
    stable LR of the grid) with its bound ('=', '≥ top of grid', '< bottom of grid'), the increase (%)
    only where both are measured, its grid bracket, the same under the contiguous reading, divergences
    per LR ('lr: k/n'), the paper's values (rksp.experiments.paper.TABLE5), a note and the data used."""
    from rksp.models.gpt import NORM_NAMES
    from rksp.experiments.tables.common import data_used
    names = NORM_NAMES if norm_names is None else norm_names
    paper = P.TABLE5 if paper is None else paper
    rows = dedupe_runs(ok_runs(rows), ['norm', 'kss'])
    norms = list(dict.fromkeys(rows['norm'])) if norms is None else list(norms)
    out = []
    for norm in norms:
        g = rows[rows['norm'] == norm]
        s = {kss: max_lr_summary(g[g['kss'].astype(bool) == kss], threshold) for kss in (False, True)}
        s0, s1 = s[False], s[True]
        both = bool(s0['lrs'] and s1['lrs'])
        inc = increase_bracket(s0['max_lr'], s1['max_lr'], s0['lrs'], s1['lrs']) if both \
            else increase_bracket(None, None, [1.0])
        incc = increase_bracket(s0['max_lr_contiguous'], s1['max_lr_contiguous'], s0['lrs'], s1['lrs']) if both \
            else increase_bracket(None, None, [1.0])
        notes = [x for x in (bound_note('without KSS', s0), bound_note('with KSS', s1)) if x]
        if inc['reading'] == 'lower bound':
            notes.append(f"increase ≥ {inc['at_least']:+.0f}% (a lower bound)")
        elif inc['reading'] == 'undetermined':
            notes.append("increase not measurable on this grid")
        pw, pk, pi = paper.get(norm, (float('nan'),) * 3)
        out.append({
            'norm': names.get(norm, norm), 'norm_key': norm,
            'div_per_lr_without': s0['n_per_lr'], 'div_per_lr_with': s1['n_per_lr'],
            'max_lr_without': none_to_nan(s0['max_lr']), 'bound_without': s0['bound'],
            'max_lr_with': none_to_nan(s1['max_lr']), 'bound_with': s1['bound'],
            'increase_pct': inc['increase_pct'], 'increase_reading': inc['reading'],
            'increase_at_least_pct': inc['at_least'],
            'increase_bracket_lo': inc['bracket_lo'], 'increase_bracket_hi': inc['bracket_hi'],
            'max_lr_contig_without': none_to_nan(s0['max_lr_contiguous']), 'bound_contig_without': s0['bound_contiguous'],
            'max_lr_contig_with': none_to_nan(s1['max_lr_contiguous']), 'bound_contig_with': s1['bound_contiguous'],
            'increase_contig_pct': incc['increase_pct'], 'increase_contig_reading': incc['reading'],
            'paper_max_lr_without': pw, 'paper_max_lr_with': pk, 'paper_increase_pct': pi,
            'note': '; '.join(notes), 'data': data_used(g),
        })
    return pd.DataFrame(out)


def table5_claims(t5: pd.DataFrame, paper_range: Tuple[float, float] = (50.0, 150.0),
                  max_width: float = 100.0) -> List[Claim]:
    """Per norm: "KSS raises the max stable LR by 50-150%" (paper text; Table 5: +60 / +67 / +150%).
    Rule `Claim.interval` on our increase with its grid bracket as the interval: reproduced when the
    bracket overlaps the paper's range and is at most `max_width` percentage points wide; not
    reproduced when it misses the range; inconclusive otherwise, and whenever a max LR is only a
    bound of the grid (the increase is then NaN)."""
    out = []
    for _, r in t5.iterrows():
        ours = r['increase_pct']
        ci = (r['increase_bracket_lo'], r['increase_bracket_hi']) if np.isfinite(ours) else None
        note = (f"paper {r['norm']}: {r['paper_increase_pct']:+.0f}%; ours: reading {r['increase_reading']}"
                + (f", ≥ {r['increase_at_least_pct']:+.0f}%" if r['increase_reading'] == 'lower bound' else '')
                + f"; contiguous reading {r['increase_contig_reading']} ({r['increase_contig_pct']:+.0f}%)"
                + (f"; {r['note']}" if r['note'] else ''))
        out.append(Claim.interval(f"T5.lr_increase.{r['norm_key']}",
                                  f"{r['norm']}: KSS raises the max stable LR by 50–150% (Table 5)",
                                  paper_range, ours, ci, notes=note, rel_tol=0.0, max_width=max_width))
    return out
