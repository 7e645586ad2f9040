"""Where a training step's time goes: torch.profiler over a few steps of the trainer's own model and optimizers.

    python -m bench.profile_step                                   # the CPU preset (4x128, 8,192 tokens/step)
    python -m bench.profile_step NUM_LAYERS=9 MODEL_DIM=512 NUM_HEADS=8 NUM_KV_HEADS=4 TRAIN_BATCH_TOKENS=16384
    python -m bench.profile_step COMPILE=0 MATMUL_DTYPE=fp32 --rows 30

Builds everything with bench.cuda_path.build (train_gpt's build_model / build_optimizers / compile_model), steps it
on synthetic tokens the way train_gpt does (GRAD_ACCUM_STEPS micro-batches, every optimizer), and prints the step
time (wall and process CPU, median), the share of matmuls, attention, the optimizers and everything else (mostly
elementwise work and per-op overhead), and the top ops by self time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cuda_path import autocast_for, build, markov_batches, sync  # noqa: E402
from bench.train_speed import BenchError, parse_overrides  # noqa: E402

CATEGORIES = (  # first match wins, on the op name
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "mkldnn")),
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("compiled kernels", ("CompiledFxGraph", "Torch-Compiled Region")),
)


def category(name: str) -> str:
    for cat, keys in CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other ops"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after --warmup untimed ones)")
    p.add_argument("--warmup", type=int, default=3, help="steps before timing (compilation happens here)")
    p.add_argument("--timed", type=int, default=6, help="steps timed without the profiler")
    p.add_argument("--rows", type=int, default=15, help="top ops to list")
    p.add_argument("knobs", nargs="*", metavar="KNOB=VALUE")
    a = p.parse_args(argv)
    try:
        if min(a.steps, a.timed) < 1 or a.warmup < 0:
            raise BenchError("--steps and --timed must be >= 1, --warmup >= 0")
        env = {**os.environ, **parse_overrides(a.knobs, Path.cwd())}
        env.setdefault("DEVICE", "cpu")
        import train_gpt

        try:
            args, base, model, optimizers = build(env, torch.device("cuda" if env["DEVICE"] == "cuda" else "cpu"))
        except train_gpt.KnobError as e:
            raise BenchError(str(e)) from None
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dev = next(base.parameters()).device
    accum = args.grad_accum_steps or 8
    micro = args.train_batch_tokens // accum // args.train_seq_len
    if micro < 1:
        print(f"error: TRAIN_BATCH_TOKENS={args.train_batch_tokens} gives no whole sequence per micro-batch", file=sys.stderr)
        return 2
    batches = [(x.to(dev), y.to(dev)) for x, y in markov_batches(args.vocab_size, micro, args.train_seq_len, accum)]
    autocast = autocast_for(args, dev)

    def step() -> None:
        for x, y in batches:
            with record_function("forward"), autocast():
                loss = model(x, y)
            with record_function("backward"):
                (loss / accum).backward()
        with record_function("optimizers"):
            for opt in optimizers:
                opt.step()
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)

    for _ in range(a.warmup):
        step()
    wall, cpu = [], []
    for _ in range(a.timed):
        sync(dev)
        t, c = time.perf_counter(), time.process_time()
        step()
        sync(dev)
        wall.append(1000 * (time.perf_counter() - t))
        cpu.append(1000 * (time.process_time() - c))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    shares: dict[str, float] = {}
    for e in events:
        if e.key in ("forward", "backward", "optimizers"):
            continue
        cat = "optimizers" if e.key.startswith("Optimizer.step") else category(e.key)
        shares[cat] = shares.get(cat, 0.0) + e.self_cpu_time_total
    print(f"config: {args.num_layers}x{args.model_dim} heads:{args.num_heads}/{args.num_kv_heads} tokens/step:"
          f"{args.train_batch_tokens} seq:{args.train_seq_len} accum:{accum} compile:{int(args.compile)} dtype:{args.dtype} "
          f"matmul_dtype:{args.matmul_dtype} threads:{torch.get_num_threads()} load_avg:{os.getloadavg()[0]:.2f}")
    print(f"step_ms wall median {statistics.median(wall):.1f} (min {min(wall):.1f})  "
          f"process_cpu median {statistics.median(cpu):.1f} (min {min(cpu):.1f})")
    phases = {e.key: e.cpu_time_total for e in events if e.key in ("forward", "backward", "optimizers")}
    span = sum(phases.values()) or 1.0
    print("phases: " + "  ".join(f"{k} {100 * v / span:.1f}%" for k, v in phases.items()))
    print("self time: " + "  ".join(f"{k} {100 * v / total:.1f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])))
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
