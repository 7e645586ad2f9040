"""One sweep run = one train_gpt.py subprocess in its own folder; the results file that makes a sweep resumable.

Folder of a run: OUT/runs/<run_id>/ with spec.json (the grid point and its predicted size), shape.json (the
model, for arch.budget's calibration), stdout.txt, and the trainer's own logs/<run_id>.txt and
artifacts/<run_id>/. A run is finished once its line is in OUT/results.jsonl; anything else in runs/ is a
run that was interrupted and is started again from scratch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from arch.budget import Prediction, Shape

TRAIN_LINE = re.compile(r"step:(\d+)/\d+ train_loss:([\d.naninf]+) train_time:(\d+)ms")
STATUSES = ("ok", "pruned", "failed")
REPORTED = ("kind", "share_target", "share", "expansion", "shape", "env", "params", "predicted_total_bytes")  # every row
REPORTED_OK = ("val_bpb", "val_loss", "total_bytes")  # and a finished one


class SweepError(ValueError):
    """A sweep folder or option that cannot be used as it is; the message names it and the fix."""


@dataclass(frozen=True)
class RunSpec:
    """A grid point sized to the byte budget."""

    run_id: str
    kind: str
    share_target: float
    expansion: float
    prediction: Prediction
    knobs: tuple[tuple[str, str], ...] = ()  # extra trainer knobs of this run only (e.g. SEED, an optimizer)

    @property
    def shape(self) -> Shape:
        return self.prediction.shape

    def to_json(self) -> dict:
        p = self.prediction
        return {"run_id": self.run_id, "kind": self.kind, "share_target": self.share_target, "expansion": self.expansion,
                "shape": p.shape.to_json(), "env": p.shape.env(), "params": p.params, "share": p.share, "predicted_model_bytes": p.model_bytes,
                "predicted_total_bytes": p.total_bytes, "predicted_rel_error": p.rel_error, **({"knobs": dict(self.knobs)} if self.knobs else {})}


def metric_name(scheme: str) -> str:
    """The trainer's roundtrip line for an export label: int6+zstd -> final_int6_zstd_roundtrip_exact."""
    return "final_" + scheme.replace("+", "_") + "_roundtrip_exact"


def parse_log(text: str, scheme: str) -> dict:
    """What a finished trainer log says about the run (empty fields when a line is missing)."""
    def grab(pattern: str, cast=float):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None

    final = re.search(re.escape(metric_name(scheme)) + r" val_loss:([\d.]+) val_bpb:([\d.]+)", text)
    curve = [(int(t), float(loss)) for _, loss, t in TRAIN_LINE.findall(text)]
    steps = [int(s) for s, _, _ in TRAIN_LINE.findall(text)]
    return {
        "val_loss": float(final.group(1)) if final else None,
        "val_bpb": float(final.group(2)) if final else None,
        "model_bytes": grab(r"Serialized model " + re.escape(scheme) + r": (\d+) bytes", int),
        "total_bytes": grab(r"Total submission size " + re.escape(scheme) + r": (\d+) bytes", int),
        "code_bytes": grab(r"Code size: (\d+) bytes", int),
        "model_params": grab(r"model_params:(\d+)", int),
        "steps": max(steps) if steps else 0,
        "train_time_ms": curve[-1][0] if curve else 0,
        "curve": curve,
    }


@dataclass
class Running:
    spec: RunSpec
    proc: subprocess.Popen
    folder: Path
    started: float
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.folder / "logs" / f"{self.spec.run_id}.txt"

    def poll_curve(self) -> None:
        if self.log_path.is_file():
            self.curve = [(int(t), float(loss)) for _, loss, t in TRAIN_LINE.findall(self.log_path.read_text(errors="replace"))]

    def stop(self) -> None:
        """Terminate the trainer (and anything it started: it leads its own process group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()


class ResultStore:
    """OUT/results.jsonl: one JSON line per finished run (ok, pruned or failed), appended and fsynced."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / "results.jsonl"

    def load(self) -> dict[str, dict]:
        """run_id -> its last recorded row. Only the last line may be unreadable (a kill mid-write: that run is
        redone); any other bad line is refused with its number, so a damaged file is never half-read."""
        if not self.path.is_file():
            return {}
        rows = {}
        lines = self.path.read_text(errors="replace").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):
                    print(f"sweep: ignoring unreadable line {n} of {self.path} (interrupted write)", file=sys.stderr)
                    continue
                raise SweepError(f"{self.path} line {n} is not JSON; the file was damaged: restore it, or move it away "
                                 "to start this sweep over") from None
            problem = row_problem(row)
            if problem:
                raise SweepError(f"{self.path} line {n} is not a sweep run record ({problem}); restore the file, or "
                                 "move it away to start this sweep over")
            rows[row["run_id"]] = row
        return rows

    def append(self, row: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def row_problem(row) -> str | None:
    """What keeps a results line from being a run the report can use, or None."""
    if not isinstance(row, dict):
        return "not a JSON object"
    if not isinstance(row.get("run_id"), str) or row.get("status") not in STATUSES:
        return f"needs a run_id and a status in {STATUSES}"
    missing = [k for k in REPORTED + (REPORTED_OK if row["status"] == "ok" else ()) if row.get(k) is None]
    return f"missing {', '.join(missing)}" if missing else None


def start_run(spec: RunSpec, out: Path, trainer: Path, env: dict[str, str]) -> Running:
    """Start the trainer in a fresh run folder (a leftover folder of an interrupted run is cleared first; a folder
    that is not one of this sweep's run folders is refused, never deleted)."""
    folder = Path(out) / "runs" / spec.run_id
    if folder.exists():
        try:
            ours = json.loads((folder / "spec.json").read_text())["run_id"] == spec.run_id
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            raise SweepError(f"{folder} exists but is not this sweep's run folder (no matching spec.json); move it away")
        stop_orphan(folder, trainer)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps(spec.to_json(), indent=1) + "\n")
    (folder / "shape.json").write_text(json.dumps(spec.shape.to_json(), indent=1) + "\n")
    stdout = open(folder / "stdout.txt", "w", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(trainer)], cwd=folder, env={**env, **spec.shape.env(), **dict(spec.knobs), "RUN_ID": spec.run_id},
                            stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True)
    stdout.close()
    (folder / "trainer.pid").write_text(str(proc.pid))
    return Running(spec, proc, folder, time.time())


def stop_orphan(folder: Path, trainer: Path) -> None:
    """A sweep killed outright (SIGKILL) leaves its trainers running. Before a run is redone, stop the trainer
    recorded in its folder, but only if that pid is still that trainer, working in that folder (Linux /proc)."""
    pid_file = folder / "trainer.pid"
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return  # gone already (or no /proc to check it by)
    if str(trainer).encode() in cmdline and cwd == folder.resolve():
        try:
            os.killpg(pid, signal.SIGKILL)  # the trainer leads its own process group (start_new_session)
        except ProcessLookupError:
            return
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


def finished_row(run: Running, scheme: str, status: str | None = None, note: str = "", context: dict | None = None) -> dict:
    """The results line of a run that exited (or was stopped: status='pruned')."""
    text = run.log_path.read_text(errors="replace") if run.log_path.is_file() else ""
    parsed = parse_log(text, scheme)
    if status is None:
        if run.proc.returncode == 0 and parsed["val_bpb"] is not None:
            status = "ok"
        else:
            status = "failed"
            tail = (run.folder / "stdout.txt").read_text(errors="replace")[-1500:]
            note = note or (f"exit code {run.proc.returncode}; no {metric_name(scheme)} line" if run.proc.returncode == 0
                            else f"exit code {run.proc.returncode}: {tail.strip().splitlines()[-1] if tail.strip() else ''}")
    if parsed["model_params"] is not None and parsed["model_params"] != run.spec.prediction.params:
        note = (note + "; " if note else "") + (f"PARAM FORMULA MISMATCH: built {parsed['model_params']}, "
                                                f"predicted {run.spec.prediction.params}")
    return {**run.spec.to_json(), "status": status, "note": note, "wall_s": round(time.time() - run.started, 1),
            "scheme": scheme, **parsed, "context": context}


def trainer_knobs(trainer: Path) -> set[str]:
    """The env knobs the trainer reads, from its own --help (so the sweep never has to import it)."""
    proc = subprocess.run([sys.executable, str(trainer), "--help"], capture_output=True, text=True)
    knobs = set(re.findall(r"^  ([A-Z][A-Z0-9_]+) ", proc.stdout, flags=re.M))
    if proc.returncode or not knobs:
        tail = (proc.stderr.strip().splitlines() or ["no knob list printed"])[-1]
        raise SweepError(f"--trainer {trainer} --help failed ({tail}); point --trainer at a train_gpt.py")
    return knobs


def env_for_runs(base: dict[str, str], knob_names: set[str]) -> dict[str, str]:
    """The parent environment without trainer knobs, so only what the sweep sets (or --env passes) reaches a run."""
    return {k: v for k, v in base.items() if k not in knob_names and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
