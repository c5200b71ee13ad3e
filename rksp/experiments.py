"""Experiment plans shared by the reproduction notebooks (one place for sizes, seeds and LRs).

Every notebook takes `profile` in ('smoke', 'small', 'paper') and asks this module for its
configs, so the same run (same config hash) is trained once and reused by every table that needs
it: all associative-recall runs of a profile live in ``results/<profile>/runs/recall``.

* ``smoke``: tiny models and a few steps, so every notebook runs end to end in CI.
* ``small``: the CPU regime chosen by the rules of docs/regime.md (No-Norm GPT d=64, L=4, plain
  N(0, 0.04) init (d·σ² of d=256 at σ=0.02), batch 32, 200 steps, 50 warmup steps then a constant
  LR, the paper's LR band 0.005-0.01; before issue 14: d=64, L=2, GPT-2 init, 20 warmup steps,
  docs/small-regime.md). The three rows of the headline claims (No control, Grad clip 1.0, KSS
  α=0.15) get 24 trials (3 LRs x 8 seeds), and so does every normalization of Table 1 (4 LRs x 6
  seeds); every other method row gets 6 (3 LRs x seeds 42/123), Table 5's grid 2 seeds per LR, the
  KSS gradient-path ablation 12 per non-default path, so the whole profile fits 90 minutes on
  2 cores (docs/regime.md, Part 3). Tables print n beside every rate.
* ``paper``: METHOD.md §8 as far as it is stated (24 trials per method, seeds 42/123/456 then
  1003..., d=256, L=6, 5 epochs with 100 warmup steps); meant for GPUs / Dask clusters. Init: plain
  N(0, 0.02) on every Linear and Embedding (``defaults.PAPER_INIT``; its profile at init is
  the closest to Table 1, docs/regime.md), device ``'auto'`` (CUDA when available; the record's
  ``device`` says which).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import defaults
from . import paper as P
from .results_io import PROFILES, results_dir, write_table
from .stabilizers import REFERENCE, TABLES, apply_method, canonical_method
from .stability import trial_seeds
from .stats import fisher_exact, wilson
from .train import TrainConfig

NORMS = ('pre_ln', 'post_ln', 'rmsnorm', 'deepnorm', 'subln', 'none')
NORM_NAMES = {'pre_ln': 'Pre-LN', 'post_ln': 'Post-LN', 'rmsnorm': 'RMSNorm', 'deepnorm': 'DeepNorm',
              'subln': 'SubLN', 'none': 'No-Norm'}
MAIN_METHODS = ('No control', 'Grad clip 1.0', 'KSS α=0.15')   # the rows of the headline claims

KSS_PATH_METHOD = 'KSS α=0.15'
DEFAULT_KSS_PATH = 'pod (default)'
# name -> KSSConfig overrides of the KSS α=0.15 row (rksp.kss module docstring, README choices)
KSS_PATHS: Dict[str, Dict[str, Any]] = {
    DEFAULT_KSS_PATH: {'projection': 'pod'},
    'whitened (old order)': {'projection': 'whitened'},
    'pod, W differentiated': {'projection': 'pod', 'detach_whitening': False},
    'whitened, W differentiated': {'projection': 'whitened', 'detach_whitening': False},
    'pod, bound 1x task grad': {'projection': 'pod', 'grad_bound': 1.0},
    'whitened, bound 1x task grad': {'projection': 'whitened', 'grad_bound': 1.0},
}
# the paths the plans run: the default, the old order, differentiating W where it matters and the
# bound. 'pod, W differentiated' is left out: under 'pod' the rank-r eigenvalues do not depend on W
# (A_r = W_r (P_y P_x^+) W_r^-1), so its gradient equals the default's (tests/test_dmd.py
# test_pod_gradient_does_not_depend_on_detaching_the_whitening_the_old_order_does); every path stays
# available by name (kss_path_configs(profile, paths=[...]))
SMALL_KSS_PATHS = (DEFAULT_KSS_PATH, 'whitened (old order)', 'whitened, W differentiated', 'pod, bound 1x task grad')


_RECALL_COMMON = dict(task='recall', model='gpt', optimizer='adamw', schedule='constant', profile_at_end=True)

PLANS: Dict[str, Dict[str, Any]] = {
    'smoke': dict(
        recall=dict(model_cfg=dict(d_model=32, n_layer=2, n_head=2), steps=30, warmup_steps=5, batch_size=8,
                    n_train=256, n_val=64, profile_n_snapshots=256),
        band_lrs=(0.01, 0.05), main_trials=2, other_trials=1,
        norm_lrs=(1e-3, 5e-2), norm_trials=1, maxlr_norms=('pre_ln', 'none'),
        kss_paths=SMALL_KSS_PATHS, kss_path_trials=(1, 1), n_boot=200),
    # the regime chosen by docs/regime.md (issue 14; candidate C6, the closest to its three rules:
    # init profile within 0.05 of Table 1, No control 10/12 diverged in the band with pilot seeds,
    # but the runs that do not diverge do not learn in 200 steps). Before: d=64, L=2, GPT-2 init,
    # 20 warmup steps (docs/small-regime.md)
    'small': dict(
        recall=dict(model_cfg=dict(d_model=64, n_layer=4, n_head=4, init='normal', init_std=0.04), steps=200,
                    warmup_steps=50, batch_size=32, n_train=8192, n_val=512, profile_n_snapshots=2048),
        band_lrs=(0.005, 0.007, 0.01), main_trials=8, other_trials=2,
        norm_lrs=(1e-3, 3e-3, 1e-2, 3e-2), norm_trials=6, maxlr_norms=('pre_ln', 'rmsnorm', 'none'),
        maxlr_trials=2, kss_paths=SMALL_KSS_PATHS, kss_path_trials=(8, 4), n_boot=1000),
    'paper': dict(
        recall=dict(model_cfg=dict(d_model=256, n_layer=6, n_head=8, init=defaults.PAPER_INIT,
                                   init_std=defaults.PAPER_INIT_STD),
                    epochs=5, warmup_steps=100, batch_size=32, n_train=10_000, n_val=2_000,
                    profile_n_snapshots=2048, schedule='cosine', device=defaults.PAPER_DEVICE),
        band_lrs=(0.005, 0.0075, 0.01), main_trials=8, other_trials=8,
        norm_lrs=(1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 8e-3, 1e-2), norm_trials=3,
        maxlr_norms=('pre_ln', 'rmsnorm', 'none'), kss_paths=SMALL_KSS_PATHS, kss_path_trials=(8, 4),
        n_boot=1000),
}


def plan(profile: str) -> Dict[str, Any]:
    if profile not in PLANS:
        raise ValueError(f"unknown profile {profile!r} (valid: {', '.join(PROFILES)})")
    return copy.deepcopy(PLANS[profile])


def recall_base(profile: str, norm: str = 'none') -> Dict[str, Any]:
    """The associative-recall TrainConfig dict of a profile (GPT with `norm`)."""
    p = plan(profile)['recall']
    cfg = {**_RECALL_COMMON, **p}
    cfg['model_cfg'] = {**p['model_cfg'], 'norm': norm}
    return cfg


def method_trials(profile: str, method: str) -> int:
    p = plan(profile)
    return p['main_trials'] if canonical_method(method) in MAIN_METHODS else p['other_trials']


def method_configs(profile: str, methods: Iterable[str], norm: str = 'none') -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)]: every method row x band LR x its trial seeds, on the No-Norm recall base."""
    p = plan(profile)
    out = []
    for m in methods:
        name = canonical_method(m)
        for lr in p['band_lrs']:
            for s in trial_seeds(method_trials(profile, name)):
                cfg = apply_method({**recall_base(profile, norm), 'lr': lr, 'seed': s}, name, validate=False)
                out.append(({'method': name}, cfg))
    return out


def table_methods(table: str) -> List[str]:
    """The METHODS rows of a paper table ('table3', 'table4', 'table6', 'table13', 'table14', 'alpha_sweep')."""
    return list(TABLES[table])


def norm_configs(profile: str, norms: Sequence[str] = NORMS, lrs: Optional[Sequence[float]] = None,
                 trials: Optional[int] = None) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)]: the normalization sweep (Tables 1, 2, 5 and the calibration)."""
    p = plan(profile)
    out = []
    for n in norms:
        for lr in (lrs or p['norm_lrs']):
            for s in trial_seeds(trials or p['norm_trials']):
                out.append(({'norm': n, 'method': REFERENCE}, {**recall_base(profile, n), 'lr': lr, 'seed': s}))
    return out


def recall_pool(profile: str) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Every plain (no stabilizer) recall run of the profile: the normalization sweep plus the
    No-Norm 'No control' runs of the LR band. Tables 1-2 and the calibration pool these."""
    runs = norm_configs(profile)
    runs += [({'norm': 'none', **lab}, c) for lab, c in method_configs(profile, [REFERENCE])]
    return unique_runs(runs)


def unique_runs(labeled: Sequence[Tuple[Dict[str, Any], Dict[str, Any]]]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Drop repeated (labels, config) pairs (the same run listed by two plans), keeping the first."""
    seen, out = set(), []
    for lab, c in labeled:
        key = (tuple(sorted(lab.items())), TrainConfig.from_dict(copy.deepcopy(c)).hash())
        if key not in seen:
            seen.add(key)
            out.append((lab, c))
    return out


def runs_dir(profile: str, name: str = 'recall') -> Path:
    return results_dir(profile) / 'runs' / name


def run_labeled(labeled: Sequence[Tuple[Dict[str, Any], Dict[str, Any]]], profile: str, name: str = 'recall',
                executor: str = 'local', dask_address: Optional[str] = None, progress: bool = False,
                **run_kwargs) -> pd.DataFrame:
    """Run (or reuse from the cache) every config; one row per (labels, config), labels as columns."""
    from .sweep import run
    cfgs = [c for _, c in labeled]
    df = run(cfgs, runs_dir(profile, name), executor=executor, dask_address=dask_address, progress=progress,
             **run_kwargs)
    hashes = [TrainConfig.from_dict(copy.deepcopy(c)).hash() for c in cfgs]
    lab = pd.DataFrame([{**l, 'hash': h} for (l, _), h in zip(labeled, hashes)])
    drop = [c for c in lab.columns if c != 'hash' and c in df.columns]
    out = lab.merge(df.drop(columns=drop), on='hash', how='left')
    out.attrs.update(df.attrs)
    return out


# ----------------------------------------------------------------------------- tables

def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows['status'] == 'ok'] if 'status' in rows else rows


def _mean(s: pd.Series) -> float:
    s = pd.to_numeric(s, errors='coerce').dropna()
    return float(s.mean()) if len(s) else float('nan')


def data_used(rows: pd.DataFrame) -> str:
    """'name' or 'name (offline stand-in)' for the data the rows trained on."""
    if 'data_name' not in rows or not len(rows):
        return ''
    out = []
    for (name, standin), _ in rows.groupby(['data_name', 'data_is_standin'], dropna=False):
        label = str(name)
        if bool(standin) and 'stand-in' not in label:
            label += ' (offline stand-in)'
        out.append(label)
    return '; '.join(out)


def overhead_pct(rows: pd.DataFrame, group: str = 'method', reference: str = REFERENCE) -> Dict[str, float]:
    """Median seconds per step of each group relative to the reference group, in % (same sweep).
    Measured with 2 workers sharing the machine: differences under about 10% are noise."""
    ok = _ok(rows)
    sps = pd.to_numeric(ok.get('steps_per_sec'), errors='coerce')
    med = (1.0 / sps).groupby(ok[group]).median()
    if reference not in med.index:
        return {}
    return {g: 100.0 * (v / med[reference] - 1.0) for g, v in med.items()}


def method_table(rows: pd.DataFrame, methods: Sequence[str], reference: str = REFERENCE,
                 paper_rows: Optional[Dict[str, Dict[str, Any]]] = None) -> pd.DataFrame:
    """One row per method: divergence (k/n, %, Wilson 95% CI, Fisher p vs `reference`), the same
    rate under the total-gradient label, accuracy of the runs that did not diverge, M≈1 at init
    and after training, per-step overhead, and the paper's values beside ours."""
    paper_rows = P.METHOD_ROWS if paper_rows is None else paper_rows
    ok = _ok(rows)
    over = overhead_pct(rows, 'method', reference)
    ref = ok[ok['method'] == reference]
    kr, nr = int(ref['diverged'].astype(bool).sum()), len(ref)
    out = []
    for m in methods:
        g = ok[ok['method'] == m]
        n, k = len(g), int(g['diverged'].astype(bool).sum()) if len(g) else 0
        lo, hi = wilson(k, n) if n else (float('nan'), float('nan'))
        kt = int(g['diverged_total_grad'].fillna(False).astype(bool).sum()) if 'diverged_total_grad' in g else k
        conv = g[~g['diverged'].astype(bool)]
        pr = paper_rows.get(m, {})
        out.append({
            'method': m, 'n': n, 'n_div': k, 'div_pct': 100.0 * k / n if n else float('nan'),
            'div_ci_lo': 100.0 * lo, 'div_ci_hi': 100.0 * hi,
            'fisher_p_vs_ref': fisher_exact(k, n, kr, nr)['p'] if (m != reference and n and nr) else float('nan'),
            'div_pct_total_grad_label': 100.0 * kt / n if n else float('nan'),
            'acc_pct': 100.0 * _mean(conv['val_acc']) if len(conv) else float('nan'),
            'm_near_unit_init': _mean(g.get('prof_score', pd.Series(dtype=float))),
            'm_near_unit_end': _mean(conv.get('end_score', pd.Series(dtype=float))),
            'overhead_pct': over.get(m, float('nan')) if m != reference else float('nan'),
            'paper_div_pct': pr.get('div_pct', float('nan')), 'paper_acc_pct': pr.get('acc_pct', float('nan')),
            'paper_m_near_unit': pr.get('m_near_unit', float('nan')), 'paper_overhead': P.OVERHEAD.get(m, ''),
            'data': data_used(g),
        })
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- KSS gradient paths (issue 13)

def kss_path_configs(profile: str, paths: Optional[Sequence[str]] = None,
                     norm: str = 'none') -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of the gradient-path ablation: No control and KSS α=0.15 on each path
    (`KSS_PATHS`), every band LR x trial seeds; the default path gets `kss_path_trials[0]` seeds
    per LR (24 trials in 'small'), every other path `kss_path_trials[1]` (12). Labels: method,
    kss_path. The default path's configs are the KSS α=0.15 row's own (same hash, shared cache)."""
    p = plan(profile)
    n_def, n_other = p['kss_path_trials']
    names = list(p.get('kss_paths', KSS_PATHS)) if paths is None else list(paths)
    bad = [n for n in names if n not in KSS_PATHS]
    if bad:
        raise ValueError(f"unknown KSS path(s) {bad}; valid: {list(KSS_PATHS)}")
    out = [({'method': REFERENCE, 'kss_path': REFERENCE}, c)
           for _, c in method_configs(profile, [REFERENCE], norm)]
    for name in names:
        for lr in p['band_lrs']:
            for s in trial_seeds(n_def if name == DEFAULT_KSS_PATH else n_other):
                cfg = apply_method({**recall_base(profile, norm), 'lr': lr, 'seed': s}, KSS_PATH_METHOD,
                                   validate=False)
                cfg['hooks'] = [{**h, 'kwargs': {**h['kwargs'], **KSS_PATHS[name]}}
                                if isinstance(h, dict) and h.get('target') == 'kss' else h for h in cfg['hooks']]
                out.append(({'method': KSS_PATH_METHOD, 'kss_path': name}, cfg))
    return out


def kss_grad_ratios(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per KSS application of every run in `rows` (needs the `path` of each record):
    kss_path, hash, step, task_grad_norm, kss_grad_norm, ratio = ||g_KSS|| / ||g_task|| (before any
    bound) and scale (the bound's factor, 1 without one), from record['extras']['reg_grad']."""
    from .sweep import read_record
    out = []
    for _, r in _ok(rows).iterrows():
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
    ok = _ok(rows)
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
            'acc_pct': 100.0 * _mean(conv['val_acc']) if len(conv) else float('nan'),
            'n_applications': len(q),
            'ratio_median': float(q.median()) if len(q) else float('nan'),
            'ratio_p90': float(q.quantile(0.9)) if len(q) else float('nan'),
            'ratio_p99': float(q.quantile(0.99)) if len(q) else float('nan'),
            'ratio_max': float(q.max()) if len(q) else float('nan'),
            'share_ratio_gt_10': float((q > 10).mean()) if len(q) else float('nan'),
            'share_bound_scaled': float((sc < 1).mean()) if len(sc) else float('nan'),
        })
    return pd.DataFrame(out)


def run_kss_paths(profile: str, paths: Optional[Sequence[str]] = None, executor: str = 'local',
                  dask_address: Optional[str] = None, progress: bool = False,
                  **run_kwargs) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or reuse) the gradient-path ablation of `profile` into the shared recall cache and
    save its table as ``results/<profile>/tables/kss_paths.csv``; returns (rows, table)."""
    rows = run_labeled(kss_path_configs(profile, paths), profile, executor=executor,
                       dask_address=dask_address, progress=progress, **run_kwargs)
    return rows, save(kss_path_table(rows), profile, 'kss_paths')


# ----------------------------------------------------------------------------- claims

def save_claims(claims: Iterable[Any], profile: str, name: str) -> pd.DataFrame:
    """Write this notebook's claims to results/<profile>/claims/<name>.csv (notebook 12 gathers them)."""
    from .claims import claims_table
    df = claims_table(list(claims))
    d = results_dir(profile) / 'claims'
    d.mkdir(parents=True, exist_ok=True)
    df.assign(source=name).to_csv(d / f'{name}.csv', index=False)
    return df


def collect_claims(profile: str) -> pd.DataFrame:
    d = results_dir(profile) / 'claims'
    parts = [pd.read_csv(p) for p in sorted(d.glob('*.csv'))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def save(df: pd.DataFrame, profile: str, name: str) -> pd.DataFrame:
    """write_table into results/<profile>/tables and return df (for a notebook's last line)."""
    write_table(df, results_dir(profile) / 'tables', name)
    return df


def maxlr_configs(profile: str) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of Table 5: each of the plan's norms x (without, with KSS α=0.15) x the
    normalization-sweep LRs and the plan's `maxlr_extra_lrs` (a finer grid); No-Norm also gets
    the LR band, where the method rows already ran."""
    p = plan(profile)
    lrs = sorted(set(p['norm_lrs']) | set(p.get('maxlr_extra_lrs', ())))
    out = []
    for norm in p['maxlr_norms']:
        for kss in (False, True):
            m = 'KSS α=0.15' if kss else REFERENCE
            for lab, c in norm_configs(profile, [norm], lrs=lrs, trials=p.get('maxlr_trials')):
                c = apply_method(c, m, validate=False) if kss else c
                out.append(({'norm': norm, 'method': m, 'kss': kss}, c))
            if norm == 'none':
                out += [({'norm': 'none', 'kss': kss, **lab}, c) for lab, c in method_configs(profile, [m])]
    return unique_runs(out)


def all_recall_configs(profile: str) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Every recall run of notebooks 01-07, the KSS gradient-path ablation included (to prefetch the
    cache in one sweep; a run listed twice is trained once, by its config hash)."""
    methods = list(dict.fromkeys(m for t in ('table3', 'table4', 'table6', 'table13', 'table14', 'alpha_sweep')
                                 for m in table_methods(t)))
    return (recall_pool(profile) + method_configs(profile, methods) + maxlr_configs(profile)
            + kss_path_configs(profile))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """python -m rksp.experiments PROFILE [--executor local|dask|serial] [--dask-address A] [--kss-paths]:
    train every recall run of notebooks 01-07 into the shared cache (resumable); with
    --kss-paths, the KSS gradient-path ablation instead (table kss_paths)."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument('profile', choices=PROFILES)
    ap.add_argument('--executor', default='local', choices=('local', 'dask', 'serial'))
    ap.add_argument('--dask-address', default=None)
    ap.add_argument('--kss-paths', action='store_true',
                    help='instead: the KSS gradient-path ablation (issue 13) and its table kss_paths')
    a = ap.parse_args(argv)
    if a.kss_paths:
        _, table = run_kss_paths(a.profile, executor=a.executor, dask_address=a.dask_address, progress=True)
        with pd.option_context('display.width', 200, 'display.max_columns', None):
            print(table.to_string(index=False))
        return 0
    prefetch(a.profile, executor=a.executor, dask_address=a.dask_address)
    return 0


def prefetch(profile: str, executor: str = 'local', dask_address: Optional[str] = None) -> pd.DataFrame:
    """Train (or reuse) every recall run of the profile into the shared cache, with a progress bar:
    the `runs` stage of `make reproduce` and `python -m rksp.experiments PROFILE`."""
    df = run_labeled(all_recall_configs(profile), profile, executor=executor, dask_address=dask_address,
                     progress=True)
    print(f"  {df['hash'].nunique()} recall runs in {runs_dir(profile)} "
          f"({df.attrs.get('n_cached', 0)} were cached)", flush=True)
    return df


if __name__ == '__main__':
    raise SystemExit(main())
