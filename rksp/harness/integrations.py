"""Hugging Face ``transformers.Trainer`` integration: :class:`RKSPCallback`.

One line after building the trainer::

    trainer = Trainer(model=model, args=args, train_dataset=ds)
    RKSPCallback(held_out_batch, every=50, kss=rksp.KSSConfig(alpha=0.15)).attach(trainer)
    trainer.train()

Design. A ``TrainerCallback`` only observes; it cannot change the loss, and it is not given the
trainer. ``attach(trainer)`` therefore does two things:

1. ``trainer.add_callback(self)`` and keeps a reference to the trainer, so that every
   ``every`` optimizer steps (and at step 0) the callback profiles the model on the fixed
   held-out batch and sends the scalar summary (``rksp/score``, ``rksp/rho_max``,
   ``rksp/m_expansive_mean``, ...) through ``trainer.log``: the Trainer's own logging, so it
   lands in ``trainer.state.log_history`` and in every ``report_to`` backend (TensorBoard, W&B)
   with no extra code;
2. with ``kss=...``: wraps this trainer instance's ``compute_loss`` (the instance attribute only;
   the class and other trainers are untouched). On KSS application steps of training
   (``global_step % kss.every == 0``, grad enabled, model in train mode) forward hooks on the
   residual blocks record ``h_0..h_L`` of that forward pass and ``alpha * L_KSS`` is added to the
   loss the Trainer backpropagates (so it is scaled by gradient accumulation like the task loss).
   Evaluation losses never include it. The mean KSS term since the last log is logged as
   ``rksp/kss_loss``.

Without ``attach`` (e.g. ``Trainer(callbacks=[RKSPCallback(...)])``), profiles are still taken and
kept in ``callback.tracker`` and their summary is added to the next ``on_log`` dict, but it
reaches only the callbacks after this one; KSS then raises at ``on_train_begin`` (it needs
``attach``). ``callback.frame()`` / ``callback.plot()``: long DataFrame and figure over steps
(:mod:`rksp.harness.tracking`).
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from rksp import defaults
from rksp.errors import RKSPInputError
from rksp.core.kss import KSS, KSSConfig
from rksp.harness.tracking import PLOT_METRICS, Tracker

try:  # transformers is optional for the rest of the package
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object

__all__ = ["RKSPCallback"]


class RKSPCallback(TrainerCallback):
    """Profile every ``every`` steps on ``batch`` and log the summary; optional KSS term.

    ``batch``: keyword arguments for the model (e.g. a tokenized ``dict`` with ``input_ids`` and
    ``attention_mask``; labels are ignored), fixed for the whole run. ``kss``: a
    :class:`rksp.KSSConfig` (or :class:`rksp.KSS`) to add the regularizer, None for profiling only.
    ``kreiss``, ``n_snapshots``, ``seed``, ``blocks`` are passed to :func:`rksp.profile`.
    """

    def __init__(self, batch, every: int = defaults.TRACK_EVERY, *, kss: KSSConfig | KSS | None = None,
                 kreiss: bool = defaults.TRACK_KREISS, n_snapshots: int | None = defaults.N_SNAPSHOTS,
                 seed: int = defaults.SNAPSHOT_SEED, blocks=None, prefix: str = "rksp/"):
        if TrainerCallback is object:  # pragma: no cover
            raise RKSPInputError("RKSPCallback needs the 'transformers' package")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise RKSPInputError(f"every must be an integer >= 1, got {every!r}")
        if kss is not None and not isinstance(kss, (KSSConfig, KSS)):
            raise RKSPInputError(f"kss must be a KSSConfig, a KSS or None, got {type(kss).__name__}")
        if isinstance(batch, dict):
            batch = {k: v for k, v in batch.items() if k not in ("labels", "label")}
        self.batch, self.every, self.kss_config = batch, every, kss
        self.kreiss, self.n_snapshots, self.seed, self.blocks, self.prefix = kreiss, n_snapshots, seed, blocks, prefix
        self.trainer = None
        self.tracker: Tracker | None = None
        self._pending: dict[str, float] = {}
        self._kss_sum, self._kss_n = 0.0, 0

    # -- installation ------------------------------------------------------------------------------
    def attach(self, trainer):
        """Add this callback to ``trainer`` (logging through ``trainer.log``) and, with ``kss``,
        wrap its ``compute_loss``. Returns ``trainer``."""
        if not hasattr(trainer, "compute_loss") or not hasattr(trainer, "add_callback"):
            raise RKSPInputError(f"attach expects a transformers.Trainer, got {type(trainer).__name__}")
        if self.trainer is not None:
            raise RKSPInputError("this RKSPCallback is already attached to a trainer")
        self.trainer = trainer
        trainer.add_callback(self)
        if self.kss_config is not None:
            self._wrap_compute_loss(trainer)
        return trainer

    def _ensure_tracker(self, model) -> Tracker:
        if self.tracker is None:
            self.tracker = Tracker(model, self.batch, every=self.every, kss=self.kss_config, kreiss=self.kreiss,
                                   n_snapshots=self.n_snapshots, seed=self.seed, blocks=self.blocks)
        return self.tracker

    def _wrap_compute_loss(self, trainer) -> None:
        original = trainer.compute_loss
        cb = self

        def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
            tracker = cb._ensure_tracker(trainer.model)
            step = int(trainer.state.global_step)
            tracker.expect(step)                       # hooks record this forward iff KSS wants this step
            active = model.training and torch.is_grad_enabled() and tracker.kss.wants(step)
            if not active:
                return original(model, inputs, return_outputs=return_outputs,
                                num_items_in_batch=num_items_in_batch)
            loss, outputs = original(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
            term = tracker.kss_loss(step, mask=mask.bool() if isinstance(mask, torch.Tensor) else None)
            cb._kss_sum += float(term.detach())
            cb._kss_n += 1
            loss = loss + term.to(loss.dtype)
            return (loss, outputs) if return_outputs else loss

        trainer.compute_loss = compute_loss

    # -- callback events ---------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.kss_config is not None and self.trainer is None:
            raise RKSPInputError("RKSPCallback(kss=...) changes the loss, which a callback alone cannot: "
                                 "use RKSPCallback(...).attach(trainer) instead of Trainer(callbacks=[...])")
        if model is None:
            return
        self._ensure_tracker(model)
        if self.tracker.due(state.global_step) and not any(s == state.global_step for s, _ in self.tracker.records):
            self._profile(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.tracker is None or not self.tracker.due(state.global_step):
            return
        self._profile(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.trainer is None and logs is not None and self._pending:
            logs.update(self._pending)                 # unattached: visible to later callbacks only
            self._pending = {}

    def _profile(self, step: int) -> None:
        try:
            self.tracker.profile_now(step)
        except RKSPInputError as exc:                  # e.g. NaN states after a divergence
            logs = {self.prefix + "error": float("nan")}
            self._emit(logs)
            import warnings
            warnings.warn(f"RKSP profile at step {step} failed: {exc}", RuntimeWarning, stacklevel=2)
            return
        logs = self.tracker.summary(prefix=self.prefix)
        if self._kss_n:
            logs[self.prefix + "kss_loss"] = self._kss_sum / self._kss_n
            self._kss_sum, self._kss_n = 0.0, 0
        logs[self.prefix + "profile_seconds"] = float(self.tracker.records[-1][1].meta["seconds"])
        logs = {k: v for k, v in logs.items() if not (isinstance(v, float) and math.isnan(v))}
        self._emit(logs)

    def _emit(self, logs: dict[str, float]) -> None:
        if self.trainer is not None:
            self.trainer.log(dict(logs))
        else:
            self._pending.update(logs)

    # -- results -----------------------------------------------------------------------------------
    def frame(self, **labels) -> pd.DataFrame:
        """Long DataFrame ``step, layer, metric, value`` of every profile taken (:func:`rksp.harness.tracking.long_frame`)."""
        if self.tracker is None:
            raise RKSPInputError("no profile taken yet (train first)")
        return self.tracker.frame(**labels)

    def plot(self, path=None, metrics=PLOT_METRICS, **kw):
        """The tracker's figure (:meth:`rksp.harness.tracking.Tracker.plot`): saved to ``path`` if given."""
        if self.tracker is None:
            raise RKSPInputError("no profile taken yet (train first)")
        return self.tracker.plot(path, metrics, **kw)

    @staticmethod
    def from_log_history(log_history: list[dict[str, Any]], prefix: str = "rksp/") -> pd.DataFrame:
        """The logged summaries of a finished run (``trainer.state.log_history``, or the
        ``trainer_state.json`` of a checkpoint) as a long DataFrame ``step, layer=-1, metric, value``."""
        rows = [{"step": int(r["step"]), "layer": -1, "metric": k[len(prefix):], "value": float(v)}
                for r in log_history for k, v in r.items() if k.startswith(prefix) and "step" in r]
        return pd.DataFrame(rows, columns=["step", "layer", "metric", "value"])
