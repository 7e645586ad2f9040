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


def test_build_model_sets_the_tied_head_and_every_linear():
    env = {"NUM_LAYERS": "2", "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "MATMUL_DTYPE": "bf16"}
    model = train_gpt.build_model(train_gpt.Hyperparameters(env=env, device_type="cpu"))
    flagged = [m for m in model.modules() if hasattr(m, "matmul_dtype")]
    assert model.matmul_dtype == torch.bfloat16 and all(m.matmul_dtype == torch.bfloat16 for m in flagged)
    plain = train_gpt.build_model(train_gpt.Hyperparameters(env={**env, "MATMUL_DTYPE": "fp32"}, device_type="cpu"))
    assert plain.matmul_dtype is None


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
