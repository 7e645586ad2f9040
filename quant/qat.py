"""Quantization-aware training: the forward pass sees each weight rounded to its export precision, the
backward pass treats the rounding as the identity (straight-through estimator).

`attach_qat` gives every CastedLinear whose weight will be quantized a bit width and a 0-dim gate buffer
(a *tensor*); `set_qat(model, True)` fills the gates with 1 late in training. The gate is a tensor, not a Python flag, so a
compiled graph reads it at run time: a flag would be frozen into the graph when torch.compile traces it,
which is exactly how a public record's late QAT silently never ran. With the gate at 0 the weight is
w + 0 * (q(w) - w) = w exactly, so turning QAT on needs no recompilation.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from quant.plan import tensor_plan


def fake_quant(w: Tensor, bits: int) -> Tensor:
    """Per-row symmetric rounding to `bits` with max-|w| scales; gradients pass straight through."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / qmax
    q = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
    return w + (q - w).detach()


def qat_weight(w: Tensor, bits: int, gate: Tensor) -> Tensor:
    return w + gate.to(w.dtype) * (fake_quant(w, bits) - w)


def attach_qat(model: nn.Module, scheme: str, mix, keep_float: tuple[str, ...], small_numel: int) -> int:
    """Arm QAT (gate off) on every module exposing `qat_bits` whose weight `scheme` quantizes; returns how many.
    Call after moving the model to its device and before torch.compile, so bit widths are fixed when traced."""
    armed = 0
    for module_name, module in model.named_modules():
        if not hasattr(module, "qat_bits"):
            continue
        name = f"{module_name}.weight"
        kind, bits = tensor_plan(name, module.weight, scheme, mix, keep_float, small_numel)
        if kind == "row":
            module.qat_bits = bits
            gate = torch.zeros((), device=module.weight.device)
            module.register_buffer("qat_gate", gate, persistent=False)  # not in the state dict or the artifact
            armed += 1
    if armed == 0:
        raise ValueError(f"QAT_SCHEME={scheme!r} quantizes none of the model's linear layers "
                         "(all are small or kept float); turn QAT off or lower QUANT_FLOAT_MAX_NUMEL")
    return armed


def set_qat(model: nn.Module, on: bool) -> None:
    for module in model.modules():
        gate = getattr(module, "qat_gate", None)
        if isinstance(gate, Tensor):
            gate.fill_(1.0 if on else 0.0)
