"""MA-SNN: MALIFNode dynamics, TA/CA/SA/TCSA math, parameter formulas, ReLU, non-causality."""
import pytest
import torch

from neurocomp.nn import CA, CSA, MALIFNode, REGISTRY, SA, TA, TCA, TCSA, TSA


def test_malif_hand_computed_sequence():
    """V_th 0.3, α 0.3: reset to V_th then leak, so 0.09 is carried out of a spiking step."""
    x = torch.tensor([0.5, 0.22, 0.0, 0.3, 0.1]).view(5, 1)
    s = MALIFNode()(x).view(-1)
    # u1=0.5 fire, h1=0.09; u2=0.31 fire (0.22 alone would not), h2=0.09; u3=0.09, h3=0.027;
    # u4=0.327 fire, h4=0.09; u5=0.19 no
    assert s.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_malif_fires_on_equality():
    x = torch.tensor([0.25, 0.25]).view(2, 1)
    n = MALIFNode(v_threshold=0.25, alpha=0.5)
    assert n(x).view(-1).tolist() == [1.0, 1.0]  # u = 0.25 >= 0.25; then 0.125 + 0.25 >= 0.25


def reference_malif(x, vth=0.3, alpha=0.3, beta=0.0):
    h, out = torch.zeros_like(x[0]), []
    for xt in x:
        u = h + xt
        s = (u >= vth).float()
        h = alpha * torch.where(s > 0, torch.full_like(u, vth), u) + beta
        out.append(s)
    return torch.stack(out)


def test_malif_multistep_equals_stepwise_and_is_causal():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, 4, 5, generator=g) * 0.3
    n = MALIFNode(v_threshold=0.3, alpha=0.3)
    full = n(x)
    torch.testing.assert_close(full, reference_malif(x))
    for k in (1, 5, 11):
        torch.testing.assert_close(n(x[:k]), full[:k])


def test_malif_rectangular_surrogate():
    x = torch.tensor([0.1, 0.29, 0.6, 0.3], requires_grad=True)
    MALIFNode(lens=0.25)(x.view(1, 4)).sum().backward()
    # |u - 0.3| < 0.25 -> 1 / (2 * 0.25) = 2
    assert x.grad.tolist() == [2.0, 2.0, 0.0, 2.0]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("T,C,rt,rc", [(8, 16, 2, 4), (10, 32, 5, 8), (20, 64, 4, 16)])
def test_parameter_count_formulas(T, C, rt, rc):
    t, c = 2 * T * (T // rt), 2 * C * (C // rc)
    kw = dict(t_ratio=rt, c_ratio=rc)
    assert n_params(TCSA(T, C, **kw)) == t + c + 18
    assert n_params(TCA(T, C, **kw)) == t + c
    assert n_params(TSA(T, C, **kw)) == t + 18
    assert n_params(CSA(T, C, **kw)) == c + 18
    assert n_params(TA(T, C, **kw)) == t
    assert n_params(CA(T, C, **kw)) == c
    assert n_params(SA(T, C, **kw)) == 18


def test_official_state_dict_names():
    sd = TCSA(8, 16, t_ratio=2, c_ratio=4).state_dict()
    assert sd["ta.sharedMLP.0.weight"].shape == (4, 8, 1, 1, 1)
    assert sd["ta.sharedMLP.2.weight"].shape == (8, 4, 1, 1, 1)
    assert sd["ca.sharedMLP.0.weight"].shape == (4, 16, 1, 1, 1)
    assert sd["ca.sharedMLP.2.weight"].shape == (16, 4, 1, 1, 1)
    assert sd["sa.conv.weight"].shape == (1, 2, 3, 3)
    assert len(sd) == 5


def reference_tcsa(x, m):
    """TCSA from the notes, in [T, B, C, H, W], using the module's weights as plain matrices."""
    W1 = m.ta.sharedMLP[0].weight.detach().flatten(1)
    W2 = m.ta.sharedMLP[2].weight.detach().flatten(1)
    V1 = m.ca.sharedMLP[0].weight.detach().flatten(1)
    V2 = m.ca.sharedMLP[2].weight.detach().flatten(1)
    K = m.sa.conv.weight.detach()
    f = lambda z, A, B: torch.relu(z @ A.T) @ B.T                         # noqa: E731
    a = x.mean(dim=(2, 3, 4)).T                                           # [B, T]
    mx = x.amax(dim=(2, 3, 4)).T
    ta = torch.sigmoid(f(a, W1, W2) + f(mx, W1, W2))                      # [B, T]
    x1 = x * ta.T[:, :, None, None, None]
    a = x1.mean(dim=(0, 3, 4))                                            # [B, C]
    mx = x1.amax(dim=(0, 3, 4))
    ca = torch.sigmoid(f(a, V1, V2) + f(mx, V1, V2))
    x2 = x1 * ca[None, :, :, None, None]
    pooled = torch.stack([x2.mean(dim=(0, 2)), x2.amax(dim=(0, 2))], dim=1)  # [B, 2, H, W]
    sa = torch.sigmoid(torch.nn.functional.conv2d(pooled, K, padding=1))[:, 0]
    return torch.relu(x2 * sa[None, :, None])


def test_tcsa_matches_reference_math():
    torch.manual_seed(0)
    m = TCSA(6, 8, t_ratio=2, c_ratio=2)
    x = torch.randn(6, 3, 8, 5, 4)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, reference_tcsa(x, m), atol=1e-5, rtol=1e-5)


def test_trailing_relu_zeroes_negative_current():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 8, 4, 4)
    for cls in (TCSA, TCA, TSA, CSA, TA, CA, SA):
        y = cls(6, 8, t_ratio=2, c_ratio=2)(x)
        assert torch.all(y[x < 0] == 0) and torch.all(y[x > 0] > 0), cls.__name__


def test_ta_fc_variant_on_linear_output():
    m = TA(8, 10, t_ratio=4, fc=True)
    x = torch.randn(8, 3, 10)
    y = m(x)
    assert y.shape == (8, 3, 10)
    assert m.state_dict()["ta.sharedMLP.0.weight"].shape == (2, 8, 1)
    assert n_params(m) == 2 * 8 * 2


def test_non_causal_change_at_t_plus_1_changes_map_at_t():
    torch.manual_seed(0)
    x = torch.rand(6, 2, 8, 4, 4)
    x2 = x.clone()
    x2[4] += torch.rand_like(x2[4])
    for cls in (TCSA, TA, CA, SA):
        m = cls(6, 8, t_ratio=2, c_ratio=2)
        assert not torch.allclose(m.attention(x)[3], m.attention(x2)[3]), cls.__name__


def test_registry_rebuild_from_config():
    m = TCSA(8, 16, t_ratio=2, c_ratio=4)
    m2 = REGISTRY["TCSA"](**m.config)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(8, 2, 16, 4, 4)
    torch.testing.assert_close(m(x), m2(x))
    n = REGISTRY["MALIFNode"](**MALIFNode(v_threshold=0.5, lens=0.5).config)
    assert (n.v_threshold, n.lens) == (0.5, 0.5)


# ---- beta: the cell's per-step constant (learned per channel with pa_train_self=True) -----------------
def official_cell(x, vth, alpha, beta):
    """MA-SNN's IFCell / ConvIFCell arithmetic written out: ``u = h + x``; ``s = (u - Vthres >= 0)``;
    ``h = (s*Vthres + (1-s)*u) * alpha + beta``, with ``h_0 = 0``."""
    h, out = torch.zeros_like(x[0]), []
    for xt in x:
        u = h + xt
        s = (u - vth >= 0).float()
        h = (s * vth + (1 - s) * u) * alpha + beta
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "one-beta"])
def test_malif_beta_equals_the_official_cell(per_channel):
    g = torch.Generator().manual_seed(3)
    C = 4
    x = torch.randn(9, 2, C, 3, 3, generator=g) * 0.2
    vth, alpha = torch.rand(C, 1, 1, generator=g) * 0.4 + 0.2, torch.rand(C, 1, 1, generator=g) * 0.5 + 0.2
    beta = (torch.rand(C, 1, 1, generator=g) * 0.2 - 0.05) if per_channel else torch.tensor(0.07)
    n = MALIFNode(v_threshold=vth.flatten().tolist(), alpha=alpha.flatten().tolist(),
                  beta=beta.flatten().tolist() if per_channel else float(beta))
    want = official_cell(x, vth, alpha, beta)
    assert torch.equal(n(x), want)
    assert not torch.equal(want, official_cell(x, vth, alpha, 0.0))       # beta changes the spikes
    assert torch.equal(n(x[:1]), official_cell(x[:1], vth, alpha, 0.0))   # no beta at the first step


def _beta_net(per_channel: bool):
    """Conv-BN -> MALIF -> pool -> Flatten -> Linear -> MALIF on [T, B, 2, 8, 8], as neurocomp.nn builds MA-SNN."""
    import torch.nn as nn
    from spikingjelly.activation_based import layer
    g = torch.Generator().manual_seed(21)
    C = 6
    if per_channel:    # pa_train_self=True: Vthres, alpha and beta learned per channel, all differing
        cell = MALIFNode(v_threshold=(torch.rand(C, generator=g) * 0.4 + 0.2).tolist(),
                         alpha=(torch.rand(C, generator=g) * 0.5 + 0.2).tolist(),
                         beta=(torch.rand(C, generator=g) * 0.12 - 0.04).tolist())
    else:
        cell = MALIFNode(v_threshold=0.3, alpha=0.4, beta=0.06)
    net = nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(2, C, 3, padding=1), nn.BatchNorm2d(C)), cell,
                        layer.SeqToANNContainer(nn.AvgPool2d(2)), layer.SeqToANNContainer(nn.Flatten(), nn.Linear(C * 16, 5)),
                        MALIFNode(v_threshold=0.3, alpha=0.3, beta=-0.02 if per_channel else 0.0))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


@pytest.mark.lava
@pytest.mark.parametrize("per_channel", [True, False], ids=["pa_train_self", "one-beta"])
def test_cell_with_beta_compiles_exactly(per_channel, tmp_path):
    """float reference == torch spike for spike on every layer; Lava == the fixed-point reference on every
    layer and step; beta is a voltage per neuron added after the leak."""
    import numpy as np
    from busy_nets import bernoulli, lava_mismatches, make_busy
    from neurocomp import api
    from neurocomp.frontends.checkpoint import save_checkpoint
    from neurocomp.frontends.torch import run_torch_model
    from neurocomp.ir import MALIF
    from neurocomp.ir.serialize import load_graph
    from neurocomp.sim import run_float
    T, shape = 4, (2, 8, 8)
    net = _beta_net(per_channel)
    make_busy(net, bernoulli(T, 16, shape, p=0.3, seed=2), rate=(0.15, 0.35), seed=1, iters=16)
    save_checkpoint(net, str(tmp_path / "model.pt"), input_shape=shape, timesteps=T, encoding="bernoulli")
    out = api.compile(str(tmp_path / "model.pt"), str(tmp_path / "art"))
    x = bernoulli(T, 3, shape, p=0.3, seed=9)

    float_graph = load_graph(str(tmp_path / "art" / "float"))
    r = run_float(float_graph, x)
    y, spikes = run_torch_model(net, x, record=list(r.spikes))
    assert torch.equal(r.output, y) and set(spikes) == set(r.spikes)
    for layer_name, s in r.spikes.items():
        assert torch.equal(s.bool(), spikes[layer_name]), layer_name
        assert int(s.sum()) > 0, layer_name

    fixed = load_graph(str(tmp_path / "art" / "fixed"))
    cells = [n for n in fixed if isinstance(n, MALIF)]
    first = cells[0].fixed.step_bias
    assert first is not None and int(np.abs(first).max()) > 0
    assert len(np.unique(first)) == (6 if per_channel else 1)
    assert (cells[1].fixed.step_bias is None) == (not per_channel)
    quant = next(p for p in fixed.meta["passes"] if p["pass"] == "quantize")
    rec = {r["layer"]: r for r in quant["layers"]}[cells[0].name]       # beta's rounding, in the cell's units:
    scales = np.atleast_1d(rec["scale"])                                 # at most half a voltage unit, 1/(64 s)
    assert 0 <= rec["beta_error"] <= 0.5 / (64 * scales.min()) + 1e-12, rec
    ref, mism = lava_mismatches(fixed, x)
    assert not {k: v for k, v in mism.items() if v[0]}, mism
    assert all(int(s.sum()) > 0 for s in ref.spikes.values())
    assert out


@pytest.mark.lava
def test_beta_enters_from_the_second_step_of_every_sample_window():
    """No input, leak-free cell (alpha = 1), V_th 0.3: the potential is beta * t, so a channel with
    beta 0.11 first fires at step 3 (0.33), then every step (0.3 + 0.11); beta 0.07 first at step 5
    (0.35); beta -0.05 never. Float reference, fixed-point reference and Lava all give that, in both
    samples (the second window starts from rest again)."""
    import torch.nn as nn
    from spikingjelly.activation_based import layer
    from busy_nets import lower_for
    from neurocomp.backends.lava import run_lava
    from neurocomp.frontends.torch import module_to_graph
    from neurocomp.sim import run_fixed, run_float
    T = 6
    lin = nn.Linear(4, 3)
    lin.weight.data.copy_(torch.tensor([[0.2, -0.1, 0.05, 0.1]] * 3))
    lin.bias.data.zero_()
    net = nn.Sequential(layer.SeqToANNContainer(lin), MALIFNode(v_threshold=0.3, alpha=1.0, beta=[0.11, 0.07, -0.05]))
    x = torch.zeros(T, 2, 4)
    want = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1], [0] * 6], dtype=torch.bool).T[:, None].expand(T, 2, 3)
    assert torch.equal(net(x).bool(), want)
    assert torch.equal(run_float(module_to_graph(net, (4,), T), x).output.bool(), want)
    q = lower_for(net, (4,), T)
    assert torch.equal(run_fixed(q, x).output.bool(), want)
    assert torch.equal(run_lava(q, x).output.bool(), want)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "one-beta"])
def test_beta_in_portable_mode_is_one_line(per_channel):
    """Stock Lava LIF has no per-step constant after the leak: portable mode refuses, naming the layer."""
    from busy_nets import lower_for
    from neurocomp.errors import UnsupportedLayer
    with pytest.raises(UnsupportedLayer) as e:
        lower_for(_beta_net(per_channel), (2, 8, 8), 4, mode="portable")
    line = str(e.value)
    assert "\n" not in line and "layer '1'" in line and "--attention static or dynamic" in line, line


def test_per_channel_beta_survives_nir_export_and_import(tmp_path):
    from neurocomp.backends.nir import write_nir
    from neurocomp.frontends.nir import read_nir_file
    from neurocomp.frontends.torch import module_to_graph
    from neurocomp.ir import MALIF
    from neurocomp.sim import run_float
    net = _beta_net(True)
    g = module_to_graph(net, (2, 8, 8), 4)
    write_nir(g, str(tmp_path / "m.nir"))
    h = read_nir_file(str(tmp_path / "m.nir"), timesteps=4)
    cell = next(n for n in h if isinstance(n, MALIF))
    assert list(cell.beta) == net[1].config["beta"]
    x = (torch.rand(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    assert torch.equal(run_float(g, x).output, run_float(h, x).output)
