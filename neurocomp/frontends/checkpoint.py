"""neurocomp's checkpoint format: a plain dictionary that ``torch.load(weights_only=True)`` reads.

```
{
  "format": "neurocomp.checkpoint", "version": 1,
  "architecture": {"type": "Sequential", "children": [["0", {"type": "spikingjelly.Conv2d",
                   "args": {...}}], ...]},           # rebuilt by neurocomp, no pickled classes
  "state_dict": {name: tensor},                     # the model's state_dict()
  "input_shape": [C, H, W] or [N],                  # one time step of one sample
  "timesteps": T,
  "encoding": "bernoulli" | "current" | "events",   # how samples become input spikes
  "dataset": "digits" | "events" | ... (optional), "extra": {...} (optional, plain types)
}
```
A full pickled ``nn.Module`` (``torch.save(model)``) is loaded only with ``trust_pickle=True``
(``--trust-pickle``): unpickling can run arbitrary code.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile

import torch
import torch.nn as tnn

from neurocomp.errors import BadCheckpoint, UnsupportedLayer, UnsupportedLayers
from neurocomp.frontends.modules import MODULES, type_name

FORMAT = "neurocomp.checkpoint"
VERSION = 1
ENCODINGS = ("bernoulli", "current", "events")
MAX_TIMESTEPS = 100_000


def describe(module, path="") -> dict:
    """Architecture description of a model (nested Sequential + supported leaves)."""
    problems = []

    def walk(m, p):
        if type(m) is tnn.Sequential:
            return {"type": "Sequential",
                    "children": [[n, walk(c, f"{p}.{n}" if p else n)] for n, c in m.named_children()]}
        name = type_name(m)
        if name is None:
            problems.append(UnsupportedLayer(f"{type(m).__name__} cannot be described in a checkpoint",
                                             where=f"layer '{p or 'model'}'",
                                             hint="build the model from nn.Sequential, SpikingJelly layers and "
                                                  "neurocomp.nn modules, or use --trust-pickle with a full module"))
            return None
        if name.startswith("neurocomp.nn."):
            return {"type": name, "args": dict(m.config)}
        return {"type": name, "args": MODULES[name][1](m), "step_mode": getattr(m, "step_mode", None)}

    spec = walk(module, path)
    if problems:
        raise problems[0] if len(problems) == 1 else UnsupportedLayers(problems)
    return spec


def build(spec: dict, where="architecture"):
    """Rebuild a module from its description (the inverse of :func:`describe`)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise BadCheckpoint("architecture entry lacks 'type'", where=where, hint="re-save with save_checkpoint")
    t = spec["type"]
    if t == "Sequential":
        seq = tnn.Sequential()
        for item in spec.get("children", []):
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise BadCheckpoint("child entries must be [name, spec]", where=where)
            seq.add_module(str(item[0]), build(item[1], f"{where}.{item[0]}"))
        return seq
    args = spec.get("args", {})
    try:
        if t.startswith("neurocomp.nn."):
            from neurocomp.nn import REGISTRY
            cls = REGISTRY.get(t[len("neurocomp.nn."):])
            if cls is None:
                raise BadCheckpoint(f"unknown neurocomp.nn module {t!r}", where=where,
                                    hint="upgrade neurocomp or check the file")
            return cls(**args)
        if t not in MODULES:
            raise BadCheckpoint(f"unknown layer type {t!r}", where=where,
                                hint=f"supported: {', '.join(sorted(MODULES))}")
        return MODULES[t][2](args, step_mode=spec.get("step_mode") or "m")
    except (TypeError, ValueError, AssertionError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items() if not isinstance(v, dict))[:200]
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else "rejected by the layer's constructor"
        raise BadCheckpoint(f"bad arguments for {t} ({shown}): {why}", where=where,
                            hint="fix the values (e.g. tau must be > 1) or re-save with save_checkpoint")


def save_checkpoint(model, path, input_shape, timesteps, encoding="bernoulli", dataset=None, extra=None) -> str:
    """Write ``model`` in neurocomp's checkpoint format (atomically) and return the path."""
    if encoding not in ENCODINGS:
        raise BadCheckpoint(f"unknown encoding {encoding!r}", where="encoding", hint=f"use one of {ENCODINGS}")
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


class LoadedModel:
    """A checkpoint loaded back: the rebuilt module (eval mode) and its facts."""

    def __init__(self, model, input_shape, timesteps, encoding, dataset=None, extra=None, path=None):
        self.model = model
        self.input_shape = tuple(input_shape)
        self.timesteps = int(timesteps)
        self.encoding = encoding
        self.dataset = dataset
        self.extra = extra or {}
        self.path = path


def _check_fields(doc, path):
    for key in ("architecture", "state_dict", "input_shape", "timesteps", "encoding"):
        if key not in doc:
            raise BadCheckpoint(f"missing key '{key}'", where=path,
                                hint="write checkpoints with neurocomp.save_checkpoint")
    T = doc["timesteps"]
    if not isinstance(T, int) or not (1 <= T <= MAX_TIMESTEPS):
        raise BadCheckpoint(f"timesteps={T!r} is out of range", where=f"{path}: timesteps",
                            hint=f"T must be an integer in 1..{MAX_TIMESTEPS}")
    shp = doc["input_shape"]
    if not isinstance(shp, (list, tuple)) or not shp or not all(isinstance(s, int) and s > 0 for s in shp):
        raise BadCheckpoint(f"input_shape={shp!r} is invalid", where=f"{path}: input_shape",
                            hint="a list of positive integers, e.g. [1, 8, 8]")
    if doc["encoding"] not in ENCODINGS:
        raise BadCheckpoint(f"encoding={doc['encoding']!r} is unknown", where=f"{path}: encoding",
                            hint=f"use one of {ENCODINGS}")
    if not isinstance(doc["state_dict"], dict):
        raise BadCheckpoint("state_dict is not a dictionary", where=f"{path}: state_dict")
    for k, v in doc["state_dict"].items():
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
            raise BadCheckpoint(f"parameter '{k}' holds NaN or inf", where=f"{path}: state_dict",
                                hint="retrain or fix the weights")


def load_checkpoint(path, trust_pickle: bool = False) -> LoadedModel:
    """Load a neurocomp checkpoint safely (``weights_only=True``).

    With ``trust_pickle=True`` a full pickled module is accepted too; the caller must then give
    input shape / T / encoding through :func:`wrap_module` (the CLI asks for them as flags).
    """
    if not os.path.isfile(path):
        raise BadCheckpoint("file not found", where=path, hint="check the path")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            AttributeError, TypeError, IndexError, KeyError, OSError, MemoryError) as e:
        # weights_only never runs code, so any failure here only means "not a safe checkpoint"
        if not trust_pickle:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadCheckpoint(f"not a safe neurocomp checkpoint ({first[:160]})", where=path,
                                hint="re-save it with neurocomp.save_checkpoint, or pass --trust-pickle if you "
                                     "trust whoever wrote it (unpickling can run code)")
        try:
            doc = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:  # noqa: BLE001 - any unpickling failure is a bad file
            raise BadCheckpoint(f"cannot be read even as a pickle ({type(e2).__name__}: {e2})", where=path,
                                hint="the file is damaged")
    if isinstance(doc, tnn.Module):
        if not trust_pickle:  # pragma: no cover - weights_only never returns a module
            raise BadCheckpoint("is a pickled module", where=path, hint="pass --trust-pickle")
        return LoadedModel(doc.eval(), input_shape=(), timesteps=0, encoding=None, path=path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadCheckpoint("is not a neurocomp checkpoint (no format key)", where=path,
                            hint="write checkpoints with neurocomp.save_checkpoint")
    if doc.get("version") != VERSION:
        raise BadCheckpoint(f"checkpoint version {doc.get('version')!r} is not supported", where=path,
                            hint=f"this neurocomp reads version {VERSION}")
    _check_fields(doc, path)
    model = build(doc["architecture"], where=f"{path}: architecture")
    try:
        model.load_state_dict(doc["state_dict"], strict=True)
    except RuntimeError as e:
        msg = str(e).replace("\n", " ").replace("\t", "")
        raise BadCheckpoint(f"state_dict does not match the architecture: {msg[:300]}", where=f"{path}: state_dict",
                            hint="the architecture and weights come from different models; re-save")
    model.eval()
    return LoadedModel(model, doc["input_shape"], doc["timesteps"], doc["encoding"], doc.get("dataset"),
                       doc.get("extra"), path=path)
