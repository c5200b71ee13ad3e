"""Mamba selective state-space LM (Gu & Dao 2023, arXiv 2312.00752); paper App. I,
Tables 11 and 17 (d = 256 / 512, L = 6).

Residual block (as in the reference `mamba_ssm` MambaLMHeadModel):
    h -> h + Mixer(RMSNorm(h))
Mixer (Gu & Dao 2023, Alg. 2 / Fig. 3), with d_inner = expand * d_model:
    x, z  = in_proj(u).chunk(2)                         (B, T, d_inner) each
    x     = SiLU(causal depthwise conv1d(x))            kernel d_conv, left padding
    dt, B, C = x_proj(x).split(dt_rank, d_state, d_state)   input-dependent
    delta = softplus(dt_proj(dt))                       dt_proj.bias: the standard dt init
    A     = -exp(A_log),  A_log = log(1..d_state)       S4D-real init, (d_inner, d_state)
    h_t   = exp(delta_t A) h_{t-1} + delta_t B_t x_t     zero-order-hold A, Euler B (B x ~ delta B x)
    y_t   = C_t h_t + D x_t
    out   = out_proj(y * SiLU(z))
Embedding -> blocks -> final RMSNorm -> head tied to the embedding; no positional
embedding (the SSM is causal and position-aware by construction).

Init follows `mamba_ssm`: dt_proj weight U(+-dt_rank^-0.5), dt_proj bias = softplus^-1
of dt ~ LogUniform[dt_min, dt_max] (floored at dt_init_floor), D = 1, PyTorch default
init for in_proj / x_proj / conv1d, embedding N(0, init_std), zero Linear biases, and
out_proj kaiming-uniform divided by sqrt(n_layer).

The scan runs in plain torch (`selective_scan`): discretization is vectorized over
all time steps, then a sequential loop over T updates the (B, d_inner, d_state)
state with one fused op per step, forward and (custom) backward. Fine for T <= 256;
it keeps 2 * B*T*d_inner*d_state floats per layer for backward (exp(delta A) and
the states). On CUDA, `mamba_ssm`'s fused kernel is used when that package imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

RMS_EPS = 1e-5  # RMSNorm epsilon (mamba_ssm default)


@dataclass
class MambaConfig:
    vocab_size: int
    block_size: int                   # maximum sequence length (checked, not used by the SSM)
    n_layer: int = 6
    d_model: int = 256
    d_state: int = 16                 # N, SSM state size per channel
    d_conv: int = 4                   # depthwise causal conv kernel
    expand: int = 2                   # d_inner = expand * d_model
    dt_rank: Union[int, str] = 'auto'  # 'auto' -> ceil(d_model / 16)
    init_std: float = 0.02            # embedding init
    dt_min: float = 0.001             # dt init range (mamba_ssm defaults)
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4

    def __post_init__(self):
        for name in ('vocab_size', 'block_size', 'n_layer', 'd_model', 'd_state', 'd_conv', 'expand'):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.dt_rank != 'auto' and (not isinstance(self.dt_rank, int) or isinstance(self.dt_rank, bool)
                                       or self.dt_rank <= 0):
            raise ValueError(f"dt_rank must be 'auto' or a positive integer, got {self.dt_rank!r}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be positive, got {self.init_std!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min!r}, dt_max={self.dt_max!r}")
        if not self.dt_init_floor > 0:
            raise ValueError(f"dt_init_floor must be positive, got {self.dt_init_floor!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == 'auto' else self.dt_rank


# ----------------------------------------------------------------------------- scan

_KERNEL = []  # cached mamba_ssm.selective_scan_fn (or None), imported on first CUDA call


def _cuda_kernel():
    if not _KERNEL:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception:  # not installed, or built for another torch/CUDA
            selective_scan_fn = None
        _KERNEL.append(selective_scan_fn)
    return _KERNEL[0]


def _check_scan_shapes(u, delta, A, B, C, D, z):
    if u.ndim != 3:
        raise ValueError(f"u must be (batch, d_inner, T), got {tuple(u.shape)}")
    b, d, T = u.shape
    if A.ndim != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d_inner={d}, d_state), got {tuple(A.shape)}")
    n = A.shape[1]
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    for name, t in (('B', B), ('C', C)):
        if t.shape != (b, n, T):
            raise ValueError(f"{name} must be (batch, d_state, T) = {(b, n, T)}, got {tuple(t.shape)}")
    if D is not None and D.shape != (d,):
        raise ValueError(f"D must be (d_inner,) = ({d},), got {tuple(D.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


class _SelectiveScanCore(torch.autograd.Function):
    """The discretized recurrence, time-major, with a hand-written backward.

    dt, dtu (T, b, d); A (d, n); B, C (T, b, n) -> y (T, b, d):
        dA_t = exp(dt_t A),  h_t = dA_t * h_{t-1} + (dtu_t B_t),  h_{-1} = 0,  y_t = h_t C_t.
    Forward and backward are each one fused op per time step plus vectorized work.
    Backward is the reverse-time scan g_t = C_t gy_t + dA_{t+1} g_{t+1}, then
    d dtu = sum_n g B, d B = sum_d g dtu, d C = sum_d gy h, and with
    q_t = g_t h_{t-1} dA_t:  d dt = sum_n q A,  d A = sum_{t,b} q dt.
    Keeps exp(dt A) and the states h for backward (2 * T*b*d*n floats).
    """

    @staticmethod
    def forward(ctx, dt, A, dtu, B, C):
        dA = torch.exp_(dt.unsqueeze(-1) * A)                      # (T, b, d, n)
        H = dtu.unsqueeze(-1) * B.unsqueeze(2)                     # starts as dB*u, becomes the states
        for t in range(1, H.shape[0]):
            H[t].addcmul_(dA[t], H[t - 1])
        ctx.save_for_backward(dt, A, dtu, B, C, dA, H)
        return (H @ C.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        dt, A, dtu, B, C, dA, H = ctx.saved_tensors
        gy = gy.contiguous()
        grad_C = (gy.unsqueeze(-2) @ H).squeeze(-2)
        G = gy.unsqueeze(-1) * C.unsqueeze(2)                      # direct term C_t gy_t
        for t in range(G.shape[0] - 2, -1, -1):
            G[t].addcmul_(dA[t + 1], G[t + 1])                     # g_t = dL/dh_t
        grad_dtu = (G @ B.unsqueeze(-1)).squeeze(-1)
        grad_B = (dtu.unsqueeze(-2) @ G).squeeze(-2)
        Q = G                                                      # reuse: q_t = g_t h_{t-1} dA_t
        Q[1:].mul_(H[:-1])
        Q[0].zero_()
        Q.mul_(dA)
        grad_A = (Q * dt.unsqueeze(-1)).sum((0, 1))
        grad_dt = Q.mul_(A).sum(-1)
        return grad_dt, grad_A, grad_dtu, grad_B, grad_C


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   use_kernel=True):
    """Selective scan y = SSM(A, B, C, delta)(u) (Gu & Dao 2023, Alg. 2), `mamba_ssm` layout.

    u, delta, z: (batch, d_inner, T); A: (d_inner, d_state) (negative reals);
    B, C: (batch, d_state, T) (input-dependent); D, delta_bias: (d_inner,).
    delta <- softplus(delta + delta_bias) if delta_softplus; then per step
        h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,  y_t = C_t h_t + D u_t,
    and y <- y * SiLU(z) if z is given. Returns y: (batch, d_inner, T).
    Discretization is vectorized over T; the recurrence is one fused op per time
    step forward and backward (`_SelectiveScanCore`, hand-written backward).
    """
    if use_kernel and u.is_cuda:
        kernel = _cuda_kernel()
        if kernel is not None:
            return kernel(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    _check_scan_shapes(u, delta, A, B, C, D, z)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # time-major and contiguous, so that every per-step slice is one contiguous block
    dt = delta.permute(2, 0, 1).contiguous()                                 # (T, b, d)
    dtu = dt * u.permute(2, 0, 1)
    y = _SelectiveScanCore.apply(dt, A, dtu, B.permute(2, 0, 1).contiguous(),
                                 C.permute(2, 0, 1).contiguous())           # (T, b, d)
    y = y.permute(1, 2, 0)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_naive(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The selective SSM written as the plain recurrence, one time step at a time
    (reference for tests; same arguments and result as `selective_scan`)."""
    b, d, T = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(T):
        dt = delta[:, :, t]
        if delta_bias is not None:
            dt = dt + delta_bias
        if delta_softplus:
            dt = torch.log1p(torch.exp(dt))
        A_bar = torch.exp(dt[:, :, None] * A[None])                   # ZOH: exp(delta A)
        Bx_bar = dt[:, :, None] * B[:, None, :, t] * u[:, :, t, None]  # Euler: delta B x
        h = A_bar * h + Bx_bar
        y = (h * C[:, None, :, t]).sum(-1)
        if D is not None:
            y = y + D * u[:, :, t]
        if z is not None:
            y = y * z[:, :, t] * torch.sigmoid(z[:, :, t])
        ys.append(y)
    return torch.stack(ys, dim=-1)


# ----------------------------------------------------------------------------- model

class MambaMixer(nn.Module):
    """The Mamba mixer (selective SSM with a SiLU gate); (B, T, d) -> (B, T, d)."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        d, di, n, r = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank_value
        self.d_inner, self.d_state, self.dt_rank = di, n, r
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.out_proj = nn.Linear(di, d, bias=False)
        # S4D-real init: A = -(1, 2, ..., d_state) for every channel
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self._init_dt(cfg)

    @torch.no_grad()
    def _init_dt(self, cfg: MambaConfig) -> None:
        """dt_proj: weight U(+-dt_rank^-0.5); bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]."""
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min))
                       + math.log(cfg.dt_min)).clamp(min=cfg.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

    def forward(self, hs: torch.Tensor) -> torch.Tensor:
        T = hs.shape[1]
        x, z = self.in_proj(hs).chunk(2, dim=-1)                            # (B, T, di) each
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :T])                 # causal: keep the first T
        dt, Bm, Cm = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)              # bias goes in the scan
        A = -torch.exp(self.A_log)
        y = selective_scan(x, delta, A, Bm.transpose(1, 2), Cm.transpose(1, 2), self.D,
                           z=z.transpose(1, 2), delta_bias=self.dt_proj.bias, delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))


class MambaBlock(nn.Module):
    """Residual block h -> h + Mixer(RMSNorm(h))."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.norm = nn.RMSNorm(cfg.d_model, eps=RMS_EPS)
        self.mixer = MambaMixer(cfg)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.mixer(self.norm(h))


class Mamba(nn.Module):
    """Mamba LM: embedding -> blocks -> RMSNorm -> tied head.
    forward(idx [B, T]) -> logits [B, T, vocab_size]."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = cfg = config
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList([MambaBlock(cfg) for _ in range(cfg.n_layer)])
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=RMS_EPS)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        self.head.weight = self.wte.weight  # tied, as in mamba_ssm

    @torch.no_grad()
    def _init_weights(self) -> None:
        """mamba_ssm's `_init_weights`: zero Linear biases (not dt_proj's), N(0, init_std)
        embedding, out_proj kaiming-uniform / sqrt(n_layer); the rest keeps PyTorch defaults."""
        cfg = self.config
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, '_no_reinit', False):
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.wte.weight, mean=0.0, std=cfg.init_std)
        for blk in self.blocks:
            nn.init.kaiming_uniform_(blk.mixer.out_proj.weight, a=math.sqrt(5))
            blk.mixer.out_proj.weight /= math.sqrt(cfg.n_layer)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters (tied head counted once); non_embedding drops the token embedding."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
        return n

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """h_0, the input of blocks[0]."""
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence length {idx.size(1)} exceeds block_size {self.config.block_size}")
        return self.wte(idx)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx)
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.norm_f(h))

    def aux_loss(self) -> torch.Tensor:
        return torch.zeros((), device=self.wte.weight.device)
