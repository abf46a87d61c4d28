"""GainLIF: neurocomp's gain-scheduled LIF as a Lava process (attention as membrane-potential scaling).

Per step, the input current is rectified if asked, multiplied by a gain from a table indexed by the
step within the sample window and by the neuron (mantissa / 2**shift), and integrated like Loihi's
LIF without current memory; after a spike the voltage is set to ``v_reset`` (MA-SNN: its
threshold). The ``fixed_pt`` model calls ``neurocomp.fixedpoint.gain_lif_step``, the same function
the reference simulator uses, so the two cannot drift. The gain table is a Var (``gain``) that a
host or an attention process may rewrite between samples. ``offset`` (``(window, *shape)``, zero unless
the neuron carries PFA's additive map) is added to the input current, with the bias, before the ReLU; ``step_bias``
(MA-SNN's beta) is added after the decay at every step of a window but the first. ``plain_in`` takes the synapse
groups the gain does not cover (a shortcut beside an attention-scaled branch), added with ``plain_bias`` after
the gain (unconnected: zero); ``gained_in`` the voltage of further gained groups, each computed by a
``GroupGain`` gate (zero delay) from its synapse's current with its own gain table
(``fixedpoint.group_gain_input``). The state resets at the start of each
sample window, as ``LIFReset`` does. ``emit_gain_lif`` builds it for a gain-scheduled IR neuron.
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


class GainLIF(AbstractProcess):
    def __init__(self, *, shape, gain, gain_shift: int, bias, dv, vth, v_reset=0, rectify=False,
                 gain_on_bias=False, window: int, window_offset: int, offset=None, step_bias=None, plain_bias=None,
                 name=None):
        """``gain``: ``(window, *shape)`` table; ``window_offset``: the layer's delay (the step of
        the first sample frame is ``1 + window_offset``); ``step_bias``: MA-SNN's beta per neuron (or None),
        added after the decay at every step of a window but the first."""
        super().__init__(shape=shape, gain_shift=gain_shift, rectify=rectify, gain_on_bias=gain_on_bias,
                         window=window, window_offset=window_offset, name=name)
        self.a_in = InPort(shape=shape)
        self.plain_in = InPort(shape=shape)
        self.gained_in = InPort(shape=shape)
        self.plain_bias = Var(shape=shape, init=0 if plain_bias is None else plain_bias)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.bias = Var(shape=shape, init=bias)
        self.gain = Var(shape=(window,) + tuple(shape), init=gain)
        self.offset = Var(shape=(window,) + tuple(shape), init=0 if offset is None else offset)
        self.step_bias = Var(shape=shape, init=0 if step_bias is None else step_bias)
        dv = np.asarray(dv)    # one decay, or one per neuron (MA-SNN cells with a leak per channel)
        self.dv = Var(shape=dv.shape if dv.ndim else (1,), init=dv if dv.ndim else dv.reshape(1))
        self.vth = Var(shape=(1,), init=vth)
        self.v_reset = Var(shape=(1,), init=v_reset)


def _decay(dv: np.ndarray):
    """The process's ``dv`` as ``gain_lif_step`` takes it: one int, or an int64 array per neuron."""
    return dv.astype(np.int64) if dv.size > 1 else int(dv[0])


class _GainLIFModel(PyLoihiProcessModel):
    def local_step(self) -> int:
        p = self.proc_params
        return (self.time_step - 1 - p["window_offset"]) % p["window"]


@implements(proc=GainLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGainLIFFixed(_GainLIFModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    plain_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    gained_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    plain_bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    gain: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)
    offset: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    step_bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    v_reset: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def run_spk(self):
        a = self.a_in.recv().astype(np.int64)
        plain = self.plain_in.recv().astype(np.int64)
        gained = self.gained_in.recv().astype(np.int64)
        t = self.local_step()
        v = self.v.astype(np.int64) * (t != 0)          # a new sample window starts from rest
        p = self.proc_params
        v, s = fx.gain_lif_step(v, a, self.bias.astype(np.int64), self.gain[t].astype(np.int64),
                                int(p["gain_shift"]), _decay(self.dv), int(self.vth[0]), int(self.v_reset[0]),
                                bool(p["rectify"]), bool(p["gain_on_bias"]), np.clip, self.offset[t].astype(np.int64),
                                fx.window_step_bias(self.step_bias.astype(np.int64), t), plain,
                                self.plain_bias.astype(np.int64), gained)
        self.v[:] = v
        self.s_out.send(s.astype(np.int32))


@implements(proc=GainLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyGainLIFFloat(_GainLIFModel):
    """Float version of the same dynamics in Lava's float units (strict threshold)."""
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    plain_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    gained_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    plain_bias: np.ndarray = LavaPyType(np.ndarray, float)
    gain: np.ndarray = LavaPyType(np.ndarray, float)
    offset: np.ndarray = LavaPyType(np.ndarray, float)
    step_bias: np.ndarray = LavaPyType(np.ndarray, float)
    dv: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    v_reset: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        a = self.a_in.recv()
        t = self.local_step()
        p = self.proc_params
        v = self.v * (t != 0)
        x = a + (self.bias if p["gain_on_bias"] else 0.0) + self.offset[t]
        if p["rectify"]:
            x = np.maximum(x, 0.0)
        x = x * self.gain[t] / (1 << int(p["gain_shift"]))
        if not p["gain_on_bias"]:
            x = x + self.bias
        x = x + self.plain_in.recv() + self.plain_bias + self.gained_in.recv()
        v = v * (1.0 - (self.dv if self.dv.size > 1 else self.dv[0])) + self.step_bias * (t != 0) + x
        s = v > self.vth[0]
        self.v[:] = np.where(s, self.v_reset[0], v)
        self.s_out.send(s.astype(float))


class GroupGain(AbstractProcess):
    """A further gained synapse group of a GainLIF: its current times its own gain table (bias included,
    rectified if asked), sent in voltage units to the neuron's ``gained_in`` in the same step."""

    def __init__(self, *, shape, gain, gain_shift: int, bias, rectify: bool, window: int, window_offset: int,
                 name=None):
        super().__init__(shape=shape, gain_shift=gain_shift, rectify=rectify, window=window,
                         window_offset=window_offset, name=name)
        self.a_in = InPort(shape=shape)
        self.v_out = OutPort(shape=shape)
        self.bias = Var(shape=shape, init=bias)
        self.gain = Var(shape=(window,) + tuple(shape), init=gain)


@implements(proc=GroupGain, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGroupGainFixed(_GainLIFModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    gain: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)

    def run_spk(self):
        a = self.a_in.recv().astype(np.int64)
        p = self.proc_params
        x = fx.group_gain_input(a, self.bias.astype(np.int64), self.gain[self.local_step()].astype(np.int64),
                                int(p["gain_shift"]), bool(p["rectify"]))
        self.v_out.send(x.astype(np.int32))


@implements(proc=GroupGain, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyGroupGainFloat(_GainLIFModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    gain: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        x = self.a_in.recv() + self.bias
        if self.proc_params["rectify"]:
            x = np.maximum(x, 0.0)
        self.v_out.send(x * self.gain[self.local_step()] / (1 << int(self.proc_params["gain_shift"])))


def emit_group_gains(neu, lif, out_shape, T, delay, fixed):
    """One GroupGain gate per further gained group of ``neu`` (``more_groups``), sending into
    ``lif.gained_in``. Returns ``({group synapse name: the gate's a_in}, [gates])``."""
    p = neu.fixed
    if p.more_gain_mant is None:
        return {}, []
    ports, gates = {}, []
    for k, name in enumerate(neu.more_groups):
        gain = np.ascontiguousarray(to_lava_layout(np.asarray(p.more_gain_mant[k]), lead=1), np.int64)
        bias = np.ascontiguousarray(to_lava_layout(np.asarray(p.more_bias[k])), np.int64)
        gate = GroupGain(shape=out_shape, gain=gain if fixed else gain.astype(np.float64),
                         gain_shift=int(p.more_gain_shift[k]), bias=bias if fixed else bias / 64.0,
                         rectify=bool(p.more_rectify[k]), window=T, window_offset=delay, name=f"{neu.name}.gain{k}")
        gate.v_out.connect(lif.gained_in)
        ports[name] = gate.a_in
        gates.append(gate)
    return ports, gates


def lava_step_bias(p):
    """The compartment's step bias (MA-SNN's beta) in Lava's layout, int64, or None."""
    return None if p.step_bias is None else np.ascontiguousarray(to_lava_layout(np.asarray(p.step_bias)), np.int64)


def emit_gain_lif(neu, out_shape, T, delay, fixed):
    """A GainLIF process for a neuron carrying folded attention (or MA-SNN's reset-to-threshold)."""
    p = neu.fixed
    bias = to_lava_layout(fx.effective_bias(np.asarray(p.bias_mant, np.int64), np.asarray(p.bias_exp, np.int64)))
    if p.gain_mant is None:
        gain = np.ones((T,) + tuple(out_shape), np.int64)
        shift = 0
    else:
        gain = np.ascontiguousarray(to_lava_layout(np.asarray(p.gain_mant), lead=1), np.int64)
        shift = int(p.gain_shift)
    offset = None if p.offset is None else np.ascontiguousarray(to_lava_layout(np.asarray(p.offset), lead=1), np.int64)
    dv = np.ascontiguousarray(to_lava_layout(p.dv), np.int64) if isinstance(p.dv, np.ndarray) else p.dv
    step_bias = lava_step_bias(p)
    plain_bias = None if p.plain_bias is None else \
        np.ascontiguousarray(to_lava_layout(np.asarray(p.plain_bias)), np.int64)
    if fixed:
        return GainLIF(shape=out_shape, gain=gain, gain_shift=shift, bias=bias, dv=dv, vth=p.vth,
                       v_reset=p.v_reset, rectify=p.rectify, gain_on_bias=p.gain_on_bias, window=T,
                       window_offset=delay, offset=offset, step_bias=step_bias, plain_bias=plain_bias, name=neu.name)
    return GainLIF(shape=out_shape, gain=gain.astype(np.float64), gain_shift=shift, bias=bias / 64.0,
                   dv=dv / fx.DECAY_UNITY, vth=p.vth + 1.0 / 64, v_reset=p.v_reset / 64.0, rectify=p.rectify,
                   gain_on_bias=p.gain_on_bias, window=T, window_offset=delay,
                   offset=None if offset is None else offset / 64.0,
                   step_bias=None if step_bias is None else step_bias / 64.0,
                   plain_bias=None if plain_bias is None else plain_bias / 64.0, name=neu.name)
