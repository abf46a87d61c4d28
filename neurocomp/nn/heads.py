"""Non-spiking output heads: the readout that the papers' networks end in.

``Readout`` marks the end of a network whose last layer is not a neuron (a Linear read out over
time, as PFA's and MA-SNN's heads do): it passes the current ``[T, B, N]`` through unchanged, and the
class is the argmax of that current summed over the T steps (the same as of its mean over T).
"""
from __future__ import annotations

from torch import nn

from .registry import register, store_config


@register
class Readout(nn.Module):
    """The output current ``[T, B, N]`` of the layer before, accumulated over time by whoever reads it."""

    def __init__(self):
        super().__init__()
        store_config(self, locals())

    def forward(self, x_seq):
        return x_seq
