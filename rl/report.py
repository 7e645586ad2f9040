"""Tables and the learning-curve plot of a comparison, rebuilt from the per-run JSON files.

Across seeds: mean ± population std (ddof=0, as the reference); throughput is the median run's.
Training metric = last-100 training episodes (stochastic policy, the reference's metric); eval =
deterministic policy on a separate env.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from data.ledger import Ledger
from rl.presets import SOLVED_RETURN
from rl.variants import get_variant

TOOL = "python -m rl.compare"

RUN_FIELDS = ["variant", "seed", "preset", "env_steps", "params_total", "params_actor", "params_critic",
              "train_last100_mean", "eval_mean", "eval_std", "eval_solved_fraction", "train_seconds",
              "env_steps_per_second"]
SUMMARY_FIELDS = ["variant", "preset", "steps", "seeds", "params", "train_mean", "train_std", "eval_mean",
                  "eval_std", "eval_seeds_solved", "env_steps_per_second", "reported_mean", "reported_std"]


class RunRecordError(ValueError):
    """A file in OUT/runs/ that is not a finished run record; the message names it and the fix."""


RECORD_FIELDS = {"variant": str, "seed": int, "preset": str, "env_steps": int, "params": dict, "eval_episodes": int,
                 "eval_mean": float, "eval_std": float, "eval_solved_fraction": float, "train_seconds": float,
                 "env_steps_per_second": float, "curve": list}


def load_run(path: Path) -> dict:
    """One finished run (rl/run.py's result), checked field by field so a damaged file is named, not half-read."""
    fix = "delete it and rerun the comparison to redo that run"
    try:
        run = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RunRecordError(f"{path} is not a readable run record ({e}); {fix}") from None
    if not isinstance(run, dict):
        raise RunRecordError(f"{path} is not a run record (not a JSON object); {fix}")
    bad = [k for k, t in RECORD_FIELDS.items()
           if not isinstance(run.get(k), (int, float) if t is float else t) or isinstance(run.get(k), bool)]
    if not bad and not all(isinstance(run["params"].get(k), int) for k in ("total", "actor", "critic")):
        bad = ["params.total/actor/critic"]
    if bad:
        raise RunRecordError(f"{path} is not a finished run record (missing or wrong: {', '.join(bad)}); {fix}")
    return run


def _mean_std(values: list[float | None]) -> tuple[float, float]:
    vals = [v for v in values if v is not None]
    return (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))


def summarize(runs: list[dict], variants: list[str], preset: str, steps: int) -> list[dict]:
    rows = []
    for name in variants:
        mine = sorted((r for r in runs if r["variant"] == name), key=lambda r: r["seed"])
        if not mine:
            continue
        train_mean, train_std = _mean_std([r["train_last100_mean"] for r in mine])
        eval_mean, eval_std = _mean_std([r["eval_mean"] for r in mine])
        reported = get_variant(name).reported
        rows.append({
            "variant": name, "preset": preset, "steps": steps, "seeds": ",".join(str(r["seed"]) for r in mine),
            "params": mine[0]["params"]["total"], "train_mean": train_mean, "train_std": train_std,
            "eval_mean": eval_mean, "eval_std": eval_std,
            "eval_seeds_solved": sum(r["eval_mean"] >= SOLVED_RETURN for r in mine),
            # median: one run slowed by a busy machine should not set the variant's throughput
            "env_steps_per_second": float(np.median([r["env_steps_per_second"] for r in mine])),
            "reported_mean": reported[0] if reported else None, "reported_std": reported[1] if reported else None,
        })
    return rows


def markdown_table(rows: list[dict], preset: str, steps: int, eval_episodes: int | None,
                   env_steps: list[int]) -> str:
    ref_note = "reference (PR, 500K, 3 seeds)" if preset == "ref" else "reference (not comparable: preset != ref)"
    actual = ", ".join(f"{n:,}" for n in env_steps)
    lines = [
        f"preset `{preset}`, {steps:,} steps requested per run ({actual} env steps run: SB3 rounds up to "
        f"whole rollouts); mean ± std (ddof=0) over seeds",
        "",
        f"| variant | params | seeds | train last-100 mean | det. eval ({eval_episodes} ep) | "
        f"seeds eval ≥{SOLVED_RETURN:.0f} | env steps/s (median) | {ref_note} |",
        "|---|---:|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        ref = f"{r['reported_mean']:.1f} ± {r['reported_std']:.1f}" if r["reported_mean"] is not None else "–"
        n = len(r["seeds"].split(","))
        lines.append(f"| {r['variant']} | {r['params']:,} | {r['seeds']} | {r['train_mean']:.1f} ± {r['train_std']:.1f}"
                     f" | {r['eval_mean']:.1f} ± {r['eval_std']:.1f} | {r['eval_seeds_solved']}/{n}"
                     f" | {r['env_steps_per_second']:.0f} | {ref} |")
    return "\n".join(lines)


def plot_curves(runs: list[dict], variants: list[str], title: str, ledger: Ledger, filename: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in variants:
        curves = [[(s, m) for s, m in r["curve"] if m is not None] for r in runs if r["variant"] == name]
        curves = [c for c in curves if c]
        if not curves:
            continue
        # Seeds of one preset share rollout boundaries; align on the shortest curve.
        n = min(len(c) for c in curves)
        steps = np.array([c[i][0] for i in range(n) for c in curves[:1]])
        values = np.array([[c[i][1] for i in range(n)] for c in curves])
        line, = ax.plot(steps, values.mean(0), label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    ax.axhline(SOLVED_RETURN, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel("last-100 training episode return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    ledger.write(filename, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def report_files(preset: str, steps: int) -> list[str]:
    tag = f"{preset}_{steps}"
    return [f"runs_{tag}.csv", f"summary_{tag}.csv", f"summary_{tag}.md", f"curves_{tag}.png"]


def _csv(fields: list[str], rows: list[dict]) -> str:
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fields)
    w.writeheader()
    w.writerows(rows)
    return f.getvalue()


def write_report(out: Path, preset: str, steps: int, variants: list[str], paths: list[Path]) -> str:
    """Writes runs/summary CSV, summary markdown and curves PNG; returns the markdown ('' if no runs). Files are written
    atomically, and only over files this tool wrote (others: WouldOverwrite)."""
    runs = [load_run(p) for p in paths]
    if not runs:
        return ""
    ledger = Ledger(out, TOOL)
    runs_csv, summary_csv, summary_md, curves_png = report_files(preset, steps)
    ledger.check(runs_csv, summary_csv, summary_md, curves_png)
    flat_runs = []
    for r in runs:
        flat = {k: r[k] for k in RUN_FIELDS if k in r}
        flat.update(params_total=r["params"]["total"], params_actor=r["params"]["actor"],
                    params_critic=r["params"]["critic"])
        flat_runs.append(flat)
    ledger.write(runs_csv, _csv(RUN_FIELDS, flat_runs))
    rows = summarize(runs, variants, preset, steps)
    ledger.write(summary_csv, _csv(SUMMARY_FIELDS, rows))
    eval_eps = sorted({r["eval_episodes"] for r in runs})
    table = markdown_table(rows, preset, steps, eval_eps[0] if len(eval_eps) == 1 else None,
                           sorted({r["env_steps"] for r in runs}))
    ledger.write(summary_md, table + "\n")
    plot_curves(runs, variants, f"LunarLander-v3, preset {preset}, {steps:,} steps", ledger, curves_png)
    return table
