"""The compiled artifact: a versioned folder, written under a temporary name and renamed when whole.

```
OUT/
  manifest.json      format, versions, target, T, dt, encoding, input shape, dataset, time alignment,
                     sha256 of the input checkpoint, graph digests, pass records (quantization report)
  model.pt           the input checkpoint (so `simulate` can run the original torch model)
  model.nir          the NIR graph of the float model (neurocomp.* metadata, see backends/nir.py)
  float/graph.json   the float IR as imported from NIR (+ arrays/*.npy)
  fixed/graph.json   the lowered, quantized IR that Lava runs (+ arrays/*.npy)
```
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

from neurocomp import signals
from neurocomp.errors import BadArtifact, NeurocompError
from neurocomp.ir.serialize import load_graph

FORMAT = "neurocomp.artifact"
VERSION = 1


class Artifact:
    def __init__(self, path):
        self.path = path
        mpath = os.path.join(path, "manifest.json")
        if not os.path.isdir(path):
            raise BadArtifact("not a folder", where=path, hint="pass the folder written by `neurocomp compile`")
        try:
            with open(mpath) as fh:
                self.manifest = json.load(fh)
        except FileNotFoundError:
            raise BadArtifact("manifest.json is missing", where=path, hint="recompile with `neurocomp compile`")
        except json.JSONDecodeError as e:
            raise BadArtifact(f"manifest.json is not valid JSON ({e.msg})", where=mpath, hint="recompile")
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise BadArtifact(f"unknown artifact format {self.manifest.get('format')!r} "
                              f"v{self.manifest.get('version')!r}", where=mpath, hint="recompile")
        self._check_manifest(mpath)
        self._float = self._fixed = None

    def _check_manifest(self, mpath):
        m = self.manifest
        for key in ("timesteps", "input_shape", "encoding", "graphs"):
            if key not in m:
                raise BadArtifact(f"manifest.json lacks '{key}'", where=f"{mpath}: {key}",
                                  hint="the artifact is damaged: recompile it")
        T = m["timesteps"]
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise BadArtifact(f"timesteps={T!r} is not a positive integer", where=f"{mpath}: timesteps",
                              hint="the artifact is damaged: recompile it")
        shp = m["input_shape"]
        if not isinstance(shp, list) or not shp or not all(isinstance(v, int) and v > 0 for v in shp):
            raise BadArtifact(f"input_shape={shp!r} is not a list of positive integers", where=f"{mpath}: input_shape",
                              hint="the artifact is damaged: recompile it")

    def _verified(self, which):
        """Load ``float``/``fixed`` and check it against the digest the manifest recorded."""
        folder = os.path.join(self.path, which)
        g = load_graph(folder)
        want = (self.manifest.get("graphs") or {}).get(which)
        if want is not None and g.digest() != want:
            raise BadArtifact(f"the {which} graph does not match the digest in manifest.json (files were changed "
                              "or damaged)", where=folder, hint="recompile the artifact with `neurocomp compile`")
        return g

    @property
    def float_graph(self):
        if self._float is None:
            self._float = self._verified("float")
        return self._float

    @property
    def fixed_graph(self):
        if self._fixed is None:
            self._fixed = self._verified("fixed")
        return self._fixed

    @property
    def checkpoint(self):
        return os.path.join(self.path, "model.pt")


def write_atomically(out: str, fill, overwrite: bool = False) -> str:
    """Create folder ``out`` by calling ``fill(tmpdir)`` then renaming; nothing partial is left."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    if os.path.exists(out) and not overwrite:
        raise NeurocompError("output folder already exists", where=out, hint="choose another -o or pass --overwrite")
    if not os.path.isdir(parent):
        raise NeurocompError("parent folder does not exist", where=parent, hint="create it first")
    if not os.access(parent, os.W_OK):
        raise NeurocompError("parent folder is not writable", where=parent, hint="choose a writable -o")
    if os.path.exists(out) and not (os.path.isdir(out) and (not os.listdir(out) or
                                                            os.path.exists(os.path.join(out, "manifest.json")))):
        raise NeurocompError("exists and is not a neurocomp artifact; --overwrite replaces artifacts only", where=out,
                             hint="choose another -o or remove it yourself")
    try:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    except OSError as e:
        raise NeurocompError(f"cannot create a folder here ({e.strerror})", where=parent,
                             hint="choose a writable -o") from e
    try:
        fill(tmp)
        signals.check()       # an interrupt swallowed while filling (in a finalizer) stops the commit
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            try:
                os.rename(out, os.path.join(old, "x"))
            except OSError:
                os.rmdir(old)
                raise
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(os.path.join(old, "x"), out)     # put the previous artifact back
                os.rmdir(old)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise NeurocompError(f"cannot write the artifact ({e.strerror or e})", where=out,
                                 hint="check permissions and free space of the output folder") from e
        raise
    return out


def write_text_atomically(path: str, text: str) -> None:
    """Write the whole file or nothing: a temporary file beside it, then a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        signals.check()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomically(path: str, obj) -> None:
    write_text_atomically(path, json.dumps(obj, indent=1, sort_keys=True))
