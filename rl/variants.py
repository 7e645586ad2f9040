"""The named policy variants, their reference parameter counts and the numbers reported for them.

Dims follow the reference suite (lucamignatti/hwnode @4c7b37d, experiments/eval_suite.py; RL.md §1.3):
LunarLander-v3 has 8 observations and 4 actions; actor and critic each get their own backbone.
"reported" = last-100 training-episode mean ± std over 3 seeds at 500K steps with the reference PPO
loop (our "ref" preset); None where no published number exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from rl.residual_mlp import ResidualMLP
from rl.shared_hwnode import SharedHWNODE
from rl.stacked_hw import StackedHW


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    # in_dim -> backbone with .out_dim; None for the SB3-native MlpPolicy baseline.
    build: Callable[[int], nn.Module] | None
    reference_params: int | None  # total trainable params on LunarLander-v3 (o=8, a=4)
    reported: tuple[float, float] | None = None


def _resmlp(width: int) -> Callable[[int], nn.Module]:
    return lambda in_dim: ResidualMLP(in_dim, width, blocks=2)


def _hwnode(width: int, state: int, depth: int, order: int, gates: bool = False) -> Callable[[int], nn.Module]:
    return lambda in_dim: SharedHWNODE(in_dim, width, state, depth, order, term_gates=gates)


def _stacked(width: int, state: int, blocks: int, order: int, basis: str, a_mode: str = "spectral"):
    return lambda in_dim: StackedHW(in_dim, width, state, blocks, order, basis, a_mode)


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("mlp-narrow", "residual MLP h32, 2 blocks", _resmlp(32), 9_573, (240.6, 9.1)),
    Variant("mlp-medium", "residual MLP h64, 2 blocks", _resmlp(64), 35_525),
    Variant("mlp-large", "residual MLP h128, 2 blocks", _resmlp(128), 136_581, (228.8, 9.8)),
    Variant("hwnode-standard", "shared HWNODE h64 s16, T2 K4", _hwnode(64, 16, 2, 4), 6_343, (215.4, 13.3)),
    Variant("hwnode-gated", "shared HWNODE h64 s16, T2 K4, learned term gates (LM-side option)",
            _hwnode(64, 16, 2, 4, gates=True), 6_351),
    Variant("hwnode-scaled", "shared HWNODE h128 s32, T3 K6", _hwnode(128, 32, 3, 6), 21_895, (228.5, 17.1)),
    Variant("hwnode-xl", "shared HWNODE h256 s64, T4 K8", _hwnode(256, 64, 4, 8), 80_647, (204.2, 32.7)),
    Variant("hwnode-xxl", "shared HWNODE h512 s128, T4 K8", _hwnode(512, 128, 4, 8), 308_743, (46.5, 129.2)),
    Variant("hwnode-xxxl", "shared HWNODE h1024 s256, T4 K8", _hwnode(1024, 256, 4, 8), 1_207_303, (-114.4, 29.7)),
    Variant("taylor-learned", "2 stacked HW blocks h64 s16, learned Taylor K4",
            _stacked(64, 16, 2, 4, "taylor"), 11_801),
    Variant("chebyshev-learned", "2 stacked HW blocks h64 s16, learned Chebyshev K4",
            _stacked(64, 16, 2, 4, "chebyshev"), 11_801, (217.6, 10.8)),
    Variant("cheb-ortho-init", "chebyshev-learned with orthogonally initialised A",
            _stacked(64, 16, 2, 4, "chebyshev", "ortho-init"), 11_801),
    Variant("cheb-ortho-param", "chebyshev-learned with A on the orthogonal manifold",
            _stacked(64, 16, 2, 4, "chebyshev", "ortho-param"), 11_801),
    Variant("chebyshev-scaled", "3 stacked HW blocks h128 s32, learned Chebyshev K6",
            _stacked(128, 32, 3, 6, "chebyshev"), 61_295, (230.4, 28.8)),
    Variant("sb3-mlp64", "SB3 MlpPolicy [64,64] Tanh, ortho init (external sanity baseline)", None, 9_797),
]}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown RL variant {name!r}; choose from: {', '.join(VARIANTS)}")
    return VARIANTS[name]
