"""Legality audit of a trained model and of our evaluation code (HARNESS.md A9 conditions C1-C4, D1).

    python -m eval.audit --artifact artifacts/<RUN_ID>/final_model.int8.ptz   # model knobs from the env, as trained
    python -m eval.audit --artifact final_model.pt --config knobs.json NUM_LAYERS=9
    python -m eval.audit --random-init MLP_KIND=relu2                         # an architecture before training

It prints a PASS/FAIL table and exits with 1 if any check fails. The checks treat the model and the scorer as
black boxes, so the same functions catch the illegal constructions planted in tests/test_audit.py:

  causality      C1: changing the tokens after position t changes no logit at or before t (forward_logits) and
                 no nll of a target at or before t (the scorer the evaluation calls, token_nll(x, y)).
  normalization  C2: at sampled positions the scorer's probabilities of every possible target sum to 1 over the
                 full vocabulary. token_nll is asked with each candidate as the target, the test that exposed
                 target-keyed n-gram caches (their "distribution" summed to ~277, PR #886).
  coverage       C4: the sliding and TTT plans score every target exactly once for many (length, L, S, world),
                 and running the sliding eval and the TTT pass adds every target to the sums exactly once.
  ttt order      C3: during the TTT pass every training forward sees only tokens that were already scored.

Coverage and TTT order run the real code on a stream of distinct tokens (token k is target k - 1), so a token
seen in a forward pass or in the bpb accumulator tells its position. "Training" means a forward pass with
gradients enabled through the model the procedure is given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from eval.bpb import BpbAccumulator, unit_byte_luts
from eval.sliding import evaluate_sliding, sliding_plan
from eval.ttt import TTTConfig, score_first_ttt, ttt_chunks

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  detail"]
    lines += [f"{c.name:<{width}}  {'PASS' if c.passed else 'FAIL':<6}  {c.detail}" for c in checks]
    return "\n".join(lines)


# ---------- C1: future perturbation ----------

@torch.no_grad()
def check_causality(model: nn.Module, token_nll, vocab_size: int, seq_len: int, trials: int = 8, seed: int = 0,
                    rtol: float = 1e-5) -> Check:
    """Row i keeps tokens 0..t_i and replaces every later token; nothing at or before t_i may move."""
    if seq_len < 2:
        raise ValueError("the causality check needs seq_len >= 2")
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab_size, (trials, seq_len + 1), generator=g)
    t = torch.randint(0, seq_len - 1, (trials,), generator=g)
    idx = torch.arange(seq_len + 1)
    later = idx[None] > t[:, None]
    shift = torch.randint(1, max(vocab_size, 2), x.shape, generator=g)  # a nonzero shift: every later token differs
    x2 = torch.where(later, (x + shift) % vocab_size, x)
    logits = model.forward_logits(x[:, :-1]).float()
    logit_moves = (logits - model.forward_logits(x2[:, :-1]).float()).abs().amax(-1)  # (trials, L)
    nll_moves = (token_nll(x[:, :-1], x[:, 1:]) - token_nll(x2[:, :-1], x2[:, 1:])).abs().float()
    pos = idx[:-1][None]
    scale = 1.0 + float(logits.abs().max())
    leak_logit = float(logit_moves[pos <= t[:, None]].max())  # inputs 0..t are unchanged
    leak_nll = float(nll_moves[pos < t[:, None]].max())  # targets 1..t are unchanged too
    moved = float(logit_moves[pos > t[:, None]].max())
    tol = rtol * scale
    if moved == 0.0:
        return Check("causality", False, "changing later tokens moved no logit at all: the model ignores its input, so the test says nothing")
    passed = leak_logit <= tol and leak_nll <= tol
    detail = (f"{trials} perturbations of L={seq_len}: max change at or before t: logits {leak_logit:.2e}, "
              f"nll {leak_nll:.2e} (tolerance {tol:.1e}); after t logits moved up to {moved:.2f}")
    if not passed:
        detail = "reads the future: " + detail
    return Check("causality", passed, detail)


# ---------- C2: full-vocabulary normalization ----------

@torch.no_grad()
def check_normalization(token_nll, vocab_size: int, seq_len: int, positions: int = 2, seed: int = 0, tol: float = 1e-4,
                        rows_per_call: int = 256) -> Check:
    """sum_v exp(-nll(target = v)) at a position must be 1; the stream stays consistent (x[t+1] = y[t] = v)."""
    g = torch.Generator().manual_seed(seed + 1)
    base = torch.randint(0, vocab_size, (seq_len + 1,), generator=g)
    chosen = sorted({seq_len - 1, *torch.randint(0, seq_len, (max(positions - 1, 0),), generator=g).tolist()})
    sums = []
    for t in chosen:
        nll = []
        for v0 in range(0, vocab_size, rows_per_call):
            vs = torch.arange(v0, min(v0 + rows_per_call, vocab_size))
            x = base[:-1].repeat(vs.numel(), 1)
            y = base[1:].repeat(vs.numel(), 1)
            y[:, t] = vs
            if t + 1 < seq_len:
                x[:, t + 1] = vs
            nll.append(token_nll(x, y)[:, t].double())
        sums.append(float(torch.logsumexp(-torch.cat(nll), 0).exp()))
    worst = max(sums, key=lambda s: abs(s - 1.0))
    passed = abs(worst - 1.0) <= tol
    detail = f"sum over all {vocab_size} targets at positions {chosen}: {', '.join(f'{s:.6f}' for s in sums)}"
    if not passed:
        detail = "not a normalized distribution (scores only the gold token?): " + detail
    return Check("normalization", passed, detail)


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


class RecordingAccumulator(BpbAccumulator):
    """A BpbAccumulator that also logs the target ids it is given, in order, into a shared event log."""

    def __init__(self, device, log: list):
        super().__init__(device)
        self.log = log

    def add(self, nll, prev_ids, target_ids, luts) -> None:
        self.log.append(("scored", target_ids.detach().flatten().cpu()))
        super().add(nll, prev_ids, target_ids, luts)


def check_executed_coverage(runs: dict, num_targets: int) -> tuple[bool, str]:
    """runs: name -> fn(tokens, acc) that evaluates the distinct-token stream 0..num_targets into acc."""
    tokens = torch.arange(num_targets + 1)
    for name, run in runs.items():
        log: list = []
        run(tokens, RecordingAccumulator("cpu", log))
        ids = torch.cat([ids for kind, ids in log if kind == "scored"] or [torch.zeros(0, dtype=torch.long)])
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

class ForwardSpy(nn.Module):
    """Wraps a model; logs the tokens of every gradient-enabled forward (training) into the shared event log."""

    def __init__(self, inner: nn.Module, log: list):
        super().__init__()
        self.inner = inner
        self.log = log

    def forward(self, x, y, reduction: str = "mean"):
        if torch.is_grad_enabled():
            self.log.append(("train", torch.cat((x.flatten(), y.flatten())).detach().cpu()))
        return self.inner(x, y, reduction=reduction)

    def forward_logits(self, x):
        return self.inner.forward_logits(x)


def check_ttt_order(run_ttt, model: nn.Module, num_targets: int) -> Check:
    """run_ttt(model, tokens, acc): a test-time-training evaluation of the distinct-token stream into acc."""
    log: list = []
    run_ttt(ForwardSpy(model, log), torch.arange(num_targets + 1), RecordingAccumulator("cpu", log))
    scored = torch.zeros(num_targets + 1, dtype=torch.bool)
    scored[0] = True  # the stream's first token is context only, never a target
    steps = 0
    for kind, ids in log:
        if kind == "scored":
            scored[ids] = True
            continue
        steps += 1
        unseen = ids[~scored[ids]]
        if unseen.numel():
            return Check("ttt order", False, f"training forward #{steps} saw {unseen.unique().numel()} tokens not yet "
                         f"scored (first: target {int(unseen.min()) - 1}): it adapts before scoring (C3)")
    if steps == 0:
        return Check("ttt order", False, "no training forward was observed, so the order was not tested")
    return Check("ttt order", True, f"{steps} training forwards, each saw only tokens already scored")


# ---------- the whole audit ----------

def audit_model(model: nn.Module, vocab_size: int, seq_len: int = 128, stride: int = 32, ttt: TTTConfig | None = None,
                extra_cases: tuple = (), positions: int = 2, seed: int = 0) -> list[Check]:
    """All four checks on `model` with our sliding eval and score-first TTT."""
    model.eval()
    token_nll = lambda x, y: model(x, y, reduction="none")  # noqa: E731 - what the evaluation calls
    n = min(vocab_size - 1, 4 * seq_len)  # distinct tokens: the stream can be at most vocab_size long
    cfg = replace(ttt or TTTConfig(), seq_len=seq_len, stride=stride, chunk_tokens=max(n // 4, 1), epochs=1, batch_seqs=4, budget_s=0.0)
    luts = unit_byte_luts(vocab_size)

    def run_sliding(tokens, acc, world=3):
        for r in range(world):  # the ranks' shares, one after another (no process group needed)
            evaluate_sliding(token_nll, tokens, seq_len, stride, 4, luts, rank=r, world_size=world, acc=acc)

    def run_ttt(m, tokens, acc):
        score_first_ttt(m, m, tokens, cfg, luts, acc=acc)

    # The grid uses 100-target TTT chunks (many chunk boundaries); the run's own lengths use its chunk size.
    plan_sets = [({"sliding": sliding_ranges, "ttt": ttt_ranges(100)}, default_cases()),
                 ({"sliding": sliding_ranges, "ttt": ttt_ranges((ttt or TTTConfig()).chunk_tokens)}, list(extra_cases))]
    runs = {"sliding eval (3 ranks)": run_sliding, "ttt": lambda t, a: run_ttt(model, t, a)}
    return [
        check_causality(model, token_nll, vocab_size, seq_len, seed=seed),
        check_normalization(token_nll, vocab_size, seq_len, positions=positions, seed=seed),
        check_coverage([p for p in plan_sets if p[1]], runs, n),
        check_ttt_order(run_ttt, model, n),
    ]


def load_weights(path: Path) -> dict:
    """final_model.pt (raw state dict) or any artifact train_gpt.py exported (int8+zlib .ptz, .pgq), dequantized."""
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.suffix in (".ptz", ".pgq"):
        from quant.export import load_artifact

        return load_artifact(path)
    raise ValueError(f"{path}: expected final_model.pt, final_model.int8.ptz or a final_model.*.pgq artifact")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.audit", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", type=Path, help="final_model.pt, final_model.int8.ptz or final_model.*.pgq written by train_gpt.py")
    p.add_argument("--random-init", action="store_true", help="audit the architecture with random weights instead")
    p.add_argument("--config", type=Path, help="JSON object of knobs, e.g. {\"NUM_LAYERS\": \"9\"} (overrides the env)")
    p.add_argument("--seq-len", type=int, default=128, help="window length of the checks (default 128)")
    p.add_argument("--stride", type=int, default=0, help="sliding stride of the checks (default seq-len/4)")
    p.add_argument("--positions", type=int, default=2, help="positions of the normalization check (each costs V windows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("knobs", nargs="*", metavar="KNOB=VALUE", help="knob overrides, as in the training run")
    a = p.parse_args(argv)
    if bool(a.artifact) == a.random_init:
        p.error("give exactly one of --artifact PATH or --random-init")
    # The CLI builds the model the way the trainer does; train_gpt is imported here only, never by library code.
    sys.path.insert(0, str(ROOT))
    import train_gpt

    env = dict(os.environ)
    if a.config:
        env.update({k: str(v) for k, v in json.loads(a.config.read_text()).items()})
    for kv in a.knobs:
        if "=" not in kv:
            p.error(f"{kv!r} is not KNOB=VALUE")
        k, v = kv.split("=", 1)
        env[k] = v
    try:
        args = train_gpt.Hyperparameters(env=env, device_type="cpu")
        model = train_gpt.build_model(args)
    except (train_gpt.KnobError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(a.seed)
    if a.random_init:
        with torch.no_grad():  # zero-initialised projections would hide a leak: randomize every weight
            for param in model.parameters():
                param.normal_(0.0, 0.2)
    else:
        try:
            model.load_state_dict(load_weights(a.artifact), strict=True)
        except (OSError, ValueError, RuntimeError) as e:
            print(f"error: cannot load {a.artifact} into the model the knobs describe ({e}). Pass the training run's "
                  "model knobs (NUM_LAYERS, MODEL_DIM, VOCAB_SIZE, MLP_KIND, ...) in the env, --config or KNOB=VALUE.", file=sys.stderr)
            return 2
    seq_len, stride = a.seq_len, a.stride or max(a.seq_len // 4, 1)
    ttt = TTTConfig(mode=args.ttt_mode, lr=args.ttt_lr, lora_rank=args.ttt_lora_rank, chunk_tokens=args.ttt_chunk_tokens)
    eval_len = args.eval_seq_len or args.train_seq_len
    run_stride = min(args.eval_stride or eval_len, eval_len)
    extra = [(n, eval_len, run_stride, 8) for n in (eval_len * 1000 + 1, eval_len * 1000 + run_stride + 7)]
    val = sorted(Path(args.data_path).glob("fineweb_val_*.bin")) if Path(args.data_path).is_dir() else []
    if val:
        from data.shards import load_tokens

        extra.append((int(load_tokens(args.val_files).size) - 1, eval_len, run_stride, 8))
    print(f"audit: {'random-init' if a.random_init else a.artifact} vocab {args.vocab_size}, checks at L={seq_len} S={stride}; "
          f"plans also at the run's EVAL_SEQ_LEN={eval_len} EVAL_STRIDE={run_stride}" + (" and its val length" if val else ""))
    checks = audit_model(model, args.vocab_size, seq_len, stride, ttt, tuple(extra), a.positions, a.seed)
    print(format_table(checks))
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
