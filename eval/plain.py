"""Plain (non-overlapping window) validation that scores every target exactly once.

The public baseline truncates the stream to a multiple of the sequence length and never scores up to
L-1 tail targets; here the tail is scored as one shorter window, and the number of scored targets is
returned so the caller can log `val_targets_scored:N/N`. Scores come from the model's logits through
eval/logprob.py: the model never sees a target.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from eval.bpb import BpbAccumulator, ByteLuts
from eval.logprob import Scorer


@dataclass
class EvalResult:
    val_loss: float
    val_bpb: float
    targets_scored: int
    targets_total: int
    unk_targets: int

    @property
    def coverage_line(self) -> str:
        return f"val_targets_scored:{self.targets_scored}/{self.targets_total}"


def window_plan(num_targets: int, seq_len: int, rank: int, world_size: int) -> list[tuple[int, int]]:
    """(start, length) of this rank's windows: full windows split contiguously, the tail on the last rank.
    Window (s, n) feeds tokens[s : s+n] and scores targets tokens[s+1 : s+n+1]."""
    full = num_targets // seq_len
    lo, hi = full * rank // world_size, full * (rank + 1) // world_size
    plan = [(i * seq_len, seq_len) for i in range(lo, hi)]
    tail = num_targets - full * seq_len
    if tail and rank == world_size - 1:
        plan.append((full * seq_len, tail))
    return plan


@torch.inference_mode()
def evaluate(
    model, val_tokens: torch.Tensor, seq_len: int, batch_seqs: int, luts: ByteLuts,
    rank: int = 0, world_size: int = 1, device="cpu", autocast=contextlib.nullcontext, logits_fn=None,
) -> EvalResult:
    """Scores `model` (in eval mode) from forward_logits, or from `logits_fn` (e.g. its compiled version).
    val_tokens: 1-D int64 stream whose first token is context only."""
    num_targets = val_tokens.numel() - 1
    if num_targets <= 0:
        raise ValueError("the validation split is empty: it needs at least two tokens")
    scorer = Scorer(model, luts.base_bytes.numel(), logits_fn)
    acc = BpbAccumulator(device)
    plan = window_plan(num_targets, seq_len, rank, world_size)
    full = [s for s, n in plan if n == seq_len]
    batches = [full[i : i + batch_seqs] for i in range(0, len(full), batch_seqs)]
    batches += [[(s, n)] for s, n in plan if n != seq_len]
    for batch in batches:
        if isinstance(batch[0], tuple):
            (s, n), = batch
            chunk = val_tokens[s : s + n + 1].to(device)[None]
        else:
            chunk = torch.stack([val_tokens[s : s + seq_len + 1] for s in batch]).to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        with autocast():
            nll = scorer(x, y)
        acc.add(nll.float(), x, y, luts)
    acc.all_reduce()
    loss, bpb = acc.result()
    return EvalResult(loss, bpb, acc.targets, num_targets, acc.unk_targets)
