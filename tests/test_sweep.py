"""python -m sweep: resume after a kill (real trainer, tiny data), early stopping of a losing run (scripted
trainer), log parsing, the Pareto front, the CSV and the plots."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from arch.budget import Shape, predict, get_scheme, uncalibrated
from sweep.report import pareto_front, write_report
from sweep.runs import ResultStore, RunSpec, parse_log
from sweep.schedule import losing, run_all
from tests.tiny_data import TINY_VOCAB, build_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY_ENV = ["TRAIN_SEQ_LEN=32", "TRAIN_BATCH_TOKENS=512", "VAL_BATCH_SIZE=4096", "WARMDOWN_ITERS=2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def sweep_cmd(out: Path, tiny, calibration: Path) -> list[str]:
    data, tok = tiny
    cmd = [sys.executable, "-m", "sweep", "--out", str(out), "--data-path", str(data), "--tokenizer-path", str(tok),
           "--vocab", str(TINY_VOCAB), "--bytes", "260000", "--kinds", "relu2", "--shares", "0.3,0.5",
           "--expansions", "1,2", "--head-dim", "16", "--dims", "32:96", "--layers", "1:3", "--min-fill", "0.1",
           "--seconds", "60", "--iterations", "3", "--jobs", "1", "--threads", "1", "--stop-margin", "0",
           "--code-bytes", "0", "--calibration", str(calibration)]
    for item in TINY_ENV:
        cmd += ["--env", item]
    return cmd


@pytest.mark.slow
def test_sweep_resumes_after_kill_real_trainer(tmp_path, tiny):
    out = tmp_path / "sweep"
    cmd = sweep_cmd(out, tiny, tmp_path / "none.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    kill_after_first_result(cmd, env, out)
    first = ResultStore(out).load()
    assert len(first) == 1
    (done_id, done_row), = first.items()
    stdout_mtime = (out / "runs" / done_id / "stdout.txt").stat().st_mtime

    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming, 1 of" in second.stdout
    rows = ResultStore(out).load()
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) >= 3  # every grid point once, none recorded twice
    assert rows[done_id] == done_row and (out / "runs" / done_id / "stdout.txt").stat().st_mtime == stdout_mtime
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["model_params"] == row["params"]  # the formula matched the model the trainer built
        assert row["total_bytes"] == row["model_bytes"] + row["code_bytes"] and row["val_bpb"] > 0
        assert row["steps"] == 3 and row["curve"]
    assert not [p for p in (out / "runs").iterdir() if p.name not in rows]
    csv_text = (out / "results.csv").read_text()
    assert csv_text.count("\n") == len(rows) + 1 and "val_bpb" in csv_text.splitlines()[0]
    for png in ("pareto_bpb_vs_bytes.png", "bpb_vs_axes.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "best under 260000 bytes" in (out / "recommendation.txt").read_text()


def kill_after_first_result(cmd: list[str], env: dict, out: Path) -> None:
    """Start the sweep, SIGKILL it as soon as one run is recorded (a trainer is then usually mid-run)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if results.is_file() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.15)  # slow enough that the 0.1 s monitor sees the laggard mid-run, even on a busy CPU
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and nothing else: trainers lead their own groups
    proc.wait()


FAKE_TRAINER = textwrap.dedent('''
    """Scripted stand-in for train_gpt.py: MODEL_DIM=64 learns, MODEL_DIM=32 lags by 1 nat."""
    import os, sys, time
    from pathlib import Path
    if "--help" in sys.argv:
        print("  MODEL_DIM  int"); sys.exit(0)
    run = os.environ["RUN_ID"]
    Path("logs").mkdir()
    log = open(f"logs/{run}.txt", "w")
    lag = 1.0 if os.environ["MODEL_DIM"] == "32" else 0.0
    for step in range(1, 41):
        print(f"step:{step}/40 train_loss:{5.0 - step * 0.05 + lag:.4f} train_time:{step * 100}ms", file=log, flush=True)
        time.sleep(0.15)  # slow enough that the 0.1 s monitor sees the laggard mid-run, even on a busy CPU
    if "EXPECT_PARAMS" in os.environ:
        print("model_params:%s" % os.environ["EXPECT_PARAMS"], file=log)
    print("Serialized model int8+zlib: 1000 bytes", file=log)
    print("Code size: 10 bytes", file=log)
    print("Total submission size int8+zlib: 1010 bytes", file=log)
    print("final_int8_zlib_roundtrip_exact val_loss:3.00000000 val_bpb:1.50000000", file=log, flush=True)
''')


def test_resume_after_kill_stops_the_orphan_and_keeps_recorded_runs(tmp_path):
    """The same kill as the slow real-trainer test, with a scripted trainer so it takes seconds."""
    trainer = tmp_path / "fake_train.py"
    trainer.write_text(FAKE_TRAINER)
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.model").write_bytes(b"stands in for the tokenizer")  # the sweep fingerprints it
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "sweep", "--out", str(out), "--trainer", str(trainer), "--data-path", str(data),
           "--tokenizer-path", str(data / "t.model"), "--vocab", "64", "--bytes", "200000", "--kinds", "relu2",
           "--shares", "0.2,0.5", "--expansions", "1,3", "--head-dim", "16", "--dims", "32:128", "--layers", "1:4",
           "--min-fill", "0.1", "--code-bytes", "0", "--jobs", "1", "--stop-margin", "0", "--no-plots",
           "--calibration", str(tmp_path / "none.json")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kill_after_first_result(cmd, env, out)
    (done_id, done_row), = ResultStore(out).load().items()
    orphans = [int(p.read_text()) for p in (out / "runs").glob("*/trainer.pid") if p.parent.name != done_id]
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming, 1 of" in second.stdout
    rows = ResultStore(out).load()
    assert len(rows) == len((out / "results.jsonl").read_text().splitlines()) >= 2  # each grid point once
    assert rows[done_id] == done_row and all(r["status"] == "ok" and r["steps"] == 40 for r in rows.values())
    for pid in orphans:  # the killed sweep's trainer was stopped before its run was redone
        assert not Path(f"/proc/{pid}").exists() or b"fake_train" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_losing_run_is_pruned_and_winner_finishes(tmp_path):
    trainer = tmp_path / "fake_train.py"
    trainer.write_text(FAKE_TRAINER)
    scheme = get_scheme("int8+zlib")
    specs = []
    for d in (64, 32):
        p = predict(Shape(64, 1, d, 2, 1), scheme, uncalibrated("int8+zlib"), 0)
        specs.append(RunSpec(f"d{d}", "relu2", 0.3, 2.0, p))
    assert specs[0].prediction.params != specs[1].prediction.params
    env = {**os.environ, "EXPECT_PARAMS": str(specs[0].prediction.params)}
    run_all(specs, tmp_path / "out", trainer, env, "int8+zlib", jobs=2, budget_s=4.0, stop_after=0.5, margin=0.15,
            poll_s=0.1, log=lambda _: None)
    rows = ResultStore(tmp_path / "out").load()
    assert rows["d64"]["status"] == "ok" and rows["d64"]["val_bpb"] == 1.5 and rows["d64"]["steps"] == 40
    assert rows["d32"]["status"] == "pruned" and "pruned at" in rows["d32"]["note"]
    assert 2000 <= rows["d32"]["train_time_ms"] < 4000  # stopped after half the budget, before the end
    assert "PARAM FORMULA MISMATCH" not in rows["d64"]["note"]
    write_report(list(rows.values()), tmp_path / "out", 2000, with_plots=False)
    assert "best under 2000 bytes: d64" in (tmp_path / "out" / "recommendation.txt").read_text()


def test_losing_needs_time_and_margin():
    good = [(t, 5.0 - t / 1000) for t in range(100, 3001, 100)]
    bad = [(t, l + 0.5) for t, l in good]
    assert losing(bad[:10], [good], 4000, 0.5, 0.15) == (False, "")  # 1 s < half of the 4 s budget
    lose, note = losing(bad[:25], [good], 4000, 0.5, 0.15)
    assert lose and "+0.500" in note
    assert not losing(bad[:25], [good], 4000, 0.5, 0.6)[0]  # within the margin
    assert not losing(bad[:25], [good[:5]], 4000, 0.5, 0.15)[0]  # no reference has reached that time yet


def test_parse_log_and_pareto():
    text = "\n".join([
        "model_params:1234", "step:5/100 train_loss:4.5000 train_time:500ms step_avg:100.00ms",
        "step:10/100 train_loss:4.0000 train_time:1000ms step_avg:100.00ms", "Code size: 50 bytes (3 files)",
        "Serialized model int6+zstd: 700 bytes path:x", "Total submission size int6+zstd: 750 bytes",
        "Serialized model int8+zlib: 900 bytes path:y", "Total submission size int8+zlib: 950 bytes",
        "final_int8_zlib_roundtrip_exact val_loss:3.1 val_bpb:1.9",
        "final_int6_zstd_roundtrip_exact val_loss:3.2 val_bpb:2.0"])
    p = parse_log(text, "int6+zstd")
    assert (p["val_bpb"], p["total_bytes"], p["model_bytes"], p["code_bytes"]) == (2.0, 750, 700, 50)
    assert p["steps"] == 10 and p["curve"] == [(500, 4.5), (1000, 4.0)] and p["model_params"] == 1234
    assert parse_log(text, "int8+zlib")["total_bytes"] == 950
    rows = [{"status": "ok", "total_bytes": b, "val_bpb": v, "run_id": str(i)}
            for i, (b, v) in enumerate([(100, 2.0), (200, 1.9), (150, 2.1), (300, 1.95), (400, 1.8)])]
    rows.append({"status": "pruned", "total_bytes": 50, "val_bpb": None, "run_id": "x"})
    assert [r["run_id"] for r in pareto_front(rows)] == ["0", "1", "4"]


def test_bad_cli_input_is_named(tmp_path, capsys):
    from sweep.__main__ import main

    with pytest.raises(SystemExit, match="--kinds nope not registered"):
        main(["--out", str(tmp_path), "--kinds", "nope", "--dry-run"])
    with pytest.raises(SystemExit, match="--tokenizer-path"):
        main(["--out", str(tmp_path), "--data-path", "x"])
    with pytest.raises(SystemExit, match="--jobs 0 must be >= 1"):
        main(["--out", str(tmp_path), "--jobs", "0"])


def test_no_wall_clock_cap_is_a_fixed_step_sweep(tmp_path, capsys):
    """--seconds 0: no cap, every run trains --iterations steps (the trainer's MAX_WALLCLOCK_SECONDS=0); early
    stopping, which compares runs at a fraction of --seconds, must be off."""
    from sweep.__main__ import main

    with pytest.raises(SystemExit, match="--seconds 0 .* needs --stop-margin 0"):
        main(["--out", str(tmp_path / "a"), "--seconds", "0", "--dry-run"])
    main(["--out", str(tmp_path / "b"), "--seconds", "0", "--stop-margin", "0", "--iterations", "150", "--dry-run"])
    assert "grid:" in capsys.readouterr().out
