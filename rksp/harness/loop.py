"""Training harness: one run = one `TrainConfig` -> one JSON-able record.

A run builds the task data and the model, profiles the model at initialization
with RKSP (`rksp.core.profiling.profile`, one batch of training inputs), trains it
while watching for divergence, evaluates it and returns a record (schema below).
`rksp.harness.sweep` runs many of these and stores one JSON file per run.

Divergence (paper Sec. 3.1; METHOD.md §0): a run has diverged at step s when,
at that step, the task loss > DIVERGE_LOSS (50) or the L2 norm of all
gradients, taken *before* clipping, > DIVERGE_GRAD_NORM (500). A non-finite
loss or gradient norm also counts (ours). The run stops at that step, before
the optimizer update, and the step is recorded; `train` never raises for
divergence. Steps are numbered from 1. Only the task loss is judged: a hook's
extra loss (e.g. the KSS regularizer) is recorded separately and not compared
to the threshold. Which gradient is judged is `div_grad` (defaults.DIV_GRAD):
'task' (default) = the gradient of the task loss alone (on steps with extra
losses the default step backprops the task loss first and reads its norm; a
hook with its own `train_step`, e.g. SAM, is judged on the total gradient),
'total' = the gradient actually applied (task + extra losses). Either way the
record's `div_step_total_grad` is the first step at which the 'total' reading
would have fired (runs agree up to that step), so both labels are available.
On every step with that separate regularizer backward, `extras['reg_grad']` holds
{'step','task_grad_norm','reg_grad_norm','scale'}: the two gradient norms (before
any bound) and the scale applied to the regularizer's gradient (1 without a bound;
a hook's `extra_grad_bound` c scales it to <= c x the task gradient, e.g. KSS
grad_bound; a bound also makes 'total' take the two-pass step).

Gradient baselines (Table 2), from the per-step curves (see `gradient_baselines`):
  grad_norm_step1     grad norm after step 1's backward
  grad_norm_step100   grad norm at step 100
  grad_var_1_100      population variance (ddof=0) of the grad norms of steps 1..100
  loss_spikes_1_500   steps s in 1..500 whose loss > SPIKE_FACTOR x the median of
                      the previous SPIKE_WINDOW steps' losses
When a run stops before step 100/500 (divergence, or fewer steps), each uses
what exists: grad_norm_step100 is the grad norm at the run's last step (for a
diverged run the divergence step), the variance and the spike count run over
steps 1..last. Details: the spike window at step s is the previous
min(SPIKE_WINDOW, s-1) steps (step 1 never counts), only their finite losses
enter the median, and a non-finite loss counts as a spike; non-finite grad
norms are left out of the variance (NaN when none is finite).

Choices beyond the paper (defaults of `TrainConfig`; docs/choices.md "Choices beyond the
paper"): AdamW with betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on
parameters with >= 2 dimensions only (matrices and embeddings; biases and norm
gains are not decayed); linear warmup over `warmup_steps` (default 100, the
paper's lower end) then cosine decay to `min_lr_ratio` x lr at the last step;
no gradient clipping; batches drawn without replacement from a fresh
permutation each epoch (torch.Generator seeded by the run seed); the RKSP
profile at init runs on `profile_batch_size` (default: batch_size) training
inputs drawn with their own generator, inside `torch.random.fork_rng`, so
turning the profile on or off never changes the training trajectory.

Record schema (`train` returns it; every value is JSON-serializable; NaN/inf
are kept and written by `json` as NaN/Infinity):
  schema_version, status ('ok'), hash (config_hash of `config`), config (dict),
  task_kind ('recall'|'lm'|'image'), data_name, data_is_standin, n_train, n_val,
  seq_len, unigram_ppl (LM runs only: the add-one unigram perplexity of the val targets under
  the training windows' token counts, the yardstick of val_ppl), model_config (resolved
  GPTConfig/ViTConfig as dict), n_params,
  init, init_std (the weight init, `model_cfg.init` / `init_std`: 'gpt2' | 'normal' | 'torch' for
  GPT, 'gpt2' for MoE, 'model_default' for the other models; a config without `init` is 'gpt2'),
  device (the torch device the run used, e.g. 'cpu' or 'cuda:0'; `config.device` may say 'auto'),
  profile ({'summary': {...}, 'layers': [...], 'meta': {...}} or None), profile_error,
  profile_end (same, of the trained model on the same inputs; only with profile_at_end and no divergence)
  (None, or 'ExcType: message' when the profiler raised: the run still trains, profile=None),
  steps_planned, steps_done, diverged, div_step (int|None),
  div_reason (None|'loss'|'grad_norm'|'nonfinite_loss'|'nonfinite_grad'),
  div_value (the offending loss / grad norm), final_train_loss,
  grad_norm_step1, grad_norm_step100, grad_var_1_100, loss_spikes_1_500,
  curves {'step','loss','grad_norm','lr'[,'extra_loss']}: every step up to
  `full_log_steps` (500), then every `log_every` steps, and always the last step,
  eval_curve {'step','val_loss','val_acc'[,'val_ppl']} (every `eval_every` steps),
  val_loss, val_acc, val_ppl (LM tasks; None otherwise),
  wall_time, train_time, train_cpu_time (process CPU seconds of the loop), profile_time,
  eval_time, steps_per_sec,
  started_at, finished_at, env {'torch','device','num_threads','python'},
  extras (dict filled by hooks; 'reg_grad' by the harness, see above).
`VOLATILE_FIELDS` lists the fields that may differ between two runs of the same
config; `comparable(record)` drops them.

Hooks (`TrainHooks`; several combine, config hooks first) let later features
change the run without copying the loop:
  transform_model(model, cfg) -> model          before profiling and the optimizer (μP, spectral norm)
  make_optimizer(params, cfg, model) -> opt|None  override the optimizer (params = param groups)
  on_start(model, optimizer, cfg, ctx)
  needs_hidden(step) -> bool                   capture the residual stream h_0..h_L this step
  extra_loss(model, batch, outputs, step) -> tensor|None   added to the task loss (KSS);
                                               outputs.hidden holds h_0..h_L when requested
  train_step(step, model, optimizer, batch, ctx) -> task_loss | (task_loss, extra) | None
                                               replace forward/backward (SAM: two passes); the
                                               harness then takes the grad norm, checks divergence,
                                               clips and calls optimizer.step()
  before_step(step, model, optimizer, info) / after_step(step, model, optimizer, info)
                                               after_step runs for completed steps only (not the
                                               divergence step); info has step, lr, loss, grad_norm
  on_end(record, model)                        add fields to record['extras']
  extra_grad_bound (attribute; None)           c: the extra losses' gradient is scaled to <= c x the task
                                               gradient (KSS grad_bound; not with a hook that replaces the step)
Config-level hooks (`TrainConfig.hooks`, serializable, part of the hash) are
names registered in `HOOKS` (`@register_hooks(name)`; the package's own register on first lookup,
see `PLUGIN_MODULES`) or 'package.module:factory' strings, or {'target': ..., 'kwargs': {...}}.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from rksp.harness.build import TaskData, build_run, derive_seed, init_fields, profile_indices
from rksp.harness.config import TrainConfig, config_hash, planned_steps
from rksp.harness.hooks import HookList, StepContext, TrainHooks, total_grad_norm
from rksp.harness.labels import divergence_check, gradient_baselines
from rksp.harness.record import SCHEMA_VERSION, to_jsonable
from rksp.harness.resolve import make_optimizer, param_groups, run_hooks, validated

__all__ = ['train', 'setup', 'one_step', 'run_steps', 'finish', 'Run', 'StepValues', 'Curves', 'Outcome',
           'evaluate', 'lr_factor', 'param_groups', 'BatchSampler']


def _loss_fn_for(kind: str):
    if kind == 'recall':
        def loss(logits, batch):
            return F.cross_entropy(logits[:, -1, :], batch[1])
    elif kind == 'lm':
        def loss(logits, batch):
            x = batch[0]
            return F.cross_entropy(logits[:, :-1, :].reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
    else:
        def loss(logits, batch):
            return F.cross_entropy(logits, batch[1])
    return loss


@torch.no_grad()
def evaluate(model: nn.Module, data: TaskData, batch_size: int, device) -> Dict[str, Optional[float]]:
    """Validation loss and accuracy (recall: last position; LM: next-token, all
    positions t=1..T-1, token-weighted, plus ppl = exp(loss); image: top-1)."""
    was_training = model.training
    model.eval()
    tot_loss = torch.zeros((), dtype=torch.float64, device=device)
    tot_correct = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    n = data.n_val
    for i in range(0, n, batch_size):
        x = data.x_val[i:i + batch_size].to(device)
        logits = model(x)
        if data.kind == 'lm':
            lg = logits[:, :-1, :].reshape(-1, logits.size(-1))
            tgt = x[:, 1:].reshape(-1)
        else:
            y = data.y_val[i:i + batch_size].to(device)
            lg = logits[:, -1, :] if data.kind == 'recall' else logits
            tgt = y
        tot_loss += F.cross_entropy(lg.float(), tgt, reduction='sum').double()
        tot_correct += (lg.argmax(-1) == tgt).sum().double()
        count += tgt.numel()
    model.train(was_training)
    loss, correct = (tot_loss / count).item(), (tot_correct / count).item()
    out = {'val_loss': loss, 'val_acc': correct, 'val_ppl': None}
    if data.kind == 'lm':
        out['val_ppl'] = loss if math.isnan(loss) else (math.exp(loss) if loss < 700 else float('inf'))
    return out


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float = 0.0) -> float:
    """LR multiplier at `step` (1-based): linear warmup to 1 over `warmup` steps, then
    'cosine' (to min_ratio at `total`), 'linear' (to min_ratio) or 'constant'."""
    if warmup > 0 and step <= warmup:
        return step / warmup
    if schedule == 'constant':
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == 'cosine':
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0 - (1.0 - min_ratio) * p


def _resolve_device(s: str) -> torch.device:
    if s == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(s)


def _clip(params: Sequence[torch.Tensor], max_norm: float, total: torch.Tensor) -> None:
    grads_params = [p for p in params if p.grad is not None]
    if hasattr(torch.nn.utils, 'clip_grads_with_norm_'):
        torch.nn.utils.clip_grads_with_norm_(grads_params, max_norm, total)
    else:  # pragma: no cover - older torch
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_([p.grad for p in grads_params], coef)


class BatchSampler:
    """Batches without replacement; a fresh permutation each epoch (batches may straddle epochs)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.bs, self.g = n, batch_size, generator
        self.buf = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while self.buf.numel() < self.bs:
            self.buf = torch.cat([self.buf, torch.randperm(self.n, generator=self.g)])
        idx, self.buf = self.buf[:self.bs], self.buf[self.bs:]
        return idx


def _downsample_idx(n: int, full: int, every: int) -> List[int]:
    idx = list(range(min(n, full)))
    idx += list(range(full + every - 1, n, every)) if n > full else []
    if n and (not idx or idx[-1] != n - 1):
        idx.append(n - 1)
    return idx


def _run_profile(model, inputs, cfg: TrainConfig):
    from rksp.core.profiling import profile as rksp_profile
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            prof = rksp_profile(model, inputs, n_snapshots=cfg.profile_n_snapshots, seed=cfg.profile_seed,
                                progress=False)
    finally:
        model.train(was_training)
    d = prof.to_dict() if hasattr(prof, 'to_dict') else {'summary': prof.summary, 'layers': prof.layers}
    return to_jsonable(d)


# ----------------------------------------------------------------------------- one run: setup, steps, finish

@dataclass
class Run:
    """What `setup` builds for the steps and `finish`: the resolved config and hooks, the data on the
    device, the model, its optimizer and step context, the batch stream, and the record so far."""
    cfg: TrainConfig
    hooks: HookList
    device: torch.device
    data: TaskData
    model: nn.Module
    params: List[torch.Tensor]               # the parameters with requires_grad (after transform_model)
    opt: torch.optim.Optimizer
    init_lrs: List[float]                    # each group's lr before the schedule
    ctx: StepContext
    sampler: 'BatchSampler'
    x_train: torch.Tensor
    y_train: Optional[torch.Tensor]
    profile_idx: Optional[torch.Tensor]      # the profiled inputs (None without profile_at_init)
    steps: int                               # planned
    eval_bs: int
    record: Dict[str, Any]
    profile_time: float


class StepValues(NamedTuple):
    """One step's numbers, read from the device in one host sync."""
    loss: float                      # task loss
    grad_norm: float                 # norm of the gradient applied (before clipping): the 'total' label reads it
    label_grad_norm: float           # the norm the divergence label reads (div_grad: the task gradient alone)
    extra_loss: Optional[float]      # the hooks' extra loss (None: no hook added one this step)
    reg_grad_norm: Optional[float]   # the extra losses' own gradient norm (two-pass steps only)
    reg_grad_scale: Optional[float]  # the scale the bound applied to it (1.0 without a bound)


@dataclass
class Curves:
    """Per-step values of the steps run, the evaluations during training, the regularizer gradients."""
    loss: List[float] = field(default_factory=list)
    grad_norm: List[float] = field(default_factory=list)
    lr: List[float] = field(default_factory=list)
    extra_loss: List[float] = field(default_factory=list)      # NaN on steps without an extra loss
    any_extra: bool = False
    reg_grad: Dict[str, List[float]] = field(
        default_factory=lambda: {'step': [], 'task_grad_norm': [], 'reg_grad_norm': [], 'scale': []})
    eval_curve: Dict[str, List] = field(
        default_factory=lambda: {'step': [], 'val_loss': [], 'val_acc': [], 'val_ppl': []})

    def add(self, step: int, v: StepValues, lr: float) -> bool:
        """Append one step; True when it had a separate regularizer backward (reg_grad grew)."""
        if v.reg_grad_norm is not None:      # regularizer vs task gradient, before any bound
            self.reg_grad['step'].append(step)
            self.reg_grad['task_grad_norm'].append(v.label_grad_norm)
            self.reg_grad['reg_grad_norm'].append(v.reg_grad_norm)
            self.reg_grad['scale'].append(v.reg_grad_scale)
        self.loss.append(v.loss)
        self.grad_norm.append(v.grad_norm)
        self.lr.append(lr)
        if v.extra_loss is not None:
            self.any_extra = True
            self.extra_loss.append(v.extra_loss)
        else:
            self.extra_loss.append(float('nan'))
        return v.reg_grad_norm is not None


@dataclass
class Outcome:
    """How the steps ended: divergence (the label and the 'total' reading), steps done, timings."""
    steps_done: int = 0
    diverged: bool = False
    div_step: Optional[int] = None
    div_reason: Optional[str] = None
    div_value: Optional[float] = None
    strict_step: Optional[int] = None        # first step at which the 'total' gradient reading fires
    train_time: float = 0.0
    train_cpu_time: float = 0.0
    eval_time: float = 0.0                   # evaluations during training, then + the final one


def train(cfg: Union[TrainConfig, Dict[str, Any]], hooks: Union[None, TrainHooks, Sequence[TrainHooks]] = None,
          progress: bool = False) -> Dict[str, Any]:
    """Run one training run and return its record (module docstring: schema).

    `hooks` are added after the config's own hooks (`cfg.hooks`). Divergence never
    raises; any other error (bad data, a hook raising) propagates to the caller.
    """
    t_start = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec='seconds')
    cfg = validated(cfg)
    hk = run_hooks(cfg, hooks)
    device = _resolve_device(cfg.device)
    with _deterministic(cfg.deterministic, device):
        run = setup(cfg, hk, device)
        curves = Curves()
        outcome = run_steps(run, curves, progress)
        return finish(run, curves, outcome, t_start, started_at)


@contextlib.contextmanager
def _deterministic(on: bool, device: torch.device):
    """Deterministic algorithms for the run (warn only), restored afterwards."""
    prev_det = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    det_mod = getattr(torch.utils, 'deterministic', None)
    prev_fill = getattr(det_mod, 'fill_uninitialized_memory', None)
    if on:
        if device.type == 'cuda':
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        if prev_fill is not None:
            # deterministic mode NaN-fills every torch.empty: ~3-5% of a CPU step, and
            # nothing here reads uninitialized memory
            det_mod.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        if prev_fill is not None:
            det_mod.fill_uninitialized_memory = prev_fill


def setup(cfg: TrainConfig, hk: HookList, device: torch.device) -> Run:
    """Build the run (seeded data and model, the hooks' model transform), profile it at init, build
    the optimizer and the step context, call the hooks' `on_start`."""
    data, model, model_config = build_run(cfg)
    model = hk.transform_model(model, cfg).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    params = [p for p in model.parameters() if p.requires_grad]

    steps = planned_steps(cfg.steps, cfg.epochs, data.n_train, cfg.batch_size)
    cfg_dict = cfg.to_dict()
    record: Dict[str, Any] = {
        'schema_version': SCHEMA_VERSION, 'status': 'ok', 'hash': config_hash(cfg_dict), 'config': cfg_dict,
        'task_kind': data.kind, 'data_name': data.data_name, 'data_is_standin': data.is_standin,
        'n_train': data.n_train, 'n_val': data.n_val, 'seq_len': data.seq_len,
        **({'unigram_ppl': data.unigram_ppl} if data.kind == 'lm' else {}),
        'model_config': to_jsonable(model_config), 'n_params': int(n_params),
        **init_fields(cfg.model, model_config), 'device': str(device),
        'profile': None, 'profile_error': None, 'steps_planned': int(steps), 'extras': {},
    }

    x_train = data.x_train.to(device)
    y_train = data.y_train.to(device) if data.y_train is not None else None

    # --- RKSP profile at init, on a batch of training inputs with its own generator
    t0 = time.perf_counter()
    pidx = None
    if cfg.profile_at_init:
        pidx = profile_indices(cfg, data.n_train).to(device)
        try:
            record['profile'] = _run_profile(model, x_train[pidx], cfg)
        except Exception as e:  # noqa: BLE001 - the run (and its divergence label) still counts
            record['profile_error'] = f'{type(e).__name__}: {e}'
            warnings.warn(f"RKSP profile at init failed ({record['profile_error']}); training goes on "
                          "and the record carries profile=None", RuntimeWarning, stacklevel=2)
    profile_time = time.perf_counter() - t0

    opt = make_optimizer(cfg, hk, model)
    for gr in opt.param_groups:
        gr.setdefault('initial_lr', gr['lr'])
    init_lrs = [gr['initial_lr'] for gr in opt.param_groups]

    ctx = StepContext(model, opt, cfg, hk, _loss_fn_for(data.kind), device, record['extras'])
    hk.on_start(model, opt, cfg, ctx)

    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 'batches'))
    return Run(cfg=cfg, hooks=hk, device=device, data=data, model=model, params=params, opt=opt,
               init_lrs=init_lrs, ctx=ctx, sampler=BatchSampler(data.n_train, cfg.batch_size, gen),
               x_train=x_train, y_train=y_train, profile_idx=pidx, steps=steps,
               eval_bs=cfg.eval_batch_size or cfg.batch_size, record=record, profile_time=profile_time)


def one_step(run: Run, step: int, batch) -> Tuple[StepValues, torch.Tensor]:
    """Forward and backward of one step (a hook's `train_step` or the default step); returns its
    values (one host sync) and the gradient norm tensor (for clipping). No optimizer update."""
    hk, ctx = run.hooks, run.ctx
    run.opt.zero_grad(set_to_none=True)
    ctx.task_grad_norm = ctx.reg_grad_norm = ctx.reg_grad_scale = None
    out = hk.train_step(step, run.model, run.opt, batch, ctx) if hk.has_step else None
    if out is None:
        task_loss, extra = ctx.default_step(step, batch)
    elif isinstance(out, (tuple, list)):
        task_loss, extra = out[0], (out[1] if len(out) > 1 else None)
    else:
        task_loss, extra = out, None
    gn = total_grad_norm(run.params)
    return _read_values(task_loss, gn, extra, ctx), gn


def _read_values(task_loss: torch.Tensor, gn: torch.Tensor, extra, ctx: StepContext) -> StepValues:
    dev = task_loss.device
    tgn, rgn, rsc = ctx.task_grad_norm, ctx.reg_grad_norm, ctx.reg_grad_scale
    vals = [task_loss.detach().float().reshape(()), gn.detach().float().reshape(()).to(dev),
            (tgn if tgn is not None else gn).detach().float().reshape(()).to(dev)]
    if extra is not None:
        vals.append(torch.as_tensor(extra).detach().float().reshape(()).to(dev))
    if rgn is not None:
        vals += [rgn.float().reshape(()).to(dev),
                 (rsc if rsc is not None else torch.ones(())).float().reshape(()).to(dev)]
    synced = torch.stack(vals).tolist()     # the one host sync per step
    rest = iter(synced[3:])
    extra_v = next(rest) if extra is not None else None
    reg_norm, reg_scale = (next(rest), next(rest)) if rgn is not None else (None, None)
    return StepValues(loss=synced[0], grad_norm=synced[1], label_grad_norm=synced[2], extra_loss=extra_v,
                      reg_grad_norm=reg_norm, reg_grad_scale=reg_scale)


def run_steps(run: Run, curves: Curves, progress: bool = False) -> Outcome:
    """The training steps: schedule, batch, `one_step`, the divergence label (stop before the update),
    clipping, the optimizer update, the hooks around the step, evaluations during training."""
    cfg, hk, model, opt, data = run.cfg, run.hooks, run.model, run.opt, run.data
    out = Outcome()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=run.steps, desc=f"train {run.record['hash'][:8]}", leave=False)

    t_train, c_train, eval_cpu = time.perf_counter(), time.process_time(), 0.0
    s = 0
    for s in range(1, run.steps + 1):
        f = lr_factor(s, run.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for gr, l0 in zip(opt.param_groups, run.init_lrs):
            gr['lr'] = l0 * f
        lr_now = cfg.lr * f
        idx = run.sampler.next()
        if run.device.type != 'cpu':
            idx = idx.to(run.device, non_blocking=True)
        batch = (run.x_train[idx], run.y_train[idx] if run.y_train is not None else None)
        if hk.has_before:
            hk.before_step(s, model, opt, {'step': s, 'lr': lr_now, 'batch': batch})

        v, gn = one_step(run, s, batch)
        if curves.add(s, v, lr_now):
            run.record['extras']['reg_grad'] = curves.reg_grad

        if out.strict_step is None and divergence_check(v.loss, v.grad_norm) is not None:
            out.strict_step = s          # the label on the total gradient ('total') would stop here
        reason = divergence_check(v.loss, v.label_grad_norm)
        if reason is not None:
            out.diverged, out.div_step, out.div_reason = True, s, reason
            out.div_value = v.loss if reason in ('loss', 'nonfinite_loss') else v.label_grad_norm
            break

        if cfg.grad_clip is not None:
            _clip(run.params, cfg.grad_clip, gn)
        opt.step()

        if hk.has_after:
            info = {'step': s, 'lr': lr_now, 'loss': v.loss, 'grad_norm': v.grad_norm, 'extra_loss': v.extra_loss}
            hk.after_step(s, model, opt, info)
        if cfg.eval_every and s % cfg.eval_every == 0 and s < run.steps:
            te, ce = time.perf_counter(), time.process_time()
            ev = evaluate(model, data, run.eval_bs, run.device)
            curves.eval_curve['step'].append(s)
            for k in ('val_loss', 'val_acc', 'val_ppl'):
                curves.eval_curve[k].append(ev[k])
            out.eval_time += time.perf_counter() - te
            eval_cpu += time.process_time() - ce
        if bar is not None:
            bar.update(1)
            if s % 10 == 0:
                bar.set_postfix(loss=f'{v.loss:.3f}', gn=f'{v.grad_norm:.2f}')
    out.steps_done = s if run.steps >= 1 else 0
    out.train_time = time.perf_counter() - t_train - out.eval_time
    out.train_cpu_time = time.process_time() - c_train - eval_cpu     # CPU seconds of this process (robust to load)
    if bar is not None:
        bar.close()
    return out


def finish(run: Run, curves: Curves, out: Outcome, t_start: float, started_at: str) -> Dict[str, Any]:
    """Final evaluation, the curves kept, the labels and baselines, the profile at the end, the
    hooks' `on_end`, timings: the complete record."""
    cfg, data, record = run.cfg, run.data, run.record
    te = time.perf_counter()
    final = evaluate(run.model, data, run.eval_bs, run.device)
    eval_time = out.eval_time + (time.perf_counter() - te)

    losses, gnorms = curves.loss, curves.grad_norm
    keep = _downsample_idx(len(losses), cfg.full_log_steps, cfg.log_every)
    kept = {'step': [i + 1 for i in keep], 'loss': [losses[i] for i in keep],
            'grad_norm': [gnorms[i] for i in keep], 'lr': [curves.lr[i] for i in keep]}
    if curves.any_extra:
        kept['extra_loss'] = [curves.extra_loss[i] for i in keep]
    eval_curve = curves.eval_curve
    if data.kind != 'lm':
        eval_curve.pop('val_ppl')

    diverged = out.diverged
    record.update({
        'steps_done': int(out.steps_done), 'diverged': diverged, 'div_step': out.div_step,
        'div_reason': out.div_reason, 'div_value': out.div_value, 'div_step_total_grad': out.strict_step,
        'final_train_loss': losses[-1] if losses else None,
        # baselines from the steps *before* a divergence: the divergence step itself is the label
        **gradient_baselines(losses[:-1] if diverged else losses, gnorms[:-1] if diverged else gnorms),
        'curves': kept, 'eval_curve': eval_curve,
        'val_loss': final['val_loss'], 'val_acc': final['val_acc'], 'val_ppl': final['val_ppl'],
    })
    if cfg.profile_at_end and cfg.profile_at_init and not diverged:
        try:
            record['profile_end'] = _run_profile(run.model, run.x_train[run.profile_idx], cfg)
        except Exception as e:  # noqa: BLE001
            record['profile_end'] = None
            record['profile_error'] = f'end: {type(e).__name__}: {e}'
    run.hooks.on_end(record, run.model)
    record['extras'] = to_jsonable(record['extras'])
    wall = time.perf_counter() - t_start
    train_time = out.train_time
    record.update({
        'wall_time': wall, 'train_time': train_time, 'train_cpu_time': out.train_cpu_time,
        'profile_time': run.profile_time, 'eval_time': eval_time,
        'steps_per_sec': out.steps_done / train_time if train_time > 0 else None,
        'started_at': started_at, 'finished_at': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'env': {'torch': torch.__version__, 'python': platform.python_version(), 'device': str(run.device),
                'num_threads': torch.get_num_threads(), 'pid': os.getpid()},
    })
    return record
