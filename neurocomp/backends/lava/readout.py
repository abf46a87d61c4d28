"""The readout head in Lava: Lava's own LIF arithmetic, sending its voltage instead of spikes.

A :class:`~neurocomp.ir.Readout` is a Loihi compartment that never fires (``du = 4095``: ``u = 64 a``
each step; ``dv = 0``: ``v`` accumulates ``u + bias``; ``vth`` out of reach), whose state is the output.
Lava's stock ``LIFReset`` sends only spikes, so :class:`ReadoutLIF` is a ``LIFReset`` whose process models
are Lava's own (``PyLifResetModelBitAcc`` / ``PyLifResetModelFloat``: every step's arithmetic, the 24-bit
current wrap, the voltage saturation, the reset of ``u`` and ``v`` when a window starts and a spike's reset
are Lava's code) with one change: after the step, ``s_out`` carries ``v`` (24-bit graded) instead of
the spike vector. The recorder stores these values; ``run`` turns them into ``v[t] - v[t-1]`` per window,
what the reference simulator's readout returns.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifResetModelBitAcc, PyLifResetModelFloat
from lava.proc.lif.process import LIFReset

from neurocomp.backends.lava.lifreset import lif_reset_args


class ReadoutLIF(LIFReset):
    """A ``LIFReset`` whose ``s_out`` sends its voltage ``v`` every step (the readout head)."""


def _send_voltage(model) -> None:
    """One step of Lava's LIFReset model, its voltage sent instead of its spikes."""
    a_in_data = model.a_in.recv()
    if (model.time_step % model.reset_interval) == model.reset_offset:
        model.u *= 0
        model.v *= 0
    if hasattr(model, "scale_bias"):
        model.scale_bias()
        if not model.isthrscaled:
            model.scale_threshold()
    model.subthr_dynamics(activation_in=a_in_data)
    model.reset_voltage(spike_vector=model.spiking_activation())
    model.s_out.send(model.v.copy())


@implements(proc=ReadoutLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyReadoutLIFFixed(PyLifResetModelBitAcc):
    implements_process = None     # set by @implements (Lava refuses to re-target an inherited one)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def run_spk(self):
        _send_voltage(self)


@implements(proc=ReadoutLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyReadoutLIFFloat(PyLifResetModelFloat):
    implements_process = None
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self):
        _send_voltage(self)


def emit_readout(neu, out_shape, T: int, delay: int, fixed: bool) -> ReadoutLIF:
    """The readout process of one :class:`~neurocomp.ir.Readout` layer (its window reset at its own phase),
    with the arguments of every ``LIFReset`` (``lifreset.lif_reset_args``; ``floating_pt``: Lava's float units)."""
    return ReadoutLIF(**lif_reset_args(neu, out_shape, T, delay, fixed))
