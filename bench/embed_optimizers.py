"""Adam vs Coupled Adam for the (tied) embedding on the same budget: roundtrip bpb and embedding health.

    python -m bench.embed_optimizers                          # CPU preset, 120 s each, seed 1337
    python -m bench.embed_optimizers --seconds 300 --scales 1,0.25
    python -m bench.embed_optimizers ITERATIONS=400 MAX_WALLCLOCK_SECONDS=0   # same step count instead of same time
    python -m bench.embed_optimizers --only coupled_adam ...                  # one side (e.g. two shells in parallel)

Runs train_gpt.py once per optimizer (sequentially, same seed and knobs otherwise) and prints, per run: steps
taken, the final int8+zlib roundtrip val_bpb, and the embedding-health line (isotropy of the embedding matrix,
||mean embedding|| / mean row norm). A wall-clock budget on a shared machine gives each run a different
number of steps, so the step count is printed next to the figures.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAST_STEP_RE = re.compile(r"^step:(\d+)/\d+ val_loss", re.M)
FINAL_RE = re.compile(r"final_int8_zlib_roundtrip_exact val_loss:([\d.]+) val_bpb:([\d.]+)")
HEALTH_RE = re.compile(r"embedding_health (\S+) isotropy:([\d.]+) mean_norm_ratio:([\d.]+) mean_norm:([\d.]+) row_norm:([\d.]+) "
                       r"max_row_norm:([\d.]+)")


def run(overrides: dict[str, str]) -> dict:
    env = dict(os.environ, RUN_ID=f"embopt{os.getpid()}", **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], cwd=tmp, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"train_gpt.py failed with {overrides}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    final, health, steps = FINAL_RE.search(proc.stdout), HEALTH_RE.search(proc.stdout), LAST_STEP_RE.findall(proc.stdout)
    if not (final and health and steps):
        raise RuntimeError("missing final/embedding_health/step lines in the trainer's output:\n" + proc.stdout[-3000:])
    return {"steps": int(steps[-1]), "val_bpb": float(final.group(2)), "matrix": health.group(1),
            "isotropy": float(health.group(2)), "mean_norm_ratio": float(health.group(3)),
            "row_norm": float(health.group(5)), "max_row_norm": float(health.group(6))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=120.0, help="MAX_WALLCLOCK_SECONDS of each run (default 120)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--scales", default="1", help="comma-separated COUPLED_ADAM_SCALE values to run (default 1)")
    p.add_argument("--only", choices=("adam", "coupled_adam"), help="run just this side")
    p.add_argument("overrides", nargs="*", help="extra KEY=VALUE knobs for every run")
    a = p.parse_args(argv)
    base = {"MAX_WALLCLOCK_SECONDS": str(a.seconds), "SEED": str(a.seed)}
    for item in a.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"override {item!r} must look like KEY=VALUE")
        base[key] = value
    configs = [("adam", {"EMBED_OPTIMIZER": "adam"})]
    configs += [(f"coupled_adam scale={s}", {"EMBED_OPTIMIZER": "coupled_adam", "COUPLED_ADAM_SCALE": s})
                for s in a.scales.split(",")]
    if a.only:
        configs = [c for c in configs if c[1]["EMBED_OPTIMIZER"] == a.only]
    print(f"knobs for every run: {' '.join(f'{k}={v}' for k, v in base.items())}", flush=True)
    print(f"{'optimizer':<24} {'steps':>6} {'val_bpb':>9} {'isotropy':>9} {'|mu|/|e|':>9} {'mean|e|':>8} {'max|e|':>8}  matrix",
          flush=True)
    for name, extra in configs:
        r = run({**base, **extra})
        print(f"{name:<24} {r['steps']:>6} {r['val_bpb']:>9.4f} {r['isotropy']:>9.4f} {r['mean_norm_ratio']:>9.4f} "
              f"{r['row_norm']:>8.3f} {r['max_row_norm']:>8.3f}  {r['matrix']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
