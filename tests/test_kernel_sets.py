"""The same small training runs under two ATen CPU kernel sets (subprocesses).

What must agree: the run's configuration and the RKSP profile at init (a forward pass, no
training): the masses exactly (ResDMD fractions to one mode), rho and eta_nl to 1e-6 relative; kappa(V) to 1e-3 and the Kreiss
constant to 1e-4, because both amplify the ~1e-7 float32 differences of the forward pass (an
eigenvector moves by about kappa x the perturbation; measured 5e-5 and 3e-6 on these configs). What may not: the training trajectory — kernels sum in another order,
the bits drift, and near the divergence threshold that can flip a label (docs/environment.md,
docs/kernel-sets.md). Under one kernel set the run is bit-identical when repeated.
"""
from __future__ import annotations

import math

import pytest

from rksp.experiments.kernels import available_sets, init_profile_diffs, label_flips, native_capability, train_under

SETS = available_sets()
pytestmark = pytest.mark.skipif(len(SETS) < 2, reason=f'one kernel set only on this CPU ({SETS})')

# one No-Norm recall config near the threshold (LR 1e-2) and one Pre-LN config; 40 steps each
_BASE = dict(task='recall', model='gpt', optimizer='adamw', schedule='constant', steps=40, warmup_steps=5,
             batch_size=8, n_train=256, n_val=64, profile_n_snapshots=256)
CONFIGS = [dict(_BASE, lr=1e-2, seed=42, model_cfg=dict(d_model=32, n_layer=2, n_head=2, norm='none')),
           dict(_BASE, lr=3e-3, seed=123, model_cfg=dict(d_model=32, n_layer=2, n_head=2, norm='pre_ln'))]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('kernels')
    lo, hi = SETS[0], SETS[-1]
    return {'lo': train_under(lo, CONFIGS, root / lo), 'hi': train_under(hi, CONFIGS, root / hi),
            'hi_again': train_under(hi, CONFIGS, root / f'{hi}-again'), 'sets': (lo, hi)}


def test_kernel_set_is_really_forced(runs):
    # train_under raises when the subprocess silently ran another set; the native one is the last
    assert runs['sets'] == (SETS[0], SETS[-1]) and SETS[-1] == native_capability()


# masses and counts: exact (a mass moves in steps of 1/d; an eigenvalue within 1e-7 of a threshold is
# improbable); kappa 1e-3 and Kreiss 1e-4: 20x and 40x the largest differences measured here
# ResDMD: a mode whose residual is within float error of tau = 0.1 can change side (seen on 4 of 72
# smoke runs: one mode of 32-64), so its fractions (and the masses over kept modes) get 0.05
INIT_TOL = {'resdmd': 0.05, 'm_near_unit_kept': 0.05, 'm_': 0.0, 'score': 0.0, 'n_': 0.0, 'rho': 1e-6,
            'eta_nl': 1e-6, 'kappa': 1e-3, 'kreiss': 1e-4}


def test_init_profile_agrees_across_kernel_sets(runs):
    assert list(runs['lo']['hash']) == list(runs['hi']['hash'])          # same configs, same hashes
    diffs = init_profile_diffs(runs['lo'], runs['hi'])
    assert any(k.startswith('m_near_unit') for k in diffs.index) and 'kappa_mean' in diffs.index
    for col, d in diffs.items():
        tol = next((t for pre, t in INIT_TOL.items() if col.startswith(pre)), None)
        assert tol is not None, f'no tolerance stated for init-profile column {col!r}'
        assert d <= tol, (col, d, tol)


def test_training_is_bit_identical_under_one_kernel_set(runs):
    a, b = runs['hi'].set_index('hash'), runs['hi_again'].set_index('hash')
    for h in a.index:
        assert a.loc[h, 'final_train_loss'] == b.loc[h, 'final_train_loss'] or (
            math.isnan(a.loc[h, 'final_train_loss']) and math.isnan(b.loc[h, 'final_train_loss']))
        assert a.loc[h, 'diverged'] == b.loc[h, 'diverged']


def test_training_may_drift_across_kernel_sets(runs):
    """Not asserted equal: final losses drift (measured ~1e-5 relative after 30 steps) and a label may
    flip. Asserted: both runs finished and, where neither diverged, the losses are close — drift, not a
    different computation."""
    a, b = runs['lo'].set_index('hash'), runs['hi'].set_index('hash')
    assert (a['status'] == 'ok').all() and (b['status'] == 'ok').all()
    for h in a.index:
        if not a.loc[h, 'diverged'] and not b.loc[h, 'diverged']:
            la, lb = a.loc[h, 'final_train_loss'], b.loc[h, 'final_train_loss']
            assert abs(la - lb) <= 0.05 * abs(la), (h, la, lb)
