"""Koopman Spectral Shaping (KSS): the spectral regularizer of paper Def. 2, Eqs. 14-15.

For the rank-``r`` randomized-DMD eigenvalues ``lambda_j`` of one residual
transition ``h_l -> h_{l+1}`` (:func:`rksp.core.dmd.randomized_dmd_eigvals`)::

    L_KSS^l = sum_j sigmoid(T(|lambda_j| - tau_u)) * softplus(|lambda_j| - tau_u)^2   (unstable penalty)
            + beta * (m_soft - gamma)^2                                               (near-unit target)
    m_soft  = mean_j sigmoid(T(|lambda_j| - tau_l)) * sigmoid(T(tau_u - |lambda_j|))     (Eq. 15)

and the training objective is ``L_task + alpha * mean_{l in S} L_KSS^l`` with
``S`` a fresh random ``ceil(layer_fraction * L)`` subset of the ``L``
transitions, on the steps where ``step % every == 0`` (on other steps the term
is exactly zero and nothing is computed).

Two ways to use it (``kss = KSS(KSSConfig(...))`` or ``KSS(alpha=..., every=...)``):

1. On a list of hidden states ``h_0..h_L`` (each ``(B, T, d)``, or ``(N, d)``)
   that still carry their autograd graph::

       out = model(x, output_hidden_states=True)          # e.g. HF
       loss = task_loss + kss(out.hidden_states, step)

   Caution for HF models: their ``hidden_states[-1]`` is taken *after* the final
   norm (GPT-2 ``ln_f``, LLaMA ``norm``), so the last transition then includes
   that norm. :meth:`KSS.capture` records the raw block outputs instead (the
   residual stream as RKSP profiles it, :mod:`rksp.core.snapshots`).

2. With forward hooks on the residual blocks (:func:`rksp.core.snapshots.find_blocks`)::

       with kss.capture(model, step):                     # records only if kss.wants(step)
           logits = model(x)
       loss = task_loss(logits) + kss.loss_from_capture(step)

   ``capture(model)`` without a step may also stay open for a whole training
   loop: each forward pass records iff ``kss.wants(kss.next_step)``, where
   ``next_step`` is one past the step of the last ``loss_from_capture``/call
   (unknown before the first one: the first forward always records). Hooks keep
   the states with their graph (no detach, no copy); only the last forward
   inside the context counts.

Snapshots (our choices, NOTES.md): tokens are flattened over (batch, position),
``n_snapshots`` of them are drawn by the object's seeded generator (the same
token positions at every depth, so column i of X_l and Y_l is one token), cast to
float64 for the DMD; gradients flow back to the model's dtype through the
snapshots. ``kss.log`` keeps one dict per application (step, layers, per-layer
m_soft / unstable / near-unit / loss / spectral radius / expansive mass, total,
seconds of the forward computation).

Gradient path (our choices, issue 13; ``KSSConfig`` fields, defaults in :mod:`rksp.defaults`):

* ``projection='pod'`` (default): the rank-r operator is the Galerkin compression of
  the DMD operator onto the dominant (POD) r-subspace of the centred raw states, then
  whitened (Eqs. 7-9) in that subspace. Why this default, from the maths: whitening is
  a similarity (``A~ = W A W^{-1}``), so the full-rank eigenvalues of Eq. 6 do not
  depend on it; what rank r must choose is *which* r-dimensional part of the dynamics
  to keep, and the dominant-energy subspace is the one Erichson et al.'s randomized
  DMD keeps. Projecting after whitening (``'whitened'``) draws that subspace from a
  matrix whose singular spectrum is flat by construction, i.e. at random, and the
  observables ``u^T W x`` are weighted towards the lowest-variance directions. The
  planted-dynamics test (tests/test_dmd.py) shows it: a rank-4 dynamics planted in
  the dominant subspace of d = 64 states is recovered to ~1e-3 by ``'pod'`` and not at
  all by ``'whitened'``; both equal the exact whitened DMD at r = d. Not chosen by
  which path reproduces a paper table.
* ``detach_whitening`` (default True): the whitening matrix is a constant in the
  gradient. Under ``'pod'`` the eigenvalues do not depend on ``W_r`` (similarity), so
  the two settings give the same gradient up to rounding; under ``'whitened'`` they differ.
* ``grad_bound`` (default None): applied by the training harness
  (:meth:`rksp.harness.hooks.StepContext.backward_rest`): on an application step the KSS
  parameter gradient ``g_r`` is scaled to ``||g_r|| <= grad_bound * ||g_task||``. The
  harness records both norms every application (``record['extras']['reg_grad']``).
  The POD basis ``U`` and the token / layer draws are always constants.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rksp import defaults
from rksp.checks import is_int, is_number
from rksp.core.dmd import randomized_dmd_eigvals
from rksp.errors import RKSPInputError
from rksp.core.snapshots import find_blocks, residual_states, sample_positions

Tensor = torch.Tensor

__all__ = ["kss_layer_loss", "KSSConfig", "KSS"]


# ----------------------------------------------------------------------------- Eq. 14-15

def kss_layer_loss(eigvals: Tensor, *, T: float = defaults.KSS_T, tau_u: float = defaults.KSS_TAU_U,
                   tau_l: float = defaults.KSS_TAU_L, gamma: float = defaults.KSS_GAMMA,
                   beta: float = defaults.KSS_BETA, unstable: bool = True,
                   near_unit: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-layer KSS loss (Eq. 14) of complex eigenvalues of shape ``(..., r)``.

    Returns ``(loss, parts)``: ``loss`` has shape ``(...)`` and contains the
    unstable penalty (a SUM over the ``r`` eigenvalues) when ``unstable`` and the
    near-unit target ``beta * (m_soft - gamma)^2`` when ``near_unit`` (the
    switches give the Table 6 ablations). ``parts`` holds detached tensors of
    shape ``(...)``: ``unstable``, ``near_unit`` (each term's value whether or
    not it enters the loss) and ``m_soft`` (Eq. 15).
    """
    if not isinstance(eigvals, Tensor):
        eigvals = torch.as_tensor(eigvals)
    if eigvals.ndim < 1 or eigvals.shape[-1] < 1:
        raise RKSPInputError(f"eigvals must have shape (..., r) with r >= 1, got {tuple(eigvals.shape)}")
    if not (unstable or near_unit):
        raise RKSPInputError("at least one of the KSS terms (unstable, near_unit) must be on")
    if not (eigvals.is_complex() or eigvals.is_floating_point()):
        eigvals = eigvals.to(torch.float64)
    mod = eigvals.abs()
    pen = (torch.sigmoid(T * (mod - tau_u)) * F.softplus(mod - tau_u).square()).sum(-1)
    m_soft = (torch.sigmoid(T * (mod - tau_l)) * torch.sigmoid(T * (tau_u - mod))).mean(-1)
    target = beta * (m_soft - gamma).square()
    if unstable and near_unit:
        loss = pen + target
    elif unstable:
        loss = pen
    else:
        loss = target
    parts = {"unstable": pen.detach(), "near_unit": target.detach(), "m_soft": m_soft.detach()}
    return loss, parts


# ----------------------------------------------------------------------------- config

@dataclass
class KSSConfig:
    """Settings of :class:`KSS` (defaults from :mod:`rksp.defaults`)."""

    alpha: float = defaults.KSS_ALPHA              # weight of the KSS term
    rank: int = defaults.RDMD_RANK                 # r of the randomized DMD
    T: float = defaults.KSS_T                      # sigmoid temperature
    tau_u: float = defaults.KSS_TAU_U              # upper band edge (expansive above)
    tau_l: float = defaults.KSS_TAU_L              # lower band edge
    gamma: float = defaults.KSS_GAMMA              # target near-unit mass
    beta: float = defaults.KSS_BETA                # weight of the near-unit target
    every: int = defaults.KSS_EVERY                # apply on steps with step % every == 0
    layer_fraction: float = defaults.KSS_LAYER_FRACTION   # ceil(fraction * L) layers per application
    n_snapshots: int | None = defaults.N_SNAPSHOTS  # token states per transition (None: all)
    eps: float = defaults.WHITEN_EPS               # whitening ridge
    oversample: int = defaults.RDMD_OVERSAMPLE
    power_iters: int = defaults.RDMD_POWER_ITERS
    unstable: bool = True                          # Table 6 ablation switches
    near_unit: bool = True
    seed: int = defaults.SNAPSHOT_SEED             # layer / token / projection sampling
    # gradient path (issue 13; docs/choices.md "Choices beyond the paper")
    projection: str = defaults.RDMD_PROJECTION     # 'pod': POD subspace, then whiten | 'whitened': old order
    detach_whitening: bool = defaults.RDMD_DETACH_WHITENING   # W constant in the gradient
    grad_bound: float | None = defaults.KSS_GRAD_BOUND        # ||g_KSS|| <= c ||g_task|| (harness)

    def __post_init__(self):
        for name in ("alpha", "T", "tau_u", "tau_l", "gamma", "beta", "layer_fraction", "eps"):
            if not is_number(getattr(self, name), finite=True):
                raise RKSPInputError(f"KSSConfig.{name} must be a finite number, got {getattr(self, name)!r}")
        if self.alpha < 0:
            raise RKSPInputError(f"KSSConfig.alpha must be >= 0, got {self.alpha}")
        if not is_int(self.rank) or self.rank < 1:
            raise RKSPInputError(f"KSSConfig.rank must be an integer >= 1, got {self.rank!r}")
        if not self.T > 0:
            raise RKSPInputError(f"KSSConfig.T (sigmoid temperature) must be > 0, got {self.T}")
        if not self.tau_l < self.tau_u:
            raise RKSPInputError(f"KSSConfig needs tau_l < tau_u, got tau_l={self.tau_l}, tau_u={self.tau_u}")
        if not 0.0 <= self.gamma <= 1.0:
            raise RKSPInputError(f"KSSConfig.gamma (a mass) must be in [0, 1], got {self.gamma}")
        if self.beta < 0:
            raise RKSPInputError(f"KSSConfig.beta must be >= 0, got {self.beta}")
        if not is_int(self.every) or self.every < 1:
            raise RKSPInputError(f"KSSConfig.every must be an integer >= 1 (apply every k steps), got {self.every!r}")
        if not 0.0 < self.layer_fraction <= 1.0:
            raise RKSPInputError(f"KSSConfig.layer_fraction must be in (0, 1], got {self.layer_fraction}")
        if self.n_snapshots is not None:
            if not is_int(self.n_snapshots) or self.n_snapshots < 2:
                raise RKSPInputError(f"KSSConfig.n_snapshots must be None or an integer >= 2, got {self.n_snapshots!r}")
            if self.rank >= self.n_snapshots:
                raise RKSPInputError(
                    f"KSSConfig.rank r = {self.rank} must be < n_snapshots = {self.n_snapshots} "
                    "(the rank-r DMD needs more token states than r)")
        if self.eps < 0:
            raise RKSPInputError(f"KSSConfig.eps must be >= 0, got {self.eps}")
        for name in ("oversample", "power_iters"):
            v = getattr(self, name)
            if not is_int(v) or v < 0:
                raise RKSPInputError(f"KSSConfig.{name} must be an integer >= 0, got {v!r}")
        for name in ("unstable", "near_unit"):
            if not isinstance(getattr(self, name), bool):
                raise RKSPInputError(f"KSSConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if not (self.unstable or self.near_unit):
            raise RKSPInputError("KSSConfig: unstable and near_unit are both off; nothing to optimize")
        if not is_int(self.seed):
            raise RKSPInputError(f"KSSConfig.seed must be an integer, got {self.seed!r}")
        if self.projection not in defaults.RDMD_PROJECTIONS:
            raise RKSPInputError(f"KSSConfig.projection must be one of {defaults.RDMD_PROJECTIONS}, "
                                 f"got {self.projection!r}")
        if not isinstance(self.detach_whitening, bool):
            raise RKSPInputError(f"KSSConfig.detach_whitening must be a bool, got {self.detach_whitening!r}")
        if self.grad_bound is not None and not (is_number(self.grad_bound, finite=True) and self.grad_bound > 0):
            raise RKSPInputError(f"KSSConfig.grad_bound must be None or a finite number > 0, got {self.grad_bound!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- helpers

def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


# ----------------------------------------------------------------------------- KSS

class KSS:
    """Koopman Spectral Shaping regularizer (see the module docstring for usage).

    ``KSS(config)`` or ``KSS(**overrides)`` / ``KSS(config, **overrides)``.
    Attributes: ``config``, ``log`` (list of per-application dicts),
    ``next_step`` (used by an open-ended :meth:`capture`), ``generator``.
    """

    def __init__(self, config: KSSConfig | None = None, **overrides):
        if config is None:
            config = KSSConfig(**overrides)
        elif overrides:
            unknown = set(overrides) - {f.name for f in fields(KSSConfig)}
            if unknown:
                raise RKSPInputError(f"unknown KSSConfig fields: {sorted(unknown)}")
            config = KSSConfig(**{**asdict(config), **overrides})
        if not isinstance(config, KSSConfig):
            raise RKSPInputError(f"config must be a KSSConfig, got {type(config).__name__}")
        self.config = config
        self.generator = torch.Generator(device="cpu").manual_seed(int(config.seed))
        self.log: list[dict[str, Any]] = []
        self.next_step: int | None = None
        self._captured: list[Tensor] = []
        self._capture_len: int | None = None
        self._capture_device: torch.device | None = None
        self._capturing = False

    def __repr__(self) -> str:
        return f"KSS({self.config!r})"

    # -- schedule ---------------------------------------------------------------
    def wants(self, step: int) -> bool:
        """Whether ``step`` is an application step (``step % every == 0``)."""
        return int(step) % self.config.every == 0

    def n_layers_for(self, L: int) -> int:
        """How many of ``L`` transitions one application uses: ``ceil(layer_fraction * L)``."""
        return max(1, min(L, math.ceil(self.config.layer_fraction * L - 1e-9)))

    def _zero(self, device=None, dtype=torch.float32) -> Tensor:
        return torch.zeros((), device=device, dtype=dtype)

    # -- entry point 1: a list of hidden states ---------------------------------
    def __call__(self, hidden_states: Sequence[Tensor], step: int, *,
                 mask: Tensor | None = None) -> Tensor:
        """``alpha * mean_{l in S} L_KSS^l`` on hidden states ``h_0..h_L``; 0 off-schedule.

        ``hidden_states``: list/tuple of ``L + 1`` tensors of one shape ``(..., d)``
        (e.g. ``(B, T, d)``), with their autograd graph. ``mask``: optional
        boolean ``(B, T)`` of real tokens (padding is never sampled).
        """
        if not isinstance(hidden_states, (list, tuple)):
            raise RKSPInputError(
                f"hidden_states must be a list/tuple of L+1 tensors h_0..h_L, got {type(hidden_states).__name__}")
        first = hidden_states[0] if len(hidden_states) else None
        device = first.device if isinstance(first, Tensor) else None
        dtype = _out_dtype(first.dtype) if isinstance(first, Tensor) else torch.float32
        self.next_step = int(step) + 1
        if not self.wants(step):
            return self._zero(device, dtype)
        return self._apply(list(hidden_states), int(step), mask)

    def _apply(self, hs: list[Tensor], step: int, mask: Tensor | None) -> Tensor:
        cfg = self.config
        t0 = time.perf_counter()
        if len(hs) < 2:
            raise RKSPInputError(f"need at least 2 hidden states (h_0, h_1), got {len(hs)}")
        for i, h in enumerate(hs):
            if not isinstance(h, Tensor):
                raise RKSPInputError(f"hidden_states[{i}] is a {type(h).__name__}, not a tensor")
            if h.ndim < 2:
                raise RKSPInputError(f"hidden_states[{i}] has shape {tuple(h.shape)}; expected (..., d)")
            if h.shape != hs[0].shape:
                raise RKSPInputError(
                    f"hidden states differ in shape: h_0 {tuple(hs[0].shape)} vs h_{i} {tuple(h.shape)}")
        d = hs[0].shape[-1]
        n_tokens = hs[0].numel() // d
        out_dtype = _out_dtype(hs[0].dtype)
        device = hs[0].device
        if cfg.rank > d:
            raise RKSPInputError(f"KSS rank r = {cfg.rank} exceeds the hidden size d = {d}; lower KSSConfig.rank")

        # token positions (one draw per application, shared by all depths)
        valid = sample_positions(n_tokens, mask, cfg.n_snapshots, self.generator, device)
        N = int(valid.numel())
        if cfg.rank >= N:
            n_avail = n_tokens if mask is None else int(torch.as_tensor(mask).reshape(-1).bool().sum())
            raise RKSPInputError(
                f"KSS rank r = {cfg.rank} needs more than r token states per transition, got N = {N} "
                f"({n_avail} usable tokens in the batch, n_snapshots = {cfg.n_snapshots}); "
                "use a larger batch or a lower KSSConfig.rank")

        # layers (a fresh random subset per application)
        L = len(hs) - 1
        k = self.n_layers_for(L)
        layers = sorted(torch.randperm(L, generator=self.generator)[:k].tolist())
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.generator))
        proj_gen = torch.Generator(device=device).manual_seed(seed)

        cache: dict[int, Tensor] = {}

        def snap(i: int) -> Tensor:                      # (d, N) float64, graph kept
            if i not in cache:
                cache[i] = hs[i].reshape(-1, d).index_select(0, valid).to(torch.float64).transpose(0, 1)
            return cache[i]

        X = torch.stack([snap(l) for l in layers])
        Y = torch.stack([snap(l + 1) for l in layers])
        entry: dict[str, Any] = {"step": step, "layers": layers, "n_snapshots": N}
        skip = None
        if not bool(torch.isfinite(X.detach()).all() & torch.isfinite(Y.detach()).all()):
            skip = "non-finite hidden states"
        else:
            try:
                lam = randomized_dmd_eigvals(X, Y, cfg.rank, eps=cfg.eps, oversample=cfg.oversample,
                                             power_iters=cfg.power_iters, generator=proj_gen,
                                             projection=cfg.projection,
                                             detach_whitening=cfg.detach_whitening)
            except torch.linalg.LinAlgError as exc:   # rare: singular projected Gram matrix
                skip = f"linear algebra failure: {exc}"
        if skip is not None:
            warnings.warn(f"KSS step {step}: skipped ({skip}); the KSS term is 0 this step", RuntimeWarning)
            entry.update(skipped=skip, total=0.0, seconds=time.perf_counter() - t0)
            self.log.append(entry)
            return self._zero(device, out_dtype)

        layer_loss, parts = kss_layer_loss(lam, T=cfg.T, tau_u=cfg.tau_u, tau_l=cfg.tau_l,
                                           gamma=cfg.gamma, beta=cfg.beta,
                                           unstable=cfg.unstable, near_unit=cfg.near_unit)
        total = cfg.alpha * layer_loss.mean()

        # a non-finite gradient of the regularizer (ill-conditioned eigenvectors) is
        # zeroed and flagged rather than poisoning the model's gradients
        if X.requires_grad or Y.requires_grad:
            def sanitize(g: Tensor | None) -> Tensor | None:
                if g is not None and not bool(torch.isfinite(g).all()):
                    entry["nonfinite_grad_zeroed"] = True
                    return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                return g
            for t in (X, Y):
                if t.requires_grad:
                    t.register_hook(sanitize)

        mod = lam.detach().abs()
        entry.update(
            m_soft=parts["m_soft"].tolist(),
            unstable=parts["unstable"].tolist(),
            near_unit=parts["near_unit"].tolist(),
            layer_loss=layer_loss.detach().tolist(),
            rho=mod.amax(-1).tolist(),
            expansive_mass=(mod > cfg.tau_u).double().mean(-1).tolist(),
            total=float(total.detach()),
        )
        entry["seconds"] = time.perf_counter() - t0
        self.log.append(entry)
        return total.to(out_dtype)

    # -- entry point 2: forward hooks -------------------------------------------
    @contextlib.contextmanager
    def capture(self, model: nn.Module, step: int | None = None, *, blocks=None):
        """Record ``h_0..h_L`` (with their graph) on the residual blocks during forward passes.

        With ``step``: records iff ``self.wants(step)``. Without: each forward
        records iff ``self.wants(self.next_step)`` (always when ``next_step`` is
        None). ``blocks`` is passed to :func:`rksp.core.snapshots.find_blocks`.
        Yields the list being filled; use :meth:`loss_from_capture` afterwards.
        """
        if self._capturing:
            raise RKSPInputError("KSS.capture is already active on this KSS object")
        L = len(find_blocks(model, blocks))
        buf = self._captured
        buf.clear()
        self._capture_len = L + 1
        try:
            self._capture_device = next(model.parameters()).device
        except StopIteration:
            self._capture_device = None

        def armed() -> bool:
            s = step if step is not None else self.next_step
            return s is None or self.wants(s)

        self._capturing = True
        try:
            with residual_states(model, blocks, enabled=armed) as hs:
                self._captured = hs
                yield hs
        finally:
            self._captured = buf
            buf[:] = hs
            self._capturing = False

    @property
    def captured(self) -> list[Tensor]:
        """States recorded by the last armed forward inside :meth:`capture` (empty otherwise)."""
        return list(self._captured)

    def loss_from_capture(self, step: int, *, mask: Tensor | None = None) -> Tensor:
        """The KSS term for ``step`` from the states recorded by :meth:`capture`; 0 off-schedule.

        Clears the recorded states (so their graph is not kept alive) and sets
        ``next_step = step + 1``.
        """
        states = list(self._captured)
        self._captured.clear()
        self.next_step = int(step) + 1
        if not self.wants(step):
            dev = states[0].device if states else self._capture_device
            dt = _out_dtype(states[0].dtype) if states else torch.float32
            return self._zero(dev, dt)
        if not states or (self._capture_len is not None and len(states) != self._capture_len):
            raise RKSPInputError(
                f"KSS step {step} is an application step but no complete residual stream was captured "
                f"(got {len(states)} of {self._capture_len} states): run the forward pass inside "
                f"`with kss.capture(model, {step}):` first")
        return self._apply(states, int(step), mask)
