import numpy as np
import pandas as pd


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
    """The `runs` stage sweeps plans.all_recall_configs into results/<profile>/runs/recall;
    a second call finds them all cached."""
    from rksp import reproduce
    from rksp.experiments import plans, runs
    monkeypatch.setenv('RKSP_RESULTS', str(tmp_path))
    few = plans.all_recall_configs('smoke')[:2]
    for _, c in few:
        c['steps'] = 3
    monkeypatch.setattr(runs, 'all_recall_configs', lambda profile: few)   # what the runs stage trains
    assert reproduce.main(['--profile', 'smoke', '--stages', 'runs', '--executor', 'serial',
                           '--out', str(tmp_path / 'smoke')]) == 0
    assert len(list((tmp_path / 'smoke' / 'runs' / 'recall').glob('*.json'))) == 2
    assert '2 recall runs' in capsys.readouterr().out
    reproduce.main(['--profile', 'smoke', '--stages', 'runs', '--executor', 'serial', '--out', str(tmp_path / 'smoke')])
    assert '(2 were cached)' in capsys.readouterr().out
