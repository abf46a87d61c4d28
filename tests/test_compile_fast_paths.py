"""The compile's fast paths give what the plain code gives, bit for bit (issue 16: compile speed at size).

- ``jsontext.dumps`` writes exactly ``json.dumps(indent=1, sort_keys=True)``'s text (graph.json, manifest.json);
- ``lower_pooling._times_pooling`` equals ``weight @ pooling_matrix(pool)`` in float64 bytes, signed zeros
  and subnormals included;
- ``formats.choose_vth`` picks the threshold the plain per-candidate error sum picks;
- ``map_cores.connections_per_neuron`` of a conv equals the count by a full convolution of ones.
"""
import json
import math

import numpy as np
import pytest

from neurocomp import jsontext
from neurocomp.fixedpoint import formats
from neurocomp.ir import AvgPool2d
from neurocomp.passes.lower_pooling import _times_pooling, pooling_matrix

_LEAVES = [None, True, False, 0, -3, 2 ** 70, 1.5, -0.0, 1e300, float("nan"), float("inf"), "", "a\nb\"{", "é",
           np.float64(0.1)]


def _tree(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.35:
        return _LEAVES[rng.integers(len(_LEAVES))]
    n = int(rng.integers(0, 4))
    if r < 0.6:
        return [_tree(rng, depth + 1) for _ in range(n)]
    if r < 0.7:
        return tuple(_tree(rng, depth + 1) for _ in range(n))
    if r < 0.9:
        return {f"k{int(rng.integers(9))}{i}": _tree(rng, depth + 1) for i in range(n)}
    return {i - 1: _tree(rng, depth + 1) for i in range(n)}       # int keys, written as strings


def _default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()                 # a container from default: indented like any other
    raise TypeError(type(o).__name__)


def test_jsontext_is_json_dumps_text():
    rng = np.random.default_rng(0)
    docs = [_tree(rng) for _ in range(400)]
    docs.append({"slices": [{"core": i, "chip": 0, "neurons": 8192} for i in range(50)], "x": [[], {}, [1, [2]]],
                 "arr": np.arange(3), "n": np.int64(4), "meta": {"a": np.int32(1), "b": [np.int64(2), 0.5]}})
    for doc in docs:
        for indent in (1, 2):
            assert jsontext.dumps(doc, indent=indent, default=_default) == \
                json.dumps(doc, indent=indent, sort_keys=True, default=_default)
        assert jsontext.dumps(doc, sort_keys=False, default=_default) == json.dumps(doc, indent=1, default=_default)
    for bad in ({1: 2, "a": 3}, {(1,): 2}, object(), [object()]):
        with pytest.raises(TypeError):
            json.dumps(bad, indent=1, sort_keys=True)
        with pytest.raises(TypeError):
            jsontext.dumps(bad)


@pytest.mark.parametrize("shape,k,ceil", [((3, 8, 8), 2, False), ((4, 7, 9), 2, False), ((4, 7, 9), 2, True),
                                          ((2, 9, 9), 3, False)])
def test_times_pooling_equals_the_dense_product(shape, k, ceil):
    C, H, W = shape
    Ho, Wo = (math.ceil(H / k), math.ceil(W / k)) if ceil else (H // k, W // k)
    pool = AvgPool2d(name="p", in_shape=shape, out_shape=(C, Ho, Wo), kernel=(k, k), stride=(k, k), padding=(0, 0))
    rng = np.random.default_rng(1)
    w = rng.normal(size=(9, C * Ho * Wo)).astype(np.float32)
    w[0, :5] = -0.0                       # signed zeros: BLAS's sum of zeros is +0
    w[1] = -1e-45                         # subnormals
    w[2] = -np.abs(w[2])                  # every product with a matrix zero is -0
    dense = w.astype(np.float64) @ pooling_matrix(pool)
    assert _times_pooling(w, pool).tobytes() == dense.tobytes()


def _choose_vth_plain(w, theta, wmax):
    """The threshold rule written plainly (one temporary per operation), as before the in-place loop."""
    m = float(np.max(np.abs(w)))
    vth_max = min(int(math.floor((wmax + 0.5 - 1e-9) / m * theta - 1.0 / 64)), formats.VTH_MAX)
    lo = max(0, int(math.ceil(0.75 * vth_max)))
    best, best_err = vth_max, None
    for vth in np.unique(np.linspace(lo, vth_max, num=min(64, vth_max - lo + 1)).round().astype(int))[::-1]:
        s = (vth + 1.0 / 64) / theta
        err = float(np.sum((w.astype(np.float64) * s - np.round(w.astype(np.float64) * s)) ** 2)) / s ** 2
        if best_err is None or err < best_err - 1e-15:
            best, best_err = int(vth), err
    return best


def test_rounding_error_sums_are_np_sum_of_the_whole_layer():
    """Summed block by block where numpy sums that way (numpy 1.x; numpy 2 takes the plain sums): the same floats."""
    rng = np.random.default_rng(3)
    for n in (5, 8192, 3 * 8192 + 77, 70000):
        w = rng.standard_normal(n) * 0.05
        scales = [(v + 1.0 / 64) / 0.8 for v in range(900, 920)]
        got = formats._rounding_error_sums(w, scales)
        assert [float(x) for x in got] == [float(np.sum((w * s - np.round(w * s)) ** 2)) for s in scales]


def test_choose_vth_matches_the_plain_rule():
    rng = np.random.default_rng(2)
    for i in range(30):
        w = rng.normal(size=(int(rng.integers(1, 60)), int(rng.integers(1, 40)))) * rng.uniform(1e-3, 3)
        if i % 10 == 0:
            w = rng.normal(size=(64, 520)) * rng.uniform(1e-3, 3)      # several of numpy's 8192-value blocks
        w = w.astype(np.float32) if i % 2 else w
        theta = float(rng.uniform(0.1, 2.0))
        assert formats.choose_vth(w, theta, 127) == _choose_vth_plain(w, theta, 127)


def test_conv_connection_counts_equal_the_full_convolution():
    """map_cores counts one channel's taps times the input channels; the full conv of ones counts them all."""

    import torch
    import torch.nn.functional as F

    from neurocomp.ir import Conv2d
    from neurocomp.passes.map_cores import connections_per_neuron
    for cin, groups, k, stride, pad, dil in ((2, 1, 3, 1, 1, 1), (4, 2, 3, 2, 0, 1), (4, 1, 3, 1, 1, 2), (2, 2, 1, 1, 0, 1),
                                            (4, 4, 3, 2, 1, 1)):
        H = 7
        Ho = (H + 2 * pad - dil * (k - 1) - 1) // stride + 1
        syn = Conv2d(name="c", in_shape=(cin, H, H), out_shape=(4, Ho, Ho), weight=np.ones((4, cin // groups, k, k),
                     np.float32), bias=None, stride=(stride, stride), padding=(pad, pad), dilation=(dil, dil),
                     groups=groups)
        full = F.conv2d(torch.ones((1, cin, H, H), dtype=torch.float64), torch.ones((4, cin // groups, k, k),
                        dtype=torch.float64), None, stride, pad, dil, groups)[0].round().to(torch.int64).numpy()
        got = connections_per_neuron(syn)
        assert got.dtype == np.int64 and got.shape == full.shape and np.array_equal(got, full)
