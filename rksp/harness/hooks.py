"""The hook protocol (`TrainHooks`) through which stabilizers change a run without copying the loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from rksp.core.snapshots import residual_states as capture_residuals

if TYPE_CHECKING:  # annotations only: the harness's pipeline runs config -> resolve -> build -> loop
    from rksp.harness.config import TrainConfig


@dataclass
class StepOutputs:
    logits: torch.Tensor
    loss: torch.Tensor                       # task loss
    hidden: Optional[List[torch.Tensor]]     # [h_0..h_L] when needs_hidden(step), else None


# what `train_step` may return: the task loss, (task loss, extra loss), or None (the default step runs)
StepResult = Union[None, torch.Tensor, Tuple[torch.Tensor, Optional[torch.Tensor]]]


class TrainHooks:
    """Base class of training hooks: every member the harness reads is declared here, with the
    default that leaves the run unchanged; override what you need.

    In the order of a run: `transform_model` (before profiling and the optimizer), `make_optimizer`,
    `on_start`; then per step `before_step`, `train_step` (or the default step, which asks
    `needs_hidden` and adds `extra_loss`), `after_step` (completed steps only); finally `on_end`.
    `extra_grad_bound` c (None: no bound) scales the extra losses' gradient to <= c x the task
    gradient (`StepContext.backward_rest`; KSS grad_bound).
    """

    extra_grad_bound: Optional[float] = None

    def transform_model(self, model: nn.Module, cfg: TrainConfig) -> nn.Module:
        return model

    def make_optimizer(self, params, cfg: TrainConfig, model: nn.Module) -> Optional[torch.optim.Optimizer]:
        return None

    def on_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                 ctx: 'StepContext') -> None:
        pass

    def needs_hidden(self, step: int) -> bool:
        return False

    def extra_loss(self, model: nn.Module, batch, outputs: StepOutputs, step: int) -> Optional[torch.Tensor]:
        return None

    def train_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, batch,
                   ctx: 'StepContext') -> StepResult:
        return None

    def before_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    info: Dict[str, Any]) -> None:
        pass

    def after_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                   info: Dict[str, Any]) -> None:
        pass

    def on_end(self, record: Dict[str, Any], model: nn.Module) -> None:
        pass


class FunctionHooks(TrainHooks):
    """Hooks from plain callables: FunctionHooks(after_step=f, extra_loss=g, ...)."""

    _NAMES = ('transform_model', 'make_optimizer', 'on_start', 'needs_hidden', 'extra_loss',
              'train_step', 'before_step', 'after_step', 'on_end')

    def __init__(self, **fns):
        bad = set(fns) - set(self._NAMES)
        if bad:
            raise TypeError(f"unknown hook(s) {sorted(bad)}; valid: {self._NAMES}")
        for k, f in fns.items():
            setattr(self, k, f)


def _overrides(h, name: str) -> bool:
    if isinstance(h, FunctionHooks):
        return name in h.__dict__
    base = getattr(TrainHooks, name, None)
    impl = getattr(type(h), name, None)
    return impl is not None and impl is not base or name in getattr(h, '__dict__', {})


class HookList(TrainHooks):
    """Several hooks as one: model transforms chain, extra losses add up, the first
    non-None optimizer wins, at most one hook may replace the step."""

    def __init__(self, hooks: Sequence[TrainHooks] = ()):
        self.hooks = list(hooks)
        for h in self.hooks:
            if not isinstance(h, TrainHooks):
                raise TypeError(f"hooks must be TrainHooks instances (subclass it or use FunctionHooks), "
                                f"got {type(h).__name__}")

        def having(name):
            return [h for h in self.hooks if _overrides(h, name)]
        self._before = having('before_step')
        self._after = having('after_step')
        self._extra = having('extra_loss')
        self._hidden = having('needs_hidden')
        steppers = having('train_step')
        if len(steppers) > 1:
            raise ValueError(f"at most one hook may replace the step, got {len(steppers)}")
        self.step_hook: Optional[TrainHooks] = steppers[0] if steppers else None   # the hook whose train_step runs

    @property
    def has_before(self):
        return bool(self._before)

    @property
    def has_after(self):
        return bool(self._after)

    @property
    def has_extra(self):
        return bool(self._extra)

    @property
    def has_step(self):
        return self.step_hook is not None

    @property
    def has_hidden(self):
        return bool(self._hidden)

    def transform_model(self, model, cfg):
        for h in self.hooks:
            out = h.transform_model(model, cfg)
            model = model if out is None else out
        return model

    def make_optimizer(self, params, cfg, model):
        for h in self.hooks:
            opt = h.make_optimizer(params, cfg, model)
            if opt is not None:
                return opt
        return None

    def on_start(self, model, optimizer, cfg, ctx):
        for h in self.hooks:
            h.on_start(model, optimizer, cfg, ctx)

    def needs_hidden(self, step):
        return any(h.needs_hidden(step) for h in self._hidden)

    def extra_loss(self, model, batch, outputs, step):
        total = None
        for h in self._extra:
            v = h.extra_loss(model, batch, outputs, step)
            if v is not None:
                total = v if total is None else total + v
        return total

    def train_step(self, step, model, optimizer, batch, ctx):
        return self.step_hook.train_step(step, model, optimizer, batch, ctx) if self.step_hook else None

    @property
    def extra_grad_bound(self) -> Optional[float]:
        """Smallest `extra_grad_bound` any hook declares (None: none): the extra losses' gradient is
        scaled to <= that multiple of the task gradient (`StepContext.backward_rest`; KSS grad_bound)."""
        bs = [h.extra_grad_bound for h in self.hooks if h.extra_grad_bound is not None]
        return min(bs) if bs else None

    def before_step(self, step, model, optimizer, info):
        for h in self._before:
            h.before_step(step, model, optimizer, info)

    def after_step(self, step, model, optimizer, info):
        for h in self._after:
            h.after_step(step, model, optimizer, info)

    def on_end(self, record, model):
        for h in self.hooks:
            h.on_end(record, model)


class StepContext:
    """What a step (default or a hook's `train_step`) needs: `forward(batch, step)`
    returns (task_loss, total_loss, outputs, extra_loss) -- total = task + the hooks'
    extra losses (extra None when no hook added one); nothing is backpropagated."""

    def __init__(self, model, optimizer, cfg, hooks: HookList, loss_fn, device, extras):
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.hooks = hooks
        self.loss_fn = loss_fn
        self.device = device
        self.extras = extras        # == record['extras']
        self.task_grad_norm = None  # set by default_step when the step has extra losses (div_grad='task')
        self.reg_grad_norm = None   # set by backward_rest: norm of the extra losses' own gradient
        self.reg_grad_scale = None  # set by backward_rest under a bound (hooks' extra_grad_bound)
        self.rest_loss = None       # set by forward: the extra + auxiliary terms of the last forward
        aux = getattr(model, 'aux_loss', None)
        self._aux = aux if callable(aux) else None

    def forward(self, batch, step: int, need_hidden: Optional[bool] = None):
        x = batch[0]
        if need_hidden is None:
            need_hidden = self.hooks.has_hidden and self.hooks.needs_hidden(step)
        if need_hidden:
            with capture_residuals(self.model) as hs:
                logits = self.model(x)
            hidden = list(hs)
        else:
            logits = self.model(x)
            hidden = None
        task_loss = self.loss_fn(logits, batch)
        outputs = StepOutputs(logits, task_loss, hidden)
        extra = self.hooks.extra_loss(self.model, batch, outputs, step) if self.hooks.has_extra else None
        total = task_loss if extra is None else task_loss + extra
        rest = extra
        if self._aux is not None:          # MoE load-balancing term (lambda already applied)
            aux = self._aux()
            total = total + aux
            rest = aux if rest is None else rest + aux
        self.rest_loss = rest              # total - task_loss as its own graph (None: nothing added)
        return task_loss, total, outputs, extra

    def default_step(self, step: int, batch):
        task_loss, total, _, extra = self.forward(batch, step)
        rest = self.rest_loss
        bound = self.hooks.extra_grad_bound
        if rest is not None and rest.requires_grad and (self.cfg.div_grad == 'task' or bound is not None):
            # the label reads the task gradient: backprop it alone first, read its norm, then add the
            # rest's own graph. An off-schedule regularizer (a constant 0) takes the one-pass branch:
            # its gradient is the task gradient.
            task_loss.backward(retain_graph=True)
            self.task_grad_norm = total_grad_norm(
                [p for p in self.model.parameters() if p.grad is not None]).detach()
            self.backward_rest(rest, bound)
        else:
            total.backward()
        return task_loss, extra

    def backward_rest(self, rest, bound: Optional[float] = None) -> None:
        """Add the gradient of the regularizer graph `rest` after the task backward (task_grad_norm
        set). Records its norm (`reg_grad_norm`) and, with `bound` c, scales it to
        ||g_rest|| <= c ||g_task|| (`reg_grad_scale`; no host sync). Same traversal as rest.backward()."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(rest, params, allow_unused=True)
        used = [(p, g) for p, g in zip(params, grads) if g is not None]
        norm = grad_norm_of([g for _, g in used]).detach()
        self.reg_grad_norm = norm
        scale = None
        if bound is not None:
            scale = torch.clamp(bound * self.task_grad_norm.to(norm.device) / norm, max=1.0)
            scale = torch.nan_to_num(scale, nan=1.0)       # 0 / 0: nothing to scale
            self.reg_grad_scale = scale
        for p, g in used:
            if scale is not None:
                g = g * scale.to(g.dtype)
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)


def total_grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return grad_norm_of([p.grad for p in params if p.grad is not None])


def grad_norm_of(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """2-norm of a list of tensors taken together (0 for an empty list)."""
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, 'get_total_norm'):
        return torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False)
    norms = torch._foreach_norm(grads, 2.0)
    return torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]), 2.0)
