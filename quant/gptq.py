"""GPTQ: quantize a linear layer's weight column by column, pushing each column's rounding error onto the
columns not yet quantized, weighted by the layer-input Hessian H = X^T X (Frantar et al. 2022).

Calibration (`collect_hessians`) runs the float model on *training* batches and must fit inside the
training wall-clock budget: the trainer reserves GPTQ_RESERVE_SECONDS and passes the deadline here, and
calibration stops at whichever comes first, the token target or the deadline. Validation data is never
touched. The solve (`gptq_quantize`) reuses the per-row scales of the clip search, so the artifact format
is the same with or without GPTQ.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from quant.quantize import qmax_for
from quant.plan import tensor_plan
from quant.schemes import SMALL_TENSOR_MAX_NUMEL, ExportSpec


def gptq_targets(state_dict: dict[str, Tensor], specs: list[ExportSpec], mix, keep_float: tuple[str, ...],
                 small_numel: int = SMALL_TENSOR_MAX_NUMEL) -> set[str]:
    """Names of the matrices some non-public spec quantizes per row: the ones GPTQ needs a Hessian for."""
    return {name for name, t in state_dict.items() for spec in specs if not spec.is_public
            and tensor_plan(name, t, spec.scheme, mix, keep_float, small_numel)[0] == "row"}


@torch.no_grad()
def collect_hessians(model: nn.Module, weight_names: set[str], batches, deadline: float, max_tokens: int,
                     autocast=None) -> tuple[dict[str, Tensor], int]:
    """H (fp32, in x in, mean over tokens) for every nn.Linear whose `<module>.weight` is in `weight_names`.
    `batches` yields (x, y) training batches; stops at `max_tokens` tokens or at time.perf_counter() >= deadline
    (at least one batch runs). Returns (hessians, tokens used)."""
    hessians: dict[str, Tensor] = {}
    rows: dict[str, int] = {}
    hooks = []

    def hook_for(name: str):
        def hook(_module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            if name not in hessians:
                hessians[name] = torch.zeros(x.shape[1], x.shape[1], device=x.device)
                rows[name] = 0
            hessians[name].addmm_(x.T, x)
            rows[name] += x.shape[0]
        return hook

    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and f"{module_name}.weight" in weight_names:
            hooks.append(module.register_forward_pre_hook(hook_for(f"{module_name}.weight")))
    was_training = model.training
    model.eval()
    tokens = 0
    try:
        for x, _ in batches:
            if autocast is not None:
                with autocast():
                    model.forward_logits(x)
            else:
                model.forward_logits(x)
            tokens += x.numel()
            if tokens >= max_tokens or time.perf_counter() >= deadline:
                break
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: (h / max(rows[n], 1)).cpu() for n, h in hessians.items()}, tokens


@torch.no_grad()
def gptq_quantize(w: Tensor, hessian: Tensor, scale: Tensor, bits: int, block_size: int = 128,
                  damp: float = 0.01, act_order: bool = True) -> Tensor:
    """int8 symbols of the (out, in) matrix `w` under fixed per-row `scale` (out,), minimizing the
    H-weighted output error instead of the plain weight error."""
    qmax = qmax_for(bits)
    W = w.detach().float().clone()
    H = hessian.float().clone()
    s = scale.float()[:, None]
    n = W.shape[1]
    dead = torch.diag(H) == 0  # inputs that never fire: their weights do not matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n)
    # Upper Cholesky factor of H^-1: row i holds the error-propagation weights for column i.
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = W1[:, i:i + 1]
            q = torch.clamp(torch.round(col / s), -qmax, qmax)
            Q[:, i1 + i:i1 + i + 1] = q
            err = (col - q * s) / Hinv1[i, i]
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            Err1[:, i:i + 1] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)].to(torch.int8).contiguous()
