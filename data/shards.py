"""The challenge's token shard format: a 256 x int32 little-endian header
(magic 20240520, version 1, token count) followed by that many uint16 token ids. Reading and checking them; the
one writer of shards is data.export (`write_shard`), a builder a record does not ship."""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_SHARD_TOKENS = 2**31 - 1
MAX_VOCAB = 2**16  # ids are stored as uint16
SHARD_NAME = re.compile(r"fineweb_(train|val)_(\d{6})\.bin")  # the canonical names; a split's glob must match only these


class ShardFormatError(ValueError):
    """A file that is not a valid shard; the message names the file and what is wrong."""


def read_header(path: str | os.PathLike) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    if not path.is_file():
        raise ShardFormatError(f"{path}: no such shard file" + (" (it is a folder)" if path.is_dir() else ""))
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardFormatError(
            f"{path}: {size} bytes is shorter than the {HEADER_BYTES}-byte shard header; "
            "the file is truncated or not a shard (re-export or re-download it)"
        )
    try:
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    except OSError as e:
        raise ShardFormatError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    if int(header[0]) != SHARD_MAGIC:
        raise ShardFormatError(
            f"{path}: bad shard magic {int(header[0])} (expected {SHARD_MAGIC}); "
            "this is not a parameter-golf token shard (write shards with `python -m data.export`)"
        )
    if int(header[1]) != SHARD_VERSION:
        raise ShardFormatError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    n = int(header[2])
    if n < 0:
        raise ShardFormatError(f"{path}: negative token count {n} in header")
    expected = HEADER_BYTES + 2 * n
    if size != expected:
        raise ShardFormatError(
            f"{path}: size mismatch, header says {n} tokens ({expected} bytes) but the file has {size} bytes; "
            "it is truncated or padded (re-export or re-download it)"
        )
    return n


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Read one shard as a uint16 array after validating header, magic, version and size."""
    n = read_header(path)
    tokens = np.fromfile(path, dtype="<u2", count=n, offset=HEADER_BYTES)
    if tokens.size != n:
        raise ShardFormatError(f"{path}: short read, got {tokens.size} of {n} tokens")
    return tokens


def list_shards(pattern: str) -> list[Path]:
    """Shards matching a glob in sorted order, without CaseOps byte sidecars (`*_bytes_*`).

    For a split's glob (fineweb_val_*.bin, fineweb_train_*.bin) every match must have a canonical name: a stray
    fineweb_val_000000_old.bin would otherwise be read as part of the split."""
    files = [Path(p) for p in sorted(glob.glob(pattern)) if "_bytes_" not in Path(p).name]
    if not files:
        raise FileNotFoundError(
            f"no shards match {pattern!r}; set DATA_PATH to a folder of fineweb_train_*.bin / fineweb_val_*.bin "
            "(python -m data.download, or python -m data.export for your own text)"
        )
    split = re.fullmatch(r"fineweb_(train|val)_\*\.bin", Path(pattern).name)
    odd = [p.name for p in files if split and not SHARD_NAME.fullmatch(p.name)]
    if odd:
        raise ShardFormatError(
            f"{files[0].parent} holds {', '.join(odd[:3])}{' ...' if len(odd) > 3 else ''}, not a canonical shard name "
            f"(fineweb_{split.group(1)}_NNNNNN.bin) but matched by {Path(pattern).name}, so it would be read as part of the "
            f"{split.group(1)} split: move it out of that folder"
        )
    return files


def load_tokens(pattern: str) -> np.ndarray:
    """All tokens of the shards matching `pattern`, concatenated in sorted order."""
    return np.concatenate([read_shard(f) for f in list_shards(pattern)])
