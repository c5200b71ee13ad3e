"""CPU kernel sets and what they change: the same runs trained under two ATen kernel sets.

PyTorch picks its CPU kernels by instruction set (``ATEN_CPU_CAPABILITY=default|avx2|avx512``
forces one on a machine that supports it). Different kernels sum in different orders, so float
results differ in the last bits; a forward pass at init agrees to ~1e-7 relative, but training near
the divergence threshold is chaotic and those bits can decide whether a run crosses loss 50 or grad
norm 500. This module trains one list of configs in a subprocess per kernel set and compares them:

    rksp kernels small --n 48 --sets default avx2 --out results/tmp/kernels

writes one record per run and kernel set (``<out>/<set>/<hash>.json``, resumable) and the table of
label flips ``<out>/label_flips.csv`` (one row per run) and ``<out>/summary.csv``.
``tests/test_kernel_sets.py`` runs a two-run version of it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

CAPABILITY_ENV = 'ATEN_CPU_CAPABILITY'
_ORDER = ('default', 'avx2', 'avx512')


def cpu_capability() -> str:
    """The kernel set this process runs (``default``, ``AVX2``/``avx2`` ... as torch reports it)."""
    import torch
    return str(torch.backends.cpu.get_cpu_capability()).lower()


def native_capability() -> str:
    """The CPU's own best kernel set, whatever ``ATEN_CPU_CAPABILITY`` forces in this process."""
    if CAPABILITY_ENV not in os.environ:
        return cpu_capability()
    env = {k: v for k, v in os.environ.items() if k != CAPABILITY_ENV}
    r = subprocess.run([sys.executable, '-c', 'from rksp.experiments.kernels import cpu_capability; print(cpu_capability())'],
                       env=env, capture_output=True, text=True, timeout=300)
    return r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else cpu_capability()


def available_sets() -> List[str]:
    """Kernel sets this machine can run: every set up to the native one (``default`` always)."""
    native = native_capability()
    out = []
    for s in _ORDER:
        out.append(s)
        if s == native:
            break
    return out if native in _ORDER else ['default']


def _child(configs_json: str, out_dir: str, workers: int) -> None:
    """Subprocess body: train the configs into ``out_dir`` under this process's kernel set."""
    from rksp.harness.sweep import run
    cfgs = json.loads(Path(configs_json).read_text())
    df = run(cfgs, out_dir, executor='local' if workers > 1 else 'serial', n_workers=workers,
             threads_per_run=1, progress=False, verbose=False)
    Path(out_dir, '_capability.txt').write_text(cpu_capability())
    print(f'{len(df)} runs under {cpu_capability()}')


def train_under(capability: str, configs: Sequence[Dict[str, Any]], out_dir: Path, *, workers: int = 1,
                timeout: Optional[float] = None) -> pd.DataFrame:
    """Train ``configs`` in a fresh Python process with ``ATEN_CPU_CAPABILITY=capability`` and one
    thread per run (so the kernel set is the only difference); return the sweep's rows.

    Raises RuntimeError when the subprocess did not actually run that kernel set (torch falls back
    silently to a lower set the CPU lacks)."""
    from rksp.harness.record import load_records
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = out_dir / '.configs.json'
    cfg_file.write_text(json.dumps(list(configs)))
    env = dict(os.environ, **{CAPABILITY_ENV: capability, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'})
    code = f'from rksp.experiments.kernels import _child; _child({str(cfg_file)!r}, {str(out_dir)!r}, {int(workers)})'
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f'training under {capability} failed:\n{r.stderr[-3000:]}')
    got = (out_dir / '_capability.txt').read_text().strip()
    if got != capability.lower():
        raise RuntimeError(f'asked for kernel set {capability!r}, the subprocess ran {got!r}')
    return load_records(out_dir)


def label_flips(a: pd.DataFrame, b: pd.DataFrame, labels: Sequence[str] = ('A', 'B')) -> pd.DataFrame:
    """One row per run hash present in both sweeps: both divergence labels (task and total gradient)
    and divergence steps under each kernel set, whether each label flipped, the final loss, and
    ``init_max_rel_diff``: the largest |a - b| / max(1, |a|) over the init profile's summary numbers."""
    la, lb = labels
    keep = ['hash', 'diverged', 'div_step', 'diverged_total_grad', 'div_step_total_grad', 'final_train_loss']
    prof = [c for c in a.columns if c.startswith('prof_') and c in b.columns
            and pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])]
    m = a[keep + prof].merge(b[keep + prof], on='hash', suffixes=(f'_{la}', f'_{lb}'))
    m['flip_task'] = m[f'diverged_{la}'].astype(bool) != m[f'diverged_{lb}'].astype(bool)
    m['flip_total_grad'] = m[f'diverged_total_grad_{la}'].astype(bool) != m[f'diverged_total_grad_{lb}'].astype(bool)
    if prof:
        A = m[[f'{c}_{la}' for c in prof]].to_numpy(float)
        B = m[[f'{c}_{lb}' for c in prof]].to_numpy(float)
        rel = np.abs(A - B) / np.maximum(1.0, np.abs(A))
        rel[np.isnan(A) & np.isnan(B)] = 0.0
        m['init_max_rel_diff'] = np.nanmax(np.where(np.isnan(rel), np.inf, rel), axis=1)
        m = m.drop(columns=[f'{c}_{x}' for c in prof for x in labels])
    return m


def init_profile_diffs(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Largest relative difference |a - b| / max(1, |a|) over runs, per init-profile summary column
    (``prof_*``), between two sweeps of the same configs."""
    m = a.merge(b, on='hash', suffixes=('_a', '_b'))
    out = {}
    for c in a.columns:
        if c.startswith('prof_') and c in b.columns and pd.api.types.is_numeric_dtype(a[c]):
            x, y = m[f'{c}_a'].to_numpy(float), m[f'{c}_b'].to_numpy(float)
            both_nan = np.isnan(x) & np.isnan(y)
            r = np.where(both_nan, 0.0, np.abs(x - y) / np.maximum(1.0, np.abs(x)))
            out[c[len('prof_'):]] = float(np.nan_to_num(r, nan=np.inf).max()) if len(r) else 0.0
    return pd.Series(out, name='max_rel_diff')


def flip_summary(flips: pd.DataFrame, group: Optional[str] = None) -> pd.DataFrame:
    """Counts of flipped labels (task / total-gradient) with exact 95% Clopper-Pearson upper bounds."""
    from scipy.stats import beta

    def row(df):
        n = len(df)
        out = {'n_runs': n}
        for lab in ('task', 'total_grad'):
            k = int(df[f'flip_{lab}'].sum())
            out[f'flips_{lab}'] = k
            out[f'flip_rate_{lab}'] = k / n if n else np.nan
            out[f'flip_rate_{lab}_hi95'] = float(beta.ppf(0.975, k + 1, n - k)) if n and k < n else 1.0
        if 'init_max_rel_diff' in df:
            out['init_max_rel_diff'] = float(df['init_max_rel_diff'].max())
        return out
    if group is None:
        return pd.DataFrame([row(flips)])
    return pd.DataFrame([{group: g, **row(d)} for g, d in flips.groupby(group, sort=False)])


def sample_recall_runs(profile: str, n: int, seed: int = 0) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``n`` recall runs of ``profile`` (notebooks 01-07) with distinct config hashes, drawn at random
    with ``seed``, every headline row (No control, Grad clip 1.0, KSS α=0.15) given at least n/6."""
    from rksp.experiments.plans import MAIN_METHODS, all_recall_configs, unique_runs
    from rksp.methods.rows import display
    from rksp.harness.config import TrainConfig
    pool = unique_runs(all_recall_configs(profile))
    hashes = [TrainConfig.from_dict(dict(c)).hash() for _, c in pool]
    rng = random.Random(seed)
    per = max(1, n // 6)
    picked, seen = [], set()

    def take(idx):
        for i in idx:
            if len(picked) < n and hashes[i] not in seen:
                picked.append(pool[i])
                seen.add(hashes[i])
    for m in MAIN_METHODS:
        cand = [i for i, x in enumerate(pool) if x[0].get('method') == display(m)]
        take(rng.sample(cand, min(per, len(cand))))
    rest = list(range(len(pool)))
    rng.shuffle(rest)
    take(rest)
    return picked


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog='rksp kernels', description=__doc__.split('\n\n')[0])
    ap.add_argument('profile', choices=('smoke', 'small', 'paper'))
    ap.add_argument('--n', type=int, default=48, help='runs in the sample (default 48)')
    ap.add_argument('--sets', nargs=2, default=None, help='two kernel sets (default: default and native)')
    ap.add_argument('--seed', type=int, default=0, help='sampling seed')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--out', default='results/tmp/kernels', help='records and CSVs (default results/tmp/kernels, git-ignored)')
    a = ap.parse_args(argv)
    sets = a.sets or [available_sets()[0], available_sets()[-1]]
    if sets[0] == sets[1]:
        raise SystemExit(f'only one kernel set on this machine ({sets[0]}): nothing to compare')
    labeled = sample_recall_runs(a.profile, a.n, a.seed)
    from rksp.harness.config import TrainConfig
    cfgs = [c for _, c in labeled]
    out = Path(a.out)
    rows = {s: train_under(s, cfgs, out / s, workers=a.workers) for s in sets}
    flips = label_flips(rows[sets[0]], rows[sets[1]], labels=sets)
    lab = pd.DataFrame([{**l, 'hash': TrainConfig.from_dict(dict(c)).hash()} for l, c in labeled])
    lab['row'] = lab.get('method', pd.Series(index=lab.index, dtype=object)).fillna(
        lab.get('norm', pd.Series(index=lab.index, dtype=object)).map(lambda v: f'norm={v}'))
    flips = lab[['hash', 'row']].drop_duplicates('hash').merge(flips, on='hash')
    flips.to_csv(out / 'label_flips.csv', index=False)
    summ = pd.concat([flip_summary(flips).assign(row='all'), flip_summary(flips, 'row')], ignore_index=True)
    summ.insert(0, 'sets', f'{sets[0]} vs {sets[1]}')
    summ.to_csv(out / 'summary.csv', index=False)
    print(summ.to_string(index=False))
    return 0
