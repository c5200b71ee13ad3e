"""The spectral profile S of a model (Algorithm 1) as tidy pandas tables."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from rksp import defaults
from rksp.checks import is_path
from rksp.errors import RKSPInputError
from rksp.core.metrics import METRIC_COLUMNS, layer_metrics
from rksp.core.snapshots import capture_hidden_eval

SUMMARY_METRICS = ("m_near_unit", "m_expansive", "m_contractive", "m_mid", "rho", "kappa",
                   "eta_nl", "kreiss", "resdmd_kept", "m_near_unit_kept")


@dataclass
class Profile:
    """RKSP profile: ``layers`` (one row per transition l -> l+1) and its ``summary``.

    ``summary`` holds ``<metric>_mean/_max/_min/_std`` over layers (Algorithm 1,
    line 11) and ``score`` = mean near-unit mass, the paper's risk score.
    """

    layers: pd.DataFrame
    eigenvalues: list[np.ndarray] = field(repr=False)
    meta: dict = field(default_factory=dict)

    @property
    def summary(self) -> dict:
        return summarize(self.layers)

    @property
    def score(self) -> float:
        return self.summary["score"]

    def to_dict(self) -> dict:
        layers = self.layers.replace({np.nan: None}).to_dict(orient="records")
        return {"layers": layers, "summary": _jsonable(self.summary), "meta": _jsonable(self.meta)}

    def to_json(self, path=None, **kw) -> str:
        text = json.dumps(self.to_dict(), indent=kw.pop("indent", 2), allow_nan=False, **kw)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    def divergence_risk(self, lr, model):
        """P(diverge) of training this model at learning rate ``lr``, from its init score (mean
        M≈1) through a :class:`rksp.core.risk.RiskModel` (``model``: the object, or a path to its
        JSON, e.g. ``results/<profile>/risk_model.json`` written by notebook 03).

        The number is only as good as the runs the risk model was fitted on: one task,
        model family and size, optimizer, schedule, training length and divergence label
        (``model.fitted_on`` says which). For another training regime or task it is an
        extrapolation, not a prediction. Raises FileNotFoundError if the JSON file is missing
        and RKSPInputError if it is malformed or this profile lacks a feature the model uses.
        """
        from rksp.core.risk import RiskModel
        if not isinstance(model, RiskModel):
            if not isinstance(model, (str, bytes)) and not hasattr(model, "__fspath__"):
                raise RKSPInputError(f"model must be a RiskModel or a path to its JSON, got {type(model).__name__}")
            model = RiskModel.from_json(model if not isinstance(model, bytes) else model.decode())
        return model.predict_summary(self.summary, lr)

    def plot(self, path=None, *, title: str | None = None, max_panels: int = 6, **kw):
        """The profile figure (eigenvalues, masses and radius by depth); returns it and, as
        :meth:`rksp.harness.tracking.Tracker.plot`, saves it to ``path`` when one is given."""
        if path is not None and not is_path(path):
            raise RKSPInputError(f"Profile.plot(path=None, ...): the first argument is the file to save the figure "
                                 f"to, got {path!r}; the profile figure has fixed panels (no metrics to choose)")
        if "metrics" in kw:
            raise RKSPInputError(f"Profile.plot draws fixed panels and takes no metrics, got metrics={kw['metrics']!r} "
                                 "(rksp.track(...).plot(metrics=[...]) chooses metrics over training)")
        from rksp.core.plotting import plot_profile
        return plot_profile(self, path=path, title=title, max_panels=max_panels, **kw)

    def __repr__(self) -> str:
        s = self.summary
        return (f"Profile(L={len(self.layers)}, d={self.meta.get('d')}, N={self.meta.get('n_snapshots')}, "
                f"score(M~1)={s['score']:.3f}, rho_max={s['rho_max']:.3f}, kappa_mean={s['kappa_mean']:.3g})")


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, float)):
            v = float(v)
            out[k] = v if math.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


def summarize(layers: pd.DataFrame) -> dict:
    """mean / max / min / std across layers of every metric, and ``score`` (mean M~1)."""
    out: dict = {}
    for col in SUMMARY_METRICS:
        if col not in layers:
            continue
        v = pd.to_numeric(layers[col], errors="coerce").replace([np.inf, -np.inf], np.nan)
        out[f"{col}_mean"] = float(v.mean())
        out[f"{col}_max"] = float(v.max())
        out[f"{col}_min"] = float(v.min())
        out[f"{col}_std"] = float(v.std(ddof=0))
    out["score"] = out.get("m_near_unit_mean", float("nan"))
    out["n_layers"] = int(len(layers))
    out["n_flagged"] = int((layers["flags"] != "").sum()) if "flags" in layers else 0
    return out


def _progress(iterable, total, enabled, desc):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


def _n_workers(workers, device, L: int) -> int:
    if torch.device(device).type != "cpu":
        return 1
    n = torch.get_num_threads() if workers is None else int(workers)
    return max(1, min(n, L))


def profile_hidden(hidden, *, eps: float = defaults.WHITEN_EPS, kreiss: bool = True,
                   tau: float = defaults.RESDMD_TAU, progress: bool | None = None,
                   device=None, meta: dict | None = None, workers: int | None = defaults.PROFILE_WORKERS) -> Profile:
    """Profile a stack of residual states ``hidden`` of shape ``(L+1, N, d)``.

    ``hidden`` may be a numpy array, a tensor or a list of ``(N, d)`` arrays
    (snapshots dumped from any framework). On CPU, ``workers`` layers are
    profiled at once, each single-threaded (default: ``torch.get_num_threads()``;
    1 = one layer at a time with the usual intra-op threads). Results do not
    depend on ``workers``.
    """
    if isinstance(hidden, (list, tuple)):
        hidden = [torch.as_tensor(np.asarray(h)) if not isinstance(h, torch.Tensor) else h for h in hidden]
        try:
            hidden = torch.stack(hidden)
        except RuntimeError as exc:
            raise RKSPInputError(f"hidden states have mismatched shapes: {exc}") from None
    elif isinstance(hidden, np.ndarray):
        hidden = torch.from_numpy(np.ascontiguousarray(hidden))
    if not isinstance(hidden, torch.Tensor):
        raise RKSPInputError(f"hidden must be an array of shape (L+1, N, d), got {type(hidden).__name__}")
    if hidden.is_complex() or not (hidden.is_floating_point() or hidden.dtype in (torch.int32, torch.int64)):
        raise RKSPInputError(f"hidden must be a real array, got dtype {hidden.dtype}")
    if hidden.ndim != 3:
        raise RKSPInputError(f"hidden must have shape (L+1, N, d), got {tuple(hidden.shape)}")
    n_states, N, d = hidden.shape
    if n_states < 2:
        raise RKSPInputError(f"need at least 2 residual states (L+1 >= 2), got {n_states}")
    if N < 2:
        raise RKSPInputError(f"need at least N = 2 snapshots per state, got N = {N}")
    hidden = hidden.to(dtype=torch.float64, device=device or hidden.device)
    if not torch.isfinite(hidden).all():
        bad = sorted({int(i) for i in torch.nonzero(~torch.isfinite(hidden))[:, 0].tolist()})
        raise RKSPInputError(f"snapshots contain NaN or Inf (states {bad[:5]})")
    L = n_states - 1
    if progress is None:
        progress = L * d * d > 12 * 256 * 256
    def one(l):
        m, dmd, _ = layer_metrics(hidden[l].T, hidden[l + 1].T, eps=eps, tau=tau, kreiss=kreiss)
        return {"layer": l, **m}, dmd.eigvals.cpu().numpy(), int(dmd.keep.sum())

    n_workers = _n_workers(workers, hidden.device, L)
    results: dict[int, tuple] = {}
    if n_workers <= 1:
        for l in _progress(range(L), L, progress, "RKSP layers"):
            results[l] = one(l)
    else:
        # layers run concurrently, each with single-threaded BLAS/LAPACK: the d x d eig / eigh /
        # inv of one layer barely use a second core, and multi-threaded LAPACK on a busy machine
        # spin-waits (10x slower measured); per-layer results do not depend on the schedule
        from concurrent.futures import ThreadPoolExecutor, as_completed
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            # OpenMP's thread count is per thread: set it in each worker too, or a worker thread
            # keeps the process default and its LAPACK calls run multi-threaded
            with ThreadPoolExecutor(n_workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                futs = {pool.submit(one, l): l for l in range(L)}
                for f in _progress(as_completed(futs), L, progress, "RKSP layers"):
                    results[futs[f]] = f.result()
        finally:
            torch.set_num_threads(prev)
    rows = [results[l][0] for l in range(L)]
    eigs = [results[l][1] for l in range(L)]
    cols = ["layer", *METRIC_COLUMNS, "update_norm", "d", "n", "flags"]
    layers = pd.DataFrame(rows)[cols]
    info = {"d": int(d), "n_snapshots": int(N), "n_layers": int(L), "eps": eps, "tau": tau,
            # fewest distinct token states at any depth, and the smallest covariance rank of X_l:
            # rank < d with n_distinct_states >= d means the states lie in a subspace
            "n_distinct_states": min(int(torch.unique(h, dim=0).shape[0]) for h in hidden),
            "cov_rank_min": min(results[l][2] for l in range(L))}
    info.update(meta or {})
    return Profile(layers=layers, eigenvalues=eigs, meta=info)


def profile(model: torch.nn.Module, inputs, n_snapshots: int | None = defaults.N_SNAPSHOTS, *,
            seed: int = defaults.SNAPSHOT_SEED, blocks=None, eps: float = defaults.WHITEN_EPS,
            kreiss: bool = True, tau: float = defaults.RESDMD_TAU, device=None,
            progress: bool | None = None, meta: dict | None = None,
            workers: int | None = defaults.PROFILE_WORKERS) -> Profile:
    """RKSP profile of ``model`` from one forward pass on ``inputs`` (Algorithm 1).

    ``inputs``: a tensor (``model(inputs)``), a tuple (``model(*inputs)``) or a
    dict of keyword arguments (``model(**inputs)``; an ``attention_mask`` in it
    drops padding tokens). ``n_snapshots`` token states are sampled with a
    generator seeded by ``seed``; ``blocks`` names the block list when it
    cannot be found automatically (:func:`rksp.core.snapshots.find_blocks`).
    Metrics are computed in float64 on ``device`` (default: where the states are).
    """
    hidden = capture_hidden_eval(model, inputs, n_snapshots, seed=seed, blocks=blocks, device=device)
    info = {"model": type(model).__name__, "seed": seed}
    info.update(meta or {})
    return profile_hidden(hidden, eps=eps, kreiss=kreiss, tau=tau, progress=progress, meta=info, workers=workers)
