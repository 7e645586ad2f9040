"""What a quantized artifact holds before serialization, and the magic that marks a PGQ container file.

Apart from the container's serializer (quant/container.py) so that the public int8+zlib path, whose entropy
report uses this shape too, does not import the serializer: a packed record ships only what its run imports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

MAGIC = b"PGQA"  # first bytes of every PGQ container file


@dataclass
class QuantizedModel:
    """What an artifact holds, before serialization: `entries` in manifest order (name -> record)."""

    scheme: str
    entries: dict[str, dict] = field(default_factory=dict)  # name -> {kind, shape, dtype, bits}
    symbols: dict[str, Tensor] = field(default_factory=dict)  # int8 values of `row`/`tensor` entries
    scales: dict[str, Tensor] = field(default_factory=dict)  # fp16 scales of `row`/`tensor` entries
    floats: dict[str, Tensor] = field(default_factory=dict)  # stored tensors of `f16`/`f32`/`raw` entries
