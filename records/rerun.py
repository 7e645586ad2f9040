"""Re-running a record's shipped code: the smoke run and the legality audit that `records verify` reports.

Both execute the packed train_gpt.py the folder ships, from a temporary folder outside the repository, with
the record's own knobs (run_env) and none of the caller's, never the checkout that happens to run the verifier.
A record's code is untrusted: the audit's checks are this checkout's code (eval/audit.py), driving the record's
model in a separate process (eval/remote.py), so the record cannot patch the auditor or report its own verdict.

The audit (`audit_check`) is, per shipped artifact:
  - eval.audit's checks on the record's own model, at its EVAL_SEQ_LEN / EVAL_STRIDE / EVAL_BATCH_SEQS, its
    preset and DTYPE, on its validation split when this machine has it (the offline sample dataset, or
    DATA_PATH), with `--own-loss` when its evaluator scored through the model's forward(x, y);
  - a rescore: this checkout's evaluator recomputes the logged score from the shipped artifact, when the
    validation split is here and the score is a plain or sliding one;
  - the evaluator check: the record's eval/*.py must be this harness's own (the checkout's, or a version in its
    git history), since its logged score came from them.
`records pack` writes the audit's command and result into the folder (audit.json, `write_audit`); verify
derives the command again, reruns it on the shipped code and fails on any difference.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from records.bundle import ENTRY, unpack
from records.check import Check
from records.logs import parse_log

AUDIT_FILE = "audit.json"
# Overrides that shrink any config to a seconds-long CPU run; the record's other knobs (e.g. MLP_KIND) are kept.
SMOKE_KNOBS = dict(
    DEVICE="cpu", COMPILE="0", DTYPE="fp32", NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="2", NUM_KV_HEADS="1",
    TRAIN_SEQ_LEN="32", EVAL_SEQ_LEN="32", EVAL_BATCH_SEQS="4", TTT_CHUNK_TOKENS="256", TTT_EPOCHS="1",
    TRAIN_BATCH_TOKENS="512", VAL_BATCH_SIZE="8192", ITERATIONS="2", WARMUP_STEPS="0", WARMDOWN_ITERS="1",
    MAX_WALLCLOCK_SECONDS="0", VAL_LOSS_EVERY="0", TRAIN_LOG_EVERY="1", GRAD_ACCUM_STEPS="0", RUN_ID="smoke", SEED="1",
)
SMOKE_STRIDE = "16"  # the smoke window is 32 tokens: a record's sliding eval (any EVAL_STRIDE > 0) runs at stride 16
SMOKE_TIMEOUT_S = 600
# The only variables of the caller's environment a rerun keeps: where programs, home and temp files are, the locale.
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "OMP_NUM_THREADS", "PARAMETER_GOLF_CACHE")
# Runs the packed file, then names any module that was loaded from the repository instead of from the bundle.
# (eval.remote.repo_modules' source is prepended: the same rule as the audit's, a .venv inside the checkout excepted.)
_SMOKE_RUNNER = """
script, repo = sys.argv[1], sys.argv[2]
sys.argv = [script]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    print("records-smoke:repo-modules:" + ",".join(repo_modules(repo)), file=sys.stderr, flush=True)
"""


def smoke_runner() -> str:
    """The runner's program: its imports, eval.remote.repo_modules' source, then _SMOKE_RUNNER."""
    import inspect

    from eval.remote import repo_modules

    return "import os, runpy, sys\n" + inspect.getsource(repo_modules) + _SMOKE_RUNNER


def default_smoke_data() -> tuple[Path, Path]:
    """The offline sample dataset (built once, cached), as the harness's default run uses it."""
    from data.sample import ensure_sample_dataset

    ds = ensure_sample_dataset()
    return Path(ds.data_path), Path(ds.tokenizer_path)


def clean_env(**knobs: str) -> dict[str, str]:
    """A child's environment: the caller's PATH/HOME/locale/temp only, then `knobs` (no PYTHONPATH, no torchrun
    variables, no knob the caller happens to have set)."""
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(knobs)
    return env


def smoke_knobs(run_env: dict) -> dict[str, str]:
    """The record's knobs shrunk to the smoke run, consistently: every window is the 32-token smoke window, a
    sliding eval stays on (at stride 16) or off, and layer-specific mixers keep the record's layer count."""
    knobs = {k: str(v) for k, v in (run_env or {}).items()}
    keep_layers = knobs.get("MLP_KIND_LAYERS", "all").strip().lower() != "all"
    stride = knobs.get("EVAL_STRIDE")
    knobs.update(SMOKE_KNOBS)
    if keep_layers and "NUM_LAYERS" in run_env:
        knobs["NUM_LAYERS"] = str(run_env["NUM_LAYERS"])
    elif keep_layers:
        knobs.pop("NUM_LAYERS")  # the trainer's default, which the record's layer spec was written for
    if stride is not None:
        knobs["EVAL_STRIDE"] = "0" if stride.strip() == "0" else SMOKE_STRIDE
    return knobs


def smoke_check(folder: Path, sub: dict, smoke_data: tuple[Path, Path] | None, repo_root: Path) -> Check:
    """Run the packed file from a temporary folder outside the repository, with a clean environment.
    (The knobs come from run_env; the environment is whitelisted.)"""
    import sentencepiece as spm

    data_path, tokenizer = smoke_data or default_smoke_data()
    vocab = int(spm.SentencePieceProcessor(model_file=str(tokenizer)).vocab_size())
    tmp = Path(tempfile.mkdtemp(prefix="records-smoke-"))
    try:
        if tmp.resolve().is_relative_to(repo_root.resolve()):
            return Check("smoke", "FAIL", f"the temp folder {tmp} is inside the repository; set TMPDIR elsewhere")
        shutil.copyfile(folder / ENTRY, tmp / ENTRY)
        env = clean_env(**{**smoke_knobs(sub.get("run_env") or {}), "VOCAB_SIZE": str(vocab), "DATA_PATH": str(data_path),
                           "TOKENIZER_PATH": str(tokenizer)})
        cmd = [sys.executable, "-c", smoke_runner(), str(tmp / ENTRY), str(repo_root.resolve()) + os.sep]
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return Check("smoke", "FAIL", f"the packed {ENTRY} did not finish a 2-step CPU run in {SMOKE_TIMEOUT_S} s")
        tail = (proc.stdout[-1500:] + proc.stderr[-1500:]).strip().replace("\n", " | ")
        leaked = next((ln.split(":", 2)[2] for ln in proc.stderr.splitlines() if ln.startswith("records-smoke:repo-modules:")), None)
        if leaked:
            return Check("smoke", "FAIL", f"the packed {ENTRY} imported {leaked} from the repository instead of its own copies: re-pack")
        if proc.returncode != 0:
            return Check("smoke", "FAIL", f"the packed {ENTRY} exited with {proc.returncode} from a folder outside the repository: {tail}")
        log = parse_log(tmp / "smoke.txt", proc.stdout)
        if not log.exact:
            return Check("smoke", "FAIL", f"the smoke run printed no final exact line: {tail}")
        size = (folder / ENTRY).stat().st_size
        if log.code_bytes != size:
            return Check("smoke", "FAIL", f"run from the packed file, the trainer counted {log.code_bytes} code bytes, not its own {size}")
        return Check("smoke", "PASS", f"2-step CPU run outside the repository: {log.score_name} val_bpb {log.val_bpb:.4f}, "
                     f"counts its own {size:,} bytes, no repository module loaded")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------- the evaluator a record ships ----------

def canonical_source(text: str) -> str:
    """A digest of what a module means, not how it is spelled: its syntax tree as records/compact.py strips it (no
    docstrings, annotations of signatures and locals, help= texts; comments and layout are not in a tree), so any
    version of the packer, or a re-print by another Python's ast.unparse, still matches."""
    import ast

    from records.compact import strip_tree

    try:
        tree = strip_tree(ast.parse(text), keep_module_doc=False)
    except SyntaxError:
        return "unparsable:" + hashlib.sha1(text.encode("utf-8")).hexdigest()
    for node in ast.walk(tree):  # a body of only `...` means the same as `pass`
        body = getattr(node, "body", None)
        if isinstance(body, list) and len(body) == 1 and isinstance(body[0], ast.Expr) and getattr(body[0].value, "value", None) is Ellipsis:
            node.body = [ast.Pass()]
    return hashlib.sha1(ast.dump(tree, annotate_fields=False).encode("utf-8")).hexdigest()


def known_evaluators(repo_root: Path) -> dict[str, set[str]]:
    """eval/<module>.py -> canonical digests of every version this harness has now or ever had (the history of the
    checked-out HEAD, not of every fetched branch)."""
    known: dict[str, set[str]] = {}
    for path in sorted((repo_root / "eval").glob("*.py")):
        known.setdefault(f"eval/{path.name}", set()).add(canonical_source(path.read_text(encoding="utf-8")))
    git = ["git", "-C", str(repo_root)]
    try:
        raw = subprocess.run([*git, "log", "HEAD", "--format=", "--raw", "--no-abbrev", "--no-renames", "--", "eval"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        blobs: dict[str, str] = {}
        for line in raw.splitlines():
            m = re.match(r"^:\d+ \d+ ([0-9a-f]{40}) ([0-9a-f]{40}) \w+\t(eval/[^/]+\.py)$", line)
            if m:
                blobs.update({b: m.group(3) for b in m.group(1, 2) if set(b) != {"0"}})
        if not blobs:
            return known
        out = subprocess.run([*git, "cat-file", "--batch"], input="\n".join(blobs).encode() + b"\n", capture_output=True, timeout=60,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return known  # not a git checkout: the current files are the only known versions
    pos = 0
    while pos < len(out):
        head_end = out.index(b"\n", pos)
        sha, kind, size = out[pos:head_end].decode().split()
        body = out[head_end + 1 : head_end + 1 + int(size)]
        pos = head_end + 1 + int(size) + 1
        if kind == "blob" and sha in blobs:
            known.setdefault(blobs[sha], set()).add(canonical_source(body.decode("utf-8", "replace")))
    return known


def evaluator_provenance(sources: dict[str, str], repo_root: Path) -> tuple[list[str], bool]:
    """(eval modules that are no version of this harness's, whether the record scores through the model's own
    forward(x, y) because its evaluator predates eval/logprob.py)."""
    known = known_evaluators(repo_root)
    modified = sorted(rel for rel, text in sources.items() if rel.startswith("eval/") and canonical_source(text) not in known.get(rel, set()))
    return modified, "eval/logprob.py" not in sources  # before it, scoring called the model's forward(x, y)


# ---------- the audit ----------

def _dtype_of(log) -> str | None:
    m = re.search(r"^world_size:\d+ grad_accum_steps:\d+ device:\S+ backend:\S+ compile:\d dtype:(\w+)", log.text, re.M)
    return m.group(1) if m else None


def _log_val_folder(log) -> Path | None:
    m = re.search(r"^val_loader:shards pattern=(\S+)", log.text, re.M)
    folder = Path(m.group(1)).parent if m else None
    return folder if folder is not None and sorted(folder.glob("fineweb_val_*.bin")) else None


def audit_plan(folder: Path, sub: dict, *, val_data: Path | None = None) -> dict:
    """The audit command for a record folder, derived from its submission.json and logs alone, paths relative to
    the folder. "identity": what the audit is (the record's code, artifacts, preset and knobs), compared with
    audit.json; "argv": that plus where this machine finds the validation split (the offline sample dataset when
    the runs used it, else `val_data`, else the logs' own shard folder if it is here) and the rescore it allows."""
    results = [r for r in sub["seed_results"].values() if isinstance(r, dict)]
    artifacts = [r["artifact"] for r in results if r.get("artifact")]
    logs = [parse_log(folder / r["log"]) for r in results if r.get("log") and (folder / r["log"]).is_file()]
    first = logs[0] if logs else None
    preset = "cuda" if first is not None and str(first.device or "").startswith("cuda") else "cpu"
    identity = ["--record", ENTRY, *[a for art in artifacts for a in ("--artifact", art)], "--preset", preset]
    if "eval/logprob.py" not in unpack((folder / ENTRY).read_bytes()).sources:
        identity.append("--own-loss")  # its evaluator predates eval/logprob.py: it scored through the model's forward(x, y)
    identity += [f"{k}={v}" for k, v in sorted((sub.get("run_env") or {}).items())]
    tokenizer = None
    if first is not None and re.search(r"^data:sample_dataset ", first.text, re.M):  # the log line, not the logged source
        val = "sample"
    else:
        here = val_data or (_log_val_folder(first) if first is not None else None)
        val = str(here) if here else "none"
        m = re.search(r"^val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=(\S+)", first.text, re.M) if first else None
        tokenizer = m.group(1) if m and Path(m.group(1)).is_file() else None
    score = (first.score_name or "") if first is not None else ""
    kind = "sliding" if score.startswith("final_sliding_window") else "plain" if score.endswith("_roundtrip_exact") else None
    can_rescore = kind and val != "none" and (val == "sample" or tokenizer)
    extra = ["--val-data", val] + (["--rescore", kind] if can_rescore else []) + (["--tokenizer", tokenizer] if can_rescore and tokenizer else [])
    return {"identity": identity, "argv": identity + extra, "val": val, "score_line": score, "kind": kind}


def _absolute(argv: list[str], folder: Path) -> list[str]:
    out, paths = [], {"--record", "--artifact"}
    for i, a in enumerate(argv):
        out.append(str(folder / a) if i and argv[i - 1] in paths else a)
    return out


def run_audit(folder: Path, sub: dict, repo_root: Path, *, val_data: Path | None = None) -> dict:
    """Run the audit command on the folder's shipped code and artifacts (this checkout's eval.audit, which starts
    the record's code in its own process): {"command", "argv", "exit", "results", "details", "rescore",
    "evaluator"}; results maps artifact -> {check: PASS | FAIL | SKIP}."""
    plan = audit_plan(folder, sub, val_data=val_data)
    bundle = unpack((folder / ENTRY).read_bytes())
    modified, legacy = evaluator_provenance(bundle.sources, repo_root)
    from eval.audit import main as audit_main  # this checkout's auditor, in this process; the record runs in its own

    with tempfile.TemporaryDirectory(prefix="records-audit-") as tmp:
        out, printed = Path(tmp) / "audit.json", io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            code = audit_main([*_absolute(plan["argv"], folder), "--json", str(out)])
        data = json.loads(out.read_text()) if out.is_file() else None
    record = {"command": "python -m eval.audit " + " ".join(plan["argv"]), "argv": plan["argv"], "identity": plan["identity"], "exit": code,
              "evaluator": {"modified": modified, "scored_through_model_forward": legacy}, "results": {}, "details": {}, "rescore": {}}
    if data is None:
        record["error"] = printed.getvalue()[-1500:].strip().replace("\n", " | ")
        return record
    for path, entry in data["artifacts"].items():
        name = Path(path).name
        record["results"][name] = {c["name"]: c["status"] for c in entry["checks"]}
        record["details"][name] = {c["name"]: c["detail"] for c in entry["checks"] if c["status"] != "PASS"}
        if entry.get("rescore"):
            record["rescore"][name] = entry["rescore"]
    return record


def _rescore_problems(folder: Path, sub: dict, record: dict) -> tuple[list[str], list[str]]:
    """(problems, notes): each artifact's rescored bpb against its log's exact score."""
    problems, notes = [], []
    for seed, r in sub["seed_results"].items():
        art, log_name = r.get("artifact"), r.get("log")
        got = record.get("rescore", {}).get(art)
        if not art or not got or not log_name or not (folder / log_name).is_file():
            continue
        log = parse_log(folder / log_name)
        exact_fp32_cpu = _dtype_of(log) == "fp32" and str(log.device or "").startswith("cpu")
        tol = 1e-5 + 1e-6 * abs(log.val_bpb) if exact_fp32_cpu else 5e-3 * abs(log.val_bpb)  # bf16/GPU kernels differ from ours
        diff = got["val_bpb"] - log.val_bpb
        if not math.isfinite(diff) or abs(diff) > tol:
            problems.append(f"seed {seed}: this checkout's evaluator scores {art} at val_bpb {got['val_bpb']:.8f}, but {log_name} logged "
                            f"{log.val_bpb:.8f} ({diff:+.2e}, tolerance {tol:.0e}): the logged score did not come from the harness's scoring")
        else:
            notes.append(f"seed {seed} rescored {got['val_bpb']:.6f} (log {log.val_bpb:.6f})")
    return problems, notes


def write_audit(folder: Path, sub: dict, repo_root: Path, *, val_data: Path | None = None) -> Path | None:
    """`records pack`: run the audit on the new folder and write its command and result to audit.json (refuses to
    overwrite one). None when there is nothing to audit (no packed file or no artifact)."""
    path = Path(folder) / AUDIT_FILE
    if path.exists():
        raise FileExistsError(f"{path} already exists: it is the record's audit result; remove it to audit again")
    try:
        unpack((Path(folder) / ENTRY).read_bytes())
    except (OSError, ValueError):
        return None
    if not any(isinstance(r, dict) and r.get("artifact") for r in sub["seed_results"].values()):
        return None
    record = run_audit(Path(folder), sub, repo_root, val_data=val_data)
    stored = {k: record.get(k) for k in ("command", "argv", "identity", "exit", "results", "evaluator", "rescore", "error")}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def audit_check(folder: Path, sub: dict, repo_root: Path, *, val_data: Path | None = None) -> Check:
    """The legality audit of the record's own shipped code, compared with the audit.json `records pack` wrote.
    val_data: a validation shard folder for records that did not train on the offline sample dataset."""
    folder = Path(folder)
    try:
        unpack((folder / ENTRY).read_bytes())
    except (OSError, ValueError) as e:
        return Check("audit", "SKIP", f"{ENTRY} is not a file `records pack` made ({e}): the audit re-runs a record's shipped code "
                     "only from our packed format (a public challenge folder ships its own script)")
    if not any(isinstance(r, dict) and r.get("artifact") for r in sub["seed_results"].values()):
        return Check("audit", "SKIP", "no artifact in the folder (re-pack with --artifacts to audit it)")
    problems = []
    record = run_audit(folder, sub, repo_root, val_data=val_data)
    modified, legacy = record["evaluator"]["modified"], record["evaluator"]["scored_through_model_forward"]
    if modified:
        problems.append(f"ships a modified evaluator: {modified} match no version of this harness's eval/ (its logged score came "
                        "from them): re-pack from an unmodified checkout")
    if record.get("error") and not record.get("results"):
        return Check("audit", "FAIL", "; ".join(problems + [f"`{record['command']}` failed (exit {record['exit']}): {record['error']}"]))
    for art, checks in record["results"].items():
        failed = [n for n, status in checks.items() if status == "FAIL"]
        for n in failed:
            problems.append(f"{art}: {n}: {record['details'][art].get(n, '')}")
    rescore_problems, notes = _rescore_problems(folder, sub, record)
    problems += rescore_problems
    stored_path = folder / AUDIT_FILE
    if not stored_path.is_file():
        problems.append(f"no {AUDIT_FILE}: the folder does not record its audit (packed before audits were recorded): re-pack, or "
                        "write it with records.rerun.write_audit")
    else:
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            stored = {"unreadable": str(e)}
        if stored.get("identity") != record["identity"]:
            problems.append(f"{AUDIT_FILE} holds another command ({stored.get('command')!r}) than the one derived from the folder "
                            f"({record['command']!r}): re-pack")
        elif stored.get("results") != record["results"]:
            diff = sorted({f"{a}:{n}" for a in set(stored.get("results") or {}) | set(record["results"])
                           for n in set((stored.get("results") or {}).get(a, {})) | set(record["results"].get(a, {}))
                           if (stored.get("results") or {}).get(a, {}).get(n) != record["results"].get(a, {}).get(n)})
            problems.append(f"rerun on the shipped code, the audit differs from {AUDIT_FILE}: {diff[:6]}")
    if problems:
        return Check("audit", "FAIL", "; ".join(problems))
    checks = next(iter(record["results"].values()))
    ran = [n for n, status in checks.items() if status == "PASS"]
    skipped = [n for n, status in checks.items() if status == "SKIP"]
    what = (f"{len(ran)} checks ({', '.join(ran)}) on {len(record['results'])} artifact(s) with the record's own code in its own process"
            + (f" ({', '.join(skipped)}: {record['details'][next(iter(record['details']))].get(skipped[0], 'skipped')})" if skipped else ""))
    plan = audit_plan(folder, sub, val_data=val_data)
    if notes:
        extra = "; ".join(notes)
    elif plan["kind"] is None:
        extra = f"no rescore of a {plan['score_line'] or 'missing'} score (only plain and sliding scores are recomputed)"
    else:
        extra = "no rescore: its validation split (and tokenizer) is not on this machine (pass val_data)"
    legacy_note = "; its evaluator predates eval/logprob.py, so its model's own loss was checked too" if legacy else ""
    return Check("audit", "PASS", f"{what}, same as {AUDIT_FILE}; {extra}{legacy_note}; evaluator = the harness's")
