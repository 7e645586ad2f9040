"""Resumable comparison of policy variants: `python -m rl.compare --variants mlp-narrow,hwnode-standard
--seeds 0,1,2 --steps 500000 --preset ref --jobs 2 --out rl-results`.

One spawned process per (variant, seed), one torch thread each. Every finished run is written to
OUT/runs/<variant>__<preset>__<steps>__seed<k>.json (atomically); a run whose file exists is not re-run,
so re-running a killed comparison finishes only what is missing. After each run the report
(OUT/summary_<preset>_<steps>.{csv,md}, runs CSV and curves PNG; rl/report.py) is rewritten from all
finished runs of the requested grid.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from queue import Empty

from rl.presets import PRESETS, get_preset
from rl.variants import VARIANTS, get_variant


def run_path(out: Path, variant: str, preset: str, steps: int, seed: int) -> Path:
    return out / "runs" / f"{variant}__{preset}__{steps}__seed{seed}.json"


_progress_queue = None  # set in each worker by _init_worker


def _init_worker(queue) -> None:
    global _progress_queue
    _progress_queue = queue


def _worker(variant: str, seed: int, preset: str, steps: int, eval_episodes: int | None, path: str) -> str:
    """Runs in a fresh spawned process: one torch thread, one run, one JSON file."""
    import torch

    torch.set_num_threads(1)
    from rl.run import train_and_evaluate

    key = (variant, seed)
    result = train_and_evaluate(variant, seed, preset, steps, eval_episodes,
                                progress=lambda n: _progress_queue.put((key, n)))
    from data.writes import atomic_write

    atomic_write(path, json.dumps(result, indent=1))  # a killed run never leaves a half-written result behind
    return path


def parse_list(text: str, kind: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise SystemExit(f"--{kind} is empty; give a comma-separated list")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rl.compare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="mlp-narrow,hwnode-standard,hwnode-scaled",
                   help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated integer seeds")
    p.add_argument("--preset", default="ref", choices=list(PRESETS), help="PPO settings (rl/presets.py)")
    p.add_argument("--steps", type=int, default=None, help="env steps per run (default: the preset's)")
    p.add_argument("--eval-episodes", type=int, default=None, help="deterministic eval episodes (default: preset's)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)), help="parallel runs")
    p.add_argument("--out", default="rl-results", help="results folder (keep it out of git)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the report from the finished runs and start none (e.g. while another comparison runs)")
    args = p.parse_args(argv)
    try:
        args.variants = [get_variant(v).name for v in parse_list(args.variants, "variants")]
        args.seeds = [int(s) for s in parse_list(args.seeds, "seeds")]
    except ValueError as e:
        p.error(str(e))
    if any(not 0 <= s < 2**32 for s in args.seeds) or len(set(args.seeds)) < len(args.seeds):
        p.error(f"--seeds {','.join(map(str, args.seeds))}: seeds must be distinct integers in [0, 2^32)")
    if len(set(args.variants)) < len(args.variants):
        p.error(f"--variants {','.join(args.variants)} names a variant twice")
    preset = get_preset(args.preset)
    args.steps = preset.default_steps if args.steps is None else args.steps
    if args.steps <= 0 or args.jobs <= 0 or (args.eval_episodes is not None and args.eval_episodes <= 0):
        p.error("--steps, --jobs and --eval-episodes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    from data.writes import WouldOverwrite
    from rl.report import RunRecordError

    args = parse_args(argv)
    try:
        return compare(args)
    except (RunRecordError, WouldOverwrite) as e:
        raise SystemExit(f"rl.compare: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit("rl.compare: interrupted; finished runs are kept, rerun the same command to finish the rest") from None


def compare(args) -> int:
    from tqdm import tqdm

    from rl.report import Ledger, TOOL, load_run, report_files, write_report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"rl.compare: --out {out} is a file; give a folder (a new one, or one rl.compare wrote)")
    grid = [(v, s) for s in args.seeds for v in args.variants]  # seed-major: partial tables cover every variant
    todo = [(v, s) for v, s in grid if not run_path(out, v, args.preset, args.steps, s).exists()]
    if args.report_only and len(todo) == len(grid):
        raise SystemExit(f"rl.compare: {out / 'runs'} holds no finished run of this grid (preset {args.preset}, "
                         f"{args.steps} steps); check --out, --preset and --steps")
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"rl.compare: cannot create {out / 'runs'} ({e.strerror}); choose another --out") from None
    eval_episodes = args.eval_episodes or get_preset(args.preset).eval_episodes
    for v, s in grid:
        path = run_path(out, v, args.preset, args.steps, s)
        if (v, s) in todo:
            continue
        run = load_run(path)  # an empty or damaged record is named before any run starts
        if (run["variant"], run["seed"]) != (v, s):
            raise SystemExit(f"rl.compare: {path} holds the run of {run['variant']} seed {run['seed']}, not what its "
                             "name says; move it away")
        if run["eval_episodes"] != eval_episodes:
            raise SystemExit(f"rl.compare: {path} was evaluated over a different number of episodes than "
                             f"{eval_episodes}; use another --out or the same --eval-episodes")
    Ledger(out, TOOL).check(*report_files(args.preset, args.steps))  # a user's file of that name: refused now, not later
    print(f"rl.compare preset:{args.preset} steps:{args.steps} runs:{len(grid)} done:{len(grid) - len(todo)} "
          f"todo:{len(todo)} jobs:{args.jobs} out:{out}", flush=True)

    def report() -> None:
        paths = [run_path(out, v, args.preset, args.steps, s) for v, s in grid]
        table = write_report(out, args.preset, args.steps, args.variants, [p for p in paths if p.exists()])
        if table:
            print(table, flush=True)

    if not todo or args.report_only:
        report()
        return 0
    # Workers inherit these before importing torch, so BLAS pools do not oversubscribe the cores.
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    ctx = get_context("spawn")
    queue = ctx.Queue()  # progress (run, env steps) from the workers; handed over at process start
    disable = args.no_progress
    overall = tqdm(total=len(todo), desc="runs", position=0, disable=disable, file=sys.stderr)
    bars: dict[tuple[str, int], tqdm] = {}
    failures = []
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, max_tasks_per_child=1,
                             initializer=_init_worker, initargs=(queue,)) as pool:
        futures = {pool.submit(_worker, v, s, args.preset, args.steps, args.eval_episodes,
                               str(run_path(out, v, args.preset, args.steps, s))): (v, s)
                   for v, s in todo}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            while True:  # drain progress messages
                try:
                    key, n = queue.get_nowait()
                except Empty:
                    break
                if key not in bars:
                    bars[key] = tqdm(total=args.steps, desc=f"{key[0]} s{key[1]}", unit="step",
                                     position=len(bars) + 1, leave=False, disable=disable, file=sys.stderr)
                bars[key].update(min(n, args.steps) - bars[key].n)
            for fut in done:
                v, s = futures[fut]
                if (v, s) in bars:
                    bars.pop((v, s)).close()
                try:
                    fut.result()
                    tqdm.write(f"rl.compare finished {v} seed {s}", file=sys.stderr)
                except Exception as e:  # keep the other runs going; report at the end
                    failures.append((v, s, repr(e)))
                    tqdm.write(f"rl.compare FAILED {v} seed {s}: {e!r}", file=sys.stderr)
                overall.update(1)
                report()
    overall.close()
    for v, s, err in failures:
        print(f"rl.compare error: {v} seed {s} failed: {err}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
