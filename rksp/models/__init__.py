"""Models profiled in the paper: a GPT-style causal transformer and a timm ViT,
each with the six normalization strategies in NORMS. Both expose their residual
blocks at `model.blocks` (the profiler's contract)."""

from .gpt import GPT, GPTConfig, NORMS
from .vit import ViTConfig, build_vit

__all__ = ['GPTConfig', 'GPT', 'ViTConfig', 'build_vit', 'NORMS']
