"""Running plans into the run cache and saving tables and claims (`results/<profile>/`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from rksp.experiments.plans import (MAIN_METHODS, all_recall_configs, kss_path_configs, lm_configs, lm_plan,
                                   maxlr_configs, method_configs, plan, recall_pool)
from rksp.experiments.results_io import PROFILES, results_dir, write_table
from rksp.experiments.tables.kss_paths import kss_path_table
from rksp.harness.config import TrainConfig
from rksp.harness.loop import train
from rksp.harness.tracking import TrackHooks
from rksp.methods.rows import canonical_method


def runs_dir(profile: str, name: str = 'recall') -> Path:
    return results_dir(profile) / 'runs' / name


def run_labeled(labeled: Sequence[Tuple[Dict[str, Any], Dict[str, Any]]], profile: str, name: str = 'recall',
                executor: str = 'local', dask_address: Optional[str] = None, progress: bool = False,
                **run_kwargs) -> pd.DataFrame:
    """Run (or reuse from the cache) every config; one row per (labels, config), labels as columns."""
    from rksp.harness.sweep import run
    cfgs = [c for _, c in labeled]
    df = run(cfgs, runs_dir(profile, name), executor=executor, dask_address=dask_address, progress=progress,
             **run_kwargs)
    hashes = [TrainConfig.from_dict(copy.deepcopy(c)).hash() for c in cfgs]
    lab = pd.DataFrame([{**l, 'hash': h} for (l, _), h in zip(labeled, hashes)])
    drop = [c for c in lab.columns if c != 'hash' and c in df.columns]
    out = lab.merge(df.drop(columns=drop), on='hash', how='left')
    out.attrs.update(df.attrs)
    return out


def run_kss_paths(profile: str, paths: Optional[Sequence[str]] = None, executor: str = 'local',
                  dask_address: Optional[str] = None, progress: bool = False,
                  **run_kwargs) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or reuse) the gradient-path ablation of `profile` into the shared recall cache and
    save its table as ``results/<profile>/tables/kss_paths.csv``; returns (rows, table)."""
    rows = run_labeled(kss_path_configs(profile, paths), profile, executor=executor,
                       dask_address=dask_address, progress=progress, **run_kwargs)
    return rows, save(kss_path_table(rows), profile, 'kss_paths')


def bracket_runs(make: Callable[[Dict[tuple, list]], Sequence[Tuple[Dict[str, Any], Dict[str, Any]]]],
                 arms: Sequence[str], profile: str, name: str = 'recall', refine: bool = True,
                 executor: str = 'local', dask_address: Optional[str] = None, progress: bool = False,
                 max_rounds: int = 12, **run_kwargs) -> pd.DataFrame:
    """Runs of a max-stable-LR grid, refined by the bracket rule of docs/regime.md Part 5
    (`stability.next_bracket_lr`): `make(extra)` lists the [(labels, config)] of the grid plus the
    added LRs `extra` {arm key: [LR, ...]} (arm key: the values of the label columns `arms`); train
    them, ask the rule for each arm's next LR, repeat until no arm needs one. Deterministic given
    the runs, so a rebuild from committed records finds the same grid without training."""
    from rksp.experiments.stability import max_lr_summary, next_bracket_lr
    from rksp.experiments.tables.common import dedupe_runs, ok_runs
    extra: Dict[tuple, list] = {}
    for rnd in range(max_rounds + 1):
        rows = run_labeled(make(extra), profile, name=name, executor=executor, dask_address=dask_address,
                           progress=progress, **run_kwargs)
        if not refine:
            return rows
        ok = dedupe_runs(ok_runs(rows), list(arms))
        added = []
        for key, arm in ok.groupby(list(arms), sort=False):
            key = tuple(bool(k) if isinstance(k, (bool, np.bool_)) else k for k in (key if isinstance(key, tuple) else (key,)))
            lr = next_bracket_lr(max_lr_summary(arm))
            if lr is not None:
                extra.setdefault(key, []).append(lr)
                added.append(f"{' / '.join(map(str, key))}: {lr:g}")
        rows.attrs['bracket_extra_lrs'] = {' | '.join(map(str, k)): v for k, v in extra.items()}
        if not added:
            return rows
        if progress:
            print(f"  bracket round {rnd + 1}: adding " + ', '.join(added), flush=True)
    raise RuntimeError(f"the bracket rule did not settle in {max_rounds} rounds (added: {extra})")


def maxlr_runs(profile: str, executor: str = 'local', dask_address: Optional[str] = None,
               progress: bool = False, **run_kwargs) -> pd.DataFrame:
    """Table 5's runs (notebook 07): `maxlr_configs`, refined arm by arm (norm x with / without KSS)
    by `bracket_runs` where the plan sets `maxlr_refine`."""
    return bracket_runs(lambda extra: maxlr_configs(profile, extra), ['norm', 'kss'], profile,
                        refine=bool(plan(profile).get('maxlr_refine')), executor=executor,
                        dask_address=dask_address, progress=progress, **run_kwargs)


def lm_runs(profile: str, table: str, executor: str = 'local', dask_address: Optional[str] = None,
            progress: bool = False, **run_kwargs) -> pd.DataFrame:
    """The runs of Table 7 or 8 (notebook 08, cache `results/<profile>/runs/lm`): `lm_configs`, refined
    arm by arm (size x Baseline / KSS) by `bracket_runs` where the table's plan sets `bracket`
    (docs/lm-regime.md §3)."""
    return bracket_runs(lambda extra: lm_configs(profile, table, extra), ['size', 'method'], profile, name='lm',
                        refine=bool(lm_plan(profile)[table].get('bracket')), executor=executor,
                        dask_address=dask_address, progress=progress, **run_kwargs)


def save_claims(claims: Iterable[Any], profile: str, name: str) -> pd.DataFrame:
    """Write this notebook's claims to results/<profile>/claims/<name>.csv (notebook 12 gathers them)."""
    from rksp.experiments.claims import claims_table
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """rksp runs PROFILE [--executor local|dask|serial] [--dask-address A] [--kss-paths]:
    train every recall run of notebooks 01-07 and 13 (with Table 5's bracket rounds where the plan
    sets `maxlr_refine`) into the shared cache (resumable); with
    --kss-paths, the KSS gradient-path ablation instead (table kss_paths)."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument('profile', choices=PROFILES)
    ap.add_argument('--executor', default='local', choices=('local', 'dask', 'serial'))
    ap.add_argument('--dask-address', default=None)
    ap.add_argument('--kss-paths', action='store_true',
                    help='instead: the KSS gradient-path ablation (issue 13) and its table kss_paths')
    ap.add_argument('--rows', nargs='+', default=None, metavar='TABLE',
                    help="instead: only the method rows of these tables (rksp.methods.rows.TABLES keys, e.g. "
                         "'headline' for No control / Grad clip 1.0 / KSS α=0.15, 'dose_frequency', 'practice'), "
                         "in that order, packing the run records after each (results/<profile>/runs.tar.xz)")
    a = ap.parse_args(argv)
    if a.rows:
        from rksp.experiments.results_io import pack_records
        from rksp.methods.rows import TABLES
        bad = [t for t in a.rows if t != 'headline' and t not in TABLES]
        if bad:
            ap.error(f"unknown table(s) {bad} (valid: headline, {', '.join(TABLES)})")
        for t in a.rows:
            rows = list(MAIN_METHODS) if t == 'headline' else list(TABLES[t])
            df = run_labeled(method_configs(a.profile, rows), a.profile, executor=a.executor,
                             dask_address=a.dask_address, progress=True)
            path = pack_records(a.profile)
            print(f"  {t}: {df['hash'].nunique()} runs ({int(df['diverged'].fillna(False).astype(bool).sum())} "
                  f"diverged); records packed into {path}", flush=True)
        return 0
    if a.kss_paths:
        _, table = run_kss_paths(a.profile, executor=a.executor, dask_address=a.dask_address, progress=True)
        with pd.option_context('display.width', 200, 'display.max_columns', None):
            print(table.to_string(index=False))
        return 0
    prefetch(a.profile, executor=a.executor, dask_address=a.dask_address)
    return 0


def prefetch(profile: str, executor: str = 'local', dask_address: Optional[str] = None) -> pd.DataFrame:
    """Train (or reuse) every recall run of the profile into the shared cache, with a progress bar:
    the `runs` stage of `make reproduce` and `rksp runs PROFILE`."""
    t5 = None
    if plan(profile).get('maxlr_refine'):   # Part 5's priority: the normalization sweep, then Table 5's rounds
        run_labeled(recall_pool(profile), profile, executor=executor, dask_address=dask_address, progress=True)
        t5 = maxlr_runs(profile, executor=executor, dask_address=dask_address, progress=True)
    df = run_labeled(all_recall_configs(profile), profile, executor=executor, dask_address=dask_address,
                     progress=True)
    if t5 is not None:   # the LRs the bracket rule added
        df = pd.concat([df, t5[~t5['hash'].isin(df['hash'])]], ignore_index=True)
    print(f"  {df['hash'].nunique()} recall runs in {runs_dir(profile)} "
          f"({df.attrs.get('n_cached', 0)} were cached)", flush=True)
    return df


def track_runs(profile: str, methods: Sequence[str] = ("no_control", "kss_0.15"), *, every: int = 10,
               lr: float | None = None, seed: int = 42, norm: str = "none", kreiss: bool = False,
               progress: bool = True) -> pd.DataFrame:
    """Train one run per method row (ids of rksp.methods.rows, or display strings) of the No-Norm
    recall GPT of the notebook profile, one LR and seed, with a profile every ``every`` steps;
    returns the long DataFrame with columns ``run`` (the row's display string), ``step, layer,
    metric, value`` plus ``diverged_at`` (step or NaN). ``lr`` defaults to the highest LR of the
    profile's band (where the methods differ most).
    """
    lrs = plan(profile)["band_lrs"]
    lr = max(lrs) if lr is None else lr
    frames = []
    for m in methods:
        cands = [c for lab, c in method_configs(profile, [m], norm=norm) if c["lr"] == lr]
        if not cands:
            cands = [c for _, c in method_configs(profile, [m], norm=norm)]
        cfg = {**cands[0], "seed": seed, "lr": lr}
        hook = TrackHooks(every=every, kreiss=kreiss)
        rec = train(cfg, hooks=hook, progress=progress)
        div = rec.get("div_step")
        frames.append(hook.tracker.frame(run=canonical_method(m))
                      .assign(diverged_at=np.nan if div is None else float(div), lr=lr, seed=seed))
    return pd.concat(frames, ignore_index=True)
