"""Bits per byte with the challenge's byte rules, and an audit CLI for a tokenizer's byte accounting.

For target y after previous token x: bytes(y) = base_bytes[y] + (has_leading_space[y] and not is_boundary[x]).
Control/unknown/unused pieces are boundaries worth 0 bytes, byte-fallback pieces are 1 byte, any other
piece is the UTF-8 length of its text without one leading "▁", which counts as a space byte unless it
follows a boundary token (BOS starts a document, so its first word has no space before it).
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

SPACE_MARK = "\u2581"  # SentencePiece's word-start marker "▁"


@dataclass
class ByteLuts:
    base_bytes: torch.Tensor  # int16 (V,)
    has_leading_space: torch.Tensor  # bool (V,)
    is_boundary: torch.Tensor  # bool (V,)
    unk_id: int | None = None

    def to(self, device) -> "ByteLuts":
        return ByteLuts(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device), self.unk_id)


def build_byte_luts(sp, vocab_size: int, device="cpu") -> ByteLuts:
    """Lookup tables sized max(tokenizer vocab, model vocab); ids past the tokenizer are 0-byte boundaries."""
    sp_vocab = int(sp.vocab_size())
    if int(sp.piece_to_id(SPACE_MARK)) == int(sp.unk_id()):
        # Challenge issue #897: without a standalone "▁" a space is spelled with byte-fallback pieces that
        # the byte rules charge separately, over-counting bytes and flattering bpb by ~20%.
        raise ValueError(
            "tokenizer has no standalone '\u2581' piece, so its spaces cannot be byte-counted correctly; "
            "retrain it with python -m data.export (which guarantees the piece)"
        )
    size = max(sp_vocab, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    lead = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE_MARK):
            lead[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    unk = int(sp.unk_id()) if sp.unk_id() >= 0 else None
    return ByteLuts(torch.tensor(base, device=device), torch.tensor(lead, device=device), torch.tensor(boundary, device=device), unk)


def target_bytes(prev_ids: torch.Tensor, target_ids: torch.Tensor, luts: ByteLuts) -> torch.Tensor:
    """Bytes charged to each target (same shape as target_ids), as int32."""
    b = luts.base_bytes[target_ids].to(torch.int32)
    return b + (luts.has_leading_space[target_ids] & ~luts.is_boundary[prev_ids]).to(torch.int32)


class BpbAccumulator:
    """float64 sums of nats, scored targets and bytes; all-reduced across ranks before reading."""

    def __init__(self, device):
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss_sum, targets, bytes
        self.unk_targets = 0

    def add(self, nll: torch.Tensor, prev_ids: torch.Tensor, target_ids: torch.Tensor, luts: ByteLuts) -> None:
        """nll: per-target negative log-likelihood in nats, same shape as target_ids."""
        self.sums[0] += nll.detach().to(torch.float64).sum()
        self.sums[1] += target_ids.numel()
        self.sums[2] += target_bytes(prev_ids, target_ids, luts).to(torch.float64).sum()
        if luts.unk_id is not None:
            self.unk_targets += int((target_ids == luts.unk_id).sum())

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.sums, op=dist.ReduceOp.SUM)
            unk = torch.tensor([self.unk_targets], dtype=torch.float64, device=self.sums.device)
            dist.all_reduce(unk, op=dist.ReduceOp.SUM)
            self.unk_targets = int(unk.item())

    @property
    def targets(self) -> int:
        return int(self.sums[1].item())

    def result(self) -> tuple[float, float]:
        """(val_loss in nats per token, val_bpb)."""
        loss_sum, n, nbytes = (float(v) for v in self.sums.tolist())
        if n <= 0 or nbytes <= 0:
            raise ValueError(f"nothing to score: {int(n)} targets, {int(nbytes)} bytes")
        val_loss = loss_sum / n
        return val_loss, val_loss / math.log(2.0) * n / nbytes


def warn_unknown_targets(unk_targets: int, total: int, log=None) -> None:
    """<unk> targets count 0 bytes, which flatters bpb: say so loudly."""
    if unk_targets <= 0:
        return
    msg = (
        f"WARNING: {unk_targets}/{total} validation targets are <unk> and count 0 bytes; "
        "the tokenizer has no byte fallback for some characters, so val_bpb is optimistic"
    )
    (log or (lambda m: warnings.warn(m, stacklevel=2)))(msg)


def count_stream_bytes(tokens: np.ndarray, luts: ByteLuts) -> tuple[int, int]:
    """(targets, bytes) of a token stream whose first token is context only."""
    t = torch.from_numpy(tokens.astype(np.int64))
    return t.numel() - 1, int(target_bytes(t[:-1], t[1:], luts).sum())


def main(argv=None) -> int:
    import sentencepiece as spm

    from data.shards import load_tokens

    p = argparse.ArgumentParser(prog="python -m eval.bpb", description="Audit a tokenizer's byte accounting on a shard set.")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model file")
    p.add_argument("--shards", required=True, help="glob of shard files, e.g. 'data/.../fineweb_val_*.bin'")
    p.add_argument("--vocab-size", type=int, default=0, help="model vocab (default: the tokenizer's)")
    args = p.parse_args(argv)
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    luts = build_byte_luts(sp, args.vocab_size or int(sp.vocab_size()))
    tokens = load_tokens(args.shards)
    if tokens.size and int(tokens.max()) >= luts.base_bytes.numel():
        print(f"error: shard ids reach {int(tokens.max())} but the tokenizer has {int(sp.vocab_size())} pieces", file=sys.stderr)
        return 2
    n, nbytes = count_stream_bytes(tokens, luts)
    unk = int((tokens[1:] == luts.unk_id).sum()) if luts.unk_id is not None else 0
    print(f"tokens:{n} bytes:{nbytes} bytes_per_token:{nbytes / max(n, 1):.4f} unk_targets:{unk}")
    warn_unknown_targets(unk, n, log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
