"""python -m bench.claims --out DIR [--quick] [--only NAME[,NAME]] [--jobs N] [--report-only]

Runs the study's experiments (resumable: rerun the same command after a kill and only missing runs start), then
writes each experiment's table (markdown + CSV) and plot under DIR/<experiment>/. --report-only rebuilds those from
the run records in DIR/<experiment>/runs/ and starts nothing (that is how the committed bench/results/ is made).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EXPERIMENTS = ("hwnode_quant", "recall", "mixers_lm", "coupled_adam", "allocation")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.claims", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", type=Path, required=True, help="study folder (keep it outside git; see bench/results/README.md)")
    p.add_argument("--quick", action="store_true", help="tiny models, 2 seeds, offline sample data: the whole study in minutes")
    p.add_argument("--only", default=",".join(EXPERIMENTS), help=f"comma-separated experiments: {', '.join(EXPERIMENTS)}")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (each one process, one torch thread)")
    p.add_argument("--report-only", action="store_true", help="rebuild tables and plots from the run records; run nothing")
    args = p.parse_args(argv)
    args.only = [e.strip() for e in args.only.split(",") if e.strip()]
    unknown = [e for e in args.only if e not in EXPERIMENTS]
    if unknown or not args.only:
        p.error(f"--only {','.join(unknown) or '(empty)'}: choose from {', '.join(EXPERIMENTS)}")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    return args


def record_cpu(out: Path, wall_s: float) -> None:
    """Appends this invocation's CPU seconds (its own and every finished child's) to OUT/cpu_seconds.jsonl."""
    import json
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"wall_s": round(wall_s), "cpu_s": round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime),
           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(out / "cpu_seconds.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    if args.report_only:
        missing = [e for e in args.only if not (out / e / "runs").is_dir()]
        if missing and len(missing) == len(args.only):
            sys.exit(f"bench.claims: no run records under {out}/<experiment>/runs/ for {', '.join(missing)}; "
                     "run the study first (without --report-only)")
    from bench.claims import report

    if args.report_only:
        for exp in args.only:
            if exp not in missing:
                print(report.write(exp, out))
        return 0

    from bench.claims import allocation, lm, lm_experiments as lmx, recall
    from bench.claims.data import study_dataset

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    lm_runs = []
    try:
        if "hwnode_quant" in args.only:
            lm_runs += lmx.hwnode_runs(study_dataset(1024, args.quick), args.quick)
        if "mixers_lm" in args.only:
            lm_runs += lmx.mixer_runs(study_dataset(1024, args.quick), args.quick)
        if "coupled_adam" in args.only:
            lm_runs += lmx.coupled_runs(study_dataset(1024, args.quick), args.quick)
        lm_runs.sort(key=lambda r: r.seed)  # seed-major over all experiments: partial results cover every arm
        progress = lambda exp: report.write(exp, out, plots=False)  # noqa: E731
        if lm_runs:
            lm.run_lm(lm_runs, out, args.jobs, on_record=progress)
        if "mixers_lm" in args.only:  # the equal-time arms need the step-time benchmark first
            lm.run_lm(lmx.mixer_timed_runs(study_dataset(1024, args.quick), args.quick, out, args.jobs), out, args.jobs,
                      on_record=progress)
        if "coupled_adam" in args.only:  # the instrumented replay behind the Coupled Adam reading (one process)
            from bench.claims import coupled_probe

            coupled_probe.run(out, None, args.quick, args.jobs)
        if "recall" in args.only:
            recall.run_study(out, args.quick, args.jobs)
        if "allocation" in args.only:
            allocation.run_study(out, args.quick, args.jobs)
    except KeyboardInterrupt:
        sys.exit("bench.claims: interrupted; rerun the same command to resume")
    finally:
        record_cpu(out, time.time() - t0)
    for exp in args.only:
        if (out / exp / "runs").is_dir():
            print(report.write(exp, out))
    print(f"bench.claims: done in {time.time() - t0:.0f}s; results under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
