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
from rksp.defaults import MAX_LR_DIVERGENCE
from rksp.experiments import paper as P
from rksp.experiments.claims import Claim
from rksp.experiments.stability import (BOUND_LOWER, BOUND_UPPER, divergence_table, fmt_lr, increase_bracket,
                                        increase_for_claim, max_lr_summary)
from rksp.experiments.stats import fisher_exact, wilson
from rksp.experiments.tables.common import data_used, dedupe_runs, ok_runs
from rksp.models.gpt import NORM_NAMES


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
            notes.append(f"increase ≥ {inc['at_least']:+.0f}% (a lower bound; "
                         f"above {inc['bracket_lo']:+.0f}% for sure)")
        elif inc['reading'] == 'upper bound':
            notes.append(f"increase ≤ {inc['at_most']:+.0f}% (an upper bound; "
                         f"below {inc['bracket_hi']:+.0f}% for sure)")
        elif inc['reading'] == 'undetermined':
            notes.append("increase not measurable on this grid")
        pw, pk, pi = paper.get(norm, (float('nan'),) * 3)
        out.append({
            'norm': names.get(norm, norm), 'norm_key': norm,
            'div_per_lr_without': s0['n_per_lr'], 'div_per_lr_with': s1['n_per_lr'],
            'max_lr_without': none_to_nan(s0['max_lr']), 'bound_without': s0['bound'],
            'max_lr_with': none_to_nan(s1['max_lr']), 'bound_with': s1['bound'],
            'increase_pct': inc['increase_pct'], 'increase_reading': inc['reading'],
            'increase_at_least_pct': inc['at_least'], 'increase_at_most_pct': inc['at_most'],
            'increase_bracket_lo': inc['bracket_lo'], 'increase_bracket_hi': inc['bracket_hi'],
            'max_lr_contig_without': none_to_nan(s0['max_lr_contiguous']), 'bound_contig_without': s0['bound_contiguous'],
            'max_lr_contig_with': none_to_nan(s1['max_lr_contiguous']), 'bound_contig_with': s1['bound_contiguous'],
            'increase_contig_pct': incc['increase_pct'], 'increase_contig_reading': incc['reading'],
            'paper_max_lr_without': pw, 'paper_max_lr_with': pk, 'paper_increase_pct': pi,
            'note': '; '.join(notes), 'data': data_used(g),
        })
    return pd.DataFrame(out)


def table5_claims(t5: pd.DataFrame, max_width: float = 100.0) -> List[Claim]:
    """Per norm: "KSS raises the max stable LR" by Table 5's amount for that norm (+60 / +67 / +150 %).
    A value claim on our increase with its grid bracket as the CI: the paper's per-norm increase must
    lie in the bracket (rounding tolerance aside); inconclusive when the bracket is wider than
    ``max_width`` points. Where one max LR is only a bound of the grid the bracket is one-sided
    (`increase_for_claim`): it can exclude the paper's value (not reproduced), never confirm it;
    with both max LRs bounds (or none stable) the claim is inconclusive."""
    out = []
    for _, r in t5.iterrows():
        ours, ci = increase_for_claim(r['increase_pct'], r['increase_reading'], r['increase_at_least_pct'],
                                      r.get('increase_at_most_pct', float('nan')),
                                      r['increase_bracket_lo'], r['increase_bracket_hi'])
        bound = {'lower bound': f", ≥ {r['increase_at_least_pct']:+.0f}%",
                 'upper bound': f", ≤ {r.get('increase_at_most_pct', float('nan')):+.0f}%"}
        note = (f"paper {r['norm']}: {r['paper_increase_pct']:+.0f}%; ours: reading {r['increase_reading']}"
                + bound.get(r['increase_reading'], '')
                + f"; contiguous reading {r['increase_contig_reading']}"
                + (f" ({r['increase_contig_pct']:+.0f}%)" if np.isfinite(r['increase_contig_pct']) else '')
                + (f"; {r['note']}" if r['note'] else ''))
        out.append(Claim.interval(f"T5.lr_increase.{r['norm_key']}",
                                  f"{r['norm']}: KSS raises the max stable LR by {r['paper_increase_pct']:+.0f}% (Table 5)",
                                  r['paper_increase_pct'], ours, ci, notes=note, max_width=max_width))
    return out


def maxlr_figure(per_lr: pd.DataFrame, norms: Sequence[str]):
    """Table 5: divergence rate (Wilson CI) against the LR, without and with KSS, one panel per normalization."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.4), sharey=True, squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for kss, style in ((False, dict(color="tab:red", marker="o", label="without KSS")),
                           (True, dict(color="tab:blue", marker="s", label="with KSS α=0.15"))):
            g = per_lr[(per_lr["norm"] == norm) & (per_lr["kss"] == kss)].sort_values("lr")
            err = [g["div_pct"] - g["div_ci_lo"], g["div_ci_hi"] - g["div_pct"]]
            ax.errorbar(g["lr"] * (1.04 if kss else 1 / 1.04), g["div_pct"], yerr=err, capsize=3, **style)
        ax.axhline(100 * MAX_LR_DIVERGENCE, color="gray", ls="--", lw=1, label="20% criterion")
        ax.set_xscale("log"); ax.set_xlabel("learning rate"); ax.set_title(NORM_NAMES[norm])
    axes[0][0].set_ylabel("diverged runs, % (Wilson 95% CI)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Table 5: divergence rate vs LR, without and with KSS")
    fig.tight_layout()
    return fig
