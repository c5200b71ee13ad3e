"""The attention diagnostic of issue 21 (notebook 13): a few No-Norm runs of the LR band, each trained
with the attention diagnostics (`rksp.experiments.diagnostics`: largest attention logit and attention
entropy per layer) and the spectral tracking of `rksp.experiments.runs.track_runs` (M≈1, M>1 and ρ
per layer on a fixed held-out batch), both every `every` steps.

Which runs (`diagnostic_grid`): seeds 42 and 123 at the lowest and the highest LR of the profile's
band (4 runs); `smoke`: seed 42 at the highest LR (1 run). Each run's config is the 'No control' row's
(`rksp.methods.rows`), so its hash is that of the recall run with the same (LR, seed): the two hooks
are extra hooks, not part of the config, and neither changes the trajectory (both read under
`no_grad` in eval mode and draw no random number; `tests/test_diagnostic_runs.py`).

Cache. The record, with `extras['attention']` and `extras['track']`, is written atomically to
``results/<profile>/runs/diagnostic/<hash>.json`` (packed with the other records by
`results_io.pack_records`); a record there with status 'ok' and the same `every` is reused, so a
rebuild from committed records does not retrain. `diagnostic_runs` returns the tidy long table.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from rksp.experiments.diagnostics import AttentionDiagnosticsHooks, diagnostics_long
from rksp.experiments.plans import plan, recall_base
from rksp.experiments.results_io import results_dir
from rksp.experiments.stability import trial_seeds
from rksp.harness.config import TrainConfig
from rksp.harness.record import atomic_write_json, read_record, to_jsonable
from rksp.harness.tracking import TrackHooks
from rksp.methods.rows import REFERENCE, apply_method

RUNS_NAME = 'diagnostic'
DIAGNOSTIC_EVERY = 10
TRACK_METRICS = ('m_near_unit', 'm_expansive', 'rho')
LONG_COLUMNS = ['run', 'lr', 'seed', 'step', 'layer', 'max_logit', 'entropy_mean', 'entropy_min', 'm_near_unit',
                'm_expansive', 'rho', 'diverged', 'div_step', 'steps_done']


class SpectrumTrackHooks(TrackHooks):
    """`TrackHooks` (profile at step 0 and after every `every` completed steps on the first
    `batch_size` validation inputs) that also writes its profiles into the record:
    ``record['extras']['track']`` = {'every', 'stopped_at', 'layers', 'step': [...],
    'm_near_unit': [[per layer] per step], 'm_expansive': [...], 'rho': [...]}."""

    def on_end(self, record, model):
        recs = self.tracker.records if self.tracker is not None else []
        out: Dict[str, Any] = {'every': self.every, 'stopped_at': self.stopped_at,
                               'layers': int(len(recs[0][1].layers)) if recs else None,
                               'step': [int(s) for s, _ in recs]}
        for m in TRACK_METRICS:
            out[m] = [[float(v) for v in prof.layers.sort_values('layer')[m]] for _, prof in recs]
        record['extras'][self.name] = out


def track_long(extras_track: Dict[str, Any]) -> pd.DataFrame:
    """`record['extras']['track']` as a long table: one row per (step, layer)."""
    a = extras_track or {}
    rows = [{'step': s, 'layer': layer, **{m: a[m][i][layer] for m in TRACK_METRICS}}
            for i, s in enumerate(a.get('step', [])) for layer in range(len(a['m_near_unit'][i]))]
    return pd.DataFrame(rows, columns=['step', 'layer', *TRACK_METRICS])


def diagnostic_grid(profile: str) -> List[Tuple[float, int]]:
    """(LR, seed) of the diagnostic runs: seeds 42, 123 at the lowest and highest band LR; smoke:
    seed 42 at the highest band LR."""
    lrs = sorted(plan(profile)['band_lrs'])
    if profile == 'smoke':
        return [(lrs[-1], trial_seeds(1)[0])]
    return [(lr, s) for lr in (lrs[0], lrs[-1]) for s in trial_seeds(2)]


def diagnostic_configs(profile: str, grid: Optional[Sequence[Tuple[float, int]]] = None
                       ) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """[(labels, config)] of the diagnostic runs: the No-Norm 'No control' recall config of `profile`
    at each (LR, seed) of `grid` (default `diagnostic_grid`); labels run, lr, seed."""
    out = []
    for lr, s in (diagnostic_grid(profile) if grid is None else grid):
        cfg = apply_method({**recall_base(profile), 'lr': float(lr), 'seed': int(s)}, REFERENCE, validate=False)
        out.append(({'run': f'lr {float(lr):g}, seed {int(s)}', 'lr': float(lr), 'seed': int(s)}, cfg))
    return out


def _cached(rec: Optional[Dict[str, Any]], every: int) -> bool:
    ex = (rec or {}).get('extras') or {}
    return (rec is not None and rec.get('status') == 'ok' and (ex.get('attention') or {}).get('every') == every
            and (ex.get('track') or {}).get('every') == every)


def diagnostic_record(cfg: Dict[str, Any], profile: str, every: int = DIAGNOSTIC_EVERY,
                      progress: bool = False) -> Dict[str, Any]:
    """The record of one diagnostic run: read from the cache (module docstring) or trained now with
    both hooks and written there."""
    from rksp.harness.loop import train
    h = TrainConfig.from_dict(copy.deepcopy(cfg)).hash()
    path = results_dir(profile) / 'runs' / RUNS_NAME / f'{h}.json'
    rec = read_record(path)
    if _cached(rec, every):
        return rec
    rec = to_jsonable(train(copy.deepcopy(cfg), hooks=[AttentionDiagnosticsHooks(every=every),
                                                        SpectrumTrackHooks(every=every)], progress=progress))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rec)
    return rec


def record_long(rec: Dict[str, Any], **labels) -> pd.DataFrame:
    """One diagnostic record as the long table (`LONG_COLUMNS`): the attention readings (steps 1,
    every, 2 every, ...) and the spectral ones (steps 0, every, ...) merged on (step, layer)."""
    ex = rec.get('extras') or {}
    att = diagnostics_long(ex.get('attention'))
    trk = track_long(ex.get('track'))
    df = att.merge(trk, on=['step', 'layer'], how='outer').sort_values(['step', 'layer'], ignore_index=True)
    div = rec.get('div_step')
    df = df.assign(diverged=bool(rec.get('diverged')), div_step=np.nan if div is None else float(div),
                   steps_done=rec.get('steps_done'))
    for i, (k, v) in enumerate(labels.items()):
        df.insert(i, k, v)
    return df[[c for c in LONG_COLUMNS if c in df.columns]]


def diagnostic_runs(profile: str, grid: Optional[Sequence[Tuple[float, int]]] = None,
                    every: int = DIAGNOSTIC_EVERY, progress: bool = False) -> pd.DataFrame:
    """Train (or reuse) the diagnostic runs of `profile` (`diagnostic_configs`) and return one long
    table, a row per (run, step, layer): run, lr, seed, step, layer, max_logit, entropy_mean,
    entropy_min, m_near_unit, m_expansive, rho, diverged, div_step, steps_done."""
    frames = [record_long(diagnostic_record(cfg, profile, every, progress), **lab)
              for lab, cfg in diagnostic_configs(profile, grid)]
    return pd.concat(frames, ignore_index=True)
