"""Command line: python -m records pack | verify | leaderboard | unpack | plot (each with --help)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from records.folder import RECORDS_ROOT, REPO_ROOT


def _pack(a: argparse.Namespace) -> int:
    from records.pack import PackError, collect, run_seeds, write_record
    from records.verify import report, verify

    baseline = _baseline(a)
    try:
        logs = [Path(p) for p in a.logs]
        if a.seeds:
            if logs:
                raise PackError("give either logs or --seeds, not both")
            try:
                seeds = [int(s) for s in a.seeds.split(",")]
            except ValueError:
                raise PackError(f"--seeds {a.seeds!r}: give comma-separated integers, e.g. --seeds 1337,1338,1339") from None
            logs = run_seeds(seeds, a.name, REPO_ROOT, a.nproc)
        evidence = collect(logs, REPO_ROOT)
        folder = write_record(evidence, name=a.name, author=a.author, github_id=a.github_id or a.author, track=a.track,
                              blurb=a.blurb, date=a.date, out_root=Path(a.out_root) if a.out_root else None,
                              baseline=baseline, copy_artifacts=a.artifacts)
    except PackError as e:
        print(f"records pack: cannot pack:\n{e}", file=sys.stderr)
        return 2
    print(f"records pack: wrote {folder} ({len(evidence.packed):,}-byte train_gpt.py from "
          f"{sum(len(s.encode()) for s in evidence.sources.values()):,} bytes of {len(evidence.sources)} sources)")
    checks = verify(folder, smoke=not a.no_smoke, smoke_data=_smoke_data(a))
    print(report(checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def _smoke_data(a: argparse.Namespace):
    if bool(a.smoke_data) != bool(a.smoke_tokenizer):
        sys.exit("error: give --smoke-data and --smoke-tokenizer together")
    if a.smoke_data and not (Path(a.smoke_data).is_dir() and Path(a.smoke_tokenizer).is_file()):
        sys.exit(f"error: --smoke-data {a.smoke_data} must be a shard folder and --smoke-tokenizer {a.smoke_tokenizer} a "
                 ".model file; check both paths")
    return (Path(a.smoke_data), Path(a.smoke_tokenizer)) if a.smoke_data else None


def _baseline(a: argparse.Namespace) -> Path | None:
    if a.baseline and not Path(a.baseline).is_dir():
        sys.exit(f"error: --baseline {a.baseline}: no such folder; pass the record folder to beat (records/<track>/<date>_<name>/)")
    return Path(a.baseline) if a.baseline else None


def _verify(a: argparse.Namespace) -> int:
    from records.verify import report, verify

    checks = verify(Path(a.folder), baseline=_baseline(a), smoke=not a.no_smoke, smoke_data=_smoke_data(a))
    print(report(checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def _leaderboard(a: argparse.Namespace) -> int:
    from records.leaderboard import format_table, leaderboard

    print(format_table(leaderboard(Path(a.root)), markdown=a.markdown))
    return 0


def _unpack(a: argparse.Namespace) -> int:
    from records.unpack import unpack_file

    for path in unpack_file(Path(a.file), Path(a.out_dir), force=a.force):
        print(path)
    return 0


def _plot(a: argparse.Namespace) -> int:
    from records.plot import FIGURE_SUFFIXES, read_curve, read_text, summary_lines, try_draw

    logs = [Path(p) for p in a.logs]
    for p in logs:
        if not p.is_file():
            sys.exit(f"error: {p}: no such log file")
    out = Path(a.out) if a.out else (logs[0].with_suffix(".png") if len(logs) == 1 else Path("curves.png"))
    if out.suffix not in FIGURE_SUFFIXES:
        sys.exit(f"error: --out {out}: the figure must end in {', '.join(FIGURE_SUFFIXES)}")
    if out.exists() and not a.force:
        sys.exit(f"error: {out} exists; pass --out NEW.png, or --force to replace it")
    stems = [p.stem for p in logs]  # train_seed42.log of two folders: tell them apart by folder
    curves = [read_curve(p, p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}") for p in logs]
    for p, c in zip(logs, curves, strict=True):
        if not (c.train or c.val):
            sys.exit(f"error: {p} has no `step:N/M train_loss:...` or `val_loss:...` lines: not a training log")
        print("\n".join(summary_lines(read_text(p), c.name)))
    figure, line = try_draw(curves, out, a.title)
    print(line)
    return 0 if figure else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m records", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def smoke_opts(p):
        p.add_argument("--no-smoke", action="store_true", help="skip running the packed file (reported as SKIP, never PASS)")
        p.add_argument("--smoke-data", help="shard folder for the smoke run (default: the offline sample dataset)")
        p.add_argument("--smoke-tokenizer", help="SentencePiece .model matching --smoke-data")

    p = sub.add_parser("pack", help="make records/<track>/<date>_<name>/ from finished runs, then verify it")
    p.add_argument("logs", nargs="*", help="train logs (logs/<RUN_ID>.txt), one per seed")
    p.add_argument("--seeds", help="comma-separated seeds to run first (python train_gpt.py from the repo root, your env knobs apply)")
    p.add_argument("--nproc", type=int, default=1, help="with --seeds: torchrun ranks per run (default 1: plain python)")
    p.add_argument("--name", required=True, help="short name, letters/digits/_-. (the folder is <date>_<name>)")
    p.add_argument("--author", required=True)
    p.add_argument("--github-id", help="GitHub id (default: --author)")
    p.add_argument("--track", choices=["record", "non-record"], default="non-record")
    p.add_argument("--baseline", help="record folder to beat (required on the record track)")
    p.add_argument("--blurb", default="", help="one paragraph for README.md and submission.json")
    p.add_argument("--date", help="YYYY-MM-DD (default: today)")
    p.add_argument("--artifacts", action="store_true", help="also copy each run's compressed model into the folder")
    p.add_argument("--out-root", help=f"where track folders live (default {RECORDS_ROOT})")
    smoke_opts(p)
    p.set_defaults(func=_pack)

    p = sub.add_parser("verify", help="check a record folder; every failure says what to fix")
    p.add_argument("folder")
    p.add_argument("--baseline", help="record folder to test the gain against (default: the one in submission.json)")
    smoke_opts(p)
    p.set_defaults(func=_verify)

    p = sub.add_parser("leaderboard", help="all record folders sorted by val_bpb")
    p.add_argument("--root", default=str(RECORDS_ROOT))
    p.add_argument("--markdown", action="store_true")
    p.set_defaults(func=_leaderboard)

    p = sub.add_parser("unpack", help="write the sources embedded in a packed train_gpt.py into DIR (nothing is executed)")
    p.add_argument("file")
    p.add_argument("out_dir", metavar="DIR")
    p.add_argument("--force", action="store_true", help="replace files that already exist in DIR (never through a link)")
    p.set_defaults(func=_unpack)

    p = sub.add_parser("plot", help="train loss and val bpb against training time, one curve per log (seeds, recipes)")
    p.add_argument("logs", nargs="+", help="finished train logs: ours or the public challenge's")
    p.add_argument("--out", help="figure path, .png/.pdf/.svg (default: LOG.png for one log, curves.png for several)")
    p.add_argument("--title", help="figure title (default: the run names)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_plot)

    a = ap.parse_args(argv)
    from records.leaderboard import LeaderboardError
    from records.pack import PackError
    from records.unpack import UnpackError

    try:
        return a.func(a)
    except (LeaderboardError, UnpackError, PackError) as e:
        print(f"records {a.cmd}: {e}", file=sys.stderr)
    except OSError as e:  # unreadable file, full disk, no permission: name it, no traceback
        print(f"records {a.cmd}: {e.filename or ''}: {e.strerror or e}; check the path and its permissions", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"records {a.cmd}: interrupted", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
