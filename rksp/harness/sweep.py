"""Sweeps: many `TrainConfig`s, one JSON record per run, resumable, on one machine or a cluster.

    from rksp.harness.sweep import grid, run
    cfgs = grid({'preset': 'tiny', 'steps': 30}, {'model_cfg.norm': ['pre_ln', 'none'], 'lr': [1e-3, 1e-2]})
    df = run(cfgs, 'results/tmp/demo', executor='local', n_workers=2)

or from the shell (`rksp sweep CONFIG.yaml`):

    rksp sweep configs/example_sweep.yaml --out results/tmp/demo --executor local --workers 2

Storage and resuming. Each run is identified by `config_hash(TrainConfig(**cfg).to_dict())`
(sha256 of the canonical JSON of the *normalized* config, defaults filled in, 16 hex
chars) and stored as `out_dir/<hash>.json`. The worker that ran it writes the file
itself, atomically (temp file in the same directory, fsync, os.replace), so a killed
driver or worker never leaves a half-written record and loses no finished run.
Invoking the same sweep again skips every config whose record has status 'ok' (never
recomputed) and runs the rest. A run that raised (status 'failed', with its error and
traceback in the record) is reported in the summary line and *retried* on the next
invocation; divergence is not a failure (status 'ok', diverged true). Duplicate configs
(same hash) run once. Every config is validated before anything runs; invalid ones
raise `ConfigError` listing each config's index, hash-free summary and reason.

Executors.
  'serial'  in this process, one run after another.
  'local'   concurrent.futures.ProcessPoolExecutor with the spawn start method; each
            worker process uses torch.set_num_threads(max(1, cores // n_workers))
            (`threads_per_run` overrides): several torch processes each using all
            cores slow each other down many times over. n_workers defaults to the
            number of cores.
  'dask'    dask.distributed: `Client(dask_address)`, else the env var
            RKSP_DASK_ADDRESS, else a LocalCluster(n_workers, threads_per_worker=1)
            made here (`dask_cluster_kwargs` are passed to it, e.g. processes=False).
            Runs set torch threads to `threads_per_run` (default: cores // n_workers
            for a LocalCluster made here, 1 for a remote scheduler). out_dir must be
            on a filesystem the workers share (it is made absolute).

On a SLURM cluster (pip install dask-jobqueue), start workers with one process per
core so each run gets one thread, and hand the scheduler's address to the sweep:

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=16, processes=16, memory='64GB', walltime='04:00:00',
                           job_extra_directives=['--cpus-per-task=16'])
    cluster.scale(jobs=4)                   # 64 single-thread workers
    df = run(cfgs, '/shared/results/sweep1', executor='dask', dask_address=cluster.scheduler_address)

or `RKSP_DASK_ADDRESS=tcp://host:8786 rksp sweep cfg.yaml --executor dask` against a
scheduler started with `dask scheduler` / `dask worker --nthreads 1 --nworkers 16`.
(GPU workers: give `device: cuda` in the base config and one worker per GPU.)

The DataFrame `run` returns (and `load_records` reads) has one tidy row per run:
hash, status, error, key config fields (task, model, preset, norm, d_model, n_layer,
n_head, init, init_std, device, optimizer, lr, weight_decay, batch_size, steps, warmup_steps, schedule,
grad_clip, seed, hooks), data_name, data_is_standin, n_params, profile_error, diverged, div_step,
div_reason, steps_done, final_train_loss, val_loss, val_acc, val_ppl, the four
gradient baselines, `prof_<key>` for every key of the RKSP profile summary (e.g.
prof_score, prof_m_near_unit_mean), wall_time, steps_per_sec, path; `run` adds the
dotted config fields that vary across the sweep. `df.attrs` holds n_total, n_cached,
n_run, n_failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import pandas as pd

from rksp.errors import ConfigError, RKSPInputError
from rksp.harness.config import TrainConfig, config_hash
from rksp.harness.record import atomic_write_json, flatten_record, read_record, record_to_row, to_jsonable
from rksp.harness.resolve import validated

EXECUTORS = ('local', 'dask', 'serial')

DASK_ADDRESS_ENV = 'RKSP_DASK_ADDRESS'


def _set_dotted(d: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split('.')
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        elif not isinstance(nxt, dict):
            raise ValueError(f"axis {key!r}: {p!r} is not a mapping in the base config")
        cur = nxt
    cur[parts[-1]] = value


def grid(base: Dict[str, Any], axes: Dict[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    """Cartesian product of `axes` over `base` (the first axis varies slowest).

    Keys may be dotted for nested fields ('model_cfg.norm'). A key listing several
    comma-separated fields ('lr,warmup_steps') zips them: its values are tuples.
    """
    base = dict(base or {})
    axes = dict(axes or {})
    for k, vals in axes.items():
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Iterable):
            raise ValueError(f"axis {k!r} must be a list of values, got {vals!r}")
    keys = list(axes)
    out = []
    for combo in itertools.product(*(list(axes[k]) for k in keys)):
        d = copy.deepcopy(base)
        for k, v in zip(keys, combo):
            sub = [s.strip() for s in k.split(',')]
            if len(sub) > 1:
                if not isinstance(v, (list, tuple)) or len(v) != len(sub):
                    raise ValueError(f"axis {k!r} needs {len(sub)}-tuples, got {v!r}")
                for kk, vv in zip(sub, v):
                    _set_dotted(d, kk, copy.deepcopy(vv))
            else:
                _set_dotted(d, k, copy.deepcopy(v))
        out.append(d)
    return out


def _describe(d: Any, limit: int = 160) -> str:
    try:
        s = json.dumps(d, sort_keys=True, default=str)
    except (TypeError, ValueError):
        s = repr(d)
    return s if len(s) <= limit else s[:limit - 3] + '...'


def validate_configs(configs: Sequence[Union[Dict[str, Any], TrainConfig]]) -> List[Tuple[str, Dict[str, Any]]]:
    """Normalize and validate every config (hooks built with their arguments, the model config
    resolved: `rksp.harness.resolve`); return [(hash, normalized dict)] in order.
    Raises ConfigError listing each invalid config (index, config, reason)."""
    out, errs = [], []
    for i, c in enumerate(configs):
        try:
            tc = validated(c)
            d = tc.to_dict()
            out.append((config_hash(d), d))
        except ConfigError as e:
            errs.append(f"  config #{i} {_describe(c if not isinstance(c, TrainConfig) else c.to_dict())}: {e}")
        except Exception as e:  # noqa: BLE001
            errs.append(f"  config #{i} {_describe(c)}: {type(e).__name__}: {e}")
    if errs:
        raise ConfigError(f"{len(errs)} of {len(configs)} config(s) invalid; nothing was run:\n" + '\n'.join(errs))
    return out


def _set_threads(n: Optional[int]) -> Optional[int]:
    import torch
    if n is None:
        return None
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    return old


def _worker_init(num_threads: int, parent: Optional[int] = None) -> None:
    """ProcessPoolExecutor initializer: one worker = `num_threads` torch threads."""
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        os.environ[var] = str(num_threads)
    import torch
    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    _exit_with_parent(parent if parent is not None else os.getppid())


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """Worker side: exit as soon as the sweep process that started this worker is gone (e.g. a
    killed notebook kernel), so no orphaned worker goes on training. The run in flight writes no
    record (records are atomic) and is redone on the next invocation."""
    import threading

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(every)

    threading.Thread(target=watch, name='rksp-parent-watch', daemon=True).start()


def _failed_record(h: str, cfg_dict: Dict[str, Any], err: str, tb: str, wall: float,
                   started_at: Optional[str] = None) -> Dict[str, Any]:
    return {'schema_version': 1, 'status': 'failed', 'hash': h, 'config': cfg_dict, 'error': err,
            'traceback': tb, 'wall_time': wall, 'started_at': started_at,
            'finished_at': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'env': {'pid': os.getpid()}}


def run_one(cfg_dict: Dict[str, Any], out_dir: Union[str, Path], num_threads: Optional[int] = None,
            skip_done: bool = True) -> Dict[str, Any]:
    """Run one config and write `out_dir/<hash>.json` atomically; returns its row.
    An exception is caught and recorded (status 'failed', error, traceback)."""
    from rksp.harness.loop import train
    out_dir = Path(out_dir)
    tc = TrainConfig.from_dict(cfg_dict)
    d = tc.to_dict()
    h = config_hash(d)
    path = out_dir / f'{h}.json'
    if skip_done:
        rec = read_record(path)
        if rec is not None and rec.get('status') == 'ok':
            return record_to_row(rec, str(path))
    old = _set_threads(num_threads)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec='seconds')
    try:
        rec = train(tc)
        rec = to_jsonable(rec)
    except Exception as e:  # noqa: BLE001 - a failed run must not stop the sweep
        rec = _failed_record(h, d, f'{type(e).__name__}: {e}', traceback.format_exc(),
                             time.perf_counter() - t0, started)
    finally:
        if old is not None:
            _set_threads(old)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rec)
    return record_to_row(rec, str(path))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _run_serial(todo, out_dir, threads, on_done):
    for h, d in todo:
        on_done(h, run_one(d, out_dir, threads, skip_done=False))


@contextlib.contextmanager
def _main_hidden_from_spawn():
    """Spawned workers re-import the parent's __main__ script unless it is hidden;
    they only need rksp, so a driver script without an `if __name__ == '__main__':`
    guard still works (the worker function lives in rksp.harness.sweep)."""
    main = sys.modules.get('__main__')
    saved = {a: getattr(main, a) for a in ('__file__', '__spec__') if main is not None and hasattr(main, a)}
    try:
        for a in saved:
            setattr(main, a, None) if a == '__spec__' else delattr(main, a)
        yield
    finally:
        for a, v in saved.items():
            setattr(main, a, v)


def _run_local(todo, out_dir, n_workers, threads, on_done):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ex = ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context('spawn'),
                             initializer=_worker_init, initargs=(threads, os.getpid()))
    futs = {}
    try:
        with _main_hidden_from_spawn():   # workers start during submit()
            for h, d in todo:
                futs[ex.submit(run_one, d, str(out_dir), None, False)] = (h, d)
        for fut in as_completed(futs):
            h, d = futs[fut]
            try:
                row = fut.result()
            except BrokenProcessPool as e:
                row = _record_worker_death(h, d, out_dir, e)
            except Exception as e:  # noqa: BLE001
                row = _record_worker_death(h, d, out_dir, e)
            on_done(h, row)
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _run_dask(todo, out_dir, n_workers, threads, on_done, address, cluster_kwargs):
    from dask.distributed import Client, LocalCluster, as_completed

    address = address or os.environ.get(DASK_ADDRESS_ENV) or None
    cluster = None
    if address:
        client = Client(address)
        threads = threads or 1
    else:
        kw = {'n_workers': n_workers, 'threads_per_worker': 1, 'processes': True,
              'dashboard_address': None}
        kw.update(cluster_kwargs or {})
        cluster = LocalCluster(**kw)
        client = Client(cluster)
    try:
        futs, meta = [], {}
        for h, d in todo:
            f = client.submit(run_one, d, str(out_dir), threads, False, key=f'rksp-run-{h}', pure=False)
            futs.append(f)
            meta[f.key] = (h, d)
        for fut in as_completed(futs):
            h, d = meta[fut.key]
            try:
                row = fut.result()
            except Exception as e:  # noqa: BLE001 - worker died / lost
                row = _record_worker_death(h, d, out_dir, e)
            on_done(h, row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _record_worker_death(h, d, out_dir, e) -> Dict[str, Any]:
    path = Path(out_dir) / f'{h}.json'
    rec = read_record(path)
    if rec is not None and rec.get('status') == 'ok':   # it finished before the worker went away
        return record_to_row(rec, str(path))
    rec = _failed_record(h, d, f'{type(e).__name__}: {e} (worker process lost)',
                         ''.join(traceback.format_exception(type(e), e, e.__traceback__)), 0.0)
    atomic_write_json(path, rec)
    return record_to_row(rec, str(path))


def run(configs: Sequence[Union[Dict[str, Any], TrainConfig]], out_dir: Union[str, Path],
        executor: str = 'local', n_workers: Optional[int] = None, dask_address: Optional[str] = None,
        progress: bool = True, threads_per_run: Optional[int] = None,
        dask_cluster_kwargs: Optional[Dict[str, Any]] = None, verbose: bool = True) -> pd.DataFrame:
    """Run every config not yet finished in `out_dir`; return one row per config (module docstring)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r} (valid: {', '.join(EXECUTORS)})")
    if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
        raise ConfigError(f"n_workers must be a positive integer, got {n_workers!r}")
    items = validate_configs(list(configs))
    unique: Dict[str, Dict[str, Any]] = {}
    for h, d in items:
        unique.setdefault(h, d)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    todo, n_cached = [], 0
    for h, d in unique.items():
        rec = read_record(out_dir / f'{h}.json')
        if rec is not None and rec.get('status') == 'ok':
            n_cached += 1
        else:
            todo.append((h, d))

    cores = _cores()
    if n_workers is None:
        n_workers = 1 if executor == 'serial' else max(1, min(cores, len(todo) or 1))
    threads = threads_per_run or max(1, cores // n_workers)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(unique), initial=n_cached, desc='sweep', unit='run')
    stats = {'ok': 0, 'failed': 0, 'diverged': 0}

    def on_done(h, row):
        stats['failed' if row.get('status') != 'ok' else 'ok'] += 1
        stats['diverged'] += bool(row.get('diverged'))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=stats['failed'], diverged=stats['diverged'])

    try:
        if todo:
            if executor == 'serial':
                _run_serial(todo, out_dir, threads_per_run, on_done)
            elif executor == 'local':
                _run_local(todo, out_dir, n_workers, threads, on_done)
            else:
                _run_dask(todo, out_dir, n_workers, threads_per_run if dask_address or
                          os.environ.get(DASK_ADDRESS_ENV) else threads, on_done,
                          dask_address, dask_cluster_kwargs)
    finally:
        if bar is not None:
            bar.close()

    rows = []
    for h in unique:
        path = out_dir / f'{h}.json'
        rec = read_record(path)
        rows.append(record_to_row(rec, str(path)) if rec is not None else
                    {'hash': h, 'status': 'missing', 'path': str(path)})
    df = pd.DataFrame(rows)
    _add_varying(df, unique)
    failed = df[df['status'] != 'ok'] if len(df) else df
    df.attrs.update(n_total=len(unique), n_cached=n_cached, n_run=len(todo), n_failed=len(failed),
                    out_dir=str(out_dir))
    if verbose:
        n_div = int(df['diverged'].fillna(False).astype(bool).sum()) if 'diverged' in df else 0
        msg = (f"sweep {out_dir}: {len(unique)} runs, {n_cached} already done, {len(todo)} run now; "
               f"{len(df) - len(failed)} ok ({n_div} diverged), {len(failed)} failed")
        if 'profile_error' in df and df['profile_error'].notna().any():
            msg += f"; {int(df['profile_error'].notna().sum())} without an RKSP profile (see profile_error)"
        if len(failed):
            msg += ' (failed runs are retried on the next invocation):'
            for _, r in failed.iterrows():
                msg += f"\n  {r['hash']}: {r.get('error')}"
        print(msg, file=sys.stderr)
    return df


def _add_varying(df: pd.DataFrame, unique: Dict[str, Dict[str, Any]]) -> None:
    if len(unique) < 2 or not len(df):
        return
    flats = [flatten_record(d) for d in unique.values()]
    keys = sorted(set().union(*flats))
    for k in keys:
        vals = [json.dumps(f.get(k), sort_keys=True, default=str) for f in flats]
        if len(set(vals)) < 2:
            continue
        short = k.split('.', 1)[1] if k.startswith('model_cfg.') else k
        if short in df.columns or k in df.columns:
            continue
        df[k] = [f.get(k) for f in flats]

_TABLE_COLS = ('hash', 'status', 'task', 'norm', 'd_model', 'n_layer', 'optimizer', 'lr', 'seed',
               'steps_done', 'diverged', 'div_step', 'val_loss', 'val_acc', 'val_ppl', 'prof_score')


def _print_table(df: pd.DataFrame) -> None:
    if not len(df):
        print('(no runs)')
        return
    cols = [c for c in _TABLE_COLS if c in df.columns and not df[c].isna().all()]
    cols += [c for c in df.columns if '.' in c and c not in cols]
    with pd.option_context('display.max_rows', 200, 'display.width', 200, 'display.float_format', '{:.4g}'.format):
        print(df[cols].to_string(index=False))
    if 'diverged' in df.columns and 'norm' in df.columns:
        ok = df[df['status'] == 'ok']
        if len(ok):
            g = ok.groupby('norm')['diverged'].agg(['count', 'sum'])
            print('diverged per norm: ' + ', '.join(f"{n} {int(r['sum'])}/{int(r['count'])}" for n, r in g.iterrows()))


def _load_sweep_yaml(path: str) -> Dict[str, Any]:
    import yaml
    p = Path(path)
    if not p.is_file():
        raise RKSPInputError(f"sweep file not found: {path}")
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise RKSPInputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(spec, dict):
        raise RKSPInputError(f"{path}: expected a mapping with 'base:' and 'axes:'")
    unknown = set(spec) - {'base', 'axes', 'out', 'executor', 'workers', 'dask_address'}
    if unknown:
        raise RKSPInputError(f"{path}: unknown top-level key(s) {sorted(unknown)} "
                             "(valid: base, axes, out, executor, workers, dask_address)")
    if not isinstance(spec.get('base') or {}, dict) or not isinstance(spec.get('axes') or {}, dict):
        raise RKSPInputError(f"{path}: 'base' and 'axes' must be mappings")
    return spec


def cli_main(argv: List[str]) -> int:
    """`rksp sweep CONFIG.yaml [--out DIR] [--executor local|dask|serial] [--workers N]
    [--dask-address ADDR] [--no-progress]`. Exit 0: all ok; 1: some runs failed (they are
    retried next time); 2: bad input (missing file, bad YAML, invalid config)."""
    argv = list(argv)
    if argv and argv[0] == 'sweep':
        argv = argv[1:]
    ap = argparse.ArgumentParser(prog='rksp sweep', description='Run a resumable sweep of training runs.')
    ap.add_argument('config', help='YAML with base: (a TrainConfig mapping), axes: (field: [values]), optional out:')
    ap.add_argument('--out', default=None, help='output directory (default: YAML out:, else results/tmp/<name>)')
    ap.add_argument('--executor', choices=EXECUTORS, default=None)
    ap.add_argument('--workers', type=int, default=None)
    ap.add_argument('--dask-address', default=None)
    ap.add_argument('--threads-per-run', type=int, default=None)
    ap.add_argument('--no-progress', action='store_true')
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        spec = _load_sweep_yaml(args.config)
        cfgs = grid(spec.get('base') or {}, spec.get('axes') or {})
        validate_configs(cfgs)
        out = args.out or spec.get('out') or os.path.join('results', 'tmp', Path(args.config).stem)
        executor = args.executor or spec.get('executor') or 'local'
        if executor not in EXECUTORS:
            raise RKSPInputError(f"unknown executor {executor!r} (valid: {', '.join(EXECUTORS)})")
        workers = args.workers if args.workers is not None else spec.get('workers')
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise RKSPInputError(f"--workers must be a positive integer, got {workers!r}")
    except (RKSPInputError, ValueError) as e:
        msg = str(e).replace('\n', ' | ')
        print(f"rksp sweep: error: {msg}", file=sys.stderr)
        return 2
    df = run(cfgs, out, executor=executor, n_workers=workers,
             dask_address=args.dask_address or spec.get('dask_address'), progress=not args.no_progress,
             threads_per_run=args.threads_per_run)
    _print_table(df)
    return 1 if df.attrs.get('n_failed') else 0
