"""Spectral masses, kappa(V) and the Kreiss constant on matrices with known answers."""
import math

import numpy as np
import pytest
import torch

from rksp.core.kreiss import kreiss_constant
from rksp.core.metrics import eigvec_condition, layer_metrics, spectral_masses

D64 = torch.float64


def _kreiss_of(A, **kw):
    lam, V = torch.linalg.eig(A.to(torch.complex128))
    V = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)
    return kreiss_constant(lam, V, torch.linalg.inv(V), A=A, **kw)


def _kreiss_bruteforce(A, n_r=400, n_t=720):
    """(|z|-1) ||(zI-A)^{-1}||_2 maximized on a dense polar grid (exact SVDs)."""
    d = A.shape[0]
    best = 1.0
    for delta in np.logspace(-4, 1.5, n_r // 8):
        th = torch.linspace(0, math.pi, n_t // 8, dtype=D64)
        z = torch.polar(torch.full_like(th, 1 + delta), th)
        M = z[:, None, None] * torch.eye(d, dtype=torch.complex128) - A.to(torch.complex128)
        s = torch.linalg.svdvals(M)[:, -1]
        best = max(best, (delta / s).max().item())
    return best


def test_masses_bins_and_sum():
    lam = torch.tensor([1.2, 1.05, 1.0, 0.9, 0.85, 0.8, 0.79, 0.1, 1.0500001], dtype=D64)
    m = spectral_masses(lam)
    assert m["m_expansive"] == pytest.approx(2 / 9)         # 1.2 and 1.0500001 (strict > 1.05)
    assert m["m_near_unit"] == pytest.approx(3 / 9)         # 1.05, 1.0, 0.9 (closed interval)
    assert m["m_contractive"] == pytest.approx(2 / 9)       # 0.79, 0.1 (strict < 0.8)
    assert m["m_mid"] == pytest.approx(2 / 9)               # 0.85, 0.8
    assert sum(m.values()) == pytest.approx(1.0)


def test_masses_sum_to_one_on_random_profile():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(16, 300, dtype=D64, generator=g)
    Y = torch.tanh(torch.randn(16, 16, dtype=D64, generator=g) @ X)
    m, _, _ = layer_metrics(X, Y)
    assert m["m_near_unit"] + m["m_expansive"] + m["m_contractive"] + m["m_mid"] == pytest.approx(1.0)


def test_normal_contraction_has_kappa_and_kreiss_one():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=D64, generator=g))
    A = Q @ torch.diag(torch.linspace(0.2, 0.95, 12, dtype=D64)) @ Q.T      # symmetric: normal
    lam, V = torch.linalg.eig(A.to(torch.complex128))
    assert eigvec_condition(V) == pytest.approx(1.0, abs=1e-10)
    assert _kreiss_of(A) == pytest.approx(1.0, abs=1e-9)
    # a rotation-scaling (normal, complex eigenvalues)
    R = torch.tensor([[0.6, -0.7], [0.7, 0.6]], dtype=D64)
    assert _kreiss_of(R) == pytest.approx(1.0, abs=1e-9)


def test_non_normal_jordan_like_block_known_kappa_and_transient_growth():
    # A = [[a, c], [0, b]]: eigenvectors e1 and (c, b-a); kappa has a closed form
    a, b, c = 0.5, 0.6, 4.0
    A = torch.tensor([[a, c], [0.0, b]], dtype=D64)
    lam, V = torch.linalg.eig(A.to(torch.complex128))
    v1 = torch.tensor([1.0, 0.0], dtype=D64)
    v2 = torch.tensor([c, b - a], dtype=D64) / math.hypot(c, b - a)
    Vref = torch.stack([v1, v2], 1)
    s = torch.linalg.svdvals(Vref)
    assert eigvec_condition(V) == pytest.approx((s[0] / s[1]).item(), rel=1e-9)
    K = _kreiss_of(A)
    powers = [torch.linalg.matrix_norm(torch.linalg.matrix_power(A, n), ord=2).item() for n in range(200)]
    sup_pow = max(powers)
    assert sup_pow > 2.0                                   # transient growth although rho < 1
    assert K > 1.5
    assert K <= sup_pow + 1e-9 <= math.e * 2 * K + 1e-9    # Kreiss matrix theorem (Eq. 30)
    assert K == pytest.approx(_kreiss_bruteforce(A), rel=2e-3)


def test_kreiss_matches_bruteforce_on_random_nonnormal():
    g = torch.Generator().manual_seed(4)
    A = torch.triu(torch.randn(6, 6, dtype=D64, generator=g)) * 0.5
    A.diagonal().copy_(torch.linspace(0.3, 0.9, 6, dtype=D64))
    K = _kreiss_of(A)
    assert K == pytest.approx(_kreiss_bruteforce(A), rel=5e-3)


def test_kreiss_power_iteration_path_agrees_with_dense():
    g = torch.Generator().manual_seed(2)
    d = 40
    A = 0.9 * torch.randn(d, d, dtype=D64, generator=g) / d ** 0.5 + 0.3 * torch.triu(
        torch.randn(d, d, dtype=D64, generator=g), 1) / d ** 0.5
    lam, V = torch.linalg.eig(A.to(torch.complex128))
    V = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)
    Vi = torch.linalg.inv(V)
    dense = kreiss_constant(lam, V, Vi, A=A, dense=True)
    power = kreiss_constant(lam, V, Vi, A=A, dense=False, power_iters=40)
    assert power == pytest.approx(dense, rel=1e-3)


def test_kreiss_is_scaled_by_radius_and_infinite_unscaled():
    A = torch.diag(torch.tensor([2.0, 0.5], dtype=D64))
    assert _kreiss_of(A) == pytest.approx(1.0, abs=1e-9)       # A / rho is normal with rho = 1
    assert math.isinf(_kreiss_of(A, scale_by_radius=False))


def test_exact_jordan_block_is_flagged_defective():
    d = 5
    A = 0.8 * torch.eye(d, dtype=D64) + torch.diag(torch.ones(d - 1, dtype=D64), 1)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(d, 200, dtype=D64, generator=g)
    m, _, _ = layer_metrics(X, A @ X)
    assert "defective" in m["flags"] or m["kappa"] > 1e6
    assert m["kreiss"] > 1.0 and math.isfinite(m["kreiss"])


def test_profile_layers_in_parallel_equal_single_threaded_serial():
    import rksp
    g = torch.Generator().manual_seed(0)
    H = torch.randn(4, 400, 80, dtype=D64, generator=g).cumsum(0)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = rksp.profile_hidden(H, workers=1, progress=False).layers
    finally:
        torch.set_num_threads(prev)
    par = rksp.profile_hidden(H, workers=3, progress=False).layers
    assert par.equals(serial)                         # same per-layer arithmetic, any schedule
    assert torch.get_num_threads() == prev            # thread setting restored
