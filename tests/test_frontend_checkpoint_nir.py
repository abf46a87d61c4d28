"""Frontend, checkpoint format, NIR round trip and the errors users see."""
import os

import nir
import numpy as np
import pytest
import torch
from spikingjelly.activation_based import layer, neuron

import neurocomp
from neurocomp.backends.nir import graph_to_nir, write_nir
from neurocomp.errors import BadCheckpoint, UnsupportedLayer, UnsupportedLayers
from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
from neurocomp.frontends.nir import read_nir_file
from neurocomp.frontends.torch import module_to_graph
from neurocomp.ir import table
from neurocomp.sim import run_float
from nc_testutils import make_net, spike_input


@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_nir_round_trip_is_lossless(tmp_path, variant):
    model, shape = make_net(variant, 4)
    g = module_to_graph(model, shape, 6)
    path = str(tmp_path / "m.nir")
    write_nir(g, path)
    back = read_nir_file(path)
    assert back.digest() == g.digest()
    assert [n.name for n in back] == [n.name for n in g]
    x = spike_input(6, 8, shape, seed=1)
    assert torch.equal(run_float(back, x).output, run_float(g, x).output)
    nir.read(path)  # readable by nir with type checking on


def test_ir_table_names_every_layer():
    model, shape = make_net(0, 0)
    text = table(module_to_graph(model, shape, 4))
    for name in ("input", "0", "1", "2", "3", "3_or", "4", "5", "6", "7", "8", "9"):
        assert any(line.split()[0] == name for line in text.splitlines()[2:]), name


def test_unsupported_layers_are_reported_together_with_paths():
    model = torch.nn.Sequential(layer.Conv2d(1, 2, 3), torch.nn.ReLU(), neuron.LIFNode(step_mode="m"),
                                torch.nn.Sequential(torch.nn.Conv1d(2, 2, 3)), layer.Flatten(),
                                layer.Linear(72, 3), neuron.LIFNode(step_mode="m"))
    with pytest.raises(UnsupportedLayers) as e:
        module_to_graph(model, (1, 8, 8), 4)
    text = str(e.value)
    assert "layer '1'" in text and "ReLU" in text
    assert "layer '3.0'" in text and "Conv1d" in text
    assert "hint" in text


def test_maxpool_of_current_is_refused():
    model = torch.nn.Sequential(layer.Conv2d(1, 2, 3, padding=1), layer.MaxPool2d(2),
                                neuron.LIFNode(step_mode="m"))
    with pytest.raises(UnsupportedLayer, match="max pooling of a non-spike tensor"):
        module_to_graph(model, (1, 8, 8), 4)


def test_soft_reset_is_refused_at_quantization():
    from neurocomp.passes.pipeline import lower
    model = torch.nn.Sequential(layer.Flatten(), layer.Linear(4, 2), neuron.LIFNode(v_reset=None, step_mode="m"))
    g = module_to_graph(model, (4,), 3)
    with pytest.raises(UnsupportedLayer, match="soft reset"):
        lower(g)


def test_checkpoint_round_trip(tmp_path):
    model, shape = make_net(0, 3)
    path = str(tmp_path / "m.pt")
    neurocomp.save_checkpoint(model, path, input_shape=shape, timesteps=5, dataset="digits")
    doc = torch.load(path, weights_only=True)     # plain data only
    assert doc["format"] == "neurocomp.checkpoint" and doc["timesteps"] == 5
    loaded = load_checkpoint(path)
    x = spike_input(5, 4, shape)
    from neurocomp.frontends.torch import run_torch_model
    assert torch.equal(run_torch_model(loaded.model, x), run_torch_model(model, x))
    assert loaded.input_shape == shape and loaded.encoding == "bernoulli"


def test_pickled_module_needs_trust(tmp_path):
    model, shape = make_net(3, 0)
    path = str(tmp_path / "full.pt")
    torch.save(model, path)
    with pytest.raises(BadCheckpoint, match="--trust-pickle"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, trust_pickle=True)
    assert isinstance(loaded.model, torch.nn.Module)


def test_checkpoint_with_missing_key_names_it(tmp_path):
    path = str(tmp_path / "bad.pt")
    torch.save({"format": "neurocomp.checkpoint", "version": 1, "state_dict": {}}, path)
    with pytest.raises(BadCheckpoint, match="missing key 'architecture'"):
        load_checkpoint(path)


def test_save_checkpoint_refuses_unsupported_module(tmp_path):
    model = torch.nn.Sequential(layer.Flatten(), torch.nn.GELU())
    with pytest.raises(UnsupportedLayer, match="layer '1'"):
        save_checkpoint(model, str(tmp_path / "x.pt"), input_shape=(4,), timesteps=2)
    assert not os.path.exists(tmp_path / "x.pt")
