"""`python -m eval.bpb`: audit a tokenizer's byte accounting on a shard set (targets, bytes, the public rule's
difference, <unk> targets). Apart from eval/bpb.py so that a record, which ships the byte accounting, does not ship
this command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.bpb import build_byte_luts, byte_rule_note, count_stream_bytes, warn_unknown_targets


class BpbInputError(ValueError):
    """A bad CLI input; the message names it and the fix."""


def load_tokenizer(path: str):
    """A SentencePieceProcessor for `path`, or BpbInputError naming the problem."""
    import sentencepiece as spm

    p = Path(path)
    if not p.is_file():
        raise BpbInputError(f"--tokenizer {path}: no such file (pass the SentencePiece .model the shards were made with)")
    try:
        return spm.SentencePieceProcessor(model_file=str(p))
    except (RuntimeError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BpbInputError(f"--tokenizer {path} is not a SentencePiece model ({first}); pass the .model file, not the .vocab "
                            "(python -m data.export writes both)") from None


def main(argv=None) -> int:
    from data.shards import load_tokens

    p = argparse.ArgumentParser(prog="python -m eval.bpb", description="Audit a tokenizer's byte accounting on a shard set.")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model file")
    p.add_argument("--shards", required=True, help="glob of shard files, e.g. 'data/.../fineweb_val_*.bin'")
    p.add_argument("--vocab-size", type=int, default=0, help="model vocab (default: the tokenizer's)")
    args = p.parse_args(argv)
    try:
        sp = load_tokenizer(args.tokenizer)
        if args.vocab_size < 0:
            raise BpbInputError(f"--vocab-size {args.vocab_size} must be positive (or 0 for the tokenizer's)")
        try:
            luts = build_byte_luts(sp, args.vocab_size or int(sp.vocab_size()))
        except ValueError as e:
            raise BpbInputError(f"--tokenizer {args.tokenizer}: {e}") from None
        try:
            tokens = load_tokens(args.shards)
        except FileNotFoundError:
            raise BpbInputError(f"--shards {args.shards}: no file matches (quote the glob, e.g. 'data/.../fineweb_val_*.bin')") from None
        except ValueError as e:
            raise BpbInputError(f"--shards {args.shards}: {e}") from None
        if tokens.size < 2:
            raise BpbInputError(f"--shards {args.shards} holds {tokens.size} tokens: nothing to count (a stream needs 2 or more)")
        if int(tokens.max()) >= luts.base_bytes.numel():
            raise BpbInputError(f"--shards {args.shards}: ids reach {int(tokens.max())} but the tokenizer has {int(sp.vocab_size())} "
                                "pieces: the shards were made with another tokenizer")
    except BpbInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n, nbytes = count_stream_bytes(tokens, luts)
    unk = int((tokens[1:] == luts.unk_id).sum()) if luts.unk_id is not None else 0
    print(f"tokens:{n} bytes:{nbytes} bytes_per_token:{nbytes / max(n, 1):.4f} unk_targets:{unk} "
          f"multi_space_pieces:{luts.multi_space_pieces}")
    note = byte_rule_note(sp, luts, tokens)
    if note:
        print(f"FLAG: {note}", file=sys.stderr)
    warn_unknown_targets(unk, n, log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
