"""The public int8+zlib artifact (quant/int8.py) is byte-identical to what the public baseline writes for the same
state dict, so a logged total is what the public script would report and records compare like with like.

Checked against an independent reimplementation of the documented format (below, from the format's description:
HARNESS A5 / B2 and the public README) and, when ../shared is present, against the public writer itself."""
from __future__ import annotations

import importlib.util
import io
import zlib
from pathlib import Path

import pytest
import torch

from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS, GPT
from quant.int8 import pack_int8_zlib, quantize_state_dict, unpack_int8_zlib

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_WRITER = ROOT.parent / "shared" / "data" / "public_records" / "track_10min_16mb" / "2026-03-18_LowerLR" / "train_gpt.py"


def reference_blob(state_dict: dict, keep_fp32: tuple[str, ...]) -> bytes:
    """The documented format, written from its description: float tensors of at most 65,536 values pass through
    (fp32 when their name matches a control pattern, else fp16, recording an fp32/bf16 original dtype); larger 2-D
    tensors get one int8 scale per row (clip at the 99.99984th percentile of |w|, scale clip/127 at least 1/127,
    stored fp16) and a qmeta entry {scheme: per_row, axis: 0}; other large tensors one fp32 scale; non-floats pass
    through. The dict keys in order: format tag, quantized, scales, dtypes, passthrough, [qmeta],
    [passthrough_orig_dtypes]; torch.save, then zlib level 9."""
    q_all, scales, dtypes, passthrough, qmeta, orig = {}, {}, {}, {}, {}, {}
    quantile = 99.99984 / 100.0
    for name, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        if not t.is_floating_point():
            passthrough[name] = t
            continue
        if t.numel() <= 65_536:
            if any(p in name for p in keep_fp32):
                passthrough[name] = t.float().contiguous()
            elif t.dtype in (torch.float32, torch.bfloat16):
                orig[name] = str(t.dtype).split(".")[-1]
                passthrough[name] = t.half().contiguous()
            else:
                passthrough[name] = t
            continue
        w = t.float()
        if w.ndim == 2:
            limit = torch.quantile(w.abs(), quantile, dim=1)
            step = torch.clamp(limit / 127.0, min=1.0 / 127.0)
            bounded = torch.where(w > limit[:, None], limit[:, None], torch.where(w < -limit[:, None], -limit[:, None], w))
            q_all[name] = torch.round(bounded / step[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            scales[name] = step.half().contiguous()
            qmeta[name] = {"scheme": "per_row", "axis": 0}
        else:
            limit = float(torch.quantile(w.abs().flatten(), quantile).item())
            step = torch.tensor(limit / 127.0 if limit > 0 else 1.0, dtype=torch.float32)
            q_all[name] = torch.round(w.clamp(-limit, limit) / step).clamp(-127, 127).to(torch.int8).contiguous()
            scales[name] = step
        dtypes[name] = str(t.dtype).split(".")[-1]
    obj = {"__quant_format__": "int8_clean_per_row_v1", "quantized": q_all, "scales": scales, "dtypes": dtypes,
           "passthrough": passthrough}
    if qmeta:
        obj["qmeta"] = qmeta
    if orig:
        obj["passthrough_orig_dtypes"] = orig
    buf = io.BytesIO()
    torch.save(obj, buf)
    return zlib.compress(buf.getvalue(), 9)


def baseline_state_dict(layers: int, dim: int, vocab: int = 1024) -> dict:
    """The baseline GPT's state dict (tied embedding, GQA, relu2 MLP) with trained-looking random weights."""
    torch.manual_seed(0)
    model = GPT(vocab_size=vocab, num_layers=layers, model_dim=dim, num_heads=8, num_kv_heads=4, mlp_mult=2, tie_embeddings=True,
                tied_embed_init_std=0.005, logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sd = model.state_dict()
    sd["extra.bf16_vector"] = torch.randn(70_000).to(torch.bfloat16)  # a large non-matrix: per-tensor scale
    sd["extra.small_bf16"] = torch.randn(10).to(torch.bfloat16)  # small bf16: fp16 with its original dtype recorded
    sd["extra.steps"] = torch.arange(5)  # non-float: passthrough
    return sd


def test_int8_zlib_is_byte_identical_to_the_documented_format():
    sd = baseline_state_dict(layers=2, dim=256)
    ours = pack_int8_zlib(sd, keep_fp32=CONTROL_TENSOR_NAME_PATTERNS)
    assert ours == reference_blob(sd, CONTROL_TENSOR_NAME_PATTERNS)
    obj = quantize_state_dict(sd, CONTROL_TENSOR_NAME_PATTERNS)
    assert list(obj) == ["__quant_format__", "quantized", "scales", "dtypes", "passthrough", "qmeta", "passthrough_orig_dtypes"]
    assert obj["qmeta"]["tok_emb.weight"] == {"scheme": "per_row", "axis": 0} and "extra.bf16_vector" not in obj["qmeta"]
    back = unpack_int8_zlib(ours)
    assert back["extra.small_bf16"].dtype == torch.bfloat16 and torch.equal(back["extra.steps"], sd["extra.steps"])
    torch.testing.assert_close(back["tok_emb.weight"], sd["tok_emb.weight"], atol=1 / 64, rtol=0)  # the 1/127 step floor, plus the clipped tail


def _public_writer():
    spec = importlib.util.spec_from_file_location("public_baseline_writer", PUBLIC_WRITER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions and classes only; its main() is behind __main__
    return module


def _public_blob(public, sd) -> bytes:
    obj, _ = public.quantize_state_dict_int8(sd)
    buf = io.BytesIO()
    torch.save(obj, buf)
    return zlib.compress(buf.getvalue(), level=9)


@pytest.mark.skipif(not PUBLIC_WRITER.is_file(), reason="../shared/data/public_records not present")
def test_int8_zlib_is_byte_identical_to_the_public_writer():
    public = _public_writer()
    sd = baseline_state_dict(layers=2, dim=256)
    assert pack_int8_zlib(sd, keep_fp32=public.INT8_KEEP_FLOAT_FP32_NAME_PATTERNS) == _public_blob(public, sd)
    torch.testing.assert_close(unpack_int8_zlib(pack_int8_zlib(sd, keep_fp32=CONTROL_TENSOR_NAME_PATTERNS)),
                               public.dequantize_state_dict_int8(public.quantize_state_dict_int8(sd)[0]), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.skipif(not PUBLIC_WRITER.is_file(), reason="../shared/data/public_records not present")
def test_int8_zlib_matches_the_public_writer_at_the_9x512_baseline_shape():
    public = _public_writer()
    sd = baseline_state_dict(layers=9, dim=512)
    ours = pack_int8_zlib(sd, keep_fp32=public.INT8_KEEP_FLOAT_FP32_NAME_PATTERNS)
    assert ours == _public_blob(public, sd)
    without = quantize_state_dict(sd, public.INT8_KEEP_FLOAT_FP32_NAME_PATTERNS)
    del without["qmeta"]
    buf = io.BytesIO()
    torch.save(without, buf)
    assert len(ours) - len(zlib.compress(buf.getvalue(), 9)) > 300  # the qmeta entry the old writer left out
