"""KSS and the paper's baselines as training-harness hooks, and the method table.

Each method is a `rksp.harness.hooks.TrainHooks` factory registered by name, so a config
given as JSON can use it:

    TrainConfig(hooks=[{'target': 'kss', 'kwargs': {'alpha': 0.15}}])
    apply_method(base_cfg_dict, 'kss_0.15')          # the same, from the table row's id (or 'KSS α=0.15')

Hooks (name -> class; keyword arguments in brackets, defaults from `rksp.defaults`):

  kss                  KSSHooks [alpha=0.15, every=10, layer_fraction=0.5, rank=32, gamma=0.4,
                       beta=1.0, unstable=True, near_unit=True, n_snapshots=2048, seed=None,
                       and every other `rksp.core.kss.KSSConfig` field]. KSS (paper Def. 2) through
                       the harness: `needs_hidden = kss.wants`, `extra_loss = kss(h_0..h_L, step)`
                       (alpha * mean layer loss on steps with step % every == 0, an exact 0
                       otherwise). `unstable=False` / `near_unit=False` give Table 6's
                       "near-unit only" / "unstable only" ablations. `record['extras']['kss']`:
                       the log summary (`kss_log_summary`: n_applications (distinct steps; with SAM
                       each step evaluates KSS twice, n_evaluations), m_soft_mean, unstable_mean,
                       near_unit_mean, total_mean, seconds_total, per-evaluation curve, config).
                       Each generic regularizer below leaves extras[name] = {lam, every,
                       n_applications, penalty_mean (unweighted), seconds_total, curve}.
  spectral_norm        SpectralNormHooks [n_power_iterations=1]. Miyato et al. 2018 via
                       `torch.nn.utils.parametrizations.spectral_norm` on every nn.Linear inside the
                       residual blocks (`rksp.core.snapshots.find_blocks`): for the GPT these are, per block,
                       attn.c_attn (fused q,k,v; its sigma_max over the stacked 3d x d matrix),
                       attn.c_proj, mlp.c_fc and mlp.c_proj. Embeddings, the (tied) head and the norms
                       are untouched. W is replaced by W / sigma_max(W) (sigma_max from one power
                       iteration per training forward, 15 at wrapping), so at init the branch weights
                       are rescaled from sigma ~ 0.02-0.1 to sigma = 1: that is the method, not a bug.
  weight_norm          WeightNormHooks [dim=0]. Salimans & Kingma 2016 via
                       `torch.nn.utils.parametrizations.weight_norm` on the same Linear layers:
                       W = g * V / ||V|| (row norms, one g per output unit); the function at init is
                       unchanged. (g has shape (out, 1), so the harness's weight-decay rule -- decay
                       tensors with >= 2 dims -- decays g and V alike.)
  grad_penalty         GradPenaltyHooks [lam=0.1, every=10]. Input-gradient penalty ("double
                       backprop", Drucker & LeCun 1992) -- the paper names it (Table 4, lambda = 0.1)
                       without defining it. Ours: lam * mean_b ||d loss_b / d h_0^(b)||^2, the squared
                       L2 norm of the gradient of each sequence's task loss w.r.t. its input
                       embeddings h_0 (token + position embedding, the input of block 0), averaged
                       over the batch; computed as B * ||d L / d h_0||_F^2 with L the batch-mean task
                       loss (sequences do not interact, so the two are equal), with create_graph=True
                       so its gradient reaches every parameter. Applied on the KSS schedule (every 10
                       steps): an every-step double backward costs ~ +150% per step, which cannot be
                       the paper's 6.4% overhead; `every=1` gives the textbook every-step version.
  random_l2            RandomL2Hooks [lam=0.15, every=10, layer_fraction=0.5]. Table 6 "Random l2 on
                       residuals": lam * mean_{l in S} mean(h_l ** 2), S a fresh random
                       ceil(layer_fraction * L) subset of the block outputs h_1..h_L ("random" = the
                       layer subset, as in KSS), mean(h ** 2) = ||h||^2 / d averaged over tokens.
  jacobian_penalty     JacobianPenaltyHooks [lam=0.15, every=10, layer_fraction=0.5, n_probes=1].
                       Table 6 "Jacobian penalty": lam * mean_{l in S} ||J_l||_F^2 / (n_tokens * d),
                       J_l = d h_{l+1} / d h_l of block l over the batch (all tokens, cross-token
                       attention terms included), S a random half of the L transitions; ||J||_F^2 by
                       Hutchinson's estimator E_v ||J^T v||^2, v ~ N(0, I), one probe per sampled layer,
                       J^T v a vector-Jacobian product with create_graph=True
                       (`hutchinson_frobenius_sq`). Normalized so an identity block scores 1.
  activation_variance  ActivationVarianceHooks [lam=0.15, every=10, layer_fraction=0.5]. Table 6
                       "Activation variance reg.": lam * mean_{l in S} (log v_l - log v_0)^2 with
                       v_l = mean over channels of the per-channel variance of h_l over the batch's
                       tokens, v_0 that of h_0 (detached: the target, not moved by the penalty), S a
                       random half of h_1..h_L. It keeps the activation scale constant with depth
                       ("distribution control"); the alternative "variance -> 1" is not used because
                       the GPT's embeddings have variance ~ 1e-3 (init std 0.02) and it would first
                       inflate every layer.
  z_loss               ZLossHooks [coeff=1e-4, positions='loss', log_every=10]. Not a paper row
                       (rows.TABLES['practice']): PaLM's z-loss coeff * mean(logsumexp(logits)^2) on
                       the logits the task loss reads, every step (`z_loss`). Its companion row
                       'QK-LayerNorm' is a model option (`GPTConfig.qk_norm`), not a hook.

Choices (docs/choices.md "Choices beyond the paper"): the Table 6 generic regularizers run on KSS's
schedule (every 10 steps, a fresh random half of the layers, the current training batch),
as the paper matches them to KSS's overhead (~11%); their weights are not tuned: each is
lam = 0.15 (= KSS's alpha) on a per-element-normalized quantity (O(1) at init for the
Jacobian, ~0 at init for the variance term, mean(h^2) ~ 1e-3 at init for l2). Every
schedule's random stream (layers, token subsets, probes) is seeded from the run's seed
(`seed=None`) so trials differ; give `seed=int` to fix it. The double-backward methods
(grad_penalty, jacobian_penalty) run the model's attention with PyTorch's math SDPA kernel on
their application steps (the fused flash / memory-efficient kernels have no double backward).

`rksp.methods.rows.ROWS` holds the method rows of the paper's tables (Tables 3, 4, 6, 13, 14 and
the KSS alpha sweep), one `MethodRow` each: id, display string, TrainConfig overrides, the paper's
numbers, aliases; `TABLES` lists each table's rows by id. The optimizer rows (SAM, Lion, LAMB, muP) come from
`rksp.methods.optim.method_overrides`. `apply_method(base, name)` merges a row into a config dict
(hooks are appended, dict fields merged, scalars replaced) and validates it.
`grad_clip` needs no hook: it is a TrainConfig field (rows 'clip_0.5' / 'clip_1.0').
"""

from __future__ import annotations

import math
import time
from dataclasses import fields as dc_fields
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from rksp import defaults
from rksp.checks import is_int, is_number
from rksp.core.kss import KSS, KSSConfig
from rksp.core.snapshots import find_blocks
from rksp.errors import ConfigError, RKSPInputError
from rksp.harness.build import derive_seed
from rksp.harness.hooks import StepOutputs, TrainHooks
from rksp.harness.registry import register_hooks

# --- defaults of the baselines (ours unless marked) ---------------------------------------
GRAD_PENALTY_LAMBDA = 0.1      # (paper, Table 4) "Gradient penalty, lambda = 0.1"

GENERIC_LAMBDA = 0.15          # (ours) Table 6 generic regularizers: lam = KSS's alpha

_KSS_FIELDS = tuple(f.name for f in dc_fields(KSSConfig))


def _check_lam(name: str, lam) -> float:
    if not is_number(lam, finite=True) or lam < 0:
        raise ConfigError(f"{name}: lam must be a finite number >= 0, got {lam!r}")
    return float(lam)


def _check_schedule(name: str, every, layer_fraction) -> None:
    if not is_int(every) or every < 1:
        raise ConfigError(f"{name}: every must be an integer >= 1 (apply every k steps), got {every!r}")
    if not is_number(layer_fraction, finite=True) or not 0.0 < layer_fraction <= 1.0:
        raise ConfigError(f"{name}: layer_fraction must be in (0, 1], got {layer_fraction!r}")


def _check_seed(name: str, seed) -> None:
    if seed is not None and not is_int(seed):
        raise ConfigError(f"{name}: seed must be None (derived from the run seed) or an integer, got {seed!r}")


def _model_width(model: nn.Module) -> Optional[int]:
    conf = getattr(model, 'config', None)
    for attr in ('d_model', 'hidden_size', 'n_embd', 'embed_dim'):
        v = getattr(conf, attr, None)
        if is_int(v):
            return v
    return None


def block_linears(model: nn.Module) -> List[tuple]:
    """(qualified name, module) of every nn.Linear inside the model's residual blocks."""
    blocks = find_blocks(model)
    block_ids = {id(b): i for i, b in enumerate(blocks)}
    prefix = {}
    for name, mod in model.named_modules():
        if id(mod) in block_ids:
            prefix[id(mod)] = name
    out = []
    for b in blocks:
        for sub_name, mod in b.named_modules():
            if isinstance(mod, nn.Linear):
                out.append((f"{prefix.get(id(b), 'block')}.{sub_name}".rstrip('.'), mod))
    return out


def kss_log_summary(log: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Summary of a `KSS.log`: counts, means over evaluations (each the mean over its layers)
    of m_soft / unstable term / near-unit term / spectral radius / expansive mass, the mean
    weighted KSS term (alpha * mean layer loss), seconds of the KSS forward computation
    (eigenvalues and loss; the extra backward is not timed), and per-evaluation curves."""
    done = [e for e in log if 'skipped' not in e]

    def mean_of(key):
        vals = [sum(e[key]) / len(e[key]) for e in done if e.get(key)]
        return sum(vals) / len(vals) if vals else None

    curve = {'step': [e['step'] for e in done],
             'm_soft': [sum(e['m_soft']) / len(e['m_soft']) for e in done],
             'unstable': [sum(e['unstable']) / len(e['unstable']) for e in done],
             'near_unit': [sum(e['near_unit']) / len(e['near_unit']) for e in done],
             'total': [e['total'] for e in done]}
    secs = [e.get('seconds', 0.0) for e in log]
    return {
        'n_applications': len({e['step'] for e in done}),   # distinct steps
        'n_evaluations': len(done),    # > n_applications when a step evaluates KSS twice (SAM)
        'n_skipped': len(log) - len(done),
        'skipped_steps': [e['step'] for e in log if 'skipped' in e],
        'm_soft_mean': mean_of('m_soft'),
        'unstable_mean': mean_of('unstable'),
        'near_unit_mean': mean_of('near_unit'),
        'rho_mean': mean_of('rho'),
        'expansive_mass_mean': mean_of('expansive_mass'),
        'total_mean': (sum(e['total'] for e in done) / len(done)) if done else None,
        'm_soft_last': curve['m_soft'][-1] if done else None,
        'nonfinite_grad_zeroed': sum(bool(e.get('nonfinite_grad_zeroed')) for e in log),
        'seconds_total': float(sum(secs)),
        'seconds_mean': float(sum(secs) / len(secs)) if secs else None,
        'curve': curve,
    }


@register_hooks('kss')
class KSSHooks(TrainHooks):
    """KSS (paper Def. 2) through the harness; see the module docstring."""

    name = 'kss'

    def __init__(self, alpha: float = defaults.KSS_ALPHA, every: int = defaults.KSS_EVERY,
                 layer_fraction: float = defaults.KSS_LAYER_FRACTION, rank: int = defaults.RDMD_RANK,
                 gamma: float = defaults.KSS_GAMMA, beta: float = defaults.KSS_BETA,
                 unstable: bool = True, near_unit: bool = True, seed: Optional[int] = None, **more):
        bad = sorted(set(more) - set(_KSS_FIELDS))
        if bad:
            raise ConfigError(f"kss: unknown keyword(s) {bad}; valid: {', '.join(_KSS_FIELDS)}")
        _check_seed('kss', seed)
        kw = dict(alpha=alpha, every=every, layer_fraction=layer_fraction, rank=rank, gamma=gamma,
                  beta=beta, unstable=unstable, near_unit=near_unit, **more)
        try:
            config = KSSConfig(seed=0 if seed is None else seed, **kw)
        except RKSPInputError as e:
            raise ConfigError(f"kss: {e}") from e
        self.kss = KSS(config)
        self._seed = seed

    @property
    def config(self) -> KSSConfig:
        return self.kss.config

    @property
    def extra_grad_bound(self) -> Optional[float]:
        """KSSConfig.grad_bound: the harness scales the KSS gradient to <= this x the task gradient."""
        return self.config.grad_bound

    def transform_model(self, model, cfg):
        d = _model_width(model)
        if d is not None and self.config.rank > d:
            raise ConfigError(f"kss: rank r = {self.config.rank} exceeds the model's hidden size d = {d}; "
                              "lower the rank (kwargs {'rank': ...})")
        if self._seed is None:
            self.kss.generator.manual_seed(derive_seed(cfg.seed, 'kss') % (2 ** 63))
        return model

    def needs_hidden(self, step):
        return self.kss.wants(step)

    def extra_loss(self, model, batch, outputs: StepOutputs, step):
        if not self.kss.wants(step):
            return torch.zeros((), device=outputs.loss.device, dtype=outputs.loss.dtype)
        if outputs.hidden is None:
            raise RuntimeError(f"kss: step {step} is an application step but no hidden states were captured")
        return self.kss(outputs.hidden, step)

    def on_end(self, record, model):
        s = kss_log_summary(self.kss.log)
        s['config'] = self.config.to_dict()
        s['seed_derived_from_run'] = self._seed is None
        record['extras']['kss'] = s


@register_hooks('spectral_norm')
class SpectralNormHooks(TrainHooks):
    """Spectral normalization of every Linear in the residual blocks (module docstring)."""

    name = 'spectral_norm'

    def __init__(self, n_power_iterations: int = 1):
        if not is_int(n_power_iterations) or n_power_iterations < 1:
            raise ConfigError(f"spectral_norm: n_power_iterations must be an integer >= 1, "
                              f"got {n_power_iterations!r}")
        self.n_power_iterations = n_power_iterations
        self.layers: List[str] = []

    def transform_model(self, model, cfg):
        from torch.nn.utils.parametrizations import spectral_norm
        lins = block_linears(model)
        if not lins:
            raise ConfigError("spectral_norm: no nn.Linear inside the model's residual blocks")
        for name, lin in lins:
            spectral_norm(lin, 'weight', n_power_iterations=self.n_power_iterations)
        self.layers = [n for n, _ in lins]
        return model

    def on_end(self, record, model):
        sig = []
        with torch.no_grad():
            for _, lin in block_linears(model):
                w = lin.weight
                sig.append(float(torch.linalg.matrix_norm(w.detach().float(), 2)))
        record['extras']['spectral_norm'] = {'layers': self.layers, 'sigma_max_end': sig}


@register_hooks('weight_norm')
class WeightNormHooks(TrainHooks):
    """Weight normalization of every Linear in the residual blocks (module docstring)."""

    name = 'weight_norm'

    def __init__(self, dim: int = 0):
        if not is_int(dim):
            raise ConfigError(f"weight_norm: dim must be an integer, got {dim!r}")
        self.dim = dim
        self.layers: List[str] = []

    def transform_model(self, model, cfg):
        from torch.nn.utils.parametrizations import weight_norm
        lins = block_linears(model)
        if not lins:
            raise ConfigError("weight_norm: no nn.Linear inside the model's residual blocks")
        for name, lin in lins:
            weight_norm(lin, 'weight', dim=self.dim)
        self.layers = [n for n, _ in lins]
        return model

    def on_end(self, record, model):
        record['extras']['weight_norm'] = {'layers': self.layers, 'dim': self.dim}


class _Scheduled(TrainHooks):
    """Base of the regularizers that run every `every` steps on a random subset of layers.

    Subclasses set `name`, `double_backward` and implement `penalty(outputs) -> tensor`
    (unweighted); `extra_loss` returns lam * penalty on application steps, an exact 0 otherwise.
    Double-backward methods run the model's forward on application steps with the math SDPA kernel.
    """

    name = 'scheduled'
    double_backward = False

    def __init__(self, lam: float, every: int, layer_fraction: float = defaults.KSS_LAYER_FRACTION,
                 seed: Optional[int] = None):
        self.lam = _check_lam(self.name, lam)
        _check_schedule(self.name, every, layer_fraction)
        _check_seed(self.name, seed)
        self.every, self.layer_fraction, self._seed = int(every), float(layer_fraction), seed
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self.steps: List[int] = []
        self.seconds = 0.0
        self._armed = False
        self._sdpa_cm = None
        self._values: List[torch.Tensor] = []

    # -- schedule
    def wants(self, step: int) -> bool:
        return int(step) % self.every == 0

    def pick(self, candidates: Sequence[int]) -> List[int]:
        """A fresh random ceil(layer_fraction * n) subset of `candidates`, sorted."""
        n = len(candidates)
        k = max(1, min(n, math.ceil(self.layer_fraction * n - 1e-9)))
        idx = torch.randperm(n, generator=self.generator)[:k].tolist()
        return sorted(candidates[i] for i in idx)

    # -- hooks
    def transform_model(self, model, cfg):
        if self._seed is None:
            self.generator.manual_seed(derive_seed(cfg.seed, self.name) % (2 ** 63))
        if self.double_backward:
            model.register_forward_pre_hook(self._pre_forward)
            model.register_forward_hook(self._post_forward)
        return model

    # math SDPA kernel on application steps (double-backward methods only): armed by
    # before_step, entered by a forward pre-hook on the model in training mode (not the
    # profile or the evaluation), left by the forward hook
    def _arm(self, step, model, optimizer, info):
        self._post_forward(None, None, None)     # a forward that raised never reached its hook
        self._armed = self.wants(step)

    def _pre_forward(self, mod, args):
        if self._armed and mod.training and self._sdpa_cm is None:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            self._sdpa_cm = sdpa_kernel([SDPBackend.MATH])
            self._sdpa_cm.__enter__()

    def _post_forward(self, mod, args, out):
        if self._sdpa_cm is not None:
            cm, self._sdpa_cm = self._sdpa_cm, None
            cm.__exit__(None, None, None)

    def needs_hidden(self, step):
        return self.wants(step)

    def penalty(self, outputs: StepOutputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_loss(self, model, batch, outputs: StepOutputs, step):
        dev, dt = outputs.loss.device, outputs.loss.dtype
        if not self.wants(step):
            return torch.zeros((), device=dev, dtype=dt)
        if outputs.hidden is None:
            raise RuntimeError(f"{self.name}: step {step} is an application step but no hidden "
                               "states were captured")
        t0 = time.perf_counter()
        pen = self.penalty(outputs)
        self.seconds += time.perf_counter() - t0
        self._values.append(pen.detach().reshape(()))
        self.steps.append(int(step))
        return (self.lam * pen).to(dt)

    @property
    def values(self) -> List[float]:
        """Unweighted penalty of each application (one host sync)."""
        return torch.stack(self._values).float().cpu().tolist() if self._values else []

    def on_end(self, record, model):
        self._post_forward(None, None, None)
        self._armed = False
        values = self.values
        vals = [v for v in values if math.isfinite(v)]
        record['extras'][self.name] = {
            'lam': self.lam, 'every': self.every, 'layer_fraction': self.layer_fraction,
            'n_applications': len(values),
            'penalty_mean': sum(vals) / len(vals) if vals else None,   # unweighted (without lam)
            'penalty_last': values[-1] if values else None,
            'seconds_total': self.seconds,
            'curve': {'step': self.steps, 'penalty': values},
        }


@register_hooks('grad_penalty')
class GradPenaltyHooks(_Scheduled):
    """lam * mean_b ||d loss_b / d h_0^(b)||^2 by double backprop (module docstring)."""

    name = 'grad_penalty'
    double_backward = True
    before_step = _Scheduled._arm

    def __init__(self, lam: float = GRAD_PENALTY_LAMBDA, every: int = defaults.KSS_EVERY):
        super().__init__(lam, every, 1.0, seed=0)

    def penalty(self, outputs):
        h0 = outputs.hidden[0]
        if not h0.requires_grad:
            raise RuntimeError("grad_penalty: h_0 carries no graph (is the embedding frozen?)")
        (g,) = torch.autograd.grad(outputs.loss, h0, create_graph=True)
        return g.float().pow(2).sum() * h0.shape[0]


@register_hooks('random_l2')
class RandomL2Hooks(_Scheduled):
    """lam * mean over a random half of h_1..h_L of mean(h ** 2) (module docstring)."""

    name = 'random_l2'

    def __init__(self, lam: float = GENERIC_LAMBDA, every: int = defaults.KSS_EVERY,
                 layer_fraction: float = defaults.KSS_LAYER_FRACTION, seed: Optional[int] = None):
        super().__init__(lam, every, layer_fraction, seed)

    def penalty(self, outputs):
        hs = outputs.hidden
        layers = self.pick(list(range(1, len(hs))))
        return torch.stack([hs[i].float().pow(2).mean() for i in layers]).mean()


def hutchinson_frobenius_sq(out: torch.Tensor, inp: torch.Tensor, n_probes: int = 1,
                            generator: Optional[torch.Generator] = None,
                            create_graph: bool = True) -> torch.Tensor:
    """Unbiased estimate of ||d out / d inp||_F^2 (all entries of both tensors):
    mean over `n_probes` Gaussian probes v of ||J^T v||^2 (vector-Jacobian products)."""
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    total = None
    for _ in range(n_probes):
        v = torch.randn(out.shape, generator=generator, device=generator.device if generator is not None
                        else out.device, dtype=out.dtype).to(out.device)
        (u,) = torch.autograd.grad(out, inp, grad_outputs=v, create_graph=create_graph, retain_graph=True)
        s = u.float().pow(2).sum()
        total = s if total is None else total + s
    return total / n_probes


@register_hooks('jacobian_penalty')
class JacobianPenaltyHooks(_Scheduled):
    """lam * mean over a random half of the transitions of ||dh_{l+1}/dh_l||_F^2 / (n_tokens d),
    Hutchinson-estimated (module docstring)."""

    name = 'jacobian_penalty'
    double_backward = True
    before_step = _Scheduled._arm

    def __init__(self, lam: float = GENERIC_LAMBDA, every: int = defaults.KSS_EVERY,
                 layer_fraction: float = defaults.KSS_LAYER_FRACTION, n_probes: int = 1,
                 seed: Optional[int] = None):
        super().__init__(lam, every, layer_fraction, seed)
        if not is_int(n_probes) or n_probes < 1:
            raise ConfigError(f"jacobian_penalty: n_probes must be an integer >= 1, got {n_probes!r}")
        self.n_probes = n_probes

    def penalty(self, outputs):
        hs = outputs.hidden
        layers = self.pick(list(range(len(hs) - 1)))
        vals = []
        for l in layers:
            x, y = hs[l], hs[l + 1]
            if not x.requires_grad:
                raise RuntimeError(f"jacobian_penalty: h_{l} carries no graph")
            est = hutchinson_frobenius_sq(y, x, self.n_probes, generator=self.generator)
            vals.append(est / x.numel())        # numel = n_tokens * d: an identity block gives 1
        return torch.stack(vals).mean()

    def on_end(self, record, model):
        super().on_end(record, model)
        record['extras'][self.name]['n_probes'] = self.n_probes


@register_hooks('activation_variance')
class ActivationVarianceHooks(_Scheduled):
    """lam * mean over a random half of h_1..h_L of (log v_l - log v_0)^2 (module docstring)."""

    name = 'activation_variance'
    EPS = 1e-12

    def __init__(self, lam: float = GENERIC_LAMBDA, every: int = defaults.KSS_EVERY,
                 layer_fraction: float = defaults.KSS_LAYER_FRACTION, seed: Optional[int] = None):
        super().__init__(lam, every, layer_fraction, seed)

    @staticmethod
    def layer_variance(h: torch.Tensor) -> torch.Tensor:
        """Mean over channels of the per-channel variance over tokens (population, ddof 0)."""
        x = h.float().reshape(-1, h.shape[-1])
        return x.var(0, unbiased=False).mean()

    def penalty(self, outputs):
        hs = outputs.hidden
        layers = self.pick(list(range(1, len(hs))))
        log_v0 = torch.log(self.layer_variance(hs[0].detach()) + self.EPS)
        return torch.stack([(torch.log(self.layer_variance(hs[i]) + self.EPS) - log_v0).square()
                            for i in layers]).mean()


# --- stabilizers practitioners use (not rows of the paper's tables; rows.TABLES['practice']) ---------
Z_LOSS_COEFF = 1e-4            # PaLM (Chowdhery et al. 2022, Sec. 5 "Training instability"): 1e-4

# the logits each task's loss reads (rksp.harness.loop's loss functions): recall the last position,
# the LMs every position but the last (next-token targets), images the (B, C) class logits
_LOSS_POSITIONS = {'recall': 'last', 'synthetic_lm': 'lm', 'wikitext103': 'lm', 'cifar10': 'all'}


def loss_logits(logits: torch.Tensor, positions: str = 'all') -> torch.Tensor:
    """The rows of `logits` (..., V) a softmax cross-entropy reads, as (N, V): 'last' = logits[:, -1],
    'lm' = logits[:, :-1] (next-token targets), 'all' = every position."""
    if positions == 'last' and logits.dim() == 3:
        logits = logits[:, -1, :]
    elif positions == 'lm' and logits.dim() == 3:
        logits = logits[:, :-1, :]
    return logits.reshape(-1, logits.shape[-1])


def z_loss(logits: torch.Tensor, coeff: float = Z_LOSS_COEFF, positions: str = 'all') -> torch.Tensor:
    """PaLM's auxiliary z-loss: coeff * mean over the rows (`loss_logits`) of log(Z)^2, with
    log Z = logsumexp over the vocabulary (in float32). It pulls log Z toward 0 and keeps the
    softmax normalizer from drifting; it does not change the task loss's minimizers."""
    lse = torch.logsumexp(loss_logits(logits, positions).float(), dim=-1)
    return coeff * lse.square().mean()


@register_hooks('z_loss')
class ZLossHooks(TrainHooks):
    """z-loss on the output logits (PaLM): `extra_loss` = coeff * mean(logsumexp(logits)^2) every step,
    over the logits the task loss reads (`positions='loss'`: chosen from the run's task at `on_start`;
    or 'all' / 'last' / 'lm'). As every extra loss with div_grad='task', the divergence label reads
    the task gradient alone. `record['extras']['z_loss']`: coeff, positions, n_applications,
    z_sq_mean / z_sq_last (the unweighted mean log Z^2 over the logged steps, step 1 and every
    `log_every`-th) and that curve."""

    name = 'z_loss'
    POSITIONS = ('loss', 'all', 'last', 'lm')

    def __init__(self, coeff: float = Z_LOSS_COEFF, positions: str = 'loss', log_every: int = 10):
        self.coeff = _check_lam('z_loss', coeff)
        if positions not in self.POSITIONS:
            raise ConfigError(f"z_loss: positions must be one of {self.POSITIONS}, got {positions!r}")
        if not is_int(log_every) or log_every < 1:
            raise ConfigError(f"z_loss: log_every must be an integer >= 1, got {log_every!r}")
        self.positions, self.log_every = positions, int(log_every)
        self.resolved = 'all' if positions == 'loss' else positions
        self.n_applications = 0
        self._steps: List[int] = []
        self._values: List[torch.Tensor] = []

    def on_start(self, model, optimizer, cfg, ctx):
        if self.positions == 'loss':
            self.resolved = _LOSS_POSITIONS.get(cfg.task, 'all')

    def extra_loss(self, model, batch, outputs: StepOutputs, step):
        z_sq = z_loss(outputs.logits, 1.0, self.resolved)
        self.n_applications += 1
        if step == 1 or step % self.log_every == 0:
            self._steps.append(int(step))
            self._values.append(z_sq.detach().reshape(()))
        return (self.coeff * z_sq).to(outputs.loss.dtype)

    def on_end(self, record, model):
        vals = torch.stack(self._values).float().cpu().tolist() if self._values else []
        fin = [v for v in vals if math.isfinite(v)]
        record['extras'][self.name] = {
            'coeff': self.coeff, 'positions': self.resolved, 'n_applications': self.n_applications,
            'z_sq_mean': sum(fin) / len(fin) if fin else None, 'z_sq_last': vals[-1] if vals else None,
            'curve': {'step': self._steps, 'z_sq': vals}}
