"""The reference simulator's neurons over a whole window in exact floats (``sim.voltage``) equal
``neurocomp.fixedpoint``'s integer expression stepped one step at a time (``fixed_ops.WINDOW = False``):
spikes and saturation counts, for every branch of the window code -- decays that are powers of two or
not, per neuron, none (IF) or all (memoryless); saturating voltages; gains per step or per neuron,
rectified, on the bias, with offsets, a step bias, a reset value, plain and further gained groups; float32
and float64 -- and the cases it leaves to the integer steps (a current that wraps, a current memory)."""
import numpy as np
import pytest
import torch

from neurocomp.ir import LIF, Graph, Input
from neurocomp.ir.nodes import LoihiNeuron
from neurocomp.sim import fixed_ops, voltage
from neurocomp.sim.walk import Run, Split

T, B, SHAPE = 6, 3, (4, 5)


def _neuron(rng, **kw):
    n = int(np.prod(SHAPE))
    fixed = dict(du=4095, dv=2048, vth=int(rng.integers(50, 400)),
                 bias_mant=rng.integers(-300, 300, SHAPE), bias_exp=rng.integers(0, 3, SHAPE))
    fixed.update(kw)
    assert n > 1
    return LIF("n", SHAPE, SHAPE, fixed=LoihiNeuron(**fixed))


def _run_both(node, a, monkeypatch):
    """(spikes, stats) of the window code and of the integer steps, and how the window code ran: the float type
    of its recurrence, "compare" (a voltage without memory: one comparison), or None (it left the neuron to
    the integer steps)."""
    g = Graph.chain([Input("in", SHAPE, SHAPE), node])
    calls = []
    real = voltage.run_window
    monkeypatch.setattr(voltage, "run_window", lambda *args, **kw: calls.append(args[7]) or real(*args, **kw))
    for name in ("lif_step", "gain_lif_step"):
        step = getattr(fixed_ops.fx, name)
        monkeypatch.setattr(fixed_ops.fx, name, lambda *args, _s=step, **kw: calls.append(None) or _s(*args, **kw))
    out = {}
    for window in (True, False):
        monkeypatch.setattr(fixed_ops, "WINDOW", window)
        calls.clear()
        run = Run(g, fixed_ops.FIXED_OPS, "fixed-point")
        out[window] = (fixed_ops._loihi_neuron(run, node, a), run.stats["n"])
        if window:
            how = calls[0] if calls else "compare"
    return out[True], out[False], how


def _input(rng, hi, dtype=torch.float32, shape=(T, B) + SHAPE):
    return torch.as_tensor(rng.integers(-hi, hi + 1, shape)).to(dtype)


CASES = {   # name: (neuron parameters, largest |a|, expected to run over the window)
    "lif, dv 2048 (a power of two)": (dict(), 400, True),
    "IF (dv 0), saturating": (dict(dv=0, bias_exp=np.full(SHAPE, 7), bias_mant=np.full(SHAPE, 4000), vth=131071),
                              120_000, True),
    "dv 1234 (not a power of two)": (dict(dv=1234), 400, True),
    "dv per neuron, 0 to 4095": (dict(dv=np.array([0, 1, 2048, 3000, 4095] * 4).reshape(SHAPE)), 400, True),
    "memoryless threshold (dv 4095, vth 0)": (dict(dv=4095, vth=0, bias_mant=np.zeros(SHAPE, int)), 3, "compare"),
    "current wraps: integer steps": (dict(), 200_000, False),
    "current memory (du < 4095): integer steps": (dict(du=1000), 400, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_stock_lif_window_equals_integer_steps(name, monkeypatch):
    params, hi, windowed = CASES[name]
    rng = np.random.default_rng(len(name))
    node = _neuron(rng, **params)
    (s1, st1), (s2, st2), how = _run_both(node, _input(rng, hi), monkeypatch)
    assert how == windowed if isinstance(windowed, str) else (how in (torch.float32, torch.float64)) == windowed
    assert torch.equal(s1, s2) and st1 == st2
    assert 0 < int(s1.sum()) < s1.numel()                       # some neurons fire, not all
    if name.startswith("IF"):
        assert st1["voltage_saturations"] > 0                  # the clip was exercised
    if name.startswith("current wraps"):
        assert st1["current_wraps"] > 0


def test_an_int64_current_from_an_add_runs_over_the_window(monkeypatch):
    rng = np.random.default_rng(7)
    (s1, st1), (s2, st2), dtype = _run_both(_neuron(rng), _input(rng, 400, torch.int64), monkeypatch)
    assert dtype == torch.float32 and torch.equal(s1, s2) and st1 == st2 and int(s1.sum()) > 0


def _gains(rng, uniform, hi=2048):
    g = rng.integers(0, hi, (T,) + (1,) * len(SHAPE)) if uniform else rng.integers(0, hi, (T,) + SHAPE)
    return np.broadcast_to(g, (T,) + SHAPE).copy()


GAIN_CASES = {
    "gains per step (one per step), float32": dict(gain_uniform=True, small=True),
    "gains per neuron, rectified, on the bias, reset to the threshold": dict(rectify=True, gain_on_bias=True,
                                                                              reset=True),
    "offsets and a step bias, dv per neuron": dict(offset=True, step_bias=True, dv_per_neuron=True),
    "a plain group and a further gained group": dict(plain=True, more=True),
    "gains too wide for float32": dict(gain_uniform=True, big=True),
}


@pytest.mark.parametrize("name", list(GAIN_CASES))
def test_gain_scheduled_window_equals_integer_steps(name, monkeypatch):
    c = GAIN_CASES[name]
    rng = np.random.default_rng(len(name) + 100)
    shift = 11
    params = dict(gain_mant=_gains(rng, c.get("gain_uniform"), 1 << 20 if c.get("big") else 2048), gain_shift=shift,
                  rectify=bool(c.get("rectify")), gain_on_bias=bool(c.get("gain_on_bias")))
    if c.get("reset"):
        params["v_reset"] = 64 * 100
    if c.get("small"):
        params["vth"] = 30
    if c.get("offset"):
        params["offset"] = rng.integers(-2000, 2000, (T,) + SHAPE)
    if c.get("step_bias"):
        params["step_bias"] = rng.integers(-500, 500, SHAPE)
    if c.get("dv_per_neuron"):
        params["dv"] = rng.integers(0, 4096, SHAPE)
    if c.get("plain"):
        params["plain_bias"] = rng.integers(-300, 300, SHAPE)
    if c.get("more"):
        params.update(more_gain_mant=rng.integers(0, 4096, (1, T) + SHAPE), more_gain_shift=(12,), more_rectify=(True,),
                      more_bias=rng.integers(-300, 300, (1,) + SHAPE))
    node = _neuron(rng, **params)
    a = _input(rng, 100 if c.get("small") else 600)
    if c.get("plain") or c.get("more"):
        a = Split(a, _input(rng, 300) if c.get("plain") else None, ((0, _input(rng, 300)),) if c.get("more") else ())
    (s1, st1), (s2, st2), dtype = _run_both(node, a, monkeypatch)
    assert dtype == (torch.float32 if c.get("small") else torch.float64)    # 64 a g reaches 2**24 but for "small"
    assert torch.equal(s1, s2) and st1 == st2
    assert 0 < int(s1.sum()) < s1.numel()


def test_the_window_dtype_follows_the_bounds():
    assert voltage.window_dtype(1000, 2048, 20, 0) == torch.float32
    assert voltage.window_dtype(1000, 3001, 20, 0) == torch.float32           # v * 3001 stays below 2**24
    assert voltage.window_dtype(2 ** 22, 3001, 20, 0) == torch.float64        # ... not here
    assert voltage.window_dtype(2 ** 22, 2048, 20, 0, at_least=torch.float64) == torch.float64
    assert voltage.window_dtype(2 ** 60, 2048, 20, 0) is None
    raw, post, clips = voltage.window_bounds(2 ** 22, 4096, 3, 0)             # IF: the voltage adds up, then clips
    assert clips and post == voltage.CLIP and raw == voltage.CLIP + 2 ** 22
    assert voltage.window_bounds(100, 2048, 50, 0) == (199, 199, False)       # 100 + 99 + 49 + ... truncated


@pytest.mark.parametrize("per_neuron", [False, True])
def test_a_gained_input_float32_would_round_is_exact(per_neuron, monkeypatch):
    """64 a g = 5.19e9 is no float32; rounded, trunc(64 a g / 2**11) comes out one too high and the neuron would
    fire. The window code stays silent, as the integer steps do: with one gain per step it splits the product
    (float32), with gains per neuron it works in float64."""
    a, g, shift = 49270, 1645, 11
    exact = (64 * a * g) >> shift
    in_float32 = int(torch.div(torch.tensor(float(a)) * (64 * g), 1 << shift, rounding_mode="trunc"))
    assert in_float32 == exact + 1                               # what float32 would do
    vth = -(-exact // 64)
    bias = np.zeros(SHAPE, np.int64)
    bias.flat[0] = 64 * vth - exact                              # v = exact + bias = theta: no spike; one more fires
    gains = np.full((1,) + SHAPE, g)
    if per_neuron:
        gains.flat[1:] = np.arange(1, gains.size)
    node = LIF("n", SHAPE, SHAPE, fixed=LoihiNeuron(du=4095, dv=2048, vth=vth, bias_mant=bias,
                                                     bias_exp=np.zeros(SHAPE, np.int64), gain_mant=gains,
                                                     gain_shift=shift))
    x = torch.zeros((1, 1) + SHAPE)
    x.view(-1)[0] = a
    (s1, _), (s2, _), dtype = _run_both(node, x, monkeypatch)
    assert dtype == (torch.float64 if per_neuron else torch.float32)
    assert torch.equal(s1, s2) and not bool(s1.any())
