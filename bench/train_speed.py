"""Training-speed benchmark: run a trainer for a fixed wall-clock budget and print its steady-state step time.

    python -m bench.train_speed --seconds 60                       # our train_gpt.py, CPU preset
    python -m bench.train_speed --seconds 60 NUM_LAYERS=6 MODEL_DIM=192
    python -m bench.train_speed --seconds 60 --compare /tmp/baseline/train_gpt.py --repeat 2 DATA_PATH=... TOKENIZER_PATH=...

Any script that prints the public baseline's log lines works as --script or --compare. With --compare the two
run interleaved (ours, other, ours, other, ...) at the same config: the public knobs (PUBLIC_KNOBS) get our
resolved values, CPU preset included, so both do the same math; then the medians and their ratio are printed
with the load average (the machine may be shared: repeat, and read the spread). Steady-state step time
excludes the first steps (compilation, allocator warm-up): it is measured between the first logged step past
--skip-steps and the last logged step. Trainers run in a temporary folder; relative paths are taken from here.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP_RE = re.compile(r"^step:(\d+)/\d+ train_loss:([\d.naif]+) train_time:(\d+)ms", re.M)
# The plain roundtrip score: the one line every trainer (ours and the public baseline) prints the same way.
FINAL_RE = re.compile(r"final_int8_zlib_roundtrip_exact val_loss:([\d.]+) val_bpb:([\d.]+)")
# The public naive baseline's knobs (names and meanings shared with ours): what --compare passes to the other script.
PUBLIC_KNOBS = (
    "DATA_PATH", "TOKENIZER_PATH", "SEED", "VAL_BATCH_SIZE", "VAL_LOSS_EVERY", "TRAIN_LOG_EVERY", "ITERATIONS",
    "WARMDOWN_ITERS", "WARMUP_STEPS", "TRAIN_BATCH_TOKENS", "TRAIN_SEQ_LEN", "MAX_WALLCLOCK_SECONDS", "QK_GAIN_INIT",
    "VOCAB_SIZE", "NUM_LAYERS", "NUM_KV_HEADS", "MODEL_DIM", "NUM_HEADS", "MLP_MULT", "TIE_EMBEDDINGS", "ROPE_BASE",
    "LOGIT_SOFTCAP", "EMBED_LR", "HEAD_LR", "TIED_EMBED_LR", "TIED_EMBED_INIT_STD", "MATRIX_LR", "SCALAR_LR",
    "MUON_MOMENTUM", "MUON_BACKEND_STEPS", "MUON_MOMENTUM_WARMUP_START", "MUON_MOMENTUM_WARMUP_STEPS", "BETA1", "BETA2",
    "ADAM_EPS", "GRAD_CLIP_NORM",
)
PATH_KNOBS = ("DATA_PATH", "TOKENIZER_PATH", "OUTPUT_DIR")  # resolved against the caller's folder


class BenchError(Exception):
    """A bad input or a failed run: main prints it as one line."""


def parse_log(text: str, batch_tokens: int, skip_steps: int) -> dict:
    steps = [(int(s), float(t)) for s, _, t in STEP_RE.findall(text)]
    if not steps:
        raise RuntimeError("no step lines in the trainer's output:\n" + text[-3000:])
    later = [p for p in steps if p[0] > skip_steps] or steps
    (s0, t0), (s1, t1) = later[0], later[-1]
    steady_ms = (t1 - t0) / (s1 - s0) if s1 > s0 else t1 / max(s1, 1)
    finals = FINAL_RE.findall(text)
    return {
        "steps": steps[-1][0],
        "step_ms": steady_ms,
        "tokens_per_s": batch_tokens / (steady_ms / 1000.0),
        "losses": [float(x) for _, x, _ in STEP_RE.findall(text)],
        "val_bpb": float(finals[-1][1]) if finals else float("nan"),
    }


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def run(script: Path, seconds: float, overrides: dict, skip_steps: int, batch_tokens: int, timeout: float | None = None) -> dict:
    """Run `script` in a temporary folder with the knobs in `overrides`; raise BenchError if it fails."""
    env = {**os.environ, **overrides, "MAX_WALLCLOCK_SECONDS": str(seconds), "TRAIN_LOG_EVERY": "1", "VAL_LOSS_EVERY": "0",
           "RUN_ID": f"bench{os.getpid()}"}  # every step logged: the step time is read from the log
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{script} ran past {timeout:.0f} s; lower --seconds or the model size") from None
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise BenchError(f"{script} exited with status {proc.returncode}: {last_line(proc.stderr or proc.stdout)} "
                         "(run it directly with the same knobs to see its whole output)")
    try:
        out = parse_log(proc.stdout, batch_tokens, skip_steps)
    except RuntimeError:
        raise BenchError(f"{script} printed no `step:N/M train_loss:... train_time:...ms` lines; is it a parameter-golf trainer?") from None
    out["wall_s"] = wall
    return out


def parse_overrides(items: list[str], cwd: Path) -> dict:
    """KNOB=VALUE pairs (and path knobs from the environment) with relative paths made absolute."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise BenchError(f"{item!r} is not KNOB=VALUE (e.g. MODEL_DIM=256); `python train_gpt.py --help` lists the knobs")
        overrides[name] = value
    for name in PATH_KNOBS:
        value = overrides.get(name, os.environ.get(name))
        if value and not os.path.isabs(value):
            overrides[name] = str((cwd / value).resolve())
    for name in ("DATA_PATH", "TOKENIZER_PATH"):
        if name in overrides and not Path(overrides[name]).exists():
            raise BenchError(f"{name}={overrides[name]} does not exist; give an existing {'folder of shards' if name == 'DATA_PATH' else '.model file'}")
    return overrides


def resolve_config(overrides: dict) -> tuple[dict, int]:
    """Our trainer's resolved knobs (CPU preset and sample data included) as the public knobs, and the batch size."""
    sys.path.insert(0, str(ROOT))
    import train_gpt

    try:
        args = train_gpt.Hyperparameters(env={**os.environ, **overrides})
    except train_gpt.KnobError as e:
        raise BenchError(str(e)) from None
    train_gpt.resolve_data(args, lambda msg: print(msg, flush=True))
    public = {}
    for name in set(PUBLIC_KNOBS) - {"MAX_WALLCLOCK_SECONDS", "TRAIN_LOG_EVERY", "VAL_LOSS_EVERY"}:  # run() sets those
        value = getattr(args, name.lower())
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float) and value.is_integer() and name in ("MLP_MULT",):
            value = int(value)  # the public baseline reads MLP_MULT with int()
        public[name] = str(value)
    return public, args.train_batch_tokens


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--script", type=Path, default=ROOT / "train_gpt.py", help="trainer to run (default: ours)")
    p.add_argument("--compare", type=Path, help="a second trainer (e.g. the public baseline) run interleaved at the same config")
    p.add_argument("--repeat", type=int, default=1, help="runs of each trainer (interleaved with --compare)")
    p.add_argument("--seconds", type=float, default=60.0, help="MAX_WALLCLOCK_SECONDS for each run (> 0)")
    p.add_argument("--skip-steps", type=int, default=3, help="steps excluded from the steady-state step time")
    p.add_argument("overrides", nargs="*", metavar="KNOB=VALUE", help="knobs passed to the trainer(s)")
    a = p.parse_args(argv)
    try:
        if not a.seconds > 0:
            raise BenchError(f"--seconds must be > 0, got {a.seconds:g} (0 would mean no cap: ITERATIONS steps)")
        if a.skip_steps < 0 or a.repeat < 1:
            raise BenchError("--skip-steps must be >= 0 and --repeat >= 1")
        scripts = [a.script.resolve()] + ([a.compare.resolve()] if a.compare else [])
        for script in scripts:
            if not script.is_file():
                raise BenchError(f"trainer script not found: {script}; give an existing train_gpt.py")
        overrides = parse_overrides(a.overrides, Path.cwd())
        public, batch = resolve_config({**overrides, "MAX_WALLCLOCK_SECONDS": str(a.seconds)})
        if a.compare:  # both get the same resolved public knobs; ours also gets its own extra knobs
            overrides = {**public, **overrides}
        print(f"seconds:{a.seconds:g} overrides:{' '.join(a.overrides) or '-'} OMP_NUM_THREADS:{os.environ.get('OMP_NUM_THREADS', '-')}")
        results: list[list[dict]] = [[] for _ in scripts]
        for i in range(a.repeat):
            for j, script in enumerate(scripts):
                extra = overrides if j == 0 else {k: v for k, v in overrides.items() if k in PUBLIC_KNOBS}
                load = os.getloadavg()[0]
                r = run(script, a.seconds, extra, a.skip_steps, batch)
                results[j].append(r)
                print(f"run:{i + 1} script:{script} steps:{r['steps']} step_ms:{r['step_ms']:.1f} "
                      f"train_tokens_per_s:{r['tokens_per_s']:.0f} val_bpb:{r['val_bpb']:.4f} wall_s:{r['wall_s']:.1f} "
                      f"load_avg:{load:.2f}", flush=True)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    medians = [statistics.median(r["step_ms"] for r in rs) for rs in results]
    for script, med, rs in zip(scripts, medians, results):
        print(f"median script:{script} step_ms:{med:.1f} runs:{len(rs)}")
    if a.compare:
        print(f"speedup:{medians[1] / medians[0]:.3f} (median step time of --compare / --script; "
              f"load_avg now {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
