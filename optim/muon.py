"""Muon: momentum SGD whose update for each matrix is orthogonalized by a Newton-Schulz iteration
(Keller Jordan's Muon, as used by modded-nanogpt and the public baseline). Under torch.distributed each
rank orthogonalizes every world_size-th matrix and one all-reduce shares the results.

Weight decay is decoupled, as in the records (MUON_WD): every matrix is multiplied by 1 - lr * weight_decay
before its update, so the decay follows the LR schedule and is independent of the orthogonalized step."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic iteration tuned to push singular values towards 1 quickly


def zeropower_via_newtonschulz5(G: Tensor, steps: int, eps: float = 1e-7) -> Tensor:
    """Approximate U V^T of G = U S V^T. bf16 on GPU (tensor cores); fp32 on CPU, where bf16 matmuls are slow."""
    a, b, c = NS_COEFFS
    X = G.bfloat16() if G.is_cuda else G.float()
    X = X / (X.norm() + eps)
    transposed = G.size(0) > G.size(1)
    if transposed:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if transposed else X


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float, backend_steps: int, nesterov: bool = True,
                 weight_decay: float = 0.0):
        if weight_decay < 0:
            raise ValueError(f"Muon weight_decay={weight_decay} must be >= 0 (MUON_WD)")
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov,
                                      weight_decay=weight_decay))
        self.orthogonalize = zeropower_via_newtonschulz5  # train_gpt swaps in a compiled version on CUDA

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distributed = dist.is_available() and dist.is_initialized()
        world_size = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            momentum = group["momentum"]
            update_dtype = torch.bfloat16 if params[0].is_cuda else torch.float32
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=update_dtype)
            offset = 0
            for i, p in enumerate(params):
                if i % world_size == rank and p.grad is not None:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad)
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(p.grad)
                    g = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                    g = self.orthogonalize(g, steps=group["backend_steps"])
                    g = g * max(1.0, g.size(0) / g.size(1)) ** 0.5  # keep RMS update size independent of aspect ratio
                    flat[offset : offset + p.numel()] = g.reshape(-1)
                offset += p.numel()
            if distributed:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            decay = 1.0 - group["lr"] * group["weight_decay"]
            for p in params:
                if decay != 1.0 and p.grad is not None:  # every rank decays every matrix: all hold the same weights
                    p.mul_(decay)
                p.add_(flat[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()
        return loss
