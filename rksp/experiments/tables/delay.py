"""Delay vs prevention (issue 21, notebook 13): the KSS dose x frequency rows, what practitioners use,
and the attention diagnostic. Not the paper's tables and not claims: the rows of
`rksp.methods.rows.TABLES['dose_frequency']` / `['practice']` and the runs of
`rksp.experiments.diagnostic_runs`.

* `rate_table`          one row per method: n, divergence k/n (Wilson CI, Fisher p vs No control, both
                        labels), accuracy of the runs that did not diverge, M≈1 after training, overhead
                        (the columns of `methods.method_table_full` without the paper's).
* `kss_arms`            α and application frequency of each row (from its config; No control: α = 0).
* `divergence_points`   one row per run: its divergence step, or its last step (censored).
* `dose_step_figure`    divergence step vs α, a series per frequency, each run a point (open: censored at
                        the horizon), the Kaplan–Meier median with its CI.
* `km_panels_figure`    Kaplan–Meier curves, one panel per group of rows.
* `onset_table` / `diagnostic_figure`  the attention diagnostic: which grows first, the attention logit
                        or the expansive spectral mass, and the per-run curves.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from rksp import defaults
from rksp.experiments import survival as S
from rksp.experiments.tables.common import ok_runs
from rksp.experiments.tables.methods import LABEL_NAMES, STEP_COLS, method_table_full, survival_curve
from rksp.methods.rows import REFERENCE, method_config

NAN = float('nan')
PAPER_FREQUENCY = 'every 10 steps, half the layers (paper)'
RATE_COLUMNS = ['method', 'n', 'n_div', 'div_pct', 'div_ci_lo', 'div_ci_hi', 'fisher_p_vs_ref', 'n_div_total_grad',
                'div_pct_total_grad_label', 'fisher_p_vs_ref_total_grad_label', 'acc_pct', 'm_near_unit_end',
                'n_m_end', 'overhead_pct', 'data', 'note']
LOGIT_FACTOR = 10.0    # the attention-logit onset: the largest logit first exceeds 10x its step-1 value


def frequency_name(every: int, layer_fraction: float) -> str:
    """'every 10 steps, half the layers (paper)', 'every step, all layers', ... of a KSS schedule."""
    if (int(every), float(layer_fraction)) == (10, 0.5):
        return PAPER_FREQUENCY
    steps = 'every step' if int(every) == 1 else f'every {int(every)} steps'
    layers = 'all layers' if float(layer_fraction) >= 1.0 else f'{float(layer_fraction):g} of the layers'
    return f'{steps}, {layers}'


def kss_arms(methods: Sequence[str]) -> pd.DataFrame:
    """method, alpha, frequency of each row, read from its config (the KSS hook's alpha, every and
    layer_fraction; defaults where unset); a row without KSS has alpha 0 and frequency ''."""
    out = []
    for m in methods:
        kss = [h for h in method_config(m).get('hooks', []) if isinstance(h, dict) and h.get('target') == 'kss']
        if kss:
            kw = kss[0].get('kwargs', {})
            out.append({'method': m, 'alpha': float(kw.get('alpha', defaults.KSS_ALPHA)),
                        'frequency': frequency_name(kw.get('every', defaults.KSS_EVERY),
                                                    kw.get('layer_fraction', defaults.KSS_LAYER_FRACTION))})
        else:
            out.append({'method': m, 'alpha': 0.0, 'frequency': ''})
    return pd.DataFrame(out, columns=['method', 'alpha', 'frequency'])


def rate_table(rows: pd.DataFrame, methods: Sequence[str], reference: str = REFERENCE,
               arms: bool = False) -> pd.DataFrame:
    """`RATE_COLUMNS` of `methods.method_table_full` (no paper column: these rows are not the paper's);
    with `arms`, the alpha and frequency of `kss_arms` after the method."""
    t = method_table_full(rows, methods, reference=reference)[RATE_COLUMNS]
    if arms:
        t = kss_arms(methods).merge(t, on='method', how='right')
    return t


def divergence_points(rows: pd.DataFrame, methods: Sequence[str], label: str = 'task') -> pd.DataFrame:
    """One row per finished run of `methods`: method, lr, seed, diverged, step (its divergence step
    under `label`, else the last step it ran: censored there)."""
    ok = ok_runs(rows)
    ok = ok[ok['method'].isin(methods)]
    ev = pd.to_numeric(ok[STEP_COLS[label]] if STEP_COLS[label] in ok else ok['div_step'], errors='coerce')
    done = pd.to_numeric(ok['steps_done'], errors='coerce')
    return pd.DataFrame({'method': ok['method'].to_numpy(), 'lr': ok['lr'].to_numpy(), 'seed': ok['seed'].to_numpy(),
                         'diverged': ev.notna().to_numpy(), 'step': ev.fillna(done).to_numpy(float)})


def _spread(n: int, width: float = 0.16) -> np.ndarray:
    return np.zeros(n) if n < 2 else np.linspace(-width / 2, width / 2, n)


def _step_axis(ax, steps: np.ndarray, horizon: float) -> None:
    """A log step axis with plain 1-2-5 ticks when the steps span more than 5x, else linear."""
    from matplotlib.ticker import NullFormatter
    steps = steps[np.isfinite(steps) & (steps > 0)]
    lo, hi = (float(steps.min()) if steps.size else 1.0), max(float(np.nanmax(steps)) if steps.size else 1.0,
                                                              horizon if math.isfinite(horizon) else 1.0)
    if hi / lo <= 5:
        return
    ax.set_yscale('log')
    ticks = [m * 10 ** k for k in range(int(math.floor(math.log10(lo))), int(math.ceil(math.log10(hi))) + 1)
             for m in (1, 2, 5) if lo / 1.5 <= m * 10 ** k <= hi * 1.5]
    ax.set_yticks(ticks, [f'{t:g}' for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(ax.get_ylabel() + ', log scale')


def dose_step_figure(rows: pd.DataFrame, methods: Sequence[str], ttd: pd.DataFrame, title: str,
                     horizon: Optional[float] = None, label: str = 'task'):
    """Divergence step against the KSS weight α (0 = No control), one series per application
    frequency: each run a point (filled: its divergence step; open: censored, drawn at the step it
    stopped, the horizon), and the Kaplan–Meier median divergence step of each row with its CI
    (from `ttd`, a `methods.time_to_divergence` table; a median not reached is drawn at the horizon
    as a triangle). α points are equally spaced (ranks)."""
    import matplotlib.pyplot as plt
    arms = kss_arms(methods)
    pts = divergence_points(rows, methods, label)
    med = ttd[ttd['label'] == LABEL_NAMES[label]].set_index('method') if 'label' in ttd else ttd.set_index('method')
    if horizon is None:
        horizon = float(pts['step'].max()) if len(pts) else NAN
    alphas = sorted(arms['alpha'].unique())
    xpos = {a: i for i, a in enumerate(alphas)}
    freqs = [f for f in dict.fromkeys(arms['frequency']) if f]
    offsets = dict(zip(freqs, np.linspace(-0.2, 0.2, len(freqs)) if len(freqs) > 1 else [0.0]))
    colours = dict(zip(freqs, ['#1f77b4', '#d62728', '#2ca02c', '#9467bd']))
    fig, ax = plt.subplots(figsize=(10, 4.6))
    ref_xy = None
    for f in [''] + freqs:
        sub = arms[arms['frequency'] == f]
        colour = colours.get(f, 'k')
        xs, ys = [], []
        for _, a in sub.iterrows():
            x0 = xpos[a['alpha']] + offsets.get(f, 0.0)
            p = pts[pts['method'] == a['method']].sort_values(['diverged', 'step'])
            dx = _spread(len(p))
            d = p['diverged'].to_numpy(bool)
            ax.plot(x0 + dx[d], p['step'].to_numpy(float)[d], 'o', ms=4, color=colour, alpha=0.55, lw=0)
            ax.plot(x0 + dx[~d], p['step'].to_numpy(float)[~d], 'o', ms=5, mfc='none', color=colour, alpha=0.8)
            if a['method'] not in med.index:
                continue
            r = med.loc[a['method']]
            m, lo, hi = float(r['median_step']), float(r['median_ci_lo']), float(r['median_ci_hi'])
            reached = math.isfinite(m)
            y = m if reached else horizon
            lo = lo if math.isfinite(lo) else y
            hi = hi if math.isfinite(hi) else horizon
            ax.errorbar([x0 + 0.11], [y], yerr=[[max(0.0, y - lo)], [max(0.0, hi - y)]], fmt='D' if reached else '^',
                        ms=7, color=colour, mec='k', capsize=4, zorder=5)
            xs.append(x0 + 0.11)
            ys.append(y)
        if f == '' and xs:
            ref_xy = (xs[0], ys[0])
        elif xs:
            if ref_xy is not None:
                xs, ys = [ref_xy[0]] + xs, [ref_xy[1]] + ys
            ax.plot(xs, ys, '-', color=colour, lw=1.2, label=f'KSS, {f}')
    if math.isfinite(horizon):
        ax.axhline(horizon, color='grey', lw=0.8, ls=':')
        ax.annotate('horizon (end of training)', (-0.45, horizon), fontsize=7, ha='left', va='bottom', color='grey')
    from matplotlib.lines import Line2D
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color='k', marker='o', lw=0, ms=4), Line2D([], [], color='k', marker='o', lw=0,
                                                                            mfc='none', ms=5),
                Line2D([], [], color='k', marker='D', lw=0, ms=6), Line2D([], [], color='k', marker='^', lw=0, ms=6)]
    labels += ['a run: its divergence step', 'a run that did not diverge\n(censored, drawn at its last step)',
               'Kaplan–Meier median, 95% CI', 'median not reached\n(drawn at the horizon)']
    ax.legend(handles, labels, fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xticks(range(len(alphas)), [f'{a:g}' + ('\n(No control)' if a == 0 else '') for a in alphas])
    ax.set(xlabel='KSS weight α', ylabel=f'divergence step\n({LABEL_NAMES[label]})',
           xlim=(-0.5, len(alphas) - 0.5), title=title)
    _step_axis(ax, pts['step'].to_numpy(float), horizon)
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def km_panels_figure(rows: pd.DataFrame, panels: Mapping[str, Sequence[str]], title: str, label: str = 'task'):
    """Kaplan–Meier curves (log-log CI bands, censoring ticks) under `label`, one panel per entry of
    `panels` (panel title -> its rows)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.9), sharey=True, squeeze=False)
    for ax, (name, groups) in zip(axes[0], panels.items()):
        S.km_figure(survival_curve(rows, label=label, groups=list(groups)), name, group='method', ax=ax)
    axes[0][0].set_ylabel('fraction of runs not yet diverged')
    fig.suptitle(f'{title}; {LABEL_NAMES[label]}', fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the attention diagnostic

def _first(steps: pd.Series, mask: pd.Series) -> float:
    hit = steps[mask.to_numpy(bool)]
    return float(hit.min()) if len(hit) else NAN


def onset_table(long: pd.DataFrame, factor: float = LOGIT_FACTOR) -> pd.DataFrame:
    """Per diagnostic run (a `diagnostic_runs.diagnostic_runs` table), which grows first:

    * logit_onset_step: the first reading at which the largest attention logit over the layers
      exceeds `factor` x its value at step 1 (NaN: never);
    * spectral_onset_step: the first profile at which M>1 exceeds M≈1 in any layer (NaN: never);
    * first_sign: 'attention logit' / 'spectrum' (the earlier one; the other later or never),
      'same step', or 'neither'.
    Both are read every `every` steps (attention at 1, every, 2 every, ...; spectra at 0, every, ...),
    so an order within `every` steps is not resolved. Also the divergence step."""
    out = []
    for run, g in long.groupby('run', sort=False):
        att = g.dropna(subset=['max_logit']).groupby('step')['max_logit'].max()
        first_step = att.index.min() if len(att) else None
        base = float(att.loc[first_step]) if first_step is not None else NAN
        later = att[att.index > first_step] if first_step is not None else att
        logit_on = (_first(pd.Series(later.index, dtype=float), pd.Series(later.to_numpy() > factor * base))
                    if base > 0 else NAN)
        sp = g.dropna(subset=['m_near_unit', 'm_expansive'])
        exp = (sp['m_expansive'] > sp['m_near_unit']).groupby(sp['step']).any()
        spec_on = _first(pd.Series(exp.index, dtype=float), exp.reset_index(drop=True))
        if math.isnan(logit_on) and math.isnan(spec_on):
            first = 'neither'
        elif logit_on == spec_on:
            first = 'same step'
        elif math.isnan(spec_on) or (not math.isnan(logit_on) and logit_on < spec_on):
            first = 'attention logit'
        else:
            first = 'spectrum'
        r0 = g.iloc[0]
        out.append({'run': run, 'lr': float(r0['lr']), 'seed': int(r0['seed']), 'diverged': bool(r0['diverged']),
                    'div_step': float(r0['div_step']), 'steps_done': int(r0['steps_done']),
                    'max_logit_step1': base, 'logit_onset_step': logit_on, 'spectral_onset_step': spec_on,
                    'first_sign': first})
    return pd.DataFrame(out, columns=['run', 'lr', 'seed', 'diverged', 'div_step', 'steps_done', 'max_logit_step1',
                                      'logit_onset_step', 'spectral_onset_step', 'first_sign'])


def diagnostic_figure(long: pd.DataFrame, title: str, factor: float = LOGIT_FACTOR):
    """A row per diagnostic run: the largest attention logit (log scale) and the mean attention
    entropy of every layer against step (the top layer bold, the others faint), and M≈1 (solid) and
    M>1 (dashed) of every layer; the divergence step dashed red, the logit onset level dotted. A
    non-positive largest logit (every logit of the layer < 0) has no place on the log scale: left out."""
    import matplotlib.pyplot as plt
    runs = list(dict.fromkeys(long['run']))
    fig, axes = plt.subplots(len(runs), 3, figsize=(13, 2.9 * len(runs)), squeeze=False)
    top = int(long['layer'].max())
    for row, run in zip(axes, runs):
        g = long[long['run'] == run]
        for layer, gl in g.groupby('layer'):
            bold = layer == top
            rest = f'layers 0-{top - 1}' if top > 1 else 'layer 0'
            kw = dict(lw=1.8 if bold else 0.8, alpha=1.0 if bold else 0.35, color='C0' if bold else 'grey',
                      marker='.', ms=4 if bold else 2,
                      label=f'layer {layer} (top)' if bold else (rest if layer == 0 else None))
            a = gl.dropna(subset=['max_logit']).sort_values('step')
            row[0].plot(a['step'], a['max_logit'].where(a['max_logit'] > 0), **kw)
            row[1].plot(a['step'], a['entropy_mean'], **kw)
            t = gl.dropna(subset=['m_near_unit']).sort_values('step')
            row[2].plot(t['step'], t['m_near_unit'], '-', **{**kw, 'color': 'C2' if bold else 'grey',
                                                              'label': 'M≈1' if bold else None})
            row[2].plot(t['step'], t['m_expansive'], '--', **{**kw, 'color': 'C3' if bold else 'grey',
                                                               'label': 'M>1' if bold else None})
        att = g.dropna(subset=['max_logit']).groupby('step')['max_logit'].max()
        if len(att):
            row[0].axhline(factor * float(att.iloc[0]), color='k', lw=0.7, ls=':',
                           label=f'{factor:g}x the step-1 largest logit')
        row[0].set_yscale('log')
        div = g['div_step'].iloc[0]
        for ax in row:
            if np.isfinite(div):
                ax.axvline(div, color='r', lw=0.9, ls='--')
            ax.set_xlabel('step')
        row[0].set_ylabel(f'{run}\nlargest attention logit')
        row[1].set_ylabel('attention entropy (nats)')
        row[2].set_ylabel('mass (top layer coloured)')
        row[2].set_ylim(-0.03, 1.03)
    for ax in axes[0]:
        ax.legend(fontsize=7)
    axes[0][0].set_title('largest attention logit (log scale)', fontsize=9)
    axes[0][1].set_title('mean attention entropy', fontsize=9)
    axes[0][2].set_title('M≈1 (solid) and M>1 (dashed) per layer', fontsize=9)
    fig.suptitle(title + ' (red dashed: divergence step)', fontsize=9)
    fig.tight_layout()
    return fig


def arms_panels(methods: Sequence[str], reference: str = REFERENCE) -> Dict[str, list]:
    """Frequency -> [reference, its KSS rows] (the panels of the dose x frequency KM figure)."""
    arms = kss_arms(methods)
    return {f: [reference, *arms.loc[arms['frequency'] == f, 'method']] for f in dict.fromkeys(arms['frequency']) if f}
