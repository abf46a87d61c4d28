"""Residual and branching models as users write them, through neurocomp's front door.

Each model (tests/residual_models.py: Spiking-ResNet BasicBlocks with identity and 1x1 conv + BN
downsampling shortcuts, an MS-ResNet block adding currents, a SEW block adding spikes, a concat of
branches of unequal depth) is made busy (every BatchNorm set from the model's own activity so every
layer fires), saved (save_checkpoint, or torch.save + trust_pickle), compiled by
``neurocomp.api.compile`` and checked: the artifact's model.pt rebuilds with no user code and
computes the user's model exactly; the float reference equals the user's torch model spike for spike
on every neuron layer; Lava equals the fixed-point reference on every layer and step.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import residual_models as rm
from busy_nets import bernoulli, lava_mismatches
from neurocomp import api
from neurocomp.errors import UnsupportedLayer
from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
from neurocomp.frontends.graphmodule import GraphModule
from neurocomp.frontends.torch import run_torch_model
from neurocomp.ir import Add, Concat
from neurocomp.ir.serialize import load_graph
from neurocomp.sim import run_float

T, SHAPE = 4, (2, 8, 8)


def busy(model, seed, shape=SHAPE):
    """Every BatchNorm, in forward order, normalises what it reads on a batch and shifts it towards
    the threshold, so that every layer fires."""
    gen = torch.Generator().manual_seed(seed)
    x = bernoulli(T, 8, shape, p=0.3, seed=seed)
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        got = {}
        h = bn.register_forward_pre_hook(lambda m, a: got.setdefault("x", a[0].detach()))
        run_torch_model(model, x)
        h.remove()
        y = got["x"].reshape((-1,) + tuple(got["x"].shape[-3:]))
        with torch.no_grad():
            bn.running_mean.copy_(y.mean((0, 2, 3)))
            bn.running_var.copy_(y.var((0, 2, 3), unbiased=False) + 1e-3)
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) * 0.6 + 0.6)
            bn.bias.copy_(torch.rand(bn.num_features, generator=gen) * 0.5 + 0.5)
    for fc in [m for m in model.modules() if isinstance(m, torch.nn.Linear)]:     # the head fires too
        got = {}
        h = fc.register_forward_hook(lambda m, a, o: got.setdefault("y", o.detach()))
        run_torch_model(model, x)
        h.remove()
        with torch.no_grad():
            fc.weight.mul_(1.0 / (float(got["y"].std()) + 1e-3))
            fc.bias.fill_(0.8)
    return model


def compile_model(model, tmp_path, pickle=False):
    if pickle:
        torch.save(model, tmp_path / "model.pt")
        return api.compile(str(tmp_path / "model.pt"), str(tmp_path / "art"), trust_pickle=True, input_shape=SHAPE,
                           timesteps=T, encoding="bernoulli", attention="static")
    ckpt = save_checkpoint(model, str(tmp_path / "model.pt"), input_shape=SHAPE, timesteps=T, encoding="bernoulli")
    return api.compile(ckpt, str(tmp_path / "art"), attention="static")


def check_artifact(model, out, joins, shape=SHAPE):
    x = bernoulli(T, 3, shape, p=0.3, seed=5)
    stored = load_checkpoint(os.path.join(out, "model.pt")).model          # weights_only: no user code
    assert type(stored) is GraphModule
    assert stored.state_dict().keys() <= model.state_dict().keys()
    neurons = [p for p, m in model.named_modules() if type(m).__name__ == "LIFNode"]
    y_user, s_user = run_torch_model(model, x, record=neurons)
    y_art, s_art = run_torch_model(stored, x, record=neurons)
    assert set(s_user) == set(neurons)
    for n in neurons:
        assert torch.equal(s_user[n], s_art[n]), n
    assert torch.equal(y_user, y_art if y_art.shape == y_user.shape else y_art.mean(0))

    float_graph = load_graph(os.path.join(out, "float"))
    assert not float_graph.is_chain()
    assert sorted(type(n).__name__ for n in float_graph if isinstance(n, (Add, Concat))) == sorted(joins)
    r = run_float(float_graph, x)
    for n in neurons:                                   # the user's own model, spike for spike
        assert torch.equal(r.spikes[n].bool(), s_user[n]), n
    assert all(int(s_user[n].sum()) > 0 for n in neurons), {n: int(s_user[n].sum()) for n in neurons}

    ref, mism = lava_mismatches(load_graph(os.path.join(out, "fixed")), x)
    bad = {k: v for k, v in mism.items() if v[0]}
    assert not bad, f"Lava != reference (layer: mismatches, reference-only, Lava-only): {bad}"
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0


@pytest.mark.lava
@pytest.mark.parametrize("cls,joins,pickle", [
    (rm.SpikingResNet, ["Add", "Add"], False),
    (rm.MSResNet, ["Add"], False),
    (rm.SEWResNet, ["Add"], True),
    (rm.CatNet, ["Concat"], False),
], ids=["spiking_resnet_downsample", "ms_resnet", "sew_pickle", "concat_unequal_depth"])
def test_residual_model_compiles_exactly(cls, joins, pickle, tmp_path):
    torch.manual_seed(0)
    model = busy(cls(), seed=1)
    out = compile_model(model, tmp_path, pickle=pickle)
    check_artifact(model, out, joins)


def test_an_add_of_a_tensor_not_from_the_input_is_refused_with_its_line(tmp_path):
    with pytest.raises(UnsupportedLayer) as e:
        save_checkpoint(rm.NotFromInput(), str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=T)
    msg = e.value.one_line()
    assert "residual_models.py:" in msg and "\n" not in msg


@pytest.mark.lava
def test_cli_compile_simulate_inspect(tmp_path, capsys):
    """The commands on a residual model, run in this interpreter (what is tested is the commands on a graph,
    not the process: tests/test_front_door.py launches the real CLI)."""
    from neurocomp.cli import main
    model = busy(rm.SpikingResNet(), seed=2)
    ckpt = save_checkpoint(model, str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=T, encoding="bernoulli")

    def run(*a):
        rc = main([str(v) for v in a])
        out = capsys.readouterr()
        return rc, out.out, out.err

    art = str(tmp_path / "art")
    rc, _, err = run("compile", ckpt, "-o", art)
    assert rc == 0, err[-2000:]
    np.save(tmp_path / "x.npy", bernoulli(T, 2, SHAPE, p=0.3, seed=3).numpy().swapaxes(0, 1))   # [N, T, ...]
    rc, _, err = run("simulate", art, "--backend", "lava", "--inputs", str(tmp_path / "x.npy"), "--json",
                     str(tmp_path / "s.json"))
    assert rc == 0, err[-2000:]
    assert json.load(open(tmp_path / "s.json"))["exact_match_fraction"] == 1.0
    assert "nir_round_trip" not in json.load(open(os.path.join(art, "manifest.json")))   # model.nir re-read, as chains
    rc, out, err = run("inspect", art)
    assert rc == 0, err[-2000:]
    assert "layer2.sn2" in out and "add" in out


@pytest.mark.parametrize("edit,field", [
    (lambda s: s["ops"].__setitem__(0, {**s["ops"][0], "op": "pow"}), "ops[0].op"),
    (lambda s: s["ops"][-1].__setitem__("inputs", ["stem", "nowhere"]), "ops[2]"),
    (lambda s: s["ops"][-1].__setitem__("dim", 1), "ops[2].dim"),
    (lambda s: s["ops"].__setitem__(1, {**s["ops"][1], "name": "stem"}), "ops[1].name"),
    (lambda s: s["modules"].append(["extra", s["modules"][0][1]]), "modules"),
    (lambda s: s.__setitem__("modules", "x"), "modules"),
])
def test_a_bad_graph_description_is_one_line_naming_the_field(edit, field):
    from neurocomp.errors import BadCheckpoint
    from neurocomp.frontends.checkpoint import build, describe
    from neurocomp.frontends.usercode import as_sequential

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.deep = rm.lif(), rm.lif()

        def forward(self, x):
            s = self.stem(x)
            return torch.cat([self.deep(s), s], dim=2)

    spec = describe(as_sequential(Net(), input_shape=SHAPE, timesteps=T))
    assert [op["op"] for op in spec["ops"]] == ["module", "module", "cat"]
    build(spec)
    edit(spec)
    with pytest.raises(BadCheckpoint) as e:
        build(spec)
    assert field in e.value.one_line() and "\n" not in e.value.one_line()
