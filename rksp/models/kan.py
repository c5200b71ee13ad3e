"""KAN transformer: the GPT with each MLP replaced by Kolmogorov-Arnold layers
(Liu et al. 2024, arXiv 2404.19756); paper App. I, Tables 11 and 18 (d = 256, L = 6,
B-spline order B in {4, 8}).

KANLinear(in -> out), for x in R^in:
    y_o = sum_i W_base[o, i] SiLU(x_i) + sum_i sum_j W_spline[o, i, j] B_j(x_i)
with B_j the B-spline basis on a uniform grid over `grid_range` with `grid_size`
intervals, extended by `order` knots on each side (G + 2k + 1 knots, G + k basis
functions, a partition of unity on grid_range), as in efficient-kan / pykan.
The KAN MLP is KANLinear(d -> kan_hidden) then KANLinear(kan_hidden -> d);
kan_hidden defaults to d_model (not 4d: a KANLinear has (G + k + 1) weights per
edge, so width d already costs ~2.5x (B=4) to ~3.5x (B=8) the dense 4d MLP).

Order convention. `spline_order` k is the polynomial DEGREE of the pieces, the
convention of pykan (`k`) and efficient-kan (`spline_order`), whose default 3 is
cubic: order 0 = piecewise constant, 1 = hat functions, 2 = quadratic, 3 = cubic.
The paper's B = 4 and B = 8 are used as k = 4 (quartic) and k = 8. (In de Boor's
convention "order" = degree + 1; to follow it instead, pass spline_order = B - 1.)

Basis evaluation is the Cox-de Boor recursion. `bspline_basis` runs it in full on
any strictly increasing knot vector, vectorized over tokens, features and basis
functions (the reference). KANLinear uses `uniform_bspline_basis`: the same
recursion restricted to the k+1 functions that are non-zero at x (de Boor's
BSPLVB form on the uniform grid), scattered into place; identical values, ~4-6x
faster at d = 256. Both have a hand-written backward from the derivative formula
dB_{j,k}/dx = k/(t_{j+k}-t_j) B_{j,k-1} - k/(t_{j+k+1}-t_{j+1}) B_{j+1,k-1}, so
only the degree-(k-1) values are kept for backward, not every recursion level.

Init: W_base and W_spline ~ N(0, init_std) (both terms then have comparable size
for unit-variance inputs); in each block the second KANLinear, which writes to the
residual stream, uses init_std / sqrt(2L) as GPT-2 does for its output projections.
The grid is fixed (no grid updates during training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .moe import MOE_NORMS, TransformerLM
from .norms import norm_spec

KAN_NORMS = MOE_NORMS


@dataclass
class KANConfig:
    vocab_size: int
    block_size: int                   # context length
    n_layer: int = 6
    n_head: int = 8
    d_model: int = 256
    spline_order: int = 4             # B: polynomial degree of the B-spline pieces (see module doc)
    grid_size: int = 5                # G grid intervals on grid_range
    kan_hidden: Optional[int] = None  # KAN MLP hidden width; None -> d_model
    init_std: float = 0.02
    norm: str = 'pre_ln'              # one of KAN_NORMS
    grid_range: Tuple[float, float] = (-1.0, 1.0)  # pykan / efficient-kan default

    def __post_init__(self):
        for name in ('vocab_size', 'block_size', 'n_layer', 'n_head', 'd_model', 'spline_order', 'grid_size'):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.kan_hidden is not None and (not isinstance(self.kan_hidden, int) or isinstance(self.kan_hidden, bool)
                                            or self.kan_hidden <= 0):
            raise ValueError(f"kan_hidden must be None or a positive integer, got {self.kan_hidden!r}")
        norm_spec(self.norm, 'moe', 'KANTransformer')
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be positive, got {self.init_std!r}")
        lo, hi = self.grid_range
        if not lo < hi:
            raise ValueError(f"grid_range must be (lo, hi) with lo < hi, got {self.grid_range!r}")

    @property
    def d_hidden(self) -> int:
        return self.d_model if self.kan_hidden is None else self.kan_hidden


# ----------------------------------------------------------------------------- B-splines

def uniform_grid(grid_size: int, order: int, grid_range=(-1.0, 1.0), dtype=torch.float32) -> torch.Tensor:
    """Knots t_0..t_{G+2k}: G uniform intervals on grid_range plus k extra knots each side."""
    lo, hi = grid_range
    h = (hi - lo) / grid_size
    return torch.arange(-order, grid_size + order + 1, dtype=torch.float64).mul(h).add(lo).to(dtype)


def _degree0(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """B_{j,0}(x) = 1 if t_j <= x < t_{j+1} else 0; x (..., 1) -> (..., n_knots - 1)."""
    return ((x >= grid[..., :-1]) & (x < grid[..., 1:])).to(x.dtype)


def _raise_degree(x: torch.Tensor, grid: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    """One Cox-de Boor step: B_{j,p} = (x - t_j)/(t_{j+p} - t_j) B_{j,p-1}
                                     + (t_{j+p+1} - x)/(t_{j+p+1} - t_{j+1}) B_{j+1,p-1}."""
    left = (x - grid[..., :-(p + 1)]) / (grid[..., p:-1] - grid[..., :-(p + 1)])
    right = (grid[..., p + 1:] - x) / (grid[..., p + 1:] - grid[..., 1:-p])
    return left * b[..., :-1] + right * b[..., 1:]


class _BSplineBasis(torch.autograd.Function):
    """Cox-de Boor basis with the analytic derivative in backward (keeps only B_{., k-1})."""

    @staticmethod
    def forward(ctx, x, grid, order):
        xe = x.unsqueeze(-1)
        b = _degree0(xe, grid)
        for p in range(1, order):
            b = _raise_degree(xe, grid, b, p)
        ctx.order = order
        if order == 0:
            ctx.save_for_backward(None, grid)
            ctx.x_shape = x.shape
            return b
        ctx.save_for_backward(b, grid)
        return _raise_degree(xe, grid, b, order)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        prev, grid = ctx.saved_tensors
        k = ctx.order
        if k == 0:  # piecewise constant: zero derivative almost everywhere
            return grad.new_zeros(ctx.x_shape), None, None
        dl = k / (grid[..., k:-1] - grid[..., :-(k + 1)])
        dr = k / (grid[..., k + 1:] - grid[..., 1:-k])
        dB = dl * prev[..., :-1] - dr * prev[..., 1:]
        return (grad * dB).sum(-1), None, None


def bspline_basis(x: torch.Tensor, grid: torch.Tensor, order: int) -> torch.Tensor:
    """B-spline basis functions of degree `order` on the knots `grid`.

    x: (..., n_in); grid: (n_knots,) shared by all features or (n_in, n_knots),
    strictly increasing. Returns (..., n_in, n_knots - 1 - order): B_{j,order}(x_i) by the
    Cox-de Boor recursion with half-open degree-0 intervals [t_j, t_{j+1}) (so every
    basis is 0 at and beyond the last knot). Differentiable in x.
    """
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    if grid.ndim not in (1, 2) or grid.shape[-1] < order + 2:
        raise ValueError(f"grid must be (n_knots,) or (n_in, n_knots) with n_knots >= order + 2 = {order + 2}, "
                         f"got shape {tuple(grid.shape)}")
    if bool((grid[..., 1:] <= grid[..., :-1]).any()):
        raise ValueError("grid knots must be strictly increasing")
    return _BSplineBasis.apply(x, grid.to(x.dtype), order)


class _UniformBSplineBasis(torch.autograd.Function):
    """B_{j,k}(x) on the uniform knots t_j = lo + j h, j = 0..n_basis+k, evaluating only
    the k+1 basis functions that are non-zero at x (de Boor's BSPLVB form of the
    Cox-de Boor recursion) and scattering them into their slots.

    With s = (x - lo)/h, i = floor(s), u = s - i, the non-zero functions are
    j = i - r, r = 0..k, with value N_k(u + r), N_k the cardinal B-spline; Cox-de Boor
    on the uniform grid reads N_p(u + r) = (u + r)/p N_{p-1}(u + r)
                                           + (1 - (u + r - 1)/p) N_{p-1}(u + r - 1).
    Backward: dB_{j,k}/dx = (N_{k-1}(u + r) - N_{k-1}(u + r - 1)) / h.
    """

    @staticmethod
    def forward(ctx, x, lo, h, n_basis, order):
        k = order
        n_knots = n_basis + k + 1
        s = ((x - lo) / h).clamp_(-1.0, float(n_knots))   # outside the knots: every slot invalid
        i = s.floor()
        ur = (s - i).unsqueeze(-1) + torch.arange(k + 1, dtype=x.dtype, device=x.device)  # u + r
        v = torch.ones_like(ur[..., :1])                  # N_0(u) = 1
        prev = v
        for p in range(1, k + 1):
            prev = v
            t1 = ur[..., :p] * (1.0 / p) * v              # (u + r)/p N_{p-1}(u + r),  r = 0..p-1
            v = F.pad(t1, (0, 1))
            v[..., 1:] += prev - t1                       # (1 - (u + r)/p) N_{p-1}(u + r) -> slot r + 1
        idx = _UniformBSplineBasis.slots(i, k)
        out = x.new_zeros(*x.shape, n_knots + k + 2).scatter_(-1, idx, v)
        ctx.save_for_backward(prev if k > 0 else None, i)
        ctx.h, ctx.k = h, k
        return out[..., k + 1:k + 1 + n_basis].contiguous()

    @staticmethod
    def slots(i: torch.Tensor, k: int) -> torch.Tensor:
        """Slot of B_{i-r}, r = 0..k, in a buffer padded by k + 1 on the left:
        i + k + 1 - r, in [0, n_knots + k + 1] since i is clamped to [-1, n_knots]."""
        return (i.long() + (k + 1)).unsqueeze(-1) - torch.arange(k + 1, device=i.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        prev, i = ctx.saved_tensors
        k = ctx.k
        if k == 0:
            return grad.new_zeros(i.shape), None, None, None, None
        idx = _UniformBSplineBasis.slots(i, k)
        g = F.pad(grad, (k + 1, k + 2)).gather(-1, idx)             # dL/dB at the k+1 live slots
        dB = F.pad(prev, (0, 1)) - F.pad(prev, (1, 0))               # N_{k-1}(u+r) - N_{k-1}(u+r-1)
        return (g * dB).sum(-1) / ctx.h, None, None, None, None


def uniform_bspline_basis(x: torch.Tensor, lo: float, h: float, n_basis: int, order: int) -> torch.Tensor:
    """Same values as `bspline_basis(x, lo + h * arange(n_basis + order + 1), order)`,
    (..., n_in) -> (..., n_in, n_basis), computed only where non-zero; the fast path
    of KANLinear (about 4x faster than the full recursion at order 8)."""
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    if not h > 0 or n_basis < 1:
        raise ValueError(f"need h > 0 and n_basis >= 1, got h={h!r}, n_basis={n_basis!r}")
    return _UniformBSplineBasis.apply(x, float(lo), float(h), int(n_basis), order)


# ----------------------------------------------------------------------------- KAN layers

class KANLinear(nn.Module):
    """KAN layer in -> out: y = W_base SiLU(x) + sum_j W_spline[:, :, j] B_j(x)."""

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 grid_range=(-1.0, 1.0), init_std: float = 0.02):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        self.lo = float(grid_range[0]) - spline_order * (grid_range[1] - grid_range[0]) / grid_size  # t_0
        self.h = (grid_range[1] - grid_range[0]) / grid_size
        self.register_buffer('grid', uniform_grid(grid_size, spline_order, grid_range), persistent=False)
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.reset_parameters(init_std)

    @torch.no_grad()
    def reset_parameters(self, std: float) -> None:
        nn.init.normal_(self.base_weight, mean=0.0, std=std)
        nn.init.normal_(self.spline_weight, mean=0.0, std=std)

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., in, G + k); equals bspline_basis(x, self.grid, k)."""
        return uniform_bspline_basis(x, self.lo, self.h, self.grid_size + self.spline_order, self.spline_order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(F.silu(x), self.base_weight)
        spline = F.linear(self.basis(x).flatten(-2), self.spline_weight.flatten(1))
        return base + spline

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"grid_size={self.grid_size}, spline_order={self.spline_order}")


class KANMLP(nn.Module):
    """The KAN replacement of the transformer MLP: d -> hidden -> d."""

    def __init__(self, cfg: KANConfig):
        super().__init__()
        kw = dict(grid_size=cfg.grid_size, spline_order=cfg.spline_order, grid_range=cfg.grid_range,
                  init_std=cfg.init_std)
        self.fc1 = KANLinear(cfg.d_model, cfg.d_hidden, **kw)
        self.fc2 = KANLinear(cfg.d_hidden, cfg.d_model, **kw)   # residual output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class KANTransformer(TransformerLM):
    """GPT-style causal transformer with KAN MLPs. forward(idx [B, T]) -> logits [B, T, vocab]."""

    def __init__(self, config: KANConfig):
        super().__init__()
        self.config = cfg = config
        self._build(cfg, lambda: KANMLP(cfg))
        self._init_gpt2(lambda blk: [blk.mlp.fc2.base_weight, blk.mlp.fc2.spline_weight])
