"""Attention lowering: calibration, static maps, folding rules, exactness of the emitted network."""
import numpy as np
import pytest
import torch
from spikingjelly.activation_based import layer, neuron, functional

from neurocomp.frontends.torch import run_torch_model
from neurocomp.passes.pipeline import lower
from neurocomp.backends.lava import run_lava
from neurocomp.backends.nir import write_nir
from neurocomp.frontends.attention import calibrate, make_static
from neurocomp.frontends.nir import read_nir_file
from neurocomp.frontends.torch import module_to_graph
from neurocomp.ir import Graph, Input, LIF, Linear, MALIF, Scale
from neurocomp.nn import MALIFNode, StaticMap, build
from neurocomp.passes import fold_batchnorm
from neurocomp.passes.fold_attention import fold_attention, rank1
from neurocomp.sim import run_fixed, run_float
from nc_testutils import randomize_bn, spike_input


def test_rank1_exact_and_error_formula():
    g, b = np.array([1.0, 0.5, 2.0, 1.5]), np.array([0.2, 0.7, 0.4])
    g2, b2, err = rank1(np.outer(g, b))
    assert err < 1e-12 and np.allclose(np.outer(g2, b2), np.outer(g, b)) and abs(g2.mean() - 1) < 1e-12
    M = np.array([[1.0, 0.0], [0.0, 0.5]])
    s = np.linalg.svd(M, compute_uv=False)
    assert rank1(M)[2] == pytest.approx(s[1] / np.sqrt((s ** 2).sum()))


def _tiny(kind, T, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    kw = dict(in_channels=2, num_classes=3, input_hw=8, channels=(4, 6), T=T)
    if kind == "tcja":
        m = build("tcja", kernel_size_t=2, kernel_size_c=2, **kw)     # even kernels: 'same' looks ahead
    elif kind == "ma":
        m = build("ma", t_ratio=1, c_ratio=2, **kw)
    else:
        m = build("pfa", rank=2, **kw)
    gain = 6.0 if kind == "pfa" else 2.5        # PFA's map (< 1) and bias-free convs damp the input
    for p in m.parameters():
        if p.requires_grad:
            p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * gain / max(1, p.shape[-1] ** 0.5))
    randomize_bn(m, gen)
    if kind == "pfa":
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.data.mul_(4.0)
    functional.set_step_mode(m, "m")
    return m.eval()


@pytest.mark.lava
@pytest.mark.parametrize("kind", ["tcja", "ma", "pfa"])
def test_static_model_ir_float_equals_torch_and_fixed_equals_lava(kind):
    T = 5                                       # odd T
    model = _tiny(kind, T)
    xc = spike_input(T, 32, (2, 8, 8), p=0.3, seed=1)
    stats = calibrate(model, xc, labels=np.arange(32) % 3)
    assert all(st["static_map"].shape[0] == T for st in stats.values())
    static = make_static(model, stats)
    x = spike_input(T, 12, (2, 8, 8), p=0.3, seed=2)
    g = module_to_graph(static, (2, 8, 8), T)
    assert any(isinstance(n, Scale) for n in g)
    assert torch.equal(run_float(g, x).output, run_torch_model(static, x))
    q = lower(g)
    ref, lava = run_fixed(q, x), run_lava(q, x)
    for name in ref.spikes:
        assert torch.equal(ref.spikes[name], lava.spikes[name]), name
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0


def test_scale_commutes_with_maxpool():
    """TCJA's per-(t, c) map before MaxPool is moved after the OR pool: max(a*s) = a*max(s)."""
    T = 4
    m = torch.nn.Sequential(layer.Conv2d(1, 3, 3, padding=1), neuron.LIFNode(step_mode="m"),
                            StaticMap(shape=[T, 3, 1, 1]), layer.MaxPool2d(2), layer.Flatten(),
                            layer.Linear(48, 2), neuron.LIFNode(step_mode="m"))
    m[2].map.copy_(torch.rand(T, 3, 1, 1) + 0.2)
    for p in m.parameters():
        p.data.mul_(4.0)
    functional.set_step_mode(m, "m")
    g = module_to_graph(m.eval(), (1, 8, 8), T)
    assert [n.kind for n in g][3:6] == ["sumpool2d", "threshold", "scale"]
    x = spike_input(T, 16, (1, 8, 8), p=0.5)
    assert torch.equal(run_float(g, x).output, run_torch_model(m, x))


def _current_graph(gain, rectify, weights, bias):
    T = gain.shape[0]
    w = np.asarray(weights, np.float32)
    n_out, n_in = w.shape
    return Graph.chain([Input(name="input", in_shape=(n_in,), out_shape=(n_in,)),
                        Linear(name="fc", in_shape=(n_in,), out_shape=(n_out,), weight=w, bias=np.asarray(bias, np.float32)),
                        Scale(name="att", in_shape=(n_out,), out_shape=(n_out,), scale=gain.astype(np.float32),
                              rectify=rectify),
                        MALIF(name="cell", in_shape=(n_out,), out_shape=(n_out,))], {"timesteps": T})


def test_current_map_becomes_exact_gain_table_with_relu():
    T = 6
    rng = np.random.default_rng(0)
    gain = rng.uniform(0.2, 1.0, size=(T, 5))
    g = _current_graph(gain, True, rng.uniform(-0.6, 0.6, size=(5, 7)), rng.uniform(-0.2, 0.1, size=5))
    folded = fold_attention(g)
    cell = folded["cell"]
    assert np.array_equal(cell.input_gain, gain.astype(np.float32)) and cell.rectify_input and cell.gain_on_bias
    assert folded.meta["passes"][-1]["maps"][0]["error"] == 0.0
    x = spike_input(T, 64, (7,), p=0.4, seed=3)
    assert torch.equal(run_float(folded, x).output, run_float(g, x).output)   # folding is exact


def test_relu_matters_and_is_kept_in_fixed_point():
    """A negative input current must not lower the MA membrane when the module ends in ReLU."""
    T = 4
    gain = np.ones((T, 1))
    w = [[0.35, -0.5]]
    x = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]], [[0.0, 0.0]]])
    with_relu = _current_graph(gain, True, w, [0.0])
    without = _current_graph(gain, False, w, [0.0])
    f_relu, f_plain = run_float(with_relu, x).output, run_float(without, x).output
    assert not torch.equal(f_relu, f_plain)
    assert torch.equal(run_fixed(lower(with_relu), x).output.float(), f_relu)


@pytest.mark.lava
def test_portable_mode_uses_stock_lif_only():
    T = 5
    model = _tiny("ma", T)
    stats = calibrate(model, spike_input(T, 16, (2, 8, 8), p=0.3, seed=4))
    g = module_to_graph(make_static(model, stats), (2, 8, 8), T)
    q = lower(g, attention="portable")
    assert all(not n.fixed.gain_scheduled for n in q if n.is_neuron)
    maps = next(p for p in q.meta["passes"] if p["pass"] == "fold_attention")["maps"]
    assert any("reset to 0" in r["rule"] for r in maps)
    x = spike_input(T, 6, (2, 8, 8), p=0.3, seed=5)
    ref, lava = run_fixed(q, x), run_lava(q, x)
    assert all(torch.equal(ref.spikes[k], lava.spikes[k]) for k in ref.spikes)


def test_attention_survives_nir_round_trip(tmp_path):
    import nir
    T = 5
    model = _tiny("tcja", T)
    stats = calibrate(model, spike_input(T, 8, (2, 8, 8), p=0.3))
    g = module_to_graph(make_static(_tiny("ma", T), calibrate(_tiny("ma", T), spike_input(T, 8, (2, 8, 8)))),
                        (2, 8, 8), T)
    for graph in (module_to_graph(make_static(model, stats), (2, 8, 8), T), g):
        path = str(tmp_path / "a.nir")
        write_nir(graph, path)
        back = read_nir_file(path)
        assert back.digest() == graph.digest()
        assert any(isinstance(n, nir.Scale) for n in nir.read(path).nodes.values())   # type-checked read


def test_calibration_statistics_see_class_gates():
    """A map that is a pure per-class gate has class_explained ~ 1; a constant map has variation 0."""
    from neurocomp.frontends import attention as att

    class Gate(torch.nn.Module):
        def attention(self, x):
            return x.mean(dim=(0, 2, 3, 4), keepdim=False)[None, :, None].expand(x.shape[0], -1, x.shape[2])

        def forward(self, x):
            return x
    Gate.__module__ = "neurocomp.nn.test"
    att.ATTENTION.add("Gate")
    try:
        m = torch.nn.Sequential(Gate())
        y = np.arange(40) % 2
        x = torch.zeros(3, 40, 2, 2, 2)
        x[:, y == 1] = 1.0
        st = calibrate(m, x, y)["0"]
        assert st["class_explained"] == pytest.approx(1.0)
        assert st["variation"] > 0.5
    finally:
        att.ATTENTION.discard("Gate")


# ---- dynamic mode (MA-SNN) ---------------------------------------------------------------------
def test_sigmoid_table_within_its_quantization_step():
    from neurocomp.fixedpoint.attention import sigmoid_lut
    z = np.linspace(-15.9, 15.9, 20001)
    err = np.abs(sigmoid_lut(z) / 4096.0 - 1.0 / (1.0 + np.exp(-z)))
    # half an input step (1/64) times the largest slope (1/4), plus half an output step (1/8192)
    assert err.max() <= 0.25 / 64 + 0.5 / 4096 + 1e-12
    assert sigmoid_lut(np.array([-100.0]))[0] == 0 and sigmoid_lut(np.array([100.0]))[0] == 4095


def test_dynamic_gains_follow_the_module():
    """Integer MA program (8-bit weights, integer pooling/MLP/conv, table sigmoid) vs the float module."""
    from neurocomp.fixedpoint.attention import ma_gains, ma_program
    from neurocomp.nn import TCSA
    torch.manual_seed(0)
    m = TCSA(6, 8, t_ratio=2, c_ratio=2).eval()
    state = {k: v.numpy() for k, v in m.state_dict().items()}
    x = torch.randn(6, 4, 8, 3, 3)
    with torch.no_grad():
        ref = m.attention(x).numpy()
    for x_scale in (64 * 3.0, 64 * 250.0):             # the layer's scale: currents of ~8 and ~15 bits
        xi = np.round(x.transpose(0, 1).numpy() * x_scale).astype(np.int64)
        g = ma_gains(xi, ma_program(state, "TCS", x_scale))
        assert g.dtype == np.int64
        assert np.abs(g.transpose(1, 0, 2, 3, 4) / 4096.0 - ref).max() < 0.01
    x2 = xi.copy()
    x2[:, 5] += int(3 * x_scale)                   # a change at the last step moves the gains at step 0
    g2 = ma_gains(x2, ma_program(state, "TCS", x_scale))
    assert not np.array_equal(g2[:, 0], g[:, 0])
    with pytest.raises(TypeError):
        ma_gains(xi.astype(np.float64), ma_program(state, "TCS", x_scale))


def test_requantizer_rounds_accumulators_like_the_real_factor():
    from neurocomp.fixedpoint.attention import LUT_RANGE, LUT_SIZE, LUT_STEP, SIGMOID_LUT, requantizer, sigmoid_of_acc
    rng = np.random.default_rng(3)
    for factor in (1e-9, 3.7e-5, 0.013, 0.5, 1.0, 7.25, 40000.0):
        bound = 2.0 ** 40
        rq = requantizer(factor, bound)
        assert rq["mult"] < 2 ** 17 and rq["shift"] >= 0 and rq["pre"] >= 0
        acc = rng.integers(-int(min(bound, 2000 / factor)), int(min(bound, 2000 / factor)) + 1, 5000)
        got = sigmoid_of_acc(acc, rq)
        ideal = np.clip(np.floor(acc * factor + 0.5).astype(np.int64) + LUT_RANGE * LUT_STEP, 0, LUT_SIZE - 1)
        # the integer index is the real-factor index, up to one table step where rounding ties shift
        assert np.all(np.abs(SIGMOID_LUT[ideal] - got) <= np.abs(np.diff(SIGMOID_LUT)).max())
        assert np.mean(SIGMOID_LUT[ideal] == got) > 0.99, factor
    with pytest.raises(ValueError):
        requantizer(0.0, 1.0)


def test_attention_weights_are_small_integers():
    from neurocomp.fixedpoint.attention import WEIGHT_BITS, quantize_weights
    rng = np.random.default_rng(0)
    for scale in (1e-4, 0.3, 50.0):
        w = rng.normal(0, scale, (7, 5))
        q, e = quantize_weights(w)
        assert q.dtype == np.int64 and np.abs(q).max() <= 2 ** (WEIGHT_BITS - 1) - 1
        assert np.abs(q).max() >= 2 ** (WEIGHT_BITS - 2)            # the range is used, not wasted
        assert np.abs(q / 2.0 ** e - w).max() <= 0.5 / 2.0 ** e + 1e-15
    q, e = quantize_weights(np.zeros((2, 2)))
    assert not q.any()


@pytest.mark.lava
def test_dynamic_mode_exact_on_lava_with_t_step_latency():
    from neurocomp.ir.timing import time_alignment
    T = 5
    model = _tiny("ma", T)
    x = spike_input(T, 8, (2, 8, 8), p=0.3, seed=6)
    g = module_to_graph(model, (2, 8, 8), T, attention_mode="dynamic")
    assert sum(n.kind == "ma_attention" for n in g) == 3
    assert torch.equal(run_float(g, x).output, run_torch_model(model, x))     # the original, dynamic model
    q = lower(g, attention="dynamic")
    assert time_alignment(q)["depth"] == 3 + 3 * T                            # 3 synapses + T per module
    ref, lava = run_fixed(q, x), run_lava(q, x)
    for name in ref.spikes:
        assert torch.equal(ref.spikes[name], lava.spikes[name]), name
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0
    path = "/tmp/_nc_dyn.nir"
    write_nir(g, path)
    assert read_nir_file(path).digest() == g.digest()


@pytest.mark.lava
@pytest.mark.parametrize("kind", ["tcja", "pfa"])
def test_dynamic_spike_maps_exact_on_lava(kind):
    """TCJA/PFA kept dynamic: graded payloads one window late; IR float == torch, reference == Lava."""
    from neurocomp.ir.timing import time_alignment
    T = 5
    model = _tiny(kind, T)
    x = spike_input(T, 8, (2, 8, 8), p=0.3, seed=7)
    g = module_to_graph(model, (2, 8, 8), T, attention_mode="dynamic")
    n_att = sum(n.kind == "spike_attention" for n in g)
    assert n_att == (2 if kind == "tcja" else 3)
    assert torch.equal(run_float(g, x).output, run_torch_model(model, x))
    q = lower(g, attention="dynamic")
    syn = sum(n.is_synapse for n in q)
    assert time_alignment(q)["depth"] == syn + n_att * T
    ref, lava = run_fixed(q, x), run_lava(q, x)
    for name in ref.spikes:
        assert torch.equal(ref.spikes[name], lava.spikes[name]), name
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0
    path = f"/tmp/_nc_dyn_{kind}.nir"
    write_nir(g, path)
    assert read_nir_file(path).digest() == g.digest()


def test_spike_payloads_follow_the_modules():
    """Integer TCJA/PFA programs (8-bit weights, spike counts, table sigmoid) vs the float modules."""
    from neurocomp.fixedpoint.attention import spike_payload, spike_program
    from neurocomp.nn import PFA, TCJA
    torch.manual_seed(1)
    m = TCJA(2, 2, 6, 8).eval()
    x = (torch.rand(6, 3, 8, 4, 4) < 0.3).float()
    src = x.transpose(0, 1).numpy().astype(np.int64)
    with torch.no_grad():
        ref = m.attention(x).numpy()
    pay = spike_payload(spike_program("TCJA", {k: v.numpy() for k, v in m.state_dict().items()}, (8, 4, 4)), src)
    assert pay.dtype == np.int64 and pay.max() <= 255 and pay.min() >= 0
    assert np.abs(pay[:, :, :, 0, 0].transpose(1, 0, 2) / 256.0 - ref).max() <= 1.0 / 256 + 0.25 / 64 + 0.01
    p = PFA(4, 4, 6, 8, 3, 2).eval()
    state = {k: v.numpy() for k, v in p.state_dict().items()}
    with torch.no_grad():
        ref = p.attention(x).numpy()
    pay = spike_payload(spike_program("PFA", state, (8, 4, 4)), src)
    assert np.abs(pay.transpose(1, 0, 2, 3, 4) / 256.0 - ref).max() <= 1.0 / 256 + 0.25 / 64 + 0.01
    # with a 2x2 pool before the module: the map of the pooled spikes, repeated over each window
    x8 = (torch.rand(6, 3, 8, 8, 8) < 0.3).float()
    with torch.no_grad():
        ref = p.attention(torch.nn.functional.avg_pool2d(x8.flatten(0, 1), 2).unflatten(0, (6, 3))).numpy()
    pay = spike_payload(spike_program("PFA", state, (8, 8, 8), (2, 2)), x8.transpose(0, 1).numpy().astype(np.int64))
    assert np.array_equal(pay[:, :, :, ::2, ::2], pay[:, :, :, 1::2, 1::2])
    assert np.abs(pay[:, :, :, ::2, ::2].transpose(1, 0, 2, 3, 4) / 256.0 - ref).max() <= 1.0 / 256 + 0.25 / 64 + 0.01
