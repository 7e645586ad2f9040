"""The public baseline's export: per-row int8 for matrices, per-tensor int8 for other large float tensors,
fp16 passthrough for small ones (fp32 for control gains), torch.save + zlib level 9 ("int8_clean_per_row_v1").

Byte-identical to the public writer for the same state dict: the saved object is a dict with, in this order,
`__quant_format__`, `quantized`, `scales`, `dtypes`, `passthrough`, then `qmeta` ({name: {"scheme": "per_row",
"axis": 0}} for every per-row tensor) when there is one, then `passthrough_orig_dtypes` (fp16-stored tensors that
were fp32/bf16) when there is one; every inner dict follows the state dict's order."""
from __future__ import annotations

import io
import zlib

import torch
from torch import Tensor

FORMAT_TAG = "int8_clean_per_row_v1"
KEEP_FLOAT_MAX_NUMEL = 65_536
CLIP_Q = 99.99984 / 100.0  # per-row clip quantile of |w|


def _keep_float(name: str, t: Tensor, keep_fp32: tuple[str, ...], orig_dtypes: dict[str, str]) -> Tensor:
    if any(p in name for p in keep_fp32):
        return t.float().contiguous()
    if t.dtype in (torch.float32, torch.bfloat16):
        orig_dtypes[name] = str(t.dtype).removeprefix("torch.")
        return t.to(torch.float16).contiguous()
    return t


def quantize_tensor(t: Tensor) -> tuple[Tensor, Tensor]:
    t32 = t.float()
    if t32.ndim == 2:
        clip = torch.quantile(t32.abs(), CLIP_Q, dim=1) if t32.numel() else torch.zeros(t32.shape[0])
        scale = (clip / 127.0).clamp_min(1.0 / 127.0)
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8)
        return q.contiguous(), scale.to(torch.float16).contiguous()
    clip = float(torch.quantile(t32.abs().flatten(), CLIP_Q)) if t32.numel() else 0.0
    scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -127, 127).to(torch.int8)
    return q.contiguous(), scale


def quantize_state_dict(state_dict: dict[str, Tensor], keep_fp32: tuple[str, ...] = ()) -> dict:
    quantized, scales, dtypes, passthrough, orig_dtypes, qmeta = {}, {}, {}, {}, {}, {}
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        if not t.is_floating_point():
            passthrough[name] = t
        elif t.numel() <= KEEP_FLOAT_MAX_NUMEL or any(p in name for p in keep_fp32):
            passthrough[name] = _keep_float(name, t, keep_fp32, orig_dtypes)
        else:
            quantized[name], scales[name] = quantize_tensor(t)
            if scales[name].ndim > 0:
                qmeta[name] = {"scheme": "per_row", "axis": 0}
            dtypes[name] = str(t.dtype).removeprefix("torch.")
    obj = {"__quant_format__": FORMAT_TAG, "quantized": quantized, "scales": scales, "dtypes": dtypes, "passthrough": passthrough}
    if qmeta:
        obj["qmeta"] = qmeta
    if orig_dtypes:
        obj["passthrough_orig_dtypes"] = orig_dtypes
    return obj


def dequantize_state_dict(obj: dict) -> dict[str, Tensor]:
    if obj.get("__quant_format__") != FORMAT_TAG:
        raise ValueError(f"not an {FORMAT_TAG} artifact (format tag {obj.get('__quant_format__')!r})")
    out = {}
    qmeta = obj.get("qmeta", {})
    for name, q in obj["quantized"].items():
        dtype = getattr(torch, obj["dtypes"][name])
        s = obj["scales"][name].float()
        per_row = qmeta.get(name, {}).get("scheme") == "per_row" or s.ndim > 0
        w = q.float() * (s.view(q.shape[0], *([1] * (q.ndim - 1))) if per_row else s)
        out[name] = w.to(dtype).contiguous()
    orig = obj.get("passthrough_orig_dtypes", {})
    for name, t in obj["passthrough"].items():
        out[name] = t.to(getattr(torch, orig[name])) if name in orig else t
    return out


def pack_int8_zlib(state_dict: dict[str, Tensor], keep_fp32: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    torch.save(quantize_state_dict(state_dict, keep_fp32), buf)
    return zlib.compress(buf.getvalue(), level=9)


def unpack_int8_zlib(blob: bytes) -> dict[str, Tensor]:
    try:
        raw = zlib.decompress(blob)
    except zlib.error as e:
        raise ValueError(f"artifact is not valid zlib data ({e}); the file is truncated or corrupted") from e
    return dequantize_state_dict(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True))
