"""Weight init as a named model choice (issue 14): GPTConfig.init / init_std, the run record's
`init` / `init_std` / `device`, the deepnorm_pre block, the init-only study and the paper profile."""

import math

import pytest
import torch
import torch.nn as nn

from rksp import defaults
from rksp.models.gpt import ALL_NORMS, GPT, GPTConfig, INITS, NORMS, deepnorm_alpha
from rksp.harness.record import record_to_row
from rksp.errors import ConfigError
from rksp.harness.config import TrainConfig
from rksp.harness.build import init_fields
from rksp.harness.loop import train

torch.set_num_threads(1)

# big enough that the sample std of a weight is within a few % of its target
MID = dict(vocab_size=256, block_size=64, n_layer=6, n_head=4, d_model=128)


def gpt(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**MID, **kw}))


def _std(t):
    return float(t.detach().float().std())


def residual_projs(m):
    return [w for b in m.blocks for w in (b.attn.c_proj.weight, b.mlp.c_proj.weight)]


def other_linears(m):
    return [b.attn.c_attn.weight for b in m.blocks] + [b.mlp.c_fc.weight for b in m.blocks]


def test_init_choices_and_defaults():
    assert INITS == defaults.INIT_CHOICES == ('gpt2', 'normal', 'torch')
    assert GPTConfig().init == defaults.INIT == 'gpt2' and GPTConfig().init_std == defaults.INIT_STD == 0.02
    assert NORMS == ('pre_ln', 'post_ln', 'rmsnorm', 'deepnorm', 'subln', 'none')   # the paper's six unchanged
    assert ALL_NORMS == NORMS + ('deepnorm_pre',)


@pytest.mark.parametrize('norm', ['none', 'pre_ln'])
def test_gpt2_init_scales_residual_projections(norm):
    m = gpt(norm=norm, init='gpt2', init_std=0.04)
    for w in other_linears(m) + [m.wte.weight, m.wpe.weight]:
        assert _std(w) == pytest.approx(0.04, rel=0.05)
    for w in residual_projs(m):
        assert _std(w) == pytest.approx(0.04 / math.sqrt(2 * 6), rel=0.05)
    assert all(float(b.detach().abs().max()) == 0 for b in (m.blocks[0].attn.c_attn.bias, m.blocks[0].mlp.c_proj.bias))


@pytest.mark.parametrize('norm', ['none', 'pre_ln', 'deepnorm', 'deepnorm_pre', 'subln'])
def test_normal_init_is_plain_normal_on_every_linear_and_embedding(norm):
    m = gpt(norm=norm, init='normal', init_std=0.04)
    n = 0
    for mod in m.modules():
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            assert _std(mod.weight) == pytest.approx(0.04, rel=0.05), mod
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                assert float(mod.bias.detach().abs().max()) == 0
            n += 1
        if isinstance(mod, nn.LayerNorm):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
    assert n == 4 * 6 + 3   # 4 Linear per block, wte, wpe, head (tied: wte's weight)


def test_torch_init_keeps_pytorch_defaults():
    m = gpt(norm='none', init='torch', init_std=0.5)   # init_std is not read
    assert _std(m.wte.weight) == pytest.approx(1.0, rel=0.05)                 # Embedding: N(0, 1)
    w = m.blocks[0].mlp.c_fc.weight                                          # kaiming_uniform(a=√5)
    bound = 1 / math.sqrt(w.shape[1])
    assert float(w.detach().abs().max()) <= bound and _std(w) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert float(m.blocks[0].mlp.c_fc.bias.detach().abs().max()) > 0                 # uniform biases, not zeros


def test_gpt2_default_is_bit_identical_to_no_init_field():
    a, b = gpt(norm='none'), gpt(norm='none', init='gpt2')
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


@pytest.mark.parametrize('kw, pattern', [
    (dict(init='xavier'), "unknown init 'xavier'; valid inits are gpt2, normal, torch"),
    (dict(init_std=0.0), 'init_std must be a finite number > 0'),
    (dict(init_std=-0.02), 'init_std must be a finite number > 0'),
    (dict(init_std=float('inf')), 'init_std must be a finite number > 0'),
    (dict(norm='deepnorm_post'), "unknown norm 'deepnorm_post'"),
])
def test_bad_init_values_rejected(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        GPTConfig(**kw)
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig.from_dict(dict(task='recall', model_cfg=kw))


def test_deepnorm_pre_block_is_alpha_skip_of_a_prenorm_branch():
    m = gpt(norm='deepnorm_pre', init='normal')
    m.eval()
    blk, a = m.blocks[0], deepnorm_alpha(6)
    h = torch.randn(2, 5, 128)
    h1 = a * h + blk.attn(blk.ln_1(h))
    assert torch.allclose(blk(h), a * h1 + blk.mlp(blk.ln_2(h1)), atol=1e-6)
    assert isinstance(m.ln_f, nn.LayerNorm)   # a final LN before the head
    # gpt2 init: the DeepNet init, as for deepnorm
    d = gpt(norm='deepnorm', init='gpt2')
    p = gpt(norm='deepnorm_pre', init='gpt2')
    assert _std(p.blocks[0].mlp.c_fc.weight) == pytest.approx(_std(d.blocks[0].mlp.c_fc.weight), rel=1e-6)


TINY_RUN = dict(task='recall', n_train=64, n_val=16, batch_size=8, steps=2, warmup_steps=0,
                profile_n_snapshots=64)


def test_record_carries_init_and_device_and_old_configs_load_as_gpt2():
    old = TrainConfig.from_dict({**TINY_RUN, 'model_cfg': {'d_model': 32, 'n_layer': 2, 'n_head': 2}})
    new = TrainConfig.from_dict({**TINY_RUN, 'model_cfg': {'d_model': 32, 'n_layer': 2, 'n_head': 2,
                                                           'init': 'normal', 'init_std': 0.04}})
    assert 'init' not in old.to_dict() and old.hash() != new.hash()
    r_old, r_new = train(old), train(new)
    assert (r_old['init'], r_old['init_std'], r_old['device']) == ('gpt2', 0.02, 'cpu')
    assert (r_new['init'], r_new['init_std']) == ('normal', 0.04)
    assert record_to_row(r_new)['init'] == 'normal' and record_to_row(r_new)['device'] == 'cpu'
    # a record written before `init` existed (no init / device fields) reads as 'gpt2'
    legacy = {k: v for k, v in r_old.items() if k not in ('init', 'init_std', 'device')}
    legacy['model_config'] = {k: v for k, v in legacy['model_config'].items() if k != 'init'}
    row = record_to_row(legacy)
    assert row['init'] == 'gpt2' and row['init_std'] == 0.02 and row['device'] == 'cpu'
    assert init_fields('vit', {'init_std': 0.02})['init'] == 'model_default'
    assert init_fields('gpt', {'init': 'torch', 'init_std': 0.02}) == {'init': 'torch', 'init_std': None}


def test_auto_device_resolves_to_cpu_without_cuda(monkeypatch):
    from rksp.harness import loop as T
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert T._resolve_device('auto') == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert T._resolve_device('auto') == torch.device('cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    r = train({**TINY_RUN, 'model_cfg': {'d_model': 32, 'n_layer': 2, 'n_head': 2}, 'device': 'auto',
               'profile_at_init': False})
    assert r['config']['device'] == 'auto' and r['device'] == 'cpu'


def test_paper_profile_uses_plain_normal_init_and_auto_device():
    from rksp.experiments.plans import recall_base
    c = recall_base('paper', 'none')
    assert c['model_cfg']['d_model'] == 256 and c['model_cfg']['n_layer'] == 6
    assert c['model_cfg']['init'] == defaults.PAPER_INIT == 'normal'
    assert c['model_cfg']['init_std'] == defaults.PAPER_INIT_STD == 0.02
    assert c['device'] == defaults.PAPER_DEVICE == 'auto'
    TrainConfig.from_dict(c)   # valid
    # the smoke profile keeps its configs (and hashes): no init field, default device
    assert 'init' not in recall_base('smoke', 'none')['model_cfg']
    assert 'device' not in recall_base('smoke', 'none') and 'device' not in recall_base('small', 'none')


# ----------------------------------------------------------------------------- the init-only study

def test_init_study_smoke_is_the_records_profile_and_tabulates():
    from rksp.experiments import init_study as S
    df = S.run_study('smoke', norms=('none', 'pre_ln', 'deepnorm_pre'))
    assert len(df) == 2 * 3 and df['m_near_unit'].between(0, 1).all()
    # the study's profile is the one a training run records at init (same model, batch, snapshots)
    c = S._train_config(S.study_configs('smoke')[1], 'none', 42, 256, 8, 64)
    rec = train({**c.to_dict(), 'steps': 1})
    got = df[(df['config'] == S.study_configs('smoke')[1]['config']) & (df['norm'] == 'none')]['m_near_unit']
    assert float(got.iloc[0]) == pytest.approx(rec['profile']['summary']['score'], abs=1e-12)
    t = S.study_table(df)
    assert {'paper_m_near_unit', 'abs_err_m_near_unit', 'paper_rho'} <= set(t.columns)
    row = t[(t['norm'] == 'none')].iloc[0]
    assert row['paper_m_near_unit'] == 0.80
    assert t.loc[t['norm'] == 'deepnorm_pre', 'paper_m_near_unit'].iloc[0] == 0.00   # vs paper's DeepNorm
    e = S.error_table(t)
    assert len(e) == 2 and e['mae_m_near_unit_5'].notna().all()
    fig = S.study_figure(t)
    assert fig.axes
    assert S.proxy_std(64) == pytest.approx(0.04) and S.proxy_std(256) == pytest.approx(0.02)
    with pytest.raises(ValueError, match='unknown size'):
        S.run_study('huge')


def test_gpt2_init_makes_nonorm_near_identity_and_normal_does_not():
    """The issue's mechanism at a test-sized model: with GPT-2's scaled init No-Norm's M≈1 is 1.0;
    plain N(0, σ) at the d·σ²-matched σ pulls it below 1."""
    from rksp.experiments import init_study as S
    df = S.run_study('smoke', norms=('none',))
    by = df.set_index('config')['m_near_unit']
    assert by['gpt2 d=32 L=2'] == 1.0
    assert by['normal d=32 L=2 σ=0.05657'] < 0.95


def test_small_plan_is_the_regime_of_docs_regime_md():
    """docs/regime.md rule 1 holds for the small plan's model: No-Norm's M≈1 at init is not the
    degenerate 1.0 of the GPT-2 init, and Pre-LN < Post-LN < No-Norm."""
    from rksp.experiments.plans import recall_base
    from rksp.experiments.init_study import profile_at_init
    c = recall_base('small', 'none')
    assert c['model_cfg'] == dict(d_model=64, n_layer=4, n_head=4, init='normal', init_std=0.04, norm='none')
    # the paper's stated recipe (docs/regime.md Part 5): 5 epochs of 8,192 at batch 32, 100 warmup, cosine
    assert (c['epochs'], c['warmup_steps'], c['schedule'], c['batch_size'], c['n_train']) == (5, 100, 'cosine', 32, 8192)
    assert 'steps' not in c
    m = {n: profile_at_init({**recall_base('small', n), 'seed': 42})['score'] for n in ('pre_ln', 'post_ln', 'none')}
    assert m['pre_ln'] < m['post_ln'] < m['none'] < 0.95
    assert abs(m['none'] - 0.80) < 0.05
