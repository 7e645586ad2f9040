"""One-command acceptance run of the CUDA path: does it work, and how fast is it against the public baseline?

    python -m bench.gpu_check                                             # one CUDA device, <= ~8 min
    python -m bench.gpu_check --baseline-script /path/to/public/train_gpt.py
    python -m bench.gpu_check --dry-run                                   # the same script on CPU, tiny shapes
    python -m bench.gpu_check --only kinds,qat --kinds relu2,s5 --json out.json

Sections (each prints its rows as it finishes; one table at the end; exit status 1 on any FAIL):
  kinds     every MLP_KIND and a mixed MLP_KIND_LAYERS model train --steps steps with COMPILE=1 (fullgraph: a graph
            break fails the row) under bf16 autocast: finite, falling loss, no recompilation after step 2, peak memory
  s5_scan   the Triton S5 scan vs the FFT scan vs a float64 recurrence: max relative difference, fwd+bwd ms at T=1024, 2048
  qat       QAT switched on after compilation changes the compiled forward, exactly as eager QAT does
  eval      sliding-window and score-first TTT eval throughput at the baseline config (bench.eval_speed)
  nccl      a 2-rank torchrun of train_gpt.py over nccl (only with 2+ visible GPUs; gloo in the dry run)
  baseline  our train_gpt.py vs --baseline-script at the baseline config, interleaved: step time ratio, loss at step N
Data for the trainer runs: DATA_PATH/TOKENIZER_PATH when set, else the offline sample dataset (built once).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("kinds", "qat", "s5_scan", "eval", "nccl", "baseline")
KINDS = ("relu2", "swiglu", "glu", "hwnode", "wave", "s5", "hyena_s5", "mixed")
MIXED = {"MLP_KIND": "hyena_s5", "MLP_KIND_LAYERS": "1-2"}  # S5 in the middle layers, relu2 around them

# Shapes. GPU: small models so that 8 compilations fit the budget; the timed comparison uses the baseline config.
GPU_KIND_SHAPE = dict(NUM_LAYERS="4", MODEL_DIM="256", NUM_HEADS="4", NUM_KV_HEADS="2", TRAIN_SEQ_LEN="1024",
                      TRAIN_BATCH_TOKENS="8192", GRAD_ACCUM_STEPS="1")
CPU_KIND_SHAPE = dict(NUM_LAYERS="4", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", TRAIN_SEQ_LEN="32",
                      TRAIN_BATCH_TOKENS="128", GRAD_ACCUM_STEPS="1", HWNODE_STATE_DIM="16", S5_STATE_DIM="16", S5_BLOCKS="2")
CPU_RUN_SHAPE = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", TRAIN_SEQ_LEN="32",
                     TRAIN_BATCH_TOKENS="512", VAL_BATCH_SIZE="4096", EVAL_BATCH_SEQS="8", TTT_CHUNK_TOKENS="512", TTT_EPOCHS="1")


def row(section: str, case: str, status: str, detail: str = "", **extra) -> dict:
    return {"section": section, "case": case, "status": status, "detail": detail, **extra}


def fmt(value, spec: str) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "-".rjust(int(spec.split(".")[0])) if missing else format(value, spec)


def print_row(r: dict) -> None:
    print(f"[{r['section']}] {r['case']}: {r['status']} {r.get('loss', '')} {r.get('detail', '')}".rstrip(), flush=True)


def print_table(rows: list[dict]) -> None:
    head = f"{'section':<9} {'case':<26} {'status':<6} {'step_ms':>9} {'peak_MiB':>9} {'s':>6}  result"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        result = "; ".join(x for x in (r.get("loss", ""), r.get("speedup", ""), r.get("detail", "")) if x)
        print(f"{r['section']:<9} {r['case'][:26]:<26} {r['status']:<6} {fmt(r.get('step_ms'), '9.1f')} "
              f"{fmt(r.get('peak_mib'), '9.0f')} {fmt(r.get('seconds'), '6.0f')}  {result}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("PASS", "FAIL", "SKIP")}
    print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")


class Check:
    """The run's settings: device, shapes, compile backend, where the trainer data lives."""

    def __init__(self, a):
        self.a = a
        self.dry = a.dry_run
        self.device = "cpu" if self.dry else "cuda"
        self.backend = a.compile_backend or ("aot_eager" if self.dry else "inductor")
        self.kind_env = {**(CPU_KIND_SHAPE if self.dry else GPU_KIND_SHAPE), "COMPILE": "1", "DTYPE": "bf16",
                         "DEVICE": self.device}
        self.run_env = {"DEVICE": self.device, **(CPU_RUN_SHAPE | {"COMPILE": "0"} if self.dry else {})}
        self._data: dict | None = None
        self.sections: list[str] = []
        self.pool: ProcessPoolExecutor | None = None
        self.pending_qat = None
        self.t_start = time.perf_counter()

    def data(self) -> dict:
        """DATA_PATH / TOKENIZER_PATH for the trainer runs: the caller's, or the offline sample dataset."""
        if self._data is None:
            if os.environ.get("DATA_PATH") and os.environ.get("TOKENIZER_PATH"):
                self._data = {"DATA_PATH": os.environ["DATA_PATH"], "TOKENIZER_PATH": os.environ["TOKENIZER_PATH"]}
            else:
                sys.path.insert(0, str(ROOT))
                from data.sample import ensure_sample_dataset

                ds = ensure_sample_dataset(vocab_size=1024)
                self._data = {"DATA_PATH": str(ds.data_path), "TOKENIZER_PATH": str(ds.tokenizer_path)}
        return self._data

    def subprocess_env(self, extra: dict) -> dict:
        sys.path.insert(0, str(ROOT))
        import train_gpt

        env = {k: v for k, v in os.environ.items() if k not in train_gpt.KNOB_BY_NAME}  # the check sets every knob it means
        env.update(self.run_env, **self.data(), **extra)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env


# ---------- sections ----------

def section_kinds(c: Check) -> list[dict]:
    from bench.cuda_path import train_kind

    kinds = [k.strip() for k in c.a.kinds.split(",") if k.strip()]
    jobs = [(k, {**c.kind_env, **(MIXED if k == "mixed" else {"MLP_KIND": k})}) for k in kinds]
    steps = c.a.steps
    if c.a.jobs <= 1:
        out = []
        for k, env in jobs:
            out.append(train_kind(k, env, c.device, steps, c.backend))
            print_row(out[-1])
        return out
    # Compilation is CPU-bound: several kinds compile at once in worker processes; their GPU work is small.
    import multiprocessing as mp

    from bench.cuda_path import qat_under_compile

    c.pool = ProcessPoolExecutor(max_workers=c.a.jobs, mp_context=mp.get_context("spawn"))
    futures = [c.pool.submit(train_kind, k, env, c.device, steps, c.backend) for k, env in jobs]
    if "qat" in c.sections:
        c.pending_qat = c.pool.submit(qat_under_compile, qat_env(c), c.device, c.backend)
    out = []
    for f in futures:
        out.append(f.result())
        print_row(out[-1])
    return out


def section_s5_scan(c: Check) -> list[dict]:
    from bench.cuda_path import s5_scans

    lengths = (64, 128) if c.dry else (1024, 2048)
    return s5_scans(c.device, lengths, batch=2 if c.dry else 16, states=16 if c.dry else 128, repeats=2 if c.dry else 10)


def qat_env(c: Check) -> dict:
    # fp32: compiled and eager then agree to ~1e-6, so any change QAT makes stands out (bf16 noise would not)
    return {**c.kind_env, "DTYPE": "fp32", "MLP_KIND": "relu2", "QAT_SCHEME": "int4", "QUANT_FLOAT_MAX_NUMEL": "0"}


def section_qat(c: Check) -> list[dict]:
    from bench.cuda_path import qat_under_compile

    if c.pending_qat is not None:  # already run in the kinds section's worker pool
        return [c.pending_qat.result()]
    return [qat_under_compile(qat_env(c), c.device, c.backend)]


def section_eval(c: Check) -> list[dict]:
    """Through bench.eval_speed (which owns the calls into eval/): parse its rows."""
    targets = "2000" if c.dry else "131072"
    cmd = [sys.executable, "-m", "bench.eval_speed", "--random-init", "--strides", "16" if c.dry else "64",
           "--ttt", "full,lora" if c.dry else "full",  # on the GPU each TTT mode costs its own compilation
           "--max-targets", targets]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=c.subprocess_env({}), capture_output=True, text=True, timeout=c.a.timeout)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        return [row("eval", "eval_speed", "FAIL", last_line(proc.stderr or proc.stdout), seconds=secs)]
    out = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if line.startswith(("sliding ", "ttt ", "plain ")) and len(parts) >= 6:
            name = " ".join(parts[:-4])
            bpb, s, tps = float(parts[-4]), float(parts[-3]), float(parts[-2])
            ok = math.isfinite(bpb)
            out.append(row("eval", name, "PASS" if ok else "FAIL", "" if ok else "non-finite bpb",
                           loss=f"{tps:,.0f} targets/s val_bpb {bpb:.3f} (random init)", seconds=s))
    return out or [row("eval", "eval_speed", "FAIL", "no result rows in its output", seconds=secs)]


def section_nccl(c: Check) -> list[dict]:
    import torch

    if not c.dry and torch.cuda.device_count() < 2:
        return [row("nccl", "2 ranks", "SKIP", f"{torch.cuda.device_count()} GPU visible; needs 2")]
    backend = "gloo" if c.dry else "nccl"
    env = c.subprocess_env({"ITERATIONS": "6", "MAX_WALLCLOCK_SECONDS": "0", "TRAIN_LOG_EVERY": "1", "EVAL_STRIDE": "0",
                            "WARMUP_STEPS": "0" if c.dry else "3", "RUN_ID": f"gpucheck_nccl_{os.getpid()}"})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(ROOT / "train_gpt.py")], cwd=tmp, env=env, capture_output=True, text=True, timeout=c.a.timeout)
        secs = time.perf_counter() - t0
    from bench.train_speed import FINAL_RE

    final = FINAL_RE.findall(proc.stdout)
    ok = proc.returncode == 0 and f"backend:{backend}" in proc.stdout and final and math.isfinite(float(final[-1][1]))
    detail = "" if ok else f"exit {proc.returncode}: {last_line(proc.stderr or proc.stdout)}"
    return [row("nccl", f"2 ranks {backend}", "PASS" if ok else "FAIL", detail,
                loss=f"val_bpb {float(final[-1][1]):.4f}" if final else "", seconds=secs)]


def section_baseline(c: Check) -> list[dict]:
    if not c.a.baseline_script:
        return [row("baseline", "vs public baseline", "SKIP", "no --baseline-script PATH given")]
    from bench.train_speed import PUBLIC_KNOBS, BenchError, run

    script = Path(c.a.baseline_script).resolve()
    if not script.is_file():
        return [row("baseline", "vs public baseline", "FAIL", f"--baseline-script {script} is not a file")]
    steps = c.a.baseline_steps
    knobs = {**c.subprocess_env({}), "ITERATIONS": str(steps), "WARMDOWN_ITERS": "0", "EVAL_STRIDE": "0",
             "WARMUP_STEPS": "0" if c.dry else "10", "SEED": "1337"}
    if not c.dry:
        knobs["TRAIN_BATCH_TOKENS"] = str(c.a.baseline_batch_tokens)
    theirs = {k: v for k, v in knobs.items() if k in PUBLIC_KNOBS or k not in _our_knob_names()}
    batch = int(knobs.get("TRAIN_BATCH_TOKENS") or 524_288)
    results: dict[str, list[dict]] = {"ours": [], "baseline": []}
    t0 = time.perf_counter()
    note = ""
    try:
        for i in range(c.a.baseline_pairs):  # interleaved: ours, theirs, ours, theirs
            pair_s = (time.perf_counter() - t0) / max(i, 1)
            if i and time.perf_counter() - c.t_start + pair_s > c.a.budget_seconds:
                note = f"pair {i + 1} skipped: it would pass --budget-seconds {c.a.budget_seconds:g}"
                break
            results["ours"].append(run(ROOT / "train_gpt.py", 0, knobs, 3, batch, timeout=c.a.timeout))
            results["baseline"].append(run(script, 0, theirs, 3, batch, timeout=c.a.timeout))
    except BenchError as e:
        return [row("baseline", "vs public baseline", "FAIL", str(e), seconds=time.perf_counter() - t0)]
    ms = {k: statistics.median(r["step_ms"] for r in v) for k, v in results.items()}
    loss = {k: statistics.mean(v[-1]["losses"][-5:]) for k, v in results.items()}  # the last 5 steps: less batch noise
    same = abs(loss["ours"] - loss["baseline"]) <= c.a.loss_tolerance
    detail = "; ".join(x for x in (note, "" if same else f"losses differ by more than {c.a.loss_tolerance}") if x)
    return [row("baseline", f"ours vs baseline x{len(results['ours'])}", "PASS" if same else "FAIL", detail,
                step_ms=ms["ours"], baseline_ms=ms["baseline"], seconds=time.perf_counter() - t0,
                speedup=f"baseline/ours step time {ms['baseline'] / ms['ours']:.3f} ({ms['baseline']:.1f} ms)",
                loss=f"mean loss of steps {steps - 4}-{steps}: ours {loss['ours']:.4f} baseline {loss['baseline']:.4f}")]


def _our_knob_names() -> set[str]:
    sys.path.insert(0, str(ROOT))
    import train_gpt

    return set(train_gpt.KNOB_BY_NAME)


def last_line(text: str) -> str:
    from bench.train_speed import last_line as _last

    return _last(text)


RUNNERS = {"kinds": section_kinds, "s5_scan": section_s5_scan, "qat": section_qat, "eval": section_eval,
           "nccl": section_nccl, "baseline": section_baseline}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="run on CPU with tiny shapes (checks the script itself)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default: all of {','.join(SECTIONS)})")
    p.add_argument("--kinds", default=",".join(KINDS), help="MLP kinds of the kinds section (mixed = MLP_KIND_LAYERS case)")
    p.add_argument("--steps", type=int, default=20, help="training steps per kind")
    p.add_argument("--jobs", type=int, default=None, help="kinds compiled in parallel processes (default: 4 on GPU, 1 dry)")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor; aot_eager in the dry run)")
    p.add_argument("--baseline-script", default=None, help="the public baseline's train_gpt.py (section skipped without it)")
    p.add_argument("--baseline-steps", type=int, default=40, help="training steps of each baseline-section run")
    p.add_argument("--baseline-pairs", type=int, default=2, help="interleaved (ours, baseline) pairs")
    p.add_argument("--baseline-batch-tokens", type=int, default=131_072, help="TRAIN_BATCH_TOKENS of the timed comparison")
    p.add_argument("--loss-tolerance", type=float, default=0.05, help="largest |loss ours - loss baseline| at the last step")
    p.add_argument("--timeout", type=float, default=420.0, help="seconds allowed to each trainer subprocess")
    p.add_argument("--budget-seconds", type=float, default=450.0, help="the baseline section's second pair runs only if it fits")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    sections = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS)) + sorted({k.strip() for k in a.kinds.split(",") if k.strip()} - set(KINDS))
    if a.steps < 3 or a.baseline_steps < 5 or a.baseline_pairs < 1 or (a.jobs is not None and a.jobs < 1):
        print("error: --steps must be >= 3, --baseline-steps >= 5, --baseline-pairs and --jobs >= 1", file=sys.stderr)
        return 2
    if unknown:
        print(f"error: unknown section or kind {', '.join(unknown)}; sections: {', '.join(SECTIONS)}; kinds: {', '.join(KINDS)}",
              file=sys.stderr)
        return 2
    if a.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton scan runs on CPU tensors (read when triton loads)
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device is visible; run on a GPU machine, or use --dry-run to check the script on CPU",
              file=sys.stderr)
        return 2
    a.jobs = a.jobs or (1 if a.dry_run else 4)
    if a.dry_run:
        a.steps = min(a.steps, 8)
        a.baseline_steps = min(a.baseline_steps, 6)
    c = Check(a)
    c.sections = sections
    device = "cpu (dry run)" if a.dry_run else torch.cuda.get_device_name(0)
    print(f"gpu_check device:{device} torch:{torch.__version__} backend:{c.backend} sections:{','.join(sections)}", flush=True)
    rows: list[dict] = []
    t_all = time.perf_counter()
    for name in sections:
        t0 = time.perf_counter()
        try:
            got = RUNNERS[name](c)
        except Exception as e:  # a broken section is a finding, not the end of the run
            got = [row(name, "section", "FAIL", f"{type(e).__name__}: {str(e).strip()[:300]}")]
        for r in got:
            r.setdefault("seconds", time.perf_counter() - t0)
            if name not in ("kinds",):
                print_row(r)
        rows.extend(got)
    if c.pool is not None:
        c.pool.shutdown()
    print_table(rows)
    print(f"total {time.perf_counter() - t_all:.0f} s")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
