"""MLP-slot mixers and the MLP_KIND registry. Every kind maps (B, T, D) -> (B, T, D).

A mixer can steer the optimizer and the exporter through attributes on its parameters:
`param._optim_group = "adam"` keeps a matrix away from Muon, and `param._keep_float = True`
keeps a tensor unquantized in the artifact.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from arch.layers import CastedLinear, zero_init


class ReluSquaredMLP(nn.Module):
    """relu(x W1)^2 W2, the modded-nanogpt MLP of the public baseline."""

    def __init__(self, dim: int, mlp_mult: float):
        super().__init__()
        hidden = int(round(mlp_mult * dim))
        self.fc = CastedLinear(dim, hidden, bias=False)
        self.proj = zero_init(CastedLinear(hidden, dim, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


MLP_REGISTRY: dict[str, type[nn.Module]] = {
    "relu2": ReluSquaredMLP,
}


def build_mlp(kind: str, dim: int, mlp_mult: float) -> nn.Module:
    if kind not in MLP_REGISTRY:
        raise ValueError(f"MLP_KIND={kind!r} is not a known mixer; choose one of {sorted(MLP_REGISTRY)}")
    return MLP_REGISTRY[kind](dim, mlp_mult)
