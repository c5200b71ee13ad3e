"""Table builders of notebooks 07-09 (rksp/experiments/tables/maxlr.py, scale.py) on small hand-made run frames."""
import copy
import math

import numpy as np
import pandas as pd
import pytest

from rksp.experiments.tables import scale as S


from rksp.experiments import plans as PL
from rksp.experiments.tables import maxlr as ML
from rksp.experiments import stability as MLR
from rksp.experiments.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from rksp.harness.config import TrainConfig


def runs(norm, kss, spec, start_seed=0):
    """spec: {lr: (n, k)} -> k diverged of n runs at lr (distinct hashes)."""
    out = []
    for lr, (n, k) in spec.items():
        for i in range(n):
            out.append({'norm': norm, 'kss': kss, 'method': 'KSS α=0.15' if kss else 'No control', 'lr': lr,
                        'seed': start_seed + i, 'status': 'ok', 'diverged': i < k,
                        'hash': f"{norm}-{kss}-{lr}-{start_seed + i}", 'data_name': 'recall', 'data_is_standin': False})
    return out


def frame(*parts):
    return pd.DataFrame([r for p in parts for r in p])


# ----------------------------------------------------------------------------- Table 5

def test_known_max_lr_and_exact_increase_with_grid_bracket():
    grid = [1e-3, 3e-3, 1e-2, 3e-2]
    df = frame(runs('none', False, {1e-3: (5, 0), 3e-3: (5, 0), 1e-2: (5, 2), 3e-2: (5, 5)}),
               runs('none', True, {1e-3: (5, 0), 3e-3: (5, 0), 1e-2: (5, 0), 3e-2: (5, 3)}))
    t = ML.maxlr_table(df)
    r = t.iloc[0]
    assert r['norm'] == 'No-Norm' and r['max_lr_without'] == 3e-3 and r['max_lr_with'] == 1e-2
    assert r['bound_without'] == MLR.BOUND_EXACT and r['bound_with'] == MLR.BOUND_EXACT
    assert r['increase_pct'] == pytest.approx(100 * (1e-2 / 3e-3 - 1))
    assert r['increase_reading'] == 'exact'
    # true max LR without in [3e-3, 1e-2), with in [1e-2, 3e-2)
    assert r['increase_bracket_lo'] == pytest.approx(0.0)
    assert r['increase_bracket_hi'] == pytest.approx(100 * (3e-2 / 3e-3 - 1))
    assert r['div_per_lr_without'] == '0.001: 0/5, 0.003: 0/5, 0.01: 2/5, 0.03: 5/5'
    assert r['paper_increase_pct'] == 150.0 and r['note'] == ''
    per = ML.maxlr_per_lr(df)
    assert len(per) == 2 * len(grid)
    k = per[(per['kss']) & (per['lr'] == 1e-2)].iloc[0]
    assert k['n_div'] == 0 and k['fisher_p_vs_without_kss'] == pytest.approx(0.4444, abs=1e-3)
    assert per[~per['kss']]['fisher_p_vs_without_kss'].isna().all()
    # the bracket [0, 900] % is wider than 100 pp: inconclusive
    c = ML.table5_claims(t)[0]
    assert c.verdict == INCONCLUSIVE and c.id == 'T5.lr_increase.none'


def test_no_divergence_gives_lower_bound_and_inconclusive_claim():
    spec = {1e-3: (3, 0), 1e-2: (3, 0)}
    df = frame(runs('pre_ln', False, spec), runs('pre_ln', True, spec))
    r = ML.maxlr_table(df).iloc[0]
    assert r['max_lr_without'] == 1e-2 and r['bound_without'] == MLR.BOUND_LOWER
    assert r['bound_with'] == MLR.BOUND_LOWER and r['bound_contig_with'] == MLR.BOUND_LOWER
    assert math.isnan(r['increase_pct']) and r['increase_reading'] == 'undetermined'
    assert 'no LR of the grid diverged' in r['note'] and '≥ 0.01' in r['note']
    c = ML.table5_claims(pd.DataFrame([r]))[0]
    assert c.verdict == INCONCLUSIVE and math.isnan(c.ours)


def test_lower_bound_with_kss_is_at_least_not_a_value():
    df = frame(runs('rmsnorm', False, {1e-3: (5, 0), 1e-2: (5, 4)}),
               runs('rmsnorm', True, {1e-3: (5, 0), 1e-2: (5, 0)}))
    r = ML.maxlr_table(df).iloc[0]
    assert r['max_lr_without'] == 1e-3 and r['bound_without'] == MLR.BOUND_EXACT
    assert r['bound_with'] == MLR.BOUND_LOWER and 'top LR of the grid is stable' not in r['note']
    assert r['increase_reading'] == 'lower bound' and math.isnan(r['increase_pct'])
    assert r['increase_at_least_pct'] == pytest.approx(900.0)
    assert ML.table5_claims(pd.DataFrame([r]))[0].verdict == INCONCLUSIVE


def test_upper_bound_without_kss_can_refute_never_confirm():
    # without KSS nothing diverges up to the top (≥ 0.27); with KSS 0.235 is the max stable LR:
    # the increase is below 100 (0.27 / 0.27 - 1) = 0 % for sure, so +60 % is refuted
    df = frame(runs('pre_ln', False, {0.09: (4, 0), 0.27: (4, 0)}),
               runs('pre_ln', True, {0.09: (4, 0), 0.235: (4, 0), 0.27: (4, 3)}))
    r = ML.maxlr_table(df).iloc[0]
    assert r['bound_without'] == MLR.BOUND_LOWER and r['bound_with'] == MLR.BOUND_EXACT
    assert r['increase_reading'] == 'upper bound' and math.isnan(r['increase_pct'])
    assert r['increase_at_most_pct'] == pytest.approx(100 * (0.235 / 0.27 - 1))
    assert r['increase_bracket_lo'] == -math.inf and r['increase_bracket_hi'] == pytest.approx(0.0)
    assert 'increase ≤ -13%' in r['note']
    c = ML.table5_claims(pd.DataFrame([r]))[0]
    assert c.verdict == NOT_REPRODUCED and c.size == 'inconsistent'
    # the mirror case: a one-sided bracket that contains the paper's value is never 'reproduced'
    df = frame(runs('rmsnorm', False, {1e-3: (5, 0), 2e-3: (5, 4)}),
               runs('rmsnorm', True, {1e-3: (5, 0), 2e-3: (5, 0)}))
    r = ML.maxlr_table(df).iloc[0]
    assert r['increase_reading'] == 'lower bound' and r['increase_bracket_hi'] == math.inf
    assert r['increase_bracket_lo'] == pytest.approx(0.0)
    c = ML.table5_claims(pd.DataFrame([r]))[0]
    assert c.paper_value == 67.0 and c.verdict == INCONCLUSIVE and 'CI width' in c.rule
    # ... and one that lies wholly above it refutes it as well (a symmetric rule)
    df = frame(runs('rmsnorm', False, {1e-3: (5, 0), 1.5e-3: (5, 4), 4e-3: (5, 4)}),
               runs('rmsnorm', True, {1e-3: (5, 0), 4e-3: (5, 0)}))
    r = ML.maxlr_table(df).iloc[0]
    assert r['increase_reading'] == 'lower bound'
    assert r['increase_bracket_lo'] == pytest.approx(100 * (4e-3 / 1.5e-3 - 1))
    assert ML.table5_claims(pd.DataFrame([r]))[0].verdict == NOT_REPRODUCED


def test_both_bounds_stay_undetermined():
    assert MLR.increase_bracket(0.27, 0.27, [0.09, 0.27])['reading'] == 'undetermined'
    v, ci = MLR.increase_for_claim(float('nan'), 'undetermined', float('nan'), float('nan'),
                                   float('nan'), float('nan'))
    assert math.isnan(v) and ci is None


def test_readings_differ_and_nothing_stable():
    # 2e-3 unstable between stable LRs: max 5e-3, contiguous 1e-3
    df = frame(runs('none', False, {1e-3: (5, 0), 2e-3: (5, 1), 5e-3: (5, 0), 8e-3: (5, 3)}),
               runs('none', True, {1e-3: (5, 2), 2e-3: (5, 3), 5e-3: (5, 3), 8e-3: (5, 3)}))
    r = ML.maxlr_table(df).iloc[0]
    assert r['max_lr_without'] == 5e-3 and r['max_lr_contig_without'] == 1e-3
    assert math.isnan(r['max_lr_with']) and r['bound_with'] == MLR.BOUND_UPPER
    assert r['increase_reading'] == 'undetermined' and 'no LR of the grid is stable' in r['note']


def test_fine_grid_judges_each_norm_against_its_own_table5_increase():
    lrs = [2e-3, 3e-3, 4e-3, 5e-3, 6e-3]
    grid_runs = lambda norm, kss, k: runs(norm, kss, {lr: (5, kk) for lr, kk in zip(lrs, k)})
    up = lambda norm: frame(grid_runs(norm, False, [0, 0, 3, 5, 5]), grid_runs(norm, True, [0, 0, 0, 0, 5]))
    r = ML.maxlr_table(up('rmsnorm')).iloc[0]     # 3e-3 -> 5e-3: +67%, bracket (25%, 100%)
    assert r['increase_pct'] == pytest.approx(66.67, abs=0.01)
    # RMSNorm's Table 5 increase is +67 %: inside the bracket
    c = ML.table5_claims(ML.maxlr_table(up('rmsnorm')))[0]
    assert c.paper_value == 67.0 and c.verdict == REPRODUCED
    # No-Norm's is +150 %: the same bracket excludes it (the pooled 50-150 % would have let it pass)
    c = ML.table5_claims(ML.maxlr_table(up('none')))[0]
    assert c.paper_value == 150.0 and c.verdict == NOT_REPRODUCED
    down = frame(grid_runs('none', False, [0, 0, 0, 0, 5]), grid_runs('none', True, [0, 3, 5, 5, 5]))
    assert ML.table5_claims(ML.maxlr_table(down))[0].verdict == NOT_REPRODUCED


def test_duplicate_configs_count_once():
    a = runs('none', False, {1e-2: (3, 1)})
    df = frame(a, a, runs('none', True, {1e-2: (3, 0)}))
    per = ML.maxlr_per_lr(df)
    assert per[~per['kss']]['n'].tolist() == [3]


def test_increase_bracket_helper():
    b = MLR.increase_bracket(0.002, 0.005, [0.001, 0.002, 0.005, 0.008])
    assert b['increase_pct'] == pytest.approx(150.0)
    assert b['bracket_lo'] == pytest.approx(0.0) and b['bracket_hi'] == pytest.approx(300.0)
    assert MLR.increase_bracket(0.008, 0.008, [0.001, 0.008])['reading'] == 'undetermined'


# ----------------------------------------------------------------------------- Tables 7-9

def lm_runs(method, ppl, diverged, lr=1e-2, size='d=64, L=2', acc=None):
    out = []
    for i, (p, d) in enumerate(zip(ppl, diverged)):
        out.append({'size': size, 'norm': 'pre_ln', 'method': method, 'lr': lr, 'seed': i, 'status': 'ok',
                    'diverged': d, 'diverged_total_grad': d, 'val_ppl': np.inf if d else p,
                    'val_acc': (acc[i] if acc else 0.1), 'prof_score': 0.25, 'end_score': 0.3,
                    'steps_per_sec': 10.0, 'n_params': 1000, 'hash': f"{method}-{lr}-{i}",
                    'data_name': 'pydoc-topics stand-in (offline; NOT WikiText-103)', 'data_is_standin': True})
    return out


def test_paired_difference_ppl_and_fallbacks():
    df = frame(lm_runs('Baseline', [100, 110, 120, 130], [False] * 4),
               lm_runs('KSS', [90, 99, 108, 117], [False] * 4))
    d = S.paired_difference(df, 'val_ppl', n_boot=200)
    assert d['pairing'] == 'paired' and d['n_pairs'] == 4
    assert d['delta'] == pytest.approx(-11.5) and d['rel_pct'] == pytest.approx(-10.0)
    assert d['hi'] < 0 and d['rel_hi'] < 0
    # diverged runs are left out of the pairs; 1 pair left -> unpaired bootstrap
    df2 = frame(lm_runs('Baseline', [100, 110, 120], [False, True, True]),
                lm_runs('KSS', [90, 99, 108], [False, False, False]))
    d2 = S.paired_difference(df2, 'val_ppl', n_boot=50)
    assert d2['n_pairs'] == 1 and d2['pairing'] == 'too few runs' and math.isnan(d2['lo'])
    df3 = frame(lm_runs('Baseline', [100, 110, 120], [False, False, True]),
                lm_runs('KSS', [90, 99, 108], [False, True, False]))
    d3 = S.paired_difference(df3, 'val_ppl', n_boot=50)
    assert d3['pairing'] == 'unpaired' and d3['n_a'] == 2 and d3['n_b'] == 2


def test_table8_and_lm_claims():
    base = lm_runs('Baseline', [100, 110, 120, 130, 125, 115], [False, True, False, False, False, False])
    kss = lm_runs('KSS', [90, 99, 108, 117, 111, 104], [False] * 6)
    df = frame(base, kss)
    t = S.table8(df)
    assert list(t['method']) == ['Baseline', 'KSS']
    b, k = t.iloc[0], t.iloc[1]
    assert b['n'] == 6 and b['n_div'] == 1 and k['n_div'] == 0
    assert b['ppl_mean'] == pytest.approx(np.mean([100, 120, 130, 125, 115]))
    assert b['ppl_n'] == 5 and k['ppl_n'] == 6
    assert b['max_lr'] == 1e-2 and b['max_lr_bound'] == MLR.BOUND_LOWER   # 1/6 < 20%: the only LR is stable
    assert b['max_lr_increase_reading'] == 'undetermined'
    assert b['paper_model'] == 'Small d=256, L=6' and b['paper_div_of_24'] == 2 and k['paper_ppl'] == 52.1
    assert t.columns[-1] == 'data' and 'NOT WikiText-103' in b['data']
    claims = {c.id: c for c in S.lm_claims(df, df, t, n_boot=200)}
    # T8.ppl pairs only at the LRs where every Baseline run converged: at 1e-2 one diverged, so no pair
    assert claims['T8.ppl'].direction == 'not significant' and 'converged ()' in claims['T8.ppl'].notes
    # a second LR where every Baseline run converged: its pairs are the evidence
    df2 = frame(base, kss, lm_runs('Baseline', [100, 110, 120, 130, 125, 115], [False] * 6, lr=3e-3),
                lm_runs('KSS', [90, 99, 108, 117, 111, 104], [False] * 6, lr=3e-3))
    claims = {c.id: c for c in S.lm_claims(df2, df2, S.table8(df2), n_boot=200)}
    assert 'converged (0.003), 6 pairs' in claims['T8.ppl'].notes
    # the PPL at the best LR (R-2 of docs/lm-regime.md): only LRs where every run converged count
    best = S.best_lr_ppl(df2).set_index('method')
    assert best.loc['Baseline', 'best_lr'] == 3e-3 and best.loc['KSS', 'best_lr'] == 3e-3   # KSS ties: the lower LR
    assert best.loc['Baseline', 'ppl_at_best_lr'] == pytest.approx(np.mean([100, 110, 120, 130, 125, 115]))
    t2 = S.table8(df2).set_index('method')
    assert not t2.loc['Baseline', 'divergence_region'] and 'R-3' in t2.loc['Baseline', 'note']
    # a stand-in corpus cannot test the WikiText claim: criteria reported, verdict inconclusive
    assert claims['T8.ppl'].direction == "paper's direction" and claims['T8.ppl'].ours < 0
    assert claims['T8.ppl'].verdict == INCONCLUSIVE and 'stand-in' in claims['T8.ppl'].stand_in
    assert claims['T8.div'].verdict == INCONCLUSIVE          # 0/6 vs 1/6
    assert claims['T8.max_lr.d_64_L_2'].verdict == INCONCLUSIVE
    t7 = S.table7(df)
    assert t7['paper_div_of_24'].tolist() == [6, 3] and t7['paper_ppl'].tolist() == [52.1, 46.8]


def test_table9_and_vit_claims():
    rows = []
    for norm in ('pre_ln', 'rmsnorm'):
        for r in lm_runs('Baseline', [1] * 6, [False] * 6, acc=[0.60, 0.62, 0.61, 0.63, 0.60, 0.64]):
            rows.append({**r, 'norm': norm, 'hash': r['hash'] + norm})
        for r in lm_runs('KSS', [1] * 6, [False] * 6, acc=[0.65, 0.66, 0.66, 0.68, 0.64, 0.69]):
            rows.append({**r, 'norm': norm, 'hash': r['hash'] + norm})
    df = pd.DataFrame(rows).assign(val_ppl=np.nan)
    t = S.table9(df)
    assert t['norm_name'].tolist() == ['Pre-LN', 'Pre-LN', 'RMSNorm', 'RMSNorm']
    assert t['paper_acc_pct'].tolist() == [72.3, 75.8, 70.1, 74.2]
    assert t.iloc[0]['acc_pct'] == pytest.approx(100 * np.mean([0.60, 0.62, 0.61, 0.63, 0.60, 0.64]))
    assert (t['note'] == 'no run of this row diverged').all()
    claims = {c.id: c for c in S.vit_claims(df, n_boot=200)}
    assert claims['T9.acc.pre_ln'].direction == "paper's direction"
    assert claims['T9.acc.pre_ln'].verdict == INCONCLUSIVE and claims['T9.acc.pre_ln'].stand_in  # digits, not CIFAR-10
    assert claims['T9.acc.pre_ln'].ours == pytest.approx(100 * (3.98 - 3.70) / 6)
    assert claims['T9.acc.pre_ln'].paper_value == pytest.approx(3.5)
    assert claims['T9.div'].verdict == INCONCLUSIVE


@pytest.mark.parametrize('profile', ['smoke', 'small', 'paper'])
def test_plans_build_valid_configs(profile):
    for labeled in (PL.lm_configs(profile, 'table7'), PL.lm_configs(profile, 'table8'), PL.vit_configs(profile)):
        assert labeled
        for lab, cfg in labeled:
            TrainConfig.from_dict(copy.deepcopy(cfg))
            assert lab['method'] in PL.SCALE_ROWS
            assert bool(cfg.get('hooks')) == (lab['method'] == 'KSS')
    t8 = PL.lm_configs(profile, 'table8')
    assert {c['task'] for _, c in t8} == {'wikitext103'} and {c['model_cfg']['norm'] for _, c in t8} == {'pre_ln'}
    if profile != 'smoke':
        p = PL.lm_plan(profile)
        assert p['table7']['trials'] >= 6 and p['table8']['trials'] * len(p['table8']['lrs']) >= 6
        assert PL.vit_plan(profile)['trials'] >= 6
    with pytest.raises(ValueError):
        PL.lm_configs(profile, 'table9')
