"""`python -m records verify FOLDER`: is this record folder a submission reviewers would accept?

Every check reports PASS, FAIL (with what to fix) or SKIP (with why; a skip is never a pass):
files, submission.json, logs, json-vs-logs, size, packed-file, smoke, significance, audit.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from records.bundle import ENTRY, bundle_imports, is_reproducible, module_name
from records.check import Check
from records.folder import BYTE_BUDGET, REPO_ROOT, find_logs, is_non_record, load_json
from records.logs import parse_log
from records.rerun import audit_check, smoke_check
from records.stats import P_MAX, significance

REQUIRED_FIELDS = {"name": str, "author": str, "github_id": str, "date": str, "track": str, "val_bpb": float, "val_loss": float,
                   "bytes_total": int, "bytes_code": int, "seeds": list, "seed_results": dict}


class _Checks(list):
    def add(self, name: str, problems: list[str], ok: str) -> None:
        self.append(Check(name, "FAIL", "; ".join(problems)) if problems else Check(name, "PASS", ok))


def _close(a, b, tol=1e-8) -> bool:
    try:
        return abs(float(a) - float(b)) <= tol
    except (TypeError, ValueError):
        return False


def verify(folder: Path, baseline: Path | None = None, smoke: bool = True, smoke_data: tuple[Path, Path] | None = None,
           repo_root: Path = REPO_ROOT) -> list[Check]:
    folder = Path(folder)
    checks = _Checks()
    if not folder.is_dir():
        return [Check("files", "FAIL", f"{folder} is not a folder: pass records/<track>/<date>_<name>/")]

    # --- files -------------------------------------------------------------------------------------
    missing = [f for f in ("README.md", "submission.json", ENTRY, "requirements.txt") if not (folder / f).is_file()]
    logs_on_disk = find_logs(folder)
    problems = [f"missing {f} (re-pack with python -m records pack)" for f in missing]
    if not logs_on_disk:
        problems.append("no train log (*.log): a record ships the logs of every seed")
    checks.add("files", problems, f"README.md, submission.json, {ENTRY}, requirements.txt, {len(logs_on_disk)} log(s)")
    if "submission.json" in missing:
        return checks

    # --- submission.json -----------------------------------------------------------------------------
    sub, problem = load_json(folder / "submission.json")
    problems = [problem + " (fix the JSON or re-pack)"] if problem else []
    sub = sub or {}
    for key, typ in REQUIRED_FIELDS.items():
        v = sub.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) if typ is float else isinstance(v, typ) and not isinstance(v, bool)
        if not ok:
            problems.append(f"field {key!r} missing or not {typ.__name__}")
    non_record = is_non_record(sub.get("track"))
    readme = (folder / "README.md").read_text(encoding="utf-8", errors="replace") if (folder / "README.md").is_file() else ""
    if non_record and "non-record" not in readme.lower():
        problems.append("README.md does not say it is a non-record submission")
    checks.add("submission", problems, f"track {sub.get('track')}, val_bpb {sub.get('val_bpb')}")
    if problems:
        return checks

    # --- logs ----------------------------------------------------------------------------------------
    problems, logs = [], {}
    listed = {}
    for seed, res in sub["seed_results"].items():
        name = res.get("log") if isinstance(res, dict) else None
        if not name:
            problems.append(f"seed_results[{seed}] names no log")
            continue
        listed[seed] = folder / name
        if not (folder / name).is_file():
            problems.append(f"the log of seed {seed} ({name}) is missing: restore it (a record ships every seed's log)")
            continue
        log = parse_log(folder / name)
        logs[seed] = log
        if not log.exact:
            problems.append(f"{name} has no final `..._exact val_loss:... val_bpb:...` line: the run did not finish")
        if log.targets_scored and log.targets_scored[0] != log.targets_scored[1]:
            problems.append(f"{name}: val_targets_scored {log.targets_scored[0]}/{log.targets_scored[1]}, not every target")
        if log.seed is not None and str(log.seed) != str(seed):
            problems.append(f"{name} is seed {log.seed}, listed as seed {seed}")
    unlisted = sorted(p.name for p in logs_on_disk if p.resolve() not in {q.resolve() for q in listed.values()})
    if unlisted:
        problems.append(f"{unlisted} are not in submission.json's seed_results: report every seed you ship (or remove them)")
    checks.add("logs", problems, f"{len(logs)} finished log(s), every target scored")

    # --- submission.json vs logs ---------------------------------------------------------------------
    problems = []
    if sorted(map(str, sub["seeds"])) != sorted(sub["seed_results"]):
        problems.append(f"seeds {sub['seeds']} != seed_results keys {sorted(sub['seed_results'])}")
    for seed, log in logs.items():
        res = sub["seed_results"][seed]
        for key, value in (("val_bpb", log.val_bpb), ("val_loss", log.val_loss)):
            if not _close(res.get(key), value):
                problems.append(f"seed {seed} {key} is {res.get(key)} in submission.json but {value} in {log.path.name}")
        for key, value in (("bytes_total", log.total_bytes), ("artifact_bytes", log.model_bytes)):
            if res.get(key) != value:
                problems.append(f"seed {seed} {key} is {res.get(key)} in submission.json but {value} in {log.path.name}")
    if logs and len(logs) == len(sub["seed_results"]):
        bpbs = [lg.val_bpb for lg in logs.values() if lg.val_bpb is not None]
        if bpbs and not _close(sub["val_bpb"], statistics.fmean(bpbs)):
            problems.append(f"val_bpb {sub['val_bpb']} is not the mean of the logs' scores ({statistics.fmean(bpbs):.8f})")
        totals = [lg.total_bytes for lg in logs.values() if lg.total_bytes is not None]
        if totals and sub["bytes_total"] != max(totals):
            problems.append(f"bytes_total {sub['bytes_total']} is not the largest logged total ({max(totals)})")
    checks.add("json-vs-logs", [p + " (re-pack from the logs; never edit numbers by hand)" for p in problems],
               "every seed's bpb, loss and bytes match its log; the means match")

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
        if log.total_bytes > BYTE_BUDGET:
            problems.append(f"{name}: total {log.total_bytes:,} bytes is {log.total_bytes - BYTE_BUDGET:,} over the {BYTE_BUDGET:,} cap")
        if log.code_bytes + log.model_bytes != log.total_bytes:
            problems.append(f"{name}: code {log.code_bytes} + model {log.model_bytes} != logged total {log.total_bytes}")
        if shipped is not None and log.code_bytes != shipped:
            problems.append(f"{name} counted {log.code_bytes} code bytes but the shipped {ENTRY} is {shipped} bytes: the logged total "
                            "must be what ships (re-run with the trainer whose code this is, then re-pack)")
        art = sub["seed_results"][seed].get("artifact")
        if art:
            p = folder / art
            if not p.is_file():
                problems.append(f"seed {seed}'s artifact {art} is missing")
            else:
                if p.stat().st_size != log.model_bytes:
                    problems.append(f"{art} is {p.stat().st_size:,} bytes but {name} logged {log.model_bytes:,}: not this run's artifact")
                if shipped is not None and p.stat().st_size + shipped > BYTE_BUDGET:
                    problems.append(f"{art} + {ENTRY} = {p.stat().st_size + shipped:,} bytes, over the {BYTE_BUDGET:,} cap")
    largest = max((lg.total_bytes or 0 for lg in logs.values()), default=0)
    checks.add("size", problems, f"largest total {largest:,} <= {BYTE_BUDGET:,} bytes; code = shipped {ENTRY} ({shipped:,} bytes)"
               if shipped is not None else "")

    # --- packed file -----------------------------------------------------------------------------------
    bundle = None
    if shipped is None:
        checks.append(Check("packed-file", "FAIL", f"no {ENTRY}"))
    else:
        problems, info = [], ""
        try:
            same, bundle = is_reproducible((folder / ENTRY).read_bytes())
        except ValueError as e:
            problems.append(f"{ENTRY} is not a packed file ({e}): re-pack with python -m records pack")
            same = False
        if bundle is not None:
            if not same:
                problems.append(f"{ENTRY} is not what `records pack` makes from its own embedded sources: it was edited by hand; re-pack")
            eager, lazy = _import_problems(bundle.sources, bundle.entry)
            problems += eager
            info = f"; lazy imports not packed (fail loudly if reached): {lazy}" if lazy else ""
            for seed, log in logs.items():
                try:
                    snap = log.snapshot()
                except ValueError as e:
                    problems.append(str(e))
                    continue
                if list(snap) == [ENTRY] and snap[ENTRY].encode("utf-8") == (folder / ENTRY).read_bytes():
                    continue  # a run of this very packed file
                if snap and snap != bundle.sources:
                    diff = sorted(set(snap) ^ set(bundle.sources)) or sorted(f for f in snap if snap[f] != bundle.sources.get(f))
                    problems.append(f"the embedded sources differ from the code {log.path.name} ran ({diff}): re-pack from the logs' commit")
        checks.add("packed-file", problems, f"{len(bundle.sources) if bundle else 0} sources, reproducible, equal to every log's "
                   f"code snapshot, every eager project import packed{info}")

    # --- smoke run ---------------------------------------------------------------------------------------
    if not smoke:
        checks.append(Check("smoke", "SKIP", "not requested (--no-smoke)"))
    elif shipped is None or bundle is None:
        checks.append(Check("smoke", "SKIP", f"no runnable packed {ENTRY}"))
    else:
        checks.append(smoke_check(folder, sub, bundle.sources[bundle.entry], smoke_data, repo_root))

    # --- significance --------------------------------------------------------------------------------------
    checks.append(_significance(sub, logs, baseline, non_record, repo_root))

    # --- legality audit ----------------------------------------------------------------------------------------
    checks.append(audit_check(folder, sub, repo_root))
    return checks


def _import_problems(sources: dict[str, str], entry: str) -> tuple[list[str], list[str]]:
    """(problems, lazy_unpacked): an eager (module-level) import of a project module that is not embedded would need
    the repository; a lazy one fails loudly only if its function is called (e.g. data.download's CLI helpers)."""
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


def _significance(sub: dict, logs: dict, baseline: Path | None, non_record: bool, repo_root: Path) -> Check:
    from records.pack import PackError, baseline_scores

    stored = sub.get("comparison_baseline") or {}
    if baseline is None and stored.get("folder"):
        baseline = repo_root / stored["folder"]
    if baseline is None:
        if non_record:
            return Check("significance", "PASS", "non-record submission: no claim against the leaderboard")
        return Check("significance", "FAIL", "a record-track folder needs a baseline: pass --baseline FOLDER (the current best "
                     "record) or re-pack with --track non-record")
    ordered = [logs[s] for s in sorted(logs)]
    try:
        base, _ = baseline_scores(Path(baseline))
        sig = significance([lg.val_bpb for lg in ordered], [lg.val_loss for lg in ordered], base)
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


def report(checks: list[Check]) -> str:
    failed = [c for c in checks if c.status == "FAIL"]
    skipped = [c for c in checks if c.status == "SKIP"]
    verdict = "FAILED" if failed else "OK"
    return "\n".join([c.line() for c in checks] + [f"verify: {verdict} ({len(failed)} failed, {len(skipped)} skipped, "
                                                    f"{len(checks) - len(failed) - len(skipped)} passed)"])
