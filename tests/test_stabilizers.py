"""KSS and the baselines as harness hooks (rksp/methods/stabilizers.py): every method row runs,
each baseline moves training the expected way, bad parameters fail before the run."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rksp import defaults
from rksp.models.gpt import GPT
from rksp.core.snapshots import residual_states
from rksp.methods.rows import (ALIASES, KSS_ALPHA_SWEEP, METHODS, ROWS, TABLES, apply_method, canonical_method,
                               kss_id, merge_overrides, method_config, method_row)
from rksp.methods.stabilizers import (GRAD_PENALTY_LAMBDA, ActivationVarianceHooks, GradPenaltyHooks,
                                      JacobianPenaltyHooks, KSSHooks, RandomL2Hooks, block_linears,
                                      hutchinson_frobenius_sq)
from rksp.harness.registry import HOOKS
from rksp.errors import ConfigError
from rksp.harness.hooks import FunctionHooks, StepOutputs
from rksp.harness.config import TrainConfig
from rksp.harness.loop import train

TINY = dict(task='recall', preset='tiny', n_train=256, n_val=64, batch_size=16, warmup_steps=0,
            profile_at_init=False, model_cfg={'norm': 'none'})


def tiny(**kw):
    d = json.loads(json.dumps(TINY))
    d.update(kw)
    return d


def grab_model(store):
    """A hook whose on_end keeps the trained model (and its config hooks' changes)."""
    return FunctionHooks(on_end=lambda record, model: store.__setitem__('model', model))


# hooks each row (by id) must leave in record['extras'] (besides the optimizer's)
EXPECTED_EXTRAS = {
    'spectral_norm': {'spectral_norm'}, 'weight_norm': {'weight_norm'},
    'grad_penalty_0.1': {'grad_penalty'}, 'sam_0.05': {'sam'}, 'sam_0.10': {'sam'},
    'kss_0.10_sam_0.05': {'sam', 'kss'}, 'lamb_kss': {'kss'}, 'mup': {'mup'},
    'mup_higher_lr': {'mup'}, 'mup_kss': {'mup', 'kss'}, 'random_l2': {'random_l2'},
    'jacobian_penalty': {'jacobian_penalty'}, 'activation_variance': {'activation_variance'},
    'kss_unstable_only': {'kss'}, 'kss_near_unit_only': {'kss'},
    **{kss_id(a): {'kss'} for a in KSS_ALPHA_SWEEP},
}


# ----------------------------------------------------------------------------- the method table

def test_method_table_covers_the_papers_rows():
    names = list(METHODS)
    for row in ['No control', 'Grad clip 0.5', 'Grad clip 1.0', 'KSS α=0.10', 'KSS α=0.15', 'KSS α=0.20',
                'Spectral normalization', 'Weight normalization', 'Gradient penalty λ=0.1', 'SAM ρ=0.05',
                'SAM ρ=0.10', 'Lion', 'LAMB', 'LAMB + warmup', 'μP', 'μP + higher LR',
                'KSS + SAM (α=0.10, ρ=0.05)', 'μP + KSS', 'LAMB + KSS', 'Random ℓ2 on residuals',
                'Jacobian penalty', 'Activation variance reg.', 'KSS unstable only', 'KSS near-unit only',
                'KSS α=0.01', 'KSS α=0.05']:
        assert row in names, row
    for rows in TABLES.values():
        assert all(r in ROWS for r in rows)                         # tables name rows by id
    for alias, target in ALIASES.items():
        assert canonical_method(alias) == target and target in METHODS
    assert method_config('AdamW') == method_config('No control') == method_config('no_control') == {}
    assert method_config('clip_0.5') == {'grad_clip': 0.5}
    assert method_config('kss_0.15') == method_config('KSS α=0.15') == {
        'hooks': [{'target': 'kss', 'kwargs': {'alpha': 0.15, 'projection': 'pod'}}]}
    with pytest.raises(ConfigError, match='did you mean'):
        canonical_method('KSS a=0.15')


def test_rows_have_ids_display_strings_and_the_papers_numbers_in_one_entry():
    from rksp.experiments import paper as P
    assert list(METHODS) == [r.display for r in ROWS.values()]       # the by-name view follows the rows
    assert [canonical_method(i) for i in ('no_control', 'clip_1.0', 'kss_0.15', 'mup_kss', 'z_loss_1e-4')] == \
        ['No control', 'Grad clip 1.0', 'KSS α=0.15', 'μP + KSS', 'z-loss 1e-4']
    assert method_row('KSS').id == method_row('KSS α=0.15').id == 'kss_0.15'
    assert canonical_method('kss_0.50_every_step_all_layers') == 'KSS α=0.50, every step, all layers'
    assert P.METHOD_ROWS['KSS α=0.15'] == {'div_pct': 12.5, 'acc_pct': 48.2, 'm_near_unit': 0.58}
    assert P.METHOD_ROWS['Spectral normalization'] == {'div_pct': 41.7, 'acc_pct': 35.2}   # no M≈1 printed
    assert P.OVERHEAD['SAM ρ=0.10'] == ROWS['sam_0.10'].paper['overhead'] == '~100%'
    assert P.MECHANISM['KSS α=0.15'] == 'Both mechanisms' and P.BEST_LR['LAMB + KSS'] == 0.015
    assert 'kss_0.50' not in {method_row(m).id for m in P.METHOD_ROWS}      # rows beyond the paper: no numbers
    with pytest.raises(ConfigError, match="unknown method 'kss_0.3'"):
        method_row('kss_0.3')


def test_hooks_are_registered_and_configs_round_trip_through_json():
    for name in ('kss', 'spectral_norm', 'weight_norm', 'grad_penalty', 'random_l2', 'jacobian_penalty',
                 'activation_variance'):
        assert name in HOOKS
    for name in METHODS:
        cfg = apply_method(tiny(steps=10), name)
        tc = TrainConfig.from_dict(json.loads(json.dumps(cfg)))
        assert tc.to_dict() == TrainConfig.from_dict(cfg).to_dict()


def test_merge_and_apply_compose_hooks_and_dicts():
    m = merge_overrides({'hooks': ['a'], 'model_cfg': {'norm': 'none', 'd_model': 64}, 'lr': 1e-3},
                        {'hooks': [{'target': 'kss'}], 'model_cfg': {'d_model': 32}, 'lr': 2e-3})
    assert m == {'hooks': ['a', {'target': 'kss'}], 'model_cfg': {'norm': 'none', 'd_model': 32}, 'lr': 2e-3}
    base = tiny(steps=400, hooks=[{'target': 'random_l2', 'kwargs': {}}])
    c = apply_method(base, 'mup_kss')
    assert [h['target'] if isinstance(h, dict) else h for h in c['hooks']] == ['random_l2', 'mup', 'kss']
    assert base['hooks'] == [{'target': 'random_l2', 'kwargs': {}}]      # base not modified
    assert apply_method(base, 'lamb_kss')['optimizer'] == 'lamb'
    sam = apply_method(base, 'kss_0.10_sam_0.05')
    assert {'target': 'sam', 'kwargs': {'rho': 0.05}} in sam['hooks']
    assert {'target': 'kss', 'kwargs': {'alpha': 0.10, 'projection': 'pod'}} in sam['hooks']
    # LAMB + warmup: a quarter of the run (rksp.methods.optim), given the base's steps
    assert apply_method(base, 'lamb_warmup')['warmup_steps'] == 100


@pytest.mark.parametrize('name', list(ROWS))
def test_every_method_runs_a_few_steps(name):
    cfg = apply_method(tiny(steps=10, lr=1e-3), name)
    rec = train(cfg)
    assert rec['status'] == 'ok' and not rec['diverged'] and rec['steps_done'] == 10
    assert math.isfinite(rec['final_train_loss'])
    assert EXPECTED_EXTRAS.get(name, set()) <= set(rec['extras']), rec['extras'].keys()
    if 'kss' in EXPECTED_EXTRAS.get(name, ()):
        assert rec['extras']['kss']['n_applications'] == 1           # step 10


# ----------------------------------------------------------------------------- KSS through the harness

def test_kss_extra_loss_nonzero_exactly_on_application_steps_and_log_summary():
    cfg = tiny(steps=10, lr=1e-3, hooks=[{'target': 'kss', 'kwargs': {'alpha': 0.15, 'every': 3, 'rank': 8}}])
    rec = train(cfg)
    steps, extra = rec['curves']['step'], rec['curves']['extra_loss']
    for s, e in zip(steps, extra):
        if s % 3 == 0:
            assert e > 0, (s, e)
        else:
            assert e == 0.0, (s, e)
    k = rec['extras']['kss']
    assert k['n_applications'] == 3 and k['n_skipped'] == 0
    assert k['curve']['step'] == [3, 6, 9]
    assert 0.0 <= k['m_soft_mean'] <= 1.0 and k['unstable_mean'] >= 0 and k['seconds_total'] > 0
    assert k['config']['alpha'] == 0.15 and k['config']['rank'] == 8 and k['config']['every'] == 3
    # the harness's extra loss is the logged KSS term
    logged = dict(zip(k['curve']['step'], k['curve']['total']))
    for s, e in zip(steps, extra):
        if s in logged:
            assert e == pytest.approx(logged[s], rel=1e-5)
    # the same config trains identically on the task loss where KSS is off (steps 1, 2)
    plain = train(tiny(steps=10, lr=1e-3))
    assert rec['curves']['loss'][:3] == plain['curves']['loss'][:3]


def test_kss_seed_follows_the_run_seed_unless_given():
    def layers(seed, kseed=None):
        kw = {'every': 1, 'rank': 8, 'layer_fraction': 0.5}
        if kseed is not None:
            kw['seed'] = kseed
        h = KSSHooks(**kw)
        train(tiny(steps=4, lr=1e-3, seed=seed), hooks=h)
        return [e['layers'] for e in h.kss.log]
    assert layers(1) == layers(1)
    assert layers(1, kseed=5) == layers(2, kseed=5)
    assert any(layers(s) != layers(1) for s in (2, 3, 4))


@pytest.mark.parametrize('row,on,off', [('kss_unstable_only', 'unstable', 'near_unit'),
                                        ('kss_near_unit_only', 'near_unit', 'unstable')])
def test_table6_ablations_switch_the_right_term(row, on, off):
    cfg = apply_method(tiny(steps=10, lr=1e-3), row)
    (h,) = cfg['hooks']
    assert h['kwargs'][off] is False and h['kwargs'].get(on, True) is True
    cfg['hooks'][0]['kwargs']['every'] = 5
    rec = train(cfg)
    k = rec['extras']['kss']
    assert k['config'][off] is False and k['config'][on] is True
    alpha = k['config']['alpha']
    for total, term, other in zip(k['curve']['total'], k['curve'][on], k['curve'][off]):
        assert total == pytest.approx(alpha * term, rel=1e-9)
        assert other > 0          # the switched-off term exists but does not enter the loss
    full = train(apply_method(tiny(steps=10, lr=1e-3), 'kss_0.15'))['extras']['kss']['curve']
    for total, u, n in zip(full['total'], full['unstable'], full['near_unit']):
        assert total == pytest.approx(0.15 * (u + n), rel=1e-9)


# ----------------------------------------------------------------------------- baselines

def test_grad_clip_row_bounds_the_update():
    """SGD without momentum: the update is lr x the clipped gradient, so ||dw|| <= lr x 0.5."""
    lr, snaps, norms = 0.1, {}, []

    def before(step, model, opt, info):
        snaps['w'] = [p.detach().clone() for p in model.parameters()]

    def after(step, model, opt, info):
        d = torch.sqrt(sum(((p.detach() - w) ** 2).sum() for p, w in zip(model.parameters(), snaps['w'])))
        norms.append((info['grad_norm'], float(d)))

    cfg = apply_method(tiny(steps=8, lr=lr, optimizer='sgd', optimizer_kwargs={'momentum': 0.0},
                            weight_decay=0.0, schedule='constant', model_cfg={'norm': 'none', 'init_std': 0.2}),
                       'clip_0.5')
    train(cfg, hooks=FunctionHooks(before_step=before, after_step=after))
    assert any(g > 0.5 for g, _ in norms)                  # clipping was active
    for g, d in norms:
        assert d <= lr * 0.5 * (1 + 1e-4)
        if g > 0.5:
            assert d == pytest.approx(lr * 0.5, rel=1e-3)


def test_spectral_norm_wraps_block_linears_with_unit_sigma():
    store = {}
    rec = train(apply_method(tiny(steps=6, lr=3e-3), 'spectral_norm'), hooks=grab_model(store))
    model = store['model']
    lins = block_linears(model)
    names = [n for n, _ in lins]
    assert names == rec['extras']['spectral_norm']['layers']
    assert names == [f'blocks.{i}.{m}' for i in range(2) for m in ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc',
                                                                     'mlp.c_proj')]
    # sigma_max(W / sigma_est) ~ 1: sigma_est comes from one power iteration per step, which
    # lags a little behind a changing W (c_attn's top singular values are close), so ~ not ==
    for _, lin in lins:
        assert torch.nn.utils.parametrize.is_parametrized(lin, 'weight')
        assert float(torch.linalg.matrix_norm(lin.weight.detach(), 2)) == pytest.approx(1.0, abs=0.1)
    for s in rec['extras']['spectral_norm']['sigma_max_end']:
        assert s == pytest.approx(1.0, abs=0.1)
    # the raw weights (init std 0.02) are far from sigma 1: the wrapper does the normalizing
    raw = [float(torch.linalg.matrix_norm(lin.parametrizations.weight.original.detach(), 2)) for _, lin in lins]
    assert max(raw) < 0.8
    assert not torch.nn.utils.parametrize.is_parametrized(model.head)      # outside the blocks


def test_weight_norm_parametrization_present_and_trainable():
    init = {}

    def on_start(model, opt, cfg, ctx):
        for n, p in model.named_parameters():
            init[n] = p.detach().clone()
        opt_ids = {id(p) for g in opt.param_groups for p in g['params']}
        for _, lin in block_linears(model):
            pz = lin.parametrizations.weight
            assert id(pz.original0) in opt_ids and id(pz.original1) in opt_ids

    store = {}
    train(apply_method(tiny(steps=5, lr=3e-3), 'weight_norm'),
          hooks=[FunctionHooks(on_start=on_start), grab_model(store)])
    model = store['model']
    for name, lin in block_linears(model):
        assert torch.nn.utils.parametrize.is_parametrized(lin, 'weight')
        pz = lin.parametrizations.weight
        assert pz.original0.requires_grad and pz.original1.requires_grad
        for attr in ('original0', 'original1'):
            key = f'{name}.parametrizations.weight.{attr}'
            assert not torch.equal(init[key], getattr(pz, attr).detach()), key     # trained
        # W = g * V / ||V|| row-wise
        g, v = pz.original0.detach(), pz.original1.detach()
        assert torch.allclose(lin.weight.detach(), g * v / v.norm(dim=1, keepdim=True), atol=1e-6)


def _grads_at_step1(hooks_cfg):
    out = {}

    def after(step, model, opt, info):
        if step == 1:
            out['g'] = [p.grad.detach().clone() for p in model.parameters()]
            out['extra'] = info['extra_loss']
            out['loss'] = info['loss']
    train(tiny(steps=1, lr=1e-3, hooks=hooks_cfg), hooks=FunctionHooks(after_step=after))
    return out


def test_grad_penalty_adds_a_positive_term_and_changes_the_gradient():
    plain = _grads_at_step1([])
    gp = _grads_at_step1([{'target': 'grad_penalty', 'kwargs': {'lam': 0.1, 'every': 1}}])
    assert gp['loss'] == plain['loss']
    assert gp['extra'] > 0
    assert any(not torch.allclose(a, b, rtol=1e-4, atol=1e-9) for a, b in zip(plain['g'], gp['g']))
    # the default is the paper's lambda on the KSS schedule
    h = GradPenaltyHooks()
    assert h.lam == GRAD_PENALTY_LAMBDA == 0.1 and h.every == defaults.KSS_EVERY


def test_grad_penalty_equals_batch_mean_of_per_sequence_input_gradient_norms():
    torch.manual_seed(0)
    model = GPT.from_preset('tiny', norm='none', block_size=16)
    x, y = torch.randint(0, 256, (4, 16)), torch.randint(0, 256, (4,))
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.MATH]), residual_states(model) as hs:
        logits = model(x)
    loss = F.cross_entropy(logits[:, -1], y)
    pen = GradPenaltyHooks(lam=1.0, every=1).penalty(StepOutputs(logits, loss, list(hs)))
    per = []
    for b in range(4):
        with residual_states(model) as hb:
            lb = F.cross_entropy(model(x[b:b + 1])[:, -1], y[b:b + 1])
        (g,) = torch.autograd.grad(lb, hb[0])
        per.append(g.pow(2).sum())
    assert float(pen.detach()) == pytest.approx(float(torch.stack(per).mean()), rel=1e-4)


def _hidden_stats(store):
    def on_end(record, model):
        x = torch.randint(0, 256, (16, 64), generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), residual_states(model) as hs:
            model(x)
        hs = list(hs)
        store['h2'] = sum(h.pow(2).mean().item() for h in hs[1:]) / (len(hs) - 1)
        lv = [math.log(ActivationVarianceHooks.layer_variance(h).item()) for h in hs]
        store['dev'] = sum((v - lv[0]) ** 2 for v in lv[1:]) / (len(lv) - 1)
    return FunctionHooks(on_end=on_end)


def _trained_stats(hooks_cfg):
    st = {}
    rec = train(tiny(steps=30, lr=3e-3, schedule='constant', hooks=hooks_cfg), hooks=_hidden_stats(st))
    assert not rec['diverged']
    return st, rec


def test_random_l2_reduces_residual_norms():
    base, _ = _trained_stats([])
    reg, rec = _trained_stats([{'target': 'random_l2', 'kwargs': {'lam': 10.0, 'every': 1, 'layer_fraction': 1.0}}])
    assert reg['h2'] < 0.5 * base['h2']
    e = rec['extras']['random_l2']
    assert e['n_applications'] == 30 and e['lam'] == 10.0 and e['penalty_mean'] > 0
    # default: the KSS schedule, every 10 steps on a random half of the layers
    h = RandomL2Hooks()
    assert (h.every, h.layer_fraction) == (10, 0.5)


def test_activation_variance_moves_layer_variances_toward_the_input_variance():
    base, _ = _trained_stats([])
    reg, rec = _trained_stats([{'target': 'activation_variance',
                                'kwargs': {'lam': 10.0, 'every': 1, 'layer_fraction': 1.0}}])
    assert base['dev'] > 0.1                     # without it the variances drift with depth
    assert reg['dev'] < 0.25 * base['dev']
    assert rec['extras']['activation_variance']['n_applications'] == 30


def test_hutchinson_matches_exact_frobenius_norm_on_a_linear_block():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = x @ W.T + 1.0
    exact = 7 * W.pow(2).sum()                       # J = I_7 (x) W
    est = hutchinson_frobenius_sq(y, x, n_probes=4000, generator=torch.Generator().manual_seed(1),
                                  create_graph=False)
    assert float(est) == pytest.approx(float(exact), rel=0.05)
    # a nonlinear map, against the exact Jacobian
    x2 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    f = lambda t: torch.tanh(t @ W[:4, :4]) + t                               # noqa: E731
    J = torch.autograd.functional.jacobian(f, x2)
    est2 = hutchinson_frobenius_sq(f(x2), x2, n_probes=4000, generator=torch.Generator().manual_seed(2),
                                   create_graph=False)
    assert float(est2) == pytest.approx(float(J.pow(2).sum()), rel=0.05)
    # single probes: unbiased, so their mean over many draws converges too
    gen = torch.Generator().manual_seed(3)
    singles = torch.stack([hutchinson_frobenius_sq(y, x, 1, gen, create_graph=False) for _ in range(3000)])
    assert float(singles.mean()) == pytest.approx(float(exact), rel=0.06)


def test_jacobian_penalty_is_about_one_for_near_identity_blocks_and_trains():
    rec = train(tiny(steps=10, lr=1e-3, hooks=[{'target': 'jacobian_penalty', 'kwargs': {'every': 5}}]))
    e = rec['extras']['jacobian_penalty']
    assert e['n_applications'] == 2 and e['n_probes'] == 1 and e['lam'] == 0.15
    for v in e['curve']['penalty']:
        assert 0.8 < v < 1.25             # ||J||_F^2 / (n_tokens d) of h + f(h) with small f
    h = JacobianPenaltyHooks()
    assert (h.every, h.layer_fraction) == (10, 0.5)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize('hook,kwargs,match', [
    ('kss', {'alpha': -0.1}, 'alpha'),
    ('kss', {'every': 0}, 'every'),
    ('kss', {'layer_fraction': 0.0}, 'layer_fraction'),
    ('kss', {'gamma': 1.5}, 'gamma'),
    ('kss', {'unstable': False, 'near_unit': False}, 'both off'),
    ('kss', {'alpah': 0.1}, 'unknown'),
    ('grad_penalty', {'lam': -0.1}, 'lam'),
    ('random_l2', {'lam': -1.0}, 'lam'),
    ('jacobian_penalty', {'lam': float('nan')}, 'lam'),
    ('jacobian_penalty', {'n_probes': 0}, 'n_probes'),
    ('activation_variance', {'every': 1.5}, 'every'),
    ('spectral_norm', {'n_power_iterations': 0}, 'n_power_iterations'),
])
def test_bad_parameters_raise_before_the_run(hook, kwargs, match):
    started = []
    cfg = tiny(steps=5, hooks=[{'target': hook, 'kwargs': kwargs}])
    with pytest.raises(ConfigError, match=match):
        train(cfg, hooks=FunctionHooks(on_start=lambda *a: started.append(1)))
    assert not started


def test_rank_above_width_raises_before_training():
    started = []
    cfg = tiny(steps=5, hooks=[{'target': 'kss', 'kwargs': {'rank': 33}}])   # tiny: d = 32
    with pytest.raises(ConfigError, match='exceeds the model'):
        train(cfg, hooks=FunctionHooks(on_start=lambda *a: started.append(1)))
    assert not started


def test_apply_method_validates_and_rejects_unknown_rows():
    with pytest.raises(ConfigError, match='unknown method'):
        apply_method(tiny(), 'Dropout')
    with pytest.raises(ConfigError):
        apply_method(tiny(lr=-1.0), 'kss_0.15')


def test_every_registered_hook_conforms_to_the_protocol():
    """Every hook of the package is a TrainHooks built from its defaults; the loop reads no member
    the base class does not declare (extra_grad_bound: None, or KSS's grad_bound)."""
    from rksp.harness.hooks import TrainHooks
    import rksp.methods.optim  # noqa: F401 -- registers sam, mup
    for name in ('kss', 'spectral_norm', 'weight_norm', 'grad_penalty', 'random_l2', 'jacobian_penalty',
                 'activation_variance', 'sam', 'mup'):
        h = HOOKS[name]()
        assert isinstance(h, TrainHooks), name
        assert h.extra_grad_bound is None or (name == 'kss' and h.extra_grad_bound == h.config.grad_bound), name
    assert HOOKS['kss'](grad_bound=2.0).extra_grad_bound == 2.0
