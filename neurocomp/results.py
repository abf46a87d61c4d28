"""What a run of a graph returns, whoever ran it (the reference simulator or a backend).

Spikes are time-aligned (``spikes[name][t]`` is the layer's output for input frame ``t``, whatever
delay the runner adds; see ``neurocomp.ir.timing``) and time-major ``[T, B, *shape]``. A readout head
(``ir.Readout``, a non-spiking output layer) gives values instead of spikes: its value per step (the
current in float, ``v[t] - v[t-1]`` of its integrator in fixed point and Lava), so the class is again the
argmax of the sum over time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SimResult:
    spikes: dict                       # neuron name -> [T, B, *shape] (float 0/1 or bool; a readout's values)
    output: torch.Tensor               # output layer spikes (or a readout head's values) [T, B, classes]
    stats: dict = field(default_factory=dict)   # fixed point: per layer clip / wrap counts

    def predictions(self) -> torch.Tensor:
        return predict(self.output)


def predict(output: torch.Tensor) -> torch.Tensor:
    """Class = argmax of spike counts over time, or of a readout head's values summed over time (== of
    their mean, the papers' ``out.mean(0)``); ties -> lowest index, as torch.argmax."""
    return output.float().sum(0).argmax(-1)
