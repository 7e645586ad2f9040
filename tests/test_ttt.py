"""Score-first TTT: adaptation only ever sees scored tokens, every target is scored once, weights come back,
it learns, the budget stops adapting (never scoring), and two gloo ranks match one process."""
from __future__ import annotations

import re

import pytest
import torch
from torch.nn.utils import parametrize

from eval.audit import check_ttt_order
from eval.bpb import unit_byte_luts
from eval.sliding import evaluate_sliding
from eval.ttt import ScoredPrefix, ScoreOrderError, TTTConfig, score_first_ttt, warm_up_ttt
from tests.eval_models import V, run_on_gloo_ranks, tiny_model
from tests.test_train import run_trainer, tiny  # noqa: F401 - tiny is the trainer tests' dataset fixture

LUTS = unit_byte_luts(V)


def cfg(**kw) -> TTTConfig:
    base = dict(chunk_tokens=40, epochs=2, seq_len=16, stride=4, batch_seqs=4, budget_s=0.0)
    return TTTConfig(**{**base, **kw})


def test_scored_prefix_refuses_unscored_tokens():
    prefix = ScoredPrefix(torch.arange(101))
    with pytest.raises(ScoreOrderError, match="only \\[0, 0\\)"):
        prefix.training_tokens(0, 10)
    prefix.record_scored(0, 40)
    assert prefix.training_tokens(0, 40).tolist() == list(range(41))  # inputs and targets of targets 0..39
    with pytest.raises(ScoreOrderError, match="refusing"):
        prefix.training_tokens(30, 41)
    with pytest.raises(ScoreOrderError, match="out of order"):
        prefix.record_scored(50, 60)  # skipping targets 40..49


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_adaptation_only_sees_scored_tokens(mode, monkeypatch):
    """From outside (the audit's forward spy) and from inside (every request for training tokens)."""
    calls = []
    original = ScoredPrefix.training_tokens

    def spy(self, lo, hi):
        calls.append((lo, hi, self.end))
        return original(self, lo, hi)

    monkeypatch.setattr(ScoredPrefix, "training_tokens", spy)
    model = tiny_model(3)
    c = cfg(mode=mode, lr=0.01, chunk_tokens=20)
    res = check_ttt_order(lambda m, tokens, acc: score_first_ttt(m, m, tokens, c, LUTS, acc=acc), model, V - 2, V)
    assert res.passed, res.detail
    assert calls == [(lo, lo + 20, lo + 20) for lo in (0, 20, 40)]  # 62 targets; the last chunk [60, 62) is never trained on


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_weights_and_model_structure_restored(mode):
    model = tiny_model(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    model.blocks[0].attn_scale.requires_grad_(False)  # a frozen parameter stays frozen
    tokens = torch.randint(0, V, (120,), generator=torch.Generator().manual_seed(0))
    res = score_first_ttt(model, model, tokens, cfg(mode=mode, lr=0.05), LUTS)
    assert res.adapted_chunks == 2 and res.eval.targets_scored == 119
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert list(model.parameters()) == params and not any(parametrize.is_parametrized(m) for m in model.modules())
    assert [p.requires_grad for p in model.parameters()].count(False) == 1
    warm_up_ttt(model, model, cfg(mode=mode, lr=0.05), V, "cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_one_chunk_is_the_sliding_eval():
    model = tiny_model(5)
    tokens = torch.randint(0, V, (150,), generator=torch.Generator().manual_seed(1))
    ttt = score_first_ttt(model, model, tokens, cfg(chunk_tokens=10_000), LUTS)
    sliding = evaluate_sliding(model, tokens, 16, 4, 4, LUTS)
    assert ttt.adapted_chunks == 0 and ttt.chunks == 1
    assert (ttt.eval.val_loss, ttt.eval.val_bpb) == pytest.approx((sliding.val_loss, sliding.val_bpb), rel=1e-9)


@pytest.mark.parametrize("mode,lr", [("full", 0.05), ("lora", 0.02)])
def test_ttt_learns_a_repeating_stream(mode, lr):
    """The same 60 tokens five times: after adapting on the first copies, later copies score better. The sliding
    eval runs first under inference mode, so this also covers training a model right after an eval."""
    model = tiny_model(6, std=0.1)
    piece = torch.randint(0, V, (60,), generator=torch.Generator().manual_seed(2))
    tokens = torch.cat([piece] * 5 + [piece[:1]])
    sliding = evaluate_sliding(model, tokens, 16, 4, 4, LUTS)
    ttt = score_first_ttt(model, model, tokens, cfg(mode=mode, lr=lr, chunk_tokens=60, epochs=3), LUTS)
    assert ttt.eval.targets_scored == sliding.targets_scored == 300
    assert ttt.eval.val_loss < sliding.val_loss - 0.1, (ttt.eval.val_loss, sliding.val_loss)


def test_budget_stops_adapting_but_not_scoring():
    model = tiny_model(7)
    tokens = torch.randint(0, V, (200,), generator=torch.Generator().manual_seed(3))
    frozen = score_first_ttt(model, model, tokens, cfg(epochs=0), LUTS)
    broke = score_first_ttt(model, model, tokens, cfg(lr=0.05, budget_s=1e-9), LUTS)
    assert broke.stopped_by_budget and broke.adapted_chunks == 0 and "adaptation_stopped:budget" in broke.summary
    assert broke.eval.targets_scored == 199
    assert broke.eval.val_loss == pytest.approx(frozen.eval.val_loss, rel=1e-12)
    rich = score_first_ttt(model, model, tokens, cfg(lr=0.05, budget_s=1e6), LUTS)
    assert not rich.stopped_by_budget and rich.adapted_chunks == 4


@pytest.mark.parametrize("kw,knob", [(dict(mode="sgd"), "TTT_MODE"), (dict(chunk_tokens=0), "TTT_CHUNK_TOKENS"),
                                     (dict(epochs=-1), "TTT_EPOCHS"), (dict(lr=-1.0), "TTT_LR"),
                                     (dict(mode="lora", lora_rank=0), "TTT_LORA_RANK"), (dict(stride=17), "EVAL_STRIDE"),
                                     (dict(batch_seqs=0), "EVAL_BATCH_SEQS")])
def test_bad_config_names_the_knob(kw, knob):
    with pytest.raises(ValueError, match=knob):
        cfg(**kw)


def _ttt_on_rank(rank: int, world: int):
    model = tiny_model(8)
    tokens = torch.randint(0, V, (181,), generator=torch.Generator().manual_seed(4))
    res = score_first_ttt(model, model, tokens, cfg(lr=0.05, batch_seqs=3), LUTS, rank=rank, world_size=world)
    return res.eval.val_loss, res.eval.targets_scored, res.adapted_chunks


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process():
    """Each rank scores a share and trains on a share of each batch; summed gradients keep the weights equal."""
    out = run_on_gloo_ranks(_ttt_on_rank, 2)
    model = tiny_model(8)
    tokens = torch.randint(0, V, (181,), generator=torch.Generator().manual_seed(4))
    one = score_first_ttt(model, model, tokens, cfg(lr=0.05, batch_seqs=3), LUTS)
    for rank in range(2):
        loss, scored, adapted = out[rank]
        assert scored == 180 and adapted == one.adapted_chunks == 4
        assert loss == pytest.approx(one.eval.val_loss, rel=1e-5)


def test_trainer_logs_sliding_and_ttt_scores_of_the_roundtrip(tmp_path, tiny):
    """train_gpt.py: the sliding and TTT evals run on the roundtripped weights, score all N targets, and log
    exact lines, eval tokens/s and the budget. A malformed eval knob stops the run at start."""
    proc = run_trainer(tmp_path / "ok", tiny, {"EVAL_STRIDE": "8", "TTT_ENABLED": "1", "TTT_CHUNK_TOKENS": "2000", "TTT_EPOCHS": "1"})
    out = proc.stdout
    n = re.findall(r"val_targets_scored:(\d+)/(\d+)", out)
    assert len(n) == 3 and all(a == b for a, b in n) and len(set(n)) == 1
    plain = float(re.search(r"final_int8_zlib_roundtrip_exact val_loss:[\d.]+ val_bpb:([\d.]+)", out).group(1))
    sliding = re.search(r"final_sliding_window val_loss:[\d.]+ val_bpb:[\d.]+ seq_len:32 stride:8 eval_time:\d+ms "
                        r"eval_tokens_per_s:\d+ budget:600s\n", out)
    assert sliding, out[-1500:]
    bpb = float(re.search(r"final_sliding_window_exact val_loss:[\d.]+ val_bpb:([\d.]+)", out).group(1))
    assert abs(bpb - plain) < 0.05 * plain  # same weights, more context: close to the plain score
    assert re.search(r"final_ttt val_loss:[\d.]+ val_bpb:[\d.]+ mode:full ttt_chunks:3 adapted:2 eval_time:[\d.]+s "
                     r"eval_tokens_per_s:\d+ budget:600s", out), out[-1500:]
    assert re.search(r"final_ttt_exact val_loss:[\d.]+ val_bpb:[\d.]+", out)
    bad = run_trainer(tmp_path / "bad", tiny, {"EVAL_STRIDE": "33"}, check=False)
    assert bad.returncode != 0 and "EVAL_STRIDE=33 must be <= EVAL_SEQ_LEN=32" in bad.stderr
