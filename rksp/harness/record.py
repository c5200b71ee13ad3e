"""Run records: JSON helpers, reading records from disk, and flattening them into rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import pandas as pd
import torch

from rksp.atomic import atomic_write

SCHEMA_VERSION = 1

# fields that may differ between two runs of one config (timings, machine)
VOLATILE_FIELDS = ('wall_time', 'train_time', 'train_cpu_time', 'profile_time', 'eval_time', 'steps_per_sec',
                   'started_at', 'finished_at', 'env')


def to_jsonable(obj):
    """Plain JSON types: numpy/torch scalars and arrays, tuples, complex ([re, im]), NaN kept."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, (complex, np.complexfloating)):
        return [float(obj.real), float(obj.imag)]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, 'to_dict'):
        return to_jsonable(obj.to_dict())
    return str(obj)


def comparable(record: Dict[str, Any]) -> Dict[str, Any]:
    """The record without fields that legitimately differ between identical runs."""
    return {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}

_KEY_FIELDS = ('task', 'lm_mode', 'model', 'preset', 'optimizer', 'lr', 'weight_decay', 'batch_size', 'steps',
               'warmup_steps', 'schedule', 'grad_clip', 'seed', 'div_grad')

_MODEL_FIELDS = ('norm', 'd_model', 'n_layer', 'n_head', 'n_experts', 'top_k', 'spline_order', 'init_std')

_RESULT_FIELDS = ('data_name', 'data_is_standin', 'n_params', 'profile_error', 'diverged', 'div_step', 'div_reason',
                  'div_step_total_grad', 'steps_done', 'final_train_loss', 'val_loss', 'val_acc', 'val_ppl', 'unigram_ppl',
                  'grad_norm_step1', 'grad_norm_step100', 'grad_var_1_100', 'loss_spikes_1_500')


def atomic_write_json(path: Union[str, Path], obj: Any) -> None:
    """Write JSON so that `path` is either absent or complete: temp file in the same
    directory, fsync, os.replace, then fsync the directory (best effort)."""
    def write(tmp: str) -> None:
        with open(tmp, 'w') as f:
            json.dump(obj, f, allow_nan=True)
    atomic_write(path, write, fsync=True)


def read_record(path: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """A record, or None if the file is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def flatten_record(d: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict) and v:
            out.update(flatten_record(v, key + '.'))
        elif isinstance(v, (list, dict)):
            out[key] = json.dumps(v, sort_keys=True)
        else:
            out[key] = v
    return out


def _baselines_before_divergence(record: Dict[str, Any]) -> Dict[str, Any]:
    """Table 2's gradient baselines recomputed from the run's per-step curves, leaving out the
    divergence step (the label itself), so records written before that rule agree with new ones.
    Empty when the curves are not complete step by step (then the record's own values stand)."""
    from rksp.harness.labels import gradient_baselines
    c = record.get('curves') or {}
    steps, n = c.get('step') or [], record.get('steps_done')
    if not record.get('diverged') or not n or len(steps) != n or steps[-1] != n:
        return {}
    return gradient_baselines(c['loss'][:-1], c['grad_norm'][:-1])


def record_to_row(record: Dict[str, Any], path: Optional[str] = None) -> Dict[str, Any]:
    """One tidy row of a record (see module docstring)."""
    cfg = record.get('config') or {}
    mc = record.get('model_config') or {}
    row: Dict[str, Any] = {'hash': record.get('hash'), 'status': record.get('status')}
    err = record.get('error')
    row['error'] = err.strip().splitlines()[-1] if isinstance(err, str) and err.strip() else None
    for k in _KEY_FIELDS:
        row[k] = cfg.get(k)
    user_mc = cfg.get('model_cfg') or {}
    preset_mc: Dict[str, Any] = {}
    if not mc and cfg.get('model', 'gpt') == 'gpt' and cfg.get('preset'):
        try:
            from rksp.models.gpt import PRESETS
            preset_mc = PRESETS.get(cfg['preset'], {})
        except Exception:  # noqa: BLE001
            preset_mc = {}
    for k in _MODEL_FIELDS:
        row[k] = mc.get(k, user_mc.get(k, preset_mc.get(k, 'pre_ln' if k == 'norm' else None)))
    # the weight init (a record made before `init` existed was 'gpt2'), and the device it ran on
    if record.get('init') is not None:
        row['init'], row['init_std'] = record.get('init'), record.get('init_std')
    else:
        from rksp.harness.build import init_fields
        f = init_fields(cfg.get('model', 'gpt'), {**preset_mc, **user_mc, **mc})
        row['init'] = f['init']
        if f['init'] == 'torch':
            row['init_std'] = None
    row['device'] = record.get('device') or (record.get('env') or {}).get('device')
    hooks = cfg.get('hooks') or []
    row['hooks'] = json.dumps(hooks, sort_keys=True) if hooks else ''
    for k in _RESULT_FIELDS:
        row[k] = record.get(k)
    row.update(_baselines_before_divergence(record))
    summ = ((record.get('profile') or {}).get('summary')) or {}
    for k, v in summ.items():
        if isinstance(v, (int, float, bool, str)) or v is None:
            row[f'prof_{k}'] = v
    row['diverged_total_grad'] = (record.get('div_step_total_grad') is not None
                                  if record.get('status') == 'ok' else None)
    summ_end = ((record.get('profile_end') or {}).get('summary')) or {}
    for k, v in summ_end.items():
        if isinstance(v, (int, float, bool, str)) or v is None:
            row[f'end_{k}'] = v
    row['wall_time'] = record.get('wall_time')
    row['steps_per_sec'] = record.get('steps_per_sec')
    row['path'] = path
    return row


def load_records(out_dir: Union[str, Path]) -> pd.DataFrame:
    """All records in `out_dir` (`<hash>.json`), one tidy row each, sorted by hash."""
    rows = []
    for p in sorted(Path(out_dir).glob('*.json')):
        if p.name.startswith('.'):
            continue
        rec = read_record(p)
        if rec is None or 'hash' not in rec:
            continue
        rows.append(record_to_row(rec, str(p)))
    return pd.DataFrame(rows)
