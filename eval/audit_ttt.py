"""Score-first test-time training, checked from outside (HARNESS.md A9 C3; D1 "pre-eval TTT").

The procedure under test runs on a stream of distinct token ids (a random permutation, id 0 left out because
it is the evaluator's padding), so an id seen anywhere tells its position. A spy wraps the model: it sees every
forward path (forward, forward_logits, hidden, any other method, and every submodule call through hooks, so
no-grad passes and side doors are seen too), with the ids it was given, the grad and train/eval mode, and a
fingerprint of the whole model state (eval/remote.state_fingerprint) before and after. The bpb accumulator
records what is scored. Then, for every event in order:

  - a forward that sees a token not scored yet must be a scoring forward: no gradients, eval mode, and no state
    change (an adaptation or a cache filled from the future);
  - while tokens are seen but not yet scored, the state may not change between forwards either (e.g. an
    optimizer step on pseudo-labels of a peeked chunk).

And by replay, at a few cut points p (chunk boundaries and inside chunks): the procedure runs again on a stream
whose tokens after target p are replaced; the model state at the moment target p is first scored must be the
same (it saw only earlier targets), every earlier target's score must be the same, and the state saved at that
moment, scored alone with the evaluator, must reproduce the real run's scores of the targets it scored.

A mixer may keep caches derived from its weights only (e.g. hwnode's flow matrix); it names them in
`audit_derived_caches`. Those change when the weights do, so the per-event rule skips them; the replays and
the black-box checks of eval/audit.py still compare them by content.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from eval.bpb import BpbAccumulator, unit_byte_luts
from eval.logprob import Scorer
from eval.remote import changed_names, state_fingerprint
from eval.sliding import score_windows, sliding_plan

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class RecordingAccumulator(BpbAccumulator):
    """A BpbAccumulator that also logs the target ids and their nll, in order, into a shared event log."""

    def __init__(self, device, log: list):
        super().__init__(device)
        self.log = log

    def add(self, nll, prev_ids, target_ids, luts) -> None:
        self.log.append(("scored", target_ids.detach().flatten().cpu(), nll.detach().flatten().double().cpu()))
        super().add(nll, prev_ids, target_ids, luts)


def derived_cache_names(model: nn.Module) -> set[str]:
    """Fingerprint keys of the weight-derived caches (attributes or buffers) the model's modules declare."""
    out = set()
    for mname, m in model.named_modules(remove_duplicate=False):
        for key in getattr(m, "audit_derived_caches", ()):
            out |= {f"{kind} {mname + '.' if mname else ''}{key}" for kind in ("attribute", "buffer")}
    return out


@dataclass
class Forward:
    ids: torch.Tensor
    grad: bool
    training: bool
    before: dict
    after: dict = field(default_factory=dict)
    path: str = ""


class ForwardSpy(nn.Module):
    """Wraps a model and logs every forward through it (any method, any submodule) into `log`.
    `on_enter(ids, inner)` runs before a top-level forward, with the ids it was called with."""

    def __init__(self, inner: nn.Module, log: list, on_enter=None):
        super().__init__()
        self.inner = inner
        object.__setattr__(self, "_events", log)
        object.__setattr__(self, "_on_enter", on_enter)
        object.__setattr__(self, "_depth", 0)
        object.__setattr__(self, "_current", None)
        handles = []
        for m in inner.modules():
            handles.append(m.register_forward_pre_hook(lambda mod, args, kwargs: self._enter(type(mod).__name__, args, kwargs), with_kwargs=True))
            handles.append(m.register_forward_hook(lambda mod, args, out: self._exit(), always_call=True))
        object.__setattr__(self, "_handles", handles)
        self.eval()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def _enter(self, path: str, args=(), kwargs=None) -> None:
        ids = [t.detach().flatten().cpu() for t in (*args, *(kwargs or {}).values())
               if isinstance(t, torch.Tensor) and t.dtype in _INT_DTYPES]
        if self._depth == 0:
            if self._on_enter is not None:
                self._on_enter(torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long), self.inner)
            training = any(m.training for m in self.inner.modules())
            object.__setattr__(self, "_current", Forward(torch.zeros(0, dtype=torch.long), torch.is_grad_enabled(), training,
                                                         state_fingerprint(self.inner), path=path))
        self._current.ids = torch.cat([self._current.ids, *ids]) if ids else self._current.ids
        object.__setattr__(self, "_depth", self._depth + 1)

    def _exit(self) -> None:
        object.__setattr__(self, "_depth", self._depth - 1)
        if self._depth == 0:
            ev = self._current
            ev.after = state_fingerprint(self.inner)
            ev.ids = ev.ids.unique()
            self._events.append(("forward", ev))

    def _wrapped(self, name: str, fn):
        def call(*args, **kwargs):
            self._enter(name, args, kwargs)
            try:
                return fn(*args, **kwargs)
            finally:
                self._exit()
        return call

    def forward(self, x, y=None, reduction: str = "mean"):
        return self._wrapped("forward", lambda: self.inner(x, y, reduction=reduction) if y is not None else self.inner(x))()

    def forward_logits(self, x):
        return self._wrapped("forward_logits", self.inner.forward_logits)(x)

    def hidden(self, x):
        return self._wrapped("hidden", self.inner.hidden)(x)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            attr = getattr(self._modules["inner"], name)
            return self._wrapped(name, attr) if callable(attr) and not isinstance(attr, nn.Module) else attr


def order_violations(log: list, stream: torch.Tensor, vocab_size: int, ignore: set[str]) -> tuple[list[str], int]:
    """(violations, forwards seen) of the event rules above; token stream[0] is context, id 0 is padding."""
    scored = torch.zeros(vocab_size, dtype=torch.bool)
    scored[0] = scored[stream[0]] = True
    position = torch.full((vocab_size,), -1, dtype=torch.long)
    position[stream] = torch.arange(stream.numel())
    pending = torch.zeros(vocab_size, dtype=torch.bool)
    problems, last, forwards = [], None, 0

    def changed(a, b):
        return [n for n in changed_names(a, b) if n not in ignore]

    def first(ids):
        return f"target {int(position[ids].min()) - 1}"

    for event in log:
        if event[0] == "scored":
            ids = event[1]
            scored[ids] = True
            pending[ids] = False
            continue
        ev: Forward = event[1]
        forwards += 1
        where = f"forward #{forwards} ({ev.path}, {'grad' if ev.grad else 'no grad'}, {'train' if ev.training else 'eval'} mode)"
        if last is not None and pending.any() and changed(last, ev.before):
            problems.append(f"before {where} the state changed ({', '.join(changed(last, ev.before)[:3])}) while "
                            f"{int(pending.sum())} seen tokens were not scored yet (first: {first(torch.nonzero(pending).flatten())})")
        ids = ev.ids[(ev.ids >= 0) & (ev.ids < vocab_size)]
        unseen = ids[~scored[ids]]
        if unseen.numel():
            why = [w for w, bad in (("gradients on (it adapts before scoring)", ev.grad), ("train() mode", ev.training),
                                    (f"it changed {', '.join(changed(ev.before, ev.after)[:3])}", bool(changed(ev.before, ev.after))))
                   if bad]
            if why:
                problems.append(f"{where} saw {unseen.numel()} tokens not scored yet (first: {first(unseen)}) with " + "; ".join(why))
            pending[unseen] = True
        last = ev.after
    return problems, forwards


def _distinct_stream(vocab_size: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(vocab_size - 1, generator=g)[: n + 1] + 1  # ids 1..V-1: 0 is the evaluator's padding


def _perturbed_after(stream: torch.Tensor, p: int, seed: int) -> torch.Tensor:
    """The same prefix through token p (target p - 1), every later token another of the same distinct ids."""
    g = torch.Generator().manual_seed(seed)
    tail = stream[p + 1 :]
    if tail.numel() < 2:
        return stream.clone()
    perm = torch.randperm(tail.numel(), generator=g)
    perm = torch.where(perm == torch.arange(tail.numel()), perm.roll(1), perm)  # no token keeps its place
    return torch.cat((stream[: p + 1], tail[perm]))


def _scores(log: list, stream: torch.Tensor, vocab_size: int) -> dict[int, float]:
    """target index -> its nll, from the accumulator's records (the last one wins; coverage checks repeats)."""
    position = torch.full((vocab_size,), -1, dtype=torch.long)
    position[stream] = torch.arange(stream.numel())
    out = {}
    for event in log:
        if event[0] == "scored":
            for i, v in zip((position[event[1]] - 1).tolist(), event[2].tolist()):
                out[i] = v
    return out


def _exactly_once(log: list, stream: torch.Tensor, vocab_size: int, num_targets: int) -> str | None:
    position = torch.full((vocab_size,), -1, dtype=torch.long)
    position[stream] = torch.arange(stream.numel())
    ids = torch.cat([e[1] for e in log if e[0] == "scored"] or [torch.zeros(0, dtype=torch.long)])
    counts = torch.bincount(position[ids] - 1, minlength=num_targets) if ids.numel() else torch.zeros(num_targets, dtype=torch.long)
    if counts.numel() != num_targets or not counts.eq(1).all():
        bad = int(torch.nonzero(counts[:num_targets] != 1)[0]) if (counts[:num_targets] != 1).any() else num_targets
        return (f"the pass scored {int((counts > 1).sum())} targets more than once and {int((counts == 0).sum())} never "
                f"(first: target {bad}): every target must be scored exactly once (C4)")
    return None


def _detached_copy(model: nn.Module) -> nn.Module:
    """A deep copy that survives the original's parametrizations being removed (torch shares the parametrized class,
    whose properties removal deletes): each parametrized module of the copy gets its own class."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if parametrize.is_parametrized(m):
            cls = type(m)
            m.__class__ = type(cls.__name__, cls.__bases__, {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")})
        m._forward_pre_hooks.clear()  # the spy's hooks came along with the copy
        m._forward_hooks.clear()
    return clone


def _run(run_ttt, model: nn.Module, stream: torch.Tensor, on_enter=None) -> list:
    log: list = []
    spy = ForwardSpy(model, log, on_enter)
    try:
        run_ttt(spy, stream, RecordingAccumulator("cpu", log))
    finally:
        spy.remove()
    return log


def check_ttt_score_first(run_ttt, model: nn.Module, vocab_size: int, num_targets: int, chunks: list[tuple[int, int]],
                          seq_len: int, stride: int, batch_seqs: int, replays: int = 2, seed: int = 0, tol: float = 1e-5):
    """run_ttt(model, tokens, acc): a test-time-training evaluation of `tokens` into acc (the model it is given is
    the spy). chunks: its scored-then-adapted target ranges, in order; the states at the starts of `replays` of them
    (the second and the last) are replayed. Returns (passed, detail)."""
    stream = _distinct_stream(vocab_size, num_targets, seed)
    cuts = sorted({lo for lo, _ in (chunks[1:2] + chunks[-1:])[:replays] if 0 < lo < num_targets})
    real_states: dict[int, dict] = {}

    def grab_real(ids, inner):
        for p in cuts:
            if p not in real_states and bool((ids == stream[p + 1]).any()):
                real_states[p] = state_fingerprint(inner)

    log = _run(run_ttt, model, stream, grab_real)
    problems, forwards = order_violations(log, stream, vocab_size, derived_cache_names(model))
    if forwards == 0:
        return False, "the procedure ran no forward through the model it was given, so nothing was tested"
    if problems:
        return False, problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
    trainers = sum(1 for e in log if e[0] == "forward" and e[1].grad)
    once = _exactly_once(log, stream, vocab_size, num_targets)
    if once:
        return False, once
    real = _scores(log, stream, vocab_size)
    worst = 0.0
    for k, p in enumerate(cuts):
        other = _perturbed_after(stream, p, seed + 1 + k)
        saved = {}

        def grab(ids, inner, p=p, other=other, saved=saved):
            if not saved and bool((ids == other[p + 1]).any()):
                saved["fingerprint"], saved["model"] = state_fingerprint(inner), _detached_copy(inner)

        other_log = _run(run_ttt, model, other, grab)
        if p not in real_states or not saved:
            return False, f"cut at target {p}: no forward ever saw that target's token, so its score came from elsewhere"
        diff = changed_names(real_states[p], saved["fingerprint"])
        if diff:
            return False, (f"cut at target {p}: the model state when target {p} is first scored depends on later tokens "
                           f"(replacing every token after it changed {', '.join(diff[:3])}): it adapted on the future")
        other_scores = _scores(other_log, other, vocab_size)
        for i in range(p):
            d = abs(real.get(i, float("nan")) - other_scores.get(i, float("nan")))
            if not d <= tol:
                return False, f"cut at target {p}: target {i}'s score changed by {d:.3g} nats when only tokens after target {p} changed"
            worst = max(worst, d)
        # Replay: the state saved when target p was first scored scores that chunk alone, with the evaluator.
        clone = saved["model"].eval()
        lo, hi = next((a, b) for a, b in chunks if a == p)
        replay_log: list = []
        with torch.no_grad():
            score_windows(Scorer(clone, vocab_size), stream, sliding_plan(lo, hi, seq_len, stride), seq_len, batch_seqs,
                          unit_byte_luts(vocab_size), RecordingAccumulator("cpu", replay_log))
        for i, v in _scores(replay_log, stream, vocab_size).items():
            d = abs(v - real.get(i, float("nan")))
            if not d <= tol:
                return False, (f"replay at target {p}: the state saved when target {p} was first scored gives target {i} "
                               f"{v:.6f} nats, the run scored it {real.get(i, float('nan')):.6f}: that score did not come from "
                               "the model state (something outside it, or a change during scoring)")
    return True, (f"{forwards} forwards ({trainers} with gradients), each saw only scored tokens or left the state unchanged "
                  f"until they were scored; cuts at targets {cuts}: the state and every earlier score are unchanged when all "
                  f"later tokens change (max {worst:.1e} nats), and the saved state reproduces the chunk's scores")
