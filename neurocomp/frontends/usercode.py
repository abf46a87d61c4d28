"""The user's own Python code: the file that builds their model, the classes a pickle names, and a
user class accepted by its children.

- :func:`build_user_model` imports ``FILE.py`` and calls ``NAME(**args)`` (``--model FILE.py:NAME``,
  ``--model-args JSON``): the module a state dict's weights are loaded into.
- :func:`user_unpickler` is the ``pickle_module`` a trusted full pickle is read with: a class the
  pickle names by module is imported with the current folder and ``--code-path`` first on
  ``sys.path``; a class pickled from a script (module ``__main__``) is looked up in the file given by
  ``--model FILE.py``, else in the ``.py`` file of the code path that defines it (found by reading
  the files' syntax, without running any of them).
- :func:`as_sequential` turns a user class into the ``nn.Sequential`` neurocomp compiles: when its
  ``forward`` is ``return self.<child>(x)`` (the child is used) or it is an ``nn.Sequential`` subclass
  that keeps Sequential's ``forward``, by its children; any other ``forward`` by tracing it
  (:mod:`neurocomp.frontends.trace`).

Importing a user's file runs their code: only ``--model`` / ``--code-path`` (and ``--trust-pickle``,
under which unpickling runs code anyway) lead here.
"""
from __future__ import annotations

import ast
import collections
import contextlib
import hashlib
import importlib.util
import inspect
import json
import os
import pickle
import sys
import textwrap
import types

import torch.nn as tnn

from neurocomp.errors import BadCheckpoint, BadInput, UnsupportedLayer

MAX_SOURCE_BYTES = 4 << 20       # a .py file larger than this is not searched for a class
_IMPORTED: dict = {}             # real path -> module (a file is run once per process)


def parse_model_spec(text: str):
    """``FILE.py:NAME`` or ``FILE.py`` -> ``(path, NAME or None)``; the file must exist."""
    path, name = str(text), None
    head, sep, tail = path.rpartition(":")
    if sep and tail.isidentifier():
        path, name = head, tail
    if not path.endswith(".py"):
        raise BadInput(f"--model {text!r} does not name a Python file", where="--model",
                       hint="pass --model FILE.py:NAME, NAME being the class or function in FILE.py that builds the model")
    if not os.path.isfile(path):
        raise BadInput("no such Python file", where=f"--model {path}",
                       hint="pass the path of the file that defines the model, e.g. --model net.py:Net")
    return path, name


@contextlib.contextmanager
def on_sys_path(dirs):
    """``dirs`` first on ``sys.path`` for the duration (the user's own imports resolve there)."""
    added = [os.path.abspath(d) for d in dirs if d]
    sys.path[:0] = added
    try:
        yield
    finally:
        for d in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


def import_file(path, code_path=()):
    """Import the user's ``path`` (this runs it) as its own module, once per process."""
    real = os.path.realpath(path)
    if real in _IMPORTED:
        return _IMPORTED[real]
    stem = os.path.splitext(os.path.basename(real))[0]
    name = f"neurocomp_user_{''.join(c if c.isalnum() else '_' for c in stem)}_" \
           f"{hashlib.sha256(real.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, real)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with on_sys_path([os.path.dirname(real), *code_path]):
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code: any failure is theirs, one line
        del sys.modules[name]
        raise BadInput(f"importing it failed ({type(e).__name__}: {_first_line(e)})", where=path,
                       hint="fix the error in that file (neurocomp runs it to build the model); "
                            "keep training code under `if __name__ == '__main__':`") from None
    _IMPORTED[real] = module
    return module


def _first_line(e) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else "no message")[:160]


def _defined(module) -> list:
    """The classes and functions ``module`` itself defines (for 'did you mean')."""
    return sorted(k for k, v in vars(module).items() if not k.startswith("_") and
                  (inspect.isclass(v) or inspect.isfunction(v)) and getattr(v, "__module__", None) == module.__name__)


def build_user_model(spec: str, args=None, code_path=()):
    """The module ``--model FILE.py:NAME`` builds, with ``--model-args`` (a JSON object of keyword
    arguments, or a JSON list of positional ones)."""
    path, name = parse_model_spec(spec)
    module = import_file(path, code_path)
    if name is None:
        raise BadInput("names no class or function", where=f"--model {spec}",
                       hint=f"pass --model {path}:NAME; {path} defines {', '.join(_defined(module)) or 'nothing'}")
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise BadInput(f"{path} defines no class or function {name!r}", where=f"--model {spec}",
                       hint=f"pass one of: {', '.join(_defined(module)) or '(nothing is defined there)'}")
    pos, kw = parse_model_args(args)
    try:
        model = factory(*pos, **kw)
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise BadInput(f"{name}({_shown_args(pos, kw)}) failed ({type(e).__name__}: {_first_line(e)})",
                       where=f"--model {spec}",
                       hint="pass the arguments the model was trained with as --model-args '{\"name\": value}'") from None
    if not isinstance(model, tnn.Module):
        raise BadInput(f"{name}({_shown_args(pos, kw)}) returned {type(model).__name__}, not a torch module",
                       where=f"--model {spec}", hint="name the class, or a function that returns the nn.Module")
    return model


def parse_model_args(args):
    if args is None or args == "":
        return [], {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            raise BadInput(f"--model-args is not JSON ({e.msg})", where="--model-args",
                           hint="pass a JSON object, e.g. --model-args '{\"channels\": 16}'") from None
    if isinstance(args, dict) and all(isinstance(k, str) for k in args):
        return [], dict(args)
    if isinstance(args, list):
        return list(args), {}
    raise BadInput(f"--model-args is a JSON {type(args).__name__}", where="--model-args",
                   hint="pass a JSON object of keyword arguments, e.g. --model-args '{\"channels\": 16}'")


def _shown_args(pos, kw) -> str:
    return ", ".join([repr(a) for a in pos] + [f"{k}={v!r}" for k, v in kw.items()])[:120]


# ---- classes a pickle names ----------------------------------------------------------------------
def defines(path, name) -> bool:
    """Whether the Python file ``path`` defines ``name`` at top level (read as syntax, not run)."""
    try:
        if os.path.getsize(path) > MAX_SOURCE_BYTES:
            return False
        with open(path, "rb") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == name for n in tree.body)


def find_defining_file(name, dirs):
    """The first ``.py`` file (sorted, not recursive) of ``dirs`` that defines ``name`` at top level."""
    for d in dirs:
        try:
            files = sorted(f for f in os.listdir(d) if f.endswith(".py"))
        except OSError:
            continue
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and defines(p, name):
                return p
    return None


def search_dirs(code_path=()):
    """Where user classes are looked for: ``--code-path`` folders, then the current folder."""
    return [*code_path, os.getcwd()]


def user_unpickler(where, main_file=None, code_path=()):
    """A ``pickle_module`` for ``torch.load`` that finds the user's classes (see the module docstring);
    a class that cannot be found is a one-line :class:`BadCheckpoint` saying what to pass."""
    dirs = search_dirs(code_path)

    class Unpickler(pickle.Unpickler):
        def find_class(self, mod_name, name):
            if mod_name == "__main__":
                return _main_class(name, where, main_file, dirs)
            try:
                with on_sys_path(dirs):
                    return super().find_class(mod_name, name)
            except ModuleNotFoundError as e:
                missing = e.name or mod_name
                raise BadCheckpoint(f"the pickle names class {mod_name}.{name}, and module {missing!r} is not "
                                    "importable", where=where,
                                    hint=f"pass --code-path DIR, the folder that holds {missing.split('.')[0]}.py "
                                         "(or its package)") from None
            except AttributeError:
                raise BadCheckpoint(f"the pickle names class {mod_name}.{name}, which module {mod_name} does not "
                                    "define (the code changed since the model was saved?)", where=where,
                                    hint=f"pass --code-path DIR holding the version of {mod_name} the model was "
                                         "saved with") from None

    mod = types.ModuleType("neurocomp_user_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda fh, **kw: Unpickler(fh, **kw).load()
    mod.__dict__.update({k: getattr(pickle, k) for k in ("UnpicklingError", "HIGHEST_PROTOCOL", "dump", "dumps")})
    return mod


def _main_class(name, where, main_file, dirs):
    """A class pickled from a script: in ``--model FILE.py``, else in the code path's file defining it."""
    path = main_file if main_file and defines(main_file, name) else find_defining_file(name, dirs)
    if path is None:
        looked = f"neither --model {main_file} nor any" if main_file else "no"
        raise BadCheckpoint(f"the model was pickled from a script that defines class {name} (module __main__), "
                            f"and {looked} .py file in {', '.join(dirs)} defines it", where=where,
                            hint=f"pass --model SCRIPT.py, the script that defines {name}")
    module = import_file(path, [d for d in dirs if d != os.getcwd()])
    cls = getattr(module, name, None)
    if cls is None:
        raise BadCheckpoint(f"{path} defines {name} only conditionally", where=where,
                            hint=f"define {name} at the top level of {os.path.basename(path)}")
    return cls


# ---- a user class accepted by its children ---------------------------------------------------------
def _forward_child(cls):
    """``(child name or None, source file, line)``: the child that ``cls.forward`` is ``return
    self.<child>(x)`` of, read from its source."""
    fwd = cls.forward
    try:
        src = textwrap.dedent(inspect.getsource(fwd))
        file, line = inspect.getsourcefile(fwd), inspect.getsourcelines(fwd)[1]
    except (OSError, TypeError):
        return None, None, None
    try:
        fn = ast.parse(src).body[0]
    except (SyntaxError, IndexError):
        return None, file, line
    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    params = [a.arg for a in fn.args.args]
    if (len(params) == 2 and len(body) == 1 and isinstance(body[0], ast.Return)
            and isinstance(body[0].value, ast.Call)):
        call = body[0].value
        f = call.func
        if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == params[0]
                and len(call.args) == 1 and isinstance(call.args[0], ast.Name) and call.args[0].id == params[1]
                and not call.keywords):
            return f.attr, file, line
    return None, file, line


class _NeedsTrace(Exception):
    """A user class whose forward is more than ``return self.<child>(x)``: the model is traced."""

    def __init__(self, what, path):
        super().__init__(what)
        self.what, self.path = what, path


def as_sequential(module, path="model", input_shape=None, timesteps=None):
    """``module`` as neurocomp compiles it: an ``nn.Sequential`` (nested ones kept), a supported layer,
    or a user class reduced to its children (see the module docstring). A model holding a class with
    any other ``forward`` is traced (:func:`neurocomp.frontends.trace.trace`) on an input of
    ``timesteps`` steps of ``input_shape``; without them it is an :class:`UnsupportedLayer` naming the
    class's ``forward`` and its source line."""
    try:
        return _structural(module, path)
    except _NeedsTrace as need:
        if input_shape is None or timesteps is None:
            return _refuse(need.what, need.path)
        from neurocomp.frontends.trace import trace
        try:
            return trace(module, input_shape, timesteps, path).sequential
        except UnsupportedLayer as chain_error:      # a forward with branches: read it as a graph
            from neurocomp.frontends.trace_graph import trace_graph
            traced, graph_error = trace_graph(module, input_shape, timesteps, path)
            if traced is not None:
                return traced.sequential
            raise (graph_error or chain_error) from None


def _structural(module, path):
    from neurocomp.frontends.modules import PER_STEP_CONTAINERS, is_library_layer, type_name
    if isinstance(module, PER_STEP_CONTAINERS):    # SpikingJelly's containers: their children, each per step
        return module
    if type(module) is tnn.Sequential:
        children = [(n, _structural(c, f"{path}.{n}" if path != "model" else n)) for n, c in module.named_children()]
        if all(c is module._modules[n] for n, c in children):
            return module
        return tnn.Sequential(collections.OrderedDict(children))
    if type_name(module) is not None:
        return module
    from neurocomp.frontends.official import recognise
    known = recognise(module, path)
    if known is not None:
        return known
    cls = type(module)
    if isinstance(module, tnn.Sequential) and cls.forward is tnn.Sequential.forward:
        return _structural(tnn.Sequential(collections.OrderedDict(module.named_children())), path)
    if is_library_layer(module):
        return module                  # a library layer neurocomp has no entry for: refused with its path later
    child, file, line = _forward_child(cls)
    if child is not None and isinstance(getattr(module, child, None), tnn.Module):
        return _structural(getattr(module, child), f"{path}.{child}" if path != "model" else child)
    at = f" ({os.path.basename(file)}:{line})" if file else ""
    if file is None:
        what = f"the source of {cls.__name__}.forward cannot be read, so its order of layers is unknown"
    else:
        what = f"{cls.__name__}.forward{at} is not `return self.<child>(x)`, so neurocomp cannot read its order of layers"
    raise _NeedsTrace(what, path)


def _refuse(what, path):
    raise UnsupportedLayer(what, where=f"layer '{path}'",
                           hint="pass the input shape and timesteps so that neurocomp traces forward, or put the "
                                "layers in an nn.Sequential attribute (e.g. self.net) and make forward "
                                "`return self.net(x)`")
