"""`python -m records pack`: turn finished runs into records/<track>/<date>_<name>/.

The folder holds README.md, submission.json, the train logs, requirements.txt, optionally the artifacts, and
ONE train_gpt.py: the trainer plus the project modules its run imports, packed by records/bundle.py. Packing
refuses evidence that would make a broken submission: unfinished logs, repeated seeds, runs of different code
or configs, sources edited since the runs, a logged code size that is not the packed file's, an over-budget
total, a CPU run on the record track.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from records.bundle import ENTRY, bundle_imports, import_closure, is_packed, module_name, pack_files
from records.folder import BYTE_BUDGET, REPO_ROOT, TRACKS
from records.logs import RunLog, parse_log
from records.plot import curve_section, write_seed_curves
from records.rerun import write_audit
from records.stats import significance

# Knobs that name a run or a machine's paths, not the model's config: left out of the reproduction command.
PER_RUN_KNOBS = ("SEED", "RUN_ID", "OUTPUT_DIR", "DATA_PATH", "TOKENIZER_PATH")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class PackError(ValueError):
    """Evidence that cannot become a valid record; the message lists every problem with its fix."""


@dataclass
class Evidence:
    logs: list[RunLog]
    sources: dict[str, str]  # shipped sources from the runs' code snapshot, entry first
    packed: bytes
    env: dict[str, str]  # config knobs the runs set (per-run knobs removed)


def _score_format(name: str, log: RunLog) -> str:
    """The export format a score line is about: `final_int6_zstd_roundtrip` -> int6+zstd; a sliding or TTT line
    scores the first format (the one whose total the log counts)."""
    m = re.match(r"final_(\w+?)_(zlib|zstd|lzma|brotli|ans)_roundtrip", name)
    return f"{m.group(1)}+{m.group(2)}" if m else (log.total_tag or "the submission's")


def config_env(log: RunLog) -> dict[str, str]:
    return {k: v for k, v in (log.env or {}).items() if k not in PER_RUN_KNOBS}


def collect(log_paths: list[Path], repo_root: Path = REPO_ROOT) -> Evidence:
    """Read and cross-check the logs; the packed file is built from the repository's sources, which must equal
    the code the runs logged."""
    problems: list[str] = []
    if not log_paths:
        raise PackError("no logs given: pass the train logs (logs/<RUN_ID>.txt) of every seed, or --seeds to run them")
    logs = []
    for p in log_paths:
        if not Path(p).is_file():
            problems.append(f"{p}: no such log")
            continue
        log = parse_log(p)
        logs.append(log)
        missing = []
        if not log.exact:  # this harness's trainer ends every evaluation with an 8-decimal `<eval>_exact` line
            missing.append("the final `<eval>_exact val_loss:... val_bpb:...` line the trainer prints last (the run did not finish)")
        if log.seed is None:
            missing.append("the `seed:N` line")
        if log.total_bytes is None or log.code_bytes is None or log.model_bytes is None:
            missing.append("the `Code size`, `Serialized model <tag>` and `Total submission size <tag>` lines")
        if not log.snapshot_files:
            missing.append("the `code_snapshot:` line and the sources")
        if log.env is None:
            missing.append("the `knobs_from_env:` line (the log predates it: re-run with the current train_gpt.py)")
        if missing:
            problems.append(f"{p} lacks " + "; ".join(missing))
        if log.targets_scored and log.targets_scored[0] != log.targets_scored[1]:
            problems.append(f"{p}: val_targets_scored:{log.targets_scored[0]}/{log.targets_scored[1]}: not every target was scored")
        for score in log.scores:
            if not (math.isfinite(score.val_bpb) and (score.val_loss is None or math.isfinite(score.val_loss))):
                problems.append(f"{p}: `{score.name}` scored val_bpb {score.val_bpb} (not a number) in format "
                                f"{_score_format(score.name, log)}: that export broke (e.g. a value overflowing fp16); fix it or "
                                "drop the format from EXPORT_SCHEMES, then re-run")
    if problems:
        raise PackError("\n".join(problems))

    seeds = [log.seed for log in logs]
    if len(set(seeds)) != len(seeds):
        problems.append(f"seeds repeat ({seeds}): every log must be a different seed")
    first = logs[0]
    for log in logs[1:]:
        if log.snapshot_files != first.snapshot_files:
            problems.append(f"{log.path} ran other files than {first.path}: one record is one code version")
        if config_env(log) != config_env(first):
            problems.append(f"{log.path} set other knobs than {first.path} ({config_env(log)} vs {config_env(first)}): one record is one config")
        if log.score_name != first.score_name:
            problems.append(f"{log.path} ends with {log.score_name}, {first.path} with {first.score_name}: not the same evaluation")
        if (log.device, log.world_size) != (first.device, first.world_size):
            problems.append(f"{log.path} ran on {log.world_size}x{log.device}, {first.path} on {first.world_size}x{first.device}")
    if problems:
        raise PackError("\n".join(problems))

    snapshot = first.snapshot()
    if list(snapshot) == [ENTRY] and is_packed(snapshot[ENTRY].encode("utf-8")):
        raise PackError(f"{first.path} is a run of an already packed {ENTRY}: add such logs to that record folder (verify accepts "
                        "them), or pack logs of runs of the repository's train_gpt.py")
    for log in logs[1:]:
        if log.snapshot() != snapshot:
            changed = sorted(f for f in snapshot if log.snapshot().get(f) != snapshot[f])
            problems.append(f"{log.path} logged other source text than {first.path} for {changed}: one record is one code version")
    if first.snapshot_files[0] != ENTRY:
        problems.append(f"{first.path}: the first logged source is {first.snapshot_files[0]}, not {ENTRY}")
    for rel, text in snapshot.items():
        path = repo_root / rel
        if not path.is_file():
            problems.append(f"{rel} ran in the logged runs but is missing from {repo_root}: check out the commit that produced the logs")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{rel} changed since the runs (it differs from the logged snapshot): check out the commit that produced "
                            "the logs, or re-run with the current code")
    if problems:
        raise PackError("\n".join(problems))

    paths = [repo_root / rel for rel in first.snapshot_files]
    try:
        reached = import_closure(repo_root, paths, lazy=False)
    except ValueError as e:
        raise PackError(f"the logged code cannot be packed: {e}") from None
    unreached = sorted(p.relative_to(repo_root.resolve()).as_posix() for p in reached - {p.resolve() for p in paths})
    if unreached:
        raise PackError(f"the runs' module-level imports reach {unreached}, which their code snapshot lacks: the logs were made "
                        "by an older trainer; re-run with the current one so the logged code size covers everything that ships")
    packed = pack_files(paths, repo_root)
    for log in logs:
        if log.code_bytes != len(packed):
            problems.append(f"{log.path} counted {log.code_bytes} code bytes but the packed train_gpt.py is {len(packed)} bytes: the run "
                            "used other sources, another code-size rule or another records/bundle.py; re-run with the current trainer")
        if log.total_bytes > BYTE_BUDGET:
            problems.append(f"{log.path}: total {log.total_bytes} bytes is over the {BYTE_BUDGET}-byte cap by "
                            f"{log.total_bytes - BYTE_BUDGET}; shrink the model or its export")
        if log.code_bytes + log.model_bytes != log.total_bytes:
            problems.append(f"{log.path}: Code size {log.code_bytes} + model {log.model_bytes} != total {log.total_bytes}")
    if problems:
        raise PackError("\n".join(problems))
    return Evidence(logs=sorted(logs, key=lambda lg: lg.seed), sources={r: snapshot[r] for r in first.snapshot_files},
                    packed=packed, env=config_env(first))


def requirements(sources: dict[str, str], repo_root: Path) -> list[str]:
    """pip distributions the packed sources import (lazy imports included), from the installed metadata."""
    dists = importlib.metadata.packages_distributions()
    names = set()
    for _rel, imp in bundle_imports(sources, ENTRY):
        top = imp.name.partition(".")[0]
        if imp.from_item or not top or top in sys.stdlib_module_names or top == "__future__":
            continue
        if not ((repo_root / top).is_dir() or (repo_root / f"{top}.py").is_file()):  # ours are packed, not installed
            names.update(dists.get(top, [top]))
    return sorted(names, key=str.lower)


def _run_command(ev: Evidence) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(ev.env.items()))
    log = ev.logs[0]
    if log.world_size and log.world_size > 1:
        launcher = f"torchrun --standalone --nproc_per_node={log.world_size} train_gpt.py"
    else:
        launcher = "python train_gpt.py"
    return f"SEED={log.seed} " + (env + " " if env else "") + launcher


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def baseline_scores(folder: Path) -> tuple[list[float], str]:
    """Per-seed bpb of a baseline record folder, never looser than what it claims: its per-seed claims; else its
    seeds' logged scores (records/claims.py: reported runs only, one value per seed, ablations and duplicate logs
    left out) when their mean is the claimed val_bpb (or there is no claim); else the claimed val_bpb alone."""
    from records.claims import agrees
    from records.leaderboard import read_entry

    if not Path(folder).is_dir():
        raise PackError(f"baseline {folder}: no such folder; pass a record folder (records/<track>/<date>_<name>/)")
    entry = read_entry(Path(folder))
    reading = entry.reading
    claimed = [c.bpb for c in reading.seed_claims.values() if c.bpb is not None]
    if claimed and (reading.listed_seeds is None or len(claimed) == len(reading.listed_seeds)):
        return claimed, entry.name
    logged = list(reading.seed_scores().values())
    if logged and (reading.bpb is None or agrees(statistics.fmean(logged), reading.bpb)):
        return logged, entry.name
    if entry.val_bpb is None:
        raise PackError(f"baseline {folder}: no val_bpb in its submission json or logs; pick a record folder with a score")
    return [entry.val_bpb], entry.name


def build_submission(ev: Evidence, name: str, author: str, github_id: str, track: str, date: str, blurb: str,
                     log_names: dict[int, str], artifact_names: dict[int, str],
                     baseline: Path | None) -> dict:
    bpbs = [lg.val_bpb for lg in ev.logs]
    losses = [lg.val_loss for lg in ev.logs]
    mean_bpb, std_bpb = _mean_std(bpbs)
    mean_loss, std_loss = _mean_std(losses)
    first = ev.logs[0]
    hardware = f"{first.world_size}x{'CPU' if first.device == 'cpu' else first.device}"
    sub = {
        "name": name,
        "author": author,
        "github_id": github_id,
        "date": date,
        "track": TRACKS[track][1],
        "blurb": blurb,
        "val_bpb": mean_bpb,
        "val_loss": mean_loss,
        "val_bpb_std": std_bpb,
        "val_loss_std": std_loss,
        "bytes_total": max(lg.total_bytes for lg in ev.logs),
        "bytes_code": len(ev.packed),
        "artifact_bytes_max": max(lg.model_bytes for lg in ev.logs),
        "n_seeds": len(ev.logs),
        "seeds": [lg.seed for lg in ev.logs],
        "seed_results": {
            str(lg.seed): {
                "val_bpb": lg.val_bpb, "val_loss": lg.val_loss, "bytes_total": lg.total_bytes, "artifact_bytes": lg.model_bytes,
                "steps": lg.steps, "train_time_s": None if lg.train_time_ms is None else lg.train_time_ms / 1000.0,
                "log": log_names[lg.seed], "artifact": artifact_names.get(lg.seed),
            }
            for lg in ev.logs
        },
        "score_line": first.score_name,
        "size_line": f"Total submission size {first.total_tag}",
        "hardware": hardware,
        "pytorch_version": first.pytorch,
        "run_env": ev.env,
        "packed_modules": [module_name(r) for r in ev.sources if r != ENTRY],
        "bytes_code_sources": sum(len(s.encode("utf-8")) for s in ev.sources.values()),
        "comparison_baseline": None,
    }
    if baseline is not None:
        base_bpbs, base_name = baseline_scores(baseline)
        sig = significance(bpbs, losses, base_bpbs)
        try:
            shown = baseline.resolve().relative_to(REPO_ROOT).as_posix()
        except ValueError:
            shown = str(baseline)
        sub["comparison_baseline"] = {
            "folder": shown, "name": base_name, "val_bpb": sig.baseline_mean_bpb, "n_seeds": sig.n_baseline,
            "gain_bpb": sig.gain_bpb, "gain_nats": sig.gain_nats, "margin_bpb": sig.margin_bpb, "test": sig.test,
            "passes_rule": sig.passes,
        }
        sub["t_statistic"], sub["p_value"], sub["welch_df"] = sig.t_statistic, sig.p_value, sig.df
    return sub


def build_readme(sub: dict, ev: Evidence, track: str) -> str:
    first = ev.logs[0]
    label = "Record submission" if track == "record" else "Non-record submission"
    cpu = first.device == "cpu"
    lines = [
        f"# {sub['name']}",
        "",
        f"**{label}** (`{sub['track']}`){' — trained on CPU, not on the challenge hardware' if cpu else ''}. "
        f"By {sub['author']} (@{sub['github_id']}), {sub['date']}.",
        "",
        *([sub["blurb"], ""] if sub["blurb"] else []),
        f"**val_bpb {sub['val_bpb']:.8f}** (mean of {sub['n_seeds']} seed{'s' if sub['n_seeds'] > 1 else ''}, std {sub['val_bpb_std']:.8f}); "
        f"score line `{sub['score_line']}`; largest total {sub['bytes_total']:,} bytes of the {BYTE_BUDGET:,} cap.",
        "",
        "| seed | val_bpb | val_loss | total bytes | model bytes | steps | train time | log |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lg in ev.logs:
        r = sub["seed_results"][str(lg.seed)]
        t = "" if r["train_time_s"] is None else f"{r['train_time_s']:.1f} s"
        lines.append(f"| {lg.seed} | {lg.val_bpb:.8f} | {lg.val_loss:.8f} | {lg.total_bytes:,} | {lg.model_bytes:,} | {lg.steps or ''} | {t} | `{r['log']}` |")
    lines += ["", "## Significance", ""]
    if sub["comparison_baseline"]:
        c = sub["comparison_baseline"]
        lines.append(f"Against `{c['folder']}` (val_bpb {c['val_bpb']:.5f}, {c['n_seeds']} seed(s)): gain {c['gain_nats']:+.5f} nats "
                     f"({c['gain_bpb']:+.5f} bpb), {c['test']} t-test p={sub['p_value']:.3g}. The rule (>= 0.005 nats at p < 0.01) "
                     f"{'is met' if c['passes_rule'] else 'is NOT met'}.")
    else:
        lines.append("No comparison: a non-record submission makes no claim against the leaderboard.")
    lines += [
        "",
        "## Configuration",
        "",
        f"- Hardware: {sub['hardware']} (PyTorch {sub['pytorch_version']}); preset and knobs as logged in `{sub['seed_results'][str(first.seed)]['log']}`.",
        "- Knobs set from the environment (everything else is train_gpt.py's default): "
        + (", ".join(f"`{k}={v}`" for k, v in sorted(ev.env.items())) or "none"),
        *([f"- Training stopped at the wall-clock cap ({first.max_wallclock_seconds:g} s), so the step counts above depend on the "
           "machine's speed and load."] if any("stopping_early: wallclock_cap" in lg.text for lg in ev.logs) else []),
        "",
        "## How to run",
        "",
        "From inside this folder, with only the pip packages of `requirements.txt` (PyTorch as for your hardware):",
        "",
        "```bash",
        "pip install -r requirements.txt",
        _run_command(ev) + "   # one seed; the logs used SEED=" + ",".join(str(s) for s in sub["seeds"]),
        "```",
        "",
        _data_note(first),
        "",
        "## Code",
        "",
        f"`train_gpt.py` is ONE self-contained file ({sub['bytes_code']:,} bytes, the bytes counted above): the trainer and the "
        f"{len(sub['packed_modules'])} project modules its run imports ({', '.join(sub['packed_modules'])}), {sub['bytes_code_sources']:,} "
        "bytes of source, embedded without comments and docstrings, registered under their import names at start-up, and "
        "compressed (lzma, stored as a latin-1 string: records-pack v2). Read them with `python -m records unpack train_gpt.py "
        "src/` from the harness repository, or by hand: the file is `exec(lzma.decompress(...))` of a readable Python bundle; "
        "the commented sources are in the logs' code snapshot.",
        "",
    ]
    return "\n".join(lines)


def _data_note(log: RunLog) -> str:
    if "data:sample_dataset" in log.text:
        return ("These runs used the harness's offline sample dataset (Python's own documentation, vocab "
                f"{(log.env or {}).get('VOCAB_SIZE', 1024)}). A record does not ship the sample builder: build it once in the harness "
                "repository (`python -c \"from data.sample import ensure_sample_dataset as e; d = e(); print(d.data_path, "
                "d.tokenizer_path)\"`) and run this file with `DATA_PATH` and `TOKENIZER_PATH` set to the two printed paths.")
    m = re.search(r"^train_loader:dataset:(\S+)", log.text, re.M)
    name = m.group(1) if m else "the same dataset"
    return (f"These runs used the dataset `{name}`: point `DATA_PATH` at its shard folder and `TOKENIZER_PATH` at its "
            "SentencePiece model (`python -m data.download` in the harness fetches the challenge's FineWeb sp1024).")


def write_record(ev: Evidence, *, name: str, author: str, github_id: str, track: str, blurb: str = "", date: str | None = None,
                 out_root: Path | None = None, baseline: Path | None = None, copy_artifacts: bool = False,
                 repo_root: Path = REPO_ROOT) -> Path:
    """Create the record folder; refuses to overwrite one."""
    if track not in TRACKS:
        raise PackError(f"--track {track!r}: choose one of {sorted(TRACKS)}")
    if not NAME_RE.match(name):
        raise PackError(f"--name {name!r}: use letters, digits, '_', '-' and '.' only (no spaces: folder names with spaces break tools)")
    date = date or dt.date.today().isoformat()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise PackError(f"--date {date!r} must be YYYY-MM-DD")
    if track == "record":
        cpu = [str(lg.path) for lg in ev.logs if lg.device != "cuda" and not str(lg.device).startswith("cuda")]
        if cpu:
            raise PackError(f"{cpu} did not run on CUDA: the record track is 8xH100 in 10 minutes; use --track non-record")
        slow = [str(lg.path) for lg in ev.logs if (lg.max_wallclock_seconds or 0) <= 0 or lg.max_wallclock_seconds > 600]
        if slow:
            raise PackError(f"{slow} trained without the 600 s cap (MAX_WALLCLOCK_SECONDS): the record track allows 10 minutes; "
                            "use --track non-record")
        if baseline is None:
            raise PackError("the record track needs --baseline FOLDER (the current best record) to show the 0.005-nat gain at "
                            "p < 0.01; or use --track non-record")
    folder = (out_root or repo_root / "records") / TRACKS[track][0] / f"{date}_{name}"
    if folder.exists():
        raise PackError(f"{folder} already exists: pick another --name or remove it")
    log_names = {lg.seed: f"train_seed{lg.seed}.log" for lg in ev.logs}
    artifact_names: dict[int, str] = {}
    artifact_sources: dict[int, Path] = {}
    if copy_artifacts:
        for lg in ev.logs:
            src = _artifact_file(lg)
            if src is None:
                raise PackError(f"{lg.path}: its artifact ({lg.artifact_path}) is not found next to the log's run folder; "
                                "pass the logs from where the runs wrote them, or drop --artifacts")
            if src.stat().st_size != lg.model_bytes:
                raise PackError(f"{src} is {src.stat().st_size} bytes but {lg.path} logged {lg.model_bytes}: not this run's artifact")
            artifact_names[lg.seed] = f"seed{lg.seed}_{src.name}"  # top level: .gitignore keeps records/**/*.ptz, not artifacts/
            artifact_sources[lg.seed] = src
    sub = build_submission(ev, name, author, github_id, track, date, blurb, log_names, artifact_names, baseline)
    if track == "record" and not sub["comparison_baseline"]["passes_rule"]:
        c = sub["comparison_baseline"]
        raise PackError(f"the gain over {c['folder']} fails the rule: {c['gain_nats']:+.5f} nats, p={sub['p_value']:.3g} "
                        "(needs >= 0.005 nats at p < 0.01): add seeds or use --track non-record")
    folder.mkdir(parents=True)
    (folder / ENTRY).write_bytes(ev.packed)
    for lg in ev.logs:
        shutil.copyfile(lg.path, folder / log_names[lg.seed])
    for seed, src in artifact_sources.items():
        shutil.copyfile(src, folder / artifact_names[seed])
    reqs = requirements(ev.sources, repo_root)
    (folder / "requirements.txt").write_text("\n".join(reqs) + "\n", encoding="utf-8")
    (folder / "submission.json").write_text(json.dumps(sub, indent=2) + "\n", encoding="utf-8")
    curves = write_seed_curves({lg.seed: folder / log_names[lg.seed] for lg in ev.logs})  # records/plot.py
    (folder / "README.md").write_text(build_readme(sub, ev, track) + curve_section(curves), encoding="utf-8")
    write_audit(folder, sub, repo_root)  # the audit's command and result, which verify reruns (records/rerun.py)
    return folder


def _artifact_file(log: RunLog) -> Path | None:
    """The artifact a log names (`path:` of its Serialized model line), relative to the run's folder (the parent of logs/)."""
    if not log.artifact_path:
        return None
    p = Path(log.artifact_path)
    candidates = [p] if p.is_absolute() else [log.path.resolve().parent.parent / p, log.path.resolve().parent / p]
    return next((c for c in candidates if c.is_file()), None)


def run_seeds(seeds: list[int], name: str, repo_root: Path = REPO_ROOT, nproc: int = 1) -> list[Path]:
    """Run train_gpt.py once per seed from the repository root (the caller's env knobs apply); returns the logs."""
    logs = []
    for seed in seeds:
        run_id = f"{name}_seed{seed}"
        env = dict(os.environ, SEED=str(seed), RUN_ID=run_id)
        cmd = [sys.executable, "train_gpt.py"]
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train_gpt.py"]
        print(f"[records] SEED={seed} RUN_ID={run_id} {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, cwd=repo_root, env=env).returncode != 0:
            raise PackError(f"the run with SEED={seed} failed (see its output above and logs/{run_id}.txt)")
        logs.append(repo_root / "logs" / f"{run_id}.txt")
    return logs
