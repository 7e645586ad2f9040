"""Legal score-first test-time training (HARNESS.md B1 "legal score-first chunk TTT"; A9 conditions C3, C4).

The validation targets are cut into chunks of `chunk_tokens`. For each chunk, in stream order:
  1. score it with sliding windows (eval/sliding.py) and the current weights, into the float64 bpb sums;
  2. then adapt on that chunk's tokens, which are now scored, for `epochs` passes.
The last chunk is only scored. Every target is scored exactly once, and the weights that score a target were
trained only on tokens before it.

How the order is enforced: adaptation receives tokens only from `ScoredPrefix.training_tokens`, which refuses
any target range not scored yet, and the prefix grows only when a chunk is scored, in order. eval.audit checks
the same property from outside by watching every forward pass. Compile warm-up is `warm_up_ttt`, which runs
on random tokens and is never given validation tokens.

Scoring goes through eval/logprob.py (the model's logits, eval mode, the target picked by the evaluator);
adaptation runs the model's training forward(x, y) in train() mode, and the model's modes are restored before
the next chunk is scored.

Modes: "full" trains every parameter with SGD + momentum (the recipe of PR #549: lr 0.002, momentum 0.9,
3 epochs, clip 1.0, cosine over chunks); "lora" freezes the model and trains rank-r adapters added to every
nn.Linear / nn.Embedding weight (torch parametrizations) with Adam. The model's weights are restored when the
pass returns.

Budget: the pass is timed; once adapting one more chunk would leave too little time to score the rest within
`budget_s`, adaptation stops and scoring goes on, so the score stays complete and exact.
Several ranks: each scores a share of a chunk's windows and trains on a share of its sequences; gradients are
summed with all_reduce, so every rank holds the same weights.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize

from eval.bpb import BpbAccumulator, ByteLuts, unit_byte_luts
from eval.logprob import Scorer, module_mode
from eval.plain import EvalResult
from eval.sliding import WindowPlan, check_window_args, score_windows, sliding_plan, window_batches

DEFAULT_LR = {"full": 0.002, "lora": 0.01}


@dataclass
class TTTConfig:
    mode: str = "full"  # full | lora
    chunk_tokens: int = 32_768
    epochs: int = 3
    lr: float = 0.0  # 0: DEFAULT_LR[mode]
    lora_rank: int = 8
    seq_len: int = 1024
    stride: int = 64
    batch_seqs: int = 32  # windows per scoring forward and sequences per training step, over all ranks
    budget_s: float = 600.0  # <= 0: no limit
    momentum: float = 0.9
    grad_clip: float = 1.0  # <= 0: off

    def __post_init__(self) -> None:
        if self.mode not in DEFAULT_LR:
            raise ValueError(f"TTT_MODE={self.mode!r} must be one of {sorted(DEFAULT_LR)}")
        if self.chunk_tokens <= 0:
            raise ValueError(f"TTT_CHUNK_TOKENS={self.chunk_tokens} must be positive")
        if self.epochs < 0:
            raise ValueError(f"TTT_EPOCHS={self.epochs} must be >= 0")
        if self.lr < 0:
            raise ValueError(f"TTT_LR={self.lr} must be >= 0 (0 picks the mode's default)")
        if self.mode == "lora" and self.lora_rank <= 0:
            raise ValueError(f"TTT_LORA_RANK={self.lora_rank} must be positive")
        if self.batch_seqs <= 0:
            raise ValueError(f"EVAL_BATCH_SEQS={self.batch_seqs} must be positive")
        check_window_args(self.seq_len, self.stride)

    @property
    def learning_rate(self) -> float:
        return self.lr or DEFAULT_LR[self.mode]


class ScoreOrderError(RuntimeError):
    """Raised when code tries to adapt on tokens that are not scored yet (a score-first violation)."""


class ScoredPrefix:
    """The targets scored so far, always a prefix [0, end) of the stream: the only source of training tokens."""

    def __init__(self, val_tokens: torch.Tensor):
        self._tokens = val_tokens
        self.end = 0

    def record_scored(self, lo: int, hi: int) -> None:
        if lo != self.end or hi < lo:
            raise ScoreOrderError(f"targets [{lo}, {hi}) scored out of order: the scored prefix ends at {self.end}")
        self.end = hi

    def training_tokens(self, lo: int, hi: int) -> torch.Tensor:
        """val_tokens[lo : hi + 1]: the inputs and targets of targets lo..hi-1, all of them already scored."""
        if not 0 <= lo <= hi <= self.end:
            raise ScoreOrderError(f"refusing to adapt on targets [{lo}, {hi}): only [0, {self.end}) are scored")
        return self._tokens[lo : hi + 1]


class LoraDelta(nn.Module):
    """Parametrization W -> W + B A with B = 0 at the start, so the model is unchanged until it trains."""

    def __init__(self, weight: torch.Tensor, rank: int, generator: torch.Generator):
        super().__init__()
        rows, cols = weight.shape
        a = torch.randn(rank, cols, generator=generator) / math.sqrt(cols)  # same seed on every rank
        self.lora_a = nn.Parameter(a.to(weight.device))
        self.lora_b = nn.Parameter(torch.zeros(rows, rank, device=weight.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.lora_b @ self.lora_a).to(weight.dtype)


class Adaptation:
    """Context manager: makes the trainable state (all weights, or LoRA adapters), steps it, and restores the
    model on exit (weights, requires_grad flags, parametrizations)."""

    def __init__(self, model: nn.Module, forward, cfg: TTTConfig, device, autocast=contextlib.nullcontext,
                 rank: int = 0, world_size: int = 1):
        self.model, self.forward, self.cfg, self.device, self.autocast = model, forward, cfg, device, autocast
        self.rank, self.world_size = rank, world_size
        self.rows_per_rank = -(-cfg.batch_seqs // world_size)

    def __enter__(self) -> "Adaptation":
        params = self._params = list(self.model.parameters())  # the same objects come back after LoRA removal
        self._requires_grad = [p.requires_grad for p in params]
        self._saved = [p.detach().clone() for p in params]
        self._lora_modules: list[nn.Module] = []
        if self.cfg.mode == "lora":
            for p in params:
                p.requires_grad_(False)
            g = torch.Generator().manual_seed(0)
            for m in self.model.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.ndim == 2:
                    parametrize.register_parametrization(m, "weight", LoraDelta(m.weight, self.cfg.lora_rank, g))
                    m.parametrizations.train(m.training)  # new modules start in train mode; scoring needs eval
                    self._lora_modules.append(m)
            self.trainable = [p for m in self._lora_modules for p in m.parametrizations.weight[0].parameters()]
            self.optimizer = torch.optim.Adam(self.trainable, lr=self.cfg.learning_rate, betas=(0.9, 0.95))
        else:
            self.trainable = [p for p in params if p.requires_grad]
            self.optimizer = torch.optim.SGD(self.trainable, lr=self.cfg.learning_rate, momentum=self.cfg.momentum)
        if not self.trainable:
            raise ValueError("test-time training found nothing to train in the model")
        return self

    def __exit__(self, *exc) -> None:
        for m in self._lora_modules:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        with torch.no_grad():
            for p, saved, flag in zip(self._params, self._saved, self._requires_grad, strict=True):
                p.copy_(saved)
                p.requires_grad_(flag)

    def step_on(self, tokens: torch.Tensor, lr: float) -> None:
        """`epochs` passes over the targets of a 1-D token run (tokens[1:]), in sequences of seq_len, each
        global batch of batch_seqs sequences split over the ranks."""
        cfg, n = self.cfg, tokens.numel() - 1
        starts = torch.arange(0, n, cfg.seq_len, dtype=torch.long)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with module_mode(self.model, True):  # adaptation is training; scoring (eval mode, asserted) resumes after
            for _ in range(cfg.epochs):
                for i in range(0, starts.numel(), cfg.batch_seqs):
                    batch = starts[i : i + cfg.batch_seqs]
                    total = int(torch.clamp(n - batch, max=cfg.seq_len).sum())  # targets in the global batch
                    mine = batch[self.rank * self.rows_per_rank : (self.rank + 1) * self.rows_per_rank]
                    ends = torch.clamp(mine + cfg.seq_len, max=n)
                    self._train_step(tokens, WindowPlan(mine, mine, ends), total)

    def _train_step(self, tokens: torch.Tensor, plan: WindowPlan, total_targets: int) -> None:
        # Every rank runs one forward/backward per step (an empty share has an all-False mask), so the
        # gradient all_reduce below always pairs up.
        x, y, mask = next(window_batches(tokens, plan, self.cfg.seq_len, self.rows_per_rank), (None, None, None))
        if x is None:
            x = torch.zeros(self.rows_per_rank, self.cfg.seq_len, dtype=torch.long, device=tokens.device)
            y, mask = x, torch.zeros_like(x, dtype=torch.bool)
        with torch.enable_grad(), self.autocast():
            nll = self.forward(x, y, reduction="none")
            loss = (nll.float() * mask).sum() / total_targets
        loss.backward()
        for p in self.trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if self.world_size > 1:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


@dataclass
class TTTResult:
    eval: EvalResult
    chunks: int
    adapted_chunks: int
    seconds: float
    stopped_by_budget: bool

    @property
    def summary(self) -> str:
        return (f"ttt_chunks:{self.chunks} adapted:{self.adapted_chunks} eval_time:{self.seconds:.1f}s"
                + (" adaptation_stopped:budget" if self.stopped_by_budget else ""))


def ttt_chunks(num_targets: int, chunk_tokens: int) -> list[tuple[int, int]]:
    """Target ranges [lo, hi) scored then adapted on, in order; the last one is only scored."""
    bounds = list(range(0, num_targets, chunk_tokens)) + [num_targets]
    return list(zip(bounds[:-1], bounds[1:]))


def warm_up_ttt(model: nn.Module, forward, cfg: TTTConfig, vocab_size: int, device, autocast=contextlib.nullcontext,
                rank: int = 0, world_size: int = 1, logits_fn=None) -> None:
    """Compiles the scoring and training shapes on random tokens (never validation tokens: it is not given
    any), then restores the model."""
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, vocab_size, (cfg.seq_len * cfg.batch_seqs + 1,), generator=g).to(device)
    plan = sliding_plan(0, tokens.numel() - 1, cfg.seq_len, cfg.seq_len).shard(rank, world_size)
    with Adaptation(model, forward, cfg, device, autocast, rank, world_size) as adapt:
        with torch.no_grad():
            score_windows(Scorer(model, vocab_size, logits_fn), tokens, plan, cfg.seq_len, cfg.batch_seqs,
                          unit_byte_luts(vocab_size, device), BpbAccumulator(device), autocast)
        adapt.step_on(tokens, cfg.learning_rate)


def score_first_ttt(
    model: nn.Module, forward, val_tokens: torch.Tensor, cfg: TTTConfig, luts: ByteLuts, rank: int = 0,
    world_size: int = 1, device="cpu", autocast=contextlib.nullcontext, acc: BpbAccumulator | None = None,
    logits_fn=None,
) -> TTTResult:
    """Scores val_tokens' targets chunk by chunk from `model`'s logits (forward_logits, or `logits_fn`, e.g. its
    compiled version; the model must be in eval mode), adapting it through its training `forward(x, y, reduction)`
    (the same module or its compiled wrapper) on each chunk after it is scored. Restores the model on return."""
    num_targets = val_tokens.numel() - 1
    if num_targets <= 0:
        raise ValueError("the validation split is empty: it needs at least two tokens")
    tokens = val_tokens.to(device)
    scorer = Scorer(model, luts.base_bytes.numel(), logits_fn)
    acc = acc if acc is not None else BpbAccumulator(device)
    scored = ScoredPrefix(tokens)
    chunks = ttt_chunks(num_targets, cfg.chunk_tokens)
    n_train = len(chunks) - 1  # the last chunk is never trained on
    t0 = time.perf_counter()
    score_s, adapt_s, adapted, stopped = 0.0, 0.0, 0, False
    with Adaptation(model, forward, cfg, device, autocast, rank, world_size) as adapt:
        for c, (lo, hi) in enumerate(chunks):
            t = time.perf_counter()
            with torch.no_grad():
                plan = sliding_plan(lo, hi, cfg.seq_len, cfg.stride).shard(rank, world_size)
                score_windows(scorer, tokens, plan, cfg.seq_len, cfg.batch_seqs, luts, acc, autocast)
            scored.record_scored(lo, hi)
            score_s += time.perf_counter() - t
            if c == n_train or stopped or cfg.epochs == 0:
                continue
            # Adapt only if scoring the rest would still fit the budget after one more adaptation.
            projected = time.perf_counter() - t0 + adapt_s / max(adapted, 1) + score_s / hi * (num_targets - hi)
            stop = cfg.budget_s > 0 and projected > cfg.budget_s
            if world_size > 1:
                flag = torch.tensor(float(stop), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops on the same chunk
                stop = bool(flag.item())
            if stop:
                stopped = True
                continue
            t = time.perf_counter()
            lr = cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * c / n_train))  # cosine over chunks
            adapt.step_on(scored.training_tokens(lo, hi), lr)
            adapt_s += time.perf_counter() - t
            adapted += 1
    acc.all_reduce()
    loss, bpb = acc.result()
    res = EvalResult(loss, bpb, acc.targets, num_targets, acc.unk_targets)
    return TTTResult(res, len(chunks), adapted, time.perf_counter() - t0, stopped)
