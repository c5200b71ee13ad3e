"""The paper's reported numbers, transcribed from its tables (arXiv 2602.22988v1: Sec. 5 and Apps. F–I).

These values only ever fill the `paper` columns beside our measurements and the `paper` column of
the claims table; nothing in the package computes with them or tunes toward them. Div.% values
are k/24 in the paper unless the table says otherwise. Table 1 lives in the norm entries
(`rksp.models.norms`), Tables 3, 4, 6, 13, 14 in the method rows (`rksp.methods.rows`): one entry
each; TABLE1, METHOD_ROWS, OVERHEAD, MECHANISM and BEST_LR below are built from them. Tables 10,
11 and 15-18 are at the end of this module.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict

from rksp.methods.rows import ROWS
from rksp.models.norms import norm_ids, norm_spec

TABLE1_COLUMNS = ('n', 'div_pct', 'm_near_unit', 'm_expansive', 'rho', 'acc_pct')


class MissingPaperRow(KeyError):
    """A norm without a paper Table 1 row (KeyError, so `in` and `.get` work as for a dict)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ''


def _missing_row(norm: str) -> str:
    return (f"no paper Table 1 row for norm {norm!r}: the paper has none. Give its entry in rksp.models.norms "
            f"`paper=dict(n=..., div_pct=..., m_near_unit=..., m_expansive=..., rho=..., acc_pct=...)` or "
            f"`paper_row=` (the norm it is compared with), or read it with "
            f"rksp.experiments.paper.table1_row(norm, missing='nan') (paper columns NaN)")


class _Table1(dict):
    def __missing__(self, norm):
        raise MissingPaperRow(_missing_row(norm))


# Table 1: norm -> (n, Div.%, M≈1, M>1, rho, Acc.%), from the norm entries
TABLE1: Dict[str, Dict[str, float]] = _Table1((n, dict(norm_spec(n).paper)) for n in norm_ids() if norm_spec(n).paper)


def table1_row(norm: str, missing: str = 'raise') -> Dict[str, float]:
    """The Table 1 row a norm is compared with (its own, or its entry's `paper_row`), from the
    registry. A norm without one: `missing='raise'` raises MissingPaperRow saying what to add;
    'nan' warns and returns NaN for every column."""
    try:
        key = norm_spec(norm).compared_with()
    except ValueError:
        key = norm
    try:
        row = norm_spec(key).paper
    except ValueError:
        row = {}
    if row:
        return dict(row)
    if missing == 'nan':
        warnings.warn(_missing_row(norm) + '; its paper columns are NaN', stacklevel=2)
        return {c: math.nan for c in TABLE1_COLUMNS}
    raise MissingPaperRow(_missing_row(norm))


# Table 2: predictor -> (AUROC, CI low, CI high)
TABLE2 = {
    'M≈1 at init': (0.995, 0.986, 1.000),
    'M≈1 × log10 κ(V) at init': (0.873, 0.841, 0.905),
    'Spectral radius ρ at init': (0.845, 0.808, 0.882),
    'Eigenvector condition κ(V) at init': (0.687, 0.638, 0.736),
    'Initial gradient norm': (0.621, 0.568, 0.674),
    'Gradient norm at step 100': (0.685, 0.635, 0.735),
    'Gradient variance, steps 1–100': (0.702, 0.654, 0.750),
    'Loss spike count, steps 1–500': (0.758, 0.712, 0.804),
}



def _printed(key: str) -> Dict[str, Any]:
    return {r.display: r.paper[key] for r in ROWS.values() if key in r.paper}


# Tables 3, 4, 6, 13, 14 by display string (the `method` column), from rksp.methods.rows: Div.%, Acc.%, M≈1 (where given)
METHOD_ROWS: Dict[str, Dict[str, float]] = {
    r.display: {k: r.paper[k] for k in ('div_pct', 'acc_pct', 'm_near_unit') if k in r.paper}
    for r in ROWS.values() if 'div_pct' in r.paper}
# Table 3/4/13/14 overheads as printed (strings: '<1%', '~100%', ...)
OVERHEAD: Dict[str, str] = _printed('overhead')
# Table 6's "Mechanism" column and Table 14's "Best LR" column, as printed
MECHANISM: Dict[str, str] = _printed('mechanism')
BEST_LR: Dict[str, float] = _printed('best_lr')
# Table 6: correlation of ΔM≈1 with divergence reduction
TABLE6_CORRELATION = dict(r=-0.87, p_max=0.001)

# Table 5: norm -> (max LR without KSS, with KSS, increase %)
TABLE5 = {'pre_ln': (0.005, 0.008, 60.0), 'rmsnorm': (0.003, 0.005, 67.0), 'none': (0.002, 0.005, 150.0)}

# Table 7: synthetic LM, d=1024 L=24 (350M): method -> (div of 24, PPL); KSS overhead column
TABLE7 = {'Baseline': (6, 52.1), 'KSS': (3, 46.8)}
TABLE7_KSS_OVERHEAD = '11.8%'
# Table 8: (size, method) -> (div of 24, PPL, max LR)
TABLE8 = {
    ('Small d=256, L=6', 'Baseline'): (2, 58.4, 3e-4), ('Small d=256, L=6', 'KSS'): (0, 52.1, 5e-4),
    ('Medium d=512, L=12', 'Baseline'): (4, 42.3, 2e-4), ('Medium d=512, L=12', 'KSS'): (1, 38.5, 4e-4),
    ('Large d=768, L=12', 'Baseline'): (5, 48.7, 1.5e-4), ('Large d=768, L=12', 'KSS'): (2, 43.2, 3e-4),
}
# Table 9: (norm, method) -> (div of 24, Acc.%, M≈1)
TABLE9 = {
    ('pre_ln', 'Baseline'): (1, 72.3, 0.42), ('pre_ln', 'KSS'): (0, 75.8, 0.38),
    ('rmsnorm', 'Baseline'): (2, 70.1, 0.48), ('rmsnorm', 'KSS'): (0, 74.2, 0.41),
}
# App. H
ECE = 0.283


# ---- the paper's numbers (typed from the paper; never computed) -------------------------------
# Table 15 (App. G): GPT-2 layer groups, fixed short-prompt set, pretrained weights.
PAPER_TABLE15 = (
    dict(key="gpt2", group="Early", layers="0–3", rho=1.15, kappa=8.3, eta_nl=0.52, m_near_unit=0.68),
    dict(key="gpt2", group="Middle", layers="4–7", rho=1.23, kappa=10.1, eta_nl=0.61, m_near_unit=0.62),
    dict(key="gpt2", group="Late", layers="8–11", rho=1.31, kappa=11.2, eta_nl=0.71, m_near_unit=0.58),
    dict(key="gpt2-medium", group="Early", layers="0–7", rho=1.12, kappa=7.5, eta_nl=0.48, m_near_unit=0.72),
    dict(key="gpt2-medium", group="Middle", layers="8–15", rho=1.19, kappa=9.2, eta_nl=0.58, m_near_unit=0.65),
    dict(key="gpt2-medium", group="Late", layers="16–23", rho=1.27, kappa=10.8, eta_nl=0.68, m_near_unit=0.60),
)


# Table 10 (Sec. 5.6): LLaMA-2-7B layer groups (eta_nl given as mean +- std), pretrained weights.
PAPER_TABLE10 = (
    dict(key="llama-2-7b", group="Early", layers="0–10", eta_nl=0.45, eta_nl_std=0.05, m_near_unit=0.74,
         kappa=8.2, pattern="Lower eta_nl"),
    dict(key="llama-2-7b", group="Middle", layers="11–21", eta_nl=0.58, eta_nl_std=0.08, m_near_unit=0.68,
         kappa=9.5, pattern="Mid eta_nl"),
    dict(key="llama-2-7b", group="Late", layers="22–31", eta_nl=0.72, eta_nl_std=0.10, m_near_unit=0.61,
         kappa=10.8, pattern="Higher eta_nl"),
)



# Table 11 (eta_nl, M~1, rho) and the App. I tables' reliability where given.
PAPER_TABLE11 = {
    "Transformer, Pre-LN": {"eta_nl": 0.52, "m_near_unit": 0.16, "rho": 2.29},
    "Transformer, No-Norm": {"eta_nl": 0.48, "m_near_unit": 0.79, "rho": 1.11},
    "MoE, top-2, 8 experts": {"eta_nl": 0.55, "m_near_unit": 0.58, "rho": 2.12},
    "Mamba (SSM)": {"eta_nl": 0.42, "m_near_unit": 0.12, "rho": 0.95},
    "KAN": {"eta_nl": 0.78, "m_near_unit": 0.52, "rho": 2.15, "resdmd_kept": 0.68},
}


# ----------------------------------------------------------------------------------------------
# App. I, Tables 16-18 (MoE, Mamba, KAN), on the synthetic LM with random-token next-token prediction
# ----------------------------------------------------------------------------------------------
# THE PAPER'S NUMBERS (METHOD.md §9, Tables 16-18; typed from the paper, never computed). 24 trials
# per row; ``div`` is "Div. of 24", ``resdmd_kept`` the "DMD reliability" percentage as a fraction.
PAPER_TABLE16 = {   # MoE: d=256, L=6, load-balancing loss lambda=0.01
    "MoE-Small, 8 experts, k=1": {"m_near_unit": 0.72, "rho": 2.85, "eta_nl": 0.68, "div": 6, "n": 24, "acc_pct": 32.4},
    "MoE-Small, 8 experts, k=2": {"m_near_unit": 0.58, "rho": 2.12, "eta_nl": 0.55, "div": 2, "n": 24, "acc_pct": 41.7},
    "MoE-Small, 8 experts, k=4": {"m_near_unit": 0.45, "rho": 1.78, "eta_nl": 0.48, "div": 1, "n": 24, "acc_pct": 38.2},
    "MoE-Medium, 16 experts, k=2": {"m_near_unit": 0.65, "rho": 2.45, "eta_nl": 0.61, "div": 4, "n": 24,
                                    "acc_pct": 38.9},
    "MoE-Medium, 16 experts + KSS, k=2": {"m_near_unit": 0.48, "rho": 1.92, "eta_nl": 0.58, "div": 1, "n": 24,
                                          "acc_pct": 44.5},
}


PAPER_TABLE17 = {   # Mamba, L=6
    "Mamba-Small": {"d_model": 256, "m_near_unit": 0.12, "m_contractive": 0.85, "rho": 0.95, "div": 0, "n": 24,
                    "acc_pct": 48.2},
    "Mamba-Medium": {"d_model": 512, "m_near_unit": 0.15, "m_contractive": 0.82, "rho": 0.97, "div": 0, "n": 24,
                     "acc_pct": 52.6},
    "Transformer, Pre-LN, comparable": {"m_near_unit": 0.42, "m_contractive": 0.38, "rho": 1.85, "div": 1, "n": 24,
                                        "acc_pct": 45.8},
}


PAPER_TABLE18 = {   # KAN transformer: d=256, L=6, B = B-spline order
    "KAN-Transformer B=4": {"eta_nl": 0.78, "m_near_unit": 0.52, "rho": 2.15, "div": 3, "n": 24, "resdmd_kept": 0.68},
    "KAN-Transformer B=8": {"eta_nl": 0.82, "m_near_unit": 0.48, "rho": 2.35, "div": 4, "n": 24, "resdmd_kept": 0.52},
    "KAN-Transformer + KSS": {"eta_nl": 0.75, "m_near_unit": 0.42, "rho": 1.92, "div": 1, "n": 24, "resdmd_kept": 0.78},
}


PAPER_APPENDIX = {"table16": PAPER_TABLE16, "table17": PAPER_TABLE17, "table18": PAPER_TABLE18}


# numbers quoted in the paper's text (App. I)
PAPER_TEXT = {
    "moe_kss_div_reduction": 4.0,             # "MoE + KSS: 4x divergence reduction" (4/24 -> 1/24)
    "kan_kss_div_reduction": (3.0, 4.0),      # "KAN + KSS: 3-4x divergence reduction" (3/24 -> 1/24)
    "moe_eta_excess_over_dense": (0.15, 0.20),  # "MoE has eta_nl 15-20% higher than dense"
}
