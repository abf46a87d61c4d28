"""One home per idea in the training wing (issue 13):

- fine-tuning's fake quantization gives exactly the quantize pass's integers (thresholds and scales,
  weights, biases, gain tables), on zoo models with current gains (MA-SNN) and spike gains (TCJA),
  because both call the same ``neurocomp.fixedpoint`` functions, the quantizer's inputs (theta, the
  input weight gain) included;
- the one time-major runner ``frontends.torch.run_torch_model`` records per-layer spikes equal to a
  plain hand loop over the steps, batched or not, and leaves the model reset.
"""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from neurocomp import fixedpoint as fx
from neurocomp.api import compile as compile_
from neurocomp.artifact import Artifact
from neurocomp.frontends.torch import run_torch_model
from neurocomp.ir import LIF, MALIF
from neurocomp.passes.pipeline import fold
from neurocomp.training.fakequant import QGain, layer_scale, qat_model
from neurocomp.training.rebuild import graph_to_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", params=["digits_ma", "digits_tcja"])
def zoo_art(request, tmp_path_factory):
    model = os.path.join(ROOT, "models", request.param, "model.pt")
    return compile_(model, str(tmp_path_factory.mktemp(request.param) / "art"), calib_samples=16)


def test_fake_quantization_is_the_quantize_pass(zoo_art):
    art = Artifact(zoo_art)
    model, layers = graph_to_module(fold(art.float_graph, (art.manifest.get("attention") or {}).get("mode", "static")))
    qat, qsyn, qgain = qat_model(model, layers, int(art.manifest.get("weight_bits", 8)))
    qat.eval()
    fixed = {n.name: n for n in art.fixed_graph.nodes}
    floats = {n.name: n for n in fold(art.float_graph).nodes}
    recs = {r["layer"]: r for p in art.fixed_graph.meta["passes"] if p["pass"] == "quantize" for r in p["layers"]}
    gains = {id(q.sm): q for q in qgain}
    mods = list(model)
    kinds = set()
    for L, qs in zip(layers, qsyn):
        rec, neu = recs[L["name"]], fixed[L["name"]]
        syn, fl = fixed[rec["synapse"]], floats[L["name"]]
        # the quantizer's inputs, by the quantizer's rules
        assert L["theta"] == rec["theta"] == fx.lif_theta(fl.v_threshold, 0.0 if isinstance(fl, MALIF) else fl.v_reset)
        assert L["w_gain"] == (1.0 if isinstance(fl, MALIF) else fx.input_weight_gain(fl.tau, fl.decay_input))
        if isinstance(fl, LIF) and fl.tau is not None and fl.decay_input:
            assert L["w_gain"] == 1.0 / fl.tau != 1.0
        # threshold: the same vth, the same scale
        s = qs.scale(qs.syn.weight)
        assert s == layer_scale(qs.syn.weight, qs.theta, qs.w_gain, qs.weight_bits) == rec["scale"]
        assert fx.lif_scale(neu.fixed.vth, rec["theta"]) == s and neu.fixed.vth == rec["vth"]
        # weights: the dequantized fake weights are the stored integers
        wq, bq = qs.fake_weights()
        np.testing.assert_allclose(wq.detach().double().numpy() * s * qs.w_gain, syn.qweight, rtol=1e-6, atol=1e-6)
        # bias: the fake bias in voltage units is the stored mantissa * 2**exponent (to float32 rounding),
        # and the mantissa/exponent it came from are the stored ones exactly
        if bq is not None:
            got = (bq.detach().double() * fx.voltage_units(qs.w_gain, s)).numpy()
            mant, exp, _ = fx.bias_mant_exp(fx.voltage_units(qs.syn.bias.detach().double() * qs.w_gain, s))
            exact = fx.effective_bias(mant, exp).numpy()
            want = (np.asarray(neu.fixed.bias_mant, np.float64) * 2.0 ** np.asarray(neu.fixed.bias_exp)).reshape(-1)
            per = want.reshape(got.shape[0], -1)           # conv: per channel, broadcast over positions
            np.testing.assert_allclose(np.broadcast_to(got[:, None], per.shape), per, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(np.broadcast_to(exact[:, None], per.shape), per)
            kinds.add("bias")
        # gain table: mantissa / 2**shift, exactly
        if L["gain"] is not None:
            table = gains[id(mods[L["gain"]])].table().detach().double().numpy()
            stored = neu.fixed.gain_mant / float(1 << neu.fixed.gain_shift)
            np.testing.assert_array_equal(np.broadcast_to(table.astype(np.float32), stored.shape),
                                          stored.astype(np.float32))
            kinds.add(L["gain_kind"])
    assert "bias" in kinds and kinds & {"current", "spikes"}, kinds


def test_fake_gain_and_bias_of_hand_values_equal_the_pass():
    """A gain table and biases picked to hit rounding ties: QGain / QSynapse give the pass's numbers."""
    from neurocomp.nn import StaticMap
    from neurocomp.passes.quantize import _bias, _quantize_gain
    g = np.array([[0.5, 1.0 / 3, 2.0], [4095.0 / 4096, 1e-3, 0.75]], np.float64)
    neu = LIF(name="n", in_shape=(3,), out_shape=(3,), tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True,
              input_gain=g)
    mant, shift = _quantize_gain(neu)
    sm = StaticMap(shape=list(g.shape), source="test")
    sm.map.copy_(torch.as_tensor(g))
    np.testing.assert_array_equal(QGain(sm, "current").table().detach().double().numpy(),
                                  (mant / (1 << shift)).astype(np.float32))
    bias_v = np.array([4095.5, -4096.5, 8191.0, 2.5, -0.5, 1e6, -3.0e5])
    m, e, _ = _bias(bias_v)
    tm, te, _ = fx.bias_mant_exp(torch.as_tensor(bias_v))
    assert tm.tolist() == m.tolist() and te.tolist() == e.tolist()


# ---- the one time-major runner ------------------------------------------------------------------

def _small_model():
    from spikingjelly.activation_based import layer, neuron
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        layer.Conv2d(1, 3, 3, padding=1, bias=False, step_mode="m"),
        neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=0.0, step_mode="m"),
        layer.MaxPool2d(2, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(48, 5, bias=False, step_mode="m"),
        neuron.IFNode(v_threshold=1.0, v_reset=0.0, step_mode="m"))
    with torch.no_grad():      # quarter-integer weights on binary inputs: every sum is exact
        for mod in (m[0], m[4]):
            mod.weight.copy_(torch.randint(-3, 5, mod.weight.shape).float() / 4)
    return m.eval()


def _hand_loop(model, x):
    """Step by step, module by module, in single-step mode: per-child outputs [T, B, ...] and the output."""
    from spikingjelly.activation_based import functional
    m = copy.deepcopy(model)
    functional.set_step_mode(m, "s")
    functional.reset_net(m)
    per = {name: [] for name, _ in m.named_children()}
    with torch.no_grad():
        for t in range(x.shape[0]):
            h = x[t]
            for name, child in m.named_children():
                h = child(h)
                per[name].append(h)
    return {k: torch.stack(v) for k, v in per.items()}


def test_run_torch_model_records_what_a_hand_loop_computes():
    model = _small_model()
    T, B = 5, 7
    x = (torch.rand(T, B, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    per = _hand_loop(model, x)
    out_hand = per["5"]
    assert int(per["1"].sum()) > 0 and int(per["5"].sum()) > 0            # the layers do spike
    names = ["1", "2_or", "5", "no_such_layer"]
    out, spikes = run_torch_model(model, x, record=names)
    assert set(spikes) == {"1", "2_or", "5"}                             # a name without a module is left out
    assert torch.equal(out, out_hand)
    assert torch.equal(spikes["1"], per["1"] != 0) and spikes["1"].dtype == torch.bool
    assert torch.equal(spikes["2_or"], per["2"] != 0)                    # X_or is read from module X
    assert torch.equal(spikes["5"], per["5"] != 0) and spikes["5"].shape == (T, B, 5)
    # batched: each batch from a reset state, concatenated; the same numbers
    out_b, spikes_b = run_torch_model(model, x.numpy(), record=names, batch_size=3)
    assert torch.equal(out_b, out) and all(torch.equal(spikes_b[k], spikes[k]) for k in spikes)
    # the model is left reset: a second run is the first; without autograd unless asked
    again = run_torch_model(model, x, device="cpu")
    assert torch.equal(again, out) and not again.requires_grad
    assert all(isinstance(mod.v, float) and mod.v == 0.0 for mod in (model[1], model[5]))
    model.train()                           # (the train/eval mode is the caller's)
    assert run_torch_model(model, x, grad=True).requires_grad and not run_torch_model(model, x).requires_grad
    assert not [h for mod in model.modules() for h in mod._forward_hooks]     # hooks removed
