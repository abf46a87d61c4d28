"""Builders shared by tests: small random SpikingJelly networks and inputs."""
from __future__ import annotations

import glob
import json
import os

import torch
from spikingjelly.activation_based import functional, layer, neuron


def randomize_bn(model, gen):
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.1)


def make_net(variant: int, seed: int = 0, gain: float = 3.0):
    """Small networks covering every supported layer type; ``variant`` picks the layout."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lif = lambda **kw: neuron.LIFNode(step_mode="m", **kw)  # noqa: E731
    if variant == 0:   # conv-bn-lif-maxpool, conv-lif-avgpool, flatten, linear-IF
        m = torch.nn.Sequential(
            layer.Conv2d(1, 4, 3, padding=1), layer.BatchNorm2d(4), lif(tau=2.0), layer.MaxPool2d(2),
            layer.Conv2d(4, 6, 3, padding=1), lif(tau=2.0), layer.AvgPool2d(2), layer.Flatten(),
            layer.Linear(24, 10), neuron.IFNode(step_mode="m"))
        shape = (1, 8, 8)
    elif variant == 1:  # no decay_input, non-zero reset, strided conv, nested Sequential, dropout, BN1d
        m = torch.nn.Sequential(
            torch.nn.Sequential(layer.Conv2d(2, 5, 3, stride=2, padding=1, bias=False), layer.BatchNorm2d(5),
                                lif(tau=3.0, decay_input=False, v_threshold=0.8, v_reset=-0.2)),
            layer.Dropout(0.3), layer.Flatten(),
            layer.Linear(5 * 5 * 5, 12), layer.SeqToANNContainer(torch.nn.BatchNorm1d(12)),
            lif(tau=4.0, v_threshold=1.2, v_reset=0.1),
            layer.Linear(12, 4), lif(tau=2.0))
        shape = (2, 10, 10)
    elif variant == 2:  # avgpool before conv, maxpool after input-free conv stack, IF hidden
        m = torch.nn.Sequential(
            layer.Conv2d(1, 4, 3, padding=1), neuron.IFNode(step_mode="m", v_threshold=1.5), layer.AvgPool2d(2),
            layer.Conv2d(4, 4, 3, padding=1), lif(tau=2.0), layer.MaxPool2d(2), layer.Flatten(),
            layer.Linear(16, 3), lif(tau=2.0))
        shape = (1, 8, 8)
    else:  # linear only, on a flat input
        m = torch.nn.Sequential(layer.Flatten(), layer.Linear(20, 16), lif(tau=2.0), layer.Linear(16, 5),
                                lif(tau=2.0, v_threshold=0.5))
        shape = (20,)
    for p in m.parameters():
        p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * gain / max(1, p.shape[-1] ** 0.5))
    randomize_bn(m, gen)
    functional.set_step_mode(m, "m")
    m.eval()
    return m, shape


def spike_input(T, B, shape, p=0.4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((T, B) + tuple(shape), generator=gen) < p).float()


def torch_layer_spikes(model, x):
    """Run the model and capture every spiking layer's output (and MaxPool outputs), keyed by path."""
    from neurocomp.frontends.torch import iter_leaves
    out, handles = {}, []
    for path, m in iter_leaves(model):
        if isinstance(m, (neuron.LIFNode, neuron.IFNode)):
            handles.append(m.register_forward_hook(lambda mod, i, o, p=path: out.__setitem__(p, o.detach())))
        if isinstance(m, layer.MaxPool2d):
            handles.append(m.register_forward_hook(lambda mod, i, o, p=path: out.__setitem__(p + "_or",
                                                                                             o.detach())))
    functional.reset_net(model)
    with torch.no_grad():
        y = model(x)
    functional.reset_net(model)
    for h in handles:
        h.remove()
    return y, out


ZOO_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


AT_SIZE_DATASETS = ("gesture32",)     # the zoo at size (issue 16 item 7): tests/test_gesture_data.py


def zoo_checkpoints(residual: bool = False, at_size: bool = False) -> list[str]:
    """``models/*/model.pt``: the chain zoo (VGG-style backbones; the one tests/fixtures/fingerprint.json
    records) or, with ``residual``, the residual zoo of issue 15, told apart by the recipe's builder
    (``neurocomp.nn.backbones.RESIDUAL``); with ``at_size``, the models trained on a dataset of
    :data:`AT_SIZE_DATASETS` (32×32 gestures), which the other two lists leave out."""
    from neurocomp.nn.backbones import RESIDUAL
    out = []
    for path in sorted(glob.glob(os.path.join(ZOO_ROOT, "*", "model.pt"))):
        recipe = os.path.join(os.path.dirname(path), "recipe.json")
        meta = json.load(open(recipe)) if os.path.isfile(recipe) else {}
        builder = meta.get("model", {}).get("builder")
        if (meta.get("dataset") in AT_SIZE_DATASETS) != at_size:
            continue
        if at_size or (builder in RESIDUAL) == residual:
            out.append(path)
    return out


def assert_lava_equals_reference(q, x):
    """Lava ``fixed_pt`` equals the fixed-point reference on every layer and step of ``x``, and the net is not silent."""
    from neurocomp.backends.lava import run_lava
    from neurocomp.sim import run_fixed
    ref, lava = run_fixed(q, x), run_lava(q, x)
    assert set(ref.spikes) == set(lava.spikes)
    for name in ref.spikes:
        assert torch.equal(ref.spikes[name], lava.spikes[name]), name
    assert int(ref.output.sum()) > 0
