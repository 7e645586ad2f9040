"""The CPU preset's speed settings: bf16 products with fp32 results (MATMUL_DTYPE), and when the preset compiles."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from arch.layers import CastedLinear, casted_linear, set_matmul_dtype

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt  # noqa: E402


def test_bf16_matmul_matches_a_float64_reference_to_bf16_precision():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 64, generator=g, requires_grad=True)
    w = torch.randn(48, 64, generator=g, requires_grad=True)
    b = torch.randn(48, generator=g, requires_grad=True)
    y = casted_linear(x, w, b, torch.bfloat16)
    assert y.dtype == torch.float32
    gy = torch.randn(y.shape, generator=g)
    y.backward(gy)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y64 = x64 @ w64.T + b64
    y64.backward(gy.double())
    # bf16 operands carry 8 mantissa bits: relative error ~2^-8 per product, averaged over the sum
    for got, ref in ((y, y64), (x.grad, x64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        err = (got.double() - ref).abs().max() / ref.abs().max()
        assert err < 2e-2, err
        assert got.dtype == torch.float32
    assert (y.detach().double() - y64).abs().max() > 0  # it really multiplied in bf16


def test_matmul_dtype_is_opt_in_and_leaves_autocast_alone():
    lin = CastedLinear(16, 8, bias=False)
    x = torch.randn(4, 16)
    assert torch.equal(lin(x), x @ lin.weight.T)  # default: plain fp32
    set_matmul_dtype(lin, torch.bfloat16)
    assert not torch.equal(lin(x), x @ lin.weight.T)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast the activation dtype decides, as before
        assert lin(x.bfloat16()).dtype == torch.bfloat16


def test_set_matmul_dtype_reaches_the_tied_head_and_every_linear():
    env = {"NUM_LAYERS": "2", "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "MATMUL_DTYPE": "bf16"}
    model = train_gpt.build_model(train_gpt.Hyperparameters(env=env, device_type="cpu"))
    flagged = [m for m in model.modules() if hasattr(m, "matmul_dtype")]
    assert len(flagged) == 1 + 2 * 6 and all(m.matmul_dtype is None for m in flagged)  # build_model: fp32 for every tool
    set_matmul_dtype(model, torch.bfloat16)  # what train_gpt.main does for the training steps
    assert model.matmul_dtype == torch.bfloat16 and all(m.matmul_dtype == torch.bfloat16 for m in flagged)
    set_matmul_dtype(model, None)  # and undoes before the final scoring
    assert all(m.matmul_dtype is None for m in flagged)


def test_cpu_preset_speed_knobs_resolve():
    preset = train_gpt.Hyperparameters(env={}, device_type="cpu")  # the 150 s preset: compile, warmup primes it
    assert preset.compile and preset.warmup_steps == 2
    native = train_gpt.cpu_has_native_bf16()
    assert preset.matmul_dtype == ("bf16" if native else "fp32")
    pinned = train_gpt.Hyperparameters(env={"COMPILE": "0", "WARMUP_STEPS": "0", "MATMUL_DTYPE": "fp32"}, device_type="cpu")
    assert (pinned.compile, pinned.warmup_steps, pinned.matmul_dtype) == (False, 0, "fp32")
    cuda = train_gpt.Hyperparameters(env={}, device_type="cuda")
    assert cuda.matmul_dtype == "fp32" and cuda.compile and cuda.warmup_steps == 20
    with pytest.raises(train_gpt.KnobError, match="MATMUL_DTYPE='fp16' must be fp32, bf16 or auto"):
        train_gpt.Hyperparameters(env={"MATMUL_DTYPE": "fp16"}, device_type="cpu")


PUBLIC_BASELINE = ROOT.parent / "shared/data/public_records/track_non_record_16mb/2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3/train_gpt.py"


@pytest.mark.skipif(not PUBLIC_BASELINE.is_file(), reason="../shared public records not present")
def test_same_seed_same_initial_weights_as_the_public_baseline(monkeypatch):
    """The naive baseline's GPT (read from ../shared, never copied) and ours start from identical weights, so their
    loss curves can be compared step by step (the MLP is built after the attention, as there)."""
    import importlib.util

    for k in ("NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS"):
        monkeypatch.delenv(k, raising=False)
    spec = importlib.util.spec_from_file_location("public_baseline", PUBLIC_BASELINE)
    public = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(public)
    shape = dict(vocab_size=1024, num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2, tie_embeddings=True,
                 tied_embed_init_std=0.005, logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5)
    torch.manual_seed(7)
    theirs = public.GPT(**shape).state_dict()
    env = {"VOCAB_SIZE": "1024", "NUM_LAYERS": "3", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2"}
    torch.manual_seed(7)
    ours = train_gpt.build_model(train_gpt.Hyperparameters(env=env, device_type="cpu")).state_dict()
    assert sorted(theirs) == sorted(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)


def test_compiled_model_follows_a_matmul_dtype_change():
    """main() trains with bf16 products, then scores in fp32 through the same compiled model: the change must reach it
    (dynamo guards the attribute and recompiles), or the final scores would silently keep bf16 products."""
    env = {"NUM_LAYERS": "2", "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "VOCAB_SIZE": "64"}
    torch.manual_seed(0)
    model = train_gpt.build_model(train_gpt.Hyperparameters(env=env, device_type="cpu")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    x = torch.randint(0, 64, (2, 16))
    compiled = torch.compile(model, dynamic=False, fullgraph=True, backend="eager")
    with torch.no_grad():
        fp32 = model(x, x, reduction="none")
        set_matmul_dtype(model, torch.bfloat16)
        bf16 = compiled(x, x, reduction="none")
        assert not torch.equal(bf16, fp32) and torch.equal(bf16, model(x, x, reduction="none"))
        set_matmul_dtype(model, None)
        assert torch.equal(compiled(x, x, reduction="none"), fp32)
