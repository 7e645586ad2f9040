"""HWNODE: Hammerstein-Wiener neural-ODE block in the MLP slot (MIXERS.md section 1).

    V1 (HWNODE_VIRTUAL_LAYERS=0, the record):  out = W_out psi(E phi(W_in x) + b)
    V2 (HWNODE_VIRTUAL_LAYERS=L >= 1):         h <- psi(W_out (E phi(W_in h) + b)), L times, shared weights

with E = P_K(dt * A / sigma(A)) the order-K Taylor flow (arch/hwnode_flow.py, fp32), phi = leaky_relu(0.5)
and psi = leaky_relu(0.5)^2. Position-wise, hence causal by construction.

Fixes over the reference: sigma(A) is exact (SVD-restarted power iteration) right after init and after
every load_state_dict, the flow is computed in fp32, the eval cache is keyed on the weights' version
counters (so any in-place change or reload invalidates it), and V2 never zero-inits W_out (psi after
W_out would make a zero W_out a dead, gradient-free block).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arch.hwnode_flow import power_iteration, spectral_norm_estimate, taylor_flow_matrix, top_singular_pair
from arch.layers import CastedLinear, zero_init


def phi(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.5)


def psi(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.5).square()


class HWNodeMixer(nn.Module):
    # The eval cache of E, and u, v (resynced to A's top singular pair on a cache miss), follow from the weights alone.
    audit_derived_caches = ("_cache", "u", "v")  # see eval/audit_ttt.py

    def __init__(self, dim: int, state_dim: int, order: int, virtual_layers: int = 0,
                 term_gates: bool = False, state_bias: bool = False, term_gate_init: float = 1.0):
        super().__init__()
        if state_dim <= 0 or order < 1 or virtual_layers < 0:
            raise ValueError(f"HWNODE needs HWNODE_STATE_DIM > 0 (got {state_dim}), HWNODE_ORDER >= 1 (got {order}) "
                             f"and HWNODE_VIRTUAL_LAYERS >= 0 (got {virtual_layers})")
        n = state_dim
        self.order, self.virtual_layers = order, virtual_layers
        self.fc = CastedLinear(dim, n, bias=False)
        self.proj = CastedLinear(n, dim, bias=False)
        if virtual_layers == 0:
            zero_init(self.proj)  # V1: dL/dW_out = psi(z') != 0, so a zero start is alive
        self.A = nn.Parameter(0.1 * torch.randn(n, n))
        self.dt = nn.Parameter(torch.ones(()))
        self.term_gates = nn.Parameter(torch.full((order,), float(term_gate_init))) if term_gates else None
        self.state_bias = nn.Parameter(torch.zeros(n)) if state_bias else None
        # Flow parameters are trained by Adam (never Newton-Schulz-orthogonalised) and stored unquantized
        # where they are small; A itself is quantized per row like any matrix (see the roundtrip test).
        for p in self.flow_parameters():
            p._optim_group = "adam"
        for p in (self.dt, self.term_gates, self.state_bias):
            if p is not None:
                p._keep_float = True
        u, v = top_singular_pair(self.A)
        self.register_buffer("u", u, persistent=False)
        self.register_buffer("v", v, persistent=False)
        self._cache: tuple[tuple, Tensor] | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: module.resync_spectral_norm())

    def flow_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.A, self.dt, self.term_gates) if p is not None]

    @torch.no_grad()
    def resync_spectral_norm(self) -> None:
        """Restart u, v at A's exact top singular pair (after init, a reload or any jump of A)."""
        u, v = top_singular_pair(self.A)
        self.u.copy_(u.to(self.u.device))
        self.v.copy_(v.to(self.v.device))
        self._cache = None

    def spectral_norm(self) -> Tensor:
        return spectral_norm_estimate(self.A, self.u, self.v)

    def _flow(self) -> Tensor:
        M = self.dt.float() * self.A.float() / self.spectral_norm()
        return taylor_flow_matrix(M, self.order, self.term_gates)

    def flow_matrix(self) -> Tensor:
        """E in fp32. Training: one power step per call tracks sigma as A drifts. Eager no-grad eval: E is
        cached, keyed on the version counters of every flow tensor, and a cache miss resyncs sigma exactly."""
        if not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            key = tuple((p._version, p.data_ptr()) for p in self.flow_parameters())
            if self._cache is None or self._cache[0] != key:
                self.resync_spectral_norm()
                self._cache = (key, self._flow())
            return self._cache[1]
        if self.training:
            power_iteration(self.A, self.u, self.v, steps=1)
        return self._flow()

    def forward(self, x: Tensor) -> Tensor:
        E = self.flow_matrix().to(x.dtype)
        bias = None if self.state_bias is None else self.state_bias.to(x.dtype)
        if self.virtual_layers == 0:
            return self.proj(psi(F.linear(phi(self.fc(x)), E, bias)))
        h = x
        for _ in range(self.virtual_layers):
            h = psi(self.proj(F.linear(phi(self.fc(h)), E, bias)))
        return h


def hwnode_param_count(dim: int, state_dim: int, order: int, term_gates: bool, state_bias: bool) -> int:
    """2 d n + n^2 + 1 (+K term gates) (+n state bias); virtual layers cost compute, not parameters."""
    return 2 * dim * state_dim + state_dim**2 + 1 + (order if term_gates else 0) + (state_dim if state_bias else 0)


# ---------- the MLP-slot interface (arch/mlp.py): build, count and check from the knobs in a MixerConfig ----------


def build_mixer(kind: str, dim: int, mlp_mult: float, c) -> nn.Module:
    return HWNodeMixer(dim, c.hwnode_state_dim, c.hwnode_order, c.hwnode_virtual_layers, c.hwnode_term_gates, c.hwnode_state_bias)


def mixer_param_count(kind: str, dim: int, mlp_mult: float, c) -> int:
    return hwnode_param_count(dim, c.hwnode_state_dim, c.hwnode_order, c.hwnode_term_gates, c.hwnode_state_bias)


def config_problems(kind: str, c) -> list[str]:
    problems = []
    if c.hwnode_state_dim <= 0:
        problems.append(f"HWNODE_STATE_DIM={c.hwnode_state_dim} must be positive")
    if c.hwnode_order < 1:
        problems.append(f"HWNODE_ORDER={c.hwnode_order} must be >= 1")
    if c.hwnode_virtual_layers < 0:
        problems.append(f"HWNODE_VIRTUAL_LAYERS={c.hwnode_virtual_layers} must be >= 0 (0: the V1 block)")
    return problems
