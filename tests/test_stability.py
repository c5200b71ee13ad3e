"""Maximum stable learning rate (rksp/experiments/stability.py, paper Table 5)."""

import pandas as pd
import pytest

from rksp import defaults
from rksp.experiments.stability import (divergence_table, is_stable, lr_increase, max_stable_lr, pick_max_stable_lr,
                                        stability_configs, trial_seeds)
from rksp.errors import ConfigError

TINY = dict(task='recall', preset='tiny', n_train=256, n_val=64, batch_size=16, warmup_steps=0,
            profile_at_init=False, model_cfg={'norm': 'none'}, steps=15)


def table(lrs, n, nd):
    return pd.DataFrame({'lr': lrs, 'n': n, 'n_diverged': nd})


# ----------------------------------------------------------------------------- the rule

def test_pick_uses_strictly_below_20_percent_and_both_readings():
    t = table([1e-3, 2e-3, 3e-3, 5e-3, 8e-3], [10] * 5, [0, 2, 1, 1, 3])
    # rates 0, .2, .1, .1, .3: 20% is not stable; 5e-3 is stable above an unstable 2e-3
    assert pick_max_stable_lr(t, threshold=0.2) == (5e-3, 1e-3)
    # row order does not matter
    assert pick_max_stable_lr(t.iloc[::-1], threshold=0.2) == (5e-3, 1e-3)
    # all stable / none stable / first unstable
    assert pick_max_stable_lr(table([1e-3, 1e-2], [3, 3], [0, 0]), 0.2) == (1e-2, 1e-2)
    assert pick_max_stable_lr(table([1e-3, 1e-2], [3, 3], [1, 3]), 0.2) == (None, None)
    assert pick_max_stable_lr(table([1e-3, 1e-2], [3, 3], [1, 0]), 0.2) == (1e-2, None)
    assert pick_max_stable_lr(table([], [], []), 0.2) == (None, None)
    # a 'stable' column is used as given when no threshold is passed
    t2 = table([1e-3, 2e-3], [4, 4], [0, 0]).assign(stable=[True, False])
    assert pick_max_stable_lr(t2) == (1e-3, 1e-3)


def test_is_stable_boundaries():
    assert is_stable(0, 3) and not is_stable(1, 3)               # 3 trials: any divergence is >= 33%
    assert is_stable(4, 24) and not is_stable(5, 24)             # 16.7% vs 20.8%
    assert not is_stable(1, 5) and not is_stable(3, 15) and not is_stable(6, 30)   # exactly 20%
    assert is_stable(1, 6)
    assert not is_stable(0, 0)                                   # no finished trial
    assert is_stable(2, 10, threshold=0.25) and not is_stable(3, 10, threshold=0.25)
    assert defaults.MAX_LR_DIVERGENCE == 0.20


def test_divergence_table_from_run_rows_leaves_failed_runs_out():
    runs = pd.DataFrame({'lr': [1e-3] * 3 + [1e-2] * 3,
                         'status': ['ok', 'ok', 'failed', 'ok', 'ok', 'ok'],
                         'diverged': [False, False, None, True, False, False]})
    t = divergence_table(runs)
    assert list(t.columns) == ['lr', 'n', 'n_diverged', 'div_rate', 'stable', 'n_failed']
    assert t['n'].tolist() == [2, 3] and t['n_diverged'].tolist() == [0, 1]
    assert t['n_failed'].tolist() == [1, 0] and t['stable'].tolist() == [True, False]
    assert t['div_rate'].tolist() == pytest.approx([0.0, 1 / 3])


def test_increase_and_seeds():
    assert lr_increase(0.002, 0.005) == pytest.approx(150.0)      # Table 5, No-Norm
    assert lr_increase(0.005, 0.008) == pytest.approx(60.0)       # Pre-LN
    assert lr_increase(0.003, 0.005) == pytest.approx(66.67, abs=0.01)
    assert lr_increase(None, 0.005) is None and lr_increase(0.002, None) is None
    assert trial_seeds(2) == [42, 123]
    assert trial_seeds(5) == [42, 123, 456, 1003, 1004]
    with pytest.raises(ConfigError):
        trial_seeds(0)


def test_stability_configs_grid_and_kss():
    cfgs = stability_configs(TINY, [1e-2, 1e-3], 3, with_kss=True)
    assert len(cfgs) == 6
    assert [c['lr'] for c in cfgs] == [1e-3] * 3 + [1e-2] * 3      # ascending
    assert [c['seed'] for c in cfgs[:3]] == [42, 123, 456]
    assert all(c['hooks'] == [{'target': 'kss', 'kwargs': {'alpha': 0.15, 'projection': 'pod'}}] for c in cfgs)
    assert all(not c.get('hooks') for c in stability_configs(TINY, [1e-3], 1, with_kss=False))
    custom = stability_configs(TINY, [1e-3], 1, with_kss={'alpha': 0.1, 'rank': 8})
    assert custom[0]['hooks'] == [{'target': 'kss', 'kwargs': {'alpha': 0.1, 'rank': 8}}]
    for bad in ([], [0.0], [1e-3, 1e-3], ['x']):
        with pytest.raises(ConfigError):
            stability_configs(TINY, bad, 1)
    with pytest.raises(ConfigError):
        stability_configs(TINY, [1e-3], 1, with_kss={'alpha': -1.0})
    with pytest.raises(ConfigError):
        max_stable_lr(TINY, [1e-3], 1, threshold=0.0)


# ----------------------------------------------------------------------------- end to end

def test_max_stable_lr_tiny_no_norm_and_resume(tmp_path):
    lrs = [10.0, 1e-3]
    max_lr, t = max_stable_lr(TINY, lrs, 2, False, out_dir=tmp_path)
    assert max_lr == 1e-3
    assert t['lr'].tolist() == [1e-3, 10.0]
    assert t['n'].tolist() == [2, 2] and t['n_diverged'].tolist() == [0, 2]
    assert t['div_rate'].tolist() == [0.0, 1.0] and t['stable'].tolist() == [True, False]
    assert t.attrs['max_lr'] == 1e-3 and t.attrs['max_lr_contiguous'] == 1e-3
    assert t.attrs['seeds'] == [42, 123] and t.attrs['n_run'] == 4 and t.attrs['n_cached'] == 0
    assert len(list(tmp_path.glob('*.json'))) == 4
    # second call: everything is cached, nothing new runs, same answer
    max_lr2, t2 = max_stable_lr(TINY, lrs, 2, False, out_dir=tmp_path)
    assert max_lr2 == max_lr and t2.attrs['n_run'] == 0 and t2.attrs['n_cached'] == 4
    pd.testing.assert_frame_equal(t, t2)
    # one route: Table 5 (tables.maxlr, notebook 07) reads the same cached runs through max_lr_summary
    from rksp.experiments.stability import max_lr_summary
    from rksp.experiments.tables.maxlr import maxlr_table
    from rksp.harness.record import load_records
    rows = load_records(tmp_path)
    s = max_lr_summary(rows)
    assert (s['max_lr'], s['max_lr_contiguous'], s['bound']) == (t.attrs['max_lr'], t.attrs['max_lr_contiguous'],
                                                                 t.attrs['bound'])
    t5 = maxlr_table(rows.assign(norm='none', kss=False))
    assert float(t5.iloc[0]['max_lr_without']) == max_lr
    # with KSS (cheap settings) the runs are new ones, in the same directory
    max_lr3, t3 = max_stable_lr(TINY, lrs, 2, {'alpha': 0.15, 'rank': 8}, out_dir=tmp_path)
    assert t3.attrs['n_run'] == 4 and len(list(tmp_path.glob('*.json'))) == 8
    assert max_lr3 == 1e-3
