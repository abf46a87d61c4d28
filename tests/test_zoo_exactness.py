"""Every zoo attention model, every attention mode: fixed-point reference == Lava on 50 test samples."""
import os

import pytest
import torch

from nc_testutils import assert_lava_equals_reference, zoo_checkpoints
from neurocomp.api import calibration_inputs
from neurocomp.frontends.torch import run_torch_model
from neurocomp.passes.pipeline import lower
from neurocomp.backends.lava import run_lava
from neurocomp.data.registry import load_inputs
from neurocomp.frontends.attention import attention_modules, calibrate, make_static
from neurocomp.frontends.checkpoint import load_checkpoint
from neurocomp.frontends.torch import module_to_graph
from neurocomp.sim import run_fixed, run_float

ZOO = [p for p in zoo_checkpoints()          # the chain zoo (the residual zoo: tests/test_residual_zoo.py)
       if not os.path.basename(os.path.dirname(p)).endswith("plain")]


@pytest.fixture(scope="module", params=ZOO, ids=lambda p: os.path.basename(os.path.dirname(p)))
def zoo_model(request):
    loaded = load_checkpoint(request.param)
    assert attention_modules(loaded.model), "zoo models other than *_plain carry attention"
    xc, yc, _ = calibration_inputs(loaded, samples=128)
    static = make_static(loaded.model, calibrate(loaded.model, xc, yc))
    x, _ = load_inputs(loaded.dataset, "test", loaded.timesteps, loaded.encoding, n=50)
    x = torch.as_tensor(x)
    g = module_to_graph(static, loaded.input_shape, loaded.timesteps, loaded.encoding)
    assert torch.equal(run_float(g, x).output, run_torch_model(static, x))   # static torch == IR float
    return g, x


@pytest.mark.lava
@pytest.mark.parametrize("path", ZOO, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_zoo_dynamic_attention_equals_lava(path):
    """Attention kept dynamic: IR float == original torch model, reference == Lava (T-step delay)."""
    loaded = load_checkpoint(path)
    x, _ = load_inputs(loaded.dataset, "test", loaded.timesteps, loaded.encoding, n=50)
    x = torch.as_tensor(x)
    g = module_to_graph(loaded.model, loaded.input_shape, loaded.timesteps, loaded.encoding, attention_mode="dynamic")
    assert torch.equal(run_float(g, x).output, run_torch_model(loaded.model, x))
    q = lower(g, attention="dynamic")
    ref, lava = run_fixed(q, x), run_lava(q, x)
    for name in ref.spikes:
        assert torch.equal(ref.spikes[name], lava.spikes[name]), name


@pytest.mark.lava
@pytest.mark.parametrize("mode", ["static", "portable"])
def test_zoo_reference_equals_lava(zoo_model, mode):
    g, x = zoo_model
    q = lower(g, attention=mode)
    assert_lava_equals_reference(q, x)
