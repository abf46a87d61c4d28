"""Multi-chip mapping: the cores are partitioned over chips (every core on one chip, layers in order,
a layer cut only where needed), the inter-chip traffic counted by ``metrics.ChipTraffic`` equals a count
made here from the recorded spikes and connectivity built tap by tap, and report / inspect show both."""
import json
import os

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron

from busy_nets import bernoulli, make_busy
from neurocomp.errors import DoesNotFit
from neurocomp.ir import Conv2d, Linear
from neurocomp.ir.rules import check_lowerable
from neurocomp.passes.map_cores import chip_summary, map_cores, partition_chips
from neurocomp.targets import load_target

T, SHAPE = 4, (2, 8, 8)


def _target(folder, neurons=24, cores=3):
    fig = lambda v, unit: {"value": v, "unit": unit, "source": "t", "estimate": True}   # noqa: E731
    doc = {"schema": "neurocomp.target/1", "name": "tinychip", "chip": "test chip", "backend": "lava",
           "description": "a chip of a few small cores, for tests",
           "bits": {k: fig(8, "bit") for k in ("weight", "current", "voltage", "decay", "threshold", "delay")},
           "core": {"neurons": fig(neurons, "neurons"), "synaptic_memory": fig(10 ** 6, "bit"),
                    "bits_per_synapse": fig(8, "bit"), "fan_in": None, "fan_out": None},
           "chip_limits": {"cores": fig(cores, "cores")},
           "energy": {k: fig(1.0, "pJ") for k in ("synaptic_op", "neuron_update_active", "neuron_update_inactive",
                                                   "spike", "hop")},
           "sources": {"t": "test"}}
    path = os.path.join(str(folder), "tinychip.json")
    with open(path, "w") as fh:
        json.dump(doc, fh)
    return path


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """Conv(2->4)-BN-LIF (256 neurons: 11 cores of 24) -> Conv(4->2)-BN-LIF (128: 6 cores) -> Linear-LIF (4: 1
    core) on chips of 3 cores: 18 cores on 6 chips, both conv layers cut across chips."""
    from neurocomp import save_checkpoint
    from neurocomp.api import compile as compile_
    tmp = tmp_path_factory.mktemp("multichip")
    model = torch.nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), layer.BatchNorm2d(4), neuron.LIFNode(tau=2.0),
                                layer.Conv2d(4, 2, 3, padding=1), layer.BatchNorm2d(2), neuron.LIFNode(tau=2.0),
                                layer.Flatten(), layer.Linear(128, 4), neuron.LIFNode(tau=2.0))
    functional.set_step_mode(model, "m")
    model.eval()
    make_busy(model, bernoulli(T, 16, SHAPE, 0.2, seed=1), rate=(0.2, 0.4), seed=2, iters=12)
    ckpt = str(tmp / "model.pt")
    save_checkpoint(model, ckpt, input_shape=SHAPE, timesteps=T, encoding="bernoulli")
    return compile_(ckpt, str(tmp / "art"), target=_target(tmp))


def test_partition_every_core_on_one_chip_in_layer_order(art):
    from neurocomp.artifact import Artifact
    m = Artifact(art).manifest["mapping"]
    cores = [s for l in m["layers"] for s in l["slices"]]
    assert [s["core"] for s in cores] == list(range(m["cores"])) and m["cores"] == 11 + 6 + 1
    chips = [s["chip"] for s in cores]
    assert chips == sorted(chips)                                   # layers (and cores) in order
    assert m["chips"] == 6 == max(chips) + 1                         # ceil(18 / 3): the fewest
    assert all(chips.count(c) <= 3 for c in set(chips))              # chip_limits.cores
    summary = chip_summary(m)
    assert sum(p["cores"] for p in summary) == m["cores"]
    cut = {e["layer"] for p in summary for e in p["layers"] if not e["whole"]}
    assert len(cut) == 2        # the first conv layer (11 cores > 3) and, for lack of room, the second


def test_partition_rule_and_chip_limit():
    # layers of 3, 3 and 3 cores on chips of 4: 3 chips, no layer cut (each starts a fresh chip)
    assert partition_chips([3, 3, 3], 4) == [0] * 3 + [1] * 3 + [2] * 3
    # 5 + 2 + 3 cores on chips of 4 (3 chips): the 5-core layer must be cut; the 3-core one is not
    assert partition_chips([5, 2, 3], 4) == [0] * 4 + [1] * 3 + [2] * 3
    # no slack (3 + 3 + 2 cores on the fewest, 2 chips): the second layer fills what is left of chip 0
    assert partition_chips([3, 3, 2], 4) == [0] * 4 + [1] * 4
    # a budget of 3 chips (--chips 3) lets it start a fresh chip: no layer is cut
    assert partition_chips([3, 3, 2], 4, max_chips=3) == [0, 0, 0, 1, 1, 1, 2, 2]
    with pytest.raises(DoesNotFit, match="3 chips") as e:
        partition_chips([3, 3, 3], 4, max_chips=2, names=["a", "b", "c"])
    assert e.value.one_line().startswith("layer 'c': ") and "--chips 3" in e.value.one_line()


def test_compile_refuses_too_few_chips(art, tmp_path):
    from neurocomp.cli import main
    src = os.path.join(art, "model.pt")
    rc = main(["compile", src, "--target", _target(tmp_path), "--chips", "5", "-o", str(tmp_path / "a"), "-q"])
    assert rc == 2 and not os.path.exists(tmp_path / "a")


def _connectivity(syn) -> np.ndarray:
    """[n_out, n_in] bool: the stored connections of ``syn``, tap by tap (independent of neurocomp's counters)."""
    n_in, n_out = int(np.prod(syn.in_shape)), int(np.prod(syn.out_shape))
    if isinstance(syn, Linear):
        return np.ones((n_out, n_in), bool)
    (ci, hi, wi), (co, ho, wo) = syn.in_shape, syn.out_shape
    a = np.zeros((co, ho, wo, ci, hi, wi), bool)
    assert isinstance(syn, Conv2d) and syn.dilation == (1, 1)
    kh, kw = syn.weight.shape[2:]
    gi, go = ci // syn.groups, co // syn.groups          # input / output channels per group
    for o in range(co):
        for y in range(ho):
            for x in range(wo):
                for c in range(o // go * gi, (o // go + 1) * gi):
                    for dy in range(kh):
                        for dx in range(kw):
                            yy = y * syn.stride[0] - syn.padding[0] + dy
                            xx = x * syn.stride[1] - syn.padding[1] + dx
                            if 0 <= yy < hi and 0 <= xx < wi:
                                a[o, y, x, c, yy, xx] = True
    return a.reshape(n_out, n_in)


@pytest.fixture(scope="module")
def measured(art):
    """What ``neurocomp report`` measures, on 3 samples (no Lava, no sweep)."""
    from neurocomp.measure import measure
    return measure(art, inputs=bernoulli(T, 3, SHAPE, 0.2, seed=7), lava_samples=0, bits=(), attention_modes=False,
                   progress=False)


def _remote_chips(g, mp) -> dict:
    """Per source layer, per neuron: how many other chips hold a neuron it feeds (tap by tap)."""
    chip = {}
    for l in mp["layers"]:
        c = np.zeros(l["neurons"], int)
        for s in l["slices"]:
            c[s["start"]:s["stop"]] = s["chip"]
        chip[l["layer"]] = c
    dest = {k: [set() for _ in v] for k, v in chip.items()}
    for syn, neu in check_lowerable(g):
        src = g.inputs[syn.name][0]
        while g[src].kind == "flatten":
            src = g.inputs[src][0]
        if src not in chip:
            continue                                       # the input comes from the host
        for j, targets in enumerate(_connectivity(syn).T):
            dest[src][j] |= set(chip[neu.name][targets].tolist()) - {int(chip[src][j])}
    return {k: np.array([len(d) for d in v]) for k, v in dest.items()}


def test_traffic_equals_a_count_from_recorded_spikes(art, measured):
    from neurocomp.artifact import Artifact
    from neurocomp.sim import run_fixed
    a = Artifact(art)
    g, mp = a.fixed_graph, a.manifest["mapping"]
    x = bernoulli(T, 3, SHAPE, 0.2, seed=7)
    m = measured
    tr = m.chips["traffic"]
    remote = _remote_chips(g, mp)
    assert {2, 3} <= set(remote[g.neurons()[0].name].tolist())   # spikes reaching 2 and 3 other chips
    spikes = run_fixed(g, x).spikes
    per = sum(spikes[k].reshape(T, 3, -1).numpy().astype(np.int64) @ r for k, r in remote.items())   # [T, B]
    assert per.sum() > 0
    assert tr["per_step"] == pytest.approx((per.sum(1) / 3).tolist())
    assert tr["max_per_step"] == per.max() and tr["mean_per_step"] == pytest.approx(per.mean())
    assert tr["per_inference"] == pytest.approx(per.sum() / 3)
    assert np.asarray(tr["chip_pairs"]).sum() == pytest.approx(per.sum() / 3)
    assert m.chips["share_of_routed_spikes"] == pytest.approx(per.sum() / 3 / m.counts["routed_spikes"])


def test_report_section_and_inspect_show_the_partition(art, measured, tmp_path):
    from neurocomp.inspect import inspect_path
    from neurocomp.report.sections import SECTIONS, Context, sec_chips
    assert sec_chips in SECTIONS
    sec = sec_chips(Context(measured, str(tmp_path)))
    md = "\n".join(sec.md)
    assert sec.title == "Chips and inter-chip traffic" and "of all routed spikes" in md and "**6 chip(s)**" in md
    assert sec.plots == ["chips.png"] and os.path.isfile(tmp_path / "chips.png")
    assert len(sec.data["partition"]) == 6 and sec.data["traffic"]["per_inference"] > 0
    text = inspect_path(art)
    assert "6 chip(s)" in text and all(f"chip {c}: cores" in text for c in range(6))


def test_one_chip_has_no_traffic(tmp_path):
    from neurocomp.ir import Graph, Input, LIF
    from neurocomp.metrics import ChipTraffic
    g = Graph.chain([Input("in", (4,), (4,)), Linear("fc", (4,), (3,), weight=np.ones((3, 4), np.float32)),
                     LIF("a", (3,), (3,)), Linear("fc2", (3,), (2,), weight=np.ones((2, 3), np.float32)),
                     LIF("b", (2,), (2,))], {"timesteps": 2})
    mp = map_cores(g, load_target(_target(tmp_path, neurons=100, cores=4))).meta["mapping"]
    tr = ChipTraffic(g, mp)
    tr.add({"a": torch.ones(2, 1, 3, dtype=torch.bool), "b": torch.ones(2, 1, 2, dtype=torch.bool)})
    r = tr.result(1, 2)
    assert mp["chips"] == 1 and r["per_inference"] == 0 and r["max_per_step"] == 0


def test_traffic_on_a_residual_graph(tmp_path):
    """Spiking-ResNet (forks into a conv and a shortcut, joins by adds): every edge of the DAG counts."""
    import residual_models as rm
    from test_residual_models import busy
    from neurocomp import save_checkpoint
    from neurocomp.api import compile as compile_
    from neurocomp.artifact import Artifact
    from neurocomp.metrics import ChipTraffic
    from neurocomp.sim import run_fixed
    ckpt = save_checkpoint(busy(rm.SpikingResNet(), seed=2), str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=T,
                           encoding="bernoulli")
    a = Artifact(compile_(ckpt, str(tmp_path / "art"), target=_target(tmp_path)))
    g, mp = a.fixed_graph, a.manifest["mapping"]
    assert not g.is_chain() and mp["chips"] > 1
    x = bernoulli(T, 2, SHAPE, 0.3, seed=5)
    spikes = run_fixed(g, x).spikes
    tr = ChipTraffic(g, mp)
    tr.add(spikes)
    r = tr.result(2, T)
    remote = _remote_chips(g, mp)
    per = sum(spikes[k].reshape(T, 2, -1).numpy().astype(np.int64) @ v for k, v in remote.items())
    assert per.sum() > 0 and r["per_step"] == pytest.approx((per.sum(1) / 2).tolist())
    assert r["max_per_step"] == per.max()
