"""Calibration's fast path computes the maps of the plain SpikingJelly forward, bit for bit.

``calibrate`` runs SpikingJelly's LIF/IF nodes through ``frontends.fastneurons`` (in-place inference steps),
MA-SNN's cell through its own inference path, and records each map from the attention module's own forward
instead of recomputing it in a hook. Here each of TCJA, MA-SNN and PFA (small, busy nets) is calibrated and
compared with the maps that forward hooks recompute from each module's input while the model runs its
plain forward, averaged sample by sample in float64.
"""
import numpy as np
import pytest
import torch
from spikingjelly.activation_based import neuron

from neurocomp.frontends.attention import attention_modules, calibrate
from neurocomp.frontends.fastneurons import fast_neurons
from neurocomp.frontends.torch import run_torch_model
from neurocomp.nn import MALIFNode, backbones

T, N = 4, 3
NEURONS = (neuron.LIFNode, MALIFNode)


def _busy_net(kind):
    torch.manual_seed(3)
    model = backbones.build(kind, T=T, in_channels=2, input_hw=8, channels=(4, 4), hidden=0, num_classes=3)
    with torch.no_grad():      # larger gains: every neuron layer fires (an untrained net falls silent)
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(60.0 if isinstance(m, torch.nn.Linear) else 3.0)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(24.0)
                m.bias.fill_(0.2)
    return model.eval()


def _plain(model, x):
    """Maps ``{path: [T, N, ...]}`` recomputed from each module's input, and every neuron's spikes, from the
    plain forward (SpikingJelly's own neuron loops)."""
    maps, spikes, hooks = {}, [], []
    for path, mod in attention_modules(model):
        hooks.append(mod.register_forward_hook(lambda m, i, o, p=path: maps.__setitem__(p, (m.attention(i[0]),
                                                                                             i[0].dim()))))
    for m in model.modules():
        if isinstance(m, NEURONS):
            hooks.append(m.register_forward_hook(lambda m, i, o: spikes.append(o)))
    try:
        run_torch_model(model, x)
    finally:
        for h in hooks:
            h.remove()
    return maps, spikes


@pytest.mark.parametrize("kind", ["tcja", "ma", "pfa"])
def test_fast_calibration_equals_plain_maps_bitwise(kind):
    model = _busy_net(kind)
    x = (torch.rand((T, N, 2, 8, 8), generator=torch.Generator().manual_seed(5)) < 0.4).float()
    maps, spikes = _plain(model, x)
    assert spikes and all(0 < float(s.mean()) < 1 for s in spikes), [float(s.mean()) for s in spikes]
    stats = calibrate(model, x)
    assert set(stats) == set(maps) and maps
    for path, (m, dim) in maps.items():
        while m.dim() < dim:        # TCJA's map [T, N, C] acts on [T, N, C, H, W]
            m = m.unsqueeze(-1)
        total = np.zeros(m.shape[:1] + m.shape[2:], dtype=np.float64)
        for i in range(N):
            total += m[:, i].double().numpy()
        want = (total / N).astype(np.float32)
        got = stats[path]["static_map"]
        assert got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32)), path
    with fast_neurons(model) as swapped:      # the fast path ran on every SpikingJelly LIF of the net
        assert swapped == sum(isinstance(m, neuron.LIFNode) for m in model.modules())
    assert all("forward" not in vars(m) for m in model.modules())    # everything restored


def test_user_neuron_classes_keep_their_forward():
    class MyLIF(neuron.LIFNode):        # a user's own neuron: it may override any step, so it is left alone
        def neuronal_charge(self, x):
            self.v = self.v + x

    model = torch.nn.Sequential(MyLIF(step_mode="m"), neuron.IFNode(step_mode="m", v_reset=None)).eval()
    x = torch.rand(T, 2, 5) * 1.5
    want = run_torch_model(model, x)
    with fast_neurons(model) as swapped:
        assert swapped == 1 and "forward" not in vars(model[0])
        got = run_torch_model(model, x)
    assert torch.equal(got, want) and 0 < float(want.mean()) < 1
