"""A forward with branches (``f(x) + shortcut(x)``, ``torch.cat``), reduced by tracing to a
:class:`~neurocomp.frontends.graphmodule.GraphModule`.

:func:`neurocomp.frontends.trace.trace` reduces a forward to a chain; when it refuses one, this tracer
reads the same forward as a graph. It runs the model once, time-major (``[T, B, ...]``), on binary
spikes and records, by tensor identity, each leaf (what :func:`neurocomp.frontends.trace.leaf_kind`
calls one, applied to the whole sequence: multi-step SpikingJelly layers and neurons, per-step
containers, ``neurocomp.nn`` modules) with the value it reads, each sum of two traced values
(``a + b``, ``torch.add``, ``out += y``: a residual, of currents before a neuron as in MS-ResNet and
Spiking-ResNet, or of spikes after it as in SEW-ResNet), each product of two traced values and each
``1. - a`` (SEW-ResNet's AND ``a * b`` and IAND ``(1. - a) * b``, SpikingJelly's ``sew_function``; the
IR reads them as neuron logic, ``frontends.torch``), each ``torch.cat(..., dim=2)`` (channels)
and, at the very end, a mean or sum over time of the output. Identity shortcuts (the value itself,
an empty ``nn.Sequential``, ``nn.Identity``, Dropout) are the value they read. Anything else between
leaves (a constant added, a tensor not from the input, another function) is one
:class:`~neurocomp.errors.UnsupportedLayer` naming the user's ``file:line``. The graph module is then
run on a fresh input and must give the user's output, or the trace is refused.
"""
from __future__ import annotations

import torch
import torch.nn as tnn
from torch.overrides import TorchFunctionMode

from neurocomp.errors import UnsupportedLayer
from neurocomp.frontends.graphmodule import INPUT, GraphModule
from neurocomp.frontends.torch import reset_state, run_torch_model
from neurocomp.frontends.trace import (_DATA_READS, _SAME, Traced, _at, _names, _Prepared, _refuse, _whole_copy,
                                       example_input, leaf_kind)

GRAPH_HINT = ("write the block as layers joined by `+` (residual) or torch.cat(..., dim=2) on [T, B, C, ...] "
              "(README 'Supported layers')")
_ADDS = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_CATS = {"cat", "concat", "concatenate"}
_MULS = {"mul", "multiply", "__mul__", "__rmul__", "__imul__", "mul_"}
_NOTS = {"__rsub__", "rsub"}            # 1. - a: the negation inside SEW's IAND
_HARMLESS = {"size", "dim", "__len__", "numel", "__repr__", "__str__", "__format__", "__hash__"}


class _GraphTracer(TorchFunctionMode):
    def __init__(self, model, T):
        super().__init__()
        self.model, self.T = model, int(T)
        self.paths = {id(m): p or "model" for p, m in model.named_modules()}
        self.values, self.keep = {}, []        # id(tensor) -> value name; the tensors, kept alive
        self.layers, self.ops, self.reads = {}, [], {}
        self.inside = None                     # the leaf being run (what it does inside is its own)
        self.reduction, self.branched, self.n_joins = None, False, 0

    # ---- values -------------------------------------------------------------------------------------
    def put(self, t, name):
        self.values[id(t)] = name
        self.keep.append(t)

    def get(self, t):
        return self.values.get(id(t)) if torch.is_tensor(t) else None

    def read(self, name):
        self.reads[name] = self.reads.get(name, 0) + 1
        if self.reads[name] > 1:
            self.branched = True

    # ---- leaves ---------------------------------------------------------------------------------------
    def pre_hook(self, module, args, kwargs):
        if self.inside is not None or module is self.model:
            return
        path = self.paths.get(id(module), type(module).__name__)
        kind, repl = leaf_kind(module, path) or (None, None)
        if kind is None:
            return                                           # a user class or container: trace through it
        if kind in ("unsupported", "single_step_neuron"):
            _refuse(f"calls '{path}' ({type(module).__name__}), " + (
                "a single-step neuron (a branching forward runs every layer on [T, B, ...])"
                if kind == "single_step_neuron" else "a layer neurocomp does not compile"),
                "use multi-step layers (step_mode='m') in a branching forward" if kind == "single_step_neuron"
                else "replace it with a supported layer (README 'Supported layers')")
        tensors = [a for a in list(args) + list(kwargs.values()) if torch.is_tensor(a)]
        if len(tensors) != 1 or len(args) + len(kwargs) != 1:
            _refuse(f"calls layer '{path}' with {len(args) + len(kwargs)} arguments", "call each layer on one tensor")
        src = self.get(tensors[0])
        if src is None:
            _refuse(f"calls layer '{path}' on a tensor that does not come from the model's input",
                    "call each layer on the input or on what an earlier layer returned")
        if src == "reduced":
            _refuse(f"calls layer '{path}' on the {self.reduction} over time of a layer's output",
                    "apply layers to [T, B, ...] and take the mean over time last")
        if tensors[0].dim() < 3 or tensors[0].shape[0] != self.T:
            _refuse(f"calls layer '{path}' on a tensor of shape {tuple(tensors[0].shape)}, not [T, B, ...]",
                    "run every layer of a branching forward on the whole sequence [T, B, ...]")
        self.inside = (module, path, kind, repl, src)

    def post_hook(self, module, args, kwargs, output):
        if self.inside is None or self.inside[0] is not module:
            return
        _, path, kind, repl, src = self.inside
        self.inside = None
        if not torch.is_tensor(output):
            _refuse(f"gets a {type(output).__name__} from layer '{path}'", "return one tensor from each layer")
        if kind == "identity":
            self.put(output, src)
            return
        if path in self.layers:
            _refuse(f"calls layer '{path}' twice", "give each use of a layer its own module")
        self.read(src)
        self.layers[path] = repl if kind == "recognised" else module     # copied after the run (no hooks)
        self.ops.append({"op": "module", "name": path, "input": src})
        self.put(output, path)

    # ---- what happens between leaves ----------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.inside is not None:
            return result
        name = _names(func)
        flat = list(args[0]) if name in _CATS and args and isinstance(args[0], (list, tuple)) else list(args)
        known = [a for a in list(flat) + list(kwargs.values()) if self.get(a) is not None]
        if not known or name.startswith("get:") or name in _HARMLESS:
            return result
        if any(self.get(a) == "reduced" for a in known):
            _refuse(f"uses the {self.reduction} over time of the output ({name})", "return it as the model's output")
        if name in _SAME:
            self.put(result, self.get(known[0]))
        elif name in _ADDS:
            self.join("add", args, kwargs, result)
        elif name in _CATS:
            self.join("cat", flat, kwargs, result, dim=kwargs.get("dim", args[1] if len(args) > 1 else 0))
        elif name in _MULS:
            self.join("mul", args, kwargs, result)
        elif name in _NOTS or (name in ("sub", "__sub__") and len(args) == 2 and not torch.is_tensor(args[0])):
            self.negate(args, kwargs, result)
        elif name in ("mean", "sum") and self.reduction is None:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if dim not in (0, (0,), [0]) or kwargs.get("keepdim", False):
                _refuse(f"takes the {name} over dims {dim!r}", f"take the {name} over the time axis (dim 0) only")
            self.reduced_of = self.get(known[0])
            self.read(self.reduced_of)
            self.reduction = name
            self.put(result, "reduced")
        elif name == "flatten" and len(known) == 1 and args[0] is known[0]:
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            if start % result.dim() != 2 or end % known[0].dim() != known[0].dim() - 1:
                _refuse(f"flattens dims {start}..{end} of a [T, B, ...] tensor", "flatten one sample: x.flatten(2)")
            src = self.get(known[0])
            self.read(src)
            self.n_joins += 1
            path = f"flatten{self.n_joins}"
            self.layers[path] = tnn.Flatten(2)
            self.ops.append({"op": "module", "name": path, "input": src})
            self.put(result, path)
        elif name in _DATA_READS:
            _refuse(f"reads a tensor's value ({name}): data-dependent control flow", "compute without reading values")
        else:
            _refuse(f"applies {name} between layers, which neurocomp has no layer for", GRAPH_HINT)
        return result

    def negate(self, args, kwargs, result):
        """``1. - a`` (``a.__rsub__(1.)``): SEW's IAND negation, recorded as a ``not`` op."""
        tensor, const = (args[0], args[1]) if torch.is_tensor(args[0]) else (args[1], args[0])
        self.branched = True                   # this tracer's refusal, not the chain tracer's, names it
        if (torch.is_tensor(const) or kwargs.get("alpha", 1) != 1 or not isinstance(const, (int, float))
                or float(const) != 1.0):
            _refuse(f"subtracts a layer's output from {const!r}", "negate spikes as 1. - s (SEW's IAND: "
                    "(1. - a) * b); fold other constants into a layer's bias")
        src = self.get(tensor)
        self.read(src)
        self.branched = True
        self.n_joins += 1
        name = f"not{self.n_joins}"
        self.ops.append({"op": "not", "name": name, "input": src})
        self.put(result, name)

    def join(self, kind, parts, kwargs, result, dim=None):
        if kind in ("add", "mul"):
            if kwargs.get("alpha", 1) != 1 or len(parts) != 2:
                _refuse(f"{kind}s with a factor (alpha)", GRAPH_HINT)
            names = [self.get(p) for p in parts]
            if any(n is None for n in names):
                other = parts[names.index(None)]
                what = "a constant" if not torch.is_tensor(other) else "a tensor that does not come from the input"
                verb, noun = ("adds", "addends") if kind == "add" else ("multiplies", "factors")
                _refuse(f"{verb} {what} {'to' if kind == 'add' else 'with'} a layer's output: both {noun} must "
                        "come from the model's input",
                        "add two branches' outputs (fold constants into a layer's bias)" if kind == "add" else
                        "multiply two branches' spikes (SEW's AND: a * b, IAND: (1. - a) * b); fold constant "
                        "factors into a layer's weights")
        else:
            names = [self.get(p) for p in parts]
            if any(n is None for n in names) or len(parts) < 2:
                _refuse("concatenates a tensor that does not come from the model's input", GRAPH_HINT)
            nd = parts[0].dim()
            if not isinstance(dim, int) or dim % nd != 2 or nd < 3:
                _refuse(f"concatenates along dim {dim!r} of [T, B, ...] tensors of {nd} dims",
                        "concatenate channels: torch.cat([a, b], dim=2) on [T, B, C, ...]")
        if len(set(names)) == 1 and (INPUT in names or kind == "mul"):
            verb = {"add": "adds", "cat": "concatenates", "mul": "multiplies"}[kind]
            _refuse(f"{verb} {'the input' if INPUT in names else 'a value'} {'with' if kind == 'mul' else 'to'} itself",
                    GRAPH_HINT)
        for n in names:
            self.read(n)
        self.branched = True
        self.n_joins += 1
        name = f"{kind}{self.n_joins}"
        self.ops.append({"op": kind, "name": name, "inputs": names, **({"dim": 2} if kind == "cat" else {})})
        self.put(result, name)

    # ---- a run ------------------------------------------------------------------------------------------------
    def run(self, x):
        self.put(x, INPUT)
        hooks = []
        for m in self.model.modules():
            hooks.append(m.register_forward_pre_hook(self.pre_hook, with_kwargs=True))
            hooks.append(m.register_forward_hook(self.post_hook, with_kwargs=True))
        try:
            with self:
                out = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        gm = self.finish(out)
        return gm

    def finish(self, out):
        name = self.get(out)
        if name is None:
            _refuse("returns a tensor that does not come from the model's input" if torch.is_tensor(out)
                    else f"returns a {type(out).__name__}, not one tensor", "return the output tensor only")
        if name == "reduced":              # the mean / sum over time of the last operation's output
            name = self.reduced_of
        if not self.ops or name != self.ops[-1]["name"]:
            _refuse(f"returns '{name}', not what the last operation computes", "return the last layer's output")
        unread = [op["name"] for op in self.ops[:-1] if not self.reads.get(op["name"])]
        if unread:
            _refuse(f"computes '{unread[0]}', whose output nothing uses", "remove the unused layer")
        reset_state(self.model)                        # a neuron's membrane from the run is not copied
        return GraphModule({p: m if type(m) is tnn.Flatten else _whole_copy(m) for p, m in self.layers.items()}, self.ops, where="traced graph")


def trace_graph(model, input_shape, timesteps, path="model"):
    """``(Traced or None, error or None)``: the model's forward as a :class:`GraphModule` (``Traced``
    with it as ``sequential``) when it branches and traces; else ``None`` and, when the forward
    branches but cannot be traced, the one-line refusal."""
    T = int(timesteps)
    B = 3 if T == 2 else 2
    from neurocomp.frontends.trace import _device
    device = _device(model)
    with _Prepared(model) as prep:
        tracer = _GraphTracer(model, T)
        try:
            gm = tracer.run(example_input(input_shape, T, B, "TB").to(device))
        except UnsupportedLayer as e:
            return None, (e if tracer.branched else None)
        except Exception:  # noqa: BLE001 - the forward fails as [T, B, ...]: the chain tracer's error stands
            return None, None
        finally:
            reset_state(model)
        if not tracer.branched:
            return None, None
        traced = Traced(gm.to(device).eval(), "TB", "TB", tracer.reduction, False,
                        {p: p for p in gm.layer_paths})
        x = example_input(input_shape, T, B + 1, "TB", seed=1).to(device)
        want = prep.run(x)
        got = traced.user_output(run_torch_model(traced.sequential, x))
        if not (torch.is_tensor(want) and got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)):
            return None, UnsupportedLayer(f"the graph of layers traced from {type(model).__name__}.forward does not "
                                          "compute what the forward computes", where=None,
                                          hint="write the model's blocks with supported layers, and report this")
    return traced, None
