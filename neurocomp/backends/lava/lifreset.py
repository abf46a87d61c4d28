"""The arguments of Lava's ``LIFReset`` for a Loihi compartment, once.

A neuron layer (``ir.LoihiNeuron`` parameters) runs as Lava's stock ``LIFReset`` (``emit``) or as the
readout head's ``ReadoutLIF``, a ``LIFReset`` that sends its voltage (``readout``); both take the same
arguments: under ``fixed_pt`` the integer ``du``/``dv``/``vth`` and the bias mantissa and exponent in
Lava's layout, under ``floating_pt`` the same compartment in Lava's float units (``du = 1``, ``dv`` as a
fraction, the threshold half a voltage unit above ``vth`` so that ``v > vth`` is the integer rule, the bias
as a float), and the window reset at the layer's own phase (``reset_offset = (1 + delay) mod T``).
"""
from __future__ import annotations

import numpy as np

from neurocomp import fixedpoint as fx
from neurocomp.backends.lava.layout import to_lava_layout


def lif_reset_args(neu, out_shape, T: int, delay: int, fixed: bool) -> dict:
    """Keyword arguments of ``LIFReset`` (or a subclass) for the neuron layer ``neu``."""
    p = neu.fixed
    common = dict(shape=out_shape, reset_interval=T, reset_offset=(1 + delay) % T, name=neu.name)
    if fixed:
        return dict(common, du=p.du, dv=p.dv, vth=p.vth,
                    bias_mant=to_lava_layout(np.asarray(p.bias_mant)).astype(np.int64),
                    bias_exp=to_lava_layout(np.asarray(p.bias_exp)).astype(np.int64))
    bias = fx.effective_bias(np.asarray(p.bias_mant, np.float64), np.asarray(p.bias_exp, np.int64)) / 64.0
    return dict(common, du=1.0, dv=p.dv / fx.DECAY_UNITY, vth=p.vth + 1.0 / 64, bias_mant=to_lava_layout(bias),
                bias_exp=0)
