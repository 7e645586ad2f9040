"""How close a compressed artifact is to the order-0 entropy of what it stores.

Bound = sum over tensors of numel x H(value histogram of that tensor) / 8: the quantized symbols of each
tensor, and the bit patterns of every stored float or integer tensor and of the scales (fp16 values repeat,
fp32 ones mostly do not, so those count almost at their raw size). A general-purpose compressor can beat
the bound only by exploiting correlations between values; `ans` codes the symbols to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant.qmodel import QuantizedModel


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """Total bits of an ideal order-0 code for `symbols` under their own histogram."""
    counts = np.bincount(symbols.astype(np.int64).ravel() - int(symbols.min()))
    counts = counts[counts > 0].astype(np.float64)
    n = counts.sum()
    return float(-(counts * np.log2(counts / n)).sum())


@dataclass
class EntropyReport:
    per_tensor: list[tuple[str, int, int, float]]  # (name, bits, numel, entropy bits per symbol)
    symbol_bound_bytes: float
    side_bound_bytes: float
    side_bytes: int

    @property
    def bound_bytes(self) -> float:
        return self.symbol_bound_bytes + self.side_bound_bytes

    def summary(self, label: str, compressed_bytes: int) -> str:
        numel = sum(n for _, _, n, _ in self.per_tensor)
        per_sym = 8 * self.symbol_bound_bytes / max(numel, 1)
        return (f"entropy_report {label}: symbols:{numel} entropy_bits_per_symbol:{per_sym:.4f} "
                f"symbol_bound:{self.symbol_bound_bytes:.0f} side_raw:{self.side_bytes} side_bound:{self.side_bound_bytes:.0f} bound:{self.bound_bytes:.0f} "
                f"compressed:{compressed_bytes} compressed/bound:{compressed_bytes / max(self.bound_bytes, 1):.4f}")

    def tensor_lines(self, label: str) -> list[str]:
        return [f"entropy_tensor {label} {name} bits:{bits} numel:{numel} H:{h:.4f}"
                for name, bits, numel, h in self.per_tensor]


def _bit_pattern_entropy_bits(t) -> float:
    """Order-0 entropy of a stored tensor's values taken as bit patterns (fp16 as int16, fp32 as int32)."""
    arr = t.contiguous().numpy().reshape(-1)
    if arr.size == 0:
        return 0.0
    if arr.dtype.itemsize in (2, 4, 8) and arr.dtype.kind == "f":
        arr = arr.view({2: np.int16, 4: np.int32, 8: np.int64}[arr.dtype.itemsize])
    _, counts = np.unique(arr, return_counts=True)
    counts = counts.astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def entropy_report(model: QuantizedModel) -> EntropyReport:
    per_tensor, bound_bits, side_bits, side = [], 0.0, 0.0, 0
    for name, entry in model.entries.items():
        stored = [model.scales[name]] if name in model.symbols else [model.floats[name]]
        if name in model.symbols:
            sym = model.symbols[name].numpy()
            bits = empirical_entropy_bits(sym)
            bound_bits += bits
            per_tensor.append((name, entry["bits"], sym.size, bits / max(sym.size, 1)))
        for t in stored:
            side += t.numel() * t.element_size()
            side_bits += _bit_pattern_entropy_bits(t)
    return EntropyReport(per_tensor, bound_bits / 8, side_bits / 8, side)
