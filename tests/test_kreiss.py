"""Kreiss constant (App. B.3, Eq. 29) against independent references: exact values, a brute-force
search with dense SVDs, closed forms, and a d = 768 block-diagonal matrix with a per-block answer."""
import math

import numpy as np
import pytest
import scipy.optimize as so
import torch

from rksp.core.kreiss import kreiss_constant, schur_triangular

RTOL = 1e-2       # the accuracy asked of the search (docs/kreiss.md)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small dense problems: multi-threaded BLAS/LAPACK only spin-waits on a busy machine (the
    brute force took 8 s instead of 1 s with two threads under load)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                       # numpy's BLAS keeps its threads
        threadpool_limits = None
    try:
        if threadpool_limits is None:
            yield
        else:
            with threadpool_limits(limits=1):
                yield
    finally:
        torch.set_num_threads(prev)


def _ours(A, **kw):
    At = torch.as_tensor(A, dtype=torch.float64)
    lam, V = torch.linalg.eig(At)
    V = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)
    Vi, info = torch.linalg.inv_ex(V)
    if info.item() != 0:
        Vi = torch.linalg.pinv(V)
    return kreiss_constant(lam, V, Vi, A=At, **kw)


def _bruteforce(A, n_d=16, n_t=48, n_best=3):
    """sup (|z|-1) / sigma_min(zI - B), B = A / max(rho, 1): a polar grid (plus the eigenvalue rays)
    of exact SVDs of zI - B, then Nelder-Mead from the best grid points. Real A: theta in [0, pi]."""
    lam = np.linalg.eigvals(A)
    B = A / max(np.abs(lam).max(), 1.0)
    d = B.shape[0]

    def f(ld, th):
        r = 1 + np.exp(np.maximum(ld, np.log(1e-9)))   # |z| - 1 as represented: (1 + delta) - 1
        smin = np.linalg.svd((r * np.exp(1j * th))[:, None, None] * np.eye(d) - B, compute_uv=False)[:, -1]
        return (r - 1) / smin

    ths = np.unique(np.concatenate([np.linspace(0, np.pi, n_t), np.abs(np.angle(lam))]))
    LD, TH = (g.ravel() for g in np.meshgrid(np.linspace(np.log(1e-5), np.log(10.0), n_d), ths, indexing="ij"))
    vals = np.concatenate([f(LD[i:i + 256], TH[i:i + 256]) for i in range(0, LD.size, 256)])
    best = max(1.0, vals.max())
    for i in np.argsort(vals)[::-1][:n_best]:
        x0 = [LD[i], TH[i]]
        simplex = [x0, [LD[i] + 0.1, TH[i]], [LD[i], TH[i] + min(0.02, np.exp(LD[i]))]]
        r = so.minimize(lambda p: -f(np.array([min(p[0], np.log(10.0))]), np.array([p[1]]))[0], x0,
                        method="Nelder-Mead", options=dict(xatol=1e-7, fatol=1e-12, maxiter=300, initial_simplex=simplex))
        best = max(best, -r.fun)
    return best


def _orth(d, rng):
    return np.linalg.qr(rng.standard_normal((d, d)))[0]


def _near_jordan(d):
    """Eigenvalues 0.85-0.95 on the diagonal, 0.03 on the superdiagonal: ||A||_2 < 1, so K = 1
    exactly, while kappa(V) is huge (7e10 at d = 32)."""
    return np.diag(np.linspace(0.85, 0.95, d)) + 0.03 * np.eye(d, k=1)


def test_normal_matrices_have_kreiss_one():
    rng = np.random.default_rng(0)
    Q = _orth(64, rng)
    assert _ours(Q @ np.diag(np.linspace(-0.9, 0.95, 64)) @ Q.T) == pytest.approx(1.0, abs=1e-9)
    # rotation-scaling blocks (complex eigenvalues), in a random orthonormal basis
    B = np.zeros((64, 64))
    for k in range(32):
        r, t = rng.uniform(0.3, 0.99), rng.uniform(0, np.pi)
        B[2 * k:2 * k + 2, 2 * k:2 * k + 2] = r * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    assert _ours(Q @ B @ Q.T) == pytest.approx(1.0, abs=1e-9)
    # rho > 1: A / rho is normal with rho = 1
    assert _ours(Q @ np.diag(np.linspace(-1.7, 2.3, 64)) @ Q.T) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("d, rotate", [(32, False), (96, False), (96, True)])
def test_near_jordan_contraction_has_kreiss_one(d, rotate):
    A = _near_jordan(d)
    if rotate:                                   # dense, eigenvectors useless: LAPACK's Schur form
        Q = _orth(d, np.random.default_rng(1))
        A = Q @ A @ Q.T
    assert np.linalg.norm(A, 2) < 1.0
    lam, V = torch.linalg.eig(torch.as_tensor(A))
    V = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)
    assert torch.linalg.cond(V).item() > 1e6     # the eigendecomposition route failed here (K = 204 at d = 32)
    assert _ours(A) == pytest.approx(1.0, abs=1e-9)


def _cases():
    rng = np.random.default_rng(2)
    out = {"gauss d64 (rho > 1)": rng.standard_normal((64, 64)) / 8 * 1.4}
    Vb = rng.standard_normal((48, 48))
    lam = rng.uniform(0.2, 0.95, 48) * np.exp(1j * rng.uniform(-3, 3, 48))
    lam[1::2] = lam[::2].conj()
    out["diagonalizable d48, random basis"] = np.real(Vb @ np.diag(lam) @ np.linalg.inv(Vb))
    U = np.triu(rng.standard_normal((96, 96)), 1) * 0.6 / np.sqrt(96) + np.diag(rng.uniform(0.2, 0.9, 96))
    out["upper-triangular d96"] = U
    out["upper-triangular d96, rotated"] = (lambda Q: Q @ U @ Q.T)(_orth(96, rng))
    J = 0.8 * np.eye(24) + 0.5 * np.eye(24, k=1)
    out["Jordan block d24, rotated"] = (lambda Q: Q @ J @ Q.T)(_orth(24, rng))
    return out


@pytest.mark.parametrize("name", list(_cases()))
def test_matches_bruteforce_search(name):
    A = _cases()[name]
    ref = _bruteforce(A)
    assert _ours(A) == pytest.approx(ref, rel=RTOL), name


def _kreiss_2x2_jordan(a, c):
    """K of [[a, c], [0, a]] / max(|a|, 1), real a: ||(zI - B)^{-1}|| = (c/x^2 + sqrt(c^2/x^4 + 4/x^2)) / 2
    with x = |z - a'|, smallest on the ray through a' (a' = a / max(|a|, 1)); so a 1-D maximization
    over r = |z| > 1 of (r - 1)(c/x^2 + sqrt(c^2/x^4 + 4/x^2)) / 2, x = r - |a'|."""
    s = max(abs(a), 1.0)
    a, c = abs(a) / s, abs(c) / s

    def g(ld):
        r = 1 + np.exp(ld)
        x = r - a
        return (r - 1) * (c / x ** 2 + np.sqrt(c ** 2 / x ** 4 + 4 / x ** 2)) / 2

    grid = np.linspace(np.log(1e-9), np.log(1e4), 20001)
    i = int(np.argmax(g(grid)))
    r = so.minimize_scalar(lambda t: -g(t), bounds=(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]),
                           method="bounded", options=dict(xatol=1e-12))
    return max(1.0, -r.fun, g(grid).max())


@pytest.mark.parametrize("a, c", [(0.9, 0.5), (0.5, 2.0), (-0.7, 1.0), (0.99, 0.05), (0.3, 10.0)])
def test_2x2_jordan_closed_form(a, c):
    ref = _kreiss_2x2_jordan(a, c)
    assert _ours(np.array([[a, c], [0.0, a]])) == pytest.approx(ref, rel=1e-4)
    Q = _orth(2, np.random.default_rng(3))              # the same in another orthonormal basis
    assert _ours(Q @ np.array([[a, c], [0.0, a]]) @ Q.T) == pytest.approx(ref, rel=1e-4)


def _smax_inv_2x2(B, z):
    """||(zI - B)^{-1}||_2 for a 2x2 B, closed form (vectorized over z)."""
    m = [z - B[0, 0], -B[0, 1] + 0 * z, -B[1, 0] + 0 * z, z - B[1, 1]]
    F = sum(abs(x) ** 2 for x in m)
    det = abs(m[0] * m[3] - m[1] * m[2])
    smin2 = 2 * det ** 2 / (F + np.sqrt(np.maximum(F ** 2 - 4 * det ** 2, 0)))
    return 1 / np.sqrt(smin2)


def _kreiss_2x2(B):
    """Polar grid (400 x 801) and four rounds of 41 x 41 local grids: K of a 2x2 matrix."""
    ld, th = np.linspace(np.log(1e-7), np.log(20), 400), np.linspace(-np.pi, np.pi, 801)
    for _ in range(5):
        LD, TH = np.meshgrid(ld, th, indexing="ij")
        v = np.exp(LD) * _smax_inv_2x2(B, (1 + np.exp(LD)) * np.exp(1j * TH))
        i, j = np.unravel_index(v.argmax(), v.shape)
        hl, ht = ld[1] - ld[0], th[1] - th[0]
        ld = np.linspace(LD[i, j] - 2 * hl, LD[i, j] + 2 * hl, 41)
        th = np.linspace(TH[i, j] - 2 * ht, TH[i, j] + 2 * ht, 41)
    return max(1.0, v.max())


def test_d768_block_diagonal_in_a_random_basis():
    """d = 768: six non-normal 2x2 blocks deep inside the disk among 378 normal blocks near the circle,
    in a random orthonormal basis. The resolvent of a block-diagonal matrix is block-diagonal, so
    K = max over blocks of K(block / s), each computed exactly enough from its 2x2 closed form."""
    rng = np.random.default_rng(3)
    d = 768
    blocks = []
    for k in range(d // 2):
        if k < 6:
            r = rng.uniform(0.3, 0.8)
            if k % 2 == 0:
                blk = np.array([[r, rng.uniform(2.0, 6.0)], [0.0, r * rng.uniform(0.8, 0.99)]])
            else:                                   # complex eigenvalues 0.8 r +- i sqrt(c e)
                blk = np.array([[0.8 * r, rng.uniform(2.0, 6.0)], [-rng.uniform(0.02, 0.1), 0.8 * r]])
        else:
            rr, t = rng.uniform(0.5, 0.98), rng.uniform(0, np.pi)
            blk = rr * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        blocks.append(blk)
    A = np.zeros((d, d))
    for k, blk in enumerate(blocks):
        A[2 * k:2 * k + 2, 2 * k:2 * k + 2] = blk
    s = max(1.0, max(np.abs(np.linalg.eigvals(b)).max() for b in blocks))
    ref = max(_kreiss_2x2(b / s) for b in blocks[:6])
    assert ref > 1.5
    Q = _orth(d, rng)
    assert _ours(Q @ A @ Q.T) == pytest.approx(ref, rel=RTOL)


def test_schur_form_from_eigenvectors_and_from_lapack():
    rng = np.random.default_rng(4)
    A = torch.as_tensor(rng.standard_normal((40, 40)) / 6)
    lam, V = torch.linalg.eig(A)
    T, source, err = schur_triangular(A, lam, V)
    assert source == "eigvecs" and err < 1e-12
    J = torch.as_tensor(_near_jordan(40))
    Q = torch.as_tensor(_orth(40, rng))
    lamj, Vj = torch.linalg.eig(Q @ J @ Q.T)
    Tj, source_j, _ = schur_triangular(Q @ J @ Q.T, lamj, Vj)
    assert source_j == "lapack"
    for M, R in ((A, T), (J, Tj)):                  # unitary similarity: same Frobenius norm and trace
        assert torch.equal(R, torch.triu(R))
        assert torch.linalg.matrix_norm(R).item() == pytest.approx(torch.linalg.matrix_norm(M).item(), rel=1e-12)
        assert R.diagonal().sum().real.item() == pytest.approx(M.trace().item(), abs=1e-12)


def test_without_the_matrix_it_is_rebuilt_from_the_eigendecomposition():
    rng = np.random.default_rng(5)
    A = torch.as_tensor(rng.standard_normal((30, 30)) / 5)
    lam, V = torch.linalg.eig(A)
    Vi = torch.linalg.inv(V)
    assert kreiss_constant(lam, V, Vi) == pytest.approx(kreiss_constant(lam, V, Vi, A=A), rel=1e-6)


def test_dense_svd_evaluation_agrees():
    rng = np.random.default_rng(6)
    A = torch.as_tensor(np.triu(rng.standard_normal((20, 20))) * 0.3 + np.diag(rng.uniform(0.2, 0.8, 20)))
    lam, V = torch.linalg.eig(A)
    Vi = torch.linalg.inv(V)
    assert kreiss_constant(lam, V, Vi, A=A, dense=True) == pytest.approx(kreiss_constant(lam, V, Vi, A=A), rel=1e-3)


def test_unscaled_is_infinite_beyond_the_circle_and_scaling_is_by_the_radius():
    A = torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64))
    assert _ours(A) == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(_ours(A, scale_by_radius=False))
    # K(c A) for c > 1 / rho is K(A / rho): unchanged by the scale once rho > 1
    rng = np.random.default_rng(7)
    M = rng.standard_normal((16, 16)) / 2
    assert _ours(3 * M) == pytest.approx(_ours(M), rel=1e-6)
