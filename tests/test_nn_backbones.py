"""Backbones: output shape, attention placement, checkpoint round trip."""
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron

from neurocomp.nn import CLA, MALIFNode, PFA, TA, TCJA, TCSA, TLA, build, param_count

CASES = [
    ("plain", dict()),
    ("tcja", dict(T=8)),
    ("ma", dict(T=8)),
    ("pfa", dict(T=8)),
    ("tcja", dict(T=10, in_channels=2, input_hw=16, num_classes=4, hidden=32)),
    ("ma", dict(T=10, in_channels=2, input_hw=16, num_classes=4, attention="CSA")),
]


@pytest.mark.parametrize("name,kw", CASES)
def test_output_is_spikes_of_one_neuron_per_class(name, kw):
    torch.manual_seed(0)
    T, C, hw, K = kw.get("T", 8), kw.get("in_channels", 1), kw.get("input_hw", 8), kw.get("num_classes", 10)
    model = build(name, **kw)
    assert type(model) is torch.nn.Sequential
    out = model((torch.rand(T, 3, C, hw, hw) < 0.5).float())
    functional.reset_net(model)
    assert out.shape == (T, 3, K)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert isinstance(model[-1], (neuron.LIFNode, MALIFNode))


def _types(model):
    return [type(m) for m in model]


def test_attention_placement_follows_the_papers():
    tc = _types(build("tcja", T=8))
    i = tc.index(TCJA)
    assert tc[i - 1] is neuron.LIFNode and tc[i + 1] is layer.MaxPool2d      # spikes, before pooling
    ma = _types(build("ma", T=8))
    i = ma.index(TCSA)
    assert ma[i - 1] is layer.AvgPool2d and ma[i + 1] is MALIFNode           # input current
    assert ma[-2] is TA and ma[-3] is layer.Linear
    pf = _types(build("pfa", T=8))
    assert pf[0] is PFA                                                      # raw input frames
    i = pf.index(PFA, 1)
    assert pf[i - 1] is layer.AvgPool2d and pf[i - 2] is neuron.LIFNode and pf[i + 1] is layer.Conv2d
    assert TLA in _types(build("tcja", T=8, variant="TLA"))
    assert CLA in _types(build("tcja", T=8, variant="CLA"))


def test_checkpoint_round_trip(tmp_path):
    from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
    torch.manual_seed(0)
    x = (torch.rand(8, 2, 1, 8, 8) < 0.5).float()
    for name in ("tcja", "ma", "pfa"):
        model = build(name, T=8).eval()
        path = save_checkpoint(model, str(tmp_path / f"{name}.pt"), input_shape=[1, 8, 8],
                               timesteps=8, encoding="bernoulli")
        loaded = load_checkpoint(path).model
        functional.reset_net(model)
        a = model(x)
        functional.reset_net(loaded)
        torch.testing.assert_close(loaded(x), a)
        assert param_count(loaded) == param_count(model)


def _run(model, x):
    functional.reset_net(model)
    with torch.no_grad():
        out = model(x)
    functional.reset_net(model)
    return out


def test_plain_multistep_equals_stepwise_but_attention_models_are_not_causal():
    """The plain SNN is causal: all T steps at once equals one step at a time, and a change at
    the last step leaves earlier outputs alone. An attention layer's output at earlier steps
    changes when only the last step's input changes."""
    torch.manual_seed(0)
    x = (torch.rand(8, 4, 1, 8, 8) < 0.5).float()
    x2 = x.clone()
    x2[7] = 1 - x2[7]
    plain = build("plain").eval()
    full = _run(plain, x)
    torch.testing.assert_close(_run(plain, x2)[:7], full[:7])
    functional.set_step_mode(plain, "s")
    functional.reset_net(plain)
    with torch.no_grad():
        stepwise = torch.stack([plain(x[t]) for t in range(8)])
    torch.testing.assert_close(stepwise, full)
    upto_attention = {"tcja": 4, "ma": 4, "pfa": 1}   # Conv-BN-LIF-TCJA, Conv-BN-AvgPool-TCSA, PFA
    for name, k in upto_attention.items():
        torch.manual_seed(0)
        head = build(name, T=8).eval()[:k]
        if name == "tcja":
            with torch.no_grad():
                head[1].weight.fill_(4.0)          # BN gain so that the fresh LIF spikes
            assert _run(head[:3], x).sum() > 0
        assert not torch.allclose(_run(head, x)[:7], _run(head, x2)[:7]), name
