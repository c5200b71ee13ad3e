"""Two stabilizers practitioners use (issue 21): QK-LayerNorm (`GPTConfig.qk_norm`) and the z-loss
(`z_loss` hook), their method rows, and the attention diagnostics (rksp.experiments.diagnostics)."""
import math

import pytest
import torch
import torch.nn.functional as F

from rksp.errors import ConfigError, RKSPInputError
from rksp.experiments.diagnostics import (COLUMNS, AttentionDiagnosticsHooks, attention_diagnostics,
                                          diagnostics_long, logit_stats)
from rksp.experiments.plans import recall_base
from rksp.harness.config import TrainConfig
from rksp.harness.hooks import StepOutputs
from rksp.harness.loop import train
from rksp.methods.rows import METHODS, TABLES, apply_method, method_config
from rksp.methods.stabilizers import Z_LOSS_COEFF, ZLossHooks, z_loss
from rksp.models.gpt import GPT, GPTConfig


def smoke(steps=6, **kw):
    """The smoke profile's recall config, a few steps, no profiles."""
    return {**recall_base('smoke'), 'steps': steps, 'warmup_steps': 1, 'profile_at_init': False,
            'profile_at_end': False, **kw}


# ----------------------------------------------------------------------------- QK-LayerNorm

def test_qk_norm_off_by_default_leaves_the_model_and_the_config_hash_unchanged():
    assert GPTConfig().qk_norm is False
    torch.manual_seed(0)
    plain = GPT(GPTConfig(d_model=32, n_layer=2, n_head=2))
    torch.manual_seed(0)
    qk = GPT(GPTConfig(d_model=32, n_layer=2, n_head=2, qk_norm=True))
    assert not any('q_norm' in k or 'k_norm' in k for k in plain.state_dict())
    # the LayerNorms draw nothing from the init stream: every other weight is the same
    sd = qk.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in plain.state_dict().items())
    # two LayerNorm(d_head) per layer, gain and bias each
    assert qk.num_params() - plain.num_params() == 2 * 2 * 2 * (32 // 2)
    # the run config of a model without the option does not mention it, so its hash is the old one
    cfg = TrainConfig.from_dict(smoke())
    assert 'qk_norm' not in cfg.to_dict()['model_cfg']
    assert TrainConfig.from_dict({'task': 'recall', 'model_cfg': {'norm': 'none'}, 'steps': 10}).hash() == \
        'c44d639bd4cd932b'   # computed before the option existed
    with pytest.raises(ValueError, match='qk_norm'):
        GPTConfig(qk_norm='yes')


def test_qk_norm_bounds_the_attention_logits_by_sqrt_d_head():
    torch.manual_seed(1)
    cfgs = dict(d_model=32, n_layer=2, n_head=4, block_size=16, vocab_size=50)
    x = torch.randint(0, 50, (4, 16))
    out = {}
    for flag in (False, True):
        torch.manual_seed(1)
        m = GPT(GPTConfig(**cfgs, qk_norm=flag))
        with torch.no_grad():
            for blk in m.blocks:                 # queries and keys 50x too large: logits blow up without the norm
                blk.attn.c_attn.weight.mul_(50.0)
        out[flag] = attention_diagnostics(m, x)
    d_head = 32 // 4
    assert (out[True]['max_logit'] <= math.sqrt(d_head) + 1e-4).all()
    assert (out[False]['max_logit'] > 10 * math.sqrt(d_head)).all()
    # the model with the norm attends more broadly (higher entropy)
    assert (out[True]['entropy_mean'] > out[False]['entropy_mean']).all()
    # normalized q, k per head: mean 0 and mean square var / (var + eps) <= 1 over d_head at init
    # (about 1/2 for the tiny init-scale queries, whose variance is comparable to eps = 1e-5; 1 for large ones)
    m = GPT(GPTConfig(**cfgs, qk_norm=True))
    with torch.no_grad():
        q, k, _ = m.blocks[0].attn.qkv(m.embed(x))
        assert q.shape == (4, 4, 16, d_head) and q.mean(-1).abs().max() < 1e-5
        assert q.pow(2).mean(-1).max() <= 1.0 + 1e-6 and k.pow(2).mean(-1).max() <= 1.0 + 1e-6
        m.blocks[0].attn.c_attn.weight.mul_(100.0)
        q, _, _ = m.blocks[0].attn.qkv(m.embed(x))
        assert q.pow(2).mean(-1).sub(1).abs().max() < 1e-2


def test_qk_layernorm_row_trains_a_few_steps_on_the_smoke_config():
    assert METHODS['QK-LayerNorm'] == method_config('qk_layernorm') == {'model_cfg': {'qk_norm': True}}
    cfg = apply_method(smoke(), 'qk_layernorm')
    assert cfg['model_cfg'] == {**recall_base('smoke')['model_cfg'], 'qk_norm': True}
    rec = train(cfg)
    assert rec['status'] == 'ok' and rec['steps_done'] == 6 and rec['model_config']['qk_norm'] is True
    assert math.isfinite(rec['final_train_loss'])
    assert 'qk_layernorm' in TABLES['practice'] and all('qk_layernorm' not in r for t, r in TABLES.items()
                                                         if t != 'practice')


# ----------------------------------------------------------------------------- z-loss

def test_z_loss_is_coeff_times_mean_squared_logsumexp_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    lse = [math.log(math.e + math.e ** 2 + math.e ** 3), math.log(3.0)]     # 3.4076, 1.0986
    hand = 1e-4 * (lse[0] ** 2 + lse[1] ** 2) / 2
    hk = ZLossHooks()
    out = StepOutputs(logits=logits, loss=torch.tensor(0.0), hidden=None)
    val = hk.extra_loss(None, None, out, step=1)
    assert float(val.detach()) == pytest.approx(hand, rel=1e-6)
    assert float(z_loss(logits.detach(), 1e-4)) == pytest.approx(hand, rel=1e-6)
    # its gradient flows: d/dz_ij = coeff * 2 lse_i softmax_ij / N
    val.backward()
    expect = 1e-4 * 2 * torch.tensor(lse).unsqueeze(1) * F.softmax(logits.detach(), -1) / 2
    torch.testing.assert_close(logits.grad, expect, rtol=1e-5, atol=1e-12)
    # the positions the task loss reads: recall the last one, an LM all but the last
    x = torch.randn(2, 5, 7)
    last = torch.logsumexp(x[:, -1], -1).square().mean()
    assert float(z_loss(x, 1.0, 'last')) == pytest.approx(float(last))
    assert float(z_loss(x, 1.0, 'lm')) == pytest.approx(float(torch.logsumexp(x[:, :-1], -1).square().mean()))
    assert float(z_loss(x, 1.0, 'all')) == pytest.approx(float(torch.logsumexp(x, -1).square().mean()))
    with pytest.raises(ConfigError, match='positions'):
        ZLossHooks(positions='first')
    with pytest.raises(ConfigError, match='lam'):
        ZLossHooks(coeff=-1.0)


def test_z_loss_row_trains_and_adds_its_term_to_the_loss():
    assert METHODS['z-loss 1e-4'] == method_config('z_loss_1e-4') == {
        'hooks': [{'target': 'z_loss', 'kwargs': {'coeff': Z_LOSS_COEFF}}]}
    rec = train(apply_method(smoke(steps=10), 'z_loss_1e-4'))
    assert rec['status'] == 'ok' and rec['steps_done'] == 10
    z = rec['extras']['z_loss']
    assert z['positions'] == 'last' and z['n_applications'] == 10 and z['curve']['step'] == [1, 10]
    # the harness's extra loss of a logged step is coeff x the logged mean log Z^2
    extra = dict(zip(rec['curves']['step'], rec['curves']['extra_loss']))
    for s, v in zip(z['curve']['step'], z['curve']['z_sq']):
        assert extra[s] == pytest.approx(Z_LOSS_COEFF * v, rel=1e-5) and v > 0
    # the z-loss gradient reaches the model: a huge coefficient changes the trajectory
    a = train(smoke(steps=4))
    b = train(smoke(steps=4, hooks=[{'target': 'z_loss', 'kwargs': {'coeff': 10.0}}]))
    assert a['curves']['loss'][0] == pytest.approx(b['curves']['loss'][0])     # step 1: same model
    assert a['curves']['loss'][-1] != pytest.approx(b['curves']['loss'][-1], rel=1e-6)


# ----------------------------------------------------------------------------- attention diagnostics

def test_attention_diagnostics_match_a_hand_computation_on_a_tiny_model():
    torch.manual_seed(2)
    m = GPT(GPTConfig(d_model=16, n_layer=2, n_head=2, block_size=8, vocab_size=20, norm='pre_ln'))
    x = torch.randint(0, 20, (3, 8))
    df = attention_diagnostics(m, x)
    assert list(df.columns) == COLUMNS and df['layer'].tolist() == [0, 1]
    assert df[['n_heads', 'd_head', 'seq_len']].iloc[0].tolist() == [2, 8, 8]
    # layer 0 by hand: q, k from ln_1(h_0), causal softmax of q k^T / sqrt(8)
    with torch.no_grad():
        h = m.blocks[0].ln_1(m.embed(x))
        q, k, _ = (t.view(3, 8, 2, 8).transpose(1, 2) for t in m.blocks[0].attn.c_attn(h).split(16, 2))
        att = q @ k.transpose(-1, -2) / math.sqrt(8)
        mask = torch.ones(8, 8).tril().bool()
        att = att.masked_fill(~mask, float('-inf'))
        p = att.softmax(-1)
        ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)[..., 1:]
    assert df['max_logit'].iloc[0] == pytest.approx(float(att.max()), rel=1e-5)
    assert df['entropy_mean'].iloc[0] == pytest.approx(float(ent.mean()), rel=1e-5)
    assert df['entropy_min'].iloc[0] == pytest.approx(float(ent.min()), abs=1e-6)
    assert (df['entropy_mean'] <= math.log(8)).all()
    # uniform attention (q = 0) has entropy log(i+1) at query i
    st = logit_stats(torch.zeros(1, 1, 4, 2), torch.randn(1, 1, 4, 2))
    assert st['entropy_mean'] == pytest.approx((math.log(2) + math.log(3) + math.log(4)) / 3)
    assert m.training                                            # the model's mode is restored
    with pytest.raises(RKSPInputError, match='batch, seq_len'):
        attention_diagnostics(m, torch.zeros(8))


def test_the_diagnostics_hook_records_every_k_steps_without_changing_the_run():
    cfg = smoke(steps=6)
    hk = AttentionDiagnosticsHooks(every=3, max_batch=4)
    with_diag = train(cfg, hooks=[hk])
    plain = train(cfg)
    assert with_diag['hash'] == plain['hash']                     # an extra hook is not part of the config
    assert with_diag['curves']['loss'] == plain['curves']['loss']  # and reads without touching the run
    a = with_diag['extras']['attention']
    assert a['step'] == [1, 3, 6] and a['layers'] == 2 and len(a['max_logit'][0]) == 2
    long = diagnostics_long(a)
    assert len(long) == 3 * 2 and set(long['layer']) == {0, 1}
    with pytest.raises(RKSPInputError, match='every'):
        AttentionDiagnosticsHooks(every=0)
