"""Property tests (hypothesis) over random valid small SpikingJelly networks and random binary inputs:

- the float reference equals the torch model, every spiking layer, every step;
- the fixed-point reference equals Lava's fixed_pt run, bit for bit, every layer;
- compile -> NIR -> compile is stable (same IR digest, same NIR bytes, same lowered graph);
- compiling twice gives byte-identical artifacts.

Examples are few (Lava starts a runtime per example) and deadlines are off; the whole file runs in
well under three minutes on two cores.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from spikingjelly.activation_based import functional, layer, neuron

from neurocomp.passes.pipeline import lower
from neurocomp.backends.nir import write_nir
from neurocomp.frontends.nir import read_nir_file
from neurocomp.frontends.torch import iter_leaves, module_to_graph
from neurocomp.sim import run_fixed, run_float

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


# ---- random networks ----------------------------------------------------------------------------
neuron_spec = st.one_of(
    st.fixed_dictionaries({"kind": st.just("lif"), "tau": st.sampled_from([2.0, 3.0, 4.0]),
                           "decay_input": st.booleans(), "v_threshold": st.sampled_from([0.5, 1.0, 1.5]),
                           "v_reset": st.sampled_from([0.0, -0.2, 0.1])}),
    st.fixed_dictionaries({"kind": st.just("if"), "v_threshold": st.sampled_from([0.75, 1.0, 2.0]),
                           "v_reset": st.sampled_from([0.0, -0.1])}),
)


@st.composite
def net_specs(draw):
    spatial = draw(st.booleans())
    blocks = []
    if spatial:
        c_in = draw(st.integers(1, 2))
        hw = draw(st.sampled_from([6, 8]))
        shape = (c_in, hw, hw)
        c, h = c_in, hw
        for _ in range(draw(st.integers(1, 2))):
            k = draw(st.sampled_from([1, 3]))
            stride = draw(st.sampled_from([1, 1, 2])) if h >= 6 else 1
            cout = draw(st.integers(1, 4))
            blocks.append({"type": "conv", "cin": c, "cout": cout, "k": k, "stride": stride, "pad": k // 2,
                           "bias": draw(st.booleans()), "bn": draw(st.booleans()), "neuron": draw(neuron_spec)})
            c, h = cout, (h + 2 * (k // 2) - k) // stride + 1
            pool = draw(st.sampled_from([None, "max", "avg"])) if h >= 4 and h % 2 == 0 else None
            if pool:
                blocks.append({"type": pool})
                h //= 2
        blocks.append({"type": "flatten"})
        n = c * h * h
    else:
        n = draw(st.integers(6, 20))
        shape = (n,)
        blocks.append({"type": "flatten"})
    for _ in range(draw(st.integers(0, 1))):
        m = draw(st.integers(4, 12))
        # (no BatchNorm1d after Linear: SpikingJelly's multi-step BatchNorm1d wants [T, N, C, L])
        blocks.append({"type": "linear", "in": n, "out": m, "bias": draw(st.booleans()), "bn": False,
                       "neuron": draw(neuron_spec)})
        n = m
    blocks.append({"type": "linear", "in": n, "out": draw(st.integers(2, 5)), "bias": True, "bn": False,
                   "neuron": draw(neuron_spec)})
    return {"shape": shape, "blocks": blocks, "seed": draw(st.integers(0, 2 ** 16)),
            "gain": draw(st.sampled_from([2.0, 3.0, 4.0]))}


def _neuron(spec):
    if spec["kind"] == "lif":
        return neuron.LIFNode(tau=spec["tau"], decay_input=spec["decay_input"], v_threshold=spec["v_threshold"],
                              v_reset=spec["v_reset"], step_mode="m")
    return neuron.IFNode(v_threshold=spec["v_threshold"], v_reset=spec["v_reset"], step_mode="m")


def build(spec):
    gen = torch.Generator().manual_seed(spec["seed"])
    mods = []
    for b in spec["blocks"]:
        t = b["type"]
        if t == "conv":
            mods += [layer.Conv2d(b["cin"], b["cout"], b["k"], stride=b["stride"], padding=b["pad"], bias=b["bias"])]
            if b["bn"]:
                mods.append(layer.BatchNorm2d(b["cout"]))
            mods.append(_neuron(b["neuron"]))
        elif t == "linear":
            mods.append(layer.Linear(b["in"], b["out"], bias=b["bias"]))
            if b["bn"]:
                mods.append(layer.BatchNorm1d(b["out"]))
            mods.append(_neuron(b["neuron"]))
        elif t == "max":
            mods.append(layer.MaxPool2d(2))
        elif t == "avg":
            mods.append(layer.AvgPool2d(2))
        elif t == "flatten":
            mods.append(layer.Flatten())
    model = torch.nn.Sequential(*mods)
    for p in model.parameters():
        fan_in = p[0].numel() if p.dim() > 1 else max(1, p.shape[0])
        p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * spec["gain"] / fan_in ** 0.5)
    for m in model.modules():
        if isinstance(m, (layer.BatchNorm2d, layer.BatchNorm1d)):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.1)
    functional.set_step_mode(model, "m")
    return model.eval()


inputs = st.tuples(st.integers(2, 6), st.integers(1, 5), st.floats(0.2, 0.7), st.integers(0, 2 ** 16))


def spikes(shape, T, B, p, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((T, B) + tuple(shape), generator=gen) < p).float()


def torch_spikes(model, x):
    """Every spiking neuron's output (and every MaxPool output, the IR's '<name>_or') by module path."""
    out, hooks = {}, []
    for path, m in iter_leaves(model):
        if isinstance(m, (neuron.LIFNode, neuron.IFNode)):
            hooks.append(m.register_forward_hook(lambda mod, i, o, p=path: out.__setitem__(p, o.detach().clone())))
        elif isinstance(m, layer.MaxPool2d):
            hooks.append(m.register_forward_hook(lambda mod, i, o, p=path: out.__setitem__(p + "_or",
                                                                                           o.detach().clone())))
    functional.reset_net(model)
    with torch.no_grad():
        y = model(x)
    functional.reset_net(model)
    for h in hooks:
        h.remove()
    return y, out


# ---- properties ----------------------------------------------------------------------------------
@settings(max_examples=50, **SETTINGS)
@given(spec=net_specs(), inp=inputs)
def test_float_reference_equals_torch_every_layer(spec, inp):
    T, B, p, seed = inp
    model = build(spec)
    x = spikes(spec["shape"], T, B, p, seed)
    y, layers = torch_spikes(model, x)
    r = run_float(module_to_graph(model, spec["shape"], T), x)
    assert layers, "no spiking layer was hooked"
    assume(sum(int(s.sum()) for s in layers.values()) > 0)      # a silent network proves nothing
    for name, s in layers.items():
        assert name in r.spikes, name
        assert torch.equal(r.spikes[name], s), f"layer {name} differs"
    assert torch.equal(r.output, y)


@pytest.mark.lava
@settings(max_examples=10, **SETTINGS)
@given(spec=net_specs(), inp=inputs)
def test_fixed_reference_equals_lava_every_layer(spec, inp):
    from neurocomp.backends.lava import run_lava
    T, B, p, seed = inp
    model = build(spec)
    x = spikes(spec["shape"], T, min(B, 3), p, seed)
    q = lower(module_to_graph(model, spec["shape"], T))
    ref = run_fixed(q, x)
    assume(sum(int(s.sum()) for s in ref.spikes.values()) > 0)  # a silent network proves nothing
    lava = run_lava(q, x)
    assert set(ref.spikes) == set(lava.spikes)
    for name in ref.spikes:
        a, b = ref.spikes[name].bool(), lava.spikes[name].bool()
        assert a.shape == b.shape, name
        assert torch.equal(a, b), f"layer {name}: {int((a != b).sum())} spikes differ"


@settings(max_examples=15, **SETTINGS)
@given(spec=net_specs(), T=st.integers(1, 12))
def test_compile_nir_compile_is_stable(spec, T, tmp_path_factory):
    d = tmp_path_factory.mktemp("nir")
    g = module_to_graph(build(spec), spec["shape"], T)
    write_nir(g, str(d / "a.nir"))
    g2 = read_nir_file(str(d / "a.nir"))
    assert g2.digest() == g.digest()
    write_nir(g2, str(d / "b.nir"))
    assert (d / "a.nir").read_bytes() == (d / "b.nir").read_bytes()
    g3 = read_nir_file(str(d / "b.nir"))
    assert lower(g3).digest() == lower(g).digest()


def _files(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


@settings(max_examples=4, **SETTINGS)
@given(spec=net_specs(), T=st.integers(1, 10))
def test_compiling_twice_is_byte_identical(spec, T, tmp_path_factory):
    from neurocomp.api import compile as nc_compile
    from neurocomp.frontends.checkpoint import save_checkpoint
    d = tmp_path_factory.mktemp("twice")
    model = save_checkpoint(build(spec), str(d / "m.pt"), input_shape=spec["shape"], timesteps=T)
    a = _files(nc_compile(model, str(d / "a")))
    b = _files(nc_compile(model, str(d / "b")))
    assert sorted(a) == sorted(b)
    assert {k for k in a if a[k] != b[k]} == set()


def test_default_model_compiles_byte_identically_across_seconds(tmp_path):
    """HDF5 can stamp creation times into model.nir: compile the default model, wait past a second
    boundary, compile again, and compare every byte."""
    from neurocomp.api import compile as nc_compile
    model = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "digits_plain",
                         "model.pt")
    a = _files(nc_compile(model, str(tmp_path / "a")))
    time.sleep(1.2)
    b = _files(nc_compile(model, str(tmp_path / "b")))
    assert sorted(a) == sorted(b)
    differ = sorted(k for k in a if a[k] != b[k])
    assert differ == [], differ
    assert "model.nir" in a and len(a["model.nir"]) > 1000
