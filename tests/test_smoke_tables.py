"""Fresh smoke tables vs the committed ones (results/smoke/tables).

`make test` first executes every notebook with the smoke profile through nbval, writing into a
temporary results root, and then runs this file with RKSP_FRESH_SMOKE=<that root>/smoke. Each
committed table must be produced again, with the same columns, the same row keys (the text
columns that name rows) and numbers within these tolerances:

* |fresh - committed| <= 0.02 + 0.05 * |committed| for every numeric cell (NaN must stay NaN);
* columns that hold timings or timing ratios are not compared
(`rksp.reproduce.compare_tables`, which has its own tests in tests/test_reproduce.py).

Refresh the reference after an intended change with `make smoke-reference`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from rksp.reproduce import compare_tables

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / 'results' / 'smoke' / 'tables'
FRESH_ENV = 'RKSP_FRESH_SMOKE'

fresh_root = os.environ.get(FRESH_ENV)
pytestmark = pytest.mark.skipif(not fresh_root, reason=f'{FRESH_ENV} not set: run through `make test`, '
                                                         'which executes the smoke notebooks first')


def _tables(d: Path) -> set[str]:
    return {p.stem for p in d.glob('*.csv')}


def test_committed_reference_exists():
    assert COMMITTED.is_dir() and _tables(COMMITTED), 'no committed smoke tables: run `make smoke-reference`'


def test_same_set_of_tables():
    fresh = Path(fresh_root) / 'tables'
    missing = sorted(_tables(COMMITTED) - _tables(fresh))
    new = sorted(_tables(fresh) - _tables(COMMITTED))
    assert not missing, f'tables no longer produced by the smoke notebooks: {missing}'
    assert not new, f'new smoke tables not in results/smoke/tables (run `make smoke-reference`): {new}'


@pytest.mark.parametrize('name', sorted(_tables(COMMITTED)) if COMMITTED.is_dir() else [])
def test_table_matches_committed(name):
    fresh = Path(fresh_root) / 'tables' / f'{name}.csv'
    assert fresh.exists(), f'{name} was not produced'
    errs = compare_tables(pd.read_csv(COMMITTED / f'{name}.csv'), pd.read_csv(fresh), name)
    assert not errs, '\n'.join(errs[:20])
