"""Residual MLP backbone, the reference "mlp-*" policy trunk.

embed Linear(o→h), then N blocks h ← h + Linear(ReLU(Linear(LayerNorm(h)))), then LayerNorm(h).
PyTorch default init throughout (as the reference); params = (o·h + h) + N·(2h² + 4h) + 2h.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.fc2(F.relu(self.fc1(self.norm(h))))


class ResidualMLP(nn.Module):
    def __init__(self, in_dim: int, width: int, blocks: int = 2):
        super().__init__()
        self.out_dim = width
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)
