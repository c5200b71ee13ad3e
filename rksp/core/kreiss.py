"""Kreiss constant (paper App. B.3, Eq. 29), computed numerically.

    K(B) = sup_{|z| > 1} (|z| - 1) ||(zI - B)^{-1}||_2

The paper defines K but never reports a value; it is infinite whenever
rho(B) > 1. We report ``K(A / max(rho, 1))`` (NOTES.md): the transient growth
of the operator apart from its radius. ``K >= 1`` always (the |z| -> infinity
limit), ``K = 1`` for a normal matrix with rho <= 1, and
``K <= sup_n ||B^n||_2 <= e d K`` (Eq. 30).

Method: the resolvent norm is evaluated from the eigendecomposition,
``(zI - B)^{-1} = V diag(1/(z - mu)) V^{-1}``, by batched power iteration
(BLAS-3 over many z at once, O(d^2) per z per iteration: power iteration on
``K = C D P D^*`` with ``C = V^* V``, ``P = V^{-1} V^{-*}``, which is similar to ``M M^*``
for ``M = V D V^{-1}``, two d x d products per step), or exactly by SVD of
``zI - B`` for small or defective matrices. Candidate points lie on rays
through the leading eigenvalues and a uniform set of angles in the upper half
plane (a real matrix has a conjugate-symmetric resolvent norm) at several
distances from the unit circle; the best few are refined by a pattern search
in (log(|z| - 1), arg z).
"""
from __future__ import annotations

import math

import torch

from rksp import defaults

Tensor = torch.Tensor

DENSE_MAX_DIM = 64          # exact SVD-based evaluation up to this size
N_EIG_RAYS = 16             # rays through the leading eigenvalues
N_UNIFORM_RAYS = 8          # extra uniformly spaced rays in [0, pi]
DELTAS = (1e-3, 1e-2, 5e-2, 2e-1, 1.0)   # |z| - 1 on each ray
N_REFINE = 3                # best points refined by pattern search


class _Resolvent:
    """Largest singular value of (zI - B)^{-1} for a batch of complex z."""

    def __init__(self, mu: Tensor, V: Tensor, Vinv: Tensor, B: Tensor | None, dense: bool,
                 iters: int, seed: int = 0):
        self.mu, self.V, self.Vinv, self.iters = mu, V, Vinv, iters
        self.dense = dense
        self.B = B
        self.d = mu.shape[-1]
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        if not dense:
            # sigma_max(M)^2 = lambda_max(M M^*) with M = V D V^-1, and M M^* is similar to
            # K = C D P D^* (C = V^* V, P = V^-1 V^-*): power iteration on K costs two d x d
            # products per step instead of four (exact algebra, see the module docstring)
            self.C = V.conj().transpose(-1, -2) @ V
            self.P = Vinv @ Vinv.conj().transpose(-1, -2)

    def __call__(self, z: Tensor) -> Tensor:
        if self.dense:
            eye = torch.eye(self.d, dtype=self.B.dtype, device=self.B.device)
            out = []
            for chunk in z.split(64):
                Zm = chunk.reshape(-1, 1, 1) * eye - self.B
                out.append(1.0 / torch.linalg.svdvals(Zm)[..., -1])
            return torch.cat(out)
        D = 1.0 / (self.mu.unsqueeze(-1) - z.unsqueeze(0)).neg()      # (d, K): 1 / (z - mu)
        w = torch.randn(self.d, z.numel(), dtype=torch.float64, generator=self.gen).to(D)
        w = w / torch.linalg.vector_norm(w, dim=0, keepdim=True)
        sig2 = torch.zeros(z.numel(), dtype=torch.float64, device=D.device)
        for _ in range(self.iters + 1):
            s = D * (self.P @ (D.conj() * w))                             # G w, G = D P D^* (Hermitian)
            Kw = self.C @ s                                               # K w = C G w
            # K is self-adjoint PSD in <a, b> = a^* C^-1 b; <Kw, Kw> / <w, Kw> = s^* C s / w^* G w
            # is a weighted mean of K's eigenvalues, so a lower bound on sigma_max(M)^2
            num = (w.conj() * s).sum(0).real
            den = (s.conj() * Kw).sum(0).real
            sig2 = torch.maximum(sig2, den / num.clamp_min(1e-300))
            w = Kw / torch.linalg.vector_norm(Kw, dim=0, keepdim=True).clamp_min(1e-300)
        return sig2.clamp_min(0.0).sqrt()


def _objective(res: _Resolvent, logdelta: Tensor, theta: Tensor) -> Tensor:
    delta = logdelta.exp()
    z = torch.polar((1.0 + delta).to(torch.float64), theta.to(torch.float64))
    z = z.to(res.mu.dtype if res.mu.is_complex() else torch.complex128)
    return delta * res(z)


def kreiss_constant(eigvals: Tensor, V: Tensor, Vinv: Tensor, A: Tensor | None = None, *,
                    scale_by_radius: bool = defaults.KREISS_SCALE_BY_RADIUS,
                    power_iters: int = defaults.KREISS_POWER_ITERS,
                    refine_rounds: int = defaults.KREISS_REFINE_ROUNDS,
                    dense: bool | None = None) -> float:
    """Kreiss constant of ``B = A / max(rho, 1)`` (or of ``A`` if ``scale_by_radius=False``).

    ``eigvals``, ``V`` (right eigenvectors), ``Vinv`` describe ``A``; ``A``
    itself is needed for the exact (dense) evaluation, used when ``d <= 64``,
    when ``dense=True`` or when ``V`` is numerically singular. Returns ``inf``
    if ``scale_by_radius=False`` and ``rho > 1``.
    """
    lam = eigvals.to(torch.complex128)
    d = lam.shape[-1]
    rho = lam.abs().max().item()
    if not scale_by_radius and rho > 1.0:
        return float("inf")
    s = max(rho, 1.0) if scale_by_radius else 1.0
    mu = lam / s
    if dense is None:
        dense = A is not None and d <= DENSE_MAX_DIM
    B = None
    if dense:
        if A is None:
            raise ValueError("dense Kreiss evaluation needs the matrix A")
        B = (A / s).to(torch.complex128)
    res = _Resolvent(mu, V.to(torch.complex128), Vinv.to(torch.complex128), B, dense, power_iters)

    # candidate rays: leading eigenvalues (folded to the upper half plane) + uniform angles
    order = mu.abs().argsort(descending=True)[:N_EIG_RAYS]
    th_eig = mu[order].angle().abs()
    th_uni = torch.linspace(0.0, math.pi, N_UNIFORM_RAYS, dtype=torch.float64)
    thetas = torch.cat([th_eig.to(torch.float64), th_uni]).unique()
    # per-eigenvalue distance to the circle as one more radius on its own ray
    gaps = (1.0 - mu[order].abs()).clamp_min(1e-3).to(torch.float64)
    ld = torch.log(torch.tensor(DELTAS, dtype=torch.float64))
    T, LD = torch.meshgrid(thetas, ld, indexing="ij")
    T = torch.cat([T.reshape(-1), th_eig.to(torch.float64)])
    LD = torch.cat([LD.reshape(-1), gaps.log()])
    vals = _objective(res, LD, T)
    best = max(1.0, vals.max().item())   # |z| -> infinity gives exactly 1

    # pattern search around the best few candidates
    top = vals.argsort(descending=True)[:N_REFINE]
    pts_ld, pts_th, pts_v = LD[top].clone(), T[top].clone(), vals[top].clone()
    step_ld = torch.full_like(pts_ld, 0.5 * math.log(10.0))
    step_th = torch.full_like(pts_th, 0.05)
    lo = math.log(1e-8)
    for _ in range(refine_rounds):
        cand_ld = torch.stack([pts_ld + step_ld, pts_ld - step_ld, pts_ld, pts_ld], 1).clamp_min(lo)
        cand_th = torch.stack([pts_th, pts_th, pts_th + step_th, pts_th - step_th], 1).clamp(0.0, math.pi)
        cv = _objective(res, cand_ld.reshape(-1), cand_th.reshape(-1)).reshape(cand_ld.shape)
        bv, bi = cv.max(1)
        improved = bv > pts_v
        idx = torch.arange(len(bi))
        pts_ld = torch.where(improved, cand_ld[idx, bi], pts_ld)
        pts_th = torch.where(improved, cand_th[idx, bi], pts_th)
        pts_v = torch.where(improved, bv, pts_v)
        step_ld = torch.where(improved, step_ld, step_ld * 0.5)
        step_th = torch.where(improved, step_th, step_th * 0.5)
    return max(best, pts_v.max().item())
