"""Whitened DMD and randomized DMD against analytic cases and an independent library."""
import numpy as np
import pytest
import torch

from rksp import RKSPInputError, randomized_dmd_eigvals, whitened_dmd
from rksp.core.metrics import layer_metrics, nonlinearity_ratio, resdmd_residuals

D64 = torch.float64


def _sorted(ev):
    ev = torch.as_tensor(ev).to(torch.complex128)
    return ev[torch.argsort(ev.real * 1e6 + ev.imag)]


def _match(a, b):
    """Max distance between two eigenvalue multisets (greedy nearest matching)."""
    a, b = list(torch.as_tensor(a).tolist()), list(torch.as_tensor(b).tolist())
    worst = 0.0
    for x in a:
        j = min(range(len(b)), key=lambda k: abs(b[k] - x))
        worst = max(worst, abs(b.pop(j) - x))
    return worst


def _data(d=12, N=400, seed=0, cond=30.0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, dtype=D64, generator=g) / d ** 0.5
    scales = torch.logspace(0, np.log10(cond), d, dtype=D64)
    X = scales[:, None] * torch.randn(d, N, dtype=D64, generator=g) + 3.0
    return A, X


def test_exactly_linear_recovers_eigenvalues_and_zero_residuals():
    A, X = _data()
    Y = A @ X + 0.7          # affine: centring removes the offset
    m, dmd, res = layer_metrics(X, Y, kreiss=False)
    assert _match(dmd.eigvals, torch.linalg.eigvals(A)) < 1e-8
    assert m["eta_nl"] < 1e-6
    assert res.max().item() < 1e-6
    assert m["resdmd_kept"] == 1.0


def test_operator_matches_pseudoinverse_definition():
    A, X = _data(d=8, N=60)
    Y = torch.tanh(A @ X / 3) + 0.2 * X
    dmd = whitened_dmd(X, Y, eps=1e-5)
    N = X.shape[1]
    Xc, Yc = X - X.mean(1, keepdim=True), Y - Y.mean(1, keepdim=True)
    S = Xc @ Xc.T / (N - 1) + 1e-5 * torch.eye(8, dtype=D64)
    w, Q = torch.linalg.eigh(S)
    W = Q @ torch.diag(w.rsqrt()) @ Q.T
    Xt, Yt = W @ Xc, W @ Yc
    A_ref = Yt @ torch.linalg.pinv(Xt)
    assert torch.allclose(dmd.A, A_ref, atol=1e-10)
    eta_ref = torch.linalg.norm(Yt - A_ref @ Xt) / (torch.linalg.norm(Yt - Xt) + 1e-8)
    assert nonlinearity_ratio(dmd)[0] == pytest.approx(eta_ref.item(), rel=1e-9)
    # ResDMD residuals (Eq. 10) by brute force with unit left eigenvectors
    lam, V = torch.linalg.eig(A_ref)
    Ui = torch.linalg.inv(V)
    Ui = Ui / torch.linalg.vector_norm(Ui, dim=1, keepdim=True)
    Xt_c, Yt_c = Xt.to(torch.complex128), Yt.to(torch.complex128)
    r_ref = torch.linalg.vector_norm(Ui @ Yt_c - lam[:, None] * (Ui @ Xt_c), dim=1) / (
        torch.linalg.vector_norm(Ui @ Xt_c, dim=1) + 1e-12)
    Vq = dmd.modes_q
    r = resdmd_residuals(dmd, torch.linalg.inv(Vq))
    assert torch.allclose(torch.sort(r).values, torch.sort(r_ref).values, atol=1e-9)


def test_rank_deficient_matches_pinv():
    """N < d: pseudo-inverse semantics (null directions of X give zero eigenvalues)."""
    A, X = _data(d=20, N=12)
    Y = torch.sin(A @ X)
    dmd = whitened_dmd(X, Y)
    N = X.shape[1]
    Xc, Yc = X - X.mean(1, keepdim=True), Y - Y.mean(1, keepdim=True)
    S = Xc @ Xc.T / (N - 1) + 1e-5 * torch.eye(20, dtype=D64)
    w, Q = torch.linalg.eigh(S)
    W = Q @ torch.diag(w.rsqrt()) @ Q.T
    A_ref = (W @ Yc) @ torch.linalg.pinv(W @ Xc, rtol=1e-9)
    assert torch.allclose(dmd.A, A_ref, atol=1e-7)
    assert int(dmd.keep.sum()) == N - 1
    m, _, _ = layer_metrics(X, Y)
    assert "rank_deficient" in m["flags"]


def test_eigenvalues_invariant_under_change_of_coordinates():
    A, X = _data(d=10, N=300)
    Y = torch.tanh(A @ X / 5) + X
    g = torch.Generator().manual_seed(3)
    T = torch.randn(10, 10, dtype=D64, generator=g) + 4 * torch.eye(10, dtype=D64)
    ev = whitened_dmd(X, Y, eps=0.0).eigvals
    ev_t = whitened_dmd(T @ X, T @ Y, eps=0.0).eigvals
    assert _match(ev, ev_t) < 1e-8
    # and with the default ridge, up to the tiny effect of eps on badly scaled data
    ev_t5 = whitened_dmd(1e3 * (T @ X), 1e3 * (T @ Y)).eigvals
    assert _match(ev, ev_t5) < 1e-6


def test_numpy_and_torch_inputs_agree():
    A, X = _data(d=6, N=50)
    Y = A @ X + 0.01 * X ** 2
    e1 = whitened_dmd(X, Y).eigvals
    e2 = whitened_dmd(X.numpy(), Y.numpy()).eigvals
    e3 = whitened_dmd(X.float(), Y.float()).eigvals     # promoted to float64
    assert torch.allclose(_sorted(e1), _sorted(e2))
    assert _match(e1, e3) < 1e-4


def test_cross_check_against_pydmd():
    pydmd = pytest.importorskip("pydmd")
    A, X = _data(d=10, N=200)
    Y = torch.tanh(A @ X / 4) + 0.5 * X
    dmd = whitened_dmd(X, Y)
    N = X.shape[1]
    Xc, Yc = X - X.mean(1, keepdim=True), Y - Y.mean(1, keepdim=True)
    S = Xc @ Xc.T / (N - 1) + 1e-5 * torch.eye(10, dtype=D64)
    w, Q = torch.linalg.eigh(S)
    W = Q @ torch.diag(w.rsqrt()) @ Q.T
    ref = pydmd.DMD(svd_rank=-1, exact=True)
    ref.fit((W @ Xc).numpy(), (W @ Yc).numpy())
    assert _match(dmd.eigvals, torch.as_tensor(ref.eigs)) < 1e-8


@pytest.mark.parametrize("bad, msg", [
    (lambda X: (X, X[:, :-1]), "same shape"),
    (lambda X: (X[:, :1], X[:, :1]), "N = 2"),
    (lambda X: (X.clone().index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(float("nan"), dtype=D64)), X), "NaN"),
    (lambda X: (X[0], X[0]), "d x N"),
])
def test_bad_inputs(bad, msg):
    _, X = _data(d=4, N=10)
    a, b = bad(X)
    with pytest.raises(RKSPInputError, match=msg):
        whitened_dmd(a, b)


def test_zero_update_is_flagged_not_crashed():
    _, X = _data(d=8, N=100)
    m, dmd, _ = layer_metrics(X, X.clone())
    assert "zero_update" in m["flags"]
    assert m["m_near_unit"] == 1.0
    assert torch.allclose(dmd.eigvals.abs(), torch.ones(8, dtype=D64), atol=1e-9)


# --- randomized DMD ---------------------------------------------------------------

def test_randomized_dmd_converges_to_full_as_rank_grows():
    A, X = _data(d=16, N=500, cond=5)
    Y = torch.tanh(A @ X / 3) + 0.3 * X
    full = whitened_dmd(X, Y).eigvals
    g = torch.Generator().manual_seed(0)
    full_rank = randomized_dmd_eigvals(X, Y, rank=16, generator=g)
    assert _match(full, full_rank) < 1e-8
    # spectral-radius error shrinks as r grows
    errs = []
    for r in (4, 8, 12, 16):
        ev = randomized_dmd_eigvals(X, Y, rank=r, generator=torch.Generator().manual_seed(0))
        errs.append(abs(ev.abs().max().item() - full.abs().max().item()))
    assert errs[-1] < 1e-8 and errs[-1] <= errs[0]


def test_randomized_dmd_gradcheck():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(6, 30, dtype=D64, generator=g)
    W = torch.randn(6, 6, dtype=D64, generator=g) / 3

    def f(Yin):
        ev = randomized_dmd_eigvals(X, Yin, rank=4, generator=torch.Generator().manual_seed(5))
        return (ev.abs() ** 2).sum()

    Y = (torch.tanh(W @ X) + X).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (Y,), eps=1e-6, atol=1e-5)


def test_randomized_dmd_batched_layers():
    A, X = _data(d=8, N=100)
    Y = torch.tanh(A @ X / 3)
    Xb, Yb = torch.stack([X, 2 * X]), torch.stack([Y, Y])
    ev = randomized_dmd_eigvals(Xb, Yb, rank=8, generator=torch.Generator().manual_seed(0))
    assert ev.shape == (2, 8)
    assert _match(ev[0], whitened_dmd(X, Y).eigvals) < 1e-8


@pytest.mark.parametrize("kw, msg", [({"rank": 40}, "exceeds"), ({"rank": 0}, "positive"),
                                     ({"rank": 8, "n": 5}, "snapshots")])
def test_randomized_dmd_bad_parameters(kw, msg):
    n = kw.pop("n", 50)
    X = torch.randn(10, n, dtype=D64)
    with pytest.raises(RKSPInputError, match=msg):
        randomized_dmd_eigvals(X, X, **kw)


# --- projection order (issue 13): POD first vs whitened first -----------------------

def _planted(d=64, N=2000, k=4, seed=0, noise=0.1):
    """A rank-k linear dynamics A (planted eigenvalues) in a random k-subspace carrying most of
    the variance, plus small isotropic noise (independent in X and Y) in all d coordinates."""
    g = torch.Generator().manual_seed(seed)
    V = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=D64)).Q
    lam = torch.tensor([0.95, 0.7, 0.5, 0.5], dtype=D64)
    A = torch.diag(lam)
    A[2, 3], A[3, 2] = -0.3, 0.3                       # 0.5 +- 0.3i
    R = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=D64)).Q
    A = R @ A @ R.T
    z = 10 * torch.randn(k, N, generator=g, dtype=D64)
    X = V @ z + noise * torch.randn(d, N, generator=g, dtype=D64)
    Y = V @ (A @ z) + noise * torch.randn(d, N, generator=g, dtype=D64)
    return X, Y, torch.linalg.eigvals(A)


def test_pod_projection_recovers_planted_low_rank_dynamics_whitened_order_does_not():
    X, Y, planted = _planted()
    for seed in range(3):
        pod = randomized_dmd_eigvals(X, Y, 4, generator=torch.Generator().manual_seed(seed))
        assert _match(pod, planted) < 5e-3
        old = randomized_dmd_eigvals(X, Y, 4, projection="whitened",
                                     generator=torch.Generator().manual_seed(seed))
        # the whitened X~ has a flat spectrum: its "top-4" subspace is mostly the 60 noise directions
        assert _match(old, planted) > 0.3
        assert old.abs().max() < 0.5


def test_pod_projection_sees_planted_expansive_mode_the_whitened_order_misses():
    """KSS-relevant: an expansive dominant mode (|lambda| = 1.3) must show in the rank-r spectrum."""
    X, Y, _ = _planted(seed=1)
    g = torch.Generator().manual_seed(7)
    d, N = X.shape
    V = torch.linalg.qr(torch.randn(d, 1, generator=g, dtype=D64)).Q
    z = 10 * torch.randn(1, N, generator=g, dtype=D64)
    X2, Y2 = X + V @ z, Y + V @ (1.3 * z)
    pod = randomized_dmd_eigvals(X2, Y2, 8, generator=torch.Generator().manual_seed(0))
    old = randomized_dmd_eigvals(X2, Y2, 8, projection="whitened", generator=torch.Generator().manual_seed(0))
    assert abs(pod.abs().max().item() - 1.3) < 1e-2
    assert old.abs().max().item() < 1.0


@pytest.mark.parametrize("projection", ["pod", "whitened"])
@pytest.mark.parametrize("detach", [True, False])
def test_rank_d_equals_exact_whitened_dmd(projection, detach):
    A, X = _data(d=12, N=300, cond=100)
    Y = torch.tanh(A @ X / 10) + 0.5 * X
    ev = randomized_dmd_eigvals(X, Y, 12, projection=projection, detach_whitening=detach,
                                generator=torch.Generator().manual_seed(3))
    assert _match(ev, whitened_dmd(X, Y).eigvals) < 1e-9


def _grads(projection, detach, r=4, seed=0):
    A, X = _data(d=10, N=200, seed=seed, cond=10)
    Y = torch.tanh(A @ X / 5) + 0.8 * X
    X, Y = X.clone().requires_grad_(), Y.clone().requires_grad_()
    ev = randomized_dmd_eigvals(X, Y, r, projection=projection, detach_whitening=detach,
                                generator=torch.Generator().manual_seed(1))
    (ev.abs() ** 2).sum().backward()
    return X.grad, Y.grad


def test_pod_gradient_does_not_depend_on_detaching_the_whitening_the_old_order_does():
    """Under 'pod' A_r = W_r (P_y P_x^+) W_r^{-1}: its eigenvalues do not depend on W_r, so
    differentiating through W_r adds nothing; under 'whitened' W selects the subspace."""
    gx1, gy1 = _grads("pod", True)
    gx0, gy0 = _grads("pod", False)
    assert torch.allclose(gx1, gx0, rtol=1e-6, atol=1e-9 * gx1.abs().max().item())
    assert torch.allclose(gy1, gy0, rtol=1e-6, atol=1e-9 * gy1.abs().max().item())
    wx1, wy1 = _grads("whitened", True)
    wx0, wy0 = _grads("whitened", False)
    assert torch.allclose(wy1, wy0)                   # W depends on X only
    assert (wx1 - wx0).norm() > 1e-3 * wx1.norm()


@pytest.mark.parametrize("projection", ["pod", "whitened"])
@pytest.mark.parametrize("detach", [True, False])
def test_randomized_dmd_gradcheck_every_path(projection, detach):
    """w.r.t. Y at r < d (U and W are functions of X only) and w.r.t. (X, Y) at r = d (the
    eigenvalues then do not depend on U or W, so treating them as constants is exact)."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(5, 30, dtype=D64, generator=g)
    M = torch.randn(5, 5, dtype=D64, generator=g) / 3
    Y = torch.tanh(M @ X) + X

    def f(r):
        def ev(x, y):
            lam = randomized_dmd_eigvals(x, y, r, projection=projection, detach_whitening=detach,
                                         generator=torch.Generator().manual_seed(5))
            return (lam.abs() ** 2).sum()
        return ev

    assert torch.autograd.gradcheck(lambda y: f(3)(X, y), (Y.clone().requires_grad_(),), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(f(5), (X.clone().requires_grad_(), Y.clone().requires_grad_()),
                                    eps=1e-6, atol=1e-5)


def test_randomized_dmd_rejects_unknown_projection():
    X = torch.randn(6, 40, dtype=D64)
    with pytest.raises(RKSPInputError, match="projection"):
        randomized_dmd_eigvals(X, X, 3, projection="zca")
