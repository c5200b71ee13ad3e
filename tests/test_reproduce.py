import numpy as np
import pandas as pd

from rksp.reproduce import compare_tables

REF = pd.DataFrame({'method': ['No control', 'KSS'], 'n': [24, 24], 'div_pct': [45.8, np.nan],
                    'overhead_pct': [0.0, 9.7], 'note': ['', 'x']})


def test_identical_and_within_tolerance_tables_pass():
    assert compare_tables(REF, REF.copy()) == []
    new = REF.copy()
    new['div_pct'] = [45.8 * 1.04, np.nan]          # 4% < 5% rtol
    new['overhead_pct'] = [50.0, -3.0]             # timing columns are not compared
    new['note'] = ['changed', 'text']              # free text is not compared
    assert compare_tables(REF, new) == []


def test_numbers_outside_tolerance_nan_changes_and_key_changes_fail():
    new = REF.copy()
    new['div_pct'] = [60.0, np.nan]
    assert any('div_pct' in e for e in compare_tables(REF, new, 't'))
    new = REF.copy()
    new['div_pct'] = [45.8, 12.0]                  # NaN became a number
    assert compare_tables(REF, new)
    new = REF.copy()
    new['method'] = ['No control', 'SAM']
    assert any('row keys' in e for e in compare_tables(REF, new))


def test_column_and_row_changes_fail():
    assert 'columns differ' in compare_tables(REF, REF.drop(columns='n'))[0]
    assert 'rows' in compare_tables(REF, REF.iloc[:1])[0]
