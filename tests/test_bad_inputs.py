"""Careless inputs, one test per family: each gets a non-zero exit (or a named error), one message naming the input
and the fix, no traceback, and no file the user made is changed. Most run in-process on the function a CLI calls
first; a few subprocess runs show the trainer end to end (tiny shapes, a few steps)."""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny_data import TINY_VOCAB, build_tiny_dataset, english_docs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
import train_gpt  # noqa: E402

TINY = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", TRAIN_SEQ_LEN="32", TRAIN_BATCH_TOKENS="512",
            VAL_BATCH_SIZE="4096", VOCAB_SIZE=str(TINY_VOCAB), ITERATIONS="2", MAX_WALLCLOCK_SECONDS="0",
            TRAIN_LOG_EVERY="1", WARMDOWN_ITERS="1", DEVICE="cpu", EVAL_STRIDE="0")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory):
    """Another SentencePiece BPE of the tiny vocabulary size, trained on other text: the wrong tokenizer."""
    from data.export import train_sentencepiece

    docs = english_docs(n_docs=800, seed=7)[400:]
    return train_sentencepiece(docs, TINY_VOCAB, tmp_path_factory.mktemp("other") / "other")


def hashes(*paths: Path) -> dict:
    out = {}
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None
    return out


def refused(fn, *expected: str) -> str:
    """fn() must stop with a non-zero SystemExit whose one-line message holds every `expected` piece."""
    with pytest.raises(SystemExit) as info:
        fn()
    code = info.value.code
    msg = code if isinstance(code, str) else ""
    assert code not in (0, None), f"exit status {code!r}"
    for piece in expected:
        assert piece in msg, msg
    assert "Traceback" not in msg and len(msg.strip().splitlines()) == 1, msg
    return msg


def trainer(cwd: Path, data, extra=None, args=(), timeout=300, popen=False):
    data_path, tok = data
    env = {k: v for k, v in os.environ.items() if k not in train_gpt.KNOB_BY_NAME and k not in ("RANK", "WORLD_SIZE")}
    env.update(TINY, DATA_PATH=str(data_path), TOKENIZER_PATH=str(tok), RUN_ID="r", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.update(extra or {})
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "train_gpt.py"), *args]
    if popen:  # SIGINT as from a terminal, even when the tests run in a background job (which ignores it)
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def failed_cleanly(proc, *expected: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, None), out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    for piece in expected:
        assert piece in last, last
    return last


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------- knobs: misspelt names, arguments, values, combinations ----------

@pytest.mark.parametrize("name,guess", [("MODLE_DIM", "MODEL_DIM"), ("EVAL_STRIDES", "EVAL_STRIDE"), ("TTT_EPOCH", "TTT_EPOCHS"),
                                        ("S5_STATE", "S5_STATE_DIM"), ("HWNODE_ORDERS", "HWNODE_ORDER"),
                                        ("QAT_SCHEM", "QAT_SCHEME"), ("model_dim", "MODEL_DIM"), ("GPTQ_CALIB", "GPTQ_CALIB_TOKENS"),
                                        ("TTT_FOO", "TTT_"), ("NUM_LAYER", "NUM_LAYERS"), ("MAX_WALLCLOCK_SECOND", "MAX_WALLCLOCK_SECONDS")])
def test_misspelt_or_knob_like_env_name_is_refused_with_a_suggestion(name, guess):
    with pytest.raises(train_gpt.KnobError, match=f"{name} is not a knob.*did you mean {guess}"):
        train_gpt.Hyperparameters(env={name: "3"}, device_type="cpu")


NORMAL_ENV = {
    "PATH": "/usr/bin", "HOME": "/root", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RANK": "0", "WORLD_SIZE": "1",
    "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1", "ROLE_RANK": "0",
    "ROLE_NAME": "default", "ROLE_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
    "TORCHELASTIC_RUN_ID": "x", "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "0",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "TORCHINDUCTOR_CACHE_DIR": "/tmp", "CUDA_VISIBLE_DEVICES": "0",
    "CUDA_HOME": "/usr/local/cuda", "NCCL_DEBUG": "WARN", "NCCL_IB_DISABLE": "1", "TRITON_CACHE_DIR": "/tmp",
    "PYTHONPATH": ".", "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "PARAMETER_GOLF_CACHE": "/tmp",
    "MATCHED_FINEWEB_REPO_ID": "a/b", "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX": "datasets", "HF_HOME": "/tmp",
    "HF_HUB_OFFLINE": "1", "ZSTD_CLEVEL": "19", "ZSTD_NBTHREADS": "2", "WANDB_MODE": "offline", "SLURM_JOB_ID": "1",
    "TOKENIZERS_PARALLELISM": "false", "KMP_AFFINITY": "none", "MAX_JOBS": "4", "DATA_DIR": "/data", "MODEL_DIR": "/m",
    "LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "xterm", "SHELL": "/bin/bash", "USER": "me", "PWD": "/", "DEBUG": "1",
    "VIRTUAL_ENV": "/venv", "CONDA_PREFIX": "/conda", "http_proxy": "", "no_proxy": "", "NVIDIA_VISIBLE_DEVICES": "all",
}


def test_the_normal_environment_is_not_taken_for_a_misspelt_knob():
    env = {**os.environ, **NORMAL_ENV}
    env = {k: v for k, v in env.items() if k not in train_gpt.KNOB_BY_NAME}
    assert train_gpt.unknown_env_knobs(env) == []
    train_gpt.Hyperparameters(env=env, device_type="cpu")


@pytest.mark.parametrize("argv,fix", [(["MODEL_DIM=32"], "`MODEL_DIM=32 python train_gpt.py`"),
                                      (["--model-dim", "32"], "`MODEL_DIM=32 python train_gpt.py`"),
                                      (["--modle_dim=32"], "`MODEL_DIM=32 python train_gpt.py`"),
                                      (["run.txt"], "python train_gpt.py --help")])
def test_command_line_arguments_are_refused(argv, fix):
    problem = train_gpt.argv_problem(argv)
    assert problem and "environment variable" in problem and fix in problem
    assert train_gpt.argv_problem(["--local-rank=0"]) is None and train_gpt.argv_problem([]) is None


FLOAT_KNOBS = [k.name for k in train_gpt.KNOBS if k.type is float]


@pytest.mark.parametrize("name", FLOAT_KNOBS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_knob_refuses_non_finite_values(name, value):
    with pytest.raises(train_gpt.KnobError, match=f"{name}='{value}' is not a finite number"):
        train_gpt.Hyperparameters(env={name: value}, device_type="cpu")


@pytest.mark.parametrize("env,match", [
    ({"ROPE_BASE": "0"}, "ROPE_BASE=0.0 must be > 0"), ({"BETA2": "1.5"}, "BETA2=1.5 must be in"),
    ({"ADAM_EPS": "0"}, "ADAM_EPS=0.0 must be > 0"), ({"TIED_EMBED_INIT_STD": "-1"}, "TIED_EMBED_INIT_STD=-1.0 must be >= 0"),
    ({"MUON_MOMENTUM": "1"}, "MUON_MOMENTUM=1.0 must be in"), ({"SEED": "-1"}, "SEED=-1 must be in"),
    ({"MATRIX_LR": "-0.1"}, "MATRIX_LR=-0.1 must be >= 0"), ({"COUPLED_ADAM_SCALE": "0"}, "COUPLED_ADAM_SCALE=0.0 must be > 0"),
    ({"GPTQ_RESERVE_SECONDS": "-1"}, "GPTQ_RESERVE_SECONDS=-1.0 must be >= 0"), ({"VOCAB_SIZE": "70000"}, "VOCAB_SIZE=70000"),
    ({"MODEL_DIM": ""}, "MODEL_DIM=''"), ({"DATA_PATH": ""}, "DATA_PATH is set but empty"),
    ({"RUN_ID": "../../escaped"}, "RUN_ID='../../escaped' must be a plain name"), ({"RUN_ID": "a/b"}, "no '/'"),
])
def test_out_of_range_knob_values_are_named(env, match):
    with pytest.raises(train_gpt.KnobError, match=match.replace("(", r"\(").replace(".", r"\.")):
        train_gpt.Hyperparameters(env=env, device_type="cpu")


@pytest.mark.parametrize("env,match", [
    ({"MODEL_DIM": "32", "NUM_HEADS": "3"}, "MODEL_DIM=32 must be divisible by NUM_HEADS=3"),
    ({"MODEL_DIM": "32", "NUM_HEADS": "4", "NUM_KV_HEADS": "3"}, "NUM_HEADS=4 must be divisible by NUM_KV_HEADS=3"),
    ({"MODEL_DIM": "36", "NUM_HEADS": "4", "NUM_KV_HEADS": "2"}, "head dim MODEL_DIM/NUM_HEADS=9 must be even"),
    ({"MLP_MULT": "0.001"}, "MLP_MULT=0.001 gives a hidden width of 0"),
    ({"TRAIN_BATCH_TOKENS": "500", "TRAIN_SEQ_LEN": "32"}, "TRAIN_BATCH_TOKENS=500 must split"),
    ({"WORLD_SIZE": "3"}, "WORLD_SIZE=3 must divide 8"), ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
    ({**TINY, "QAT_SCHEME": "int6"}, "QAT_SCHEME='int6' quantizes none"),
])
def test_knob_combinations_are_checked_in_hyperparameters(env, match):
    with pytest.raises(train_gpt.KnobError, match=match.replace("(", r"\(").replace(".", r"\.")):
        train_gpt.Hyperparameters(env=env, device_type="cpu")


def test_a_bad_knob_stops_the_trainer_before_it_writes_anything(tmp_path, tiny):
    proc = trainer(tmp_path, tiny, {"NUM_HEADS": "3"})
    failed_cleanly(proc, "MODEL_DIM=32 must be divisible by NUM_HEADS=3")
    assert list(tmp_path.iterdir()) == []  # no logs/, no artifacts/: the RUN_ID is still free
    proc = trainer(tmp_path, tiny, args=["MODEL_DIM=64"])
    failed_cleanly(proc, "MODEL_DIM=64 python train_gpt.py")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env", [{}, {"NUM_LAYERS": "1"}, {"NUM_LAYERS": "7", "MLP_KIND": "swiglu", "MLP_KIND_LAYERS": "0,2-3"},
                                 {"MLP_KIND": "hwnode", "NUM_LAYERS": "5"}, {"MLP_KIND": "wave", "MLP_KIND_LAYERS": "1"},
                                 {"MLP_KIND": "s5", "NUM_LAYERS": "3", "TIE_EMBEDDINGS": "0"}])
def test_the_model_size_is_known_before_building_it(env):
    """Hyperparameters checks and counts the model on two meta-device blocks, so any depth costs the same."""
    args = train_gpt.Hyperparameters(env=env, device_type="cpu")
    with torch.device("meta"):
        assert args.model_params == sum(p.numel() for p in train_gpt.build_model(args).parameters())
    t0 = time.perf_counter()
    deep = train_gpt.Hyperparameters(env={**env, "NUM_LAYERS": "100000", "MLP_KIND_LAYERS": "all"}, device_type="cpu")
    assert time.perf_counter() - t0 < 5 and deep.model_params > 100_000 * 10_000


def test_a_model_too_big_for_the_machine_is_refused_by_size(tmp_path, tiny):
    proc = trainer(tmp_path, tiny, {"MODEL_DIM": "1000000", "NUM_HEADS": "2"})
    failed_cleanly(proc, "MODEL_DIM=1000000", "parameters", "make it smaller")


# ---------- data: shard names, every train shard, the manifest, the tokenizer ----------

def test_a_stray_file_matching_the_val_glob_is_refused_by_name(tmp_path, tiny):
    from data.shards import ShardFormatError, list_shards

    data = copy_data(tiny[0], tmp_path / "data")
    shutil.copy(data / "fineweb_train_000000.bin", data / "fineweb_val_000000_old.bin")
    with pytest.raises(ShardFormatError, match="fineweb_val_000000_old.bin, not a canonical shard name.*move it out"):
        list_shards(str(data / "fineweb_val_*.bin"))
    assert len(list_shards(str(data / "fineweb_*_000000*.bin"))) == 3  # any other glob lists what it matches


def test_a_gap_in_the_val_shards_is_refused(tmp_path, tiny):
    from data.checks import DataError, split_shards

    data = copy_data(tiny[0], tmp_path / "data")
    shutil.copy(data / "fineweb_val_000000.bin", data / "fineweb_val_000002.bin")
    with pytest.raises(DataError, match="fineweb_val_000001.bin is missing"):
        split_shards(data, "val")


@pytest.mark.parametrize("damage,match", [("truncated", "size mismatch"), ("magic", "bad shard magic"),
                                          ("oov", "token id 4000 >= VOCAB_SIZE=512"), ("folder", "it is a folder")])
def test_every_train_shard_is_checked_before_step_0(tmp_path, tiny, damage, match):
    from data.checks import check_train_shards
    from data.shards import ShardFormatError, list_shards

    data = copy_data(tiny[0], tmp_path / "data")
    second = data / "fineweb_train_000001.bin"
    raw = bytearray(second.read_bytes())
    if damage == "truncated":
        second.write_bytes(raw[: len(raw) // 2])
    elif damage == "magic":
        second.write_bytes(b"\0\0\0\0" + raw[4:])
    elif damage == "oov":
        ids = np.frombuffer(bytes(raw[1024:]), dtype="<u2").copy()
        ids[-5] = 4000  # one id in the last block: the sample of ~1M ids per shard includes each shard's ends
        second.write_bytes(bytes(raw[:1024]) + ids.tobytes())
    else:
        second.unlink()
        second.mkdir()
    with pytest.raises(ShardFormatError, match=f"fineweb_train_000001.bin.*{match}"):
        check_train_shards(list_shards(str(data / "fineweb_train_*.bin")), TINY_VOCAB)


def test_the_loader_names_a_shard_with_out_of_vocab_ids(tmp_path, tiny):
    from data.loader import TokenStream
    from data.export import write_shard
    from data.shards import ShardFormatError, read_shard

    data = copy_data(tiny[0], tmp_path / "data")
    ids = read_shard(data / "fineweb_train_000001.bin").astype(np.int64)
    ids[len(ids) // 2] = 9000  # between the sampled blocks would not matter here: the loader checks whole shards
    write_shard(data / "fineweb_train_000001.bin", ids)
    stream = TokenStream(str(data / "fineweb_train_*.bin"), vocab_size=TINY_VOCAB)
    with pytest.raises(ShardFormatError, match="fineweb_train_000001.bin: holds token id 9000 >= VOCAB_SIZE=512"):
        stream.take(10 ** 6)


def test_a_bad_second_shard_stops_the_trainer_before_step_0(tmp_path, tiny):
    data = copy_data(tiny[0], tmp_path / "data")
    p = data / "fineweb_train_000001.bin"
    p.write_bytes(p.read_bytes()[:-100])
    proc = trainer(tmp_path / "run", (data, tiny[1]), {"ITERATIONS": "500"})
    failed_cleanly(proc, "fineweb_train_000001.bin", "size mismatch")
    assert "step:" not in proc.stdout and not (tmp_path / "run" / "logs").exists()


@pytest.mark.parametrize("change,match", [("extra_val", "lists 1 val shards but DATA_PATH holds 2"),
                                          ("replaced_val", "lists 4981 val tokens but the val shards hold 6704"),
                                          ("replaced_train", "every train shard but the last 30000 tokens"),
                                          ("vocab", "VOCAB_SIZE=1024 but")])
def test_a_manifest_that_disagrees_with_the_shards_is_an_error(tmp_path, tiny, change, match):
    from data.checks import DataError, check_manifest, find_manifest, load_tokenizer, split_shards
    from data.shards import read_header

    data = copy_data(tiny[0], tmp_path / "data")
    vocab = TINY_VOCAB
    if change == "extra_val":
        shutil.copy(data / "fineweb_train_000001.bin", data / "fineweb_val_000001.bin")
    elif change == "replaced_val":
        shutil.copy(data / "fineweb_train_000001.bin", data / "fineweb_val_000000.bin")
    elif change == "replaced_train":
        shutil.copy(data / "fineweb_train_000001.bin", data / "fineweb_train_000000.bin")
    else:
        vocab = 1024
    _, sha = load_tokenizer(tiny[1])
    counts = {s: {p: read_header(p) for p in split_shards(data, s)} for s in ("val", "train")}
    with pytest.raises(DataError, match=match):
        check_manifest(find_manifest(data), counts["val"], counts["train"], vocab, tiny[1], sha)


def test_export_records_the_tokenizer_fingerprint_and_the_trainer_checks_it(tmp_path, tiny, other_tokenizer):
    from data.checks import DataError, check_manifest, find_manifest, load_tokenizer, split_shards
    from data.shards import read_header

    manifest = json.loads((tiny[0] / "manifest.json").read_text())
    assert manifest["tokenizers"][0]["sha256"] == hashlib.sha256(Path(tiny[1]).read_bytes()).hexdigest()
    counts = {s: {p: read_header(p) for p in split_shards(tiny[0], s)} for s in ("val", "train")}
    m = find_manifest(tiny[0])
    assert "sha256" in check_manifest(m, counts["val"], counts["train"], TINY_VOCAB, tiny[1], load_tokenizer(tiny[1])[1])
    with pytest.raises(DataError, match="is not the tokenizer that made these shards.*sha256"):
        check_manifest(m, counts["val"], counts["train"], TINY_VOCAB, other_tokenizer, load_tokenizer(other_tokenizer)[1])
    del m.tokenizer["sha256"]  # an older export: the manifest's own tokenizer file is compared instead
    with pytest.raises(DataError, match="a different file; set TOKENIZER_PATH="):
        check_manifest(m, counts["val"], counts["train"], TINY_VOCAB, other_tokenizer, load_tokenizer(other_tokenizer)[1])


def test_the_published_layout_manifest_is_found_and_checked(tmp_path, tiny, other_tokenizer):
    """data.download's layout: ROOT/manifest.json, ROOT/datasets/<name>/ shards, ROOT/tokenizers/<model>."""
    from data.checks import DataError, check_manifest, find_manifest, load_tokenizer, split_shards
    from data.shards import read_header

    root = tmp_path / "data"
    ds = copy_data(tiny[0], root / "datasets" / "fineweb10B_sp512")
    (ds / "manifest.json").unlink()
    (root / "tokenizers").mkdir()
    shutil.copy(tiny[1], root / "tokenizers" / "fineweb_512_bpe.model")
    own = json.loads((tiny[0] / "manifest.json").read_text())
    entry = {**own["datasets"][0], "name": "fineweb10B_sp512", "path": "datasets/fineweb10B_sp512"}
    tok = {k: v for k, v in own["tokenizers"][0].items() if k != "sha256"} | {"model_path": "tokenizers/fineweb_512_bpe.model"}
    (root / "manifest.json").write_text(json.dumps({"shard_size": own["shard_size"], "datasets": [entry], "tokenizers": [tok]}))
    m = find_manifest(ds)
    assert m is not None and m.path == root / "manifest.json"
    counts = {s: {p: read_header(p) for p in split_shards(ds, s)} for s in ("val", "train")}
    assert check_manifest(m, counts["val"], counts["train"], TINY_VOCAB, tiny[1], load_tokenizer(tiny[1])[1])
    with pytest.raises(DataError, match="fineweb_512_bpe.model, a different file"):
        check_manifest(m, counts["val"], counts["train"], TINY_VOCAB, other_tokenizer, load_tokenizer(other_tokenizer)[1])


def wikitext_docs(n: int = 300) -> list[str]:
    text = (SHARED / "text" / "wikitext2_valid.txt").read_text(encoding="utf-8")
    return [d for d in text.split("\n = ") if d.strip()][:n]


def test_roundtrip_probe_passes_honest_pairs_and_catches_the_wrong_tokenizer(tmp_path, tiny, other_tokenizer):
    """The probe's false-positive rate on every honest pair at hand (tiny data; WikiText exported here with the two
    shared challenge tokenizers, one of them without byte fallback) is 0: all runs re-encode. Wrong pairs stay far
    below the threshold."""
    from data.checks import PROBE_MIN_MATCH, load_tokenizer, roundtrip_probe
    from data.export import export_dataset
    from data.shards import load_tokens

    pairs = {"tiny": (tiny[0], tiny[1])}
    if SHARED.is_dir():
        for name in ("fineweb_1024_bpe.model", "fineweb_8192_bpe.model"):
            out = tmp_path / name
            export_dataset(wikitext_docs(), SHARED / "tokenizers" / name, out, val_docs=60)
            pairs[name] = (out, SHARED / "tokenizers" / name)
    tokenizers = {name: load_tokenizer(tok)[0] for name, (_, tok) in pairs.items()} | {"other": load_tokenizer(other_tokenizer)[0]}
    for data_name, (data, _) in pairs.items():
        val = load_tokens(str(data / "fineweb_val_*.bin"))
        for tok_name, sp in tokenizers.items():
            if int(val.max()) >= sp.vocab_size():
                continue  # refused earlier by the id range check
            matched, checked = roundtrip_probe(sp, val)
            assert checked >= 30, (data_name, tok_name)
            if tok_name == data_name:
                assert matched == checked, (data_name, matched, checked)
            else:
                assert matched < 0.25 * checked < PROBE_MIN_MATCH * checked, (data_name, tok_name, matched, checked)


def test_the_wrong_tokenizer_stops_the_trainer(tmp_path, tiny, other_tokenizer):
    data = copy_data(tiny[0], tmp_path / "data")
    failed_cleanly(trainer(tmp_path / "a", (data, other_tokenizer)), "not the tokenizer that made these shards")
    (data / "manifest.json").unlink()  # nothing names the tokenizer: the roundtrip probe decides
    failed_cleanly(trainer(tmp_path / "b", (data, other_tokenizer)), "did not make these shards", "val text runs re-encode")


def test_unusable_tokenizer_files_are_named(tmp_path, tiny, monkeypatch):
    import sentencepiece as spm

    from data.checks import DataError, load_tokenizer

    (tmp_path / "text.model").write_text("not a model\n")
    (tmp_path / "dir.model").mkdir()
    with pytest.raises(DataError, match="text.model is not a SentencePiece model"):
        load_tokenizer(tmp_path / "text.model")
    with pytest.raises(DataError, match="dir.model is not an existing SentencePiece .model file"):
        load_tokenizer(tmp_path / "dir.model")
    words = "the cat sat on a mat and then the dog ran to the river".split()
    rng = random.Random(1)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["".join(rng.choice(words) for _ in range(30)) for _ in range(300)]),
                                   model_prefix=str(tmp_path / "nospace"), vocab_size=400, model_type="bpe", bos_id=1,
                                   eos_id=2, pad_id=0, unk_id=3, byte_fallback=True, add_dummy_prefix=False, minloglevel=2)
    with pytest.raises(DataError, match="nospace.model: tokenizer check failed: no standalone"):
        load_tokenizer(tmp_path / "nospace.model")
    tok = tmp_path / "locked.model"
    shutil.copy(tiny[1], tok)
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied"))
                        if self == tok else real_read(self))
    with pytest.raises(DataError, match="locked.model cannot be read \\(Permission denied\\); check its permissions"):
        load_tokenizer(tok)


def test_an_unreadable_shard_is_named(tmp_path, tiny, monkeypatch):
    from data.shards import ShardFormatError, read_header

    shard = copy_data(tiny[0], tmp_path / "data") / "fineweb_val_000000.bin"
    if os.geteuid() != 0:
        shard.chmod(0)
    else:  # root reads anything: stand in for the permission bit
        def no_read(path, *a, **k):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(np, "fromfile", no_read)
    with pytest.raises(ShardFormatError, match="fineweb_val_000000.bin: cannot be read \\(Permission denied\\)"):
        read_header(shard)


# ---------- the run's files: OUTPUT_DIR, RUN_ID reuse, Ctrl-C, full disk, NaN scores ----------

def test_output_dir_that_is_a_file_is_refused_and_left_alone(tmp_path):
    from data.writes import WouldOverwrite, claim_log

    (tmp_path / "notes.txt").write_text("mine\n")
    before = hashes(tmp_path / "notes.txt")
    with pytest.raises(WouldOverwrite, match="OUTPUT_DIR=.*notes.txt is a file"):
        claim_log(tmp_path / "logs" / "r.txt", tmp_path / "notes.txt")
    assert hashes(tmp_path / "notes.txt") == before and not (tmp_path / "logs").exists()


def test_a_run_id_whose_run_wrote_no_artifact_can_be_used_again(tmp_path):
    from data.writes import WouldOverwrite, claim_log

    log, out = tmp_path / "logs" / "r.txt", tmp_path / "artifacts" / "r"
    log.parent.mkdir()
    log.write_text("an interrupted run\n")
    lock, note = claim_log(log, out)
    assert "kept as" in note and (tmp_path / "logs" / "r.incomplete-1.txt").read_text() == "an interrupted run\n"
    with pytest.raises(WouldOverwrite, match="still running with this RUN_ID"):  # the new run holds its log's lock
        claim_log(log, out)
    lock.close()
    (out / "final_model.pt").write_bytes(b"weights")
    with pytest.raises(WouldOverwrite, match="already exists and its run wrote"):
        claim_log(log, out)
    assert (out / "final_model.pt").read_bytes() == b"weights"


def test_ctrl_c_ends_with_one_line_and_frees_the_run_id(tmp_path, tiny):
    proc = trainer(tmp_path, tiny, {"ITERATIONS": "100000"}, popen=True)
    try:
        deadline, seen = time.time() + 120, ""
        while time.time() < deadline and "step:2/" not in seen:
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # whatever happened, no trainer is left running
    assert proc.returncode == 130 and "Traceback" not in out + err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("train_gpt.py: interrupted (Ctrl-C)")
    assert "RUN_ID=r can be used again" in err
    again = trainer(tmp_path, tiny, {"ITERATIONS": "1"})
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "logs" / "r.incomplete-1.txt").is_file() and "kept as" in again.stdout


class FullDisk(OSError):
    pass


def filling_file(limit: int):
    """An open() stand-in whose files raise ENOSPC after `limit` bytes, like a disk that fills up mid-write."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *a, **k):
        f = real_fdopen(fd, mode, *a, **k)
        written = [0]
        real_write = f.write

        def write(b):
            written[0] += len(b)
            if written[0] > limit:
                raise FullDisk(errno.ENOSPC, "No space left on device")
            return real_write(b)
        f.write = write
        return f
    return fdopen


def test_an_export_on_a_full_disk_leaves_no_truncated_file(tmp_path, monkeypatch):
    from data.writes import atomic_write
    from quant.export import write_artifact
    from quant.schemes import parse_export_specs, parse_mix, DEFAULT_MIX

    sd = {"w": torch.randn(300, 300), "b": torch.randn(300)}
    old = tmp_path / "final_model.pt"
    old.write_bytes(b"the previous model")
    monkeypatch.setattr(os, "fdopen", filling_file(10_000))
    with pytest.raises(OSError, match="writing .*final_model.pt failed \\(No space left on device\\)"):
        atomic_write(old, train_gpt.state_dict_bytes(sd))
    with pytest.raises(OSError, match="writing .*final_model.int8.ptz failed"):
        write_artifact(sd, parse_export_specs("int8+zlib")[0], tmp_path, parse_mix(DEFAULT_MIX), ())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final_model.pt"]  # no temp file, no partial artifact
    assert old.read_bytes() == b"the previous model"


@pytest.mark.parametrize("label", ["int8+zlib", "int6+zlib"])
def test_a_weight_beyond_fp16_range_is_refused_at_export_naming_the_format(tmp_path, label):
    from quant.export import ExportError, write_artifact
    from quant.schemes import DEFAULT_MIX, parse_export_specs, parse_mix

    sd = {"tok_emb.weight": torch.randn(64, 32) * 1e5, "blocks.0.w": torch.randn(256, 256)}
    with pytest.raises(ExportError, match=re.escape(f"export {label}: tensor tok_emb.weight holds values up to") + ".*beyond float16"):
        write_artifact(sd, parse_export_specs(label)[0], tmp_path, parse_mix(DEFAULT_MIX), ())
    assert list(tmp_path.iterdir()) == []


def test_a_nan_score_is_an_error_naming_the_format(tmp_path, tiny):
    refused(lambda: train_gpt.require_finite(float("nan"), "the int8+zlib roundtrip"), "the int8+zlib roundtrip scored val_bpb=nan")
    proc = trainer(tmp_path, tiny, {"TIED_EMBED_INIT_STD": "100000"})
    failed_cleanly(proc, "export int8+zlib: tensor tok_emb.weight", "float16")
    assert "roundtrip_exact" not in proc.stdout and (tmp_path / "artifacts" / "r" / "final_model.pt").is_file()


# ---------- sweep ----------

def sweep_main(*argv):
    from sweep.__main__ import main

    return lambda: main([str(a) for a in argv])


def test_sweep_report_never_replaces_the_users_files(tmp_path):
    (tmp_path / "results.csv").write_text("my,own\n1,2\n")
    (tmp_path / "recommendation.txt").write_text("use 9x512\n")
    (tmp_path / "results.jsonl").write_text("")
    before = hashes(tmp_path)
    refused(sweep_main("--out", tmp_path, "--report-only", "--no-plots"), "results.csv", "was not written by python -m sweep")
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("setup,match", [("file", "is a file"), ("missing", "holds no sweep results"),
                                         ("empty_record", "line 1 is not a sweep run record"),
                                         ("broken_line", "line 1 is not JSON")])
def test_sweep_folder_problems_are_named(tmp_path, setup, match):
    out = tmp_path / "out"
    if setup == "file":
        out.write_text("x")
    elif setup == "empty_record":
        out.mkdir()
        (out / "results.jsonl").write_text("{}\n{}\n")
    elif setup == "broken_line":
        out.mkdir()
        (out / "results.jsonl").write_text('{"run_id": "a"\n{"run_id": "b", "status": "failed"}\n')
    before = hashes(tmp_path)
    refused(sweep_main("--out", out, "--report-only", "--no-plots"), match)
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("extra,match", [
    (["--seconds", "nan"], "--seconds nan"), (["--seconds", "inf"], "--seconds inf"), (["--bytes", "0"], "--bytes 0"),
    (["--seconds", "-1"], "--seconds -1"), (["--seconds", "0"], "--seconds 0 (no wall-clock cap"),
    (["--iterations", "0"], "--iterations 0"), (["--threads", "-1"], "--threads -1"), (["--min-fill", "2"], "--min-fill 2"),
    (["--stop-after", "nan"], "--stop-after nan"), (["--stop-margin", "-1"], "--stop-margin -1"),
    (["--head-dim", "0"], "--head-dim 0"), (["--kv-ratio", "0"], "--kv-ratio 0"), (["--vocab", "0"], "--vocab 0"),
    (["--kinds", ""], "--kinds"), (["--tokenizer-path", "x.model"], "--tokenizer-path needs --data-path"),
    (["--data-path", "/nonexistent", "--tokenizer-path", "x"], "--data-path /nonexistent is not a folder"),
    (["--trainer", "/nonexistent.py"], "--trainer /nonexistent.py is not a file"), (["--env", "FOO"], "--env 'FOO'"),
    (["--env", "MODEL_DIM=64"], "the sweep sets MODEL_DIM for every run; use --dims"),
    (["--env", "DATA_PATH=/x"], "use --data-path"),
])
def test_sweep_options_are_checked_before_any_run(tmp_path, extra, match):
    refused(sweep_main("--out", tmp_path / "o", *extra), match)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["nan", "0", "-1", ""])
def test_sweep_grid_lists_must_be_positive_numbers(tmp_path, capsys, value):
    with pytest.raises(SystemExit):
        sweep_main("--out", tmp_path, "--expansions", value)()
    assert "positive finite numbers" in capsys.readouterr().err


FAILING_TRAINER = '''
import os, sys
from pathlib import Path
if "--help" in sys.argv:
    print("  MODEL_DIM  int\\n  MATRIX_LR  float"); sys.exit(0)
if not Path(os.environ["DATA_PATH"], "ready").exists():
    sys.exit("error: no shards")
Path("logs").mkdir()
with open(f"logs/{os.environ['RUN_ID']}.txt", "w") as log:
    print("step:1/1 train_loss:3.0000 train_time:100ms", file=log)
    print("Serialized model int8+zlib: 1000 bytes", file=log)
    print("Code size: 10 bytes", file=log)
    print("Total submission size int8+zlib: 1010 bytes", file=log)
    print("final_int8_zlib_roundtrip_exact val_loss:3.00000000 val_bpb:1.50000000", file=log)
'''


def test_failed_sweep_runs_are_retried_and_another_setup_is_another_folder(tmp_path, monkeypatch):
    from sweep.runs import ResultStore

    monkeypatch.chdir(tmp_path)  # relative paths, as typed: the trainers run in their own run folders
    Path("fake_train.py").write_text(FAILING_TRAINER)
    data, out = Path("data"), Path("out")
    data.mkdir()
    (data / "t.model").write_bytes(b"x")
    argv = ["--out", out, "--trainer", "fake_train.py", "--data-path", data, "--tokenizer-path", data / "t.model", "--vocab", "64",
            "--bytes", "200000", "--kinds", "relu2", "--shares", "0.3", "--expansions", "2", "--head-dim", "16",
            "--dims", "32:64", "--layers", "1:2", "--min-fill", "0.1", "--code-bytes", "0", "--jobs", "1",
            "--stop-margin", "0", "--no-plots", "--calibration", tmp_path / "none.json"]
    refused(sweep_main(*argv), "1 run(s) failed", "error: no shards", "rerun the same command")
    (data / "ready").write_text("")  # the cause is fixed: the same command reruns the failed run
    sweep_main(*argv)()  # returns: every run finished
    rows = ResultStore(out).load()
    assert [r["status"] for r in rows.values()] == ["ok"]
    before = hashes(out)
    refused(sweep_main(*argv, "--env", "MATRIX_LR=0.1"), "holds 1 runs of another setup", "env")
    (data / "more.bin").write_text("")
    (data / "fineweb_train_000009.bin").write_text("")  # other data at the same path
    refused(sweep_main(*argv), "another setup", "data")
    assert hashes(out) == before
    from sweep.__main__ import check_context
    from sweep.runs import SweepError

    failed_elsewhere = {"x": {**rows[next(iter(rows))], "status": "failed", "context": {"env": ["MATRIX_LR=nan"]}}}
    check_context(failed_elsewhere, {"env": []}, out)  # a failed run holds no result: a fixed command may reuse the folder
    with pytest.raises(SweepError, match="another setup"):
        check_context({"x": {**failed_elsewhere["x"], "status": "ok"}}, {"env": []}, out)


def test_sweep_env_typo_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.model").write_bytes(b"x")
    refused(sweep_main("--out", tmp_path / "o", "--data-path", data, "--tokenizer-path", data / "t.model", "--vocab", "64",
                       "--bytes", "200000", "--head-dim", "16", "--dims", "32:64", "--layers", "1:2", "--shares", "0.3",
                       "--expansions", "2", "--min-fill", "0.1", "--code-bytes", "0", "--calibration", tmp_path / "n.json",
                       "--env", "MODLE_DIM=32"), "MODLE_DIM is not a knob", "did you mean MODEL_DIM")


def test_sweep_never_deletes_a_run_folder_it_did_not_make(tmp_path):
    from arch.budget import Shape, get_scheme, predict, uncalibrated
    from sweep.runs import RunSpec, SweepError, start_run

    p = predict(Shape(64, 1, 32, 2, 1), get_scheme("int8+zlib"), uncalibrated("int8+zlib"), 0)
    folder = tmp_path / "runs" / "x"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="is not this sweep's run folder"):
        start_run(RunSpec("x", "relu2", 0.3, 2.0, p), tmp_path, tmp_path / "t.py", {})
    assert (folder / "notes.txt").read_text() == "mine"


# ---------- rl.compare ----------

def rl_main(*argv):
    from rl.compare import main

    return lambda: main([str(a) for a in argv])


GRID = ["--variants", "mlp-narrow", "--seeds", "0", "--no-progress"]


@pytest.mark.parametrize("content,match", [("", "is not a readable run record"), ("{}", "is not a finished run record"),
                                           ("[1, 2]", "not a JSON object")])
def test_rl_compare_names_an_empty_or_malformed_run_record(tmp_path, content, match):
    record = tmp_path / "runs" / "mlp-narrow__ref__500000__seed0.json"
    record.parent.mkdir()
    record.write_text(content)
    before = hashes(tmp_path)
    refused(rl_main("--out", tmp_path, *GRID, "--report-only"), "mlp-narrow__ref__500000__seed0.json", match, "delete it")
    assert hashes(tmp_path) == before


def test_rl_compare_output_folder_problems(tmp_path):
    (tmp_path / "f").write_text("x")
    refused(rl_main("--out", tmp_path / "f", *GRID, "--report-only"), "--out", "is a file")
    refused(rl_main("--out", tmp_path / "typo", *GRID, "--report-only"), "holds no finished run", "check --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    shutil.copytree(ROOT / "rl" / "results" / "runs", tmp_path / "res" / "runs")
    (tmp_path / "res" / "summary_ref_500000.md").write_text("my notes\n")
    before = hashes(tmp_path / "res")
    refused(rl_main("--out", tmp_path / "res", *GRID, "--report-only"), "summary_ref_500000.md", "not written by python -m rl.compare")
    assert hashes(tmp_path / "res") == before


@pytest.mark.parametrize("seeds", ["0,0", "-1", "a", ","])
def test_rl_compare_bad_seeds(tmp_path, capsys, seeds):
    with pytest.raises(SystemExit) as info:
        rl_main("--out", tmp_path, "--variants", "mlp-narrow", "--seeds", seeds)()
    assert info.value.code and "--seeds" in str(info.value.code) + capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---------- arch.budget ----------

def budget_main(*argv):
    from arch.budget import main

    return lambda: main([str(a) for a in argv])


@pytest.mark.parametrize("argv,match", [
    (["--head-dim", "0"], "--head-dim 0 must be a positive even number"), (["--head-dim", "3"], "--head-dim 3"),
    (["--kv-ratio", "0"], "--kv-ratio 0 must be positive"), (["--kv-ratio", "-2"], "--kv-ratio -2"),
    (["--vocab", "0"], "--vocab 0 must be in 2..65536"), (["--vocab", "70000"], "--vocab 70000"),
    (["--bytes", "0"], "--bytes 0 must be positive"), (["--code-bytes", "-1"], "--code-bytes -1"),
    (["--float-max-numel", "-1"], "--float-max-numel -1"), (["--mlp-kind", ""], "--mlp-kind ''"),
    (["--share", "0.5,0.1"], "--share 0.5,0.1 must be LO,HI"), (["--dims", "33:63"], "holds no multiple of --head-dim"),
])
def test_budget_degenerate_numbers_are_named(argv, match):
    refused(budget_main(*argv, "--code-bytes", "1000") if "--code-bytes" not in argv else budget_main(*argv), match)


@pytest.mark.parametrize("value", ["nan", "0", "-1"])
def test_budget_expansions_and_shares_must_be_numbers_in_range(capsys, value):
    with pytest.raises(SystemExit):
        budget_main("--expansions", value)()
    assert "positive finite numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        budget_main("--share", "nan" if value == "0" else value)()
    assert "fractions in [0, 1]" in capsys.readouterr().err


def test_budget_calibration_files_it_did_not_write_are_never_replaced(tmp_path):
    (tmp_path / "mine.json").write_text('{"my": "settings"}\n')
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "broken.json").write_text("{oops")
    before = hashes(tmp_path)
    for name in ("mine.json", "notes.txt", "broken.json"):
        refused(budget_main("--calibrate-anchors", "--calibration", tmp_path / name), f"--calibration {tmp_path / name}")
    refused(budget_main("--calibration", tmp_path / "broken.json", "--code-bytes", "1000"), "not a readable calibration JSON")
    refused(budget_main("--calibration", tmp_path, "--code-bytes", "1000"), "not a readable calibration JSON")
    refused(budget_main("--calibrate-anchors", tmp_path / "nope.json"), "--calibrate-anchors", "nope.json")
    assert hashes(tmp_path) == before


# ---------- data.sample ----------

def test_sample_cli_bad_cache_folder_and_vocabulary(tmp_path, capsys):
    from data.sample import main

    (tmp_path / "f").write_text("x")
    assert main(["--cache-dir", str(tmp_path / "f")]) == 2
    assert "--cache-dir" in capsys.readouterr().err and (tmp_path / "f").read_text() == "x"
    assert main(["--cache-dir", str(tmp_path / "c"), "--vocab-size", "100000"]) == 2
    assert "exceeds 65536" in capsys.readouterr().err


# ---------- the shared writer ----------

def test_ledger_replaces_only_what_it_wrote(tmp_path):
    from data.ledger import Ledger
    from data.writes import WouldOverwrite

    ledger = Ledger(tmp_path, "tool")
    ledger.write("a.txt", "v1")
    ledger.write("a.txt", "v2")  # its own file: replaced
    (tmp_path / "a.txt").write_text("edited by hand")
    with pytest.raises(WouldOverwrite, match="a.txt exists and was not written by tool"):
        Ledger(tmp_path, "tool").write("a.txt", "v3")
    (tmp_path / "b.txt").write_text("user")
    with pytest.raises(WouldOverwrite, match="b.txt"):
        ledger.write("b.txt", "x")
    assert (tmp_path / "a.txt").read_text() == "edited by hand" and (tmp_path / "b.txt").read_text() == "user"
    (tmp_path / "a.txt").unlink()
    ledger.write("a.txt", "v4")
    ledger.expect("a.txt", hashlib.sha256(b"v5").hexdigest())  # killed after recording v5, before writing it ...
    assert Ledger(tmp_path, "tool").owns("a.txt")  # ... v4 on disk is still its own
    Ledger(tmp_path, "tool").write("a.txt", "v5")
    assert oct((tmp_path / ".written.json").stat().st_mode & 0o777) != oct(0o600)  # the umask's mode, not mkstemp's


def test_every_float_knob_is_listed_for_a_finite_check():
    """The finite check is in parse_knob; this keeps a float knob from sneaking in as a str."""
    assert "LOGIT_SOFTCAP" in FLOAT_KNOBS and "ROPE_BASE" in FLOAT_KNOBS and "MLP_MULT" in FLOAT_KNOBS
    assert all(math.isfinite(k.default) for k in train_gpt.KNOBS if k.type is float)
