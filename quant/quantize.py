"""Symmetric integer quantization with fp16 scales: per row for matrices, one scale for other tensors.

Values are integers in [-qmax, qmax], qmax = 2^(bits-1) - 1 (127, 31, 15, 7), stored one per byte
("int8 containers": the entropy coder, not bit packing, removes the unused high bits).
The clip search ("GPTQ-lite") tries a few clip levels below each row's max |w| and keeps, per row, the one
with the smallest squared reconstruction error; GPTQ (quant/gptq.py) reuses these scales.
`quantize_model` / `dequantize_model`: a whole state dict, tensor by tensor as quant.plan.tensor_plan says (the
non-public EXPORT_SCHEMES; quant.export writes and reads the artifacts).
"""
from __future__ import annotations

import torch
from torch import Tensor

from quant.qmodel import QuantizedModel
from quant.plan import dtype_from_name, tensor_plan
from quant.schemes import SMALL_TENSOR_MAX_NUMEL

# Fractions of the row's max |w| tried as the clip; 1.0 (no clipping) is always a candidate.
CLIP_FRACTIONS = (1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 0.88, 0.86, 0.84, 0.82, 0.8, 0.77, 0.74, 0.7, 0.65, 0.6)


def qmax_for(bits: int) -> int:
    if not 2 <= bits <= 8:
        raise ValueError(f"bit width {bits} is outside 2..8")
    return 2 ** (bits - 1) - 1


def fp16_scale(clip: Tensor, qmax: int) -> Tensor:
    """Scale as it will be stored (fp16, positive), back in fp32, so quantization uses exactly what ships."""
    return (clip.float() / qmax).clamp_min(1e-8).to(torch.float16).clamp_min(torch.finfo(torch.float16).tiny).float()


def quantize_rows(w: Tensor, scale: Tensor, qmax: int) -> Tensor:
    """Integers (int8) of the 2-D `w` under per-row `scale` (fp32, shape rows)."""
    return torch.clamp(torch.round(w.float() / scale[:, None]), -qmax, qmax).to(torch.int8)


def search_row_scales(w: Tensor, bits: int, clip_search: bool = True) -> Tensor:
    """Per-row fp16-representable scales of the 2-D `w`; with `clip_search`, the MSE-best clip per row."""
    w = w.float()
    qmax = qmax_for(bits)
    absmax = w.abs().amax(dim=1)
    best_scale = fp16_scale(absmax, qmax)
    if not clip_search:
        return best_scale
    best_err = torch.full_like(absmax, float("inf"))
    for frac in CLIP_FRACTIONS:
        scale = fp16_scale(absmax * frac, qmax)
        err = (quantize_rows(w, scale, qmax).float() * scale[:, None] - w).square().sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
    return best_scale


def quantize_matrix(w: Tensor, bits: int, clip_search: bool = True) -> tuple[Tensor, Tensor]:
    """(int8 symbols, fp16 scales) for a matrix; a non-2-D tensor is treated as one row (one scale)."""
    rows = w.reshape(w.shape[0], -1) if w.ndim == 2 else w.reshape(1, -1)
    scale = search_row_scales(rows, bits, clip_search)
    q = quantize_rows(rows, scale, qmax_for(bits))
    return q.reshape(w.shape).contiguous(), scale.to(torch.float16)


def dequantize(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    rows = q.reshape(scale.numel(), -1).float() * scale.float()[:, None]
    return rows.reshape(q.shape).to(dtype).contiguous()


def quantize_model(state_dict: dict[str, Tensor], scheme: str, mix, keep_float: tuple[str, ...],
                   clip_search: bool = True, hessians: dict[str, Tensor] | None = None,
                   small_numel: int = SMALL_TENSOR_MAX_NUMEL) -> QuantizedModel:
    """Quantize every tensor as `tensor_plan` says; matrices with a Hessian go through GPTQ."""
    model = QuantizedModel(scheme=scheme)
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        kind, bits = tensor_plan(name, t, scheme, mix, keep_float, small_numel)
        model.entries[name] = {"kind": kind, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "bits": bits}
        if kind in ("row", "tensor"):
            if kind == "row" and hessians and name in hessians:
                from quant.gptq import gptq_quantize  # GPTQ runs only with GPTQ=1: a record ships it only then

                scale = search_row_scales(t, bits, clip_search)
                model.symbols[name] = gptq_quantize(t, hessians[name], scale, bits)
                model.scales[name] = scale.to(torch.float16)
            else:
                model.symbols[name], model.scales[name] = quantize_matrix(t, bits, clip_search)
        elif kind == "f16":
            model.floats[name] = t.to(torch.float16)
        elif kind == "f32":
            model.floats[name] = t.float()
        else:
            model.floats[name] = t
    return model


def dequantize_model(model: QuantizedModel) -> dict[str, Tensor]:
    out = {}
    for name, entry in model.entries.items():
        dtype = dtype_from_name(entry["dtype"])
        if name in model.symbols:
            out[name] = dequantize(model.symbols[name], model.scales[name], dtype)
        else:
            out[name] = model.floats[name].to(dtype).contiguous()
    return out
