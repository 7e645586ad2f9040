"""Small building blocks shared by the GPT and the mixers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, eps: float | None = None):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


class CastedLinear(nn.Linear):
    """Weights stay fp32 for the optimizer; the matmul runs in the activation dtype (bf16 under autocast)."""

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


def zero_init(linear: nn.Linear) -> nn.Linear:
    """Mark an output projection to start at zero, so each residual branch begins as the identity."""
    linear._zero_init = True
    return linear


def keep_float_names(model: nn.Module) -> set[str]:
    """State-dict names of parameters/buffers their module marked `_keep_float = True`
    (tensors that must not be quantized, e.g. eigenvalues, step sizes, flow matrices)."""
    names = {n for n, p in model.named_parameters() if getattr(p, "_keep_float", False)}
    names |= {n for n, b in model.named_buffers() if getattr(b, "_keep_float", False)}
    return names
