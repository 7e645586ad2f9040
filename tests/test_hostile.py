"""A hostile submitter's constructions, each caught by the check of its class (none is a variation of the ones in
tests/test_audit.py): sparse, length-gated, text-gated, shape-gated, mode-gated and dtype-gated peeks at the target;
reading the next window of the batch; statistics over time; stochastic eval; caches and counters filled during
scoring (on the module, in a declared weight cache, in a closure); normalization games the evaluator makes
pointless; and TTT procedures that adapt before scoring in four new ways. Each failure names the window, the
position and the size. Records with modified shipped code: tests/test_hostile_records.py."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eval import audit
from eval.audit import audit_model
from eval.bpb import unit_byte_luts
from eval.logprob import Scorer, ScoringModeError
from eval.plain import evaluate
from eval.sliding import evaluate_sliding, score_windows, sliding_plan
from eval.ttt import Adaptation, ScoredPrefix, TTTConfig, score_first_ttt, ttt_chunks
from tests.eval_models import FREQUENT, V, Planted, peek, text_like, tiny_model

LUTS = unit_byte_luts(V)
L, S, B = 16, 4, 4
VAL = text_like(800, seed=3)


def checks_of(model, only, seq_len=L, stride=S, **kw) -> dict:
    kw = dict(dict(batch_seqs=B, val_tokens=VAL), **kw)
    return {c.name: c for c in audit_model(model, V, seq_len, stride, only=only, **kw)}


def assert_caught(check, *needles):
    assert not check.passed, check.detail
    for n in needles:
        assert n in check.detail, (n, check.detail)


def position_of(detail: str) -> int:
    return int(detail.split("position ", 1)[1].split(":")[0].split(",")[0].split(" ")[0])


# ---------- peeks that hide from a spot check ----------

class SparsePeek(Planted):
    """Peeks at the target at 1 position in 64 only: a random sample of positions would miss it."""

    def cheat(self, x, logits):
        where = (torch.arange(x.shape[1]) % 64 == 37)[None].expand_as(x)
        return peek(logits, x, where, 4.0)


def test_a_leak_at_one_position_in_64_is_caught():
    check = checks_of(SparsePeek(1), ("causality",), seq_len=128, stride=32)["causality"]
    assert_caught(check, "reads the future")
    assert position_of(check.detail) % 64 == 37


class LateOnlyPeek(Planted):
    """Peeks only beyond position 100: short windows look honest."""

    def cheat(self, x, logits):
        return peek(logits, x, (torch.arange(x.shape[1]) >= 100)[None].expand_as(x), 3.0)


def test_a_leak_only_beyond_some_length_is_caught_at_the_runs_window_length():
    assert checks_of(LateOnlyPeek(2), ("causality",), seq_len=64, stride=16)["causality"].passed  # never reached at 64
    check = checks_of(LateOnlyPeek(2), ("causality",), seq_len=128, stride=32)["causality"]
    assert_caught(check, "reads the future")
    assert position_of(check.detail) >= 100


class TextGatedPeek(Planted):
    """Peeks only when the row looks like the validation text (mostly frequent ids): random probes see nothing."""

    def cheat(self, x, logits):
        textlike = ((x < FREQUENT).float().mean(1, keepdim=True) > 0.6).expand_as(x)
        return peek(logits, x, textlike, 3.0)


def test_a_leak_gated_on_the_input_looking_like_text_is_caught_on_the_runs_validation_windows():
    check = checks_of(TextGatedPeek(3), ("causality",))["causality"]
    assert_caught(check, "reads the future: val window")


class ScoringShapePeek(Planted):
    """Peeks only when the batch has exactly the run's EVAL_BATCH_SEQS rows, as the real scoring batches do."""

    def cheat(self, x, logits):
        return peek(logits, x, torch.full_like(x, x.shape[0] == B, dtype=torch.bool), 2.0)


def test_a_leak_gated_on_the_scoring_batch_shape_is_caught():
    assert_caught(checks_of(ScoringShapePeek(4), ("causality",))["causality"], "reads the future")


class InferenceModePeek(Planted):
    """Peeks only under torch.inference_mode, i.e. during the real sliding eval, never in a no-grad test."""

    def cheat(self, x, logits):
        return peek(logits, x, torch.full_like(x, torch.is_inference_mode_enabled(), dtype=torch.bool), 2.0)


class NoGradOnlyPeek(Planted):
    """Peeks only under no_grad outside inference mode: TTT's scoring passes, never the sliding eval."""

    def cheat(self, x, logits):
        on = not torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        return peek(logits, x, torch.full_like(x, on, dtype=torch.bool), 2.0)


@pytest.mark.parametrize("model", [InferenceModePeek(5), NoGradOnlyPeek(5)], ids=["inference-mode", "no-grad"])
def test_a_leak_gated_on_the_grad_mode_is_caught(model):
    assert_caught(checks_of(model, ("causality",))["causality"], "reads the future")


class AutocastPeek(Planted):
    """Peeks only under bf16 autocast: an fp32 audit of a bf16 run would see an honest model."""

    def cheat(self, x, logits):
        return peek(logits, x, torch.full_like(x, torch.is_autocast_enabled("cpu"), dtype=torch.bool), 2.0)


def test_a_leak_gated_on_the_scoring_dtype_is_caught_in_that_dtype():
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    check = checks_of(AutocastPeek(6), ("causality",), dtype="bf16", autocast=bf16)["causality"]
    assert_caught(check, "reads the future")


class TwoAheadPeek(Planted):
    """Reads the token after the target (a backward bigram is informative too), with a small weight."""

    def cheat(self, x, logits):
        return peek(logits, x, torch.ones_like(x, dtype=torch.bool), 0.5, ahead=2)


def test_a_small_leak_two_tokens_ahead_is_caught():
    assert_caught(checks_of(TwoAheadPeek(7), ("causality",))["causality"], "reads the future")


class TinySpreadPeek(Planted):
    """+0.02 on the target's logit everywhere: a record-sized gain, hidden under bf16 rounding noise per position."""

    def cheat(self, x, logits):
        return peek(logits, x, torch.ones_like(x, dtype=torch.bool), 0.02)


def test_a_small_leak_spread_over_every_position_is_caught_by_the_mean_gain():
    check = checks_of(TinySpreadPeek(8), ("causality",), dtype="bf16")["causality"]  # bf16 tolerance (0.1), fp32 kernels
    assert_caught(check, "on average the target's log-probability is", "standard errors")


# ---------- the batch: the next window holds this window's future ----------

class NextRowPeek(Planted):
    """Reads the next row of its batch: in sliding batches window i+1 starts S tokens later, so its position
    t + 1 - S is this window's target at t."""

    def cheat(self, x, logits):
        idx = torch.arange(x.shape[1]) + 1 - S  # this row's position t + 1, in the next row's coordinates
        valid = (idx >= 0) & (idx < x.shape[1])
        nxt = torch.zeros_like(x)
        nxt[:-1, valid] = x[1:, idx[valid]]
        where = valid[None].expand_as(x).clone()
        where[-1] = False
        return logits + F.one_hot(nxt, logits.size(-1)).to(logits.dtype) * 3.0 * where[..., None]


def test_reading_the_next_window_of_the_batch_is_caught():
    checks = checks_of(NextRowPeek(9), ("causality", "batch invariance"))
    assert_caught(checks["batch invariance"], "depends on the other rows of its batch", "alone (batch of 1)")
    honest = evaluate_sliding(Planted(9), VAL, L, S, B, LUTS).val_bpb
    assert evaluate_sliding(NextRowPeek(9), VAL, L, S, B, LUTS).val_bpb < honest - 0.05  # it would have paid


class TimeNormalized(Planted):
    """Centers the logits with their mean over the whole window (a normalization over time that ignores eval())."""

    def cheat(self, x, logits):
        return logits - 0.5 * logits.mean(1, keepdim=True)


def test_statistics_over_the_time_axis_are_caught():
    assert_caught(checks_of(TimeNormalized(10), ("causality",))["causality"], "reads the future")


# ---------- mode ----------

class BatchNormHead(Planted):
    """A BatchNorm over batch and time on the logits: in train() mode it reads the future of the batch."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.norm = nn.BatchNorm1d(V)
        self.eval()

    def cheat(self, x, logits):
        return self.norm(logits.transpose(1, 2)).transpose(1, 2)


def test_train_mode_statistics_are_refused_and_eval_mode_is_honest():
    model = BatchNormHead(11)
    model.train()
    with pytest.raises(ScoringModeError, match="is in train\\(\\) mode"):
        evaluate_sliding(model, VAL, L, S, B, LUTS)  # the bug: the sliding/TTT passes ran in train() mode
    with pytest.raises(ScoringModeError):
        evaluate(model, VAL, L, B, LUTS)
    checks = checks_of(model, ("mode", "causality", "batch invariance", "statelessness"))
    assert all(c.passed for c in checks.values()), audit.format_table(list(checks.values()))  # running stats: legal


class NoisyEval(Planted):
    """A dropout-like stochastic path left on in eval mode."""

    def cheat(self, x, logits):
        return logits + 0.05 * torch.randn_like(logits)


def test_a_stochastic_eval_path_is_caught():
    checks = checks_of(NoisyEval(12), ("batch invariance", "statelessness"))
    assert not checks["batch invariance"].passed or not checks["statelessness"].passed
    assert_caught(checks["statelessness"], "scores depend on what was scored before")


# ---------- state filled during scoring ----------

class BigramCache(Planted):
    """The 'score-first' n-gram cache: bigram counts from every window it is shown, mixed into the logits."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.counts = torch.zeros(V, V)

    def cheat(self, x, logits):
        out = logits + torch.log1p(self.counts[x])
        self.counts.index_put_((x[:, :-1].reshape(-1), x[:, 1:].reshape(-1)), torch.ones(x[:, 1:].numel()), accumulate=True)
        return out


def test_a_cache_filled_by_scoring_is_caught():
    assert_caught(checks_of(BigramCache(13), ("statelessness",))["statelessness"], "attribute counts", "filled by inference passes")


class ClosureCounter(Planted):
    """State the fingerprint cannot see (a closure): after more forwards than the audit's own probes, it peeks."""

    def __init__(self, seed: int):
        super().__init__(seed)
        calls = itertools.count()
        object.__setattr__(self, "tick", lambda: next(calls))

    def cheat(self, x, logits):
        return peek(logits, x, torch.full_like(x, self.tick() >= 60, dtype=torch.bool), 3.0)


def test_hidden_state_outside_the_module_is_caught_by_behaviour():
    check = checks_of(ClosureCounter(14), ("causality", "statelessness"))["statelessness"]
    assert_caught(check, "scores depend on what was scored before", "scored first vs again")


class DeclaredCacheAbuse(Planted):
    """Hides a memory of the inputs in an attribute it declares to be a weight-derived cache."""

    audit_derived_caches = ("memory",)

    def __init__(self, seed: int):
        super().__init__(seed)
        self.memory = torch.zeros(V)

    def cheat(self, x, logits):
        out = logits + self.memory
        self.memory = self.memory + 0.01 * torch.bincount(x.reshape(-1), minlength=V).float() / x.numel()
        return out


def test_a_declared_weight_cache_that_holds_inputs_is_caught():
    assert_caught(checks_of(DeclaredCacheAbuse(15), ("statelessness",))["statelessness"], "attribute memory")


# ---------- normalization games: the evaluator normalizes, so they are pointless ----------

class InflatedDistribution(Planted):
    """Returns 'log-probabilities' of a mixture that sums to ~277 over the vocabulary (PR #886's number)."""

    def cheat(self, x, logits):
        return torch.log_softmax(logits.float(), -1) + torch.log(torch.tensor(277.0))


def test_an_unnormalized_distribution_gains_nothing():
    model, honest = InflatedDistribution(16), Planted(16)
    assert evaluate_sliding(model, VAL, L, S, B, LUTS).val_loss == pytest.approx(evaluate_sliding(honest, VAL, L, S, B, LUTS).val_loss,
                                                                                  rel=1e-6)
    assert checks_of(model, ("normalization",))["normalization"].passed  # the evaluator's distribution sums to 1 anyway


class ShortVocabulary(Planted):
    """Drops the last token's logit: a 'distribution' over part of the alphabet."""

    def cheat(self, x, logits):
        return logits[..., :-1]


def test_a_distribution_over_part_of_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="must cover the whole vocabulary"):
        evaluate_sliding(ShortVocabulary(17), VAL, L, S, B, LUTS)


# ---------- test-time training that peeks ----------

TTT = TTTConfig(chunk_tokens=16, epochs=1, seq_len=L, stride=S, batch_seqs=B, budget_s=0.0, lr=0.05)
N = V - 2
CHUNKS = ttt_chunks(N, TTT.chunk_tokens)


def ttt_check(run, model=None):
    return audit.check_ttt_order(run, model or tiny_model(20), N, V, CHUNKS, L, S, B)


def _score(model, tokens, lo, hi, acc):
    with torch.no_grad():
        score_windows(Scorer(model, V), tokens, sliding_plan(lo, hi, L, S), L, B, LUTS, acc)


def peek_next_chunk_hidden(model, tokens, acc):
    """Score-first TTT that also runs hidden() on the NEXT chunk (no grad) and trains towards it."""
    n = tokens.numel() - 1
    with Adaptation(model, model, TTT, "cpu") as adapt:
        for lo, hi in ttt_chunks(n, TTT.chunk_tokens):
            with torch.no_grad():
                ahead = model.hidden(tokens[hi : min(hi + TTT.chunk_tokens, n) + 1][None]) if hi < n else None
            _score(model, tokens, lo, hi, acc)
            if ahead is not None:
                adapt.step_on(tokens[lo : hi + 1], TTT.learning_rate)
                with torch.enable_grad():
                    loss = (model.hidden(tokens[lo : hi + 1][None]).mean() - ahead.mean()) ** 2
                loss.backward()
                adapt.optimizer.step()
                adapt.optimizer.zero_grad()


def pseudo_label_before_scoring(model, tokens, acc):
    """Self-training on the chunk about to be scored: no target is read, only its inputs and the model's argmax."""
    n = tokens.numel() - 1
    with Adaptation(model, model, TTT, "cpu") as adapt:
        for lo, hi in ttt_chunks(n, TTT.chunk_tokens):
            x = tokens[lo:hi][None]
            with torch.no_grad():
                guess = model.forward_logits(x).argmax(-1)
            with torch.enable_grad():
                model(x, guess).backward()
            adapt.optimizer.step()
            adapt.optimizer.zero_grad()
            _score(model, tokens, lo, hi, acc)


def one_chunk_ahead(model, tokens, acc):
    """Scores chunk k, then adapts on chunks k AND k + 1 (the next one is not scored yet)."""
    n = tokens.numel() - 1
    with Adaptation(model, model, TTT, "cpu") as adapt:
        for lo, hi in ttt_chunks(n, TTT.chunk_tokens):
            _score(model, tokens, lo, hi, acc)
            adapt.step_on(tokens[lo : min(hi + TTT.chunk_tokens, n) + 1], TTT.learning_rate)


def scoring_from_a_stale_copy(model, tokens, acc):
    """Scores with an adapted copy that also trained on the chunk it scores (the model it was given stays clean)."""
    import copy

    n = tokens.numel() - 1
    shadow = copy.deepcopy(model.inner).eval()
    for m in shadow.modules():  # a side door: the copy's forwards are not the given model's
        m._forward_pre_hooks.clear()
        m._forward_hooks.clear()
    opt = torch.optim.SGD(shadow.parameters(), lr=0.05)
    for lo, hi in ttt_chunks(n, TTT.chunk_tokens):
        x, y = tokens[lo:hi][None], tokens[lo + 1 : hi + 1][None]
        shadow(x, y).backward()
        opt.step()
        opt.zero_grad()
        model.inner.load_state_dict(shadow.state_dict())
        _score(model, tokens, lo, hi, acc)


@pytest.mark.parametrize("procedure,message", [
    (peek_next_chunk_hidden, "not scored yet"),
    (pseudo_label_before_scoring, "adapts before scoring"),
    (one_chunk_ahead, "adapts before scoring"),
    (scoring_from_a_stale_copy, "depends on later tokens"),
], ids=lambda p: getattr(p, "__name__", ""))
def test_ttt_that_adapts_before_scoring_is_caught(procedure, message):
    check = ttt_check(procedure)
    assert_caught(check, message)


class HiddenMemory(Planted):
    """A model whose hidden() keeps a running memory of every input it sees (no grad), which its logits use:
    TTT's no-grad scoring passes fill it with tokens before they are scored."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.register_buffer("seen", torch.zeros(V))

    def hidden(self, x):
        with torch.no_grad():
            self.seen.add_(torch.bincount(x.reshape(-1), minlength=V).float())
        return self.inner.hidden(x)

    def forward_logits(self, x):
        h = self.hidden(x)
        logits = F.linear(h, self.inner.tok_emb.weight)
        return self.inner.logit_softcap * torch.tanh(logits / self.inner.logit_softcap) + 0.01 * torch.log1p(self.seen)


def test_state_kept_through_hidden_passes_is_caught_in_ttt_and_in_scoring():
    check = ttt_check(lambda m, t, a: score_first_ttt(m, m, t, TTT, LUTS, acc=a), HiddenMemory(21))
    assert_caught(check, "not scored yet", "buffer seen")
    assert_caught(checks_of(HiddenMemory(21), ("statelessness",))["statelessness"], "buffer seen")


def test_the_honest_procedure_passes_the_same_checks():
    check = ttt_check(lambda m, t, a: score_first_ttt(m, m, t, TTT, LUTS, acc=a), Planted(22))
    assert check.passed, check.detail
    with pytest.raises(Exception, match="refusing to adapt"):
        ScoredPrefix(torch.arange(10)).training_tokens(0, 5)


# ---------- the trainer's own scoring passes ----------

_MODE_SPY = """
import json, sys
sys.path.insert(0, sys.argv[1])
import train_gpt
from eval.logprob import training_modules

seen = []


def spy(name, fn):
    def call(model, *args, **kwargs):
        seen.append([name, training_modules(model)[:3]])
        return fn(model, *args, **kwargs)
    return call


for name in ("evaluate", "evaluate_sliding", "score_first_ttt"):
    setattr(train_gpt, name, spy(name, getattr(train_gpt, name)))
sys.argv = ["train_gpt.py"]
try:
    train_gpt.main()
finally:
    print("SCORING_MODES:" + json.dumps(seen))
"""


def test_the_trainer_scores_every_pass_in_eval_mode(tmp_path):
    """Bug: validate() ended with base_model.train(), so the sliding and TTT passes after it scored in train mode."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_train import TINY
    from tests.tiny_data import build_tiny_dataset

    root = Path(__file__).resolve().parents[1]
    data, tok = build_tiny_dataset(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    env.update(TINY, DATA_PATH=str(data), TOKENIZER_PATH=str(tok), RUN_ID="modes", OMP_NUM_THREADS="1", ITERATIONS="2",
               VAL_LOSS_EVERY="1", EVAL_STRIDE="8", TTT_ENABLED="1", TTT_CHUNK_TOKENS="2000", TTT_EPOCHS="1")
    proc = subprocess.run([sys.executable, "-c", _MODE_SPY, str(root)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    seen = json.loads(proc.stdout.rsplit("SCORING_MODES:", 1)[1])
    assert [n for n, _ in seen].count("evaluate_sliding") == 1 and [n for n, _ in seen].count("score_first_ttt") == 1
    assert [n for n, _ in seen].count("evaluate") >= 3  # validation during training, at the end, and the roundtrip
    assert all(modules == [] for _, modules in seen), seen
