"""The study's data: WikiText-2 from ../shared/data/text exported once into a cache folder outside the repository
(the first 400 paragraphs of the validation file are the val split, the rest of valid + test is training text),
or the offline sample dataset when ../shared is absent (and always in --quick). Each run records which one."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WIKITEXT_DIR = ROOT.parent / "shared" / "data" / "text"
WIKITEXT_FILES = ("wikitext2_valid.txt", "wikitext2_test.txt")
VAL_DOCS = 400
CACHE = Path(os.environ.get("CLAIMS_DATA_CACHE", Path.home() / ".cache" / "parameter-golf-claims"))


@dataclass(frozen=True)
class Dataset:
    name: str  # e.g. wikitext2-sp1024 or sample-sp1024
    data_path: Path
    tokenizer_path: Path
    vocab: int

    @property
    def fingerprint(self) -> str:
        """Short hash of the manifest: two runs with the same fingerprint trained and scored on the same tokens."""
        return hashlib.sha1((self.data_path / "manifest.json").read_bytes()).hexdigest()[:10]

    def knobs(self) -> dict[str, str]:
        return {"DATA_PATH": str(self.data_path), "TOKENIZER_PATH": str(self.tokenizer_path), "VOCAB_SIZE": str(self.vocab)}

    def to_json(self) -> dict:
        return {"name": self.name, "data_path": str(self.data_path), "fingerprint": self.fingerprint, "vocab": self.vocab}


def wikitext_available() -> bool:
    return all((WIKITEXT_DIR / f).is_file() for f in WIKITEXT_FILES)


def wikitext(vocab: int) -> Dataset:
    """WikiText-2 shards with a BPE of `vocab` trained on the training paragraphs (exported on first use)."""
    from data.export import main as export_main

    out = CACHE / f"wikitext2-sp{vocab}"
    tok = out / f"tokenizer_{vocab}_bpe.model"
    if not (out / "manifest.json").is_file():
        rc = export_main(["--input", *(str(WIKITEXT_DIR / f) for f in WIKITEXT_FILES), "--out", str(out),
                          "--vocab-size", str(vocab), "--val-docs", str(VAL_DOCS), "--overwrite"])
        if rc != 0:
            raise RuntimeError(f"exporting WikiText-2 to {out} failed (data.export exit code {rc})")
    return Dataset(f"wikitext2-sp{vocab}", out, tok, vocab)


def sample(vocab: int) -> Dataset:
    from data.sample import ensure_sample_dataset

    s = ensure_sample_dataset(vocab_size=vocab)
    return Dataset(f"sample-sp{vocab}", Path(s.data_path), Path(s.tokenizer_path), vocab)


def study_dataset(vocab: int, quick: bool) -> Dataset:
    return wikitext(vocab) if wikitext_available() and not quick else sample(vocab)
