"""Deterministic training batches: one sequential stream over the sorted shards, split between ranks."""
from __future__ import annotations

import torch

from data.shards import list_shards, read_header, read_shard


class TokenStream:
    """Reads shards in order and wraps around forever: no sampling, no workers, fully reproducible."""

    def __init__(self, pattern: str):
        self.files = list_shards(pattern)
        if all(read_header(f) == 0 for f in self.files):
            raise ValueError(f"every shard matching {pattern!r} is empty; re-export the training split")
        self.file_idx = 0
        self.tokens = torch.from_numpy(read_shard(self.files[0]).astype("int64"))
        self.pos = 0

    def _advance_file(self) -> None:
        self.file_idx = (self.file_idx + 1) % len(self.files)
        self.tokens = torch.from_numpy(read_shard(self.files[self.file_idx]).astype("int64"))
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

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.stream = TokenStream(pattern)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = chunk[self.rank * span : (self.rank + 1) * span]
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
