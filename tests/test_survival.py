"""Time to divergence as an endpoint (rksp.experiments.survival): textbook values, scipy cross-checks,
the paired sign-flip test on hand cases, censoring, and bad input."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rksp.errors import RKSPInputError
from rksp.experiments import survival as S

# Freireich et al. (1963) remission times in weeks, the 6-MP / placebo leukemia trial (Gehan 1965; Klein &
# Moeschberger Sec. 1.2; R's MASS::gehan). (time, 1 = relapse observed / 0 = censored)
SIX_MP = [(6, 1), (6, 1), (6, 1), (6, 0), (7, 1), (9, 0), (10, 1), (10, 0), (11, 0), (13, 1), (16, 1), (17, 0),
          (19, 0), (20, 0), (22, 1), (23, 1), (25, 0), (32, 0), (32, 0), (34, 0), (35, 0)]
PLACEBO = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]


def six_mp():
    return np.array([t for t, _ in SIX_MP], float), np.array([e for _, e in SIX_MP], bool)


def placebo():
    return np.array(PLACEBO, float), np.ones(len(PLACEBO), bool)


def runs_frame(groups):
    """A runs DataFrame (method, div_step NaN = none, steps_done) from {name: (times, events)}."""
    rows = []
    for g, (t, d) in groups.items():
        for tt, dd in zip(t, d):
            rows.append({'method': g, 'div_step': tt if dd else np.nan, 'steps_done': tt})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- Kaplan–Meier

def test_kaplan_meier_of_the_6mp_arm_matches_the_published_table():
    """Product limit by hand at the 7 relapse times (n at risk, d relapses):
    6 (21, 3): 18/21 = 0.8571;  7 (17, 1): x 16/17 = 0.8067;  10 (15, 1): x 14/15 = 0.7529;
    13 (12, 1): x 11/12 = 0.6902;  16 (11, 1): x 10/11 = 0.6275;  22 (7, 1): x 6/7 = 0.5378;
    23 (6, 1): x 5/6 = 0.4482. Greenwood SEs as printed by Klein & Moeschberger (Table 4.1A):
    0.0764, 0.0869, 0.0963, 0.1068, 0.1141, 0.1282, 0.1346."""
    km = S.kaplan_meier(*six_mp())
    ev = km[km['n_events'] > 0].reset_index(drop=True)
    assert ev['step'].tolist() == [6, 7, 10, 13, 16, 22, 23]
    assert ev['n_at_risk'].tolist() == [21, 17, 15, 12, 11, 7, 6]
    expect = np.cumprod([18 / 21, 16 / 17, 14 / 15, 11 / 12, 10 / 11, 6 / 7, 5 / 6])
    np.testing.assert_allclose(ev['frac_surviving'], expect, rtol=1e-12)
    np.testing.assert_allclose(ev['se'], [0.0764, 0.0869, 0.0963, 0.1068, 0.1141, 0.1282, 0.1346], atol=6e-5)
    # the censoring times are rows too (flat), and the first row is step 0 with S = 1
    assert km.iloc[0][['step', 'frac_surviving', 'n_at_risk']].tolist() == [0, 1.0, 21]
    assert km['n_censored'].sum() == 12 and km['n_events'].sum() == 9


def test_log_log_band_matches_scipy_and_the_hand_formula():
    t, d = six_mp()
    km = S.kaplan_meier(t, d)
    ev = km[km['n_events'] > 0]
    sc = stats.ecdf(stats.CensoredData.right_censored(t, ~d)).sf
    ci = sc.confidence_interval(0.95, method='log-log')
    at = np.searchsorted(sc.quantiles, ev['step'])
    np.testing.assert_allclose(ev['ci_lo'], ci.low.probabilities[at], rtol=1e-9)
    np.testing.assert_allclose(ev['ci_hi'], ci.high.probabilities[at], rtol=1e-9)
    # by hand at t = 6: S = 6/7, Var log S = 3 / (21 * 18), w = 1.96 sqrt(V) / |log S|, S^exp(+-w)
    s, v = 6 / 7, 3 / (21 * 18)
    w = stats.norm.ppf(0.975) * math.sqrt(v) / abs(math.log(s))
    assert ev['ci_lo'].iloc[0] == pytest.approx(s ** math.exp(w))
    assert ev['ci_hi'].iloc[0] == pytest.approx(s ** math.exp(-w))


def test_without_censoring_km_is_the_empirical_survival_function():
    rng = np.random.default_rng(1)
    t = rng.integers(1, 40, size=25).astype(float)
    km = S.kaplan_meier(t, np.ones(len(t), bool))
    for _, r in km.iterrows():
        assert r['frac_surviving'] == pytest.approx(np.mean(t > r['step']))
    assert km['frac_surviving'].iloc[-1] == 0.0


def test_median_and_its_ci_from_the_band():
    """6-MP: S first <= 1/2 at 23 (0.448); placebo at 8 (12/21 * 8/12 = 0.381). The CI is read off the
    log-log band: lower = first time the lower band <= 1/2, upper = first time the upper band <= 1/2."""
    km = S.kaplan_meier(*six_mp())
    m = S.km_median(km)
    assert m['median_step'] == 23
    assert m['median_ci_lo'] == km.loc[km['ci_lo'] <= 0.5, 'step'].iloc[0] == 13
    assert math.isnan(m['median_ci_hi'])          # the upper band never reaches 1/2: not reached
    mp = S.km_median(S.kaplan_meier(*placebo()))
    assert mp['median_step'] == 8 and mp['median_ci_lo'] <= 8 <= mp['median_ci_hi']
    # fewer than half diverged: not reached
    runs = runs_frame({'a': (np.array([5., 100, 100, 100]), np.array([1, 0, 0, 0], bool))})
    med = S.median_table(runs)
    assert math.isnan(med['median_step'].iloc[0]) and 'not reached' in med['note'].iloc[0]
    assert med[['n_runs', 'n_events', 'n_censored']].iloc[0].tolist() == [4, 1, 3]


def test_km_table_and_horizon_censoring():
    runs = pd.DataFrame({'method': ['a'] * 4 + ['b'] * 3,
                         'div_step': [10, 50, np.nan, 300, 20, np.nan, np.nan],
                         'steps_done': [10, 50, 400, 300, 20, 400, 400]})
    km = S.km_table(runs)
    assert set(km['method']) == {'a', 'b'} and list(km.columns) == ['method', *S.KM_COLUMNS]
    a = km[km['method'] == 'a']
    assert a['frac_surviving'].iloc[-1] == pytest.approx(0.75 * 2 / 3 * 0.5)
    # horizon 100: the divergence at 300 and the run to 400 become censored at 100
    kh = S.km_table(runs, horizon=100)
    ah = kh[kh['method'] == 'a']
    assert ah['step'].max() == 100 and ah['n_events'].sum() == 2 and ah['n_censored'].sum() == 2
    assert ah['frac_surviving'].iloc[-1] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- log-rank and Cox

def test_logrank_on_the_leukemia_data_matches_the_published_values_and_scipy():
    """Published (e.g. R survdiff on MASS::gehan): 6-MP O = 9, E = 19.25; placebo O = 21, E = 10.75;
    chi^2 = 16.79 on 1 df, p = 4.2e-5."""
    r = S.logrank(*six_mp(), *placebo())
    assert r['observed_1'] == 9 and r['observed_2'] == 21
    assert r['expected_1'] == pytest.approx(19.25, abs=0.01) and r['expected_2'] == pytest.approx(10.75, abs=0.01)
    assert r['chi2'] == pytest.approx(16.79, abs=0.01)
    t, d = six_mp()
    ref = stats.logrank(stats.CensoredData.right_censored(t, ~d), stats.CensoredData(uncensored=PLACEBO))
    assert r['chi2'] == pytest.approx(ref.statistic ** 2, rel=1e-10)
    assert r['p'] == pytest.approx(ref.pvalue, rel=1e-8)
    assert r['p'] == pytest.approx(stats.chi2.sf(r['chi2'], 1))
    tab = S.logrank_table(runs_frame({'placebo': placebo(), '6-MP': six_mp()}), reference='placebo')
    assert tab['method'].tolist() == ['6-MP'] and tab['chi2'].iloc[0] == pytest.approx(r['chi2'])


def test_cox_breslow_on_the_leukemia_data():
    """Published Breslow-ties fit (placebo vs 6-MP, e.g. R coxph(..., ties='breslow') on MASS::gehan):
    beta = 1.509, se = 0.410, HR = 4.52."""
    (tp, dp), (tm, dm) = placebo(), six_mp()
    r = S.cox_binary(np.r_[tp, tm], np.r_[dp, dm], np.r_[np.ones(len(tp)), np.zeros(len(tm))])
    assert r['converged'] and r['beta'] == pytest.approx(1.509, abs=5e-4) and r['se'] == pytest.approx(0.410, abs=5e-4)
    assert r['hr'] == pytest.approx(math.exp(r['beta'])) and r['hr_ci_lo'] < r['hr'] < r['hr_ci_hi']
    assert r['hr_ci_lo'] == pytest.approx(math.exp(r['beta'] - stats.norm.ppf(0.975) * r['se']))


def test_cox_score_test_equals_logrank_without_ties():
    rng = np.random.default_rng(3)
    t = rng.permutation(np.arange(1, 41)).astype(float)       # distinct times: no ties
    d = rng.random(40) < 0.7
    x = np.r_[np.ones(20), np.zeros(20)]
    r = S.cox_binary(t, d, x)
    lr = S.logrank(t[:20], d[:20], t[20:], d[20:])
    assert r['score_chi2'] == pytest.approx(lr['chi2'], rel=1e-10)


def test_cox_recovers_a_known_hazard_ratio():
    rng = np.random.default_rng(7)
    n, hr = 4000, 0.4
    t0, t1 = rng.exponential(1.0, n), rng.exponential(1 / hr, n)      # hazards 1 and 0.4
    c = rng.exponential(2.0, 2 * n)                                   # random censoring
    t = np.r_[t0, t1]
    d, tt = t <= c, np.minimum(t, c)
    r = S.cox_binary(tt, d, np.r_[np.zeros(n), np.ones(n)])
    assert r['hr'] == pytest.approx(hr, rel=0.08) and r['hr_ci_lo'] < hr < r['hr_ci_hi']
    runs = pd.DataFrame({'method': ['ref'] * n + ['kss'] * n, 'div_step': np.where(d, tt, np.nan), 'steps_done': tt})
    tab = S.hazard_ratio_table(runs, reference='ref')
    assert tab['hr'].iloc[0] == pytest.approx(r['hr']) and tab['method'].iloc[0] == 'kss'


def test_cox_monotone_likelihood_is_reported_not_fitted():
    runs = pd.DataFrame({'method': ['ref'] * 4 + ['kss'] * 4,
                         'div_step': [5, 8, 9, 12, np.nan, np.nan, np.nan, np.nan],
                         'steps_done': [5, 8, 9, 12] + [50] * 4})
    tab = S.hazard_ratio_table(runs, reference='ref')
    assert tab['hr'].iloc[0] == 0.0 and math.isnan(tab['hr_ci_hi'].iloc[0]) and 'monotone' in tab['note'].iloc[0]
    assert not tab['converged'].iloc[0]


# ----------------------------------------------------------------------------- paired runs

def test_sign_flip_exact_p_on_hand_cases():
    # all 5 pairs one way: only the all-+ and all-- patterns reach |S| = 5 of 2^5
    r = S.sign_flip_test([1, 1, 1, 1, 1])
    assert r['exact'] and r['p'] == 2 / 32 and r['p_greater'] == 1 / 32
    # 4 of 5 one way: |S| >= 3 for the 2 + 2*5 patterns with at most one sign against: 12/32
    assert S.sign_flip_test([1, 1, 1, 1, -1])['p'] == 12 / 32
    # zero scores do not change p: the same as three pairs all one way (2/8)
    assert S.sign_flip_test([1, 1, 1, 0, 0])['p'] == 2 / 8
    assert S.sign_flip_test([0, 0])['p'] == 1.0
    # Monte Carlo above 16 nonzero pairs, with a fixed seed (reproducible); exact value is 2/2^20
    a, b = S.sign_flip_test(np.ones(20), n_resamples=5000), S.sign_flip_test(np.ones(20), n_resamples=5000)
    assert not a['exact'] and a['p'] == b['p'] == pytest.approx(1 / 5001, abs=2 / 5001)


def test_gehan_scores_under_censoring():
    #            A: (time, event)   B: (time, event)   score
    cases = [((100, True), (50, True), 1),      # both diverged, A later
             ((30, True), (50, True), -1),      # A earlier
             ((40, True), (40, True), 0),       # same step
             ((500, False), (50, True), 1),     # A survived past B's divergence
             ((500, False), (500, False), 0),   # both censored: undecidable
             ((50, False), (80, True), 0),      # A censored before B's divergence: undecidable
             ((80, True), (50, False), 0),      # B censored before A's divergence: undecidable
             ((50, False), (50, True), 1),      # censored at B's divergence step: A survived that step
             ((50, True), (500, False), -1)]
    ta, da, tb, db = (np.array([c[i][j] for c in cases]) for i in (0, 1) for j in (0, 1))
    assert S.gehan_scores(ta, da, tb, db).tolist() == [c[2] for c in cases]


def test_paired_table_pairs_on_lr_and_seed():
    rows = []
    for i, (lr, seed) in enumerate([(1e-3, 0), (1e-3, 1), (3e-3, 0), (3e-3, 1), (1e-2, 0), (1e-2, 1)]):
        ref = 100 + 10 * i
        rows.append({'method': 'No control', 'lr': lr, 'seed': seed, 'div_step': ref, 'steps_done': ref})
        if i < 5:   # five pairs: KSS later (one never diverges, censored at 1000)
            k = ref + 50 if i else np.nan
            rows.append({'method': 'KSS', 'lr': lr, 'seed': seed, 'div_step': k, 'steps_done': 1000 if i == 0 else k})
    runs = pd.DataFrame(rows[::-1])          # the order of the rows does not matter
    tab = S.paired_table(runs, reference='No control')
    r = tab.iloc[0]
    assert r['method'] == 'KSS' and r['n_pairs'] == 5 and r['unpaired'] == 1
    assert (r['n_later'], r['n_earlier'], r['n_undecided']) == (5, 0, 0)
    assert r['p'] == 2 / 32 and r['exact'] and r['statistic'] == 5
    assert r['median_step_diff'] == 50 and r['mean_step_diff'] == pytest.approx((900 + 4 * 50) / 5)
    # at horizon 120 every KSS run is censored at 120; the references diverge at 100, 110, 120 (ordered:
    # the run censored at 120 survived step 120) and 130, 140 (censored at 120: both censored, undecidable)
    h = S.paired_table(runs, reference='No control', horizon=120).iloc[0]
    assert h['n_both_censored'] == 2 and h['n_later'] == 3 and h['n_undecided'] == 2 and h['p'] == 2 / 8
    assert h['median_step_diff'] == 0 and h['mean_step_diff'] == pytest.approx((20 + 10 + 0 + 0 + 0) / 5)


# ----------------------------------------------------------------------------- figure and bad input

def test_km_figure_draws_curves_bands_and_censoring_ticks():
    km = S.km_table(runs_frame({'placebo': placebo(), '6-MP': six_mp()}))
    fig = S.km_figure(km, 'leukemia')
    ax = fig.axes[0]
    assert len(ax.collections) == 2                       # the two CI bands
    ticks = [ln for ln in ax.lines if ln.get_marker() == '|']
    assert len(ticks) == 2 and len(ticks[1].get_xdata()) == 11   # 6-MP: 11 distinct censoring times
    import matplotlib.pyplot as plt
    plt.close(fig)


@pytest.mark.parametrize('events, steps, match', [
    ([5, np.nan], [-1, 10], 'negative steps'),
    ([-3, np.nan], [10, 10], 'negative divergence'),
    ([50, np.nan], [40, 100], 'beyond the 40 steps'),
    ([5, 6], [10], '2 divergence steps but 1'),
    ([], [], 'empty group'),
    ([np.inf], [10], 'infinite'),
])
def test_bad_inputs_raise_the_project_error(events, steps, match):
    with pytest.raises(RKSPInputError, match=match):
        S.survival_times(events, steps)


def test_bad_frames_raise_the_project_error():
    runs = runs_frame({'a': (np.array([5., 9]), np.array([1, 1], bool))})
    with pytest.raises(RKSPInputError, match='empty group'):
        S.median_table(runs, groups=['a', 'b'])
    with pytest.raises(RKSPInputError, match='reference group'):
        S.logrank_table(runs, reference='zzz')
    with pytest.raises(RKSPInputError, match=r"no column.*'lr'"):
        S.paired_table(runs, reference='a')
    with pytest.raises(RKSPInputError, match='horizon'):
        S.km_table(runs, horizon=-5)
    with pytest.raises(RKSPInputError, match='one time and one event flag'):
        S.gehan_scores([1, 2], [True], [1, 2], [True, True])
    with pytest.raises(RKSPInputError, match='0/1'):
        S.cox_binary([1, 2], [True, True], [1, 1])
