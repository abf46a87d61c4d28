"""Core mapping on hand-made graphs against a small hand-written target."""
import json

import numpy as np
import pytest

from neurocomp.errors import DoesNotFit
from neurocomp.ir import Conv2d, Flatten, Graph, Input, LIF, Linear
from neurocomp.passes.map_cores import connections_per_neuron, map_cores
from neurocomp.targets import load_target


def _target(tmp_path, name="small", neurons=100, memory=8000, bps=8, fan_in=50, fan_out=3, cores=4):
    fig = lambda v, unit: None if v is None else {"value": v, "unit": unit, "source": "t", "estimate": True}
    doc = {"schema": "neurocomp.target/1", "name": name, "chip": "test chip", "backend": "lava",
           "description": "hand-made limits for tests",
           "bits": {k: fig(8, "bit") for k in ("weight", "current", "voltage", "decay", "threshold", "delay")},
           "core": {"neurons": fig(neurons, "neurons"), "synaptic_memory": fig(memory, "bit"),
                    "bits_per_synapse": fig(bps, "bit"), "fan_in": fig(fan_in, "axons"),
                    "fan_out": fig(fan_out, "cores")},
           "chip_limits": {"cores": fig(cores, "cores")},
           "energy": {k: fig(1.0, "pJ") for k in ("synaptic_op", "neuron_update_active", "neuron_update_inactive",
                                                   "spike", "hop")},
           "sources": {"t": "test"}}
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(doc))
    return load_target(str(p))


def _dense(*sizes):
    nodes = [Input("in", (sizes[0],), (sizes[0],))]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        nodes += [Linear(f"fc{i}", (a,), (b,), weight=np.zeros((b, a), np.float32)),
                  LIF(f"lif{i}", (b,), (b,))]
    return Graph.chain(nodes, {"timesteps": 4})


def test_fits_in_one_core(tmp_path):
    g = map_cores(_dense(10, 20), _target(tmp_path))
    m = g.meta["mapping"]
    assert (m["cores"], m["chips"]) == (1, 1)
    (layer,) = m["layers"]
    assert layer["layer"] == "lif0" and layer["neurons"] == 20 and layer["synapses"] == 200
    assert layer["split_by"] is None and layer["slices"][0]["start"] == 0 and layer["slices"][0]["stop"] == 20
    assert g.meta["passes"][-1]["pass"] == "map_cores"


def test_split_by_neurons(tmp_path):
    m = map_cores(_dense(10, 250), _target(tmp_path)).meta["mapping"]
    (layer,) = m["layers"]
    assert layer["cores"] == 3 and layer["split_by"] == "core.neurons"     # ceil(250 / 100)
    sl = layer["slices"]
    assert [s["core"] for s in sl] == [0, 1, 2]
    assert sl[0]["start"] == 0 and sl[-1]["stop"] == 250
    assert all(a["stop"] == b["start"] for a, b in zip(sl, sl[1:]))
    assert max(s["neurons"] for s in sl) <= 100


def test_split_by_synaptic_memory(tmp_path):
    # 40 inputs x 8 bit = 320 bits per neuron; 8000 bits per core -> 25 neurons per core; 60 -> 3 cores
    m = map_cores(_dense(40, 60), _target(tmp_path)).meta["mapping"]
    (layer,) = m["layers"]
    assert layer["cores"] == 3 and layer["split_by"] == "core.synaptic_memory"
    assert all(s["synaptic_memory_bits"] <= 8000 for s in layer["slices"])


def test_split_by_fan_in_and_chips(tmp_path):
    # conv 4x8x8 -> 1x8x8, 3x3: 256 inputs > fan-in 50, 36 per neuron -> 1 neuron per core -> 64 cores
    conv = Conv2d("c", (4, 8, 8), (1, 8, 8), weight=np.zeros((1, 4, 3, 3), np.float32), padding=(1, 1))
    g = Graph.chain([Input("in", (4, 8, 8), (4, 8, 8)), conv, LIF("n", (1, 8, 8), (1, 8, 8))], {"timesteps": 4})
    m = map_cores(g, _target(tmp_path)).meta["mapping"]
    assert m["layers"][0]["cores"] == 64 and m["layers"][0]["split_by"] == "core.fan_in"
    assert m["chips"] == 16                                      # 64 cores / 4 per chip
    with pytest.raises(DoesNotFit, match="16 chips") as e:
        map_cores(g, _target(tmp_path), max_chips=2)
    assert "layer 'n'" in e.value.one_line()


def test_conv_connection_count_by_hand():
    # 3x3, padding 1 on 8x8: valid taps per row 2,3,3,3,3,3,3,2 -> 22; per channel pair 22*22 = 484
    conv = Conv2d("c", (16, 8, 8), (4, 8, 8), weight=np.zeros((4, 16, 3, 3), np.float32), padding=(1, 1))
    c = connections_per_neuron(conv)
    assert c.shape == (4, 8, 8)
    assert int(c.sum()) == 484 * 16 * 4
    assert int(c[0, 0, 0]) == 16 * 4 and int(c[0, 3, 3]) == 16 * 9


def test_cannot_fit_fan_in_names_layer_limit_and_numbers(tmp_path):
    with pytest.raises(DoesNotFit) as e:
        map_cores(_dense(60, 5), _target(tmp_path))
    msg = e.value.one_line()
    assert "layer 'lif0'" in msg and "60 inputs" in msg and "at most 50" in msg and "core.fan_in" in msg
    assert "target small" in msg and "hint" in msg


def test_cannot_fit_memory(tmp_path):
    t = _target(tmp_path, name="nofan", fan_in=None, fan_out=None)
    with pytest.raises(DoesNotFit) as e:
        map_cores(_dense(1001, 2), t)
    msg = e.value.one_line()
    assert "1001 synapses" in msg and "8008 bits" in msg and "8000 bits" in msg and "core.synaptic_memory" in msg
    # exactly at the limit: one neuron (1000 x 8 = 8000 bits) per core, so 2 neurons need 2 cores
    layer = map_cores(_dense(1000, 2), t).meta["mapping"]["layers"][0]
    assert layer["cores"] == 2 and layer["split_by"] == "core.synaptic_memory"


def test_cannot_fit_fan_out(tmp_path):
    # lif0 (10 neurons, 1 core) feeds lif1: 400 neurons -> 4 cores > fan-out 3
    with pytest.raises(DoesNotFit) as e:
        map_cores(_dense(10, 10, 400), _target(tmp_path))
    msg = e.value.one_line()
    assert "layer 'lif0'" in msg and "4 cores" in msg and "at most 3" in msg and "core.fan_out" in msg


def test_default_model_on_both_chips():
    from neurocomp.passes.pipeline import lower
    from neurocomp.frontends.checkpoint import load_checkpoint
    from neurocomp.frontends.torch import module_to_graph
    ld = load_checkpoint("models/digits_plain/model.pt")
    g = module_to_graph(ld.model, ld.input_shape, ld.timesteps, ld.encoding)
    for chip in ("loihi1", "loihi2"):
        m = lower(g, 8, target=chip).meta["mapping"]
        per = {l["layer"]: l for l in m["layers"]}
        # conv 1->16 3x3 p1 on 8x8: 1024 neurons (Loihi 1 holds exactly 1024), 484*16 synapses
        assert per["2"]["neurons"] == 1024 and per["2"]["synapses"] == 7744 and per["2"]["cores"] == 1
        assert per["10"]["synapses"] == 1280 and per["10"]["max_fan_in_per_neuron"] == 128
        assert m["cores"] == 5 and m["chips"] == 1 and m["target"] == chip
