"""Small building blocks shared by the GPT and the mixers."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from quant.qat import qat_weight


class RMSNorm(nn.Module):
    def __init__(self, eps: float | None = None):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


class CastedLinear(nn.Linear):
    """Weights stay fp32 for the optimizer; the matmul runs in the activation dtype (bf16 under autocast).
    With QAT armed (quant.qat.attach_qat sets `qat_bits` and a `qat_gate` buffer) the weight is fake-quantized
    to its export precision whenever the gate is 1."""

    qat_bits = 0  # 0: QAT not armed on this layer; fixed before torch.compile traces the forward

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        w = qat_weight(self.weight, self.qat_bits, self.qat_gate) if self.qat_bits else self.weight
        return F.linear(x, w.to(x.dtype), bias)


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
