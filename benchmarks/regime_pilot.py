"""No-control pilots of the `small` regime choice (docs/regime.md, issue 14). No KSS run.

    python benchmarks/regime_pilot.py --out /tmp/regime14 --stage 1 [2 confirm norms]

Each stage is one `rksp.harness.sweep.run` (2 local workers, 1 torch thread each), cached as one JSON per
config hash under --out/runs; re-running prints the tables from the cache.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from rksp.harness.sweep import run  # noqa: E402

pd.set_option('display.width', 220)
pd.set_option('display.max_columns', 30)

BAND = (0.005, 0.007, 0.01)
PILOT_SEEDS = (1, 2)
CONFIRM_SEEDS = (3, 4)
CANDIDATES = {   # id: (L, warmup, schedule, steps); all normal init sigma 0.04, d 64, batch 32
    'C1': (4, 100, 'constant', 300), 'C2': (4, 200, 'cosine', 300),
    'C3': (6, 100, 'constant', 300), 'C4': (6, 200, 'cosine', 300),
    'C5': (4, 300, 'cosine', 400), 'C6': (4, 50, 'constant', 200),
}
STAGES = {'1': ('C1', 'C2', 'C3', 'C4'), '2': ('C5', 'C6')}


def cfg(cid, lr, seed, norm='none'):
    L, warm, sched, steps = CANDIDATES[cid]
    return dict(task='recall', model='gpt', n_train=8192, n_val=512, batch_size=32, eval_every=0,
                model_cfg=dict(norm=norm, d_model=64, n_layer=L, n_head=4, init='normal', init_std=0.04),
                steps=steps, warmup_steps=warm, schedule=sched, lr=lr, seed=seed, profile_n_snapshots=2048)


def sweep(out, labeled):
    df = run([c for _, c in labeled], out / 'runs', executor='local', n_workers=2, progress=False, verbose=False)
    from rksp.harness.config import TrainConfig
    lab = pd.DataFrame([{**l, 'hash': TrainConfig.from_dict(c).hash()} for l, c in labeled])
    df = lab.merge(df.drop(columns=[k for k in ('norm', 'lr', 'seed') if k in df]), on='hash', how='left')
    df['ms_per_step'] = 1000.0 / df['steps_per_sec']
    return df


def summary(df, by):
    g = df.groupby(by, sort=False)
    s = g.agg(n=('diverged', 'size'), n_div=('diverged', 'sum'), ms_step=('ms_per_step', 'median'),
              wall=('wall_time', 'mean'), m_init=('prof_score', 'mean'))
    s['div_steps'] = g['div_step'].apply(lambda x: sorted(int(v) for v in x.dropna()))
    conv = df[~df['diverged'].astype(bool)]
    s['n_conv'] = conv.groupby(by, sort=False).size()
    s['acc_conv_pct'] = 100 * conv.groupby(by, sort=False)['val_acc'].mean()
    s['acc_conv_max_pct'] = 100 * conv.groupby(by, sort=False)['val_acc'].max()
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default='/tmp/regime14')
    ap.add_argument('--stage', nargs='+', default=['1'])
    ap.add_argument('--confirm', default=None, help='candidate id to confirm on seeds 3, 4')
    a = ap.parse_args()
    out = Path(a.out)
    for st in a.stage:
        if st in STAGES:
            labeled = [({'cand': c, 'lr': lr, 'seed': s}, cfg(c, lr, s)) for c in STAGES[st] for lr in BAND
                       for s in PILOT_SEEDS]
            df = sweep(out, labeled)
            print(f'== stage {st}: No-Norm No control, band x seeds {PILOT_SEEDS}')
            print(summary(df, ['cand']).round(2).to_string())
            print(df[['cand', 'lr', 'seed', 'diverged', 'div_step', 'div_reason', 'val_acc', 'ms_per_step']]
                  .to_string())
        elif st == 'confirm':
            c = a.confirm
            labeled = [({'cand': c, 'lr': lr, 'seed': s}, cfg(c, lr, s)) for lr in BAND
                       for s in PILOT_SEEDS + CONFIRM_SEEDS]
            df = sweep(out, labeled)
            print(f'== confirm {c}: seeds {PILOT_SEEDS + CONFIRM_SEEDS}')
            print(summary(df, ['cand']).round(2).to_string())
            print(df[['lr', 'seed', 'diverged', 'div_step', 'val_acc']].to_string())
        elif st == 'norms':
            c = a.confirm
            labeled = [({'cand': c, 'norm': n, 'lr': lr, 'seed': 1}, cfg(c, lr, 1, n))
                       for n in ('pre_ln', 'post_ln', 'rmsnorm', 'deepnorm', 'subln', 'none') for lr in (1e-3, 7e-3)]
            df = sweep(out, labeled)
            print(f'== norms {c}: seed 1')
            print(df[['norm', 'lr', 'diverged', 'div_step', 'val_acc', 'prof_score', 'ms_per_step']].to_string())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
