"""Mixer comparison: the same trainer, data, wall-clock budget and preset for each MLP_KIND; prints a table of
parameters (model and one sublayer), int8+zlib artifact bytes, steady step time, steps reached and the
roundtrip val_bpb of the exported artifact.

    python -m bench.mixers --seconds 60                          # every kind, CPU preset, offline sample data
    python -m bench.mixers --seconds 60 --kinds relu2,hwnode HWNODE_STATE_DIM=128

Extra KEY=VALUE arguments are env knobs applied to every run. Timings on a shared machine are noisy.
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
sys.path.insert(0, str(ROOT))
from arch.mlp import MLP_REGISTRY  # noqa: E402
from bench.train_speed import parse_log  # noqa: E402


def run_kind(kind: str, seconds: float, overrides: dict) -> dict:
    env = dict(os.environ, MLP_KIND=kind, MAX_WALLCLOCK_SECONDS=str(seconds), TRAIN_LOG_EVERY="1", VAL_LOSS_EVERY="0",
               RUN_ID=f"mixers-{kind}")
    env.update(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], cwd=tmp, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"MLP_KIND={kind} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    text = proc.stdout
    batch = int(re.search(r"train_batch_tokens:(\d+)", text).group(1))
    out = parse_log(text, batch, skip_steps=2)
    out["params"] = int(re.search(r"model_params:(\d+)", text).group(1))
    out["mixer_params"] = int(re.search(r"params_per_layer:(\d+)", text).group(1))
    out["artifact_bytes"] = int(re.search(r"Serialized model int8\+zlib: (\d+) bytes", text).group(1))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="MAX_WALLCLOCK_SECONDS of every run")
    p.add_argument("--kinds", default=",".join(sorted(MLP_REGISTRY)), help="comma-separated MLP_KINDs")
    p.add_argument("knobs", nargs="*", help="KEY=VALUE env knobs applied to every run")
    a = p.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in a.knobs)
    print("| MLP_KIND | params | mixer params/layer | artifact bytes | step ms | steps | roundtrip val_bpb |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in a.kinds.split(","):
        r = run_kind(kind, a.seconds, overrides)
        print(f"| {kind} | {r['params']:,} | {r['mixer_params']:,} | {r['artifact_bytes']:,} | {r['step_ms']:.0f} | "
              f"{r['steps']} | {r['val_bpb']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
