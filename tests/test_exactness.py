"""The core promise: float reference == torch, fixed-point reference == Lava fixed_pt, bit for bit."""
import numpy as np
import pytest
import torch

from neurocomp.passes.pipeline import lower
from neurocomp.backends.lava import run_lava
from neurocomp.frontends.torch import module_to_graph
from neurocomp.sim import run_fixed, run_float
from nc_testutils import make_net, spike_input, torch_layer_spikes


@pytest.mark.parametrize("variant", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float_reference_equals_torch_on_every_layer(variant, seed):
    model, shape = make_net(variant, seed)
    T, B = 7, 16
    x = spike_input(T, B, shape, seed=seed)
    y, layers = torch_layer_spikes(model, x)
    g = module_to_graph(model, shape, T)
    r = run_float(g, x)
    assert torch.equal(r.output, y)
    assert set(layers) <= set(r.spikes)
    total = 0
    for name, s in layers.items():
        assert torch.equal(r.spikes[name], s), name
        total += int(s.sum())
    assert total > 0, "a network that never spikes proves nothing"


@pytest.mark.lava
@pytest.mark.parametrize("variant,seed", [(0, 0), (1, 1), (2, 2), (3, 3)])
def test_fixed_reference_equals_lava_on_every_layer(variant, seed):
    model, shape = make_net(variant, seed)
    T, B = 5, 6
    x = spike_input(T, B, shape, seed=10 + seed)
    q = lower(module_to_graph(model, shape, T))
    ref = run_fixed(q, x)
    lava = run_lava(q, x)
    assert set(ref.spikes) == set(lava.spikes)
    for name in ref.spikes:
        assert torch.equal(ref.spikes[name], lava.spikes[name]), name
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0


def test_fixed_point_tracks_float_model():
    """Not exact (8-bit weights), but the quantized network must mostly agree with the float one."""
    model, shape = make_net(0, 5, gain=2.0)
    x = spike_input(8, 64, shape, seed=3)
    g = module_to_graph(model, shape, 8)
    f = run_float(g, x)
    q = run_fixed(lower(g), x)
    agree = float((f.spikes["2"] == q.spikes["2"].float()).float().mean())
    assert agree > 0.97


@pytest.mark.lava
def test_default_model_lava_exact_and_close_to_float():
    from neurocomp.frontends.torch import run_torch_model
    from neurocomp.data.registry import load_inputs
    from neurocomp.frontends.checkpoint import load_checkpoint
    from neurocomp.sim import predict
    m = load_checkpoint("models/digits_plain/model.pt")
    x, y = load_inputs("digits", "test", m.timesteps, m.encoding, n=40)
    x = torch.as_tensor(x)
    g = module_to_graph(m.model, m.input_shape, m.timesteps)
    q = lower(g)
    ref = run_fixed(q, x)
    lava = run_lava(q, x)
    for name in ref.spikes:
        assert torch.equal(ref.spikes[name], lava.spikes[name]), name
    out = run_torch_model(m.model, x)
    assert torch.equal(run_float(g, x).output, out)
    same = float((predict(out) == lava.predictions()).float().mean())
    assert same >= 0.95
    assert float((lava.predictions() == torch.as_tensor(y)).float().mean()) >= 0.9
