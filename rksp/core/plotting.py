"""Figures of a profile: eigenvalues against the unit circle, metrics by depth."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Wedge  # noqa: E402

from rksp import defaults  # noqa: E402

BIN_COLORS = {"contractive": "#9ecae1", "mid": "#f0f0f0", "near-unit": "#fdae6b", "expansive": "#fcbba1"}


def shade_bins(ax, rmax: float) -> None:
    """Shade the mass bins of Def. 1 as annuli (contractive / mid / near-unit / expansive)."""
    lo_c = 1.0 - defaults.DELTA_C
    lo_n = 1.0 - defaults.EPS_N
    hi = 1.0 + defaults.EPS_U
    rings = [(0.0, lo_c, "contractive"), (lo_c, lo_n, "mid"), (lo_n, hi, "near-unit"), (hi, rmax, "expansive")]
    for r0, r1, name in rings:
        if r1 > r0:
            ax.add_patch(Wedge((0, 0), r1, 0, 360, width=r1 - r0, color=BIN_COLORS[name], alpha=0.6,
                               lw=0, label=f"{name}"))
    t = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(t), np.sin(t), "k-", lw=0.8)


def plot_eigenvalues(ax, eigenvalues, title: str = "") -> None:
    """Scatter DMD eigenvalues of every layer, coloured early (blue) to late (red), as in Fig. 1."""
    L = len(eigenvalues)
    rmax = max(1.2, max(float(np.abs(e).max()) for e in eigenvalues) * 1.05)
    shade_bins(ax, rmax)
    cmap = plt.get_cmap("coolwarm")
    for l, ev in enumerate(eigenvalues):
        ax.scatter(ev.real, ev.imag, s=6, color=cmap(l / max(1, L - 1)), alpha=0.7, lw=0)
    ax.set_aspect("equal")
    ax.set_xlim(-rmax, rmax)
    ax.set_ylim(-rmax, rmax)
    ax.set_xlabel("Re $\\lambda$")
    ax.set_ylabel("Im $\\lambda$")
    ax.set_title(title or "whitened-DMD eigenvalues (blue: early, red: late)")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)


def plot_profile(prof, path=None, title: str | None = None, max_panels: int = 6):
    """Figure: all-layer eigenvalue scatter, a few per-layer panels, and metrics by depth."""
    L = len(prof.eigenvalues)
    panels = sorted(set(np.linspace(0, L - 1, min(L, max_panels)).round().astype(int).tolist()))
    ncols = 3
    nrows = 1 + math.ceil(len(panels) / ncols) + 1
    fig = plt.figure(figsize=(4.2 * ncols, 3.9 * nrows))
    gs = fig.add_gridspec(nrows, ncols)
    plot_eigenvalues(fig.add_subplot(gs[0, 0]), prof.eigenvalues)
    df = prof.layers
    ax = fig.add_subplot(gs[0, 1:])
    for col, lab in (("m_near_unit", "$M_{\\approx1}$"), ("m_expansive", "$M_{>1}$"),
                     ("m_contractive", "$M_{<1}$"), ("eta_nl", "$\\eta_{nl}$"), ("resdmd_kept", "ResDMD kept")):
        ax.plot(df["layer"], df[col], marker="o", label=lab)
    ax.set_xlabel("layer transition $\\ell \\to \\ell+1$")
    ax.set_ylabel("fraction / ratio")
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("spectral masses and reliability by depth")
    for i, l in enumerate(panels):
        a = fig.add_subplot(gs[1 + i // ncols, i % ncols])
        ev = prof.eigenvalues[l]
        rmax = max(1.2, float(np.abs(ev).max()) * 1.05)
        shade_bins(a, rmax)
        a.scatter(ev.real, ev.imag, s=6, color="k", lw=0)
        a.set_aspect("equal")
        a.set_xlim(-rmax, rmax)
        a.set_ylim(-rmax, rmax)
        row = df.iloc[l]
        a.set_title(f"layer {l}: M~1={row.m_near_unit:.2f} rho={row.rho:.2f} kappa={row.kappa:.3g}", fontsize=9)
    ax2 = fig.add_subplot(gs[nrows - 1, :])
    for col, lab in (("rho", "$\\rho$"), ("kappa", "$\\kappa(V)$"), ("kreiss", "Kreiss $K(A/\\max(\\rho,1))$")):
        if df[col].notna().any():
            ax2.plot(df["layer"], df[col], marker="s", label=lab)
    ax2.set_yscale("log")
    ax2.set_xlabel("layer transition")
    ax2.legend(fontsize=8)
    ax2.set_title("radius, non-normality and transient growth by depth")
    fig.suptitle(title or f"RKSP profile: {prof.meta.get('model', '')} "
                 f"(d={prof.meta.get('d')}, N={prof.meta.get('n_snapshots')}, score={prof.score:.3f})")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
