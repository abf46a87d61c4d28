"""The Lava backend: emit a quantized IR graph as a Lava process network and run it on the CPU simulator.

``runtime`` (Lava's multiprocessing import, stopping and killing a runtime), ``layout`` (torch <-> Lava
layout, conv weights and parameters), ``emit`` (one emitter per IR node class, in ``EMITTERS``), ``run``
(samples back to back, the recording read back time-aligned), and one file per neurocomp process with
its emitter: ``cuba``, ``gainlif``, ``dynamic`` (MA-SNN and TCJA/PFA attention kept dynamic),
``payload`` (graded spike payloads), ``recorder`` (spikes to a memory-mapped file), ``shard`` (one run
split over several runtimes, local processes or Ray, merged by sample index), ``footprint`` (a run's
memory, estimated from the IR before any Lava process starts), ``env`` (whether Lava runs
in this Python, which Python runs it otherwise, ``neurocomp lava-env``) and ``bridge`` (a Lava recording
made in that Python: ``bridge.lava_recording`` is where a caller asks for Lava; not imported here, since
the Lava environment runs it as ``python -m neurocomp.backends.lava.bridge``).

Lava itself is imported only when a network is emitted or run (importing it fixes the process start
method, see ``runtime.ensure_lava_runtime``): importing this package imports no Lava module.
"""
from neurocomp.backends.lava.emit import EMITTERS, emit, emitter_for
from neurocomp.backends.lava.layout import (LAVA_CONV_PARAM_MAX, check_conv_params, conv_weight_to_lava,
                                            flatten_permutation, lava_shape, lava_xy, regroup_conv_weight,
                                            source_data, to_lava_layout, to_torch_layout)
from neurocomp.backends.lava.run import LavaRecording, record_lava, run_lava
from neurocomp.backends.lava.runtime import ensure_lava_runtime, kill_runtime, stop_runtime
from neurocomp.backends.lava.shard import ShardedRecording, record_lava_sharded

__all__ = ["EMITTERS", "emit", "emitter_for", "LAVA_CONV_PARAM_MAX", "check_conv_params", "conv_weight_to_lava",
           "flatten_permutation", "lava_shape", "lava_xy", "regroup_conv_weight", "source_data", "to_lava_layout",
           "to_torch_layout", "LavaRecording", "record_lava", "run_lava", "ensure_lava_runtime", "kill_runtime",
           "stop_runtime", "ShardedRecording", "record_lava_sharded"]
