"""bench.train_speed / bench.eval_speed: a bad input gets one line naming it and the fix, exit 2, no traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.train_speed import BenchError, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env_drop = ("DATA_PATH", "TOKENIZER_PATH", "OUTPUT_DIR")
    import os

    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, match", [
    (["MODEL_DIM"], "'MODEL_DIM' is not KNOB=VALUE"),
    (["model_dim=3"], "is not KNOB=VALUE"),
    (["MODEL_DIM=abc"], "MODEL_DIM='abc' is not a valid int"),
    (["--seconds", "0"], "--seconds must be > 0"),
    (["--script", "missing/train_gpt.py"], "trainer script not found"),
    (["--compare", "missing.py"], "trainer script not found"),
    (["DATA_PATH=no/such/folder"], "DATA_PATH=")
])
def test_train_speed_bad_inputs(tmp_path, args, match):
    proc = _cli("bench.train_speed", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert match in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_train_speed_failing_trainer_is_one_line(tmp_path):
    script = tmp_path / "broken_train.py"
    script.write_text("import sys\nprint('about to fail')\nsys.exit('error: MODEL_DIM too small for this trainer')\n")
    proc = _cli("bench.train_speed", "--script", str(script), "--seconds", "1", "TRAIN_BATCH_TOKENS=2048", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "exited with status 1: error: MODEL_DIM too small" in proc.stderr and proc.stderr.count("\n") == 1


def test_relative_paths_are_taken_from_the_callers_folder(tmp_path, monkeypatch):
    (tmp_path / "shards").mkdir()
    (tmp_path / "tok.model").write_bytes(b"x")
    out = parse_overrides(["DATA_PATH=shards", "TOKENIZER_PATH=./tok.model", "MODEL_DIM=64"], tmp_path)
    assert out == {"DATA_PATH": str(tmp_path / "shards"), "TOKENIZER_PATH": str(tmp_path / "tok.model"), "MODEL_DIM": "64"}
    monkeypatch.setenv("DATA_PATH", "shards")  # from the environment too: the trainer runs in a temporary folder
    assert parse_overrides([], tmp_path)["DATA_PATH"] == str(tmp_path / "shards")
    with pytest.raises(BenchError, match="TOKENIZER_PATH=.*does not exist"):
        parse_overrides(["TOKENIZER_PATH=missing.model"], tmp_path)


@pytest.mark.parametrize("args, match", [
    (["--artifact", "nope.ptz"], "--artifact nope.ptz is not an existing file"),
    (["--random-init", "NUM_LAYERS"], "'NUM_LAYERS' is not KNOB=VALUE"),
    (["--random-init", "--strides", "64,x"], "--strides '64,x' must be"),
    (["--random-init", "--ttt", "ful"], "--ttt a list of full, lora"),
    (["--random-init", "--strides", "64", "TRAIN_SEQ_LEN=32"], "must be <= the eval window EVAL_SEQ_LEN=32"),
    (["--random-init", "NUM_HEADS=zero"], "NUM_HEADS='zero' is not a valid int"),
    (["--random-init", "DATA_PATH=rel/missing"], "does not exist"),
    (["--artifact", "bad.ptz"], "cannot load --artifact bad.ptz"),
])
def test_eval_speed_bad_inputs(tmp_path, args, match):
    (tmp_path / "bad.ptz").write_bytes(b"not an artifact")
    proc = _cli("bench.eval_speed", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert match in proc.stderr
