"""Legality audit of a trained model as the run scores it (HARNESS.md A9 conditions C1-C4, D1).

    python -m eval.audit --artifact artifacts/<RUN_ID>/final_model.int8.ptz   # model knobs from the env, as trained
    python -m eval.audit --artifact final_model.pt --config knobs.json NUM_LAYERS=9
    python -m eval.audit --random-init MLP_KIND=relu2                         # an architecture before training
    python -m eval.audit --record records/<track>/<folder>/train_gpt.py --artifact <folder>/seed1_final_model.int8.ptz

It prints a PASS/FAIL table (each failure names the window, the position and the size) and exits with 1 if any
check fails. The checks drive the model exactly as scoring does: the run's EVAL_SEQ_LEN, EVAL_STRIDE and
EVAL_BATCH_SEQS, its real sliding-window batches of the validation split (and random tokens), eval mode, the
run's DTYPE under inference mode, the artifact's dequantized weights, and the evaluator's own normalization
(eval/logprob.py). With --record the model is the record's own shipped code, run in a separate process
(eval/remote.py); every verdict is computed here.

  mode              the model's eval() reaches every submodule, and the evaluator refuses a model in train() mode.
  causality         C1, at EVERY position of sampled windows: the distribution at t equals the one computed with
                    every token after t replaced, in a batch of the scoring shape (half of them under no_grad, as TTT
                    scores); also the mean gain of the target's log-probability, which exposes a small leak spread
                    over many positions.
  batch invariance  a window scores the same alone, in its scoring batch, and at another row among other windows.
  statelessness     scoring changes no parameter, buffer or attribute (after one warm-up forward, so caches of the
                    weights may fill), and a batch scores the same first and last, in another order.
  normalization     C2, at every scored position: finite logits over the whole vocabulary, and the evaluator's nll
                    is -log softmax in float64 (candidate sums over the vocabulary at sampled positions).
  own loss          (--own-loss, for records scored by an evaluator that called the model's forward(x, y)) that
                    loss equals the evaluator's, for the true targets and for others.
  coverage          C4: the sliding and TTT plans score every target exactly once for many (length, L, S, world),
                    and running the sliding eval adds every target to the sums exactly once.
  ttt score-first   C3 (in-process models): eval/audit_ttt.py's spy on every forward path and its replays; the TTT
                    pass scores every target exactly once.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from eval.audit_ttt import RecordingAccumulator, check_ttt_score_first
from eval.bpb import unit_byte_luts
from eval.logprob import Scorer, ScoringModeError, target_nll, training_modules
from eval.remote import changed_names, state_fingerprint
from eval.sliding import WindowPlan, evaluate_sliding, sliding_plan, window_batches
from eval.ttt import TTTConfig, score_first_ttt, ttt_chunks

ROOT = Path(__file__).resolve().parents[1]
# Per scoring dtype: (largest honest |change| of a log-probability between two forwards of the same prefix, smallest
# mean gain of the target's log-probability that counts as a leak). Most fp32 kernels are exact per row; FFT scans
# (s5) round at ~1e-6 in fp32 and ~1e-2 in bf16. The mean gain (signed, over every audited position) catches a small
# leak hidden under bf16 noise: noise averages out, a leak always helps the target.
TOLERANCE = {"fp32": (1e-4, 1e-5), "bf16": (0.1, 2e-3)}


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    skipped: bool = False  # not run (the detail says why): never a pass, never a failure

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else "PASS" if self.passed else "FAIL"


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  detail"]
    lines += [f"{c.name:<{width}}  {c.status:<6}  {c.detail}" for c in checks]
    return "\n".join(lines)


class Probe:
    """Forwards exactly as the sliding eval does: the evaluator's Scorer (eval mode asserted, full vocabulary),
    under inference mode and the run's autocast."""

    def __init__(self, model, vocab_size: int, autocast=contextlib.nullcontext):
        self.model, self.vocab_size, self.autocast = model, vocab_size, autocast
        self.scorer = Scorer(model, vocab_size)
        self.forwards = 0

    def logits(self, x: torch.Tensor, no_grad: bool = False) -> torch.Tensor:
        """no_grad: torch.no_grad instead of inference mode, as TTT scores (a leak gated on either shows)."""
        self.forwards += 1
        with (torch.no_grad() if no_grad else torch.inference_mode()), self.autocast():
            return self.scorer.logits(x).float()

    def logp(self, x: torch.Tensor, no_grad: bool = False) -> torch.Tensor:
        return self.logits(x, no_grad).log_softmax(-1)

    def own_nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        own = getattr(self.model, "own_nll", None)
        if own is not None:
            return own(x, y)
        with torch.inference_mode(), self.autocast():
            return self.model(x, y, reduction="none").float()

    def fingerprint(self) -> dict[str, str]:
        fn = getattr(self.model, "state_fingerprint", None)
        return fn() if fn is not None else state_fingerprint(self.model)


@dataclass
class Batch:
    """One scoring batch (B, L) as window_batches builds it, and the rows audited at every position."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    scored: torch.Tensor  # bool: positions the evaluator scores
    real: torch.Tensor  # bool: positions that are not padding
    rows: list[tuple[int, str]]  # (row, window name)


def _plan_batch(tokens: torch.Tensor, plan: WindowPlan, index: int, seq_len: int, batch_seqs: int) -> tuple:
    a, b = index * batch_seqs, (index + 1) * batch_seqs
    sub = WindowPlan(plan.start[a:b], plan.lo[a:b], plan.hi[a:b])
    x, y, scored = next(window_batches(tokens, sub, seq_len, batch_seqs))
    idx = sub.start[:, None] + torch.arange(seq_len)
    real = torch.zeros_like(scored)
    real[: len(sub)] = idx < sub.hi[:, None]
    return x, y, scored, real, sub


def sample_batches(val_tokens: torch.Tensor | None, vocab_size: int, seq_len: int, stride: int, batch_seqs: int,
                   seed: int) -> list[Batch]:
    """The first, a middle and the last scoring batch of the validation split (window 0, a random window, the
    tail window), then a batch of random tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    if val_tokens is not None and val_tokens.numel() > 1:
        plan = sliding_plan(0, val_tokens.numel() - 1, seq_len, stride)
        nb = -(-len(plan) // batch_seqs)
        for label, i in (("first", 0), ("middle", nb // 2), ("last", nb - 1)):
            if any(b.name.endswith(f"batch {i}") for b in out):
                continue
            x, y, scored, real, sub = _plan_batch(val_tokens, plan, i, seq_len, batch_seqs)
            n = len(sub)
            r = {"first": 0, "middle": int(torch.randint(0, n, (1,), generator=g)), "last": n - 1}[label]
            w = i * batch_seqs + r
            name = f"val window {w} (tokens {int(sub.start[r])}..{int(sub.hi[r]) - 1}, scores targets {int(sub.lo[r])}..{int(sub.hi[r]) - 1})"
            out.append(Batch(f"val {label} batch {i}", x, y, scored, real, [(r, name)]))
    for k in range(1 if out else 2):
        t = torch.randint(0, vocab_size, (batch_seqs, seq_len + 1), generator=g)
        ones = torch.ones(batch_seqs, seq_len, dtype=torch.bool)
        out.append(Batch(f"random batch {k}", t[:, :-1], t[:, 1:], ones, ones.clone(), [(0, f"random window {k}")]))
    return out


def deviation(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per position, the largest |change| of a log-probability that matters: the target's, or any token's that is
    above 1e-4 in either distribution. a, b (N, V) log-probs; target (N,)."""
    a, b = a.double(), b.double()
    keep = (a.exp() > 1e-4) | (b.exp() > 1e-4)
    keep.scatter_(1, target[:, None], True)
    return torch.where(keep, (a - b).abs(), 0.0).amax(-1)


def _worst(found: list[tuple[float, str]]) -> tuple[float, str]:
    return max(found, key=lambda f: f[0]) if found else (0.0, "nothing")


def target_gain(ref: torch.Tensor, other: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log p(target) in the scored setting minus in the changed one, per position (positive: the change hurt it)."""
    return (ref.double().gather(1, target[:, None]) - other.double().gather(1, target[:, None])).squeeze(1)


def mean_gain_problem(gains: list[torch.Tensor], floor: float, what: str) -> tuple[str | None, str]:
    """(problem or None, summary) of the signed gains: a mean above max(floor, 6 standard errors) is a leak."""
    g = torch.cat(gains) if gains else torch.zeros(1, dtype=torch.float64)
    mean, se = float(g.mean()), float(g.std() / g.numel() ** 0.5) if g.numel() > 1 else 0.0
    summary = f"mean target gain {mean:+.1e} nats (se {se:.0e}, {g.numel()} positions)"
    if mean > max(floor, 6 * se):
        return (f"on average the target's log-probability is {mean:.3g} nats higher with {what} ({g.numel()} positions, "
                f"{mean / max(se, 1e-30):.0f} standard errors): a small leak spread over many positions"), summary
    return None, summary


# ---------- mode ----------

def check_mode(model, vocab_size: int, seq_len: int) -> Check:
    model.eval()
    left = training_modules(model)
    if left:
        return Check("mode", False, f"after model.eval() {left[:3]} still report train() mode: scoring would use train-mode paths")
    x = torch.randint(0, vocab_size, (1, seq_len + 1), generator=torch.Generator().manual_seed(7))
    model.train()
    try:
        Scorer(model, vocab_size)(x[:, :-1], x[:, 1:])
        refused = False
    except ScoringModeError:
        refused = True
    finally:
        model.eval()
    if not refused:
        return Check("mode", False, "the evaluator scored a model in train() mode: it must refuse (eval/logprob.py)")
    return Check("mode", True, "eval() reaches every submodule; the evaluator refuses a model in train() mode")


# ---------- C1: causality at every position ----------

def check_causality(probe: Probe, batches: list[Batch], refs: list[dict], tol: tuple[float, float], seed: int = 0) -> Check:
    """For each audited window and EVERY real position t: the row with every token after t replaced (by a
    different random token), in batches of the scoring shape, must give the same distribution at t."""
    g = torch.Generator().manual_seed(seed + 11)
    vocab, found, gains, moved, checked = probe.vocab_size, [], [], 0.0, 0
    for batch, ref in zip(batches, refs):
        bsz, seq_len = batch.x.shape
        for row, name in batch.rows:
            n = int(batch.real[row].sum())
            positions = torch.arange(n)
            extra = (-n) % bsz  # fill the last forward with more cut points, so every forward has the scoring shape
            positions = torch.cat((positions, torch.randint(0, n, (extra,), generator=g)))
            for i in range(0, positions.numel(), bsz):
                cut = positions[i : i + bsz]
                xv = batch.x[row].repeat(cut.numel(), 1)
                later = (torch.arange(seq_len)[None] > cut[:, None]) & batch.real[row][None]
                shift = torch.randint(1, max(vocab, 2), xv.shape, generator=g)
                xv = torch.where(later, (xv + shift) % vocab, xv)
                lp = probe.logp(xv, no_grad=(i // bsz) % 2 == 1)  # every other forward in TTT's grad mode
                rows = torch.arange(cut.numel())
                dev = deviation(ref[row][cut], lp[rows, cut], batch.y[row, cut])
                gains.append(target_gain(ref[row][cut], lp[rows, cut], batch.y[row, cut])[: max(n - i, 0)])  # each position once
                nxt = (cut + 1).clamp(max=n - 1)
                after = deviation(ref[row][nxt], lp[rows, nxt], batch.y[row, nxt])[cut + 1 < n]
                moved = max(moved, float(after.max()) if after.numel() else 0.0)
                j = int(dev.argmax())
                found.append((float(dev[j]), f"{name}, position {int(cut[j])}"))
                checked += cut.numel()
    size, where = _worst(found)
    if moved == 0.0:
        return Check("causality", False, "replacing later tokens moved no later distribution: the model ignores its input, so the test says nothing")
    spread, summary = mean_gain_problem(gains, tol[1], "the true future than with replaced later tokens")
    detail = (f"{checked} (window, position) cuts at every position of {sum(len(b.rows) for b in batches)} windows, "
              f"max change at the cut {size:.2e} nats at {where} (tolerance {tol[0]:.0e}), {summary}; after the cut up to {moved:.2f}")
    if size > tol[0]:
        return Check("causality", False, f"reads the future: {where}: its distribution moves by {size:.3g} nats when only later "
                     f"tokens change; " + detail)
    if spread:
        return Check("causality", False, "reads the future: " + spread + "; " + detail)
    return Check("causality", True, detail)


# ---------- batch composition and size ----------

def check_batch_invariance(probe: Probe, batches: list[Batch], refs: list[dict], tol: tuple[float, float]) -> Check:
    found, gains = [], []
    for k, (batch, ref) in enumerate(zip(batches, refs)):
        other = batches[(k + 1) % len(batches)].x if len(batches) > 1 else batch.x.roll(1, 0)
        bsz = batch.x.shape[0]
        for row, name in batch.rows:
            real = batch.real[row]
            at = (row + bsz // 2 + 1) % bsz
            mixed = other.clone()
            mixed[at] = batch.x[row]
            half = max(bsz // 2, 1)
            small = other[:half].clone()
            small[half - 1] = batch.x[row]
            for label, x, r in (("alone (batch of 1)", batch.x[row : row + 1], 0),
                                (f"at row {at} among {bsz - 1} other windows", mixed, at),
                                (f"in a batch of {half}", small, half - 1)):
                lp = probe.logp(x)[r]
                dev = deviation(ref[row][real], lp[real], batch.y[row][real])
                gains.append(target_gain(ref[row][real], lp[real], batch.y[row][real]))
                j = int(dev.argmax())
                found.append((float(dev[j]), f"{name} {label}, position {int(torch.nonzero(real)[j])}"))
    size, where = _worst(found)
    spread, summary = mean_gain_problem(gains, tol[1], "its scoring batch than elsewhere")
    detail = (f"{len(found)} placements of {sum(len(b.rows) for b in batches)} windows vs their scoring batch: max change {size:.2e} "
              f"nats (tolerance {tol[0]:.0e}), {summary}")
    if size > tol[0]:
        return Check("batch invariance", False, f"depends on the other rows of its batch: {where}: changes by {size:.3g} nats; {detail}")
    if spread:
        return Check("batch invariance", False, "depends on the other rows of its batch: " + spread + "; " + detail)
    return Check("batch invariance", True, detail)


# ---------- statelessness ----------

def target_logp(lp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return lp.gather(-1, y[..., None]).squeeze(-1)


def check_statelessness(probe: Probe, batches: list[Batch], first: torch.Tensor, fp_before: dict, tol: tuple[float, float]) -> Check:
    """`first`: the targets' log-probs (B, L) of batches[0] from the audit's first forward (after one warm-up
    forward), and `fp_before` the state fingerprint taken before it; everything else has been scored since."""
    changed = changed_names(fp_before, probe.fingerprint())
    if changed:
        return Check("statelessness", False, f"scoring changed the model's state: {', '.join(changed[:4])}"
                     + (f" (+{len(changed) - 4} more)" if len(changed) > 4 else "") + ": a cache or counter filled by inference passes")
    found = []
    order = list(enumerate(batches))[::-1]  # another order than every earlier pass
    again = {k: target_logp(probe.logp(b.x), b.y) for k, b in order}
    b0 = batches[0]
    found.append((float((first - again[0]).abs()[b0.scored].max()), f"{b0.name} scored first vs again after {probe.forwards - 1} forwards"))
    for k, b in order[:-1]:
        d = (again[k] - target_logp(probe.logp(b.x), b.y)).abs()[b.scored]
        found.append((float(d.max()), f"{b.name} in reverse batch order vs again"))
    size, where = _worst(found)
    if size > tol[0]:
        return Check("statelessness", False, f"scores depend on what was scored before: {where}: a target's log-probability changes by {size:.3g} nats")
    return Check("statelessness", True, f"state unchanged over {probe.forwards} scoring forwards incl. a whole sliding pass when the "
                 f"split is here (parameters, buffers, attributes); the first batch scored first and last, and the batches in "
                 f"reverse order, agree to {size:.1e} nats")


# ---------- C2: full-vocabulary normalization ----------

def check_normalization(probe: Probe, batches: list[Batch], positions: int = 2, seed: int = 0, tol: float = 1e-4) -> Check:
    g = torch.Generator().manual_seed(seed + 5)
    vocab, worst_err, worst_sum, n = probe.vocab_size, 0.0, 0.0, 0
    for batch in batches:
        logits = probe.logits(batch.x)
        m = batch.scored
        sel = logits[m]
        bad = int((torch.isnan(sel) | (sel == float("inf"))).any(-1).sum())
        if bad:
            return Check("normalization", False, f"{batch.name}: {bad} scored positions have NaN or +inf logits")
        lp = sel.double().log_softmax(-1)
        ev = target_nll(sel, batch.y[m]).double()
        err = (ev + lp.gather(1, batch.y[m][:, None]).squeeze(1)).abs()
        if not bool(torch.isfinite(lp.logsumexp(-1)).all()):
            return Check("normalization", False, f"{batch.name}: a scored position gives no probability to any token")
        i = int(err.argmax())
        worst_err = max(worst_err, float(err[i]))
        if float(err[i]) > tol:
            pos = torch.nonzero(m)[i].tolist()
            return Check("normalization", False, f"{batch.name}, row {pos[0]} position {pos[1]}: the evaluator's nll {float(ev[i]):.6f} "
                         f"is not -log softmax over the {vocab} tokens ({float(-lp[i].gather(0, batch.y[m][i:i + 1])):.6f})")
        for j in torch.randint(0, sel.shape[0], (positions,), generator=g).tolist():
            cand = target_nll(sel[j].expand(vocab, vocab), torch.arange(vocab)).double()
            total = float(torch.exp(-cand).sum())
            worst_sum = max(worst_sum, abs(total - 1.0))
            if abs(total - 1.0) > tol:
                return Check("normalization", False, f"{batch.name}: the evaluator's probabilities of all {vocab} targets sum to {total:.6f}")
        n += sel.shape[0]
    return Check("normalization", True, f"{n} scored positions: finite logits over all {vocab} tokens, evaluator nll = float64 "
                 f"-log softmax (max error {worst_err:.1e}); {positions} candidate sums per batch within {worst_sum:.1e} of 1")


# ---------- a model's own loss (records scored by an evaluator that called forward(x, y)) ----------

def check_own_loss(probe: Probe, batches: list[Batch], tol: float, seed: int = 0) -> Check:
    g = torch.Generator().manual_seed(seed + 3)
    found = []
    for batch in batches:
        lp = probe.logp(batch.x)
        for label, y in (("true targets", batch.y), ("random targets", torch.randint(0, probe.vocab_size, batch.y.shape, generator=g))):
            own = probe.own_nll(batch.x, y)
            ref = -lp.gather(-1, y[..., None]).squeeze(-1)
            err = (own.double() - ref.double()).abs()[batch.real]
            i = int(err.argmax())
            pos = torch.nonzero(batch.real)[i].tolist()
            found.append((float(err[i]), f"{batch.name} ({label}), row {pos[0]} position {pos[1]}"))
    size, where = _worst(found)
    if size > tol:
        return Check("own loss", False, f"the model's forward(x, y) loss is not its distribution's: {where}: off by {size:.3g} nats "
                     "(an evaluator that scored through it was given a different number)")
    return Check("own loss", True, f"forward(x, y) = -log softmax(forward_logits) for true and random targets (max {size:.1e} nats)")


# ---------- C4: exactly-once coverage ----------

def exactly_once(lo: torch.Tensor, hi: torch.Tensor, num_targets: int) -> str | None:
    """None if the scored ranges [lo, hi) tile 0..num_targets-1 exactly, else what is wrong."""
    keep = hi > lo
    lo, hi = lo[keep], hi[keep]
    if lo.numel() == 0:
        return None if num_targets == 0 else "nothing is scored"
    order = torch.argsort(lo, stable=True)
    lo, hi = lo[order], hi[order]
    if int(lo[0]) > 0:
        return f"targets 0..{int(lo[0]) - 1} are never scored"
    overlap = torch.nonzero(hi[:-1] > lo[1:]).flatten()
    if overlap.numel():
        i = int(overlap[0])
        return f"targets {int(lo[i + 1])}..{min(int(hi[i]), int(hi[i + 1])) - 1} are scored twice"
    gap = torch.nonzero(hi[:-1] < lo[1:]).flatten()
    if gap.numel():
        i = int(gap[0])
        return f"targets {int(hi[i])}..{int(lo[i + 1]) - 1} are never scored"
    if int(hi[-1]) != num_targets:
        end = int(hi[-1])
        return f"targets {end}..{num_targets - 1} (the tail) are never scored" if end < num_targets else f"scores past the end ({end} > {num_targets})"
    return None


def sliding_ranges(num_targets: int, seq_len: int, stride: int, rank: int, world_size: int):
    plan = sliding_plan(0, num_targets, seq_len, stride).shard(rank, world_size)
    return plan.lo, plan.hi


def ttt_ranges(chunk_tokens: int):
    def ranges(num_targets: int, seq_len: int, stride: int, rank: int, world_size: int):
        plans = [sliding_plan(a, b, seq_len, stride).shard(rank, world_size) for a, b in ttt_chunks(num_targets, chunk_tokens)]
        return torch.cat([p.lo for p in plans]), torch.cat([p.hi for p in plans])
    return ranges


def default_cases() -> list[tuple[int, int, int, int]]:
    """(num_targets, seq_len, stride, world_size) grid: tiny streams, exact multiples, off-by-ones, ragged tails."""
    cases = []
    for n in (1, 2, 3, 17, 63, 64, 65, 1000, 4097):
        for L in (1, 8, 64):
            for S in sorted({1, 3, L // 2, L - 1, L} & set(range(1, L + 1))):
                for w in (1, 2, 3, 8):
                    cases.append((n, L, S, w))
    return cases


def check_plan_coverage(plans: dict, cases: list[tuple[int, int, int, int]]) -> tuple[bool, str]:
    """plans: name -> fn(num_targets, seq_len, stride, rank, world_size) -> (lo, hi) scored ranges of that rank."""
    for name, fn in plans.items():
        for n, L, S, w in cases:
            parts = [fn(n, L, S, r, w) for r in range(w)]
            err = exactly_once(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), n)
            if err:
                return False, f"{name} plan, length {n}, L={L}, S={S}, world {w}: {err}"
    return True, f"plans {', '.join(plans)} exact in {len(cases)} (length, L, S, world) cases"


def check_executed_coverage(runs: dict, num_targets: int) -> tuple[bool, str]:
    """runs: name -> fn(tokens, acc) that evaluates the distinct-token stream 0..num_targets into acc."""
    tokens = torch.arange(num_targets + 1)
    for name, run in runs.items():
        log: list = []
        run(tokens, RecordingAccumulator("cpu", log))
        ids = torch.cat([e[1] for e in log if e[0] == "scored"] or [torch.zeros(0, dtype=torch.long)])
        counts = torch.bincount(ids, minlength=num_targets + 1)[1:]  # token k is target k-1; token 0 is context
        if not counts.eq(1).all():
            twice, never = int((counts > 1).sum()), int((counts == 0).sum())
            first = int(torch.nonzero(counts != 1)[0])
            return False, f"running {name}: {twice} targets scored more than once, {never} never (first: target {first})"
    return True, f"ran {', '.join(runs)} on {num_targets} targets: each scored once"


def check_coverage(plan_sets: list[tuple[dict, list]], runs: dict, num_targets: int) -> Check:
    """plan_sets: (plans, cases) pairs for check_plan_coverage; runs: for check_executed_coverage."""
    details = []
    for plans, cases in plan_sets:
        ok, detail = check_plan_coverage(plans, cases)
        details.append(detail)
        if not ok:
            return Check("coverage", False, detail)
    ok, detail = check_executed_coverage(runs, num_targets)
    return Check("coverage", ok, "; ".join(details + [detail]))


# ---------- C3: score before update ----------

def check_ttt_order(run_ttt, model: nn.Module, num_targets: int, vocab_size: int | None = None, chunks=(), seq_len: int = 16,
                    stride: int = 4, batch_seqs: int = 4) -> Check:
    """run_ttt(model, tokens, acc): a test-time-training evaluation into acc. With `chunks` (its target ranges) the
    states at chunk starts are also replayed (eval/audit_ttt.py); without, only the forward spy runs."""
    vocab = vocab_size or num_targets + 2
    ok, detail = check_ttt_score_first(run_ttt, model, vocab, num_targets, list(chunks), seq_len, stride, batch_seqs)
    return Check("ttt score-first", ok, detail)


# ---------- the whole audit ----------

CHECKS = ("mode", "causality", "batch invariance", "statelessness", "normalization", "own loss", "coverage", "ttt score-first")


def audit_model(model, vocab_size: int, seq_len: int = 128, stride: int = 32, batch_seqs: int = 4, ttt: TTTConfig | None = None,
                val_tokens: torch.Tensor | None = None, extra_cases: tuple = (), positions: int = 2, seed: int = 0,
                dtype: str = "fp32", autocast=contextlib.nullcontext, own_loss: bool = False,
                only: tuple[str, ...] | None = None, score_luts=None, scored: dict | None = None) -> list[Check]:
    """Every check on `model` (an nn.Module, or eval.remote.RemoteModel) at the scoring geometry; `only` picks some
    of CHECKS (the model checks always share one warm-up, first forward and state fingerprint). The statelessness
    check runs one whole sliding pass over val_tokens; with `score_luts` (the run's byte tables) that pass is the
    run's sliding score, and its EvalResult goes to scored["sliding"]."""
    if seq_len < 2:
        raise ValueError(f"the audit needs windows of at least 2 tokens (got seq_len={seq_len})")
    unknown = set(only or ()) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; choose from {CHECKS}")
    wanted = set(only or CHECKS) - (set() if own_loss or only else {"own loss"})
    checks = _model_checks(model, vocab_size, seq_len, stride, batch_seqs, val_tokens, positions, seed, dtype, autocast, wanted,
                           score_luts, scored if scored is not None else {})
    if "coverage" in wanted or "ttt score-first" in wanted:
        checks += _procedure_checks(model, vocab_size, seq_len, stride, batch_seqs, ttt, extra_cases, seed, wanted)
    return checks


def _model_checks(model, vocab_size, seq_len, stride, batch_seqs, val_tokens, positions, seed, dtype, autocast, wanted, score_luts,
                  scored) -> list[Check]:
    tol = TOLERANCE[dtype]
    checks = [check_mode(model, vocab_size, seq_len)] if "mode" in wanted else []
    if not wanted & {"causality", "batch invariance", "statelessness", "normalization", "own loss"}:
        return checks
    model.eval()  # as the trainer scores (the evaluator refuses train mode)
    probe = Probe(model, vocab_size, autocast)
    batches = sample_batches(val_tokens, vocab_size, seq_len, stride, batch_seqs, seed)
    probe.logp(torch.randint(0, vocab_size, (batch_seqs, seq_len), generator=torch.Generator().manual_seed(seed + 99)))  # warm-up, as the trainer
    fp_before = probe.fingerprint()
    refs, first = [], None
    for b in batches:  # the audit's first scoring forwards; only the audited rows are kept whole (memory at large V)
        lp = probe.logp(b.x)
        refs.append({row: lp[row].clone() for row, _ in b.rows})
        first = target_logp(lp, b.y) if first is None else first
        del lp
    run = {"causality": lambda: check_causality(probe, batches, refs, tol, seed),
           "batch invariance": lambda: check_batch_invariance(probe, batches, refs, tol),
           "normalization": lambda: check_normalization(probe, batches, positions, seed),
           "own loss": lambda: check_own_loss(probe, batches, max(tol[0], 1e-4), seed)}
    done = {name: fn() for name, fn in run.items() if name in wanted}
    if "statelessness" in wanted:  # last: it compares against everything scored before
        if val_tokens is not None:  # a whole scoring pass first, so a switch after as many forwards as the run's shows
            plan = sliding_plan(0, val_tokens.numel() - 1, seq_len, stride)
            scored["sliding"] = evaluate_sliding(model, val_tokens, seq_len, stride, batch_seqs, score_luts or unit_byte_luts(vocab_size),
                                                 autocast=autocast)
            probe.forwards += -(-len(plan) // batch_seqs)
        done["statelessness"] = check_statelessness(probe, batches, first, fp_before, tol)
    return checks + [done[n] for n in CHECKS if n in done]


def _procedure_checks(model, vocab_size, seq_len, stride, batch_seqs, ttt, extra_cases, seed, wanted) -> list[Check]:
    luts = unit_byte_luts(vocab_size)
    n = min(vocab_size - 2, 4 * seq_len)  # distinct ids 1..V-1 (0 pads)
    # The run's TTT mode, learning rate and rank at the scoring geometry; audit-sized: 4 chunks, 1 epoch, no time budget.
    cfg = replace(ttt or TTTConfig(), seq_len=seq_len, stride=stride, batch_seqs=batch_seqs, chunk_tokens=max(-(-n // 4), 1),
                  epochs=min((ttt or TTTConfig()).epochs, 1), budget_s=0.0)

    def run_sliding(tokens, acc, world=3):
        for r in range(world):  # the ranks' shares, one after another (no process group needed)
            evaluate_sliding(model, tokens, seq_len, stride, batch_seqs, luts, rank=r, world_size=world, acc=acc)

    def run_ttt(m, tokens, acc):
        score_first_ttt(m, m, tokens, cfg, luts, acc=acc)

    local = isinstance(model, nn.Module)
    checks = []
    if "coverage" in wanted:
        # The grid uses 100-target TTT chunks (many chunk boundaries); the run's own lengths use its chunk size.
        plan_sets = [({"sliding": sliding_ranges, "ttt": ttt_ranges(100)}, default_cases()),
                     ({"sliding": sliding_ranges, "ttt": ttt_ranges((ttt or TTTConfig()).chunk_tokens)}, list(extra_cases))]
        checks.append(check_coverage([p for p in plan_sets if p[1]], {"sliding eval (3 ranks)": run_sliding}, n))
    if "ttt score-first" not in wanted:
        return checks
    if local:
        ok, detail = check_ttt_score_first(run_ttt, model, vocab_size, n, ttt_chunks(n, cfg.chunk_tokens), seq_len, stride, batch_seqs,
                                           seed=seed)
        checks.append(Check("ttt score-first", ok, f"mode {cfg.mode}, {cfg.epochs} epochs: {detail}"))
    else:
        checks.append(Check("ttt score-first", True, "not run in a record's process: adapting would run the record's own training "
                            "code under our checks; `records verify` checks its eval/ttt.py is the harness's", skipped=True))
    return checks


# ---------- command line ----------

class AuditInputError(ValueError):
    """A bad command-line input: the message names it and the fix."""


def load_weights(path: Path) -> dict:
    """final_model.pt (raw state dict) or any artifact train_gpt.py exported (int8+zlib .ptz, .pgq), dequantized."""
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.suffix in (".ptz", ".pgq"):
        from quant.export import load_artifact

        return load_artifact(path)
    raise ValueError(f"{path}: expected final_model.pt, final_model.int8.ptz or a final_model.*.pgq artifact")


def read_config(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditInputError(f"--config {path}: no such file (pass a JSON object of knobs, e.g. {{\"NUM_LAYERS\": \"9\"}})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AuditInputError(f"--config {path}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise AuditInputError(f"--config {path} is not JSON ({e.msg} at line {e.lineno}); write an object like {{\"NUM_LAYERS\": \"9\"}}") from None
    if not isinstance(data, dict):
        raise AuditInputError(f"--config {path} holds a JSON {type(data).__name__}, not an object of knobs like {{\"NUM_LAYERS\": \"9\"}}")
    return {str(k): str(v) for k, v in data.items()}


def resolve_val(choice: str, data_path: str, vocab_size: int, data_path_from_env: bool) -> tuple[torch.Tensor | None, str]:
    """(validation tokens or None, where they came from) for --val-data auto | sample | none | FOLDER."""
    import numpy as np

    from data.shards import load_tokens

    if choice == "none":
        return None, "no validation data (random tokens only)"
    if choice == "sample" or (choice == "auto" and not data_path_from_env and not Path(data_path).is_dir()):
        from data.sample import ensure_sample_dataset

        folder, label = Path(ensure_sample_dataset(vocab_size=vocab_size).data_path), "the offline sample dataset"
    else:
        folder = Path(data_path if choice == "auto" else choice)
        label = str(folder)
        if not sorted(folder.glob("fineweb_val_*.bin")):
            if choice == "auto":
                return None, f"no validation shards in DATA_PATH={folder} (random tokens only; pass --val-data)"
            raise AuditInputError(f"--val-data {choice}: no fineweb_val_*.bin shards there (pass the run's DATA_PATH, 'sample' or 'none')")
    try:
        tokens = load_tokens(str(folder / "fineweb_val_*.bin"))
    except (FileNotFoundError, ValueError) as e:
        raise AuditInputError(f"--val-data: {e}") from None
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise AuditInputError(f"the validation shards in {folder} hold token id {int(tokens.max())} >= VOCAB_SIZE={vocab_size}: "
                              "they were made with another tokenizer (pass the run's DATA_PATH)")
    return torch.from_numpy(tokens.astype(np.int64)), f"{label} ({tokens.size - 1} targets)"


@dataclass
class RunKnobs:
    """What the audit takes from the run's knobs (read from its Hyperparameters, ours or a record's)."""

    vocab_size: int
    train_seq_len: int
    seq_len: int
    stride: int
    batch_seqs: int
    dtype: str
    ttt: TTTConfig
    data_path: str
    tokenizer_path: str

    @classmethod
    def from_values(cls, get, a: argparse.Namespace) -> "RunKnobs":
        train_len = int(get("train_seq_len"))
        eval_len = a.seq_len or int(get("eval_seq_len") or 0) or train_len
        run_stride = int(get("eval_stride") or 0)
        stride = a.stride or (min(run_stride, eval_len) if run_stride > 0 else eval_len)
        batch = a.batch_seqs or int(get("eval_batch_seqs") or 1)
        if not 1 <= stride <= eval_len:
            raise AuditInputError(f"--stride {stride} must be in 1..{eval_len} (the window length)")
        if batch < 1:
            raise AuditInputError(f"--batch-seqs {batch} must be positive")
        ttt = TTTConfig(mode=get("ttt_mode") or "full", lr=float(get("ttt_lr") or 0.0), lora_rank=int(get("ttt_lora_rank") or 8),
                        epochs=int(get("ttt_epochs") if get("ttt_epochs") is not None else 3),
                        chunk_tokens=int(get("ttt_chunk_tokens") or 32_768), seq_len=eval_len, stride=stride, batch_seqs=batch)
        return cls(int(get("vocab_size")), train_len, eval_len, stride, batch, str(get("dtype") or "fp32"), ttt,
                   str(get("data_path") or ""), str(get("tokenizer_path") or ""))


def _knob_env(a: argparse.Namespace, base: dict) -> dict[str, str]:
    env = dict(base)
    if a.config:
        env.update(read_config(a.config))
    for kv in a.knobs:
        if "=" not in kv:
            raise AuditInputError(f"{kv!r} is not KNOB=VALUE")
        k, v = kv.split("=", 1)
        env[k] = v
    return env


def _autocast(dtype: str):
    return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext


def rescore(model, val: torch.Tensor, luts, kind: str, knobs: RunKnobs, autocast=contextlib.nullcontext, done=None) -> dict:
    """The score the run logged, recomputed by this checkout's evaluator: `sliding` (EVAL_SEQ_LEN, EVAL_STRIDE; `done`:
    the audit's own sliding pass, made with these byte tables) or `plain` (TRAIN_SEQ_LEN windows)."""
    from eval.plain import evaluate

    if kind == "sliding":
        res = done or evaluate_sliding(model, val, knobs.seq_len, knobs.stride, knobs.batch_seqs, luts, autocast=autocast)
    else:
        res = evaluate(model, val, knobs.train_seq_len, knobs.batch_seqs, luts, autocast=autocast)
    return {"kind": kind, "val_loss": res.val_loss, "val_bpb": res.val_bpb, "targets": res.targets_scored}


def _luts_for(a, knobs: RunKnobs):
    from eval.bpb import build_byte_luts
    from eval.bpb_cli import BpbInputError, load_tokenizer

    path = a.tokenizer or (str(_sample_tokenizer(knobs.vocab_size)) if a.val_data == "sample" else knobs.tokenizer_path)
    try:
        sp = load_tokenizer(path)
        if int(sp.vocab_size()) != knobs.vocab_size:
            raise BpbInputError(f"{path} has {int(sp.vocab_size())} pieces, the model {knobs.vocab_size}: not the run's tokenizer")
        return build_byte_luts(sp, knobs.vocab_size)
    except (BpbInputError, ValueError) as e:
        raise AuditInputError(f"--rescore needs the run's tokenizer (--tokenizer): {e}") from None


def _sample_tokenizer(vocab_size: int) -> Path:
    from data.sample import ensure_sample_dataset

    return Path(ensure_sample_dataset(vocab_size=vocab_size).tokenizer_path)


def _audit_one(model, knobs: RunKnobs, val, where: str, a, label: str, results: dict) -> None:
    local = isinstance(model, nn.Module)
    autocast = _autocast(knobs.dtype) if local else contextlib.nullcontext
    if a.rescore and val is None:
        raise AuditInputError("--rescore needs validation data (--val-data sample or a shard folder)")
    luts = _luts_for(a, knobs) if a.rescore else None
    scored: dict = {}
    checks = _run_checks(model, knobs, val, a, autocast, luts, scored)
    print(f"audit: {label}: vocab {knobs.vocab_size}, L={knobs.seq_len} S={knobs.stride} B={knobs.batch_seqs} {knobs.dtype}, "
          f"windows of {where}" + ("" if local else " (the record's own code, in its own process)"))
    print(format_table(checks))
    entry = {"checks": [{"name": c.name, "passed": c.passed, "status": c.status, "detail": c.detail} for c in checks], "rescore": None}
    if a.rescore:
        entry["rescore"] = rescore(model, val, luts, a.rescore, knobs, autocast, scored.get("sliding"))
        r = entry["rescore"]
        print(f"rescore: {r['kind']} val_loss:{r['val_loss']:.8f} val_bpb:{r['val_bpb']:.8f} targets:{r['targets']}")
    results[label] = entry


def _run_checks(model, knobs: RunKnobs, val, a, autocast, luts=None, scored=None) -> list[Check]:
    extra = [(n, knobs.seq_len, knobs.stride, 8) for n in (knobs.seq_len * 1000 + 1, knobs.seq_len * 1000 + knobs.stride + 7)]
    if val is not None:
        extra.append((val.numel() - 1, knobs.seq_len, knobs.stride, 8))
    return audit_model(model, knobs.vocab_size, knobs.seq_len, knobs.stride, knobs.batch_seqs, knobs.ttt, val, tuple(extra),
                       a.positions, a.seed, knobs.dtype, autocast, a.own_loss, score_luts=luts, scored=scored)


def _audit_local(a, env) -> dict:
    sys.path.insert(0, str(ROOT))  # the CLI builds the model the way the trainer does; library code never imports train_gpt
    import train_gpt

    try:
        args = train_gpt.Hyperparameters(env=env, device_type=a.preset)
        model = train_gpt.build_model(args)
    except (train_gpt.KnobError, ValueError) as e:
        raise AuditInputError(str(e)) from None
    knobs = RunKnobs.from_values(lambda n: getattr(args, n, None), a)
    val, where = resolve_val(a.val_data, args.data_path, knobs.vocab_size, "DATA_PATH" in args.from_env)
    results: dict = {}
    for art in [None] if a.random_init else a.artifact:
        torch.manual_seed(a.seed)
        if art is None:
            with torch.no_grad():  # zero-initialised projections would hide a leak: randomize every weight
                for param in model.parameters():
                    param.normal_(0.0, 0.2)
        else:
            try:
                model.load_state_dict(load_weights(art), strict=True)
            except (OSError, ValueError, RuntimeError) as e:
                raise AuditInputError(f"cannot load {art} into the model the knobs describe ({e}). Pass the training run's model knobs "
                                      "(NUM_LAYERS, MODEL_DIM, VOCAB_SIZE, MLP_KIND, ...) in the env, --config or KNOB=VALUE.") from None
        _audit_one(model, knobs, val, where, a, "random-init" if art is None else str(art), results)
    return results


def _audit_record(a, env) -> dict:
    from eval.remote import RemoteError, RemoteModel

    if not a.artifact:
        raise AuditInputError("--record needs --artifact (the record's shipped artifact(s))")
    if not a.record.is_file():
        raise AuditInputError(f"--record {a.record}: no such file (pass the record folder's train_gpt.py)")
    missing = [str(p) for p in a.artifact if not p.is_file()]
    if missing:
        raise AuditInputError(f"--artifact {missing[0]}: no such file")
    results: dict = {}
    try:
        with RemoteModel(a.record, dict(env, DEVICE="cpu", COMPILE="0"), ROOT, preset=a.preset) as model:
            leaked = model.info.get("repo_modules") or []
            if leaked:
                raise AuditInputError(f"the record {a.record} imported {leaked} from the repository instead of its own copies: re-pack it")
            knobs = RunKnobs.from_values(lambda n: model.info["knobs"].get(n), a)
            val, where = resolve_val("none" if a.val_data == "auto" else a.val_data, "", knobs.vocab_size, True)
            for art in a.artifact:
                model.load(art)
                _audit_one(model, knobs, val, where, a, str(art), results)
    except RemoteError as e:
        raise AuditInputError(f"the record {a.record} could not be audited: {e}") from None
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.audit", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", type=Path, action="append", help="final_model.pt, final_model.int8.ptz or final_model.*.pgq "
                   "written by train_gpt.py (repeat it for several)")
    p.add_argument("--random-init", action="store_true", help="audit the architecture with random weights instead")
    p.add_argument("--record", type=Path, help="a record's packed train_gpt.py: audit ITS code (in its own process) on --artifact")
    p.add_argument("--config", type=Path, help="JSON object of knobs, e.g. {\"NUM_LAYERS\": \"9\"} (overrides the env)")
    p.add_argument("--preset", choices=["cpu", "cuda"], default="cpu", help="whose defaults the knobs start from: the run's device (default cpu)")
    p.add_argument("--val-data", default="auto", help="validation windows: auto (the run's DATA_PATH, or the sample dataset when it "
                   "is unset), sample, none, or a shard folder")
    p.add_argument("--seq-len", type=int, default=0, help="window length (default: the run's EVAL_SEQ_LEN, else TRAIN_SEQ_LEN)")
    p.add_argument("--stride", type=int, default=0, help="sliding stride (default: the run's EVAL_STRIDE)")
    p.add_argument("--batch-seqs", type=int, default=0, help="windows per forward (default: the run's EVAL_BATCH_SEQS)")
    p.add_argument("--positions", type=int, default=2, help="candidate-sum positions per batch of the normalization check")
    p.add_argument("--own-loss", action="store_true", help="also check the model's own forward(x, y) loss (for evaluators that used it)")
    p.add_argument("--rescore", choices=["plain", "sliding"], help="also recompute the run's score with this checkout's evaluator")
    p.add_argument("--tokenizer", help="SentencePiece .model for --rescore (default: the run's TOKENIZER_PATH, or the sample's)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("knobs", nargs="*", metavar="KNOB=VALUE", help="knob overrides, as in the training run")
    a = p.parse_args(argv)
    if bool(a.artifact) == a.random_init and not a.record:
        p.error("give exactly one of --artifact PATH or --random-init")
    try:
        if a.seq_len and a.seq_len < 2:
            raise AuditInputError(f"--seq-len {a.seq_len}: the audit needs windows of at least 2 tokens (or 0 for the run's EVAL_SEQ_LEN)")
        if a.seq_len < 0 or a.stride < 0 or a.batch_seqs < 0 or a.positions < 0:
            raise AuditInputError("--seq-len, --stride, --batch-seqs and --positions must be >= 0 (0: the run's value)")
        results = _audit_record(a, _knob_env(a, {})) if a.record else _audit_local(a, _knob_env(a, os.environ))
    except AuditInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        a.json.write_text(json.dumps({"argv": list(argv if argv is not None else sys.argv[1:]), "artifacts": results}, indent=1) + "\n",
                          encoding="utf-8")
    return 0 if all(c["passed"] for entry in results.values() for c in entry["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
