"""A gloo rank for tests/test_optim.py: kept apart so spawned processes import only torch and optim.muon."""
from __future__ import annotations

import torch
import torch.distributed as dist

from optim.muon import Muon


def muon_steps(seed: int = 8) -> list[torch.Tensor]:
    """Two Muon steps (momentum, weight decay) on five matrices with seeded gradients; returns the weights."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(12, 8, generator=gen)) for _ in range(5)]
    opt = Muon(params, lr=0.1, momentum=0.9, backend_steps=5, weight_decay=0.2)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach() for p in params]


def run_rank(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    weights = muon_steps()
    if rank == 0:
        torch.save(weights, out_file)
    dist.destroy_process_group()
