"""Cross-architecture comparison (paper Table 11, App. I Tables 16-18).

Transformer rows train on associative recall (seq 64, vocab 256, 4 pairs), the
MoE / Mamba / KAN rows on the synthetic LM with random-token next-token
prediction, as the paper states. :func:`architecture_configs` builds the runs
(for :func:`rksp.sweep.run`), :func:`cross_architecture_table` turns the sweep's
rows into the table: RKSP profile at init (eta_nl, M~1, rho, ResDMD reliability,
layer means), divergence rate and validation accuracy, with the paper's values
in ``paper_*`` columns beside ours.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# Table 11 (eta_nl, M~1, rho) and the App. I tables' reliability where given.
PAPER_TABLE11 = {
    "Transformer, Pre-LN": {"eta_nl": 0.52, "m_near_unit": 0.16, "rho": 2.29},
    "Transformer, No-Norm": {"eta_nl": 0.48, "m_near_unit": 0.79, "rho": 1.11},
    "MoE, top-2, 8 experts": {"eta_nl": 0.55, "m_near_unit": 0.58, "rho": 2.12},
    "Mamba (SSM)": {"eta_nl": 0.42, "m_near_unit": 0.12, "rho": 0.95},
    "KAN": {"eta_nl": 0.78, "m_near_unit": 0.52, "rho": 2.15, "resdmd_kept": 0.68},
}

ARCHITECTURES = {
    "Transformer, Pre-LN": {"task": "recall", "model": "gpt", "model_cfg": {"norm": "pre_ln"}},
    "Transformer, No-Norm": {"task": "recall", "model": "gpt", "model_cfg": {"norm": "none"}},
    "MoE, top-2, 8 experts": {"task": "synthetic_lm", "lm_mode": "random", "model": "moe",
                              "model_cfg": {"n_experts": 8, "top_k": 2}},
    "Mamba (SSM)": {"task": "synthetic_lm", "lm_mode": "random", "model": "mamba", "model_cfg": {}},
    "KAN": {"task": "synthetic_lm", "lm_mode": "random", "model": "kan", "model_cfg": {"spline_order": 4}},
}


def architecture_configs(sizes: dict, common: dict, seeds, *, names=None, lm_task: dict | None = None) -> list[dict]:
    """TrainConfig dicts for each architecture x seed.

    ``sizes``: model_cfg fields shared by all (e.g. ``{"d_model": 64, "n_layer": 4, "n_head": 4}``;
    ``n_head`` is dropped for Mamba); ``common``: TrainConfig fields (lr, steps, batch_size, ...);
    ``lm_task``: task fields for the synthetic-LM rows (seq_len, vocab_size, n_train, n_val).
    """
    out = []
    for name in names or ARCHITECTURES:
        spec = ARCHITECTURES[name]
        mc = {**sizes, **spec["model_cfg"]}
        if spec["model"] == "mamba":
            mc.pop("n_head", None)
        for seed in seeds:
            cfg = {**common, **{k: v for k, v in spec.items() if k != "model_cfg"}, "model_cfg": mc, "seed": seed}
            if spec["task"] == "synthetic_lm" and lm_task:
                cfg.update(lm_task)
            out.append(cfg)
    return out


def arch_label(row) -> str:
    """The Table 11 row name of a sweep row (model + norm)."""
    model = row.get("model")
    if model == "gpt":
        return {"pre_ln": "Transformer, Pre-LN", "none": "Transformer, No-Norm"}.get(
            row.get("norm"), f"Transformer, {row.get('norm')}")
    if model == "moe":
        return f"MoE, top-{int(row.get('top_k') or 2)}, {int(row.get('n_experts') or 8)} experts"
    if model == "mamba":
        return "Mamba (SSM)"
    if model == "kan":
        return "KAN"
    return str(model)


def cross_architecture_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture: n, RKSP metrics at init (means over runs of the layer means),
    divergence rate, accuracy of the runs that did not diverge, data used, and the paper's values."""
    ok = rows[rows["status"] == "ok"].copy()
    ok["architecture"] = [arch_label(r) for r in ok.to_dict("records")]
    col = {"eta_nl": "prof_eta_nl_mean", "m_near_unit": "prof_score", "rho": "prof_rho_mean",
           "kappa": "prof_kappa_mean", "resdmd_kept": "prof_resdmd_kept_mean"}
    out = []
    for name, g in ok.groupby("architecture", sort=False):
        conv = g[~g["diverged"].astype(bool)]
        r = {"architecture": name, "n": len(g), "data": "; ".join(sorted(set(g["data_name"].astype(str))))}
        for k, c in col.items():
            r[k] = float(pd.to_numeric(g[c], errors="coerce").mean()) if c in g else np.nan
        r["div_rate_pct"] = 100.0 * float(g["diverged"].astype(bool).mean())
        r["acc_pct"] = 100.0 * float(conv["val_acc"].mean()) if len(conv) else np.nan
        paper = PAPER_TABLE11.get(name, {})
        for k in ("eta_nl", "m_near_unit", "rho", "resdmd_kept"):
            r[f"paper_{k}"] = paper.get(k, np.nan)
        out.append(r)
    order = {n: i for i, n in enumerate(PAPER_TABLE11)}
    df = pd.DataFrame(out)
    if len(df):
        df = df.sort_values("architecture", key=lambda s: s.map(lambda v: order.get(v, 99))).reset_index(drop=True)
    return df
