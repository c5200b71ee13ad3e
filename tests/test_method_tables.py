"""Tests of rksp.experiments.tables.methods (notebooks 04-06): analytic cases for every helper."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rksp.experiments.tables import methods as MT

from rksp.experiments import stats as STA
from rksp.experiments.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED


def _runs(spec, steps=100):
    """spec: method -> list of (div_step or None, total_div_step or None[, end_score, lr, val_acc, sps])."""
    rows = []
    for m, runs in spec.items():
        for i, r in enumerate(runs):
            ds, dt = r[0], r[1]
            end = r[2] if len(r) > 2 else (0.5 if ds is None else np.nan)
            lr = r[3] if len(r) > 3 else 0.01
            acc = r[4] if len(r) > 4 else 0.01
            sp = r[5] if len(r) > 5 else 10.0
            rows.append({'method': m, 'status': 'ok', 'seed': i, 'lr': lr, 'steps': steps,
                         'steps_done': ds if ds is not None else steps,
                         'diverged': ds is not None, 'div_step': ds, 'div_step_total_grad': dt,
                         'diverged_total_grad': dt is not None, 'val_acc': acc, 'end_score': end,
                         'prof_score': 1.0, 'steps_per_sec': sp, 'hooks': '',
                         'data_name': 'recall', 'data_is_standin': False})
    return pd.DataFrame(rows)


def _rate_rows(counts, n=24):
    """method -> k: k diverged (steps 10..) out of n."""
    return _runs({m: [(10 + i, 10 + i) if i < k else (None, None) for i in range(n)] for m, k in counts.items()})


# ------------------------------------------------------------------ counts and tables
def test_div_counts_both_labels_and_failed_runs_excluded():
    df = _runs({'A': [(5, 5), (None, 7), (None, None)]})
    df = pd.concat([df, pd.DataFrame([{'method': 'A', 'status': 'failed'}])], ignore_index=True)
    assert MT.div_counts(df, 'A', 'task') == (1, 3)
    assert MT.div_counts(df, 'A', 'total') == (2, 3)
    assert MT.div_counts(df, 'B') == (0, 0)


def test_method_table_full_adds_total_label_fisher_and_notes():
    df = _runs({'No control': [(5, 5), (6, 6), (None, None), (None, None)],
                'X': [(None, 3), (None, 4), (None, None), (None, None)],
                'Y': [(2, 2), (3, 3)]})
    t = MT.method_table_full(df, ['No control', 'X', 'Y']).set_index('method')
    assert t.loc['X', 'n_div'] == 0 and t.loc['X', 'n_div_total_grad'] == 2
    assert t.loc['X', 'div_pct_total_grad_label'] == 50.0
    assert t.loc['X', 'fisher_p_vs_ref_total_grad_label'] == pytest.approx(sps.fisher_exact([[2, 2], [2, 2]])[1])
    assert math.isnan(t.loc['No control', 'fisher_p_vs_ref_total_grad_label'])
    assert t.loc['X', 'n_m_end'] == 4 and t.loc['No control', 'n_m_end'] == 2
    assert 'every run diverged' in t.loc['Y', 'note'] and math.isnan(t.loc['Y', 'acc_pct'])
    assert list(t.columns)[-1] == 'note'


# ------------------------------------------------------------------ rate claims
def test_rate_diff_matches_newcombe_in_pp():
    df = _rate_rows({'KSS α=0.15': 3, 'No control': 16})
    d = MT.rate_diff(df, 'KSS α=0.15', 'No control')
    assert d['delta'] == pytest.approx(100 * (3 - 16) / 24)
    assert d['lo'] < d['delta'] < d['hi'] < 0
    assert d['p'] == pytest.approx(sps.fisher_exact([[3, 21], [16, 8]])[1])


def test_rate_difference_claim_verdicts():
    df = _rate_rows({'KSS α=0.15': 3, 'No control': 16, 'Grad clip 1.0': 0})
    c = MT.rate_difference_claim('c', 'kss < none', df, 'KSS α=0.15', 'No control')
    assert c.verdict == REPRODUCED and c.paper_value == pytest.approx(12.5 - 66.7)
    c = MT.rate_difference_claim('c', 'kss < clip', df, 'KSS α=0.15', 'Grad clip 1.0')
    assert c.verdict == INCONCLUSIVE          # 3/24 vs 0/24: not significant
    c = MT.rate_difference_claim('c', 'clip > none?', df, 'No control', 'Grad clip 1.0')
    assert c.verdict == NOT_REPRODUCED        # expected negative, got significantly positive
    c = MT.rate_difference_claim('c', 'missing', df, 'KSS α=0.15', 'Lion')
    assert c.verdict == INCONCLUSIVE and math.isnan(c.ours)


def test_lowest_rate_claim_uses_best_other_row():
    df = _rate_rows({'No control': 16, 'A': 10, 'B': 6, 'T': 0})
    c = MT.lowest_rate_claim('c', 'T lowest', df, 'T', ['No control', 'A', 'B', 'T'])
    assert c.ours == pytest.approx(-100 * 6 / 24)
    assert 'best other row here: B' in c.notes
    assert math.isnan(c.paper_value)          # A/B/T have no paper rows
    pr = {'No control': {'div_pct': 66.7}, 'A': {'div_pct': 40.0}, 'T': {'div_pct': 10.0}}
    c = MT.lowest_rate_claim('c', 'T lowest', df, 'T', ['No control', 'A', 'B', 'T'], paper_rows=pr)
    assert c.paper_value == pytest.approx(-30.0)


def test_relative_reduction():
    df = _rate_rows({'No control': 16, 'μP': 10, 'Z': 0})
    assert MT.relative_reduction(df, 'μP') == pytest.approx(100 * (1 - 10 / 16))
    assert math.isnan(MT.relative_reduction(df, 'μP', reference='Z'))
    assert math.isnan(MT.relative_reduction(df, 'μP', reference='missing'))
    assert MT.paper_relative_reduction('μP') == pytest.approx(100 * (1 - 41.7 / 66.7))
    assert MT.paper_relative_reduction('LAMB') == pytest.approx(100 * (1 - 45.8 / 66.7))


def test_risk_ratio_katz_and_zero_correction():
    r = STA.risk_ratio(10, 20, 5, 20)
    se = math.sqrt(1 / 10 - 1 / 20 + 1 / 5 - 1 / 20)
    assert r['rr'] == pytest.approx(2.0)
    assert r['lo'] == pytest.approx(2 * math.exp(-1.959963985 * se), rel=1e-6)
    assert r['hi'] == pytest.approx(2 * math.exp(1.959963985 * se), rel=1e-6)
    z = STA.risk_ratio(4, 8, 0, 8)
    assert z['rr'] == pytest.approx((4.5 / 9) / (0.5 / 9)) and 'zero' in z['note']
    assert math.isnan(STA.risk_ratio(0, 8, 0, 8)['rr']) and math.isnan(STA.risk_ratio(1, 0, 1, 2)['rr'])


def test_reduction_factor_claim():
    df = _rate_rows({'No control': 16, 'KSS α=0.15': 3})
    c = MT.reduction_factor_claim('c', 'factor', df, 'KSS α=0.15')
    assert c.ours == pytest.approx(16 / 3) and c.paper_value == pytest.approx(66.7 / 12.5, abs=0.01)
    assert c.verdict == REPRODUCED            # CI contains 5.34
    df = _rate_rows({'No control': 12, 'KSS α=0.15': 12})
    assert MT.reduction_factor_claim('c', 'f', df, 'KSS α=0.15').verdict == NOT_REPRODUCED


# ------------------------------------------------------------------ dose-response
def test_cochran_armitage_two_groups_equals_pearson_chi2():
    z = STA.cochran_armitage([0, 1], [4, 10], [20, 20])
    chi2 = sps.chi2_contingency([[4, 16], [10, 10]], correction=False)[0]
    assert z['z'] ** 2 == pytest.approx(chi2) and z['z'] > 0
    assert z['p'] == pytest.approx(sps.chi2.sf(chi2, 1))


def test_cochran_armitage_hand_value_and_degenerate():
    # doses 0,1,2; k 6,4,2 of 10 each: pbar = 0.4, T = 1*(4-4) + 2*(2-4) = -4,
    # var = 0.24 * (50 - 30^2/30) = 0.24 * 20 = 4.8
    r = STA.cochran_armitage([0, 1, 2], [6, 4, 2], [10, 10, 10])
    assert r['z'] == pytest.approx(-4 / math.sqrt(4.8))
    assert math.isnan(STA.cochran_armitage([0, 1], [0, 0], [5, 5])['z'])
    assert math.isnan(STA.cochran_armitage([0, 1], [1, 1], [5, 0])['z'])   # one dose left


def test_spearman_monotone_and_degenerate():
    assert STA.spearman([0, 1, 2, 3], [9, 5, 2, 1])['r'] == pytest.approx(-1.0)
    assert math.isnan(STA.spearman([0, 1], [1, 2])['r'])
    assert STA.spearman([0, 1, 2], [1, 1, 1])['note'] == 'constant input'
    assert STA.spearman([0, 1, 2, np.nan], [3, 2, 1, 0])['n'] == 3


def test_dose_response_and_trend():
    spec = {'No control': [(10, 10)] * 3 + [(None, None, 0.9)],
            'KSS α=0.10': [(10, 10)] * 2 + [(None, 20, 0.7)] * 2,
            'KSS α=0.20': [(10, 10)] + [(None, None, 0.5)] * 3}
    df = _runs(spec)
    doses = {'No control': 0.0, 'KSS α=0.10': 0.1, 'KSS α=0.20': 0.2, 'KSS α=0.15': 0.15}
    dr = MT.dose_response(df, doses)
    assert list(dr['alpha']) == [0.0, 0.1, 0.15, 0.2]
    assert list(dr['n_div']) == [3, 2, 0, 1] and list(dr['n']) == [4, 4, 0, 4]
    assert list(dr['n_div_total_grad'])[:2] == [3, 4]
    assert dr.loc[0, 'm_near_unit_end'] == pytest.approx(0.9) and math.isnan(dr.loc[0, 'm_near_unit_end_sd'])
    assert dr.loc[2, 'note'] == 'no finished run'
    tr = MT.dose_trend(dr).set_index(['quantity', 'label'])
    div = tr.loc[('Div.% vs α', MT.LABEL_NAMES['task'])]
    assert div['spearman_r'] == pytest.approx(-1.0) and div['n_doses'] == 3
    assert div['cochran_armitage_z'] < 0
    m = tr.loc[('M≈1 after training vs α', MT.LABEL_NAMES['task'])]
    assert m['spearman_r'] == pytest.approx(-1.0) and math.isnan(m['cochran_armitage_z'])
    assert MT.ALPHA_OF['No control'] == 0.0 and MT.ALPHA_OF['KSS α=0.15'] == 0.15


# ------------------------------------------------------------------ survival
def test_survival_curve_without_censoring():
    df = _runs({'A': [(10, 10), (20, 20), (None, None), (None, None)]}, steps=30)
    s = MT.survival_curve(df)
    assert list(s['step']) == [0, 10, 20, 30]
    assert list(s['frac_surviving']) == pytest.approx([1.0, 0.75, 0.5, 0.5])
    assert list(s['n_at_risk']) == [4, 4, 3, 2]


def test_survival_curve_kaplan_meier_with_censoring():
    # total label: run 2 stopped by the task label at 5 with no total event -> censored at 5
    df = _runs({'A': [(None, 10), (5, None), (None, 20), (None, None)]}, steps=30)
    s = MT.survival_curve(df, label='total')
    assert list(s['step']) == [0, 5, 10, 20, 30]                  # a row at the censoring step too
    assert list(s['frac_surviving']) == pytest.approx([1.0, 1.0, 1 - 1 / 3, (2 / 3) * (1 - 1 / 2), 1 / 3])
    assert list(s['n_censored']) == [0, 1, 0, 0, 1]
    assert (s['ci_lo'] <= s['frac_surviving']).all() and (s['frac_surviving'] <= s['ci_hi']).all()
    s = MT.survival_curve(df, label='task', groups=['A', 'missing'])
    assert list(s['frac_surviving']) == pytest.approx([1.0, 0.75, 0.75])


def test_time_to_divergence_reports_a_delay_as_a_delay():
    # every KSS run diverges, each 50 steps after its paired No-control run: same rate, later divergence
    none = [(10 * i + 20, 10 * i + 20) for i in range(8)]
    kss = [(10 * i + 70, 10 * i + 70) for i in range(8)]
    df = _runs({'No control': none, 'KSS α=0.15': kss}, steps=200)
    df['seed'] = list(range(8)) * 2
    t = MT.time_to_divergence(df, ['No control', 'KSS α=0.15']).set_index('method')
    assert t.loc['No control', 'n_events'] == t.loc['KSS α=0.15', 'n_events'] == 8    # the rate: unchanged
    assert t.loc['KSS α=0.15', 'median_step'] > t.loc['No control', 'median_step']
    k = t.loc['KSS α=0.15']
    assert k['hr'] < 1 and k['n_later'] == 8 and k['paired_p'] == pytest.approx(2 / 2 ** 8)
    assert MT.time_to_divergence(df, ['KSS α=0.15'], reference='missing').empty


# ------------------------------------------------------------------ best LR, overhead
def test_best_lr_in_band():
    df = _runs({'A': [(None, None, 0.5, 0.005, 0.02), (None, None, 0.5, 0.005, 0.04),
                      (None, None, 0.5, 0.01, 0.05), (3, 3, np.nan, 0.01, 0.9)],
                'B': [(3, 3, np.nan, 0.01, 0.5)]})
    b = MT.best_lr_in_band(df, ['A', 'B', 'C']).set_index('method')
    assert b.loc['A', 'best_lr_in_band'] == 0.01 and b.loc['A', 'acc_pct_at_best_lr'] == pytest.approx(5.0)
    assert b.loc['A', 'band'] == '0.005, 0.01'
    assert math.isnan(b.loc['B', 'best_lr_in_band']) and b.loc['B', 'note'] == 'no non-diverged run'
    assert b.loc['C', 'note'] == 'no finished run'
    # tie -> lower LR
    df = _runs({'A': [(None, None, 0.5, 0.005, 0.02), (None, None, 0.5, 0.01, 0.02)]})
    assert MT.best_lr_in_band(df, ['A'])['best_lr_in_band'][0] == 0.005


def test_overhead_difference_constant_times():
    spec = {'No control': [(None, None, 0.5, 0.01, 0.01, 10.0)] * 3,   # 0.1 s/step
            'SAM': [(None, None, 0.5, 0.01, 0.01, 5.0)] * 3,          # 0.2 s/step: +100 %
            'KSS': [(None, None, 0.5, 0.01, 0.01, 10 / 1.1)] * 2}     # 0.11 s/step: +10 %
    o = MT.overhead_difference(_runs(spec), 'SAM', 'KSS', n_boot=50)
    assert o['overhead_a'] == pytest.approx(100) and o['overhead_b'] == pytest.approx(10)
    assert o['diff'] == pytest.approx(90) and o['lo'] == pytest.approx(90) and o['hi'] == pytest.approx(90)
    assert o['ratio'] == pytest.approx(10)
    assert math.isnan(MT.overhead_difference(_runs(spec), 'SAM', 'Lion')['diff'])


# ------------------------------------------------------------------ Table 6 correlation
def test_pearson_ci_fisher_z():
    lo, hi = STA.pearson_ci(0.5, 28)
    q = 1.959963985
    assert lo == pytest.approx(math.tanh(math.atanh(0.5) - q / 5), rel=1e-6)
    assert hi == pytest.approx(math.tanh(math.atanh(0.5) + q / 5), rel=1e-6)
    assert all(math.isnan(v) for v in STA.pearson_ci(0.5, 3)) and math.isnan(STA.pearson_ci(np.nan, 10)[0])


def test_mechanism_points_and_correlation():
    table = pd.DataFrame({
        'method': ['No control', 'Jacobian penalty', 'KSS unstable only', 'KSS near-unit only', 'KSS α=0.15'],
        'n': [24] * 5,
        'div_pct': [60.0, 50.0, 40.0, 30.0, 10.0],
        'div_pct_total_grad_label': [60.0, 60.0, 60.0, 60.0, 70.0],
        'm_near_unit_end': [0.9, 0.8, 0.7, 0.6, np.nan],
        'n_m_end': [10, 10, 10, 10, 0]})
    pts = MT.mechanism_points(table).set_index('method')
    assert pts.loc['Jacobian penalty', 'delta_m_near_unit'] == pytest.approx(-0.1)
    assert pts.loc['KSS α=0.15', 'div_reduction_pp'] == pytest.approx(50.0)
    assert pts.loc['KSS α=0.15', 'div_reduction_pp_total_grad'] == pytest.approx(-10.0)
    assert pts.loc['KSS α=0.15', 'mechanism_paper'] == 'Both mechanisms'
    assert pts.loc['KSS α=0.15', 'paper_div_reduction_pp'] == pytest.approx(66.7 - 12.5)
    cor = MT.mechanism_correlation(pts.reset_index()).set_index('label')
    task = cor.loc[MT.LABEL_NAMES['task']]
    assert task['r'] == pytest.approx(-1.0) and task['n_methods'] == 3       # KSS full has no ΔM
    assert '1 method(s) without ΔM≈1' in task['note']
    assert math.isnan(cor.loc[MT.LABEL_NAMES['total'], 'r'])                 # constant reduction
    # the paper's own rows (Jacobian, unstable only, near-unit only, KSS full)
    assert task['paper_r_from_table6_rows'] < -0.9 and task['paper_r'] == -0.87
    with pytest.raises(ValueError):
        MT.mechanism_points(table[table['method'] != 'No control'])
