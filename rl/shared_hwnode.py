"""Shared (virtual-depth) HWNODE backbone, the reference "hwnode-*" policy trunk.

embed e = Linear(o→h)(x); then ONE block applied T times with the same weights:
    z = LeakyReLU_0.5(W_in h);   h ← h + LeakyReLU_0.5(W_out P z)²
with P = Taylor_K(Δt·A/σ̂(A)) (optionally with learned term gates), then LayerNorm(h).
The flow math (power iteration, σ̂, Taylor polynomial) is arch/hwnode_flow.py, shared with the LM mixer.
params = (o·h + h) + 2·h·s + s² + 1 (Δt) + 2h (+ K term gates); compute grows with T and K, params do not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arch.hwnode_flow import power_iteration, spectral_norm_estimate, taylor_flow_matrix


class SharedHWNODE(nn.Module):
    def __init__(self, in_dim: int, width: int, state_dim: int, virtual_depth: int, order: int,
                 term_gates: bool = False):
        super().__init__()
        if virtual_depth < 1 or order < 1:
            raise ValueError(f"SharedHWNODE needs virtual_depth >= 1 and order >= 1, got {virtual_depth}, {order}")
        self.out_dim, self.virtual_depth, self.order = width, virtual_depth, order
        self.embed = nn.Linear(in_dim, width)
        self.w_in = nn.Linear(width, state_dim, bias=False)
        self.w_out = nn.Linear(state_dim, width, bias=False)
        # Reference init: A ~ N(0, 0.1²), Δt = 1; W_in/W_out/embed keep PyTorch's default Linear init.
        self.A = nn.Parameter(0.1 * torch.randn(state_dim, state_dim))
        self.dt = nn.Parameter(torch.tensor(1.0))
        self.term_gates = nn.Parameter(torch.ones(order)) if term_gates else None
        # Singular-vector estimates: persistent, so a reloaded policy keeps its σ̂ (see MIXERS.md 1.3).
        self.register_buffer("u", F.normalize(torch.randn(state_dim), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(state_dim), dim=0))
        self.norm = nn.LayerNorm(width)
        self._cache: tuple[tuple[int, ...], Tensor] | None = None

    def _weights_version(self) -> tuple[int, ...]:
        gates = () if self.term_gates is None else (self.term_gates._version,)
        return (self.A._version, self.dt._version, *gates)

    def flow_matrix(self) -> Tensor:
        """P = Taylor_K(Δt·Â), one power-iteration step per call while training.

        In eval mode without grad (SB3 rollouts and evaluation) P is cached until A, Δt or the gates
        change (an optimizer step bumps their version), which saves the per-step recompute.
        """
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and self._cache is not None and self._cache[0] == self._weights_version():
            return self._cache[1]
        power_iteration(self.A, self.u, self.v)
        # Clone u, v: the next forward updates the buffers in place, which must not touch saved tensors.
        sigma = spectral_norm_estimate(self.A, self.u.clone(), self.v.clone())
        P = taylor_flow_matrix(self.dt * self.A / sigma, self.order, self.term_gates)
        self._cache = (self._weights_version(), P) if cacheable else None
        return P

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        P = self.flow_matrix().to(h.dtype)
        for _ in range(self.virtual_depth):
            z = F.leaky_relu(self.w_in(h), 0.5)
            # The square also applies to the negative branch, so every update is >= 0 (as the reference).
            h = h + F.leaky_relu(self.w_out(z @ P.T), 0.5).square()
        return self.norm(h)
