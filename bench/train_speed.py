"""Training-speed benchmark: run a trainer for a fixed wall-clock budget and print tokens/s and val bpb.

    python -m bench.train_speed --seconds 60                       # our train_gpt.py, CPU preset
    python -m bench.train_speed --seconds 60 NUM_LAYERS=6 MODEL_DIM=192
    python -m bench.train_speed --script /path/to/other/train_gpt.py --seconds 60 DATA_PATH=... TOKENIZER_PATH=...

Any script that prints the public baseline's log lines works with --script, which is how we compare our
step time against the public baseline's at the same config and data. Steady-state step time excludes the
first steps (compilation, allocator warm-up): it is measured between the first logged step past
--skip-steps and the last logged step.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP_RE = re.compile(r"^step:(\d+)/\d+ train_loss:([\d.naif]+) train_time:(\d+)ms", re.M)
# The plain roundtrip score: the one line every trainer (ours and the public baseline) prints the same way.
FINAL_RE = re.compile(r"final_int8_zlib_roundtrip_exact val_loss:([\d.]+) val_bpb:([\d.]+)")


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
        "val_bpb": float(finals[-1][1]) if finals else float("nan"),
    }


def run(script: Path, seconds: float, overrides: dict, skip_steps: int, batch_tokens: int) -> dict:
    env = dict(os.environ, MAX_WALLCLOCK_SECONDS=str(seconds), TRAIN_LOG_EVERY="1", VAL_LOSS_EVERY="0", RUN_ID=f"bench{os.getpid()}")
    env.update(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    out = parse_log(proc.stdout, batch_tokens, skip_steps)
    out["wall_s"] = wall
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--script", type=Path, default=ROOT / "train_gpt.py", help="trainer to run (default: ours)")
    p.add_argument("--seconds", type=float, default=60.0, help="MAX_WALLCLOCK_SECONDS for the run")
    p.add_argument("--skip-steps", type=int, default=3, help="steps excluded from the steady-state step time")
    p.add_argument("overrides", nargs="*", help="KNOB=VALUE pairs passed to the trainer")
    a = p.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in a.overrides)
    batch = int(overrides.get("TRAIN_BATCH_TOKENS", os.environ.get("TRAIN_BATCH_TOKENS", 0)))
    if not batch:
        sys.path.insert(0, str(ROOT))
        from train_gpt import Hyperparameters

        batch = Hyperparameters(env={**os.environ, **overrides}).train_batch_tokens
    r = run(a.script, a.seconds, overrides, a.skip_steps, batch)
    print(f"script:{a.script} seconds:{a.seconds:g} overrides:{' '.join(a.overrides) or '-'}")
    print(f"steps:{r['steps']} step_ms:{r['step_ms']:.1f} train_tokens_per_s:{r['tokens_per_s']:.0f} "
          f"val_bpb:{r['val_bpb']:.4f} wall_s:{r['wall_s']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
