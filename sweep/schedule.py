"""Run a list of RunSpecs, `jobs` at a time, stopping clearly losing runs early.

Early stopping compares runs at equal TRAINING TIME (every run gets the same wall-clock budget, so that is the
fair axis): once a run has trained for `stop_after` of the budget, its recent train loss is compared with the
best other run's loss at the same time (finished runs and running ones alike). A run more than `margin` nats
behind is stopped and recorded as `pruned`. Loss is per token in nats, so the margin means the same for every run
of one tokenizer.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sweep.runs import ResultStore, Running, RunSpec, finished_row, start_run


def smoothed(curve: list[tuple[int, float]], window: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(times, running-mean losses): single-batch train losses are noisy."""
    t = np.array([c[0] for c in curve], dtype=np.float64)
    loss = np.array([c[1] for c in curve], dtype=np.float64)
    if len(loss) >= window:
        loss = np.convolve(loss, np.ones(window) / window, mode="full")[: len(loss)]
        loss[: window - 1] = [np.mean(loss[: i + 1]) for i in range(window - 1)]
    return t, loss


def loss_at(curve: list[tuple[int, float]], t_ms: float) -> float | None:
    """The curve's smoothed loss at training time t_ms, or None if the curve has not reached t_ms yet."""
    if len(curve) < 2 or curve[-1][0] < t_ms:
        return None
    t, loss = smoothed(curve)
    return float(np.interp(t_ms, t, loss))


def sigterm_as_interrupt(signum, frame) -> None:
    """A SIGTERM handler: it behaves like Ctrl-C, so running trainers are stopped, recorded runs stay, a rerun resumes."""
    raise KeyboardInterrupt


def losing(run_curve: list[tuple[int, float]], others: list[list[tuple[int, float]]], budget_ms: float,
           stop_after: float, margin: float) -> tuple[bool, str]:
    """Is this run clearly behind the best other run at its current training time?"""
    if len(run_curve) < 3 or run_curve[-1][0] < stop_after * budget_ms:
        return False, ""
    t_now = run_curve[-1][0]
    mine = float(smoothed(run_curve)[1][-1])
    if not np.isfinite(mine):
        return True, f"pruned at {t_now / 1000:.0f}s: non-finite train loss"
    refs = [r for r in (loss_at(c, t_now) for c in others) if r is not None and np.isfinite(r)]
    if not refs:
        return False, ""
    best = min(refs)
    if mine > best + margin:
        return True, f"pruned at {t_now / 1000:.0f}s: train loss {mine:.3f} vs best {best:.3f} (+{mine - best:.3f} > {margin})"
    return False, ""


def run_all(specs: list[RunSpec], out: Path, trainer: Path, env: dict[str, str], scheme: str, jobs: int,
            budget_s: float, stop_after: float = 0.5, margin: float = 0.15, poll_s: float = 1.0,
            on_result: Callable[[dict], None] | None = None, log: Callable[[str], None] = print,
            context: dict | None = None) -> list[dict]:
    """Start pending specs as slots free up; record each finished, failed or pruned run in the results file (with
    `context`, what besides the shape made the result). A run recorded as failed is pending again. Returns the rows
    recorded by this call."""
    store = ResultStore(out)
    done = {k: r for k, r in store.load().items() if r["status"] != "failed"}
    pending = [s for s in specs if s.run_id not in done]
    finished_curves = [r.get("curve") or [] for r in done.values()]
    retried = sum(1 for r in store.load().values() if r["status"] == "failed" and r["run_id"] in {s.run_id for s in specs})
    if len(pending) < len(specs) or retried:
        log(f"sweep: resuming, {len(specs) - len(pending)} of {len(specs)} runs already recorded in {store.path}"
            + (f"; retrying {retried} that failed" if retried else ""))
    recorded: list[dict] = []
    running: list[Running] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                spec = pending.pop(0)
                running.append(start_run(spec, out, trainer, env))
                log(f"sweep: start {spec.run_id} ({spec.shape.layers}x{spec.shape.dim} {spec.kind} "
                    f"e={spec.expansion} share={spec.prediction.share:.1%} predicted {spec.prediction.total_bytes} bytes)")
            time.sleep(poll_s)
            for run in list(running):
                run.poll_curve()
                status, note = None, ""
                if run.proc.poll() is None and margin > 0:
                    others = finished_curves + [r.curve for r in running if r is not run]
                    lose, note = losing(run.curve, others, 1000.0 * budget_s, stop_after, margin)
                    if not lose:
                        continue
                    run.stop()
                    status = "pruned"
                elif run.proc.poll() is None:
                    continue
                run.poll_curve()
                row = finished_row(run, scheme, status, note, context)
                store.append(row)
                recorded.append(row)
                finished_curves.append(row["curve"])
                running.remove(run)
                bpb = f"val_bpb {row['val_bpb']:.4f} total {row['total_bytes']} bytes" if row["status"] == "ok" else row["note"]
                log(f"sweep: {row['status']} {run.spec.run_id} in {row['wall_s']:.0f}s: {bpb}")
                if on_result:
                    on_result(row)
    finally:
        for run in running:  # interrupted: leave no trainer behind; these runs are redone on resume
            run.stop()
    return recorded
