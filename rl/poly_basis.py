"""Matrix polynomial bases for the learned-coefficient flows of the stacked HW blocks.

P(A) = Σ_k w_k B_k(A) with B_k = A^k (learned Taylor, w init 1/k!) or the Chebyshev polynomials
T_0 = I, T_1 = A, T_{k+1} = 2A·T_k − T_{k−1} (w init [1, 1, 1/2, 1/3, ...]). RL-only: the LM side uses
the fixed/gated Taylor flow of arch/hwnode_flow.py.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

BASES = ("taylor", "chebyshev")


def power_basis(M: Tensor, order: int) -> Tensor:
    """Stack (order+1, n, n) of I, M, M², ..., M^order."""
    terms = [torch.eye(M.size(0), device=M.device, dtype=M.dtype)]
    for _ in range(order):
        terms.append(terms[-1] @ M)
    return torch.stack(terms)


def chebyshev_basis(M: Tensor, order: int) -> Tensor:
    """Stack (order+1, n, n) of T_0(M) .. T_order(M); bounded for ||M||₂ <= 1."""
    terms = [torch.eye(M.size(0), device=M.device, dtype=M.dtype), M]
    for _ in range(order - 1):
        terms.append(2 * M @ terms[-1] - terms[-2])
    return torch.stack(terms[: order + 1])


def initial_coefficients(basis: str, order: int) -> Tensor:
    if basis == "taylor":
        return torch.tensor([1.0 / math.factorial(k) for k in range(order + 1)])
    if basis == "chebyshev":
        return torch.tensor([1.0] + [1.0 / k for k in range(1, order + 1)])
    raise ValueError(f"unknown polynomial basis {basis!r}; choose one of {BASES}")


def polynomial_matrix(M: Tensor, coefficients: Tensor, basis: str) -> Tensor:
    order = coefficients.numel() - 1
    stack = power_basis(M, order) if basis == "taylor" else chebyshev_basis(M, order)
    return torch.einsum("k,kij->ij", coefficients.to(M.dtype), stack)
