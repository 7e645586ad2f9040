"""Exponential moving average of the weights (EMA_DECAY), exported and scored instead of the live weights.

The records keep a shadow copy updated after every optimizer step with decay ~0.997 and quantize/evaluate it.
This one keeps the shadow in fp32 and bias-corrects it like Adam's moments (the shadow starts at zero and is
divided by 1 - decay^t), so the average covers only weights the run produced: with decay 0.997 a 300-step CPU
run would otherwise still carry 0.997^300 = 41% of the random initialization. Once decay^t < 1e-4 (t > ~9/(1 - decay),
about 3,000 steps at 0.997) the two definitions agree to that precision.

Not torch.optim.swa_utils.AveragedModel: its update reads a device counter on the host every step (a GPU sync
per step) and deep-copies the whole module; a list of shadow tensors and one fused lerp is all EMA needs.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class WeightEMA:
    """Bias-corrected EMA of a model's floating-point state_dict entries."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay={decay} must be in (0, 1) (EMA_DECAY; 0 turns EMA off)")
        self.decay = decay
        self.updates = 0
        self.names = [n for n, t in model.state_dict().items() if t.is_floating_point()]
        self.shadow = [model.state_dict()[n].detach().float().clone().zero_() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights in; call once after every optimizer step."""
        state = model.state_dict()
        live = [state[n].detach().float() for n in self.names]
        torch._foreach_lerp_(self.shadow, live, 1.0 - self.decay)
        self.updates += 1

    @torch.no_grad()
    def averaged_state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """The model's state_dict with every floating-point entry replaced by its bias-corrected average
        (in the entry's own dtype); integer entries are the model's own."""
        if self.updates == 0:
            raise RuntimeError("the EMA has seen no optimizer step yet; call update() after each step")
        correction = 1.0 - self.decay**self.updates
        state = dict(model.state_dict())
        for name, avg in zip(self.names, self.shadow, strict=True):
            state[name] = (avg / correction).to(state[name].dtype)
        return state

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into `model` (for export and scoring)."""
        model.load_state_dict(self.averaged_state_dict(model), strict=True)
