"""Small building blocks shared by the GPT and the mixers."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, eps: float | None = None):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


class _Bf16Matmul(torch.autograd.Function):
    """x @ w.T with bf16 operands and fp32 result and gradients: the product runs on the CPU's native
    bf16 units (AMX / AVX512-BF16, 4-7x the fp32 rate), everything around it stays fp32. The bf16 copies of x
    and w are what backward needs, so they are saved instead of the fp32 tensors."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)
        ctx.save_for_backward(xb, wb)
        return F.linear(xb, wb).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        xb, wb = ctx.saved_tensors
        gb = grad.to(torch.bfloat16)
        grad_x = (gb @ wb).to(grad.dtype)
        grad_w = (gb.reshape(-1, gb.size(-1)).T @ xb.reshape(-1, xb.size(-1))).to(torch.float32)
        return grad_x, grad_w


def casted_linear(x: Tensor, w: Tensor, bias: Tensor | None = None, matmul_dtype: torch.dtype | None = None) -> Tensor:
    """F.linear in the activation dtype; with matmul_dtype=torch.bfloat16 and fp32 activations (no autocast),
    the product alone runs in bf16 (MATMUL_DTYPE=bf16)."""
    if matmul_dtype == torch.bfloat16 and x.dtype == torch.float32:
        y = _Bf16Matmul.apply(x, w.float())
        return y + bias.float() if bias is not None else y
    return F.linear(x, w.to(x.dtype), bias.to(x.dtype) if bias is not None else None)


class CastedLinear(nn.Linear):
    """Weights stay fp32 for the optimizer; the matmul runs in the activation dtype (bf16 under autocast), or
    in bf16 with fp32 activations when `matmul_dtype` is set (set_matmul_dtype).
    With QAT armed (quant.qat.attach_qat sets `qat_bits` and a `qat_gate` buffer) the weight is fake-quantized
    to its export precision whenever the gate is 1."""

    qat_bits = 0  # 0: QAT not armed on this layer; fixed before torch.compile traces the forward
    matmul_dtype: torch.dtype | None = None  # fixed before torch.compile traces the forward

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if self.qat_bits:  # only with QAT_SCHEME, whose attach_qat imported quant.qat (a record ships it only then)
            from quant.qat import qat_weight

            w = qat_weight(w, self.qat_bits, self.qat_gate)
        return casted_linear(x, w, self.bias, self.matmul_dtype)


def set_matmul_dtype(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Multiply every CastedLinear (and any module with a `matmul_dtype` attribute, e.g. the GPT's tied head) in
    `dtype` (None: the activation dtype). Call before torch.compile."""
    for module in model.modules():
        if hasattr(module, "matmul_dtype"):
            module.matmul_dtype = dtype


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with bf16 matmul instructions (AMX-BF16 or AVX512-BF16), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f in flags.split() for f in ("amx_bf16", "avx512_bf16"))


def hidden_width(dim: int, mult: float) -> int:
    hidden = int(round(mult * dim))
    if hidden <= 0:
        raise ValueError(f"MLP_MULT={mult} gives a hidden width of {hidden} at MODEL_DIM={dim}; raise MLP_MULT")
    return hidden


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
