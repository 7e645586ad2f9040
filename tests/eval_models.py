"""Small real models for the eval tests (sliding, TTT, audit)."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt  # noqa: E402

V = 64
TINY_KNOBS = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1")


def tiny_model(seed: int = 0, vocab: int = V, std: float = 0.2, **knobs):
    """The real GPT, small, with every weight random (zero-initialised projections would make it context-free).
    knobs: more env knobs, e.g. MLP_KIND="s5"."""
    torch.manual_seed(seed)
    env = dict(TINY_KNOBS, VOCAB_SIZE=str(vocab), **knobs)
    model = train_gpt.build_model(train_gpt.Hyperparameters(env=env, device_type="cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


FREQUENT = 16  # text-like streams use mostly ids below this (a Zipf head), random tokens use all V


def text_like(n: int, vocab: int = V, seed: int = 0) -> torch.Tensor:
    """n tokens of a fixed random bigram chain with a Zipf-like head: what a validation split looks like to a gate
    (mostly frequent ids, strong local structure), unlike uniform random tokens."""
    g = torch.Generator().manual_seed(1234)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.3
    trans = torch.softmax(torch.randn(vocab, vocab, generator=g, dtype=torch.float64) * 2.0 + zipf.log(), 1)
    g.manual_seed(seed)
    out = torch.empty(n, dtype=torch.long)
    out[0] = 1
    for i in range(1, n):
        out[i] = torch.multinomial(trans[out[i - 1]], 1, generator=g)
    return out


class Planted(nn.Module):
    """The real tiny GPT, whose logits a subclass bends in `cheat(x, logits)`; training goes through the same
    logits, so test-time training and the model's own loss see the cheat too."""

    def __init__(self, seed: int = 0, vocab: int = V, **knobs):
        super().__init__()
        self.inner = tiny_model(seed, vocab, **knobs)
        self.eval()

    def cheat(self, x, logits):
        return logits

    def hidden(self, x):
        return self.inner.hidden(x)

    def forward_logits(self, x):
        return self.cheat(x, self.inner.forward_logits(x))

    def forward(self, x, y, reduction: str = "mean"):
        logits = self.forward_logits(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction=reduction)
        return loss.view_as(y) if reduction == "none" else loss


def peek(logits, x, where, amount: float = 3.0, ahead: int = 1):
    """logits + amount on the logit of the input `ahead` positions later (the target when ahead=1), where `where`
    (a bool (B, T) mask) holds."""
    nxt = torch.roll(x, -ahead, dims=1)
    bump = F.one_hot(nxt, logits.size(-1)).to(logits.dtype) * amount
    valid = torch.arange(x.shape[1], device=x.device) < x.shape[1] - ahead
    return logits + bump * (where & valid)[..., None]


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
