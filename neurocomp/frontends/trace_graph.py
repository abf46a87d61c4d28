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
and, at the very end, a mean or sum over time of the output. As the chain tracer
(:mod:`neurocomp.frontends.trace`) reads them, and with its helpers: loops over time (single-step layers
and neurons called on ``x[t]``, the steps joined with ``torch.stack``; each layer is stored as its
multi-step copy, each join of a step is the join of the sequences) and the ``[B, T, ...]`` layout
(``x.transpose(0, 1)`` / ``permute(1, 0, ...)``; traced again as ``[B, T, ...]`` when a layer meets the
input's axes swapped). Identity shortcuts (the value itself,
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
from neurocomp.frontends.trace import (_DATA_READS, _SAME, Traced, _at, _LayoutMismatch, _multi_step_copy, _names,
                                       _Prepared, _refuse, _whole_copy, example_input, leaf_kind)

GRAPH_HINT = ("write the block as layers joined by `+` (residual) or torch.cat(..., dim=2) on [T, B, C, ...] "
              "(README 'Supported layers')")
_ADDS = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_CATS = ("cat", "concat", "concatenate")
_TURNS = {"transpose", "permute", "swapaxes", "swapdims"}
_MULS = {"mul", "multiply", "__mul__", "__rmul__", "__imul__", "mul_"}
_NOTS = {"__rsub__", "rsub"}            # 1. - a: the negation inside SEW's IAND
_HARMLESS = {"size", "dim", "__len__", "numel", "__repr__", "__str__", "__format__", "__hash__"}


class _GraphTracer(TorchFunctionMode):
    """Records the graph of one run. Each traced value is a name (the op that computes it) in a *form*:
    ``"TB"`` / ``"BT"`` (the whole sequence, time first or batch first) or an int ``t`` (time step ``t``
    of the value, ``[B, ...]``, in a loop over time); the GraphModule it builds is time-major whatever
    the forms were, since a transpose or a stack of the steps changes the form, not the value."""

    def __init__(self, model, T, layout="TB"):
        super().__init__()
        self.model, self.T, self.layout = model, int(T), layout
        self.paths = {id(m): p or "model" for p, m in model.named_modules()}
        self.values, self.keep = {}, []        # id(tensor) -> (value name, form); the tensors, kept alive
        self.layers, self.ops, self.reads = {}, [], {}
        self.inside = None                     # the leaf being run (what it does inside is its own)
        self.reduction, self.branched, self.n_joins = None, False, 0
        self.per_step = set()                  # layers called once per step (stored as multi-step copies)
        self.step_of, self.step_ops = {}, {}   # layer -> last step it ran; (op, inputs) -> name at step 0
        self.quiet = False

    # ---- values -------------------------------------------------------------------------------------
    def put(self, t, name, form="TB"):
        self.values[id(t)] = (name, form)
        self.keep.append(t)

    def entry(self, t):
        if not torch.is_tensor(t):
            return None
        got = self.values.get(id(t))
        return got if got is not None else self._step_view(t)

    def get(self, t):
        e = self.entry(t)
        return None if e is None else e[0]

    def form(self, t):
        e = self.entry(t)
        return None if e is None else e[1]

    def _step_view(self, u):
        """``u`` is ``w[t]`` of a traced time-major sequence ``w`` (an integer index bypasses the mode)."""
        if u._base is None or self.quiet:
            return None
        self.quiet = True                      # the storage queries below are not the forward's
        try:
            return self._find_step(u)
        finally:
            self.quiet = False

    def _find_step(self, u):
        for w in self.keep:
            name, form = self.values.get(id(w), (None, None))
            if form != "TB" or w.dim() != u.dim() + 1 or w.untyped_storage().data_ptr() != u.untyped_storage().data_ptr():
                continue
            if tuple(u.shape) != tuple(w.shape[1:]) or tuple(u.stride()) != tuple(w.stride()[1:]) or w.stride(0) == 0:
                continue
            d = u.storage_offset() - w.storage_offset()
            if d % w.stride(0) == 0 and 0 <= d // w.stride(0) < w.shape[0]:
                return (name, d // w.stride(0))
        return None

    def read(self, name, form="TB"):
        if isinstance(form, int) and form > 0:
            return                             # a later step of a loop re-reads what step 0 read
        self.reads[name] = self.reads.get(name, 0) + 1
        if self.reads[name] > 1:
            self.branched = True

    def same_form(self, forms, what):
        if len(set(forms)) != 1:
            _refuse(f"{what} values of different layouts or time steps ({', '.join(map(str, forms))})",
                    "combine whole sequences of one layout, or the same time step of each")
        return forms[0]

    def step_op(self, key, form, make):
        """The name of an op of a loop over time: made at step 0, found again at every later step."""
        if not isinstance(form, int):
            return make()
        if form == 0:
            if key in self.step_ops:
                _refuse(f"computes {key[0]} of {', '.join(key[1])} twice in one step", GRAPH_HINT)
            self.step_ops[key] = make()
            return self.step_ops[key]
        if key not in self.step_ops:
            _refuse(f"computes {key[0]} of {', '.join(key[1])} at time step {form} but not at step 0",
                    "do the same in every step of the loop over time")
        return self.step_ops[key]

    # ---- leaves ---------------------------------------------------------------------------------------
    def pre_hook(self, module, args, kwargs):
        if self.inside is not None or module is self.model:
            return
        path = self.paths.get(id(module), type(module).__name__)
        kind, repl = leaf_kind(module, path) or (None, None)
        if kind is None:
            return                                           # a user class or container: trace through it
        if kind == "unsupported":
            _refuse(f"calls '{path}' ({type(module).__name__}), a layer neurocomp does not compile",
                    "replace it with a supported layer (README 'Supported layers')")
        tensors = [a for a in list(args) + list(kwargs.values()) if torch.is_tensor(a)]
        if len(tensors) != 1 or len(args) + len(kwargs) != 1:
            _refuse(f"calls layer '{path}' with {len(args) + len(kwargs)} arguments", "call each layer on one tensor")
        src, form = self.get(tensors[0]), self.form(tensors[0])
        if src is None:
            _refuse(f"calls layer '{path}' on a tensor that does not come from the model's input",
                    "call each layer on the input or on what an earlier layer returned")
        if src == "reduced":
            _refuse(f"calls layer '{path}' on the {self.reduction} over time of a layer's output",
                    "apply layers to [T, B, ...] and take the mean over time last")
        stepwise = kind in ("per_sample", "single_step_neuron")
        if isinstance(form, int) != stepwise and kind != "identity":
            if kind == "single_step_neuron" or (not stepwise and isinstance(form, int)):
                _refuse(f"calls '{path}' ({type(module).__name__}) on "
                        + ("the whole sequence: it would see one time step" if stepwise else f"time step {form} alone"),
                        "in a loop over time call single-step layers on x[t]; else multi-step layers on [T, B, ...]")
            stepwise = False                   # a per-sample torch layer on [T, B, ...]: applied to every step
        if form == "BT" and kind not in ("identity", "recognised"):   # an official class takes [B, T, ...]:
            if self.layout == "TB":                                  # its time-major equivalent is recorded
                raise _LayoutMismatch(path)    # time is the input's axis 1: trace again as [B, T, ...]
            _refuse(f"calls layer '{path}' on a [B, T, ...] tensor", "turn it once with x.transpose(0, 1)")
        if not isinstance(form, int) and (tensors[0].dim() < 3 or tensors[0].shape[1 if form == "BT" else 0] != self.T):
            _refuse(f"calls layer '{path}' on a tensor of shape {tuple(tensors[0].shape)}, not [T, B, ...]",
                    "run every layer of a branching forward on the whole sequence [T, B, ...]")
        self.inside = (module, path, kind, repl, src, form)

    def post_hook(self, module, args, kwargs, output):
        if self.inside is None or self.inside[0] is not module:
            return
        _, path, kind, repl, src, form = self.inside
        self.inside = None
        if not torch.is_tensor(output):
            _refuse(f"gets a {type(output).__name__} from layer '{path}'", "return one tensor from each layer")
        if kind == "identity":
            self.put(output, src, form)
            return
        if isinstance(form, int):             # a loop over time: step 0 records, later steps check
            last = self.step_of.get(path)
            if (form == 0) != (last is None) or (last is not None and form != last + 1):
                _refuse(f"calls layer '{path}' on step {form}" + ("" if last is None else f" after step {last}"),
                        "loop over the time steps in order, calling each layer once per step")
            self.step_of[path] = form
            if form > 0:
                op = next(o for o in self.ops if o["name"] == path)
                if op["input"] != src:
                    _refuse(f"calls layer '{path}' on '{src}' at step {form}, on '{op['input']}' at step 0",
                            "give each use of a layer its own module")
                self.put(output, path, form)
                return
            self.per_step.add(path)
        if path in self.layers:
            _refuse(f"calls layer '{path}' twice", "give each use of a layer its own module")
        self.read(src, form)
        self.layers[path] = repl if kind == "recognised" else module     # copied after the run (no hooks)
        self.ops.append({"op": "module", "name": path, "input": src})
        self.put(output, path, form)

    # ---- what happens between leaves ----------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.inside is not None or self.quiet:
            return result
        name = _names(func)
        flat = list(args[0]) if name in _CATS + ("stack",) and args and isinstance(args[0], (list, tuple)) \
            else list(args)
        known = [a for a in list(flat) + list(kwargs.values()) if self.get(a) is not None]
        if not known or name.startswith("get:") or name in _HARMLESS:
            return result
        if any(self.get(a) == "reduced" for a in known):
            _refuse(f"uses the {self.reduction} over time of the output ({name})", "return it as the model's output")
        if name in _SAME:
            self.put(result, self.get(known[0]), self.form(known[0]))
        elif name in _ADDS:
            self.join("add", args, kwargs, result)
        elif name in _CATS:
            self.join("cat", flat, kwargs, result, dim=kwargs.get("dim", args[1] if len(args) > 1 else 0))
        elif name in _MULS:
            self.join("mul", args, kwargs, result)
        elif name in _NOTS or (name in ("sub", "__sub__") and len(args) == 2 and not torch.is_tensor(args[0])):
            self.negate(args, kwargs, result)
        elif name in _TURNS and args and args[0] is known[0]:
            self.turn(name, args, kwargs, result)
        elif name == "stack":
            self.stack(flat, kwargs.get("dim", args[1] if len(args) > 1 else 0), result)
        elif name == "__getitem__" and args and args[0] is known[0]:
            self.index(args[0], args[1], result)
        elif name in ("mean", "sum") and self.reduction is None:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            time_dim = 1 if self.form(known[0]) == "BT" else 0
            if dim not in (time_dim, (time_dim,), [time_dim]) or kwargs.get("keepdim", False) \
                    or isinstance(self.form(known[0]), int):
                _refuse(f"takes the {name} over dims {dim!r}", f"take the {name} over the time axis only")
            self.reduced_of = self.get(known[0])
            self.read(self.reduced_of)
            self.reduction = name
            self.put(result, "reduced")
        elif name == "flatten" and len(known) == 1 and args[0] is known[0]:
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            form = self.form(known[0])
            lead = 1 if isinstance(form, int) else 2
            if start % known[0].dim() != lead or end % known[0].dim() != known[0].dim() - 1 or form == "BT":
                _refuse(f"flattens dims {start}..{end} of a {'[B, ...]' if lead == 1 else '[T, B, ...]'} tensor",
                        "flatten one sample: x.flatten(2) on [T, B, ...], x.flatten(1) on a step")
            src = self.get(known[0])

            def make():
                self.read(src)
                self.n_joins += 1
                path = f"flatten{self.n_joins}"
                self.layers[path] = tnn.Flatten(2)
                self.ops.append({"op": "module", "name": path, "input": src})
                return path
            self.put(result, self.step_op(("flatten", (src,)), form, make), form)
        elif name in _DATA_READS:
            _refuse(f"reads a tensor's value ({name}): data-dependent control flow", "compute without reading values")
        else:
            _refuse(f"applies {name} between layers, which neurocomp has no layer for", GRAPH_HINT)
        return result

    def turn(self, name, args, kwargs, result):
        """``x.transpose(0, 1)`` / ``x.permute(1, 0, ...)``: time and batch swapped, the value the same."""
        x, form = args[0], self.form(args[0])
        rest = args[1:]
        if name == "permute":
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
            dims = tuple(int(d) % x.dim() for d in kwargs.get("dims", dims))
        else:
            d0, d1 = kwargs.get("dim0", rest[0] if rest else None), kwargs.get("dim1", rest[1] if len(rest) > 1 else None)
            dims = list(range(x.dim()))
            dims[int(d0) % x.dim()], dims[int(d1) % x.dim()] = dims[int(d1) % x.dim()], dims[int(d0) % x.dim()]
            dims = tuple(dims)
        if dims == tuple(range(x.dim())):
            self.put(result, self.get(x), form)
        elif form in ("TB", "BT") and dims[:2] == (1, 0) and dims[2:] == tuple(range(2, x.dim())):
            self.put(result, self.get(x), "BT" if form == "TB" else "TB")
        else:
            _refuse(f"permutes the dims of a tensor as {dims}",
                    "only swap time and batch (x.transpose(0, 1)); keep a sample's dims in order")

    def index(self, x, idx, result):
        """``x[:, t]`` of a ``[B, T, ...]`` value (``x[t]`` bypasses the mode: see :meth:`_step_view`)."""
        form = self.form(x)
        if isinstance(idx, tuple) and idx and idx[-1] is Ellipsis:
            idx = idx[:-1]
        if isinstance(idx, tuple) and len(idx) == 1:
            idx = idx[0]
        if isinstance(idx, int) and not isinstance(idx, bool) and form == "TB":
            t = idx % self.T
        elif form == "BT" and isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None) \
                and isinstance(idx[1], int):
            t = idx[1] % self.T
        else:
            _refuse(f"indexes a tensor with [{idx!r}]", "index time steps only: x[t] on [T, B, ...], x[:, t] on [B, T, ...]")
        self.put(result, self.get(x), t)

    def stack(self, items, dim, result):
        """``torch.stack`` of the steps ``0..T-1`` of one value: that value, time-major (dim 0) or not."""
        vals = [self.entry(t) for t in items]
        if any(v is None for v in vals) or len({v[0] for v in vals}) != 1 or [v[1] for v in vals] != list(range(self.T)):
            _refuse("stacks tensors that are not the time steps 0..T-1 of one value",
                    "stack the per-step outputs of one layer: torch.stack([net(x[t]) for t in range(T)])")
        dim = int(dim) % result.dim()
        if dim not in (0, 1):
            _refuse(f"stacks the time steps along dim {dim}", "stack along dim 0 ([T, B, ...]) or 1 ([B, T, ...])")
        self.put(result, vals[0][0], "TB" if dim == 0 else "BT")

    def negate(self, args, kwargs, result):
        """``1. - a`` (``a.__rsub__(1.)``): SEW's IAND negation, recorded as a ``not`` op."""
        tensor, const = (args[0], args[1]) if torch.is_tensor(args[0]) else (args[1], args[0])
        self.branched = True                   # this tracer's refusal, not the chain tracer's, names it
        if (torch.is_tensor(const) or kwargs.get("alpha", 1) != 1 or not isinstance(const, (int, float))
                or float(const) != 1.0):
            _refuse(f"subtracts a layer's output from {const!r}", "negate spikes as 1. - s (SEW's IAND: "
                    "(1. - a) * b); fold other constants into a layer's bias")
        src, form = self.get(tensor), self.form(tensor)

        def make():
            self.read(src)
            self.n_joins += 1
            name = f"not{self.n_joins}"
            self.ops.append({"op": "not", "name": name, "input": src})
            return name
        self.put(result, self.step_op(("not", (src,)), form, make), form)

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
        form = self.same_form([self.form(p) for p in parts], {"add": "adds", "mul": "multiplies",
                                                              "cat": "concatenates"}[kind])
        if kind == "cat":
            nd, lead = parts[0].dim(), (1 if isinstance(form, int) else 2)
            if not isinstance(dim, int) or dim % nd != lead or nd < lead + 1 or form == "BT":
                _refuse(f"concatenates along dim {dim!r} of tensors of {nd} dims",
                        "concatenate channels: torch.cat([a, b], dim=2) on [T, B, C, ...] (dim=1 on a step)")
        if len(set(names)) == 1 and (INPUT in names or kind == "mul"):
            verb = {"add": "adds", "cat": "concatenates", "mul": "multiplies"}[kind]
            _refuse(f"{verb} {'the input' if INPUT in names else 'a value'} {'with' if kind == 'mul' else 'to'} itself",
                    GRAPH_HINT)
        self.branched = True

        def make():
            for n in names:
                self.read(n)
            self.n_joins += 1
            name = f"{kind}{self.n_joins}"
            self.ops.append({"op": kind, "name": name, "inputs": names, **({"dim": 2} if kind == "cat" else {})})
            return name
        self.put(result, self.step_op((kind, tuple(names)), form, make), form)

    # ---- a run ------------------------------------------------------------------------------------------------
    def run(self, x):
        self.put(x, INPUT, self.layout)
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
        name, form = self.get(out), self.form(out)
        if name is None:
            _refuse("returns a tensor that does not come from the model's input" if torch.is_tensor(out)
                    else f"returns a {type(out).__name__}, not one tensor", "return the output tensor only")
        if isinstance(form, int):
            _refuse(f"returns time step {form} alone", "return all time steps (torch.stack) or their mean")
        self.out_layout = form
        if name == "reduced":              # the mean / sum over time of the last operation's output
            name, self.out_layout = self.reduced_of, "TB"
        if not self.ops or name != self.ops[-1]["name"]:
            _refuse(f"returns '{name}', not what the last operation computes", "return the last layer's output")
        unread = [op["name"] for op in self.ops[:-1] if not self.reads.get(op["name"])]
        if unread:
            _refuse(f"computes '{unread[0]}', whose output nothing uses", "remove the unused layer")
        short = [p for p in self.per_step if self.step_of.get(p) != self.T - 1]
        if short:
            _refuse(f"calls layer '{short[0]}' on {self.step_of[short[0]] + 1} of the {self.T} time steps",
                    "call every layer once per time step (or pass the --timesteps the model loops over)")
        reset_state(self.model)                        # a neuron's membrane from the run is not copied
        copy = lambda p, m: m if type(m) is tnn.Flatten else (_multi_step_copy(m) if p in self.per_step  # noqa: E731
                                                             else _whole_copy(m))
        return GraphModule({p: copy(p, m) for p, m in self.layers.items()}, self.ops, where="traced graph")


def trace_graph(model, input_shape, timesteps, path="model"):
    """``(Traced or None, error or None)``: the model's forward as a :class:`GraphModule` (``Traced``
    with it as ``sequential``) when it branches and traces; else ``None`` and, when the forward
    branches but cannot be traced, the one-line refusal. Traced as ``[T, B, ...]`` first, and again as
    ``[B, T, ...]`` when a layer meets the input's axes swapped (as :func:`neurocomp.frontends.trace.trace`)."""
    T = int(timesteps)
    B = 3 if T == 2 else 2
    from neurocomp.frontends.trace import _device
    device = _device(model)
    with _Prepared(model) as prep:
        for layout in ("TB", "BT"):
            tracer = _GraphTracer(model, T, layout)
            try:
                gm = tracer.run(example_input(input_shape, T, B, layout).to(device))
                break
            except _LayoutMismatch:
                if layout == "BT":
                    return None, None
            except UnsupportedLayer as e:
                return None, (e if tracer.branched else None)
            except Exception:  # noqa: BLE001 - the forward fails on this input: the chain tracer's error stands
                if layout == "BT":
                    return None, None
            finally:
                reset_state(model)
        if not tracer.branched:
            return None, None
        traced = Traced(gm.to(device).eval(), layout, tracer.out_layout, tracer.reduction, False,
                        {p: p for p in gm.layer_paths})
        x = example_input(input_shape, T, B + 1, "TB", seed=1).to(device)
        want = prep.run(x if layout == "TB" else x.transpose(0, 1).contiguous())
        got = traced.user_output(run_torch_model(traced.sequential, x))
        if not (torch.is_tensor(want) and got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)):
            return None, UnsupportedLayer(f"the graph of layers traced from {type(model).__name__}.forward does not "
                                          "compute what the forward computes", where=None,
                                          hint="write the model's blocks with supported layers, and report this")
    return traced, None
