"""A Lava sink that writes each step's spikes straight into a memory-mapped ``.npy`` file.

Reading a stock ``sink.RingBuffer`` back through ``Var.get()`` moves the whole buffer through
Lava's channels and took minutes for a 360-sample run; this recorder's process model (its own OS
process) writes into a file the parent opens afterwards, which costs nothing measurable.
``emit_recorder`` creates the file and attaches a recorder to a port.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class SpikeRecorder(AbstractProcess):
    """Records ``a_in != 0`` at every step into ``path`` (an ``.npy`` of shape (steps, *shape), uint8);
    ``graded``: the values themselves (a readout's voltage; float64 under ``floating_pt``, else int32)."""

    def __init__(self, *, shape, path: str, steps: int, graded: bool = False, name=None):
        super().__init__(shape=shape, path=path, steps=steps, graded=graded, name=name)
        self.a_in = InPort(shape=shape)


def create_file(path: str, shape, steps: int, dtype=np.uint8) -> None:
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(steps,) + tuple(shape))
    del mm


def emit_recorder(port, path: str, shape, steps: int, graded=None) -> SpikeRecorder:
    """Record the spikes of ``port`` (Lava shape ``shape``) for ``steps`` steps into ``path``; ``graded``
    (a numpy dtype, or None for spikes): record the values ``port`` sends, in that dtype."""
    create_file(path, shape, steps, np.uint8 if graded is None else graded)
    sink = SpikeRecorder(shape=shape, path=path, steps=steps, graded=graded is not None)
    port.connect(sink.a_in)
    return sink


class _RecorderModel(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._mm = None

    def run_spk(self):
        data = self.a_in.recv()
        if self._mm is None:
            self._mm = np.load(self.proc_params["path"], mmap_mode="r+")
        t = self.time_step - 1
        if t < self._mm.shape[0]:
            self._mm[t] = data if self.proc_params["graded"] else data != 0
            if t == self._mm.shape[0] - 1:
                self._mm.flush()


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeRecorderFixed(_RecorderModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeRecorderFloat(_RecorderModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
