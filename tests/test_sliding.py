"""Sliding-window eval: exact coverage for any (length, L, S, world), equality with the plain eval at S = L,
padding/batching invariance, and a real 2-process gloo run matching one process."""
from __future__ import annotations

import math

import pytest
import torch

from eval.bpb import BpbAccumulator, ByteLuts, target_bytes, unit_byte_luts
from eval.plain import evaluate, window_plan
from eval.sliding import budget_note, evaluate_sliding, score_windows, sliding_plan
from eval.logprob import Scorer
from tests.eval_models import V, UnigramLM, run_on_gloo_ranks, tiny_model



LENGTHS = [1, 2, 3, 31, 32, 33, 63, 64, 65, 100, 257, 1000]
GEOMETRY = [(1, 1), (7, 1), (7, 3), (7, 7), (32, 1), (32, 5), (32, 16), (32, 31), (32, 32), (64, 48)]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("seq_len,stride", GEOMETRY)
def test_every_target_scored_exactly_once(n, seq_len, stride):
    plan = sliding_plan(0, n, seq_len, stride)
    assert plan.scored_counts(n).tolist() == [1] * n
    length = plan.hi - plan.start
    assert bool((length >= 1).all() and (length <= seq_len).all() and (plan.start >= 0).all())
    assert int((length < seq_len).sum()) <= 1 or n < seq_len  # at most one short window: the tail
    # Every scored target sees at least L - S earlier tokens in its window (or all there are).
    context = plan.lo - plan.start
    assert bool(((context >= seq_len - stride) | (plan.start == 0)).all())
    for world in (1, 2, 3, 8):
        shards = [plan.shard(r, world) for r in range(world)]
        counts = sum(s.scored_counts(n) for s in shards)
        assert counts.tolist() == [1] * n
        assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced shares


@pytest.mark.parametrize("lo,hi", [(0, 50), (5, 50), (20, 50), (49, 50), (30, 30)])
def test_plan_of_a_range(lo, hi):
    plan = sliding_plan(lo, hi, 16, 4)
    counts = plan.scored_counts(hi)
    assert counts[:lo].sum() == 0 and counts[lo:].tolist() == [1] * (hi - lo)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 257])
@pytest.mark.parametrize("seq_len", [1, 7, 32])
def test_stride_equal_seq_len_is_the_plain_window_plan(n, seq_len):
    plan = sliding_plan(0, n, seq_len, seq_len)
    assert list(zip(plan.start.tolist(), (plan.hi - plan.start).tolist())) == window_plan(n, seq_len, 0, 1)
    assert plan.lo.tolist() == plan.start.tolist()


@pytest.mark.parametrize("n,seq_len,batch", [(200, 32, 3), (64, 32, 2), (5, 32, 4), (257, 16, 16)])
def test_stride_equal_seq_len_matches_plain_eval_on_the_real_model(n, seq_len, batch):
    model = tiny_model()
    tokens = torch.randint(0, V, (n + 1,), generator=torch.Generator().manual_seed(n))
    luts = unit_byte_luts(V)
    plain = evaluate(model, tokens, seq_len, batch, luts)
    sliding = evaluate_sliding(model, tokens, seq_len, seq_len, batch, luts)
    assert sliding.targets_scored == plain.targets_scored == n
    assert sliding.val_bpb == pytest.approx(plain.val_bpb, rel=1e-6)
    assert sliding.val_loss == pytest.approx(plain.val_loss, rel=1e-6)


def test_sliding_equals_per_target_reference_and_ignores_batching():
    """Each target's nll equals the model's nll for it with exactly its window's context; padding and batch size
    do not matter."""
    model = tiny_model(1)
    n, L, S = 150, 32, 8
    tokens = torch.randint(0, V, (n + 1,), generator=torch.Generator().manual_seed(3))
    luts = unit_byte_luts(V)
    ref = BpbAccumulator("cpu")
    plan = sliding_plan(0, n, L, S)
    with torch.no_grad():
        for s, lo, hi in zip(plan.start.tolist(), plan.lo.tolist(), plan.hi.tolist()):
            x, y = tokens[s:hi][None], tokens[s + 1 : hi + 1][None]
            nll = model(x, y, reduction="none")[0, lo - s :]
            ref.add(nll, x[0, lo - s :], y[0, lo - s :], luts)
    expected = ref.result()
    for batch in (1, 3, 64):
        res = evaluate_sliding(model, tokens, L, S, batch, luts)
        assert (res.val_loss, res.val_bpb) == pytest.approx(expected, rel=1e-6)
    plain = evaluate(model, tokens, L, 4, luts)
    assert plain.val_loss != pytest.approx(expected[0], rel=1e-6)  # context really changed the scores


@pytest.mark.parametrize("seq_len,stride,world", [(16, 4, 1), (16, 4, 3), (50, 7, 2), (1000, 10, 4)])
def test_ranks_sum_to_the_exact_stream_value(seq_len, stride, world):
    """A context-free scorer makes the result independent of windowing: the ranks' float64 sums must add up to
    the whole stream's value, bytes included."""
    g = torch.Generator().manual_seed(0)
    luts = ByteLuts(torch.randint(0, 4, (V,), generator=g, dtype=torch.int16), torch.rand(V, generator=g) < 0.4,
                    torch.rand(V, generator=g) < 0.1)
    tokens = torch.randint(0, V, (777,), generator=g)
    unigram = UnigramLM()
    total = BpbAccumulator("cpu")
    for rank in range(world):  # each rank's share, as evaluate_sliding scores it before the all-reduce
        plan = sliding_plan(0, tokens.numel() - 1, seq_len, stride).shard(rank, world)
        score_windows(Scorer(unigram, V), tokens, plan, seq_len, 3, luts, total)
    y = tokens[1:]
    loss = float(unigram.nll(y).mean())
    nbytes = float(target_bytes(tokens[:-1], y, luts).double().sum())
    assert total.targets == y.numel()
    assert total.result() == pytest.approx((loss, loss / math.log(2) * y.numel() / nbytes), rel=1e-6)


@pytest.mark.parametrize("seq_len,stride,batch", [(0, 1, 1), (8, 0, 1), (8, 9, 1), (8, 4, 0)])
def test_bad_arguments_are_named(seq_len, stride, batch):
    with pytest.raises(ValueError, match="EVAL_SEQ_LEN|EVAL_STRIDE|EVAL_BATCH_SEQS"):
        evaluate_sliding(UnigramLM(), torch.arange(10), seq_len, stride, batch, unit_byte_luts(V))
    with pytest.raises(ValueError, match="empty"):
        evaluate_sliding(UnigramLM(), torch.arange(1), 8, 4, 1, unit_byte_luts(V))


def test_budget_note():
    assert budget_note(10, 600) == "budget:600s" and budget_note(601, 600) == "budget:600s OVER_BUDGET"
    assert budget_note(10, 0) == "budget:none"


def _sliding_on_rank(rank: int, world: int):
    model = tiny_model(2)
    tokens = torch.randint(0, V, (301,), generator=torch.Generator().manual_seed(5))
    res = evaluate_sliding(model, tokens, 32, 8, 2, unit_byte_luts(V), rank=rank, world_size=world)
    short = evaluate_sliding(model, tokens[:21], 32, 8, 2, unit_byte_luts(V), rank=rank, world_size=world)
    return res.val_loss, res.val_bpb, res.targets_scored, short.val_loss, short.targets_scored


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process():
    out = run_on_gloo_ranks(_sliding_on_rank, 2)
    model = tiny_model(2)
    tokens = torch.randint(0, V, (301,), generator=torch.Generator().manual_seed(5))
    one = evaluate_sliding(model, tokens, 32, 8, 2, unit_byte_luts(V))
    short = evaluate_sliding(model, tokens[:21], 32, 8, 2, unit_byte_luts(V))
    for rank in range(2):
        loss, bpb, scored, short_loss, short_scored = out[rank]
        assert scored == 300 and short_scored == 20  # one window for two ranks: rank 1 scores nothing
        assert (loss, bpb) == pytest.approx((one.val_loss, one.val_bpb), rel=1e-9)
        assert short_loss == pytest.approx(short.val_loss, rel=1e-9)
