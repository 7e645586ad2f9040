"""Tables (markdown + CSV) and plots of each experiment, rebuilt from its run records OUT/<experiment>/runs/*.json.

Every table gives mean ± sample std over seeds and, per comparison, the difference of means with its Welch 95% CI
and p (paired-by-seed p too when both arms ran the same seeds; bench/claims/stats.py). Nothing here trains.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from bench.claims.stats import difference, fmt_mean_std, mean_std

Metric = Callable[[dict], float | None]


def load(exp: str, out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / exp / "runs").glob("*.json"))]


def arms_in_order(records: list[dict]) -> list[str]:
    first = {}
    for r in sorted(records, key=lambda r: (r.get("order", 0), r["arm"])):
        first.setdefault(r["arm"], r)
    return list(first)


def by_seed(records: list[dict], arm: str, metric: Metric) -> dict[int, float]:
    out = {}
    for r in records:
        if r["arm"] == arm and r["status"] == "ok":
            v = metric(r)
            if v is not None and math.isfinite(v):
                out[r["seed"]] = v
    return out


def scheme_bpb(scheme: str) -> Metric:
    return lambda r: r["schemes"].get(scheme, {}).get("val_bpb")


def scheme_gap(scheme: str) -> Metric:
    def gap(r):
        q = r["schemes"].get(scheme, {}).get("val_bpb")
        return None if q is None or r["prequant_bpb"] is None else q - r["prequant_bpb"]
    return gap


def scheme_bytes(scheme: str) -> Metric:
    return lambda r: r["schemes"].get(scheme, {}).get("model_bytes")


def health(field: str) -> Metric:
    def value(r):
        h = r.get("embedding_health", {})
        matrix = h.get("tok_emb.weight") if r["shape"].get("tie", True) else h.get("lm_head.weight")
        return None if matrix is None else matrix[field]
    return value


def first(records: list[dict], arm: str) -> dict:
    return next(r for r in records if r["arm"] == arm)


def markdown(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "|".join("---:" if i else "---" for i in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", "|" + align + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def runs_csv(records: list[dict], path: Path, metrics: dict[str, Metric]) -> None:
    header = ["experiment", "arm", "seed", "status", "run_id", "data", "steps", "params", "train_time_ms", *metrics]
    rows = []
    for r in sorted(records, key=lambda r: (r.get("order", 0), r["arm"], r["seed"])):
        ok = r["status"] == "ok"
        rows.append([r["experiment"], r["arm"], r["seed"], r["status"], r.get("run_id", ""), r["data"]["name"],
                     r.get("steps"), r.get("params"), r.get("train_time_ms"),
                     *[(m(r) if ok else None) for m in metrics.values()]])
    write_csv(path, header, rows)


def summary_rows(records: list[dict], arms: list[str], columns: dict[str, Metric], digits: dict[str, int],
                 baselines: dict[str, Callable[[str], str | None]], compare: dict[str, Metric]
                 ) -> tuple[list[str], list[list], list[list], list[str]]:
    """(header, markdown rows, csv rows, csv header): per arm, mean ± std of each column and, against each of its
    baselines (label -> the baseline arm of an arm, or None), the difference of each `compare` metric."""
    pairs = [(k, label) for k in compare for label in baselines]
    header = ["arm", "seeds", *columns, *[f"Δ {k} vs {label}" for k, label in pairs]]
    csv_header = ["arm", "seeds"] + [f"{k}_{s}" for k in columns for s in ("mean", "std")] + \
                 [f"delta_{k}_vs_{label}_{s}" for k, label in pairs for s in ("diff", "ci_low", "ci_high", "p_welch", "p_paired")]
    md, rows = [], []
    for arm in arms:
        seeds = sorted(r["seed"] for r in records if r["arm"] == arm and r["status"] == "ok")
        failed = sum(1 for r in records if r["arm"] == arm and r["status"] != "ok")
        cells = [arm, ",".join(map(str, seeds)) + (f" ({failed} failed)" if failed else "")]
        crow = [arm, ",".join(map(str, seeds))]
        for name, m in columns.items():
            vals = list(by_seed(records, arm, m).values())
            cells.append(fmt_mean_std(vals, digits.get(name, 4)))
            crow += list(mean_std(vals))
        for name, label in pairs:
            m, base = compare[name], baselines[label](arm)
            if base is None or base == arm or not by_seed(records, base, m):
                cells.append("(baseline)" if base == arm else "–")
                crow += [None] * 5
                continue
            d = difference(by_seed(records, arm, m), by_seed(records, base, m))
            cells.append(d.text(digits.get(name, 4)) + ("" if base == label else f" vs {base}"))
            crow += [d.diff, d.ci_low, d.ci_high, d.p_welch, d.p_paired]
        md.append(cells)
        rows.append(crow)
    return header, md, rows, csv_header


def data_line(records: list[dict]) -> str:
    names = sorted({f"{r['data']['name']} (manifest {r['data']['fingerprint']})" for r in records})
    steps = sorted({r["steps"] for r in records if r["status"] == "ok"})
    return f"data: {', '.join(names)}; steps per run: {', '.join(map(str, steps))}; mean ± sample std over seeds"


def plt_module():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def errorbar_points(ax, xs, records: list[dict], arm: str, metrics: list[Metric], label: str, **kw) -> None:
    """One line: the arm's mean ± std of each metric at the x positions."""
    ms = [mean_std(list(by_seed(records, arm, m).values())) for m in metrics]
    ax.errorbar(xs, [m for m, _ in ms], yerr=[0 if math.isnan(s) else s for _, s in ms], label=label, capsize=3,
                marker="o", **kw)


# ---------- the experiments ----------

def hwnode_quant(records: list[dict], folder: Path, plots: bool) -> str:
    schemes = ("int8+zlib", "int6+zstd", "int5+zstd")
    arms = arms_in_order(records)
    cols = {"params": lambda r: r["params"], "pre-quant bpb": lambda r: r["prequant_bpb"]}
    for s in schemes[1:]:
        cols[f"{s} bpb"] = scheme_bpb(s)
        cols[f"{s} gap"] = scheme_gap(s)
        cols[f"{s} bytes"] = scheme_bytes(s)
    cols["step ms"] = lambda r: r["step_avg_ms"]
    digits = {"params": 0, "step ms": 0, "int6+zstd bytes": 0, "int5+zstd bytes": 0}
    compare = {"int6+zstd gap": scheme_gap("int6+zstd"), "int5+zstd gap": scheme_gap("int5+zstd"),
               "int6+zstd bpb": scheme_bpb("int6+zstd")}
    header, md, rows, csv_header = summary_rows(records, arms, cols, digits, {"relu2-matched": lambda a: "relu2-matched"},
                                                compare)
    write_csv(folder / "summary.csv", csv_header, rows)
    runs_csv(records, folder / "runs.csv", cols)
    notes = "\n".join(f"- `{a}`: {first(records, a).get('arm_note', '')}" for a in arms)
    text = "\n\n".join([f"# HWNODE under quantization\n\n{data_line(records)}; gap = roundtrip bpb − pre-quant bpb",
                        notes, markdown(header, md)])
    if plots:
        plt = plt_module()
        fig, axs = plt.subplots(1, 2, figsize=(12, 4.5))
        labels = ["pre-quant", *schemes]
        for arm in arms:
            metrics = [lambda r: r["prequant_bpb"], *[scheme_bpb(s) for s in schemes]]
            errorbar_points(axs[0], range(len(labels)), records, arm, metrics, arm)
            errorbar_points(axs[1], range(2), records, arm, [scheme_gap(s) for s in schemes[1:]], arm)
        axs[0].set_xticks(range(len(labels)), labels)
        axs[0].set_ylabel("val bpb")
        axs[0].set_title("bpb before and after the export roundtrip")
        axs[1].set_xticks(range(2), [f"{s} gap" for s in schemes[1:]])
        axs[1].set_ylabel("roundtrip bpb − pre-quant bpb")
        axs[1].set_title("quantization gap")
        axs[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "hwnode_quant.png", dpi=120)
        plt.close(fig)
    return text


def mixers_lm(records: list[dict], folder: Path, plots: bool) -> str:
    arms = arms_in_order(records)
    timing_file = folder / "step_times.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {"cpu_ms_per_step": {}}
    cols = {"mixer params/layer": lambda r: r.get("mixer_params"), "params": lambda r: r["params"],
            "steps": lambda r: r["steps"], "bpb": scheme_bpb("int8+zlib"), "step ms (in run)": lambda r: r["step_avg_ms"]}
    digits = {"mixer params/layer": 0, "params": 0, "steps": 0, "step ms (in run)": 0}  # step ms: wall, loaded machine
    compare = {"bpb": scheme_bpb("int8+zlib")}
    header, md, rows, csv_header = summary_rows(records, arms, cols, digits, {"relu2": lambda a: "relu2"}, compare)
    write_csv(folder / "summary.csv", csv_header, rows)
    runs_csv(records, folder / "runs.csv", cols)
    bench = ", ".join(f"{k} {v:.0f}" for k, v in timing["cpu_ms_per_step"].items())
    notes = "\n".join(f"- `{a}`: {first(records, a).get('arm_note', '')}" for a in arms)
    text = "\n\n".join([
        "# Wave and S5 as LM mixers (MLP slot)",
        f"{data_line(records)}; bpb = int8+zlib roundtrip. Equal-time arms (`@time`) get the steps that fit relu2's "
        f"{first(records, 'relu2')['steps']}-step training time, from the interleaved step-time benchmark in CPU time (step_times.json, CPU ms/step: {bench}).",
        notes, markdown(header, md)])
    if plots:
        plt = plt_module()
        fig, ax = plt.subplots(figsize=(8, 4.5))
        kinds = [a for a in arms if not a.endswith("@time")]
        for j, suffix in enumerate(("", "@time")):
            xs = [i + (0.15 if j else -0.15) for i in range(len(kinds))]
            ms = [mean_std(list(by_seed(records, k + suffix if k != "relu2" or not suffix else "relu2",
                                          scheme_bpb("int8+zlib")).values())) for k in kinds]
            ax.errorbar(xs, [m for m, _ in ms], yerr=[0 if math.isnan(s) else s for _, s in ms], fmt="o", capsize=3,
                        label="equal parameters (same steps)" if not j else "equal wall clock (steps from step time)")
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_ylabel("val bpb (int8+zlib roundtrip)")
        ax.legend(fontsize=8)
        ax.set_title("MLP-slot mixers at equal parameters and equal training time")
        fig.tight_layout()
        fig.savefig(folder / "mixers_lm.png", dpi=120)
        plt.close(fig)
    return text


def variant_suffix(arm: str) -> str | None:
    """'300' of coupled-0.005-300 (steps), 'b8192' of adam-0.05-b8192 (batch): arms off the main protocol."""
    return arm.rsplit("-", 1)[1] if arm.count("-") == 2 and "untied" not in arm else None


def default_adam(arm: str) -> str | None:
    """The harness's default (Adam, TIED_EMBED_LR 0.05) under the arm's protocol."""
    if "untied" in arm:
        return "adam-untied"
    suffix = variant_suffix(arm)
    return f"adam-0.05-{suffix}" if suffix else "adam-0.05"


def adam_at_coupled_lr(arm: str) -> str | None:
    """Adam at 0.005, the LR where Coupled Adam does best: the coupling's own effect, LR held fixed."""
    if "untied" in arm:
        return None
    suffix = variant_suffix(arm)
    return f"adam-0.005-{suffix}" if suffix else "adam-0.005"


def coupled_adam(records: list[dict], folder: Path, plots: bool) -> str:
    arms = arms_in_order(records)
    cols = {"steps": lambda r: r["steps"], "bpb": scheme_bpb("int8+zlib"), "isotropy": health("isotropy"),
            "|mean e|/|e|": health("mean_norm_ratio"), "mean |e|": health("row_norm"), "max |e|": health("max_row_norm")}
    digits = {"steps": 0, "isotropy": 3, "|mean e|/|e|": 3, "mean |e|": 2, "max |e|": 2}
    header, md, rows, csv_header = summary_rows(records, arms, cols, digits,
                                                {"default Adam": default_adam, "Adam 0.005": adam_at_coupled_lr},
                                                {"bpb": scheme_bpb("int8+zlib")})
    write_csv(folder / "summary.csv", csv_header, rows)
    runs_csv(records, folder / "runs.csv", cols)
    notes = "\n".join(f"- `{a}`: {first(records, a).get('arm_note', '')}" for a in arms if first(records, a).get("arm_note"))
    text = "\n\n".join([
        "# Coupled Adam vs Adam on the vocabulary matrix",
        f"{data_line(records)}; bpb = int8+zlib roundtrip; isotropy and norms of the vocabulary matrix (tied embedding, "
        "or the untied output head) at the end of training (optim/health.py)", notes, markdown(header, md)])
    if plots:
        plt = plt_module()
        fig, axs = plt.subplots(1, 2, figsize=(12, 4.5))
        for prefix, marker in (("coupled-", "o"), ("adam-", "s")):
            pts = [a for a in arms if a.startswith(prefix) and "untied" not in a and not variant_suffix(a)]
            lrs = [float(a.split("-")[1]) for a in pts]
            for ax, metric in zip(axs, (scheme_bpb("int8+zlib"), health("isotropy"))):
                ms = [mean_std(list(by_seed(records, a, metric).values())) for a in pts]
                order = sorted(range(len(pts)), key=lambda i: lrs[i])
                ax.errorbar([lrs[i] for i in order], [ms[i][0] for i in order],
                            yerr=[0 if math.isnan(ms[i][1]) else ms[i][1] for i in order], marker=marker, capsize=3,
                            label=prefix.rstrip("-").replace("coupled", "Coupled Adam").replace("adam", "Adam"))
        for ax, label in zip(axs, ("val bpb (int8+zlib roundtrip)", "isotropy of the tied embedding")):
            ax.set_xscale("log")
            ax.set_xlabel("TIED_EMBED_LR")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        axs[0].set_title(f"bpb vs embedding LR (tied, {first(records, 'adam-0.05')['steps']} steps)")
        axs[1].set_title("isotropy vs embedding LR")
        fig.tight_layout()
        fig.savefig(folder / "coupled_adam.png", dpi=120)
        plt.close(fig)
    probe_file = folder / "probe.json"
    if probe_file.is_file():
        text += "\n\n" + coupled_probe_section(json.loads(probe_file.read_text()), folder, plots)
    return text


def coupled_probe_section(probe: dict, folder: Path, plots: bool) -> str:
    """The instrumented replay (bench/claims/coupled_probe.py): per token-frequency bucket, per setting."""
    names = list(probe["settings"])
    header = ["setting", "tokens by train frequency", "val targets", "val NLL (nats)", "update RMS / lr",
              "sqrt(v_row) / sqrt(v_mean)", "input-side share of grad", "median |e|", "median e·mean dir"]
    rows = []
    for name in names:
        st = probe["settings"][name]
        for b in st["per_bucket"]:
            rows.append([name, f"{b['bucket']} ({b['tokens']} tokens, {b['train_count']:,} occurrences)",
                         f"{b['val_targets']:,}", f"{b['val_nll']:.3f}" if b["val_nll"] is not None else "–",
                         f"{b['update_rms_over_lr']:.3f}", f"{b['adam_over_coupled_denominator']:.3f}",
                         f"{b['input_grad_share']:.3f}", f"{b['row_norm']:.3f}", f"{b['row_dot_mean_dir']:+.3f}"])
    sums = []
    for name in names:
        sn = probe["settings"][name]["sum_norms"]
        h = probe["settings"][name]["health"]
        ratio = float(np.median([x["sum_update"] for x in sn])) if sn else float("nan")
        sums.append(f"- `{name}`: val NLL {probe['settings'][name]['val_nll']:.4f}; isotropy {h['isotropy']:.3f}; "
                    f"median over steps of |sum of row updates| {ratio:.4f}, |sum of output-side grads| "
                    f"{float(np.median([x['sum_output_grad'] for x in sn])):.2e}, |sum of input-side grads| "
                    f"{float(np.median([x['sum_input_grad'] for x in sn])):.2e}; max |logit| "
                    f"{probe['settings'][name]['max_abs_logit']:.1f} (softcap {probe['settings'][name]['logit_softcap']:g})")
    if plots:
        plt = plt_module()
        fig, axs = plt.subplots(1, 2, figsize=(12, 4.5))
        for name in names:
            st = probe["settings"][name]
            rank = np.array(st["frequency_rank"])
            upd = np.array(st["per_row_update_rms_over_lr"])
            order = np.argsort(rank)
            axs[0].plot(rank[order] + 1, upd[order], ".", ms=2, label=name, alpha=0.6)
            axs[1].plot(range(len(st["per_bucket"])), [b["val_nll"] for b in st["per_bucket"]], marker="o", label=name)
        axs[0].set_xscale("log")
        axs[0].set_yscale("log")
        axs[0].set_xlabel("token frequency rank in the training text (1 = most frequent)")
        axs[0].set_ylabel("per-row update RMS / learning rate (mean over steps)")
        axs[0].set_title("how far each vocabulary row moves per step")
        axs[1].set_xticks(range(len(probe["buckets"])), probe["buckets"], fontsize=7)
        axs[1].set_ylabel("validation NLL of targets in the bucket (nats)")
        axs[1].set_title("where the loss goes")
        for ax in axs:
            ax.legend(fontsize=7, markerscale=4)
        fig.tight_layout()
        fig.savefig(folder / "coupled_probe.png", dpi=120)
        plt.close(fig)
    return "\n\n".join([f"## Instrumented replay (seed 1, {probe['settings'][names[0]]['steps']} steps; "
                          "bench/claims/coupled_probe.py)", markdown(header, rows), "\n".join(sums)])


def write(exp: str, out: Path, plots: bool = True) -> str:
    """Rewrite OUT/<exp>/summary.md, summary.csv, runs.csv and the PNG from the run records; return the markdown."""
    folder = out / exp
    records = load(exp, out)
    if not records:
        return f"{exp}: no finished runs yet"
    if exp in ("recall", "allocation"):
        from bench.claims import allocation, recall

        text = (recall.report if exp == "recall" else allocation.report)(records, folder, plots)
    else:
        text = {"hwnode_quant": hwnode_quant, "mixers_lm": mixers_lm, "coupled_adam": coupled_adam}[exp](records, folder, plots)
    (folder / "summary.md").write_text(text + "\n")
    return text
