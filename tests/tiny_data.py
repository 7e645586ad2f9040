"""A tiny offline dataset for trainer tests: a byte-fallback tokenizer trained on Python's help topics."""
from __future__ import annotations

import random
from pathlib import Path

from data.export import export_dataset, train_sentencepiece

TINY_VOCAB = 512


def english_docs(n_docs: int = 400, seed: int = 0) -> list[str]:
    """Paragraphs of Python's own documentation (pydoc topics), with a few non-ASCII characters mixed in."""
    from pydoc_data.topics import topics

    paras = [p.strip() for text in topics.values() for p in text.split("\n\n") if len(p.strip()) > 40]
    random.Random(seed).shuffle(paras)
    docs = paras[:n_docs]
    docs[3] = docs[3] + " Café — naïve façade ≥ 10 € 🙂"
    return docs


def build_tiny_dataset(root: Path, val_docs: int = 40) -> tuple[Path, Path]:
    """(data_path, tokenizer_path): BOS + tokens per doc, first `val_docs` docs are validation, 2 train shards."""
    docs = english_docs()
    model = train_sentencepiece(docs[val_docs:], TINY_VOCAB, root / "tiny")
    data = root / "shards"
    export_dataset(docs, model, data, val_docs=val_docs, shard_tokens=30_000)
    return data, model
