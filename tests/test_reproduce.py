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


def test_unknown_stage_is_rejected_before_any_stage_runs(monkeypatch, tmp_path, capsys):
    import pytest
    from rksp import reproduce
    ran = []
    monkeypatch.setitem(reproduce.STAGES, 'profiles', lambda *a: ran.append('profiles'))
    with pytest.raises(SystemExit) as e:
        reproduce.main(['--profile', 'smoke', '--stages', 'profiles', 'tables', '--out', str(tmp_path)])
    assert e.value.code == 2 and ran == []
    assert "unknown stage(s) tables" in capsys.readouterr().err


def test_runs_stage_trains_the_recall_runs_into_the_cache_once(monkeypatch, tmp_path, capsys):
    """The `runs` stage sweeps experiments.all_recall_configs into results/<profile>/runs/recall;
    a second call finds them all cached."""
    from rksp import experiments as E
    from rksp import reproduce
    monkeypatch.setenv('RKSP_RESULTS', str(tmp_path))
    few = E.all_recall_configs('smoke')[:2]
    for _, c in few:
        c['steps'] = 3
    monkeypatch.setattr(E, 'all_recall_configs', lambda profile: few)
    assert reproduce.main(['--profile', 'smoke', '--stages', 'runs', '--executor', 'serial',
                           '--out', str(tmp_path / 'smoke')]) == 0
    assert len(list((tmp_path / 'smoke' / 'runs' / 'recall').glob('*.json'))) == 2
    assert '2 recall runs' in capsys.readouterr().out
    reproduce.main(['--profile', 'smoke', '--stages', 'runs', '--executor', 'serial', '--out', str(tmp_path / 'smoke')])
    assert '(2 were cached)' in capsys.readouterr().out
