"""The offline sample dataset (data/sample.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import sentencepiece as spm

from data import sample
from data.export import check_tokenizer
from data.shards import list_shards, load_tokens

ROOT = Path(__file__).resolve().parents[1]


def test_layout_and_split(sample_dataset):
    ds = sample_dataset
    assert ds.built is True and ds.vocab_size == 1024
    assert ds.data_path.name == sample.sample_dir_name(1024)
    assert sample.SAMPLE_VERSION in ds.data_path.name and "sp1024" in ds.data_path.name
    val = load_tokens(str(ds.data_path / "fineweb_val_*.bin"))
    train = load_tokens(str(ds.data_path / "fineweb_train_*.bin"))
    info = json.loads((ds.data_path / "sample.json").read_text())
    manifest = json.loads((ds.data_path / "manifest.json").read_text())
    stats = manifest["datasets"][0]["stats"]
    assert 20_000 < val.size <= 70_000, "val is non-empty and small enough for a fast CPU eval"
    assert train.size > 8 * val.size
    assert (stats["tokens_val"], stats["tokens_train"]) == (val.size, train.size)
    assert int((val == 1).sum()) == info["docs_val"] == stats["docs_val"] > 0
    assert int((train == 1).sum()) == info["docs_train"] == stats["docs_train"]
    assert val[0] == 1 and train[0] == 1 and int(max(val.max(), train.max())) < 1024
    assert info["bytes_train"] + info["bytes_val"] > 1_500_000  # a couple of MB of English
    assert len(list_shards(str(ds.data_path / "fineweb_*.bin"))) == 2
    assert not [p for p in ds.data_path.parent.iterdir() if ".tmp-" in p.name]


def test_tokenizer(sample_dataset):
    sp = spm.SentencePieceProcessor(model_file=str(sample_dataset.tokenizer_path))
    assert sp.vocab_size() == 1024
    assert sum(sp.is_byte(i) for i in range(1024)) == 256
    check_tokenizer(sp, vocab_size=1024)
    ids = sp.encode("Return the number of items in a container. ✓")
    assert sp.unk_id() not in ids and sp.decode(ids) == "Return the number of items in a container. ✓"
    assert len(ids) < 20  # real merges, not bytes


def test_second_call_reuses_cache(sample_dataset):
    before = {p.name: p.stat().st_mtime_ns for p in sample_dataset.data_path.iterdir()}
    again = sample.ensure_sample_dataset(cache_dir=sample_dataset.data_path.parent, vocab_size=1024)
    assert again.built is False
    assert (again.data_path, again.tokenizer_path, again.vocab_size) == (
        sample_dataset.data_path, sample_dataset.tokenizer_path, sample_dataset.vocab_size)
    assert {p.name: p.stat().st_mtime_ns for p in again.data_path.iterdir()} == before


def test_deterministic_rebuild(sample_dataset, tmp_path):
    """A second build elsewhere is byte-identical (shards, tokenizer, manifest); timings aside."""
    other = sample.ensure_sample_dataset(cache_dir=tmp_path, vocab_size=1024)
    assert other.built is True and other.data_path.name == sample_dataset.data_path.name
    names = sorted(p.name for p in sample_dataset.data_path.iterdir())
    assert names == sorted(p.name for p in other.data_path.iterdir())
    for name in names:
        a, b = (sample_dataset.data_path / name).read_bytes(), (other.data_path / name).read_bytes()
        if name == "sample.json":
            a, b = json.loads(a), json.loads(b)
            a.pop("seconds"), b.pop("seconds")
        assert a == b, name


def test_corpus_rules():
    files = sample.stdlib_sources()
    rels = [f.relative_to(sysconfig.get_paths()["stdlib"]).as_posix() for f in files]
    assert len(rels) > 300 and rels == sorted(rels)
    parts = {part for r in rels for part in r.split("/")}
    assert not parts & {"test", "tests", "idlelib", "site-packages"}
    assert any(f.name == "textwrap.py" for f in files)
    doc = sample.module_document(Path(textwrap.__file__))
    assert doc.startswith(textwrap.__doc__.strip()[:20]) and "dedent" not in doc[:10]
    assert textwrap.dedent.__doc__.strip().splitlines()[0] in doc


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PARAMETER_GOLF_CACHE", str(tmp_path / "c"))
    assert sample.cache_root() == tmp_path / "c"
    monkeypatch.delenv("PARAMETER_GOLF_CACHE")
    assert sample.cache_root() == Path.home() / ".cache" / "parameter-golf"
    assert sample.cache_root(tmp_path) == tmp_path


def test_concurrent_callers_build_once(tmp_path):
    """Two processes (like two torchrun ranks) race; the lock makes one build and the other reuse it."""
    script = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        import data.sample as s

        def fake_build(folder, vocab_size, name):
            with open(sys.argv[2], "a") as f:
                f.write("build\\n")
            time.sleep(1.0)
            info = {"vocab_size": vocab_size}
            (folder / s.MARKER).write_text(json.dumps(info))
            return {"docs_train": 0, "tokens_train": 0, "docs_val": 0, "tokens_val": 0, "seconds": {"total": 1}}

        s._build = fake_build
        ds = s.ensure_sample_dataset(cache_dir=sys.argv[1], vocab_size=64)
        print(ds.built)
        """
    )
    counter = tmp_path / "builds.txt"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache"), str(counter)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(o[0].strip() for o in outs) == ["False", "True"]
    assert counter.read_text() == "build\n"
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [sample.sample_dir_name(64)]


def test_incomplete_folder_is_rebuilt(tmp_path, monkeypatch):
    calls = []

    def fake_build(folder, vocab_size, name):
        calls.append(folder)
        (folder / sample.MARKER).write_text(json.dumps({"vocab_size": vocab_size}))
        return {"docs_train": 0, "tokens_train": 0, "docs_val": 0, "tokens_val": 0, "seconds": {"total": 0}}

    monkeypatch.setattr(sample, "_build", fake_build)
    leftover = tmp_path / sample.sample_dir_name(64)
    leftover.mkdir()
    (leftover / "fineweb_train_000000.bin").write_bytes(b"junk")
    ds = sample.ensure_sample_dataset(cache_dir=tmp_path, vocab_size=64)
    assert ds.built and len(calls) == 1 and not (leftover / "fineweb_train_000000.bin").exists()
    assert [p.name for p in leftover.iterdir()] == [sample.MARKER]


def test_leftover_temp_build_is_cleaned(tmp_path, monkeypatch):
    def fake_build(folder, vocab_size, name):
        (folder / sample.MARKER).write_text(json.dumps({"vocab_size": vocab_size}))
        return {"docs_train": 0, "tokens_train": 0, "docs_val": 0, "tokens_val": 0, "seconds": {"total": 0}}

    monkeypatch.setattr(sample, "_build", fake_build)
    crashed = tmp_path / f".{sample.sample_dir_name(64)}.tmp-dead"
    crashed.mkdir()
    sample.ensure_sample_dataset(cache_dir=tmp_path, vocab_size=64)
    assert not crashed.exists()


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken_build(folder, vocab_size, name):
        (folder / "partial.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    monkeypatch.setattr(sample, "_build", broken_build)
    with pytest.raises(RuntimeError, match="boom"):
        sample.ensure_sample_dataset(cache_dir=tmp_path, vocab_size=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{sample.sample_dir_name(64)}.lock"]
