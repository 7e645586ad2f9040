"""Do the shards, the tokenizer and the manifest belong together? Checked before training starts (`check_data`).

- `load_tokenizer`: the file is readable and a SentencePiece model that passes data.export's `check_tokenizer`
  (a standalone "▁" piece, BOS = 1); also its sha256.
- `split_shards`: a split's shards (canonical names only, data.shards.list_shards), val numbered 0..n-1 without gaps.
- `check_train_shards`: every train shard's header and size, and a sample of its token ids, before step 0.
- `find_manifest` + `check_manifest`: the manifest data.export writes (DATA_PATH/manifest.json) or the published
  layout (ROOT/manifest.json with ROOT/datasets/<name>) must agree with the shards found and name this tokenizer
  (by sha256, or by the file it points to).
- `roundtrip_probe`: with no manifest to ask, decode documents of the val split and re-encode them; ids made by
  another tokenizer do not come back, ids made by this one do.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.shards import HEADER_BYTES, SHARD_NAME, ShardFormatError, list_shards, read_header, read_shard
from data.tokenizer import SPACE_PIECE, TokenizerCheckError, check_tokenizer

RANGE_SAMPLE_BLOCKS, RANGE_BLOCK_TOKENS = 16, 65_536  # token ids looked at per train shard before step 0: <= 1M
PROBE_MAX_TOKENS, PROBE_MIN_DOCS, PROBE_MIN_MATCH = 200_000, 8, 0.5


class DataError(ValueError):
    """Inputs that do not belong together or cannot be read; the message names the file and the fix."""


def load_tokenizer(path: str | Path):
    """(SentencePieceProcessor, sha256 of the file) after checking it can be read and used for bpb."""
    import sentencepiece as spm

    path = Path(path)
    fix = "(python -m data.download fetches the challenge's; python -m data.export trains one)"
    if path.suffix != ".model" or not path.is_file():
        raise DataError(f"TOKENIZER_PATH={path} is not an existing SentencePiece .model file {fix}")
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"TOKENIZER_PATH={path} cannot be read ({e.strerror}); check its permissions") from None
    try:
        sp = spm.SentencePieceProcessor(model_proto=blob)
    except (RuntimeError, OSError, TypeError):
        raise DataError(f"TOKENIZER_PATH={path} is not a SentencePiece model (its bytes do not parse as one) {fix}") from None
    try:  # BOS = 1, a standalone "▁" (else val_bpb comes out ~20% too good), ids that fit uint16
        check_tokenizer(sp, require_byte_fallback=False)
    except TokenizerCheckError as e:
        raise DataError(f"TOKENIZER_PATH={path}: {e}") from None
    return sp, hashlib.sha256(blob).hexdigest()


def split_shards(data_path: str | Path, split: str) -> list[Path]:
    """The shards of `split` in DATA_PATH, refusing names that are not canonical and gaps in the val numbering."""
    files = list_shards(str(Path(data_path) / f"fineweb_{split}_*.bin"))
    if split == "val":
        numbers = [shard_index(p) for p in files]
        if numbers != list(range(len(numbers))):
            missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
            raise DataError(f"the val shards in {data_path} are numbered {numbers[:5]}...: fineweb_val_{missing[0]:06d}.bin is "
                            "missing, so this is not the whole val split (re-download or re-export it)")
    return files


def shard_index(path: Path) -> int:
    return int(SHARD_NAME.fullmatch(Path(path).name).group(2))


def check_token_range(path: Path, n_tokens: int, vocab_size: int) -> None:
    """Refuse a shard holding ids >= vocab_size, looking at ~1M ids spread over it (all of a smaller one): cheap for
    80 shards of 10^8 tokens, and a shard of another tokenizer has such ids everywhere. The loader checks every id."""
    if n_tokens == 0:
        return
    ids = np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n_tokens,))
    if n_tokens <= RANGE_SAMPLE_BLOCKS * RANGE_BLOCK_TOKENS:
        top = int(ids.max())
    else:
        starts = np.linspace(0, n_tokens - RANGE_BLOCK_TOKENS, RANGE_SAMPLE_BLOCKS).astype(np.int64)
        top = max(int(ids[s : s + RANGE_BLOCK_TOKENS].max()) for s in starts)
    if top >= vocab_size:
        raise ShardFormatError(f"{path}: holds token id {top} >= VOCAB_SIZE={vocab_size}; the shard was made with another "
                               "tokenizer (re-export it, or set TOKENIZER_PATH/VOCAB_SIZE to the tokenizer that made it)")


def check_train_shards(files: list[Path], vocab_size: int) -> list[int]:
    """Token counts of the train shards after checking every header and size and a sample of each one's ids."""
    counts = [read_header(f) for f in files]
    if not any(counts):
        raise ShardFormatError(f"every train shard in {files[0].parent} is empty; re-export the training split")
    for f, n in zip(files, counts):
        check_token_range(f, n, vocab_size)
    return counts


@dataclass
class Manifest:
    path: Path
    root: Path  # the folder that relative paths in the manifest start from
    dataset: dict
    tokenizer: dict | None
    shard_size: int | None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable JSON manifest ({e}); fix or remove it (python -m data.export writes one)") from None
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
        raise DataError(f"{path} is not a shard manifest (no 'datasets' list); remove it or re-export DATA_PATH")
    return data


def find_manifest(data_path: str | Path) -> Manifest | None:
    """DATA_PATH/manifest.json (data.export), else ROOT/manifest.json when DATA_PATH is ROOT/datasets/<name>
    (data.download and the challenge's layout); None when there is neither."""
    data_path = Path(data_path).resolve()
    own, public = data_path / "manifest.json", data_path.parent.parent / "manifest.json"
    if own.is_file():
        data, root = _read_json(own), data_path
        entries = [d for d in data["datasets"] if isinstance(d, dict) and (root / str(d.get("path", "."))).resolve() == data_path]
        entries = entries or [d for d in data["datasets"] if isinstance(d, dict)][:1]
    elif data_path.parent.name == "datasets" and public.is_file():
        data, root = _read_json(public), public.parent
        entries = [d for d in data["datasets"] if isinstance(d, dict) and d.get("name") == data_path.name]
    else:
        return None
    path = own if own.is_file() else public
    if not entries:
        raise DataError(f"{path} does not list the dataset {data_path.name}; DATA_PATH and the manifest disagree "
                        "(re-download or re-export)")
    entry = entries[0]
    toks = [t for t in data.get("tokenizers") or [] if isinstance(t, dict) and t.get("name") == entry.get("tokenizer_name")]
    size = data.get("shard_size")
    return Manifest(path, root, entry, toks[0] if toks else None, int(size) if isinstance(size, int) and size > 0 else None)


def check_manifest(m: Manifest, val_counts: dict[Path, int], train_counts: dict[Path, int], vocab_size: int,
                   tokenizer_path: str | Path, tokenizer_sha256: str) -> str | None:
    """Refuse shards or a tokenizer the manifest disagrees with; return how the tokenizer was verified, or None when
    the manifest cannot tell (no fingerprint and its tokenizer file is not there)."""
    ds, stats = m.dataset, m.dataset.get("stats") or {}
    where = f"{m.path} (dataset {ds.get('name')})"
    fix = "re-download or re-export the data, or point DATA_PATH at the folder the manifest describes"
    if ds.get("vocab_size") is not None and int(ds["vocab_size"]) != vocab_size:
        raise DataError(f"VOCAB_SIZE={vocab_size} but {where} says vocab_size={ds['vocab_size']}; set VOCAB_SIZE and "
                        "TOKENIZER_PATH to the tokenizer that made these shards")
    for split, counts in (("val", val_counts), ("train", train_counts)):
        n_files, n_tokens = stats.get(f"files_{split}"), stats.get(f"tokens_{split}")
        if not isinstance(n_files, int):
            continue
        found = len(counts)
        extra = [p.name for p in counts if shard_index(p) >= n_files]
        if extra or (split == "val" and found != n_files):
            raise DataError(f"{where} lists {n_files} {split} shards but DATA_PATH holds {found}"
                            + (f" (e.g. {extra[0]} is not part of it)" if extra else "") + f"; {fix}")
        for p, n in counts.items():
            if m.shard_size and shard_index(p) < n_files - 1 and n != m.shard_size:
                raise DataError(f"{p}: {n} tokens, but {where} makes every {split} shard but the last {m.shard_size} "
                                f"tokens long; {fix}")
        if found == n_files and isinstance(n_tokens, int) and sum(counts.values()) != n_tokens:
            raise DataError(f"{where} lists {n_tokens} {split} tokens but the {split} shards hold {sum(counts.values())}; {fix}")
    tok = m.tokenizer or {}
    if tok.get("sha256"):
        if tok["sha256"] != tokenizer_sha256:
            raise DataError(f"TOKENIZER_PATH={tokenizer_path} is not the tokenizer that made these shards: {where} names "
                            f"{tok.get('model_path', tok.get('name'))} with sha256 {tok['sha256'][:12]}..., this file has "
                            f"{tokenizer_sha256[:12]}...; set TOKENIZER_PATH to that tokenizer")
        return f"sha256 recorded in {m.path}"
    model = tok.get("model_path")
    if model and (m.root / model).is_file():
        theirs = hashlib.sha256((m.root / model).read_bytes()).hexdigest()
        if theirs != tokenizer_sha256:
            raise DataError(f"TOKENIZER_PATH={tokenizer_path} is not the tokenizer that made these shards: {where} names "
                            f"{m.root / model}, a different file; set TOKENIZER_PATH={m.root / model}")
        return f"same file as the one {m.path} names"
    return None


def _words(sp, ids: list[int]) -> list[tuple[int, ...]]:
    """ids grouped into words: a new word starts at each piece that begins with "▁"."""
    words: list[list[int]] = []
    for i in ids:
        if not words or sp.id_to_piece(i).startswith(SPACE_PIECE):
            words.append([])
        words[-1].append(i)
    return [tuple(w) for w in words]


def roundtrip_probe(sp, tokens: np.ndarray, bos_id: int = 1) -> tuple[int, int]:
    """(text runs whose ids are what `sp` makes of their decoded text, runs checked), over the first PROBE_MAX_TOKENS
    ids of `tokens`. A run is a document ([BOS] ids ... up to the next BOS) cut at each <unk>, which does not decode
    back. Its first and last words are left out: decoding drops the spaces at the ends of a run."""
    head = np.asarray(tokens[:PROBE_MAX_TOKENS])
    cuts = np.flatnonzero((head == bos_id) | (head == int(sp.unk_id())))
    matched = checked = 0
    for lo, hi in zip(cuts[:-1], cuts[1:]):  # whole runs only: the last one may be cut by PROBE_MAX_TOKENS
        ids = head[lo + 1 : hi].tolist()
        inner = _words(sp, ids)[1:-1]
        if not inner:
            continue
        checked += 1
        matched += _words(sp, sp.encode(sp.decode(ids)))[1 : 1 + len(inner)] == inner
    return matched, checked


@dataclass
class CheckedData:
    sp: object  # the SentencePieceProcessor
    tokenizer_sha256: str
    train_shards: list[Path]
    val_tokens: np.ndarray  # every val id, uint16
    verified: str  # how the tokenizer was matched to the shards ('' if nothing could tell)


def check_data(data_path: str | Path, tokenizer_path: str | Path, vocab_size: int, lengths: dict[str, int]) -> CheckedData:
    """Every check the trainer needs before step 0; `lengths` (knob name -> tokens) must fit in the val split."""
    sp, sha = load_tokenizer(tokenizer_path)
    if int(sp.vocab_size()) != vocab_size:
        raise DataError(f"VOCAB_SIZE={vocab_size} does not match the tokenizer's vocab_size={int(sp.vocab_size())} "
                        f"({tokenizer_path}); set VOCAB_SIZE={int(sp.vocab_size())} or use the matching tokenizer")
    if not Path(data_path).is_dir():
        raise DataError(f"DATA_PATH={data_path} is not a folder of fineweb_train_*.bin / fineweb_val_*.bin shards "
                        "(python -m data.download, or python -m data.export for your own text)")
    train_shards, val_shards = split_shards(data_path, "train"), split_shards(data_path, "val")
    train_counts = dict(zip(train_shards, check_train_shards(train_shards, vocab_size)))
    val_parts = [read_shard(f) for f in val_shards]
    val = np.concatenate(val_parts)
    where = Path(data_path) / "fineweb_val_*.bin"
    if val.size < 2:
        raise DataError(f"the validation split {where} holds {val.size} tokens; it needs at least 2 (export with --val-docs >= 1)")
    if int(val.max()) >= vocab_size:
        raise DataError(f"validation shards hold token id {int(val.max())} >= VOCAB_SIZE={vocab_size}; "
                        "the shards were made with another tokenizer")
    for name, length in lengths.items():
        if length > val.size - 1:
            raise DataError(f"{name}={length} is longer than the validation split ({val.size - 1} targets in {where}); lower {name}")
    manifest = find_manifest(data_path)
    verified = manifest and check_manifest(manifest, {f: p.size for f, p in zip(val_shards, val_parts)}, train_counts,
                                           vocab_size, tokenizer_path, sha)
    if not verified:  # nothing names the tokenizer: does it turn the val ids back into the same ids?
        matched, checked = roundtrip_probe(sp, val)
        if checked >= PROBE_MIN_DOCS and matched < PROBE_MIN_MATCH * checked:
            why = "no manifest in DATA_PATH" if manifest is None else f"{manifest.path} names no fingerprint"
            raise DataError(f"TOKENIZER_PATH={tokenizer_path} did not make these shards: only {matched} of {checked} val text "
                            f"runs re-encode to their own ids, as a tokenizer's own ids do ({why} to say which one did); "
                            "set TOKENIZER_PATH to the tokenizer the shards were made with")
        verified = f"roundtrip probe, {matched}/{checked} val text runs re-encode to their ids" if checked >= PROBE_MIN_DOCS else ""
    return CheckedData(sp, sha, train_shards, val, verified)
