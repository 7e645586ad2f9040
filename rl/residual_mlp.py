"""Residual MLP backbone, the reference "mlp-*" policy trunk.

embed Linear(o→h), then N blocks h ← h + Linear(ReLU(Linear(LayerNorm(h)))), then LayerNorm(h).
PyTorch default init throughout (as the reference); params = (o·h + h) + N·(2h² + 4h) + 2h.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rl.backbone import BlockStack


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.fc2(F.relu(self.fc1(self.norm(h))))


class ResidualMLP(BlockStack):
    def __init__(self, in_dim: int, width: int, blocks: int = 2):
        super().__init__(in_dim, width, (ResidualBlock(width) for _ in range(blocks)))
