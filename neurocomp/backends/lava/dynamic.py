"""Lava processes of dynamic attention: a delay line, the attention process, a gain-fed LIF.

Wiring for a layer with MA-SNN attention kept dynamic::

    synapse.a_out ─┬─► DelayLine(T) ─► GainLIFDynamic.a_in
                   └─► MAAttentionProcess.a_in ── g_out ─► GainLIFDynamic.g_in

The attention process buffers one window of the layer's integer current, computes the per-sample
gain table at the window's last step in integer arithmetic (``neurocomp.fixedpoint.attention.ma_gains``
on the program ``ma_program`` built at emit time, the functions the reference simulator calls) and,
during the next window, sends row ``t`` at the step when the delayed current of step ``t`` reaches
the neuron. PFA's additive variant (``relu(A + x)``) is wired the same way: its process computes
per-sample offsets (``pfa_offsets``) that the neuron adds to its input before the ReLU. On Loihi 2
this process would run on the chip's
embedded x86 cores and the delay would be synaptic/axonal delays. ``emit_ma_attention`` and
``emit_spike_attention_gate`` build these processes for the IR's ``MAAttention`` (with the neuron
after it) and ``SpikeAttention``.
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
from neurocomp.backends.lava.gainlif import lava_step_bias
from neurocomp.backends.lava.layout import lava_shape, to_lava_layout, to_torch_layout
from neurocomp.fixedpoint.attention import current_attention, current_program, spike_payload, spike_program


class DelayLine(AbstractProcess):
    """Sends at step s what it received at step s - delay (zeros before)."""

    def __init__(self, *, shape, delay: int):
        super().__init__(shape=shape, delay=delay)
        self.a_in = InPort(shape=shape)
        self.a_out = OutPort(shape=shape)


@implements(proc=DelayLine, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDelayLineFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._ring = np.zeros((proc_params["delay"],) + tuple(proc_params["shape"]), np.int64)

    def run_spk(self):
        slot = (self.time_step - 1) % self._ring.shape[0]
        self.a_out.send(self._ring[slot].astype(np.int32))
        self._ring[slot] = self.a_in.recv()


class MAAttentionProcess(AbstractProcess):
    """Computes MA-SNN's gains (PFA's additive offsets) from one window of a layer's current; streams
    them one window later."""

    def __init__(self, *, shape, program: dict, bias, window: int, window_offset: int):
        super().__init__(shape=shape, program=program, window=window, window_offset=window_offset)
        self.a_in = InPort(shape=shape)
        self.g_out = OutPort(shape=shape)
        self.bias = Var(shape=shape, init=bias)


@implements(proc=MAAttentionProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMAAttentionFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    g_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        T = proc_params["window"]
        shape = tuple(proc_params["shape"])
        self._window = np.zeros((T,) + shape, np.int64)
        self._gains = np.zeros((T,) + shape, np.int64)     # the table of the window being delivered

    def run_spk(self):
        p = self.proc_params
        T = p["window"]
        t = (self.time_step - 1 - p["window_offset"]) % T
        self.g_out.send(self._gains[t].astype(np.int32))
        self._window[t] = self.a_in.recv()
        if t == T - 1:
            x = self._window * (1 << fx.ACT_SHIFT) + self.bias.astype(np.int64)
            # maps are computed on (T, C, H, W); Lava neurons are (T, W, H, C)
            self._gains = to_lava_layout(current_attention(to_torch_layout(x, lead=1)[None], p["program"])[0], lead=1)


class GainLIFDynamic(AbstractProcess):
    """GainLIF whose gain for the current step arrives on ``g_in`` (see gainlif.GainLIF); with
    ``offsets``, what arrives is the step's offset (PFA's additive variant), added before the ReLU."""

    def __init__(self, *, shape, gain_shift: int, bias, dv, vth, v_reset=0, rectify=True, gain_on_bias=True,
                 window: int, window_offset: int, offsets: bool = False, step_bias=None, plain_bias=None, name=None):
        super().__init__(shape=shape, gain_shift=gain_shift, rectify=rectify, gain_on_bias=gain_on_bias,
                         window=window, window_offset=window_offset, offsets=offsets, name=name)
        self.a_in = InPort(shape=shape)
        self.g_in = InPort(shape=shape)
        self.plain_in = InPort(shape=shape)     # the groups the gain does not cover (see gainlif.GainLIF)
        self.plain_bias = Var(shape=shape, init=0 if plain_bias is None else plain_bias)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.bias = Var(shape=shape, init=bias)
        self.step_bias = Var(shape=shape, init=0 if step_bias is None else step_bias)   # MA-SNN's beta
        dv = np.asarray(dv)    # one decay, or one per neuron (MA-SNN cells with a leak per channel)
        self.dv = Var(shape=dv.shape if dv.ndim else (1,), init=dv if dv.ndim else dv.reshape(1))
        self.vth = Var(shape=(1,), init=vth)
        self.v_reset = Var(shape=(1,), init=v_reset)


@implements(proc=GainLIFDynamic, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGainLIFDynamicFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    g_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    plain_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    plain_bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    step_bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    v_reset: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def run_spk(self):
        p = self.proc_params
        a = self.a_in.recv().astype(np.int64)
        g = self.g_in.recv().astype(np.int64)
        plain = self.plain_in.recv().astype(np.int64)
        t = (self.time_step - 1 - p["window_offset"]) % p["window"]
        v = self.v.astype(np.int64) * (t != 0)
        gain, offset = (None, g) if p["offsets"] else (g, None)
        dv = self.dv.astype(np.int64) if self.dv.size > 1 else int(self.dv[0])
        v, s = fx.gain_lif_step(v, a, self.bias.astype(np.int64), gain, int(p["gain_shift"]), dv,
                                int(self.vth[0]), int(self.v_reset[0]), bool(p["rectify"]), bool(p["gain_on_bias"]),
                                np.clip, offset, fx.window_step_bias(self.step_bias.astype(np.int64), t), plain,
                                self.plain_bias.astype(np.int64))
        self.v[:] = v
        self.s_out.send(s.astype(np.int32))


class SpikeAttentionGate(AbstractProcess):
    """TCJA / PFA kept dynamic: delays spikes by one window and sends them as graded payloads.

    ``s_fwd`` receives the spikes to scale, ``s_src`` those the map is computed from (the same port's
    data for PFA; the pre-pool LIF spikes for TCJA). At the last step of a source window the gate
    computes the 8-bit payload table in integer arithmetic (``neurocomp.fixedpoint.attention.spike_payload``
    on the module's ``spike_program``, as the reference simulator does); one window later it sends
    each buffered spike multiplied by its payload.
    """

    def __init__(self, *, fwd_shape, src_shape, program: dict, window: int, fwd_offset: int, src_offset: int):
        super().__init__(fwd_shape=fwd_shape, src_shape=src_shape, program=program, window=window,
                         fwd_offset=fwd_offset, src_offset=src_offset)
        self.s_fwd = InPort(shape=fwd_shape)
        self.s_src = InPort(shape=src_shape)
        self.s_out = OutPort(shape=fwd_shape)


@implements(proc=SpikeAttentionGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeAttentionGateFixed(PyLoihiProcessModel):
    s_fwd: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_src: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        T = proc_params["window"]
        self._ring = np.zeros((T,) + tuple(proc_params["fwd_shape"]), np.int64)
        self._src = np.zeros((T,) + tuple(proc_params["src_shape"]), np.int64)
        self._payload = np.zeros((2, T) + tuple(proc_params["fwd_shape"]), np.int64)

    def run_spk(self):
        p = self.proc_params
        T = p["window"]
        f = self.time_step - 1 - p["fwd_offset"]
        t_f, k_f = f % T, f // T
        self.s_out.send((self._ring[t_f] * self._payload[(k_f - 1) % 2, t_f]).astype(np.int32))
        self._ring[t_f] = self.s_fwd.recv() != 0
        g = self.time_step - 1 - p["src_offset"]
        t_s, k_s = g % T, g // T
        self._src[t_s] = self.s_src.recv() != 0
        if t_s == T - 1:
            src = to_torch_layout(self._src, lead=1)
            pay = spike_payload(p["program"], src[None])[0]     # torch layout
            fwd_torch = to_torch_layout(self._ring, lead=1).shape[1:]
            pay = np.broadcast_to(pay, (T,) + tuple(fwd_torch))
            self._payload[k_s % 2] = to_lava_layout(pay, lead=1)


def emit_ma_attention(neu, att, out_shape, T, delay):
    """Delay line + attention process + gain-fed LIF for neuron ``neu`` whose MA attention ``att`` stays
    dynamic. Returns ``(neuron, [ports the synapse feeds], [extra procs], port the plain groups feed)``:
    a neuron that gains one synapse group (``gain_groups``) takes the others through a second delay line of
    T steps into ``plain_in``."""
    p = neu.fixed
    bias = to_lava_layout(fx.effective_bias(np.asarray(p.bias_mant, np.int64), np.asarray(p.bias_exp, np.int64)))
    line = DelayLine(shape=out_shape, delay=T)
    # the program is built once here; the process model runs it at the end of every window
    program = current_program(att.meta.get("module", ""), att.state(), att.parts, tuple(att.out_shape), att.x_scale)
    proc = MAAttentionProcess(shape=out_shape, program=program, bias=bias, window=T, window_offset=delay - T)
    dv = np.ascontiguousarray(to_lava_layout(p.dv), np.int64) if isinstance(p.dv, np.ndarray) else p.dv
    lif = GainLIFDynamic(shape=out_shape, gain_shift=int(p.gain_shift), bias=bias, dv=dv, vth=p.vth,
                         v_reset=p.v_reset, rectify=p.rectify, gain_on_bias=p.gain_on_bias, window=T,
                         window_offset=delay, offsets=att.additive, step_bias=lava_step_bias(p),
                         plain_bias=None if p.plain_bias is None else
                         np.ascontiguousarray(to_lava_layout(np.asarray(p.plain_bias)), np.int64), name=neu.name)
    line.a_out.connect(lif.a_in)
    proc.g_out.connect(lif.g_in)
    if p.plain_bias is None:
        return lif, [line.a_in, proc.a_in], [line, proc], None
    plain_line = DelayLine(shape=out_shape, delay=T)
    plain_line.a_out.connect(lif.plain_in)
    return lif, [line.a_in, proc.a_in], [line, proc, plain_line], plain_line.a_in


def emit_spike_attention_gate(node, fwd_port, fwd_shape, fwd_delay, src_port, src_shape, src_delay, T):
    """The gate of a SpikeAttention node: scales the spikes on ``fwd_port`` (torch shape ``fwd_shape``)
    by the map computed from those on ``src_port`` (torch shape ``src_shape``). Returns the gate."""
    program = spike_program(node.meta["module"], node.state(), tuple(src_shape), tuple(node.pool))
    gate = SpikeAttentionGate(fwd_shape=lava_shape(fwd_shape), src_shape=tuple(src_port.shape), program=program,
                              window=T, fwd_offset=fwd_delay, src_offset=src_delay)
    fwd_port.connect(gate.s_fwd)
    src_port.connect(gate.s_src)
    return gate
