"""Residual-stream snapshots from one forward pass (paper Eq. 4, App. D.3).

Forward hooks capture h_0 (the input of block 0) and h_1 ... h_L (each block's
output, before any final norm). Token states are flattened over (batch,
position), padding positions are dropped when an ``attention_mask`` is given,
and the same ``N`` token indices (seeded generator) are kept at every depth so
that column i of X_l and of Y_l belong to the same token.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from rksp import defaults
from rksp.errors import RKSPInputError

# attribute paths of residual block lists in common model families
BLOCK_PATHS = (
    "blocks",                 # this project, timm ViT
    "transformer.h",          # HF GPT-2 / GPT-J
    "model.layers",           # HF LLaMA / Mistral / Qwen / SmolLM
    "model.model.layers",
    "encoder.layer",          # HF BERT (BertModel)
    "bert.encoder.layer",
    "roberta.encoder.layer",
    "model.decoder.layers",   # OPT
    "gpt_neox.layers",
    "transformer.layers",
    "backbone.layers",        # HF Mamba
    "layers",
    "h",
)


class _StopForward(Exception):
    """Raised by the last hook: nothing after the last block is needed."""


def _get_path(module: nn.Module, path: str):
    obj = module
    for part in path.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def find_blocks(model: nn.Module, blocks: str | Sequence[nn.Module] | None = None) -> list[nn.Module]:
    """The model's residual blocks, in order.

    ``blocks`` may name an attribute path (``"transformer.h"``) or be the list
    itself. Otherwise known paths are tried (:data:`BLOCK_PATHS`), then the
    largest ``ModuleList``/``Sequential`` whose children all share one class.
    """
    if blocks is not None:
        found = _get_path(model, blocks) if isinstance(blocks, str) else blocks
        if found is None:
            raise RKSPInputError(f"model has no attribute path {blocks!r}")
        found = list(found)
        if not found:
            raise RKSPInputError("the given block list is empty")
        return found
    for path in BLOCK_PATHS:
        found = _get_path(model, path)
        if isinstance(found, (nn.ModuleList, nn.Sequential)) and len(found) > 0:
            return list(found)
    best: list[nn.Module] = []
    for mod in model.modules():
        if isinstance(mod, (nn.ModuleList, nn.Sequential)) and len(mod) >= 2:
            kids = list(mod)
            if len({type(k) for k in kids}) == 1 and len(kids) > len(best):
                best = kids
    if not best:
        raise RKSPInputError(
            f"no residual blocks found in {type(model).__name__}: pass blocks='attr.path' "
            f"(tried {', '.join(BLOCK_PATHS)})")
    return best


def _first_tensor(obj):
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for key in ("hidden_states", "last_hidden_state", "x", "h"):
            if key in obj and isinstance(obj[key], torch.Tensor):
                return obj[key]
    if hasattr(obj, "last_hidden_state"):
        return obj.last_hidden_state
    return None


def block_input(args, kwargs, mod=None) -> torch.Tensor:
    """The residual-stream tensor entering a block (positional, or HF's ``hidden_states`` kwarg)."""
    h = _first_tensor(args) if args else None
    if h is None and kwargs:
        hs = kwargs.get("hidden_states")
        h = hs if isinstance(hs, torch.Tensor) else _first_tensor(kwargs)
    if h is None:
        raise RKSPInputError(f"cannot find the residual-stream input of block 0 ({type(mod).__name__})")
    return h


@contextlib.contextmanager
def residual_states(model: nn.Module, blocks=None, *, detach: bool = False,
                    enabled: Callable[[], bool] | None = None):
    """Record ``[h_0, ..., h_L]`` during each forward pass inside the ``with`` block.

    Yields a list that, after a forward pass, holds the input of block 0 and
    every block's output (tensors keep their autograd graph unless
    ``detach=True``); a new forward pass replaces the contents. ``enabled``,
    if given, is asked at the start of each forward pass; when it returns
    False nothing is recorded for that pass. Hooks are removed on exit.
    """
    block_list = find_blocks(model, blocks)
    hs: list[torch.Tensor] = []
    armed = {"on": True}

    def pre(mod, args, kwargs):
        hs.clear()
        armed["on"] = enabled is None or bool(enabled())
        if armed["on"]:
            h = block_input(args, kwargs, mod)
            hs.append(h.detach() if detach else h)

    def make_post(i):
        def post(mod, args, out):
            if not armed["on"]:
                return
            h = _first_tensor(out)
            if h is None:
                raise RKSPInputError(f"block {i} ({type(mod).__name__}) returned no tensor")
            if len(hs) == i + 1:
                hs.append(h.detach() if detach else h)
        return post

    handles = [block_list[0].register_forward_pre_hook(pre, with_kwargs=True)]
    handles += [b.register_forward_hook(make_post(i)) for i, b in enumerate(block_list)]
    try:
        yield hs
    finally:
        for hd in handles:
            hd.remove()


def to_model_device(model: nn.Module, inputs):
    """Move input tensors to the device of the model's first parameter (accelerate-dispatched
    models with an ``hf_device_map`` place inputs themselves and are left alone)."""
    if getattr(model, "hf_device_map", None):
        return inputs
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        return inputs
    move = (lambda t: t.to(dev) if isinstance(t, torch.Tensor) else t)
    if isinstance(inputs, dict):
        return {k: move(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(move(v) for v in inputs)
    return move(inputs)


def _call(model: nn.Module, inputs):
    inputs = to_model_device(model, inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def token_mask_of(inputs) -> torch.Tensor | None:
    """Boolean (B, T) mask of real tokens from an ``attention_mask``, if the inputs carry one."""
    if isinstance(inputs, dict) and isinstance(inputs.get("attention_mask"), torch.Tensor):
        return inputs["attention_mask"].bool()
    return None


def sample_positions(n_tokens: int, mask, n: int | None, generator: torch.Generator, device=None) -> torch.Tensor:
    """The token sampler: positions (into the flattened batch x sequence states) of the token states
    that enter the snapshot matrices X, Y (Eq. 6): the unmasked tokens, and of those ``n`` drawn
    without replacement by ``generator`` (kept in order) when there are more. The profile
    (:func:`capture_hidden`) and KSS (:mod:`rksp.core.kss`) both draw through it."""
    valid = torch.arange(n_tokens, device=device)
    if mask is not None:
        m = torch.as_tensor(mask, device=device).reshape(-1).bool()
        if m.numel() != n_tokens:
            raise RKSPInputError(f"token mask has {m.numel()} entries (attention_mask) but the hidden "
                                 f"states hold {n_tokens} tokens")
        valid = valid[m]
    if n is not None and valid.numel() > n:
        pick = torch.randperm(int(valid.numel()), generator=generator)[:n].sort().values
        valid = valid[pick.to(valid.device)]
    return valid


def capture_hidden(model: nn.Module, inputs, n_snapshots: int | None = defaults.N_SNAPSHOTS, *,
                   seed: int = defaults.SNAPSHOT_SEED, blocks=None, dtype=torch.float64,
                   device=None, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Residual states h_0..h_L at ``N`` sampled tokens: a ``(L+1, N, d)`` tensor.

    One forward pass under ``torch.no_grad()``; the pass stops after the last
    block (the head is never run). ``n_snapshots=None`` keeps every token.
    """
    block_list = find_blocks(model, blocks)
    L = len(block_list)
    if token_mask is None:
        token_mask = token_mask_of(inputs)
    states: list[torch.Tensor | None] = [None] * (L + 1)
    chosen: dict[str, torch.Tensor] = {}

    def select(h: torch.Tensor) -> torch.Tensor:
        if h.ndim < 2:
            raise RKSPInputError(f"block state has shape {tuple(h.shape)}; expected (..., d)")
        flat = h.reshape(-1, h.shape[-1])
        if "idx" not in chosen:
            g = torch.Generator(device="cpu").manual_seed(int(seed))
            chosen["idx"] = sample_positions(flat.shape[0], token_mask, n_snapshots, g, flat.device)
        return flat.index_select(0, chosen["idx"]).detach().to(device=device or flat.device, dtype=dtype)

    def pre_hook(mod, args, kwargs):
        states[0] = select(block_input(args, kwargs, mod))

    def make_hook(i):
        def hook(mod, args, out):
            h = _first_tensor(out)
            if h is None:
                raise RKSPInputError(f"block {i} returned no tensor")
            states[i + 1] = select(h)
            if i == L - 1:
                raise _StopForward
        return hook

    handles = [block_list[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
    handles += [b.register_forward_hook(make_hook(i)) for i, b in enumerate(block_list)]
    try:
        with torch.no_grad():
            _call(model, inputs)
    except _StopForward:
        pass
    finally:
        for hd in handles:
            hd.remove()
    if any(s is None for s in states):
        missing = [i for i, s in enumerate(states) if s is None]
        raise RKSPInputError(f"blocks were not all run in the forward pass (missing states {missing})")
    return torch.stack(states)


def capture_hidden_eval(model: nn.Module, inputs, n_snapshots: int | None = defaults.N_SNAPSHOTS,
                        **kwargs) -> torch.Tensor:
    """:func:`capture_hidden` with the model in eval mode (no dropout), its mode restored afterwards:
    how a profile sees a model (``rksp.profile``, ``profile_pretrained``)."""
    was_training = model.training
    model.eval()
    try:
        return capture_hidden(model, inputs, n_snapshots, **kwargs)
    finally:
        model.train(was_training)


def transitions(hidden: torch.Tensor | Iterable[torch.Tensor]):
    """Yield (X_l, Y_l) as ``d x N`` matrices from a ``(L+1, N, d)`` stack of states."""
    hs = list(hidden)
    for l in range(len(hs) - 1):
        yield hs[l].transpose(-1, -2), hs[l + 1].transpose(-1, -2)
