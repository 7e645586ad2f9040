"""Which precision each tensor of a state dict gets under a non-public export scheme (`tensor_plan`).

Which tensors stay float is decided by the caller's `keep_float` names (declared by the modules that own them,
plus the control-tensor patterns), never by a list kept here. Used by the container export (quant.quantize), QAT
and GPTQ; the public int8+zlib format has its own fixed rule (quant/int8.py).
"""
from __future__ import annotations

import torch
from torch import Tensor

from quant.schemes import SMALL_TENSOR_MAX_NUMEL, UNIFORM_SCHEMES


def scheme_bits(scheme: str, name: str, mix: list[tuple[str, int]]) -> int:
    """Bit width a quantizable tensor gets under `scheme` (16: keep as fp16)."""
    if scheme in UNIFORM_SCHEMES:
        return UNIFORM_SCHEMES[scheme]
    if scheme != "mixed":
        raise ValueError(f"unknown scheme {scheme!r}")
    for pattern, bits in mix:
        if pattern == "*" or pattern in name:
            return bits
    return 16


def tensor_plan(name: str, t: Tensor, scheme: str, mix: list[tuple[str, int]], keep_float: tuple[str, ...],
                small_numel: int = SMALL_TENSOR_MAX_NUMEL) -> tuple[str, int]:
    """(kind, bits) for one state-dict entry. kind: `raw` (non-float, stored as is), `f32` (must stay float),
    `f16` (at most `small_numel` values, or fp16 by rule), `row` (per-row quantized 2-D matrix), `tensor` (one scale for the tensor)."""
    if not t.is_floating_point():
        return "raw", 0
    if any(p in name for p in keep_float):
        return "f32", 32
    if t.numel() <= small_numel:
        return "f16", 16
    bits = scheme_bits(scheme, name, mix)
    if bits >= 16:
        return "f16", 16
    return ("row" if t.ndim == 2 else "tensor"), bits


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype a container entry names (its `dtype` field)."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"artifact names an unknown dtype {name!r}")
    return dtype
