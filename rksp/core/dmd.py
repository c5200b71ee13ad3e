"""Whitened dynamic mode decomposition (paper Eqs. 6-9) and randomized DMD.

Snapshot matrices are ``d x N`` (columns = samples), as in Eq. 4.

X-based ZCA whitening (Eqs. 7-9): both X and Y are centred on their own
means and multiplied by the same ``W = Sigma_X^{-1/2}``, with
``Sigma_X = Xc Xc^T / (N-1) + eps I``. The whitened operator is
``A = Y~ X~^+`` (Eq. 6 in whitened coordinates).

Implementation (exact, no d x N pseudo-inverse): with ``Sigma = Q diag(sigma) Q^T``
the whitened Gram matrix is ``X~ X~^T = (N-1) Q diag(g) Q^T`` where
``g = sigma / (sigma + eps)``, and ``X~^+ = X~^T (X~ X~^T)^+`` gives

    A = W C_yx W Q diag(g^+) Q^T          (App. B.2: A = M G^{-1})

so we work in the rotated whitened basis ``Q^T`` (an orthogonal change of
coordinates, which leaves eigenvalues, unit-norm eigenvector conditioning,
residual norms and resolvent norms unchanged) and only ever solve d x d
problems: three covariances (d^2 N), one ``eigh`` and one ``eig`` (d^3).
Directions with ``sigma_i <= max(d, N) * machine_eps * max(sigma)`` are
treated as null (pseudo-inverse semantics; happens when N <= d).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import math

import numpy as np
import torch

from rksp import defaults
from rksp.errors import RKSPInputError

Tensor = torch.Tensor


def as_snapshots(M, *, name: str = "X", dtype=torch.float64, device=None) -> Tensor:
    """Convert a numpy array / tensor / nested list to a float ``d x N`` tensor (batch dims allowed)."""
    if isinstance(M, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(M))
    elif isinstance(M, Tensor):
        t = M
    else:
        try:
            t = torch.as_tensor(np.asarray(M))
        except Exception as exc:  # pragma: no cover - defensive
            raise RKSPInputError(f"{name}: cannot convert {type(M).__name__} to a matrix") from exc
    if t.is_complex():
        raise RKSPInputError(f"{name}: snapshots must be real, got {t.dtype}")
    if t.ndim < 2:
        raise RKSPInputError(f"{name}: expected a d x N matrix, got shape {tuple(t.shape)}")
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def check_pair(X: Tensor, Y: Tensor) -> None:
    """Validate a snapshot pair: same shape, N >= 2, all finite."""
    if X.shape != Y.shape:
        raise RKSPInputError(f"X and Y must have the same shape, got {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[-1] < 2:
        raise RKSPInputError(f"need at least N = 2 snapshots (columns), got N = {X.shape[-1]}")
    if X.shape[-2] < 1:
        raise RKSPInputError("snapshot dimension d must be >= 1")
    # one pass per matrix: min and max propagate NaN, and +-Inf shows in them
    lo_x, hi_x = torch.aminmax(X.detach())
    lo_y, hi_y = torch.aminmax(Y.detach())
    ext = torch.stack([lo_x, hi_x, lo_y, hi_y])
    if not bool(torch.isfinite(ext).all()):
        raise RKSPInputError("snapshots contain NaN or Inf")
    # Covariance entries are sums of N products of centred values (|x - mean| <= 2 max|x|), so
    # max|x| <= sqrt(fmax / (4 N d)) keeps every covariance and its d-term products finite. Larger
    # values are an input error, not silently rescaled: the eigenvalues (and so the masses) are
    # invariant to one global scale of X and Y, but kappa(V), eta_nl and ResDMD depend on it
    # through the ridge eps.
    limit = math.sqrt(torch.finfo(X.dtype).max / (4.0 * X.shape[-1] * max(X.shape[-2], 1)))
    big = float(ext.abs().max())
    if big > limit:
        raise RKSPInputError(f"snapshot values too large (max |x| = {big:.3g} > {limit:.3g}): their "
                             f"{X.dtype} covariance would overflow; divide them by one global factor (the masses do "
                             f"not change; kappa, eta_nl and ResDMD do, through the ridge eps)")


@dataclass
class WhitenedDMD:
    """Result of :func:`whitened_dmd`.

    ``A`` and ``modes`` are in ZCA-whitened coordinates (Eqs. 7-8); the
    ``*_q`` fields hold the same quantities in the rotated whitened basis
    ``Q^T`` used internally by :mod:`rksp.core.metrics`.
    """

    eigvals: Tensor                 # (d,) complex
    A_q: Tensor                     # (d, d) operator in the rotated whitened basis
    Q: Tensor                       # (d, d) eigenvectors of the sample covariance of X
    sigma: Tensor                   # (d,) eigenvalues of the sample covariance of X (>= 0)
    g: Tensor                       # (d,) sigma / (sigma + eps): X~ X~^T = (N-1) Q diag(g) Q^T
    keep: Tensor                    # (d,) bool, directions of non-zero variance
    M_q: Tensor                     # (d, d) whitened cross-covariance  Y~ X~^T / (N-1)
    Gdd_q: Tensor                   # (d, d) whitened update covariance (Y~-X~)(Y~-X~)^T / (N-1)
    modes_q: Tensor | None          # (d, d) complex right eigenvectors (unit norm) or None
    n_samples: int
    eps: float
    extras: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.A_q.shape[-1]

    @property
    def A(self) -> Tensor:
        """The whitened DMD operator ``A = Y~ X~^+`` in ZCA coordinates."""
        return self.Q @ self.A_q @ self.Q.transpose(-1, -2)

    @property
    def modes(self) -> Tensor | None:
        """Unit-norm right eigenvectors of ``A`` in ZCA coordinates."""
        if self.modes_q is None:
            return None
        return self.Q.to(self.modes_q.dtype) @ self.modes_q

    @property
    def Gyy_q(self) -> Tensor:
        """Whitened covariance of Y, ``Y~ Y~^T / (N-1)``, from the update covariance (exact algebra)."""
        Gxx = torch.diag_embed(self.g)
        return self.Gdd_q + self.M_q + self.M_q.transpose(-1, -2) - Gxx


def _whiten_stats(X: Tensor, Y: Tensor, eps: float):
    """Covariances of X, Y-X, (Y-X, X) and the eigendecomposition of Sigma_X."""
    n1 = X.shape[-1] - 1
    Xc = X - X.mean(-1, keepdim=True)
    Dc = (Y - Y.mean(-1, keepdim=True)) - Xc          # centred update, Y~ - X~ before W
    Sxx = (Xc @ Xc.transpose(-1, -2)).div_(n1)
    Sdx = (Dc @ Xc.transpose(-1, -2)).div_(n1)
    Sdd = (Dc @ Dc.transpose(-1, -2)).div_(n1)
    sigma, Q = torch.linalg.eigh(Sxx)
    sigma = sigma.clamp_min(0.0)
    d, N = X.shape[-2], X.shape[-1]
    tol = max(d, N) * torch.finfo(X.dtype).eps * sigma.amax(-1, keepdim=True)
    keep = sigma > tol
    return Sxx, Sdx, Sdd, sigma, Q, keep


def whitened_dmd(X, Y, eps: float = defaults.WHITEN_EPS, *, vectors: bool = True,
                 dtype=torch.float64, device=None) -> WhitenedDMD:
    """Whitened DMD of a snapshot pair (paper Eqs. 6-9).

    Parameters
    ----------
    X, Y : array-like, ``d x N`` (numpy or torch); columns are paired samples.
    eps : ridge added to the covariance before the inverse square root (1e-5).
    vectors : also compute unit-norm right eigenvectors (needed for kappa, ResDMD).

    Returns a :class:`WhitenedDMD` with ``eigvals`` (complex, length d) and the
    operator ``A`` (property) in whitened coordinates.
    """
    X = as_snapshots(X, name="X", dtype=dtype, device=device)
    Y = as_snapshots(Y, name="Y", dtype=dtype, device=device)
    check_pair(X, Y)
    if eps < 0:
        raise RKSPInputError(f"eps must be >= 0, got {eps}")
    Sxx, Sdx, Sdd, sigma, Q, keep = _whiten_stats(X, Y, eps)
    s = sigma + eps
    g = torch.where(keep, sigma / s, torch.zeros_like(s))
    ginv = torch.where(keep, s / torch.where(keep, sigma, torch.ones_like(sigma)), torch.zeros_like(s))
    w = torch.where(keep | (s > 0), s.rsqrt(), torch.zeros_like(s))   # W = Q diag(w) Q^T
    Qt = Q.transpose(-1, -2)
    # whitened covariances in the rotated basis: W S W -> diag(w) Q^T S Q diag(w)
    # (in-place products and sums: the same arithmetic, fewer d x d temporaries)
    M_q = (Qt @ Sdx @ Q).mul_(w.unsqueeze(-1)).mul_(w.unsqueeze(-2))
    Gdd_q = (Qt @ Sdd @ Q).mul_(w.unsqueeze(-1)).mul_(w.unsqueeze(-2))
    M_q.diagonal(dim1=-2, dim2=-1).add_(g)             # Y~X~^T/(N-1) = (D~ + X~) X~^T/(N-1)
    A_q = M_q * ginv.unsqueeze(-2)                     # A = M G^+ (G diagonal in this basis)
    if vectors:
        lam, V = torch.linalg.eig(A_q)
        V = V / torch.linalg.vector_norm(V, dim=-2, keepdim=True)
    else:
        lam, V = torch.linalg.eigvals(A_q), None
    return WhitenedDMD(eigvals=lam, A_q=A_q, Q=Q, sigma=sigma, g=g, keep=keep, M_q=M_q,
                       Gdd_q=Gdd_q, modes_q=V, n_samples=X.shape[-1], eps=float(eps))


def _orthonormal(Z: Tensor) -> Tensor:
    return torch.linalg.qr(Z, mode="reduced").Q


def _range_basis(Z0: Tensor, rank: int, oversample: int, power_iters: int,
                 generator: torch.Generator | None) -> Tensor:
    """Top-``rank`` left singular basis (``d x r``, orthonormal) of ``Z0`` (``(..., d, N)``, no grad)
    by a randomized range finder (Halko et al. 2011; Erichson et al. 2019): a Gaussian test
    matrix with ``rank + oversample`` columns, ``power_iters`` subspace iterations, then the
    top-``r`` eigenvectors of the sketch's ``k x k`` Gram matrix."""
    d, N = Z0.shape[-2], Z0.shape[-1]
    k = min(rank + oversample, d, N)
    omega = torch.randn(*Z0.shape[:-2], N, k, dtype=torch.float32, device=Z0.device,
                        generator=generator).to(Z0.dtype)
    Z = _orthonormal(Z0 @ omega)
    for _ in range(power_iters):
        Z = _orthonormal(Z0 @ (Z0.transpose(-1, -2) @ Z))
    B = Z.transpose(-1, -2) @ Z0
    _, Ub = torch.linalg.eigh(B @ B.transpose(-1, -2))
    return Z @ Ub.flip(-1)[..., :rank]


def _pod_basis(X: Tensor, rank: int, oversample: int, power_iters: int,
               generator: torch.Generator | None) -> Tensor:
    """Dominant ``rank``-subspace (``d x r``, orthonormal, X's dtype) of the centred ``X`` (no grad).

    Randomized subspace iteration (Halko et al. 2011, Alg. 4.4; ``rank + oversample`` Gaussian
    columns, ``power_iters`` iterations, Rayleigh-Ritz) on the ``d x d`` scatter matrix
    ``C = X_c X_c^T`` (the left singular vectors of ``X_c``). ``C`` costs ``d^2 N`` like the
    covariance :func:`whitened_dmd` and the old order already form; everything here is float32
    (only the span matters) and the basis is re-orthonormalised in X's dtype."""
    d = X.shape[-2]
    Xs = X.detach().to(torch.float32)
    Xs = Xs - Xs.mean(-1, keepdim=True)
    C = Xs @ Xs.transpose(-1, -2)
    k = min(rank + oversample, d)
    omega = torch.randn(*X.shape[:-2], d, k, dtype=torch.float32, device=X.device, generator=generator)
    Z = _orthonormal(C @ omega)
    for _ in range(power_iters):
        Z = _orthonormal(C @ Z)
    _, Ub = torch.linalg.eigh(Z.transpose(-1, -2) @ C @ Z)
    return _orthonormal((Z @ Ub.flip(-1)[..., :rank]).to(X.dtype))


def randomized_dmd_eigvals(X: Tensor, Y: Tensor, rank: int = defaults.RDMD_RANK, *,
                           eps: float = defaults.WHITEN_EPS,
                           oversample: int = defaults.RDMD_OVERSAMPLE,
                           power_iters: int = defaults.RDMD_POWER_ITERS,
                           generator: torch.Generator | None = None,
                           projection: str = defaults.RDMD_PROJECTION,
                           detach_whitening: bool = defaults.RDMD_DETACH_WHITENING) -> Tensor:
    """Eigenvalues of rank-``r`` randomized whitened DMD (Erichson et al. 2019; Eqs. 6-9), differentiable.

    ``X, Y`` are ``(..., d, N)`` tensors that may require grad (e.g. residual
    snapshots of the current batch, for KSS). Both are centred on their own means.

    ``projection='pod'`` (default): POD first, then whiten.
      1. ``U`` (``d x r``): the dominant left singular (POD) subspace of the centred raw
         ``X`` (randomized subspace iteration on ``X_c X_c^T``, float32, detached data:
         only its span matters; re-orthonormalised in X's dtype);
      2. ``P_x = U^T X_c``, ``P_y = U^T Y_c``; whiten in the subspace with
         ``W_r = (P_x P_x^T/(N-1) + eps I)^{-1/2}`` (Eqs. 7-9) and solve
         ``A_r = Y~ X~^+`` (``r x r``, App. B.2 ``A = M G^{-1}``).
      ``A_r = W_r (P_y P_x^+) W_r^{-1}`` is a similarity, so the eigenvalues are those
      of the Galerkin compression onto the POD subspace and do not depend on ``W_r``
      (whitening only conditions the solve; with ``detach_whitening=False`` its
      gradient is zero up to rounding). For ``r = d`` they equal :func:`whitened_dmd`'s.

    ``projection='whitened'`` (the pre-issue-13 order): whiten the full ``X`` with
      ``W = (Sigma_X + eps I)^{-1/2}``, then run the range finder on ``X~ = W X_c``.
      ``X~`` has a flat singular spectrum by construction, so ``U`` is an essentially
      random ``r``-subspace and the observables ``u^T W x`` weight the low-variance
      directions by ``sigma^{-1/2}``; the eigenvalues then depend on ``W``.

    Gradients flow through the snapshots (and the centring); ``U`` is a constant.
    ``detach_whitening`` (default True): ``W`` / ``W_r`` is a constant too; False
    differentiates through its ``eigh``.
    """
    if X.shape != Y.shape:
        raise RKSPInputError(f"X and Y must have the same shape, got {tuple(X.shape)} and {tuple(Y.shape)}")
    d, N = X.shape[-2], X.shape[-1]
    if not isinstance(rank, int) or rank < 1:
        raise RKSPInputError(f"rank must be a positive integer, got {rank!r}")
    if rank > d:
        raise RKSPInputError(f"rank r = {rank} exceeds the state dimension d = {d}")
    if rank > N - 1:
        raise RKSPInputError(f"rank r = {rank} needs at least r + 1 = {rank + 1} snapshots, got N = {N}")
    if oversample < 0 or power_iters < 0:
        raise RKSPInputError("oversample and power_iters must be >= 0")
    if projection not in defaults.RDMD_PROJECTIONS:
        raise RKSPInputError(f"projection must be one of {defaults.RDMD_PROJECTIONS}, got {projection!r}")
    n1 = N - 1
    if projection == "pod":
        with torch.no_grad():
            U = _pod_basis(X, rank, oversample, power_iters, generator)
        Ut = U.transpose(-1, -2)
        Px, Py = Ut @ X, Ut @ Y                              # r x N POD coefficients, then centred
        Px = Px - Px.mean(-1, keepdim=True)                  # (= U^T X_c: centring commutes with U^T)
        Py = Py - Py.mean(-1, keepdim=True)
        Sxx = (Px @ Px.transpose(-1, -2)) / n1
        Syx = (Py @ Px.transpose(-1, -2)) / n1
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_whitening):
            S = Sxx.detach() if detach_whitening else Sxx
            sigma, Q = torch.linalg.eigh(S)
            D = (sigma.clamp_min(0) + eps).rsqrt()           # W_r = Q diag(D) Q^T
        Qt = Q.transpose(-1, -2)
        # rotated whitened basis (an orthogonal change of coordinates, as in whitened_dmd)
        M = D.unsqueeze(-1) * (Qt @ Syx @ Q) * D.unsqueeze(-2)     # Y~ X~^T / (N-1)
        G = D.unsqueeze(-1) * (Qt @ Sxx @ Q) * D.unsqueeze(-2)     # X~ X~^T / (N-1)
        A_r = torch.linalg.solve(G, M, left=False)                 # M G^{-1}
        return torch.linalg.eigvals(A_r)
    Xc = X - X.mean(-1, keepdim=True)
    Yc = Y - Y.mean(-1, keepdim=True)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_whitening):
        Xs = Xc.detach() if detach_whitening else Xc
        S = (Xs @ Xs.transpose(-1, -2)) / n1
        sigma, Q = torch.linalg.eigh(S)
        W = (Q * (sigma.clamp_min(0) + eps).rsqrt().unsqueeze(-2)) @ Q.transpose(-1, -2)
    with torch.no_grad():
        U = _range_basis(W.detach() @ Xc.detach(), rank, oversample, power_iters, generator)
    P = U.transpose(-1, -2) @ W                             # r x d: project after whitening
    Px = P @ Xc
    Py = P @ Yc
    G = Px @ Px.transpose(-1, -2)
    A_r = torch.linalg.solve(G, Px @ Py.transpose(-1, -2)).transpose(-1, -2)   # Py Px^T G^{-1}
    return torch.linalg.eigvals(A_r)
