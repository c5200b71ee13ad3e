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

Choices beyond the paper (defaults of `TrainConfig`; README "Choices beyond the
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
  seq_len, model_config (resolved GPTConfig/ViTConfig as dict), n_params,
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
Config-level hooks (`TrainConfig.hooks`, serializable, part of the hash) are
names registered in `HOOKS` (`@register_hooks(name)`; the package's own register on first lookup,
see `PLUGIN_MODULES`) or 'package.module:factory' strings, or {'target': ..., 'kwargs': {...}}.
"""

from __future__ import annotations

import math
import os
import platform
import time
import warnings
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from rksp.errors import ConfigError
from rksp.harness.build import TaskData, build_run, derive_seed, init_fields, profile_indices
from rksp.harness.config import TrainConfig, config_hash
from rksp.harness.hooks import HookList, StepContext, TrainHooks, total_grad_norm
from rksp.harness.labels import divergence_check, gradient_baselines
from rksp.harness.record import SCHEMA_VERSION, to_jsonable
from rksp.harness.registry import resolve_hooks, resolve_optimizer


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


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{'params': decay, 'weight_decay': weight_decay}]
    if no_decay:
        groups.append({'params': no_decay, 'weight_decay': 0.0})
    return groups


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


def train(cfg: Union[TrainConfig, Dict[str, Any]], hooks: Union[None, TrainHooks, Sequence[TrainHooks]] = None,
          progress: bool = False) -> Dict[str, Any]:
    """Run one training run and return its record (module docstring: schema).

    `hooks` are added after the config's own hooks (`cfg.hooks`). Divergence never
    raises; any other error (bad data, a hook raising) propagates to the caller.
    """
    t_start = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec='seconds')
    cfg = TrainConfig.from_dict(cfg) if not isinstance(cfg, TrainConfig) else cfg
    cfg.validate()
    cfg_dict = cfg.to_dict()
    extra_hooks = [] if hooks is None else ([hooks] if isinstance(hooks, TrainHooks) else list(hooks))
    hk = HookList(resolve_hooks(cfg.hooks) + extra_hooks)
    if hk.has_step and hk.extra_grad_bound is not None:
        raise ConfigError(f"a bound on the regularizer gradient (extra_grad_bound {hk.extra_grad_bound}, e.g. KSS "
                          f"grad_bound) is applied by the default step, but hook {type(hk._step).__name__} "
                          "replaces the step (e.g. SAM)")
    device = _resolve_device(cfg.device)

    prev_det = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    det_mod = getattr(torch.utils, 'deterministic', None)
    prev_fill = getattr(det_mod, 'fill_uninitialized_memory', None)
    if cfg.deterministic:
        if device.type == 'cuda':
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        if prev_fill is not None:
            # deterministic mode NaN-fills every torch.empty: ~3-5% of a CPU step, and
            # nothing here reads uninitialized memory
            det_mod.fill_uninitialized_memory = False
    try:
        return _train(cfg, cfg_dict, hk, device, progress, t_start, started_at)
    finally:
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        if prev_fill is not None:
            det_mod.fill_uninitialized_memory = prev_fill


def _train(cfg: TrainConfig, cfg_dict, hk: HookList, device, progress, t_start, started_at):
    data, model, model_config = build_run(cfg)
    model = hk.transform_model(model, cfg).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    params = [p for p in model.parameters() if p.requires_grad]

    steps = cfg.steps if cfg.steps is not None else max(1, math.ceil(cfg.epochs * data.n_train / cfg.batch_size))
    record: Dict[str, Any] = {
        'schema_version': SCHEMA_VERSION, 'status': 'ok', 'hash': config_hash(cfg_dict), 'config': cfg_dict,
        'task_kind': data.kind, 'data_name': data.data_name, 'data_is_standin': data.is_standin,
        'n_train': data.n_train, 'n_val': data.n_val, 'seq_len': data.seq_len,
        'model_config': to_jsonable(model_config), 'n_params': int(n_params),
        **init_fields(cfg.model, model_config), 'device': str(device),
        'profile': None, 'profile_error': None, 'steps_planned': int(steps), 'extras': {},
    }

    x_train = data.x_train.to(device)
    y_train = data.y_train.to(device) if data.y_train is not None else None

    # --- RKSP profile at init, on a batch of training inputs with its own generator
    t0 = time.perf_counter()
    if cfg.profile_at_init:
        pidx = profile_indices(cfg, data.n_train).to(device)
        try:
            record['profile'] = _run_profile(model, x_train[pidx], cfg)
        except Exception as e:  # noqa: BLE001 - the run (and its divergence label) still counts
            record['profile_error'] = f'{type(e).__name__}: {e}'
            warnings.warn(f"RKSP profile at init failed ({record['profile_error']}); training goes on "
                          "and the record carries profile=None", RuntimeWarning, stacklevel=2)
    profile_time = time.perf_counter() - t0

    # --- optimizer
    groups = param_groups(model, cfg.weight_decay)
    opt = hk.make_optimizer(groups, cfg, model)
    if opt is None:
        opt = resolve_optimizer(cfg.optimizer)(groups, cfg)
    for gr in opt.param_groups:
        gr.setdefault('initial_lr', gr['lr'])
    init_lrs = [gr['initial_lr'] for gr in opt.param_groups]
    base_lr = cfg.lr

    loss_fn = _loss_fn_for(data.kind)
    ctx = StepContext(model, opt, cfg, hk, loss_fn, device, record['extras'])
    hk.on_start(model, opt, cfg, ctx)

    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 'batches'))
    sampler = BatchSampler(data.n_train, cfg.batch_size, gen)
    eval_bs = cfg.eval_batch_size or cfg.batch_size

    losses: List[float] = []
    gnorms: List[float] = []
    lrs: List[float] = []
    extras_curve: List[float] = []
    any_extra = False
    # per step with a separate regularizer backward (StepContext.backward_rest): both norms, the bound's scale
    reg_grad: Dict[str, List[float]] = {'step': [], 'task_grad_norm': [], 'reg_grad_norm': [], 'scale': []}
    eval_curve: Dict[str, List] = {'step': [], 'val_loss': [], 'val_acc': [], 'val_ppl': []}
    diverged, div_step, div_reason, div_value = False, None, None, None
    strict_step = None
    eval_time = 0.0
    clip = cfg.grad_clip
    info: Dict[str, Any] = {}

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"train {record['hash'][:8]}", leave=False)

    t_train, c_train, eval_cpu = time.perf_counter(), time.process_time(), 0.0
    step = 0
    for step in range(1, steps + 1):
        f = lr_factor(step, steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for gr, l0 in zip(opt.param_groups, init_lrs):
            gr['lr'] = l0 * f
        lr_now = base_lr * f
        idx = sampler.next()
        if device.type != 'cpu':
            idx = idx.to(device, non_blocking=True)
        batch = (x_train[idx], y_train[idx] if y_train is not None else None)
        if hk.has_before:
            hk.before_step(step, model, opt, {'step': step, 'lr': lr_now, 'batch': batch})

        opt.zero_grad(set_to_none=True)
        ctx.task_grad_norm = ctx.reg_grad_norm = ctx.reg_grad_scale = None
        out = hk.train_step(step, model, opt, batch, ctx) if hk.has_step else None
        if out is None:
            task_loss, extra = ctx.default_step(step, batch)
        elif isinstance(out, (tuple, list)):
            task_loss, extra = out[0], (out[1] if len(out) > 1 else None)
        else:
            task_loss, extra = out, None
        gn = total_grad_norm(params)
        tgn = ctx.task_grad_norm
        vals = [task_loss.detach().float().reshape(()), gn.detach().float().reshape(()).to(task_loss.device),
                (tgn if tgn is not None else gn).detach().float().reshape(()).to(task_loss.device)]
        if extra is not None:
            vals.append(torch.as_tensor(extra).detach().float().reshape(()).to(task_loss.device))
        rgn = ctx.reg_grad_norm
        if rgn is not None:
            rsc = ctx.reg_grad_scale
            vals += [rgn.float().reshape(()).to(task_loss.device),
                     (rsc if rsc is not None else torch.ones(())).float().reshape(()).to(task_loss.device)]
        synced = torch.stack(vals).tolist()     # the one host sync per step
        if rgn is not None:                     # regularizer vs task gradient, before any bound
            reg_grad['step'].append(step)
            reg_grad['task_grad_norm'].append(synced[2])
            reg_grad['reg_grad_norm'].append(synced[-2])
            reg_grad['scale'].append(synced[-1])
            record['extras']['reg_grad'] = reg_grad
        loss_v, gn_v, label_gn = synced[0], synced[1], synced[2]
        if extra is not None:
            synced = [synced[0], synced[1], synced[3]]
        losses.append(loss_v)
        gnorms.append(gn_v)
        lrs.append(lr_now)
        if extra is not None:
            any_extra = True
            extras_curve.append(synced[2])
        else:
            extras_curve.append(float('nan'))

        if strict_step is None and divergence_check(loss_v, gn_v) is not None:
            strict_step = step          # the label on the total gradient ('total') would stop here
        reason = divergence_check(loss_v, label_gn)
        if reason is not None:
            diverged, div_step, div_reason = True, step, reason
            div_value = loss_v if reason in ('loss', 'nonfinite_loss') else label_gn
            break

        if clip is not None:
            _clip(params, clip, gn)
        opt.step()

        if hk.has_after:
            info = {'step': step, 'lr': lr_now, 'loss': loss_v, 'grad_norm': gn_v,
                    'extra_loss': synced[2] if extra is not None else None}
            hk.after_step(step, model, opt, info)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < steps:
            te, ce = time.perf_counter(), time.process_time()
            ev = evaluate(model, data, eval_bs, device)
            eval_curve['step'].append(step)
            for k in ('val_loss', 'val_acc', 'val_ppl'):
                eval_curve[k].append(ev[k])
            eval_time += time.perf_counter() - te
            eval_cpu += time.process_time() - ce
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f'{loss_v:.3f}', gn=f'{gn_v:.2f}')
    steps_done = step if steps >= 1 else 0
    train_time = time.perf_counter() - t_train - eval_time
    train_cpu_time = time.process_time() - c_train - eval_cpu     # CPU seconds of this process (robust to load)
    if bar is not None:
        bar.close()

    te = time.perf_counter()
    final = evaluate(model, data, eval_bs, device)
    eval_time += time.perf_counter() - te

    keep = _downsample_idx(len(losses), cfg.full_log_steps, cfg.log_every)
    curves = {'step': [i + 1 for i in keep], 'loss': [losses[i] for i in keep],
              'grad_norm': [gnorms[i] for i in keep], 'lr': [lrs[i] for i in keep]}
    if any_extra:
        curves['extra_loss'] = [extras_curve[i] for i in keep]
    if data.kind != 'lm':
        eval_curve.pop('val_ppl')

    record.update({
        'steps_done': int(steps_done), 'diverged': diverged, 'div_step': div_step, 'div_reason': div_reason,
        'div_value': div_value, 'div_step_total_grad': strict_step, 'final_train_loss': losses[-1] if losses else None,
        # baselines from the steps *before* a divergence: the divergence step itself is the label
        **gradient_baselines(losses[:-1] if diverged else losses, gnorms[:-1] if diverged else gnorms),
        'curves': curves, 'eval_curve': eval_curve,
        'val_loss': final['val_loss'], 'val_acc': final['val_acc'], 'val_ppl': final['val_ppl'],
    })
    if cfg.profile_at_end and cfg.profile_at_init and not diverged:
        try:
            record['profile_end'] = _run_profile(model, x_train[pidx], cfg)
        except Exception as e:  # noqa: BLE001
            record['profile_end'] = None
            record['profile_error'] = f'end: {type(e).__name__}: {e}'
    hk.on_end(record, model)
    record['extras'] = to_jsonable(record['extras'])
    wall = time.perf_counter() - t_start
    record.update({
        'wall_time': wall, 'train_time': train_time, 'train_cpu_time': train_cpu_time,
        'profile_time': profile_time, 'eval_time': eval_time,
        'steps_per_sec': steps_done / train_time if train_time > 0 else None,
        'started_at': started_at, 'finished_at': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'env': {'torch': torch.__version__, 'python': platform.python_version(), 'device': str(device),
                'num_threads': torch.get_num_threads(), 'pid': os.getpid()},
    })
    return record
