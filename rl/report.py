"""Tables and the learning-curve plot of a comparison, rebuilt from the per-run JSON files.

Across seeds: mean ± population std (ddof=0, as the reference); throughput is the median run's.
Training metric = last-100 training episodes (stochastic policy, the reference's metric); eval =
deterministic policy on a separate env.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rl.presets import SOLVED_RETURN
from rl.variants import get_variant

RUN_FIELDS = ["variant", "seed", "preset", "env_steps", "params_total", "params_actor", "params_critic",
              "train_last100_mean", "eval_mean", "eval_std", "eval_solved_fraction", "train_seconds",
              "env_steps_per_second"]
SUMMARY_FIELDS = ["variant", "preset", "steps", "seeds", "params", "train_mean", "train_std", "eval_mean",
                  "eval_std", "eval_seeds_solved", "env_steps_per_second", "reported_mean", "reported_std"]


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


def plot_curves(runs: list[dict], variants: list[str], title: str, path: Path) -> None:
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, preset: str, steps: int, variants: list[str], paths: list[Path]) -> str:
    """Writes runs/summary CSV, summary markdown and curves PNG; returns the markdown ('' if no runs)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    if not runs:
        return ""
    tag = f"{preset}_{steps}"
    with open(out / f"runs_{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, RUN_FIELDS)
        w.writeheader()
        for r in runs:
            flat = {k: r[k] for k in RUN_FIELDS if k in r}
            flat.update(params_total=r["params"]["total"], params_actor=r["params"]["actor"],
                        params_critic=r["params"]["critic"])
            w.writerow(flat)
    rows = summarize(runs, variants, preset, steps)
    with open(out / f"summary_{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, SUMMARY_FIELDS)
        w.writeheader()
        w.writerows(rows)
    eval_eps = sorted({r["eval_episodes"] for r in runs})
    table = markdown_table(rows, preset, steps, eval_eps[0] if len(eval_eps) == 1 else None,
                           sorted({r["env_steps"] for r in runs}))
    (out / f"summary_{tag}.md").write_text(table + "\n")
    plot_curves(runs, variants, f"LunarLander-v3, preset {preset}, {steps:,} steps", out / f"curves_{tag}.png")
    return table
