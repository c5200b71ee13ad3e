"""Tests of the optimizer baselines (rksp/methods/optim.py): Lion, LAMB, SAM, μP, named methods."""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rksp.models.gpt import GPT, GPTConfig
from rksp.methods.optim import (LAMB_WARMUP_STEPS, LION_BETAS, OPTIMIZER_ROWS, MUP_BASE_WIDTH, MUP_HIGHER_LR_MULT,
                                MuPHooks, SAMHooks, make_lamb, make_lion, method_overrides, mup_hidden_matrices)
from rksp.errors import ConfigError
from rksp.harness.hooks import FunctionHooks, TrainHooks
from rksp.harness.config import TrainConfig
from rksp.harness.loop import param_groups, train

TINY = dict(task='recall', preset='tiny', n_train=256, n_val=64, batch_size=16, warmup_steps=0,
            profile_at_init=False)


def tiny(**kw):
    d = dict(TINY)
    d.update(kw)
    return d


def decreased(rec, margin=0.05):
    losses = rec['curves']['loss']
    return np.mean(losses[-5:]) < np.mean(losses[:5]) - margin


# ----------------------------------------------------------------------------- Lion / LAMB

@pytest.mark.parametrize('name, lr, cls', [('lion', 3e-3, 'Lion'), ('lamb', 1e-2, 'Lamb')])
def test_lion_and_lamb_from_config_train_a_tiny_gpt(name, lr, cls):
    seen = []
    rec = train(tiny(optimizer=name, lr=lr, steps=25),
                hooks=FunctionHooks(on_start=lambda model, opt, cfg, ctx: seen.append(opt)))
    assert type(seen[0]).__name__ == cls and type(seen[0]).__module__.startswith('timm.optim')
    # the harness's groups survive: decay on matrices only
    assert [g['weight_decay'] for g in seen[0].param_groups] == [0.01, 0.0]
    assert not rec['diverged'] and rec['steps_done'] == 25 and decreased(rec), rec['curves']['loss']
    json.dumps(rec)


def _linear(seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(8, 4)
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    return lin, x, y


def _one_step(lin, x, y, opt):
    w0 = {n: p.detach().clone() for n, p in lin.named_parameters()}
    opt.zero_grad()
    F.mse_loss(lin(x), y).backward()
    g = {n: p.grad.detach().clone() for n, p in lin.named_parameters()}
    opt.step()
    return w0, g


@pytest.mark.parametrize('wd', [0.0, 0.1])
def test_lion_first_step_is_a_sign_update(wd):
    lin, x, y = _linear()
    lr = 1e-2
    opt = make_lion(param_groups(lin, wd), TrainConfig(optimizer='lion', lr=lr, weight_decay=wd))
    w0, g = _one_step(lin, x, y, opt)
    dw = lin.weight.detach() - w0['weight']
    assert torch.all(g['weight'] != 0)
    if wd == 0.0:
        assert torch.allclose(dw.abs(), torch.full_like(dw, lr), rtol=0, atol=1e-7)   # |Δw| = lr everywhere
    # fresh momentum: w1 = w0 (1 - lr wd) - lr sign(g); biases are in the no-decay group
    assert torch.allclose(lin.weight.detach(), w0['weight'] * (1 - lr * wd) - lr * g['weight'].sign(), atol=1e-7)
    assert torch.allclose(lin.bias.detach(), w0['bias'] - lr * g['bias'].sign(), atol=1e-7)


@pytest.mark.parametrize('wd', [0.0, 0.01])
def test_lamb_layerwise_trust_ratio(wd):
    lin, x, y = _linear(1)
    gain = nn.Parameter(torch.ones(4))        # a 1-D parameter (like a norm gain) takes the plain Adam step
    lr, eps = 1e-2, 1e-8
    groups = param_groups(lin, wd)
    groups[-1]['params'].append(gain)
    opt = make_lamb(groups, TrainConfig(optimizer='lamb', lr=lr, weight_decay=wd, eps=eps))
    w0 = lin.weight.detach().clone()
    opt.zero_grad()
    (F.mse_loss(lin(x), y) + (gain * torch.arange(4.0)).sum()).backward()
    gw, gg = lin.weight.grad.clone(), gain.grad.clone()
    opt.step()
    dw = lin.weight.detach() - w0
    # the per-layer update norm is lr * ||w|| (trust ratio ||w|| / ||u||), whatever the gradient scale
    assert math.isclose(dw.norm().item(), lr * w0.norm().item(), rel_tol=1e-5)
    # and its direction is the Adam step + L2 decay u = m^/(sqrt(v^)+eps) + wd w (step 1: m^ = g, v^ = g^2)
    u = gw / (gw.abs() + eps) + wd * w0
    assert torch.allclose(dw, -lr * w0.norm() * u / u.norm(), atol=1e-7)
    # 1-D parameters: no trust ratio (Adam step), and no built-in gradient clipping
    dg = gain.detach() - 1.0
    assert torch.allclose(dg, -lr * gg / (gg.abs() + eps), atol=1e-7)


def test_bad_optimizer_kwargs_are_config_errors():
    lin, _, _ = _linear()
    with pytest.raises(ConfigError, match='optimizer_kwargs'):
        make_lion(lin.parameters(), TrainConfig(optimizer='lion', optimizer_kwargs={'nonsense': 1}))
    with pytest.raises(ConfigError, match='optimizer_kwargs'):
        make_lamb(lin.parameters(), TrainConfig(optimizer='lamb', optimizer_kwargs={'nonsense': 1}))


# ----------------------------------------------------------------------------- SAM

class _Recorder(TrainHooks):
    """Keeps the model at init, the batches, and what the optimizer sees when it steps."""

    def __init__(self):
        self.init_model, self.batches, self.at_step = None, [], []

    def transform_model(self, model, cfg):
        self.init_model = copy.deepcopy(model)
        return model

    def make_optimizer(self, params, cfg, model):
        rec = self

        class RecordingAdamW(torch.optim.AdamW):
            def step(self, closure=None):
                rec.at_step.append({n: (p.detach().clone(), p.grad.detach().clone())
                                    for n, p in model.named_parameters()})
                return super().step(closure)
        return RecordingAdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def before_step(self, step, model, optimizer, info):
        self.batches.append(info['batch'])


class _L2Extra(TrainHooks):
    """An extra loss that depends on the weights: coef * ||head/wte weight||^2; counts its calls."""

    def __init__(self, coef=0.5):
        self.coef, self.calls = coef, {}

    def extra_loss(self, model, batch, outputs, step):
        self.calls[step] = self.calls.get(step, 0) + 1
        return self.coef * model.wte.weight.pow(2).sum()


def _manual_sam_grads(model, batch, rho, extra_coef=None):
    """The SAM gradient by hand: g at w, then the gradient at w + rho g / ||g||."""
    x, y = batch

    def objective(m):
        loss = F.cross_entropy(m(x)[:, -1, :], y)
        if extra_coef is not None:
            loss = loss + extra_coef * m.wte.weight.pow(2).sum()
        return loss

    m = copy.deepcopy(model)
    ps = dict(m.named_parameters())
    g = torch.autograd.grad(objective(m), list(ps.values()))
    gn = torch.linalg.vector_norm(torch.stack([t.norm() for t in g]))
    with torch.no_grad():
        for p, t in zip(ps.values(), g):
            p.add_(rho * t / (gn + 1e-12))
    g2 = torch.autograd.grad(objective(m), list(ps.values()))
    return dict(zip(ps, g)), dict(zip(ps, g2))


@pytest.mark.parametrize('with_extra', [False, True])
def test_sam_steps_with_the_gradient_at_the_perturbed_weights(with_extra):
    rho = 0.1
    rec_hook, extra = _Recorder(), _L2Extra(0.5)
    hooks = [rec_hook] + ([extra] if with_extra else [])
    rec = train(tiny(steps=2, lr=1e-3, hooks=[{'target': 'sam', 'kwargs': {'rho': rho}}]), hooks=hooks)
    assert rec['steps_done'] == 2 and rec['extras']['sam'] == {'rho': rho, 'sam_steps': 2}
    params_at_step, grads_at_step = {}, {}
    for n, (p, g) in rec_hook.at_step[0].items():
        params_at_step[n], grads_at_step[n] = p, g
    init = dict(rec_hook.init_model.named_parameters())
    # the weights are restored (exactly) before the optimizer steps
    for n, p in params_at_step.items():
        assert torch.equal(p, init[n]), n
    g_plain, g_sam = _manual_sam_grads(rec_hook.init_model, rec_hook.batches[0], rho,
                                       extra_coef=0.5 if with_extra else None)
    for n in g_sam:
        assert torch.allclose(grads_at_step[n], g_sam[n], rtol=1e-4, atol=1e-6), n
    # ... and that gradient is not the plain one at w
    assert not all(torch.allclose(grads_at_step[n], g_plain[n], rtol=1e-4, atol=1e-6) for n in g_plain)
    if with_extra:
        assert extra.calls == {1: 2, 2: 2}                         # extra loss in both passes of every step
        assert rec['curves']['extra_loss'][0] == pytest.approx(
            0.5 * init['wte.weight'].pow(2).sum().item(), rel=1e-5)  # recorded at w (first pass)
    # the recorded grad norm is the applied (perturbed-point) gradient's
    gn = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads_at_step.values()])).item()
    assert rec['curves']['grad_norm'][0] == pytest.approx(gn, rel=1e-5)


def test_sam_trains_and_composes_with_an_extra_loss_hook():
    extra = _L2Extra(1e-4)
    rec = train(tiny(steps=20, lr=3e-3, **method_overrides('sam_0.05')), hooks=extra)
    assert not rec['diverged'] and decreased(rec), rec['curves']['loss']
    assert set(extra.calls.values()) == {2} and len(extra.calls) == 20
    assert 'extra_loss' in rec['curves']


@pytest.mark.parametrize('rho', [0, -0.05, float('nan'), float('inf'), 'big', True])
def test_sam_rejects_bad_rho(rho):
    with pytest.raises(ConfigError, match='rho'):
        SAMHooks(rho=rho)


def test_bad_sam_rho_in_a_config_fails_before_training():
    with pytest.raises(ConfigError, match='rho'):
        train(tiny(steps=3, hooks=[{'target': 'sam', 'kwargs': {'rho': 0.0}}]))


# ----------------------------------------------------------------------------- μP

def _gpt(width, norm='pre_ln', seed=0, block_size=64):
    torch.manual_seed(seed)
    return GPT(GPTConfig(d_model=width, n_head=2, n_layer=2, norm=norm, block_size=block_size))


def _mup(model, base_width=32, lr=1e-2, wd=0.01, optimizer='adamw', lr_mult=1.0):
    cfg = TrainConfig(preset='tiny', lr=lr, weight_decay=wd, optimizer=optimizer)
    h = MuPHooks(base_width=base_width, lr_mult=lr_mult)
    model = h.transform_model(model, cfg)
    return model, h.make_optimizer(param_groups(model, wd), cfg, model), h


def test_mup_lr_and_weight_decay_scale_with_width():
    lr, wd = 1e-2, 0.01
    for width in (32, 64):
        model, opt, h = _mup(_gpt(width), lr=lr, wd=wd)
        m = width / 32
        hidden = {id(p) for p in mup_hidden_matrices(model)}
        assert len(hidden) == 8                               # c_attn, attn.c_proj, c_fc, mlp.c_proj x 2 layers
        seen = set()
        for g in opt.param_groups:
            ids = {id(p) for p in g['params']}
            seen |= ids
            if ids <= hidden:
                assert g['lr'] == pytest.approx(lr / m) and g['weight_decay'] == pytest.approx(wd * m)
            else:
                assert not ids & hidden
                assert g['lr'] == pytest.approx(lr)          # embeddings, tied readout, biases, gains
        assert seen == {id(p) for p in model.parameters()}
        assert isinstance(opt, torch.optim.AdamW)


def test_mup_init_scaling_and_base_width_identity():
    sp, (mu, _, _) = _gpt(64), _mup(_gpt(64))
    for (n, a), (_, b) in zip(sp.named_parameters(), mu.named_parameters()):
        hidden = n.startswith('blocks.') and a.dim() == 2
        assert torch.allclose(b, a / math.sqrt(2.0) if hidden else a), n    # std ∝ 1/sqrt(fan_in)
    # at the base width μP changes nothing
    sp32, (mu32, _, _) = _gpt(32), _mup(_gpt(32))
    x = torch.randint(0, 256, (2, 16))
    assert torch.equal(sp32(x), mu32(x))
    # DeepNorm's xavier init already scales as 1/sqrt(width): no rescale
    spd, (mud, _, _) = _gpt(64, 'deepnorm'), _mup(_gpt(64, 'deepnorm'))
    for a, b in zip(spd.parameters(), mud.parameters()):
        assert torch.equal(a, b)


def test_mup_readout_and_attention_multipliers():
    width, base = 64, 32
    m = width / base
    model, _, _ = _mup(_gpt(width), base_width=base)
    got = {}
    # hooks registered with prepend=True run before μP's: they see the raw tensors
    model.head.register_forward_pre_hook(lambda mod, a: got.__setitem__('head_in', a[0]), prepend=True)
    model.head.register_forward_hook(lambda mod, a, out: got.__setitem__('logits', out))
    attn = model.blocks[0].attn
    attn.c_attn.register_forward_hook(lambda mod, a, out: got.__setitem__('qkv', out), prepend=True)
    attn.register_forward_hook(lambda mod, a, out: got.__setitem__('attn_out', out))
    model(torch.randint(0, 256, (2, 16)))
    # readout: logits = (x / m) W^T (tied head, no bias)
    assert torch.allclose(got['logits'], (got['head_in'] / m) @ model.wte.weight.T, atol=1e-6)
    # attention: softmax(q k^T * sqrt(d_head_base) / d_head), d_head_base = d_head / m
    qkv = got['qkv']
    B, T, _ = qkv.shape
    dh = width // 2
    q, k, v = (t.view(B, T, 2, dh).transpose(1, 2) for t in qkv.split(width, dim=2))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=math.sqrt(dh / m) / dh)
    want = attn.c_proj(y.transpose(1, 2).reshape(B, T, width))
    assert torch.allclose(got['attn_out'], want, atol=1e-6)


def test_mup_coordinate_check():
    """Adam, same lr at widths 32 and 256: the per-coordinate change of the logits after 3 steps
    is about width-independent under μP and grows with width under SP; at init μP logits shrink
    as 1/sqrt(width) (readout 1/m) while SP logits grow as sqrt(width)."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 16))
    y = torch.randint(0, 256, (16,))

    def run(width, mup):
        model = _gpt(width, block_size=16)
        if mup:
            model, opt, _ = _mup(model, base_width=32, lr=1e-2, wd=0.0)
        else:
            opt = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-2)
        with torch.no_grad():
            l0 = model(x)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x)[:, -1], y).backward()
            opt.step()
        with torch.no_grad():
            l1 = model(x)
        rms = lambda t: t.pow(2).mean().sqrt().item()   # noqa: E731
        return rms(l0), rms(l1 - l0)

    (sp0_s, sp_d_s), (sp0_l, sp_d_l) = run(32, False), run(256, False)
    (mu0_s, mu_d_s), (mu0_l, mu_d_l) = run(32, True), run(256, True)
    assert (mu0_s, mu_d_s) == (sp0_s, sp_d_s)                 # identical at the base width
    assert 0.5 < mu_d_l / mu_d_s < 2.0, (mu_d_s, mu_d_l)       # μP: Θ(1) updates
    assert sp_d_l / sp_d_s > 3.0, (sp_d_s, sp_d_l)             # SP: grows with width
    assert sp0_l / sp0_s == pytest.approx(math.sqrt(8), rel=0.25)
    assert mu0_l / mu0_s == pytest.approx(1 / math.sqrt(8), rel=0.25)


def test_mup_lr_mult_equals_a_higher_lr():
    base = tiny(steps=5, lr=1e-3, model_cfg={'d_model': 64})
    a = train({**base, **method_overrides('mup_higher_lr')})
    b = train({**base, **method_overrides('mup'), 'lr': 1e-3 * MUP_HIGHER_LR_MULT})
    assert np.allclose(a['curves']['loss'], b['curves']['loss'], rtol=1e-5)
    assert a['extras']['mup']['lr_mult'] == MUP_HIGHER_LR_MULT and a['extras']['mup']['width_mult'] == 2.0
    assert a['extras']['mup']['hidden_lr_scale'] == pytest.approx(MUP_HIGHER_LR_MULT / 2)


@pytest.mark.parametrize('kwargs, match', [({'base_width': 0}, 'base_width'), ({'base_width': 32.5}, 'base_width'),
                                           ({'lr_mult': 0}, 'lr_mult'), ({'lr_mult': -1.0}, 'lr_mult')])
def test_mup_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MuPHooks(**kwargs)


def test_mup_rejects_non_adam_optimizers_and_double_application():
    with pytest.raises(ConfigError, match='Adam-type'):
        train(tiny(steps=2, optimizer='sgd', hooks=['mup']))
    model, _, _ = _mup(_gpt(64))
    with pytest.raises(ConfigError, match='already'):
        MuPHooks().transform_model(model, TrainConfig(preset='tiny'))
    # a hook that builds the optimizer before μP would silently drop its per-group lrs
    other = FunctionHooks(make_optimizer=lambda params, cfg, model: torch.optim.AdamW(params, lr=cfg.lr))
    with pytest.raises(ConfigError, match='mup'):
        train(tiny(steps=2, model_cfg={'d_model': 64}), hooks=[other, MuPHooks()])


# ----------------------------------------------------------------------------- named methods

@pytest.mark.parametrize('name', OPTIMIZER_ROWS)
def test_every_named_method_builds_a_config_and_trains_3_steps(name):
    ov = method_overrides(name)
    cfg = TrainConfig(**tiny(steps=3, lr=3e-3, model_cfg={'d_model': 64}, **ov))
    assert cfg.optimizer == ov['optimizer'] and cfg.hooks == ov['hooks']
    json.dumps(cfg.to_dict())
    rec = train(cfg)
    assert rec['status'] == 'ok' and rec['steps_done'] == 3 and not rec['diverged']
    assert all(math.isfinite(v) for v in rec['curves']['loss'])
    if name.startswith('sam'):
        assert rec['extras']['sam']['rho'] == float(name.split('_')[1])
    if name.startswith('mup'):
        assert rec['extras']['mup']['base_width'] == MUP_BASE_WIDTH


def test_method_overrides_details():
    assert method_overrides('lion')['betas'] == list(LION_BETAS)
    assert method_overrides('lamb_warmup')['warmup_steps'] == LAMB_WARMUP_STEPS
    assert method_overrides('lamb_warmup', steps=2000)['warmup_steps'] == 500
    assert method_overrides('lamb_warmup', steps=200)['warmup_steps'] == 100     # never below the default
    assert 'warmup_steps' not in method_overrides('lamb')
    a = method_overrides('sam_0.05')
    a['hooks'].append({'target': 'kss'})                                          # fresh lists
    assert method_overrides('sam_0.05')['hooks'] == [{'target': 'sam', 'kwargs': {'rho': 0.05}}]
    assert method_overrides('adamw')['hooks'] == []
    with pytest.raises(ConfigError, match='unknown method'):
        method_overrides('adamw_fast')
    with pytest.raises(ConfigError, match='steps'):
        method_overrides('lamb_warmup', steps=0)


def test_a_fresh_process_resolves_every_plugin_name_without_importing_its_module():
    """'lion', 'lamb', 'sam', 'mup' and the stabilizers register where they are defined; rksp.harness
    imports PLUGIN_MODULES on the first unknown name, so a sweep worker needs no import."""
    import subprocess
    import sys
    code = ("import sys, rksp.harness.registry as T\n"
            "assert 'rksp.methods.optim' not in sys.modules and 'rksp.methods.stabilizers' not in sys.modules\n"
            "import rksp.methods.optim as O, rksp.methods.stabilizers as S\n"
            "assert T.resolve_optimizer('lion') is O.make_lion and T.resolve_optimizer('lamb') is O.make_lamb\n"
            "assert T.resolve_hook_factory('sam') is O.SAMHooks and T.resolve_hook_factory('mup') is O.MuPHooks\n"
            "assert T.resolve_hook_factory('kss') is S.KSSHooks\n")
    fresh = ("import sys, rksp.harness.registry as T\n"
             "f = T.resolve_optimizer('lion')\n"
             "assert 'rksp.methods.optim' in sys.modules and f.__name__ == 'make_lion'\n"
             "assert T.resolve_hook_factory('kss').__name__ == 'KSSHooks'\n")
    for c in (fresh, code.replace("assert 'rksp.methods.optim' not in sys.modules and 'rksp.methods.stabilizers' not in sys.modules\n", "")):
        r = subprocess.run([sys.executable, '-c', c], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_lamb_warmup_row_sees_the_run_length_of_a_config_set_in_epochs():
    """'LAMB + warmup' warms up over a quarter of the run also when the base config gives epochs, not
    steps (the recipe: 5 epochs of 8,192 at batch 32 = 1,280 steps -> 320), as the loop counts them."""
    from rksp.methods.rows import method_config, run_steps
    base = dict(epochs=5, n_train=8192, batch_size=32, steps=None)
    assert run_steps(base) == 1280 and method_config('LAMB + warmup', base)['warmup_steps'] == 320
    assert run_steps(dict(epochs=0.5, n_train=100, batch_size=32)) == 2          # rounded up, as the loop does
    assert run_steps(dict(steps=200, epochs=5, n_train=8192, batch_size=32)) == 200
    assert run_steps({}) is None and method_config('LAMB + warmup', {})['warmup_steps'] == 500
