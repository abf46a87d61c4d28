"""neurocomp's checkpoint format: a plain dictionary that ``torch.load(weights_only=True)`` reads.

```
{
  "format": "neurocomp.checkpoint", "version": 1,
  "architecture": {"type": "Sequential", "children": [["0", {"type": "spikingjelly.Conv2d",
                   "args": {...}}], ...]},           # rebuilt by neurocomp, no pickled classes
                                                    # (containers: Sequential, SeqToANNContainer, MultiStepContainer)
  "state_dict": {name: tensor},                     # the model's state_dict()
  "input_shape": [C, H, W] or [N],                  # one time step of one sample
  "timesteps": T,
  "encoding": "bernoulli" | "current" | "events",   # how samples become input spikes
  "dataset": "digits" | "events" | ... (optional), "extra": {...} (optional, plain types)
}
```
:func:`load_checkpoint` is the front door for every usual way of saving a model:

- a neurocomp checkpoint (above), read with ``weights_only=True``;
- a state dict (bare, or under ``state_dict``, ``model``, ``net`` or ``model_state_dict``; ``module.``
  prefixes stripped), read with ``weights_only=True``, loaded into the module that ``model="FILE.py:NAME"``
  (``--model``) builds;
- a full pickled ``nn.Module`` (``torch.save(model)``), only with ``trust_pickle=True``
  (``--trust-pickle``: unpickling can run arbitrary code); its classes are found in the current folder,
  ``code_path`` (``--code-path``) or, pickled from a script, the ``--model FILE.py`` that defines them.

The last two carry no input shape, T or encoding: ``input_shape``, ``timesteps``, ``encoding`` and
``dataset`` (the flags of the same names) supply them. Such a model is reduced to its layers
(:func:`neurocomp.frontends.usercode.as_sequential`) and rebuilt from its description, so what is
compiled is exactly what :func:`save_checkpoint` stores in the artifact: nothing later needs the
user's pickle or code.
"""
from __future__ import annotations

import collections
import os
import pickle
import pickletools
import tempfile
import zipfile

import torch
import torch.nn as tnn

from neurocomp import memory, safeio
from neurocomp.errors import BadCheckpoint, BadInput, NeurocompError, UnsupportedLayer, UnsupportedLayers
from neurocomp.frontends.attention import timesteps_mismatch
from neurocomp.frontends.graphmodule import GraphModule
from neurocomp.frontends.modules import CONTAINER_TYPES, EQUIVALENT, MODULES, container_type, type_name
from neurocomp.nn import REGISTRY

FORMAT = "neurocomp.checkpoint"
VERSION = 1
ENCODINGS = ("bernoulli", "current", "events")
MAX_TIMESTEPS = 100_000


SUPPORTED = ("Conv2d, Linear, BatchNorm1d/2d, MaxPool2d, AvgPool2d, Flatten, Dropout (torch or SpikingJelly "
             "activation_based), SpikingJelly LIFNode/IFNode/ParametricLIFNode, clock_driven "
             "MultiStepLIFNode/MultiStepIFNode/MultiStepParametricLIFNode, VotingLayer, neurocomp.nn modules "
             "(neurocomp.nn.Readout for a non-spiking head), in nn.Sequential, "
             "SeqToANNContainer or MultiStepContainer")


def describe(module, path="") -> dict:
    """Architecture description of a model (nested Sequential / SeqToANNContainer / MultiStepContainer
    and supported leaves).

    A clock_driven class is stored as its activation_based equivalent
    (:data:`neurocomp.frontends.modules.EQUIVALENT`; its containers as the activation_based ones,
    ``CONTAINER_TYPES``), recording the class it was read from under ``"from"``; the state dict keeps
    its names."""
    problems = []

    def walk(m, p):
        if isinstance(m, GraphModule):
            return {"type": "Graph", "ops": [dict(op) for op in m.ops],
                    "modules": [[n, walk(m.layer(n), f"{p}.{n}" if p else n)] for n in m.layer_paths]}
        kind = "Sequential" if type(m) is tnn.Sequential else container_type(m)
        if kind is not None:
            spec = {"type": kind, "children": [[n, walk(c, f"{p}.{n}" if p else n)] for n, c in m.named_children()]}
            if type(m).__module__.startswith("spikingjelly.clock_driven"):
                spec["from"] = f"{type(m).__module__}.{type(m).__name__}"
            return spec
        name = type_name(m)
        if name is None:
            problems.append(UnsupportedLayer(f"{type(m).__name__} is not a layer neurocomp compiles",
                                             where=f"layer '{p or 'model'}'",
                                             hint="replace it with a supported layer: " + SUPPORTED))
            return None
        if name.startswith("neurocomp.nn."):
            return {"type": name, "args": dict(m.config)}
        args = MODULES[name][1](m)
        if name in EQUIVALENT:
            return {"type": EQUIVALENT[name], "args": args, "step_mode": "m",
                    "from": f"{type(m).__module__}.{type(m).__name__}"}
        return {"type": name, "args": args, "step_mode": getattr(m, "step_mode", None)}

    spec = walk(module, path)
    if problems:
        raise problems[0] if len(problems) == 1 else UnsupportedLayers(problems)
    return spec


MAX_DEPTH = 64            # nesting of Sequential in an architecture description
MAX_LAYERS = 100_000      # entries in an architecture description
MAX_DIM = 1 << 31         # any single size (channels, features, kernel) in an architecture


def _bad(msg, where, hint="fix the field or re-save the model with neurocomp.save_checkpoint"):
    return BadCheckpoint(msg, where=where, hint=hint)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# per layer argument: (check, what a valid value is)
def _pos_int(v):
    return _is_int(v) and 1 <= v <= MAX_DIM


def _pair_of(test):
    return lambda v: test(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(test(x) for x in v))


_POS_PAIR = _pair_of(_pos_int)
_ARG_RULES = {
    "in_channels": (_pos_int, "a positive integer"), "out_channels": (_pos_int, "a positive integer"),
    "in_features": (_pos_int, "a positive integer"), "out_features": (_pos_int, "a positive integer"),
    "num_features": (_pos_int, "a positive integer"), "groups": (_pos_int, "a positive integer"),
    "kernel_size": (_POS_PAIR, "a positive integer or a pair of them"),
    "stride": (_POS_PAIR, "a positive integer or a pair of them"),
    "dilation": (_POS_PAIR, "a positive integer or a pair of them"),
    "padding": (lambda v: v in ("same", "valid") or _pair_of(lambda x: _is_int(x) and 0 <= x <= MAX_DIM)(v),
                "a non-negative integer, a pair of them, 'same' or 'valid'"),
    "bias": (lambda v: isinstance(v, bool), "true or false"),
    "affine": (lambda v: isinstance(v, bool), "true or false"),
    "track_running_stats": (lambda v: isinstance(v, bool), "true or false"),
    "ceil_mode": (lambda v: isinstance(v, bool), "true or false"),
    "count_include_pad": (lambda v: isinstance(v, bool), "true or false"),
    "decay_input": (lambda v: isinstance(v, bool), "true or false"),
    "detach_reset": (lambda v: isinstance(v, bool), "true or false"),
    "divisor_override": (lambda v: v is None or _pos_int(v), "null or a positive integer"),
    "eps": (_is_num, "a number"), "momentum": (lambda v: v is None or _is_num(v), "a number or null"),
    "p": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "start_dim": (lambda v: _is_int(v) and abs(v) <= 64, "a small integer"),
    "end_dim": (lambda v: _is_int(v) and abs(v) <= 64, "a small integer"),
    "tau": (_is_num, "a number"), "init_tau": (_is_num, "a number"), "v_threshold": (_is_num, "a number"),
    "v_reset": (lambda v: v is None or _is_num(v), "a number or null"),
    "surrogate": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("name", ""), str)
                                          and all(_is_num(x) for k, x in v.items() if k != "name")),
                  "{'name': ..., 'alpha': number}"),
    "padding_mode": (lambda v: v in ("zeros", "reflect", "replicate", "circular"), "'zeros'"),
}


def _check_args(t, args, where):
    """Types and ranges of a table layer's arguments, before its constructor sees them."""
    for k, v in args.items():
        rule = _ARG_RULES.get(k)
        if rule is not None and not rule[0](v):
            raise _bad(f"{t} argument {k}={_short(v)} is not {rule[1]}", f"{where}: args.{k}")


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_node(spec, where):
    if not isinstance(spec, dict) or "type" not in spec:
        raise BadCheckpoint("architecture entry lacks 'type'", where=where, hint="re-save with save_checkpoint")
    t = spec["type"]
    if not isinstance(t, str) or not t:
        raise _bad(f"'type' is {_short(t)}, not a layer type name", f"{where}: type")
    if t != "Sequential" and t not in CONTAINER_TYPES:
        args = spec.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict) or not all(isinstance(k, str) and k.isidentifier() for k in args):
            raise _bad(f"'args' of {t} is {type(args).__name__} {_short(args)}, not a mapping of argument names "
                       "to values", f"{where}: args")
        sm = spec.get("step_mode")
        if sm not in (None, "s", "m"):
            raise _bad(f"step_mode={_short(sm)} is not 's' or 'm'", f"{where}: step_mode")
        if t in MODULES:
            _check_args(t, args, where)
    return t


def build(spec: dict, where="architecture", _depth=0, _count=None):
    """Rebuild a module from its description (the inverse of :func:`describe`).

    Every field is checked before a constructor sees it (one-line :class:`BadCheckpoint`); nesting
    is bounded by ``MAX_DEPTH`` and the number of entries by ``MAX_LAYERS``."""
    _count = [0] if _count is None else _count
    _count[0] += 1
    if _count[0] > MAX_LAYERS:
        raise _bad(f"has more than {MAX_LAYERS} entries", where, "the file is damaged or not a model neurocomp compiles")
    if _depth > MAX_DEPTH:
        raise _bad(f"Sequential containers nest deeper than {MAX_DEPTH} levels", where,
                   "flatten the model's nesting or check the file")
    t = _check_node(spec, where)
    if t == "Graph":
        return _build_graph(spec, where, _depth, _count)
    if t == "Sequential" or t in CONTAINER_TYPES:
        children = spec.get("children", [])
        if not isinstance(children, (list, tuple)):
            raise _bad(f"'children' is {type(children).__name__}, not a list of [name, spec]", f"{where}: children")
        seq = tnn.Sequential()
        for item in children:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise BadCheckpoint("child entries must be [name, spec]", where=where)
            name = item[0]
            if not isinstance(name, str) or not name or "." in name or not name.isprintable() or len(name) > 200:
                raise _bad(f"child name {_short(name)} is not a module name (non-empty text without '.')",
                           f"{where}: children")
            if name in seq._modules:
                raise _bad(f"child name {name!r} appears twice", f"{where}: children")
            seq.add_module(name, build(item[1], f"{where}.{name}", _depth + 1, _count))
        if t == "Sequential":
            return seq
        try:
            return CONTAINER_TYPES[t](collections.OrderedDict(seq.named_children()))
        except AssertionError:
            raise _bad(f"{t} holds a multi-step layer (its children must run one step each)", where,
                       "give its children step_mode 's' or re-save with save_checkpoint") from None
    args = spec.get("args") or {}
    try:
        if t.startswith("neurocomp.nn."):
            cls = REGISTRY.get(t[len("neurocomp.nn."):])
            if cls is None:
                raise BadCheckpoint(f"unknown neurocomp.nn module {t!r}", where=where,
                                    hint="upgrade neurocomp or check the file")
            return cls(**args)
        if t not in MODULES:
            raise BadCheckpoint(f"unknown layer type {t!r}", where=where,
                                hint=f"supported: {', '.join(sorted(MODULES))}")
        return MODULES[t][2](args, step_mode=spec.get("step_mode") or "m")
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError, AttributeError, IndexError,
            OverflowError, ZeroDivisionError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items() if not isinstance(v, dict))[:200]
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else "rejected by the layer's constructor"
        raise BadCheckpoint(f"bad arguments for {t} ({shown}): {why}", where=where,
                            hint="fix the values (e.g. tau must be > 1) or re-save with save_checkpoint")


def _build_graph(spec, where, depth, count):
    """A ``"type": "Graph"`` entry: ``modules`` ([[path, spec], ...], each built as above) and ``ops``
    (:mod:`neurocomp.frontends.graphmodule`), rebuilt as neurocomp's :class:`GraphModule`."""
    from neurocomp.frontends.graphmodule import _name_ok
    modules = spec.get("modules")
    if not isinstance(modules, (list, tuple)) or not modules:
        raise _bad(f"'modules' is {type(modules).__name__}, not a non-empty list of [path, spec]", f"{where}: modules")
    layers = {}
    for i, item in enumerate(modules):
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise _bad("module entries must be [path, spec]", f"{where}: modules[{i}]")
        path = item[0]
        if not _name_ok(path):
            raise _bad(f"module path {_short(path)} is not a layer path (identifiers joined by '.')",
                       f"{where}: modules[{i}]")
        if path in layers:
            raise _bad(f"module path {path!r} appears twice", f"{where}: modules[{i}]")
        layers[path] = build(item[1], f"{where}.{path}", depth + 1, count)
    return GraphModule(layers, spec.get("ops"), where=where)


def check_architecture_size(spec, where="architecture"):
    """Build the architecture on torch's ``meta`` device (no memory) and check what its parameters
    and buffers would take against the memory budget, naming the largest layer."""
    with torch.device("meta"):
        model = build(spec, where)
    sizes = {}
    for name, m in model.named_modules():
        n = sum(t.numel() * t.element_size() for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)))
        if n:
            sizes[name] = n
    total = sum(sizes.values())
    if sizes:
        big = max(sizes, key=sizes.get)
        # building a layer initialises its weights, then the loaded ones replace them: twice the size
        memory.check(2 * total, f"the declared layers (largest: '{big}', {memory.human(sizes[big])})",
                     where=f"{where}.{big}" if big else where,
                     hint="the architecture declares layers far larger than the file's weights; check the file, or "
                          f"raise {memory.ENV} if the model is really this large")
    return total


def save_checkpoint(model, path, input_shape, timesteps, encoding="bernoulli", dataset=None, extra=None) -> str:
    """Write ``model`` in neurocomp's checkpoint format (atomically) and return the path.

    ``model`` is an ``nn.Sequential`` of supported layers, or a user class reduced to one by
    :func:`~neurocomp.frontends.usercode.as_sequential` (``forward`` is ``return self.net(x)``, or
    any forward :mod:`neurocomp.frontends.trace` reads)."""
    from neurocomp.frontends.usercode import as_sequential
    if encoding not in ENCODINGS:
        raise BadCheckpoint(f"unknown encoding {encoding!r}", where="encoding", hint=f"use one of {ENCODINGS}")
    model = as_sequential(model, input_shape=input_shape, timesteps=timesteps)
    found = timesteps_mismatch(model, timesteps)
    if found:
        path_, cls, t = found
        raise BadInput(f"{cls} was built for T={t} time steps, but timesteps={timesteps}",
                       where=f"layer '{path_}'", hint=f"pass timesteps={t} (the T the model was trained with)")
    doc = {
        "format": FORMAT, "version": VERSION,
        "architecture": describe(model),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "input_shape": [int(s) for s in input_shape],
        "timesteps": int(timesteps),
        "encoding": encoding,
    }
    if dataset is not None:
        doc["dataset"] = dataset
    if extra is not None:
        doc["extra"] = extra
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    os.close(fd)
    try:
        torch.save(doc, tmp)
        os.chmod(tmp, 0o644)          # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


PICKLE_FLAGS = "--input-shape C,H,W --timesteps T --encoding bernoulli|current|events"


_PLAIN_MODULES = {"collections", "builtins", "_codecs", "copyreg", "torch", "torch._utils", "torch._tensor",
                  "torch.serialization", "torch.nn.parameter", "numpy", "numpy.core.multiarray"}


def pickled_class(f) -> str | None:
    """The first class a zip checkpoint's pickle names that is not torch's or Python's own (the model's
    class, for a pickled module), read from its opcodes without unpickling anything."""
    try:
        z = zipfile.ZipFile(f.fh)
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        data = z.read(name)
    except (StopIteration, zipfile.BadZipFile, OSError, ValueError, KeyError):
        return None
    finally:
        f.fh.seek(0)
    strings = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings = (strings + [arg])[-2:]
                continue
            found = arg.replace(" ", ".") if op.name in ("GLOBAL", "INST") else \
                (".".join(strings) if op.name == "STACK_GLOBAL" and len(strings) == 2 else None)
            if found and found.rpartition(".")[0] not in _PLAIN_MODULES and not found.endswith("Storage"):
                return found
    except Exception:  # noqa: BLE001 - a malformed pickle: nothing to name
        return None
    return None


def _torch_load(f, path, trust_pickle, main_file=None, code_path=()):
    try:
        f.fh.seek(0)
        return torch.load(f.fh, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            AttributeError, TypeError, IndexError, KeyError, OSError, MemoryError, RecursionError) as e:
        # the archive was checked (no TorchScript) and weights_only never runs code, so any failure here
        # only means "not a safe checkpoint"
        if not trust_pickle:
            cls = pickled_class(f)
            if cls is None:
                why = str(e).strip().split("WeightsUnpickler error:")[-1].strip().splitlines() or [type(e).__name__]
                raise BadCheckpoint(f"cannot be read without unpickling it ({why[0][:160]})", where=path,
                                    hint="pass --trust-pickle if you trust whoever wrote it (unpickling can run "
                                         "code)") from None
            raise BadCheckpoint(f"holds a pickled Python object of class {cls} (torch.save of a whole model "
                                "writes one), which only unpickling can read, and unpickling can run code", where=path,
                                hint=f"if you trust whoever wrote it, pass --trust-pickle {PICKLE_FLAGS}") from None
    from neurocomp.frontends.usercode import user_unpickler
    try:
        f.fh.seek(0)
        return torch.load(f.fh, map_location="cpu", weights_only=False,
                          pickle_module=user_unpickler(path, main_file, code_path))
    except NeurocompError:
        raise
    except Exception as e2:  # noqa: BLE001 - any unpickling failure is a bad file
        raise BadCheckpoint(f"cannot be unpickled ({type(e2).__name__}: {str(e2).strip()[:160]})", where=path,
                            hint="run it with the code the model was saved with (the current folder, "
                                 "--code-path DIR or --model SCRIPT.py)") from None


class LoadedModel:
    """A model loaded back: the module (eval mode) and its facts. ``route`` says how it was saved
    (``checkpoint``, ``pickle``, ``state_dict``); ``missing`` lists the facts (``input_shape``,
    ``timesteps``, ``encoding``) a pickled module came without (its module is then as unpickled)."""

    def __init__(self, model, input_shape, timesteps, encoding, dataset=None, extra=None, path=None,
                 route="checkpoint", missing=()):
        self.model = model
        self.input_shape = tuple(input_shape)
        self.timesteps = int(timesteps)
        self.encoding = encoding
        self.dataset = dataset
        self.extra = extra or {}
        self.path = path
        self.route = route
        self.missing = tuple(missing)

    def require_facts(self):
        """Refuse a model that does not say its input shape, T or encoding, naming the flags to pass."""
        if self.missing:
            flags = " ".join({"input_shape": "--input-shape C,H,W (or N)", "timesteps": "--timesteps T",
                              "encoding": "--encoding bernoulli|current|events"}[k] for k in self.missing)
            what = "a pickled module" if self.route == "pickle" else "a state dict"
            raise BadInput(f"is {what} ({type(self.model).__name__}), which does not record its "
                           f"{', '.join(k.replace('_', ' ') for k in self.missing)}", where=self.path,
                           hint=f"pass {flags}")
        return self


SD_KEYS = ("state_dict", "model_state_dict", "model", "net")
_PREFIXES = ("module.", "_orig_mod.")


def _as_state_dict(v):
    if isinstance(v, dict) and v and all(isinstance(k, str) for k in v) and all(torch.is_tensor(x) for x in v.values()):
        for pre in _PREFIXES:                       # DataParallel / torch.compile wrappers
            if all(k.startswith(pre) for k in v):
                v = {k[len(pre):]: x for k, x in v.items()}
        return v
    return None


def find_state_dict(doc):
    """``(state dict, the key it was under or None)`` of a plain dictionary, or ``(None, None)``."""
    sd = _as_state_dict(doc)
    if sd is not None:
        return sd, None
    for k in SD_KEYS:
        sd = _as_state_dict(doc.get(k))
        if sd is not None:
            return sd, k
    return None, None


def parse_shape(v, where="--input-shape"):
    if isinstance(v, str):
        try:
            v = [int(x) for x in v.split(",")] if v.strip() else []
        except ValueError:
            raise BadInput(f"{v!r} is not a list of sizes", where=where, hint="e.g. --input-shape 2,16,16 or 784") from None
    if not isinstance(v, (list, tuple)) or not v or not all(_is_int(s) and 0 < s <= MAX_DIM for s in v):
        raise BadInput(f"{v!r} is not a list of positive sizes", where=where, hint="e.g. --input-shape 2,16,16 or 784")
    return tuple(int(s) for s in v)


def _facts(input_shape, timesteps, encoding, dataset):
    """The facts given by flags, checked (``None`` where not given)."""
    if input_shape is not None:
        input_shape = parse_shape(input_shape)
    if timesteps is not None and not (_is_int(timesteps) and 1 <= timesteps <= MAX_TIMESTEPS):
        raise BadInput(f"--timesteps {timesteps!r}", where="--timesteps", hint=f"give an integer in 1..{MAX_TIMESTEPS}")
    if encoding is not None and encoding not in ENCODINGS:
        raise BadInput(f"--encoding {encoding!r} is unknown", where="--encoding", hint=f"use one of {', '.join(ENCODINGS)}")
    if dataset is not None and not (isinstance(dataset, str) and dataset):
        raise BadInput(f"--dataset {dataset!r}", where="--dataset", hint="name a dataset, e.g. --dataset digits")
    return {"input_shape": input_shape, "timesteps": timesteps, "encoding": encoding, "dataset": dataset}


def _safe_copy(module, facts, path, route):
    """A user's module as neurocomp stores it: reduced to its layers, described, rebuilt, weights loaded."""
    from neurocomp.frontends.usercode import as_sequential
    missing = [k for k in ("input_shape", "timesteps", "encoding") if facts[k] is None]
    if missing:
        return LoadedModel(module.eval(), (), 0, None, path=path, route=route, missing=missing)
    try:
        seq = as_sequential(module, input_shape=facts["input_shape"], timesteps=facts["timesteps"])
        spec = describe(seq)
    except NeurocompError as e:                      # name the file too: `model.pt: layer 'net.3': ...`
        e.where = f"{path}: {e.where}" if e.where else str(path)
        e.args = (e.one_line(),)
        raise
    found = timesteps_mismatch(seq, facts["timesteps"])
    if found:
        raise BadInput(f"{found[1]} at layer '{found[0]}' was built for T={found[2]} time steps, but --timesteps is "
                       f"{facts['timesteps']}", where=f"{path}: --timesteps", hint=f"pass --timesteps {found[2]}")
    model = build(spec, where=f"{path}: architecture")
    model.load_state_dict({k: v.detach().cpu().clone() for k, v in seq.state_dict().items()}, strict=True)
    model.eval()
    return LoadedModel(model, facts["input_shape"], facts["timesteps"], facts["encoding"], facts["dataset"],
                       path=path, route=route)


def _load_state_dict(sd, key, spec, model_args, code_path, path):
    from neurocomp.frontends.usercode import build_user_model
    under = f" under key '{key}'" if key else ""
    if spec is None:
        raise BadCheckpoint(f"holds a state dict{under} ({len(sd)} tensors, e.g. {next(iter(sd))!r}) but not the "
                            "model's layers", where=path,
                            hint="pass --model FILE.py:NAME (the class or function in your code that builds the "
                                 f"model; --model-args JSON for its arguments) {PICKLE_FLAGS}")
    for k, v in sd.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise BadCheckpoint(f"parameter '{k}' holds NaN or inf", where=f"{path}: state dict",
                                hint="retrain or fix the weights")
    module = build_user_model(spec, model_args, code_path)
    want = module.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    if missing or unexpected:
        raise BadCheckpoint(f"the state dict{under} does not fit {type(module).__name__} built by --model {spec}: "
                            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                            f"(e.g. {unexpected[:2]})", where=path,
                            hint="name the class the weights were trained with, and its --model-args")
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise BadCheckpoint(f"the state dict{under} does not fit {type(module).__name__}: {msg[:240]}", where=path,
                            hint="pass the --model-args the model was trained with (the sizes differ)") from None
    return module


def _check_fields(doc, path):
    for key in ("architecture", "state_dict", "input_shape", "timesteps", "encoding"):
        if key not in doc:
            raise BadCheckpoint(f"missing key '{key}'", where=path,
                                hint="write checkpoints with neurocomp.save_checkpoint")
    T = doc["timesteps"]
    if isinstance(T, bool) or not isinstance(T, int) or not (1 <= T <= MAX_TIMESTEPS):
        raise BadCheckpoint(f"timesteps={T!r} is out of range", where=f"{path}: timesteps",
                            hint=f"T must be an integer in 1..{MAX_TIMESTEPS}")
    shp = doc["input_shape"]
    if not isinstance(shp, (list, tuple)) or not shp or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shp):
        raise BadCheckpoint(f"input_shape={shp!r} is invalid", where=f"{path}: input_shape",
                            hint="a list of positive integers, e.g. [1, 8, 8]")
    memory.check(memory.product(shp) * T * 4 * 4, f"one sample of input_shape {list(shp)} over {T} steps",
                 where=f"{path}: input_shape")
    if not isinstance(doc["encoding"], str) or doc["encoding"] not in ENCODINGS:
        raise BadCheckpoint(f"encoding={doc['encoding']!r} is unknown", where=f"{path}: encoding",
                            hint=f"use one of {ENCODINGS}")
    if not isinstance(doc["state_dict"], dict) or not all(isinstance(k, str) for k in doc["state_dict"]):
        raise BadCheckpoint("state_dict is not a dictionary of named tensors", where=f"{path}: state_dict",
                            hint="write checkpoints with neurocomp.save_checkpoint")
    for k, v in doc["state_dict"].items():
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
            raise BadCheckpoint(f"parameter '{k}' holds NaN or inf", where=f"{path}: state_dict",
                                hint="retrain or fix the weights")


def _tensors(doc, path, limit=1_000_000):
    """Every tensor in a loaded document with its key path (iterative, bounded)."""
    out, stack, seen = [], [(doc, "", 0)], 0
    while stack:
        v, key, depth = stack.pop()
        seen += 1
        if seen > limit or depth > MAX_DEPTH + 8:
            raise BadCheckpoint("is nested too deeply or holds too many objects", where=path,
                                hint="the file is damaged or not a neurocomp checkpoint")
        if torch.is_tensor(v):
            out.append((key, v))
        elif isinstance(v, dict):
            stack.extend((x, f"{key}.{k}" if key else str(k), depth + 1) for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, f"{key}[{i}]", depth + 1) for i, x in enumerate(v))
    return out


def check_tensor_views(doc, path):
    """Refuse tensors whose declared shape and strides reach beyond their storage, or that are expanded
    (overlapping) views holding more elements than their storage (a 3 KB file can declare a stride-0
    view of 10^10 elements; anything that touches it would allocate all of them), and check the
    element count against the memory budget. Nothing is materialised."""
    total = 0
    for key, t in _tensors(doc, path):
        where = f"{path}: {key}"
        if t.layout != torch.strided or t.device.type != "cpu":
            raise BadCheckpoint(f"tensor '{key}' is a {t.layout} tensor on {t.device}", where=where,
                                hint="save dense CPU tensors (neurocomp.save_checkpoint does)")
        elem = t.element_size()
        stor = t.untyped_storage().nbytes() // max(1, elem)
        n = t.numel()
        if n == 0:
            continue
        if any(st < 0 for st in t.stride()):
            raise BadCheckpoint(f"tensor '{key}' has negative strides", where=where, hint="re-save the weights")
        extent = t.storage_offset() + sum((sz - 1) * st for sz, st in zip(t.shape, t.stride())) + 1
        if extent > stor:
            raise BadCheckpoint(f"tensor '{key}' of shape {tuple(t.shape)} and strides {tuple(t.stride())} reaches "
                                f"element {extent} of a storage of {stor}", where=where,
                                hint="the file is damaged or crafted; re-save the weights")
        if n > stor:
            raise BadCheckpoint(f"tensor '{key}' is an expanded view: shape {tuple(t.shape)}, strides "
                                f"{tuple(t.stride())}, {n} elements over a storage of {stor}", where=where,
                                hint="save materialised tensors (tensor.clone(); neurocomp.save_checkpoint does)")
        total += n * elem
    memory.check(2 * total, "the checkpoint's tensors", where=path)


def load_checkpoint(path, trust_pickle: bool = False, input_shape=None, timesteps=None, encoding=None,
                    dataset=None, model=None, model_args=None, code_path=()) -> LoadedModel:
    """Load a model saved in any usual way (see the module docstring); safely unless ``trust_pickle``.

    The file is opened through :mod:`neurocomp.safeio` (regular file only, no FIFO) and its zip
    entries are checked in pure Python first: TorchScript archives, whose loading runs code even
    under ``weights_only=True`` in torch 2.3, never reach torch. Tensor views are checked against
    their storage and the declared layers against the memory budget before anything is built.

    ``input_shape`` / ``timesteps`` / ``encoding`` / ``dataset`` supply what a pickled module or a
    state dict does not record (a neurocomp checkpoint records them: a flag that differs is refused);
    ``model`` (``"FILE.py:NAME"``) builds the module a state dict is loaded into (it runs that file),
    and for a pickle names the script whose classes ``__main__`` refers to. A pickled module given
    without its facts comes back as unpickled, with ``missing`` naming them (``require_facts``).
    """
    code_path = tuple(code_path or ())
    facts = _facts(input_shape, timesteps, encoding, dataset)
    main_file = None
    if model is not None:
        from neurocomp.frontends.usercode import parse_model_spec
        main_file = parse_model_spec(model)[0]
    f = safeio.open_regular(path, error=BadCheckpoint, what="checkpoint",
                            hint="pass a checkpoint written by neurocomp.save_checkpoint")
    with f:
        safeio.check_checkpoint_archive(f, trust_pickle=trust_pickle)
        memory.check(2 * f.size, "loading the checkpoint", where=f.shown)
        doc = _torch_load(f, path, trust_pickle, main_file, code_path)
    if isinstance(doc, dict) and not isinstance(doc.get("format"), str):
        wrapped = next((doc[k] for k in SD_KEYS if isinstance(doc.get(k), tnn.Module)), None)
        doc = wrapped if wrapped is not None else doc
    if isinstance(doc, tnn.Module):
        if not trust_pickle:  # pragma: no cover - weights_only never returns a module
            raise BadCheckpoint("is a pickled module", where=path, hint="pass --trust-pickle")
        return _safe_copy(doc, facts, path, "pickle")
    if not isinstance(doc, dict):
        raise BadCheckpoint(f"holds a {type(doc).__name__}, not a model or its weights", where=path,
                            hint="save the model with neurocomp.save_checkpoint(model, path, input_shape=..., "
                                 "timesteps=..., encoding=...)")
    if doc.get("format") != FORMAT:
        sd, key = find_state_dict(doc)
        if sd is None:
            keys = ", ".join(repr(k) for k in list(doc)[:6]) + (", ..." if len(doc) > 6 else "")
            raise BadCheckpoint(f"holds a dictionary (keys {keys or 'none'}) with neither neurocomp's 'format' key nor "
                                f"a state dict (looked under {', '.join(SD_KEYS)})", where=path,
                                hint="save the model with neurocomp.save_checkpoint(model, path, input_shape=..., "
                                     "timesteps=..., encoding=...)")
        check_tensor_views(sd, path)
        module = _load_state_dict(sd, key, model, model_args, code_path, path)
        return _safe_copy(module, facts, path, "state_dict").require_facts()
    if doc.get("version") != VERSION:
        raise BadCheckpoint(f"checkpoint version {doc.get('version')!r} is not supported", where=path,
                            hint=f"this neurocomp reads version {VERSION}")
    check_tensor_views(doc, path)
    _check_fields(doc, path)
    _check_flags_agree(doc, facts, model, path)
    check_architecture_size(doc["architecture"], where=f"{path}: architecture")
    net = build(doc["architecture"], where=f"{path}: architecture")
    try:
        net.load_state_dict(doc["state_dict"], strict=True)
    except RuntimeError as e:
        msg = str(e).replace("\n", " ").replace("\t", "")
        raise BadCheckpoint(f"state_dict does not match the architecture: {msg[:300]}", where=f"{path}: state_dict",
                            hint="the architecture and weights come from different models; re-save")
    net.eval()
    found = timesteps_mismatch(net, doc["timesteps"])
    if found:
        raise BadCheckpoint(f"{found[1]} at layer '{found[0]}' was built for T={found[2]} time steps, but the "
                            f"checkpoint says timesteps={doc['timesteps']}", where=f"{path}: timesteps",
                            hint=f"re-save the model with neurocomp.save_checkpoint(..., timesteps={found[2]})")
    return LoadedModel(net, doc["input_shape"], doc["timesteps"], doc["encoding"],
                       doc.get("dataset") or facts["dataset"], doc.get("extra"), path=path)


def _check_flags_agree(doc, facts, model, path):
    """A neurocomp checkpoint records its model and facts: a flag that says otherwise is refused."""
    if model is not None:
        raise BadInput("is a neurocomp checkpoint, which holds its model's layers", where=f"{path}: --model",
                       hint="drop --model (it is for a state dict)")
    for key, flag in (("input_shape", "--input-shape"), ("timesteps", "--timesteps"), ("encoding", "--encoding"),
                      ("dataset", "--dataset")):
        given, have = facts[key], doc.get(key)
        if given is not None and have is not None and list(given if key == "input_shape" else [given]) != \
                list(have if key == "input_shape" else [have]):
            raise BadInput(f"{flag} {given!r} differs from the checkpoint's {key} {have!r}", where=f"{path}: {flag}",
                           hint=f"drop {flag} (the checkpoint records it)")
