"""Exponential moving average (EMA) of a model's weights, for judging and keeping a model.

A short run from random weights on a few dozen events ends wherever its last noisy steps
left it. The average of the weights over the last few hundred steps (Polyak averaging) is
a steadier model, at the cost of one lerp per tensor per step. BatchNorm running
statistics are averaged with the weights, so that the averaged network is evaluated with
statistics that fit it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """EMA of every floating-point tensor in ``model.state_dict()``.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that
    the random initial weights are forgotten within the first few dozen steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay} must lie strictly between 0 and 1")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights after an optimiser step."""
        weight = 1.0 - self.current_decay()
        current = model.state_dict()
        for name, average in self.module.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name].to(average.dtype), weight)
            else:  # counters such as BatchNorm's num_batches_tracked
                average.copy_(current[name])
        self.updates += 1

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume the average exactly."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
