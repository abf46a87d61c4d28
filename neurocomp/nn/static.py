"""A calibrated, static attention map as a module: ``y = x * map[t]`` (then ReLU if ``rectify``);
``additive=True`` (PFA's additive FMNIST variant): ``y = x + map[t]`` (then ReLU).

``neurocomp compile --attention static`` replaces every attention module by a ``StaticMap``
holding the module's map averaged over a calibration set (``neurocomp.frontends.attention``);
the resulting torch model is the "static folded float model" the reports compare against.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register, store_config


@register
class StaticMap(nn.Module):
    """Multiply a multi-step tensor ``[T, B, ...]`` by a fixed map ``[T, ...]`` broadcast over B."""

    def __init__(self, shape: list, rectify: bool = False, source: str = "", additive: bool = False):
        super().__init__()
        store_config(self, locals())
        self.rectify = bool(rectify)
        self.additive = bool(additive)
        self.register_buffer("map", torch.ones(tuple(shape)))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = x_seq + self.map.unsqueeze(1) if self.additive else x_seq * self.map.unsqueeze(1)
        return torch.relu(y) if self.rectify else y

    def extra_repr(self) -> str:
        return (f"shape={tuple(self.map.shape)}, rectify={self.rectify}, source={self.config['source']!r}"
                + (", additive=True" if self.additive else ""))
