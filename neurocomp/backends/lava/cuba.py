"""A Lava process for :class:`~neurocomp.ir.CubaLIF` layers and its emitter (``emit_cuba``): Loihi's
CUBA compartment plus what Lava's stock ``LIF`` cannot do (reset by subtraction, a per-neuron current
bias, no voltage memory ``dv = 4096``, a non-spiking readout, and a separate recurrent input ``r_in``
that is ignored on the step a sample starts, so back-to-back samples do not leak through the
recurrent weights).

Its ``fixed_pt`` model calls :func:`neurocomp.fixedpoint.cuba_step`, the same function the
reference simulator runs. Like ``LIFReset``, ``u`` and ``v`` are zeroed when
``time_step % reset_interval == reset_offset``. A readout (``spiking=False``) sends ``v`` on
``s_out`` (24-bit graded payload) instead of spikes.
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

from neurocomp import fixedpoint as fx
from neurocomp.backends.lava.layout import to_lava_layout
from neurocomp.errors import UnsupportedLayer


class CubaNeuron(AbstractProcess):
    def __init__(self, *, shape, du: int, dv: int, vth: int, v_bias, i_bias, subtract: bool = False,
                 spiking: bool = True, reset_interval: int = 0, reset_offset: int = 0, name=None):
        super().__init__(shape=shape, du=du, dv=dv, vth=vth, subtract=subtract, spiking=spiking,
                         reset_interval=reset_interval, reset_offset=reset_offset, name=name)
        self.a_in = InPort(shape=shape)
        self.r_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        self.v_bias = Var(shape=shape, init=np.broadcast_to(np.asarray(v_bias, np.int64), shape).copy())
        self.i_bias = Var(shape=shape, init=np.broadcast_to(np.asarray(i_bias, np.int64), shape).copy())


@implements(proc=CubaNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyCubaNeuronFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    r_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    v_bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    i_bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def run_spk(self):
        p = self.proc_params
        start = p["reset_interval"] > 0 and self.time_step % p["reset_interval"] == p["reset_offset"]
        if start:
            self.u[:] = 0
            self.v[:] = 0
        a = self.a_in.recv().astype(np.int64)
        r = self.r_in.recv().astype(np.int64)
        if not start:
            a = a + r
        u, v, s = fx.cuba_step(self.u, self.v, a, int(p["du"]), int(p["dv"]), self.v_bias, self.i_bias,
                               int(p["vth"]), bool(p["subtract"]), bool(p["spiking"]), np.clip)
        self.u[:] = u
        self.v[:] = v
        self.s_out.send(s.astype(np.int32) if p["spiking"] else v.astype(np.int32))


def emit_cuba(neu, out_shape, timesteps: int, delay: int, fixed: bool):
    """The process for one CubaLIF layer (and its recurrent Dense). Returns (neuron, [extra procs])."""
    from lava.proc.dense.process import Dense
    from lava.utils.weightutils import SignMode

    if not fixed:
        raise UnsupportedLayer("CUBA layers from NIR run only under fixed_pt", where=f"layer '{neu.name}'",
                               hint="use the fixed-point Lava run (the float reference is the float stage)")
    if not neu.spiking:
        raise UnsupportedLayer("a non-spiking readout (LI/CubaLI) is not emitted to Lava", where=f"layer '{neu.name}'",
                               hint="read it from the reference simulator, or end the graph with a spiking layer")
    p = neu.fixed
    v_bias = fx.effective_bias(np.asarray(p.bias_mant, np.int64), np.asarray(p.bias_exp, np.int64))
    i_bias = np.zeros(neu.out_shape, np.int64) if neu.qi_bias is None else np.asarray(neu.qi_bias, np.int64)
    proc = CubaNeuron(shape=out_shape, du=int(p.du), dv=int(p.dv), vth=int(p.vth), v_bias=to_lava_layout(v_bias),
                      i_bias=to_lava_layout(i_bias), subtract=neu.reset == "subtract", spiking=True,
                      reset_interval=int(timesteps), reset_offset=(1 + delay) % int(timesteps), name=neu.name)
    extra = []
    if neu.rec_qweight is not None:
        w2, wexp = fx.dense_lava_weights(np.asarray(neu.rec_qweight, np.int64))
        rec = Dense(weights=w2, weight_exp=wexp, num_weight_bits=8, sign_mode=SignMode.MIXED,
                    name=neu.name + ".rec")
        proc.s_out.connect(rec.s_in)
        rec.a_out.connect(proc.r_in)
        extra.append(rec)
    return proc, extra
