"""The residual zoo (issue 15: models/*_sew, *_mstcja, *_mscsa, *_pfares; block classes with their own
forward, stored as graphs): each checkpoint rebuilds with no user code as a graph that computes what the
builder's block classes compute with its weights, and its float IR equals the torch model spike for spike
on every neuron layer (attention models in both modes: the attention itself, and the calibrated static
maps); compiled (SEW once, the attention models in static and dynamic mode), Lava == fixed-point
reference on every layer and step."""
from __future__ import annotations

import json
import os

import pytest
import torch

from nc_testutils import assert_lava_equals_reference, zoo_checkpoints
from neurocomp.data.registry import load_inputs
from neurocomp.frontends.attention import attention_modules, calibrate, make_static
from neurocomp.frontends.checkpoint import load_checkpoint
from neurocomp.frontends.graphmodule import GraphModule
from neurocomp.frontends.torch import module_to_graph, run_torch_model
from neurocomp.ir import Add
from neurocomp.nn import build
from neurocomp.passes.pipeline import lower
from neurocomp.sim import run_float

RESIDUAL = zoo_checkpoints(residual=True)
NAME = lambda p: os.path.basename(os.path.dirname(p))  # noqa: E731


def test_the_residual_zoo_has_every_family_on_both_sets():
    names = {NAME(p) for p in RESIDUAL}
    assert {"digits_sew", "digits_mstcja", "digits_mscsa", "digits_pfares", "events_sew", "events_mscsa"} <= names


@pytest.mark.parametrize("path", RESIDUAL, ids=NAME)
def test_residual_zoo_model_is_a_graph_equal_to_torch(path):
    loaded = load_checkpoint(path)                       # weights_only: no user code
    assert type(loaded.model) is GraphModule
    recipe = json.load(open(os.path.join(os.path.dirname(path), "recipe.json")))
    user = build(recipe["model"]["builder"], **recipe["model"]["kwargs"]).eval()   # the block classes trained
    user.load_state_dict(loaded.model.state_dict(), strict=True)
    x, _ = load_inputs(loaded.dataset, "test", loaded.timesteps, loaded.encoding, n=4)
    x = torch.as_tensor(x)
    assert torch.equal(run_torch_model(loaded.model.eval(), x), run_torch_model(user, x))

    neurons = [p for p, m in loaded.model.named_modules() if type(m).__name__ == "LIFNode"]
    models = {"static": loaded.model}
    if attention_modules(loaded.model):                  # dynamic: the attention itself; static: calibrated maps
        xc, yc = load_inputs(loaded.dataset, "train", loaded.timesteps, loaded.encoding, n=16)
        models = {"dynamic": loaded.model,
                  "static": make_static(loaded.model, calibrate(loaded.model, torch.as_tensor(xc), yc))}
    for mode, model in models.items():
        g = module_to_graph(model, loaded.input_shape, loaded.timesteps, loaded.encoding, attention_mode=mode)
        assert not g.is_chain() and any(isinstance(n, Add) for n in g)
        y_torch, s_torch = run_torch_model(model, x, record=neurons)
        r = run_float(g, x)
        assert torch.equal(r.output, y_torch), mode
        for n in neurons:
            assert torch.equal(r.spikes[n].bool(), s_torch[n]), (mode, n)
        assert sum(int(s_torch[n].sum()) for n in neurons) > 0


def _cases():
    """(checkpoint, mode): a SEW-ResNet once, every attention model in static and dynamic mode."""
    return [(p, m) for p in RESIDUAL for m in (("static",) if NAME(p).endswith("_sew") else ("static", "dynamic"))]


@pytest.mark.lava
@pytest.mark.parametrize("path,mode", _cases(), ids=lambda v: NAME(v) if os.sep in str(v) else v)
def test_residual_zoo_model_reference_equals_lava(path, mode):
    """The trained residual zoo compiled: fixed-point reference == Lava on every layer and step (3 test samples)."""
    loaded = load_checkpoint(path)
    x, _ = load_inputs(loaded.dataset, "test", loaded.timesteps, loaded.encoding, n=3)
    x = torch.as_tensor(x)
    model = loaded.model
    if mode == "static" and attention_modules(model):
        xc, yc = load_inputs(loaded.dataset, "train", loaded.timesteps, loaded.encoding, n=32)
        model = make_static(model, calibrate(model, torch.as_tensor(xc), yc))
    g = module_to_graph(model, loaded.input_shape, loaded.timesteps, loaded.encoding, attention_mode=mode)
    q = lower(g, attention=mode)
    assert_lava_equals_reference(q, x)


def test_training_a_residual_recipe_writes_a_graph_checkpoint_and_its_wall_time(tmp_path):
    from neurocomp.training import train as tr
    recipe = json.load(open(os.path.join(os.path.dirname(RESIDUAL[0]), "recipe.json")))
    res = tr.train(dict(recipe, name="tiny"), out_dir=tmp_path, epochs=1, progress=False, limit=8)
    stored = load_checkpoint(str(tmp_path / "model.pt"))
    assert type(stored.model) is GraphModule
    x, _ = load_inputs(stored.dataset, "test", stored.timesteps, stored.encoding, n=2)
    x = torch.as_tensor(x)
    assert torch.equal(run_torch_model(stored.model, x), run_torch_model(res["model"], x))
    assert f"Training wall time: {res['train_seconds']:.0f} s" in (tmp_path / "card.md").read_text()
