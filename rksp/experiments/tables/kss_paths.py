"""The KSS gradient-path ablation table (notebook 06)."""

from __future__ import annotations

import pandas as pd

from rksp.experiments.plans import KSS_PATHS
from rksp.experiments.stats import fisher_exact, wilson
from rksp.experiments.tables.common import finite_mean, ok_runs
from rksp.harness.record import read_record
from rksp.methods.rows import REFERENCE


def kss_grad_ratios(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per KSS application of every run in `rows` (needs the `path` of each record):
    kss_path, hash, step, task_grad_norm, kss_grad_norm, ratio = ||g_KSS|| / ||g_task|| (before any
    bound) and scale (the bound's factor, 1 without one), from record['extras']['reg_grad']."""
    out = []
    for _, r in ok_runs(rows).iterrows():
        if r.get('method') == REFERENCE or not isinstance(r.get('path'), str):
            continue
        rec = read_record(r['path']) or {}
        rg = (rec.get('extras') or {}).get('reg_grad') or {}
        for st, t, k, sc in zip(rg.get('step', []), rg.get('task_grad_norm', []), rg.get('reg_grad_norm', []),
                                rg.get('scale', [])):
            out.append({'kss_path': r['kss_path'], 'hash': r['hash'], 'step': st, 'task_grad_norm': t,
                        'kss_grad_norm': k, 'ratio': k / t if t > 0 else float('nan'), 'scale': sc})
    return pd.DataFrame(out, columns=['kss_path', 'hash', 'step', 'task_grad_norm', 'kss_grad_norm', 'ratio',
                                      'scale'])


def kss_path_table(rows: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per gradient path (and the reference): divergence under the task-gradient and the
    total-gradient label (k/n, %, Wilson 95% CI, Fisher p vs `reference`), accuracy of the runs that
    did not diverge, and the distribution of the KSS/task gradient ratio over all applications of
    the path's runs (median, 90th / 99th percentile, max, share > 10x, share where a bound scaled)."""
    ok = ok_runs(rows)
    ratios = kss_grad_ratios(rows)
    ref = ok[ok['kss_path'] == reference]
    kr, nr = int(ref['diverged'].astype(bool).sum()), len(ref)
    krt = int(ref['diverged_total_grad'].fillna(False).astype(bool).sum()) if nr else 0
    out = []
    for name in [reference] + [n for n in KSS_PATHS if n in set(ok['kss_path'])]:
        g = ok[ok['kss_path'] == name]
        n = len(g)
        k = int(g['diverged'].astype(bool).sum())
        kt = int(g['diverged_total_grad'].fillna(False).astype(bool).sum())
        lo, hi = wilson(k, n) if n else (float('nan'), float('nan'))
        lot, hit = wilson(kt, n) if n else (float('nan'), float('nan'))
        conv = g[~g['diverged'].astype(bool)]
        q = pd.to_numeric(ratios.loc[ratios['kss_path'] == name, 'ratio'], errors='coerce').dropna()
        sc = pd.to_numeric(ratios.loc[ratios['kss_path'] == name, 'scale'], errors='coerce').dropna()
        is_ref = name == reference
        out.append({
            'kss_path': name, 'overrides': '' if is_ref else str(KSS_PATHS[name]), 'n': n,
            'n_div': k, 'div_pct': 100.0 * k / n if n else float('nan'),
            'div_ci_lo': 100.0 * lo, 'div_ci_hi': 100.0 * hi,
            'fisher_p_vs_ref': fisher_exact(k, n, kr, nr)['p'] if (not is_ref and n and nr) else float('nan'),
            'n_div_total_grad': kt, 'div_pct_total_grad': 100.0 * kt / n if n else float('nan'),
            'div_total_ci_lo': 100.0 * lot, 'div_total_ci_hi': 100.0 * hit,
            'fisher_p_total_vs_ref': fisher_exact(kt, n, krt, nr)['p'] if (not is_ref and n and nr) else float('nan'),
            'acc_pct': 100.0 * finite_mean(conv['val_acc']) if len(conv) else float('nan'),
            'n_applications': len(q),
            'ratio_median': float(q.median()) if len(q) else float('nan'),
            'ratio_p90': float(q.quantile(0.9)) if len(q) else float('nan'),
            'ratio_p99': float(q.quantile(0.99)) if len(q) else float('nan'),
            'ratio_max': float(q.max()) if len(q) else float('nan'),
            'share_ratio_gt_10': float((q > 10).mean()) if len(q) else float('nan'),
            'share_bound_scaled': float((sc < 1).mean()) if len(sc) else float('nan'),
        })
    return pd.DataFrame(out)


def kss_paths_figure(kss_paths: pd.DataFrame, ratios: pd.DataFrame, title: str):
    """Divergence per KSS gradient path (both labels) and the distribution of ‖g_KSS‖/‖g_task‖ per application."""
    import matplotlib.pyplot as plt
    import numpy as np
    names = [n for n in kss_paths["kss_path"] if n != REFERENCE]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    x = np.arange(len(kss_paths))
    for off, (col, lo, hi, lab) in zip((-0.18, 0.18), (("div_pct", "div_ci_lo", "div_ci_hi", "task-gradient label"),
                                                       ("div_pct_total_grad", "div_total_ci_lo", "div_total_ci_hi",
                                                        "total-gradient label"))):
        v = kss_paths[col].to_numpy(float)
        err = np.vstack([v - kss_paths[lo].to_numpy(float), kss_paths[hi].to_numpy(float) - v])
        ax.bar(x + off, v, 0.34, yerr=err, capsize=3, label=lab)
    ax.set_xticks(x, [f"{n}\n(n={k})" for n, k in zip(kss_paths["kss_path"], kss_paths["n"])], fontsize=7, rotation=15)
    ax.set(ylabel="diverged (%), Wilson 95% CI", ylim=(0, 100), title="Divergence per KSS gradient path")
    ax.legend(fontsize=7)
    ax = axes[1]
    data = [ratios.loc[ratios["kss_path"] == n, "ratio"].dropna().to_numpy() for n in names]
    if any(len(d) for d in data):
        ax.boxplot([d if len(d) else [np.nan] for d in data], whis=(1, 99), showfliers=True)
        ax.set_yscale("log")
    ax.axhline(1, color="k", lw=0.5)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=7, rotation=15)
    ax.set(ylabel="‖g_KSS‖ / ‖g_task‖ per application", title="KSS / task gradient ratio (whiskers 1-99 %)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
