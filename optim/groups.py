"""Route every parameter to exactly one optimizer: Muon for block matrices, Adam for the embedding,
the untied head, and scalars/vectors/control gains (or anything a mixer tags `_optim_group = "adam"`)."""
from __future__ import annotations

import torch
from torch import nn

from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS
from optim.muon import Muon


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
    seen = {id(p) for g in groups.values() for p in g}
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise RuntimeError(f"parameters not assigned to any optimizer: {missing}")
    return groups


def build_optimizers(model: nn.Module, args) -> tuple[list[torch.optim.Optimizer], Muon]:
    """Returns (all optimizers, the Muon one). Each param group remembers its base_lr for the LR schedule."""
    groups = split_parameters(model)
    fused = next(model.parameters()).is_cuda

    def adam(params, lr):
        return torch.optim.Adam(
            [{"params": params, "lr": lr, "base_lr": lr}], betas=(args.beta1, args.beta2), eps=args.adam_eps, fused=fused
        )

    token_lr = args.tied_embed_lr if args.tie_embeddings else args.embed_lr
    optimizers: list[torch.optim.Optimizer] = [adam(groups["embed"], token_lr)]
    if groups["head"]:
        optimizers.append(adam(groups["head"], args.head_lr))
    muon = Muon(groups["matrix"], lr=args.matrix_lr, momentum=args.muon_momentum, backend_steps=args.muon_backend_steps)
    for group in muon.param_groups:
        group["base_lr"] = args.matrix_lr
    optimizers += [muon, adam(groups["scalar"], args.scalar_lr)]
    return optimizers, muon
