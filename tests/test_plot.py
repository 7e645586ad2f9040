"""records/plot.py: the end-of-run summary block and curve of real trainer runs, the public challenge's logs,
`python -m records plot`, and that neither a plotting failure nor a packed record (shipped without records/)
can fail a finished run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from records.logs import parse_log
from records.plot import curve_section, draw, parse_curve, read_curve, read_text, report_run, summary_lines, try_draw, write_seed_curves
from tests.tiny_data import TINY_VOCAB, build_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared" / "data" / "public_records"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", TRAIN_SEQ_LEN="32", TRAIN_BATCH_TOKENS="512",
            VAL_BATCH_SIZE="4096", VOCAB_SIZE=str(TINY_VOCAB), ITERATIONS="8", MAX_WALLCLOCK_SECONDS="0", TRAIN_LOG_EVERY="1",
            VAL_LOSS_EVERY="4", WARMDOWN_ITERS="3", DEVICE="cpu", RUN_ID="t", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def train(cwd: Path, data, script: Path = ROOT / "train_gpt.py", **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    env.update(TINY, DATA_PATH=str(data[0]), TOKENIZER_PATH=str(data[1]), **extra)
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def synthetic_log(path: Path, bpb: float, total: int = 970_000) -> Path:
    lines = ["seed:1", "step:0/100 val_loss:7.0000 val_bpb:4.0000 train_time:0ms step_avg:0.01ms"]
    lines += [f"step:{s}/100 train_loss:{7 - s / 30:.4f} train_time:{s * 100}ms step_avg:100.00ms" for s in range(1, 101, 9)]
    lines += ["warmdown_start step:80 train_time:8000ms lr_scale:0.9500",
              "step:100/100 val_loss:4.0000 val_bpb:2.5000 train_time:10000ms step_avg:100.00ms",
              "Serialized model int8+zlib: 900000 bytes path:artifacts/x/final_model.int8.ptz", "Code size: 70000 bytes (packed)",
              f"Total submission size int8+zlib: {total} bytes", f"final_int8_zlib_roundtrip_exact val_loss:4.1 val_bpb:{bpb:.8f}",
              f"final_sliding_window_exact val_loss:4.0 val_bpb:{bpb - 0.01:.8f}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------- the trainer's end of run ----------

def test_run_ends_with_summary_block_and_curve(tmp_path, tiny):
    proc = train(tmp_path, tiny, EXPORT_SCHEMES="int8+zlib,int6+zstd")
    log = (tmp_path / "logs" / "t.txt").read_text()
    assert "warmdown_start step:6 " in log  # 8 steps, warmdown 3: the LR first drops below 1 at step 6
    block = proc.stdout[proc.stdout.index("run summary t"):]
    assert block in log.replace("\n", "\n")  # console and log get the same block
    assert "training: 8/8 steps in " in block and "warmdown from step 6 at " in block
    rows = {ln.split()[0]: ln.split() for ln in block.splitlines() if ln.startswith("  int")}
    for i, tag in enumerate(("int8+zlib", "int6+zstd")):
        total = int(re.search(rf"^Total submission size {re.escape(tag)}: (\d+) bytes", log, re.M).group(1))
        model = int(re.search(rf"^Serialized model {re.escape(tag)}: (\d+) bytes", log, re.M).group(1))
        roundtrip = re.search(rf"^final_{tag.replace('+', '_')}_roundtrip_exact val_loss:\S+ val_bpb:(\S+)", log, re.M).group(1)
        sliding = re.search(r"^final_sliding_window_exact val_loss:\S+ val_bpb:(\S+)", log, re.M).group(1) if i == 0 else "-"
        assert rows[tag][1:] == [f"{model:,}", f"{total:,}", f"{16_000_000 - total:,}", roundtrip, sliding]
    assert parse_log(tmp_path / "logs" / "t.txt").score_name == "final_sliding_window_exact"  # the block is no score line
    assert "curve: logs/t.png" in proc.stdout
    assert (tmp_path / "logs" / "t.png").read_bytes()[:8] == PNG_MAGIC


def test_plotting_failure_never_fails_a_finished_run(tmp_path, tiny):
    (tmp_path / "logs" / "t.png").mkdir(parents=True)  # the figure cannot be written there
    proc = train(tmp_path, tiny)
    assert "final_int8_zlib_roundtrip_exact" in proc.stdout and "summary: failed (" in proc.stdout
    assert "the run itself finished" in proc.stdout


def test_packed_trainer_runs_without_records(tmp_path, tiny):
    """A packed record ships without records/: its run ends with one line instead of the block, never an error."""
    from records.bundle import pack_files, shipped_sources

    (tmp_path / "train_gpt.py").write_bytes(pack_files(shipped_sources(ROOT, ROOT / "train_gpt.py"), ROOT))
    proc = train(tmp_path, tiny, script=tmp_path / "train_gpt.py")
    assert "final_sliding_window_exact" in proc.stdout and "summary: none here" in proc.stdout
    assert not (tmp_path / "logs" / "t.png").exists()


# ---------- reading logs ----------

def test_summary_of_a_log(tmp_path):
    text = synthetic_log(tmp_path / "a.txt", 2.5).read_text()
    lines = summary_lines(text, "a")
    assert lines[1] == "  training: 100/100 steps in 10.0 s; warmdown from step 80 at 8.0 s"
    assert lines[3].split() == ["int8+zlib", "900,000", "970,000", "15,030,000", "2.50000000", "2.49000000"]
    over = summary_lines(synthetic_log(tmp_path / "b.txt", 2.5, total=16_000_123).read_text(), "b")
    assert "OVER by 123" in over[3]
    for line in lines:  # none of the block's lines reads as a score, size, seed or step line
        assert parse_log(tmp_path / "x", line + "\n").score_name is None and not re.match(r"(step:|Total|Serialized|Code|seed)", line)


def test_public_log_forms(tmp_path):
    """Unix-timestamped lines, train_time in minutes, val lines without a time (placed by step), the snapshot ignored."""
    text = ("code_snapshot:train_gpt.py\n# ===== train_gpt.py =====\n"
            "stopping_early: wallclock_cap train_time:1ms step:1/2\n" + "=" * 100 + "\nRunning Python 3\n"
            "1776142723.115 0/200 val_loss: 9.0 val_bpb: 3.5\n"
            "1776142723.207 100/200 train_loss: 4.0 train_time: 1.0m tok/s: 1\n"
            "1776142723.300 150/200 val_loss: 3.0 val_bpb: 1.2\n"
            "1776142723.400 200/200 train_loss: 3.0 train_time: 2.0m tok/s: 1\n"
            "1776142723.500 quantized_ttt_phased val_loss:2.9 val_bpb:1.1 eval_time:1ms\n")
    (tmp_path / "p.log").write_text(text)
    c = read_curve(tmp_path / "p.log")
    assert c.train == [(100, 60.0, 4.0), (200, 120.0, 3.0)] and c.val == [(0, 0.0, 3.5), (150, 90.0, 1.2)]
    assert c.finals == {"quantized_ttt_phased": 1.1} and c.iterations == 200 and not c.stopped_at_cap


PUBLIC_LOGS = ["track_10min_16mb/2026-04-13_VarLenAttn_PhasingTTT2000/logs/train0.txt",  # unix timestamps, minutes
               "track_10min_16mb/2026-03-18_LowerLR/train.log",  # the baseline's step:N/M ... ms form
               "track_10min_16mb/2026-04-01_Vocab4096_MLPMult4_WD085/train_seed42.log",  # N/M form, no step:
               "track_non_record_16mb/2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3/train.log"]  # 4 hours


@pytest.mark.parametrize("rel", PUBLIC_LOGS)
def test_public_challenge_logs(rel, tmp_path):
    path = PUBLIC / rel
    if not path.is_file():
        pytest.skip("../shared/data/public_records is not here")
    c = read_curve(path)
    assert len(c.train) >= 10 and len(c.val) >= 3 and c.iterations and c.finals
    times = [t for _, t, _ in c.train]
    assert times == sorted(times) and 500 < c.end_s < 15_000 and c.val[0][1] == 0.0
    total = int(re.search(r"^(?:\d+\.\d+ )?Total submission size [^:\n]+: (\d+) bytes", path.read_text(errors="replace"), re.M).group(1))
    assert f"{total:,}" in "\n".join(summary_lines(read_text(path), path.stem))
    assert draw([c], tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC


def test_missing_matplotlib_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    log = synthetic_log(tmp_path / "logs" / "r.txt", 2.5)
    assert try_draw([read_curve(log)], tmp_path / "x.png")[0] is None
    report_run(log)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "run summary r" and out[-1].startswith("curve: not drawn (matplotlib is not installed: pip install matplotlib")
    assert not (tmp_path / "logs" / "r.png").exists()


# ---------- records plot, records pack ----------

def records_plot(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "records", "plot", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_records_plot_overlays_runs_and_never_overwrites(tmp_path, monkeypatch, capsys):
    from records.__main__ import main

    a, b = synthetic_log(tmp_path / "a" / "train_seed1.log", 2.5), synthetic_log(tmp_path / "b" / "train_seed1.log", 2.4)
    ok = records_plot(str(a), str(b), "--out", "ab.png", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "run summary a/train_seed1" in ok.stdout and "run summary b/train_seed1" in ok.stdout  # same stems: folder names
    assert (tmp_path / "ab.png").read_bytes()[:8] == PNG_MAGIC
    bad = records_plot("nope.txt", cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.strip() == "error: nope.txt: no such log file"  # one line, no traceback
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "ab.png").read_bytes()
    with pytest.raises(SystemExit, match="ab.png exists; pass --out NEW.png, or --force"):
        main(["plot", str(a), "--out", "ab.png"])
    assert (tmp_path / "ab.png").read_bytes() == before
    assert main(["plot", str(a), "--out", "ab.png", "--force"]) == 0
    assert main(["plot", str(a)]) == 0 and (tmp_path / "a" / "train_seed1.png").is_file()  # default: LOG.png next to it
    (tmp_path / "notes.txt").write_text("hello\n")
    for args, message in [(["notes.txt"], "notes.txt has no `step:N/M train_loss:...` or `val_loss:...` lines: not a training log"),
                          ([str(a), "--out", "x.jpg"], "must end in .png, .pdf, .svg")]:
        with pytest.raises(SystemExit, match=re.escape(message)):
            main(["plot", *args])


def test_pack_curves_and_readme_section(tmp_path):
    logs = {seed: synthetic_log(tmp_path / f"train_seed{seed}.log", 2.5) for seed in (2, 1)}
    names = write_seed_curves(logs)
    assert names == {1: "train_seed1.png", 2: "train_seed2.png"}
    assert all((tmp_path / n).read_bytes()[:8] == PNG_MAGIC for n in names.values())
    section = curve_section(names)
    assert "![seed 1: train loss and val bpb against training time](train_seed1.png)" in section
    assert "[seed 2](train_seed2.png)" in section and curve_section({}) == ""


def test_parse_curve_ignores_lines_that_only_look_like_steps():
    c = parse_curve("  step:5/10 train_loss:1.0 train_time:5ms\nnote 5/10 val_loss:1 val_bpb:2\n", "x")
    assert c.train == [] and c.val == [] and c.steps is None
