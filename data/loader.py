"""Deterministic training batches: one sequential stream over the sorted shards, split between ranks."""
from __future__ import annotations

import torch

from data.shards import ShardFormatError, list_shards, read_header, read_shard


class TokenStream:
    """Reads shards in order and wraps around forever: no sampling, no workers, fully reproducible.

    With `vocab_size`, each shard is refused as it is loaded if it holds an id the model has no embedding for
    (an error naming the file, instead of an IndexError deep in the forward pass)."""

    def __init__(self, pattern: str, vocab_size: int | None = None):
        self.files = list_shards(pattern)
        self.vocab_size = vocab_size
        if all(read_header(f) == 0 for f in self.files):
            raise ValueError(f"every shard matching {pattern!r} is empty; re-export the training split")
        self.file_idx = 0
        self.tokens = self._load(0)
        self.pos = 0

    def _load(self, idx: int) -> torch.Tensor:
        tokens = read_shard(self.files[idx])
        if self.vocab_size is not None and tokens.size and int(tokens.max()) >= self.vocab_size:
            raise ShardFormatError(f"{self.files[idx]}: holds token id {int(tokens.max())} >= VOCAB_SIZE={self.vocab_size}; "
                                   "the shard was made with another tokenizer (re-export it)")
        return torch.from_numpy(tokens.astype("int64"))

    def _advance_file(self) -> None:
        self.file_idx = (self.file_idx + 1) % len(self.files)
        self.tokens = self._load(self.file_idx)
        self.pos = 0

    def take(self, n: int) -> torch.Tensor:
        chunks = []
        remaining = n
        while remaining > 0:
            avail = self.tokens.numel() - self.pos
            if avail <= 0:
                self._advance_file()
                continue
            k = min(remaining, avail)
            chunks.append(self.tokens[self.pos : self.pos + k])
            self.pos += k
            remaining -= k
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class DistributedTokenLoader:
    """Each micro-step takes world x (local + 1) contiguous tokens; rank r keeps span r.

    The layout makes the token order independent of how a global batch is split between ranks
    and accumulation steps, so 1 rank x 8 micro-steps sees exactly what 2 ranks x 4 see.
    """

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device, vocab_size: int | None = None):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.stream = TokenStream(pattern, vocab_size)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = chunk[self.rank * span : (self.rank + 1) * span]
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
