"""Every MLP_KIND in a tiny GPT: causality, gradient liveness, loss decrease, artifact roundtrip,
parameter counts against MIXERS.md 5.1, optimizer grouping, and the trainer's knobs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt  # noqa: E402
from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS  # noqa: E402
from arch.layers import keep_float_names  # noqa: E402
from arch.mlp import MLP_REGISTRY, MixerConfig, build_mlp, mixer_param_count, mixer_report  # noqa: E402
from optim.groups import build_optimizers, split_parameters  # noqa: E402
from quant.int8 import pack_int8_zlib, unpack_int8_zlib  # noqa: E402

KINDS = sorted(MLP_REGISTRY)
VOCAB, T = 96, 48
FFT_KINDS = {"s5", "hyena_s5"}  # FFT round-off moves past outputs by ~1e-7 when the future changes
BASE_ENV = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", VOCAB_SIZE=str(VOCAB),
                HWNODE_STATE_DIM="48", S5_STATE_DIM="32", S5_BLOCKS="4", MLP_MULT="2", SCALAR_LR="0.01")



def tiny_args(kind: str, **extra) -> train_gpt.Hyperparameters:
    return train_gpt.Hyperparameters(env={**BASE_ENV, "MLP_KIND": kind, **extra}, device_type="cpu")


def tiny_model(kind: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    args = tiny_args(kind, **extra)
    return args, train_gpt.build_model(args)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (2, T), generator=g)
    return x, torch.roll(x, -1, dims=1)


def mixer_params(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if ".mlp." in n]


@pytest.mark.parametrize("kind", KINDS)
def test_future_perturbation_does_not_reach_the_past(kind):
    _, model = tiny_model(kind)
    with torch.no_grad():  # zero-init projections would hide a leak: make every branch carry signal
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(std=0.2)
    model.eval()
    x, _ = batch()
    t = 20
    x2 = x.clone()
    x2[:, t + 1 :] = (x2[:, t + 1 :] + 1 + torch.randint(0, VOCAB - 1, x2[:, t + 1 :].shape)) % VOCAB
    with torch.no_grad():
        a, b = model.forward_logits(x), model.forward_logits(x2)
    if kind in FFT_KINDS:
        torch.testing.assert_close(b[:, : t + 1], a[:, : t + 1], rtol=0, atol=1e-5)
    else:
        assert torch.equal(b[:, : t + 1], a[:, : t + 1])
    assert (b[:, t + 1 :] - a[:, t + 1 :]).abs().max() > 1e-3  # the perturbation does reach the future


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_alive_at_init(kind):
    """First backward: the sublayer's output side has a gradient. After one step: every mixer parameter has
    one (a zero-init before a squared activation would keep the whole sublayer at exactly zero)."""
    args, model = tiny_model(kind)
    optimizers, _ = build_optimizers(model, args)
    x, y = batch()
    model(x, y).backward()
    named = mixer_params(model)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for _, p in named)
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)
    model(x, y).backward()
    dead = [n for n, p in named if p.grad is None or p.grad.abs().max() == 0]
    assert not dead, f"{kind}: no gradient after one step for {dead}"


@pytest.mark.parametrize("kind", KINDS)
def test_loss_finite_and_decreasing(kind):
    args, model = tiny_model(kind)
    optimizers, _ = build_optimizers(model, args)
    x, y = batch(1)
    losses = []
    for _ in range(6):
        loss = model(x, y)
        losses.append(loss.item())
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("kind", KINDS)
def test_artifact_roundtrip_into_a_fresh_model(kind):
    args, model = tiny_model(kind)
    optimizers, _ = build_optimizers(model, args)
    x, y = batch(2)
    for _ in range(3):  # move the zero-init projections away from zero
        model(x, y).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    keep = keep_float_names(model)
    blob = pack_int8_zlib(model.state_dict(), keep_fp32=CONTROL_TENSOR_NAME_PATTERNS + tuple(keep))
    deq = unpack_int8_zlib(blob)
    for name in keep:  # declared keep-float tensors come back exactly
        assert torch.equal(deq[name], model.state_dict()[name]), name
    model.load_state_dict(deq, strict=True)
    _, fresh = tiny_model(kind, seed=123)  # different init, different hidden state (power-iteration vectors)
    fresh.load_state_dict(deq, strict=True)
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.forward_logits(x), model.forward_logits(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_param_count_matches_formula_and_is_logged(kind):
    _, model = tiny_model(kind, MLP_KIND_LAYERS="1")
    cfg = MixerConfig.from_args(tiny_args(kind))
    line = mixer_report(model, kind, model.mlp_kind_layers, 32, 2.0, cfg)
    n = mixer_param_count(kind, 32, 2.0, cfg)
    assert f"kind:{kind} layers:1 params_per_layer:{n} formula:{n}" in line and "relu2_layers:0" in line
    assert sum(p.numel() for p in model.blocks[1].mlp.parameters()) == n
    assert sum(p.numel() for p in model.blocks[0].mlp.parameters()) == mixer_param_count("relu2", 32, 2.0)


# MIXERS.md 5.1, d = 512.
@pytest.mark.parametrize("kind,mult,cfg,expected", [
    ("relu2", 4.0, {}, 2_097_152), ("relu2", 1.0, {}, 524_288),
    ("swiglu", 2.0, {}, 1_572_864), ("glu", 3.0, {}, 2_359_296), ("swiglu", 4.0, {}, 3_145_728),
    ("hwnode", 2.0, {"hwnode_state_dim": 384}, 540_673), ("hwnode", 2.0, {"hwnode_state_dim": 864}, 1_631_233),
    ("hwnode", 2.0, {"hwnode_state_dim": 512, "hwnode_term_gates": True, "hwnode_state_bias": True,
                     "hwnode_virtual_layers": 2}, 786_433 + 2 + 512),
    ("s5", 2.0, {}, 525_696), ("hyena_s5", 2.0, {}, 1_319_808),
    ("hyena_s5", 2.0, {"s5_state_dim": 128, "s5_blocks": 32, "s5_conj_sym": False}, 1_319_808),
    ("wave", 2.0, {}, 1_050_112),
])
def test_param_formulas_match_mixers_md_at_d512(kind, mult, cfg, expected):
    config = MixerConfig(**cfg)
    assert mixer_param_count(kind, 512, mult, config) == expected
    torch.manual_seed(0)
    assert sum(p.numel() for p in build_mlp(kind, 512, mult, config).parameters()) == expected


def test_swiglu_accepts_float_mult():
    assert mixer_param_count("swiglu", 512, 2.66, MixerConfig()) == 3 * 512 * round(2.66 * 512)
    assert tiny_args("swiglu", MLP_MULT="2.66").mlp_mult == 2.66


@pytest.mark.parametrize("kind", ["hwnode", "s5", "hyena_s5"])
def test_flow_and_ssm_tensors_never_reach_muon(kind):
    args, model = tiny_model(kind)
    groups = split_parameters(model)
    muon_ids = {id(p) for p in groups["matrix"]}
    tagged = [n for n, p in mixer_params(model) if getattr(p, "_optim_group", None) == "adam"]
    assert tagged and not any(id(dict(model.named_parameters())[n]) in muon_ids for n in tagged)
    optimizers, muon = build_optimizers(model, args)
    adam_groups = [g for opt in optimizers if opt is not muon for g in opt.param_groups]
    for n in tagged:  # no weight decay on Lambda, B, log_step, A, dt
        p = dict(model.named_parameters())[n]
        assert any(any(q is p for q in g["params"]) and g.get("weight_decay", 0) == 0 for g in adam_groups), n


@pytest.mark.parametrize("env,knob", [
    ({"MLP_KIND": "hwnode", "HWNODE_ORDER": "0"}, "HWNODE_ORDER"),
    ({"MLP_KIND": "s5", "S5_STATE_DIM": "30", "S5_BLOCKS": "4"}, "S5_STATE_DIM"),
    ({"MLP_KIND": "s5", "S5_STATE_DIM": "12", "S5_BLOCKS": "4"}, "S5_CONJ_SYM"),
    ({"MLP_KIND": "s5", "S5_DT_MIN": "0.5"}, "S5_DT_MAX"),
    ({"MLP_KIND": "wave", "WAVE_MODE": "surf"}, "WAVE_MODE"),
    ({"MLP_KIND": "swiglu", "MLP_KIND_LAYERS": "0,7"}, "MLP_KIND_LAYERS"),
    ({"MLP_KIND": "swiglu", "MLP_KIND_LAYERS": "first"}, "MLP_KIND_LAYERS"),
    ({"MLP_KIND": "s5", "S5_SCAN": "magic"}, "S5_SCAN"),
])
def test_bad_mixer_knob_is_named(env, knob):
    with pytest.raises(train_gpt.KnobError, match=knob):
        train_gpt.Hyperparameters(env={**BASE_ENV, **env}, device_type="cpu")
