"""Models profiled in the paper: a GPT-style causal transformer and a timm ViT, each
with the six normalization strategies in NORMS, and the MoE / Mamba / KAN language
models of App. I. All expose their residual blocks at `model.blocks` (the
profiler's contract). The normalizations are one registry, `rksp.models.norms` (`NormSpec`,
`register_norm`)."""

from .gpt import GPT, GPTConfig, NORMS
from .kan import KANConfig, KANTransformer, bspline_basis
from .mamba import Mamba, MambaConfig, selective_scan
from .moe import MoEConfig, MoEGPT
from .norms import NormSpec, register_norm
from .vit import ViTConfig, build_vit

__all__ = ['GPTConfig', 'GPT', 'ViTConfig', 'build_vit', 'NORMS', 'MoEConfig', 'MoEGPT',
           'MambaConfig', 'Mamba', 'selective_scan', 'KANConfig', 'KANTransformer', 'bspline_basis', 'NormSpec',
           'register_norm']
