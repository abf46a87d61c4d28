"""Core mapping: place every neuron layer (with the synapses in front of it) onto cores.

A *layer* here is a (synapse, neuron) pair of the lowered graph (``ir.rules.check_lowerable``);
its neurons live on cores and its incoming synapses are stored on the same cores. The input layer
is not mapped (spikes come from the host / a RingBuffer).

Per layer, with ``n`` neurons, ``f`` = the largest number of synapses one neuron receives and
``n_in`` = the size of the layer's input:

- neurons per core   <= ``core.neurons``
- synaptic memory    <= ``core.synaptic_memory``: a slice of ``m`` neurons needs ``m * f * bits_per_synapse``
  bits (every connection is stored; convolutional weight sharing is not modelled: conservative)
- input axons        <= ``core.fan_in`` (if published): a slice of ``m`` neurons sees at most
  ``min(n_in, m * f)`` distinct inputs (an upper bound)
- destination cores  <= ``core.fan_out`` (if published): every core of a layer may send to every core
  of the next layer

A layer over a limit is split into ``k`` equal contiguous slices of its neurons (torch flat order
C, H, W), the smallest ``k`` that satisfies every limit. A layer that cannot be split to fit (one
neuron alone breaks a limit) raises ``DoesNotFit`` naming the layer, the limit and the numbers.
Cores are numbered in layer order. The result is stored in ``graph.meta['mapping']`` and summarised
in ``graph.meta['passes']``.

**Chips** (:func:`partition_chips`): the cores are cut into chips of ``chip_limits.cores`` cores each,
keeping layers contiguous in the graph's topological order (a chip holds a run of consecutive cores),
on as few chips as possible (``ceil(cores / cores per chip)``) or on at most ``max_chips`` (``--chips N``)
when given. The rule is greedy, in layer order: a layer goes on the current chip when it fits in what is
left of it; otherwise, while the chips still unused can hold every remaining core, it starts a fresh chip
(so it is not cut), else it fills the current chip and continues on the next (a layer is cut only when it
exceeds a chip or when the chip budget leaves no room). Cutting a layer sends the spikes of the layers
feeding it to two chips; a cut between layers sends each spike once. Each slice records its ``chip``;
:func:`chip_summary` derives the cores and layers of each chip from the slices (on read, not stored).
A network that needs more than ``max_chips`` chips raises ``DoesNotFit`` naming the first layer that
does not fit. The inter-chip traffic is counted from measured spikes by
:func:`neurocomp.metrics.chip_traffic`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from neurocomp.errors import BadArtifact, DoesNotFit
from neurocomp.ir import Conv2d, Dense, Linear, SumPool2d, Voting
from neurocomp.passes._util import with_record
from neurocomp.ir.rules import check_lowerable, neuron_groups, spike_pieces
from neurocomp.targets import Target, load_target


def connections_per_neuron(syn) -> np.ndarray:
    """Number of synapses each output neuron of ``syn`` receives, torch layout ``out_shape``."""
    if isinstance(syn, Linear):
        return np.full(syn.weight.shape[0], syn.weight.shape[1], dtype=np.int64)
    if isinstance(syn, Dense):   # an unrolled conv: count the non-zero taps
        return (syn.weight != 0).sum(axis=1).reshape(tuple(syn.out_shape)).astype(np.int64)
    if isinstance(syn, Conv2d):   # every input channel of a group has the same taps: count one, times the channels
        x = torch.ones((1, 1) + tuple(syn.in_shape[1:]), dtype=torch.float64)
        w = torch.ones((1, 1) + tuple(syn.weight.shape[2:]), dtype=torch.float64)
        y = F.conv2d(x, w, None, tuple(syn.stride), tuple(syn.padding), tuple(syn.dilation))
        taps = y[0, 0].round().to(torch.int64).numpy() * int(syn.weight.shape[1])
        return np.ascontiguousarray(np.broadcast_to(taps, tuple(syn.out_shape)))
    if isinstance(syn, SumPool2d):
        x = torch.ones((1,) + tuple(syn.in_shape), dtype=torch.float64)
        y = F.avg_pool2d(x, tuple(syn.kernel), tuple(syn.stride), tuple(syn.padding), divisor_override=1)
        return y[0].round().to(torch.int64).numpy()
    if isinstance(syn, Voting):  # a Dense of one weight per group member
        return np.full(tuple(syn.out_shape), int(syn.voting_size), dtype=np.int64)
    raise NotImplementedError(f"synapse kind {syn.kind}")


def _limit_name(target_name, field):
    return f"{field} (target {target_name})"


def _copies(graph, syn) -> int:
    """How many times a synapse is instantiated: once per addend of an Add of spikes it reads (Lava
    realises the add by linearity); a Concat's parts split its weights (once in all)."""
    if graph.is_chain():
        return 1
    pieces = spike_pieces(graph, graph.inputs[syn.name][0])
    return max(1, round(sum(c1 - c0 for _, c0, c1 in pieces) / int(syn.in_shape[0])))


def map_cores(graph, target, max_chips: int | None = None):
    """Return ``graph`` with ``meta['mapping']``; ``target`` is a :class:`neurocomp.targets.Target`
    or a name/path for :func:`neurocomp.targets.load_target`."""
    if not isinstance(target, Target):
        target = load_target(target)
    lim = target.limits()
    N, M, bps = lim["neurons_per_core"], lim["synaptic_memory_bits"], lim["bits_per_synapse"]
    fan_in, fan_out, per_chip = lim["fan_in"], lim["fan_out"], lim["cores_per_chip"]
    tname = target.name
    layers = []
    next_core = 0
    groups, seen = neuron_groups(check_lowerable(graph)), set()
    for syn, neu in check_lowerable(graph):
        if neu.name in seen:
            continue
        seen.add(neu.name)
        group = groups[neu.name]     # a neuron fed by several synapse groups: its fan-in is their sum
        conn = connections_per_neuron(syn) * _copies(graph, syn)
        for other in group[1:]:
            conn = conn.reshape(-1) + connections_per_neuron(other).reshape(-1) * _copies(graph, other)
        n = int(np.prod(neu.out_shape))
        n_in = sum(int(np.prod(o.in_shape)) for o in group)
        rec = getattr(neu, "rec_weight", None)
        if rec is not None:     # recurrent layer: every neuron also receives the layer's own spikes
            conn = conn.reshape(-1) + int(np.asarray(rec).shape[1])
            n_in += int(np.asarray(rec).shape[1])
        f = int(conn.max()) if conn.size else 0
        where = f"layer '{neu.name}'"
        # one neuron alone must fit
        if f * bps > M:
            raise DoesNotFit(f"one neuron receives {f} synapses = {f * bps} bits of synaptic memory "
                             f"({bps} bits each) but a core holds {M} bits "
                             f"({_limit_name(tname, 'core.synaptic_memory')})", where=where,
                             hint="reduce the layer's fan-in (fewer input channels, a smaller kernel) "
                                  "or use fewer weight bits")
        if fan_in is not None and f > fan_in:
            raise DoesNotFit(f"one neuron receives {f} inputs (from '{syn.name}', input {n_in} neurons) but a "
                             f"core accepts at most {fan_in} input axons ({_limit_name(tname, 'core.fan_in')})",
                             where=where, hint="reduce the layer's fan-in (fewer input channels, a smaller "
                                               "kernel, or pool before it)")
        caps = {"core.neurons": N, "core.synaptic_memory": M // (f * bps) if f else N}
        if fan_in is not None and n_in > fan_in:
            caps["core.fan_in"] = fan_in // f
        binding = min(caps, key=lambda k: caps[k])
        cap = max(1, caps[binding])
        k = math.ceil(n / cap)
        if k == 1:
            binding = None
        bounds = np.linspace(0, n, k + 1).round().astype(int)
        slices = []
        for i in range(k):
            core = next_core + i
            m = int(bounds[i + 1] - bounds[i])
            slices.append({"core": core, "chip": None, "start": int(bounds[i]), "stop": int(bounds[i + 1]),
                           "neurons": m, "synaptic_memory_bits": int(conn.ravel()[bounds[i]:bounds[i + 1]].sum()) * bps,
                           "fan_in_bound": min(n_in, m * f)})
        next_core += k
        layers.append({"layer": neu.name, "synapse": syn.name, "kind": syn.kind, "neurons": n, "inputs": n_in,
                       "synapses": int(conn.sum()), "max_fan_in_per_neuron": f, "cores": k,
                       "neurons_per_core_max": max(s["neurons"] for s in slices),
                       "split_by": binding, "slices": slices,
                       **({"groups": [o.name for o in group]} if len(group) > 1 else {})})
    if fan_out is not None:
        for a, b in zip(layers, layers[1:]):
            if b["cores"] > fan_out:
                raise DoesNotFit(f"each of its {a['cores']} core(s) must send spikes to all {b['cores']} cores of "
                                 f"layer '{b['layer']}' but a core reaches at most {fan_out} cores "
                                 f"({_limit_name(tname, 'core.fan_out')})", where=f"layer '{a['layer']}'",
                                 hint=f"make layer '{b['layer']}' smaller")
    cores = next_core
    chip_of = partition_chips([l["cores"] for l in layers], per_chip, max_chips,
                              names=[l["layer"] for l in layers], target_name=tname)
    for l in layers:
        for s in l["slices"]:
            s["chip"] = chip_of[s["core"]]
    chips = (max(chip_of) + 1) if chip_of else 0
    mapping = {"target": tname, "target_file": target.path, "limits": lim, "layers": layers,
               "cores": cores, "chips": chips, **({"max_chips": int(max_chips)} if max_chips is not None else {}),
               "notes": ["the input layer is not mapped (spikes come from the host)",
                         "synaptic memory counts every connection (no convolutional weight sharing)",
                         "fan-in per core is an upper bound min(inputs, neurons x max fan-in per neuron)"]}
    meta = dict(graph.meta)
    meta["mapping"] = mapping
    g = graph.rewrite(graph.nodes, meta)
    summary = {"target": tname, "cores": cores, "chips": chips,
               "cores_per_layer": {l["layer"]: l["cores"] for l in layers}}
    return with_record(g, "map_cores", summary)


def partition_chips(layer_cores: list, per_chip: int, max_chips: int | None = None, names=None,
                    target_name: str = "target") -> list:
    """The chip of every core (cores numbered in layer order, ``layer_cores[i]`` cores for layer ``i``),
    by the greedy rule of the module docstring: layers contiguous, at most ``max_chips`` chips (default:
    the fewest, ``ceil(cores / per_chip)``), a layer cut only when it exceeds a chip or the budget
    leaves no room to start it on a fresh one. Deterministic. ``names``: the layers, for the error."""
    total = int(sum(layer_cores))
    fewest = math.ceil(total / per_chip) if total else 0
    names = list(names) if names is not None else [f"#{i}" for i in range(len(layer_cores))]
    if max_chips is not None and fewest > max_chips:
        first, seen = None, 0
        for name, k in zip(names, layer_cores):      # the first layer whose cores run past the last chip
            seen += k
            if seen > max_chips * per_chip:
                first = name
                break
        raise DoesNotFit(f"the network needs {total} cores = {fewest} chips of {per_chip} cores "
                         f"({_limit_name(target_name, 'chip_limits.cores')}) but at most {max_chips} chip(s) are "
                         f"allowed: this is the first layer that does not fit on them", where=f"layer '{first}'",
                         hint=f"allow {fewest} chips (--chips {fewest}) or shrink the network")
    budget = fewest if max_chips is None else int(max_chips)
    chip_of, chip, used, left = [], 0, 0, total
    for k in layer_cores:
        # a fresh chip helps when the layer does not fit what is left and would then span fewer chips
        fresh = 0 < used and used + k > per_chip and \
            math.ceil(k / per_chip) < 1 + math.ceil((k - (per_chip - used)) / per_chip)
        if fresh and left <= (budget - chip - 1) * per_chip:    # room to start this layer on a new chip
            chip, used = chip + 1, 0
        for _ in range(k):
            if used == per_chip:
                chip, used = chip + 1, 0
            chip_of.append(chip)
            used += 1
        left -= k
    return chip_of


def chip_summary(mapping: dict) -> list:
    """Per chip, from the slices' ``chip``: ``[{chip, cores, first_core, last_core, layers: [{layer,
    cores, whole}]}]`` (``whole``: every core of the layer is on this chip). Checks that every core is on
    exactly one chip, that chips follow the layer order (a run of consecutive cores each) and that every
    recorded chip holds a core (``BadArtifact`` otherwise: a mapping read from a manifest)."""
    chips = {}
    cores_seen = set()
    last = -1
    for l in mapping["layers"]:
        for s in l["slices"]:
            c, core = int(s["chip"]), int(s["core"])
            if core in cores_seen or c < last or not 0 <= c < int(mapping["chips"]):
                raise BadArtifact(f"core {core} of layer '{l['layer']}' is on chip {c}: cores must lie on one "
                                  f"chip each, chips in layer order, below the {mapping['chips']} chip(s) recorded",
                                  where=f"mapping: layer '{l['layer']}'", hint="recompile the artifact")
            cores_seen.add(core)
            last = c
            ch = chips.setdefault(c, {"chip": c, "cores": 0, "first_core": core, "last_core": core, "layers": []})
            ch["cores"] += 1
            ch["last_core"] = core
            if not ch["layers"] or ch["layers"][-1]["layer"] != l["layer"]:
                ch["layers"].append({"layer": l["layer"], "cores": 0})
            ch["layers"][-1]["cores"] += 1
    if sorted(chips) != list(range(int(mapping["chips"]))):
        raise BadArtifact(f"the slices use chips {sorted(chips)[:8]}... but the mapping records {mapping['chips']} "
                          "chip(s): every chip must hold a core", where="mapping: chips", hint="recompile the artifact")
    whole = {l["layer"]: l["cores"] for l in mapping["layers"]}
    for ch in chips.values():
        for e in ch["layers"]:
            e["whole"] = e["cores"] == whole[e["layer"]]
    return [chips[c] for c in sorted(chips)]
