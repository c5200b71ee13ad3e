"""Delay vs prevention (notebook 13, issue 21): the attention-diagnostic runs (rksp.experiments.diagnostic_runs)
and the builders of rksp.experiments.tables.delay, on the smoke profile and on hand-made frames."""
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

import rksp.harness.loop as loop
from rksp.experiments import diagnostic_runs as D
from rksp.experiments.plans import method_configs, recall_steps
from rksp.experiments.table_check import column_class
from rksp.experiments.tables import delay as DL
from rksp.experiments.tables import methods as MT
from rksp.harness.config import TrainConfig
from rksp.methods.rows import REFERENCE, table_displays

matplotlib.use('Agg')


def _hash(cfg):
    return TrainConfig.from_dict(dict(cfg)).hash()


# ----------------------------------------------------------------------------- which runs
def test_the_diagnostic_grid_is_the_band_extremes_times_two_seeds_and_one_run_at_smoke():
    assert D.diagnostic_grid('smoke') == [(0.05, 42)]
    assert D.diagnostic_grid('small') == [(0.005, 42), (0.005, 123), (0.01, 42), (0.01, 123)]
    assert recall_steps('smoke') == 30 and recall_steps('small') == 1280


def test_a_diagnostic_config_is_the_no_control_recall_run_of_the_same_lr_and_seed():
    recall = {(c['lr'], c['seed']): _hash(c) for _, c in method_configs('small', [REFERENCE])}
    for lab, cfg in D.diagnostic_configs('small'):
        assert _hash(cfg) == recall[(lab['lr'], lab['seed'])]
        assert lab['run'] == f"lr {lab['lr']:g}, seed {lab['seed']}"


# ----------------------------------------------------------------------------- one smoke run, cached
def test_a_smoke_diagnostic_run_reads_both_and_is_cached_without_changing_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv('RKSP_RESULTS', str(tmp_path))
    long = D.diagnostic_runs('smoke', every=10)
    assert list(long.columns) == D.LONG_COLUMNS
    assert set(long['run']) == {'lr 0.05, seed 42'} and set(long['layer']) == {0, 1}
    att, trk = long.dropna(subset=['max_logit']), long.dropna(subset=['m_near_unit'])
    assert sorted(set(att['step']))[:2] == [1, 10] and sorted(set(trk['step']))[:2] == [0, 10]
    assert ((trk['m_near_unit'] >= 0) & (trk['m_near_unit'] <= 1) & (trk['m_expansive'] >= 0)).all()
    [(_, cfg)] = D.diagnostic_configs('smoke')
    path = tmp_path / 'smoke' / 'runs' / D.RUNS_NAME / f'{_hash(cfg)}.json'
    assert path.exists()
    plain = loop.train(cfg)                                      # the same run without the two hooks
    rec = D.diagnostic_record(cfg, 'smoke')
    assert rec['curves']['loss'] == plain['curves']['loss'] and rec['div_step'] == plain['div_step']

    def no_training(*a, **k):
        raise AssertionError('a cached diagnostic run was trained again')
    monkeypatch.setattr(loop, 'train', no_training)
    again = D.diagnostic_runs('smoke', every=10)
    pd.testing.assert_frame_equal(again, long)
    with pytest.raises(AssertionError, match='trained again'):     # another `every` is another reading
        D.diagnostic_runs('smoke', every=5)


# ----------------------------------------------------------------------------- which grows first
def _long(run, logits, masses, div_step=30.0):
    """logits: step -> [per layer]; masses: step -> [(M≈1, M>1) per layer]."""
    rows = [{'step': s, 'layer': i, 'max_logit': v, 'entropy_mean': 1.0} for s, vs in logits.items()
            for i, v in enumerate(vs)]
    rows += [{'step': s, 'layer': i, 'm_near_unit': a, 'm_expansive': b} for s, ms in masses.items()
             for i, (a, b) in enumerate(ms)]
    df = pd.DataFrame(rows).groupby(['step', 'layer'], as_index=False).first()
    return df.assign(run=run, lr=0.01, seed=42, diverged=not math.isnan(div_step), div_step=div_step,
                     steps_done=30 if math.isnan(div_step) else int(div_step))


def test_onset_table_reads_the_first_10x_logit_and_the_first_layer_with_more_expansive_mass():
    spec = _long('spectrum first', {1: [1.0, 0.5], 10: [3.0, 2.0], 20: [4.0, 10.5], 30: [50.0, 1.0]},
                 {0: [(1.0, 0.0), (1.0, 0.0)], 10: [(0.9, 0.1), (0.4, 0.5)], 20: [(0.3, 0.6), (0.2, 0.7)]})
    logit = _long('logit first', {1: [1.0, 1.0], 10: [12.0, 1.0]}, {0: [(1.0, 0.0)], 10: [(0.5, 0.4)],
                                                                      20: [(0.4, 0.5)]})
    same = _long('same', {1: [1.0], 10: [11.0]}, {0: [(1.0, 0.0)], 10: [(0.4, 0.6)]})
    never = _long('never', {1: [1.0], 10: [2.0]}, {0: [(1.0, 0.0)], 10: [(0.9, 0.1)]}, div_step=float('nan'))
    t = DL.onset_table(pd.concat([spec, logit, same, never], ignore_index=True)).set_index('run')
    assert t.loc['spectrum first', 'logit_onset_step'] == 20         # max over layers 10.5 > 10 x 1.0
    assert t.loc['spectrum first', 'spectral_onset_step'] == 10      # layer 1: 0.5 > 0.4
    assert t.loc['spectrum first', 'first_sign'] == 'spectrum'
    assert t.loc['logit first', 'first_sign'] == 'attention logit' and t.loc['logit first', 'spectral_onset_step'] == 20
    assert t.loc['same', 'first_sign'] == 'same step'
    assert t.loc['never', 'first_sign'] == 'neither' and math.isnan(t.loc['never', 'logit_onset_step'])
    assert not t.loc['never', 'diverged'] and t.loc['spectrum first', 'div_step'] == 30
    assert all(column_class('attention_diagnostic', c) for c in t.reset_index().columns)


# ----------------------------------------------------------------------------- dose x frequency
def test_kss_arms_read_alpha_and_schedule_from_the_row_configs():
    arms = DL.kss_arms(table_displays('dose_frequency')).set_index('method')
    assert arms.loc[REFERENCE, 'alpha'] == 0.0 and arms.loc[REFERENCE, 'frequency'] == ''
    assert arms.loc['KSS α=0.50', 'alpha'] == 0.5 and arms.loc['KSS α=0.50', 'frequency'] == DL.PAPER_FREQUENCY
    assert arms.loc['KSS α=2.00, every step, all layers', 'frequency'] == 'every step, all layers'
    assert DL.frequency_name(20, 0.25) == 'every 20 steps, 0.25 of the layers'
    panels = DL.arms_panels(table_displays('dose_frequency'))
    assert list(panels) == [DL.PAPER_FREQUENCY, 'every step, all layers']
    assert all(p[0] == REFERENCE and len(p) == 4 for p in panels.values())


def _runs(spec, steps=100):
    """method -> [div_step or None]: one run each, paired by seed."""
    return pd.DataFrame([{'method': m, 'status': 'ok', 'seed': i, 'lr': 0.01, 'steps_done': ds or steps,
                          'diverged': ds is not None, 'div_step': ds, 'div_step_total_grad': ds,
                          'diverged_total_grad': ds is not None, 'val_acc': 0.02, 'end_score': 0.5,
                          'prof_score': 1.0, 'steps_per_sec': 10.0, 'hooks': '', 'data_name': 'recall',
                          'data_is_standin': False}
                         for m, runs in spec.items() for i, ds in enumerate(runs)])


def test_rate_table_points_and_the_figures_on_hand_made_runs():
    methods = ['No control', 'KSS α=0.50', 'KSS α=0.50, every step, all layers']
    rows = _runs({'No control': [10, 20, 30, 40], 'KSS α=0.50': [15, 25, None, None],
                  'KSS α=0.50, every step, all layers': [None, None, None, 80]})
    t = DL.rate_table(rows, methods, arms=True)
    assert list(t.columns) == ['method', 'alpha', 'frequency', *DL.RATE_COLUMNS[1:]]
    assert t['n_div'].tolist() == [4, 2, 1] and t['alpha'].tolist() == [0.0, 0.5, 0.5]
    assert not [c for c in t.columns if c.startswith('paper')]
    assert all(column_class('dose_frequency', c) for c in t.columns)
    pts = DL.divergence_points(rows, methods)
    assert pts.loc[~pts['diverged'], 'step'].eq(100).all() and len(pts) == 12
    ttd = MT.time_to_divergence(rows, methods)
    fig = DL.dose_step_figure(rows, methods, ttd, 'test', horizon=100)
    assert fig.axes[0].get_yscale() == 'log'                          # steps 10..100 span more than 5x
    DL.km_panels_figure(rows, DL.arms_panels(methods), 'test')
    long = _long('a', {1: [1.0, 1.0], 10: [20.0, -3.0]}, {0: [(1.0, 0.0)] * 2, 10: [(0.5, 0.4)] * 2})
    fig = DL.diagnostic_figure(long, 'test')
    assert len(fig.axes) == 3 and np.isfinite(long['div_step']).all()
    import matplotlib.pyplot as plt
    plt.close('all')
