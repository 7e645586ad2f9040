"""Small real models for the eval tests (sliding, TTT, audit)."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt  # noqa: E402

V = 64
TINY_KNOBS = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1")


def tiny_model(seed: int = 0, vocab: int = V, std: float = 0.2):
    """The real GPT, small, with every weight random (zero-initialised projections would make it context-free)."""
    torch.manual_seed(seed)
    model = train_gpt.build_model(train_gpt.Hyperparameters(env=dict(TINY_KNOBS, VOCAB_SIZE=str(vocab)), device_type="cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


def nll_of(model):
    """The model's own training loss per target (a reference to compare the evaluator with, never a scorer)."""
    return lambda x, y: model(x, y, reduction="none")


class UnigramLM(nn.Module):
    """A context-free model: the same distribution at every position, so a score cannot depend on windowing."""

    def __init__(self, vocab: int = V, seed: int = 0):
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, generator=torch.Generator().manual_seed(seed)))
        self.eval()

    def forward_logits(self, x):
        return self.table.expand(*x.shape, -1)

    def nll(self, y):
        """float64 reference: -log p(y)."""
        return -torch.log_softmax(self.table.detach().double(), 0)[y]


def _gloo_entry(rank: int, world: int, port: int, worker, args, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        out[rank] = worker(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_on_gloo_ranks(worker, world: int = 2, *args) -> dict:
    """Run worker(rank, world, *args) in `world` gloo processes on a free local port; {rank: its return value}.
    `worker` must be a module-level function (it is pickled by reference)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_gloo_entry, args=(world, port, worker, args, out), nprocs=world, join=True)
    return dict(out)
