"""Route every parameter to exactly one optimizer: Muon for block matrices, Adam(W) for the embedding,
the untied head, and scalars/vectors/control gains (or anything a mixer tags `_optim_group = "adam"`).

EMBED_OPTIMIZER picks the optimizer of the vocabulary matrix that produces the logits: the tied embedding, or
the output head when TIE_EMBEDDINGS=0 (Coupled Adam's zero-sum argument holds for the output matrix; an untied
input embedding's gradient is not zero-sum over the vocabulary, so it stays on Adam). ADAM_WD decays the token
embedding and the scalar group, as in the records; the untied head is never decayed."""
from __future__ import annotations

import torch
from torch import nn

from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS
from optim.muon import Muon

EMBED_OPTIMIZERS = ("adam", "coupled_adam")


def is_control(name: str) -> bool:
    return any(pattern in name for pattern in CONTROL_TENSOR_NAME_PATTERNS)


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    groups: dict[str, list[nn.Parameter]] = {"embed": [model.tok_emb.weight], "head": [], "matrix": [], "scalar": []}
    if model.lm_head is not None:
        groups["head"].append(model.lm_head.weight)
    for name, p in model.blocks.named_parameters():
        muon_ok = p.ndim == 2 and not is_control(name) and getattr(p, "_optim_group", "muon") == "muon"
        groups["matrix" if muon_ok else "scalar"].append(p)
    groups["scalar"].append(model.skip_weights)
    assigned = [id(p) for g in groups.values() for p in g]
    seen = set(assigned)
    if len(seen) != len(assigned):  # e.g. a mixer that reuses the tied embedding: two optimizers would step it
        names = {id(p): n for n, p in model.named_parameters()}
        twice = sorted({names.get(i, "?") for i in assigned if assigned.count(i) > 1})
        raise RuntimeError(f"parameters assigned to more than one optimizer group: {twice}")
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise RuntimeError(f"parameters not assigned to any optimizer: {missing}")
    return groups


def build_optimizers(model: nn.Module, args) -> tuple[list[torch.optim.Optimizer], Muon]:
    """Returns (all optimizers, the Muon one). Each param group remembers its base_lr for the LR schedule."""
    if args.embed_optimizer not in EMBED_OPTIMIZERS:
        raise ValueError(f"EMBED_OPTIMIZER={args.embed_optimizer!r} must be one of {EMBED_OPTIMIZERS}")
    groups = split_parameters(model)
    fused = next(model.parameters()).is_cuda

    def adam(params, lr, weight_decay):
        return torch.optim.AdamW([{"params": params, "lr": lr, "base_lr": lr}], betas=(args.beta1, args.beta2),
                                 eps=args.adam_eps, weight_decay=weight_decay, fused=fused)

    def vocab_optimizer(params, lr, weight_decay):
        if args.embed_optimizer == "coupled_adam":
            from optim.coupled_adam import CoupledAdam  # only runs that choose it import (and a record ships) it

            return CoupledAdam([{"params": params, "lr": lr, "base_lr": lr}], lr=lr, betas=(args.beta1, args.beta2),
                               eps=args.adam_eps, weight_decay=weight_decay, coupled_scale=args.coupled_adam_scale)
        return adam(params, lr, weight_decay)

    if args.tie_embeddings:
        optimizers: list[torch.optim.Optimizer] = [vocab_optimizer(groups["embed"], args.tied_embed_lr, args.adam_wd)]
    else:
        optimizers = [adam(groups["embed"], args.embed_lr, args.adam_wd), vocab_optimizer(groups["head"], args.head_lr, 0.0)]
    muon = Muon(groups["matrix"], lr=args.matrix_lr, momentum=args.muon_momentum, backend_steps=args.muon_backend_steps,
                weight_decay=args.muon_wd)
    for group in muon.param_groups:
        group["base_lr"] = args.matrix_lr
    optimizers += [muon, adam(groups["scalar"], args.scalar_lr, args.adam_wd)]
    return optimizers, muon


def set_step_schedule(optimizers: list[torch.optim.Optimizer], muon: Muon, args, step: int, scale: float) -> None:
    """One step's schedule, as the public baseline sets it: Muon's momentum warms up linearly from
    MUON_MOMENTUM_WARMUP_START over MUON_MOMENTUM_WARMUP_STEPS; every group's LR is its base LR times `scale`."""
    frac = min(step / args.muon_momentum_warmup_steps, 1.0) if args.muon_momentum_warmup_steps > 0 else 1.0
    for group in muon.param_groups:
        group["momentum"] = (1 - frac) * args.muon_momentum_warmup_start + frac * args.muon_momentum
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * scale


def describe_optimizers(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> str:
    """One log line: which optimizer holds which parameters, e.g.
    `optimizers: CoupledAdam[tok_emb.weight](coupled_scale=1.0,wd=0.0) Muon[24 tensors](wd=0.04) AdamW[...]`."""
    names = {id(p): n for n, p in model.named_parameters()}
    parts = []
    for opt in optimizers:
        params = [p for g in opt.param_groups for p in g["params"]]
        held = names[id(params[0])] if len(params) == 1 else f"{len(params)} tensors"
        extra = f"coupled_scale={opt.param_groups[0]['coupled_scale']}," if "coupled_scale" in opt.param_groups[0] else ""
        parts.append(f"{type(opt).__name__}[{held}]({extra}wd={opt.param_groups[0]['weight_decay']})")
    return "optimizers: " + " ".join(parts)
