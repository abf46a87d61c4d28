"""What a run of a graph returns, whoever ran it (the reference simulator or a backend).

Spikes are time-aligned (``spikes[name][t]`` is the layer's output for input frame ``t``, whatever
delay the runner adds; see ``neurocomp.ir.timing``) and time-major ``[T, B, *shape]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SimResult:
    spikes: dict                       # neuron name -> [T, B, *shape] (float 0/1 or bool)
    output: torch.Tensor               # output layer spikes [T, B, classes]
    stats: dict = field(default_factory=dict)   # fixed point: per layer clip / wrap counts

    def predictions(self) -> torch.Tensor:
        return predict(self.output)


def predict(output: torch.Tensor) -> torch.Tensor:
    """Class = argmax of spike counts over time (ties -> lowest index, as torch.argmax)."""
    return output.float().sum(0).argmax(-1)
