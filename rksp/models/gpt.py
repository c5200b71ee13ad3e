"""GPT-style causal transformer with the paper's six normalization strategies.

nanoGPT-shaped (one config dataclass, plain modules). The paper (Sec. 5, App. D)
profiles GPT-2-style models with d in {128..1024}, L in {4..24} under Pre-LN,
Post-LN, RMSNorm, DeepNorm, SubLN and No-Norm; `GPTConfig.norm` picks one.

Contract with the profiler: `GPT.blocks` is an nn.ModuleList whose entries map
the residual stream h_l (B, T, d) -> h_{l+1} (B, T, d). Everything else
(embeddings, the final norm `ln_f`, the head) lives outside `blocks`, so the
input of blocks[0] is h_0 and the output of blocks[-1] is h_L.

Per-norm block (f = attention or MLP sub-layer, applied twice per block):
  pre_ln   h + f(LN(h))                       final LN before the head
  post_ln  LN(h + f(h))                       no final LN
  rmsnorm  h + f(RMSNorm(h))                  final RMSNorm
  deepnorm LN(alpha*h + f(h)), alpha=(2N)^1/4  DeepNet init (beta=(8N)^-1/4), no final LN
  subln    h + f(LN(h)), f with an extra LN before its output projection; final LN
  none     h + f(h)                           no norm anywhere
  deepnorm_pre  alpha*h + f(LN(h)), alpha=(2N)^1/4   extra (not one of the paper's six, see below);
                final LN before the head
Each layout is one entry of the registry `rksp.models.norms` (layer, placement, final norm,
DeepNet alpha and init, SubLN's inner norms), which the ViT and the MoE / KAN transformers read too.

`deepnorm_pre` (EXTRA_NORMS) is the "DeepNorm captured before any LayerNorm" variant of issue 14:
the DeepNet alpha-scaled skip with the LayerNorm moved onto the branch input, so the residual
stream the profiler captures is alpha*h + f(...) itself, never normalized. The paper's DeepNorm
row (M~1 0.00, M>1 1.00, rho 3.94) is checked against it in `rksp.experiments.init_study`.

Init (`GPTConfig.init`, rksp/defaults.py INIT / INIT_STD; the paper states none, only
"GPT-2-style"):
  'gpt2'    normal(0, init_std) on every Linear / Embedding weight, zero biases, and the residual
            output projections (attn.c_proj, mlp.c_proj) at init_std/sqrt(2L) (GPT-2); DeepNorm
            (and deepnorm_pre) use the DeepNet init of their blocks instead. The default: every
            record made before `init` existed used it.
  'normal'  plain normal(0, init_std) on every Linear and Embedding weight, zero biases, no
            residual scaling and no DeepNet init (LayerNorm gains 1, biases 0).
  'torch'   PyTorch's module defaults (Linear: kaiming-uniform(a=sqrt 5) weights and uniform
            biases; Embedding: normal(0, 1)); init_std is not used.

QK-LayerNorm (`GPTConfig.qk_norm`, default False; not one of the paper's models, a stabilizer
practitioners use: Dehghani et al. 2023 "Scaling Vision Transformers to 22B Parameters", Wortsman
et al. 2023 "Small-scale proxies for large-scale Transformer training instabilities"): a LayerNorm
over d_head (one per attention layer for q, one for k, shared by the heads; gain 1, bias 0 at
init) applied to every head's queries and keys before q k^T / sqrt(d_head). While the gains are 1 and
the biases 0, ||q||, ||k|| <= sqrt(d_head) (= sqrt(d_head var / (var + eps)): about half of that for the
tiny init-scale queries, whose variance is near eps), so every attention logit is bounded by
sqrt(d_head); the learned gains can grow it. With qk_norm=False no module is built: parameters, state dict,
initialization stream and forward are those of a model without the option.

References. DeepNorm: Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000
Layers" (arXiv 2203.00555): alpha = (2N)^(1/4), beta = (8N)^(-1/4) for a
decoder-only stack of N layers. SubLN: Wang et al. 2022, "Foundation Transformers"
(Magneto, arXiv 2210.06423), Sec. 2.1; the RKSP paper cites Xiong et al. 2020 for
it. Magneto's own init (gain sqrt(log 2N)) is NOT applied: SubLN uses the same
GPT-2 init as the other norms, so only the architecture differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import defaults
from .norms import LN_EPS, final_norm, make_norm, norm_ids, norm_names, norm_spec  # noqa: F401 (LN_EPS, make_norm: here too)

# the norms (one registry: rksp.models.norms); the paper's six, the extra GPT layouts, all of them
NORMS = norm_ids(sweep=True)
EXTRA_NORMS = norm_ids('gpt', sweep=False)
ALL_NORMS = NORMS + EXTRA_NORMS
# display names (tables, figures); the paper's spelling for its six
NORM_NAMES = norm_names(sweep=True)
EXTRA_NORM_NAMES = norm_names('gpt', sweep=False)
# weight initializations (module docstring)
INITS = defaults.INIT_CHOICES   # ('gpt2', 'normal', 'torch')


def validate_norm(norm: str, model: str = 'gpt') -> None:
    """ValueError unless `norm` is a registered norm that `model` ('gpt', 'vit', 'moe') builds."""
    norm_spec(norm, model)


def validate_init(init: str, init_std) -> None:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid inits are {', '.join(INITS)}")
    if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not init_std > 0 \
            or not math.isfinite(init_std):
        raise ValueError(f"init_std must be a finite number > 0, got {init_std!r}")


def deepnorm_alpha(n_layer: int) -> float:
    """DeepNet residual scale for a decoder-only (or encoder-only) stack of N layers: (2N)^(1/4)."""
    return (2.0 * n_layer) ** 0.25


def deepnorm_beta(n_layer: int) -> float:
    """DeepNet init gain for value/output projections and FFN weights: (8N)^(-1/4)."""
    return (8.0 * n_layer) ** -0.25


@dataclass
class GPTConfig:
    vocab_size: int = 256
    block_size: int = 64           # context length
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    mlp_ratio: float = 4.0
    norm: str = 'pre_ln'           # a norm of rksp.models.norms that the GPT builds (ALL_NORMS)
    dropout: float = 0.0
    bias: bool = True              # bias in Linear and LayerNorm layers
    tie_embeddings: bool = True    # head shares wte's weight (only when n_classes is None)
    init: str = defaults.INIT      # one of INITS (module docstring)
    init_std: float = defaults.INIT_STD
    n_classes: Optional[int] = None  # classifier head of n_classes logits instead of vocab_size
    qk_norm: bool = False          # QK-LayerNorm: LayerNorm(d_head) on q and k before the dot product

    def __post_init__(self):
        validate_norm(self.norm, 'gpt')
        validate_init(self.init, self.init_std)
        for name in ('vocab_size', 'block_size', 'n_layer', 'n_head', 'd_model'):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.n_classes is not None and (not isinstance(self.n_classes, int) or self.n_classes <= 0):
            raise ValueError(f"n_classes must be None or a positive integer, got {self.n_classes!r}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not self.mlp_ratio > 0 or int(self.mlp_ratio * self.d_model) < 1:
            raise ValueError(f"mlp_ratio must be positive (hidden = int(mlp_ratio*d_model) >= 1), got {self.mlp_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.qk_norm, bool):
            raise ValueError(f"qk_norm must be true or false, got {self.qk_norm!r}")

    @property
    def d_hidden(self) -> int:
        return int(self.mlp_ratio * self.d_model)


# sizes only; vocab_size/block_size keep the GPTConfig defaults (256/64) unless overridden
PRESETS = {
    'tiny': dict(d_model=32, n_layer=2, n_head=2, vocab_size=256, block_size=64),
    'small': dict(d_model=128, n_layer=4, n_head=4),
    'paper_small': dict(d_model=256, n_layer=6, n_head=8),
    'paper_medium': dict(d_model=512, n_layer=12, n_head=8),
    'paper_large': dict(d_model=768, n_layer=12, n_head=12),
    'paper_xl': dict(d_model=1024, n_layer=24, n_head=16),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, inner_norm: bool = False):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(d, 3 * d, bias=cfg.bias)   # fused q, k, v (rows in that order)
        # QK-LayerNorm (module docstring): only built when asked, so a default model is unchanged
        self.qk_norm = bool(getattr(cfg, 'qk_norm', False))
        if self.qk_norm:
            self.q_norm = make_norm('ln', d // cfg.n_head, cfg.bias)
            self.k_norm = make_norm('ln', d // cfg.n_head, cfg.bias)
        # SubLN (Magneto): LayerNorm on the attention output, before the output projection
        self.ln_inner = make_norm('ln' if inner_norm else 'none', d, cfg.bias)
        self.c_proj = nn.Linear(d, d, bias=cfg.bias)        # residual output projection
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def qkv(self, x: torch.Tensor):
        """q, k, v of the input x (B, T, d) per head, each (B, n_head, T, d_head); q and k after the
        QK-LayerNorm when `qk_norm`. The attention logits are q k^T / sqrt(d_head)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(self.ln_inner(y)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, inner_norm: bool = False):
        super().__init__()
        h = cfg.d_hidden
        self.c_fc = nn.Linear(cfg.d_model, h, bias=cfg.bias)
        self.gelu = nn.GELU()
        # SubLN (Magneto): LayerNorm on the hidden activations, before the second linear
        self.ln_inner = make_norm('ln' if inner_norm else 'none', h, cfg.bias)
        self.c_proj = nn.Linear(h, cfg.d_model, bias=cfg.bias)  # residual output projection
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.ln_inner(self.gelu(self.c_fc(x)))))


class Block(nn.Module):
    """One residual block h_l -> h_{l+1}: an attention sub-layer then an MLP sub-layer, laid out by
    the norm's entry in rksp.models.norms.

    placement 'pre' (pre_ln, rmsnorm, subln, none; deepnorm_pre): h = alpha*h + f(norm(h)).
    placement 'post' (post_ln, deepnorm):                        h = norm(alpha*h + f(h)).
    alpha = (2N)^1/4 for the DeepNet norms, else 1; No-Norm's norm is the identity.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        spec = norm_spec(cfg.norm, 'gpt')
        self.norm = cfg.norm
        self.pre = spec.placement == 'pre'
        self.alpha = deepnorm_alpha(cfg.n_layer) if spec.deepnet else 1.0
        self.ln_1 = make_norm(spec.layer, cfg.d_model, cfg.bias)
        self.attn = CausalSelfAttention(cfg, inner_norm=spec.inner)
        self.ln_2 = make_norm(spec.layer, cfg.d_model, cfg.bias)
        self.mlp = MLP(cfg, inner_norm=spec.inner)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.pre:
            h = self.ln_1(self.alpha * h + self.attn(h))
            return self.ln_2(self.alpha * h + self.mlp(h))
        if self.alpha != 1.0:   # deepnorm_pre
            h = self.alpha * h + self.attn(self.ln_1(h))
            return self.alpha * h + self.mlp(self.ln_2(h))
        h = h + self.attn(self.ln_1(h))
        return h + self.mlp(self.ln_2(h))

    @torch.no_grad()
    def deepnorm_init_(self, beta: float) -> None:
        """DeepNet init (Wang et al. 2022, Fig. 2): xavier_normal gain 1 for q, k;
        gain beta for v, the attention output projection and both MLP weights."""
        d = self.attn.c_proj.in_features
        w = self.attn.c_attn.weight
        nn.init.xavier_normal_(w[:d], gain=1.0)          # q
        nn.init.xavier_normal_(w[d:2 * d], gain=1.0)     # k
        nn.init.xavier_normal_(w[2 * d:], gain=beta)     # v
        for lin in (self.attn.c_proj, self.mlp.c_fc, self.mlp.c_proj):
            nn.init.xavier_normal_(lin.weight, gain=beta)


class GPT(nn.Module):
    """Decoder-only transformer: token + learned positional embeddings -> blocks -> (ln_f) -> head.

    forward(idx[B, T]) -> logits [B, T, vocab_size], or [B, T, n_classes] when
    config.n_classes is set (a classifier reads logits[:, -1, :]).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = cfg = config
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = final_norm(norm_spec(cfg.norm, 'gpt'), cfg.d_model, cfg.bias)
        if cfg.n_classes is not None:
            self.head = nn.Linear(cfg.d_model, cfg.n_classes, bias=cfg.bias)
        else:
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.n_classes is None and cfg.tie_embeddings:
            self.head.weight = self.wte.weight  # weight tying (GPT-2)

    @torch.no_grad()
    def _init_weights(self) -> None:
        """`config.init` (module docstring). 'gpt2': normal(0, init_std) for Linear/Embedding,
        zero biases; residual output projections (attn.c_proj, mlp.c_proj) use GPT-2's
        init_std/sqrt(2L); DeepNorm instead uses the DeepNet init of its blocks
        (beta = (8N)^(-1/4)). 'normal': normal(0, init_std) on every Linear/Embedding weight,
        zero biases, nothing else. 'torch': the modules keep PyTorch's defaults."""
        cfg = self.config
        if cfg.init == 'torch':
            return
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=cfg.init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        if cfg.init == 'normal':
            return
        if norm_spec(cfg.norm, 'gpt').deepnet:
            beta = deepnorm_beta(cfg.n_layer)
            for blk in self.blocks:
                blk.deepnorm_init_(beta)
        else:
            std = cfg.init_std / math.sqrt(2 * cfg.n_layer)
            for blk in self.blocks:
                nn.init.normal_(blk.attn.c_proj.weight, mean=0.0, std=std)
                nn.init.normal_(blk.mlp.c_proj.weight, mean=0.0, std=std)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> 'GPT':
        """Build a preset size ('tiny', 'small', 'paper_small', 'paper_medium',
        'paper_large', 'paper_xl'); any GPTConfig field can be overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets are {', '.join(PRESETS)}")
        return cls(GPTConfig(**{**PRESETS[name], **overrides}))

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (tied weights counted once). With non_embedding=True,
        token and position embeddings are left out (the tied head goes with them)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """h_0: token + positional embedding (after dropout), the input of blocks[0]."""
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx)
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln_f(h))
