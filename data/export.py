"""Turn your own text into the challenge's shard layout: documents in, SentencePiece BPE + shards + manifest out.

Library:
    iter_documents(paths, text_field="text", ...)                 documents from any source `datasets` loads (data/documents.py)
    train_sentencepiece(docs, vocab_size, model_prefix, ...)       the challenge's BPE trainer options
    check_tokenizer(sp, ...)                                       the guards trainers rely on (BOS=1, "▁", ...)
    export_dataset(docs, tokenizer_path, out_dir, val_docs, ...)   [BOS] + ids per doc, val first, sharded

CLI:
    python -m data.export --input corpus.jsonl --out data/datasets/mine --vocab-size 1024
    python -m data.export --input a.txt b.parquet --out DIR --tokenizer existing.model --val-docs 500
    python -m data.export --hf-dataset HuggingFaceFW/fineweb --split train --text-field text --max-docs 100000 --out DIR --vocab-size 1024

Format facts (shared/design/HARNESS.md A2, A3): shards are `fineweb_{train,val}_{index:06d}.bin`, each
document is written as [BOS=1] + ids of its *raw* text with no EOS, the first `val_docs` documents form the
validation split, splits never share a shard, each split's last shard is shorter.  The tokenizer is trained
on each document with NUL replaced by a space and surrounding whitespace stripped, empty ones skipped.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from data.documents import TXT_SPLITS, DocumentSource, check_input, iter_documents
from data.shards import HEADER_BYTES, HEADER_INTS, MAX_SHARD_TOKENS, MAX_VOCAB, SHARD_MAGIC, SHARD_VERSION
from data.tokenizer import BOS_ID, SPACE_PIECE, TokenizerCheckError, check_tokenizer, load_sp as _load_sp  # noqa: F401 (re-exported)

APPEND_EOS = False
DEFAULT_SHARD_TOKENS = 100_000_000
DEFAULT_VAL_DOCS_CAP = 50_000  # the challenge's NUM_VAL_DOCS
SP_MAX_SENTENCE_LENGTH = 4192  # SentencePiece's default; longer training "sentences" (documents) are ignored

# The challenge's trainer options (download_hf_docs_and_tokenize.py, build_sentencepiece_tokenizer).
CHALLENGE_SP_OPTIONS: dict = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
}

# --------------------------------------------------------------------------------------------------
# Tokenizer


def _sp_training_text(docs: Iterable[str], counter: dict) -> Iterator[str]:
    for doc in docs:
        text = doc.replace("\x00", " ").strip()
        if not text:
            continue
        counter["docs"] += 1
        if len(text.encode("utf-8")) > counter["max_sentence_length"]:
            counter["too_long"] += 1
        yield text


def train_sentencepiece(
    docs: Iterable[str],
    vocab_size: int,
    model_prefix: str | os.PathLike,
    input_sentence_size: int = 0,
    verbose: bool = False,
    **overrides,
) -> Path:
    """Train a SentencePiece BPE with the challenge's options; return the `.model` path.

    Training text: each document with NUL replaced by a space and stripped, empty ones skipped, streamed to
    the trainer (sentence_iterator), one document per "sentence".  `input_sentence_size=0` uses every
    document, as the challenge did; a positive value makes SentencePiece sample that many.  `overrides`
    are merged into the trainer options last (the challenge's per-spec `trainer_overrides`).  Note that
    SentencePiece ignores documents longer than `max_sentence_length` bytes (default 4192), as it did in the
    challenge; a warning says how many.  If the trained model has no standalone "▁" piece the training is
    redone once with `required_chars` including "▁" (never `user_defined_symbols`, which would stop "▁"
    from merging into "▁the"); the result is always checked with `check_tokenizer`.
    """
    import sentencepiece as spm

    vocab_size = int(vocab_size)
    if vocab_size > MAX_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} exceeds {MAX_VOCAB}: ids must fit the uint16 shards")
    if vocab_size <= 256 + 4 and overrides.get("byte_fallback", True):
        raise ValueError(f"vocab_size {vocab_size} is too small: 256 byte-fallback pieces and 4 specials come first")
    prefix = Path(model_prefix)
    if prefix.suffix == ".model":
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    model_path = prefix.parent / (prefix.name + ".model")

    options = dict(CHALLENGE_SP_OPTIONS, vocab_size=vocab_size, input_sentence_size=int(input_sentence_size))
    options.update(overrides)
    max_len = int(options.get("max_sentence_length", SP_MAX_SENTENCE_LENGTH))

    spool: Path | None = None
    if iter(docs) is docs:
        # A one-shot iterator: keep the cleaned training text in a temp file so a retry can read it again.
        fd, name = tempfile.mkstemp(prefix=prefix.name + ".", suffix=".sptrain.jsonl", dir=prefix.parent)
        spool = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for doc in docs:
                text = doc.replace("\x00", " ").strip()
                if text:
                    f.write(json.dumps(text, ensure_ascii=False) + "\n")

        def source() -> Iterator[str]:
            with open(spool, encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)
    else:
        def source() -> Iterator[str]:
            return iter(docs)

    def run(opts: dict) -> tuple[bytes, dict]:
        counter = {"docs": 0, "too_long": 0, "max_sentence_length": max_len}
        writer = io.BytesIO()  # no model_prefix: the model bytes do not embed the output path
        opts = {"minloglevel": 0 if verbose else 2, **opts}  # log level is not stored in the model
        spm.SentencePieceTrainer.train(
            sentence_iterator=_sp_training_text(source(), counter), model_writer=writer, **opts
        )
        if counter["docs"] == 0:
            raise ValueError("no non-empty documents to train the tokenizer on")
        return writer.getvalue(), counter

    try:
        proto, counter = run(options)
        sp = spm.SentencePieceProcessor(model_proto=proto)
        if int(sp.piece_to_id(SPACE_PIECE)) == int(sp.unk_id()):
            print(
                f"[export] tokenizer has no standalone {SPACE_PIECE!r} piece; retraining with required_chars+='{SPACE_PIECE}'",
                file=sys.stderr,
            )
            options["required_chars"] = str(options.get("required_chars", "")) + SPACE_PIECE
            proto, counter = run(options)
            sp = spm.SentencePieceProcessor(model_proto=proto)
    finally:
        if spool is not None:
            spool.unlink(missing_ok=True)
    if counter["too_long"]:
        print(
            f"[export] warning: {counter['too_long']} of {counter['docs']} training documents are longer than "
            f"max_sentence_length={max_len} bytes and were ignored by SentencePiece (pass max_sentence_length=... "
            "or --max-sentence-length to include them; the challenge kept the default)",
            file=sys.stderr,
        )
    check_tokenizer(sp, require_byte_fallback=bool(options.get("byte_fallback", True)))
    vocab_text = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.vocab_size()))
    _atomic_write(model_path.with_suffix(".vocab"), vocab_text.encode("utf-8"))  # same format as SentencePiece's
    _atomic_write(model_path, proto)
    return model_path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Shards


def write_shard(path: str | os.PathLike, tokens) -> int:
    """Write token ids as one shard; returns the number of bytes written.

    Refuses ids that do not fit uint16 and shards over 2^31 tokens instead of wrapping silently.
    The file is written beside its destination and renamed, so a crash never leaves half a shard.
    """
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"shard tokens must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"shard tokens must be integer ids, got dtype {arr.dtype}")
    if arr.size > MAX_SHARD_TOKENS:
        raise ValueError(f"shard of {arr.size} tokens exceeds the format's limit of {MAX_SHARD_TOKENS}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= MAX_VOCAB):
        raise ValueError(
            f"token ids must lie in [0, {MAX_VOCAB}) to fit uint16; got range [{int(arr.min())}, {int(arr.max())}]"
        )
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(arr.astype("<u2", copy=False).tobytes())
    os.replace(tmp, path)
    return HEADER_BYTES + 2 * arr.size


class _SplitWriter:
    """Packs one split's token stream into fixed-size shards (documents may straddle two shards)."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.chunks: list[np.ndarray] = []
        self.fill = 0
        self.files: list[str] = []
        self.tokens = 0

    def add(self, arr: np.ndarray) -> None:
        pos, n = 0, arr.size
        self.tokens += n
        while pos < n:
            take = min(self.shard_tokens - self.fill, n - pos)
            self.chunks.append(arr[pos : pos + take])
            self.fill += take
            pos += take
            if self.fill == self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if self.fill == 0:
            return
        name = f"fineweb_{self.split}_{len(self.files):06d}.bin"
        data = self.chunks[0] if len(self.chunks) == 1 else np.concatenate(self.chunks)
        write_shard(self.out_dir / name, data)
        self.files.append(name)
        self.chunks, self.fill = [], 0


def _existing_outputs(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    found = sorted(out_dir.glob("fineweb_train_*.bin")) + sorted(out_dir.glob("fineweb_val_*.bin"))
    if (out_dir / "manifest.json").exists():
        found.append(out_dir / "manifest.json")
    return found


def _rel(path: Path, root: Path) -> str:
    path, root = Path(path).resolve(), Path(root).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _batched(it: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(it)
    while batch := list(itertools.islice(it, n)):
        yield batch


def export_dataset(
    docs: Iterable[str],
    tokenizer_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_docs: int,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    *,
    batch_docs: int = 1024,
    num_threads: int | None = None,
    source: dict | None = None,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Encode `docs` into `out_dir/fineweb_{val,train}_XXXXXX.bin` + `out_dir/manifest.json`; return the manifest.

    Each document becomes [BOS=1] + sp.encode(raw text) (no EOS).  The first `val_docs` documents are the
    validation split, the rest the training split; each split is cut into shards of `shard_tokens` tokens
    (its last shard shorter).  Everything is written to a staging folder first, so a failure leaves
    `out_dir` as it was.  Refuses: a vocabulary over 65,536, `val_docs` < 1 (an empty val split), `val_docs`
    >= the number of documents (an empty train split), and an `out_dir` that already holds shards or a
    manifest unless `overwrite=True` (then the old `fineweb_train_*`/`fineweb_val_*` files are replaced).
    `source` is stored in the manifest as `docs_meta`; `name` is the dataset's name there (default: the
    folder's name).
    """
    out_dir = Path(out_dir)
    tokenizer_path = Path(tokenizer_path)
    val_docs = int(val_docs)
    shard_tokens = int(shard_tokens)
    if val_docs < 1:
        raise ValueError(f"val_docs must be at least 1 (got {val_docs}): an empty validation split cannot be scored")
    if not 0 < shard_tokens <= MAX_SHARD_TOKENS:
        raise ValueError(f"shard_tokens must be in [1, {MAX_SHARD_TOKENS}], got {shard_tokens}")
    if hasattr(docs, "__len__") and val_docs >= len(docs):  # type: ignore[arg-type]
        raise ValueError(
            f"val_docs={val_docs} leaves no training documents (only {len(docs)} documents); lower val_docs"  # type: ignore[arg-type]
        )
    existing = _existing_outputs(out_dir)
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds an export ({', '.join(p.name for p in existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); refusing to overwrite it (pass overwrite=True / --overwrite)"
        )
    sp = _load_sp(tokenizer_path)
    vocab_size = int(sp.vocab_size())
    if vocab_size > MAX_VOCAB:
        raise ValueError(f"tokenizer vocab_size {vocab_size} exceeds {MAX_VOCAB}: ids would not fit uint16 shards")
    check_tokenizer(sp, require_byte_fallback=False)
    n_bytes = sum(1 for i in range(vocab_size) if sp.is_byte(i))
    if n_bytes != 256:
        print(f"[export] warning: tokenizer has no byte fallback ({n_bytes}/256 byte pieces); unknown text maps to UNK",
              file=sys.stderr)
    bos_id, eos_id = int(sp.bos_id()), int(sp.eos_id())
    threads = int(num_threads or os.cpu_count() or 1)

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".export-staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    ok = False
    try:
        writers = {"val": _SplitWriter(staging, "val", shard_tokens), "train": _SplitWriter(staging, "train", shard_tokens)}
        counts = {"val": 0, "train": 0}
        nbytes = {"val": 0, "train": 0}
        seen = 0
        for batch in _batched(docs, batch_docs):
            encoded = sp.encode(batch, out_type=int, num_threads=threads)
            n_val = max(0, min(len(batch), val_docs - seen))
            for split, lo, hi in (("val", 0, n_val), ("train", n_val, len(batch))):
                if lo == hi:
                    continue
                if split == "train" and writers["val"].fill:
                    writers["val"].flush()  # splits never share a shard
                ids = encoded[lo:hi]
                total = sum(len(x) for x in ids) + (hi - lo)
                arr = np.fromiter(
                    itertools.chain.from_iterable(itertools.chain((bos_id,), x) for x in ids), dtype=np.uint16, count=total
                )
                writers[split].add(arr)
                counts[split] += hi - lo
                nbytes[split] += sum(len(t.encode("utf-8")) for t in batch[lo:hi])
            seen += len(batch)
            if progress is not None:
                progress(f"{seen} docs, {writers['val'].tokens + writers['train'].tokens} tokens")
        writers["val"].flush()
        writers["train"].flush()
        if seen == 0:
            raise ValueError("no documents to export")
        if counts["train"] == 0:
            raise ValueError(
                f"val_docs={val_docs} leaves no training documents (only {seen} documents); lower val_docs"
            )

        stats = {
            "docs_total": seen,
            "docs_val": counts["val"],
            "docs_train": counts["train"],
            "files_total": len(writers["val"].files) + len(writers["train"].files),
            "files_val": len(writers["val"].files),
            "files_train": len(writers["train"].files),
            "tokens_total": writers["val"].tokens + writers["train"].tokens,
            "tokens_val": writers["val"].tokens,
            "tokens_train": writers["train"].tokens,
            "bytes_total": nbytes["val"] + nbytes["train"],  # raw UTF-8 bytes of the documents (not in the challenge)
            "bytes_val": nbytes["val"],
            "bytes_train": nbytes["train"],
        }
        tok_name = f"sp_bpe_{vocab_size}"
        tok_entry = {
            "name": tok_name,
            "kind": "sentencepiece_bpe",
            "vocab_size": vocab_size,
            "bos_id": bos_id,
            "eos_id": eos_id,
            "pad_id": int(sp.pad_id()),
            "unk_id": int(sp.unk_id()),
            "model_path": _rel(tokenizer_path, out_dir),
            "sha256": hashlib.sha256(tokenizer_path.read_bytes()).hexdigest(),  # the trainer checks TOKENIZER_PATH against it
        }
        vocab_file = tokenizer_path.with_suffix(".vocab")
        if vocab_file.is_file():
            tok_entry["vocab_path"] = _rel(vocab_file, out_dir)
        manifest = {
            "version": "custom",
            "num_docs": seen,
            "num_val_docs": counts["val"],
            "shuffle_seed": None,
            "shard_size": shard_tokens,
            "append_eos": APPEND_EOS,
            "docs_jsonl": None,
            "docs_meta": source or {},
            "tokenizer_specs": [],
            "tokenizers": [tok_entry],
            "datasets": [
                {
                    "name": name or out_dir.resolve().name,
                    "tokenizer_name": tok_name,
                    "tokenizer_kind": "sentencepiece_bpe",
                    "path": ".",
                    "train_glob": "fineweb_train_*.bin",
                    "val_glob": "fineweb_val_*.bin",
                    "vocab_size": vocab_size,
                    "bos_id": bos_id,
                    "eos_id": eos_id,
                    "recommended_bigram_vocab_size": math.ceil(vocab_size / 128) * 128 * 5,
                    "stats": stats,
                }
            ],
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

        # Commit: drop the old export (only reached with overwrite=True), move the new files in.
        for old in _existing_outputs(out_dir):
            old.unlink()
        for fname in writers["val"].files + writers["train"].files + ["manifest.json"]:
            os.replace(staging / fname, out_dir / fname)
        ok = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not ok and not any(out_dir.iterdir()):
            out_dir.rmdir()
    return manifest


# --------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data.export",
        description="Tokenize your own text into the challenge's shard layout (fineweb_{val,train}_XXXXXX.bin + manifest.json).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="local files read in the order given: .jsonl .json .parquet .arrow .csv "
                     ".txt .md (optionally .gz/.zst), or a folder written by Dataset.save_to_disk")
    src.add_argument("--hf-dataset", metavar="NAME", help="a dataset `datasets.load_dataset` finds (e.g. HuggingFaceFW/fineweb), streamed; needs --max-docs")
    p.add_argument("--hf-config", default=None, help="--hf-dataset: the configuration (subset) name, e.g. sample-10BT")
    p.add_argument("--split", default="train", help="--hf-dataset: the split to read (default: train)")
    p.add_argument("--max-docs", type=int, default=None, help="read at most the first N documents")
    p.add_argument("--out", required=True, help="output folder for the shards, manifest and (trained) tokenizer")
    tok = p.add_mutually_exclusive_group(required=True)
    tok.add_argument("--vocab-size", type=int, help="train a SentencePiece BPE of this size (on the train docs) into OUT/tokenizer_V_bpe.model")
    tok.add_argument("--tokenizer", help="use an existing SentencePiece .model")
    p.add_argument("--val-docs", type=int, default=None,
                   help=f"the first N documents form the val split (default: a tenth of the documents, at most {DEFAULT_VAL_DOCS_CAP})")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard (default 10^8)")
    p.add_argument("--text-field", default="text", help="field (column) holding the text in structured inputs (default: text)")
    p.add_argument("--txt-split", choices=TXT_SPLITS, default="blank",
                   help=".txt inputs: documents separated by blank lines (default), one per line, or one per file")
    p.add_argument("--tokenizer-train-docs", type=int, default=None, help="train the tokenizer on at most the first N train documents")
    p.add_argument("--max-sentence-length", type=int, default=None,
                   help=f"SentencePiece ignores training documents longer than this many bytes (default {SP_MAX_SENTENCE_LENGTH}, as in the challenge)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export (and trained tokenizer) in OUT")
    return p


def _check_args(args, out_dir: Path) -> None:
    """Every argument problem that can be seen before reading anything: one ValueError naming the fix."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is an existing file; give a folder (it is created if missing)")
    for name in ("max_docs", "tokenizer_train_docs", "max_sentence_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.hf_dataset and args.max_docs is None:
        raise ValueError("--hf-dataset needs --max-docs N (a hub dataset may hold billions of documents)")
    if args.val_docs is not None and args.val_docs < 1:
        raise ValueError(f"--val-docs must be at least 1 (got {args.val_docs}): an empty validation split cannot be scored")
    if not 0 < args.shard_tokens <= MAX_SHARD_TOKENS:
        raise ValueError(f"--shard-tokens must be in [1, {MAX_SHARD_TOKENS}], got {args.shard_tokens}")
    if args.vocab_size is not None and not 256 + 4 < args.vocab_size <= MAX_VOCAB:
        raise ValueError(f"--vocab-size must be in [261, {MAX_VOCAB}] (256 byte pieces and 4 specials come first; "
                         f"ids must fit the uint16 shards), got {args.vocab_size}")
    if args.tokenizer is not None:
        _load_sp(args.tokenizer)
    if args.input:
        for path in args.input:
            check_input(Path(path))


def _spool_hub(args, folder: Path) -> Path:
    """Stream the hub documents once into a local JSON-lines file, which the export then reads (three passes)."""
    spool = folder / "hub_documents.jsonl"
    with open(spool, "w", encoding="utf-8") as f:
        for doc in iter_documents([], args.text_field, hf_dataset=args.hf_dataset, hf_config=args.hf_config,
                                  split=args.split, max_docs=args.max_docs):
            f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    return spool


def _export(args, out_dir: Path, spool_dir: Path) -> tuple[dict, Path]:
    if args.hf_dataset:
        inputs, text_field = [_spool_hub(args, spool_dir)], "text"
        origin = {"hf_dataset": args.hf_dataset, "hf_config": args.hf_config, "split": args.split, "text_field": args.text_field}
    else:
        inputs, text_field = args.input, args.text_field
        origin = {"inputs": [str(Path(p).resolve()) for p in inputs], "text_field": text_field, "txt_split": args.txt_split}
    if args.max_docs is not None:
        origin["max_docs"] = args.max_docs
    all_docs = DocumentSource(inputs, text_field, args.txt_split, limit=args.max_docs)
    existing = _existing_outputs(out_dir)
    tok_path = Path(args.tokenizer) if args.tokenizer else out_dir / f"tokenizer_{args.vocab_size}_bpe.model"
    if args.vocab_size is not None and tok_path.exists():
        existing.append(tok_path)
    if existing and not args.overwrite:
        raise FileExistsError(
            f"{out_dir} already holds {', '.join(p.name for p in existing[:3])}{', ...' if len(existing) > 3 else ''}; "
            "refusing to overwrite (pass --overwrite, or choose another --out)"
        )
    n_docs = _count(all_docs)
    where = args.hf_dataset or ", ".join(args.input)
    if n_docs < 2:
        raise ValueError(f"need at least 2 documents (one val, one train), found {n_docs} in {where}")
    val_docs = args.val_docs if args.val_docs is not None else min(DEFAULT_VAL_DOCS_CAP, max(1, n_docs // 10))
    if val_docs >= n_docs:
        raise ValueError(f"--val-docs {val_docs} leaves no training documents ({n_docs} documents in total); lower --val-docs")
    print(f"[export] {n_docs} documents: {val_docs} val, {n_docs - val_docs} train", flush=True)

    trained: list[Path] = []
    try:
        if args.vocab_size is not None:
            t1 = time.time()
            train_docs = DocumentSource(inputs, text_field, args.txt_split, skip=val_docs,
                                        limit=min(n_docs - val_docs, args.tokenizer_train_docs or n_docs))
            extra = {} if args.max_sentence_length is None else {"max_sentence_length": args.max_sentence_length}
            out_dir.mkdir(parents=True, exist_ok=True)
            trained = [tok_path, tok_path.with_suffix(".vocab")]
            try:
                train_sentencepiece(train_docs, args.vocab_size, tok_path, **extra)
            except RuntimeError as e:  # SentencePiece's own refusals, e.g. a vocabulary too large for the text
                raise ValueError(f"SentencePiece training failed ({' '.join(str(e).split())[:300]}); "
                                 "change --vocab-size as it says, or give more text") from None
            print(f"[export] trained {tok_path} in {time.time() - t1:.1f}s", flush=True)

        def progress(msg: str, _last=[time.time()]) -> None:
            if time.time() - _last[0] > 10:
                _last[0] = time.time()
                print(f"[export] {msg}", flush=True)

        manifest = export_dataset(all_docs, tok_path, out_dir, val_docs, args.shard_tokens, overwrite=args.overwrite,
                                  source=origin, progress=progress)
    except BaseException:
        if not args.overwrite:  # a tokenizer trained by this failed run is ours to remove; an older one was refused above
            for p in trained:
                p.unlink(missing_ok=True)
        raise
    return manifest, tok_path


def _count(docs: Iterable[str]) -> int:
    return sum(1 for _ in docs)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out)
    t0 = time.time()
    created = not out_dir.exists()
    try:
        _check_args(args, out_dir)
        with tempfile.TemporaryDirectory(prefix="export-hub-") as spool_dir:
            manifest, tok_path = _export(args, out_dir, Path(spool_dir))
    except (ValueError, OSError, KeyboardInterrupt) as e:  # DocumentError, TokenizerCheckError, FileExistsError, ...
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a folder this run made and left empty
        if isinstance(e, KeyboardInterrupt):
            print("error: interrupted; nothing was written to --out (run the same command again)", file=sys.stderr)
            return 130
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename} (check the path and its permissions)"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    s = manifest["datasets"][0]["stats"]
    print(f"[export] tokenizer: {tok_path} (vocab {manifest['datasets'][0]['vocab_size']})")
    print(f"[export] val:   {s['docs_val']} docs, {s['tokens_val']} tokens, {s['files_val']} shard(s), {s['bytes_val']} bytes")
    print(f"[export] train: {s['docs_train']} docs, {s['tokens_train']} tokens, {s['files_train']} shard(s), {s['bytes_train']} bytes")
    print(f"[export] wrote {out_dir / 'manifest.json'} in {time.time() - t0:.1f}s; DATA_PATH={out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
