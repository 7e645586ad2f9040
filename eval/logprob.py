"""The one path every evaluation scores through: the evaluator owns the target.

A model gives `forward_logits(inputs)` -> (B, T, V) and nothing else; the evaluator normalizes over the whole
vocabulary itself (a float32-or-better log-softmax) and picks the target's log-probability itself. No model code
receives the targets it is scored on, so a target-keyed cache, a gold-only mixture or a model's own "loss" cannot
reach the score (HARNESS.md A9 C1/C2, D1). Scoring runs in eval mode: a model with any submodule in train()
mode is refused, because train-mode statistics (BatchNorm, dropout) read the batch, i.e. the future.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# Rows of (rows, V) float32 log-softmax per step: bounds the evaluator's extra memory to ~256 MiB at any vocab.
NLL_CHUNK_ELEMENTS = 1 << 26


class ScoringModeError(RuntimeError):
    """A scoring forward was asked of a model in train() mode."""


def training_modules(model) -> list[str]:
    """Names of the submodules in train() mode ('' is the model itself)."""
    return [name for name, m in model.named_modules() if getattr(m, "training", False)]


def require_eval_mode(model) -> None:
    names = training_modules(model)
    if names:
        shown = ", ".join(repr(n) if n else "the model" for n in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        raise ScoringModeError(f"scoring needs eval mode but {shown} is in train() mode (train-mode statistics read the "
                               "batch, i.e. the future): call model.eval() before scoring")


@contextlib.contextmanager
def module_mode(model, training: bool):
    """model.train(training) for the block, then every submodule's own mode back."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


def eval_mode(model):
    """model.eval() for the block (a validation pass during training), then the modes as they were."""
    return module_mode(model, False)


def target_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[target] over the whole last axis, in float32 or better, chunked over rows so a
    large vocabulary never needs a second full-size float copy. logits (..., V), targets (...) -> (...)."""
    v = logits.size(-1)
    flat, tgt = logits.reshape(-1, v), targets.reshape(-1)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    rows = max(NLL_CHUNK_ELEMENTS // v, 1)
    out = torch.empty(tgt.shape, dtype=dtype, device=logits.device)
    for i in range(0, tgt.numel(), rows):
        out[i : i + rows] = F.cross_entropy(flat[i : i + rows].to(dtype), tgt[i : i + rows], reduction="none")
    return out.view(targets.shape)


class Scorer:
    """Per-target nll of `model` from its logits alone. `logits_fn` (default model.forward_logits) may be a
    compiled version of it; `model` is what the eval-mode check inspects. `vocab_size` is the alphabet the
    distribution must cover (the byte tables' size)."""

    def __init__(self, model, vocab_size: int, logits_fn=None):
        if logits_fn is None and not callable(getattr(model, "forward_logits", None)):
            raise TypeError(f"scoring takes a model with forward_logits(inputs) -> (B, T, V), got {type(model).__name__}: "
                            "the evaluator normalizes and picks the target itself, it never calls a model's loss")
        self.model, self.vocab_size = model, vocab_size
        self.logits_fn = logits_fn or model.forward_logits

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        require_eval_mode(self.model)
        logits = self.logits_fn(x)
        if logits.ndim != 3 or tuple(logits.shape[:2]) != tuple(x.shape):
            raise ValueError(f"forward_logits gave shape {tuple(logits.shape)} for inputs {tuple(x.shape)}; expected (B, T, V)")
        if logits.size(-1) != self.vocab_size:
            raise ValueError(f"forward_logits gives {logits.size(-1)} logits per position but the tokenizer has {self.vocab_size} "
                             "pieces: the distribution must cover the whole vocabulary (set VOCAB_SIZE to the tokenizer's)")
        return logits

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, T) nll in nats of targets y given inputs x; only x reaches the model."""
        return target_nll(self.logits(x), y)
