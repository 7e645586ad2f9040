"""Language-model runs of the study: one train_gpt.py process per (arm, seed), run and resumed by sweep's run store.

An arm is a model shape plus trainer knobs; with a seed and the experiment's protocol it becomes a sweep RunSpec.
The run id hashes everything the trainer is given (data by fingerprint, not path), so two experiments asking for
the same configuration share one run. After a run is recorded in the store (OUT/store/results.jsonl), its log is
parsed for what the store's row does not hold (pre-quant bpb, every export scheme, embedding health) and one JSON
per (experiment, arm, seed) is written under OUT/<experiment>/runs/: the report reads only those.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from arch.budget import Shape, get_scheme, load_calibration, predict
from arch.mlp import MixerConfig
from bench.claims.data import Dataset
from data.writes import atomic_write
from sweep.runs import ResultStore, RunSpec, env_for_runs, metric_name, trainer_knobs
from sweep.schedule import run_all, sigterm_as_interrupt

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ROOT / "train_gpt.py"
STORE_SCHEME = "int8+zlib"  # every run exports it first: the store's row scores it (the public format)
PREQUANT_RE = re.compile(r"^step:(\d+)/(\d+) val_loss:([\d.naninf]+) val_bpb:([\d.naninf]+) train_time:(\d+)ms "
                         r"step_avg:([\d.]+)ms", re.M)
HEALTH_RE = re.compile(r"^embedding_health (\S+) isotropy:([\d.]+) mean_norm_ratio:([\d.]+) mean_norm:([\d.]+) "
                       r"row_norm:([\d.]+) max_row_norm:([\d.]+)", re.M)


@dataclass(frozen=True)
class Protocol:
    """What every arm of an LM experiment shares: data, model skeleton, steps, export schemes."""

    dataset: Dataset
    steps: int
    layers: int = 4
    dim: int = 128
    heads: int = 4
    kv_heads: int = 2
    schemes: tuple[str, ...] = (STORE_SCHEME,)
    knobs: tuple[tuple[str, str], ...] = ()  # e.g. the tiny batch of --quick

    def trainer_knobs(self, steps: int) -> dict[str, str]:
        if self.schemes[0] != STORE_SCHEME:
            raise ValueError(f"the first export scheme must be {STORE_SCHEME} (the run store scores it)")
        return {**self.dataset.knobs(), "ITERATIONS": str(steps), "MAX_WALLCLOCK_SECONDS": "0",  # fixed steps, not time
                "WARMDOWN_ITERS": str(max(1, steps // 5)), "EVAL_STRIDE": "0", "VAL_LOSS_EVERY": "0",
                "TRAIN_LOG_EVERY": "10", "EXPORT_SCHEMES": ",".join(self.schemes), **dict(self.knobs)}


@dataclass(frozen=True)
class Arm:
    """One configuration compared in an experiment."""

    name: str
    kind: str = "relu2"
    mult: float = 2.0
    mixer: tuple[tuple[str, object], ...] = ()  # MixerConfig fields, e.g. (("hwnode_virtual_layers", 2),)
    knobs: tuple[tuple[str, str], ...] = ()  # trainer knobs, e.g. (("EMBED_OPTIMIZER", "coupled_adam"),)
    tie: bool = True
    steps: int | None = None  # None: the protocol's
    note: str = ""

    def shape(self, p: Protocol) -> Shape:
        return Shape(p.dataset.vocab, p.layers, p.dim, p.heads, p.kv_heads, self.kind, self.mult, self.tie,
                     MixerConfig(**dict(self.mixer)))


@dataclass(frozen=True)
class LMRun:
    experiment: str
    arm: Arm
    seed: int
    protocol: Protocol
    order: int = 0  # the arm's place in its experiment's tables

    @property
    def steps(self) -> int:
        return self.arm.steps or self.protocol.steps

    def knobs(self) -> dict[str, str]:
        return {**self.protocol.trainer_knobs(self.steps), **dict(self.arm.knobs), "SEED": str(self.seed)}

    def spec(self) -> RunSpec:
        shape = self.arm.shape(self.protocol)
        knobs = self.knobs()
        identity = {**shape.env(), **knobs, "DATA_PATH": self.protocol.dataset.fingerprint,
                    "TOKENIZER_PATH": self.protocol.dataset.name}
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        run_id = f"{shape.mlp_kind}-{shape.layers}x{shape.dim}-seed{self.seed}-{digest}"
        prediction = predict(shape, get_scheme(STORE_SCHEME), load_calibration(STORE_SCHEME, regime="cpu-short"), 0)
        return RunSpec(run_id, shape.mlp_kind, prediction.share, shape.mlp_mult, prediction, tuple(sorted(knobs.items())))


def parse_metrics(text: str, schemes: tuple[str, ...]) -> dict:
    """What the store's row lacks: the pre-quantization score, each scheme's roundtrip bpb and bytes, health."""
    pre = PREQUANT_RE.findall(text)
    mixer = re.search(r"params_per_layer:(\d+)", text)
    out: dict = {"mixer_params": int(mixer.group(1)) if mixer else None, "prequant_bpb": float(pre[-1][3]) if pre else None, "prequant_loss": float(pre[-1][2]) if pre else None,
                 "step_avg_ms": float(pre[-1][5]) if pre else None, "schemes": {}, "embedding_health": {}}
    for scheme in schemes:
        final = re.search(re.escape(metric_name(scheme)) + r" val_loss:([\d.]+) val_bpb:([\d.]+)", text)
        size = re.search(r"Serialized model " + re.escape(scheme) + r": (\d+) bytes", text)
        out["schemes"][scheme] = {"val_bpb": float(final.group(2)) if final else None,
                                  "model_bytes": int(size.group(1)) if size else None}
    for name, iso, ratio, mean_norm, row_norm, max_row in HEALTH_RE.findall(text):
        out["embedding_health"][name] = {"isotropy": float(iso), "mean_norm_ratio": float(ratio),
                                         "row_norm": float(row_norm), "max_row_norm": float(max_row)}
    return out


def run_record(run: LMRun, row: dict, store_dir: Path) -> dict:
    log = store_dir / "runs" / row["run_id"] / "logs" / f"{row['run_id']}.txt"
    text = log.read_text(errors="replace") if log.is_file() else ""
    knobs = {k: v for k, v in run.knobs().items() if k not in ("DATA_PATH", "TOKENIZER_PATH")}
    return {"experiment": run.experiment, "arm": run.arm.name, "order": run.order, "arm_note": run.arm.note,
            "seed": run.seed, "run_id": row["run_id"],
            "status": row["status"], "note": row.get("note", ""), "data": run.protocol.dataset.to_json(),
            "kind": run.arm.kind, "shape": row["shape"], "knobs": knobs, "params": row.get("model_params") or row["params"],
            "steps": row["steps"], "train_time_ms": row["train_time_ms"], "wall_s": row["wall_s"],
            "curve": row.get("curve", []), **parse_metrics(text, run.protocol.schemes)}


def record_path(out: Path, run: LMRun) -> Path:
    return out / run.experiment / "runs" / f"{run.arm.name}__seed{run.seed}.json"


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(obj, indent=1) + "\n")  # a kill never leaves a half-written record


def run_environment() -> dict[str, str]:
    env = env_for_runs(dict(os.environ), trainer_knobs(TRAINER))
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_lm(runs: list[LMRun], out: Path, jobs: int, on_record: Callable[[str], None] = lambda exp: None,
           log: Callable[[str], None] = print) -> None:
    """Run every missing LMRun (shared configurations once), `jobs` trainers at a time; write records as they finish."""
    store_dir = out / "store"
    by_id: dict[str, list[LMRun]] = {}
    specs: dict[str, RunSpec] = {}
    for run in runs:
        spec = run.spec()
        specs.setdefault(spec.run_id, spec)
        by_id.setdefault(spec.run_id, []).append(run)

    def record(row: dict, notify: bool = True) -> None:
        for run in by_id.get(row["run_id"], []):
            write_json(record_path(out, run), run_record(run, row, store_dir))
        for exp in sorted({r.experiment for r in by_id.get(row["run_id"], [])}) if notify else ():
            on_record(exp)

    done = ResultStore(store_dir).load()
    for run_id, row in done.items():  # rewritten each time: an arm's place and note follow the current definitions
        record(row, notify=False)
    for exp in sorted({r.experiment for i in done if i in by_id for r in by_id[i]}):
        on_record(exp)
    if all(done.get(i, {}).get("status") not in (None, "failed") for i in specs):
        return  # (a failed run is pending again, as in sweep's run_all)
    previous = signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        run_all(list(specs.values()), store_dir, TRAINER, run_environment(), STORE_SCHEME, jobs, budget_s=1e9,
                margin=0.0, on_result=record, log=log)
    finally:
        signal.signal(signal.SIGTERM, previous)


def seed_major(arms: list[Arm], seeds: list[int], experiment: str, protocol: Protocol) -> list[LMRun]:
    """Every arm's first seed before any second seed: a partial study covers every arm."""
    return [LMRun(experiment, arm, s, protocol, i) for s in seeds for i, arm in enumerate(arms)]


if __name__ == "__main__":
    sys.exit("use python -m bench.claims")
