"""swiglu and glu, the gated MLPs of the MLP slot: (act(x W_g) * x W_u) W_d with act = silu (SwiGLU) or sigmoid
(GLU); e = MLP_MULT = hidden / d. Costs 3 d h, so e = 8/3 matches a 4x relu2 MLP. W_d starts at zero: its input is
non-zero at init. Apart from arch/mlp.py, like every kind but the baseline relu2, so a record ships it only for the
runs that use it."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arch.layers import CastedLinear, hidden_width, zero_init

ACTIVATIONS = {"swiglu": F.silu, "glu": torch.sigmoid}


class GatedMLP(nn.Module):
    def __init__(self, dim: int, mlp_mult: float, activation: Callable[[Tensor], Tensor]):
        super().__init__()
        hidden = hidden_width(dim, mlp_mult)
        self.gate = CastedLinear(dim, hidden, bias=False)
        self.up = CastedLinear(dim, hidden, bias=False)
        self.proj = zero_init(CastedLinear(hidden, dim, bias=False))
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.activation(self.gate(x)) * self.up(x))


# ---------- the MLP-slot interface (arch/mlp.py): build, count and check from the knobs in a MixerConfig ----------


def build_mixer(kind: str, dim: int, mlp_mult: float, c) -> nn.Module:
    return GatedMLP(dim, mlp_mult, ACTIVATIONS[kind])


def mixer_param_count(kind: str, dim: int, mlp_mult: float, c) -> int:
    return 3 * dim * hidden_width(dim, mlp_mult)


def config_problems(kind: str, c) -> list[str]:
    return []
