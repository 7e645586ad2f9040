"""MLP-slot mixers and the MLP_KIND registry. Every kind maps (B, T, D) -> (B, T, D) causally.

A mixer can steer the optimizer and the exporter through attributes on its parameters:
`param._optim_group = "adam"` keeps a matrix away from Muon, and `param._keep_float = True`
keeps a tensor unquantized in the artifact.

Kinds: relu2 (baseline), swiglu / glu (arch/gated.py: three matrices, hidden = MLP_MULT * d), hwnode
(arch/hwnode.py), wave (arch/wave.py), s5 and hyena_s5 (arch/s5.py). `MixerConfig` carries their knobs;
`mixer_param_count` is the closed-form parameter count of one sublayer (MIXERS.md 5.1), checked against the built
module. The non-baseline mixers are imported only when a kind names them (`MIXER_MODULES`), so a packed record
ships only the mixer its run uses; each such module builds, counts and checks its kinds itself (`build_mixer`,
`mixer_param_count`, `config_problems`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from arch.layers import CastedLinear, hidden_width, zero_init

# kind -> the module that defines it (relu2 lives here); imported when the kind is used.
MIXER_MODULES = {"swiglu": "arch.gated", "glu": "arch.gated", "hwnode": "arch.hwnode", "wave": "arch.wave", "s5": "arch.s5",
                 "hyena_s5": "arch.s5"}


def mixer_modules(*kinds: str) -> list[str]:
    """The modules the mixer kinds need beyond this one (what a record of a run with them ships)."""
    return sorted({MIXER_MODULES[k] for k in kinds if k in MIXER_MODULES})


class ReluSquaredMLP(nn.Module):
    """relu(x W1)^2 W2, the modded-nanogpt MLP of the public baseline."""

    def __init__(self, dim: int, mlp_mult: float):
        super().__init__()
        hidden = hidden_width(dim, mlp_mult)
        self.fc = CastedLinear(dim, hidden, bias=False)
        self.proj = zero_init(CastedLinear(hidden, dim, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


@dataclass(frozen=True)
class MixerConfig:
    """Knobs of the non-baseline mixers (train_gpt.py: HWNODE_*, WAVE_*, S5_*); defaults per MIXERS.md."""

    hwnode_state_dim: int = 864
    hwnode_order: int = 2
    hwnode_virtual_layers: int = 0
    hwnode_term_gates: bool = False
    hwnode_state_bias: bool = False
    wave_mode: str = "modulation"
    s5_state_dim: int = 256
    s5_blocks: int = 16
    s5_conj_sym: bool = True
    s5_dt_min: float = 1e-3
    s5_dt_max: float = 1e-1
    s5_clip_eigs: bool = True
    s5_scan: str = "auto"

    @classmethod
    def from_args(cls, args) -> "MixerConfig":
        """From any object with the lowercase knob attributes (train_gpt.Hyperparameters)."""
        return cls(**{f: getattr(args, f) for f in cls.__dataclass_fields__})

    def validate(self, kind: str) -> None:
        """Raise ValueError naming the knob when a knob of `kind` is out of range."""
        problems = _mixer(kind, "config_problems")(kind, self) if kind in MIXER_MODULES else []
        if problems:
            raise ValueError("; ".join(problems))


MLP_REGISTRY: dict[str, Callable[[int, float, MixerConfig], nn.Module]] = {
    "relu2": lambda d, m, c: ReluSquaredMLP(d, m),
    **{kind: (lambda d, m, c, kind=kind: _mixer(kind, "build_mixer")(kind, d, m, c)) for kind in MIXER_MODULES},
}


def _mixer(kind: str, name: str):
    """`name` from the module of mixer `kind`, imported on first use."""
    return getattr(importlib.import_module(MIXER_MODULES[kind]), name)


def build_mlp(kind: str, dim: int, mlp_mult: float, config: MixerConfig | None = None) -> nn.Module:
    if kind not in MLP_REGISTRY:
        raise ValueError(f"MLP_KIND={kind!r} is not a known mixer; choose one of {sorted(MLP_REGISTRY)}")
    return MLP_REGISTRY[kind](dim, mlp_mult, config or MixerConfig())


def mixer_param_count(kind: str, dim: int, mlp_mult: float, config: MixerConfig | None = None) -> int:
    """Closed-form parameter count of one MLP-slot sublayer (MIXERS.md 5.1)."""
    if kind == "relu2":
        return 2 * dim * hidden_width(dim, mlp_mult)
    if kind in MIXER_MODULES:
        return _mixer(kind, "mixer_param_count")(kind, dim, mlp_mult, config or MixerConfig())
    raise ValueError(f"MLP_KIND={kind!r} is not a known mixer; choose one of {sorted(MLP_REGISTRY)}")


def parse_layer_spec(spec: str, num_layers: int) -> list[int]:
    """MLP_KIND_LAYERS: 'all', or comma-separated layer indices and inclusive ranges ('0,2,5-8')."""
    if spec.strip().lower() == "all":
        return list(range(num_layers))
    layers: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            lo, _, hi = part.partition("-")
            layers.update(range(int(lo), int(hi if hi else lo) + 1))
    except ValueError:
        raise ValueError(f"MLP_KIND_LAYERS={spec!r} must be 'all' or indices/ranges like '0,2,5-8'") from None
    bad = sorted(i for i in layers if not 0 <= i < num_layers)
    if not layers or bad:
        raise ValueError(f"MLP_KIND_LAYERS={spec!r} must name layers in 0..{num_layers - 1} (NUM_LAYERS={num_layers})"
                         + (f"; out of range: {bad}" if bad else "; it names none"))
    return sorted(layers)


def mixer_report(model: nn.Module, kind: str, layers: list[int], dim: int, mlp_mult: float, config: MixerConfig) -> str:
    """The startup log line: the sublayer's parameters, measured and by formula (they must agree)."""
    measured = sum(p.numel() for p in model.blocks[layers[0]].mlp.parameters())
    formula = mixer_param_count(kind, dim, mlp_mult, config)
    if measured != formula:
        raise RuntimeError(f"mixer {kind}: {measured} parameters per layer, formula says {formula}")
    rest = [i for i in range(len(model.blocks)) if i not in layers]
    rest_part = f" relu2_layers:{','.join(map(str, rest))} relu2_params_per_layer:{mixer_param_count('relu2', dim, mlp_mult)}" if rest else ""
    return (f"mixer_params kind:{kind} layers:{','.join(map(str, layers))} params_per_layer:{measured} "
            f"formula:{formula} total:{measured * len(layers)}" + rest_part)
