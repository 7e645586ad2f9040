"""Aggregate a sweep: results.csv, the Pareto front of bpb against artifact bytes, PNG plots, a recommendation."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from data.ledger import Ledger

COLUMNS = ("run_id", "status", "kind", "share_target", "share", "expansion", "layers", "dim", "heads", "kv_heads",
           "mlp_mult", "params", "model_params", "predicted_total_bytes", "total_bytes", "model_bytes", "code_bytes",
           "val_bpb", "val_loss", "steps", "train_time_ms", "wall_s", "scheme", "note")


def flat(row: dict) -> dict:
    shape = row.get("shape", {})
    return {c: row.get(c, shape.get(c, "")) for c in COLUMNS} | {"heads": shape.get("heads"), "kv_heads": shape.get("kv_heads")}


TOOL = "python -m sweep"
REPORT_FILES = ("results.csv", "recommendation.txt", "pareto_bpb_vs_bytes.png", "bpb_vs_axes.png")


def csv_text(rows: list[dict]) -> str:
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=COLUMNS)
    w.writeheader()
    for row in sorted(rows, key=lambda r: (r["status"] != "ok", r.get("val_bpb") or 9e9)):
        w.writerow({k: ("" if v is None else v) for k, v in flat(row).items()})
    return f.getvalue()


def check_report_writable(out: Path) -> None:
    """WouldOverwrite if OUT holds a report file the sweep did not write (e.g. the user's own results.csv)."""
    Ledger(out, TOOL).check(*REPORT_FILES)


def pareto_front(rows: list[dict]) -> list[dict]:
    """Finished runs no other run beats on both artifact bytes and bpb (fewer bytes first)."""
    front, best = [], float("inf")
    for r in sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (r["total_bytes"], r["val_bpb"])):
        if r["val_bpb"] < best:
            front.append(r)
            best = r["val_bpb"]
    return front


def recommend(rows: list[dict], budget: int) -> str:
    ok = [r for r in rows if r["status"] == "ok" and r["total_bytes"] <= budget]
    if not ok:
        return "no finished run fits the budget; nothing to recommend"
    best = min(ok, key=lambda r: r["val_bpb"])
    s = best["shape"]
    ranked = sorted(ok, key=lambda r: r["val_bpb"])
    gap = f"; next best {ranked[1]['run_id']} at {ranked[1]['val_bpb']:.4f}" if len(ranked) > 1 else ""
    return (f"best under {budget} bytes: {best['run_id']} val_bpb {best['val_bpb']:.4f} at {best['total_bytes']} bytes "
            f"({s['layers']}x{s['dim']} {best['kind']} e={best['expansion']} embedding share {best['share']:.1%}){gap}. "
            f"Env: " + " ".join(f"{k}={v}" for k, v in best["env"].items()))


def pruned_estimates(rows: list[dict]) -> list[dict]:
    """Pruned runs with a rough bpb: their last train loss times the finished runs' median bpb per nat of val loss
    (a property of the tokenizer and validation text). Only for showing where they stood; never ranked."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("val_loss")]
    if not ok:
        return []
    ratio = sorted(r["val_bpb"] / r["val_loss"] for r in ok)[len(ok) // 2]
    return [{**r, "bpb_estimate": r["curve"][-1][1] * ratio} for r in rows if r["status"] == "pruned" and r.get("curve")]


def plot(rows: list[dict], ledger: Ledger, budget: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    pruned = pruned_estimates(rows)
    kinds = sorted({r["kind"] for r in ok + pruned})
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(kinds)}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5))
    for k in kinds:
        pts = [r for r in ok if r["kind"] == k]
        ax.scatter([r["total_bytes"] for r in pts], [r["val_bpb"] for r in pts], color=colors[k], label=k if pts else None, s=36)
    for k in kinds:
        pts = [r for r in pruned if r["kind"] == k]
        ax.scatter([r["predicted_total_bytes"] for r in pts], [r["bpb_estimate"] for r in pts], color=colors[k],
                   marker="x", s=36, label=f"{k} pruned (train loss at stop, bpb units; predicted bytes)" if pts else None)
    front = pareto_front(ok)
    ax.step([r["total_bytes"] for r in front], [r["val_bpb"] for r in front], where="post", color="black", lw=1,
            label="Pareto front")
    for r in front:
        ax.annotate(r["run_id"], (r["total_bytes"], r["val_bpb"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axvline(budget, color="red", ls="--", lw=1, label=f"budget {budget:,}")
    ax.set_xlabel("artifact bytes (code + compressed model)")
    ax.set_ylabel("val_bpb (roundtrip)")
    ax.set_title("bpb vs artifact bytes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(ledger.write("pareto_bpb_vs_bytes.png", lambda f: fig.savefig(f, format="png", dpi=120)))
    plt.close(fig)

    axes_spec = [("share", "embedding share (of parameters)"), ("expansion", "expansion e (hidden / d)"), ("kind", "mixer kind")]
    fig, axs = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
    for ax, (key, label) in zip(axs, axes_spec):
        for k in kinds:
            pts = [r for r in ok if r["kind"] == k]
            xs = [kinds.index(k) for _ in pts] if key == "kind" else [r[key] for r in pts]
            ax.scatter(xs, [r["val_bpb"] for r in pts], color=colors[k], label=k if pts else None, s=30)
            cut = [r for r in pruned if r["kind"] == k]
            xs = [kinds.index(k) for _ in cut] if key == "kind" else [r[key] for r in cut]
            ax.scatter(xs, [r["bpb_estimate"] for r in cut], color=colors[k], marker="x", s=30,
                       label=f"{k} pruned" if cut else None)
        if key == "kind":
            ax.set_xticks(range(len(kinds)), kinds)
        ax.set_xlabel(label)
    axs[0].set_ylabel("val_bpb (roundtrip)")
    axs[0].legend(fontsize=8)
    fig.suptitle("bpb along each grid axis")
    fig.tight_layout()
    paths.append(ledger.write("bpb_vs_axes.png", lambda f: fig.savefig(f, format="png", dpi=120)))
    plt.close(fig)
    return paths


def write_report(rows: list[dict], out: Path, budget: int, with_plots: bool = True) -> tuple[str, list[Path]]:
    """results.csv, recommendation.txt (and the plots), each written atomically and only over the sweep's own files."""
    ledger = Ledger(out, TOOL)
    ledger.check(*REPORT_FILES)
    Path(out).mkdir(parents=True, exist_ok=True)
    ledger.write("results.csv", csv_text(rows))
    text = recommend(rows, budget)
    ledger.write("recommendation.txt", text + "\n")
    return text, (plot(rows, ledger, budget) if with_plots else [])
