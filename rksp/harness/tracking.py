"""RKSP over training: profile a model every k steps on one fixed held-out batch, optionally
add the KSS term to the loss, and collect everything as a long table (step x layer x metric).

Plain PyTorch loop (three lines)::

    tracker = rksp.track(model, held_out_batch, every=50, kss=rksp.KSSConfig())  # before the loop
    loss = loss + tracker.step(step)         # in the loop, after the forward pass, before backward()
    tracker.frame(); tracker.plot("track.png")   # after: long DataFrame and the per-layer figure (saved)

``tracker.step(step)`` returns the KSS term for that step (a zero tensor off-schedule or without
``kss``) computed from the residual states of the forward pass just run (recorded by hooks that
``track`` installs on the residual blocks, only on KSS application steps), and profiles the model
on ``held_out_batch`` when ``step % every == 0``. Profiling runs under ``no_grad`` in eval mode
(the training mode is restored), never records for KSS, and does not touch the global RNG.
``tracker.close()`` removes the hooks (also on ``with rksp.track(...) as tracker:`` exit).

Hugging Face ``Trainer``: :class:`rksp.harness.integrations.RKSPCallback` wraps a :class:`Tracker`.
The training harness (:func:`rksp.harness.loop.train`): :class:`TrackHooks`; `rksp.experiments.runs.track_runs`
for the notebook-04 comparison of one No-Norm run with and without KSS.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from rksp import defaults
from rksp.checks import is_path
from rksp.errors import RKSPInputError
from rksp.core.kss import KSS, KSSConfig
from rksp.core.profiling import Profile, profile as rksp_profile
from rksp.core.snapshots import find_blocks, residual_states
from rksp.harness.hooks import TrainHooks
from rksp.harness.build import load_task_data

__all__ = ["Tracker", "track", "long_frame", "plot_track", "TrackHooks"]

PLOT_METRICS = ("m_near_unit", "m_expansive", "rho")
METRIC_LABELS = {"m_near_unit": "M≈1 (near-unit mass)", "m_expansive": "M>1 (expansive mass)",
                 "rho": "ρ (spectral radius)"}


def long_frame(records: Iterable[tuple[int, Profile]], **labels) -> pd.DataFrame:
    """``[(step, Profile), ...]`` -> long DataFrame: ``step, layer, metric, value`` (+ ``labels``).

    Every numeric per-layer column of the profiles becomes one ``metric``; the summary
    (``score``, ``rho_max``, ...) is under ``layer = -1``.
    """
    parts = []
    for step, prof in records:
        lay = prof.layers.drop(columns=[c for c in ("flags", "d", "n") if c in prof.layers])
        m = lay.melt(id_vars="layer", var_name="metric", value_name="value")
        summ = {k: v for k, v in prof.summary.items() if isinstance(v, (int, float)) and k != "n_layers"}
        s = pd.DataFrame({"layer": -1, "metric": list(summ), "value": list(summ.values())})
        parts.append(pd.concat([m, s], ignore_index=True).assign(step=int(step)))
    cols = ["step", "layer", "metric", "value"]
    if not parts:
        df = pd.DataFrame(columns=cols)
    else:
        df = pd.concat(parts, ignore_index=True)[cols]
        df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    for k, v in labels.items():
        df.insert(0, k, v)
    return df


def plot_track(df: pd.DataFrame, metrics: Sequence[str] = PLOT_METRICS, *, by: str | None = None, path=None,
               title: str | None = None):
    """Per-layer curves of ``metrics`` (default M≈1, M>1, ρ) against step, one panel per metric
    (like the paper's Fig. 2, for single runs). ``by``: a label column (e.g. ``"run"``) drawn
    as line styles, layers as colours. Returns the matplotlib figure (saved to ``path`` if given).
    ``metrics`` must be a list of metric names the frame holds per layer (RKSPInputError otherwise)."""
    import matplotlib
    import matplotlib.pyplot as plt
    if (not isinstance(metrics, (list, tuple)) or not metrics
            or not all(isinstance(m, str) for m in metrics)):
        raise RKSPInputError(f"metrics must be a non-empty list of metric names (e.g. {list(PLOT_METRICS)}), "
                             f"got {metrics!r}")
    if path is not None and not is_path(path):
        raise RKSPInputError(f"path must be a file name (str or os.PathLike) to save the figure to, got {path!r}")
    if df.empty:
        raise RKSPInputError("nothing tracked yet: no profile was recorded")
    d = df[df["layer"] >= 0]
    known = set(d["metric"])
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise RKSPInputError(f"unknown metric(s) {unknown}; the tracked per-layer metrics are {sorted(known)}")
    groups = [(None, d)] if by is None else list(d.groupby(by, sort=False))
    layers = sorted(d["layer"].unique())
    cmap = matplotlib.colormaps["viridis"]
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, met in zip(axes[0], metrics):
        for gi, (gname, g) in enumerate(groups):
            gm = g[g["metric"] == met]
            for li, layer in enumerate(layers):
                s = gm[gm["layer"] == layer].sort_values("step")
                if s.empty:
                    continue
                lab = (f"layer {layer}" if gi == 0 else None) if by is None or gi == 0 else None
                ax.plot(s["step"], s["value"], styles[gi % 4], marker=".", ms=3,
                        color=cmap(li / max(1, len(layers) - 1)), label=lab)
        if met == "rho":
            ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("step")
        ax.set_title(METRIC_LABELS.get(met, met))
    handles, labels_ = axes[0][0].get_legend_handles_labels()
    if by is not None:
        from matplotlib.lines import Line2D
        handles += [Line2D([], [], color="k", ls=styles[i % 4]) for i in range(len(groups))]
        labels_ += [str(n) for n, _ in groups]
    fig.legend(handles, labels_, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.88, 0.95 if title else 1))
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


class Tracker:
    """Profiles ``model`` on ``batch`` every ``every`` steps; optional KSS term (see module docstring).

    Attributes: ``records`` (list of ``(step, Profile)``), ``kss`` (the :class:`rksp.KSS` or None),
    ``kss_log`` (one dict per KSS application: ``step``, ``kss_loss``), ``seconds`` (time spent
    profiling).
    """

    def __init__(self, model: nn.Module, batch, *, every: int = defaults.TRACK_EVERY,
                 n_snapshots: int | None = defaults.N_SNAPSHOTS, kreiss: bool = defaults.TRACK_KREISS,
                 kss: KSSConfig | KSS | None = None, seed: int = defaults.SNAPSHOT_SEED, blocks=None,
                 workers: int | None = defaults.PROFILE_WORKERS):
        if not isinstance(model, nn.Module):
            raise RKSPInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise RKSPInputError(f"every must be an integer >= 1, got {every!r}")
        self.model, self.batch, self.every = model, batch, every
        self.n_snapshots, self.kreiss, self.seed, self.blocks, self.workers = n_snapshots, kreiss, seed, blocks, workers
        find_blocks(model, blocks)                       # fail now, not at step 0
        if kss is None or isinstance(kss, KSS):
            self.kss = kss
        elif isinstance(kss, KSSConfig):
            self.kss = KSS(kss)
        else:
            raise RKSPInputError(f"kss must be a KSSConfig, a KSS or None, got {type(kss).__name__}")
        self.records: list[tuple[int, Profile]] = []
        self.kss_log: list[dict[str, Any]] = []
        self.seconds = 0.0
        self._next_step: int | None = None              # step of the next training forward pass
        self._profiling = False
        self._stack = contextlib.ExitStack()
        self._hs: list[torch.Tensor] | None = None
        if self.kss is not None:
            self._hs = self._stack.enter_context(residual_states(model, blocks, enabled=self._armed))

    # -- KSS -----------------------------------------------------------------------------------
    def _armed(self) -> bool:
        if self._profiling or not torch.is_grad_enabled() or not self.model.training:
            return False
        return self._next_step is None or self.kss.wants(self._next_step)

    def expect(self, step: int) -> None:
        """Declare the step of the next forward pass (``step`` does this for ``step + 1``)."""
        self._next_step = int(step)

    def kss_loss(self, step: int, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The KSS term of ``step`` from the last recorded forward pass (zero off-schedule / without KSS)."""
        if self.kss is None:
            return torch.zeros(())
        states = list(self._hs)
        self._hs.clear()                                   # do not keep the graph alive
        if not self.kss.wants(step):
            dev = states[0].device if states else None
            return torch.zeros((), device=dev)
        L = len(find_blocks(self.model, self.blocks))
        if len(states) != L + 1:
            raise RKSPInputError(f"KSS step {step}: no complete residual stream was recorded ({len(states)} of "
                                 f"{L + 1} states); call tracker.step(step) after the forward pass of that step, "
                                 "in training mode")
        term = self.kss(states, int(step), mask=mask)
        self.kss_log.append({"step": int(step), "kss_loss": float(term.detach())})
        return term

    # -- profiling -----------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        return int(step) % self.every == 0

    def profile_now(self, step: int) -> Profile:
        """Profile the model on the held-out batch now and record it under ``step``."""
        t0 = time.perf_counter()
        was = self.model.training
        self._profiling = True
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                prof = rksp_profile(self.model, self.batch, n_snapshots=self.n_snapshots, seed=self.seed,
                                    blocks=self.blocks, kreiss=self.kreiss, progress=False, workers=self.workers)
        finally:
            self._profiling = False
            self.model.train(was)
        prof.meta["step"] = int(step)
        prof.meta["seconds"] = time.perf_counter() - t0
        self.records.append((int(step), prof))
        self.seconds += prof.meta["seconds"]
        return prof

    def step(self, step: int, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        """After the forward pass of ``step``: its KSS term (add it to the loss), and a profile if due."""
        term = self.kss_loss(step, mask=mask)
        self._next_step = int(step) + 1
        if self.due(step):
            self.profile_now(step)
        return term

    def summary(self, step: int | None = None, prefix: str = "rksp/") -> dict[str, float]:
        """Scalar summary of the latest (or ``step``'s) profile, keys prefixed (for loggers)."""
        if not self.records:
            return {}
        prof = dict(self.records)[step] if step is not None else self.records[-1][1]
        s = prof.summary
        keys = ("score", "rho_max", "m_expansive_mean", "m_near_unit_mean", "kappa_mean", "eta_nl_mean",
                "resdmd_kept_mean", "n_flagged")
        if self.kreiss:
            keys += ("kreiss_mean",)
        out = {}
        for k in keys:
            v = float(s[k])
            out[prefix + k] = v if math.isfinite(v) else float("nan")
        return out

    # -- results -------------------------------------------------------------------------------
    def frame(self, **labels) -> pd.DataFrame:
        """Long DataFrame ``step, layer, metric, value`` of every recorded profile (:func:`long_frame`)."""
        return long_frame(self.records, **labels)

    def plot(self, path=None, metrics: Sequence[str] = PLOT_METRICS, **kw):
        """Per-layer ``metrics`` against step (:func:`plot_track`); returns the figure and, as
        :meth:`rksp.Profile.plot`, saves it to ``path`` when one is given (the first positional argument)."""
        if path is not None and not is_path(path):
            raise RKSPInputError(f"Tracker.plot(path=None, metrics=...): the first argument is the file to save "
                                 f"the figure to, got {path!r}; choose the metrics with metrics=[...]")
        return plot_track(self.frame(), metrics, path=path, **kw)

    def close(self) -> None:
        """Remove the KSS hooks (the records stay)."""
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self) -> str:
        return (f"Tracker(every={self.every}, profiles={len(self.records)}, kss={'on' if self.kss else 'off'}, "
                f"kreiss={self.kreiss})")


def track(model: nn.Module, batch, every: int = defaults.TRACK_EVERY, *, kss: KSSConfig | KSS | None = None,
          **kw) -> Tracker:
    """A :class:`Tracker` for ``model``: profile on ``batch`` every ``every`` steps, optional KSS term.

    ``batch``: what ``model`` is called with (a tensor, tuple, or dict of keyword arguments; an
    ``attention_mask`` drops padding). Keyword arguments: ``n_snapshots``, ``kreiss`` (default
    off: it is the costliest stage), ``seed``, ``blocks``, ``workers``.
    """
    return Tracker(model, batch, every=every, kss=kss, **kw)


# ------------------------------------------------------------------------------------ harness

class TrackHooks(TrainHooks):
    """:func:`rksp.harness.loop.train` hook that profiles at step 0 and after every ``every`` completed
    steps on a fixed batch of the task's validation inputs (the first ``batch_size`` rows) and
    keeps the :class:`Tracker` in ``self.tracker``. KSS itself comes from the run's own config
    (``hooks: [kss]``). Tracking stops quietly once the states turn non-finite (a diverged run)."""

    name = "track"

    def __init__(self, every: int = defaults.TRACK_EVERY, batch_size: int = 32,
                 kreiss: bool = defaults.TRACK_KREISS, n_snapshots: int | None = defaults.N_SNAPSHOTS):
        self.every, self.batch_size, self.kreiss, self.n_snapshots = every, batch_size, kreiss, n_snapshots
        self.tracker: Tracker | None = None
        self.stopped_at: int | None = None

    def on_start(self, model, optimizer, cfg, ctx):
        data = load_task_data(cfg)
        batch = data.x_val[: self.batch_size].to(ctx.device)
        self.tracker = Tracker(model, batch, every=self.every, kreiss=self.kreiss, n_snapshots=self.n_snapshots)
        self._profile(0)

    def _profile(self, step: int) -> None:
        if self.stopped_at is not None:
            return
        try:
            self.tracker.profile_now(step)
        except RKSPInputError:                         # NaN/Inf states: the run has diverged
            self.stopped_at = step

    def after_step(self, step, model, optimizer, info):
        done = int(step)                               # the harness counts steps from 1: `step` completed
        if done % self.every == 0:
            self._profile(done)


