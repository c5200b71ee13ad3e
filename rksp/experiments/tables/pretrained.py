"""Tables 10, 12, 15 and their claims from profiles of pretrained models."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rksp import defaults
from rksp.core.profiling import Profile
from rksp.errors import RKSPInputError
from rksp.experiments.claims import Claim, points_information
from rksp.experiments.paper import PAPER_TABLE10, PAPER_TABLE15
from rksp.experiments.stats import pearson
from rksp.pretrained.inputs import TEXT_OPTIONS
from rksp.pretrained.loading import PRETRAINED_MODELS, WEIGHTS_PRETRAINED, get_spec, is_pretrained, load_pretrained
from rksp.pretrained.profiles import TABLE_METRICS, layer_groups, profile_pretrained, summary_table


def _paper_lookup(paper_rows) -> dict:
    return {(r["key"], r["group"]): r for r in paper_rows or ()}


def group_table(profiles, metrics=TABLE_METRICS, paper_rows=None, n_groups: int = 3,
                wide: bool = False) -> pd.DataFrame:
    """Tidy depth-group table of our profiles with the paper's value beside ours.

    Long layout (default): one row per (model, weights, input, group, metric)
    with ``ours``, ``ours_std``, ``paper``, ``paper_std``. The paper's number is
    filled only where the paper has that row: the same model, **pretrained**
    weights (the paper profiled no random-init or quantized models), all of its
    layers, and the same layer range; ``note`` says why otherwise. ``wide=True``
    pivots to one row per group with ``<metric>``, ``<metric>_std`` and
    ``<metric>_paper`` columns.
    """
    lookup = _paper_lookup(paper_rows)
    long_rows, wide_rows = [], []
    for prof in profiles:
        meta = prof.meta
        key, weights = meta.get("key"), meta.get("weights", "unlabelled")
        spec = get_spec(key) if key else None
        L = len(prof.layers)
        groups = layer_groups(prof.layers, min(n_groups, L), metrics)
        complete = spec is None or L == spec.n_layers
        for _, g in groups.iterrows():
            prow = lookup.get((key, g["group"]))
            note = ""
            if prow is not None:
                if weights != WEIGHTS_PRETRAINED:
                    note, prow = f"{weights} weights: the paper's value is for the pretrained model", None
                elif not complete:
                    note, prow = f"only {L} of {spec.n_layers} layers profiled", None
                elif prow["layers"] != g["layers"]:
                    note, prow = f"paper groups layers {prow['layers']}", None
            prow = prow or {}
            base = {"model": meta.get("model", key), "key": key, "weights": weights, "text": meta.get("text"),
                    "group": g["group"], "layers": g["layers"], "label": g["label"]}
            info = {"n_params": meta.get("n_params"), "d": meta.get("d"), "n_snapshots": meta.get("n_snapshots"),
                    "n_distinct_states": meta.get("n_distinct_states"), "well_posed": meta.get("well_posed"),
                    "note": note}
            wide_row = dict(base)
            for m in metrics:
                ours, ours_std = g[f"{m}_mean"], g[f"{m}_std"]
                paper, paper_std = prow.get(m, np.nan), prow.get(f"{m}_std", np.nan)
                long_rows.append({**base, "metric": m, "ours": ours, "ours_std": ours_std, "paper": paper,
                                  "paper_std": paper_std, **info})
                wide_row.update({m: ours, f"{m}_std": ours_std, f"{m}_paper": paper})
                if m in ("eta_nl",) and not np.isnan(paper_std):
                    wide_row[f"{m}_std_paper"] = paper_std
            wide_rows.append({**wide_row, **info})
    return pd.DataFrame(wide_rows if wide else long_rows)


def table15(profiles, metrics=("rho", "kappa", "eta_nl", "m_near_unit"), **kw) -> pd.DataFrame:
    """Table 15 (GPT-2 layer groups) layout for any profiled models, with :data:`PAPER_TABLE15` beside ours."""
    return group_table(profiles, metrics=metrics, paper_rows=PAPER_TABLE15, **kw)


def table10(profiles, metrics=("eta_nl", "m_near_unit", "kappa"), **kw) -> pd.DataFrame:
    """Table 10 (LLaMA-2-7B layer groups) layout, with :data:`PAPER_TABLE10` beside ours."""
    return group_table(profiles, metrics=metrics, paper_rows=PAPER_TABLE10, **kw)


def depth_table(profiles, metrics=("eta_nl", "m_near_unit")) -> pd.DataFrame:
    """Per-layer metrics against relative depth (Fig. 4), tidy: one row per (model, weights, input, layer)."""
    out = []
    for prof in profiles:
        L = len(prof.layers)
        for _, r in prof.layers.iterrows():
            out.append({"model": prof.meta.get("model"), "weights": prof.meta.get("weights"),
                        "text": prof.meta.get("text"), "layer": int(r["layer"]),
                        "depth": (int(r["layer"]) + 0.5) / L, **{m: r[m] for m in metrics}})
    return pd.DataFrame(out)


def evidence_gate(weights) -> str:
    """The rule for claims about *pretrained* models: evidence from weights that are not pretrained
    (``random-init``) is stand-in evidence (the claim is inconclusive whatever the numbers say);
    '' for pretrained weights."""
    if is_pretrained(weights):
        return ""
    return f"{weights} weights cannot test a claim about pretrained models"


def depth_contrast(prof, metric: str, n_groups: int = 3, alpha: float = 0.05) -> dict:
    """Late - Early layer-group difference of ``metric`` (Tables 10 / 15: thirds of the layers) with a
    Welch t CI and p over the per-layer values of the two groups. ``dict(delta, lo, hi, p, early,
    late, n_early, n_late)``; NaN CI / p when a group has < 2 finite layers."""
    from scipy import stats as _st
    df = prof.layers if isinstance(prof, Profile) else prof
    df = df.sort_values("layer") if "layer" in df else df.reset_index(drop=True)
    parts = np.array_split(np.arange(len(df)), min(n_groups, len(df)))
    vals = [pd.to_numeric(df[metric].iloc[p], errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
            .to_numpy(float) for p in (parts[0], parts[-1])]
    e, l = vals
    out = dict(delta=float("nan"), lo=float("nan"), hi=float("nan"), p=float("nan"),
               early=float(e.mean()) if e.size else float("nan"), late=float(l.mean()) if l.size else float("nan"),
               n_early=int(e.size), n_late=int(l.size))
    if e.size and l.size:
        out["delta"] = out["late"] - out["early"]
    if e.size >= 2 and l.size >= 2:
        ve, vl = e.var(ddof=1) / e.size, l.var(ddof=1) / l.size
        se = math.sqrt(ve + vl)
        if se > 0:
            df_w = (ve + vl) ** 2 / (ve ** 2 / (e.size - 1) + vl ** 2 / (l.size - 1))
            half = float(_st.t.ppf(1 - alpha / 2, df_w)) * se
            out.update(lo=out["delta"] - half, hi=out["delta"] + half,
                       p=float(2 * _st.t.sf(abs(out["delta"]) / se, df_w)))
    return out

# paper's Late - Early differences per model (Table 15 GPT-2 124M / 355M, Table 10 LLaMA-2-7B)
def _paper_depth_delta(key, metric):
    rows = [r for r in PAPER_TABLE15 + PAPER_TABLE10 if r["key"] == key]
    if rows:
        g = {r["group"]: r[metric] for r in rows}
        return round(g["Late"] - g["Early"], 4)
    deltas = [_paper_depth_delta(k, metric) for k in ("gpt2", "gpt2-medium", "llama-2-7b")]
    return (min(deltas), max(deltas))


def pretrained_claims(profiles) -> list:
    """The checkable claims of App. G / Sec. 5.6 from our profiles, verdicts by rule.

    * ``depth-<metric>`` (one per profile): eta_nl rises / M~1 falls from the Early to the Late
      third of the layers (Tables 10, 15): :func:`depth_contrast`, an effect claim (Welch CI / p).
    * ``value-<metric>-<group>`` for models the paper tabulates (GPT-2 124M / 355M, LLaMA-2-7B; the
      fixed-prompt input when profiled, else prose): our group mean vs the paper's, a value claim
      (no CI).
    * ``scale-<metric>`` (one per weights kind and input): Fig. 3, M~1 falls / eta_nl rises with
      log10(parameters): the :func:`scale_trend` slope with the Pearson p (needs >= 3 model sizes).

    Every claim passes :func:`evidence_gate`: measured on random-init weights it is stand-in evidence;
    its notes say which weights (and which model / input) it used.
    """
    claims = []
    words = {"eta_nl": ("η_nl", "rises", 1), "m_near_unit": ("M≈1", "falls", -1)}
    for prof in profiles:
        m = prof.meta
        key, weights, text, model = m.get("key"), m.get("weights", "unlabelled"), m.get("text"), m.get("model", "?")
        tag = f"{key}-{text}-{'pre' if is_pretrained(weights) else 'rand'}"
        for metric, (sym, verb, sign) in words.items():
            c = depth_contrast(prof, metric)
            claims.append(Claim.direction(
                f"depth-{metric}-{tag}", f"{sym} {verb} with depth, Late − Early third (Tables 10/15): {model}",
                _paper_depth_delta(key, metric), c["delta"], (c["lo"], c["hi"]), expected_sign=sign, p=c["p"],
                p_method="Welch t over layers", stand_in=evidence_gate(weights),
                notes=f"weights: {weights}; input: {text}; Early {c['early']:.3g} ({c['n_early']} layers), "
                      f"Late {c['late']:.3g} ({c['n_late']} layers); paper value = its Late − Early "
                      f"{'for this model' if key in ('gpt2', 'gpt2-medium', 'llama-2-7b') else 'range over GPT-2 124M/355M, LLaMA-2-7B'}"))
    # Table 15 / 10 values, for the models the paper tabulates (prefer the paper's fixed-prompt input)
    by_key = {}
    for prof in profiles:
        k = prof.meta.get("key")
        if any(r["key"] == k for r in PAPER_TABLE15 + PAPER_TABLE10):
            if k not in by_key or prof.meta.get("text") == "prompts":
                by_key[k] = prof
    for k, prof in by_key.items():
        table = "Table 15" if any(r["key"] == k for r in PAPER_TABLE15) else "Table 10"
        paper = {r["group"]: r for r in PAPER_TABLE15 + PAPER_TABLE10 if r["key"] == k}
        spec, weights, text = get_spec(k), prof.meta.get("weights", "unlabelled"), prof.meta.get("text")
        groups = layer_groups(prof.layers, 3, ("eta_nl", "m_near_unit")).set_index("group")
        complete = spec is None or len(prof.layers) == spec.n_layers
        for g, pr in paper.items():
            for metric in ("eta_nl", "m_near_unit"):
                ours = float(groups.loc[g, f"{metric}_mean"]) if (complete and g in groups.index) else float("nan")
                claims.append(Claim.interval(
                    f"value-{metric}-{g.lower()}-{k}", f"{table} {prof.meta.get('model')} {g} {pr['layers']}: "
                    f"{words[metric][0]}", pr[metric], ours, None, stand_in=evidence_gate(weights),
                    notes=f"weights: {weights}; input: {text}; our {g} layers "
                          f"{groups.loc[g, 'layers'] if g in groups.index else '?'}"
                          + ("" if complete else f"; only {len(prof.layers)} of {spec.n_layers} layers profiled")))
    # Fig. 3 scale trend, per weights kind and input
    rows = summary_table(profiles)
    if len(rows):
        rows["weights_kind"] = [WEIGHTS_PRETRAINED if is_pretrained(w) else str(w) for w in rows["weights"]]
        for (kind, text), sub in rows.groupby(["weights_kind", "text"], sort=False):
            for metric, sign in (("m_near_unit", -1), ("eta_nl", 1)):
                x = np.log10(pd.to_numeric(sub["n_params"], errors="coerce").to_numpy(float))
                y = pd.to_numeric(sub[metric], errors="coerce").to_numpy(float)
                ok = np.isfinite(x) & np.isfinite(y)
                slope = float(np.polyfit(x[ok], y[ok], 1)[0]) if np.unique(x[ok]).size >= 2 else float("nan")
                pr = pearson(x, y)
                claims.append(Claim.direction(
                    f"scale-{metric}-{text}-{'pre' if kind == WEIGHTS_PRETRAINED else 'rand'}",
                    f"Fig. 3: {words[metric][0]} {'decreases' if sign < 0 else 'increases'} with scale "
                    f"(slope per decade of parameters)", None, slope, None, expected_sign=sign, p=pr["p"],
                    p_method="Pearson t", information=points_information(int(ok.sum()), what="model sizes"),
                    stand_in=evidence_gate(", ".join(dict.fromkeys(sub["weights"].astype(str)))),
                    notes=f"weights: {kind}; input: {text}; models: {', '.join(sub['model'].astype(str))} "
                          f"({int(ok.sum())} point(s); Pearson p needs >= 3){'; ' + pr['note'] if pr['note'] else ''}"))
    return claims


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main(argv=None) -> int:
    """`rksp pretrained MODEL ... [--text prompts pydoc] [--out DIR]`: profile pretrained LMs, print the group tables."""
    p = argparse.ArgumentParser(prog="rksp pretrained",
                                description="Profile pretrained LMs (App. D.3 / G) and print the group tables.")
    p.add_argument("models", nargs="+", help=f"registry keys: {', '.join(PRETRAINED_MODELS)}")
    p.add_argument("--text", nargs="+", choices=TEXT_OPTIONS, default=["prompts"])
    p.add_argument("--random-init", action="store_true")
    p.add_argument("-N", "--n-snapshots", type=int, default=defaults.N_SNAPSHOTS)
    p.add_argument("--no-kreiss", action="store_true")
    p.add_argument("--max-layers", type=int, default=None)
    p.add_argument("--out", default=None, help="write <out>/pretrained_groups.csv and pretrained_summary.csv")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="weights dtype (default float32; bfloat16 for llama-2-7b on a GPU)")
    p.add_argument("--device-map", default=None, help="transformers device_map, e.g. 'auto' to spread 7B over GPUs")
    p.add_argument("--local-path", default=None, help="load the weights from this directory instead of the hub")
    args = p.parse_args(argv)
    profs = []
    try:
        for key in args.models:
            loaded = load_pretrained(key, random_init=args.random_init,
                                     dtype=DTYPES[args.dtype] if args.dtype else None,
                                     device_map=args.device_map, local_path=args.local_path)
            for text in args.text:
                prof = profile_pretrained(loaded, args.n_snapshots, text=text, kreiss=not args.no_kreiss,
                                          max_layers=args.max_layers, progress=False)
                print(f"{prof.meta['model']} [{prof.meta['weights']}] on {prof.meta['input']}: "
                      f"N={prof.meta['n_snapshots']}, distinct={prof.meta['n_distinct_states']}, d={prof.meta['d']}, "
                      f"{prof.meta['seconds']:.1f} s", flush=True)
                profs.append(prof)
    except RKSPInputError as exc:
        print(f"rksp pretrained: error: {exc}", file=sys.stderr)
        return 2
    groups = group_table(profs, wide=True)
    summ = summary_table(profs)
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(groups.drop(columns=["key", "note"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(summ.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        groups.to_csv(Path(args.out) / "pretrained_groups.csv", index=False)
        summ.to_csv(Path(args.out) / "pretrained_summary.csv", index=False)
    return 0


def depth_figure(depth: pd.DataFrame):
    """Fig. 4: η_nl and M≈1 against relative depth, one line per model, weights and text (`depth_table`)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (model, weights, text), g in depth.groupby(["model", "weights", "text"]):
        for ax, m in zip(axes, ("eta_nl", "m_near_unit")):
            ax.plot(g["depth"], g[m], marker="o", ms=3, label=f"{model} [{weights}] {text}")
    axes[0].set_ylabel("$\\eta_{nl}$"); axes[1].set_ylabel("$M_{\\approx 1}$")
    for ax in axes:
        ax.set_xlabel("relative depth")
    axes[1].legend(fontsize=7)
    fig.suptitle("Fig. 4: layer-wise linear-fit error and near-unit mass against depth")
    return fig


def scale_figure(summary: pd.DataFrame):
    """Fig. 3: mean M≈1 and η_nl against the parameter count, per weights and text."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, m in zip(axes, ("m_near_unit", "eta_nl")):
        for (w, text), g in summary.groupby(["weights", "text"]):
            ax.scatter(g["n_params"], g[f"{m}_mean"] if f"{m}_mean" in g else g[m], label=f"{w}, {text}")
        ax.set_xscale("log"); ax.set_xlabel("parameters"); ax.set_title(m)
    axes[0].legend(fontsize=7)
    fig.suptitle("Fig. 3: spectral properties against scale (log-linear fits in fig3_scale_trend)")
    return fig
