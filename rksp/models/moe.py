"""Mixture-of-Experts GPT (paper App. I, Tables 11 and 16).

A GPT-style causal transformer whose MLP is a token-choice top-k mixture of E
expert MLPs (Shazeer et al. 2017; Switch Transformer, Fedus et al. 2022):

    p = softmax(W_r x)                 router probabilities over E experts
    S = top-k(p)                        k experts per token (token choice)
    g_e = p_e / sum_{e' in S} p_e'      renormalized gates, sum to 1 over S
    MoE(x) = sum_{e in S} g_e * Expert_e(x),  Expert_e = Linear-GELU-Linear

Every token is processed by all k of its experts (no capacity limit, nothing
dropped). Note: with k = 1 the renormalized gate is exactly 1, so the router
weights then learn only through the load-balancing loss (Switch instead scales by
the raw probability p_e); for k >= 2 the task loss reaches the router via the gates.
Dispatch loops over the E experts (E <= 16 in the paper) and gathers / scatters
their tokens with index_select / index_add; it never loops over tokens.

Load balancing (Switch Transformer Eq. 4-6), per MoE layer:
    f_e = (# of the N*k token->expert assignments that go to e) / (N*k)
    P_e = (1/N) sum_tokens p_e(x)
    loss = lambda * E * sum_e f_e * P_e         (lambda = 0.01, Table 16)
With f normalized over the N*k assignments, a uniform router gives loss =
lambda for every k (for k = 1 this is exactly Switch's f). `MoEGPT.aux_loss()`
is the mean of the per-layer losses of the last forward pass, so lambda keeps
its meaning at any depth. Add it to the task loss when training.

Paper sizes: d = 256, L = 6, E in {8, 16}, k in {1, 2, 4} (Table 16).
`MoEGPT.blocks` holds the residual blocks (the profiler's contract, as in gpt.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gpt import GPT, CausalSelfAttention, GPTConfig
from .norms import final_norm, make_norm, norm_ids, norm_spec

# block layouts supported for the MoE and KAN transformers: the norms of rksp.models.norms with 'moe'
# in their `models` (DeepNorm's init and SubLN's inner norms are defined for dense MLPs only)
MOE_NORMS = norm_ids('moe')


def _check_positive_int(cfg, names):
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


@dataclass
class MoEConfig:
    vocab_size: int
    block_size: int                 # context length
    n_layer: int = 6
    n_head: int = 8
    d_model: int = 256
    n_experts: int = 8              # E
    top_k: int = 2                  # k experts per token
    expert_mlp_ratio: float = 4.0   # each expert: d -> ratio*d -> d
    norm: str = 'pre_ln'            # one of MOE_NORMS
    load_balance_coef: float = 0.01  # lambda (Table 16)
    init_std: float = 0.02

    def __post_init__(self):
        _check_positive_int(self, ('vocab_size', 'block_size', 'n_layer', 'n_head', 'd_model',
                                   'n_experts', 'top_k'))
        norm_spec(self.norm, 'moe', 'MoEGPT')
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        if not self.expert_mlp_ratio > 0 or int(self.expert_mlp_ratio * self.d_model) < 1:
            raise ValueError(f"expert_mlp_ratio must be positive (hidden >= 1), got {self.expert_mlp_ratio!r}")
        if not self.load_balance_coef >= 0:
            raise ValueError(f"load_balance_coef must be >= 0, got {self.load_balance_coef!r}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be positive, got {self.init_std!r}")

    @property
    def d_hidden(self) -> int:
        return int(self.expert_mlp_ratio * self.d_model)


def attention_config(cfg) -> GPTConfig:
    """The GPTConfig for gpt.CausalSelfAttention (bias on, no dropout) from an MoE/KAN config."""
    return GPTConfig(vocab_size=cfg.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, d_model=cfg.d_model, init_std=cfg.init_std)


def load_balance_loss(probs: torch.Tensor, topk_idx: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch-Transformer balance term E * sum_e f_e * P_e (without lambda).

    probs: (N, E) router softmax; topk_idx: (N, k) chosen experts.
    f_e = share of the N*k assignments routed to e (no gradient, as in Switch);
    P_e = mean router probability of e (carries the gradient).
    """
    f = torch.bincount(topk_idx.reshape(-1), minlength=n_experts).to(probs.dtype) / topk_idx.numel()
    P = probs.mean(dim=0)
    return n_experts * (f * P).sum()


def route(logits: torch.Tensor, k: int):
    """Token-choice top-k routing: (gates (N, k) summing to 1, indices (N, k), probs (N, E))."""
    probs = F.softmax(logits.float(), dim=-1)
    topv, topi = probs.topk(k, dim=-1)
    gates = topv / topv.sum(dim=-1, keepdim=True)
    return gates.to(logits.dtype), topi, probs.to(logits.dtype)


class Expert(nn.Module):
    """One expert: the GPT MLP, d -> hidden -> d with GELU."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(d, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, d)   # residual output projection

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class MoELayer(nn.Module):
    """Top-k routed mixture of experts; maps (B, T, d) -> (B, T, d).

    After each forward: `aux` (lambda * balance loss), `load` (E,) share of
    assignments per expert, `importance` (E,) mean router probability.
    """

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.n_experts, self.k, self.coef = cfg.n_experts, cfg.top_k, cfg.load_balance_coef
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList([Expert(cfg.d_model, cfg.d_hidden) for _ in range(cfg.n_experts)])
        self.aux = torch.zeros(())
        self.load = torch.zeros(cfg.n_experts)
        self.importance = torch.zeros(cfg.n_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])                       # (N, d)
        gates, topi, probs = route(self.router(x), self.k)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (topi == e).nonzero(as_tuple=True)  # tokens that chose e (each at most once)
            if tok.numel() == 0:
                continue
            y = expert(x.index_select(0, tok)) * gates[tok, slot].unsqueeze(-1)
            out.index_add_(0, tok, y)
        self.aux = self.coef * load_balance_loss(probs, topi, self.n_experts)
        with torch.no_grad():
            self.load = torch.bincount(topi.reshape(-1), minlength=self.n_experts).float() / topi.numel()
            self.importance = probs.detach().float().mean(dim=0)
        return out.reshape(shape)


class TransformerBlock(nn.Module):
    """Residual block h -> h': causal attention then a feed-forward sub-layer `ffn`
    (the MoE layer here, the KAN MLP in kan.py).

    placement 'pre' (pre_ln, rmsnorm; none with the identity): h + f(norm(h)); 'post' (post_ln): norm(h + f(h)).
    """

    def __init__(self, cfg: MoEConfig, ffn: nn.Module):
        super().__init__()
        spec = norm_spec(cfg.norm, 'moe', 'MoEGPT')
        self.norm = cfg.norm
        self.post = spec.placement == 'post'
        self.ln_1, self.ln_2 = make_norm(spec.layer, cfg.d_model), make_norm(spec.layer, cfg.d_model)
        self.attn = CausalSelfAttention(attention_config(cfg))
        self.mlp = ffn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.post:
            h = self.ln_1(h + self.attn(h))
            return self.ln_2(h + self.mlp(h))
        h = h + self.attn(self.ln_1(h))
        return h + self.mlp(self.ln_2(h))


class TransformerLM(nn.Module):
    """Shared GPT skeleton for the MoE and KAN transformers: token + learned position
    embeddings -> blocks -> final norm (where the norm's entry has one) -> head tied to wte."""

    def _build(self, cfg, ffn_factory):
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList([TransformerBlock(cfg, ffn_factory()) for _ in range(cfg.n_layer)])
        self.ln_f = final_norm(norm_spec(cfg.norm, 'moe'), cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    @torch.no_grad()
    def _init_gpt2(self, residual_out) -> None:
        """GPT-2 init: normal(0, init_std) for Linear/Embedding, zero biases; the
        residual output projections (attention c_proj and `residual_out(block)`) get
        init_std / sqrt(2L)."""
        cfg = self.config
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=cfg.init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        std = cfg.init_std / math.sqrt(2 * cfg.n_layer)
        for blk in self.blocks:
            for w in [blk.attn.c_proj.weight, *residual_out(blk)]:
                nn.init.normal_(w, mean=0.0, std=std)
        self.head.weight = self.wte.weight  # weight tying (GPT-2)

    # the same parameter count and forward pass as the dense GPT (no dropout here)
    num_params = GPT.num_params
    forward = GPT.forward

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """h_0, the input of blocks[0]."""
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        return self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))

    def aux_loss(self) -> torch.Tensor:
        return torch.zeros((), device=self.wte.weight.device)


class MoEGPT(TransformerLM):
    """GPT with top-k MoE MLPs. forward(idx [B, T]) -> logits [B, T, vocab].

    `aux_loss()`: lambda-weighted load-balancing loss of the last forward (mean over
    layers; differentiable if that forward tracked gradients). `routing_stats()`:
    per-layer expert load and importance of the last forward.
    """

    def __init__(self, config: MoEConfig):
        super().__init__()
        self.config = cfg = config
        self._build(cfg, lambda: MoELayer(cfg))
        self._init_gpt2(lambda blk: [ex.c_proj.weight for ex in blk.mlp.experts])

    def aux_loss(self) -> torch.Tensor:
        return torch.stack([blk.mlp.aux.to(self.wte.weight.device) for blk in self.blocks]).mean()

    @torch.no_grad()
    def routing_stats(self) -> dict:
        """{'load': (L, E) share of token->expert assignments per expert,
            'importance': (L, E) mean router probability} from the last forward."""
        return {'load': torch.stack([blk.mlp.load.cpu() for blk in self.blocks]),
                'importance': torch.stack([blk.mlp.importance.cpu() for blk in self.blocks])}
