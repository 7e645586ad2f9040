"""The arms of the three language-model experiments (1 HWNODE under quantization, 3 wave and S5 as LM mixers,
4 Coupled Adam), at full size (the CPU preset: 4 x 128, vocab 1024, 8192 tokens/step) and at --quick size."""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from arch.mlp import MixerConfig, mixer_param_count
from bench.claims.data import Dataset
from bench.claims.lm import Arm, LMRun, Protocol, run_environment, seed_major, write_json, TRAINER

SEEDS = [1, 2, 3]
QUICK_SEEDS = [1, 2]
FULL_STEPS = 150
# The CPU preset (4 x 128, vocab 1024, sequences of 256) at half its batch: 4096 tokens per step keeps a 3-seed study
# of every arm inside ~4 hours of a shared 2-core machine. 150 x 4096 = 614K tokens, 0.7 epochs of WikiText-2's train text.
FULL_KNOBS = (("TRAIN_BATCH_TOKENS", "4096"),)
QUICK_KNOBS = (("TRAIN_BATCH_TOKENS", "1024"), ("TRAIN_SEQ_LEN", "64"), ("VAL_BATCH_SIZE", "16384"),
               ("QUANT_FLOAT_MAX_NUMEL", "256"))


def protocol(dataset: Dataset, quick: bool, schemes: tuple[str, ...] = ("int8+zlib",)) -> Protocol:
    if quick:
        return Protocol(dataset, steps=4, layers=2, dim=32, heads=2, kv_heads=1, schemes=schemes, knobs=QUICK_KNOBS)
    return Protocol(dataset, steps=FULL_STEPS, schemes=schemes, knobs=FULL_KNOBS)


def matched_relu2_mult(dim: int, kind: str, config: MixerConfig) -> float:
    """The relu2 MLP_MULT whose sublayer has the parameter count closest to `kind`'s (hidden = round(mult * d))."""
    hidden = round(mixer_param_count(kind, dim, 2.0, config) / (2 * dim))
    return hidden / dim


# ---------- 1. HWNODE under quantization (PR #818) ----------

HWNODE_SCHEMES = ("int8+zlib", "int6+zstd", "int5+zstd")


def hwnode_arms(p: Protocol) -> list[Arm]:
    n = 216 if p.dim == 128 else 48  # the CPU preset's HWNODE_STATE_DIM; a small state for --quick
    base = (("hwnode_state_dim", n),)
    mult = matched_relu2_mult(p.dim, "hwnode", MixerConfig(hwnode_state_dim=n))
    return [
        Arm("relu2-matched", "relu2", mult, note=f"MLP_MULT={mult:g}: hidden {round(mult * p.dim)}, parameter-matched to hwnode n={n}"),
        Arm("hwnode-v1", "hwnode", mixer=base, note=f"V1 block, n={n}, order 2"),
        Arm("hwnode-v2-L2", "hwnode", mixer=base + (("hwnode_virtual_layers", 2),), note="V2, 2 virtual layers"),
        Arm("hwnode-v2-L6", "hwnode", mixer=base + (("hwnode_virtual_layers", 6),), note="V2, 6 virtual layers"),
    ]


def hwnode_runs(dataset: Dataset, quick: bool) -> list[LMRun]:
    p = protocol(dataset, quick, HWNODE_SCHEMES)
    return seed_major(hwnode_arms(p), QUICK_SEEDS if quick else SEEDS, "hwnode_quant", p)


# ---------- 3. Wave and S5 as LM mixers, at equal parameters and at equal wall clock ----------

def equal_param_arms(p: Protocol) -> list[Arm]:
    """Every MLP-slot sublayer near relu2's 2 * d * 2d parameters (65,536 at d=128)."""
    d = p.dim
    s5 = (("s5_state_dim", 192), ("s5_blocks", 16)) if d == 128 else (("s5_state_dim", 48), ("s5_blocks", 4))
    return [
        Arm("relu2", "relu2", 2.0, note="MLP_MULT=2 (the CPU preset)"),
        Arm("swiglu", "swiglu", round(4 * d / 3) / d, note=f"hidden {round(4 * d / 3)} = 4d/3: three matrices match relu2's two"),
        Arm("wave", "wave", note="causal wave network, modulation: 4d^2 + 3d"),
        Arm("s5", "s5", mixer=s5, note=f"S5 P={dict(s5)['s5_state_dim']} (conj. sym.) + half-GLU"),
    ]


def step_times_path(out: Path) -> Path:
    return out / "mixers_lm" / "step_times.json"


def child_cpu_seconds(env: dict[str, str]) -> float:
    """user + system CPU seconds of one trainer process (os.wait4's rusage): unlike wall time, barely moved by other
    jobs on the machine, and what a dedicated single-threaded run would take in wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, str(TRAINER)], cwd=tmp, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"step-time run failed ({env.get('RUN_ID')}):\n{output[-3000:]}")
    return usage.ru_utime + usage.ru_stime


def measure_step_times(runs: list[LMRun], path: Path, short: int, long: int, rounds: int = 2, jobs: int = 2,
                       log=print) -> dict:
    """CPU seconds per training step of each arm: (CPU of a `long`-step run - CPU of a `short`-step run) / (long -
    short), so start-up, evaluation and export cancel; the median over `rounds`, `jobs` trainers at a time (CPU time
    does not depend on what else runs). Written once; later calls read the file (delete it to re-measure)."""
    if path.is_file():
        return json.loads(path.read_text())
    env = run_environment()

    def cpu(task: tuple[LMRun, int, int]) -> float:
        run, i, steps = task
        knobs = {**run.knobs(), "ITERATIONS": str(steps), "WARMDOWN_ITERS": "0", **run.arm.shape(run.protocol).env(),
                 "RUN_ID": f"steptime-{run.arm.name}-{i}-{steps}"}
        return child_cpu_seconds({**env, **knobs})

    tasks = [(run, i, steps) for i in range(rounds) for run in runs for steps in (short, long)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        seconds = list(pool.map(cpu, tasks))
    per_step: dict[str, list[float]] = {r.arm.name: [] for r in runs}
    for k in range(0, len(tasks), 2):
        run, i, _ = tasks[k]
        per_step[run.arm.name].append(1000.0 * (seconds[k + 1] - seconds[k]) / (long - short))
        log(f"step time {run.arm.name} round {i + 1}: {per_step[run.arm.name][-1]:.0f} CPU ms/step")
    result = {"method": f"CPU ms per step = (CPU of {long} steps - CPU of {short} steps) / {long - short}, child rusage",
              "rounds": rounds, "cpu_ms_per_step": {k: statistics.median(v) for k, v in per_step.items()},
              "all_cpu_ms_per_step": per_step, "load_avg_at_end": os.getloadavg()[0]}
    write_json(path, result)
    return result


def mixer_runs(dataset: Dataset, quick: bool) -> list[LMRun]:
    """The equal-parameter arms (same steps)."""
    p = protocol(dataset, quick)
    return seed_major(equal_param_arms(p), QUICK_SEEDS if quick else SEEDS, "mixers_lm", p)


def mixer_timed_runs(dataset: Dataset, quick: bool, out: Path, jobs: int, log=print) -> list[LMRun]:
    """The equal-wall-clock arms: each kind gets the steps that take relu2's training time, by the step-time
    benchmark. relu2's own is its equal-parameter run (the same configuration, so the same stored run)."""
    p = protocol(dataset, quick)
    arms = equal_param_arms(p)
    timing = measure_step_times([LMRun("mixers_lm", a, 1, p) for a in arms], step_times_path(out),
                                short=2 if quick else 10, long=12 if quick else 40, jobs=jobs, log=log)
    ref = timing["cpu_ms_per_step"]["relu2"]
    timed = []
    for a in arms:
        steps = max(2, round(p.steps * ref / max(timing["cpu_ms_per_step"][a.name], 1e-3)))
        timed.append(dataclasses.replace(a, name=f"{a.name}@time", steps=steps,
                                         note=f"{steps} steps = relu2's {p.steps}-step training time"))
    runs = seed_major(arms + timed, QUICK_SEEDS if quick else SEEDS, "mixers_lm", p)
    return [r for r in runs if r.arm.name.endswith("@time")]


# ---------- 4. Coupled Adam (seed 004, arXiv 2502.08441) ----------

def coupled(lr: float, **extra: str) -> tuple[tuple[str, str], ...]:
    return (("EMBED_OPTIMIZER", "coupled_adam"), ("TIED_EMBED_LR", f"{lr:g}"), *extra.items())


def coupled_arms(p: Protocol) -> list[Arm]:
    arms = [Arm("adam-0.05", note="the default: Adam, TIED_EMBED_LR=0.05 (the same run as mixers_lm's relu2)")]
    arms += [Arm(f"adam-{lr:g}", knobs=(("TIED_EMBED_LR", f"{lr:g}"),), note="Adam at a lower LR: is it the LR or the coupling?")
             for lr in (0.02, 0.005, 0.002)]
    arms += [Arm(f"coupled-{lr:g}", knobs=coupled(lr)) for lr in (0.01, 0.005, 0.0025, 0.001)]
    arms += [Arm("adam-untied", tie=False, note="untied: Adam embedding (EMBED_LR 0.6) and head (HEAD_LR 0.008)"),
             Arm("coupled-head-untied", tie=False, knobs=(("EMBED_OPTIMIZER", "coupled_adam"),),
                 note="untied, Coupled Adam on the output head only (HEAD_LR 0.008)")]
    long = 2 * p.steps  # twice the tokens, by steps and by batch (the CPU preset's 8192: the earlier measurement's setting)
    batch = 2 * int(dict(p.knobs).get("TRAIN_BATCH_TOKENS", 4096))
    for suffix, extra, what in ((f"{long}", {}, f"{long} steps"), (f"b{batch}", {"TRAIN_BATCH_TOKENS": str(batch)},
                                                                     f"{batch} tokens per step")):
        steps = long if not extra else None
        arms += [Arm(f"adam-0.05-{suffix}", knobs=tuple(extra.items()), steps=steps, note=what),
                 Arm(f"adam-0.005-{suffix}", knobs=(("TIED_EMBED_LR", "0.005"), *extra.items()), steps=steps, note=what),
                 Arm(f"coupled-0.005-{suffix}", knobs=coupled(0.005, **extra), steps=steps, note=what)]
    return arms


def coupled_runs(dataset: Dataset, quick: bool) -> list[LMRun]:
    p = protocol(dataset, quick)
    arms = coupled_arms(p)
    if quick:  # one arm of each kind keeps --quick short
        arms = [a for a in arms if a.name in ("adam-0.05", "coupled-0.005", "adam-untied", "coupled-head-untied")
                or a.name.count("-") == 2]
    return seed_major(arms, QUICK_SEEDS if quick else SEEDS, "coupled_adam", p)
