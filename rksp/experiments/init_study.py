"""The init-only study of issue 14: the RKSP profile at init of every normalization under each weight
init and model size, beside the paper's Table 1 (M≈1, M>1, ρ), with no training at all.

Why: the paper states no init ("GPT-2-style", d ∈ {128…1024}, L ∈ {4…24}). Which init and size
reproduce Table 1's profile *at init* is a property of the model alone, so it can be settled by
profiling (cheap) before any training run is looked at (docs/regime.md, rule 1).

Each profile is exactly the one a training run of the harness records (``prof_score`` etc.): the
same seeding (:func:`rksp.harness.build.model_at_init`: the run seed, then the task data, then the model), the
same recall training batch (``profile_batch_size`` = batch 32 × seq 64 = 2048 token states, drawn by
the profile generator of the run seed) and :func:`rksp.core.profiling.profile` with 2048 snapshots; only
the Kreiss constant, which no column here uses, is skipped.

Sizes (``size``): ``'smoke'`` (tests, seconds), ``'small'`` (the five configurations the regime
choice needs, 105 profiles, 85 s wall / 42 s CPU on one shared core) and ``'full'`` (every configuration below, 357
profiles, 6.5 min on one shared core).

Configurations (``CONFIGS``): init ∈ {'gpt2', 'normal', 'torch'} × (d, L) ∈ {(64,2), (64,6),
(128,4), (256,6)} at σ = 0.02, plus the d·σ²-matched proxies of ``'normal'`` σ=0.02 at d=256
(σ = 0.02·√(256/d): d·σ² = 0.1024, the update-to-stream ratio that sets No-Norm's M≈1).
Norms: the paper's six plus ``deepnorm_pre`` (the "DeepNorm captured before any LayerNorm"
variant, h ← αh + f(LN(h)); compared with the paper's DeepNorm row, its own row).
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from rksp import defaults
from rksp.experiments import paper as P
from rksp.models.gpt import ALL_NORMS, EXTRA_NORM_NAMES, NORMS, NORM_NAMES as GPT_NORM_NAMES
from rksp.models.norms import norm_name, norm_spec

__all__ = ['CONFIGS', 'SIZES', 'PROFILE_SIZE', 'STUDY_NORMS', 'PAPER_NORMS', 'study_configs', 'profile_at_init', 'run_study',
           'study_table', 'error_table', 'study_figure', 'proxy_std']

PAPER_NORMS = NORMS
STUDY_NORMS = ALL_NORMS
NORM_NAMES = {**GPT_NORM_NAMES, **EXTRA_NORM_NAMES}
# which paper row each study norm is compared with (its entry's `paper_row`, rksp.models.norms)
PAPER_ROW = {n: norm_spec(n).compared_with() for n in STUDY_NORMS}

# the reference point of the d·σ² proxies: d=256 (the paper's smallest Table 1-size model) at σ=0.02
PROXY_REF_D, PROXY_REF_STD = 256, 0.02


def proxy_std(d: int, ref_d: int = PROXY_REF_D, ref_std: float = PROXY_REF_STD) -> float:
    """σ with d·σ² = ref_d·ref_std² (0.04 at d=64, 0.0327 at d=96, 0.0283 at d=128)."""
    return ref_std * math.sqrt(ref_d / d)


def _heads(d: int) -> int:
    return 8 if d >= 256 else 4


def _cfg(init: str, d: int, L: int, std: float = defaults.INIT_STD, proxy: bool = False) -> Dict[str, Any]:
    label = f"{init} d={d} L={L}" + (f" σ={std:.4g}" if (proxy or init != 'torch' and std != defaults.INIT_STD) else '')
    return dict(config=label, init=init, d_model=d, n_layer=L, n_head=_heads(d),
                init_std=None if init == 'torch' else float(std), proxy=proxy, d_sigma2=(d * std ** 2 if init != 'torch' else math.nan))


SIZES_DL = ((64, 2), (64, 6), (128, 4), (256, 6))
CONFIGS: List[Dict[str, Any]] = (
    [_cfg(init, d, L) for init in ('gpt2', 'normal', 'torch') for d, L in SIZES_DL]
    + [_cfg('normal', d, L, proxy_std(d), proxy=True) for d, L in ((64, 2), (64, 4), (64, 6), (96, 6), (128, 4))]
)

SIZES: Dict[str, Dict[str, Any]] = {
    # tests: two tiny configs, one seed, 256 snapshots
    'smoke': dict(configs=[_cfg('gpt2', 32, 2), _cfg('normal', 32, 2, proxy_std(32), proxy=True)],
                  seeds=(42,), n_snapshots=256, batch_size=8, n_train=64),
    # the regime choice: today's small model, PyTorch's init, the paper-size normal init and its
    # CPU proxies (~2 min on one core; d=256 is ~90 s of it)
    'small': dict(configs=[c for c in CONFIGS if c['config'] in (
        'gpt2 d=64 L=2', 'torch d=64 L=2', 'normal d=256 L=6', 'normal d=64 L=4 σ=0.04', 'normal d=64 L=6 σ=0.04')],
        seeds=defaults.SEEDS, n_snapshots=defaults.N_SNAPSHOTS, batch_size=32, n_train=8192),
    'full': dict(configs=CONFIGS, seeds=defaults.SEEDS, n_snapshots=defaults.N_SNAPSHOTS, batch_size=32, n_train=8192),
}


# the study size each reproduction profile runs (notebook 01)
PROFILE_SIZE = {'smoke': 'smoke', 'small': 'small', 'paper': 'full'}


def study_configs(size: str = 'full') -> List[Dict[str, Any]]:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} (valid: {', '.join(SIZES)})")
    return [dict(c) for c in SIZES[size]['configs']]


def _train_config(c: Dict[str, Any], norm: str, seed: int, n_snapshots: int, batch_size: int, n_train: int):
    from rksp.harness.config import TrainConfig
    mc = dict(norm=norm, d_model=c['d_model'], n_layer=c['n_layer'], n_head=c['n_head'], init=c['init'])
    if c['init_std'] is not None:
        mc['init_std'] = c['init_std']
    return TrainConfig(task='recall', model='gpt', model_cfg=mc, seed=seed, batch_size=batch_size, n_train=n_train,
                       n_val=max(8, min(512, n_train)), profile_n_snapshots=n_snapshots, steps=1)


@torch.no_grad()
def profile_at_init(cfg) -> Dict[str, Any]:
    """The profile summary a training run of ``cfg`` (TrainConfig or dict) records at init, without
    training (the Kreiss constant skipped)."""
    from rksp.core.profiling import profile as rksp_profile
    from rksp.harness.config import TrainConfig
    from rksp.harness.build import model_at_init
    cfg = TrainConfig.from_dict(cfg) if not isinstance(cfg, TrainConfig) else cfg
    model, x = model_at_init(cfg)
    with torch.random.fork_rng(devices=[]):
        prof = rksp_profile(model, x, n_snapshots=cfg.profile_n_snapshots, seed=cfg.profile_seed,
                            kreiss=False, progress=False)
    return dict(prof.summary)


def run_study(size: str = 'full', norms: Sequence[str] = STUDY_NORMS, seeds: Optional[Sequence[int]] = None,
              configs: Optional[Sequence[Dict[str, Any]]] = None, progress: bool = False) -> pd.DataFrame:
    """One row per (configuration, norm, seed): M≈1 (``m_near_unit`` = the run records'
    ``prof_score``), M>1 (``m_expansive``), ρ (``rho``, layer means) and the seconds it took."""
    spec = SIZES[size] if size in SIZES else None
    if spec is None:
        raise ValueError(f"unknown size {size!r} (valid: {', '.join(SIZES)})")
    configs = study_configs(size) if configs is None else list(configs)
    seeds = tuple(spec['seeds'] if seeds is None else seeds)
    rows = []
    for c in configs:
        for norm in norms:
            for s in seeds:
                t0 = time.perf_counter()
                summ = profile_at_init(_train_config(c, norm, s, spec['n_snapshots'], spec['batch_size'],
                                                     spec['n_train']))
                rows.append({**c, 'norm': norm, 'seed': s, 'm_near_unit': float(summ['score']),
                             'm_expansive': float(summ.get('m_expansive_mean', math.nan)),
                             'rho': float(summ.get('rho_mean', math.nan)), 'seconds': time.perf_counter() - t0})
                if progress:
                    print(f"{c['config']:<28} {norm:<13} seed {s}: M≈1 {rows[-1]['m_near_unit']:.3f}", flush=True)
    return pd.DataFrame(rows)


def study_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, norm): mean and sd over seeds of M≈1, M>1 and ρ, the paper's
    Table 1 values beside them (NaN, with a warning, for a norm without a paper row) and the
    absolute errors of the means."""
    keys = ['config', 'init', 'd_model', 'n_layer', 'init_std', 'proxy', 'd_sigma2', 'norm']
    g = df.groupby(keys, sort=False, dropna=False)
    t = g.agg(n_seeds=('seed', 'size'), m_near_unit=('m_near_unit', 'mean'), m_near_unit_sd=('m_near_unit', 'std'),
              m_expansive=('m_expansive', 'mean'), rho=('rho', 'mean'), rho_sd=('rho', 'std')).reset_index()
    t.insert(t.columns.get_loc('norm') + 1, 'norm_name', t['norm'].map(norm_name))
    paper = {n: P.table1_row(n, missing='nan') for n in dict.fromkeys(t['norm'])}
    for col, pcol in (('m_near_unit', 'm_near_unit'), ('m_expansive', 'm_expansive'), ('rho', 'rho')):
        t[f'paper_{col}'] = [paper[n][pcol] for n in t['norm']]
        t[f'abs_err_{col}'] = (t[col] - t[f'paper_{col}']).abs()
    return t


def error_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute error of M≈1 (and of M>1, and the median relative error of ρ) against Table 1
    per configuration: over the paper's six norms, over the five without DeepNorm (whose paper row
    the post-LN DeepNorm does not produce, docs/regime.md), and the deepnorm_pre row's own errors."""
    out = []
    for cfg, g in table.groupby('config', sort=False):
        six = g[g['norm'].isin(PAPER_NORMS)]
        five = six[six['norm'] != 'deepnorm']
        dp = g[g['norm'] == 'deepnorm_pre']
        first = g.iloc[0]
        out.append({
            'config': cfg, 'init': first['init'], 'd_model': first['d_model'], 'n_layer': first['n_layer'],
            'init_std': first['init_std'], 'proxy': first['proxy'], 'd_sigma2': first['d_sigma2'],
            'mae_m_near_unit_6': six['abs_err_m_near_unit'].mean(),
            'mae_m_near_unit_5': five['abs_err_m_near_unit'].mean(),
            'max_err_m_near_unit_5': five['abs_err_m_near_unit'].max(),
            'mae_m_expansive_6': six['abs_err_m_expansive'].mean(),
            'median_rel_err_rho_6': float(np.median((six['abs_err_rho'] / six['paper_rho']).to_numpy()))
            if len(six) else math.nan,
            'nonorm_m_near_unit': float(g.loc[g['norm'] == 'none', 'm_near_unit'].mean()),
            'deepnorm_pre_m_near_unit': float(dp['m_near_unit'].mean()) if len(dp) else math.nan,
            'deepnorm_pre_m_expansive': float(dp['m_expansive'].mean()) if len(dp) else math.nan,
            'deepnorm_pre_rho': float(dp['rho'].mean()) if len(dp) else math.nan,
        })
    return pd.DataFrame(out)


def study_figure(table: pd.DataFrame, metric: str = 'm_near_unit', configs: Optional[Sequence[str]] = None):
    """Grouped bars: ``metric`` per norm for each configuration, the paper's Table 1 value as a black
    tick per norm (deepnorm_pre against the paper's DeepNorm)."""
    import matplotlib.pyplot as plt
    configs = list(dict.fromkeys(table['config'])) if configs is None else list(configs)
    norms = list(dict.fromkeys([n for n in STUDY_NORMS if n in set(table['norm'])] + list(table['norm'])))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.4 * len(norms) + 0.3 * len(configs) + 2.5), 3.6))
    w = 0.8 / max(1, len(configs))
    x = np.arange(len(norms))
    for i, c in enumerate(configs):
        sub = table[table['config'] == c].set_index('norm')
        ax.bar(x + (i - (len(configs) - 1) / 2) * w, [sub[metric].get(n, np.nan) for n in norms], w, label=c)
    paper = [P.table1_row(n, missing='nan')[metric] for n in norms]
    ax.hlines(paper, x - 0.42, x + 0.42, color='k', lw=2, zorder=3, label='paper Table 1')
    ax.set_xticks(x)
    ax.set_xticklabels([norm_name(n).replace(' (', '\n(') for n in norms], fontsize=8)
    ax.set_ylabel({'m_near_unit': 'M≈1 at init', 'm_expansive': 'M>1 at init', 'rho': 'ρ at init'}.get(metric, metric))
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
    ax.set_title('RKSP profile at init by weight init and size (no training)')
    fig.tight_layout()
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    """rksp init-study [smoke|small|full] [--out DIR]: run the study, write
    init_study_runs.csv (per seed), init_study_table.csv (per config x norm), init_study_errors.csv
    (per config) and init_study_m_near_unit.png into DIR, and print the error table."""
    import argparse
    from pathlib import Path
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument('size', nargs='?', default='full', choices=tuple(SIZES))
    ap.add_argument('--out', default='docs/init_study')
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    df = run_study(a.size, progress=True)
    t = study_table(df)
    e = error_table(t)
    df.to_csv(out / 'init_study_runs.csv', index=False)
    t.to_csv(out / 'init_study_table.csv', index=False, float_format='%.4f')
    e.to_csv(out / 'init_study_errors.csv', index=False, float_format='%.4f')
    fig = study_figure(t, configs=[c for c in ('gpt2 d=64 L=2', 'gpt2 d=256 L=6', 'normal d=256 L=6',
                                               'normal d=64 L=6 σ=0.04') if c in set(t['config'])] or None)
    fig.savefig(out / 'init_study_m_near_unit.png', dpi=120)
    print(e.round(3).to_string())
    print(f"{len(df)} profiles in {time.perf_counter() - t0:.0f} s (sum of per-profile seconds "
          f"{df['seconds'].sum():.0f})")
    return 0
