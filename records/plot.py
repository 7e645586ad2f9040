"""A run's training curve and summary, read back from its log, so the same code serves any finished log.

    python -m records plot logs/a.txt logs/b.txt --out ab.png   # overlay runs: seeds, or two recipes

train_gpt.py calls `report_run` when a run ends: the summary block (per export format: total bytes, headroom under
the cap, roundtrip bpb, sliding bpb; steps and training time) goes to the console and the log, and the curve (train
loss and val bpb against training wall-clock, the warmdown start marked, the final scores at the end) to
logs/<RUN_ID>.png. Lines read: ours and the public challenge's (`step:N/M train_loss:X train_time:Nms`,
`N/M val_loss: X val_bpb: Y`, train_time in ms, s or m, some lines after a unix timestamp), `warmdown_start`, the
tagged `Serialized model` / `Total submission size` lines and the final score lines. matplotlib (Agg backend) is
imported only to draw, after training; without it the summary still prints and the curve is a one-line note.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from quant.schemes import ExportSpec
from quant.size import BYTE_BUDGET
from records.logs import _without_snapshot, parse_log, score_lines

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_TIMESTAMP = re.compile(r"^\d{9,}(?:\.\d+)?[ \t]+", re.M)  # some public logs prefix every line with unix time
_STEP_LINE = re.compile(rf"^(?:step:)?(\d+)/(\d+)[ \t]+(train_loss|val_loss):[ \t]*({_NUM})([^\n]*)", re.M)
_VAL_BPB = re.compile(rf"\bval_bpb:\s*({_NUM})")
_TRAIN_TIME = re.compile(r"\btrain_time:\s*(\d+(?:\.\d+)?)(ms|s|m)\b")
_WARMDOWN = re.compile(r"^warmdown_start step:(\d+) train_time:(\d+)ms", re.M)
_STOPPED = re.compile(r"^stopping_early: wallclock_cap", re.M)
_MODEL = re.compile(r"^Serialized model (?P<tag>[^:\n]+): (?P<n>\d+) bytes", re.M)
_TOTAL = re.compile(r"^Total submission size (?P<tag>[^:\n]+): (?P<n>\d+) bytes", re.M)
_SECONDS_PER = {"ms": 1e-3, "s": 1.0, "m": 60.0}
SLIDING, TTT = "final_sliding_window_exact", "final_ttt_exact"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


@dataclass
class Curve:
    """What one log says about its training trajectory; times are training seconds (validation excluded)."""

    name: str
    train: list[tuple[int, float, float]] = field(default_factory=list)  # (step, seconds, train loss)
    val: list[tuple[int, float, float]] = field(default_factory=list)  # (step, seconds, val bpb)
    iterations: int | None = None
    warmdown: tuple[int, float] | None = None  # (step, seconds) of the first step with a decayed LR
    finals: dict[str, float] = field(default_factory=dict)  # final score line -> bpb, drawn at the end
    stopped_at_cap: bool = False

    @property
    def end_s(self) -> float | None:
        times = [t for _, t, _ in self.train + self.val]
        return max(times) if times else None

    @property
    def steps(self) -> int | None:
        steps = [s for s, _, _ in self.train + self.val]
        return max(steps) if steps else None


def read_text(path: Path) -> str:
    """The log without its code snapshot (logged source is never read as metrics) and without line timestamps."""
    log = parse_log(path)
    return _TIMESTAMP.sub("", _without_snapshot(log.text, log.snapshot_files or []))


def parse_curve(text: str, name: str) -> Curve:
    curve = Curve(name)
    untimed = []  # val lines of logs that print no train_time on them: placed by step between train points
    for m in _STEP_LINE.finditer(text):
        step, curve.iterations, kind, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(5)
        t = _TRAIN_TIME.search(rest)
        seconds = float(t.group(1)) * _SECONDS_PER[t.group(2)] if t else None
        if kind == "train_loss" and seconds is not None:
            curve.train.append((step, seconds, float(m.group(4))))
        elif kind == "val_loss" and (bpb := _VAL_BPB.search(rest)):
            (curve.val.append((step, seconds, float(bpb.group(1)))) if seconds is not None
             else untimed.append((step, float(bpb.group(1)))))
    for step, bpb in untimed:
        curve.val.append((step, _time_at(curve.train, step), bpb))
    curve.val.sort()
    if m := _WARMDOWN.search(text):
        curve.warmdown = (int(m.group(1)), int(m.group(2)) / 1000.0)
    exact = {s.name: s.val_bpb for s in score_lines(text) if s.name.endswith("_exact")}
    curve.finals = exact or {s.name: s.val_bpb for s in score_lines(text)[-1:]}
    curve.stopped_at_cap = _STOPPED.search(text) is not None
    return curve


def _time_at(train: list[tuple[int, float, float]], step: int) -> float:
    """Linear interpolation of training time at `step` from the train points (clamped at the ends)."""
    if step == 0 or not train:
        return 0.0
    before = [(s, t) for s, t, _ in train if s <= step]
    after = [(s, t) for s, t, _ in train if s >= step]
    if not before:
        return after[0][1] * step / max(after[0][0], 1)
    if not after or after[0][0] == before[-1][0]:
        return before[-1][1]
    (s0, t0), (s1, t1) = before[-1], after[0]
    return t0 + (t1 - t0) * (step - s0) / (s1 - s0)


def read_curve(path: Path, name: str | None = None) -> Curve:
    return parse_curve(read_text(path), name or Path(path).stem)


# --------------------------------------------------------------------------------------------------
# Summary block


def summary_lines(text: str, name: str) -> list[str]:
    """The end-of-run summary of a log's text. No line looks like a score, size or step line to a log reader."""
    curve = parse_curve(text, name)
    models = {m.group("tag").strip(): int(m.group("n")) for m in _MODEL.finditer(text)}
    totals = {m.group("tag").strip(): int(m.group("n")) for m in _TOTAL.finditer(text)}
    scores = {s.name: s.val_bpb for s in score_lines(text)}
    has_ttt = TTT in scores
    width = max([6, *map(len, totals)])
    lines = [f"run summary {name}"]
    if curve.steps is not None:
        training = f"  training: {curve.steps}/{curve.iterations} steps in {curve.end_s:.1f} s"
        training += " (stopped at the wall-clock cap)" if curve.stopped_at_cap else ""
        if curve.warmdown:
            training += f"; warmdown from step {curve.warmdown[0]} at {curve.warmdown[1]:.1f} s"
        lines.append(training)
    header = f"  {'format':<{width}} {'model bytes':>12} {'total bytes':>12} {f'headroom to {BYTE_BUDGET:,}':>24} {'roundtrip bpb':>14} {'sliding bpb':>12}"
    lines.append(header + (f" {'ttt bpb':>12}" if has_ttt else ""))
    for i, (tag, total) in enumerate(totals.items()):
        scheme, _, compressor = tag.partition("+")
        roundtrip = scores.get(ExportSpec(scheme, compressor).metric_name + "_exact")
        headroom = BYTE_BUDGET - total
        room = f"{headroom:,}" if headroom >= 0 else f"OVER by {-headroom:,}"
        row = (f"  {tag:<{width}} {_fmt(models.get(tag), ',')} {total:>12,} {room:>24} {_fmt(roundtrip, '.8f', 14)} "
               f"{_fmt(scores.get(SLIDING) if i == 0 else None, '.8f')}")  # sliding and TTT score the first format
        lines.append(row + (f" {_fmt(scores.get(TTT) if i == 0 else None, '.8f')}" if has_ttt else ""))
    if not totals:
        lines.append("  (no `Total submission size <format>:` line: the run did not reach its export)")
    return lines


def _fmt(value, spec: str, width: int = 12) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


# --------------------------------------------------------------------------------------------------
# Figure


def draw(curves: list[Curve], out: Path, title: str | None = None) -> Path:
    """Train loss (top) and val bpb (bottom) against training time, one colour per run; written via a temp name."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    span = max((c.end_s or 0.0) for c in curves)
    unit, per = ("min", 60.0) if span > 1800 else ("s", 1.0)
    fig, (ax_loss, ax_bpb) = plt.subplots(2, 1, figsize=(8.5, 7), sharex=True, layout="constrained")
    markers = {}
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        if c.train:
            ax_loss.plot([t / per for _, t, _ in c.train], [v for _, _, v in c.train], color=color, lw=1.2, label=c.name)
        if c.val:
            ax_bpb.plot([t / per for _, t, _ in c.val], [v for _, _, v in c.val], "o-", color=color, ms=4, lw=1.2,
                        label="val_bpb (before quantization)" if len(curves) == 1 else None)
        for score, bpb in c.finals.items():
            marker = markers.setdefault(score, "s^Dv*Ph"[len(markers) % 7])
            ax_bpb.plot([(c.end_s or 0.0) / per], [bpb], marker, color=color, ms=8, mec="black", mew=0.6, ls="none")
        if c.warmdown:
            for ax in (ax_loss, ax_bpb):
                ax.axvline(c.warmdown[1] / per, color=color, ls=":", lw=1.2)
    losses = sorted(v for c in curves for _, _, v in c.train if v == v and abs(v) != float("inf"))
    if len(losses) > 20:  # spikes (public logs reach 12+ at step 2) and outliers would flatten the curve
        lo, hi = losses[int(0.01 * (len(losses) - 1))], losses[int(0.98 * (len(losses) - 1))]
        pad = 0.1 * (hi - lo)
        ax_loss.set_ylim(lo - pad, min(losses[-1] + pad, hi + 3 * pad))
    late = [v for c in curves for _, t, v in c.train if t > 0.05 * span and v == v and abs(v) != float("inf")]
    if len(curves) > 1 and late:
        pad = 0.08 * (max(late) - min(late) or 0.01)
        ax_loss.set_ylim(min(late) - pad, max(late) + pad)
    tails = [v for c in curves for _, _, v in (c.val[1:] if len(c.val) >= 3 else c.val)] + [v for c in curves for v in c.finals.values()]
    if len(curves) > 1 and tails:  # overlays compare the end: zoom past the first (step 0) val points
        pad = 0.08 * (max(tails) - min(tails) or 0.01)
        ax_bpb.set_ylim(min(tails) - pad, max(tails) + pad)
    ax_loss.set_ylabel("train loss (nats/token)")
    ax_bpb.set_ylabel("val bpb")
    ax_bpb.set_xlabel(f"training wall-clock ({unit}, validation excluded)")
    warm = [Line2D([], [], color="gray", ls=":", label="warmdown start")] if any(c.warmdown for c in curves) else []
    finals = [Line2D([], [], marker=m, color="gray", mec="black", ls="none", label=_short(s)) for s, m in markers.items()]
    ax_loss.legend(handles=ax_loss.get_legend_handles_labels()[0] + warm, fontsize=8, loc="best")
    if ax_bpb.get_legend_handles_labels()[0] or finals:
        ax_bpb.legend(handles=ax_bpb.get_legend_handles_labels()[0] + finals, fontsize=8, loc="best")
    for ax in (ax_loss, ax_bpb):
        ax.grid(alpha=0.3)
    fig.suptitle(title or _title(curves), fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def _short(score: str) -> str:
    """final_int8_zlib_roundtrip_exact -> int8_zlib_roundtrip (legend text)."""
    return score.removeprefix("final_").removesuffix("_exact")


def _title(curves: list[Curve]) -> str:
    if len(curves) > 1:
        return f"{len(curves)} runs: " + ", ".join(c.name for c in curves)
    c = curves[0]
    scores = ", ".join(f"{_short(s)} {v:.4f}" for s, v in c.finals.items())
    seconds = c.end_s or 0.0
    return f"{c.name}: {c.steps} steps in {seconds:.{1 if seconds < 100 else 0}f} s" + (f"; {scores} bpb" if scores else "")


def try_draw(curves: list[Curve], out: Path, title: str | None = None) -> tuple[Path | None, str]:
    """(the figure, `curve: PATH`), or (None, why there is none) when matplotlib is missing; other errors propagate."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None, "curve: not drawn (matplotlib is not installed: pip install matplotlib, then python -m records plot LOG)"
    out = draw(curves, out, title)
    return out, f"curve: {out}"


# --------------------------------------------------------------------------------------------------
# Callers: the trainer's end of run, records pack


def report_run(logfile: Path, log=print) -> None:
    """End of a run: the summary block through `log` (console and log file), then the curve next to the log."""
    logfile = Path(logfile)
    text = read_text(logfile)
    for line in summary_lines(text, logfile.stem):
        log(line)
    curve = parse_curve(text, logfile.stem)
    log(try_draw([curve], logfile.with_suffix(".png"))[1] if curve.train or curve.val else "curve: not drawn (no step lines in the log)")


def write_seed_curves(logs: dict[int, Path]) -> dict[int, str]:
    """records pack: train_seed<N>.png next to each copied seed log; {seed: file name}, {} when nothing could be drawn."""
    names = {}
    for seed, path in sorted(logs.items()):
        try:
            png, line = try_draw([read_curve(path, f"seed {seed}")], path.with_suffix(".png"))
        except Exception as e:  # a curve is a courtesy: it never stops a pack
            png, line = None, f"curve: not drawn ({type(e).__name__}: {e})"
        if png is None:
            print(f"records pack: seed {seed}: {line}")
        else:
            names[seed] = png.name
    return names


def curve_section(names: dict[int, str]) -> str:
    """The README section that shows the first seed's curve and lists the others."""
    if not names:
        return ""
    (first, png), *rest = sorted(names.items())
    lines = ["", "## Training curve", "", f"![seed {first}: train loss and val bpb against training time]({png})", ""]
    if rest:
        lines += ["Other seeds: " + ", ".join(f"[seed {s}]({p})" for s, p in rest) + ".", ""]
    return "\n".join(lines)
