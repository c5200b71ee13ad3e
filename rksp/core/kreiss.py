"""Kreiss constant (paper App. B.3, Eq. 29), computed numerically.

    K(B) = sup_{|z| > 1} (|z| - 1) ||(zI - B)^{-1}||_2

The paper defines K but never reports a value; it is infinite whenever
rho(B) > 1. We report ``K(A / max(rho, 1))`` (NOTES.md): the transient growth
of the operator apart from its radius. ``K >= 1`` always (the |z| -> infinity
limit), ``K = 1`` for a normal matrix with rho <= 1, and
``K <= sup_n ||B^n||_2 <= e d K`` (Eq. 30). Method and accuracy: docs/kreiss.md.

Resolvent norms come from a complex Schur form ``T = U^* B U`` (``||(zI - B)^{-1}|| =
||(zI - T)^{-1}||``), never from ``V diag(1/(z - mu)) V^{-1}`` (whose error grows with
kappa(V), Eq. 31). ``T`` is taken from the eigenvectors already computed (QR of their real
basis, a real quasi-triangular form, 2x2 blocks rotated to complex triangular) when its
measured backward error ``||B - U T U^*||_F / ||B||_F`` is below ``KREISS_SCHUR_TOL``, and
from LAPACK's Schur decomposition (scipy) otherwise. ``sigma_max((zI - T)^{-1})`` is found
by Lanczos on ``(zI - T)^{-1} (zI - T)^{-*}`` with blocked triangular solves, batched over
many z (Ritz values are lower bounds). Search: a coarse set of z on rays through the
leading eigenvalues and a few uniform angles, at distances from the circle tied to each
eigenvalue's own distance; then a pattern search in (log(|z| - 1), arg z) around the best
few points, warm-started from their Ritz vectors; then a final longer Lanczos run.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rksp import defaults

Tensor = torch.Tensor

N_EIG_RAYS = 8              # rays through eigenvalues: half largest |mu|, half worst conditioned
N_UNIFORM_RAYS = 5          # extra uniformly spaced rays in [0, pi]
DELTAS = (3e-3, 3e-2, 3e-1)               # |z| - 1 on every ray
GAP_FACTORS = (1.0, 5.0)    # |z| - 1 = factor * (1 - |mu_j|) on the ray of eigenvalue j
MIN_DELTA = 1e-8            # smallest |z| - 1 searched
N_REFINE = 2                # best points refined by pattern search
BLOCK = 24                  # block size of the triangular solves


# --------------------------------------------------------------------------------------------
# complex Schur form
# --------------------------------------------------------------------------------------------

def _schur_from_eigvecs(A: Tensor, lam: Tensor, V: Tensor):
    """Real quasi-triangular ``T = Q^T A Q`` from the eigenvectors of real ``A``.

    ``Q`` = orthonormal basis (QR) of the real basis ``[Re v, Im v]`` of each conjugate pair
    (``v`` for a real eigenvalue), in the eigenvalue order: every leading column set spans an
    invariant subspace, so ``Q^T A Q`` is block upper triangular with 1x1 and 2x2 blocks up
    to rounding amplified by the conditioning of the eigenvectors. Returns ``(T, pair_start,
    backward_error)``, the entries outside the quasi-triangle are dropped and their
    Frobenius norm (relative to ``||A||_F``) is the backward error; ``None`` if the
    eigenvalues are not conjugate-closed.
    """
    d = A.shape[-1]
    im = lam.imag
    pos, neg = im > 0, im < 0
    if int(pos.sum()) != int(neg.sum()):
        return None
    keep = ~neg
    width = torch.where(pos[keep], 2, 1)
    start = torch.cumsum(width, 0) - width                     # first column of each kept eigenvalue
    if int(width.sum()) != d:
        return None
    Vk = V[:, keep]
    pk = pos[keep]
    W = torch.empty(d, d, dtype=A.dtype, device=A.device)
    W.index_copy_(1, start, Vk.real.to(A.dtype))
    W.index_copy_(1, start[pk] + 1, Vk[:, pk].imag.to(A.dtype))
    Q = torch.linalg.qr(W).Q
    T = Q.transpose(-1, -2) @ (A @ Q)
    pair_start = start[pk]
    sub = T[pair_start + 1, pair_start].clone()                 # the 2x2 blocks' subdiagonal entries
    low = torch.tril(T, -1)
    low[pair_start + 1, pair_start] = 0.0
    err = torch.linalg.matrix_norm(low).item() / max(torch.linalg.matrix_norm(A).item(), 1e-300)
    T = torch.triu(T)
    T[pair_start + 1, pair_start] = sub
    return T, pair_start, err


def _schur_lapack(A: Tensor):
    """LAPACK (scipy) Schur form of ``A``: real quasi-triangular for real ``A``, else complex."""
    import scipy.linalg   # only for this fallback: keeps scipy out of `import rksp`
    a = A.detach().cpu().numpy()
    if np.iscomplexobj(a):
        T, _ = scipy.linalg.schur(a, output="complex")
        return torch.from_numpy(T).to(A.device), None
    T, _ = scipy.linalg.schur(a, output="real")
    T = torch.from_numpy(np.ascontiguousarray(T)).to(A.device)
    sub = torch.diagonal(T, -1)
    pair_start = torch.nonzero(sub != 0).reshape(-1)
    return T, pair_start


def _complexify(T: Tensor, pair_start: Tensor | None) -> Tensor:
    """Rotate each 2x2 diagonal block of a real quasi-triangular ``T`` to complex upper triangular.

    The block rotations act on disjoint index pairs and each is computed from its own 2x2
    block, which the others leave unchanged, so they are applied all at once (a unitary
    similarity, O(d^2)).
    """
    Tc = T.to(torch.complex128)
    if pair_start is None or pair_start.numel() == 0:
        return torch.triu(Tc)
    p, q = pair_start, pair_start + 1
    a, b, c, dd = T[p, p], T[p, q], T[q, p], T[q, q]
    tr, det = a + dd, a * dd - b * c
    disc = (tr * tr / 4 - det).to(torch.complex128)
    lam = tr / 2 + torch.sqrt(disc)                             # one eigenvalue of the block
    # eigenvector x of the block: (b, lam - a) or (lam - d, c), the better scaled one
    x1 = torch.stack([b.to(lam.dtype), lam - a], 1)
    x2 = torch.stack([lam - dd, c.to(lam.dtype)], 1)
    use1 = torch.linalg.vector_norm(x1, dim=1) >= torch.linalg.vector_norm(x2, dim=1)
    x = torch.where(use1.unsqueeze(1), x1, x2)
    x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
    g11, g21 = x[:, 0], x[:, 1]                                 # G = [[g11, -conj g21], [g21, conj g11]]
    g12, g22 = -g21.conj(), g11.conj()
    cp, cq = Tc.index_select(1, p), Tc.index_select(1, q)      # T <- T G
    Tc.index_copy_(1, p, cp * g11 + cq * g21)
    Tc.index_copy_(1, q, cp * g12 + cq * g22)
    rp, rq = Tc.index_select(0, p), Tc.index_select(0, q)      # T <- G^* T
    Tc.index_copy_(0, p, g11.conj().unsqueeze(1) * rp + g21.conj().unsqueeze(1) * rq)
    Tc.index_copy_(0, q, g12.conj().unsqueeze(1) * rp + g22.conj().unsqueeze(1) * rq)
    return torch.triu(Tc)


def schur_triangular(A: Tensor, eigvals: Tensor | None = None, V: Tensor | None = None,
                     tol: float = defaults.KREISS_SCHUR_TOL) -> tuple[Tensor, str, float]:
    """Complex upper triangular ``T`` unitarily similar to ``A`` (up to a backward error).

    Returns ``(T, source, backward_error)``; ``source`` is ``'eigvecs'`` (from ``V``, when its
    measured backward error is ``<= tol``) or ``'lapack'`` (scipy; backward error ~ machine eps).
    """
    A = A.detach()
    if not A.is_complex() and eigvals is not None and V is not None:
        out = _schur_from_eigvecs(A.to(torch.float64), eigvals.to(torch.complex128),
                                  V.to(torch.complex128))
        if out is not None and out[2] <= tol:
            return _complexify(*out[:2]), "eigvecs", out[2]
    if not A.is_complex():
        A = A.to(torch.float64)
    T, ps = _schur_lapack(A)
    return _complexify(T, ps) if not T.is_complex() else torch.triu(T), "lapack", float(torch.finfo(torch.float64).eps)


# --------------------------------------------------------------------------------------------
# resolvent norms of a triangular matrix, batched over z
# --------------------------------------------------------------------------------------------

class _Resolvent:
    """``sigma_max((zI - T)^{-1})`` for a batch of z, ``T`` complex upper triangular.

    Vectors are rows of a ``(K, d)`` array (one row per z). A solve is a blocked back
    substitution: the diagonal blocks ``(zI - T_bb)^{-1}`` are inverted once per batch of z
    (one batched triangular solve), the off-diagonal panels of ``T`` are shared by all z
    (one matrix product per block).
    """

    def __init__(self, T: Tensor, block: int = BLOCK):
        self.T = T
        self.d = d = T.shape[-1]
        self.nb = nb = min(block, d)
        self.nfull = d // nb
        self.bounds = [(s, min(s + nb, d)) for s in range(0, d, nb)]
        self.diag_full = torch.stack([T[s:s + nb, s:s + nb] for s in range(0, self.nfull * nb, nb)])
        self.diag_rest = T[self.nfull * nb:, self.nfull * nb:]
        self.up = [T[:s, s:e].transpose(-1, -2).contiguous() for s, e in self.bounds]   # (nb, s)
        self.low = [T[s:e, e:].conj().contiguous() for s, e in self.bounds]             # (nb, d - e)

    def prepare(self, z: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Inverses of the shifted diagonal blocks ``(zI - T_bb)^{-1}`` (K, nb, nb), transposed and conjugated."""
        eye = torch.eye(self.nb, dtype=self.T.dtype, device=self.T.device)
        M = z.reshape(-1, 1, 1, 1) * eye - self.diag_full                  # (K, nfull, nb, nb)
        Minv = torch.linalg.solve_triangular(M, eye.expand_as(M), upper=True, left=False)
        inv = list(Minv.unbind(1))
        if self.diag_rest.shape[-1]:
            n = self.diag_rest.shape[-1]
            e2 = torch.eye(n, dtype=self.T.dtype, device=self.T.device)
            M = z.reshape(-1, 1, 1) * e2 - self.diag_rest
            inv.append(torch.linalg.solve_triangular(M, e2.expand_as(M), upper=True, left=False))
        # row vectors: x^T = r^T (zI - T_bb)^{-T}, and for the adjoint x^T = r^T conj((zI - T_bb)^{-1})
        return [(m.transpose(-1, -2), m.conj().resolve_conj()) for m in inv]

    def solve(self, inv, Y: Tensor) -> Tensor:
        """Rows of ``(zI - T)^{-1} y`` (back substitution)."""
        X = Y.clone()
        for b in range(len(self.bounds) - 1, -1, -1):
            s, e = self.bounds[b]
            xb = torch.bmm(X[:, s:e].unsqueeze(1), inv[b][0]).squeeze(1)
            X[:, s:e] = xb
            if s > 0:
                X[:, :s] += xb @ self.up[b]
        return X

    def solve_adj(self, inv, Y: Tensor) -> Tensor:
        """Rows of ``(zI - T)^{-*} y`` (forward substitution with the conjugate transpose)."""
        X = Y.clone()
        for b in range(len(self.bounds)):
            s, e = self.bounds[b]
            xb = torch.bmm(X[:, s:e].unsqueeze(1), inv[b][1]).squeeze(1)
            X[:, s:e] = xb
            if e < self.d:
                X[:, e:] += xb @ self.low[b]
        return X

    def norms(self, z: Tensor, start: Tensor, steps: int) -> tuple[Tensor, Tensor]:
        """Lanczos on ``(zI-T)^{-1}(zI-T)^{-*}`` (full reorthogonalization) from rows ``start``.

        Returns ``(sigma, ritz)``: the largest Ritz value's square root (a lower bound on
        ``||(zI - T)^{-1}||_2``) and its Ritz vector (warm start for nearby z).
        """
        inv = self.prepare(z)
        steps = max(1, min(steps, self.d))
        q = start / torch.linalg.vector_norm(start, dim=1, keepdim=True).clamp_min(1e-300)
        Qs, alph, bet = [], [], []
        for j in range(steps):
            Qs.append(q)
            w = self.solve(inv, self.solve_adj(inv, q))
            Qm = torch.stack(Qs, 1)                                        # (K, j+1, d)
            c = torch.einsum("kjd,kd->kj", Qm.conj(), w)
            w = w - torch.einsum("kjd,kj->kd", Qm, c)
            c2 = torch.einsum("kjd,kd->kj", Qm.conj(), w)                  # second pass (stability)
            w = w - torch.einsum("kjd,kj->kd", Qm, c2)
            a = (c[:, j] + c2[:, j]).real
            bnorm = torch.linalg.vector_norm(w, dim=1)
            alph.append(a)
            bet.append(bnorm)
            if j + 1 < steps:
                ok = bnorm > 1e-13 * a.abs().clamp_min(1e-300)             # breakdown: invariant subspace
                q = torch.where(ok.unsqueeze(1), w / bnorm.clamp_min(1e-300).unsqueeze(1), torch.zeros_like(w))
                bet[-1] = torch.where(ok, bnorm, torch.zeros_like(bnorm))
        m = len(alph)
        Tk = torch.diag_embed(torch.stack(alph, 1))
        if m > 1:
            off = torch.stack(bet[:-1], 1)
            Tk = Tk + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        ev, evec = torch.linalg.eigh(Tk)
        ritz = torch.einsum("kjd,kj->kd", torch.stack(Qs, 1), evec[:, :, -1].to(Qs[0].dtype))
        return ev[:, -1].clamp_min(0.0).sqrt(), ritz

    def norms_dense(self, z: Tensor) -> Tensor:
        """Exact ``1 / sigma_min(zI - T)`` by SVD (small matrices, tests)."""
        eye = torch.eye(self.d, dtype=self.T.dtype, device=self.T.device)
        out = [1.0 / torch.linalg.svdvals(ch.reshape(-1, 1, 1) * eye - self.T)[..., -1] for ch in z.split(64)]
        return torch.cat(out)


def _zpoints(logdelta: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    r = 1.0 + logdelta.exp()
    return r - 1.0, torch.polar(r, theta)       # |z| - 1 as represented (no rounding of 1 + delta)


# --------------------------------------------------------------------------------------------
# the Kreiss constant
# --------------------------------------------------------------------------------------------

def kreiss_constant(eigvals: Tensor, V: Tensor, Vinv: Tensor, A: Tensor | None = None, *,
                    scale_by_radius: bool = defaults.KREISS_SCALE_BY_RADIUS,
                    power_iters: int = defaults.KREISS_POWER_ITERS,
                    refine_rounds: int = defaults.KREISS_REFINE_ROUNDS,
                    dense: bool | None = None,
                    schur_tol: float = defaults.KREISS_SCHUR_TOL,
                    seed: int = 0) -> float:
    """Kreiss constant of ``B = A / max(rho, 1)`` (or of ``A`` if ``scale_by_radius=False``).

    ``eigvals`` and ``V`` (right eigenvectors, any column scaling) describe ``A``; ``A``
    itself should be passed (the Schur form is computed from it). Without ``A`` it is
    rebuilt as ``V diag(eigvals) Vinv`` (a fallback whose accuracy depends on kappa(V)).
    ``power_iters``: Lanczos steps of the final evaluation at the best points (the coarse
    and refinement stages use ``KREISS_COARSE_STEPS`` / ``KREISS_REFINE_STEPS``).
    ``dense=True`` evaluates every resolvent norm exactly by SVD (small d, tests).
    Returns ``inf`` if ``scale_by_radius=False`` and ``rho > 1``.
    """
    lam = eigvals.detach().to(torch.complex128)
    d = lam.shape[-1]
    rho = lam.abs().max().item()
    if not scale_by_radius and rho > 1.0:
        return float("inf")
    V = V.detach().to(torch.complex128)
    if A is None:
        A = (V * lam.unsqueeze(-2)) @ Vinv.detach().to(V)
        if A.imag.abs().max() <= 1e-8 * A.abs().max().clamp_min(1e-300):   # a real matrix's eigenpairs
            A = A.real.contiguous()
    A = A.detach()
    real = not A.is_complex()
    T, _, _ = schur_triangular(A, lam, V, tol=schur_tol)
    tmax = T.diagonal().abs().max().item()
    s = max(rho, tmax, 1.0) if scale_by_radius else 1.0
    T = T / s
    res = _Resolvent(T)

    gen = torch.Generator(device="cpu").manual_seed(seed)

    def evaluate(ld, th, start, steps):
        delta, z = _zpoints(ld, th)
        z = z.to(T.device)
        if dense:
            return delta * res.norms_dense(z).cpu(), None
        sig, ritz = res.norms(z, start, steps)
        return delta * sig.cpu(), ritz

    def random_start(k):
        g = torch.randn(k, d, 2, dtype=torch.float64, generator=gen)
        return torch.view_as_complex(g).to(T.device)

    # coarse candidates: rays through the leading eigenvalues (folded to the upper half plane
    # for a real matrix, whose resolvent norm is conjugate-symmetric) and uniform angles
    # rays: half through the eigenvalues closest to the circle, half through the worst-conditioned
    # ones (eigenvalue condition number ||u_j|| ||v_j||, u_j^* = row j of V^-1: a deep but
    # non-normal cluster can hold the supremum); one ray per distinct (folded) angle
    mu = (lam / s).cpu()
    cond = (torch.linalg.vector_norm(Vinv.detach().to(V), dim=-1) * torch.linalg.vector_norm(V, dim=-2)).cpu()
    cond = torch.where(torch.isfinite(cond), cond, torch.zeros_like(cond))
    ang = mu.angle().abs() if real else mu.angle()
    rank_mod = mu.abs().argsort(descending=True).tolist()
    rank_cond = cond.argsort(descending=True).tolist()
    picked, seen = [], set()
    for lst in (rank_mod, rank_cond):
        n_here = 0
        for j in lst:
            key = round(float(ang[j]), 9)
            if key in seen:
                continue
            seen.add(key)
            picked.append(j)
            n_here += 1
            if n_here == N_EIG_RAYS // 2:
                break
    sel = torch.tensor(picked, dtype=torch.long)
    th_eig, gap = ang[sel], (1.0 - mu[sel].abs()).clamp(min=MIN_DELTA, max=1.0)
    lo_th = 0.0 if real else -math.pi
    th_uni = torch.linspace(lo_th, math.pi, N_UNIFORM_RAYS, dtype=torch.float64)
    thetas = torch.cat([th_eig, th_uni])
    ld = torch.log(torch.tensor(DELTAS, dtype=torch.float64))
    TH, LD = torch.meshgrid(thetas, ld, indexing="ij")
    TH = torch.cat([TH.reshape(-1), th_eig.repeat(len(GAP_FACTORS))])
    LD = torch.cat([LD.reshape(-1), torch.cat([(gap * f).log() for f in GAP_FACTORS])])
    vals, ritz = evaluate(LD, TH, random_start(LD.numel()), defaults.KREISS_COARSE_STEPS)
    best = max(1.0, vals.max().item())          # |z| -> infinity gives exactly 1

    # pattern search around the best few candidates, warm-started from their Ritz vectors
    cand = vals.argsort(descending=True)
    top = [int(cand[0])]                        # best few distinct points
    for i in cand[1:].tolist():
        if len(top) == N_REFINE:
            break
        if all(abs(LD[i] - LD[j]) > 0.1 or abs(TH[i] - TH[j]) > 1e-3 for j in top):
            top.append(i)
    top = torch.tensor(top)
    p_ld, p_th, p_v = LD[top].clone(), TH[top].clone(), vals[top].clone()
    p_vec = ritz[top] if ritz is not None else None
    step_ld = torch.full_like(p_ld, 0.25 * math.log(10.0))   # the coarse distances are a decade apart
    step_th = (0.5 * p_ld.exp()).clamp(1e-6, 0.25)           # angular scale ~ |z| - 1
    lo_ld = math.log(MIN_DELTA)
    n = p_ld.numel()
    for _ in range(refine_rounds):
        # the point itself (its Ritz vector keeps converging: restarted Lanczos) and 4 neighbours
        c_ld = torch.stack([p_ld, p_ld + step_ld, p_ld - step_ld, p_ld, p_ld], 1).clamp(lo_ld, math.log(10.0))
        c_th = torch.stack([p_th, p_th, p_th, p_th + step_th, p_th - step_th], 1)
        if real:
            c_th = c_th.clamp(0.0, math.pi)
        start = p_vec.repeat_interleave(5, 0) if p_vec is not None else None
        cv, cr = evaluate(c_ld.reshape(-1), c_th.reshape(-1), start, defaults.KREISS_REFINE_STEPS)
        cv = cv.reshape(n, 5)
        cv[:, 0] = torch.maximum(cv[:, 0], p_v)
        bv, bi = cv.max(1)
        improved = bi > 0
        idx = torch.arange(n)
        p_ld, p_th, p_v = c_ld[idx, bi], c_th[idx, bi], bv
        if cr is not None:
            p_vec = cr.reshape(n, 5, d)[idx.to(cr.device), bi.to(cr.device)]
        # compass search: a failed round halves the steps
        step_ld = torch.where(improved, step_ld, step_ld * 0.5)
        step_th = torch.where(improved, step_th, step_th * 0.5)
    best = max(best, p_v.max().item())
    if not dense:
        # final, longer Lanczos runs at the refined points (Ritz values only increase)
        fv, _ = evaluate(p_ld, p_th, p_vec, power_iters)
        best = max(best, fv.max().item())
    return best
