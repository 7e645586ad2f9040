"""Stacked (unshared) HW blocks with a learned polynomial flow: the reference taylor/chebyshev variants.

Each of N physical blocks is residual with its own weights:
    h ← h + W_out·relu²( relu²(W_in·LayerNorm(h)) · P(Â)ᵀ ),   P(Â) = Σ_k w_k B_k(Â)
with learned w (poly_basis.py). Â is kept at ||Â||₂ <= 1 either by the shared one-step power-iteration
spectral norm (arch/hwnode_flow.py, one step per training forward; A init N(0, 0.1²) or orthogonal) or, for "ortho-param", by torch's
orthogonal parametrization (Â orthogonal). Block params = 2h + (h·s + s) + s² + (K+1) + (s·h + h); the
orthogonal parametrization stores a full s×s "original", so the count is the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from arch.hwnode_flow import power_iteration, spectral_norm_estimate
from rl.backbone import BlockStack
from rl.poly_basis import initial_coefficients, polynomial_matrix

A_MODES = ("spectral", "ortho-init", "ortho-param")


class HWBlock(nn.Module):
    def __init__(self, width: int, state_dim: int, order: int, basis: str, a_mode: str = "spectral"):
        super().__init__()
        if a_mode not in A_MODES:
            raise ValueError(f"unknown A mode {a_mode!r}; choose one of {A_MODES}")
        self.basis, self.a_mode = basis, a_mode
        self.norm = nn.LayerNorm(width)
        self.w_in = nn.Linear(width, state_dim)
        self.w_out = nn.Linear(state_dim, width)
        nn.init.xavier_uniform_(self.w_in.weight)  # reference init; biases keep PyTorch's default
        nn.init.xavier_uniform_(self.w_out.weight)
        self.coefficients = nn.Parameter(initial_coefficients(basis, order))
        # A lives in a bias-free Linear so the orthogonal parametrization can wrap it.
        self.flow = nn.Linear(state_dim, state_dim, bias=False)
        if a_mode == "spectral":
            nn.init.normal_(self.flow.weight, std=0.1)
        else:
            nn.init.orthogonal_(self.flow.weight)
        if a_mode == "ortho-param":
            parametrizations.orthogonal(self.flow)  # starts at the orthogonal init above
        else:
            self.register_buffer("u", F.normalize(torch.randn(state_dim), dim=0))
            self.register_buffer("v", F.normalize(torch.randn(state_dim), dim=0))

    def normalized_a(self) -> Tensor:
        A = self.flow.weight
        if self.a_mode == "ortho-param":
            return A  # already orthogonal, ||A||₂ = 1
        if self.training:  # as torch's spectral_norm: u, v advance in training forwards only
            power_iteration(A, self.u, self.v)
        return A / spectral_norm_estimate(A, self.u.clone(), self.v.clone())

    def forward(self, h: Tensor) -> Tensor:
        P = polynomial_matrix(self.normalized_a(), self.coefficients, self.basis).to(h.dtype)
        z = F.relu(self.w_in(self.norm(h))).square()
        return h + self.w_out(F.relu(z @ P.T).square())


class StackedHW(BlockStack):
    def __init__(self, in_dim: int, width: int, state_dim: int, blocks: int, order: int, basis: str,
                 a_mode: str = "spectral"):
        super().__init__(in_dim, width, (HWBlock(width, state_dim, order, basis, a_mode) for _ in range(blocks)))
