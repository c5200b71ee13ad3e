"""rksp.experiments.table_check: which differences between a committed and a fresh table are allowed."""
import numpy as np
import pandas as pd
import pytest

from rksp.experiments.table_check import column_class, compare_tables, flip_allowance, invariants

REF = pd.DataFrame({'method': ['No control', 'KSS'], 'n': [8, 8], 'n_div': [4, 2], 'div_pct': [50.0, 25.0],
                    'div_ci_lo': [21.5, 7.1], 'div_ci_hi': [78.5, 59.1], 'acc_pct': [10.0, 12.0],
                    'm_near_unit_init': [0.8, 0.8], 'overhead_pct': [0.0, 9.7], 'paper_div_pct': [66.7, 12.5],
                    'note': ['', 'x']})


def _with(**cols):
    new = REF.copy()
    for k, v in cols.items():
        new[k] = v
    return new


def test_identical_table_passes_and_skipped_columns_may_change():
    assert compare_tables(REF, REF.copy(), 't') == []
    assert compare_tables(REF, _with(overhead_pct=[50.0, -3.0], note=['a', 'b']), 't') == []


def test_outcomes_may_move_but_must_stay_valid():
    assert compare_tables(REF, _with(acc_pct=[1.0, 40.0]), 't') == []          # not compared
    errs = compare_tables(REF, _with(acc_pct=[1.0, 140.0]), 't')               # but within [0, 100]
    assert any('outside [0, 100]' in e for e in errs)
    errs = compare_tables(REF, _with(div_ci_lo=[60.0, 7.1]), 't')              # lo > div_pct
    assert any('not within' in e for e in errs)


def test_counts_move_within_the_flip_allowance_only():
    ref = pd.DataFrame({'method': ['No control'], 'n': [24], 'n_div': [0], 'div_pct': [0.0]})
    k = flip_allowance(24)
    assert 1 <= k < 24
    ok = ref.assign(n_div=[k], div_pct=[100 * k / 24])
    assert compare_tables(ref, ok, 't') == []
    bad = ref.assign(n_div=[k + 1], div_pct=[100 * (k + 1) / 24])
    errs = compare_tables(ref, bad, 't')
    assert any('n_div' in e for e in errs) and any('div_pct' in e for e in errs)


def test_rate_must_agree_with_its_count():
    errs = compare_tables(REF, _with(div_pct=[50.0, 37.5]), 't')               # 2/8 is 25%
    assert any('100 n_div / n' in e for e in errs)


@pytest.mark.parametrize('col, value', [('n', [8, 9]), ('paper_div_pct', [66.7, 12.6]),
                                        ('m_near_unit_init', [0.8, 0.81]), ('method', ['No control', 'SAM'])])
def test_plan_paper_init_and_key_columns_must_match(col, value):
    errs = compare_tables(REF, _with(**{col: value}), 't')
    assert any(col in e for e in errs), errs


def test_init_values_within_their_tolerance_pass():
    assert compare_tables(REF, _with(m_near_unit_init=[0.8 + 5e-4, 0.8]), 't') == []


def test_kappa_is_compared_on_a_log_scale():
    ref = pd.DataFrame({'model': ['a'], 'kappa': [5e4], 'kappa_std': [15.0]})
    assert compare_tables(ref, pd.DataFrame({'model': ['a'], 'kappa': [4.98e4], 'kappa_std': [12.0]}), 'x') == []
    # the MiniLM prompt rows under ATEN_CPU_CAPABILITY=default (2.5%, rank-deficient covariance): allowed
    ref = pd.DataFrame({'model': ['a'], 'kappa': [48066.0]})
    assert compare_tables(ref, pd.DataFrame({'model': ['a'], 'kappa': [46854.0]}), 'table10_layer_groups') == []
    # a real change is not: 10x, 2x (either way), a finite value becoming inf
    for v in (480660.0, 4806.6, 2 * 48066.0, 48066.0 / 2, float('inf')):
        errs = compare_tables(ref, pd.DataFrame({'model': ['a'], 'kappa': [v]}), 'table10_layer_groups')
        assert errs and 'log10' in errs[0], v
    # a spread of kappa is compared relative to the row's kappa
    ref = pd.DataFrame({'model': ['a'], 'kappa': [100.0], 'kappa_std': [15.0]})
    assert compare_tables(ref, pd.DataFrame({'model': ['a'], 'kappa': [100.0], 'kappa_std': [20.0]}), 'x') == []
    assert compare_tables(ref, pd.DataFrame({'model': ['a'], 'kappa': [100.0], 'kappa_std': [40.0]}), 'x')


def test_structure_changes_and_unclassified_columns_fail():
    assert 'columns differ' in compare_tables(REF, REF.drop(columns='n'), 't')[0]
    assert 'rows' in compare_tables(REF, REF.iloc[:1], 't')[-1]
    ref = REF.assign(brand_new_metric=[1.0, 2.0])
    assert 'no tolerance class' in compare_tables(ref, ref, 't')[0]


def test_survival_table_rows_may_differ_but_groups_may_not():
    ref = pd.DataFrame({'method': ['A', 'A'], 'step': [0, 22], 'n_at_risk': [4, 4], 'n_events': [0, 1],
                        'frac_surviving': [1.0, 0.75], 'label': ['task', 'task']})
    new = pd.DataFrame({'method': ['A'], 'step': [0], 'n_at_risk': [4], 'n_events': [0],
                        'frac_surviving': [1.0], 'label': ['task']})
    assert compare_tables(ref, new, 'table3_survival') == []
    assert compare_tables(ref, new.assign(method=['B']), 'table3_survival')
    assert compare_tables(ref, new.assign(frac_surviving=[1.5]), 'table3_survival')


def test_flip_allowance_grows_with_n_and_is_at_least_one():
    vals = [flip_allowance(n) for n in (1, 2, 4, 8, 24, 96)]
    assert vals[0] == 1 and all(a <= b for a, b in zip(vals, vals[1:])) and vals[-1] < 96
    assert flip_allowance(0) == 0


def test_every_committed_smoke_column_has_a_class():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / 'results' / 'smoke' / 'tables'
    missing = {(p.stem, c) for p in root.glob('*.csv') for c in pd.read_csv(p).columns
               if column_class(p.stem, c) is None}
    assert not missing, sorted(missing)


def test_invariants_pass_on_every_committed_table():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / 'results'
    errs = [e for p in sorted(root.glob('*/tables/*.csv')) for e in invariants(pd.read_csv(p), p.stem)]
    assert not errs, errs[:10]


def test_calibration_variants_may_lose_their_cv_fit():
    ref = pd.DataFrame({'variant': ['raw', 'CV Platt'], 'ece': [0.5, np.nan], 'n': [15, 0], 'n_pos': [1, 0],
                        'n_bins': [10, 10]})
    new = ref.assign(ece=[0.4, 0.1], n=[15, 15], n_pos=[2, 2])
    assert compare_tables(ref, new, 'appH_calibration') == []
    assert compare_tables(ref, new.assign(n_pos=[2, 16]), 'appH_calibration')     # n_pos > n
