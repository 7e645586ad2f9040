"""The published-data downloader (data/download.py) against a fake local repo: no network."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import data.download as dl
from data.export import train_sentencepiece, write_shard
from data.shards import ShardFormatError, read_shard

SHARD = 1000  # the fake export's shard size in tokens
VOCAB = 300


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    rng = random.Random(0)
    words = "the cat sat on a mat and then the dog ran to the river with one more big red ball".split()
    docs = [" ".join(rng.choice(words) for _ in range(20)) for _ in range(200)]
    return train_sentencepiece(docs, VOCAB, tmp_path_factory.mktemp("tok") / "fineweb_300_bpe")


def make_repo(base: Path, tiny_model: Path, root: str = "datasets", n_val=2, n_train=4, last_val=300, last_train=400):
    """A fake HF dataset repo laid out like the published one, rooted at base/<root>."""
    top = base / root if root else base
    ds = top / "datasets" / "fineweb10B_sp300"
    ds.mkdir(parents=True)
    for split, n, last in (("val", n_val, last_val), ("train", n_train, last_train)):
        for i in range(n):
            size = last if i == n - 1 else SHARD
            write_shard(ds / f"fineweb_{split}_{i:06d}.bin", np.full(size, i % VOCAB))
    (top / "tokenizers").mkdir()
    shutil.copy(tiny_model, top / "tokenizers" / "fineweb_300_bpe.model")
    shutil.copy(tiny_model.with_suffix(".vocab"), top / "tokenizers" / "fineweb_300_bpe.vocab")
    manifest = {
        "version": "10B",
        "num_docs": 1234,
        "num_val_docs": 50,
        "shard_size": SHARD,
        "append_eos": False,
        "tokenizers": [
            {"name": "sp_bpe_300", "kind": "sentencepiece_bpe", "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2,
             "model_path": "tokenizers/fineweb_300_bpe.model", "vocab_path": "tokenizers/fineweb_300_bpe.vocab"},
            {"name": "pure_byte_260", "kind": "byte", "path": "tokenizers/fineweb_pure_byte_260.json"},
        ],
        "datasets": [
            {"name": "fineweb10B_byte260", "tokenizer_name": "pure_byte_260", "vocab_size": 260,
             "stats": {"files_val": 1, "files_train": 1, "tokens_val": 5, "tokens_train": 5}},
            {"name": "fineweb10B_sp300", "tokenizer_name": "sp_bpe_300", "tokenizer_kind": "sentencepiece_bpe",
             "path": "datasets/fineweb10B_sp300", "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2,
             "stats": {"files_val": n_val, "files_train": n_train,
                       "tokens_val": (n_val - 1) * SHARD + last_val, "tokens_train": (n_train - 1) * SHARD + last_train}},
        ],
    }
    (top / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return top


class FakeHub:
    """Stands in for `_hub_download`: copies from a local folder and records what was asked."""

    def __init__(self, base: Path, repo_id: str = dl.DEFAULT_REPO_ID):
        self.base, self.repo_id, self.calls = base, repo_id, []

    def __call__(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        self.calls.append(filename)
        assert repo_id == self.repo_id
        src = self.base / filename
        if not src.is_file():
            raise FileNotFoundError(f"{filename} not found in the Hugging Face dataset repo {repo_id}")
        dest = Path(local_dir) / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        return dest


@pytest.fixture
def hub(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    monkeypatch.delenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", raising=False)
    make_repo(tmp_path / "remote", tiny_model)
    fake = FakeHub(tmp_path / "remote")
    monkeypatch.setattr(dl, "_hub_download", fake)
    return fake


def run(out, **kw):
    logs = []
    r = dl.download(kw.pop("variant", "sp300"), kw.pop("train_shards", 2), out, log=logs.append, **kw)
    return r, logs


def test_downloads_val_first_train_shards_and_tokenizer(tmp_path, hub):
    out = tmp_path / "data"
    r, _ = run(out, train_shards=2)
    ds = "datasets/datasets/fineweb10B_sp300"
    assert hub.calls == [
        "datasets/manifest.json",
        f"{ds}/fineweb_val_000000.bin",
        f"{ds}/fineweb_val_000001.bin",
        f"{ds}/fineweb_train_000000.bin",
        f"{ds}/fineweb_train_000001.bin",
        "datasets/tokenizers/fineweb_300_bpe.model",
        "datasets/tokenizers/fineweb_300_bpe.vocab",
    ]
    assert r.dataset_dir == out / "datasets" / "fineweb10B_sp300"
    assert sorted(p.name for p in r.dataset_dir.iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin", "fineweb_val_000001.bin",
    ]
    assert r.tokenizer_paths == [out / "tokenizers" / "fineweb_300_bpe.model", out / "tokenizers" / "fineweb_300_bpe.vocab"]
    assert (out / "manifest.json").read_bytes() == (tmp_path / "remote/datasets/manifest.json").read_bytes()
    assert read_shard(r.val_shards[1]).size == 300
    assert not r.warnings and not r.skipped and len(r.downloaded) == 6
    assert sorted(p.name for p in out.iterdir()) == [".written.json", "datasets", "manifest.json", "tokenizers"]  # staging removed


def test_skips_files_already_present(tmp_path, hub):
    out = tmp_path / "data"
    run(out, train_shards=2)
    hub.calls.clear()
    r, _ = run(out, train_shards=3)
    assert hub.calls == ["datasets/manifest.json", "datasets/datasets/fineweb10B_sp300/fineweb_train_000002.bin"]
    assert len(r.skipped) == 2 + 2 + 2 and not r.warnings


def test_redownloads_a_bad_local_shard(tmp_path, hub):
    out = tmp_path / "data"
    r, _ = run(out, train_shards=1)
    shard = r.train_shards[0]
    shard.write_bytes(shard.read_bytes()[:-2])  # truncated
    hub.calls.clear()
    r, _ = run(out, train_shards=1)
    assert hub.calls[1:] == ["datasets/datasets/fineweb10B_sp300/fineweb_train_000000.bin"]
    assert any("re-downloading fineweb_train_000000.bin" in w for w in r.warnings)
    assert read_shard(shard).size == SHARD


def test_valid_local_shard_of_wrong_size_is_replaced(tmp_path, hub):
    out = tmp_path / "data"
    r, _ = run(out, train_shards=1)
    write_shard(r.train_shards[0], np.arange(10))  # a valid shard, but not what the manifest says
    r, _ = run(out, train_shards=1)
    assert any("manifest implies 1000" in w for w in r.warnings)
    assert read_shard(r.train_shards[0]).size == SHARD


@pytest.mark.parametrize("corrupt", ["magic", "size"])
def test_rejects_a_bad_downloaded_shard(tmp_path, hub, corrupt):
    bad = tmp_path / "remote/datasets/datasets/fineweb10B_sp300/fineweb_train_000001.bin"
    if corrupt == "magic":
        raw = bytearray(bad.read_bytes())
        raw[0:4] = (1234).to_bytes(4, "little")
        bad.write_bytes(bytes(raw))
    else:
        write_shard(bad, np.arange(999))  # well-formed but one token short of the manifest's size
    out = tmp_path / "data"
    with pytest.raises(ShardFormatError, match="fineweb_train_000001.bin"):
        run(out, train_shards=2)
    ds = out / "datasets" / "fineweb10B_sp300"
    assert not (ds / "fineweb_train_000001.bin").exists()
    assert (ds / "fineweb_train_000000.bin").exists()
    assert not (out / dl.STAGING).exists()


def test_stale_manifest_warning(tmp_path, hub):
    out = tmp_path / "data"
    remote = tmp_path / "remote/datasets/manifest.json"
    new = json.loads(remote.read_text())
    remote.write_text(json.dumps({**new, "num_docs": 999}))  # an older export, downloaded first
    run(out, train_shards=0)
    remote.write_text(json.dumps(new))
    r, logs = run(out, train_shards=0)
    assert any("stale" in w for w in r.warnings) and any("stale" in line for line in logs)
    assert json.loads((out / "manifest.json").read_text())["num_docs"] == 1234


@pytest.mark.parametrize("mine", ["manifest.json", "datasets/fineweb10B_sp300/fineweb_val_000000.bin"])
def test_a_file_it_did_not_download_is_never_replaced(tmp_path, hub, mine):
    out = tmp_path / "data"
    path = out / mine
    path.parent.mkdir(parents=True)
    if path.suffix == ".json":
        path.write_text(json.dumps({"version": "10B", "datasets": [], "from": "my own export"}))
    else:
        write_shard(path, np.arange(10))  # the user's, of another size than the manifest's
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="not downloaded here"):
        run(out, train_shards=0)
    assert path.read_bytes() == before


def test_offline_says_the_hub_cannot_be_reached(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(**kw):  # what hf_hub_download raises when it cannot connect and nothing is cached
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub ...")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert dl.main(["--out", str(tmp_path / "data"), "--train-shards", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face hub" in err and "no network" in err and "not found" not in err
    (tmp_path / "f").write_text("x")
    assert dl.main(["--out", str(tmp_path / "f")]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "f").read_text() == "x"


def test_extra_shards_from_another_export_warn(tmp_path, hub):
    out = tmp_path / "data"
    ds = out / "datasets" / "fineweb10B_sp300"
    ds.mkdir(parents=True)
    write_shard(ds / "fineweb_train_000009.bin", np.arange(5))
    r, _ = run(out, train_shards=1)
    assert any("fineweb_train_000009.bin" in w for w in r.warnings)


def test_skip_manifest(tmp_path, hub):
    out = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="skip-manifest"):
        run(out, skip_manifest=True)
    run(out, train_shards=1)
    hub.calls.clear()
    run(out, train_shards=1, skip_manifest=True)
    assert hub.calls == []
    (out / "manifest.json").write_text(json.dumps({"datasets": [{"name": "fineweb10B_sp1024"}]}))
    with pytest.raises(ValueError, match="stale"):
        run(out, skip_manifest=True)


def test_request_errors(tmp_path, hub):
    out = tmp_path / "data"
    with pytest.raises(ValueError, match="only 4 train shards"):
        run(out, train_shards=5)
    with pytest.raises(ValueError, match="fineweb10B_sp9999 is not in the manifest.*fineweb10B_sp300"):
        run(out, variant="sp9999")
    with pytest.raises(ValueError, match="variant"):
        run(out, variant="../x")
    with pytest.raises(ValueError, match=">= 0"):
        run(out, train_shards=-1)


def test_env_overrides(tmp_path, tiny_model, monkeypatch):
    make_repo(tmp_path / "remote", tiny_model, root="my_export/v2")
    fake = FakeHub(tmp_path / "remote", repo_id="someone/else")
    monkeypatch.setattr(dl, "_hub_download", fake)
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "someone/else")
    monkeypatch.setenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", "/my_export/v2/")
    r, _ = run(tmp_path / "data", train_shards=1)
    assert fake.calls[0] == "my_export/v2/manifest.json"
    assert all(c.startswith("my_export/v2/") for c in fake.calls)
    assert len(r.train_shards) == 1
    # an explicit empty remote root means the repo's top level
    make_repo(tmp_path / "flat", tiny_model, root="")
    fake2 = FakeHub(tmp_path / "flat", repo_id="someone/else")
    monkeypatch.setattr(dl, "_hub_download", fake2)
    run(tmp_path / "data2", train_shards=1, remote_root="")
    assert fake2.calls[0] == "manifest.json"


def test_missing_remote_file_is_clear(tmp_path, hub):
    (tmp_path / "remote/datasets/tokenizers/fineweb_300_bpe.vocab").unlink()
    with pytest.raises(FileNotFoundError, match="fineweb_300_bpe.vocab"):
        run(tmp_path / "data", train_shards=1)


def test_expected_shard_tokens():
    assert dl.expected_shard_tokens(3, 2500, 1000) == [1000, 1000, 500]
    assert dl.expected_shard_tokens(1, 1000, 1000) == [1000]
    assert dl.expected_shard_tokens(2, 5000, 1000) == [None, None]  # inconsistent manifest: header checks only
    assert dl.expected_shard_tokens(2, None, 1000) == [None, None]


def test_cli(tmp_path, hub, capsys):
    out = tmp_path / "data"
    assert dl.main(["--variant", "sp300", "--train-shards", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 val + 1 train shards (2,300 tokens)" in text and "TOKENIZER_PATH=" in text
    assert dl.main(["--variant", "sp300", "--train-shards", "99", "--out", str(out)]) == 2
    assert "only 4 train shards" in capsys.readouterr().err
