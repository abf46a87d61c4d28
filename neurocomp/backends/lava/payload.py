"""PayloadGate: a neuron layer's graded spike payloads as a zero-delay Lava process.

Static spike maps that vary over space (PFA's ``B[c, h, w]``, see ``passes.fold_attention``) are
sent by the producing neuron (or the input) as graded spikes: each spike carries its neuron's
constant integer payload ``qscale`` (8 bits), and the convolution after it (``num_message_bits =
8``) keeps its shared weights. On Loihi 2 the payload is the neuron's graded spike; here a gate
between the neuron's ``s_out`` and the synapse multiplies each step's spikes by the payloads. It
receives and sends in the same step, so it adds no delay (``ir.timing``). The reference
simulator computes the same product (``sim.reference.run_fixed``). ``emit_payload_gate`` builds it
for a ``GradedSpikes`` node.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocomp.backends.lava.layout import lava_shape, to_lava_layout


class PayloadGate(AbstractProcess):
    """Sends ``payload`` (per neuron, Lava layout) where a spike arrives, 0 elsewhere."""

    def __init__(self, *, shape, payload, name=None):
        super().__init__(shape=shape, name=name)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.payload = Var(shape=shape, init=payload)


@implements(proc=PayloadGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPayloadGateFixed(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    payload: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)

    def run_spk(self):
        s = self.s_in.recv() != 0
        self.s_out.send((s * self.payload).astype(np.int32))


@implements(proc=PayloadGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPayloadGateFloat(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    payload: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        s = self.s_in.recv() != 0
        self.s_out.send(s * self.payload)


def emit_payload_gate(node, port, shape, fixed: bool):
    """The gate of a GradedSpikes node on the spikes of ``port`` (torch shape ``shape``); returns it."""
    pay = to_lava_layout(np.asarray(node.qscale, np.int64))
    gate = PayloadGate(shape=lava_shape(shape), payload=pay if fixed else pay.astype(np.float64),
                       name=f"{node.name}.payload")
    port.connect(gate.s_in)
    return gate
