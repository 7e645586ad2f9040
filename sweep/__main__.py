"""python -m sweep --out DIR [grid options]: size every grid point to the byte budget, train each for a short fixed
wall-clock budget (parallel, early-stopping clear losers), then write results.csv, the plots and a recommendation.

    python -m sweep --out sweep-results/cpu --bytes 1200000 --kinds relu2,swiglu \\
        --shares 0.15,0.3 --expansions 2,3 --seconds 45 --jobs 2 --head-dim 32 --dims 64:384
    python -m sweep --out DIR ...same options...      # again after an interruption: finished runs are kept
    python -m sweep --out DIR --report-only            # CSV, plots and recommendation from what is recorded

Without --data-path the runs use the offline sample dataset (built once, here, before any run starts).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from arch.budget import (add_shape_arguments, default_code_bytes, dims_of, float_list, get_scheme,
                         load_calibration, solve_for_share, uncalibrated)
from arch.mlp import MLP_REGISTRY
from sweep.report import write_report
from sweep.runs import ResultStore, RunSpec, env_for_runs, trainer_knobs
from sweep.schedule import run_all

ROOT = Path(__file__).resolve().parents[1]


def build_grid(args) -> list[RunSpec]:
    """Every kind x share x expansion, each solved for the shape closest to that share that fills the budget.
    Points that solve to the same shape (e.g. kinds whose size ignores e) are run once."""
    scheme = get_scheme(args.scheme, args.float_max_numel)
    cal = uncalibrated(args.scheme) if args.upper_bound else load_calibration(args.scheme, args.calibration, args.regime)
    code = args.code_bytes if args.code_bytes is not None else default_code_bytes(args.trainer)
    specs, seen = [], {}
    for kind in args.kinds:
        for share in args.shares:
            for e in args.expansions:
                p = solve_for_share(kind, e, share, args.bytes, scheme, cal, code, args.vocab, dims_of(args),
                                    args.head_dim, args.kv_ratio, args.layers, not args.untied, min_fill=args.min_fill)
                key = json.dumps(p.shape.env(), sort_keys=True)
                if key in seen:
                    print(f"sweep: {kind} share={share} e={e} solves to the same shape as {seen[key]}; run once")
                    continue
                digest = hashlib.sha1((key + args.scheme + str(args.seconds) + str(args.seed)).encode()).hexdigest()[:6]
                run_id = f"{kind}-s{share:g}-e{e:g}-{p.shape.layers}x{p.shape.dim}-{digest}"
                seen[key] = run_id
                specs.append(RunSpec(run_id, kind, share, e, p))
    return specs


def run_env(args) -> dict[str, str]:
    env = env_for_runs(dict(os.environ), trainer_knobs(args.trainer))
    if args.data_path:
        data, tok = args.data_path, args.tokenizer_path
    else:
        from data.sample import ensure_sample_dataset

        sample = ensure_sample_dataset(vocab_size=args.vocab)
        data, tok = str(sample.data_path), str(sample.tokenizer_path)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), DATA_PATH=data, TOKENIZER_PATH=tok,
               MAX_WALLCLOCK_SECONDS=str(args.seconds), ITERATIONS=str(args.iterations), TRAIN_LOG_EVERY="5",
               SEED=str(args.seed), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # export and score only the scheme being ranked, with the small-tensor rule the bytes model priced
    env.update(EXPORT_SCHEMES=args.scheme, QUANT_FLOAT_MAX_NUMEL=str(args.float_max_numel))
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.exit(f"error: --env {item!r} must be KEY=VALUE")
        env[key] = value
    return env


def _interrupt(signum, frame) -> None:
    """SIGTERM behaves like Ctrl-C: running trainers are stopped, recorded runs stay, a rerun resumes."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="sweep folder (results.jsonl, results.csv, plots, runs/)")
    add_shape_arguments(ap)
    ap.add_argument("--kinds", default="relu2", help=f"comma-separated MLP kinds: {', '.join(sorted(MLP_REGISTRY))}")
    ap.add_argument("--shares", type=float_list, default=[0.25, 0.35, 0.45], help="target embedding shares")
    ap.add_argument("--expansions", type=float_list, default=[2.0, 2.66, 3.0, 4.0], help="hidden width / d")
    ap.add_argument("--min-fill", type=float, default=0.8, help="a shape must use at least this share of --bytes")
    ap.add_argument("--seconds", type=float, default=45.0, help="training wall-clock budget of every run")
    ap.add_argument("--iterations", type=int, default=100_000, help="step cap (the wall clock normally stops first)")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / jobs)")
    ap.add_argument("--stop-after", type=float, default=0.5, help="earliest early stop, as a fraction of --seconds")
    ap.add_argument("--stop-margin", type=float, default=0.15, help="stop a run this many nats behind the best (0: never)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--data-path", default=None, help="shard folder (default: the offline sample dataset)")
    ap.add_argument("--tokenizer-path", default=None, help="SentencePiece .model matching --data-path")
    ap.add_argument("--trainer", type=Path, default=ROOT / "train_gpt.py")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra trainer knob for every run")
    ap.add_argument("--dry-run", action="store_true", help="print the sized grid and stop")
    ap.add_argument("--report-only", action="store_true", help="only rewrite results.csv, plots and recommendation")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if args.data_path and not args.tokenizer_path:
        sys.exit("error: --data-path needs --tokenizer-path (the SentencePiece model that made the shards)")
    if args.jobs < 1 or args.seconds <= 0:
        sys.exit("error: --jobs must be >= 1 and --seconds > 0")
    unknown = [k for k in args.kinds if k not in MLP_REGISTRY]
    if unknown:
        sys.exit(f"error: --kinds {','.join(unknown)} not registered; choose from {sorted(MLP_REGISTRY)}")

    if not args.report_only:
        try:
            specs = build_grid(args)
        except ValueError as e:
            sys.exit(f"error: {e}")
        for s in specs:
            p = s.prediction
            print(f"grid: {s.run_id} params {p.params:,} share {p.share:.1%} predicted {p.total_bytes:,} bytes "
                  f"(+{p.rel_error:.1%}: {p.total_high:,})")
        if args.dry_run:
            return
        args.out.mkdir(parents=True, exist_ok=True)
        env = run_env(args)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            run_all(specs, args.out, args.trainer, env, args.scheme, args.jobs, args.seconds, args.stop_after,
                    args.stop_margin, on_result=lambda _: write_report(list(ResultStore(args.out).load().values()),
                                                                        args.out, args.bytes, with_plots=False))
        except KeyboardInterrupt:
            sys.exit("sweep: interrupted; rerun the same command to resume")
    rows = list(ResultStore(args.out).load().values())
    text, plots = write_report(rows, args.out, args.bytes, with_plots=not args.no_plots)
    print(f"sweep: {len(rows)} runs recorded; results {args.out / 'results.csv'}")
    for p in plots:
        print(f"sweep: plot {p}")
    print(f"sweep: {text}")


if __name__ == "__main__":
    main()
