"""Causal Wave-Network mixer for the MLP slot (MIXERS.md section 2.4).

The paper's per-dimension "global semantics" G_k = ||w_{:,k}|| runs over the whole sequence and so leaks
the future (including the next token) into every position. Here it is a PREFIX norm: token t becomes the
complex vector Z_t = w_t + i sqrt(S_{t-1} + eps) with S_t = sum_{j<=t} w_j^2 (fp32 cumsum), which equals
G_t e^{i alpha_t} with G_t the prefix norm and avoids the infinite slope of sqrt(1 - r^2) at |r| = 1.
Two such vectors (from W_1 x, W_2 x) interfere (Z + Z') or modulate (Z * Z'); [Re; Im] of the result,
with the imaginary parts divided by sqrt(t) so their scale does not grow with position, is RMS-normalised
and projected back by W_o (2d -> d). Prefix sums run across document boundaries, like attention here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arch.layers import CastedLinear, zero_init

WAVE_MODES = ("interference", "modulation")


def causal_wave_components(w: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(Re Z, Im Z) = (w_t, sqrt(S_{t-1} + eps)) in fp32 for w of shape (B, T, D): strict-past energy only."""
    w = w.float()
    energy = torch.cumsum(w.square(), dim=1)
    past = F.pad(energy[:, :-1], (0, 0, 1, 0))  # S_{t-1}, with S_0 = 0
    return w, torch.sqrt(past + eps)


class CausalWaveMixer(nn.Module):
    def __init__(self, dim: int, mode: str = "modulation", eps: float = 1e-6):
        super().__init__()
        if mode not in WAVE_MODES:
            raise ValueError(f"WAVE_MODE={mode!r} must be one of {WAVE_MODES}")
        self.mode, self.eps = mode, eps
        self.w1 = CastedLinear(dim, dim, bias=True)
        self.w2 = CastedLinear(dim, dim, bias=True)
        self.proj = zero_init(CastedLinear(2 * dim, dim, bias=True))  # its input is non-zero, so it is alive
        for lin in (self.w1, self.w2):
            nn.init.orthogonal_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.proj.bias)

    def features(self, x: Tensor) -> Tensor:
        """[Re R; Im R] (B, T, 2D) in fp32 before normalisation."""
        re1, im1 = causal_wave_components(self.w1(x), self.eps)
        re2, im2 = causal_wave_components(self.w2(x), self.eps)
        # sqrt(S_{t-1}) grows like sqrt(t): rescale to a per-token RMS scale (after the sum, so |r| <= 1 held).
        pos = torch.arange(1, x.size(1) + 1, device=x.device, dtype=torch.float32).sqrt()[None, :, None]
        im1, im2 = im1 / pos, im2 / pos
        if self.mode == "interference":
            re, im = re1 + re2, im1 + im2
        else:  # (re1 + i im1)(re2 + i im2)
            re, im = re1 * re2 - im1 * im2, re1 * im2 + re2 * im1
        return torch.cat((re, im), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.features(x)
        return self.proj(F.rms_norm(feats, (feats.size(-1),)).to(x.dtype))


def wave_param_count(dim: int) -> int:
    """W_1, W_2 (d x d + bias) and W_o (2d -> d + bias): 4 d^2 + 3 d."""
    return 4 * dim * dim + 3 * dim


# ---------- the MLP-slot interface (arch/mlp.py): build, count and check from the knobs in a MixerConfig ----------


def build_mixer(kind: str, dim: int, mlp_mult: float, c) -> nn.Module:
    return CausalWaveMixer(dim, c.wave_mode)


def mixer_param_count(kind: str, dim: int, mlp_mult: float, c) -> int:
    return wave_param_count(dim)


def config_problems(kind: str, c) -> list[str]:
    return [] if c.wave_mode in WAVE_MODES else [f"WAVE_MODE={c.wave_mode!r} must be one of {', '.join(WAVE_MODES)}"]
