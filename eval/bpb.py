"""Bits per byte, bytes = the UTF-8 bytes of the decoded text (`python -m eval.bpb` audits a tokenizer's byte
accounting on shards: eval/bpb_cli.py).

For target y after previous token x: bytes(y) = base_bytes[y] + (has_leading_space[y] and (not is_boundary[x] or
space_at_doc_start)). Control/unknown/unused pieces are boundaries worth 0 bytes, byte-fallback pieces are 1 byte,
any other piece is the UTF-8 length of its decoded text: every "▁" in it decodes to one space (1 byte), and one
leading "▁" is the has_leading_space byte. After a boundary (BOS starts a document) that leading space is dropped
when the tokenizer's decoder drops it (a dummy prefix, the usual case) and kept when it does not.

This is the challenge's LUT rule (HARNESS.md A4) wherever that rule is exact. It differs on tokenizers trained with
remove_extra_whitespaces=False: the public rule charges 3 bytes for each inner "▁" of whitespace pieces ("▁▁",
"▁▁▁▁") and drops a document's real leading space without a dummy prefix. `byte_rule_note` says by how much.
"""
from __future__ import annotations

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
    space_at_doc_start: bool = False  # the decoder keeps a leading "▁" after a boundary (no dummy prefix to strip)
    multi_space_pieces: int = 0  # pieces with more than one "▁" (whitespace runs): where the public rule over-counts

    def to(self, device) -> "ByteLuts":
        return ByteLuts(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device), self.unk_id,
                        self.space_at_doc_start, self.multi_space_pieces)


def build_byte_luts(sp, vocab_size: int, device="cpu", public_rule: bool = False) -> ByteLuts:
    """Lookup tables sized max(tokenizer vocab, model vocab); ids past the tokenizer are 0-byte boundaries.
    public_rule: the challenge's tables instead (inner "▁" as 3 bytes, no space after a boundary), to compare."""
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
    multi = 0
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        multi += piece.count(SPACE_MARK) > 1
        if piece.startswith(SPACE_MARK):
            lead[i] = True
            piece = piece[1:]
        base[i] = len((piece if public_rule else piece.replace(SPACE_MARK, " ")).encode("utf-8"))
    unk = int(sp.unk_id()) if sp.unk_id() >= 0 else None
    # A decoder with a dummy prefix drops the first "▁" of a document: decode(["▁"]) is "" then, " " without one.
    keeps_space = not public_rule and sp.decode([int(sp.piece_to_id(SPACE_MARK))]) == " "
    return ByteLuts(torch.tensor(base, device=device), torch.tensor(lead, device=device), torch.tensor(boundary, device=device), unk,
                    keeps_space, multi)


def unit_byte_luts(vocab_size: int, device="cpu") -> ByteLuts:
    """Every token 1 byte, no boundaries: for warm-ups and audits, where byte counts do not matter."""
    return ByteLuts(torch.ones(vocab_size, dtype=torch.int16, device=device), torch.zeros(vocab_size, dtype=torch.bool, device=device),
                    torch.zeros(vocab_size, dtype=torch.bool, device=device))


def target_bytes(prev_ids: torch.Tensor, target_ids: torch.Tensor, luts: ByteLuts) -> torch.Tensor:
    """Bytes charged to each target (same shape as target_ids), as int32."""
    b = luts.base_bytes[target_ids].to(torch.int32)
    after = ~luts.is_boundary[prev_ids] | luts.space_at_doc_start
    return b + (luts.has_leading_space[target_ids] & after).to(torch.int32)


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
    t = torch.from_numpy(np.asarray(tokens).astype(np.int64)) if not isinstance(tokens, torch.Tensor) else tokens.long().cpu()
    return t.numel() - 1, int(target_bytes(t[:-1], t[1:], luts.to("cpu")).sum())


def byte_rule_note(sp, luts: ByteLuts, tokens) -> str | None:
    """None when the public challenge's LUT rule counts this stream's bytes exactly as ours does; else one line
    saying how many bytes it would count and how much lower its bpb would be."""
    if not luts.multi_space_pieces and not luts.space_at_doc_start:
        return None
    public = build_byte_luts(sp, luts.base_bytes.numel(), public_rule=True)
    _, ours = count_stream_bytes(tokens, luts)
    _, theirs = count_stream_bytes(tokens, public)
    if theirs == ours:
        return None
    why = []
    if luts.multi_space_pieces:
        why.append(f"{luts.multi_space_pieces} pieces hold more than one '\u2581' (whitespace runs, remove_extra_whitespaces=False)")
    if luts.space_at_doc_start:
        why.append("its decoder keeps a document's leading space (no dummy prefix)")
    return (f"byte_rule: bytes are the UTF-8 bytes of the decoded text, {ours} here; the public challenge's LUT rule would count "
            f"{theirs} ({100.0 * (theirs - ours) / ours:+.2f}%), making val_bpb {100.0 * (1 - ours / theirs):.2f}% "
            f"{'lower' if theirs > ours else 'higher'}, because " + " and ".join(why))


if __name__ == "__main__":  # the CLI lives apart: a record ships the byte accounting, not its command line
    from eval.bpb_cli import main

    sys.exit(main())
