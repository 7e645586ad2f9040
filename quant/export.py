"""From a float state dict to artifact files and back: one call per EXPORT_SCHEMES entry.

`int8+zlib` is written in the public baseline format (quant.int8); every other `<scheme>+<compressor>`
goes into the checked PGQ container (quant.container). `load_artifact` reads either, by its first bytes.
The container and the other schemes' quantizers (quant.quantize.quantize_model) are imported only when a run
uses them (a packed record ships only what its run imports).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from data.writes import atomic_write
from quant.entropy import EntropyReport, entropy_report
from quant.int8 import pack_int8_zlib, quantize_state_dict, unpack_int8_zlib
from quant.qmodel import MAGIC, QuantizedModel
from quant.size import BYTE_BUDGET
from quant.schemes import SMALL_TENSOR_MAX_NUMEL, ExportSpec


@dataclass
class Artifact:
    spec: ExportSpec
    path: Path
    nbytes: int
    entropy: EntropyReport


def public_int8_as_model(state_dict: dict[str, Tensor], keep_float: tuple[str, ...]) -> QuantizedModel:
    """The public int8 quantization seen as a QuantizedModel, for the entropy report of int8+zlib."""
    obj = quantize_state_dict(state_dict, keep_float)
    model = QuantizedModel(scheme="int8")
    for name, q in obj["quantized"].items():
        model.entries[name] = {"kind": "row", "bits": 8}
        model.symbols[name], model.scales[name] = q, obj["scales"][name]
    for name, t in obj["passthrough"].items():
        model.entries[name] = {"kind": "f16"}
        model.floats[name] = t
    return model


class ExportError(ValueError):
    """The artifact would not hold the model (e.g. a value beyond the range of the dtype the format stores it in)."""


FP16_MAX = float(torch.finfo(torch.float16).max)


def check_roundtrip_finite(state_dict: dict[str, Tensor], restored: dict[str, Tensor], label: str) -> None:
    """Every finite tensor must come back finite: a format that stores a tensor (or its scales) as fp16 turns
    values beyond 65504 into inf, and the artifact would then score NaN."""
    for name, t in state_dict.items():
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            continue
        if not bool(torch.isfinite(restored[name]).all()):
            peak = float(t.detach().abs().max())
            why = (f"holds values up to {peak:.3g}, beyond float16's largest {FP16_MAX:.0f}, and {label} stores it (or its "
                   "scales) as fp16" if peak > FP16_MAX else f"comes back non-finite (largest |value| {peak:.3g})")
            raise ExportError(f"export {label}: tensor {name} {why}; the artifact would score NaN. Nothing was written. "
                              "Lower TIED_EMBED_INIT_STD / the learning rates (or set GRAD_CLIP_NORM), or pick another "
                              "EXPORT_SCHEMES entry; final_model.pt holds the float weights")


def write_artifact(state_dict: dict[str, Tensor], spec: ExportSpec, out_dir: Path, mix, keep_float: tuple[str, ...],
                   clip_search: bool = True, hessians: dict[str, Tensor] | None = None,
                   small_numel: int = SMALL_TENSOR_MAX_NUMEL) -> Artifact:
    """Quantize, check the roundtrip is finite, then write atomically (a full disk leaves no truncated artifact)."""
    path = Path(out_dir) / spec.filename
    if spec.is_public:
        blob = pack_int8_zlib(state_dict, keep_fp32=keep_float)
        report = entropy_report(public_int8_as_model(state_dict, keep_float))
    else:
        from quant.container import serialize
        from quant.quantize import quantize_model

        qmodel = quantize_model(state_dict, spec.scheme, mix, keep_float, clip_search, hessians, small_numel)
        blob = serialize(qmodel, spec.compressor)
        report = entropy_report(qmodel)
    check_roundtrip_finite(state_dict, artifact_state_dict(blob), spec.label)
    atomic_write(path, blob)
    return Artifact(spec, path, path.stat().st_size, report)


def artifact_state_dict(blob: bytes) -> dict[str, Tensor]:
    """State dict (original dtypes) from the bytes of a PGQ container or a public int8+zlib file."""
    if blob[:4] == MAGIC:
        from quant.container import deserialize
        from quant.quantize import dequantize_model

        return dequantize_model(deserialize(blob))
    return unpack_int8_zlib(blob)


def load_artifact(path: Path | str) -> dict[str, Tensor]:
    """State dict (original dtypes) from a PGQ container or a public int8+zlib file."""
    return artifact_state_dict(Path(path).read_bytes())


def artifact_log_lines(art: Artifact, code_nbytes: int, seconds: float) -> list[tuple[str, bool]]:
    """(line, show on console) for one exported artifact: sizes, the total checked against the cap, entropy."""
    total = art.nbytes + code_nbytes
    label = art.spec.label
    lines = [(f"Serialized model {label}: {art.nbytes} bytes path:{art.path} export_time:{1000 * seconds:.0f}ms", True),
             (f"Total submission size {label}: {total} bytes", True)]
    if total > BYTE_BUDGET:
        bar = "!" * 100
        lines += [(bar, True), (f"WARNING: {label} total {total} bytes is OVER the {BYTE_BUDGET}-byte budget by "
                                f"{total - BYTE_BUDGET} bytes; this cannot be a submission", True), (bar, True)]
    else:
        lines.append((f"budget {label}: under by {BYTE_BUDGET - total} bytes", True))
    lines.append((art.entropy.summary(label, art.nbytes), True))
    lines += [(line, False) for line in art.entropy.tensor_lines(label)]
    return lines
