"""What the harness assumes of a SentencePiece tokenizer, checked in one place (data.export when it writes shards,
the trainer's data checks before step 0). Small and dependency-free so a packed record ships it."""
from __future__ import annotations

from pathlib import Path

from data.shards import MAX_VOCAB

SPACE_PIECE = "\u2581"  # "▁", SentencePiece's whitespace marker
BOS_ID = 1


class TokenizerCheckError(ValueError):
    """A tokenizer that breaks an assumption of the harness (BOS id, standalone "▁", uint16 ids...)."""


def load_sp(tokenizer):
    import sentencepiece as spm

    if isinstance(tokenizer, spm.SentencePieceProcessor):
        return tokenizer
    path = Path(tokenizer)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer model not found: {path}")
    if path.suffix != ".model":
        raise ValueError(f"{path}: expected a SentencePiece .model file")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:  # unreadable, or not a ModelProto
        raise ValueError(f"{path} is not a readable SentencePiece model ({' '.join(str(e).split())[:200]}); "
                         "give a .model written by SentencePiece or train one with --vocab-size") from None


def check_tokenizer(sp, vocab_size: int | None = None, require_byte_fallback: bool = True):
    """Check the assumptions the harness makes about a SentencePiece tokenizer; return the processor.

    `sp` is a SentencePieceProcessor or a path to a `.model`.  Raises TokenizerCheckError when:
    BOS is not id 1 (the document separator in the shards), the vocabulary does not fit uint16,
    `vocab_size` is given and differs, there is no standalone "▁" piece (issue #897: a space would be
    encoded as 3 byte-fallback tokens and over-counted as 3 bytes, making val_bpb ~20% too good), or
    `require_byte_fallback` and the 256 `<0xNN>` byte pieces are missing.
    """
    sp = load_sp(sp)
    n = int(sp.vocab_size())
    problems = []
    if int(sp.bos_id()) != BOS_ID:
        problems.append(f"bos_id is {sp.bos_id()}, the shards need BOS = {BOS_ID} (train with bos_id=1)")
    if n > MAX_VOCAB:
        problems.append(f"vocab_size {n} exceeds {MAX_VOCAB}, ids would not fit the uint16 shards")
    if vocab_size is not None and n != int(vocab_size):
        problems.append(f"vocab_size is {n}, expected {vocab_size} (VOCAB_SIZE must equal sp.vocab_size())")
    sid = int(sp.piece_to_id(SPACE_PIECE))
    if sid == int(sp.unk_id()) or sp.id_to_piece(sid) != SPACE_PIECE:
        problems.append(
            f"no standalone {SPACE_PIECE!r} (U+2581) piece: a space would be encoded as 3 byte-fallback tokens, "
            "over-counting bytes so that val_bpb comes out ~20% too low (issue #897); retrain with required_chars='\u2581'"
        )
    if require_byte_fallback:
        n_bytes = sum(1 for i in range(n) if sp.is_byte(i))
        if n_bytes != 256:
            problems.append(f"byte fallback missing: {n_bytes} of 256 <0xNN> byte pieces (train with byte_fallback=True)")
    if problems:
        raise TokenizerCheckError("tokenizer check failed: " + "; ".join(problems))
    return sp
