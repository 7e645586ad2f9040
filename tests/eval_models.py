"""Small real models for the eval tests (sliding, TTT, audit)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

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
    return lambda x, y: model(x, y, reduction="none")

