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


def _arm(counts):
    """runs of one Table 5 arm: {lr: (n_diverged, n)} -> the frame max_lr_summary reads."""
    from rksp.experiments.stability import max_lr_summary
    rows = [{'lr': lr, 'diverged': i < k, 'status': 'ok'} for lr, (k, n) in counts.items() for i in range(n)]
    return max_lr_summary(pd.DataFrame(rows))


def test_bracket_rule_adds_the_geometric_midpoint_until_within_ratio():
    from rksp.experiments.stability import next_bracket_lr
    # stable up to 1e-2, unstable at 3e-2: midpoint sqrt(3e-4) = 0.0173 (3 significant digits)
    assert next_bracket_lr(_arm({1e-3: (0, 4), 1e-2: (0, 4), 3e-2: (4, 4)})) == pytest.approx(0.0173)
    # the criterion is < 20 %: 1 of 4 diverged at 0.0173 is unstable, so the bracket is [1e-2, 0.0173]
    assert next_bracket_lr(_arm({1e-2: (0, 4), 0.0173: (1, 4), 3e-2: (4, 4)})) == pytest.approx(0.0132)
    # within 1.25x: decided
    assert next_bracket_lr(_arm({1e-2: (0, 4), 0.0115: (2, 4), 3e-2: (4, 4)})) is None
    # a non-monotone grid: the largest stable LR and the next unstable LR above it
    assert next_bracket_lr(_arm({1e-3: (0, 4), 3e-3: (2, 4), 1e-2: (0, 4), 1.2e-2: (4, 4)})) is None


def test_bracket_rule_extends_a_grid_that_has_no_threshold_and_stops_at_its_limits():
    from rksp.experiments.stability import next_bracket_lr
    assert next_bracket_lr(_arm({1e-3: (0, 4), 3e-2: (0, 4)})) == pytest.approx(0.09)          # nothing unstable
    assert next_bracket_lr(_arm({1e-3: (0, 4), 0.27: (0, 4)})) is None                          # 0.81 > 0.3
    assert next_bracket_lr(_arm({1e-3: (4, 4), 3e-2: (4, 4)})) == pytest.approx(3.33e-4)       # nothing stable
    assert next_bracket_lr(_arm({1.11e-4: (1, 4), 3e-2: (4, 4)})) is None                       # 3.7e-5 < 1e-4
    assert next_bracket_lr({'lrs': [], 'max_lr': None}) is None                               # no runs


def test_maxlr_runs_refines_each_arm_by_the_rule(monkeypatch):
    """The driver on a fake trainer whose runs diverge above a per-arm threshold: it stops with
    every arm's bracket within 1.25x, and a second call (everything cached) adds nothing."""
    from rksp.experiments import plans, runs
    profile = 'small'
    thr = {('pre_ln', False): 0.02, ('pre_ln', True): 0.05, ('rmsnorm', False): 0.02, ('rmsnorm', True): 0.05,
           ('none', False): 0.004, ('none', True): 0.006}
    trained = []

    def fake_run_labeled(labeled, profile, **kw):
        out = []
        for lab, c in labeled:
            key = (c['model_cfg']['norm'], bool(c.get('hooks')))
            trained.append((key, c['lr'], c['seed']))
            out.append({**lab, 'lr': c['lr'], 'seed': c['seed'], 'hash': f"{key}{c['lr']}{c['seed']}",
                        'diverged': c['lr'] > thr[key], 'status': 'ok'})
        return pd.DataFrame(out)

    monkeypatch.setattr(runs, 'run_labeled', fake_run_labeled)
    rows = runs.maxlr_runs(profile)
    from rksp.experiments.stability import max_lr_summary
    for (norm, kss), t in thr.items():
        arm = rows[(rows['norm'] == norm) & (rows['kss'].astype(bool) == kss)].drop_duplicates('hash')
        s = max_lr_summary(arm)
        assert s['max_lr'] is not None and s['max_lr'] <= t
        above = [x for x in s['lrs'] if x > s['max_lr']]
        assert above and above[0] / s['max_lr'] <= 1.25 + 1e-9, (norm, kss, s['lrs'])
    assert rows.attrs['bracket_extra_lrs']
    # every added LR has the plan's maxlr_trials seeds
    n = plans.plan(profile)['maxlr_trials']
    added = pd.DataFrame(trained, columns=['arm', 'lr', 'seed']).drop_duplicates()
    assert (added.groupby(['arm', 'lr'])['seed'].nunique() >= n).all()
