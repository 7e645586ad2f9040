"""S5 (Smith, Warrington & Linderman, ICLR 2023) and the order-2 Hyena-S5 operator, in the MLP slot
(MIXERS.md section 3).

S5SSM: a MIMO diagonal state space model with HiPPO-N block-diagonal init, conjugate symmetry (store P/2
states, output 2 Re), ZOH discretisation with a log step per state, and eigenvalues clipped to Re < 0 in
the forward. The recurrence x_t = Lbar x_{t-1} + Bbar u_t is evaluated causally in parallel: a complex FFT
convolution zero-padded to >= 2T (the PyTorch path) or the Triton scan (arch/kernels.py) on CUDA;
`sequential_scan` is the reference both are tested against. All SSM math runs in fp32/complex64.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arch.kernels import HAVE_TRITON, triton_diag_scan
from arch.layers import CastedLinear, zero_init

S5_SCANS = ("auto", "fft", "triton")
C_INITS = ("trunc_standard_normal", "complex_normal")


# ---------- initialisation ----------

def hippo_n(N: int) -> tuple[Tensor, Tensor]:
    """HiPPO-N: eigenvalues (N,) complex and unitary eigenvectors (N, N) of the normal part of HiPPO-LegS.
    Every eigenvalue has real part -1/2; the imaginary parts are those of the skew-symmetric remainder."""
    n = torch.arange(N, dtype=torch.float64)
    legs = -torch.sqrt(torch.outer(2 * n + 1, 2 * n + 1)).tril(-1) - torch.diag(n + 1)
    p = torch.sqrt(n + 0.5)
    normal = legs + torch.outer(p, p)  # diagonal -1/2, off-diagonal skew-symmetric
    skew = normal - torch.diag(torch.diagonal(normal))
    omega, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # Hermitian: real omega, ascending
    return torch.complex(torch.diagonal(normal).mean().expand(N).clone(), omega), V


def lecun_trunc_normal_(t: Tensor, fan_in: int) -> Tensor:
    """JAX lecun_normal: normal truncated at +-2 std, rescaled so the variance is exactly 1/fan_in."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


# ---------- discretisation and scans ----------

def discretize_zoh(Lambda: Tensor, B_tilde: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    Lambda_bar = torch.exp(Lambda * step)
    return Lambda_bar, ((Lambda_bar - 1) / Lambda)[:, None] * B_tilde


def discretize_bilinear(Lambda: Tensor, B_tilde: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    inv = 1 / (1 - step * Lambda / 2)
    return inv * (1 + step * Lambda / 2), (inv * step)[:, None] * B_tilde


def sequential_scan(Lambda_bar: Tensor, Bu: Tensor) -> Tensor:
    """The reference recurrence x_t = Lbar x_{t-1} + Bu_t, one step at a time. Bu: (B, T, P')."""
    x = torch.zeros_like(Bu[:, 0])
    out = []
    for t in range(Bu.size(1)):
        x = Lambda_bar * x + Bu[:, t]
        out.append(x)
    return torch.stack(out, dim=1)


def fft_scan(Lambda_bar_log: Tensor, Bu: Tensor) -> Tensor:
    """Same recurrence as a causal convolution with kernel Lbar^k, via a complex FFT zero-padded to >= 2T so
    the circular wrap-around (the future leaking into the past) never reaches the first T outputs.
    Takes log(Lbar) = Lambda * step: exp(k log Lbar) never overflows because Re(Lambda) < 0."""
    T = Bu.size(1)
    n_fft = 1 << (2 * T - 1).bit_length()
    k = torch.arange(T, device=Bu.device, dtype=torch.float32)
    kernel = torch.exp(k[:, None] * Lambda_bar_log[None, :])  # (T, P')
    x = torch.fft.ifft(torch.fft.fft(Bu, n=n_fft, dim=1) * torch.fft.fft(kernel, n=n_fft, dim=0), dim=1)
    return x[:, :T]


# ---------- the SSM ----------

class S5SSM(nn.Module):
    """u (B, T, H) real -> y (B, T, H) real. P = state size (P' = P/2 stored states with conj_sym)."""

    def __init__(self, H: int, P: int, blocks: int, conj_sym: bool = True, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 clip_eigs: bool = True, c_init: str = "trunc_standard_normal", scan: str = "auto"):
        super().__init__()
        if P <= 0 or blocks <= 0 or P % blocks:
            raise ValueError(f"S5_STATE_DIM={P} must be a positive multiple of S5_BLOCKS={blocks}")
        block = P // blocks
        if conj_sym and block % 2:
            raise ValueError(f"S5_CONJ_SYM=1 needs an even block size S5_STATE_DIM/S5_BLOCKS, got {block}")
        if not 0 < dt_min < dt_max:
            raise ValueError(f"need 0 < S5_DT_MIN < S5_DT_MAX, got {dt_min}, {dt_max}")
        if c_init not in C_INITS:
            raise ValueError(f"C init {c_init!r} must be one of {C_INITS}")
        if scan not in S5_SCANS:
            raise ValueError(f"S5_SCAN={scan!r} must be one of {S5_SCANS}")
        self.conj_sym, self.clip_eigs, self.scan = conj_sym, clip_eigs, scan
        Lam_b, V_b = hippo_n(block)
        if conj_sym:  # eigh sorts ascending: the first half are the negative-imaginary member of each pair
            Lam_b, V_b = Lam_b[: block // 2], V_b[:, : block // 2]
        Lambda = Lam_b.repeat(blocks)
        V = torch.block_diag(*[V_b] * blocks)  # (P, P')
        Vinv = torch.block_diag(*[V_b.conj().T] * blocks)  # (P', P)
        Pp = Lambda.numel()
        B = lecun_trunc_normal_(torch.empty(P, H, dtype=torch.float64), fan_in=P)
        B_tilde = Vinv @ B.to(torch.complex128)  # (P', H)
        if c_init == "trunc_standard_normal":
            C = torch.complex(lecun_trunc_normal_(torch.empty(H, P, dtype=torch.float64), P),
                              lecun_trunc_normal_(torch.empty(H, P, dtype=torch.float64), P))
            C_tilde = C @ V  # (H, P')
        else:
            C_tilde = torch.complex(torch.randn(H, Pp, dtype=torch.float64), torch.randn(H, Pp, dtype=torch.float64)) * math.sqrt(0.5)
        self.Lambda_re = nn.Parameter(Lambda.real.float())
        self.Lambda_im = nn.Parameter(Lambda.imag.float())
        # B and C are stored as real 2-D matrices [re; im] so the int8 exporter quantizes them per row.
        self.B = nn.Parameter(torch.cat((B_tilde.real, B_tilde.imag), dim=0).float())  # (2P', H)
        self.C = nn.Parameter(torch.cat((C_tilde.real, C_tilde.imag), dim=1).float())  # (H, 2P')
        self.D = nn.Parameter(torch.randn(H))
        self.log_step = nn.Parameter(torch.empty(Pp).uniform_(math.log(dt_min), math.log(dt_max)))
        for p in self.parameters():
            p._optim_group = "adam"  # no SSM tensor may be Newton-Schulz-orthogonalised by Muon
        for p in (self.Lambda_re, self.Lambda_im, self.log_step):
            p._keep_float = True  # eigenvalues and steps: exact in the artifact

    @property
    def num_states(self) -> int:
        return self.Lambda_re.numel()

    def Lambda(self) -> Tensor:
        re = self.Lambda_re.clamp(max=-1e-4) if self.clip_eigs else self.Lambda_re
        return torch.complex(re, self.Lambda_im)

    def B_tilde(self) -> Tensor:
        return torch.complex(*self.B.split(self.num_states, dim=0))

    def C_tilde(self) -> Tensor:
        return torch.complex(*self.C.split(self.num_states, dim=1))

    def discretize(self) -> tuple[Tensor, Tensor, Tensor]:
        """(log Lbar, Lbar, Bbar): ZOH with one step per stored state."""
        Lambda, step = self.Lambda(), torch.exp(self.log_step)
        Lambda_bar, B_bar = discretize_zoh(Lambda, self.B_tilde(), step)
        return Lambda * step, Lambda_bar, B_bar

    def _pick_scan(self, device: torch.device) -> str:
        if self.scan != "auto":
            return self.scan
        return "triton" if device.type == "cuda" and HAVE_TRITON else "fft"

    def forward(self, u: Tensor, scan: str | None = None) -> Tensor:
        with torch.autocast(device_type=u.device.type, enabled=False):
            uf = u.float()
            log_Lbar, Lambda_bar, B_bar = self.discretize()
            Bu = torch.complex(uf @ B_bar.real.T, uf @ B_bar.imag.T)  # (B, T, P')
            mode = scan or self._pick_scan(u.device)
            if mode == "sequential":
                x = sequential_scan(Lambda_bar, Bu)
            elif mode == "triton":
                x = triton_diag_scan(Lambda_bar, Bu)
            else:
                x = fft_scan(log_Lbar, Bu)
            C = self.C_tilde()
            y = x.real @ C.real.T - x.imag @ C.imag.T  # Re(C x)
            y = (2 * y if self.conj_sym else y) + self.D * uf
        return y.to(u.dtype)


def s5_ssm_param_count(H: int, P: int, conj_sym: bool) -> int:
    """Lambda 2P' + B 2P'H + C 2HP' + D H + log step P' = 3P' + 4P'H + H, with P' = P/2 under conj_sym."""
    Pp = P // 2 if conj_sym else P
    return 3 * Pp + 4 * Pp * H + H


# ---------- the two MLP-slot mixers ----------

class S5Mixer(nn.Module):
    """S5 followed by the half-GLU "half_glu2": y * sigmoid(W gelu(y))."""

    def __init__(self, dim: int, **ssm):
        super().__init__()
        self.ssm = S5SSM(dim, c_init="trunc_standard_normal", **ssm)
        self.gate = CastedLinear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.ssm(x)
        return y * torch.sigmoid(self.gate(F.gelu(y)))


class HyenaS5Mixer(nn.Module):
    """Order-2 Hyena/H3 operator with S5 as the long filter: [x0|x1|v] = ShortConv(W_in u);
    y = W_out(x0 * gelu(S5(x1 * v))). The depthwise kernel-3 conv is left-padded, so t sees t-2..t only."""

    def __init__(self, dim: int, **ssm):
        super().__init__()
        self.fc = CastedLinear(dim, 3 * dim, bias=True)
        self.short_conv = nn.Conv1d(3 * dim, 3 * dim, kernel_size=3, groups=3 * dim, bias=True)
        self.ssm = S5SSM(dim, c_init="complex_normal", **ssm)
        self.proj = zero_init(CastedLinear(dim, dim, bias=True))  # its input is non-zero, so it is alive
        nn.init.zeros_(self.proj.bias)

    def forward(self, u: Tensor) -> Tensor:
        z = self.fc(u).transpose(1, 2)
        z = self.short_conv(F.pad(z, (self.short_conv.kernel_size[0] - 1, 0))).transpose(1, 2)
        x0, x1, v = z.chunk(3, dim=-1)
        return self.proj(x0 * F.gelu(self.ssm(x1 * v)))


def s5_param_count(dim: int, P: int, conj_sym: bool) -> int:
    return s5_ssm_param_count(dim, P, conj_sym) + dim * dim + dim


def hyena_s5_param_count(dim: int, P: int, conj_sym: bool) -> int:
    """W_in 3d^2 + 3d, depthwise conv 3d*3 + 3d, S5, W_out d^2 + d."""
    return 3 * dim * dim + 3 * dim + 12 * dim + s5_ssm_param_count(dim, P, conj_sym) + dim * dim + dim


# ---------- the MLP-slot interface (arch/mlp.py): build, count and check from the knobs in a MixerConfig ----------


def _ssm_kwargs(c) -> dict:
    return dict(P=c.s5_state_dim, blocks=c.s5_blocks, conj_sym=c.s5_conj_sym, dt_min=c.s5_dt_min, dt_max=c.s5_dt_max,
                clip_eigs=c.s5_clip_eigs, scan=c.s5_scan)


def build_mixer(kind: str, dim: int, mlp_mult: float, c) -> nn.Module:
    return (S5Mixer if kind == "s5" else HyenaS5Mixer)(dim, **_ssm_kwargs(c))


def mixer_param_count(kind: str, dim: int, mlp_mult: float, c) -> int:
    return (s5_param_count if kind == "s5" else hyena_s5_param_count)(dim, c.s5_state_dim, c.s5_conj_sym)


def config_problems(kind: str, c) -> list[str]:
    problems = []
    P, J = c.s5_state_dim, c.s5_blocks
    if P <= 0 or J <= 0 or P % J:
        problems.append(f"S5_STATE_DIM={P} must be a positive multiple of S5_BLOCKS={J}")
    elif c.s5_conj_sym and (P // J) % 2:
        problems.append(f"S5_CONJ_SYM=1 needs an even block size S5_STATE_DIM/S5_BLOCKS, got {P // J}")
    if not 0 < c.s5_dt_min < c.s5_dt_max:
        problems.append(f"need 0 < S5_DT_MIN < S5_DT_MAX, got {c.s5_dt_min}, {c.s5_dt_max}")
    if c.s5_scan not in S5_SCANS:
        problems.append(f"S5_SCAN={c.s5_scan!r} must be one of {', '.join(S5_SCANS)}")
    elif c.s5_scan == "triton" and not HAVE_TRITON:
        problems.append("S5_SCAN=triton but triton is not installed (pip install triton, or S5_SCAN=fft)")
    return problems
