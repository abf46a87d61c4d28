"""Models with their own ``forward`` (issue 14, item 2): traced to the chain neurocomp compiles.

The user's code is a file ``nets.py`` with one class per idiom the tracer reads: clock_driven
single-step neurons in a loop over time summed then divided by T (``ClockLoop``); MA-SNN's
``[B, T, ...]`` layout with ``[T*B, ...]`` reshapes around per-step torch layers and a
``neurocomp.nn.TCSA`` (``MANet``); activation_based single-step layers called per step, stacked, then
a TCJA and clock_driven containers on the whole sequence (``StackNet``); a voting head after the mean
over time (``VoteNet``); steps written into a ``torch.zeros`` tensor and a Linear read out over time
(``FillNet``); a Linear on the mean over time (``MeanFC``); SpikingJelly's ``functional`` helpers
(``Functional``). Each is made busy, and:

- the reduced ``nn.Sequential`` computes the user's model: the same output and the same spikes on
  every neuron, the user's model called the user's way (``[B, T, ...]`` for MANet);
- compiled through ``neurocomp.api.compile`` (from ``torch.save(model)``, a state dict + ``--model``,
  and ``save_checkpoint``), the float reference equals the user's torch model spike for spike on
  every layer, and Lava equals the fixed-point reference on every layer and step, in static and
  dynamic attention modes;
- the issue's "Done when" command on a script-pickled model with a custom forward;
- every unsupported operation is one error line naming it and its ``nets.py:LINE``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from busy_nets import bernoulli, lava_mismatches, make_busy
from nc_testutils import randomize_bn
from test_sj_containers import assert_lava_exact
from neurocomp import api
from neurocomp.errors import UnsupportedLayer
from neurocomp.frontends.checkpoint import build, describe, load_checkpoint, save_checkpoint
from neurocomp.frontends.torch import run_torch_model
from neurocomp.frontends.trace import trace
from neurocomp.frontends.usercode import import_file, user_unpickler
from neurocomp.ir.serialize import load_graph
from neurocomp.sim import run_float

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (2, 8, 8)
T = 4

NETS_PY = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.clock_driven import layer as cd_layer, neuron as cd_neuron

    from neurocomp.nn import TCJA, TCSA


    class ClockLoop(nn.Module):
        """clock_driven single-step neurons in a loop; the output is the spike count over T / T."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
            self.lif1 = cd_neuron.LIFNode(tau=2.0)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * 4 * 4, 6)
            self.lif2 = cd_neuron.LIFNode(tau=2.0)

        def forward(self, x):
            out = 0
            for t in range(x.shape[0]):
                s = self.pool(self.lif1(self.conv(x[t])))
                out += self.lif2(self.fc(s.flatten(1)))
            return out / x.shape[0]


    class MANet(nn.Module):
        """MA-SNN's layout: input [B, T, ...], time folded into the batch around the torch layers."""

        def __init__(self, T=4):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.pool = layer.AvgPool2d(2, step_mode="m")
            self.att = TCSA(T=T, channels=4, t_ratio=2, c_ratio=2)
            self.lif1 = neuron.LIFNode(tau=2.0, step_mode="m")
            self.fc = nn.Linear(4 * 4 * 4, 5)
            self.lif2 = neuron.LIFNode(tau=2.0, step_mode="m")

        def forward(self, x):
            x = x.transpose(0, 1)                               # [T, B, ...]
            T, B = x.shape[:2]
            y = self.bn(self.conv(x.flatten(0, 1)))             # [T*B, C, H, W]
            y = self.pool(y.reshape(T, B, 4, 8, 8))
            y = self.lif1(self.att(y))
            y = self.fc(y.reshape(T * B, -1)).view(T, B, -1)
            return self.lif2(y).permute(1, 0, 2).mean(1)       # [B, classes]


    class StackNet(nn.Module):
        """activation_based single-step layers per step, stacked; TCJA and containers on the sequence."""

        def __init__(self, T=4):
            super().__init__()
            self.features = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), layer.BatchNorm2d(4),
                                          neuron.LIFNode(tau=2.0))
            self.att = TCJA(2, 3, T=T, channel=4)
            self.pool = cd_layer.SeqToANNContainer(nn.MaxPool2d(2))
            self.fc = cd_layer.SeqToANNContainer(nn.Linear(4 * 4 * 4, 4))
            self.out = cd_neuron.MultiStepLIFNode(tau=2.0)

        def forward(self, x):
            y = torch.stack([self.features(x[t]) for t in range(x.shape[0])])
            y = self.pool(self.att(y))
            return self.out(self.fc(y.flatten(2)))


    class VoteNet(nn.Module):
        """SpikingJelly's voting head on the mean over time."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(layer.Flatten(), layer.Linear(128, 8), neuron.LIFNode(tau=2.0))
            self.vote = layer.VotingLayer(2)

        def forward(self, x):
            out = []
            for t in range(x.shape[0]):
                out.append(self.net(x[t]))
            return self.vote(torch.stack(out).mean(0))


    class FillNet(nn.Module):
        """Steps written into a preallocated tensor (``h[t, ...]``); a Linear read out over time."""

        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(128, 8)
            self.lif = neuron.LIFNode(tau=2.0)
            self.fc2 = nn.Linear(8, 3)

        def forward(self, x):
            T, B = x.shape[:2]
            h = torch.zeros(T, B, 8)
            for t in range(T):
                h[t, ...] = self.lif(self.fc1(x[t].flatten(1)))
            return self.fc2(h).sum(0)


    class MeanFC(nn.Module):
        """A Linear on the mean over time of the spikes (moves before the mean: it is affine)."""

        def __init__(self):
            super().__init__()
            self.conv = layer.Conv2d(2, 4, 3, padding=1, step_mode="m")
            self.lif = neuron.LIFNode(tau=2.0, step_mode="m")
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(self.lif(self.conv(x)).flatten(2).mean(0))


    class Functional(nn.Module):
        """SpikingJelly's functional helpers in the forward: seq_to_ann_forward, multi_step_forward."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.lif = neuron.LIFNode(tau=2.0)
            self.fc = nn.Linear(4 * 8 * 8, 3)
            self.out = neuron.LIFNode(tau=2.0, step_mode="m")

        def forward(self, x):
            y = functional.multi_step_forward(functional.seq_to_ann_forward(x, self.conv), self.lif)
            return self.out(functional.seq_to_ann_forward(y.flatten(2), self.fc))


    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(layer.Conv2d(2, 2, 3, padding=1, step_mode="m"), neuron.LIFNode(step_mode="m"))

        def forward(self, x):
            return x + self.a(x)  # marker: residual


    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = neuron.LIFNode(step_mode="m")

        def forward(self, x):
            y = self.a(x)
            return torch.cat([y, y], 2)  # marker: cat


    class Unknown(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = neuron.LIFNode(step_mode="m")

        def forward(self, x):
            return self.a(torch.sigmoid(x))  # marker: unknown


    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = neuron.LIFNode(step_mode="m")

        def forward(self, x):
            if x.sum() > 0:  # marker: data
                return self.a(x)
            return x


    class ReLUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.a = neuron.LIFNode(step_mode="m")

        def forward(self, x):
            return self.a(self.act(x))  # marker: module


    class VotingLayer(nn.Module):
        """The TCJA code's own vote (src/dvs128.py): an AvgPool1d over groups of the last dim."""

        def __init__(self, voter_num):
            super().__init__()
            self.voting = nn.AvgPool1d(voter_num, voter_num)

        def forward(self, x):
            return self.voting(x.unsqueeze(1)).squeeze(1)


    class TCJAVote(nn.Module):
        """The TCJA paper's DVS128 net as its code writes it: [N, T, ...] input permuted to time-major,
        clock_driven containers and neurons, a TCJA, then its own VotingLayer on the mean over time."""

        def __init__(self, T=4):
            super().__init__()
            self.conv = nn.Sequential(
                cd_layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)),
                cd_neuron.MultiStepLIFNode(tau=2.0, detach_reset=True, backend="torch"),
                TCJA(2, 3, T, 4),
                cd_layer.SeqToANNContainer(nn.MaxPool2d(2, 2)))
            self.fc = nn.Sequential(
                nn.Flatten(2), cd_layer.MultiStepDropout(0.5),
                cd_layer.SeqToANNContainer(nn.Linear(4 * 4 * 4, 12, bias=False)),
                cd_neuron.MultiStepLIFNode(tau=2.0, detach_reset=True, backend="torch"))
            self.vote = VotingLayer(4)

        def forward(self, x):
            x = x.permute(1, 0, 2, 3, 4)
            out_spikes = self.fc(self.conv(x))
            return self.vote(out_spikes.mean(0))


    def factory(kind, **kw):
        return globals()[kind](**kw)
''')


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    (d / "nets.py").write_text(NETS_PY)
    return import_file(str(d / "nets.py")), d


def _line(marker):
    return next(i for i, ln in enumerate(NETS_PY.splitlines(), 1) if f"# marker: {marker}" in ln)


def _user_input(cls_name, x):
    """The user's way of calling the model: MANet takes [B, T, ...]."""
    return x.transpose(0, 1).contiguous() if cls_name in ("MANet", "TCJAVote") else x


def _randomize(model, seed, gain=2.5):
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * gain / max(1, p.shape[-1] ** 0.5))
    randomize_bn(model, gen)
    return model.eval()


def busy(mod, name, seed=0, **kw):
    """A user model, its weights tuned: busy_nets.make_busy on the activation_based twin of the traced
    chain, the tuned weights copied back into the user's modules."""
    model = _randomize(getattr(mod, name)(**kw), seed)
    tr = trace(model, SHAPE, T)
    twin = tr.sequential
    if any(type(m).__module__.startswith("spikingjelly.clock_driven") for m in twin.modules()):
        twin = build(describe(twin))                       # busy_nets reads activation_based neurons
        twin.load_state_dict(tr.sequential.state_dict(), strict=True)
    make_busy(twin.eval(), bernoulli(T, 24, SHAPE, p=0.3, seed=seed + 5), rate=(0.15, 0.35), seed=seed, iters=16)
    for child, path in tr.sources.items():
        src, dst = twin.get_submodule(child), model.get_submodule(path)
        if type(src).__name__ == "SeqToANNContainer" and type(dst).__name__ != "SeqToANNContainer":
            src = src[0]                                   # the tracer wrapped a per-step torch layer
        dst.load_state_dict(src.state_dict(), strict=True)
    return model


def user_spikes(model, x):
    """The user's model called the user's way: its output, and every neuron's spikes ``[T, B, ...]``
    (a single-step neuron's T calls stacked), keyed by the neuron's path in the user's model."""
    from spikingjelly.activation_based import neuron as ab
    from spikingjelly.clock_driven import neuron as cd
    from neurocomp.frontends.torch import reset_state
    got, hooks = {}, []
    for path, m in model.named_modules():
        if isinstance(m, (ab.BaseNode, cd.BaseNode)):
            hooks.append(m.register_forward_hook(lambda _m, _i, o, p=path: got.setdefault(p, []).append(o.detach())))
    reset_state(model)
    with torch.no_grad():
        y = model(x)
    reset_state(model)
    for h in hooks:
        h.remove()
    return y, {p: (torch.stack(v) if len(v) > 1 else v[0]).bool() for p, v in got.items()}


def _close(a, b):
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5)


# ---- the reduced chain computes the user's model ------------------------------------------------------
CASES = {  # class -> (input layout, output layout, reduction, Readout appended)
    "ClockLoop": ("TB", "TB", "mean", False),
    "MANet": ("BT", "TB", "mean", False),
    "StackNet": ("TB", "TB", None, False),
    "VoteNet": ("TB", "TB", "mean", False),
    "FillNet": ("TB", "TB", "sum", True),
    "MeanFC": ("TB", "TB", "mean", True),
    "Functional": ("TB", "TB", None, False),
    "TCJAVote": ("BT", "TB", "mean", False),
}


@pytest.mark.clock_driven
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_reduced_chain_computes_the_users_model(nets, name):
    mod, _ = nets
    model = busy(mod, name, seed=len(name))
    tr = trace(model, SHAPE, T)
    assert (tr.input_layout, tr.output_layout, tr.reduction, tr.readout) == CASES[name]
    x = bernoulli(T, 5, SHAPE, p=0.3, seed=3)
    y_user, s_user = user_spikes(model, _user_input(name, x))
    y_chain, s_chain = run_torch_model(tr.sequential, x, record=list(tr.sources))
    # the chain's output [T, B, ...], reduced over time as the user's forward does
    y_red = {"mean": y_chain.mean(0), "sum": y_chain.sum(0), None: y_chain}[CASES[name][2]]
    assert _close(y_red, y_user), (y_red.shape, y_user.shape)
    # every neuron of the user's model spikes as its copy in the chain (time-major)
    assert s_user, "no neuron"
    back = {path: child for child, path in tr.sources.items()}
    for path, s in s_user.items():
        assert torch.equal(s_chain[back[path]], s), path
        assert s.any(), f"{path} is silent"
    # the user's model is left as it was: called again, the same output
    assert torch.equal(user_spikes(model, _user_input(name, x))[0], y_user)


# ---- compiled: float reference == the user's torch model, Lava == reference ------------------------------
def _compiled_checks(out, model, name, mode, x):
    """float reference == torch on every layer (dynamic: the user's model itself, through the chain's
    names; static: the artifact's static model), Lava == reference on every layer and step."""
    float_graph = load_graph(os.path.join(out, "float"))
    r = run_float(float_graph, x)
    stored = load_checkpoint(os.path.join(out, "model.pt"))          # no pickle, no user code
    tr = trace(model, SHAPE, T)
    assert stored.model.state_dict().keys() == tr.sequential.state_dict().keys()
    if mode == "static" and any(n.kind == "scale" for n in float_graph):
        static = load_checkpoint(os.path.join(out, "static_model.pt")).model
        y, spikes = run_torch_model(static, x, record=list(r.spikes))
        assert torch.equal(r.output, y)
        for k, s in r.spikes.items():
            assert torch.equal(s.bool(), spikes[k]), k
    else:
        _, s_user = user_spikes(model, _user_input(name, x))
        back = {path: child for child, path in tr.sources.items()}
        for path, s in s_user.items():
            assert torch.equal(r.spikes[back[path]].bool(), s), path
        assert len(s_user) == sum(1 for n in float_graph if n.kind == "lif")
    assert sum(int(s.sum()) for s in r.spikes.values()) > 0
    assert_lava_exact(load_graph(os.path.join(out, "fixed")), x)


@pytest.mark.lava
@pytest.mark.clock_driven
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_stacknet_with_tcja_from_a_pickle_compiles_exactly(nets, tmp_path, mode):
    mod, _ = nets
    model = busy(mod, "StackNet", seed=2)
    torch.save(model, tmp_path / "model.pt")
    xc = bernoulli(T, 16, SHAPE, p=0.3, seed=7)
    np.save(tmp_path / "calib.npy", np.swapaxes(xc.numpy(), 0, 1))
    out = api.compile(str(tmp_path / "model.pt"), str(tmp_path / "art"), trust_pickle=True, input_shape=SHAPE,
                      timesteps=T, encoding="bernoulli", attention=mode, calib=str(tmp_path / "calib.npy"))
    _compiled_checks(out, model, "StackNet", mode, bernoulli(T, 3, SHAPE, p=0.3, seed=9))


@pytest.mark.lava
@pytest.mark.clock_driven
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_manet_from_a_state_dict_and_its_class_compiles_exactly(nets, tmp_path, mode):
    mod, d = nets
    model = busy(mod, "MANet", seed=4)
    torch.save({"net": model.state_dict(), "epoch": 3}, tmp_path / "sd.pt")
    xc = bernoulli(T, 16, SHAPE, p=0.3, seed=8)
    np.save(tmp_path / "calib.npy", np.swapaxes(xc.numpy(), 0, 1))
    out = api.compile(str(tmp_path / "sd.pt"), str(tmp_path / "art"), model_code=f"{d / 'nets.py'}:MANet",
                      input_shape=SHAPE, timesteps=T, encoding="bernoulli", attention=mode,
                      calib=str(tmp_path / "calib.npy"))
    _compiled_checks(out, model, "MANet", mode, bernoulli(T, 3, SHAPE, p=0.3, seed=10))


@pytest.mark.lava
@pytest.mark.clock_driven
def test_clock_loop_from_save_checkpoint_compiles_exactly(nets, tmp_path):
    mod, _ = nets
    model = busy(mod, "ClockLoop", seed=1)
    path = save_checkpoint(model, str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=T)
    out = api.compile(path, str(tmp_path / "art"))
    _compiled_checks(out, model, "ClockLoop", "static", bernoulli(T, 3, SHAPE, p=0.3, seed=11))


# ---- the "Done when" command -----------------------------------------------------------------------
SCRIPT_PY = textwrap.dedent('''
    import numpy as np
    import torch
    import torch.nn as nn
    from spikingjelly.activation_based import layer, neuron


    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.lif = neuron.LIFNode(tau=2.0, step_mode="m")

        def forward(self, x):                       # [T, B, C, H, W]
            T, B = x.shape[:2]
            y = self.bn(self.conv(x.flatten(0, 1)))
            return self.lif(y.view(T, B, *y.shape[1:]))


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block(2, 4)
            self.pool = layer.MaxPool2d(4, step_mode="m")
            self.fc = nn.Linear(4 * 4 * 4, 4)
            self.out = neuron.LIFNode(tau=2.0)

        def forward(self, x):
            s = self.pool(self.block(x)).flatten(2)
            count = 0
            for t in range(x.shape[0]):
                count = count + self.out(self.fc(s[t]))
            return count


    if __name__ == "__main__":
        torch.manual_seed(0)
        model = Net()
        with torch.no_grad():
            model.block.conv.weight.mul_(8.0)
            model.fc.weight.mul_(20.0)
        model.eval()
        torch.save(model, "model.pt")
        np.save("inputs.npy", (np.random.default_rng(0).random((3, 10, 2, 16, 16)) < 0.3).astype(np.float32))
''')


@pytest.mark.lava
def test_done_when_command_on_a_script_pickle_with_a_custom_forward(tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT_PY)
    p = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=_env())
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "neurocomp", "compile", "model.pt", "--trust-pickle", "--input-shape",
                        "2,16,16", "--timesteps", "10", "--encoding", "events", "--calib", "inputs.npy", "-q"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=_env())
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "neurocomp", "inspect", "model.pt", "--trust-pickle", "--input-shape",
                        "2,16,16", "--timesteps", "10", "--encoding", "events"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=_env())
    assert p.returncode == 0 and "block_conv" in p.stdout and "block_lif" in p.stdout, p.stdout + p.stderr
    art = tmp_path / "model.neurocomp"
    stored = load_checkpoint(str(art / "model.pt"))                 # safe: no pickle, no user code
    assert stored.input_shape == (2, 16, 16) and stored.timesteps == 10 and stored.encoding == "events"
    # float reference == the user's own model (classes from the script) on its own inputs, every neuron
    pickled = torch.load(tmp_path / "model.pt", weights_only=False,
                         pickle_module=user_unpickler(str(tmp_path / "model.pt"), str(tmp_path / "train.py")))
    assert type(pickled).__name__ == "Net"
    x = torch.from_numpy(np.load(tmp_path / "inputs.npy")).transpose(0, 1).contiguous()
    y_user, s_user = user_spikes(pickled, x)
    r = run_float(load_graph(str(art / "float")), x)
    assert torch.equal(r.output.sum(0), y_user)
    assert torch.equal(r.spikes["block_lif"].bool(), s_user["block.lif"])
    assert torch.equal(r.spikes["out"].bool(), s_user["out"]) and s_user["out"].any()
    # Lava == the fixed-point reference on every layer and step (one sample: T=10 on 2x16x16)
    assert_lava_exact(load_graph(str(art / "fixed")), x[:, :1])


# ---- every unsupported operation: one line, its source line, what to do -------------------------------
ERRORS = {  # class -> (marker, words the message holds)
    "Unknown": ("unknown", ["applies sigmoid"]),
    "Branchy": ("data", ["data-dependent control flow", "__bool__"]),
    "ReLUNet": ("module", ["'act' (ReLU)", "does not compile"]),
}


@pytest.mark.clock_driven
@pytest.mark.parametrize("name", ["Residual", "Cat"])
def test_a_residual_add_or_a_cat_is_traced_as_a_graph(nets, tmp_path, name):
    """Refused before graphs (issue 15); now reduced to neurocomp's GraphModule and stored."""
    from neurocomp.frontends.graphmodule import GraphModule
    mod, _ = nets
    model = getattr(mod, name)().eval()
    save_checkpoint(model, str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=T)
    stored = load_checkpoint(str(tmp_path / "m.pt")).model
    assert type(stored) is GraphModule and [op["op"] for op in stored.ops][-1] == ("add" if name == "Residual" else "cat")
    x = (torch.rand((T, 2) + tuple(SHAPE)) < 0.5).float()
    assert torch.equal(run_torch_model(stored, x), run_torch_model(model, x))


@pytest.mark.clock_driven
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_an_unsupported_operation_is_one_line_with_its_source_line(nets, tmp_path, name):
    mod, _ = nets
    marker, words = ERRORS[name]
    with pytest.raises(UnsupportedLayer) as e:
        save_checkpoint(getattr(mod, name)().eval(), str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=T)
    line = e.value.one_line()
    assert "\n" not in line and f"{name}.forward (nets.py:{_line(marker)})" in line, line
    for w in words:
        assert w in line, (w, line)
    assert e.value.hint and not os.path.exists(tmp_path / "m.pt")


@pytest.mark.clock_driven
def test_an_unsupported_operation_through_the_cli_is_one_error_line(nets, tmp_path):
    mod, d = nets
    (tmp_path / "save.py").write_text("import torch\nfrom nets import Unknown\ntorch.save(Unknown().eval(), 'model.pt')\n")
    p = subprocess.run([sys.executable, "save.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**_env(), "PYTHONPATH": os.pathsep.join([ROOT, str(d)])})
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "neurocomp", "compile", "model.pt", "--trust-pickle", "--input-shape",
                        "2,8,8", "--timesteps", "4", "--encoding", "bernoulli", "--code-path", str(d)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=_env())
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, p.stderr
    assert f"model.pt: Unknown.forward (nets.py:{_line('unknown')})" in errors[0], errors[0]
    assert "(hint: " in errors[0] and not (tmp_path / "model.neurocomp").exists()


class _OwnT(torch.nn.Module):
    """Loops over its own T (3), whatever the input holds."""

    def __init__(self):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron
        self.net = torch.nn.Sequential(layer.Flatten(), layer.Linear(128, 4), neuron.LIFNode())

    def forward(self, x):
        return torch.stack([self.net(x[t]) for t in range(3)])


def test_a_loop_over_another_t_names_the_t_to_pass():
    from neurocomp.frontends.usercode import as_sequential
    with pytest.raises(UnsupportedLayer) as e:
        as_sequential(_OwnT().eval(), input_shape=SHAPE, timesteps=T)
    assert "(3 steps) where the model has T=4" in str(e.value) and "pass --timesteps 3" in str(e.value), str(e.value)
    seq = as_sequential(_OwnT().eval(), input_shape=SHAPE, timesteps=3)      # the hint works
    assert [type(m).__name__ for m in seq] == ["Flatten", "Linear", "LIFNode"]


# ---- the heads (Readout, VotingLayer), compiled -------------------------------------------------------------
@pytest.mark.lava
@pytest.mark.clock_driven
@pytest.mark.parametrize("name", ["VoteNet", "FillNet", "MeanFC", "TCJAVote"])
def test_traced_heads_compile_exactly(nets, tmp_path, name):
    mod, _ = nets
    model = busy(mod, name, seed=len(name))
    path = save_checkpoint(model, str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=T)
    # the TCJA net is compared with the user's model itself: its attention computed as the model does
    calib = str(tmp_path / "calib.npy")
    np.save(calib, np.swapaxes(bernoulli(T, 16, SHAPE, p=0.3, seed=4).numpy(), 0, 1))
    out = api.compile(path, str(tmp_path / "art"), attention="dynamic" if name == "TCJAVote" else "static",
                      calib=calib)
    x = bernoulli(T, 3, SHAPE, p=0.3, seed=12)
    r = run_float(load_graph(os.path.join(out, "float")), x)
    y_user, s_user = user_spikes(model, _user_input(name, x))
    back = {p: c for c, p in trace(model, SHAPE, T).sources.items()}
    for p, s in s_user.items():
        assert torch.equal(r.spikes[back[p]].bool(), s), p
    if name in ("VoteNet", "TCJAVote"):          # the vote of the mean over time == the mean of the votes
        assert _close(r.output.float().mean(0), y_user)
    ref, mism = lava_mismatches(load_graph(os.path.join(out, "fixed")), x)   # the head's values are graded
    assert not {k: v for k, v in mism.items() if v[0]}, mism
    assert all(ref.spikes[back[p]].any() for p in s_user)


# ---- an official class in the [B, T, ...] layout: its layout read from what it computes ------------------
class _BTCell(torch.nn.Module):
    """Stands for an official batch-major cell (MA-SNN's AttLIF takes [B, T, ...])."""

    def __init__(self):
        super().__init__()
        from spikingjelly.activation_based import neuron
        self.lif = neuron.LIFNode(tau=2.0, step_mode="m")

    def forward(self, x):
        return self.lif(x.transpose(0, 1)).transpose(0, 1)


class _BTModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(128, 6)
        self.cell = _BTCell()

    def forward(self, x):                           # [B, T, 2, 8, 8], never permuted
        return self.cell(self.fc(x.flatten(2)))


@pytest.mark.clock_driven
def test_a_recognised_batch_major_class_makes_the_input_batch_major(monkeypatch):
    from spikingjelly.activation_based import neuron
    import neurocomp.frontends.official as official

    def recognise(module, path="model"):
        return neuron.LIFNode(tau=2.0, step_mode="m") if isinstance(module, _BTCell) else None
    monkeypatch.setattr(official, "recognise", recognise)
    torch.manual_seed(0)
    model = _BTModel().eval()
    with torch.no_grad():
        model.fc.weight.mul_(8.0)
    tr = trace(model, SHAPE, T)
    assert (tr.input_layout, tr.output_layout, tr.reduction) == ("BT", "BT", None)
    assert [type(m).__name__ for m in tr.sequential] == ["Flatten", "SeqToANNContainer", "LIFNode"]
    x = bernoulli(T, 3, SHAPE, p=0.3, seed=4)
    y_user, _ = user_spikes(model, x.transpose(0, 1).contiguous())
    y_chain = run_torch_model(tr.sequential, x)
    assert y_chain.any() and torch.equal(y_chain.transpose(0, 1), y_user)


@pytest.mark.clock_driven
def test_without_the_facts_or_with_wrong_ones_the_message_says_what_to_pass(nets, tmp_path):
    mod, _ = nets
    from neurocomp.frontends.usercode import as_sequential
    with pytest.raises(UnsupportedLayer) as e:                      # nothing to trace it with
        as_sequential(mod.ClockLoop().eval())
    assert "ClockLoop.forward (nets.py:" in str(e.value) and "input shape and timesteps" in e.value.hint
    with pytest.raises(UnsupportedLayer) as e:                      # the forward fails on this shape
        save_checkpoint(mod.ClockLoop().eval(), str(tmp_path / "m.pt"), input_shape=(3, 8, 8), timesteps=T)
    line = e.value.one_line()
    assert "ClockLoop.forward (nets.py:" in line and "RuntimeError" in line and "\n" not in line, line
    assert "--input-shape" in e.value.hint and not os.path.exists(tmp_path / "m.pt")


class _Neurons(torch.nn.Module):
    """Single-step neurons of both APIs, ParametricLIF's learned tau included, iterated as `for xt in x`."""

    def __init__(self):
        super().__init__()
        from spikingjelly.activation_based import neuron
        from spikingjelly.clock_driven import neuron as cd_neuron
        self.fc = torch.nn.Linear(128, 8)
        self.plif = cd_neuron.ParametricLIFNode(init_tau=3.0)
        self.if_ = cd_neuron.IFNode()
        self.fc2 = torch.nn.Linear(8, 4)
        self.plif2 = neuron.ParametricLIFNode(init_tau=2.5)

    def forward(self, x):
        outs = []
        for xt in x:
            outs.append(self.plif2(self.fc2(self.if_(self.plif(self.fc(xt.flatten(1)))))))
        return torch.stack(outs, 1)                                   # [B, T, 4]


@pytest.mark.clock_driven
def test_single_step_neurons_of_both_apis_become_multi_step():
    from spikingjelly.activation_based import neuron
    torch.manual_seed(0)
    model = _Neurons().eval()
    with torch.no_grad():
        model.fc.weight.mul_(6.0)
        model.fc2.weight.mul_(6.0)
        model.plif.w.fill_(-0.5)
    tr = trace(model, SHAPE, T)
    assert (tr.input_layout, tr.output_layout) == ("TB", "BT")
    kinds = {name: m for name, m in tr.sequential.named_children()}
    assert type(kinds["plif"]) is neuron.ParametricLIFNode and kinds["plif"].step_mode == "m"
    assert torch.equal(kinds["plif"].w, model.plif.w) and type(kinds["if_"]) is neuron.IFNode
    x = bernoulli(T, 3, SHAPE, p=0.4, seed=2)
    y_user, s_user = user_spikes(model, x)
    y_chain, s_chain = run_torch_model(tr.sequential, x, record=list(tr.sources))
    assert torch.equal(y_chain.transpose(0, 1), y_user) and y_user.any()
    for p in ("plif", "if_", "plif2"):
        assert torch.equal(s_chain[p], s_user[p]) and s_user[p].any(), p
