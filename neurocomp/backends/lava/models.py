"""Which process model runs each process of a Lava run: Lava's own choice, found once per process
class, except a fast exact model for Lava's fixed-point ``Conv``.

Finding the models: Lava's compiler looks a process's models up by re-executing every module in
the process's directory (and, for each module of its package, that module's directory again),
for every process of every run: about 100 module executions per neurocomp process, 3-15 s per
run. :func:`run_config` takes a neurocomp process's models from its own module (the only ones
Lava's scan can match: its re-executed copies implement a copy of the process class), asks
Lava's own finder once per session for Lava's processes, lets Lava's own ``select`` choose, and
hands the choice to the compiler per process instance (Lava's ``exception_proc_model_map``
accepts instances), so the compiler skips the search.

The Conv model: Lava 0.10's ``PyConvModelFixed`` convolves with ``scipy.signal.convolve2d`` once
per (output channel, input channel) pair per step, in a Python loop: 8,192 calls per step for a
64 -> 128 channel 3x3 conv, about 0.2 s a step, which made a Lava run of a 2x32x32 net take
minutes. :class:`PyConvModelFixedFast` is the same model (it subclasses it: same variables, same
int8 ``groups``, same one-step output buffer, same 24-bit clamp) whose convolution is one batched
matrix product over sliding windows. Lava computes the sums in float64 and casts them to int32;
the sums are integers far below 2**53 (neurocomp keeps every synaptic sum below 2**24), so a
float64 product gives the same integers; ``tests/test_lava_models.py`` checks it against Lava's
``conv`` bit for bit and a whole run against Lava's stock model. The floating-point model stays
Lava's (float sums in another order could differ in the last bit).
"""
from __future__ import annotations

import os
import sys

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv import utils
from lava.proc.conv.models import PyConvModelFixed
from lava.proc.conv.process import Conv


def conv_exact(input_: np.ndarray, weight: np.ndarray, kernel_size, stride, padding, dilation,
               groups: int) -> np.ndarray:
    """Lava's ``utils.conv`` (a convolution in Lava's ``(W, H, C)`` layout with weights
    ``(C_out, kW, kH, C_in / groups)``) for integer-valued inputs and weights, as float64 sums
    of exact integers; the result has ``weight``'s dtype like Lava's."""
    kx, ky = (int(v) for v in kernel_size)
    sx, sy = (int(v) for v in stride)
    px, py = (int(v) for v in padding)
    dx, dy = (int(v) for v in dilation)
    groups = int(groups)
    W, H, C = input_.shape
    co = weight.shape[0]
    out_shape = utils.output_shape(input_.shape, co, (kx, ky), (sx, sy), (px, py), (dx, dy))
    if groups <= 0:          # Lava's loop over range(groups) runs zero times (an int8-wrapped count)
        return np.zeros(out_shape, weight.dtype)
    if C % groups or co % groups:
        raise ValueError(f"channels ({C} in, {co} out) are not divisible by groups={groups}")
    xp = np.pad(np.asarray(input_, np.float64), ((px, px), (py, py), (0, 0)))
    ex, ey = dx * (kx - 1) + 1, dy * (ky - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (ex, ey), axis=(0, 1))   # (W', H', C, ex, ey)
    win = win[::sx, ::sy, :, ::dx, ::dy]                                         # (Wo, Ho, C, kx, ky)
    wo, ho = win.shape[:2]
    cg, kg = C // groups, co // groups
    # a convolution is a correlation with the kernel flipped: tap (i, j) of a window meets w[-1-i, -1-j]
    wf = np.asarray(weight, np.float64)[:, ::-1, ::-1, :]                        # (co, kx, ky, cg)
    a = win.reshape(wo * ho, groups, cg * kx * ky).transpose(1, 0, 2)             # (G, P, cg*kx*ky)
    b = wf.transpose(0, 3, 1, 2).reshape(groups, kg, cg * kx * ky).transpose(0, 2, 1)   # (G, K, kg)
    out = np.matmul(a, b)                                                        # (G, P, kg)
    out = out.transpose(1, 0, 2).reshape(wo, ho, co)
    return out.astype(weight.dtype)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyConvModelFixedFast(PyConvModelFixed):
    """Lava's fixed-point Conv model with :func:`conv_exact` in place of the scipy loop."""

    def run_spk(self) -> None:
        if self.a_buf is None:
            self.a_buf = np.zeros_like(self.a_out.shape)
        self.a_out.send(self.a_buf)
        if self.num_message_bits.item() > 0:
            s_in = self.s_in.recv()
        else:
            s_in = self.s_in.recv().astype(bool)
        a_out = conv_exact(s_in, self.weight, self.kernel_size, self.stride, self.padding, self.dilation,
                           self.groups[0])
        self.a_buf = self.clamp_precision(a_out)


STOCK_ENV = "NEUROCOMP_LAVA_STOCK_CONV"


def replaced_models(tag: str) -> dict:
    """Lava process classes whose model neurocomp replaces under ``tag``; none when the environment
    sets ``NEUROCOMP_LAVA_STOCK_CONV=1`` (run Lava's own scipy Conv model, e.g. to re-check the fast
    one at a size the tests do not reach)."""
    if tag != "fixed_pt" or os.environ.get(STOCK_ENV, "") not in ("", "0"):
        return {}
    return {Conv: PyConvModelFixedFast}


_FOUND: dict = {}     # process class -> the ProcessModels Lava's finder returned for it


def run_config(anchor, tag: str):
    """A ``Loihi2SimCfg(select_tag=tag)`` with the model of every process connected to ``anchor``
    chosen in advance, by Lava's own rules (see the module doc)."""
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs, find_processes
    from lava.magma.core.run_configs import Loihi2SimCfg
    cfg = Loihi2SimCfg(select_tag=tag, exception_proc_model_map=replaced_models(tag))
    chosen = {}
    for proc in find_processes(anchor):
        cls = type(proc)
        if cls not in _FOUND:
            own = sys.modules[cls.__module__]
            # neurocomp defines each process's models next to it; Lava's directory scan finds only
            # those (its re-executed copies implement a copy of the class, which never matches)
            _FOUND[cls] = (ProcGroupDiGraphs._find_proc_models_in_module(proc, own)
                           if cls.__module__.startswith("neurocomp.") else None) \
                or ProcGroupDiGraphs._find_proc_models(proc)
        chosen[proc] = ProcGroupDiGraphs._select_proc_models(proc, _FOUND[cls], cfg)
    cfg.exception_proc_model_map.update(chosen)
    return cfg
