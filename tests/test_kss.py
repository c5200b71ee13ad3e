"""KSS regularizer (paper Def. 2, Eqs. 14-15): formula, gradients, schedule, models, errors."""
import cmath
import math

import pytest
import torch

from rksp import RKSPInputError, defaults
from rksp.core.dmd import randomized_dmd_eigvals
from rksp.core.kss import KSS, KSSConfig, kss_layer_loss
from rksp.models.gpt import GPT

D64 = torch.float64


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _softplus(x):
    return math.log1p(math.exp(x))


def _ref_loss(lams, T=defaults.KSS_T, tu=defaults.KSS_TAU_U, tl=defaults.KSS_TAU_L,
              gamma=defaults.KSS_GAMMA, beta=defaults.KSS_BETA):
    """Eq. 14-15 written out with the math module."""
    mods = [abs(z) for z in lams]
    pen = sum(_sig(T * (m - tu)) * _softplus(m - tu) ** 2 for m in mods)
    msoft = sum(_sig(T * (m - tl)) * _sig(T * (tu - m)) for m in mods) / len(mods)
    return pen, msoft, beta * (msoft - gamma) ** 2


def _ring(radius, r=32, seed=0):
    """r complex eigenvalues of modulus ``radius`` with random phases, as (re, im) leaves."""
    g = torch.Generator().manual_seed(seed)
    ph = torch.rand(r, generator=g, dtype=D64) * 2 * math.pi
    re = (radius * torch.cos(ph)).requires_grad_()
    im = (radius * torch.sin(ph)).requires_grad_()
    return re, im


def _orth(d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D64)).Q


# ----------------------------------------------------------------------------- formula

def test_exact_values_hand_picked():
    # |lambda| = tau_u: sigmoid(0) * softplus(0)^2 = 0.5 (ln 2)^2
    loss, parts = kss_layer_loss(torch.tensor([1.05 + 0j], dtype=torch.complex128), near_unit=False)
    assert loss.item() == pytest.approx(0.5 * math.log(2) ** 2, rel=1e-12)
    assert parts["m_soft"].item() == pytest.approx(_sig(20 * 0.15) * 0.5, rel=1e-12)
    # a mix of moduli and phases, default T / taus / gamma / beta
    lams = [0.3 + 0j, 0.95j, 1.2 * cmath.exp(1j * math.pi / 4), -1.5 + 0j, 0.99 - 0.1j]
    loss, parts = kss_layer_loss(torch.tensor(lams, dtype=torch.complex128))
    pen, msoft, tgt = _ref_loss(lams)
    assert parts["unstable"].item() == pytest.approx(pen, rel=1e-12)
    assert parts["m_soft"].item() == pytest.approx(msoft, rel=1e-12)
    assert parts["near_unit"].item() == pytest.approx(tgt, rel=1e-12)
    assert loss.item() == pytest.approx(pen + tgt, rel=1e-12)
    # the penalty is a SUM over eigenvalues: r copies give r times the penalty
    loss4, p4 = kss_layer_loss(torch.tensor(lams * 4, dtype=torch.complex128))
    assert p4["unstable"].item() == pytest.approx(4 * pen, rel=1e-12)
    assert p4["m_soft"].item() == pytest.approx(msoft, rel=1e-12)
    # batched (..., r) input gives per-row losses; other T/taus/gamma/beta are honoured
    batch = torch.tensor([lams, [z * 0.5 for z in lams]], dtype=torch.complex128)
    kw = dict(T=7.0, tau_u=1.1, tau_l=0.8, gamma=0.3, beta=2.5)
    lb, pb = kss_layer_loss(batch, **kw)
    assert lb.shape == (2,) and pb["m_soft"].shape == (2,)
    for row in range(2):
        pen, msoft, tgt = _ref_loss(batch[row].tolist(), T=7.0, tu=1.1, tl=0.8, gamma=0.3, beta=2.5)
        assert lb[row].item() == pytest.approx(pen + tgt, rel=1e-12)


def test_contractive_near_zero_expansive_large():
    re, im = _ring(0.3)
    loss, parts = kss_layer_loss(torch.complex(re, im), near_unit=False)
    assert loss.item() < 1e-5
    loss.backward()
    assert torch.cat([re.grad, im.grad]).norm().item() < 1e-4
    # with the near-unit term, m_soft ~ 0 so the loss is ~ beta * gamma^2
    full, parts = kss_layer_loss(torch.complex(re, im))
    assert parts["m_soft"].item() < 1e-5
    assert full.item() == pytest.approx(defaults.KSS_BETA * defaults.KSS_GAMMA ** 2, rel=1e-4)

    re, im = _ring(1.5)
    loss, parts = kss_layer_loss(torch.complex(re, im), near_unit=False)
    assert loss.item() == pytest.approx(32 * _sig(20 * 0.45) * _softplus(0.45) ** 2, rel=1e-10)
    assert loss.item() > 20
    loss.backward()
    g = torch.cat([re.grad, im.grad]).norm().item()
    assert g > 5
    # the gradient points outwards in modulus: descending shrinks |lambda|
    radial = re.grad * re.detach() + im.grad * im.detach()
    assert (radial > 0).all()


def test_contractive_vs_expansive_operator_through_dmd():
    """KSS on an exact linear transition Y = A X: ~0 for 0.3 Q, large for 1.5 Q (r = d: exact radii)."""
    d, N = 16, 400
    X = torch.randn(N, d, generator=torch.Generator().manual_seed(3), dtype=D64)
    out = {}
    for s in (0.3, 1.5):
        A = (s * _orth(d, 4)).requires_grad_()
        kss = KSS(alpha=1.0, every=1, layer_fraction=1.0, rank=d, near_unit=False)
        loss = kss([X, X @ A.T], 0)
        loss.backward()
        out[s] = (loss.item(), A.grad.norm().item(), kss.log[-1]["rho"][0])
    assert out[0.3][0] < 1e-5 and out[0.3][1] < 1e-4
    assert out[0.3][2] == pytest.approx(0.3, abs=1e-6)
    assert out[1.5][0] > 5 and out[1.5][1] > 1e5 * out[0.3][1]
    assert out[1.5][2] == pytest.approx(1.5, abs=1e-6)


def test_ablation_switches():
    lam_in_band = torch.full((16,), 0.975 + 0j, dtype=torch.complex128)  # m_soft at its maximum
    lam_below = torch.full((16,), 0.5 + 0j, dtype=torch.complex128)      # m_soft ~ 0
    lam_exp = torch.full((16,), 1.5 + 0j, dtype=torch.complex128)
    lam_exp2 = torch.full((16,), 3.0 + 0j, dtype=torch.complex128)
    # unstable penalty only: m_soft / gamma / beta never enter
    for lam in (lam_in_band, lam_below, lam_exp):
        a, pa = kss_layer_loss(lam, near_unit=False)
        b, pb = kss_layer_loss(lam, near_unit=False, gamma=0.9, beta=100.0)
        pen, _, _ = _ref_loss(lam.tolist())
        assert a.item() == b.item() == pytest.approx(pen, rel=1e-12)
        assert a.item() == pa["unstable"].item()
    _, pa = kss_layer_loss(lam_in_band)
    _, pb = kss_layer_loss(lam_below)
    assert pa["m_soft"].item() > 0.6 and pb["m_soft"].item() < 1e-3   # max of Eq. 15 at T=20: 0.67
    # near-unit guidance only: the size of the excursion above tau_u does not matter
    e, pe = kss_layer_loss(lam_exp, unstable=False)
    f, pf = kss_layer_loss(lam_exp2, unstable=False)
    assert pf["unstable"].item() > 4 * pe["unstable"].item() > 0
    for loss, parts in ((e, pe), (f, pf)):
        assert loss.item() == parts["near_unit"].item() == pytest.approx(
            defaults.KSS_BETA * (parts["m_soft"].item() - defaults.KSS_GAMMA) ** 2, rel=1e-12)
    assert e.item() == pytest.approx(f.item(), abs=1e-3)
    assert f.item() == pytest.approx(defaults.KSS_BETA * defaults.KSS_GAMMA ** 2, rel=1e-6)
    full, _ = kss_layer_loss(lam_exp2)
    assert full.item() > 100 * e.item()
    # the KSS object applies the same switches
    hs = _random_stream(L=2, d=8, n=64, seed=5)
    for sw, key in (({"near_unit": False}, "unstable"), ({"unstable": False}, "near_unit")):
        kss = KSS(alpha=0.5, every=1, layer_fraction=1.0, rank=4, **sw)
        loss = kss(hs, 0)
        assert loss.item() == pytest.approx(0.5 * sum(kss.log[-1][key]) / 2, rel=1e-6)
    with pytest.raises(RKSPInputError, match="both off"):
        KSSConfig(unstable=False, near_unit=False)
    with pytest.raises(RKSPInputError, match="at least one"):
        kss_layer_loss(lam_exp, unstable=False, near_unit=False)


# ----------------------------------------------------------------------------- gradients

def test_gradcheck_through_eigenvalue_path():
    # Eq. 14 itself, w.r.t. real and imaginary parts of eigenvalues spread over all bins
    re = torch.tensor([0.3, 0.8, 0.93, 1.0, 1.04, 1.07, 1.3, -0.2], dtype=D64, requires_grad=True)
    im = torch.tensor([0.1, -0.3, 0.2, 0.05, -0.1, 0.3, 0.4, 0.9], dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kss_layer_loss(torch.complex(a, b))[0], (re, im))

    # full KSS path (token sampling, float64 cast, randomized DMD, Eq. 14) on hidden states;
    # with r = d the eigenvalues do not depend on the (constant) whitening / projection,
    # so the analytic gradient w.r.t. every state is exact
    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(2, 7, 3, generator=g, dtype=D64)]
    for _ in range(2):
        hs.append(torch.tanh(hs[-1] @ (1.3 * _orth(3, len(hs)))) + 0.4 * hs[-1])
    hs = [h.detach().requires_grad_() for h in hs]
    cfg = KSSConfig(alpha=1.0, every=1, layer_fraction=1.0, rank=3, n_snapshots=12, seed=1, T=5.0)
    assert torch.autograd.gradcheck(lambda *h: KSS(cfg)(list(h), 0), tuple(hs))

    # r < d: the whitening and projection come from X only, so w.r.t. Y it is exact too
    X = torch.randn(6, 40, generator=g, dtype=D64)
    Y = (1.2 * _orth(6, 9) @ X + 0.1 * X ** 2).requires_grad_()

    def f(y):
        lam = randomized_dmd_eigvals(X, y, 3, generator=torch.Generator().manual_seed(2))
        return kss_layer_loss(lam, T=5.0)[0]
    assert torch.autograd.gradcheck(f, (Y,))


def test_adam_on_kss_lowers_expansive_mass_toy_linear_residual():
    """Blocks h -> h + B_l h (learnable B_l), expansive init; KSS alone for 50 Adam steps."""
    d, L, N, r = 16, 3, 256, 8
    g = torch.Generator().manual_seed(0)
    Bs = [torch.nn.Parameter(0.5 * torch.eye(d, dtype=D64)
                             + 0.3 * torch.randn(d, d, generator=g, dtype=D64) / d ** 0.5)
          for _ in range(L)]

    def forward(x):
        hs = [x]
        for B in Bs:
            hs.append(hs[-1] + hs[-1] @ B.T)
        return hs

    def spectrum():
        with torch.no_grad():
            hs = forward(torch.randn(N, d, generator=torch.Generator().manual_seed(99), dtype=D64))
            lam = torch.stack([randomized_dmd_eigvals(hs[l].T, hs[l + 1].T, r,
                                                      generator=torch.Generator().manual_seed(1))
                               for l in range(L)])
            _, parts = kss_layer_loss(lam)
            return (lam.abs() > defaults.KSS_TAU_U).double().mean().item(), parts["m_soft"].mean().item()

    mass0, m0 = spectrum()
    assert mass0 == 1.0 and m0 < 0.01
    kss = KSS(alpha=1.0, every=1, layer_fraction=1.0, rank=r, n_snapshots=N, seed=3)
    opt = torch.optim.Adam(Bs, lr=1e-2)
    losses = []
    for step in range(50):
        loss = kss(forward(torch.randn(N, d, generator=g, dtype=D64)), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    mass1, m1 = spectrum()
    assert mass1 < 0.5 * mass0
    assert abs(m1 - defaults.KSS_GAMMA) < abs(m0 - defaults.KSS_GAMMA) - 0.05
    assert losses[-1] < 0.5 * losses[0]
    assert len(kss.log) == 50 and all(e["layers"] == [0, 1, 2] for e in kss.log)


# ----------------------------------------------------------------------------- schedule

def _random_stream(L, d, n, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    hs = [torch.randn(n, d, generator=g)]
    for l in range(L):
        W = torch.randn(d, d, generator=g) / d ** 0.5
        hs.append(hs[-1] + torch.tanh(hs[-1] @ W))
    return [h.requires_grad_(requires_grad) for h in hs]


def test_schedule_layers_and_determinism():
    hs = _random_stream(L=8, d=12, n=200, seed=0, requires_grad=True)

    def run(seed):
        kss = KSS(every=3, layer_fraction=0.5, rank=4, n_snapshots=100, seed=seed)
        losses = [kss(hs, s) for s in range(12)]
        return kss, losses

    kss, losses = run(7)
    for s, loss in enumerate(losses):
        if s % 3:
            assert loss.item() == 0.0 and not loss.requires_grad
        else:
            assert loss.requires_grad and loss.item() > 0
    assert [e["step"] for e in kss.log] == [0, 3, 6, 9]
    subsets = [tuple(e["layers"]) for e in kss.log]
    assert all(len(s) == 4 and len(set(s)) == 4 and all(0 <= l < 8 for l in s) for s in subsets)
    assert len(set(subsets)) > 1
    for e, loss in zip(kss.log, losses[::3]):
        assert len(e["m_soft"]) == len(e["unstable"]) == len(e["near_unit"]) == 4
        assert e["total"] == pytest.approx(loss.item(), rel=1e-6)
        assert e["seconds"] >= 0 and e["n_snapshots"] == 100
    kss2, losses2 = run(7)
    assert [e["layers"] for e in kss2.log] == [e["layers"] for e in kss.log]
    assert [l.item() for l in losses2] == [l.item() for l in losses]
    kss3, _ = run(8)
    assert [e["layers"] for e in kss3.log] != [e["layers"] for e in kss.log]
    # ceil(fraction * L)
    assert [KSS(layer_fraction=f).n_layers_for(L) for f, L in
            ((0.5, 4), (0.5, 5), (0.3, 10), (0.01, 3), (1.0, 7))] == [2, 3, 3, 1, 7]


def test_capture_only_records_on_application_steps():
    torch.manual_seed(0)
    model = GPT.from_preset("tiny")
    x = torch.randint(0, 256, (4, 16))
    kss = KSS(every=2, rank=8, seed=0)
    with kss.capture(model, 1) as states:
        model(x)
    assert states == [] and kss.captured == []
    zero = kss.loss_from_capture(1)
    assert zero.item() == 0.0 and not kss.log
    with kss.capture(model, 2) as states:
        model(x)
    assert len(states) == 3 and all(h.requires_grad for h in states)
    assert kss.loss_from_capture(2).item() > 0 and kss.captured == []
    # a capture left open for a whole loop follows next_step
    kss = KSS(every=2, rank=8, seed=0)
    recorded = []
    with kss.capture(model):
        for step in range(1, 6):
            model(x)
            recorded.append(len(kss.captured))
            kss.loss_from_capture(step)
    assert recorded == [3, 3, 0, 3, 0]   # step 1: next_step unknown, records; then only even steps
    assert [e["step"] for e in kss.log] == [2, 4]
    # an application step without a captured forward is an error
    with pytest.raises(RKSPInputError, match="no complete residual stream"):
        kss.loss_from_capture(6)


# ----------------------------------------------------------------------------- models

def test_project_gpt_capture_backward():
    torch.manual_seed(0)
    model = GPT.from_preset("tiny")            # d = 32, L = 2
    x = torch.randint(0, 256, (4, 16))
    kss = KSS(alpha=0.15, every=1, layer_fraction=1.0, rank=8)
    with kss.capture(model, 0) as states:
        logits = model(x)
    # the captured states are the raw residual stream: h_0 = embed, h_L before ln_f
    with torch.no_grad():
        h = model.embed(x)
        assert torch.allclose(states[0], h)
        for i, blk in enumerate(model.blocks):
            h = blk(h)
            assert torch.allclose(states[i + 1], h, atol=1e-6)
    task = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten())
    reg = kss.loss_from_capture(0)
    assert reg.dtype == torch.float32 and reg.item() > 0
    reg.backward()                              # the regularizer alone reaches the blocks
    for blk in model.blocks:
        assert blk.attn.c_attn.weight.grad is not None
        assert blk.attn.c_attn.weight.grad.abs().sum() > 0
        assert blk.mlp.c_fc.weight.grad.abs().sum() > 0
    assert model.wte.weight.grad.abs().sum() > 0
    model.zero_grad()
    with kss.capture(model, 1):
        logits = model(x)
    task = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten())
    (task + kss.loss_from_capture(1)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_hf_gpt2_output_hidden_states():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2Model(cfg)
    x = torch.randint(0, 64, (4, 16))
    mask = torch.ones(4, 16, dtype=torch.bool)
    mask[0, 10:] = False                        # padding positions are never sampled
    kss = KSS(every=1, layer_fraction=1.0, rank=8, seed=0)
    out = model(x, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == cfg.n_layer + 1
    loss = kss(hs, 0, mask=mask)
    assert loss.item() > 0 and kss.log[-1]["n_snapshots"] == 4 * 16 - 6
    loss.backward()
    for blk in model.h:
        assert blk.attn.c_attn.weight.grad.abs().sum() > 0
    # HF's hidden_states[-1] is after ln_f; capture() records the raw block outputs instead
    with kss.capture(model, 1) as states:
        out = model(x, output_hidden_states=True)
    assert len(states) == 3
    assert torch.equal(states[0], out.hidden_states[0]) and torch.equal(states[1], out.hidden_states[1])
    assert not torch.allclose(states[2], out.hidden_states[2])
    assert torch.allclose(model.ln_f(states[2]), out.hidden_states[2], atol=1e-6)
    assert kss.loss_from_capture(1).item() > 0


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kw, match", [
    (dict(alpha=-0.1), "alpha must be >= 0"),
    (dict(alpha=float("nan")), "alpha must be a finite number"),
    (dict(rank=0), "rank must be an integer >= 1"),
    (dict(every=0), "every must be an integer >= 1"),
    (dict(every=2.5), "every must be an integer >= 1"),
    (dict(layer_fraction=0.0), r"layer_fraction must be in \(0, 1\]"),
    (dict(layer_fraction=1.5), r"layer_fraction must be in \(0, 1\]"),
    (dict(T=0.0), "T .* must be > 0"),
    (dict(tau_l=1.1), "tau_l < tau_u"),
    (dict(gamma=1.5), "gamma"),
    (dict(beta=-1.0), "beta must be >= 0"),
    (dict(rank=32, n_snapshots=32), "rank r = 32 must be < n_snapshots = 32"),
    (dict(n_snapshots=1), "n_snapshots"),
    (dict(power_iters=-1), "power_iters"),
    (dict(unstable=1), "unstable must be a bool"),
])
def test_bad_config(kw, match):
    with pytest.raises(RKSPInputError, match=match):
        KSSConfig(**kw)
    with pytest.raises(RKSPInputError, match=match):
        KSS(**kw)


def test_bad_inputs():
    kss = KSS(every=1, rank=16)
    with pytest.raises(RKSPInputError, match=r"rank r = 16 exceeds the hidden size d = 8"):
        kss(_random_stream(L=2, d=8, n=100, seed=0), 0)
    with pytest.raises(RKSPInputError, match=r"needs more than r token states.*N = 10"):
        kss(_random_stream(L=2, d=32, n=10, seed=0), 0)
    with pytest.raises(RKSPInputError, match="needs more than r token states"):
        kss(_random_stream(L=2, d=32, n=16, seed=0), 0)     # N == r
    hs = _random_stream(L=2, d=32, n=100, seed=0)
    with pytest.raises(RKSPInputError, match="differ in shape"):
        kss([hs[0], hs[1][:50]], 0)
    with pytest.raises(RKSPInputError, match="list/tuple"):
        kss(torch.stack(hs), 0)
    with pytest.raises(RKSPInputError, match="at least 2 hidden states"):
        kss(hs[:1], 0)
    with pytest.raises(RKSPInputError, match="mask has"):
        kss(hs, 0, mask=torch.ones(7, dtype=torch.bool))
    with pytest.raises(RKSPInputError, match="unknown KSSConfig fields"):
        KSS(KSSConfig(), alhpa=0.1)
    # non-application steps never validate or compute anything
    assert KSS(every=5, rank=16)(_random_stream(L=2, d=8, n=10, seed=0), 3).item() == 0.0
    # non-finite states (a diverging run) give a zero term and a logged skip, not a crash
    bad = _random_stream(L=2, d=32, n=100, seed=0)
    bad[1] = bad[1].clone()
    bad[1][0, 0] = float("nan")
    kss = KSS(every=1, rank=8, layer_fraction=1.0)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        assert kss(bad, 0).item() == 0.0
    assert kss.log[-1]["skipped"] == "non-finite hidden states"


def test_kss_on_timm_vit_through_capture():
    """KSS works on a timm model (blocks found at `.blocks`), gradients reach every block."""
    from rksp.models import ViTConfig, build_vit
    torch.manual_seed(0)
    vit = build_vit(ViTConfig(d_model=32, n_layer=2, n_head=2, patch_size=8))
    x = torch.randn(8, 3, 32, 32)
    k = KSS(alpha=0.15, every=1, layer_fraction=1.0, rank=8, n_snapshots=64)
    with k.capture(vit, 1):
        logits = vit(x)
    loss = logits.logsumexp(-1).mean() + k.loss_from_capture(1)
    loss.backward()
    assert k.log and len(k.log[-1]["layers"]) == 2
    for blk in vit.blocks:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.parameters())


# ----------------------------------------------------------------------------- gradient paths (issue 13)

PATHS = [dict(projection=p, detach_whitening=dw) for p in ("pod", "whitened") for dw in (True, False)]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p['projection']}-detach{p['detach_whitening']}")
def test_every_gradient_path_gives_finite_gradients_on_near_identity_no_norm_blocks(path):
    """No-Norm GPT with init_std 1e-3: every block is ~ the identity, so all r eigenvalues cluster
    at 1 (the worst case for eigenvector sensitivity). Gradients must be finite and non-zero without
    the sanitizing hook firing."""
    torch.manual_seed(0)
    model = GPT.from_preset("tiny", norm="none", init_std=1e-3).double()
    x = torch.randint(0, 256, (8, 64))
    kss = KSS(alpha=1.0, every=1, layer_fraction=1.0, rank=16, n_snapshots=256, seed=0, **path)
    with kss.capture(model, 0):
        model(x)
    loss = kss.loss_from_capture(0)
    loss.backward()
    e = kss.log[-1]
    assert "skipped" not in e and "nonfinite_grad_zeroed" not in e
    assert all(abs(r - 1.0) < 0.05 for r in e["rho"])          # near-identity: spectrum at 1
    grads = [p.grad for p in model.blocks.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_kssconfig_validates_gradient_path_fields():
    assert KSSConfig().projection == defaults.RDMD_PROJECTION == "pod"
    assert KSSConfig().detach_whitening is True and KSSConfig().grad_bound is None
    for bad, msg in [({"projection": "zca"}, "projection"), ({"detach_whitening": 1}, "detach_whitening"),
                     ({"grad_bound": 0.0}, "grad_bound"), ({"grad_bound": float("inf")}, "grad_bound"),
                     ({"grad_bound": True}, "grad_bound")]:
        with pytest.raises(RKSPInputError, match=msg):
            KSSConfig(**bad)


def _kss_run(**kss_kw):
    from rksp.harness.loop import train
    cfg = dict(task='recall', preset='tiny', model_cfg={'norm': 'none'}, n_train=256, n_val=64,
               batch_size=16, warmup_steps=0, profile_at_init=False, steps=4, lr=3e-3, seed=1,
               hooks=[{'target': 'kss', 'kwargs': dict(alpha=5.0, every=1, rank=8, n_snapshots=512, **kss_kw)}])
    return train(cfg)


def test_grad_bound_scales_the_kss_gradient_to_the_bound_and_no_further():
    free = _kss_run()
    rg = free['extras']['reg_grad']
    assert rg['step'] == [1, 2, 3, 4] and rg['scale'] == [1.0] * 4
    ratios = [k / t for k, t in zip(rg['reg_grad_norm'], rg['task_grad_norm'])]
    c = 0.5 * min(ratios)                                  # a bound that binds on every step
    assert c > 0
    bound = _kss_run(grad_bound=c)['extras']['reg_grad']
    # step 1 is identical up to the bound (same model, same batch): the scale is exactly c / ratio
    assert bound['reg_grad_norm'][0] == pytest.approx(rg['reg_grad_norm'][0], rel=1e-6)
    assert bound['scale'][0] == pytest.approx(c / ratios[0], rel=1e-5)
    for k, t, s in zip(bound['reg_grad_norm'], bound['task_grad_norm'], bound['scale']):
        assert s < 1 and k * s == pytest.approx(c * t, rel=1e-5)
    # a bound that never binds changes nothing
    loose = _kss_run(grad_bound=10 * max(ratios))
    assert loose['extras']['reg_grad']['scale'] == [1.0] * 4
    assert loose['curves']['grad_norm'] == free['curves']['grad_norm']


def test_grad_bound_also_applies_under_the_total_gradient_label():
    from rksp.harness.loop import train
    cfg = dict(task='recall', preset='tiny', model_cfg={'norm': 'none'}, n_train=256, n_val=64,
               batch_size=16, warmup_steps=0, profile_at_init=False, steps=2, lr=3e-3, seed=1,
               div_grad='total',
               hooks=[{'target': 'kss', 'kwargs': dict(alpha=5.0, every=1, rank=8, n_snapshots=512)}])
    assert 'reg_grad' not in train(cfg)['extras']       # one combined backward, nothing separate
    cfg['hooks'][0]['kwargs']['grad_bound'] = 1e-3
    rec = train(cfg)
    rg = rec['extras']['reg_grad']
    g1 = rec['curves']['grad_norm'][0]                  # the applied (bounded) total gradient
    t1, k1, s1 = rg['task_grad_norm'][0], rg['reg_grad_norm'][0], rg['scale'][0]
    assert k1 * s1 == pytest.approx(1e-3 * t1, rel=1e-5)
    assert abs(g1 - t1) <= 1.001e-3 * t1                 # triangle inequality with ||s g_r|| = c ||g_task||


def test_grad_bound_with_a_hook_that_replaces_the_step_is_rejected():
    from rksp.methods.rows import apply_method
    from rksp.errors import ConfigError
    from rksp.harness.loop import train
    base = dict(task='recall', preset='tiny', model_cfg={'norm': 'none'}, n_train=256, n_val=64, batch_size=16,
                warmup_steps=0, profile_at_init=False, steps=2, lr=1e-3)
    cfg = apply_method(base, 'kss_0.10_sam_0.05')
    for h in cfg['hooks']:
        if h['target'] == 'kss':
            h['kwargs']['grad_bound'] = 1.0
    with pytest.raises(ConfigError, match='replaces the step'):
        train(cfg)
