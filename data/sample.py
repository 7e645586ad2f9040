"""The offline sample dataset behind the default run: English text every Python install already has.

Corpus: the help topics of `pydoc_data.topics` (one document per topic) and, for each module of the Python
standard library's `.py` sources (sorted paths; test/, tests/, idlelib/ and site-packages/ skipped), one
document made of its module, class and function docstrings, read with `ast` (nothing is imported).  The
documents are shuffled with a fixed seed; the first ones, about 8% of the text but at most ~60k tokens'
worth, are the val split.  A SentencePiece BPE (the challenge's options) is trained on the train documents
only, then everything is exported with `data.export` into the challenge's shard layout.

The result is cached outside git, in `$PARAMETER_GOLF_CACHE` or `~/.cache/parameter-golf/`, in a folder
named after the format version, the vocabulary size and a hash of the Python (and SentencePiece) version.
It is built in a temp folder and renamed into place under an fcntl lock, so concurrent torchrun ranks
build it once.

    from data.sample import ensure_sample_dataset
    ds = ensure_sample_dataset()          # SampleDataset(data_path=..., tokenizer_path=..., vocab_size=1024, built=...)
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import shutil
import sys
import sysconfig
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SAMPLE_VERSION = "v1"  # bump when the corpus, split or export changes
SHUFFLE_SEED = 1337
VAL_FRACTION = 0.08
VAL_MAX_CHARS = 160_000  # ~60k tokens: sp1024 gets ~2.75 bytes/token on this text
MIN_CORPUS_CHARS = 200_000
SKIP_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "__pycache__"})
MARKER = "sample.json"  # written last: its presence means the folder is complete


@dataclass(frozen=True)
class SampleDataset:
    data_path: Path  # folder with fineweb_train_*.bin / fineweb_val_*.bin / manifest.json (DATA_PATH)
    tokenizer_path: Path  # SentencePiece .model (TOKENIZER_PATH)
    vocab_size: int
    built: bool  # True if this call built it, False if it came from the cache


# --------------------------------------------------------------------------------------------------
# Corpus


def _docstrings(tree: ast.AST) -> Iterator[str]:
    """Module, class and function docstrings in source order."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        children = [c for c in ast.iter_child_nodes(node) if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.If, ast.Try))]
        stack.extend(reversed(children))


def stdlib_sources(stdlib: str | os.PathLike | None = None) -> list[Path]:
    """The standard library's .py files, sorted, outside test/, tests/, idlelib/ and site-packages/."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def module_document(path: Path) -> str:
    """One module's docstrings joined by blank lines ('' if it has none or does not parse)."""
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for invalid escapes in old sources
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return ""
    return "\n\n".join(_docstrings(tree))


def topic_documents() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return []
    return [topics[k].strip() for k in sorted(topics) if topics[k].strip()]


def sample_documents() -> tuple[list[str], list[str]]:
    """The deterministic (val_docs, train_docs) split of the sample corpus."""
    docs = topic_documents()
    docs += [d for d in map(module_document, stdlib_sources()) if d.strip()]
    total = sum(len(d) for d in docs)
    if total < MIN_CORPUS_CHARS:
        raise RuntimeError(
            f"only {total} characters of documentation found in this Python install "
            f"({sysconfig.get_paths()['stdlib']}); the sample dataset needs the stdlib .py sources. "
            "Export your own text with `python -m data.export` instead."
        )
    random.Random(SHUFFLE_SEED).shuffle(docs)
    budget = min(VAL_FRACTION * total, VAL_MAX_CHARS)
    n_val, acc = 0, 0
    while n_val < len(docs) - 1 and acc < budget:
        acc += len(docs[n_val])
        n_val += 1
    return docs[:n_val], docs[n_val:]


def _corpus_hash(val: list[str], train: list[str]) -> str:
    h = hashlib.sha256()
    for split in (val, train):
        h.update(f"{len(split)}\n".encode())
        for d in split:
            b = d.encode("utf-8")
            h.update(f"{len(b)}\n".encode())
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Cache


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("PARAMETER_GOLF_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "parameter-golf"


def _env_hash() -> str:
    import sentencepiece

    key = f"{sys.implementation.name} {sys.version} sentencepiece={getattr(sentencepiece, '__version__', '?')}"
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def sample_dir_name(vocab_size: int) -> str:
    return f"sample-{SAMPLE_VERSION}-sp{int(vocab_size)}-py{_env_hash()}"


@contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _dataset(folder: Path, vocab_size: int, built: bool) -> SampleDataset:
    info = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    return SampleDataset(
        data_path=folder,
        tokenizer_path=folder / f"tokenizer_{vocab_size}_bpe.model",
        vocab_size=int(info["vocab_size"]),  # the trained size (SentencePiece may stop short on a small corpus)
        built=built,
    )


def _build(folder: Path, vocab_size: int, name: str) -> dict:
    from data.export import export_dataset, train_sentencepiece

    t0 = time.time()
    val, train = sample_documents()
    t_corpus = time.time() - t0
    model = train_sentencepiece(
        train,
        vocab_size,
        folder / f"tokenizer_{vocab_size}_bpe",
        # one document per module is often longer than SentencePiece's default 4192-byte sentence limit
        max_sentence_length=1 << 20,
    )
    t_tok = time.time() - t0 - t_corpus
    manifest = export_dataset(
        val + train,
        model,
        folder,
        val_docs=len(val),
        source={"name": "parameter-golf offline sample", "version": SAMPLE_VERSION, "shuffle_seed": SHUFFLE_SEED},
        name=name,
    )
    stats = manifest["datasets"][0]["stats"]
    info = {
        "version": SAMPLE_VERSION,
        "vocab_size": manifest["datasets"][0]["vocab_size"],
        "python": sys.version,
        "stdlib": sysconfig.get_paths()["stdlib"],
        "corpus_sha256": _corpus_hash(val, train),
        "docs_val": len(val),
        "docs_train": len(train),
        "tokens_val": stats["tokens_val"],
        "tokens_train": stats["tokens_train"],
        "bytes_val": stats["bytes_val"],
        "bytes_train": stats["bytes_train"],
        "seconds": {"corpus": round(t_corpus, 2), "tokenizer": round(t_tok, 2), "total": round(time.time() - t0, 2)},
    }
    (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def ensure_sample_dataset(cache_dir: str | os.PathLike | None = None, vocab_size: int = 1024) -> SampleDataset:
    """Return the cached sample dataset, building it first if needed (a few seconds to a minute, once)."""
    vocab_size = int(vocab_size)
    root = cache_root(cache_dir)
    folder = root / sample_dir_name(vocab_size)
    if (folder / MARKER).is_file():
        return _dataset(folder, vocab_size, built=False)
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{folder.name}.lock"):
        if (folder / MARKER).is_file():  # another process built it while we waited
            return _dataset(folder, vocab_size, built=False)
        if folder.exists():  # an incomplete folder (no marker) can only come from outside; rebuild it
            shutil.rmtree(folder)
        for stale in root.glob(f".{folder.name}.tmp-*"):  # left by a build that was killed; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        print(f"[sample] building the offline sample dataset in {folder} (once)", file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=root))
        try:
            info = _build(tmp, vocab_size, folder.name)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        print(
            f"[sample] {info['docs_train']} train docs / {info['tokens_train']} tokens, {info['docs_val']} val docs / "
            f"{info['tokens_val']} tokens, built in {info['seconds']['total']}s",
            file=sys.stderr,
            flush=True,
        )
    return _dataset(folder, vocab_size, built=True)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m data.sample", description="Build (or locate) the offline sample dataset.")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--vocab-size", type=int, default=1024)
    args = p.parse_args(argv)
    try:
        ds = ensure_sample_dataset(args.cache_dir, args.vocab_size)
    except (ValueError, OSError) as e:  # a vocabulary size SentencePiece refuses, a cache folder that is a file
        print(f"error: {e} (--vocab-size {args.vocab_size}, --cache-dir {args.cache_dir or cache_root()})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("data.sample: interrupted; nothing half-built is kept, rerun to build it", file=sys.stderr)
        return 130
    print(f"DATA_PATH={ds.data_path}\nTOKENIZER_PATH={ds.tokenizer_path}\nVOCAB_SIZE={ds.vocab_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
