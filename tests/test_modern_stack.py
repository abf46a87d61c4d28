"""neurocomp beside a current stack (the core environment: Python >= 3.11, torch 2.13, numpy 2, SpikingJelly 2.x,
no Lava): a model built with SpikingJelly 2.x's own layers, its ``MultiDimensionalAttention`` included, is saved
with ``neurocomp.save_checkpoint`` where it lives, compiled and simulated on the fixed-point reference there;
and through the Lava environment (``NEUROCOMP_LAVA_PYTHON``, the Python 3.10 ``.venv``) Lava equals the
reference.

Marked ``modern``: SpikingJelly 0.0.0.0.14 (the Lava environment's) has no ``MultiDimensionalAttention`` module
to build; that environment deselects it (``-m "not modern"``, see the Makefile).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import neurocomp
from neurocomp.frontends.checkpoint import load_checkpoint

pytestmark = pytest.mark.modern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, SHAPE, N = 4, (2, 8, 8), 4


def _model():
    from spikingjelly.activation_based import layer, neuron
    torch.manual_seed(0)
    model = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, bias=False, step_mode="m"),
        layer.BatchNorm2d(4, step_mode="m"),
        layer.MultiDimensionalAttention(T, 4, reduction_t=2, reduction_c=2, kernel_size=3),
        neuron.LIFNode(tau=2.0, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(4 * 8 * 8, 4, step_mode="m"),
        neuron.LIFNode(tau=2.0, step_mode="m"),
    )
    with torch.no_grad():                        # busy enough that both layers spike
        model[0].weight.mul_(3.0)
        model[5].weight.mul_(12.0)
        model[5].bias.fill_(1.0)
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
        model[1].weight.fill_(4.0)
        model[1].bias.fill_(2.0)
    return model.eval()


def _inputs(n, seed):
    return (np.random.default_rng(seed).random((n, T) + SHAPE) < 0.4).astype(np.float32)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("modern")
    model = _model()
    neurocomp.save_checkpoint(model, str(d / "model.pt"), input_shape=SHAPE, timesteps=T)
    np.save(d / "calib.npy", _inputs(16, 1))
    np.save(d / "x.npy", _inputs(N, 2))
    art = neurocomp.compile(str(d / "model.pt"), str(d / "art"), calib=str(d / "calib.npy"))
    return model, d, art


def test_the_stack_is_the_modern_one():
    import spikingjelly
    from importlib.metadata import version
    from spikingjelly.activation_based import layer
    assert int(version("spikingjelly").split(".")[0]) >= 2 and sys.version_info >= (3, 11)
    assert int(np.__version__.split(".")[0]) >= 2
    assert issubclass(layer.MultiDimensionalAttention, nn.Module) and spikingjelly is not None


def test_multi_dimensional_attention_subsets_are_read_as_ma_snn_classes():
    """2.x's use_temporal / use_channel / use_spatial: each subset is MA-SNN's class of its parts, computing the same."""
    from spikingjelly.activation_based import layer
    from neurocomp.frontends.official import recognise
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((T, 2, 4, 8, 8), generator=gen)
    for kw, name in [({}, "TCSA"), ({"use_temporal": False}, "CSA"), ({"use_spatial": False}, "TCA"),
                     ({"use_channel": False}, "TSA"), ({"use_channel": False, "use_spatial": False}, "TA")]:
        m = layer.MultiDimensionalAttention(T, 4, reduction_t=2, reduction_c=2, **kw).eval()
        for p in m.parameters():
            p.data.copy_(torch.randn(p.shape, generator=gen))
        eq = recognise(m)
        assert type(eq).__name__ == name, kw
        with torch.no_grad():
            assert torch.allclose(eq(x), m(x), atol=1e-6), kw


def test_spikingjelly_2_model_is_stored_without_its_classes_and_loads_weights_only(compiled):
    model, d, _ = compiled
    doc = torch.load(d / "model.pt")                      # torch >= 2.6 loads weights_only=True by default
    text = json.dumps(doc["architecture"])
    assert '"neurocomp.nn.TCSA"' in text and "MultiDimensionalAttention" not in text
    loaded = load_checkpoint(str(d / "model.pt"))
    x = torch.as_tensor(_inputs(N, 2)).transpose(0, 1)
    from spikingjelly.activation_based import functional
    with torch.no_grad():
        functional.reset_net(model)
        want = model(x)
        functional.reset_net(loaded.model)
        got = loaded.model(x)
    assert want.sum() > 0 and torch.equal(want, got)      # SpikingJelly's own forward == the stored equivalent


def test_compiled_and_simulated_on_the_reference(compiled):
    _, d, art = compiled
    r = neurocomp.simulate(art, backend="reference", inputs=str(d / "x.npy"), progress=False)
    assert r["samples"] == N
    assert r["float_reference_equals_torch_fraction"] == 1.0
    man = json.load(open(os.path.join(art, "manifest.json")))
    assert man["timesteps"] == T and man["attention"]["mode"] == "static"


@pytest.mark.lava_bridge
def test_lava_through_the_lava_environment_equals_the_reference(compiled, tmp_path):
    """`neurocomp simulate ART --backend lava` from this environment runs Lava in the one that
    NEUROCOMP_LAVA_PYTHON names (the Makefile's Python 3.10 .venv)."""
    _, d, art = compiled
    lava_python = os.environ.get("NEUROCOMP_LAVA_PYTHON") or os.path.join(ROOT, ".venv", "bin", "python")
    env = dict(os.environ, NEUROCOMP_LAVA_PYTHON=lava_python)
    out = subprocess.run([sys.executable, "-m", "neurocomp", "simulate", art, "--backend", "lava", "-q",
                          "--inputs", str(d / "x.npy"), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.load(open(tmp_path / "r.json"))
    assert r["samples"] == N and r["exact_match_fraction"] == 1.0
    assert all(p["mismatches"] == 0 and p["spikes_compared"] > 0 for p in r["per_layer"])
