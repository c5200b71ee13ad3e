"""Vision Transformer for 32x32 images (CIFAR-10) built from timm, with the paper's norms.

The paper's ViT-Tiny (d=192, L=6, Table 9) is timm's VisionTransformer; the six
normalization strategies are plugged in through `norm_layer` / `block_fn`:

  pre_ln   timm Block (x + f(LN(x))) with LayerNorm; final LN
  rmsnorm  timm Block with timm's RmsNorm as every norm; final RmsNorm
  subln    timm Block with scale_attn_norm/scale_mlp_norm: an extra LN before the
           attention output projection and before the MLP's fc2 (Magneto); final LN
  post_ln  PostNormBlock: LN(x + f(x)) after each sub-layer; no final norm
  deepnorm PostNormBlock with alpha = (2N)^(1/4) and the DeepNet init (beta = (8N)^(-1/4)); no final norm
  none     timm Block with nn.Identity norms everywhere (No-Norm)

`build_vit` reads the norm's entry in `rksp.models.norms` (placement 'post' -> PostNormBlock, `layer`
-> norm_layer, `inner` -> the SubLN norms, `final`, `deepnet`), so a registered norm needs nothing here.

The model keeps timm's `.blocks` (nn.Sequential); the profiler reads the residual
stream there. h_0 is the input of blocks[0]: patch embedding + cls token + position
embedding; blocks map (B, 1 + n_patches, d) -> (B, 1 + n_patches, d).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn as nn

# timm is an optional dependency (the `vision` extra): it is imported inside the
# functions below, so `import rksp.models` works (and stays fast) without it.

from .gpt import NORMS, deepnorm_alpha, deepnorm_beta, validate_norm
from .norms import norm_spec


@dataclass
class ViTConfig:
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 10
    d_model: int = 192
    n_layer: int = 6
    n_head: int = 3
    mlp_ratio: float = 4.0
    norm: str = 'pre_ln'      # a norm of rksp.models.norms that the ViT builds (NORMS)
    init_std: float = 0.02    # std of the (truncated-normal) Linear / pos-embed init, timm's default

    def __post_init__(self):
        validate_norm(self.norm, 'vit')
        for name in ('img_size', 'patch_size', 'in_chans', 'num_classes', 'd_model', 'n_layer', 'n_head'):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.img_size % self.patch_size != 0:
            raise ValueError(f"img_size ({self.img_size}) must be divisible by patch_size ({self.patch_size})")
        if not self.mlp_ratio > 0 or int(self.mlp_ratio * self.d_model) < 1:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be positive, got {self.init_std!r}")


class PostNormBlock(nn.Module):
    """Post-LN block: x = LN(alpha*x + attn(x)); x = LN(alpha*x + mlp(x)).

    alpha = 1 is Post-LN (Vaswani et al. 2017); alpha = (2N)^(1/4) with
    `deepnorm_init_` is DeepNorm (Wang et al. 2022, "DeepNet"). Accepts the keyword
    arguments timm's VisionTransformer passes to its `block_fn`, reusing timm's
    Attention and Mlp.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, mlp_layer=None,
                 alpha: float = 1.0, device=None, dtype=None, **_unused):
        from timm.layers import Mlp
        from timm.models.vision_transformer import Attention
        super().__init__()
        mlp_layer = mlp_layer or Mlp
        dd = {'device': device, 'dtype': dtype}
        self.alpha = alpha
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias,
                              attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        self.norm1 = norm_layer(dim, **dd)
        self.mlp = mlp_layer(in_features=dim, hidden_features=int(dim * mlp_ratio),
                             act_layer=act_layer, bias=proj_bias, drop=proj_drop, **dd)
        self.norm2 = norm_layer(dim, **dd)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        x = self.norm1(self.alpha * x + self.attn(x, attn_mask=attn_mask, is_causal=is_causal))
        x = self.norm2(self.alpha * x + self.mlp(x))
        return x

    @torch.no_grad()
    def deepnorm_init_(self, beta: float) -> None:
        """DeepNet init: xavier_normal gain 1 for q, k; gain beta for v, attn.proj, mlp.fc1, mlp.fc2."""
        d = self.attn.proj.in_features
        w = self.attn.qkv.weight  # rows: q, k, v
        nn.init.xavier_normal_(w[:d], gain=1.0)
        nn.init.xavier_normal_(w[d:2 * d], gain=1.0)
        nn.init.xavier_normal_(w[2 * d:], gain=beta)
        for lin in (self.attn.proj, self.mlp.fc1, self.mlp.fc2):
            nn.init.xavier_normal_(lin.weight, gain=beta)


def build_vit(cfg: ViTConfig) -> nn.Module:
    """timm VisionTransformer (cls-token pooling, learned position embedding) with `cfg.norm`."""
    from timm.layers import RmsNorm
    from timm.models.vision_transformer import Block, VisionTransformer

    spec = norm_spec(cfg.norm, 'vit')
    kw = {}
    if spec.placement == 'post':
        kw.update(block_fn=partial(PostNormBlock, alpha=deepnorm_alpha(cfg.n_layer)) if spec.deepnet else PostNormBlock)
    else:
        kw.update(block_fn=Block)
    if spec.inner:
        kw.update(scale_attn_norm=True, scale_mlp_norm=True)
    if spec.layer == 'rms':
        kw.update(norm_layer=RmsNorm)
    elif spec.layer == 'none':
        kw.update(norm_layer=nn.Identity)
    elif callable(spec.layer):
        kw.update(norm_layer=partial(_norm_layer, make=spec.layer))   # keyword: timm rebinds keywords only
    # 'ln': timm's default LayerNorm (eps 1e-6)
    if not spec.final and spec.layer != 'none':     # No-Norm's final norm is an Identity either way
        kw.update(final_norm=False)
    model = VisionTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
        num_classes=cfg.num_classes, embed_dim=cfg.d_model, depth=cfg.n_layer,
        num_heads=cfg.n_head, mlp_ratio=cfg.mlp_ratio, global_pool='token', **kw)
    _init_vit(model, cfg)
    model.rksp_config = cfg
    return model


def _norm_layer(dim, make=None, **_):
    """timm's norm_layer(dim, device=, dtype=) from a registry constructor make(dim, bias)."""
    return make(dim, True)


@torch.no_grad()
def _init_vit(model: nn.Module, cfg: ViTConfig) -> None:
    """timm's default ViT init with std = cfg.init_std (identical to timm at 0.02):
    truncated normal for Linear weights and the position embedding, zero biases;
    the patch-embedding conv keeps PyTorch's default. DeepNorm blocks then get the DeepNet init."""
    from timm.layers import trunc_normal_

    for m in model.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=cfg.init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if model.pos_embed is not None:
        trunc_normal_(model.pos_embed, std=cfg.init_std)
    if norm_spec(cfg.norm, 'vit').deepnet:
        beta = deepnorm_beta(cfg.n_layer)
        for blk in model.blocks:
            blk.deepnorm_init_(beta)


__all__ = ['ViTConfig', 'build_vit', 'PostNormBlock', 'NORMS']
