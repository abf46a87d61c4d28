"""Activity counts (synaptic operations, neuron updates, spikes) and the energy estimate.

Counting rules (one inference = one sample of ``T`` steps, samples back to back):

- **synaptic operation**: one (input spike, outgoing synapse) event; every stored connection counts,
  zero weights included (the mapper stores every connection too).
- **neuron update**: every neuron of every mapped layer is updated once per step. An update is
  *active* when the neuron received at least one synaptic event in that step, *inactive* otherwise.
- **routed spike**: a spike sent to another layer's core: input spikes plus the spikes of every
  neuron layer except the output layer (whose spikes go to the host). Each is assumed to cross
  ``hops_per_spike`` tile hops (1 by default; the real count depends on placement).

``E = synops*E_syn + active*E_active + inactive*E_inactive + routed*(E_spike + hops*E_hop)``.

**Inter-chip traffic** (:class:`ChipTraffic`), from the measured spikes and the mapping's chip of every
core (``passes.map_cores``): a spike of a neuron on chip A counts once for every other chip B that holds
a synapse it feeds (a core of a layer reading it whose neurons receive from it: the synapse's stored
connections, as the event counts above, zero weights included). Spikes of the input come from the host
and are not inter-chip traffic; a readout head sends no spikes. Counted per time step of the window
(time-aligned, as the reference records it).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from neurocomp.ir import Conv2d, Dense, Flatten, Input, Linear, SumPool2d, Voting

ENERGY_TERMS = (("synaptic_ops", "synaptic_op"), ("neuron_updates_active", "neuron_update_active"),
                ("neuron_updates_inactive", "neuron_update_inactive"), ("routed_spikes", "spike"),
                ("spike_hops", "hop"))


def _events_linear(syn, x):
    return x.sum(1, keepdim=True).expand(-1, syn.weight.shape[0])


def _events_conv2d(syn, x):
    w = torch.ones(tuple(syn.weight.shape), dtype=torch.float64)
    return F.conv2d(x, w, None, tuple(syn.stride), tuple(syn.padding), tuple(syn.dilation), int(syn.groups))


def _events_sumpool2d(syn, x):
    return F.avg_pool2d(x, tuple(syn.kernel), tuple(syn.stride), tuple(syn.padding), divisor_override=1)


def _events_dense(syn, x):   # an unrolled conv: events along the non-zero taps
    taps = torch.as_tensor(syn.weight != 0, dtype=torch.float64)
    return (x.flatten(1) @ taps.T).reshape((-1,) + tuple(syn.out_shape))


def _events_voting(syn, x):   # each spike reaches its group's neuron only
    return x.reshape(x.shape[0], -1, int(syn.voting_size)).sum(-1)


# Synaptic events per target neuron, one counter per synapse node class.
EVENTS = {Linear: _events_linear, Conv2d: _events_conv2d, SumPool2d: _events_sumpool2d, Dense: _events_dense,
          Voting: _events_voting}


def synaptic_events(syn, s: torch.Tensor) -> torch.Tensor:
    """Per target neuron, the number of synaptic events caused by binary spikes ``s`` [N, *in]."""
    count = EVENTS.get(type(syn))
    if count is None:
        raise NotImplementedError(syn.kind)
    return count(syn, s.to(torch.float64))


def layer_activity(graph, x, spikes: dict) -> dict:
    """Counts summed over a batch. ``x``: input spikes [T, B, *in]; ``spikes``: neuron name -> [T, B, *].

    Returns ``{"input_spikes": int, "layers": {neuron: {synapse, neurons, synaptic_ops, neuron_updates,
    neuron_updates_active, spikes}}}``."""
    T, B = x.shape[:2]
    s = torch.as_tensor(x).to(torch.bool)
    if not graph.is_chain():
        return _dag_activity(graph, s, spikes)
    out = {"input_spikes": int(s.sum()), "layers": {}}
    ev, syn = None, None
    for node in graph:
        if isinstance(node, Input):
            continue
        if isinstance(node, Flatten):
            s = s.flatten(2)
        elif node.is_synapse:
            syn = node
            ev = synaptic_events(node, s.flatten(0, 1))
        elif node.is_neuron:
            n = int(np.prod(node.out_shape))
            sp = spikes[node.name]
            if not getattr(node, "spiking", True):     # a non-spiking readout outputs voltages, no spikes
                sp = torch.zeros(sp.shape, dtype=torch.bool)
            rec = getattr(node, "rec_weight", None)
            if rec is not None:                         # recurrent synapses see the layer's spikes of step t-1
                prev = sp.to(torch.bool).reshape(T, B, -1)[:-1]
                rec_ev = prev.sum(-1, keepdim=True).to(torch.float64).expand(-1, -1, n).reshape((T - 1) * B, n)
                ev = ev.reshape(T * B, -1).clone()
                ev[B:] += rec_ev
            out["layers"][node.name] = {
                "synapse": syn.name, "neurons": n,
                "synaptic_ops": int(ev.sum().round()),
                "neuron_updates": n * T * B,
                "neuron_updates_active": int((ev > 0).sum()),
                "spikes": int(sp.sum()),
            }
            s = sp.to(torch.bool)
    return out


def add_activity(total: dict | None, part: dict) -> dict:
    if total is None:
        return {"input_spikes": part["input_spikes"], "layers": {k: dict(v) for k, v in part["layers"].items()}}
    total["input_spikes"] += part["input_spikes"]
    for k, v in part["layers"].items():
        for f in ("synaptic_ops", "neuron_updates", "neuron_updates_active", "spikes"):
            total["layers"][k][f] += v[f]
    return total


def per_inference_counts(activity: dict, samples: int, hops_per_spike: float = 1.0) -> dict:
    """Average counts per inference from summed ``activity`` over ``samples`` samples."""
    layers = list(activity["layers"].values())
    names = list(activity["layers"])
    syn = sum(l["synaptic_ops"] for l in layers)
    upd = sum(l["neuron_updates"] for l in layers)
    act = sum(l["neuron_updates_active"] for l in layers)
    routed = activity["input_spikes"] + sum(activity["layers"][k]["spikes"] for k in names[:-1])
    return {"synaptic_ops": syn / samples, "neuron_updates_active": act / samples,
            "neuron_updates_inactive": (upd - act) / samples, "routed_spikes": routed / samples,
            "spike_hops": hops_per_spike * routed / samples, "hops_per_spike": hops_per_spike}


def energy_per_inference(counts: dict, target) -> dict:
    """Energy terms (pJ) from per-inference ``counts`` and the target's energy figures, with sources."""
    terms, total, estimate = [], 0.0, False
    for count_key, fig_key in ENERGY_TERMS:
        fig = target.figure("energy", fig_key)
        e = counts[count_key] * fig["value"]
        total += e
        estimate |= bool(fig["estimate"])
        terms.append({"term": count_key, "count": counts[count_key], "pJ_each": fig["value"], "pJ": e,
                      "figure": f"energy.{fig_key}", "source": fig["source"],
                      "source_text": target.source_text(fig["source"]), "estimate": bool(fig["estimate"]),
                      "note": fig.get("note", "")})
    return {"target": target.name, "terms": terms, "total_pJ": total, "total_uJ": total * 1e-6,
            "estimate": estimate, "scope": "dynamic energy of the neuromorphic cores per inference; static power, "
                                            "host I/O and x86 cores not included"}


def _dag_activity(graph, s: torch.Tensor, spikes: dict) -> dict:
    """:func:`layer_activity` of a graph with branches: a synapse's events are counted on what it reads
    (an Add of spikes counts each addend's spikes, a Concat its parts; the counters are linear), a
    neuron's synaptic ops are the sum over its synapse groups."""
    from neurocomp.ir.rules import neuron_groups, check_lowerable
    T, B = s.shape[:2]
    val, events = {}, {}
    out = {"input_spikes": int(s.sum()), "layers": {}}
    groups = neuron_groups(check_lowerable(graph))
    for node in graph:
        srcs = graph.inputs.get(node.name, ())
        if isinstance(node, Input):
            val[node.name] = s
        elif node.is_synapse:
            events[node.name] = synaptic_events(node, val[srcs[0]].flatten(0, 1))
        elif node.is_neuron:
            sp = spikes[node.name]
            if not getattr(node, "spiking", True):
                sp = torch.zeros(sp.shape, dtype=torch.bool)
            ev = sum(events[g.name] for g in groups[node.name])
            n = int(np.prod(node.out_shape))
            out["layers"][node.name] = {
                "synapse": groups[node.name][0].name, "neurons": n,
                "synaptic_ops": int(ev.sum().round()), "neuron_updates": n * T * B,
                "neuron_updates_active": int((ev > 0).sum()), "spikes": int(sp.sum()),
                **({"groups": [g.name for g in groups[node.name]]} if len(groups[node.name]) > 1 else {})}
            val[node.name] = sp.to(torch.bool)
        elif isinstance(node, Flatten):
            val[node.name] = val[srcs[0]].flatten(2)
        elif srcs and all(x in val for x in srcs):   # Add / Concat of spikes (counts stay counts)
            parts = [val[x].to(torch.float64) for x in srcs]
            val[node.name] = torch.cat(parts, dim=2) if node.kind == "concat" else sum(parts)
    return out


def _spike_sources(graph, syn) -> list:
    """``[(source, lo, hi)]``: the flat input positions ``lo:hi`` of ``syn`` that carry the spikes of
    ``source`` (a neuron or the Input), source position = input position - lo; once per addend of an Add
    of spikes. A chain's synapse reads one source through shape-keeping nodes (Flatten, spike gates)."""
    from neurocomp.ir.rules import spike_pieces
    name = graph.inputs[syn.name][0]
    per_channel = int(np.prod(syn.in_shape[1:])) if len(syn.in_shape) > 1 else 1
    if not graph.is_chain():
        return [(src, c0 * per_channel, c1 * per_channel) for src, c0, c1 in spike_pieces(graph, name)]
    while not (isinstance(graph[name], Input) or graph[name].is_neuron):
        name = graph.inputs[name][0]
    return [(name, 0, int(np.prod(syn.in_shape)))]


def _reach(syn, out_mask: torch.Tensor) -> torch.Tensor:
    """Which inputs of ``syn`` (flat) feed at least one of the output neurons in ``out_mask`` (flat bool):
    the gradient of the synapse's event count (:func:`synaptic_events`, linear with non-negative
    coefficients over the stored connections) restricted to those outputs."""
    x = torch.zeros((1,) + tuple(syn.in_shape), dtype=torch.float64, requires_grad=True)
    ev = synaptic_events(syn, x).reshape(-1)
    (ev * out_mask.to(torch.float64)).sum().backward()
    return (x.grad.reshape(-1) > 0)


class ChipTraffic:
    """Accumulates the inter-chip spikes of the fixed-point reference's spikes, batch by batch
    (:meth:`add`), for a ``graph`` mapped as ``mapping`` (``graph.meta['mapping']``)."""

    def __init__(self, graph, mapping: dict):
        from neurocomp.ir.rules import check_lowerable
        self.chips = int(mapping["chips"])
        self.chip_of = {}                      # layer -> chip of every neuron (flat, torch layout)
        for l in mapping["layers"]:
            c = np.full(int(l["neurons"]), -1, dtype=np.int64)
            for s in l["slices"]:
                c[int(s["start"]):int(s["stop"])] = int(s["chip"])
            self.chip_of[l["layer"]] = torch.as_tensor(c)
        reach = {}                             # source layer -> {chip: bool [n_src]}
        for syn, neu in check_lowerable(graph):
            dest = self.chip_of[neu.name]
            for c in torch.unique(dest).tolist():
                r = _reach(syn, dest == c)
                for src, lo, hi in _spike_sources(graph, syn):
                    if src in self.chip_of:    # the Input is the host's
                        acc = reach.setdefault(src, {})
                        acc[c] = acc.get(c, torch.zeros(hi - lo, dtype=torch.bool)) | r[lo:hi]
        for n in graph.neurons():              # a recurrent layer reads its own spikes on all its cores
            if getattr(n, "rec_weight", None) is not None:
                for c in set(self.chip_of[n.name].tolist()):
                    reach.setdefault(n.name, {})[c] = torch.ones(len(self.chip_of[n.name]), dtype=torch.bool)
        spiking = {n.name for n in graph.neurons() if getattr(n, "spiking", True)}
        self.reach = {k: v for k, v in reach.items() if k in spiking}
        # remote destination chips of each neuron: the chips it feeds other than its own
        self.remote = {k: sum(((r & (self.chip_of[k] != c)).to(torch.float64) for c, r in v.items()),
                              torch.zeros(len(self.chip_of[k]), dtype=torch.float64)) for k, v in self.reach.items()}
        self.per_step = None
        self.max_per_step = 0
        self.samples = 0
        self.by_layer = {k: 0.0 for k in self.remote}
        self.neuron_spikes = {k: torch.zeros(len(self.chip_of[k]), dtype=torch.float64) for k in self.remote}

    def add(self, spikes: dict):
        """Count one batch: ``spikes`` neuron name -> [T, B, *] (time-aligned)."""
        per = None
        for k, r in self.remote.items():
            sp = torch.as_tensor(spikes[k]).to(torch.bool)
            T, B = sp.shape[:2]
            sp = sp.reshape(T, B, -1)
            m = torch.zeros((T, B), dtype=torch.int64)   # [T, B]: inter-chip spikes of this layer
            for v in torch.unique(r[r > 0]).tolist():    # grouped by remote-chip count: no float copy of sp
                sel = r == v
                m += int(v) * (sp.sum(-1) if bool(sel.all()) else sp[..., sel].sum(-1))
            per = m if per is None else per + m
            self.by_layer[k] += float(m.sum())
            self.neuron_spikes[k] += sp.sum((0, 1))
        if per is None:                        # one chip, or nothing crosses
            return
        step = per.sum(1).to(torch.float64)
        self.per_step = step if self.per_step is None else self.per_step + step
        self.max_per_step = max(self.max_per_step, int(per.max()))
        self.samples += int(per.shape[1])

    def result(self, samples: int, timesteps: int) -> dict:
        """Per inference (``samples`` inferences of ``timesteps`` steps): inter-chip spikes per step (mean
        over samples and steps, per step of the window, and the largest of one sample's step), per source
        layer, and the chip-to-chip matrix ``chip_pairs[a][b]`` (spikes from chip a to chip b)."""
        per_step = ([0.0] * timesteps if self.per_step is None else (self.per_step / samples).tolist())
        pairs = np.zeros((self.chips, self.chips))
        for k, v in self.reach.items():
            own = self.chip_of[k]
            cnt = self.neuron_spikes[k]
            for c, r in v.items():
                w = cnt * (r & (own != c)).to(torch.float64)
                pairs[:, c] += np.bincount(own.numpy(), weights=w.numpy(), minlength=self.chips)[:self.chips]
        total = sum(self.by_layer.values())
        return {"chips": self.chips, "samples": samples, "timesteps": timesteps,
                "per_inference": total / samples, "mean_per_step": total / (samples * timesteps),
                "max_per_step": self.max_per_step, "per_step": per_step,
                "by_layer": {k: v / samples for k, v in self.by_layer.items()},
                "chip_pairs": (pairs / samples).tolist(),
                "rule": "a spike of a neuron on chip A counts once per other chip holding a synapse it feeds; "
                        "input spikes come from the host (not counted)"}
