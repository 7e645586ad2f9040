"""optim/: Coupled Adam's defining properties, Muon's orthogonalization and weight decay, parameter routing,
the warmup snapshot/restore of optimizer state, the weight EMA and the embedding-health metrics."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from optim.coupled_adam import CoupledAdam
from optim.ema import WeightEMA
from optim.groups import build_optimizers, describe_optimizers, split_parameters
from optim.health import embedding_health
from optim.muon import Muon, zeropower_via_newtonschulz5

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt  # noqa: E402

TINY = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", VOCAB_SIZE="64", TRAIN_SEQ_LEN="16")


def zero_sum_output_grads(V: int, H: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """Output-embedding gradients G = (P - Y)^T h over a batch, Zipf-distributed targets: rows sum to 0."""
    gen = torch.Generator().manual_seed(seed)
    zipf = 1.0 / torch.arange(1, V + 1, dtype=torch.float64)
    grads = []
    for _ in range(steps):
        h = torch.randn(32, H, generator=gen, dtype=torch.float64)
        probs = torch.softmax(torch.randn(32, V, generator=gen, dtype=torch.float64), dim=1)
        targets = torch.multinomial(zipf / zipf.sum(), 32, replacement=True, generator=gen)
        grads.append((probs - torch.nn.functional.one_hot(targets, V).double()).T @ h / 32)
    return grads


def run(opt_cls, grads, p0, **kw):
    """Step an optimizer over fixed gradients; returns (final param, list of per-step updates, optimizer)."""
    p = torch.nn.Parameter(p0.clone())
    opt = opt_cls([p], **kw)
    updates = []
    for g in grads:
        before = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        updates.append(p.detach() - before)
    return p.detach(), updates, opt


# ---------- Coupled Adam ----------

def test_coupled_update_sums_to_zero_over_vocab_adam_does_not():
    V, H = 96, 16
    grads = zero_sum_output_grads(V, H, steps=10)
    assert max(g.sum(0).abs().max().item() for g in grads) < 1e-12
    p0 = torch.randn(V, H, dtype=torch.float64)
    _, coupled, _ = run(CoupledAdam, grads, p0, lr=0.01, eps=1e-16)
    _, adam, _ = run(torch.optim.AdamW, grads, p0, lr=0.01, eps=1e-16, weight_decay=0.0)
    for c, a in zip(coupled, adam):
        # the column sums of the update, relative to the size of one row's update
        assert (c.sum(0).abs().max() / c.abs().max()).item() < 1e-9
        assert (a.sum(0).abs().max() / a.abs().max()).item() > 0.1


def test_shared_denominator_per_column():
    V, H = 40, 8
    gen = torch.Generator().manual_seed(1)
    scale = torch.logspace(-3, 1, V, dtype=torch.float64)[:, None]  # rare and frequent tokens: very different v_i
    grads = [torch.randn(V, H, generator=gen, dtype=torch.float64) * scale for _ in range(5)]
    p0 = torch.zeros(V, H, dtype=torch.float64)
    for opt_cls, shared in ((CoupledAdam, True), (torch.optim.AdamW, False)):
        _, updates, opt = run(opt_cls, grads, p0, lr=0.1, weight_decay=0.0)
        exp_avg = opt.state[opt.param_groups[0]["params"][0]]["exp_avg"]
        # update = -lr * m_hat / denom, so -lr * m_hat / update is the denominator each element used
        denom = -0.1 * (exp_avg / (1 - 0.9**5)) / updates[-1]
        spread = (denom.max(0).values / denom.min(0).values - 1).max().item()
        assert (spread < 1e-9) if shared else (spread > 10), (opt_cls, spread)


@pytest.mark.parametrize("foreach", [False, None])
def test_one_row_equals_torch_adamw(foreach):
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(1, 12, generator=gen) for _ in range(20)]
    p0 = torch.randn(1, 12, generator=gen)
    kw = dict(lr=0.03, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    coupled, _, _ = run(CoupledAdam, grads, p0, **kw)
    adamw, _, _ = run(torch.optim.AdamW, grads, p0, foreach=foreach, **kw)
    if foreach is False:  # the same single-tensor arithmetic, op for op
        assert torch.equal(coupled, adamw)
    torch.testing.assert_close(coupled, adamw, rtol=1e-6, atol=1e-7)


def test_identical_rows_behave_like_adamw_rows():
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(1, 6, generator=gen, dtype=torch.float64).expand(5, 6).clone() for _ in range(8)]
    p0 = torch.randn(1, 6, generator=gen, dtype=torch.float64).expand(5, 6).clone()
    coupled, _, _ = run(CoupledAdam, grads, p0, lr=0.05, weight_decay=0.01)
    adamw, _, _ = run(torch.optim.AdamW, grads, p0, lr=0.05, weight_decay=0.01)
    torch.testing.assert_close(coupled, adamw, rtol=1e-12, atol=1e-14)


def test_scaled_variant_divides_the_step_by_sqrt_scale():
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(1, 6, generator=gen, dtype=torch.float64) for _ in range(6)]
    p0 = torch.zeros(1, 6, dtype=torch.float64)
    scaled, _, _ = run(CoupledAdam, grads, p0, lr=0.1, eps=0.0, coupled_scale=4.0)
    half_lr, _, _ = run(torch.optim.AdamW, grads, p0, lr=0.05, eps=0.0, weight_decay=0.0)
    torch.testing.assert_close(scaled, half_lr, rtol=1e-12, atol=1e-15)


def test_stored_second_moment_stays_per_element_and_unscaled():
    V, H, beta2 = 16, 4, 0.95
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(V, H, generator=gen, dtype=torch.float64) for _ in range(100)]
    _, _, opt = run(CoupledAdam, grads, torch.zeros(V, H, dtype=torch.float64), lr=0.01, betas=(0.9, beta2), coupled_scale=8.0)
    expected = torch.zeros(V, H, dtype=torch.float64)
    for g in grads:
        expected = beta2 * expected + (1 - beta2) * g * g
    state = opt.state[opt.param_groups[0]["params"][0]]
    torch.testing.assert_close(state["exp_avg_sq"], expected, rtol=1e-12, atol=0)
    assert state["step"].item() == 100


def test_coupled_adam_rejects_vectors_and_bad_scale():
    with pytest.raises(ValueError, match="rows of a \\[vocab, dim\\] matrix"):
        CoupledAdam([torch.nn.Parameter(torch.zeros(5))], lr=0.1)
    with pytest.raises(ValueError, match="COUPLED_ADAM_SCALE"):
        CoupledAdam([torch.nn.Parameter(torch.zeros(5, 2))], lr=0.1, coupled_scale=0.0)


# ---------- Muon ----------

@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48)])
def test_newton_schulz_output_is_orthogonal_to_tolerance(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(6))
    X = zeropower_via_newtonschulz5(G, steps=5)
    s = torch.linalg.svdvals(X)
    # the tuned quintic leaves singular values in a band around 1 rather than at 1 exactly
    assert s.min() > 0.6 and s.max() < 1.2, s
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    assert torch.linalg.matrix_norm(X - U @ Vh, ord=2) < 0.4  # and it is the polar factor U V^T of G


def test_muon_step_is_orthogonal_and_weight_decay_is_decoupled():
    gen = torch.Generator().manual_seed(7)
    p0, g = torch.randn(64, 32, generator=gen), torch.randn(64, 32, generator=gen)

    def step(wd, grad):
        p = torch.nn.Parameter(p0.clone())
        p.grad = grad.clone()
        Muon([p], lr=0.5, momentum=0.0, backend_steps=5, nesterov=False, weight_decay=wd).step()
        return p.detach()

    update = (p0 - step(0.0, g)) / 0.5 / (64 / 32) ** 0.5
    s = torch.linalg.svdvals(update)
    assert s.min() > 0.6 and s.max() < 1.2
    torch.testing.assert_close(step(0.1, torch.zeros_like(g)), p0 * (1 - 0.5 * 0.1))  # zero grad: pure decay
    torch.testing.assert_close(step(0.1, g) - step(0.0, g), -0.5 * 0.1 * p0)  # decay is independent of the update


@pytest.mark.slow
def test_muon_share_by_rank_matches_single_process(tmp_path):
    """Two gloo ranks each orthogonalize half the matrices and all-reduce: the same weights as one process.
    (The default suite covers this end to end in test_train's two-rank torchrun test.)"""
    import torch.multiprocessing as mp

    from tests.muon_dist_worker import muon_steps, run_rank

    mp.spawn(run_rank, args=(2, str(tmp_path / "init"), str(tmp_path / "two.pt")), nprocs=2, join=True)
    for a, b in zip(torch.load(tmp_path / "two.pt"), muon_steps(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# ---------- routing ----------

def tiny_args(**env):
    return train_gpt.Hyperparameters(env={**TINY, **env}, device_type="cpu")


@pytest.mark.parametrize("tied", ["1", "0"])
@pytest.mark.parametrize("embed_optimizer", ["adam", "coupled_adam"])
def test_every_parameter_in_exactly_one_group(tied, embed_optimizer):
    args = tiny_args(TIE_EMBEDDINGS=tied, EMBED_OPTIMIZER=embed_optimizer, MUON_WD="0.04", ADAM_WD="0.02")
    model = train_gpt.build_model(args)
    optimizers, muon = build_optimizers(model, args)
    held = [id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())  # each exactly once
    coupled = [p for opt in optimizers if isinstance(opt, CoupledAdam) for g in opt.param_groups for p in g["params"]]
    vocab = model.tok_emb.weight if tied == "1" else model.lm_head.weight
    assert coupled == ([vocab] if embed_optimizer == "coupled_adam" else [])
    decay = {p: g["weight_decay"] for opt in optimizers for g in opt.param_groups for p in g["params"]}
    assert decay[model.tok_emb.weight] == 0.02 and decay[model.skip_weights] == 0.02
    assert all(decay[p] == 0.04 for g in muon.param_groups for p in g["params"])
    if tied == "0":
        assert decay[model.lm_head.weight] == 0.0
    line = describe_optimizers(model, optimizers)
    assert ("CoupledAdam[" in line) == (embed_optimizer == "coupled_adam") and "Muon[" in line


def test_parameter_reused_by_a_block_is_refused():
    args = tiny_args()
    model = train_gpt.build_model(args)
    model.blocks[0].mlp.shared_embedding = model.tok_emb  # a mixer that reuses the tied embedding
    with pytest.raises(RuntimeError, match="more than one optimizer group: \\['tok_emb.weight'\\]"):
        split_parameters(model)


# ---------- the trainer's warmup snapshot/restore ----------

def test_optimizer_and_ema_state_survive_the_warmup_restore():
    """Snapshot like train_gpt (model state + deep-copied optimizer state_dicts), train a few warmup steps,
    restore, then train: bit-identical to a run that never warmed up."""
    args = tiny_args(EMBED_OPTIMIZER="coupled_adam", COUPLED_ADAM_SCALE="2", MUON_WD="0.05", ADAM_WD="0.05")
    data = torch.Generator().manual_seed(9)
    batches = [torch.randint(0, 64, (2, 17), generator=data) for _ in range(4)]

    def train(model, optimizers, ema, steps):
        for b in batches[:steps]:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            model(b[:, :-1], b[:, 1:]).backward()
            for opt in optimizers:
                opt.step()
            if ema is not None:
                ema.update(model)

    def fresh():
        torch.manual_seed(0)
        model = train_gpt.build_model(args)
        return model, build_optimizers(model, args)[0]

    model_a, opts_a = fresh()
    initial_model = {k: v.detach().clone() for k, v in model_a.state_dict().items()}
    initial_opts = [copy.deepcopy(opt.state_dict()) for opt in opts_a]
    train(model_a, opts_a, None, 3)  # warmup
    assert all(opt.state for opt in opts_a)
    model_a.load_state_dict(initial_model, strict=True)
    for opt, state in zip(opts_a, initial_opts, strict=True):
        opt.load_state_dict(state)
    ema_a = WeightEMA(model_a, 0.9)
    train(model_a, opts_a, ema_a, 4)

    model_b, opts_b = fresh()
    ema_b = WeightEMA(model_b, 0.9)
    train(model_b, opts_b, ema_b, 4)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    for name, a in ema_a.averaged_state_dict(model_a).items():
        assert torch.equal(a, ema_b.averaged_state_dict(model_b)[name]), name
    for oa, ob in zip(opts_a, opts_b):
        for pa, pb in zip(oa.param_groups[0]["params"], ob.param_groups[0]["params"]):
            for key, value in oa.state[pa].items():
                assert torch.equal(value, ob.state[pb][key]), (type(oa).__name__, key)


# ---------- EMA ----------

def test_ema_is_the_bias_corrected_average_and_copies_into_the_model():
    model = torch.nn.Linear(3, 2)
    ema = WeightEMA(model, decay=0.5)
    with pytest.raises(RuntimeError, match="no optimizer step"):
        ema.averaged_state_dict(model)
    seen = []
    for value in (1.0, 2.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(-value)
        ema.update(model)
        seen.append(value)
    # weights 0.25, 0.5, 1 (newest last), normalized by their sum 1.75: no trace of the initialization
    expected = (0.25 * 1 + 0.5 * 2 + 1 * 4) / 1.75
    ema.copy_to(model)
    torch.testing.assert_close(model.weight, torch.full((2, 3), expected))
    torch.testing.assert_close(model.bias, torch.full((2,), -expected))
    with pytest.raises(ValueError, match="EMA_DECAY"):
        WeightEMA(model, 1.0)


# ---------- embedding health ----------

def test_embedding_health_separates_isotropic_from_shifted_embeddings():
    E = torch.randn(1024, 16, generator=torch.Generator().manual_seed(10)) * 0.3
    E = E - E.mean(0)
    centered = embedding_health(E)
    assert centered["isotropy"] > 0.5 and centered["mean_norm_ratio"] < 1e-6
    shifted = embedding_health(E + 3.0 * torch.nn.functional.normalize(torch.ones(16), dim=0))
    assert shifted["isotropy"] < 0.01 and shifted["mean_norm_ratio"] > 0.9
    assert embedding_health(-E)["isotropy"] == pytest.approx(centered["isotropy"])  # eigenvector signs do not matter
    long_rows = E.clone()
    long_rows[:4] *= 30  # a few frequent tokens with very long rows: anisotropic although the mean barely moves
    assert embedding_health(long_rows)["isotropy"] < 0.05 and embedding_health(long_rows)["max_row_norm"] > 10 * centered["max_row_norm"]
    with pytest.raises(ValueError, match="vocab, dim"):
        embedding_health(torch.zeros(16))


# ---------- knobs ----------

@pytest.mark.parametrize("name,value", [("EMBED_OPTIMIZER", "lion"), ("COUPLED_ADAM_SCALE", "0"), ("MUON_WD", "-0.1"),
                                        ("ADAM_WD", "-1"), ("EMA_DECAY", "1.0"), ("EMA_DECAY", "nan")])
def test_bad_optimizer_knob_is_named(name, value):
    with pytest.raises(train_gpt.KnobError, match=name):
        train_gpt.Hyperparameters(env={name: value}, device_type="cpu")
