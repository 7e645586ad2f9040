"""Experiment 5: parameter allocation at a fixed byte budget (seed 002), with the project's own sweep.

`python -m sweep` sizes every (embedding share, GLU expansion) point of the grid to the byte budget (arch.budget:
d from the share, depth from the rest, bytes from the calibrated model of the int6+zstd artifact) and trains each
once, for a fixed number of steps (no wall-clock cap, no early stopping). Phase A runs the whole grid with seed 1;
phase B reruns the three best points, and the best e=2.66 point, with seed 2. Each phase is a sweep folder of its
own (OUT/allocation/sweep-seed<k>/, resumable); the sweep's results rows become this experiment's run records.
"""
from __future__ import annotations

import math
from pathlib import Path

from bench.claims.data import study_dataset
from bench.claims.lm import write_json
from bench.claims.stats import fmt_mean_std, mean_std

SHARES = (0.15, 0.25, 0.35, 0.45)
EXPANSIONS = (2.0, 2.66, 3.0, 4.0)
SCHEME = "int6+zstd"
BUDGET, QUICK_BUDGET = 700_000, 60_000  # model bytes (code excluded: --code-bytes 0)


def sweep_argv(out: Path, quick: bool, seed: int, shares=SHARES, expansions=EXPANSIONS) -> list[str]:
    ds = study_dataset(1024 if quick else 2048, quick)
    if quick:
        size = ["--bytes", str(QUICK_BUDGET), "--dims", "32:96", "--head-dim", "16", "--layers", "1:4", "--iterations", "3",
                "--env", "TRAIN_BATCH_TOKENS=1024", "--env", "TRAIN_SEQ_LEN=64", "--env", "VAL_BATCH_SIZE=16384",
                "--float-max-numel", "256", "--min-fill", "0.5"]
        warmdown = 1
    else:
        size = ["--bytes", str(BUDGET), "--dims", "64:512", "--head-dim", "32", "--layers", "1:16", "--iterations", "150",
                "--float-max-numel", "4096", "--env", "TRAIN_BATCH_TOKENS=4096"]  # the LM experiments' protocol
        warmdown = 30
    return ["--out", str(out), "--data-path", str(ds.data_path), "--tokenizer-path", str(ds.tokenizer_path),
            "--vocab", str(ds.vocab), "--scheme", SCHEME, "--code-bytes", "0", "--kinds", "swiglu", "--kv-ratio", "1",
            "--regime", "cpu-short", "--shares", ",".join(map(str, shares)), "--expansions", ",".join(map(str, expansions)),
            "--seconds", "0", "--stop-margin", "0", "--threads", "1", "--seed", str(seed), "--no-plots",
            "--env", f"WARMDOWN_ITERS={warmdown}", "--env", "EVAL_STRIDE=0", *size]


def run_sweep(argv: list[str], jobs: int) -> None:
    from sweep.__main__ import main as sweep_main

    try:
        sweep_main([*argv, "--jobs", str(jobs)])
    except SystemExit as e:  # the sweep reports bad grids and interruptions by exiting
        if e.code not in (0, None):
            raise RuntimeError(f"python -m sweep {' '.join(argv)} failed: {e.code}") from None


def sweep_rows(folder: Path) -> list[dict]:
    from sweep.runs import ResultStore

    return list(ResultStore(folder).load().values())


def point_name(row: dict) -> str:
    return f"share{row['share_target']:g}-e{row['expansion']:g}"


def record(row: dict, seed: int, data: dict, budget: int) -> dict:
    s = row["shape"]
    return {"experiment": "allocation", "arm": point_name(row), "order": 0, "seed": seed, "status": row["status"],
            "note": row.get("note", ""), "run_id": row["run_id"], "data": data, "share_target": row["share_target"],
            "share": row["share"], "expansion": row["expansion"], "layers": s["layers"], "dim": s["dim"],
            "params": row.get("model_params") or row["params"], "model_bytes": row.get("model_bytes"),
            "predicted_model_bytes": row.get("predicted_model_bytes"), "val_bpb": row.get("val_bpb"),
            "steps": row.get("steps"), "train_time_ms": row.get("train_time_ms"), "wall_s": row.get("wall_s"),
            "scheme": SCHEME, "budget_bytes": budget, "curve": row.get("curve", [])}


def write_records(out: Path, seed: int, quick: bool) -> list[dict]:
    ds = study_dataset(1024 if quick else 2048, quick).to_json()
    rows = sweep_rows(out / "allocation" / f"sweep-seed{seed}")
    for row in rows:
        write_json(out / "allocation" / "runs" / f"{point_name(row)}__seed{seed}.json",
                   record(row, seed, ds, QUICK_BUDGET if quick else BUDGET))
    return rows


def top_points(rows: list[dict], k: int = 3) -> list[tuple[float, float]]:
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["val_bpb"])
    picked = [(r["share_target"], r["expansion"]) for r in ok[:k]]
    glu = [r for r in ok if abs(r["expansion"] - 2.66) < 1e-9]
    if glu and (glu[0]["share_target"], glu[0]["expansion"]) not in picked:
        picked.append((glu[0]["share_target"], glu[0]["expansion"]))
    return picked


def run_study(out: Path, quick: bool, jobs: int) -> None:
    folder = out / "allocation"
    run_sweep(sweep_argv(folder / "sweep-seed1", quick, 1), jobs)
    first = write_records(out, 1, quick)
    for share, e in top_points(first):  # each is one grid point (the same shape as in phase A)
        run_sweep(sweep_argv(folder / "sweep-seed2", quick, 2, [share], [e]), jobs)
    write_records(out, 2, quick)


# ---------- report ----------

def pareto(points: list[dict]) -> list[dict]:
    """Points no other point beats on both (mean) model bytes and (mean) bpb."""
    front, best = [], math.inf
    for p in sorted(points, key=lambda p: (p["bytes"], p["bpb"])):
        if p["bpb"] < best:
            front.append(p)
            best = p["bpb"]
    return front


def report(records: list[dict], folder: Path, plots: bool) -> str:
    from bench.claims.report import data_line, markdown, plt_module, write_csv, runs_csv

    ok = [r for r in records if r["status"] == "ok"]
    names = sorted({r["arm"] for r in records}, key=lambda a: (float(a.split("-e")[0][5:]), float(a.split("-e")[1])))
    points = []
    for name in names:
        mine = [r for r in ok if r["arm"] == name]
        if not mine:
            continue
        m = mine[0]
        points.append({"name": name, "share_target": m["share_target"], "share": m["share"], "e": m["expansion"],
                       "shape": f"{m['layers']}x{m['dim']}", "params": m["params"], "seeds": sorted(r["seed"] for r in mine),
                       "bytes": mean_std([r["model_bytes"] for r in mine])[0], "bpb": mean_std([r["val_bpb"] for r in mine])[0],
                       "bpb_text": fmt_mean_std([r["val_bpb"] for r in mine])})
    front = {p["name"] for p in pareto(points)}
    best = min(points, key=lambda p: p["bpb"]) if points else None
    rows = [[p["name"], f"{p['share']:.1%}", f"{p['e']:g}", p["shape"], f"{p['params']:,}", f"{p['bytes']:,.0f}",
             ",".join(map(str, p["seeds"])), p["bpb_text"], "yes" if p["name"] in front else "",
             f"{p['bpb'] - best['bpb']:+.4f}"] for p in points]
    header = ["grid point", "embedding share", "GLU e", "L x d", "params", f"{SCHEME} model bytes", "seeds",
              f"{SCHEME} roundtrip bpb", "Pareto", "vs best"]
    write_csv(folder / "summary.csv", header, rows)
    runs_csv(records, folder / "runs.csv", {"share": lambda r: r["share"], "expansion": lambda r: r["expansion"],
                                            "layers": lambda r: r["layers"], "dim": lambda r: r["dim"],
                                            "model_bytes": lambda r: r["model_bytes"], "val_bpb": lambda r: r["val_bpb"]})
    glu = [p for p in points if abs(p["e"] - 2.66) < 1e-9]
    verdict = (f"e=2.66 points on the Pareto front: {sum(p['name'] in front for p in glu)} of {len(glu)}; "
               f"Pareto front: {', '.join(p['name'] for p in pareto(points))}") if points else ""
    text = "\n\n".join(["# Allocation: embedding share x GLU expansion at a fixed byte budget",
                        data_line(records) + f"; bpb = {SCHEME} roundtrip of the sweep's artifact; bytes = the compressed "
                        f"model (code excluded); the grid is sized by `python -m sweep` to {records[0]['budget_bytes']:,} model bytes",
                        markdown(header, rows), verdict])
    if plots and points:
        plt = plt_module()
        fig, axs = plt.subplots(1, 2, figsize=(13, 5))
        colors = {e: plt.cm.viridis(i / max(1, len(EXPANSIONS) - 1)) for i, e in enumerate(EXPANSIONS)}
        markers = dict(zip(SHARES, "os^D"))
        for p in points:
            axs[0].scatter(p["bytes"], p["bpb"], color=colors.get(p["e"], "grey"), marker=markers.get(p["share_target"], "x"),
                           s=50, edgecolor="black" if p["name"] in front else "none")
            axs[0].annotate(p["shape"], (p["bytes"], p["bpb"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        fr = pareto(points)
        axs[0].step([p["bytes"] for p in fr], [p["bpb"] for p in fr], where="post", color="black", lw=1, label="Pareto front")
        for e in EXPANSIONS:
            axs[0].scatter([], [], color=colors[e], label=f"GLU e={e:g}")
        for s in SHARES:
            axs[0].scatter([], [], color="grey", marker=markers[s], label=f"share target {s:.0%}")
        axs[0].set_xlabel(f"{SCHEME} model bytes")
        axs[0].set_ylabel(f"val bpb ({SCHEME} roundtrip)")
        axs[0].legend(fontsize=7)
        axs[0].set_title("bpb vs artifact bytes (mean over seeds)")
        for e in EXPANSIONS:
            pts = sorted((p for p in points if p["e"] == e), key=lambda p: p["share"])
            axs[1].plot([p["share"] for p in pts], [p["bpb"] for p in pts], marker="o", color=colors[e], label=f"e={e:g}")
        axs[1].set_xlabel("embedding share of the parameters")
        axs[1].set_ylabel(f"val bpb ({SCHEME} roundtrip)")
        axs[1].legend(fontsize=8)
        axs[1].set_title("bpb vs embedding share, per GLU expansion")
        fig.tight_layout()
        fig.savefig(folder / "allocation.png", dpi=120)
        plt.close(fig)
    return text


if __name__ == "__main__":
    raise SystemExit("use python -m bench.claims --only allocation")
