"""Find and measure CPU-cheap configurations for the `small` profile (docs/small-regime.md).

Phases (docs/small-regime.md has the answers and the numbers):
  scan          No-Norm GPT on associative recall (seq 64, vocab 256, 4 pairs): divergence rate and
                div_step by size (d, L), warmup/schedule and LR (3e-3 .. 2e-2), 3 seeds, 200 steps.
  methods       in the chosen REGIME, LR band {0.005, 0.007, 0.01} x 4 seeds: No control vs
                KSS α=0.15 vs Grad clip 1.0, Fisher's exact p, and where KSS runs diverge.
  kss_variants  KSS every=5 and KSS α=0.05 in the same cells.
  extend        No control and Grad clip 1.0 at 24 trials (3 LRs x 8 seeds).
  b16, d32      cheaper variants (batch 16; d=32) and whether the regime survives them.
  norms         Table 1: six normalizations x LR {1e-3, 3e-3, 1e-2} x 2 seeds: divergence,
                M≈1 at init (prof_score), val acc.
  cost          per-run CPU seconds (1 thread, in-process) of each candidate (cached in cost.csv).

    python benchmarks/explore_regime.py --out /tmp/regime [--phases scan methods norms cost]

Each phase is a `rksp.harness.sweep.run` (executor 'local', 2 workers, 1 torch thread each) whose
records are cached as JSON under --out/runs (one file per config hash, shared by the phases);
re-running prints the tables from the cache.
Wall times are rough: the machine may be shared.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import fisher_exact  # noqa: E402

from rksp.methods.rows import apply_method  # noqa: E402
from rksp.harness.sweep import run  # noqa: E402
from rksp.harness.config import TrainConfig  # noqa: E402


def chash(cfg) -> str:
    return TrainConfig.from_dict(copy.deepcopy(cfg)).hash()

pd.set_option('display.width', 200)
pd.set_option('display.max_columns', 30)
pd.set_option('display.max_rows', 400)

# common to every run: the paper's recall task (seq 64, vocab 256, 4 pairs are the task defaults)
COMMON = dict(task='recall', n_train=8192, n_val=512, batch_size=32, eval_every=0)


def base(d=64, L=4, steps=200, warmup=20, schedule='cosine', norm='none', lr=5e-3, seed=0, batch_size=32, **kw):
    cfg = dict(COMMON, batch_size=batch_size, model_cfg={'norm': norm, 'd_model': d, 'n_layer': L, 'n_head': 4},
               steps=steps, warmup_steps=warmup, schedule=schedule, lr=lr, seed=seed)
    cfg.update(kw)
    return cfg


def sweep(out: Path, name: str, cfgs, workers: int = 2) -> pd.DataFrame:
    # one cache for every phase: a config shared by two phases runs once
    df = run(cfgs, out / 'runs', executor='local', n_workers=workers, progress=False, verbose=False)
    if df.attrs.get('n_failed'):
        print(df.loc[df.status != 'ok', ['hash', 'error']].to_string())
    print(f"[{name}] {len(df)} runs ({df.attrs.get('n_cached', 0)} cached, {df.attrs.get('n_run', 0)} run now)",
          flush=True)
    return df


def _q(x, q):
    x = x.dropna()
    return float(np.quantile(x, q)) if len(x) else float('nan')


def summarize(df: pd.DataFrame, by) -> pd.DataFrame:
    g = df.groupby(by, dropna=False)
    s = g.agg(n=('diverged', 'size'), div=('diverged', 'sum'), score=('prof_score', 'mean'),
              acc=('val_acc', 'mean'), wall=('wall_time', 'mean'))
    s['div%'] = 100 * s['div'] / s['n']
    s['div_step_min'] = g['div_step'].min()
    s['div_step_med'] = g['div_step'].median()
    s['div_step_max'] = g['div_step'].max()
    # accuracy of the runs that did not diverge
    s['acc_conv'] = df[~df.diverged.astype(bool)].groupby(by, dropna=False)['val_acc'].mean()
    s['acc_conv_max'] = df[~df.diverged.astype(bool)].groupby(by, dropna=False)['val_acc'].max()
    return s


def _norm_of(df):
    return df['config.model_cfg.norm'] if 'config.model_cfg.norm' in df else df['norm']


def add_cols(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for k in ('d_model', 'n_layer', 'norm'):
        if k not in df:
            df[k] = np.nan
    df['diverged'] = df['diverged'].astype(bool)
    return df


# ----------------------------------------------------------------------------- phases

SCAN_SEEDS = [0, 1, 2]


def phase_scan(out: Path) -> pd.DataFrame:
    """No-Norm divergence by size x length x warmup/schedule x LR (3 seeds)."""
    cfgs = []
    for d, L in [(32, 2), (64, 2), (64, 4)]:
        for steps, warmup, sched in [(200, 10, 'cosine'), (200, 50, 'cosine'), (200, 20, 'constant')]:
            for lr in [3e-3, 5e-3, 1e-2, 2e-2]:
                for s in SCAN_SEEDS:
                    cfgs.append(base(d=d, L=L, steps=steps, warmup=warmup, schedule=sched, lr=lr, seed=s))
    df = add_cols(sweep(out, 'scan', cfgs))
    s = summarize(df, ['d_model', 'n_layer', 'steps', 'warmup_steps', 'schedule', 'lr'])
    print(s[['n', 'div%', 'div_step_min', 'div_step_med', 'div_step_max', 'score', 'acc_conv_max', 'wall']]
          .round(3).to_string())
    return df


# the regime chosen from the scan (docs/small-regime.md): d=64, L=2, 200 steps, 20 warmup steps
# then a constant LR; the paper's "challenging" band LR 0.005-0.01 as three grid points
REGIME = dict(d=64, L=2, steps=200, warmup=20, schedule='constant')
BAND = [5e-3, 7e-3, 1e-2]
METHOD_SEEDS = list(range(4))


def fisher_vs(df: pd.DataFrame, ref: str, col: str = 'method') -> pd.DataFrame:
    rows = []
    r = df[df[col] == ref]
    k0, n0 = int(r.diverged.sum()), len(r)
    for m, g in df.groupby(col, sort=False):
        k, n = int(g.diverged.sum()), len(g)
        p = fisher_exact([[k, n - k], [k0, n0 - k0]])[1] if m != ref else float('nan')
        rows.append({col: m, 'n': n, 'div': k, 'div%': 100 * k / n, f'fisher_p_vs_{ref}': p,
                     'div_steps': sorted(int(x) for x in g.div_step.dropna()),
                     'score': g.prof_score.mean(), 'acc': g.val_acc.mean(),
                     'acc_conv': g.loc[~g.diverged, 'val_acc'].mean(), 'wall': g.wall_time.mean()})
    return pd.DataFrame(rows)


def method_cfg(b: dict, m: str) -> dict:
    """A METHODS row, or a variant 'KSS α=A every=E' (KSS hook with other kwargs)."""
    if m == 'No control':
        return b
    if m.startswith('KSS') and ' every=' in m:
        row, every = m.split(' every=')
        c = apply_method(b, row)
        c['hooks'][-1]['kwargs']['every'] = int(every)
        return c
    return apply_method(b, m)


def method_runs(methods, lrs=BAND, seeds=METHOD_SEEDS, **regime):
    reg = {**REGIME, **regime}
    cfgs, labels = [], []
    for m in methods:
        for lr in lrs:
            for s in seeds:
                cfgs.append(method_cfg(base(lr=lr, seed=s, **reg), m))
                labels.append(m)
    return cfgs, labels


def kss_diag(df: pd.DataFrame) -> pd.DataFrame:
    """For the KSS rows: is the divergence step a KSS application step, and by which criterion?"""
    rows = []
    for m, g in df[df.method.str.startswith('KSS')].groupby('method', sort=False):
        every = 5 if 'every=5' in m else 10
        dv = g[g.diverged]
        # per run: the largest grad norm on KSS steps and on the other steps (all steps logged)
        on, off, xl = [], [], []
        for path in g.path:
            with open(path) as f:
                cv = json.load(f)['curves']
            st, gn = np.asarray(cv['step']), np.asarray(cv['grad_norm'], float)
            k = st % every == 0
            on.append(np.nanmax(gn[k]) if k.any() else np.nan)
            off.append(np.nanmax(gn[~k]))
            if 'extra_loss' in cv:
                xl.append(np.nanmax(np.asarray(cv['extra_loss'], float)))
        rows.append({'method': m, 'n_div': len(dv),
                     'div_on_kss_step': int((dv.div_step % every == 0).sum()),
                     'div_reasons': dv.div_reason.value_counts().to_dict(),
                     'max_gn_kss_steps_median': float(np.median(on)),
                     'max_gn_other_steps_median': float(np.median(off)),
                     'max_kss_loss_median': float(np.median(xl)) if xl else np.nan})
    return pd.DataFrame(rows)


def phase_methods(out: Path, methods=('No control', 'KSS α=0.15', 'Grad clip 1.0'), seeds=METHOD_SEEDS,
                  name='methods', **regime) -> pd.DataFrame:
    """No-Norm, LR band 0.005-0.01: No control vs KSS α=0.15 vs Grad clip 1.0 (Fisher vs No control)."""
    cfgs, labels = method_runs(methods, seeds=seeds, **regime)
    df = add_cols(sweep(out, name, cfgs))
    df['method'] = df['hash'].map(dict(zip(map(chash, cfgs), labels)))
    t = fisher_vs(df, 'No control')
    print(t.round(4).to_string(index=False))
    print(df.groupby(['method', 'lr'], sort=False).diverged.agg(['size', 'sum']).to_string())
    if df.method.str.startswith('KSS').any():
        print(kss_diag(df).to_string(index=False))
    return df


def phase_kss_variants(out: Path) -> pd.DataFrame:
    """KSS variants in the same regime: every=5 (α=0.15) and a smaller α=0.05."""
    return phase_methods(out, methods=('No control', 'KSS α=0.15', 'KSS α=0.15 every=5', 'KSS α=0.05'),
                         name='kss_variants')


def phase_extend(out: Path) -> pd.DataFrame:
    """No control and Grad clip 1.0 at the paper's 24 trials (3 LRs x 8 seeds) in the same regime."""
    return phase_methods(out, methods=('No control', 'Grad clip 1.0'), seeds=list(range(8)), name='extend')


def phase_b16(out: Path) -> pd.DataFrame:
    """The cheaper variant: the same regime at batch 16 (half the compute per step), No control."""
    phase_methods(out, methods=('No control',), seeds=METHOD_SEEDS, name='b16', batch_size=16)
    # ... and at twice the band (LR 0.01-0.02), to see whether batch 16 only shifts the band
    cfgs, labels = method_runs(('No control',), lrs=[1e-2, 1.4e-2, 2e-2], batch_size=16)
    df = add_cols(sweep(out, 'b16_highlr', cfgs))
    df['method'] = 'No control b16'
    print(fisher_vs(df, 'No control b16').round(4).to_string(index=False))
    print(df.groupby('lr').diverged.agg(['size', 'sum']).to_string())
    return df


def phase_d32(out: Path) -> pd.DataFrame:
    """The cheaper variant: d=32 (half the CPU per step) at a doubled band LR 0.01-0.02, No control."""
    cfgs, labels = method_runs(('No control',), lrs=[1e-2, 1.4e-2, 2e-2], d=32)
    df = add_cols(sweep(out, 'd32', cfgs))
    df['method'] = 'No control d32'
    print(fisher_vs(df, 'No control d32').round(4).to_string(index=False))
    print(df.groupby('lr').diverged.agg(['size', 'sum']).to_string())
    return df


NORMS = ['pre_ln', 'post_ln', 'rmsnorm', 'deepnorm', 'subln', 'none']
NORM_LRS = [1e-3, 3e-3, 1e-2]
NORM_SEEDS = [0, 1]


def phase_norms(out: Path) -> pd.DataFrame:
    """Table 1: six normalizations x LR {1e-3, 3e-3, 1e-2} x 2 seeds in the chosen regime."""
    cfgs = [base(norm=n, lr=lr, seed=s, **REGIME) for n in NORMS for lr in NORM_LRS for s in NORM_SEEDS]
    df = add_cols(sweep(out, 'norms', cfgs))
    s = summarize(df, ['norm', 'lr'])
    print(s[['n', 'div%', 'div_step_min', 'score', 'acc', 'acc_conv_max', 'wall']].round(4).to_string())
    t = summarize(df, ['norm']).reindex(NORMS)
    t['score_sd'] = df.groupby('norm').prof_score.std()
    for k in ('prof_m_expansive_mean', 'prof_rho_mean'):
        if k in df:
            t[k] = df.groupby('norm')[k].mean()
    print(t.drop(columns=['div']).round(4).to_string())
    return df


def _cpu_run(cfg: dict) -> dict:
    """One run in this process, 1 torch thread: CPU seconds (process_time) and wall seconds."""
    import time
    import torch
    from rksp.harness.loop import train
    torch.set_num_threads(1)
    c0, w0 = time.process_time(), time.perf_counter()
    r = train(copy.deepcopy(cfg))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {'cpu_s': cpu, 'wall_s': wall, 'steps_done': r['steps_done'], 'diverged': r['diverged'],
            'profile_s': r['profile_time'], 'eval_s': r['eval_time'],
            'cpu_ms_per_step': 1000 * (cpu - r['profile_time'] - r['eval_time']) / max(1, r['steps_done']),
            'n_params': r['n_params']}


def cost_candidates():
    """(label, config): every candidate of docs/small-regime.md, at a stable LR (no early stop)."""
    reg = dict(REGIME)
    c = [
        ('recall GPT none d64 L2, 200 st', base(lr=1e-3, **reg)),
        ('recall GPT none d64 L2 + KSS α=0.15', apply_method(base(lr=1e-3, **reg), 'KSS α=0.15')),
        ('recall GPT none d64 L2 + SAM ρ=0.05', apply_method(base(lr=1e-3, **reg), 'SAM ρ=0.05')),
        ('recall GPT pre_ln d64 L2, 200 st', base(norm='pre_ln', lr=1e-3, **reg)),
        ('recall GPT none d32 L2, 200 st', base(d=32, L=2, lr=1e-3, steps=200, warmup=20, schedule='constant')),
        ('recall GPT none d64 L4, 100 st', base(d=64, L=4, lr=1e-3, steps=100, warmup=20, schedule='constant')),
        ('synthetic LM GPT pre_ln d64 L2, seq 128, V 10k, b16, 50 st',
         dict(task='synthetic_lm', seq_len=128, n_train=2048, n_val=128, batch_size=16, steps=50, warmup_steps=10,
              lr=1e-3, model_cfg={'norm': 'pre_ln', 'd_model': 64, 'n_layer': 2, 'n_head': 4})),
        ('ViT pre_ln d64 L2 on the image loader, b32, 50 st',
         dict(task='cifar10', model='vit', n_train=2048, n_val=256, batch_size=32, steps=50, warmup_steps=10,
              lr=1e-3, model_cfg={'norm': 'pre_ln', 'd_model': 64, 'n_layer': 2, 'n_head': 4})),
    ]
    return c


def phase_cost(out: Path) -> pd.DataFrame:
    """Per-run CPU cost (1 thread, in-process, process_time) of each candidate; cached in cost.csv."""
    path = out / 'cost.csv'
    if path.exists():
        df = pd.read_csv(path)
    else:
        rows = []
        for label, cfg in cost_candidates():
            try:
                rows.append({'candidate': label, **_cpu_run(cfg)})
            except Exception as e:  # noqa: BLE001 - a missing dataset must not stop the others
                rows.append({'candidate': label, 'error': f'{type(e).__name__}: {e}'})
            print(rows[-1], flush=True)
        df = pd.DataFrame(rows)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
    print(df.round(3).to_string(index=False))
    return df


PHASES = {'scan': phase_scan, 'methods': phase_methods, 'kss_variants': phase_kss_variants, 'extend': phase_extend, 'b16': phase_b16, 'd32': phase_d32, 'norms': phase_norms, 'cost': phase_cost}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='/tmp/regime')
    p.add_argument('--phases', nargs='*', default=list(PHASES))
    a = p.parse_args(argv)
    out = Path(a.out)
    for ph in a.phases:
        print(f'=== {ph}: {PHASES[ph].__doc__}', flush=True)
        PHASES[ph](out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
