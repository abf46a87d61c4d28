"""The per-stage tables keyed by node class agree with each other (issue 13): every supported torch
leaf has a frontend reader, every float IR node class has a NIR writer, and what the NIR writer
writes, the NIR reader reads back as the same IR class."""
import numpy as np
import pytest

from neurocomp.backends import nir as nir_writer
from neurocomp.frontends import nir as nir_reader
from neurocomp.frontends.modules import EQUIVALENT, MODULES
from neurocomp.frontends.torch import LEAF_READERS, VANISH
from neurocomp.ir import NODE_TYPES, AvgPool2d, BatchNorm, Conv2d, Flatten, Input, LIF, Linear, MALIF, Scale, SumPool2d, Threshold
from neurocomp.metrics import EVENTS

QUANTIZED_ONLY = {"dense", "graded_spikes", "cuba_lif"}   # made by the passes; never in a float graph


def test_every_supported_torch_leaf_has_a_reader():
    shorts = {name.split(".")[-1] for name in MODULES}
    # clock_driven's classes are in MODULES only where SpikingJelly has that API (not in 2.x); their readers stay
    absent = {name.split(".")[-1] for name in EQUIVALENT} - shorts
    assert shorts - VANISH == set(LEAF_READERS) - absent
    assert {"Dropout", "Identity"} <= VANISH <= shorts | absent


def test_every_float_node_class_has_a_nir_writer():
    float_classes = {cls for kind, cls in NODE_TYPES.items() if kind not in QUANTIZED_ONLY}
    assert float_classes <= set(nir_writer.WRITERS), float_classes - set(nir_writer.WRITERS)


def test_every_synapse_class_has_an_event_counter():
    synapses = {cls for cls in NODE_TYPES.values() if getattr(cls, "is_synapse", False)}
    assert synapses <= set(EVENTS), synapses - set(EVENTS)


def _written_and_read(node, in_shape):
    nn = nir_writer.node_to_nir(node)
    return nir_reader._convert(node.name, nn, in_shape, dict(nn.metadata))


@pytest.mark.parametrize("node", [
    Conv2d(name="c", in_shape=(2, 4, 4), out_shape=(3, 4, 4), weight=np.ones((3, 2, 3, 3), np.float32),
           bias=None, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1),
    Linear(name="l", in_shape=(8,), out_shape=(3,), weight=np.ones((3, 8), np.float32), bias=np.zeros(3, np.float32)),
    BatchNorm(name="b", in_shape=(2, 4, 4), out_shape=(2, 4, 4), mean=np.zeros(2, np.float32),
              var=np.ones(2, np.float32), weight=None, bias=None, eps=1e-5),
    SumPool2d(name="s", in_shape=(2, 4, 4), out_shape=(2, 2, 2), kernel=(2, 2), stride=(2, 2), padding=(0, 0)),
    AvgPool2d(name="a", in_shape=(2, 4, 4), out_shape=(2, 2, 2), kernel=(2, 2), stride=(2, 2), padding=(0, 0)),
    Threshold(name="t", in_shape=(2, 4, 4), out_shape=(2, 4, 4), threshold=0.0),
    Flatten(name="f", in_shape=(2, 4, 4), out_shape=(32,)),
    Scale(name="m", in_shape=(2, 4, 4), out_shape=(2, 4, 4), scale=np.full((3, 2, 1, 1), 0.5, np.float32), rectify=False),
    LIF(name="n", in_shape=(8,), out_shape=(8,), tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0),
    LIF(name="i", in_shape=(8,), out_shape=(8,), tau=None, v_threshold=1.0, v_reset=None),
    MALIF(name="ma", in_shape=(8,), out_shape=(8,), v_threshold=1.0, alpha=0.5, beta=1.0),
], ids=lambda n: n.kind + ("_if" if getattr(n, "tau", 1) is None else ""))
def test_the_nir_reader_reads_back_what_the_writer_wrote(node):
    back = _written_and_read(node, tuple(node.in_shape))
    assert back is not None and len(back) == 1
    got = back[0]
    assert type(got) is type(node) and got.name == node.name and tuple(got.out_shape) == tuple(node.out_shape)
    for f in ("tau", "v_threshold", "v_reset", "alpha", "threshold", "kernel", "stride", "rectify"):
        if hasattr(node, f):
            assert getattr(got, f) == getattr(node, f), f


def test_a_nir_node_neurocomp_does_not_write_has_no_reader():
    import nir
    node = nir.Delay(delay=np.ones(3))
    assert nir_reader._convert("d", node, (3,), {}) is None
