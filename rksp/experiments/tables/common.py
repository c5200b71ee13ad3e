"""Helpers every table builder shares: the runs that finished, one trial per config, the data used."""

from __future__ import annotations

import re
from typing import Dict, Sequence

import pandas as pd

from rksp.methods.rows import REFERENCE


def ok_runs(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows['status'] == 'ok'] if 'status' in rows else rows


def finite_mean(s: pd.Series) -> float:
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


def stand_in_reason(rows: pd.DataFrame) -> str:
    """'' when the rows trained on the paper's data, else the reason a claim on them is stand-in
    evidence (rksp.experiments.claims: inconclusive whatever the numbers say)."""
    if 'data_is_standin' not in rows or not len(rows):
        return ''
    sub = rows[rows['data_is_standin'].fillna(False).astype(bool)]
    if not len(sub):
        return ''
    return f"trained on {data_used(sub)}, not the paper's dataset"


def overhead_pct(rows: pd.DataFrame, group: str = 'method', reference: str = REFERENCE) -> Dict[str, float]:
    """Median seconds per step of each group relative to the reference group, in % (same sweep).
    Measured with 2 workers sharing the machine: differences under about 10% are noise."""
    ok = ok_runs(rows)
    sps = pd.to_numeric(ok.get('steps_per_sec'), errors='coerce')
    med = (1.0 / sps).groupby(ok[group]).median()
    if reference not in med.index:
        return {}
    return {g: 100.0 * (v / med[reference] - 1.0) for g, v in med.items()}


def dedupe_runs(rows: pd.DataFrame, keys: Sequence[str] = ()) -> pd.DataFrame:
    """Drop repeated (keys, hash) rows: one config listed twice under the same labels (e.g. the No-Norm
    LR band and the normalization sweep share LR 0.01 x their common seeds) is one trial, not two."""
    if 'hash' not in rows:
        return rows
    return rows.drop_duplicates(subset=[*keys, 'hash']).reset_index(drop=True)


def slug(s: str) -> str:
    return re.sub(r'[^A-Za-z0-9]+', '_', str(s)).strip('_')
