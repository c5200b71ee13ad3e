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


def test_run_records_pack_and_restore(monkeypatch, tmp_path):
    """The committed archive restores missing records only, packs to identical bytes, and a damaged or
    hostile archive gives one clear error."""
    import tarfile
    import pytest
    from rksp.errors import RKSPInputError
    from rksp.experiments import results_io as R
    monkeypatch.setenv("RKSP_RESULTS", str(tmp_path))
    runs = tmp_path / "small" / "runs"
    (runs / "recall").mkdir(parents=True)
    (runs / "lm").mkdir()
    (runs / "recall" / "aa.json").write_text('{"hash": "aa"}')
    (runs / "lm" / "bb.json").write_text('{"hash": "bb"}')
    arc = R.pack_records("small")
    first = arc.read_bytes()
    assert R.pack_records("small").read_bytes() == first                     # reproducible bytes
    (runs / "recall" / "aa.json").unlink()
    (runs / "lm" / "bb.json").write_text('{"hash": "bb", "kept": true}')   # a cached record is kept
    assert R.unpack_records("small") == 1
    assert (runs / "recall" / "aa.json").read_text() == '{"hash": "aa"}'
    assert "kept" in (runs / "lm" / "bb.json").read_text()
    assert R.unpack_records("small") == 0
    arc.write_bytes(first[:len(first) // 2])
    with pytest.raises(RKSPInputError, match="damaged"):
        R.unpack_records("small")
    with tarfile.open(arc, "w:xz") as tar:                                  # a member outside runs/
        p = tmp_path / "x.json"
        p.write_text("{}")
        tar.add(p, arcname="../x.json")
    with pytest.raises(RKSPInputError, match="unexpected member"):
        R.unpack_records("small")
    arc.unlink()
    assert R.unpack_records("small") == 0

