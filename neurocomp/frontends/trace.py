"""A model with its own ``forward``, reduced by tracing to the chain of layers neurocomp compiles.

:func:`trace` runs the user's model once on an example input (the facts give its shape: ``T``
steps of ``input_shape``, two samples) and records what the forward does between the *leaves*:
the layers neurocomp reads (``frontends.modules.type_name``), SpikingJelly's per-step containers,
neurons of either API, ``neurocomp.nn`` modules and what ``frontends.official.recognise`` maps. The
result is an ``nn.Sequential`` of copies of those leaves, time-major (``[T, B, ...]``), with
``SeqToANNContainer`` around per-step torch layers, ``nn.Flatten(2)`` where the forward flattened,
a single-step neuron called once per step replaced by its multi-step equivalent, and
``neurocomp.nn.Readout()`` after a last non-spiking Linear: a description the safe checkpoint
stores, so nothing later needs the user's code. The forwards it reads:

- leaves called on ``[T, B, ...]`` (multi-step) or on ``[T*B, ...]`` (``x.flatten(0, 1)``,
  ``x.view(T * B, ...)``, back with ``.reshape(T, B, -1)`` / ``.view(T, B, ...)``);
- loops over time: ``y.append(self.net(x[t]))`` then ``torch.stack(y)`` (or ``out[t, ...] = ...`` into a
  ``torch.zeros`` tensor: torch does not route a plain ``out[t] = ...`` through the mode), and the accumulation ``out += self.net(x[t])`` ... ``out / T``;
- flattening of one sample (``x.flatten(2)``, ``x.view(T, B, -1)``, ``x.flatten(1)`` of a step);
  SpikingJelly's ``functional.seq_to_ann_forward`` / ``multi_step_forward`` (the same operations);
- the ``[B, T, ...]`` layout of MA-SNN's code (``x.permute(1, 0, ...)`` / ``transpose(0, 1)``, at the
  input or inside): :attr:`Traced.input_layout` records how the user calls the model, the chain is
  time-major;
- a mean or sum over time of the output (dropped when the last layer spikes: the class is the
  argmax of spike counts; a last Linear gets a ``Readout``); a layer applied after the mean that
  commutes with it (SpikingJelly's ``VotingLayer``, a Linear after a mean) moves into the chain.

Anything else (a residual ``x + y``, ``torch.cat``, a function neurocomp has no layer for, reading a
tensor's value for control flow, a layer called on a tensor the input does not lead to) is one
:class:`~neurocomp.errors.UnsupportedLayer` naming the operation, the user's ``file:line`` (the
innermost frame of the call outside torch, SpikingJelly and neurocomp) and what to do. A chain is all
this module reads: ``usercode.as_sequential`` then tries ``frontends.trace_graph``, which reads the
residual adds and concats into a ``GraphModule``.

Why concrete execution and not ``torch.fx``: fx traces symbolically, so ``for t in range(x.shape[0])``
(the loop over time every SNN forward has) and ``T, B = x.shape[:2]`` are proxies it cannot iterate
or compare; with a concrete T it would unroll the loop anyway, but still cannot see through Python
``list.append`` / ``sum``, and it refuses stateful single-step neurons called T times as one node.
Running the forward on a real input sees exactly what runs: leaves through forward hooks, the
tensor operations between them through a ``torch.overrides.TorchFunctionMode``, dataflow by tensor
identity (an integer index ``x[t]``, which torch does not route through the mode, is recognised as a
view of a traced tensor by its storage geometry). Which of the input's first two axes is time is
known only from what the forward does with them (a neuron iterates over its input's axis 0); the
trace assumes ``[T, B, ...]`` and runs again as ``[B, T, ...]`` when the forward says otherwise. The
reduced chain is then run on a fresh input and must give the user's output, or the trace is refused.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import warnings
import weakref

import torch
import torch.nn as tnn
from torch.overrides import TorchFunctionMode

from neurocomp.errors import NeurocompError, UnsupportedLayer
from neurocomp.frontends.modules import MODULES, PER_STEP_CONTAINERS, cd_base, cd_neuron, is_library_layer, type_name
from neurocomp.frontends.torch import _set_backend, reset_state, run_torch_model

from spikingjelly.activation_based import base as ab_base, layer as ab_layer  # noqa: E402

_LIBRARIES = tuple(os.path.dirname(os.path.realpath(m.__file__)) + os.sep
                   for m in (torch, sys.modules["spikingjelly"], sys.modules["neurocomp"]))
_IDENTITY_CLASSES = (tnn.Dropout, tnn.Identity, ab_layer.Dropout)
# single-step neurons called once per step -> the table entry of their multi-step equivalent
_SINGLE_STEP = {} if cd_neuron is None else {
    cd_neuron.LIFNode: "spikingjelly.LIFNode", cd_neuron.IFNode: "spikingjelly.IFNode",
    cd_neuron.ParametricLIFNode: "spikingjelly.ParametricLIFNode"}
_MEMORY_MODULES = (ab_base.MemoryModule,) + (() if cd_base is None else (cd_base.MemoryModule,))
_DATA_READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy", "__array__",
               "__complex__", "any", "all", "nonzero", "equal"}
_SUSPEND = {"__repr__", "__str__", "__format__"}   # printing in a forward: harmless
_SAME = {"contiguous", "clone", "detach", "float", "to", "type_as", "cpu", "cuda", "type", "requires_grad_",
         "detach_", "__deepcopy__"}
CHAIN_HINT = "write forward as a chain of supported layers (README 'Supported layers')"


class _LayoutMismatch(Exception):
    """The forward treats the input's axis 1 as time: trace again with a [B, T, ...] input."""


# ---- what a traced tensor is, relative to the chain ---------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Seq:
    """A whole stream ``k`` (the chain's output after ``k`` entries, time-major), laid out with
    leading ``axes`` (``("T", "B")``, ``("B", "T")``, or one merged pair ``(("T", "B"),)``)."""
    stream: int
    axes: tuple
    feat: tuple


@dataclasses.dataclass(frozen=True)
class Step:
    """Step ``t`` of stream ``k`` (``[B, ...]``)."""
    stream: int
    t: int
    feat: tuple


@dataclasses.dataclass(frozen=True)
class Acc:
    """``scale`` times the sum over the time ``steps`` of stream ``k`` (``[B, ...]``)."""
    stream: int
    steps: frozenset
    scale: float
    feat: tuple


@dataclasses.dataclass(frozen=True)
class Fill:
    """A preallocated tensor whose ``steps`` along ``axis`` (0 or 1) hold steps of stream ``k``."""
    stream: int
    axis: int
    steps: frozenset
    feat: tuple


@dataclasses.dataclass(frozen=True)
class _Opaque:
    """The result of an operation neurocomp cannot compile: refused (``error``) once something uses it."""
    error: object


@dataclasses.dataclass
class _Stream:
    feat: tuple
    produced: int          # steps computed so far (T for a whole stream)


@dataclasses.dataclass
class _Entry:
    kind: str              # "leaf", "flatten", "readout"
    module: object = None
    mode: str = "whole"    # "whole": called on [T, B, ...]; "step": one step / [T*B, ...] at a time
    path: str = ""


@dataclasses.dataclass
class Traced:
    """The result of :func:`trace`.

    ``sequential`` (time-major) computes the user's model: called on ``x`` ``[T, B, ...]`` it gives
    ``user(x)`` when ``input_layout == "TB"``, ``user(x.transpose(0, 1))`` when ``"BT"``; its output,
    transposed when ``output_layout == "BT"`` (flattened to ``[T*B, ...]`` when ``"T*B"``), then
    summed or averaged over dim 0 as ``reduction`` says (``None``, ``"sum"``, ``"mean"``), is the
    user's output. ``readout``: a ``neurocomp.nn.Readout`` was appended (the last layer is a Linear)."""
    sequential: tnn.Sequential
    input_layout: str
    output_layout: str
    reduction: str | None
    readout: bool
    sources: dict = dataclasses.field(default_factory=dict)   # chain child name -> the user's module path

    def user_output(self, y):
        """The user's model's output, from the chain's output ``y`` ``[T, B, ...]``."""
        if self.output_layout == "BT":
            y = y.transpose(0, 1)
        elif self.output_layout == "T*B":
            y = y.flatten(0, 1)
        if self.reduction == "sum":
            return y.sum(0)
        if self.reduction == "mean":
            return y.mean(0)
        return y

    def record(self) -> dict:
        return {"input_layout": self.input_layout, "output_layout": self.output_layout,
                "reduction": self.reduction, "readout": self.readout}


# ---- where in the user's code ---------------------------------------------------------------------------
def _user_frame():
    """The innermost frame outside torch, SpikingJelly and neurocomp (the user's forward)."""
    f = sys._getframe(1)
    while f is not None:
        name = os.path.realpath(f.f_code.co_filename)
        if not name.startswith(_LIBRARIES) and not f.f_code.co_filename.startswith("<"):
            return f
        f = f.f_back
    return None


def _at(frame=None) -> str:
    frame = frame or _user_frame()
    if frame is None:
        return "forward"
    code = frame.f_code
    owner = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
    owner = owner if isinstance(owner, tnn.Module) else None
    fn = f"{type(owner).__name__}.{frame.f_code.co_name}" if owner is not None else frame.f_code.co_name
    return f"{fn} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})"


def _refuse(what, hint=CHAIN_HINT, frame=None):
    raise UnsupportedLayer(f"{_at(frame)} {what}", where=None, hint=hint)


# ---- the leaves ---------------------------------------------------------------------------------------------
def _stateful(m) -> bool:
    return any(isinstance(x, _MEMORY_MODULES) or type(x).__module__.startswith("neurocomp.nn")
               for x in m.modules())


def _is_voting(m) -> bool:
    return type(m) is ab_layer.VotingLayer


def leaf_kind(m, path="model"):
    """``(kind, replacement)`` of a module met in a traced forward, or ``None`` to trace through it.

    Kinds: ``identity`` (dropout, identity), ``flatten`` (read as a reshape), ``per_sample`` (a
    stateless layer called the single-step way: plain torch, SpikingJelly ``step_mode='s'``),
    ``per_step_m`` (a stateless multi-step layer: SpikingJelly ``'m'``, a per-step container of
    stateless layers), ``single_step_neuron``, ``multi`` (a layer that runs over time: multi-step
    neurons, containers holding neurons, ``neurocomp.nn`` modules), ``recognised`` (an official
    class mapped to ``replacement``), ``unsupported`` (a library module neurocomp has no layer for)."""
    from neurocomp.frontends.official import recognise
    cls = type(m)
    name = type_name(m)
    if isinstance(m, PER_STEP_CONTAINERS):
        return ("multi" if _stateful(m) else "per_step_m"), None
    if cls in _IDENTITY_CLASSES or (name or "").endswith("Dropout"):
        return "identity", None
    if cls in (tnn.Flatten, ab_layer.Flatten):
        return "flatten", None
    if cls in _SINGLE_STEP:
        return "single_step_neuron", None
    if name is not None or _is_voting(m):
        if name is not None and name.startswith("neurocomp.nn."):
            return "multi", None
        if _stateful(m):
            mode = getattr(m, "step_mode", "m")
            return ("single_step_neuron" if mode == "s" else "multi"), None
        return ("per_step_m" if getattr(m, "step_mode", "s") == "m" else "per_sample"), None
    known = recognise(m, path)
    if known is not None:
        return "recognised", known
    if type(m) in (tnn.Sequential, tnn.ModuleList, tnn.ModuleDict) or not is_library_layer(m):
        return None
    return "unsupported", None


def _multi_step_copy(m):
    """A copy of ``m`` that runs on ``[T, B, ...]`` as ``m`` runs once per step."""
    if type(m) in _SINGLE_STEP:
        _, read, make = MODULES[_SINGLE_STEP[type(m)]]
        new = make(read(m), "m")
        new.load_state_dict(m.state_dict(), strict=True)
        return new
    new = copy.deepcopy(m)
    if hasattr(new, "step_mode"):
        new.step_mode = "m"
        return new
    return ab_layer.SeqToANNContainer(new)          # a plain torch layer: T folded into the batch


def _whole_copy(m):
    """A copy of ``m`` called on ``[T, B, ...]`` (a plain torch Linear broadcasts over T: fold it)."""
    if not hasattr(m, "step_mode") and type(m).__module__.startswith("torch.") and not isinstance(m, tnn.Sequential):
        return ab_layer.SeqToANNContainer(copy.deepcopy(m))
    return copy.deepcopy(m)


# ---- the tracer ------------------------------------------------------------------------------------------------
def _prod(shape) -> int:
    return int(math.prod(shape))


def _names(func) -> str:
    n = getattr(func, "__name__", str(func))
    if n == "__get__":
        n = "get:" + getattr(getattr(func, "__self__", None), "__name__", "?")
    return n


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class _Tracer(TorchFunctionMode):
    def __init__(self, model, input_shape, T, B, layout):
        super().__init__()
        self.model, self.T, self.B, self.layout = model, int(T), int(B), layout
        self.input_shape = tuple(int(s) for s in input_shape)
        self.values: dict = {}
        self.streams = [_Stream(self.input_shape, self.T)]
        self.chain: list[_Entry] = []
        self.next_of: dict = {}
        self.calls: list = []
        self.suspended = 0
        self.paths = {}
        self.kinds = {}

    # values by tensor identity (an entry goes when its tensor does)
    def put(self, t, v):
        key = id(t)
        self.values[key] = (weakref.ref(t, lambda _r, k=key: self.values.pop(k, None)), v)

    def get(self, t):
        v = self.lookup(t)
        if isinstance(v, _Opaque):
            raise v.error
        return v

    def lookup(self, t):
        got = self.values.get(id(t))
        if got is not None and got[0]() is t:
            v = got[1]
            if isinstance(v, Fill) and len(v.steps) == self.T:
                return Seq(v.stream, ("T", "B") if v.axis == 0 else ("B", "T"), v.feat)
            return v
        return self._as_step_view(t)

    def _as_step_view(self, u):
        """``u`` is ``w[t]`` of a traced whole stream ``w`` (an integer index bypasses the mode)."""
        if u._base is None:
            return None
        ptr = u.untyped_storage().data_ptr()
        for ref, v in list(self.values.values()):
            w = ref()
            if w is None or not isinstance(v, Seq) or len(v.axes) != 2 or w.dim() != u.dim() + 1:
                continue
            if w.untyped_storage().data_ptr() != ptr or tuple(u.shape) != tuple(w.shape[1:]) \
                    or tuple(u.stride()) != tuple(w.stride()[1:]) or w.stride(0) == 0:
                continue
            d = u.storage_offset() - w.storage_offset()
            if d % w.stride(0) == 0 and 0 <= d // w.stride(0) < w.shape[0]:
                return self._index(v, 0, d // w.stride(0))
        return None

    def bind_time(self, label):
        if label != "T":
            raise _LayoutMismatch(_at())

    # ---- the chain
    def extend(self, k, feat, entry_key, make_entry, out_feat, step=None):
        """The stream after applying an entry to stream ``k`` (seen with per-sample shape ``feat``):
        created at the chain's end, or (a loop over time) the one this entry made before."""
        if tuple(feat) != tuple(self.streams[k].feat):
            if tuple(feat) != (_prod(self.streams[k].feat),):
                _refuse(f"reshapes one sample from {tuple(self.streams[k].feat)} to {tuple(feat)}",
                        "flatten a sample whole (x.flatten(2) on [T, B, ...]) or keep its shape")
            k = self.extend(k, self.streams[k].feat, ("flatten",), lambda: _Entry("flatten"), tuple(feat))
        if k in self.next_of:
            key, out = self.next_of[k]
            if key != entry_key:
                first, now = self._entry_name(key), self._entry_name(entry_key)
                _refuse(f"uses {self._stream_name(k)} a second time, for {now} (it fed {first} "
                        "before): a branch or skip connection, which neurocomp does not compile yet",
                        "compile a chain: each layer's output feeds the next layer only")
            if step is not None and entry_key[0] != "flatten":
                if step != self.streams[out].produced:
                    _refuse(f"calls {self._entry_name(entry_key)} on step {step} after step "
                            f"{self.streams[out].produced - 1}", "loop over the time steps in order, once")
                self.streams[out].produced += 1
            elif step is None and entry_key[0] != "flatten":
                _refuse(f"calls {self._entry_name(entry_key)} twice", "call each layer once per step")
            return out
        if step not in (None, 0):
            _refuse(f"starts calling {self._entry_name(entry_key)} at time step {step}",
                    "loop over every time step from 0")
        self.chain.append(make_entry())
        self.streams.append(_Stream(tuple(out_feat), 1 if step is not None else self.T))
        out = len(self.streams) - 1
        self.next_of[k] = (entry_key, out)
        return out

    def _entry_name(self, key):
        if key[0] == "flatten":
            return "a flatten"
        return f"layer '{self.paths.get(key[1], '?')}'"

    def _stream_name(self, k):
        return "the input" if k == 0 else ("the output of a flatten" if self.chain[k - 1].kind == "flatten"
                                           else f"the output of layer '{self.chain[k - 1].path}'")

    # ---- leaves
    def pre_hook(self, module, args, kwargs):
        self.suspended += 1
        try:
            self._pre_hook(module, args, kwargs)
        finally:
            self.suspended -= 1

    def post_hook(self, module, args, kwargs, output):
        self.suspended += 1
        try:
            self._post_hook(module, args, kwargs, output)
        finally:
            self.suspended -= 1

    def _pre_hook(self, module, args, kwargs):
        if self.suspended > 1 or any(c[0] for c in self.calls):      # inside a leaf: not ours
            self.calls.append((False, None))
            return None
        kind, repl = self.kinds[id(module)]
        path = self.paths[id(module)]
        if kind == "unsupported":
            _refuse(f"calls '{path}' ({type(module).__name__}), a layer neurocomp does not compile",
                    "use the supported layers (README 'Supported layers') or neurocomp.nn modules")
        xs = [a for a in args if torch.is_tensor(a)]
        if len(args) != 1 or len(xs) != 1 or kwargs:
            _refuse(f"calls layer '{path}' with {len(args) + len(kwargs)} arguments",
                    "call each layer on one tensor")
        v = self.get(xs[0])
        if v is None:
            _refuse(f"calls layer '{path}' on a tensor that does not come from the model's input",
                    "compute every layer's input from the input x; time steps written with out[t] = ... are not "
                    "seen: collect them in a list and torch.stack it (or write out[t, ...] = ...)")
        if kind == "multi" and isinstance(v, Seq) and len(v.axes) == 2:
            self.bind_time(v.axes[0])                 # it runs over its input's axis 0: that is time
        self.calls.append((True, (v, xs[0], _user_frame())))
        return None

    def _post_hook(self, module, args, kwargs, output):
        mine, info = self.calls.pop()
        if not mine:
            return None
        v, x, frame = info
        if not torch.is_tensor(output):
            _refuse(f"gets a {type(output).__name__} from layer '{self.paths[id(module)]}'", frame=frame)
        self.put(output, self.apply_leaf(module, v, x, output, frame))
        return None

    def apply_leaf(self, m, v, x, y, frame):
        kind, repl = self.kinds[id(m)]
        path = self.paths[id(m)]
        name = f"layer '{path}' ({type(m).__name__})"
        if kind == "recognised" and not (type_name(repl) or "neurocomp.nn.").startswith("neurocomp.nn.") \
                and not _stateful(repl):
            m = repl                                    # mapped onto one stateless library layer (the TCJA
            kind, _ = leaf_kind(repl, path)             # code's own VotingLayer): traced as that layer
        key = ("leaf", id(m))
        if kind == "identity":
            return v
        if kind == "flatten":
            start, end = m.start_dim, m.end_dim
            if type(m) is ab_layer.Flatten and m.step_mode == "m":
                start, end = start + 1, (end + 1 if end >= 0 else end)
            return self.flatten(v, x, start, end, y, frame)
        if kind in ("per_sample", "single_step_neuron"):
            entry = lambda: _Entry("leaf", m, "step", path)  # noqa: E731
            if isinstance(v, Step):
                return Step(self.extend(v.stream, v.feat, key, entry, y.shape[1:], step=v.t), v.t, tuple(y.shape[1:]))
            if kind == "single_step_neuron":
                what = "on [T, B, ...] at once" if isinstance(v, Seq) and len(v.axes) == 2 else \
                    ("on [T*B, ...] (time folded into the batch)" if isinstance(v, Seq) else "on a sum over time")
                _refuse(f"calls the single-step neuron {name} {what}: it would see one time step",
                        "call it once per time step (x[t]) or use its multi-step version (step_mode='m', "
                        "clock_driven MultiStepLIFNode)", frame)
            if isinstance(v, Seq) and len(v.axes) == 1:
                return Seq(self.extend(v.stream, v.feat, key, entry, y.shape[1:]), v.axes, tuple(y.shape[1:]))
            if isinstance(v, Seq) and type(m) in (tnn.Linear, ab_layer.Linear):
                return Seq(self.extend(v.stream, v.feat, key, entry, y.shape[2:]), v.axes, tuple(y.shape[2:]))
            if isinstance(v, Acc):
                return self._after_reduction(m, v, key, entry, y, name, frame)
            _refuse(f"calls the per-step layer {name} on the whole [T, B, ...] sequence",
                    "fold time into the batch first (x.flatten(0, 1)) or wrap it in SeqToANNContainer", frame)
        if kind == "per_step_m" or kind in ("multi", "recognised"):
            if not (isinstance(v, Seq) and len(v.axes) == 2):
                what = "one time step" if isinstance(v, Step) else \
                    ("[T*B, ...]" if isinstance(v, Seq) else "a sum over time")
                _refuse(f"calls the multi-step {name} on {what}; it needs [T, B, ...]",
                        "call it on the whole sequence", frame)
            if kind == "recognised":
                return self._recognised(m, repl, v, x, y, path, frame)
            if kind == "multi":
                self.bind_time(v.axes[0])
            entry = lambda: _Entry("leaf", m, "whole", path)  # noqa: E731
            return Seq(self.extend(v.stream, v.feat, key, entry, y.shape[2:]), v.axes, tuple(y.shape[2:]))
        _refuse(f"calls {name}", frame=frame)  # pragma: no cover

    def _after_reduction(self, m, v, key, entry, y, name, frame):
        """A layer after a sum/mean over time moves before it when it commutes with it."""
        if len(v.steps) != self.T:
            _refuse(f"calls {name} on a sum of {len(v.steps)} of the {self.T} time steps", frame=frame)
        mean = abs(v.scale * self.T - 1) < 1e-9
        ok = _is_voting(m) or (type(m) in (tnn.Linear, ab_layer.Linear) and (m.bias is None or mean))
        if not ok:
            _refuse(f"calls {name} on the {'mean' if mean else 'sum'} over time of the output, which it does "
                    "not commute with", "apply the layer to each time step, then take the mean over time", frame)
        out = self.extend(v.stream, v.feat, key, entry, y.shape[1:])
        return Acc(out, v.steps, v.scale, tuple(y.shape[1:]))

    def _recognised(self, m, repl, v, x, y, path, frame):
        """An official class: its neurocomp equivalent (time-major) must give its output with the axes as
        traced; given with the axes swapped, the forward's time is the other axis. Checked on the
        traced input and on a dense probe of its shape (spikes alone may leave both readings silent)."""
        canon = (lambda t: t) if v.axes == ("T", "B") else (lambda t: t.transpose(0, 1))
        swap = (lambda t: t.transpose(0, 1)) if v.axes == ("T", "B") else (lambda t: t)
        gen = torch.Generator().manual_seed(0)
        probe = (torch.rand(x.shape, generator=gen) * 3).to(x.device)
        reset_state(m)
        try:
            cases = [(x, y), (probe, m(probe))]
        finally:
            reset_state(m)

        def same(to, xi, yi):
            try:
                got = run_torch_model(repl, to(xi).contiguous())
            except Exception:  # noqa: BLE001 - a shape that does not fit: not this layout
                return False
            want = to(yi)
            return torch.is_tensor(got) and got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)
        if not all(same(canon, xi, yi) for xi, yi in cases):
            if all(same(swap, xi, yi) for xi, yi in cases):
                raise _LayoutMismatch(_at(frame))
            _refuse(f"calls '{path}' ({type(m).__name__}), whose neurocomp equivalent does not reproduce it here",
                    "report this; meanwhile rebuild the layer with neurocomp.nn modules", frame)
        entry = lambda: _Entry("leaf", repl, "whole", path)  # noqa: E731
        return Seq(self.extend(v.stream, v.feat, ("leaf", id(m)), entry, y.shape[2:]), v.axes, tuple(y.shape[2:]))

    # ---- operations between the leaves
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.suspended or any(c[0] for c in self.calls):
            return func(*args, **kwargs)
        name = _names(func)
        if name in _SUSPEND:
            self.suspended += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.suspended -= 1
        raws = [self.lookup(t) for t in _tensors((args, kwargs))]
        traced = [r for r in raws if r is not None]
        if name in _DATA_READS and traced:
            _refuse(f"reads a tensor's value ({name}): data-dependent control flow",
                    "write forward without reading tensor values (no `if x.sum() > 0`, no .item())")
        opaque = next((r for r in traced if isinstance(r, _Opaque)), None)
        if name == "__setitem__" and traced:
            if opaque is not None:
                raise opaque.error
            self.setitem(args)
            return func(*args, **kwargs)
        result = func(*args, **kwargs)
        outs = list(_tensors(result))
        if not traced or not outs:
            return result                # constants (torch.zeros, ...), sizes (x.shape, x.dim())
        if opaque is None:
            try:
                self.op(name, args, kwargs, result)
                return result
            except UnsupportedLayer as e:    # refused when used: dead code is harmless
                opaque = _Opaque(e)
        for o in outs:
            self.put(o, opaque)
        return result

    def op(self, name, args, kwargs, result):
        x = args[0] if args and torch.is_tensor(args[0]) else None
        v = self.get(x) if x is not None else None
        if name in _SAME and v is not None and torch.is_tensor(result):
            if result.shape != x.shape or result.dtype != x.dtype:
                _refuse(f"converts a tensor with .{name}() to {result.dtype}", "keep the tensors float32")
            self.put(result, v)
            return
        if name == "flatten" and v is not None:
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            self.put(result, self.flatten(v, x, start, end, result))
            return
        if name in ("view", "reshape") and v is not None:
            self.put(result, self.reshape(v, x, tuple(result.shape)))
            return
        if name in ("permute", "transpose", "swapaxes", "swapdims") and v is not None:
            self.put(result, self.permute(name, v, x, args[1:], kwargs))
            return
        if name == "__getitem__" and v is not None:
            self.put(result, self.getitem(v, x, args[1]))
            return
        if name == "select" and v is not None:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            index = kwargs.get("index", args[2] if len(args) > 2 else None)
            self.put(result, self._index(v, int(dim) % x.dim(), int(index)))
            return
        if name == "unbind" and v is not None:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % x.dim()
            for t, r in enumerate(result):
                self.put(r, self._index(v, dim, t))
            return
        if name == "stack":
            self.put(result, self.stack(args[0], kwargs.get("dim", args[1] if len(args) > 1 else 0)))
            return
        if name in ("add", "add_", "__add__", "__radd__", "__iadd__"):
            self.put(result, self.add(args, kwargs))
            return
        if name in ("div", "div_", "true_divide", "__truediv__", "__itruediv__", "mul", "mul_", "__mul__",
                    "__rmul__", "__imul__"):
            self.put(result, self.scale(name, args, kwargs))
            return
        if name in ("mean", "sum") and v is not None:
            self.put(result, self.reduce(name, v, x, args[1:], kwargs))
            return
        self.unsupported(name, args)

    def unsupported(self, name, args):
        if name in ("cat", "concat", "concatenate", "hstack", "vstack"):
            _refuse(f"joins tensors with torch.{name}: a branch, which neurocomp does not compile",
                    "compile a chain: each layer's output feeds the next layer only")
        if name in ("sub", "__sub__", "__rsub__", "mul", "__mul__"):
            _refuse(f"combines two layers' outputs ({name})", "compile a chain; for attention use neurocomp.nn "
                                                               "modules (TCJA, TCSA, ...)")
        _refuse(f"applies {name}, which neurocomp has no layer for",
                "use a supported layer module for it (README 'Supported layers'), or remove it")

    def _index(self, v, dim, t):
        if not (isinstance(v, Seq) and len(v.axes) == 2 and dim in (0, 1)):
            _refuse("indexes a tensor other than along its time axis", "index [T, B, ...] tensors as x[t]")
        self.bind_time(v.axes[dim])
        if not 0 <= t < self.T:
            _refuse(f"indexes time step {t} of {self.T}")
        return Step(v.stream, t if t >= 0 else t + self.T, v.feat)

    def getitem(self, v, x, idx):
        if isinstance(idx, tuple) and idx and idx[-1] is Ellipsis:
            idx = idx[:-1]
        if isinstance(idx, tuple) and len(idx) == 1:
            idx = idx[0]
        if isinstance(idx, int) and not isinstance(idx, bool):
            return self._index(v, 0, idx % x.shape[0])
        if isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None) and isinstance(idx[1], int):
            return self._index(v, 1, idx[1] % x.shape[1])
        _refuse(f"indexes a tensor with [{idx!r}]", "index time steps only: x[t] on [T, B, ...], x[:, t] on [B, T, ...]")

    def setitem(self, args):
        out, idx, val = args[0], args[1], args[2]
        vv = self.get(val) if torch.is_tensor(val) else None
        if isinstance(idx, tuple) and idx and idx[-1] is Ellipsis:
            idx = idx[:-1]
        if isinstance(idx, tuple) and len(idx) == 1:
            idx = idx[0]
        axis, t = (0, idx) if isinstance(idx, int) else \
            ((1, idx[1]) if isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None)
             and isinstance(idx[1], int) else (None, None))
        cur = self.values.get(id(out))
        cur = cur[1] if cur is not None and cur[0]() is out else None
        if not isinstance(vv, Step) or axis is None or not (cur is None or isinstance(cur, Fill)):
            _refuse("writes into a tensor in place", "collect the steps in a list and torch.stack them")
        if cur is None:
            if out.dim() != len(vv.feat) + 2 or out.shape[axis] != self.T:
                _refuse(f"writes time steps into a tensor of shape {tuple(out.shape)}",
                        "write out[t] = step t into a [T, B, ...] tensor")
            cur = Fill(vv.stream, axis, frozenset(), vv.feat)
        if cur.stream != vv.stream or vv.t in cur.steps or t % self.T != vv.t:
            _refuse(f"writes step {vv.t} of a layer's output to position {t}", "write out[t] = step t, once each")
        self.put(out, Fill(cur.stream, axis, cur.steps | {vv.t}, cur.feat))

    def flatten(self, v, x, start, end, y, frame=None):
        nd = x.dim()
        start, end = start % nd, end % nd
        if isinstance(v, Seq) and len(v.axes) == 2 and (start, end) == (0, 1):
            return Seq(v.stream, (tuple(v.axes),), v.feat)
        lead = 2 if isinstance(v, Seq) and len(v.axes) == 2 else 1
        if (start == lead and end == nd - 1) or start == end:
            return dataclasses.replace(v, feat=tuple(y.shape[lead:]))
        if start < lead:
            _refuse(f"flattens dims {start}..{end} of a {self._layout_name(v)} tensor, mixing the batch or time "
                    "into the features", "flatten a sample only: x.flatten(2) on [T, B, ...], x.flatten(1) on a step",
                    frame)
        _refuse(f"flattens dims {start}..{end} (part of a sample)", "flatten a sample whole", frame)

    def _layout_name(self, v):
        if isinstance(v, Seq):
            return "[" + ", ".join("*".join(a) if isinstance(a, tuple) else a for a in v.axes) + ", ...]"
        return "[B, ...]"

    def reshape(self, v, x, shape):
        if isinstance(v, Fill):
            _refuse("reshapes a tensor before all time steps are written into it")
        if isinstance(v, Seq) and len(v.axes) == 2:
            a, b = x.shape[0], x.shape[1]
            if shape[:2] == (a, b):
                return self._feat(v, shape[2:])
            if shape[:1] == (a * b,):
                return Seq(v.stream, (tuple(v.axes),), self._feat(v, shape[1:]).feat)
        elif isinstance(v, Seq):
            a, b = (self.T, self.B) if v.axes[0] == ("T", "B") else (self.B, self.T)
            if shape[:2] == (a, b):
                return Seq(v.stream, tuple(v.axes[0]), self._feat(v, shape[2:]).feat)
            if shape[:1] == (a * b,):
                return self._feat(v, shape[1:])
        elif shape[:1] == (x.shape[0],):
            return self._feat(v, shape[1:])
        _refuse(f"reshapes a {self._layout_name(v)} tensor of shape {tuple(x.shape)} to {shape}",
                "reshape between [T, B, ...] and [T*B, ...] or flatten a sample only")

    def _feat(self, v, feat):
        base = self.streams[v.stream].feat
        if tuple(feat) not in (tuple(base), (_prod(base),)) and tuple(feat) != tuple(v.feat):
            _refuse(f"reshapes one sample from {tuple(v.feat)} to {tuple(feat)}",
                    "flatten a sample whole (x.flatten(2), x.view(T, B, -1)) or keep its shape")
        return dataclasses.replace(v, feat=tuple(feat))

    def permute(self, name, v, x, rest, kwargs):
        if name == "permute":
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
            dims = tuple(int(d) % x.dim() for d in kwargs.get("dims", dims))
        else:
            d0 = kwargs.get("dim0", rest[0] if rest else None)
            d1 = kwargs.get("dim1", rest[1] if len(rest) > 1 else None)
            dims = list(range(x.dim()))
            dims[int(d0) % x.dim()], dims[int(d1) % x.dim()] = dims[int(d1) % x.dim()], dims[int(d0) % x.dim()]
            dims = tuple(dims)
        if dims == tuple(range(x.dim())):
            return v
        if isinstance(v, Seq) and len(v.axes) == 2 and dims[:2] == (1, 0) and dims[2:] == tuple(range(2, x.dim())):
            return Seq(v.stream, (v.axes[1], v.axes[0]), v.feat)
        _refuse(f"permutes the dims of a {self._layout_name(v)} tensor as {dims}",
                "only swap time and batch (x.transpose(0, 1)); keep a sample's dims in order")

    def stack(self, items, dim):
        vals = [self.get(t) if torch.is_tensor(t) else None for t in items]
        if not all(isinstance(s, Step) for s in vals) or len({(s.stream, s.feat) for s in vals}) != 1:
            _refuse("stacks tensors that are not the time steps of one layer's output",
                    "stack the per-step outputs of one layer: torch.stack([net(x[t]) for t in range(T)])")
        ts = [s.t for s in vals]
        if ts != list(range(len(ts))) or len(ts) != self.T:
            n = len(ts)
            hint = f"pass --timesteps {n} (the T the model loops over)" if ts == list(range(n)) else \
                "stack steps 0..T-1 in order"
            _refuse(f"stacks time steps {ts[:4]}{'...' if n > 4 else ''} ({n} steps) where the model has T={self.T}",
                    hint)
        dim = int(dim) % (len(vals[0].feat) + 2)
        if dim not in (0, 1):
            _refuse(f"stacks the time steps along dim {dim}", "stack along dim 0 ([T, B, ...]) or 1 ([B, T, ...])")
        return Seq(vals[0].stream, ("T", "B") if dim == 0 else ("B", "T"), vals[0].feat)

    def add(self, args, kwargs):
        if kwargs.get("alpha", 1) != 1 or len(args) > 2:
            _refuse("adds with a factor (alpha)")
        a, b = args[0], args[1]
        va = self.get(a) if torch.is_tensor(a) else None
        vb = self.get(b) if torch.is_tensor(b) else None
        if va is None or vb is None:
            v, c = (va, b) if vb is None else (vb, a)
            zero = (c == 0) if not torch.is_tensor(c) else bool((c == 0).all())
            if not zero:
                _refuse("adds a constant to a layer's output", "remove the constant (fold it into a layer's bias)")
            if isinstance(v, Step):
                return Acc(v.stream, frozenset({v.t}), 1.0, v.feat)
            return v
        sa, sb = self._as_acc(va), self._as_acc(vb)
        if sa is None or sb is None or sa.stream != sb.stream or sa.feat != sb.feat or sa.steps & sb.steps \
                or sa.scale != 1.0 or sb.scale != 1.0:
            if isinstance(va, (Seq, Step)) and isinstance(vb, (Seq, Step)) and va.stream != vb.stream:
                _refuse(f"adds {self._stream_name(va.stream)} and {self._stream_name(vb.stream)} (a residual or "
                        "skip connection), which neurocomp does not compile yet",
                        "compile a chain without the skip connection")
            _refuse("adds tensors that are not time steps of one layer's output",
                    "sum a layer's output over the time steps: out += net(x[t])")
        return Acc(sa.stream, sa.steps | sb.steps, 1.0, sa.feat)

    @staticmethod
    def _as_acc(v):
        if isinstance(v, Step):
            return Acc(v.stream, frozenset({v.t}), 1.0, v.feat)
        return v if isinstance(v, Acc) else None

    def scale(self, name, args, kwargs):
        a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
        va = self.get(a) if torch.is_tensor(a) else None
        vb = self.get(b) if torch.is_tensor(b) else None
        v, c = (va, b) if vb is None else (vb, a)
        if va is not None and vb is not None:
            _refuse(f"multiplies or divides two layers' outputs ({name})",
                    "compile a chain; for attention use neurocomp.nn modules (TCJA, TCSA, ...)")
        if torch.is_tensor(c):
            if c.numel() != 1:
                _refuse(f"scales a layer's output by a tensor ({name})", "remove the scaling")
            c = float(c)
        if not isinstance(c, (int, float)) or isinstance(c, bool) or c <= 0 or name.startswith("div") and vb is not None:
            _refuse(f"scales a layer's output ({name} {c!r})", "remove the scaling")
        if not isinstance(v, Acc):
            _refuse(f"scales a layer's output by {c!r} ({name})",
                    "remove the scaling (a mean over time, out / T, is the only one neurocomp reads)")
        factor = 1.0 / c if name.startswith(("div", "true_divide", "__truediv__", "__itruediv__")) else float(c)
        return dataclasses.replace(v, scale=v.scale * factor)

    def reduce(self, name, v, x, rest, kwargs):
        dim = kwargs.get("dim", rest[0] if rest else None)
        if kwargs.get("keepdim", rest[1] if len(rest) > 1 else False) or dim is None or kwargs.get("dtype"):
            _refuse(f"takes the {name} of a tensor {'over all its dims' if dim is None else 'keeping its dims'}",
                    f"take the {name} over time: out.{name}(0) on [T, B, ...]")
        if isinstance(dim, (list, tuple)):
            if len(dim) != 1:
                _refuse(f"takes the {name} over dims {tuple(dim)}", f"take the {name} over the time axis only")
            dim = dim[0]
        dim = int(dim) % x.dim()
        if not (isinstance(v, Seq) and len(v.axes) == 2 and dim in (0, 1)):
            _refuse(f"takes the {name} over dim {dim} of a {self._layout_name(v)} tensor",
                    f"take the {name} over the time axis of the output")
        self.bind_time(v.axes[dim])
        return Acc(v.stream, frozenset(range(self.T)), 1.0 / self.T if name == "mean" else 1.0, v.feat)

    # ---- the run
    def run(self, example):
        leaves, skip = [], ()
        for path, m in self.model.named_modules():
            if skip and any(path.startswith(s + ".") for s in skip):
                continue
            k = leaf_kind(m, path or "model")
            if k is None:
                continue
            self.kinds[id(m)], self.paths[id(m)] = k, path or "model"
            leaves.append(m)
            skip = skip + (path,) if path else ("",)
        handles = []
        try:
            for m in leaves:
                handles.append(m.register_forward_pre_hook(self.pre_hook, with_kwargs=True))
                handles.append(m.register_forward_hook(self.post_hook, with_kwargs=True))
            self.put(example, Seq(0, ("T", "B") if self.layout == "TB" else ("B", "T"), self.input_shape))
            with self:
                out = self.model(example)
        finally:
            for h in handles:
                h.remove()
        return self.finish(out)

    def finish(self, out):
        frame = None
        if not torch.is_tensor(out):
            _refuse(f"returns a {type(out).__name__}, not one tensor", "return the output tensor only", frame)
        v = self.get(out)
        end = len(self.streams) - 1
        if v is None:
            _refuse("returns a tensor that does not come from the model's input", frame=frame)
        if isinstance(v, (Step, Fill)):
            _refuse("returns one time step" if isinstance(v, Step) else "returns a tensor with time steps unwritten",
                    "return all time steps (torch.stack) or their sum / mean")
        if isinstance(v, Acc) and (len(v.steps) != self.T or not (abs(v.scale - 1) < 1e-9 or
                                                                 abs(v.scale * self.T - 1) < 1e-9)):
            what = f"a sum of {len(v.steps)} of the {self.T} steps" if len(v.steps) != self.T else \
                f"the sum over time scaled by {v.scale:g}"
            _refuse(f"returns {what}", "return the sum or the mean over all time steps")
        if v.stream != end:
            _refuse(f"returns {self._stream_name(v.stream)}, not that of the last layer it calls "
                    f"({self._stream_name(end)})", "return the last layer's output")
        if tuple(v.feat) != tuple(self.streams[end].feat):
            self.extend(end, self.streams[end].feat, ("flatten",), lambda: _Entry("flatten"), v.feat)
        if isinstance(v, Acc):
            layout, reduction = "TB", ("sum" if abs(v.scale - 1) < 1e-9 else "mean")
        else:
            a = v.axes
            layout = "TB" if a == ("T", "B") else "BT" if a == ("B", "T") else "T*B" if a == (("T", "B"),) else "B*T"
            if layout == "B*T":
                _refuse("returns [B*T, ...]", "return [T, B, ...], [B, T, ...] or [T*B, ...]")
            reduction = None
        return layout, reduction


def _ends_in_linear(chain) -> bool:
    for e in reversed(chain):
        if e.kind != "leaf":
            return False
        m = e.module
        while isinstance(m, (tnn.Sequential, *PER_STEP_CONTAINERS)) and len(m):
            m = m[len(m) - 1]
        if _is_voting(m):
            return False
        return type(m) in (tnn.Linear, ab_layer.Linear, tnn.BatchNorm1d, ab_layer.BatchNorm1d)
    return False


def _build(chain):
    """``(nn.Sequential, readout appended, {child name: user path})``."""
    from neurocomp.nn import Readout
    seq, sources = tnn.Sequential(), {}

    def add(name, module, source=None):
        base = name.replace(".", "_") or "layer"
        name, n = base, 1
        while name in seq._modules:
            n += 1
            name = f"{base}_{n}"
        seq.add_module(name, module)
        if source is not None:
            sources[name] = source

    for e in chain:
        if e.kind == "flatten":
            add("flatten", tnn.Flatten(2))
        elif e.mode == "step":
            add(e.path, _multi_step_copy(e.module), e.path)
        else:
            add(e.path, _whole_copy(e.module), e.path)
    readout = _ends_in_linear(chain)
    if readout:
        add("readout", Readout())
    return seq, readout, sources


def example_input(input_shape, T, B, layout, seed=0):
    """Binary spikes ``[T, B, *input_shape]`` (or ``[B, T, ...]``)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (T, B) if layout == "TB" else (B, T)
    return (torch.rand(shape + tuple(input_shape), generator=gen) < 0.5).float()


def _device(model):
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


class _Prepared:
    """The user's model in eval mode, on SpikingJelly's torch backend, state reset; restored after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.training = [(m, m.training) for m in self.model.modules()]
        self.cupy = [m for m in self.model.modules() if getattr(m, "backend", None) == "cupy"]
        self.model.eval()
        for m in self.cupy:
            _set_backend(m, "torch")
        reset_state(self.model)
        self.grad = torch.no_grad()
        self.grad.__enter__()
        self.warn = warnings.catch_warnings()
        self.warn.__enter__()
        warnings.simplefilter("ignore")
        return self

    def run(self, x):
        reset_state(self.model)
        try:
            return self.model(x)
        finally:
            reset_state(self.model)

    def __exit__(self, *exc):
        self.warn.__exit__(*exc)
        self.grad.__exit__(*exc)
        reset_state(self.model)
        for m in self.cupy:
            _set_backend(m, "cupy")
        for m, flag in self.training:
            m.training = flag
        return False


def _failure(e, T, B, shape):
    tb, frame, line = e.__traceback__, None, None
    while tb is not None:
        name = os.path.realpath(tb.tb_frame.f_code.co_filename)
        if not name.startswith(_LIBRARIES) and not tb.tb_frame.f_code.co_filename.startswith("<"):
            frame, line = tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next
    at = _at(frame).rsplit(":", 1)[0] + f":{line})" if frame is not None else "forward"
    msg = " ".join(str(e).split())[:160] or "no message"
    return UnsupportedLayer(f"{at} fails on an input of one time step of shape {tuple(shape)} over T={T} steps "
                            f"(as [T, B, ...] and as [B, T, ...]): {type(e).__name__}: {msg}",
                            hint="pass the --input-shape (one time step of one sample) and --timesteps the model "
                                 "was trained with")


def trace(model, input_shape, timesteps, path="model") -> Traced:
    """Reduce ``model`` (a module with its own ``forward``) to the time-major ``nn.Sequential`` that
    computes it (see the module docstring); ``input_shape`` is one time step of one sample."""
    T = int(timesteps)
    B = 3 if T == 2 else 2
    device = _device(model)
    with _Prepared(model) as prep:
        first_error, result = None, None
        for layout in ("TB", "BT"):
            tracer = _Tracer(model, input_shape, T, B, layout)
            x = example_input(input_shape, T, B, layout).to(device)
            try:
                result = tracer.run(x)
                break
            except _LayoutMismatch as e:                     # the forward's time is the other axis
                if layout == "TB":
                    continue
                if first_error is None:                      # [T, B] said "axis 1 is time", [B, T] "axis 0"
                    raise UnsupportedLayer(f"{e.args[0]} treats the input's first axis as time, and before it "
                                           "the second", hint="keep one axis as time: [T, B, ...] throughout, or "
                                                              "[B, T, ...] turned once with x.transpose(0, 1)") from None
            except NeurocompError:
                if layout == "TB" or first_error is None:
                    raise
            except Exception as e:  # noqa: BLE001 - the user's forward failed on this input
                first_error = first_error or e
                if layout == "TB":
                    continue
            finally:
                reset_state(model)
            break                     # [B, T] was a guess after [T, B] failed: report [T, B]'s failure
        if result is None:
            raise _failure(first_error, T, B, input_shape) from None
        out_layout, reduction = result
        seq, readout, sources = _build(tracer.chain)
        traced = Traced(seq.to(device), layout, out_layout, reduction, readout, sources)
        _verify(traced, prep, input_shape, T, B, device)
    return traced


def _verify(traced, prep, input_shape, T, B, device):
    """The chain, run time-major on a fresh input, gives the user's model's output on it."""
    x = example_input(input_shape, T, B + 1, "TB", seed=1).to(device)
    want = prep.run(x if traced.input_layout == "TB" else x.transpose(0, 1).contiguous())
    got = traced.user_output(run_torch_model(traced.sequential, x))
    if not (torch.is_tensor(want) and got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)):
        raise UnsupportedLayer(f"the chain of layers traced from {type(prep.model).__name__}.forward does not "
                               "compute what the forward computes", where=None,
                               hint="write the model as an nn.Sequential of supported layers, and report this")
