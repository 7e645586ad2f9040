"""Export from text (data/export.py): documents in, tokenizer + shards + manifest out."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from data.documents import DocumentError
from data.export import (
    CHALLENGE_SP_OPTIONS,
    DocumentSource,
    TokenizerCheckError,
    check_tokenizer,
    export_dataset,
    iter_documents,
    main,
    train_sentencepiece,
)
from data.shards import list_shards, read_header, read_shard

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 320
WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can out time people "
    "river mountain garden window morning language question number system history music water market"
).split()


def english_docs(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
            sentences.append(" ".join(words).capitalize() + rng.choice(".!?"))
        docs.append(" ".join(sentences) + f" {rng.randint(0, 9999)}")
    docs[5] += " Café naïve façade — 10 €"
    return docs


@pytest.fixture(scope="module")
def docs():
    return english_docs()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, docs):
    return train_sentencepiece(docs[30:], VOCAB, tmp_path_factory.mktemp("tok") / "tiny")


def _split_docs(tokens: np.ndarray) -> list[list[int]]:
    starts = np.flatnonzero(tokens == 1)
    assert starts.size and starts[0] == 0, "every document starts with BOS"
    return [tokens[a + 1 : b].tolist() for a, b in zip(starts, list(starts[1:]) + [tokens.size])]


# ---------------------------------------------------------------------------------------------- documents


def test_iter_jsonl_and_several_paths(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n', encoding="utf-8")
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"body": "three ü"}) + "\n", encoding="utf-8")
    assert list(iter_documents(a)) == ["one", "two"]
    assert list(iter_documents([a, a])) == ["one", "two", "one", "two"]
    assert list(iter_documents(b, text_field="body")) == ["three ü"]


def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)  # several row groups: order must hold


def test_datasets_sources_keep_document_order(tmp_path):
    """parquet, arrow, csv, JSON arrays, compressed JSON lines and save_to_disk folders all go through `datasets`."""
    import gzip

    import datasets

    docs = [f"document {i} \u00e9\n second line" for i in range(10)]
    _write_parquet(tmp_path / "d.parquet", [{"id": i, "content": d} for i, d in enumerate(docs)])
    assert list(iter_documents(tmp_path / "d.parquet", text_field="content")) == docs
    (tmp_path / "d.json").write_text(json.dumps([{"text": d} for d in docs[:4]]), encoding="utf-8")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs[4:])
    assert list(iter_documents([tmp_path / "d.json", tmp_path / "d.jsonl.gz"])) == docs
    ds = datasets.Dataset.from_dict({"text": docs})
    ds.save_to_disk(str(tmp_path / "saved"))
    arrow = sorted((tmp_path / "saved").glob("*.arrow"))
    assert list(iter_documents(tmp_path / "saved")) == docs
    assert list(iter_documents(arrow)) == docs
    ds.to_csv(str(tmp_path / "d.csv"), index=False)
    assert list(iter_documents(tmp_path / "d.csv")) == docs
    both = iter_documents([tmp_path / "d.csv", tmp_path / "d.jsonl.gz"], max_docs=12)
    assert list(both) == docs + docs[4:6]


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"text": "ok"}\n{"text": "oops"\n', r"bad\.jsonl: cannot read it \(JSON parse error"),
        ('{"text": "ok"}\n{"txt": "x"}\n', r"bad\.jsonl: record 2 has no field 'text' \(fields: txt\)"),
        ('{"txt": "x"}\n', r"bad\.jsonl: record 1 has no field 'text' \(fields: txt\); choose one with --text-field"),
        ('{"text": 5}\n', r"bad\.jsonl: record 1: field 'text' is int"),
        (b'{"text": "caf\xe9"}\n', r"bad\.jsonl: cannot read it .*UTF-8"),
    ],
)
def test_bad_jsonl_names_the_file_and_record(tmp_path, content, match):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(DocumentError, match=match):
        list(iter_documents(p))


def test_iter_txt_modes(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("first line\nstill first\n\n\n  \nsecond\n\nthird\n", encoding="utf-8")
    assert list(iter_documents(p)) == ["first line\nstill first", "second", "third"]
    assert list(iter_documents(p, txt_split="line")) == ["first line", "still first", "second", "third"]
    assert list(iter_documents(p, txt_split="file")) == [p.read_text(encoding="utf-8")]
    with pytest.raises(ValueError, match="txt_split"):
        list(iter_documents(p, txt_split="para"))


def test_iter_rejects_bad_inputs_before_reading(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a"}\n')
    (tmp_path / "x.xlsx").write_text("a,b\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "folder").mkdir()
    cases = [(tmp_path / "x.xlsx", "unsupported input type"), (tmp_path / "missing.jsonl", "input file not found"),
             (tmp_path / "empty.jsonl", "is empty"), (tmp_path / "folder", "not one written by Dataset.save_to_disk")]
    for bad, match in cases:
        it = iter_documents([good, bad])
        with pytest.raises(DocumentError, match=match):
            next(it)  # nothing from `good` comes out first


def test_document_source_is_reiterable(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("a\nb\nc\nd\n")
    src = DocumentSource(p, txt_split="line", skip=1, limit=2)
    assert list(src) == ["b", "c"] and list(src) == ["b", "c"]
    assert list(iter_documents(p, txt_split="line", max_docs=3)) == ["a", "b", "c"]


def test_hub_dataset_is_streamed_by_name(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        return iter({"text": f"doc {i}", "url": "u"} for i in range(100))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    docs = list(iter_documents([], hf_dataset="HuggingFaceFW/fineweb", hf_config="sample-10BT", split="train", max_docs=5))
    assert docs == [f"doc {i}" for i in range(5)]
    assert calls == [("HuggingFaceFW/fineweb", "sample-10BT", "train", True)]
    with pytest.raises(DocumentError, match="record 1 has no field 'body'"):
        list(iter_documents([], "body", hf_dataset="x/y", max_docs=5))


def test_hub_dataset_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DocumentError, match=r"cannot load hub dataset no-such-user/no-such-set split train \(.*\); check the name"):
        list(iter_documents([], hf_dataset="no-such-user/no-such-set", max_docs=3))


# ---------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_options_and_byte_fallback(tokenizer):
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    assert tokenizer.suffix == ".model" and tokenizer.with_suffix(".vocab").is_file()
    assert sp.vocab_size() == VOCAB
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sum(sp.is_byte(i) for i in range(VOCAB)) == 256
    assert sp.id_to_piece(sp.piece_to_id("\u2581")) == "\u2581"
    # an unseen character falls back to bytes instead of UNK, and round-trips
    ids = sp.encode("zebra 🙂 river")
    assert sp.unk_id() not in ids and any(sp.is_byte(i) for i in ids)
    assert sp.decode(ids) == "zebra 🙂 river"
    # digits are split, no dummy prefix
    assert all(len(p.strip("\u2581")) <= 1 for p in sp.encode("12345", out_type=str))
    assert not sp.encode("river", out_type=str)[0].startswith("\u2581")
    check_tokenizer(sp, vocab_size=VOCAB)
    # the .vocab file lists every piece with its score, like SentencePiece's own
    lines = tokenizer.with_suffix(".vocab").read_text(encoding="utf-8").splitlines()
    assert len(lines) == VOCAB and lines[1] == "<s>\t0"


def test_tokenizer_is_deterministic_and_path_free(tmp_path, docs, tokenizer):
    again = train_sentencepiece(iter(docs[30:]), VOCAB, tmp_path / "other.model")  # a one-shot iterator works too
    assert again == tmp_path / "other.model"
    assert again.read_bytes() == tokenizer.read_bytes()
    assert str(tmp_path).encode() not in again.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.model", "other.vocab"]  # no spool left


def test_challenge_options_exact():
    assert CHALLENGE_SP_OPTIONS == {
        "model_type": "bpe", "character_coverage": 0.999, "byte_fallback": True, "split_digits": True,
        "normalization_rule_name": "nmt_nfkc", "add_dummy_prefix": False, "pad_id": 0, "bos_id": 1,
        "eos_id": 2, "unk_id": 3, "hard_vocab_limit": False,
    }


def test_space_piece_guard(tmp_path):
    # text without spaces: SentencePiece leaves "▁" out on its own ...
    rng = random.Random(1)
    nospace = ["".join(rng.choice(WORDS) for _ in range(30)) for _ in range(200)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(nospace), model_prefix=str(tmp_path / "raw"), vocab_size=300, minloglevel=2,
        **CHALLENGE_SP_OPTIONS,
    )
    with pytest.raises(TokenizerCheckError, match="U\\+2581"):
        check_tokenizer(tmp_path / "raw.model")
    with pytest.raises(TokenizerCheckError, match="U\\+2581"):
        export_dataset(nospace, tmp_path / "raw.model", tmp_path / "out", val_docs=10)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    # ... and train_sentencepiece adds it back through required_chars, keeping merges like "▁the"
    model = train_sentencepiece(nospace + ["the river and the garden"], 300, tmp_path / "fixed")
    sp = check_tokenizer(model)
    assert sp.id_to_piece(sp.piece_to_id("\u2581")) == "\u2581"


def test_check_tokenizer_vocab_mismatch(tokenizer):
    with pytest.raises(TokenizerCheckError, match="expected 1024"):
        check_tokenizer(tokenizer, vocab_size=1024)


def test_vocab_limits(tmp_path, docs):
    with pytest.raises(ValueError, match="65536"):
        train_sentencepiece(docs, 70_000, tmp_path / "big")
    with pytest.raises(ValueError, match="too small"):
        train_sentencepiece(docs, 200, tmp_path / "small")


# ---------------------------------------------------------------------------------------------- export


def test_export_layout_bos_and_split(tmp_path, docs, tokenizer):
    out = tmp_path / "ds"
    m = export_dataset(docs, tokenizer, out, val_docs=30, shard_tokens=4000)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    expected = [sp.encode(d) for d in docs]

    val_files = list_shards(str(out / "fineweb_val_*.bin"))
    train_files = list_shards(str(out / "fineweb_train_*.bin"))
    assert [f.name for f in train_files] == [f"fineweb_train_{i:06d}.bin" for i in range(len(train_files))]
    assert len(train_files) > 2
    # all shards but each split's last are exactly shard_tokens long
    for files in (val_files, train_files):
        sizes = [read_header(f) for f in files]
        assert all(s == 4000 for s in sizes[:-1]) and 0 < sizes[-1] <= 4000
    val = np.concatenate([read_shard(f) for f in val_files])
    train = np.concatenate([read_shard(f) for f in train_files])
    assert _split_docs(val) == expected[:30]  # [BOS] + ids of the raw text, no EOS, in order
    assert _split_docs(train) == expected[30:]
    assert 2 not in val and 2 not in train

    ds = m["datasets"][0]
    s = ds["stats"]
    assert (m["num_docs"], m["num_val_docs"], m["shard_size"], m["append_eos"]) == (300, 30, 4000, False)
    assert (s["docs_val"], s["docs_train"], s["docs_total"]) == (30, 270, 300)
    assert (s["tokens_val"], s["tokens_train"]) == (val.size, train.size) and s["tokens_total"] == val.size + train.size
    assert (s["files_val"], s["files_train"]) == (len(val_files), len(train_files))
    assert s["bytes_val"] == sum(len(d.encode()) for d in docs[:30])
    assert (ds["vocab_size"], ds["bos_id"], ds["eos_id"]) == (VOCAB, 1, 2)
    assert ds["recommended_bigram_vocab_size"] == 3 * 128 * 5
    assert (ds["train_glob"], ds["val_glob"], ds["name"]) == ("fineweb_train_*.bin", "fineweb_val_*.bin", "ds")
    tok = m["tokenizers"][0]
    assert tok["name"] == ds["tokenizer_name"] and tok["model_path"] == str(tokenizer.resolve())
    assert json.loads((out / "manifest.json").read_text()) == m
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("fineweb_")) == ["manifest.json"]


def test_export_encodes_raw_text(tmp_path, tokenizer):
    docs = ["  leading and trailing spaces  ", "", "nul\x00inside", "the end"]
    export_dataset(docs, tokenizer, tmp_path / "ds", val_docs=1)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    train = read_shard(tmp_path / "ds" / "fineweb_train_000000.bin")
    assert _split_docs(train) == [sp.encode(d) for d in docs[1:]]  # the empty doc is kept as a lone BOS
    assert read_shard(tmp_path / "ds" / "fineweb_val_000000.bin").tolist() == [1] + sp.encode(docs[0])


def test_refuses_to_overwrite(tmp_path, docs, tokenizer):
    out = tmp_path / "ds"
    export_dataset(docs, tokenizer, out, val_docs=30, shard_tokens=3000)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite"):
        export_dataset(docs[:100], tokenizer, out, val_docs=10)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a folder holding only a manifest (e.g. the challenge's data/) is protected too
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text("{}")
    with pytest.raises(FileExistsError):
        export_dataset(docs, tokenizer, tmp_path / "m", val_docs=10)
    # overwrite=True replaces the export, dropping shards the new one does not have
    m = export_dataset(docs[:100], tokenizer, out, val_docs=10, overwrite=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["fineweb_train_000000.bin", "fineweb_val_000000.bin", "manifest.json"]
    assert m["num_docs"] == 100


@pytest.mark.parametrize("as_iter", [False, True])
def test_split_errors(tmp_path, docs, tokenizer, as_iter):
    wrap = iter if as_iter else list
    with pytest.raises(ValueError, match="empty validation split"):
        export_dataset(wrap(docs), tokenizer, tmp_path / "a", val_docs=0)
    with pytest.raises(ValueError, match="no training documents"):
        export_dataset(wrap(docs[:20]), tokenizer, tmp_path / "b", val_docs=20)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing left behind


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_end_to_end(tmp_path, docs, capsys):
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--input", str(src), "--out", str(out), "--vocab-size", str(VOCAB), "--val-docs", "25", "--shard-tokens", "5000"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "val:   25 docs" in text and "train: 275 docs" in text
    model = out / f"tokenizer_{VOCAB}_bpe.model"
    assert model.is_file() and model.with_suffix(".vocab").is_file()
    m = json.loads((out / "manifest.json").read_text())
    assert m["tokenizers"][0]["model_path"] == model.name and m["num_val_docs"] == 25
    assert m["docs_meta"]["inputs"] == [str(src.resolve())]
    # the tokenizer was trained on the train documents only
    direct = train_sentencepiece(docs[25:], VOCAB, tmp_path / "direct")
    assert direct.read_bytes() == model.read_bytes()

    before = model.read_bytes()
    assert main(argv) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert model.read_bytes() == before
    assert main(argv + ["--overwrite"]) == 0

    # an existing tokenizer, a .txt input, the default val split (a tenth)
    txt = tmp_path / "c.txt"
    txt.write_text("\n\n".join(docs[:50]), encoding="utf-8")
    assert main(["--input", str(txt), "--out", str(tmp_path / "o2"), "--tokenizer", str(model)]) == 0
    m2 = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert (m2["num_docs"], m2["num_val_docs"]) == (50, 5)


def _tree(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", [
    "bad_json", "out_is_file", "missing_input", "missing_field", "empty_input", "blank_docs", "unknown_type",
    "vocab_too_big", "vocab_too_small", "tokenizer_not_model", "tokenizer_missing", "hub_without_max_docs",
    "val_docs_zero", "val_docs_all", "shard_tokens_zero", "existing_export", "unreadable_input", "max_docs_zero",
    "sentencepiece_refuses",
])
def test_cli_bad_inputs_one_line_nothing_touched(tmp_path, capsys, case):
    """Every bad input: exit 2, one `error:` line naming the input and the fix, no traceback, no file changed."""
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": d}) + "\n" for d in english_docs(40)), encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--input", str(good), "--out", str(out), "--vocab-size", str(VOCAB)]
    match = {"sentencepiece_refuses": "SentencePiece training failed (", "bad_json": "bad.jsonl: cannot read it", "out_is_file": "is an existing file; give a folder",
             "missing_input": "input file not found", "missing_field": "has no field 'body' (fields: text); choose one with --text-field",
             "empty_input": "empty.jsonl is empty", "blank_docs": "need at least 2 documents", "unknown_type": "unsupported input type",
             "vocab_too_big": "--vocab-size must be in [261, 65536]", "vocab_too_small": "--vocab-size must be in",
             "tokenizer_not_model": "is not a readable SentencePiece model", "tokenizer_missing": "tokenizer model not found",
             "hub_without_max_docs": "--hf-dataset needs --max-docs", "val_docs_zero": "--val-docs must be at least 1",
             "val_docs_all": "leaves no training documents", "shard_tokens_zero": "--shard-tokens must be in",
             "existing_export": "refusing to overwrite", "unreadable_input": "cannot read", "max_docs_zero": "--max-docs must be at least 1"}[case]
    if case == "bad_json":
        (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
        argv[1] = str(tmp_path / "bad.jsonl")
    elif case == "out_is_file":
        out.write_text("my notes")
    elif case == "missing_input":
        argv[1] = str(tmp_path / "nope.jsonl")
    elif case == "missing_field":
        argv += ["--text-field", "body"]
    elif case == "empty_input":
        (tmp_path / "empty.jsonl").write_text("")
        argv[1:2] = [str(good), str(tmp_path / "empty.jsonl")]
    elif case == "blank_docs":
        (tmp_path / "blank.txt").write_text("\n  \n\n")
        argv[1] = str(tmp_path / "blank.txt")
    elif case == "unknown_type":
        (tmp_path / "book.docx").write_text("x")
        argv[1] = str(tmp_path / "book.docx")
    elif case in ("vocab_too_big", "vocab_too_small"):
        argv[-1] = "70000" if case == "vocab_too_big" else "100"
    elif case in ("tokenizer_not_model", "tokenizer_missing"):
        (tmp_path / "fake.model").write_text("not a model")
        argv[-2:] = ["--tokenizer", str(tmp_path / ("fake.model" if case == "tokenizer_not_model" else "none.model"))]
    elif case == "hub_without_max_docs":
        argv[0:2] = ["--hf-dataset", "HuggingFaceFW/fineweb"]
    elif case in ("val_docs_zero", "val_docs_all"):
        argv += ["--val-docs", "0" if case == "val_docs_zero" else "40"]
    elif case == "shard_tokens_zero":
        argv += ["--shard-tokens", "0"]
    elif case == "max_docs_zero":
        argv += ["--max-docs", "0"]
    elif case == "sentencepiece_refuses":  # 300 pieces cannot hold the corpus's 313 required characters
        argv[-1] = "300"
    elif case == "existing_export":
        assert main(argv) == 0
        capsys.readouterr()
    elif case == "unreadable_input":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        good.chmod(0)
    before = _tree(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err
    assert _tree(tmp_path) == before  # nothing written, nothing removed


def test_cli_runs_as_a_command_without_traceback(tmp_path):
    """The real entry point: a bad input gives one line on stderr and exit status 2."""
    proc = subprocess.run([sys.executable, "-m", "data.export", "--input", str(tmp_path / "missing.parquet"), "--out",
                           str(tmp_path / "o"), "--vocab-size", "300"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "input file not found" in proc.stderr and not (tmp_path / "o").exists()


def test_cli_exports_parquet_like_jsonl(tmp_path, docs):
    """The same documents as parquet and as JSON lines give byte-identical shards and tokenizer."""
    _write_parquet(tmp_path / "c.parquet", [{"text": d, "n": i} for i, d in enumerate(docs)])
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    for name in ("c.parquet", "c.jsonl"):
        assert main(["--input", str(tmp_path / name), "--out", str(tmp_path / name.replace(".", "_")), "--vocab-size",
                     str(VOCAB), "--val-docs", "20", "--max-docs", "200"]) == 0
    a, b = tmp_path / "c_parquet", tmp_path / "c_jsonl"
    for f in ("fineweb_val_000000.bin", "fineweb_train_000000.bin", f"tokenizer_{VOCAB}_bpe.model"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    m = json.loads((a / "manifest.json").read_text())
    assert (m["num_docs"], m["num_val_docs"], m["docs_meta"]["max_docs"]) == (200, 20, 200)


def test_cli_hub_dataset_streams_once_and_exports(tmp_path, docs, monkeypatch):
    """--hf-dataset NAME: streamed once (spooled locally for the three passes), at most --max-docs documents."""
    import datasets

    opened, real = [], datasets.load_dataset

    def fake_load_dataset(name, config=None, split=None, streaming=False, **local):
        if local:  # the local spool file, read back through the real loader
            return real(name, config, split=split, streaming=streaming, **local)
        opened.append((name, config, split, streaming))
        return iter({"content": d, "id": i} for i, d in enumerate(docs))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "hub"
    assert main(["--hf-dataset", "someone/corpus", "--hf-config", "en", "--split", "train", "--text-field", "content",
                 "--max-docs", "120", "--out", str(out), "--vocab-size", str(VOCAB), "--val-docs", "10"]) == 0
    assert opened == [("someone/corpus", "en", "train", True)]  # one streaming pass, not three
    m = json.loads((out / "manifest.json").read_text())
    assert (m["num_docs"], m["num_val_docs"]) == (120, 10)
    assert m["docs_meta"] == {"hf_dataset": "someone/corpus", "hf_config": "en", "split": "train", "text_field": "content",
                              "max_docs": 120}
    sp = spm.SentencePieceProcessor(model_file=str(out / f"tokenizer_{VOCAB}_bpe.model"))
    assert _split_docs(read_shard(out / "fineweb_val_000000.bin")) == [sp.encode(d) for d in docs[:10]]
