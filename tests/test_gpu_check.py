"""bench.gpu_check: its CPU dry run (the same script, tiny shapes) works before any GPU appears, and its checks can fail."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_PATH", "TOKENIZER_PATH")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry-run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_core_sections():
    """kinds (compiled fullgraph, bf16 autocast), the Triton scan under its interpreter, and QAT under compile."""
    proc = _gpu_check("--only", "kinds,s5_scan,qat", "--kinds", "relu2", "--steps", "5", "--compile-backend", "eager")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [line.split() for line in proc.stdout[proc.stdout.index("section   case"):].splitlines()]
    assert ["kinds", "relu2", "PASS"] in [r[:3] for r in table]
    assert ["qat", "int4", "on", "after", "compile", "PASS"] in [r[:6] for r in table]
    if pytest.importorskip("triton"):
        assert sum(r[:1] == ["s5_scan"] and "PASS" in r for r in table) == 2 and ["0", "failed,"] in [r[2:4] for r in table]


@pytest.mark.slow
def test_dry_run_every_section_and_kind(tmp_path):
    """The whole script on CPU: all kinds, eval throughput, a 2-rank gloo run, ours vs ours as the 'baseline'."""
    proc = _gpu_check("--baseline-script", str(ROOT / "train_gpt.py"), "--json", str(tmp_path / "rows.json"), timeout=2400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    import json

    rows = json.loads((tmp_path / "rows.json").read_text())
    kinds = {r["case"] for r in rows if r["section"] == "kinds"}
    assert kinds == {"relu2", "swiglu", "glu", "hwnode", "wave", "s5", "hyena_s5", "mixed"}
    assert {r["section"] for r in rows} == {"kinds", "s5_scan", "qat", "eval", "nccl", "baseline"}
    assert all(r["status"] == "PASS" for r in rows), [r for r in rows if r["status"] != "PASS"]
    assert any(r["case"].startswith("ttt full") for r in rows) and any(r["case"].startswith("sliding") for r in rows)


def test_graph_break_fails_the_kind(monkeypatch):
    """A graph break under fullgraph=True is a FAIL row naming it, not a crash of the whole check."""
    import torch

    from arch.mlp import ReluSquaredMLP
    from bench.cuda_path import train_kind
    from bench.gpu_check import CPU_KIND_SHAPE

    original = ReluSquaredMLP.forward

    def breaking(self, x):
        torch._dynamo.graph_break()
        return original(self, x)

    monkeypatch.setattr(ReluSquaredMLP, "forward", breaking)
    env = {**CPU_KIND_SHAPE, "NUM_LAYERS": "2", "COMPILE": "1", "DTYPE": "bf16", "DEVICE": "cpu", "MLP_KIND": "relu2"}
    r = train_kind("relu2", env, "cpu", 3, backend="eager")
    assert r["status"] == "FAIL" and ("Unsupported" in r["detail"] or "graph" in r["detail"].lower()), r


def test_qat_check_catches_a_forward_that_ignores_qat(monkeypatch):
    """The public bug: QAT switched on after compilation, but the compiled forward never changes."""
    import bench.cuda_path as cp
    from bench.gpu_check import CPU_KIND_SHAPE

    env = {**CPU_KIND_SHAPE, "NUM_LAYERS": "2", "COMPILE": "1", "DTYPE": "bf16", "DEVICE": "cpu", "QAT_SCHEME": "int4",
           "QUANT_FLOAT_MAX_NUMEL": "0"}
    assert cp.qat_under_compile(env, "cpu", backend="eager")["status"] == "PASS"
    monkeypatch.setattr(cp, "set_qat", lambda model, on: None)  # the gate never reaches the forward
    r = cp.qat_under_compile(env, "cpu", backend="eager")
    assert r["status"] == "FAIL" and "ignored QAT" in r["detail"], r


def test_bad_arguments_are_one_line():
    proc = _gpu_check("--only", "kinds,speed")
    assert proc.returncode == 2 and "unknown section or kind speed" in proc.stderr and "Traceback" not in proc.stderr
    proc = _gpu_check("--steps", "1")
    assert proc.returncode == 2 and "--steps must be >= 3" in proc.stderr and proc.stderr.count("\n") == 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device is visible" in proc.stderr and "--dry-run" in proc.stderr
