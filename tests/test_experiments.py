import copy

import numpy as np
import pandas as pd
import pytest

from rksp import experiments as E



from rksp.experiments.tables import common as CM
from rksp.experiments.tables import kss_paths as KP
from rksp.experiments.tables import methods as MT
from rksp.methods.rows import TABLES
from rksp.harness.config import TrainConfig


@pytest.mark.parametrize('profile', E.PLANS)
def test_every_recall_config_of_every_profile_builds(profile):
    labeled = E.all_recall_configs(profile)
    hashes = {TrainConfig.from_dict(copy.deepcopy(c)).hash() for _, c in labeled}
    assert len(hashes) > 10
    p = E.plan(profile)
    for m in TABLES['table3']:
        runs = E.method_configs(profile, [m])
        assert len(runs) == len(p['band_lrs']) * E.method_trials(profile, m)
        assert {c['lr'] for _, c in runs} == set(p['band_lrs'])
        assert all(c['model_cfg']['norm'] == 'none' for _, c in runs)


def test_trial_counts_follow_the_plan():
    assert E.method_trials('paper', 'lion') * 3 == 24 and E.method_trials('paper', 'no_control') * 3 == 24
    assert E.method_trials('small', 'kss_0.15') * 3 == 24 and E.method_trials('small', 'lion') * 3 == 3  # the first cut (docs/regime.md Part 6)
    # display strings and aliases resolve to the same row
    assert E.method_trials('small', 'KSS') == E.method_trials('small', 'KSS α=0.15') == E.method_trials('small', 'kss_0.15')


def test_pool_shares_the_no_control_band_runs_with_the_method_tables():
    pool = {TrainConfig.from_dict(copy.deepcopy(c)).hash() for _, c in E.recall_pool('small')}
    band = {TrainConfig.from_dict(copy.deepcopy(c)).hash() for _, c in E.method_configs('small', ['no_control'])}
    assert band <= pool


def test_unknown_profile_is_rejected():
    with pytest.raises(ValueError, match='unknown profile'):
        E.plan('huge')


def _rows():
    rows = []
    for m, k, n in (('No control', 6, 8), ('KSS α=0.15', 1, 8), ('Lion', 0, 3)):
        for i in range(n):
            div = i < k
            rows.append({'method': m, 'status': 'ok', 'diverged': div, 'diverged_total_grad': div or m != 'No control',
                         'val_acc': np.nan if div else 0.1, 'prof_score': 1.0, 'end_score': np.nan if div else 0.5,
                         'steps_per_sec': 10.0 if m == 'No control' else 8.0, 'data_name': 'recall',
                         'data_is_standin': False})
    return pd.DataFrame(rows)


def test_method_table_counts_rates_fisher_and_paper_columns():
    t = MT.method_table(_rows(), ['No control', 'KSS α=0.15', 'Lion'])
    r = t.set_index('method')
    assert r.loc['No control', 'n_div'] == 6 and r.loc['No control', 'div_pct'] == 75.0
    assert np.isnan(r.loc['No control', 'fisher_p_vs_ref'])
    assert r.loc['KSS α=0.15', 'fisher_p_vs_ref'] == pytest.approx(0.0406, abs=1e-3)   # [[1,7],[6,2]]
    assert r.loc['KSS α=0.15', 'div_pct_total_grad_label'] == 100.0
    assert r.loc['KSS α=0.15', 'overhead_pct'] == pytest.approx(25.0)
    assert r.loc['KSS α=0.15', 'acc_pct'] == pytest.approx(10.0) and r.loc['KSS α=0.15', 'm_near_unit_end'] == 0.5
    assert r.loc['KSS α=0.15', 'paper_div_pct'] == 12.5 and r.loc['Lion', 'n'] == 3
    assert r.loc['Lion', 'div_ci_lo'] == 0.0 and 0 < r.loc['Lion', 'div_ci_hi'] < 100
    assert (t['data'] == 'recall').all()


def test_method_table_of_a_missing_method_is_nan_not_an_error():
    t = MT.method_table(_rows(), ['SAM ρ=0.05'])
    assert t.loc[0, 'n'] == 0 and np.isnan(t.loc[0, 'div_pct'])


def test_data_used_labels_standins():
    df = pd.DataFrame({'data_name': ['pydoc topics', 'pydoc topics'], 'data_is_standin': [True, True]})
    assert CM.data_used(df) == 'pydoc topics (offline stand-in)'


def test_run_labeled_keeps_labels_of_duplicate_configs(tmp_path, monkeypatch):
    monkeypatch.setenv('RKSP_RESULTS', str(tmp_path))
    cfg = dict(task='recall', preset='tiny', n_train=64, n_val=16, batch_size=8, steps=2, warmup_steps=0,
               profile_at_init=False)
    df = E.run_labeled([({'method': 'a'}, cfg), ({'method': 'b'}, dict(cfg)), ({'method': 'c'}, {**cfg, 'seed': 1})],
                       'smoke', executor='serial', verbose=False)
    assert list(df['method']) == ['a', 'b', 'c'] and df['hash'].nunique() == 2 and (df['status'] == 'ok').all()
    assert (tmp_path / 'smoke' / 'runs' / 'recall').is_dir()


def test_claims_round_trip(tmp_path, monkeypatch):
    from rksp.experiments.claims import Claim
    monkeypatch.setenv('RKSP_RESULTS', str(tmp_path))
    E.save_claims([Claim.interval('x', 'a claim', 1.0, 1.01, (0.9, 1.1))], 'smoke', '99_test')
    df = E.collect_claims('smoke')
    assert list(df['source']) == ['99_test'] and df.loc[0, 'verdict'] in ('reproduced', 'inconclusive')


# ----------------------------------------------------------------------------- KSS gradient paths (issue 13)

def test_kss_path_plan_trials_and_shared_default_runs():
    labeled = E.kss_path_configs('small')
    by = {}
    for lab, c in labeled:
        by.setdefault(lab['kss_path'], []).append(c)
    assert len(by['No control']) == 24 and len(by[E.DEFAULT_KSS_PATH]) == 24
    assert set(by) == {'No control', *E.plan('small')['kss_paths']}
    assert all(len(by[n]) == 12 for n in by if n not in (E.DEFAULT_KSS_PATH, 'No control'))
    h = lambda cs: {TrainConfig.from_dict(copy.deepcopy(c)).hash() for c in cs}   # noqa: E731
    # the default path is the tables' KSS α=0.15 row itself (one cache entry per run)
    assert h(by[E.DEFAULT_KSS_PATH]) == h([c for _, c in E.method_configs('small', ['kss_0.15'])])
    assert h(by['No control']) == h([c for _, c in E.method_configs('small', ['no_control'])])
    assert len(h(c for _, c in labeled)) == len(labeled)           # every path is its own run
    kw = by['whitened, W differentiated'][0]['hooks'][0]['kwargs']
    assert kw == {'alpha': 0.15, 'projection': 'whitened', 'detach_whitening': False}
    every = {lab['kss_path'] for lab, _ in E.kss_path_configs('small', list(E.KSS_PATHS))}
    assert every == {'No control', *E.KSS_PATHS}                   # every path stays runnable by name
    kw = [c for lab, c in E.kss_path_configs('small', ['whitened, bound 1x task grad'])
          if lab['kss_path'] != 'No control'][0]['hooks'][0]['kwargs']
    assert kw == {'alpha': 0.15, 'projection': 'whitened', 'grad_bound': 1.0}
    with pytest.raises(ValueError, match='unknown KSS path'):
        E.kss_path_configs('small', ['zca'])


def test_kss_path_ablation_smoke(tmp_path, monkeypatch):
    """Smoke-sized end to end: train, read every application's gradient norms, build the table."""
    monkeypatch.setenv('RKSP_RESULTS', str(tmp_path))
    paths = [E.DEFAULT_KSS_PATH, 'whitened, bound 1x task grad']
    rows, table = E.run_kss_paths('smoke', paths, executor='serial')
    assert (tmp_path / 'smoke' / 'tables' / 'kss_paths.csv').exists()
    assert list(table['kss_path']) == ['No control'] + paths
    n_ref = len(E.plan('smoke')['band_lrs']) * E.method_trials('smoke', 'no_control')
    assert list(table['n']) == [n_ref, 2, 2]                       # 2 band LRs x 1 trial per path
    ratios = KP.kss_grad_ratios(rows)
    steps = E.plan('smoke')['recall']['steps']
    for name in paths:
        r = ratios[ratios['kss_path'] == name]
        t = table.set_index('kss_path').loc[name]
        # every 10 steps, in each non-diverged run
        assert t['n_applications'] == len(r) > 0 and len(r) <= 2 * (steps // 10)
        assert t['ratio_median'] == pytest.approx(r['ratio'].median()) and t['ratio_median'] > 0
        assert 0.0 <= t['share_bound_scaled'] <= 1.0
    bound = ratios[ratios['kss_path'] == paths[1]]
    applied = bound['kss_grad_norm'] * bound['scale']
    assert (applied <= 1.0 * bound['task_grad_norm'] * (1 + 1e-5)).all()
    assert (ratios.loc[ratios['kss_path'] == paths[0], 'scale'] == 1.0).all()
    assert np.isnan(table.set_index('kss_path').loc['No control', 'ratio_median'])


def test_small_plan_has_16_trials_per_norm_and_the_ablation_in_its_run_list():
    """Table 1's per-norm rates over 4 LRs x 4 seeds (docs/regime.md Part 5, row 4; No-Norm adds the 24
    band runs); issue 13: the ablation is prefetched."""
    from collections import Counter
    pool = Counter(lab['norm'] for lab, _ in E.unique_runs(E.recall_pool('small')))
    assert all(pool[n] >= 16 for n in E.NORMS) and pool['none'] == 16 + 24 - 4   # LR 0.01 x 4 seeds in both
    h = lambda cs: {TrainConfig.from_dict(copy.deepcopy(c)).hash() for _, c in cs}   # noqa: E731
    assert h(E.kss_path_configs('small')) <= h(E.all_recall_configs('small'))


def test_small_profile_is_the_papers_stated_recipe():
    """docs/regime.md Part 5: every setting the paper states (App. D) within its range."""
    from rksp.experiments import plans as P
    from rksp.harness.config import TrainConfig
    p = P.plan('small')
    r = p['recall']
    assert 5 <= r['epochs'] <= 20 and 100 <= r['warmup_steps'] <= 1000 and 16 <= r['batch_size'] <= 32
    assert all(0.005 <= lr <= 0.01 for lr in p['band_lrs'])
    assert r['schedule'] == 'cosine' and 'steps' not in r
    # the dose x frequency rows: 12 trials (3 LRs x 4 seeds), the headline rows 24; labels: display strings
    from rksp.methods.rows import TABLES
    assert TABLES['dose_frequency'][-1] == 'kss_2.00_every_step_all_layers'
    cfgs = P.method_configs('small', TABLES['dose_frequency'])
    per = {}
    for lab, c in cfgs:
        per[lab['method']] = per.get(lab['method'], 0) + 1
    assert per['No control'] == per['KSS α=0.15'] == 24 and per['KSS α=2.00, every step, all layers'] == 12
    dense = [c for lab, c in cfgs if lab['method'] == 'KSS α=0.50, every step, all layers'][0]
    kw = dense['hooks'][0]['kwargs']
    assert kw['every'] == 1 and kw['layer_fraction'] == 1.0 and kw['alpha'] == 0.5
    TrainConfig.from_dict(dense)              # validates, hooks included
