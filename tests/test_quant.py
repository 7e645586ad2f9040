"""quant/: error bounds per bit width, every scheme's roundtrip into a fresh model, the container's
corruption checks, size lines vs file sizes, GPTQ, and QAT alive under torch.compile."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS, GPT  # noqa: E402
from arch.layers import keep_float_names  # noqa: E402
from quant.compress import ans_decode, ans_encode, symbol_histogram  # noqa: E402
from quant.container import deserialize, serialize  # noqa: E402
from quant.entropy import empirical_entropy_bits, entropy_report  # noqa: E402
from quant.export import load_artifact, write_artifact  # noqa: E402
from quant.gptq import gptq_quantize, gptq_targets  # noqa: E402
from quant.qat import attach_qat, set_qat  # noqa: E402
from quant.quantize import dequantize, dequantize_model, qmax_for, quantize_matrix, quantize_model  # noqa: E402
from quant.plan import tensor_plan  # noqa: E402
from quant.schemes import DEFAULT_MIX, parse_export_specs, parse_mix  # noqa: E402
from quant.size import CodeSize, code_size, set_code_counter  # noqa: E402

MIX = parse_mix(DEFAULT_MIX)


def small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(vocab_size=256, num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, mlp_mult=2.0,
                tie_embeddings=True, tied_embed_init_std=0.02, logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5)
    with torch.no_grad():  # zero-init projections would make quantization trivially exact
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(std=0.05)
    return model


def keep(model) -> tuple[str, ...]:
    return CONTROL_TENSOR_NAME_PATTERNS + tuple(keep_float_names(model))


@pytest.mark.parametrize("bits", [8, 6, 5, 4])
@pytest.mark.parametrize("clip_search", [False, True])
def test_quantize_error_bound_per_bit_width(bits, clip_search):
    torch.manual_seed(bits)
    w = torch.randn(64, 300) * torch.rand(64, 1)  # rows of different scale
    q, scale = quantize_matrix(w, bits, clip_search)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16 and q.abs().max() <= qmax_for(bits)
    err = (dequantize(q, scale) - w).abs()
    if not clip_search:  # no clipping: every value is within half a step of its row's grid
        assert (err <= scale.float()[:, None] / 2 * (1 + 1e-3) + 1e-7).all()
    rel = (err.square().sum(1) / w.square().sum(1)).sqrt()
    assert rel.max() < {8: 0.012, 6: 0.05, 5: 0.1, 4: 0.2}[bits]


def test_clip_search_never_worse_than_max_scale():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(3.0).sample((32, 512))  # heavy tails: clipping pays
    q0, s0 = quantize_matrix(w, 5, clip_search=False)
    q1, s1 = quantize_matrix(w, 5, clip_search=True)
    e0 = (dequantize(q0, s0) - w).square().sum(1)
    e1 = (dequantize(q1, s1) - w).square().sum(1)
    assert (e1 <= e0 + 1e-6).all() and e1.sum() < 0.9 * e0.sum()


def test_tensor_plan_keeps_declared_float_and_controls():
    model = small_gpt()
    model.blocks[0].mlp.fc.weight._keep_float = True  # a mixer declares a tensor that must stay float
    kf = keep(model)
    sd = model.state_dict()
    assert tensor_plan("blocks.0.mlp.fc.weight", sd["blocks.0.mlp.fc.weight"], "int6", MIX, kf, 1024) == ("f32", 32)
    assert tensor_plan("blocks.1.mlp.fc.weight", sd["blocks.1.mlp.fc.weight"], "int6", MIX, kf, 1024) == ("row", 6)
    assert tensor_plan("blocks.1.mlp.fc.weight", sd["blocks.1.mlp.fc.weight"], "mixed", MIX, kf, 1024) == ("row", 5)
    assert tensor_plan("blocks.1.attn.c_q.weight", sd["blocks.1.attn.c_q.weight"], "mixed", MIX, kf, 1024) == ("row", 6)
    assert tensor_plan("tok_emb.weight", sd["tok_emb.weight"], "mixed", MIX, kf, 1024) == ("row", 8)
    assert tensor_plan("blocks.0.resid_mix", torch.zeros(2, 4096), "int6", MIX, kf, 16)[0] == "f32"
    assert tensor_plan("blocks.1.mlp.fc.weight", sd["blocks.1.mlp.fc.weight"], "int6", MIX, kf, 65_536)[0] == "f16"
    qm = quantize_model(sd, "int6", MIX, kf, small_numel=1024)
    assert torch.equal(dequantize_model(qm)["blocks.0.mlp.fc.weight"], sd["blocks.0.mlp.fc.weight"])


@pytest.mark.parametrize("label", ["int8+zlib", "int8+zstd", "int6+zstd", "int5+lzma", "int4+brotli", "mixed+ans", "int6+ans"])
def test_every_scheme_roundtrips_into_a_fresh_model(tmp_path, label):
    model = small_gpt()
    sd = model.state_dict()
    (spec,) = parse_export_specs(label)
    art = write_artifact(sd, spec, tmp_path, MIX, keep(model), small_numel=1024)
    assert art.path.stat().st_size == art.nbytes and art.path.name == spec.filename
    loaded = load_artifact(art.path)
    fresh = small_gpt(seed=1)
    fresh.load_state_dict(loaded, strict=True)
    if not spec.is_public:  # same logits as the dequantized weights, and the weights did change
        expect = dequantize_model(quantize_model(sd, spec.scheme, MIX, keep(model), small_numel=1024))
        for k in sd:
            assert torch.equal(loaded[k], expect[k]) and loaded[k].dtype == sd[k].dtype
        ref = small_gpt(seed=2)
        ref.load_state_dict(expect)
        x = torch.randint(0, 256, (2, 16))
        assert torch.equal(fresh.forward_logits(x), ref.forward_logits(x))
        assert not torch.equal(loaded["blocks.0.mlp.fc.weight"], sd["blocks.0.mlp.fc.weight"])
    x = torch.randint(0, 256, (2, 16))
    drift = (fresh.forward_logits(x) - model.forward_logits(x)).abs().max().item()
    assert drift < {"int8": 0.1, "int6": 0.3, "mixed": 0.4, "int5": 0.6, "int4": 1.2}[spec.scheme]


def test_ans_roundtrip_and_near_entropy():
    rng = np.random.default_rng(0)
    sym = np.clip(np.round(rng.normal(0, 5, 50_000)), -15, 15).astype(np.int8)
    counts = symbol_histogram(sym, 15)
    blob = ans_encode(sym, 15, counts)
    assert np.array_equal(ans_decode(blob, sym.size, 15, counts), sym)
    assert len(blob) < 1.002 * empirical_entropy_bits(sym) / 8 + 16


@pytest.mark.parametrize("compressor", ["zstd", "ans"])
def test_corrupted_or_truncated_artifact_is_rejected(compressor):
    qm = quantize_model(small_gpt().state_dict(), "int6", MIX, CONTROL_TENSOR_NAME_PATTERNS, small_numel=1024)
    blob = serialize(qm, compressor)
    deserialize(blob)  # intact: loads
    with pytest.raises(ValueError, match="truncated"):
        deserialize(blob[:-10])
    with pytest.raises(ValueError, match="truncated"):
        deserialize(blob[:3])
    for pos in (20, len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(ValueError, match="checksum"):
            deserialize(bytes(bad))
    bad = bytearray(blob)
    bad[4] = 99
    with pytest.raises(ValueError, match="version 99"):
        deserialize(bytes(bad))
    with pytest.raises(ValueError, match="not a PGQ artifact"):
        deserialize(b"\x78\x9c" + blob[2:])


def test_public_int8_file_corruption_is_rejected(tmp_path):
    (spec,) = parse_export_specs("int8+zlib")
    art = write_artifact(small_gpt().state_dict(), spec, tmp_path, MIX, CONTROL_TENSOR_NAME_PATTERNS)
    art.path.write_bytes(art.path.read_bytes()[: art.nbytes // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_artifact(art.path)


@pytest.mark.parametrize("text,needle", [("int6", "<scheme>+<compressor>"), ("int3+zstd", "unknown scheme"),
                                          ("int6+gzip", "unknown compressor"), ("int6+zstd,int6+zstd", "twice"), ("", "empty")])
def test_bad_export_specs_are_named(text, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_export_specs(text)
    with pytest.raises(ValueError, match="pattern=BITS"):
        parse_mix("attn=3")


def test_entropy_report_counts_symbols_and_side_bytes():
    qm = quantize_model(small_gpt().state_dict(), "int5", MIX, CONTROL_TENSOR_NAME_PATTERNS, small_numel=1024)
    rep = entropy_report(qm)
    numel = sum(t.numel() for t in qm.symbols.values())
    assert sum(n for _, _, n, _ in rep.per_tensor) == numel
    assert 0 < rep.symbol_bound_bytes <= numel * np.log2(31) / 8
    assert rep.side_bytes == sum(s.numel() * 2 for s in qm.scales.values()) + sum(
        t.numel() * t.element_size() for t in qm.floats.values())
    assert len(serialize(qm, "ans")) < 1.05 * rep.bound_bytes + 2000


def test_gptq_beats_round_to_nearest_on_output_error():
    torch.manual_seed(0)
    x = torch.randn(2048, 96) @ torch.randn(96, 96)  # correlated inputs: where GPTQ helps
    w = torch.randn(48, 96)
    h = x.T @ x / x.shape[0]
    q_rtn, scale = quantize_matrix(w, 4, clip_search=False)
    q_gptq = gptq_quantize(w, h, scale.float(), 4)
    assert q_gptq.dtype == torch.int8 and q_gptq.abs().max() <= 7
    out_err = lambda q: (x @ (dequantize(q, scale) - w).T).square().mean().item()  # noqa: E731
    assert out_err(q_gptq) < 0.7 * out_err(q_rtn)


def test_gptq_targets_are_linear_rows():
    model = small_gpt()
    targets = gptq_targets(model.state_dict(), parse_export_specs("int8+zlib,int6+zstd"), MIX, keep(model), 1024)
    assert "blocks.0.attn.c_q.weight" in targets and "blocks.1.mlp.proj.weight" in targets
    assert not any("resid_mix" in t or "q_gain" in t for t in targets)


@pytest.mark.slow
def test_qat_path_is_live_under_torch_compile():
    """Fails if torch.compile freezes the fake-quant branch out of the graph (the dead late-QAT bug)."""
    torch._dynamo.reset()
    model = small_gpt()
    n = attach_qat(model, "int4", MIX, keep(model), small_numel=1024)
    assert n == 2 * 6  # q, k, v, proj, fc, proj in each of 2 blocks
    assert not any("qat_gate" in k for k in model.state_dict())  # the gate never reaches the artifact
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        off_c, off_e = compiled.forward_logits(x), model.forward_logits(x)
        set_qat(model, True)
        on_c, on_e = compiled.forward_logits(x), model.forward_logits(x)
    torch.testing.assert_close(off_c, off_e, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(on_c, on_e, rtol=1e-4, atol=1e-4)
    assert (on_c - off_c).abs().max() > 1e-2  # int4 fake-quant visibly changes the logits
    # straight-through: gradients reach the float weights with QAT on
    loss = compiled(x, x)
    loss.backward()
    assert model.blocks[0].mlp.fc.weight.grad.abs().sum() > 0
    set_qat(model, False)
    with torch.no_grad():
        torch.testing.assert_close(compiled.forward_logits(x), off_e, rtol=1e-4, atol=1e-4)


def test_code_size_is_replaceable(tmp_path):
    entry = tmp_path / "train_gpt.py"
    entry.write_text("print(1)\n")
    from records.bundle import pack_files  # the default measure: the one packed train_gpt.py a record ships

    assert code_size(tmp_path, entry).nbytes == len(pack_files([entry], tmp_path))
    set_code_counter(lambda root, e, modules: CodeSize(123, [e], "packed"))
    try:
        assert code_size(tmp_path, entry).nbytes == 123
    finally:
        set_code_counter(None)
