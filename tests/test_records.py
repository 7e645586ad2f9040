"""records/: pack real tiny runs into a folder, verify it, and catch every kind of tampering."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from records.bundle import bundle_source, compress_bundle, pack_sources, unpack
from records.pack import PackError, collect, write_record
from records.verify import verify
from tests.tiny_data import build_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", TRAIN_SEQ_LEN="32", TRAIN_BATCH_TOKENS="512",
    VAL_BATCH_SIZE="4096", VOCAB_SIZE="512", ITERATIONS="3", MAX_WALLCLOCK_SECONDS="0", TRAIN_LOG_EVERY="1",
    WARMDOWN_ITERS="2", DEVICE="cpu",
)
SEEDS = (1, 2)  # two seeds: the fewest the t-test takes, to keep the default suite fast


def trainer_env(data, seed: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    env.update(TINY, DATA_PATH=str(data[0]), TOKENIZER_PATH=str(data[1]), SEED=str(seed), RUN_ID=f"s{seed}", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished tiny runs of the real trainer (in parallel), as a user makes them."""
    tmp = tmp_path_factory.mktemp("runs")
    data = build_tiny_dataset(tmp)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "train_gpt.py")], cwd=tmp, env=trainer_env(data, s, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for s in SEEDS]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    return data, [tmp / "logs" / f"s{s}.txt" for s in SEEDS]


@pytest.fixture(scope="module")
def record(runs, tmp_path_factory):
    data, logs = runs
    folder = write_record(collect(logs, ROOT), name="tiny", author="tester", github_id="tester", track="non-record",
                          date="2026-01-02", out_root=tmp_path_factory.mktemp("records"), copy_artifacts=True)
    return data, folder


def copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "track_non_record_16mb" / folder.name
    shutil.copytree(folder, dst)
    return dst


def status(checks) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in checks}


def test_pack_then_verify_passes(record):
    data, folder = record
    names = {p.name for p in folder.iterdir()}
    assert names == {"README.md", "submission.json", "requirements.txt", "train_gpt.py", "train_seed1.log", "train_seed2.log",
                     "train_seed1.png", "train_seed2.png", "seed1_final_model.int8.ptz", "seed2_final_model.int8.ptz",
                     "audit.json"}
    ignored = subprocess.run(["git", "check-ignore", "-q", "records/track_x/2026-01-02_tiny/seed1_final_model.int8.ptz"], cwd=ROOT)
    assert ignored.returncode == 1  # a committed record folder keeps its artifacts
    assert folder.parent.name == "track_non_record_16mb" and folder.name == "2026-01-02_tiny"
    checks = status(verify(folder, smoke_data=data))
    for name in ("files", "submission", "logs", "json-vs-logs", "size", "packed-file", "smoke"):
        assert checks[name][0] == "PASS", (name, checks[name])
    assert checks["significance"] == ("SKIP", "non-record submission: no claim against the leaderboard to test")  # compared nothing
    assert "format v2" in checks["packed-file"][1] and "run_env = the logs' knobs" in checks["json-vs-logs"][1]
    assert checks["audit"][0] in ("SKIP", "PASS"), checks["audit"]  # SKIP while eval.audit does not exist: never a silent pass
    assert "outside the repository" in checks["smoke"][1] and "no repository module loaded" in checks["smoke"][1]
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["track"] == "non-record-16mb" and sub["seeds"] == [1, 2] and sub["hardware"] == "1xCPU"
    assert sub["bytes_code"] == (folder / "train_gpt.py").stat().st_size < sub["bytes_code_sources"]
    assert "records.bundle" not in sub["packed_modules"] and "quant.int8" in sub["packed_modules"]
    # only what the default run imports: no sample builder, data export, TTT, GPTQ, container or non-baseline mixer
    assert not {"data.sample", "data.export", "eval.ttt", "quant.gptq", "quant.container", "arch.s5", "arch.hwnode"} & set(sub["packed_modules"])
    readme = (folder / "README.md").read_text()
    assert "Non-record submission" in readme and "trained on CPU" in readme and "python train_gpt.py" in readme
    assert "![seed 1: train loss and val bpb against training time](train_seed1.png)" in readme  # records/plot.py
    assert set((folder / "requirements.txt").read_text().split()) >= {"torch", "numpy", "sentencepiece"}


@pytest.mark.slow
def test_packed_file_reproduces_the_run_outside_the_repository(runs, record, tmp_path):
    """Same knobs and seed as a logged run: the packed file alone gives the same score and counts its own bytes."""
    data, logs = runs
    _, folder = record
    shutil.copyfile(folder / "train_gpt.py", tmp_path / "train_gpt.py")
    proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=tmp_path, env=trainer_env(data, 1), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exact = re.compile(r"final_int8_zlib_roundtrip_exact val_loss:[\d.]+ val_bpb:[\d.]+")
    assert exact.search(proc.stdout).group(0) == exact.findall(logs[0].read_text())[-1]
    code = int(re.search(r"Code size: (\d+) bytes", proc.stdout).group(1))
    assert code == (folder / "train_gpt.py").stat().st_size
    helped = subprocess.run([sys.executable, "train_gpt.py", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "MATMUL_DTYPE" in helped.stdout and "default" in helped.stdout, helped.stderr[-2000:]
    assert "ships without the knobs' descriptions" in helped.stdout  # help= texts are not packed (records/compact.py)
    bad = subprocess.run([sys.executable, "train_gpt.py"], cwd=tmp_path, env=dict(trainer_env(data, 1), SEED="x"),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == "error: SEED='x' is not a valid int", bad.stderr[-2000:]


@pytest.mark.slow
def test_edited_bpb_in_json_is_caught(record, tmp_path):
    folder = copy(record[1], tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    sub["seed_results"]["2"]["val_bpb"] -= 0.01
    (folder / "submission.json").write_text(json.dumps(sub))
    checks = status(verify(folder, smoke=False))
    assert checks["json-vs-logs"][0] == "FAIL" and "seed 2 val_bpb" in checks["json-vs-logs"][1]
    assert "never edit numbers by hand" in checks["json-vs-logs"][1]
    sub["seed_results"]["2"]["val_bpb"] += 0.01
    sub["val_bpb"] -= 0.01
    (folder / "submission.json").write_text(json.dumps(sub))
    checks = status(verify(folder, smoke=False))
    assert checks["json-vs-logs"][0] == "FAIL" and "is not the mean of the logs' scores" in checks["json-vs-logs"][1]


@pytest.mark.slow
def test_missing_or_unfinished_log_is_caught(record, tmp_path):
    folder = copy(record[1], tmp_path)
    (folder / "train_seed2.log").unlink()
    checks = status(verify(folder, smoke=False))
    assert checks["logs"][0] == "FAIL" and "log of seed 2 (train_seed2.log) is missing" in checks["logs"][1]
    text = (folder / "train_seed1.log").read_text()
    (folder / "train_seed1.log").write_text(re.sub(r"^final_\w+_exact.*\n", "", text, flags=re.M))
    checks = status(verify(folder, smoke=False))
    assert "train_seed1.log has no final `<eval>_exact" in checks["logs"][1]


def test_oversized_artifact_is_caught(record, tmp_path):
    folder = copy(record[1], tmp_path)
    art = folder / "seed1_final_model.int8.ptz"
    art.write_bytes(art.read_bytes() + b"\0" * (16_000_000 - art.stat().st_size))
    checks = status(verify(folder, smoke=False))
    assert checks["size"][0] == "FAIL"
    assert "over the 16,000,000 cap" in checks["size"][1] and "not this run's artifact" in checks["size"][1]


def repo_importing_copy(folder: Path, tmp_path: Path) -> Path:
    """A hand-edited train_gpt.py that takes our modules from the repository instead of from its bundle."""
    folder = copy(folder, tmp_path)
    bundle = unpack((folder / "train_gpt.py").read_bytes())
    text = bundle_source(bundle.sources, bundle.entry).replace("_sys.meta_path.insert(0, _packed)", f"_sys.path.insert(0, {str(ROOT)!r})")
    (folder / "train_gpt.py").write_bytes(compress_bundle(text))
    sub = json.loads((folder / "submission.json").read_text())
    sub["bytes_code"] = (folder / "train_gpt.py").stat().st_size
    (folder / "submission.json").write_text(json.dumps(sub))
    return folder


def test_packed_file_importing_our_packages_is_caught(record, tmp_path):
    checks = status(verify(repo_importing_copy(record[1], tmp_path), smoke=False))
    assert checks["packed-file"][0] == "FAIL" and "edited by hand" in checks["packed-file"][1]


@pytest.mark.slow
def test_smoke_run_sees_modules_loaded_from_the_repository(record, tmp_path):
    checks = status(verify(repo_importing_copy(record[1], tmp_path), smoke_data=record[0]))
    assert checks["smoke"][0] == "FAIL" and "from the repository instead of its own copies" in checks["smoke"][1]
    assert "arch.gpt" in checks["smoke"][1]


def test_embedded_import_of_an_unpacked_module_is_caught(record, tmp_path):
    folder = copy(record[1], tmp_path)
    bundle = unpack((folder / "train_gpt.py").read_bytes())
    sources = dict(bundle.sources)
    sources["train_gpt.py"] = sources["train_gpt.py"].replace("import numpy as np\n", "import numpy as np\nimport data.download\n", 1)
    (folder / "train_gpt.py").write_bytes(pack_sources(sources))
    checks = status(verify(folder, smoke=False))
    assert checks["packed-file"][0] == "FAIL"
    assert "train_gpt.py imports data.download at module level but it is not packed" in checks["packed-file"][1]
    assert "differ from the code train_seed1.log ran" in checks["packed-file"][1]


def test_pack_refuses_bad_evidence(runs, tmp_path):
    data, logs = runs
    with pytest.raises(PackError, match="seeds repeat"):
        collect([logs[0], logs[0]], ROOT)
    edited = tmp_path / "edited.txt"
    edited.write_text(logs[0].read_text().replace("def build_model(", "def build_model_renamed(", 1))
    with pytest.raises(PackError, match="train_gpt.py changed since the runs"):
        collect([edited], ROOT)
    cut = tmp_path / "cut.txt"
    cut.write_text(re.sub(r"^final_\w+_exact.*\n", "", logs[0].read_text(), flags=re.M))
    with pytest.raises(PackError, match="did not finish"):
        collect([cut], ROOT)
    with pytest.raises(PackError, match="did not run on CUDA"):
        write_record(collect(logs, ROOT), name="x", author="a", github_id="a", track="record", out_root=tmp_path)
    with pytest.raises(PackError, match="no spaces"):
        write_record(collect(logs, ROOT), name="has space", author="a", github_id="a", track="non-record", out_root=tmp_path)


@pytest.mark.slow
def test_significance_against_a_baseline(record, tmp_path):
    """The rule (>= 0.005 nats at p < 0.01) against a baseline folder; a record-track folder that fails it fails verify."""
    _, original = record
    sub = json.loads((original / "submission.json").read_text())
    bpbs = [r["val_bpb"] for r in sub["seed_results"].values()]
    spread = max(bpbs) - min(bpbs)

    def baseline(offset: float) -> Path:
        b = tmp_path / f"base{offset}" / "2026-01-01_base"
        b.mkdir(parents=True)
        (b / "submission.json").write_text(json.dumps({"name": "base", "val_bpb": sum(bpbs) / len(bpbs) + offset,
                                                       "seed_results": {str(i): {"val_bpb": x + offset} for i, x in enumerate(bpbs)}}))
        return b

    far, near = baseline(0.5 + 20 * spread), baseline(0.0)
    checks = status(verify(original, baseline=far, smoke=False))
    assert checks["significance"][0] == "PASS" and "Welch" in checks["significance"][1]
    checks = status(verify(original, baseline=near, smoke=False))
    assert checks["significance"][0] == "PASS" and "labelled non-record" in checks["significance"][1]
    folder = copy(original, tmp_path)
    sub["track"] = "10min_16mb"
    (folder / "submission.json").write_text(json.dumps(sub))
    checks = status(verify(folder, baseline=near, smoke=False))
    assert checks["significance"][0] == "FAIL" and "re-pack with --track non-record" in checks["significance"][1]
    checks = status(verify(folder, smoke=False))
    assert checks["significance"][0] == "FAIL" and "needs a baseline" in checks["significance"][1]


def test_trainer_code_size_is_the_packed_file(runs):
    """quant/size.py's hook: the logged Code size is exactly the size of the file `records pack` writes."""
    from records.bundle import pack_files
    from records.logs import parse_log

    log = parse_log(runs[1][0])
    assert log.snapshot_files[0] == "train_gpt.py" and "records/bundle.py" not in log.snapshot_files
    assert log.code_bytes == len(pack_files([ROOT / f for f in log.snapshot_files], ROOT))
    assert not {"data/sample.py", "data/export.py", "eval/ttt.py", "arch/wave.py"} & set(log.snapshot_files)  # not imported: not shipped


def test_verify_checks_run_env_against_the_logs(record, tmp_path):
    """submission.json's run_env must be the knobs the logs ran (their knobs_from_env lines), per-run knobs aside."""
    folder = copy(record[1], tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["run_env"] == {k: v for k, v in TINY.items()}  # every knob the runs set, SEED/RUN_ID/paths left out
    sub["run_env"]["MODEL_DIM"] = "64"
    (folder / "submission.json").write_text(json.dumps(sub))
    checks = status(verify(folder, smoke=False))
    assert checks["json-vs-logs"][0] == "FAIL" and "run_env differs from the knobs train_seed1.log ran" in checks["json-vs-logs"][1]
    assert "MODEL_DIM: json '64' vs log '32'" in checks["json-vs-logs"][1]
    del sub["run_env"]
    (folder / "submission.json").write_text(json.dumps(sub))
    assert "has no run_env" in status(verify(folder, smoke=False))["json-vs-logs"][1]


def test_pack_refuses_a_non_finite_score(runs, tmp_path):
    _, logs = runs
    broken = tmp_path / "nan.txt"
    broken.write_text(re.sub(r"^final_int8_zlib_roundtrip_exact val_loss:\S+ val_bpb:\S+$",
                             "final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan", logs[0].read_text(), flags=re.M))
    with pytest.raises(PackError, match=r"nan.txt: `final_int8_zlib_roundtrip_exact` scored val_bpb nan \(not a number\) in format int8\+zlib"):
        collect([broken], ROOT)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "records", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_bad_inputs_get_one_line_and_a_non_zero_exit(tmp_path):
    for args, expected in [
        (["pack", "--name", "x", "--author", "y", "--seeds", "1,two"], "--seeds '1,two': give comma-separated integers"),
        (["pack", "--name", "x", "--author", "y", str(tmp_path / "missing.txt")], "missing.txt: no such log"),
        (["pack", "--name", "x", "--author", "y"], "no logs given"),
        (["verify", str(tmp_path / "nope")], "is not a folder"),
        (["verify", str(tmp_path), "--baseline", str(tmp_path / "typo")], "--baseline"),
        (["unpack", str(ROOT / "README.md"), str(tmp_path / "out")], "not a train_gpt.py made by `python -m records pack`"),
        (["verify", str(tmp_path), "--smoke-data", str(tmp_path / "d"), "--smoke-tokenizer", str(tmp_path / "t.model")],
         "must be a shard folder"),
    ]:
        proc = cli(*args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout, (args, proc.stderr)
        assert expected in proc.stderr + proc.stdout, (args, proc.stderr, proc.stdout)


def test_optional_modules_cover_every_lazy_project_import():
    """Every project module some code path imports lazily either ships with the knobs that need it (train_gpt's
    optional_modules) or never ships (builders, tools): nothing a run can reach is left out of its record silently."""
    sys.path.insert(0, str(ROOT))
    from arch.mlp import MIXER_MODULES, mixer_modules
    from records.bundle import _never_shipped, bundle_imports, read_sources, shipped_sources
    from train_gpt import Hyperparameters, optional_modules

    everything_on = {"TTT_ENABLED": "1", "EMA_DECAY": "0.5", "GPTQ": "1", "EMBED_OPTIMIZER": "coupled_adam",
                     "EXPORT_SCHEMES": "int8+zlib,int6+zstd", "QAT_SCHEME": "int6", "QUANT_FLOAT_MAX_NUMEL": "256"}
    args = Hyperparameters(env=everything_on, device_type="cpu")
    modules = optional_modules(args) + mixer_modules(*MIXER_MODULES)
    assert {"eval.ttt", "optim.ema", "quant.gptq", "optim.coupled_adam", "quant.container", "quant.qat"} <= set(modules)
    assert optional_modules(Hyperparameters(env={}, device_type="cpu")) == []
    shipped = read_sources(shipped_sources(ROOT, ROOT / "train_gpt.py", modules), ROOT)
    names = {rel[:-3].replace("/", ".").removesuffix(".__init__") for rel in shipped}
    text = shipped["train_gpt.py"]
    lazy = {imp.name for _, imp in bundle_imports(shipped, "train_gpt.py") if imp.lazy and not imp.from_item}
    lazy |= set(re.findall(r'lazy\("([\w.]+)"', text))
    ours = {m for m in lazy if (ROOT / m.replace(".", "/")).with_suffix(".py").is_file() or (ROOT / m.replace(".", "/")).is_dir()}
    assert ours and all(m in names or _never_shipped(m) for m in ours), sorted(m for m in ours if m not in names and not _never_shipped(m))


@pytest.mark.slow
def test_a_run_with_optional_parts_counts_and_ships_them(runs, tmp_path):
    """TTT, EMA, Coupled Adam, QAT and a zstd container export on: the run logs the modules they need, counts them, and
    its packed file runs alone."""
    from records.bundle import pack_files
    from records.logs import parse_log

    data, _ = runs
    extra = dict(TTT_ENABLED="1", TTT_CHUNK_TOKENS="1024", TTT_EPOCHS="1", EMA_DECAY="0.9", EMBED_OPTIMIZER="coupled_adam",
                 EVAL_STRIDE="16", QAT_SCHEME="int6", QAT_START_LR_SCALE="2", QUANT_FLOAT_MAX_NUMEL="256",
                 EXPORT_SCHEMES="int8+zlib,int6+zstd", ZSTD_LEVEL="3")
    proc = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], cwd=tmp_path, env=trainer_env(data, 3, PYTHONPATH=str(ROOT), **extra),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = parse_log(tmp_path / "logs" / "s3.txt")
    assert {"eval/ttt.py", "optim/ema.py", "optim/coupled_adam.py", "quant/qat.py", "quant/container.py",
            "quant/compress.py"} <= set(log.snapshot_files) and log.score_name == "final_ttt_exact"
    packed = pack_files([ROOT / f for f in log.snapshot_files], ROOT)
    assert log.code_bytes == len(packed)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "train_gpt.py").write_bytes(packed)
    again = subprocess.run([sys.executable, "train_gpt.py"], cwd=alone, env=trainer_env(data, 3, **extra), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Code size: {len(packed)} bytes" in again.stdout and "final_ttt_exact" in again.stdout
    assert "qat:on step:0" in again.stdout and "final_int6_zstd_roundtrip_exact" in again.stdout
