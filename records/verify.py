"""`python -m records verify FOLDER`: is this record folder a submission reviewers would accept?

Two layouts are verified, each against what applies to it:

- a folder `records pack` made (its train_gpt.py is a records-pack bundle): every field pack writes, every seed's
  log listed and matching to 8 decimals, the run's knobs (`run_env`), the packed file (reproducible from its own
  sources, equal to the code the logs ran), a smoke run of it outside the repository, the legality audit;
- an official record (openai/parameter-golf layout): what the public rules ask (README.md, submission.json with
  name, GitHub id, val_bpb and metadata, the train logs, train_gpt.py, a requirements.txt when the code imports
  extra packages), the json against its logs (records/claims.py matches them by seed and score) and the cap.
  Its code is a CUDA script: a rerun is reported as SKIP with that reason, never as a failure.

Every check reports PASS, FAIL (with what to fix) or SKIP (with why; a check that compared nothing is a SKIP, never
a PASS): files, submission, logs, json-vs-logs, size, packed-file, smoke, significance, audit.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from records.bundle import ENTRY, bundle_imports, format_version, is_reproducible, module_name
from records.check import Check
from records.claims import METADATA_FIELDS, Reading, read_folder
from records.compact import embeds
from records.folder import BYTE_BUDGET, REPO_ROOT, is_non_record, load_json
from records.logs import RunLog
from records.pack import PER_RUN_KNOBS
from records.rerun import audit_check, smoke_check
from records.sources import extra_packages, mentions_cuda
from records.stats import P_MAX, significance

PACKED_FIELDS = {"name": str, "author": str, "github_id": str, "date": str, "track": str, "val_bpb": float, "val_loss": float,
                 "bytes_total": int, "bytes_code": int, "seeds": list, "seed_results": dict}


class _Checks(list):
    def add(self, name: str, problems: list[str], ok: str) -> None:
        self.append(Check(name, "FAIL", "; ".join(problems)) if problems else Check(name, "PASS", ok))


def _close(a, b, tol=1e-8) -> bool:
    try:
        return abs(float(a) - float(b)) <= tol
    except (TypeError, ValueError):
        return False


def is_packed_layout(folder: Path, sub: dict) -> bool:
    """Made by `records pack`: its train_gpt.py is a bundle, or its json carries what only pack writes."""
    entry = folder / ENTRY
    head = entry.read_bytes()[:64] if entry.is_file() else b""
    return format_version(head) is not None or "packed_modules" in sub or "run_env" in sub


def verify(folder: Path, baseline: Path | None = None, smoke: bool = True, smoke_data: tuple[Path, Path] | None = None,
           repo_root: Path = REPO_ROOT) -> list[Check]:
    folder = Path(folder)
    if not folder.is_dir():
        return [Check("files", "FAIL", f"{folder} is not a folder: pass records/<track>/<date>_<name>/")]
    reading = read_folder(folder)
    if is_packed_layout(folder, reading.data):
        return _verify_packed(folder, reading, baseline, smoke, smoke_data, repo_root)
    return _verify_official(folder, reading, baseline, repo_root)


# --------------------------------------------------------------------------------------------------
# Shared checks


def _size_check(logs: list[RunLog], extra: list[str] | None = None, shipped: int | None = None) -> Check:
    problems = list(extra or [])
    counted = [lg for lg in logs if lg.total_bytes is not None]
    for lg in counted:
        if lg.total_bytes > BYTE_BUDGET:
            problems.append(f"{lg.path.name}: total {lg.total_bytes:,} bytes is {lg.total_bytes - BYTE_BUDGET:,} over the "
                            f"{BYTE_BUDGET:,} cap")
        if lg.code_bytes is not None and lg.model_bytes is not None and lg.code_bytes + lg.model_bytes != lg.total_bytes:
            problems.append(f"{lg.path.name}: code {lg.code_bytes:,} + model {lg.model_bytes:,} != logged total {lg.total_bytes:,}")
    if problems:
        return Check("size", "FAIL", "; ".join(problems))
    if not counted:
        return Check("size", "SKIP", "no reported log prints a total size line (`Total submission size <format>: N bytes`): "
                                     "nothing to compare with the cap")
    largest = max(lg.total_bytes for lg in counted)
    tail = f"; code = shipped {ENTRY} ({shipped:,} bytes)" if shipped is not None else ""
    return Check("size", "PASS", f"largest total of {len(counted)} log(s) {largest:,} <= {BYTE_BUDGET:,} bytes{tail}")


def _significance(scores: list[float], losses: list[float | None], stored: dict, sub: dict, baseline: Path | None,
                  non_record: bool, repo_root: Path, official: bool) -> Check:
    from records.pack import PackError, baseline_scores

    if baseline is None and stored.get("folder"):
        baseline = repo_root / stored["folder"]
    if baseline is None:
        if non_record:
            return Check("significance", "SKIP", "non-record submission: no claim against the leaderboard to test")
        if official:
            return Check("significance", "SKIP", "no --baseline FOLDER given: pass the record this one claims to beat to test "
                                                 "the 0.005-nat / p < 0.01 rule")
        return Check("significance", "FAIL", "a record-track folder needs a baseline: pass --baseline FOLDER (the current best "
                     "record) or re-pack with --track non-record")
    try:
        base, _ = baseline_scores(Path(baseline))
        sig = significance(scores, [lo if lo is not None else math.nan for lo in losses], base)
    except (PackError, ValueError) as e:
        return Check("significance", "SKIP" if non_record else "FAIL", f"{e}")
    if stored and stored.get("passes_rule") is not None and stored["passes_rule"] != sig.passes:
        return Check("significance", "FAIL", f"submission.json says passes_rule={stored['passes_rule']} but recomputed: {sig.summary()}")
    if stored and sub.get("p_value") is not None and not math.isclose(float(sub["p_value"]), sig.p_value, rel_tol=1e-6, abs_tol=1e-12) \
            and not (math.isnan(sig.p_value) and sub["p_value"] != sub["p_value"]):
        return Check("significance", "FAIL", f"submission.json p_value {sub['p_value']} but recomputed {sig.p_value:.6g}: re-pack")
    if sig.passes:
        return Check("significance", "PASS", sig.summary())
    if non_record:
        return Check("significance", "PASS", f"labelled non-record, so the rule is not required: {sig.summary()}")
    return Check("significance", "FAIL", f"{sig.summary()}: below the rule (>= 0.005 nats at p < {P_MAX}); add seeds or "
                 "re-pack with --track non-record")


# --------------------------------------------------------------------------------------------------
# The official layout


def _verify_official(folder: Path, reading: Reading, baseline: Path | None, repo_root: Path) -> list[Check]:
    checks = _Checks()
    sub = reading.data
    # --- files: what the public rules ask for -------------------------------------------------------------
    problems = [f"missing {f}" for f in ("README.md",) if not (folder / f).is_file()]
    if reading.json_path is None:
        problems.append("no submission.json (the rules ask for one: name, GitHub id, val_bpb, metadata)")
    if not (folder / ENTRY).is_file():
        scripts = sorted(p.name for p in folder.glob("*.py"))
        problems.append(f"no {ENTRY} (the rules name the entry train_gpt.py, this folder ships {', '.join(scripts) or 'no .py file'})")
    extras = extra_packages(folder)
    if extras and not (folder / "requirements.txt").is_file():
        names = ", ".join(f"{pkg} ({', '.join(files)})" for pkg, files in sorted(extras.items()))
        problems.append(f"the code imports packages beyond the challenge's requirements but ships no requirements.txt: {names}")
    if not reading.logs:
        problems.append("no train log (*.log / *.txt with a run in it): the rules ask for the logs of the runs")
    checks.add("files", problems, f"README.md, {reading.json_path.name if reading.json_path else '-'}, {ENTRY}, "
               f"{len(reading.logs)} train log(s)" + (f", requirements.txt for {', '.join(sorted(extras))}" if extras else ""))
    cuda = mentions_cuda(folder)
    rerun = ("official CUDA record: a rerun needs CUDA (8xH100) and the challenge data" if cuda else
             "official record: its own script is not re-run by this harness")
    tail = [Check("packed-file", "SKIP", "official layout: the code ships as readable (or self-extracting) source, not a "
                                         "records-pack bundle; nothing to reproduce"),
            Check("smoke", "SKIP", rerun)]
    audit = Check("audit", "SKIP", "eval.audit audits this harness's trainer and artifacts; an official record ships neither "
                                   "(its model code is its own)")
    if reading.json_path is None:
        skipped = [Check(n, "SKIP", "no submission.json to read") for n in ("submission", "logs", "json-vs-logs", "size")]
        return checks + skipped + tail + [Check("significance", "SKIP", "no submission.json to read"), audit]

    # --- submission.json: name, GitHub id, val_bpb, metadata ------------------------------------------------
    problems = reading.problem_texts("json")
    if reading.json_problem is None and not any(isinstance(sub.get(k), str) and sub[k].strip() for k in METADATA_FIELDS):
        problems.append(f"no metadata ({', '.join(METADATA_FIELDS)})")
    checks.add("submission", problems, f"name, github_id, val_bpb {sub.get('val_bpb')}, metadata")

    # --- logs: a finished log for every seed the submission reports ------------------------------------------
    problems = reading.problem_texts("logs")
    runs = [r for r in reading.runs if r.log is not None]
    for run in runs:
        lg = run.log
        if lg.targets_scored and lg.targets_scored[0] != lg.targets_scored[1]:
            problems.append(f"{lg.path.name}: val_targets_scored {lg.targets_scored[0]}/{lg.targets_scored[1]}, not every target")
        if not lg.score_is_finite:
            problems.append(f"{lg.path.name}: its final score `{lg.score_name}` is not a number ({lg.val_bpb})")
    others = [f"{len(reading.ablations)} other log(s) not reported (ablations or other runs)"] if reading.ablations else []
    others += [f"{len(reading.duplicates)} duplicate(s)"] if reading.duplicates else []
    if not runs and (not reading.logs or not problems):
        checks.append(Check("logs", "SKIP", "no finished train log to read" + (f" ({'; '.join(problems)})" if problems else "")))
    else:
        checks.add("logs", problems, f"{len(runs)} finished log(s) for {len(reading.seeds)} seed(s)"
                   + (f"; {', '.join(others)}" if others else ""))

    # --- submission.json vs logs -----------------------------------------------------------------------------
    problems = reading.problem_texts("claims")
    if problems:
        checks.append(Check("json-vs-logs", "FAIL", "; ".join(problems)))
    elif not runs:
        checks.append(Check("json-vs-logs", "SKIP", "no finished log to compare the json with"))
    elif reading.bpb is None:
        checks.append(Check("json-vs-logs", "SKIP", "the json states no val_bpb to compare"))
    else:
        note = f"; {'; '.join(reading.remarks)}" if reading.remarks else ""
        checks.append(Check("json-vs-logs", "PASS", f"{reading.bpb_field} {reading.bpb} agrees with the {len(runs)} log(s) at its "
                                                    f"stated precision{note}"))
    checks.append(_size_check(_size_evidence(reading)))
    checks += tail

    # --- significance and audit --------------------------------------------------------------------------------
    scores = reading.seed_scores()
    losses = [next((r.log.val_loss for r in runs if r.seed == s), None) for s in scores]
    checks.append(_significance(list(scores.values()), losses, {}, sub, baseline, is_non_record(folder.parent.name), repo_root, True))
    checks.append(audit)
    return checks


def _size_evidence(reading: Reading) -> list[RunLog]:
    """The reported runs' logs, plus other logs of the same seeds that print the size (an eval-only rerun of a seed
    scores the artifact its train log sized)."""
    runs = [r.log for r in reading.runs if r.log is not None]
    seeds = {lg.seed for lg in runs if lg.seed is not None}
    copies = {id(copy) for copy, _ in reading.duplicates}
    same_seed = [lg for lg in reading.ablations if lg.seed in seeds and lg.total_bytes is not None and id(lg) not in copies]
    return runs + [lg for lg in same_seed if lg not in runs]


# --------------------------------------------------------------------------------------------------
# The layout `records pack` writes


def _listed_logs(folder: Path, sub: dict, reading: Reading) -> tuple[dict[str, RunLog], list[str]]:
    """{seed: log} through seed_results[s]["log"] when given, else the log the reading matched to that seed."""
    from records.logs import parse_log

    problems, logs = [], {}
    for seed, res in sub["seed_results"].items():
        name = res.get("log") if isinstance(res, dict) else None
        if name:
            path = folder / name
            if not path.is_file() or not path.resolve().is_relative_to(folder.resolve()):
                problems.append(f"the log of seed {seed} ({name}) is missing: restore it (a record ships every seed's log)")
                continue
            logs[str(seed)] = parse_log(path)
            continue
        run = next((r for r in reading.runs if str(r.seed) == str(seed) and r.log is not None), None)
        if run is None:
            problems.append(f"no log for seed {seed}: restore it (a record ships every seed's log)")
        else:
            logs[str(seed)] = run.log
    return logs, problems


def _verify_packed(folder: Path, reading: Reading, baseline: Path | None, smoke: bool, smoke_data, repo_root: Path) -> list[Check]:
    checks = _Checks()
    # --- files -------------------------------------------------------------------------------------
    missing = [f for f in ("README.md", "submission.json", ENTRY, "requirements.txt") if not (folder / f).is_file()]
    problems = [f"missing {f} (re-pack with python -m records pack)" for f in missing]
    if not reading.logs:
        problems.append("no train log (*.log): a record ships the logs of every seed")
    checks.add("files", problems, f"README.md, submission.json, {ENTRY}, requirements.txt, {len(reading.logs)} log(s)")
    if "submission.json" in missing:
        return checks

    # --- submission.json -----------------------------------------------------------------------------
    sub, problem = load_json(folder / "submission.json")
    problems = [problem + " (fix the JSON or re-pack)"] if problem else []
    sub = sub or {}
    for key, typ in PACKED_FIELDS.items():
        v = sub.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) if typ is float else isinstance(v, typ) and not isinstance(v, bool)
        if not ok:
            problems.append(f"field {key!r} missing or not {typ.__name__}")
    if isinstance(sub.get("val_bpb"), (int, float)) and not math.isfinite(sub["val_bpb"]):
        problems.append(f"val_bpb is {sub['val_bpb']}: a record's score must be a finite number")
    non_record = is_non_record(sub.get("track"))
    readme = (folder / "README.md").read_text(encoding="utf-8", errors="replace") if (folder / "README.md").is_file() else ""
    if non_record and "non-record" not in readme.lower():
        problems.append("README.md does not say it is a non-record submission")
    checks.add("submission", problems, f"track {sub.get('track')}, val_bpb {sub.get('val_bpb')}")
    if problems:
        return checks

    # --- logs ----------------------------------------------------------------------------------------
    logs, problems = _listed_logs(folder, sub, reading)
    for seed, log in logs.items():
        name = log.path.name
        if not log.exact:  # the harness's trainer prints an 8-decimal `<eval>_exact` line last
            problems.append(f"{name} has no final `<eval>_exact val_loss:... val_bpb:...` line (the trainer prints one last): "
                            "the run did not finish")
        elif not log.score_is_finite:
            problems.append(f"{name}: its final score `{log.score_name}` is {log.val_bpb}, not a number")
        if log.targets_scored and log.targets_scored[0] != log.targets_scored[1]:
            problems.append(f"{name}: val_targets_scored {log.targets_scored[0]}/{log.targets_scored[1]}, not every target")
        if log.seed is not None and str(log.seed) != str(seed):
            problems.append(f"{name} is seed {log.seed}, listed as seed {seed}")
    listed = {lg.path.resolve() for lg in logs.values()}
    unlisted = sorted(lg.path.name for lg in reading.logs if lg.path.resolve() not in listed)
    if unlisted:
        problems.append(f"{unlisted} are not in submission.json's seed_results: report every seed you ship (or remove them)")
    checks.add("logs", problems, f"{len(logs)} finished log(s), every target scored")

    # --- submission.json vs logs ---------------------------------------------------------------------
    problems = []
    if sorted(map(str, sub["seeds"])) != sorted(map(str, sub["seed_results"])):
        problems.append(f"seeds {sub['seeds']} != seed_results keys {sorted(sub['seed_results'])}")
    for seed, log in logs.items():
        res = sub["seed_results"].get(seed, {})
        for key, value in (("val_bpb", log.val_bpb), ("val_loss", log.val_loss)):
            if not _close(res.get(key), value):
                problems.append(f"seed {seed} {key} is {res.get(key)} in submission.json but {value} in {log.path.name}")
        for key, value in (("bytes_total", log.total_bytes), ("artifact_bytes", log.model_bytes)):
            if res.get(key) != value:
                problems.append(f"seed {seed} {key} is {res.get(key)} in submission.json but {value} in {log.path.name}")
    ran = [({k: v for k, v in lg.env.items() if k not in PER_RUN_KNOBS}, lg.path.name) for lg in logs.values() if lg.env is not None]
    run_env = {str(k): str(v) for k, v in (sub.get("run_env") or {}).items()} if isinstance(sub.get("run_env"), dict) else None
    if "run_env" in sub and run_env is None:
        problems.append("run_env is not an object of KNOB: value")
    elif "run_env" not in sub and ran:
        problems.append(f"submission.json has no run_env: the knobs {ran[0][1]} ran ({ran[0][0]}) are not recorded")
    for env, name in ran:
        if run_env is not None and env != run_env:
            diff = sorted(k for k in set(env) | set(run_env) if env.get(k) != run_env.get(k))
            problems.append(f"run_env differs from the knobs {name} ran ({', '.join(f'{k}: json {run_env.get(k)!r} vs log {env.get(k)!r}' for k in diff)})")
    if logs and len(logs) == len(sub["seed_results"]):
        bpbs = [lg.val_bpb for lg in logs.values() if lg.val_bpb is not None]
        if bpbs and not _close(sub["val_bpb"], statistics.fmean(bpbs)):
            problems.append(f"val_bpb {sub['val_bpb']} is not the mean of the logs' scores ({statistics.fmean(bpbs):.8f})")
        totals = [lg.total_bytes for lg in logs.values() if lg.total_bytes is not None]
        if totals and sub["bytes_total"] != max(totals):
            problems.append(f"bytes_total {sub['bytes_total']} is not the largest logged total ({max(totals)})")
    if problems:
        checks.append(Check("json-vs-logs", "FAIL", "; ".join(p + " (re-pack from the logs; never edit numbers by hand)" for p in problems)))
    elif not logs:
        checks.append(Check("json-vs-logs", "SKIP", "no log to compare the json with"))
    else:
        env_note = f", run_env = the logs' knobs ({len(run_env)} set)" if ran and run_env is not None else ""
        checks.append(Check("json-vs-logs", "PASS", f"every seed's bpb, loss and bytes match its log; the means match{env_note}"))

    # --- size ----------------------------------------------------------------------------------------
    problems = []
    shipped = (folder / ENTRY).stat().st_size if (folder / ENTRY).is_file() else None
    if shipped is not None and sub["bytes_code"] != shipped:
        problems.append(f"bytes_code {sub['bytes_code']} but {ENTRY} is {shipped} bytes")
    for seed, log in logs.items():
        name = log.path.name
        if log.total_bytes is None or log.code_bytes is None or log.model_bytes is None:
            problems.append(f"{name} lacks its Code size / Serialized model <tag> / Total submission size <tag> lines")
            continue
        if shipped is not None and log.code_bytes != shipped:
            problems.append(f"{name} counted {log.code_bytes} code bytes but the shipped {ENTRY} is {shipped} bytes: the logged total "
                            "must be what ships (re-run with the trainer whose code this is, then re-pack)")
        res = sub["seed_results"].get(seed, {})
        art = res.get("artifact") if isinstance(res, dict) else None
        if art:
            p = folder / art
            if not p.is_file() or not p.resolve().is_relative_to(folder.resolve()):
                problems.append(f"seed {seed}'s artifact {art} is missing")
            else:
                if p.stat().st_size != log.model_bytes:
                    problems.append(f"{art} is {p.stat().st_size:,} bytes but {name} logged {log.model_bytes:,}: not this run's artifact")
                if shipped is not None and p.stat().st_size + shipped > BYTE_BUDGET:
                    problems.append(f"{art} + {ENTRY} = {p.stat().st_size + shipped:,} bytes, over the {BYTE_BUDGET:,} cap")
    checks.append(_size_check(list(logs.values()), problems, shipped))

    # --- packed file -----------------------------------------------------------------------------------
    bundle = None
    if shipped is None:
        checks.append(Check("packed-file", "FAIL", f"no {ENTRY}"))
    else:
        bundle, check = _packed_file_check(folder, logs)
        checks.append(check)

    # --- smoke run ---------------------------------------------------------------------------------------
    if not smoke:
        checks.append(Check("smoke", "SKIP", "not requested (--no-smoke)"))
    elif shipped is None or bundle is None:
        checks.append(Check("smoke", "SKIP", f"no runnable packed {ENTRY}"))
    else:
        checks.append(smoke_check(folder, sub, smoke_data, repo_root))

    # --- significance and legality audit ------------------------------------------------------------------
    ordered = [logs[s] for s in sorted(logs)]
    checks.append(_significance([lg.val_bpb for lg in ordered], [lg.val_loss for lg in ordered], sub.get("comparison_baseline") or {},
                                sub, baseline, non_record, repo_root, False))
    checks.append(audit_check(folder, sub, repo_root))
    return checks


def _packed_file_check(folder: Path, logs: dict[str, RunLog]):
    from quant.size import source_text

    problems, info, bundle = [], "", None
    data = (folder / ENTRY).read_bytes()
    try:
        same, bundle = is_reproducible(data)
    except ValueError as e:
        return None, Check("packed-file", "FAIL", f"{ENTRY} is not a packed file ({e}): re-pack with python -m records pack")
    if not same:
        problems.append(f"{ENTRY} is not what `records pack` makes from its own embedded sources: it was edited by hand; re-pack")
    eager, lazy = _import_problems(bundle.sources, bundle.entry)
    problems += eager
    info = f"; lazy imports not packed (fail loudly if reached): {', '.join(lazy)}" if lazy else ""
    for log in logs.values():
        try:
            snap = log.snapshot()
        except ValueError as e:
            problems.append(str(e))
            continue
        if list(snap) == [ENTRY] and snap[ENTRY] == source_text(folder / ENTRY):
            continue  # a run of this very packed file
        if not snap:
            continue
        differ = sorted(set(snap) ^ set(bundle.sources)) or sorted(
            f for f in snap if not (bundle.sources[f] == snap[f] if bundle.version == 1 else embeds(snap[f], bundle.sources[f])))
        if differ:
            problems.append(f"the embedded sources differ from the code {log.path.name} ran ({differ}): re-pack from the logs' commit")
    form = "v1 (verbatim sources, base85; re-pack to get the smaller v2)" if bundle.version == 1 else "v2"
    return bundle, Check("packed-file", "FAIL", "; ".join(problems)) if problems else Check(
        "packed-file", "PASS", f"format {form}, {len(bundle.sources)} sources, reproducible, equal to every log's code snapshot, "
                               f"every eager project import packed{info}")


def _import_problems(sources: dict[str, str], entry: str) -> tuple[list[str], list[str]]:
    """(problems, lazy_unpacked): an eager (module-level) import of a project module that is not embedded would need
    the repository; a lazy one fails loudly only if its function is called (e.g. the sample-data builder)."""
    packed = {module_name(r) for r in sources if r != entry}
    roots = {m.partition(".")[0] for m in packed}
    problems, lazy = [], set()
    for rel, imp in bundle_imports(sources, entry):
        if imp.name.partition(".")[0] not in roots or imp.name in packed:
            continue
        if imp.from_item and imp.name.rpartition(".")[0] in packed:  # `from arch.gpt import GPT`: a name inside arch.gpt
            continue
        if imp.lazy:
            lazy.add(imp.name)
        else:
            problems.append(f"{rel} imports {imp.name} at module level but it is not packed: re-pack (python -m records pack)")
    return problems, sorted(lazy)


def report(checks: list[Check]) -> str:
    failed = [c for c in checks if c.status == "FAIL"]
    skipped = [c for c in checks if c.status == "SKIP"]
    verdict = "FAILED" if failed else "OK"
    return "\n".join([c.line() for c in checks] + [f"verify: {verdict} ({len(failed)} failed, {len(skipped)} skipped, "
                                                    f"{len(checks) - len(failed) - len(skipped)} passed)"])
