"""Per-layer spectral metrics of a whitened DMD operator (paper Eqs. 5, 10-13, App. B.3).

All quantities are computed in the rotated whitened basis of
:class:`rksp.core.dmd.WhitenedDMD` from d x d Gram matrices; this is exact algebra
(orthogonal change of coordinates), so no d x N matrix is formed after the
covariances.
"""
from __future__ import annotations

import math

import torch

from rksp import defaults
from rksp.core.dmd import WhitenedDMD, whitened_dmd
from rksp.core.kreiss import kreiss_constant

Tensor = torch.Tensor

METRIC_COLUMNS = (
    "m_near_unit", "m_expansive", "m_contractive", "m_mid", "rho", "kappa", "eta_nl", "kreiss",
    "resdmd_kept", "m_near_unit_kept", "m_expansive_kept", "m_contractive_kept", "m_mid_kept",
    "resdmd_median",
)


def spectral_masses(eigvals: Tensor, eps_u: float = defaults.EPS_U, eps_n: float = defaults.EPS_N,
                    delta_c: float = defaults.DELTA_C) -> dict[str, float]:
    """Expansive / near-unit / contractive / mid mass (Def. 1, Eqs. 11-13), m = len(eigvals)."""
    mod = eigvals.abs()
    m = mod.numel()
    if m == 0:
        nan = float("nan")
        return {"m_expansive": nan, "m_near_unit": nan, "m_contractive": nan, "m_mid": nan}
    hi = 1.0 + eps_u
    exp_ = (mod > hi).sum().item() / m
    near = ((mod >= 1.0 - eps_n) & (mod <= hi)).sum().item() / m
    con = (mod < 1.0 - delta_c).sum().item() / m
    return {"m_expansive": exp_, "m_near_unit": near, "m_contractive": con,
            "m_mid": max(0.0, 1.0 - exp_ - near - con)}


def eigvec_condition(V: Tensor) -> float:
    """kappa(V) = ||V||_2 ||V^-1||_2 for unit-norm right eigenvectors (Sec. 3.2.2)."""
    s = torch.linalg.svdvals(V)
    smin = s[-1].item()
    return float("inf") if smin == 0.0 else s[0].item() / smin


def _quad_diag(Un: Tensor, G: Tensor) -> Tensor:
    """diag(Un G Un^*) for complex rows Un and a real matrix G: u_j^* G^T u_j ... per row j.

    Returns ``sum_k Un[j,k] * conj((Un @ G^T)[j,k])`` = ``u_j^* G u_j`` where
    ``u_j^* = Un[j]``.
    """
    R = torch.complex(Un.real @ G.transpose(-1, -2), Un.imag @ G.transpose(-1, -2))
    return (Un * R.conj()).sum(-1)


def resdmd_residuals(dmd: WhitenedDMD, Vinv: Tensor, eps_r: float = defaults.RESDMD_EPS) -> Tensor:
    """Per-mode ResDMD residuals r_j (Eq. 10) with unit-norm left eigenvectors.

    ``r_j = ||u_j^*(Y~ - lam_j X~)||_2 / (||u_j^* X~||_2 + eps_r)`` where
    ``u_j^*`` is row j of ``V^{-1}`` (so ``u_j^* A = lam_j u_j^*``), scaled to unit norm.
    """
    n1 = dmd.n_samples - 1
    Un = Vinv / torch.linalg.vector_norm(Vinv, dim=-1, keepdim=True)
    lam = dmd.eigvals
    b = ((Un.abs() ** 2) * dmd.g.unsqueeze(-2)).sum(-1)                 # u^* X~X~^T u / (N-1)
    a = _quad_diag(Un, dmd.M_q)                                          # u^* Y~X~^T u / (N-1)
    c = _quad_diag(Un, dmd.Gyy_q).real                                   # u^* Y~Y~^T u / (N-1)
    num2 = c - 2.0 * (lam.conj() * a).real + (lam.abs() ** 2) * b
    num = (n1 * num2.clamp_min(0.0)).sqrt()
    den = (n1 * b.clamp_min(0.0)).sqrt() + eps_r
    return num / den


def nonlinearity_ratio(dmd: WhitenedDMD, eps_nl: float = defaults.ETA_EPS) -> tuple[float, float, float]:
    """eta_nl (Eq. 5) = ||Y~ - A X~||_F / (||Y~ - X~||_F + eps_nl).

    Returns ``(eta_nl, ||Y~ - X~||_F, ||X~||_F)``.
    """
    n1 = dmd.n_samples - 1
    A, M, g = dmd.A_q, dmd.M_q, dmd.g
    fit2 = torch.diagonal(dmd.Gyy_q, dim1=-2, dim2=-1).sum() - 2.0 * (A * M).sum() \
        + ((A ** 2) * g.unsqueeze(-2)).sum()
    fit = math.sqrt(max(n1 * fit2.item(), 0.0))
    upd = math.sqrt(max(n1 * torch.diagonal(dmd.Gdd_q, dim1=-2, dim2=-1).sum().item(), 0.0))
    xnorm = math.sqrt(max(n1 * g.sum().item(), 0.0))
    return fit / (upd + eps_nl), upd, xnorm


def layer_metrics(X, Y, *, eps: float = defaults.WHITEN_EPS, tau: float = defaults.RESDMD_TAU,
                  eps_nl: float = defaults.ETA_EPS, eps_r: float = defaults.RESDMD_EPS,
                  eps_u: float = defaults.EPS_U, eps_n: float = defaults.EPS_N,
                  delta_c: float = defaults.DELTA_C, kreiss: bool = True,
                  dtype=torch.float64, device=None) -> tuple[dict, WhitenedDMD, Tensor]:
    """All per-layer metrics of Algorithm 1 for one transition X -> Y (d x N each).

    Returns ``(metrics, dmd, residuals)``; ``metrics`` holds the columns of
    :data:`METRIC_COLUMNS` plus ``d``, ``n``, ``update_norm`` and ``flags``
    (a ``;``-joined string: ``zero_update``, ``rank_deficient``, ``defective``,
    ``none_kept``; empty when healthy).
    """
    dmd = whitened_dmd(X, Y, eps, vectors=True, dtype=dtype, device=device)
    lam, V = dmd.eigvals, dmd.modes_q
    d, n = dmd.dim, dmd.n_samples
    flags = []
    out = {"d": d, "n": n}
    out.update(spectral_masses(lam, eps_u, eps_n, delta_c))
    out["rho"] = lam.abs().max().item()
    out["kappa"] = eigvec_condition(V)
    eta, upd, xnorm = nonlinearity_ratio(dmd, eps_nl)
    out["eta_nl"] = eta
    out["update_norm"] = upd / xnorm if xnorm > 0 else float("nan")
    if xnorm == 0 or upd <= defaults.ZERO_UPDATE_RTOL * xnorm:
        flags.append("zero_update")
    if int(dmd.keep.sum()) < d:
        flags.append("rank_deficient")
    Vinv, info = torch.linalg.inv_ex(V)
    defective = bool(info.item() != 0) or not math.isfinite(out["kappa"]) or out["kappa"] > 1e12
    if defective:
        flags.append("defective")
        Vinv = torch.linalg.pinv(V)
    res = resdmd_residuals(dmd, Vinv, eps_r)
    kept = res <= tau
    out["resdmd_kept"] = kept.double().mean().item()
    out["resdmd_median"] = res.median().item()
    km = spectral_masses(lam[kept], eps_u, eps_n, delta_c)
    out.update({f"{k}_kept": v for k, v in km.items()})
    if not bool(kept.any()):
        flags.append("none_kept")
    if kreiss:
        out["kreiss"] = kreiss_constant(lam, V, Vinv, A=dmd.A_q)     # Schur form of A_q (Eq. 29)
    else:
        out["kreiss"] = float("nan")
    out["flags"] = ";".join(flags)
    return out, dmd, res
