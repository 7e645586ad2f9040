"""The HWNODE flow math, shared by the language-model mixer (arch/) and the RL policies (rl/).

E = P_K(dt * A / sigma(A)) with P_K the order-K Taylor polynomial of exp (optionally with learned
term gates g_k on the k >= 1 terms), sigma(A) the spectral norm of A, computed in fp32.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def power_iteration(A: Tensor, u: Tensor, v: Tensor, steps: int = 1) -> None:
    """Advance the singular-vector estimates u (rows) and v (columns) of A in place."""
    A = A.float()
    for _ in range(steps):
        v.copy_(F.normalize(A.T @ u.float(), dim=0, eps=1e-12))
        u.copy_(F.normalize(A @ v.float(), dim=0, eps=1e-12))


def spectral_norm_estimate(A: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """sigma = u^T A v with u, v treated as constants, so the gradient reaches A as in torch's spectral_norm."""
    return (u.detach().float() @ A.float() @ v.detach().float()).clamp_min(1e-8)


def taylor_flow_matrix(M: Tensor, order: int, term_gates: Tensor | None = None) -> Tensor:
    """I + sum_{k=1..K} g_k M^k / k! in fp32 (g_k = 1 without gates). M is square (n, n)."""
    M = M.float()
    eye = torch.eye(M.size(0), device=M.device, dtype=torch.float32)
    E, term = eye, eye
    for k in range(1, order + 1):
        term = term @ M / k
        E = E + (term if term_gates is None else term_gates[k - 1].float() * term)
    return E


def taylor_remainder_bound(norm: float, order: int) -> float:
    """Upper bound on ||exp(M) - P_K(M)|| for ||M|| = norm."""
    return norm ** (order + 1) / math.factorial(order + 1) * math.exp(norm)


@torch.no_grad()
def top_singular_pair(A: Tensor) -> tuple[Tensor, Tensor]:
    """Exact leading left/right singular vectors (u, v) of A in fp32, so that u^T A v = sigma_max(A).
    Used to (re)start the power iteration whenever A jumps (init, loading an artifact), instead of
    trusting one power step from a stale or random vector."""
    U, _, Vh = torch.linalg.svd(A.float())
    return U[:, 0].contiguous(), Vh[0].contiguous()
