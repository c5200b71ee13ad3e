"""Fresh smoke tables vs the committed ones (results/smoke/tables, results/smoke/claims.csv).

`make test` first executes every notebook with the smoke profile through nbval, writing into a
temporary results root, and then runs this file with RKSP_FRESH_SMOKE=<that root>/smoke. Each
committed table must be produced again with the same columns and row keys; each column is checked
by its class in `rksp.experiments.table_check` (plan and paper numbers equal, init spectra within 1e-4 + 1e-3
|ref|, kappa within 2%, divergence counts and rates within the label flips that another CPU kernel
set can cause, trained outcomes only for validity). The claims table keeps its claim ids and paper
values; its verdicts follow the chaotic counts and are only checked to be verdicts.

Refresh the reference after an intended change with `make smoke-reference`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from rksp.experiments.claims import VERDICTS
from rksp.experiments.table_check import compare_tables

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / 'results' / 'smoke' / 'tables'
COMMITTED_CLAIMS = ROOT / 'results' / 'smoke' / 'claims.csv'
FRESH_ENV = 'RKSP_FRESH_SMOKE'

fresh_root = os.environ.get(FRESH_ENV)
pytestmark = pytest.mark.skipif(not fresh_root, reason=f'{FRESH_ENV} not set: run through `make test`, '
                                                         'which executes the smoke notebooks first')


def _tables(d: Path) -> set[str]:
    return {p.stem for p in d.glob('*.csv')}


def test_committed_reference_exists():
    assert COMMITTED.is_dir() and _tables(COMMITTED), 'no committed smoke tables: run `make smoke-reference`'
    assert COMMITTED_CLAIMS.exists(), 'no committed smoke claims: run `make smoke-reference`'


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


def test_claims_keep_their_ids_and_paper_values():
    ref = pd.read_csv(COMMITTED_CLAIMS, dtype=str).fillna('')
    new = pd.read_csv(Path(fresh_root) / 'claims.csv', dtype=str).fillna('')
    assert list(ref.columns) == list(new.columns)
    assert ref[['source', 'id', 'paper']].values.tolist() == new[['source', 'id', 'paper']].values.tolist()
    assert set(new['verdict']) <= set(VERDICTS), set(new['verdict'])
