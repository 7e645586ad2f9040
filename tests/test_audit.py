"""The legality audit: every check passes the honest models (every MLP_KIND, mixed layers, score-first TTT in
both modes) and catches a planted violation of its own kind: a mixer that reads the future, one that reads the
other rows of its batch, a counter, a model whose eval() misses a submodule, an evaluator that does not normalize,
a model whose own loss peeks at the target, pre-eval fine-tuning, adapt-then-score TTT, rescoring, and the
sliding-window coverage bugs of HARNESS.md B1 (a)-(c). tests/test_hostile.py holds the harder constructions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eval import audit
from eval.audit import audit_model, check_executed_coverage, check_plan_coverage, check_ttt_order, sliding_ranges
from eval.bpb import unit_byte_luts
from eval.logprob import Scorer
from eval.sliding import evaluate_sliding, score_windows, sliding_plan
from eval.ttt import Adaptation, TTTConfig, score_first_ttt
from tests.eval_models import TINY_KNOBS, V, Planted, peek, text_like, tiny_model

ROOT = Path(__file__).resolve().parents[1]
LUTS = unit_byte_luts(V)
L, S, B = 16, 4, 4
VAL = text_like(600)
TTT = TTTConfig(chunk_tokens=16, epochs=1, seq_len=L, stride=S, batch_seqs=B, budget_s=0.0, lr=0.01)
MODEL_CHECKS = ("mode", "causality", "batch invariance", "statelessness", "normalization")


def run_audit(model, only=None, **kw) -> dict:
    kw = dict(dict(seq_len=L, stride=S, batch_seqs=B, val_tokens=VAL), **kw)
    return {c.name: c for c in audit_model(model, V, only=only, **kw)}


def test_real_model_passes_every_check():
    checks = audit_model(tiny_model(), V, L, S, B, val_tokens=VAL)
    assert [c.name for c in checks] == ["mode", "causality", "batch invariance", "statelessness", "normalization", "coverage",
                                        "ttt score-first"]
    table = audit.format_table(checks)
    assert all(c.passed for c in checks), table
    assert table.count("PASS") == 7 and "FAIL" not in table
    assert "every position of 4 windows" in checks[1].detail  # 3 val windows (first, middle, tail) + random tokens


@pytest.mark.parametrize("knobs", [dict(MLP_KIND=k) for k in ("relu2", "swiglu", "glu", "hwnode", "wave", "s5", "hyena_s5")]
                         + [dict(MLP_KIND="hwnode", MLP_KIND_LAYERS="1"), dict(MLP_KIND="s5", MLP_KIND_LAYERS="0")],
                         ids=lambda k: "-".join(k.values()))
def test_every_honest_mixer_passes(knobs):
    checks = run_audit(tiny_model(1, **knobs), only=MODEL_CHECKS + ("ttt score-first",))
    assert all(c.passed for c in checks.values()), audit.format_table(list(checks.values()))


@pytest.mark.parametrize("mode,lr", [("full", 0.05), ("lora", 0.05)])
def test_honest_ttt_passes_in_both_modes(mode, lr):
    check = run_audit(tiny_model(2), only=("ttt score-first",), ttt=TTTConfig(mode=mode, lr=lr, epochs=2))["ttt score-first"]
    assert check.passed and f"mode {mode}" in check.detail, check.detail


# ---------- mode ----------

class TrainModeDropout(Planted):
    """eval() is overridden so a dropout submodule stays in train mode: scored with a stochastic path on."""

    def __init__(self):
        super().__init__(3)
        self.drop = nn.Dropout(0.1)

    def train(self, mode: bool = True):
        super().train(mode)
        if "drop" in self._modules:
            self.drop.train(True)
        return self

    def cheat(self, x, logits):
        return self.drop(logits)


def test_eval_that_misses_a_submodule_fails_mode():
    check = run_audit(TrainModeDropout(), only=("mode",))["mode"]
    assert not check.passed and "'drop'" in check.detail and "still report train() mode" in check.detail


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
    check = run_audit(model, only=("causality",))["causality"]
    assert not check.passed and check.detail.startswith("reads the future: ") and "window" in check.detail and "position" in check.detail


def test_model_that_ignores_its_input_is_not_a_pass():
    model = tiny_model(2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    check = run_audit(model, only=("causality",))["causality"]
    assert not check.passed and "says nothing" in check.detail


# ---------- batch composition ----------

class BatchMeanMixer(Planted):
    """Adds the batch's mean logits: each window reads the windows scored beside it."""

    def cheat(self, x, logits):
        return logits + logits.mean(0, keepdim=True)


def test_reading_other_rows_fails_batch_invariance():
    check = run_audit(BatchMeanMixer(4), only=("batch invariance",))["batch invariance"]
    assert not check.passed and "depends on the other rows of its batch" in check.detail and "alone (batch of 1)" in check.detail


# ---------- statelessness ----------

class CallCounter(Planted):
    """Shifts its logits a little more on every call: the score depends on what was scored before."""

    def __init__(self):
        super().__init__(5)
        self.calls = 0

    def cheat(self, x, logits):
        self.calls += 1
        return logits + F.one_hot(torch.tensor(0), logits.size(-1)) * 1e-3 * self.calls


def test_a_counter_fails_statelessness():
    check = run_audit(CallCounter(), only=("statelessness",))["statelessness"]
    assert not check.passed and "attribute calls" in check.detail and "filled by inference passes" in check.detail


# ---------- C2: normalization (the evaluator normalizes; the check still verifies it) ----------

class NaNAtOnePosition(Planted):
    def cheat(self, x, logits):
        out = logits.clone()
        out[:, 3, 5] = float("nan")
        return out


def test_nan_logits_fail_normalization():
    check = run_audit(NaNAtOnePosition(6), only=("normalization",))["normalization"]
    assert not check.passed and "NaN or +inf" in check.detail


def test_an_evaluator_that_scores_the_gold_token_only_fails_normalization(monkeypatch):
    """If eval/logprob.py ever stopped normalizing (e.g. returned -logit[target]), the audit would say so."""
    monkeypatch.setattr(audit, "target_nll", lambda logits, y: -logits.gather(-1, y[..., None]).squeeze(-1).float())
    check = run_audit(tiny_model(6), only=("normalization",))["normalization"]
    assert not check.passed and "is not -log softmax over the 64 tokens" in check.detail


def test_normalization_sums_are_exact_for_the_model():
    check = run_audit(tiny_model(8), only=("normalization",), positions=3)["normalization"]
    assert check.passed and "3 candidate sums per batch" in check.detail


# ---------- a model's own loss: the evaluator ignores it; --own-loss exposes it ----------

class TargetKeyedOwnLoss(Planted):
    """The PR #779 family moved into the model's own forward(x, y): the gold token's probability mixed with a
    hashed (previous, target) cache. Its 'loss' is far better than its distribution."""

    def forward(self, x, y, reduction: str = "mean"):
        nll = super().forward(x, y, reduction="none")
        p = torch.exp(-nll)
        mixed = -torch.log(0.5 * p + 0.5 * ((x * V + y) % 7 == 0).float().clamp_min(0.4))
        return mixed if reduction == "none" else mixed.mean()


def test_a_models_own_loss_is_ignored_by_the_evaluator_and_caught_by_own_loss():
    model = TargetKeyedOwnLoss(7)
    honest = Planted(7)
    score = evaluate_sliding(model, VAL, L, S, B, LUTS)
    assert score.val_loss == pytest.approx(evaluate_sliding(honest, VAL, L, S, B, LUTS).val_loss, rel=1e-9)
    with torch.no_grad():
        own = model(VAL[:-1][None], VAL[1:][None], reduction="none").mean()
    assert float(own) < score.val_loss - 0.1  # the cheat would have paid, had the evaluator asked the model
    with pytest.raises(TypeError, match="forward_logits"):
        evaluate_sliding(lambda x, y: model(x, y, reduction="none"), VAL, L, S, B, LUTS)  # a token_nll callable is refused
    check = run_audit(model, only=("own loss",))["own loss"]
    assert not check.passed and "loss is not its distribution's" in check.detail
    assert run_audit(honest, only=("own loss",))["own loss"].passed


# ---------- C3: adapting on tokens before scoring them ----------

def pre_eval_finetune(model, tokens, acc, steps: int = 3):
    """The ruled-out 'pre-quant TTT': fine-tune on all of validation, then score it."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = tokens[:-1][None], tokens[1:][None]
    for _ in range(steps):
        model(x, y).backward()
        opt.step()
        opt.zero_grad()
    evaluate_sliding(model, tokens, L, S, B, LUTS, acc=acc)


def adapt_then_score(model, tokens, acc):
    """Chunk TTT with the two steps swapped: each chunk is trained on, then scored."""
    n = tokens.numel() - 1
    with Adaptation(model, model, TTT, "cpu") as adapt:
        for lo in range(0, n, TTT.chunk_tokens):
            hi = min(lo + TTT.chunk_tokens, n)
            adapt.step_on(tokens[lo : hi + 1], TTT.learning_rate)
            with torch.no_grad():
                score_windows(Scorer(model, V), tokens, sliding_plan(lo, hi, L, S), L, B, LUTS, acc)


@pytest.mark.parametrize("illegal", [pre_eval_finetune, adapt_then_score])
def test_adapting_before_scoring_fails_ttt_order(illegal):
    check = check_ttt_order(illegal, tiny_model(5), V - 2, V)
    assert not check.passed and "adapts before scoring" in check.detail


def test_score_first_ttt_passes_ttt_order():
    chunks = [(lo, min(lo + 16, V - 2)) for lo in range(0, V - 2, 16)]
    check = check_ttt_order(lambda m, t, a: score_first_ttt(m, m, t, TTT, LUTS, acc=a), tiny_model(5), V - 2, V, chunks, L, S, B)
    assert check.passed and "saved state reproduces" in check.detail, check.detail


def test_rescoring_after_adaptation_fails_executed_coverage():
    """'Report the last epoch': score, adapt, score everything again."""
    model = tiny_model(6)

    def score_twice(tokens, acc):
        score_first_ttt(model, model, tokens, TTT, LUTS, acc=acc)
        evaluate_sliding(model, tokens[-20:], L, S, B, LUTS, acc=acc)

    ok, detail = check_executed_coverage({"rescoring ttt": score_twice}, V - 1)
    assert not ok and "19 targets scored more than once" in detail
    ok, detail = check_executed_coverage({"sliding": lambda t, a: evaluate_sliding(model, t, L, S, B, LUTS, acc=a)}, V - 1)
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


KNOB_ARGS = [f"{k}={v}" for k, v in TINY_KNOBS.items()] + [f"VOCAB_SIZE={V}", f"EVAL_SEQ_LEN={L}", f"EVAL_STRIDE={S}", f"EVAL_BATCH_SEQS={B}"]


def test_cli_on_artifacts(tmp_path, capsys, clean_env):
    from data.export import write_shard
    from quant.int8 import pack_int8_zlib

    model = tiny_model(7)
    torch.save(model.state_dict(), tmp_path / "final_model.pt")
    (tmp_path / "final_model.int8.ptz").write_bytes(pack_int8_zlib(model.state_dict()))
    write_shard(tmp_path / "fineweb_val_000000.bin", VAL.numpy())
    rc = audit.main(["--artifact", str(tmp_path / "final_model.pt"), "--artifact", str(tmp_path / "final_model.int8.ptz"),
                     "--val-data", str(tmp_path), "--json", str(tmp_path / "audit.json"), *KNOB_ARGS])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("PASS") == 14 and "ttt score-first" in out and f"L={L} S={S} B={B} fp32" in out and "599 targets" in out
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert len(saved["artifacts"]) == 2 and all(c["passed"] for a in saved["artifacts"].values() for c in a["checks"])
    assert saved["argv"][:2] == ["--artifact", str(tmp_path / "final_model.pt")]
    rc = audit.main(["--artifact", str(tmp_path / "final_model.pt"), "--val-data", "none", *KNOB_ARGS, "NUM_LAYERS=3"])
    assert rc == 2 and "NUM_LAYERS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        audit.main(["--seq-len", str(L)])  # neither an artifact nor --random-init


def test_cli_fails_a_planted_leak(tmp_path, capsys, clean_env):
    model = tiny_model(7)
    torch.save(model.state_dict(), tmp_path / "final_model.pt")
    import train_gpt

    original = train_gpt.build_model

    def leaky(args, **overrides):  # a checkout whose model peeks at the next input token, i.e. the target
        m = original(args, **overrides)
        honest = m.forward_logits
        m.forward_logits = lambda x: peek(honest(x), x, torch.ones_like(x, dtype=torch.bool), 20.0)
        return m

    try:
        train_gpt.build_model = leaky
        rc = audit.main(["--artifact", str(tmp_path / "final_model.pt"), "--val-data", "none", *KNOB_ARGS])
    finally:
        train_gpt.build_model = original
    out = capsys.readouterr().out
    assert rc == 1 and "causality         FAIL    reads the future: random window" in out


def one_error_line(capsys, argv) -> str:
    rc = audit.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "holds a JSON list, not an object of knobs"),
])
def test_cli_bad_config_is_one_line(tmp_path, capsys, content, message):
    cfg = tmp_path / "bad.json"
    if content is not None:
        cfg.write_text(content)
    err = one_error_line(capsys, ["--random-init", "--config", str(cfg), "--val-data", "none"])
    assert message in err and "bad.json" in err


@pytest.mark.parametrize("args,message", [(["--seq-len", "1"], "at least 2 tokens"), (["--stride", "-4"], "must be >= 0"),
                                          (["--stride", "40", "--seq-len", "16"], "--stride 40 must be in 1..16"),
                                          (["--val-data", "/no/such/folder"], "no fineweb_val_*.bin shards")])
def test_cli_bad_geometry_is_one_line(capsys, clean_env, args, message):
    assert message in one_error_line(capsys, ["--random-init", *args, *KNOB_ARGS])


def test_cli_bad_input_exits_without_traceback_as_a_process(tmp_path):
    (tmp_path / "bad.json").write_text("[]")
    for args in (["--config", str(tmp_path / "bad.json")], ["--seq-len", "1"]):
        proc = subprocess.run([sys.executable, "-m", "eval.audit", "--random-init", "--val-data", "none", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: "), proc.stderr


def test_evaluator_refuses_a_model_in_train_mode():
    from eval.logprob import ScoringModeError

    model = tiny_model(9).train()
    with pytest.raises(ScoringModeError, match="call model.eval"):
        evaluate_sliding(model, VAL, L, S, B, LUTS)


def test_the_example_record_passes_the_audit_in_process():
    """The committed example's artifact with this checkout's trainer (its own shipped code: test_hostile_records)."""
    folder = ROOT / "records" / "track_non_record_16mb" / "2026-11-26_cpu_default_3seeds"
    art = folder / "seed1337_final_model.int8.ptz"
    if not art.is_file():
        pytest.skip("the example record is not in this checkout")
    import train_gpt

    model = train_gpt.build_model(train_gpt.Hyperparameters(env={}, device_type="cpu"))
    model.load_state_dict(audit.load_weights(art))
    val = text_like(3000, 1024)  # quick: short windows; the slow CLI test below runs the real geometry and split
    checks = audit_model(model, 1024, 64, 16, 16, val_tokens=val, only=MODEL_CHECKS)
    assert all(c.passed for c in checks), audit.format_table(checks)


@pytest.mark.slow
def test_the_example_record_passes_the_cli_on_its_validation_split(clean_env):
    folder = ROOT / "records" / "track_non_record_16mb" / "2026-11-26_cpu_default_3seeds"
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_PATH", "VOCAB_SIZE")}
    proc = subprocess.run([sys.executable, "-m", "eval.audit", "--artifact", str(folder / "seed1337_final_model.int8.ptz")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env=dict(env, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASS") == 7 and "the offline sample dataset" in proc.stdout
