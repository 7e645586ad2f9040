"""The trunk wrapper every stacked RL variant shares: embed Linear(o→h), the blocks in order, then LayerNorm(h)."""
from __future__ import annotations

from torch import Tensor, nn


class BlockStack(nn.Module):
    def __init__(self, in_dim: int, width: int, blocks):
        super().__init__()
        self.out_dim = width
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)
