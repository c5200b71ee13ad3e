"""rksp.experiments.tables.norms: Table 1 / Table 2 / App. H builders on synthetic run frames."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rksp.experiments.tables import norms as NT

from rksp.experiments import prediction_stats as PS
from rksp.experiments import paper as P
from rksp.experiments.stats import fisher_exact
from rksp.experiments.prediction_stats import auroc


def _runs(div_none=(1, 1, 0, 1, 0, 0), div_other=0, seed=0, nan_prof=False):
    """Pre-LN / Post-LN / No-Norm runs over 2 LRs x 3 seeds; the init profile depends on (norm, seed)."""
    rng = np.random.default_rng(seed)
    rows = []
    base = {'pre_ln': 0.25, 'post_ln': 0.5, 'none': 1.0}
    for norm in ('pre_ln', 'post_ln', 'none'):
        for si, s in enumerate((42, 123, 456)):
            score = base[norm] if norm == 'none' else base[norm] + 0.01 * si
            for li, lr in enumerate((1e-3, 1e-2)):
                i = si * 2 + li
                d = div_none[i] if norm == 'none' else (div_other if i == 0 else 0)
                rows.append({'hash': f'{norm}{s}{lr}', 'status': 'ok', 'norm': norm, 'seed': s, 'lr': lr,
                             'method': 'No control', 'diverged': bool(d), 'val_acc': 0.01 * (1 + li) + 0.001 * si,
                             'steps': 200, 'steps_done': 50 if d else 200,
                             'prof_score': score, 'prof_m_expansive_mean': 1 - score, 'prof_rho_mean': 1 + score,
                             'prof_kappa_mean': 10.0 + si, 'grad_norm_step1': rng.uniform(),
                             'grad_norm_step100': 600.0 if d else rng.uniform(), 'grad_var_1_100': rng.uniform(),
                             'loss_spikes_1_500': int(d), 'data_name': 'recall', 'data_is_standin': False})
    df = pd.DataFrame(rows)
    if nan_prof:
        df.loc[df['norm'] == 'post_ln', ['prof_score', 'prof_rho_mean']] = None
    return df


def test_pool_dedupes_and_derives():
    df = _runs()
    dup = pd.concat([df, df.iloc[:3]], ignore_index=True)
    dup.loc[len(dup)] = {**df.iloc[0].to_dict(), 'hash': 'failed', 'status': 'failed'}
    pool = NT.pool_runs(dup)
    assert len(pool) == len(df)
    assert set(pool['diverged'].unique()) <= {0.0, 1.0}
    np.testing.assert_allclose(pool['log10_lr'], np.log10(pool['lr']))
    np.testing.assert_allclose(pool['m_x_log10_kappa'], pool['prof_score'] * np.log10(pool['prof_kappa_mean']))
    assert len(NT.init_rows(pool)) == 9


def test_norm_table_counts_rates_and_init_stats():
    pool = NT.pool_runs(_runs(div_other=1))
    t = NT.norm_table(pool, norms=('pre_ln', 'post_ln', 'none')).set_index('norm')
    assert t.loc['No-Norm', 'n'] == 6 and t.loc['No-Norm', 'n_div'] == 3 and t.loc['No-Norm', 'div_pct'] == 50
    assert t.loc['Pre-LN', 'n_div'] == 1
    p = fisher_exact(3, 6, 2, 12)['p']
    assert t.loc['No-Norm', 'fisher_p_vs_rest'] == pytest.approx(p)
    lo, hi = t.loc['No-Norm', ['div_ci_lo', 'div_ci_hi']]
    assert 0 < lo < 50 < hi < 100
    # spectral stats over the 3 inits, not the 6 runs
    assert t.loc['Pre-LN', 'n_inits'] == 3
    assert t.loc['Pre-LN', 'm_near_unit_mean'] == pytest.approx(0.26)
    assert t.loc['Pre-LN', 'm_near_unit_sd'] == pytest.approx(0.01)
    assert t.loc['No-Norm', 'm_near_unit_sd'] == 0
    # accuracy over the non-diverged runs only
    nn = pool[(pool['norm'] == 'none') & (pool['diverged'] == 0)]
    assert t.loc['No-Norm', 'n_acc'] == 3
    assert t.loc['No-Norm', 'acc_pct_mean'] == pytest.approx(100 * nn['val_acc'].mean())
    assert t.loc['No-Norm', 'paper_m_near_unit'] == P.TABLE1['none']['m_near_unit']
    assert t.loc['No-Norm', 'data'] == 'recall'


def test_norm_table_all_diverged_nan_profile_and_missing_norm():
    df = _runs(div_none=(1,) * 6, nan_prof=True)
    t = NT.norm_table(NT.pool_runs(df)).set_index('norm')
    assert len(t) == 6
    assert math.isnan(t.loc['No-Norm', 'acc_pct_mean']) and 'every run diverged' in t.loc['No-Norm', 'note']
    assert math.isnan(t.loc['Post-LN', 'm_near_unit_mean']) and 'without an RKSP profile' in t.loc['Post-LN', 'note']
    assert t.loc['SubLN', 'n'] == 0 and t.loc['SubLN', 'note'] == 'no runs'


def test_nonorm_vs_rest():
    pool = NT.pool_runs(_runs())
    r = NT.nonorm_vs_rest(pool)
    assert (r['k_norm'], r['n_norm'], r['k_rest'], r['n_rest']) == (3, 6, 0, 12)
    assert r['p'] == pytest.approx(fisher_exact(3, 6, 0, 12)['p'])
    assert r['delta'] == pytest.approx(0.5) and r['lo'] < 0.5 < r['hi']


def test_mean_diff_and_mean_ci():
    a, b = [1.0, 1.2, 1.1, 1.3], [0.5, 0.7, 0.6]
    r = NT.mean_diff(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert r['p'] == pytest.approx(ref.pvalue) and r['delta'] == pytest.approx(np.mean(a) - np.mean(b))
    assert r['lo'] < r['delta'] < r['hi']
    z = NT.mean_diff([1, 1, 1], [0.5, 0.5])
    assert z['p'] == 0 and z['lo'] == z['hi'] == 0.5 and 'zero spread' in z['note']
    one = NT.mean_diff([1.0], [0.5, 0.6])
    assert math.isnan(one['p']) and 'fewer than 2' in one['note'] and one['delta'] == pytest.approx(0.45)
    assert 'empty' in NT.mean_diff([], [1.0])['note']
    m, lo, hi, n = NT.mean_ci([1.0, 2.0, 3.0, np.nan])
    assert n == 3 and m == 2 and lo == pytest.approx(2 - sps.t.ppf(0.975, 2) / math.sqrt(3))
    assert math.isnan(NT.mean_ci([1.0])[1])


def test_table2_values_timing_paper_and_horizon_note():
    pool = NT.pool_runs(_runs())
    t = NT.table2(pool, n_boot=50).set_index('predictor')
    assert list(t.index) == list(NT.TABLE2_PREDICTORS)
    assert t.loc['M≈1 at init', 'auroc'] == pytest.approx(auroc(pool['m_near_unit'], pool['diverged']))
    assert t.loc['M≈1 at init', 'timing'] == 'init (before training)'
    assert t.loc['M≈1 at init', 'paper_auroc'] == P.TABLE2['M≈1 at init'][0]
    # a baseline is read at its step only for runs that trained to it: runs that diverged before step 100
    # are left out (their value would be read just before the divergence and see the label), and counted
    note = t.loc['Gradient norm at step 100', 'note']
    assert 'read at step 100' in note and 'run(s) that stopped before step 100 excluded' in note
    early = pool['steps_done'] < 100
    assert early.any() and pool.loc[early, 'grad_norm_step100'].isna().all()
    assert pool.loc[~early, 'grad_norm_step100'].notna().all()
    # the bootstrap resamples inits, not runs (runs of one init share its profile)
    assert t.loc['M≈1 at init', 'n'] == len(pool) and pool['init_id'].nunique() < len(pool)
    assert 0 <= t.loc['M≈1 at init', 'p'] <= 1
    assert t.loc['Initial gradient norm', 'lo'] <= t.loc['Initial gradient norm', 'auroc']


def test_no_divergence_gives_nan_with_notes():
    pool = NT.pool_runs(_runs(div_none=(0,) * 6))
    t2 = NT.table2(pool, n_boot=20)
    assert t2['auroc'].isna().all() and t2['note'].str.contains('one class only').all()
    st = NT.stratified_table(pool, n_boot=20)
    assert not st['both_classes'].any() and st['auroc'].isna().all()
    lt, probs = NT.logistic_table(pool, n_boot=20)
    assert lt['auroc'].isna().all() and all(p.isna().all() for p in probs.values())
    best = NT.paired_best_baseline(pool, t2, n_boot=20)
    assert best['baseline'] is None and math.isnan(best['diff'])
    ct, bins = NT.calibration_table(pool, {'raw': pool['m_near_unit'], 'cv': probs['CV logistic [M≈1]']},
                                    n_boot=20, paper_raw='raw')
    ct = ct.set_index('variant')
    assert ct.loc['raw', 'ece'] == pytest.approx(pool['m_near_unit'].mean())   # all labels 0
    assert 'one class only' in ct.loc['raw', 'note'] and ct.loc['raw', 'paper_ece'] == P.ECE
    assert math.isnan(ct.loc['cv', 'ece']) and 'no predictions' in ct.loc['cv', 'note']
    assert math.isnan(ct.loc['cv', 'paper_ece'])


def test_stratified_table_one_class_strata_and_constant_score():
    pool = NT.pool_runs(_runs())
    st = NT.stratified_table(pool, n_boot=50)
    nn = st[st['norm'] == 'No-Norm'].set_index('predictor')
    assert nn['both_classes'].all() and (st[st['norm'] != 'No-Norm']['both_classes'] == False).all()  # noqa: E712
    assert nn.loc['M≈1 at init', 'auroc'] == 0.5
    assert 'cannot rank' in nn.loc['M≈1 at init', 'note']
    assert nn.loc['M≈1 at init', 'n_runs'] == 6 and nn.loc['M≈1 at init', 'n_div'] == 3
    lr_auc = auroc(pool.loc[pool['norm'] == 'none', 'log10_lr'], pool.loc[pool['norm'] == 'none', 'diverged'])
    assert nn.loc['log10 LR (reference, not an init score)', 'auroc'] == pytest.approx(lr_auc)
    assert list(dict.fromkeys(st['norm'])) == ['Pre-LN', 'Post-LN', 'No-Norm']


def test_logistic_table_and_best_baseline():
    pool = NT.pool_runs(_runs(div_other=1))
    lt, probs = NT.logistic_table(pool, n_boot=50)
    assert list(lt['predictor']) == list(NT.LOGISTIC_SETS)
    assert lt['n'].eq(len(pool)).all() and lt['auroc'].between(0, 1).all()
    assert all(p.index.equals(pool.index) for p in probs.values())
    t2 = NT.table2(pool, n_boot=50)
    best = NT.paired_best_baseline(pool, t2, n_boot=50)
    assert best['baseline'] in NT.GRADIENT_BASELINES
    assert best['auroc_b'] == t2[t2['predictor'].isin(NT.GRADIENT_BASELINES)]['auroc'].max()
    assert best['lo'] <= best['diff'] <= best['hi']


def test_ece_ci_brackets_ece():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=200)
    y = (rng.uniform(size=200) < p).astype(float)
    from rksp.experiments.prediction_stats import ece
    lo, hi = PS.ece_ci(p, y, n_boot=100, seed=3)
    idx = np.random.default_rng(3).integers(0, 200, size=(100, 200))
    ref = [ece(p[i], y[i])['ece'] for i in idx]          # the same resamples through stats.ece
    assert (lo, hi) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])))
    assert lo < hi
    assert all(math.isnan(v) for v in PS.ece_ci([0.5], [1], n_boot=10))


def test_init_eigenvalues_match_the_harness_profile():
    import rksp.experiments as E
    from rksp.harness.loop import train
    cfg = {**E.recall_base('smoke', 'pre_ln'), 'lr': 1e-3, 'seed': 7, 'steps': 1, 'warmup_steps': 0,
           'profile_at_end': False, 'n_train': 64, 'n_val': 16}
    rec = train(cfg)
    ev = NT.init_eigenvalues(cfg)
    assert len(ev) == len(rec['profile']['layers'])
    for e, layer in zip(ev, rec['profile']['layers']):
        near = np.mean((np.abs(e) >= 0.9) & (np.abs(e) <= 1.05))
        assert near == pytest.approx(layer['m_near_unit'])
        assert np.abs(e).max() == pytest.approx(layer['rho'], rel=1e-9)


def test_figures_build():
    rng = np.random.default_rng(0)
    eigs = {'A': [rng.normal(size=8) + 1j * rng.normal(size=8), np.array([40.0 + 0j, 1.0])], 'B': []}
    fig = NT.eigenvalue_figure(eigs, ncols=3)
    assert len(fig.axes) == 3
    pool = NT.pool_runs(_runs())
    fig = NT.roc_figure(pool['diverged'], {'M≈1': pool['m_near_unit'], 'none': pool['m_near_unit'] * np.nan})
    assert fig.axes
    ct, bins = NT.calibration_table(pool, {'raw': pool['m_near_unit']}, n_boot=10)
    fig = NT.reliability_figure(bins, dict(zip(ct['variant'], ct['ece'])))
    assert len(fig.axes) == 2


def test_norm_identity_rows_of_table2():
    """Issue 14: the AUROC of the normalization identity alone, and of M≈1 once the norm is known."""
    pool = NT.pool_runs(_runs(div_none=(1, 1, 0, 1, 0, 1)))   # only No-Norm diverges (4/6)
    t = NT.norm_identity_table(pool, n_boot=50).set_index('predictor')
    assert list(t.index) == list(NT.NORM_IDENTITY_PREDICTORS)
    # in-sample per-norm rate: No-Norm runs score 4/6, every other run 0 -> the AUROC of "is No-Norm"
    is_none = (pool['norm'] == 'none').astype(float)
    rate = NT.NORM_IDENTITY_PREDICTORS[1]
    assert t.loc[rate, 'auroc'] == pytest.approx(auroc(is_none, pool['diverged']))
    # 4 positives x 12 other-norm negatives ranked right, 4 x 2 No-Norm negatives tied: (48 + 4) / 56
    assert t.loc[rate, 'auroc'] == pytest.approx(52 / 56)
    # here M≈1 is exactly "is No-Norm" plus a within-norm constant: it adds nothing to the identity
    assert auroc(pool['m_near_unit'], pool['diverged']) == pytest.approx(t.loc[rate, 'auroc'])
    assert 0.5 <= t.loc[NT.NORM_IDENTITY_PREDICTORS[0], 'auroc'] <= 1.0
    assert '3 normalization(s)' in t.loc[rate, 'note']
    # table2 appends the rows on request, with their timing and no paper value
    t2 = NT.table2(pool, n_boot=20, norm_identity=True).set_index('predictor')
    assert list(t2.index) == list(NT.TABLE2_PREDICTORS) + list(NT.NORM_IDENTITY_PREDICTORS)
    assert t2.loc[rate, 'timing'].startswith('init') and math.isnan(t2.loc[rate, 'paper_auroc'])
    assert list(NT.table2(pool, n_boot=20).index) == list(range(len(NT.TABLE2_PREDICTORS)))


def test_norm_identity_with_one_norm_is_uninformative():
    pool = NT.pool_runs(_runs())
    pool = pool[pool['norm'] == 'none'].reset_index(drop=True)
    t = NT.norm_identity_table(pool, n_boot=20).set_index('predictor')
    assert t.loc[NT.NORM_IDENTITY_PREDICTORS[1], 'auroc'] == pytest.approx(0.5)


def test_norm_table_init_column_and_inits_keyed_by_init():
    df = _runs()
    assert (NT.norm_table(NT.pool_runs(df))['init'] == '').all()   # frames without an init column
    df['init'], df['init_std'] = 'gpt2', 0.02
    t = NT.norm_table(NT.pool_runs(df)).set_index('norm')
    assert t.loc['No-Norm', 'init'] == 'gpt2 σ=0.02'
    other = df.copy()
    other['init'], other['init_std'], other['hash'] = 'normal', 0.04, other['hash'] + 'n'
    pool = NT.pool_runs(pd.concat([df, other], ignore_index=True))
    t = NT.norm_table(pool).set_index('norm')
    assert t.loc['No-Norm', 'init'] == 'gpt2 σ=0.02; normal σ=0.04'
    assert t.loc['No-Norm', 'n_inits'] == 6   # 3 seeds x 2 inits: one init profile each


def test_norm_lr_table_reports_survivors_accuracy_per_norm_and_lr():
    import pandas as pd
    from rksp.experiments.tables.norms import norm_lr_table
    pool = pd.DataFrame({'norm': ['pre_ln'] * 4 + ['none'] * 2, 'lr': [1e-3, 1e-3, 1e-2, 1e-2, 1e-3, 1e-3],
                         'diverged': [0, 0, 1, 0, 1, 1], 'val_acc': [0.2, 0.1, 0.0, 0.05, 0.0, 0.0]})
    t = norm_lr_table(pool, norms=('pre_ln', 'none')).set_index(['norm', 'lr'])
    assert t.loc[('Pre-LN', 1e-3), 'acc_pct'] == pytest.approx(15.0) and t.loc[('Pre-LN', 1e-3), 'n_acc'] == 2
    assert t.loc[('Pre-LN', 1e-2), 'n_div'] == 1 and t.loc[('Pre-LN', 1e-2), 'acc_pct'] == pytest.approx(5.0)
    assert t.loc[('No-Norm', 1e-3), 'div_pct'] == 100.0 and np.isnan(t.loc[('No-Norm', 1e-3), 'acc_pct'])
