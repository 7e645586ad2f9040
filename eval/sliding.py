"""Sliding-window evaluation that scores every validation target exactly once.

Targets are indexed like eval/plain.py: target j is val_tokens[j + 1], predicted from val_tokens[: j + 1];
val_tokens[0] is context only. A window (start ws, scored range [lo, hi)) feeds val_tokens[ws : hi] and
scores targets lo..hi-1. The plan is the exact "v2" rule of HARNESS.md B1 (e), extended to any range:

    lo == 0:  the first window scores all of its L targets;
    later:    each window scores the next S not-yet-scored targets with the L - S tokens before them as
              context, so every target j sees at least min(j + 1, L - S + 1) tokens;
    the tail: the last window stops at the end of the stream, so it scores the last <= S targets.

Nothing is scored twice, nothing is skipped, and with S = L the windows are exactly eval/plain.py's.
Context follows the training rule: the stream is flat, so a window may cross document boundaries (BOS) just
as training sequences do; a target right after a BOS still sees the previous document.

Speed: every forward has the same shape (batch_seqs, L): the one short window (the tail) is right-padded and
the last batch is padded with empty windows, so a compiled forward is traced once. Padding sits after every
scored position and is never scored, so a causal model (eval.audit checks it) gives identical scores.
Scores come from the model's logits through eval/logprob.py (eval mode; the model never sees a target).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from eval.bpb import BpbAccumulator, ByteLuts
from eval.logprob import Scorer
from eval.plain import EvalResult


@dataclass
class WindowPlan:
    """Windows as int64 tensors: window i feeds val_tokens[start[i] : hi[i]] and scores targets lo[i]..hi[i]-1."""

    start: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def __len__(self) -> int:
        return self.start.numel()

    def shard(self, rank: int, world_size: int) -> "WindowPlan":
        """A contiguous, balanced share for one rank (every full window costs the same)."""
        n = len(self)
        a, b = n * rank // world_size, n * (rank + 1) // world_size
        return WindowPlan(self.start[a:b], self.lo[a:b], self.hi[a:b])

    def scored_counts(self, num_targets: int) -> torch.Tensor:
        """How many times each target 0..num_targets-1 is scored (the audit wants all ones)."""
        delta = torch.zeros(num_targets + 1, dtype=torch.long)
        delta.index_add_(0, self.lo, torch.ones_like(self.lo))
        delta.index_add_(0, self.hi, -torch.ones_like(self.hi))
        return delta.cumsum(0)[:-1]


def check_window_args(seq_len: int, stride: int) -> None:
    if seq_len <= 0:
        raise ValueError(f"EVAL_SEQ_LEN={seq_len} must be positive")
    if not 1 <= stride <= seq_len:
        raise ValueError(f"EVAL_STRIDE={stride} must be in 1..EVAL_SEQ_LEN={seq_len} (EVAL_STRIDE=EVAL_SEQ_LEN is the plain eval)")


def sliding_plan(lo: int, hi: int, seq_len: int, stride: int) -> WindowPlan:
    """Windows of at most seq_len tokens that score targets lo..hi-1 exactly once, in order."""
    check_window_args(seq_len, stride)
    if not 0 <= lo <= hi:
        raise ValueError(f"bad target range [{lo}, {hi})")
    head: list[tuple[int, int, int]] = []
    p = lo
    if p < hi and p + stride <= seq_len:
        # Near the start there is less than L - S context anyway: one window from token 0 scores up to L.
        head.append((0, p, min(seq_len, hi)))
        p = min(seq_len, hi)
    # Every later window scores the next S targets and ends there, keeping L - S tokens of context before them.
    lo_t = torch.arange(p, hi, stride, dtype=torch.long)
    hi_t = torch.clamp(lo_t + stride, max=hi)
    start_t = lo_t + stride - seq_len
    if head:
        h = torch.tensor(head, dtype=torch.long)
        start_t, lo_t, hi_t = torch.cat((h[:, 0], start_t)), torch.cat((h[:, 1], lo_t)), torch.cat((h[:, 2], hi_t))
    return WindowPlan(start_t, lo_t, hi_t)


def window_batches(val_tokens: torch.Tensor, plan: WindowPlan, seq_len: int, batch_seqs: int):
    """Yields (x, y, score_mask), each (batch_seqs, seq_len) on val_tokens' device. The short tail window is
    right-padded and the last batch is filled with empty windows; padding is token 0 and never scored."""
    device = val_tokens.device
    last = val_tokens.numel() - 1
    pos = torch.arange(seq_len, device=device)
    for i in range(0, len(plan), batch_seqs):
        start, lo, hi = (t[i : i + batch_seqs].to(device) for t in (plan.start, plan.lo, plan.hi))
        if start.numel() < batch_seqs:
            pad = torch.zeros(batch_seqs - start.numel(), dtype=torch.long, device=device)
            start, lo, hi = torch.cat((start, pad)), torch.cat((lo, pad)), torch.cat((hi, pad))
        idx = start[:, None] + pos
        real = idx < hi[:, None]
        x = torch.where(real, val_tokens[idx.clamp(max=last)], 0)
        y = torch.where(real, val_tokens[(idx + 1).clamp(max=last)], 0)
        yield x, y, real & (idx >= lo[:, None])


def score_windows(scorer: Scorer, val_tokens: torch.Tensor, plan: WindowPlan, seq_len: int, batch_seqs: int,
                  luts: ByteLuts, acc: BpbAccumulator, autocast=contextlib.nullcontext) -> None:
    """Adds the scored targets of `plan` to `acc` (no all-reduce). val_tokens sits on the compute device;
    callers hold inference mode."""
    for x, y, mask in window_batches(val_tokens, plan, seq_len, batch_seqs):
        with autocast():
            nll = scorer(x, y)
        acc.add(nll.float()[mask], x[mask], y[mask], luts)


def budget_note(seconds: float, budget_s: float) -> str:
    """How an eval time compares with the eval budget (EVAL_BUDGET_SECONDS), for the log line."""
    if budget_s <= 0:
        return "budget:none"
    return f"budget:{budget_s:.0f}s" + (" OVER_BUDGET" if seconds > budget_s else "")


@torch.inference_mode()
def warm_up_forward(model, vocab_size: int, seq_len: int, batch_seqs: int, device, autocast=contextlib.nullcontext,
                    seed: int = 0, logits_fn=None) -> None:
    """Traces/compiles the eval shape on random tokens, so no validation token is seen before it is scored
    and compile time stays out of the measured eval time."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab_size, (batch_seqs, seq_len + 1), generator=g).to(device)
    with autocast():
        Scorer(model, vocab_size, logits_fn)(x[:, :-1], x[:, 1:])


@torch.inference_mode()
def evaluate_sliding(
    model, val_tokens: torch.Tensor, seq_len: int, stride: int, batch_seqs: int, luts: ByteLuts,
    rank: int = 0, world_size: int = 1, device="cpu", autocast=contextlib.nullcontext, acc: BpbAccumulator | None = None,
    logits_fn=None,
) -> EvalResult:
    """Scores `model` (in eval mode) from forward_logits, or from `logits_fn` (e.g. its compiled version).
    val_tokens: 1-D int64 stream (first token is context only). Sums are float64 and all-reduced across ranks.
    `acc` lets eval.audit record what is scored."""
    num_targets = val_tokens.numel() - 1
    if num_targets <= 0:
        raise ValueError("the validation split is empty: it needs at least two tokens")
    if batch_seqs <= 0:
        raise ValueError(f"EVAL_BATCH_SEQS={batch_seqs} must be positive")
    scorer = Scorer(model, luts.base_bytes.numel(), logits_fn)
    acc = acc if acc is not None else BpbAccumulator(device)
    plan = sliding_plan(0, num_targets, seq_len, stride).shard(rank, world_size)
    score_windows(scorer, val_tokens.to(device), plan, seq_len, batch_seqs, luts, acc, autocast)
    acc.all_reduce()
    loss, bpb = acc.result()
    return EvalResult(loss, bpb, acc.targets, num_targets, acc.unk_targets)
