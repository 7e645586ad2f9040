"""Coupled Adam (Stollenwerk & Stollenwerk, arXiv 2502.08441): AdamW whose second moment, for a vocabulary
matrix E of shape [V, H], is averaged over the vocabulary before it divides the update.

Why: the output-embedding gradient is G = sum_t (p_t - y_t) h_t^T, whose rows sum to zero. SGD therefore never
moves the mean embedding, but Adam's per-token denominators give rare tokens bigger steps, the row updates stop
summing to zero, and the mean embedding drifts: the embeddings become anisotropic. Sharing one denominator per
hidden dimension (column) makes the update proportional to the first moment again, which sums to zero.

Exactly as the paper's optimizer: the first moment and the stored second moment stay per element; only the
denominator of each step uses `coupled_scale * mean_over_rows(exp_avg_sq)` (the stored state is never
overwritten, so the scale acts once per step instead of compounding through beta2); standard bias correction;
decoupled (AdamW) weight decay. With one row (V=1) and coupled_scale=1 it is torch's AdamW, bit for bit.
"""
from __future__ import annotations

import torch
from torch import Tensor


class CoupledAdam(torch.optim.AdamW):
    """AdamW for 2-D (or higher) tensors whose denominator is shared along dim 0 (the vocabulary).

    Reuses AdamW's argument checks, param groups and state layout (`step`, `exp_avg`, `exp_avg_sq`), so its
    state_dict saves, deep-copies and restores like any torch optimizer. `coupled_scale` is the paper's scaled
    variant: the averaged second moment is multiplied by it, so the step size scales by 1/sqrt(coupled_scale).
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, coupled_scale: float = 1.0):
        if not coupled_scale > 0:
            raise ValueError(f"coupled_scale={coupled_scale} must be > 0 (COUPLED_ADAM_SCALE)")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False)
        self.defaults["coupled_scale"] = coupled_scale
        for group in self.param_groups:
            group.setdefault("coupled_scale", coupled_scale)
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"CoupledAdam couples the rows of a [vocab, dim] matrix; got a tensor of shape "
                                     f"{tuple(p.shape)}: give vectors and scalars to plain Adam")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay, scale = group["lr"], group["eps"], group["weight_decay"], group["coupled_scale"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("CoupledAdam does not support sparse gradients")
                state = self.state[p]
                if not state:  # the same layout and dtypes as torch's Adam, so state_dicts are interchangeable
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                step_t += 1
                step = step_t.item()
                if weight_decay != 0:
                    p.mul_(1 - lr * weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                denom = (coupled_second_moment(exp_avg_sq, scale).sqrt() / bias_correction2_sqrt).add_(eps)
                p.addcdiv_(exp_avg, denom.to(p.dtype), value=-lr / bias_correction1)
        return loss


def coupled_second_moment(exp_avg_sq: Tensor, scale: float = 1.0) -> Tensor:
    """scale * the vocabulary mean of the second moment, one value per column ([1, H]), in at least fp32
    (a bf16 mean over tens of thousands of rows would lose the small entries). A new tensor: the state is untouched."""
    dtype = torch.promote_types(exp_avg_sq.dtype, torch.float32)
    return exp_avg_sq.to(dtype).mean(dim=0, keepdim=True).mul_(scale)
