"""python -m sweep --out DIR [grid options]: size every grid point to the byte budget, train each for a short fixed
wall-clock budget (parallel, early-stopping clear losers), then write results.csv, the plots and a recommendation.

    python -m sweep --out sweep-results/cpu --bytes 1200000 --kinds relu2,swiglu \\
        --shares 0.15,0.3 --expansions 2,3 --seconds 45 --jobs 2 --head-dim 32 --dims 64:384
    python -m sweep --out DIR ...same options...      # again after an interruption: finished runs are kept
    python -m sweep --out DIR --report-only            # CSV, plots and recommendation from what is recorded

Without --data-path the runs use the offline sample dataset (built once, here, before any run starts).
A folder holds the runs of one setup (data, tokenizer, --env, trainer code, scheme, seconds, iterations, seed): a
command with another setup is refused there instead of mixing results. Failed runs are retried by the next command.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import math
import os
import signal
import sys
from pathlib import Path

from arch.budget import (add_shape_arguments, check_shape_arguments, default_code_bytes, dims_of, float_list,
                         fraction_list, get_scheme, load_calibration, solve_for_share, uncalibrated)
from arch.mlp import MLP_REGISTRY
from data.ledger import file_sha256
from data.writes import WouldOverwrite
from sweep.report import check_report_writable, write_report
from sweep.runs import ResultStore, RunSpec, SweepError, env_for_runs, trainer_knobs
from sweep.schedule import run_all, sigterm_as_interrupt

ROOT = Path(__file__).resolve().parents[1]


def build_grid(args, context: dict) -> list[RunSpec]:
    """Every kind x share x expansion, each solved for the shape closest to that share that fills the budget.
    Points that solve to the same shape (e.g. kinds whose size ignores e) are run once. A run's id hashes its shape
    and the context, so a run of other data, env or code is another run."""
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
                digest = hashlib.sha1((key + json.dumps(context, sort_keys=True)).encode()).hexdigest()[:6]
                run_id = f"{kind}-s{share:g}-e{e:g}-{p.shape.layers}x{p.shape.dim}-{digest}"
                seen[key] = run_id
                specs.append(RunSpec(run_id, kind, share, e, p))
    return specs


def code_version(trainer: Path) -> str:
    """sha256 over the trainer and every project module it can import (an edit there changes the results)."""
    from records.bundle import import_closure

    h = hashlib.sha256()
    for p in sorted(import_closure(ROOT, [trainer]) | {trainer.resolve()}):
        h.update(f"{p.name}:{file_sha256(p)};".encode())
    return h.hexdigest()[:16]


def run_context(args) -> dict:
    """Everything but the shape that changes a run's result."""
    if args.data_path:
        data = Path(args.data_path).resolve()
        found = sorted(p for p in data.iterdir() if p.name.startswith("fineweb_") or p.name == "manifest.json")
        listing = ";".join(f"{p.name}:{p.stat().st_size}" for p in found)
        data_id = f"{data}#{hashlib.sha256(listing.encode()).hexdigest()[:16]}"
        tokenizer = file_sha256(args.tokenizer_path)
    else:
        from data.sample import sample_dir_name

        data_id, tokenizer = f"offline sample {sample_dir_name(args.vocab)}", "the sample's"
    return {"data": data_id, "tokenizer_sha256": tokenizer, "env": sorted(args.env), "code": code_version(args.trainer),
            "scheme": args.scheme, "seconds": args.seconds, "iterations": args.iterations, "seed": args.seed,
            "float_max_numel": args.float_max_numel}


def check_context(rows: dict[str, dict], context: dict, out: Path) -> None:
    """Refuse to add runs to a folder that holds results of another setup: its report would rank them together.
    Failed runs hold no result, so a command fixed after a failure (another --env, say) may reuse the folder."""
    other = [r for r in rows.values() if r.get("context") != context and r["status"] != "failed"]
    if other:
        theirs = other[0].get("context") or {}
        keys = [k for k in context if theirs.get(k) != context[k]] if theirs else ["(recorded before run contexts)"]
        raise SweepError(f"{out} holds {len(other)} runs of another setup (differs in: {', '.join(keys)}); use another "
                         "--out for this one, or rerun with the options those runs had")


def check_env_knobs(args) -> set[str]:
    """The trainer's knobs (from its --help); every --env must name one."""
    try:
        knobs = trainer_knobs(args.trainer)
    except OSError as e:
        raise SweepError(f"--trainer {args.trainer} --help could not run ({e})") from None
    for item in args.env:
        key = item.partition("=")[0]
        if key not in knobs:
            close = difflib.get_close_matches(key, sorted(knobs), n=1)
            raise SweepError(f"--env {item!r}: {key} is not a knob of {args.trainer}"
                             + (f" (did you mean {close[0]}?)" if close else " (see its --help)"))
    return knobs


def run_env(args, knobs: set[str]) -> dict[str, str]:
    env = env_for_runs(dict(os.environ), knobs)
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
        key, _, value = item.partition("=")
        env[key] = value
    return env


# Knobs the sweep sets for every run, and the option that sets them: an --env of one would be ignored or clash.
SET_BY_SWEEP = {"DATA_PATH": "--data-path", "TOKENIZER_PATH": "--tokenizer-path", "SEED": "--seed",
                "MAX_WALLCLOCK_SECONDS": "--seconds", "ITERATIONS": "--iterations", "EXPORT_SCHEMES": "--scheme",
                "QUANT_FLOAT_MAX_NUMEL": "--float-max-numel", "VOCAB_SIZE": "--vocab", "NUM_LAYERS": "--layers",
                "MODEL_DIM": "--dims", "NUM_HEADS": "--head-dim", "NUM_KV_HEADS": "--kv-ratio", "MLP_KIND": "--kinds",
                "MLP_MULT": "--expansions", "TIE_EMBEDDINGS": "--untied", "MLP_KIND_LAYERS": "the grid (all layers)",
                "RUN_ID": "the grid (one per run)", "OUTPUT_DIR": "the run folders", "TRAIN_LOG_EVERY": "the sweep (5)"}


def check_arguments(args) -> None:
    """Every option that would make a run fail, or a number mean nothing, is refused by name before any run."""
    check_shape_arguments(args)
    if args.out.exists() and not args.out.is_dir():
        raise SweepError(f"--out {args.out} is a file; the sweep needs a folder (a new one, or one it wrote)")
    unknown = [k for k in args.kinds if k not in MLP_REGISTRY]
    if unknown or not args.kinds:
        raise SweepError(f"--kinds {','.join(unknown) or repr('')} not registered; choose from {sorted(MLP_REGISTRY)}")
    if args.report_only:
        return
    if args.seconds == 0 and args.stop_margin > 0:
        raise SweepError("--seconds 0 (no wall-clock cap: every run ends at --iterations) needs --stop-margin 0: early "
                         "stopping compares runs at a fraction of --seconds")
    rules = [("--seconds", args.seconds, math.isfinite(args.seconds) and args.seconds >= 0,
              "must be a number of seconds >= 0 (0: no cap, runs end at --iterations)"),
             ("--iterations", args.iterations, args.iterations > 0, "must be positive"),
             ("--jobs", args.jobs, args.jobs >= 1, "must be >= 1"),
             ("--threads", args.threads, args.threads >= 0, "must be >= 0 (0: cores / jobs)"),
             ("--min-fill", args.min_fill, 0 < args.min_fill <= 1, "must be in (0, 1]"),
             ("--stop-after", args.stop_after, 0 <= args.stop_after <= 1, "must be a fraction of --seconds in [0, 1]"),
             ("--stop-margin", args.stop_margin, math.isfinite(args.stop_margin) and args.stop_margin >= 0,
              "must be >= 0 nats (0: never stop early)"),
             ("--seed", args.seed, 0 <= args.seed < 2**32, "must be in [0, 2^32)")]
    for flag, value, ok, rule in rules:
        if not ok:
            raise SweepError(f"{flag} {value} {rule}")
    if args.data_path and not args.tokenizer_path:
        raise SweepError("--data-path needs --tokenizer-path (the SentencePiece model that made the shards)")
    if args.tokenizer_path and not args.data_path:
        raise SweepError("--tokenizer-path needs --data-path (without it the runs use the offline sample and its tokenizer)")
    if args.data_path and not Path(args.data_path).is_dir():
        raise SweepError(f"--data-path {args.data_path} is not a folder of shards")
    if args.tokenizer_path and not Path(args.tokenizer_path).is_file():
        raise SweepError(f"--tokenizer-path {args.tokenizer_path} is not a file")
    if not args.trainer.is_file():
        raise SweepError(f"--trainer {args.trainer} is not a file")
    for item in args.env:
        key = item.partition("=")[0]
        if not key or "=" not in item:
            raise SweepError(f"--env {item!r} must be KEY=VALUE")
        if key in SET_BY_SWEEP:
            raise SweepError(f"--env {item!r}: the sweep sets {key} for every run; use {SET_BY_SWEEP[key]} instead")
    # the trainers run in their own run folders: relative paths would point elsewhere there
    args.trainer = args.trainer.resolve()
    if args.data_path:
        args.data_path, args.tokenizer_path = str(Path(args.data_path).resolve()), str(Path(args.tokenizer_path).resolve())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="sweep folder (results.jsonl, results.csv, plots, runs/)")
    add_shape_arguments(ap)
    ap.add_argument("--kinds", default="relu2", help=f"comma-separated MLP kinds: {', '.join(sorted(MLP_REGISTRY))}")
    ap.add_argument("--shares", type=fraction_list, default=[0.25, 0.35, 0.45], help="target embedding shares")
    ap.add_argument("--expansions", type=float_list, default=[2.0, 2.66, 3.0, 4.0], help="hidden width / d")
    ap.add_argument("--min-fill", type=float, default=0.8, help="a shape must use at least this share of --bytes")
    ap.add_argument("--seconds", type=float, default=45.0,
                    help="training wall-clock budget of every run (0: none, every run trains --iterations steps; needs --stop-margin 0)")
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
    try:
        failed = sweep(args)
    except (SweepError, WouldOverwrite, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    if failed:
        sys.exit(f"sweep: {len(failed)} run(s) failed, e.g. {failed[0]['run_id']}: {failed[0]['note']}; fix the cause and "
                 "rerun the same command (failed runs are retried, finished ones kept)")


def sweep(args) -> list[dict]:
    """Run what is missing (unless --report-only), rewrite the report; returns the runs that failed this time."""
    check_arguments(args)
    store = ResultStore(args.out)
    failed: list[dict] = []
    if args.report_only:
        if not store.path.is_file():
            raise SweepError(f"{args.out} holds no sweep results ({store.path.name} is missing); check --out")
    else:
        knobs = check_env_knobs(args)
        context = run_context(args)
        specs = build_grid(args, context)
        for s in specs:
            p = s.prediction
            print(f"grid: {s.run_id} params {p.params:,} share {p.share:.1%} predicted {p.total_bytes:,} bytes "
                  f"(+{p.rel_error:.1%}: {p.total_high:,})")
        if args.dry_run:
            return []
        check_context(store.load(), context, args.out)
        check_report_writable(args.out)  # a user's results.csv there is refused before any run, not after
        env = run_env(args, knobs)
        args.out.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, sigterm_as_interrupt)
        try:
            recorded = run_all(specs, args.out, args.trainer, env, args.scheme, args.jobs, args.seconds, args.stop_after,
                               args.stop_margin, context=context,
                               on_result=lambda _: write_report(list(store.load().values()), args.out, args.bytes,
                                                                with_plots=False))
        except KeyboardInterrupt:
            sys.exit("sweep: interrupted; rerun the same command to resume")
        failed = [r for r in recorded if r["status"] == "failed"]
    rows = list(store.load().values())
    if len({json.dumps(r.get("context"), sort_keys=True) for r in rows if r["status"] != "failed"}) > 1:
        raise SweepError(f"{args.out} holds runs of different setups (data, env, code...); they cannot be ranked together")
    text, plots = write_report(rows, args.out, args.bytes, with_plots=not args.no_plots)
    print(f"sweep: {len(rows)} runs recorded; results {args.out / 'results.csv'}")
    for p in plots:
        print(f"sweep: plot {p}")
    print(f"sweep: {text}")
    return failed


if __name__ == "__main__":
    main()
