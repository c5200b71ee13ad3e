"""rksp.models.norms: a normalization is one registry entry that the GPT, the MoE / KAN transformers
and the ViT read; a norm without a paper Table 1 row gets a clear error or NaN paper columns."""
import math

import pytest
import torch
import torch.nn as nn

from rksp.models import norms as N
from rksp.models.gpt import ALL_NORMS, GPT, GPTConfig, NORM_NAMES, NORMS
from rksp.models.moe import MOE_NORMS, MoEConfig, MoEGPT

torch.set_num_threads(1)

TINY = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, d_model=32)
TOY = 'toy_scalenorm'


class ScaleNorm(nn.Module):
    """Nguyen & Salazar 2019: g x / ||x||, one learned scalar g (init sqrt(d))."""

    def __init__(self, dim, bias=True):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(float(dim) ** 0.5))

    def forward(self, x):
        return self.g * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-5)


@pytest.fixture
def toy_norm():
    spec = N.register_norm(N.NormSpec(TOY, 'ScaleNorm (toy)', layer=ScaleNorm, placement='pre', final=True))
    yield spec
    N.unregister_norm(TOY)


def _count(model, cls=ScaleNorm):
    return sum(isinstance(m, cls) for m in model.modules())


def test_the_builtin_entries_are_the_models_norm_lists():
    assert NORMS == N.norm_ids(sweep=True) == ('pre_ln', 'post_ln', 'rmsnorm', 'deepnorm', 'subln', 'none')
    assert ALL_NORMS == N.norm_ids('gpt') and N.norm_ids('vit') == NORMS
    assert MOE_NORMS == N.norm_ids('moe') == ('pre_ln', 'post_ln', 'rmsnorm', 'none')
    assert NORM_NAMES == {n: N.norm_name(n) for n in NORMS} and N.norm_name('none') == 'No-Norm'
    assert N.norm_spec('deepnorm_pre').compared_with() == 'deepnorm'


def test_a_registered_norm_is_one_entry_and_every_model_builds_it(toy_norm):
    L = TINY['n_layer']
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY, norm=TOY)).eval()
    assert _count(m) == 2 * L + 1 and isinstance(m.ln_f, ScaleNorm)        # two per block, one before the head
    idx = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    assert m(idx).shape == (3, 16, 64)
    blk, h = m.blocks[0], m.embed(idx)
    with torch.no_grad():                                                   # placement 'pre': h + f(norm(h))
        ref = h + blk.attn(blk.ln_1(h))
        torch.testing.assert_close(blk(h), ref + blk.mlp(blk.ln_2(ref)))
    moe = MoEGPT(MoEConfig(**TINY, n_experts=2, top_k=1, norm=TOY))
    assert _count(moe) == 2 * L + 1
    from rksp.harness.config import TrainConfig
    TrainConfig.from_dict(dict(task='recall', preset='tiny', model_cfg={'norm': TOY}))   # the harness accepts it
    pytest.importorskip('timm')
    from rksp.models.vit import ViTConfig, build_vit
    vit = build_vit(ViTConfig(d_model=32, n_layer=L, n_head=2, patch_size=8, norm=TOY))
    assert _count(vit) == 2 * L + 1
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_an_unregistered_or_unbuildable_norm_is_rejected_with_the_valid_ids(toy_norm):
    N.unregister_norm(TOY)
    with pytest.raises(ValueError, match=f"unknown norm '{TOY}'; valid norms are pre_ln, .*deepnorm_pre"):
        GPTConfig(norm=TOY)
    with pytest.raises(ValueError, match="unknown norm 'subln' for MoEGPT; valid norms are pre_ln, post_ln, rmsnorm, none"):
        MoEConfig(**TINY, norm='subln')
    with pytest.raises(ValueError, match="MoE / KAN blocks have no DeepNet init"):
        N.NormSpec('bad', 'Bad', deepnet=True)
    with pytest.raises(ValueError, match='placement'):
        N.NormSpec('bad', 'Bad', placement='sandwich')
    with pytest.raises(ValueError, match='already registered'):
        N.register_norm(N.NormSpec('pre_ln', 'Pre-LN again'))
    with pytest.raises(ValueError, match='built in'):
        N.unregister_norm('none')


def test_a_norm_without_a_paper_row_gets_a_clear_error_or_nan_paper_columns(toy_norm):
    from rksp.experiments import init_study as S
    from rksp.experiments import paper as P
    with pytest.raises(KeyError, match=f"no paper Table 1 row for norm '{TOY}'.*rksp.models.norms.*paper=dict"):
        P.TABLE1[TOY]
    with pytest.raises(P.MissingPaperRow, match=f"'{TOY}'"):
        P.table1_row(TOY)
    assert TOY not in P.TABLE1 and P.TABLE1.get(TOY) is None
    with pytest.warns(UserWarning, match='paper columns are NaN'):
        assert all(math.isnan(v) for v in P.table1_row(TOY, missing='nan').values())
    assert P.table1_row('deepnorm_pre') == P.TABLE1['deepnorm'] == dict(N.norm_spec('deepnorm').paper)
    # the init study of the toy norm, end to end: its profile at init, paper columns NaN
    cfg = S.study_configs('smoke')[:1]
    df = S.run_study('smoke', norms=[TOY, 'none'], configs=cfg)
    with pytest.warns(UserWarning, match=TOY):
        t = S.study_table(df).set_index('norm')
    assert t.loc[TOY, 'norm_name'] == 'ScaleNorm (toy)' and 0.0 <= t.loc[TOY, 'm_near_unit'] <= 1.0
    assert math.isnan(t.loc[TOY, 'paper_rho']) and t.loc['none', 'paper_rho'] == P.TABLE1['none']['rho']
    # its paper row in the same entry: found
    N.register_norm(N.NormSpec(TOY, 'ScaleNorm (toy)', layer=ScaleNorm, paper=dict(
        n=1, div_pct=0.0, m_near_unit=0.5, m_expansive=0.5, rho=1.5, acc_pct=10.0)), replace=True)
    assert P.table1_row(TOY)['rho'] == 1.5
