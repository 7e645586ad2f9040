"""Re-running a record's shipped code: the smoke run and the legality audit that `records verify` reports.

Both must execute the packed train_gpt.py the folder ships, from a folder outside the repository, never the
checkout that happens to run the verifier.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from records.bundle import ENTRY
from records.check import Check
from records.logs import parse_log

# Overrides that shrink any config to a seconds-long CPU run; the record's other knobs (e.g. MLP_KIND) are kept.
SMOKE_KNOBS = dict(
    DEVICE="cpu", COMPILE="0", DTYPE="fp32", NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="2", NUM_KV_HEADS="1",
    TRAIN_SEQ_LEN="32", TRAIN_BATCH_TOKENS="512", VAL_BATCH_SIZE="8192", ITERATIONS="2", WARMUP_STEPS="0",
    WARMDOWN_ITERS="1", MAX_WALLCLOCK_SECONDS="0", VAL_LOSS_EVERY="0", TRAIN_LOG_EVERY="1", GRAD_ACCUM_STEPS="0",
    RUN_ID="smoke", SEED="1",
)
SMOKE_TIMEOUT_S = 600
_NOT_INHERITED = {"PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
# Runs the packed file, then names any module that was loaded from the repository instead of from the bundle.
_SMOKE_RUNNER = """
import runpy, sys
script, repo = sys.argv[1], sys.argv[2]
sys.argv = [script]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    leaked = sorted(n for n, m in list(sys.modules.items()) if (getattr(m, "__file__", None) or "").startswith(repo))
    print("records-smoke:repo-modules:" + ",".join(leaked), file=sys.stderr, flush=True)
"""


def default_smoke_data() -> tuple[Path, Path]:
    """The offline sample dataset (built once, cached), as the harness's default run uses it."""
    from data.sample import ensure_sample_dataset

    ds = ensure_sample_dataset()
    return Path(ds.data_path), Path(ds.tokenizer_path)


def smoke_check(folder: Path, sub: dict, bundle_entry_source: str, smoke_data: tuple[Path, Path] | None, repo_root: Path) -> Check:
    """Run the packed file from a temporary folder outside the repository, with a clean environment."""
    import sentencepiece as spm

    data_path, tokenizer = smoke_data or default_smoke_data()
    vocab = int(spm.SentencePieceProcessor(model_file=str(tokenizer)).vocab_size())
    tmp = Path(tempfile.mkdtemp(prefix="records-smoke-"))
    try:
        if tmp.resolve().is_relative_to(repo_root.resolve()):
            return Check("smoke", "FAIL", f"the temp folder {tmp} is inside the repository; set TMPDIR elsewhere")
        shutil.copyfile(folder / ENTRY, tmp / ENTRY)
        # The caller's own knobs must not leak into the smoke run; the trainer's knob names come from its KNOBS table.
        knobs = set(re.findall(r'Knob\(\s*"([A-Z0-9_]+)"', bundle_entry_source)) | _NOT_INHERITED
        env = {k: v for k, v in os.environ.items() if k not in knobs}
        env.update({k: str(v) for k, v in (sub.get("run_env") or {}).items()})
        env.update(SMOKE_KNOBS, VOCAB_SIZE=str(vocab), DATA_PATH=str(data_path), TOKENIZER_PATH=str(tokenizer))
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-c", _SMOKE_RUNNER, str(tmp / ENTRY), str(repo_root.resolve()) + os.sep]
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


def audit_check(folder: Path, sub: dict, repo_root: Path) -> Check:
    """eval.audit (the legality audit) on each shipped artifact, when both exist; a skip is never a pass."""
    artifacts = [r.get("artifact") for r in sub["seed_results"].values() if isinstance(r, dict) and r.get("artifact")]
    if not artifacts:
        return Check("audit", "SKIP", "no artifact in the folder (re-pack with --artifacts to audit it)")
    if str(repo_root) not in sys.path:
        sys.path.insert(0, str(repo_root))
    try:
        available = importlib.util.find_spec("eval.audit") is not None
    except ImportError:
        available = False
    if not available:
        return Check("audit", "SKIP", "audit unavailable: eval.audit is not in this checkout")
    results = []
    for art in artifacts:
        env = dict(os.environ, **{k: str(v) for k, v in (sub.get("run_env") or {}).items()})
        cmd = [sys.executable, "-m", "eval.audit", "--artifact", str(folder / art)]
        proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
        if proc.returncode != 0:
            tail = (proc.stdout[-800:] + proc.stderr[-800:]).strip().replace("\n", " | ")
            return Check("audit", "FAIL", f"`python -m eval.audit --artifact {art}` failed (exit {proc.returncode}): {tail}")
        results.append(art)
    return Check("audit", "PASS", f"eval.audit passed on {results}")
