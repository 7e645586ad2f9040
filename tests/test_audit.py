"""The legality audit passes the real model and our evals, and catches each planted illegal construction:
a mixer that reads the future, target-keyed caches and gold-only mixtures, pre-eval fine-tuning on validation,
adapt-then-score TTT, rescoring, and the sliding-window coverage bugs of HARNESS.md B1 (a)-(c)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from eval import audit
from eval.audit import (audit_model, check_causality, check_executed_coverage, check_normalization, check_plan_coverage,
                        check_ttt_order, sliding_ranges)
from eval.bpb import unit_byte_luts
from eval.sliding import evaluate_sliding
from eval.ttt import Adaptation, TTTConfig, score_first_ttt
from tests.eval_models import TINY_KNOBS, V, nll_of, tiny_model

LUTS = unit_byte_luts(V)
L, S = 16, 4
TTT = TTTConfig(chunk_tokens=16, epochs=1, seq_len=L, stride=S, batch_seqs=4, budget_s=0.0, lr=0.01)


def test_real_model_passes_every_check():
    checks = audit_model(tiny_model(), V, seq_len=L, stride=S)
    assert [c.name for c in checks] == ["causality", "normalization", "coverage", "ttt order"]
    assert all(c.passed for c in checks), audit.format_table(checks)
    table = audit.format_table(checks)
    assert table.count("PASS") == 4 and "FAIL" not in table


# ---------- C1: a mixer that reads the future ----------

class FutureReadingMLP(nn.Module):
    """An MLP-slot mixer that adds the next position's input: fine for training loss, illegal at eval."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.5 * torch.roll(x, shifts=-1, dims=1)


def test_future_reading_mixer_fails_causality():
    model = tiny_model(1)
    model.blocks[1].mlp = FutureReadingMLP(model.blocks[1].mlp)
    check = check_causality(model, nll_of(model), V, L)
    assert not check.passed and "reads the future" in check.detail


def test_model_that_ignores_its_input_is_not_a_pass():
    model = tiny_model(2)
    with torch.no_grad():
        model.tok_emb.weight.zero_()
        for p in model.parameters():
            p.zero_()
    check = check_causality(model, nll_of(model), V, L)
    assert not check.passed and "says nothing" in check.detail


# ---------- C2: target-keyed caches and gold-only mixtures ----------

class TargetKeyedCache:
    """The PR #779 family: hashed (previous token, target) counts from already-scored text, mixed into the gold
    token's probability only. Score-first and causal, yet its 'distribution' sums far above 1."""

    def __init__(self, model, history: torch.Tensor, buckets: int = 8, alpha: float = 0.3):
        self.model, self.buckets, self.alpha = model, buckets, alpha
        prev, tgt = history[:-1], history[1:]
        self.pair = torch.bincount((prev * V + tgt) % buckets, minlength=buckets).float()
        self.ctx = torch.bincount(prev % buckets, minlength=buckets).float()

    def __call__(self, x, y):
        p_model = torch.exp(-self.model(x, y, reduction="none"))
        p_cache = torch.clamp(self.pair[(x * V + y) % self.buckets] / self.ctx[x % self.buckets].clamp_min(1), max=1.0)
        return -torch.log((1 - self.alpha) * p_model + self.alpha * p_cache)


def oracle_gate(model, unigram: torch.Tensor):
    """PR #659's 'safety gate': keep whichever of model and unigram gives the gold token more probability."""
    def nll(x, y):
        return torch.minimum(model(x, y, reduction="none"), -torch.log(unigram[y]))
    return nll


def test_target_keyed_cache_fails_normalization():
    model = tiny_model(3)
    history = torch.randint(0, V, (500,), generator=torch.Generator().manual_seed(0))
    scorer = TargetKeyedCache(model, history)
    check = check_normalization(scorer, V, L)
    assert not check.passed and "not a normalized distribution" in check.detail
    assert check_causality(model, scorer, V, L).passed  # it is causal: only normalization exposes it
    assert check_normalization(nll_of(model), V, L).passed


def test_gold_only_oracle_mixture_fails_normalization():
    model = tiny_model(4)
    unigram = torch.softmax(torch.randn(V, generator=torch.Generator().manual_seed(1)) * 2, 0)
    check = check_normalization(oracle_gate(model, unigram), V, L)
    assert not check.passed
    sums = [float(s) for s in check.detail.rsplit(": ", 1)[1].split(", ")]
    assert all(s > 1.05 for s in sums)


# ---------- C3: adapting on tokens before scoring them ----------

def pre_eval_finetune(model, tokens, acc, steps: int = 3):
    """The ruled-out 'pre-quant TTT': fine-tune on all of validation, then score it."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = tokens[:-1][None], tokens[1:][None]
    for _ in range(steps):
        model(x, y).backward()
        opt.step()
        opt.zero_grad()
    evaluate_sliding(lambda a, b: model(a, b, reduction="none"), tokens, L, S, 4, LUTS, acc=acc)


def adapt_then_score(model, tokens, acc):
    """Chunk TTT with the two steps swapped: each chunk is trained on, then scored."""
    from eval.sliding import score_windows, sliding_plan

    n = tokens.numel() - 1
    with Adaptation(model, model, TTT, "cpu") as adapt:
        for lo in range(0, n, TTT.chunk_tokens):
            hi = min(lo + TTT.chunk_tokens, n)
            adapt.step_on(tokens[lo : hi + 1], TTT.learning_rate)
            with torch.no_grad():
                score_windows(lambda a, b: model(a, b, reduction="none"), tokens, sliding_plan(lo, hi, L, S), L, 4, LUTS, acc)


@pytest.mark.parametrize("illegal", [pre_eval_finetune, adapt_then_score])
def test_adapting_before_scoring_fails_ttt_order(illegal):
    check = check_ttt_order(illegal, tiny_model(5), V - 1)
    assert not check.passed and "adapts before scoring" in check.detail


def test_score_first_ttt_passes_ttt_order():
    check = check_ttt_order(lambda m, t, a: score_first_ttt(m, m, t, TTT, LUTS, acc=a), tiny_model(5), V - 1)
    assert check.passed, check.detail


def test_rescoring_after_adaptation_fails_executed_coverage():
    """'Report the last epoch': score, adapt, score everything again."""
    model = tiny_model(6)

    def score_twice(tokens, acc):
        score_first_ttt(model, model, tokens, TTT, LUTS, acc=acc)
        evaluate_sliding(nll_of(model), tokens[-20:], L, S, 4, LUTS, acc=acc)

    ok, detail = check_executed_coverage({"rescoring ttt": score_twice}, V - 1)
    assert not ok and "19 targets scored more than once" in detail
    ok, detail = check_executed_coverage({"sliding": lambda t, a: evaluate_sliding(nll_of(model), t, L, S, 4, LUTS, acc=a)}, V - 1)
    assert ok, detail


# ---------- C4: the sliding-window coverage bugs found in public records ----------

def v1_tail_duplicates(n, seq_len, stride, rank, world):
    """(a): a window at every multiple of S below n; the first scores all, the others their last S (clamped)."""
    starts = torch.arange(0, n, stride)
    wlen = torch.clamp(n - starts, max=seq_len)
    lo = torch.where(starts == 0, starts, starts + torch.clamp(wlen - stride, min=0))
    return lo, starts + wlen


def first_targets_skipped(n, seq_len, stride, rank, world):
    """(b): every window, the first included, scores only its last S targets."""
    starts = torch.arange(0, max(n - seq_len, 0) + 1, stride)
    return starts + seq_len - stride, torch.clamp(starts + seq_len, max=n)


def gap_after_first_window(n, seq_len, stride, rank, world):
    """(c): the first window scores 0..L-1, then the next start is L - S instead of S."""
    starts = torch.cat((torch.zeros(1, dtype=torch.long), torch.arange(seq_len - stride, max(n - seq_len, 0) + 1, stride)))
    lo = torch.where(starts == 0, 0, starts + seq_len - stride)
    return lo, torch.clamp(starts + seq_len, max=n)


def truncated_tail(n, seq_len, stride, rank, world):
    """The public baseline's loader: the stream cut to a multiple of L, then exact windows."""
    lo, hi = sliding_ranges(n - n % seq_len, seq_len, stride, rank, world)
    return lo, hi


@pytest.mark.parametrize("plan,message", [(v1_tail_duplicates, "scored twice"), (first_targets_skipped, "targets 0..11 are never scored"),
                                          (gap_after_first_window, "never scored"), (truncated_tail, "(the tail) are never scored")])
def test_known_sliding_bugs_fail_coverage(plan, message):
    ok, detail = check_plan_coverage({"buggy": plan}, [(1000, 16, 4, 1), (1003, 16, 4, 1)])
    assert not ok and message in detail, detail


def test_our_plans_pass_at_fineweb_scale():
    ok, detail = check_plan_coverage({"sliding": sliding_ranges, "ttt": audit.ttt_ranges(32_768)}, [(10**6 + 3, 1024, 64, 8)])
    assert ok, detail


# ---------- the CLI ----------

@pytest.fixture
def clean_env(monkeypatch):
    import train_gpt

    for k in train_gpt.KNOB_BY_NAME:
        monkeypatch.delenv(k, raising=False)


def test_cli_on_artifacts(tmp_path, capsys, clean_env):
    from quant.int8 import pack_int8_zlib

    model = tiny_model(7)
    torch.save(model.state_dict(), tmp_path / "final_model.pt")
    (tmp_path / "final_model.int8.ptz").write_bytes(pack_int8_zlib(model.state_dict()))
    knobs = [f"{k}={v}" for k, v in TINY_KNOBS.items()] + [f"VOCAB_SIZE={V}"]
    for name in ("final_model.pt", "final_model.int8.ptz"):
        rc = audit.main(["--artifact", str(tmp_path / name), "--seq-len", str(L), *knobs])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert out.count("PASS") == 4 and "ttt order" in out
    rc = audit.main(["--artifact", str(tmp_path / "final_model.pt"), "--seq-len", str(L), *knobs[1:], "NUM_LAYERS=3"])
    assert rc == 2 and "NUM_LAYERS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        audit.main(["--seq-len", str(L)])  # neither an artifact nor --random-init


def test_normalization_sums_are_exact_for_the_model():
    check = check_normalization(nll_of(tiny_model(8)), V, L, positions=3)
    sums = [float(s) for s in check.detail.rsplit(": ", 1)[1].split(", ")]
    assert check.passed and all(math.isclose(s, 1.0, abs_tol=1e-5) for s in sums)
