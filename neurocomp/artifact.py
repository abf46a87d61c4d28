"""The compiled artifact: a versioned folder, written under a temporary name and renamed when whole.

```
OUT/
  manifest.json      format, versions, target, T, dt, encoding, input shape, dataset, time alignment,
                     sha256 of the input file, graph digests, pass records (quantization report) and
                     the sha256 of every stored file neurocomp loads; written by write_manifest only
  model.pt           the input checkpoint (so `simulate` can run the original torch model)
  model.nir          the NIR graph of the float model (neurocomp.* metadata, see backends/nir.py), or
                     the input NIR file when the artifact was compiled from one
  float/graph.json   the float IR as imported from NIR (+ arrays/*.npy)
  fixed/graph.json   the lowered, quantized IR that Lava runs (+ arrays/*.npy)
```
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from importlib.metadata import PackageNotFoundError, version

from neurocomp import jsontext, signals
from neurocomp._version import __version__
from neurocomp.errors import BadArtifact, NeurocompError, escape
from neurocomp.ir.serialize import load_graph
from neurocomp.targets import DEFAULT_FOR_BACKEND, available

FORMAT = "neurocomp.artifact"
VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 64 << 20
# Files an artifact may hold that neurocomp loads: each one present must have its sha256 in the
# manifest's "files" (a static_model.pt dropped into an artifact would otherwise change what runs).
LOADED_FILES = ("model.pt", "static_model.pt", "source_model.pt", "model.nir", "model.net")
TARGET_DIR = "target"            # a copy of a custom --target file: target/<name>.json
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_DAMAGED = "the artifact is damaged or was edited: recompile it with `neurocomp compile`"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict:
    """The versions of neurocomp and of the packages whose behaviour an artifact depends on."""
    out = {"neurocomp": __version__}
    for pkg in ("torch", "numpy", "lava-nc", "lava-dl", "nir", "spikingjelly"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def record_files(folder) -> dict:
    """``{relative path: sha256}`` of every file of ``folder`` that neurocomp may load later (the
    manifest's ``files``; :class:`Artifact` checks them)."""
    out = {}
    for name in LOADED_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            out[name] = sha256_file(os.path.join(folder, name))
    tdir = os.path.join(folder, TARGET_DIR)
    if os.path.isdir(tdir):
        for name in sorted(os.listdir(tdir)):
            out[f"{TARGET_DIR}/{name}"] = sha256_file(os.path.join(tdir, name))
    return out


def _read_small_regular(path, limit=MANIFEST_MAX_BYTES) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link, FIFO or device) of at most ``limit``
    bytes; ``FileNotFoundError`` when absent, ``ValueError`` naming the problem otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"is {st.st_size} bytes, more than the {limit >> 20} MiB allowed")
        chunks, left = [], limit + 1
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        data = b"".join(chunks)
        if len(data) > limit:
            raise ValueError(f"is more than the {limit >> 20} MiB allowed")
        return data
    finally:
        os.close(fd)


def is_artifact(folder) -> bool:
    """True when ``folder`` is a real folder (not a link) whose ``manifest.json`` is a regular file
    holding a JSON object with this format key and an integer version: the only kind of folder that
    ``--overwrite`` may replace."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
        doc = json.loads(_read_small_regular(os.path.join(folder, "manifest.json")))
    except (OSError, ValueError, RecursionError):
        return False
    v = doc.get("version") if isinstance(doc, dict) else None
    return isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(v, int) and not isinstance(v, bool)


def _short(v, n=40) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


# manifest field -> (required, check(value) -> True when well-formed, what it must be)
def _is_int(v, lo=None, hi=None):
    return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) and (hi is None or v <= hi)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _opt(check):
    return lambda v: v is None or check(v)


def _dict_of(check):
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and check(x) for k, x in v.items())


def _record(fields):
    """A dict whose listed keys, when present, pass their checks (required keys marked with '!')."""
    def ok(v):
        if not isinstance(v, dict):
            return False
        for key, check in fields.items():
            req = key.endswith("!")
            key = key.rstrip("!")
            if key not in v:
                if req:
                    return False
                continue
            if not check(v[key]):
                return False
        return True
    return ok


_str = lambda v: isinstance(v, str)  # noqa: E731
_MAP_STAT = _record({"module!": _str, "acts_on!": _str, "variation!": _is_num, "class_explained": _opt(_is_num),
                     "warning": _opt(_str)})
MANIFEST_FIELDS = {
    "timesteps": (True, lambda v: _is_int(v, 1), "a positive integer"),
    "input_shape": (True, lambda v: isinstance(v, list) and bool(v) and all(_is_int(x, 1) for x in v),
                    "a list of positive integers"),
    "encoding": (True, _str, "a string"),
    "graphs": (True, _record({"float!": lambda v: _str(v) and bool(_HEX64.match(v)),
                              "fixed!": lambda v: _str(v) and bool(_HEX64.match(v))}),
               "the digests of the float and fixed graphs ({\"float\": sha256, \"fixed\": sha256})"),
    "files": (True, _dict_of(lambda v: _str(v) and bool(_HEX64.match(v))),
              "the sha256 of every stored file ({\"model.pt\": sha256, ...})"),
    "alignment": (True, _record({"timesteps!": lambda v: _is_int(v, 1), "depth!": lambda v: _is_int(v, 0),
                                 "steps_single_sample!": lambda v: _is_int(v, 1),
                                 "layer_delay": _dict_of(lambda v: _is_int(v, 0)),
                                 "reset_offset": _dict_of(lambda v: _is_int(v, 0))}),
                  "the time alignment (timesteps, depth, steps_single_sample)"),
    "dataset": (False, _opt(_str), "a dataset name or null"),
    "target": (False, _str, "a string"),
    "hardware_target": (False, _opt(_str), "a target name"),
    "weight_bits": (False, lambda v: _is_int(v, 2, 8), "an integer 2..8"),
    "dt": (False, _opt(_is_num), "a number or null"),
    "passes": (False, lambda v: isinstance(v, list) and all(isinstance(p, dict) and _str(p.get("pass")) for p in v),
               "a list of pass records"),
    "mapping": (False, _opt(_record({
        "target!": _str, "target_file": _str, "cores!": _is_int, "chips!": _is_int,
        "notes": lambda v: isinstance(v, list) and all(_str(x) for x in v),
        "limits!": _record({"neurons_per_core!": lambda v: _is_int(v, 1), "synaptic_memory_bits!": _opt(_is_int),
                            "bits_per_synapse!": _opt(_is_int), "fan_in!": _opt(_is_int), "fan_out!": _opt(_is_int),
                            "cores_per_chip!": _opt(_is_int)}),
        "layers!": lambda v: isinstance(v, list) and all(_record({
            "layer!": _str, "synapse!": _opt(_str), "cores!": _is_int, "neurons!": _is_int, "synapses!": _is_int,
            "max_fan_in_per_neuron!": _is_int, "neurons_per_core_max!": _is_int, "split_by!": _opt(_str),
            "slices": lambda v: isinstance(v, list) and all(_record({
                "core!": lambda c: _is_int(c, 0), "chip!": lambda c: _is_int(c, 0), "start!": lambda c: _is_int(c, 0),
                "stop!": lambda c: _is_int(c, 0)})(sl) for sl in v)})(x)
            for x in v),
        "max_chips": lambda v: _is_int(v, 1)})),
                "a core mapping record or null"),
    "attention": (False, _opt(_record({"mode!": lambda v: v in ("static", "portable", "dynamic"),
                                       "calibration!": _record({"source!": _str, "samples!": _is_int}),
                                       "maps!": _dict_of(_MAP_STAT)})),
                  "an attention record or null"),
    "input_checkpoint": (False, _record({"name!": _str, "sha256!": _str}), "{name, sha256}"),
    "input_nir": (False, _record({"name!": _str, "sha256!": _str}), "{name, sha256}"),
    "versions": (False, _opt(_dict_of(_opt(_str))), "package versions"),
    "read_warnings": (False, lambda v: isinstance(v, list) and all(_str(x) for x in v), "a list of strings"),
    "attention_process_cost": (False, _opt(_dict_of(lambda v: isinstance(v, dict))), "a record or null"),
    "finetune": (False, _opt(lambda v: isinstance(v, dict)), "a fine-tuning record"),
}


def check_manifest(m: dict, mpath: str, hint: str = _DAMAGED) -> None:
    """Every field read later has the right type (:data:`MANIFEST_FIELDS`); checked when a manifest is
    written and when an artifact is opened, not where a field is used."""
    for key, (required, check, what) in MANIFEST_FIELDS.items():
        if key not in m:
            if required:
                raise BadArtifact(f"manifest.json lacks '{key}'", where=f"{mpath}: {key}", hint=hint)
            continue
        if not check(m[key]):
            raise BadArtifact(f"{key}={_short(m[key])} is not {what}", where=f"{mpath}: {key}", hint=hint)


def write_manifest(folder, fields: dict) -> dict:
    """Build and write ``folder/manifest.json``, the one writer of manifests; returns what it wrote.

    ``fields`` are what the artifact records (see :data:`MANIFEST_FIELDS`); the format, its version
    and the package versions are added unless ``fields`` carries them, and ``files`` is always the
    sha256 of every stored file neurocomp loads (:func:`record_files`): write the manifest last, when
    every file is in place. The manifest is checked as :class:`Artifact` will check it before it is
    written, so a malformed one is a neurocomp bug caught here, never an artifact that cannot be opened."""
    m = {"format": FORMAT, "version": VERSION, "versions": package_versions(), **fields,
         "files": record_files(folder)}
    path = os.path.join(folder, MANIFEST)
    check_manifest(m, path, hint="this is a neurocomp bug; please report it")
    write_json_atomically(path, m)
    return m


class Artifact:
    """An artifact folder, checked when opened: the manifest's structure (every field read later has
    its type), the graph digests and the sha256 of every stored file that neurocomp loads."""

    def __init__(self, path):
        self.path = path
        mpath = os.path.join(path, MANIFEST)
        if not os.path.isdir(path):
            raise BadArtifact("not a folder", where=path, hint="pass the folder written by `neurocomp compile`")
        try:
            self.manifest = json.loads(_read_small_regular(mpath))
        except FileNotFoundError:
            raise BadArtifact("manifest.json is missing", where=path, hint="recompile with `neurocomp compile`")
        except json.JSONDecodeError as e:
            raise BadArtifact(f"manifest.json is not valid JSON ({e.msg})", where=mpath, hint="recompile")
        except (OSError, ValueError, RecursionError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
            raise BadArtifact(f"manifest.json cannot be read ({why})", where=mpath, hint=_DAMAGED)
        if not isinstance(self.manifest, dict):
            raise BadArtifact(f"manifest.json holds a JSON {type(self.manifest).__name__}, not an object",
                              where=mpath, hint=_DAMAGED)
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise BadArtifact(f"unknown artifact format {_short(self.manifest.get('format'))} "
                              f"v{_short(self.manifest.get('version'))}", where=mpath, hint="recompile")
        self._check_manifest(mpath)
        self._check_files(mpath)
        self._float = self._fixed = None

    def _check_manifest(self, mpath):
        check_manifest(self.manifest, mpath, hint=_DAMAGED)

    def _check_files(self, mpath):
        """The sha256 of each stored file against the manifest; an unrecorded loadable file is refused."""
        files = self.manifest["files"]
        present = [n for n in LOADED_FILES if os.path.lexists(os.path.join(self.path, n))]
        tdir = os.path.join(self.path, TARGET_DIR)
        if os.path.isdir(tdir) and not os.path.islink(tdir):
            present += [f"{TARGET_DIR}/{n}" for n in os.listdir(tdir)]
        for name in present:
            if name not in files:
                raise BadArtifact(f"{escape(name)} is not recorded in manifest.json (a file was added)",
                                  where=os.path.join(self.path, name), hint=_DAMAGED)
        for name, want in files.items():
            if name not in LOADED_FILES and not (name.startswith(TARGET_DIR + "/") and
                                                 _SAFE_NAME.match(name[len(TARGET_DIR) + 1:])):
                raise BadArtifact(f"files lists {_short(name)}, which is not a file an artifact holds",
                                  where=f"{mpath}: files", hint=_DAMAGED)
            fpath = os.path.join(self.path, name)
            try:
                st = os.lstat(fpath)
            except FileNotFoundError:
                raise BadArtifact("is missing (manifest.json records it)", where=fpath, hint=_DAMAGED) from None
            if not stat.S_ISREG(st.st_mode):
                raise BadArtifact("is not a regular file (a link, folder, FIFO or device)", where=fpath,
                                  hint=_DAMAGED)
            if sha256_file(fpath) != want:
                raise BadArtifact("does not match its sha256 in manifest.json (the file was changed or damaged)",
                                  where=fpath, hint=_DAMAGED)

    def _verified(self, which):
        """Load ``float``/``fixed`` and check it against the digest the manifest recorded."""
        folder = os.path.join(self.path, which)
        g = load_graph(folder)
        want = self.manifest["graphs"][which]
        if g.digest() != want:
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

    def target_spec(self) -> str:
        """The hardware target this artifact was compiled for, confined: a target name neurocomp knows,
        or the copy of a custom target file inside the artifact (never a path written in the manifest)."""
        m = self.manifest
        name = m.get("hardware_target") or m.get("target") or "lava"
        if _SAFE_NAME.match(name):
            rel = f"{TARGET_DIR}/{name}.json"
            if rel in m["files"]:
                return os.path.join(self.path, TARGET_DIR, f"{name}.json")
            if name in DEFAULT_FOR_BACKEND or name in available():
                return name
        raise BadArtifact(f"names hardware target {_short(name)}, which is neither a known target nor a target "
                          "file stored in the artifact", where=os.path.join(self.path, "manifest.json: hardware_target"),
                          hint="recompile with --target NAME (known: lava, " + ", ".join(available()) + ")")


def _why(e) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "the disk is full: no space left on device"
    if isinstance(e, OSError) and e.errno == errno.EDQUOT:
        return "the disk quota is exhausted"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def _is_write_failure(e) -> bool:
    """An OSError, or torch.save's RuntimeError for a failed write (a full disk, an I/O error)."""
    if isinstance(e, OSError):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in ("file write failed", "failed writing",
                                                                     "unexpected pos"))


def _disk_full(folder) -> bool:
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


def _exists_error(out):
    empty = os.path.isdir(out) and not os.path.islink(out) and not os.listdir(out)
    return NeurocompError("output folder already exists" + (" (an empty folder: another neurocomp may be writing it)"
                                                            if empty else ""), where=out,
                          hint="choose another -o or pass --overwrite")


class OutputClaim:
    """An output folder claimed before any work starts, so that two runs writing the same ``-o``
    cannot both succeed and a refusal comes before minutes of work.

    Without ``overwrite`` the claim is ``os.mkdir(out)``: atomic, it fails when anything exists there
    (another run's claim included). The result is filled in a hidden temporary folder beside it and
    renamed onto the (still empty) claimed folder. With ``overwrite`` an existing ``out`` must be an
    empty folder or a neurocomp artifact (:func:`is_artifact`); it is re-checked after it is moved
    aside, so a folder swapped in meanwhile is put back untouched. :meth:`release` removes a claim that
    was never filled (only if it is still the empty folder this run created). ``replaceable``: what an
    existing folder must be for ``overwrite`` to replace it (a neurocomp artifact unless a caller that
    owns the folder says otherwise, e.g. the report's plots folder inside an artifact)."""

    def __init__(self, out: str, overwrite: bool = False, replaceable=is_artifact):
        self.path = out = os.path.abspath(out)
        self.overwrite = overwrite
        self.replaceable = replaceable
        self._made = None                     # (st_dev, st_ino) of the empty folder this run created
        parent = os.path.dirname(out)
        if os.path.lexists(out) and not overwrite:
            raise _exists_error(out)
        if not os.path.isdir(parent):
            raise NeurocompError("parent folder does not exist", where=parent, hint="create it first")
        if not os.access(parent, os.W_OK):
            raise NeurocompError("parent folder is not writable", where=parent, hint="choose a writable -o")
        if os.path.lexists(out):
            if os.path.islink(out) or not os.path.isdir(out) or (os.listdir(out) and not self.replaceable(out)):
                raise NeurocompError("exists and is not a neurocomp artifact; --overwrite replaces artifacts only",
                                     where=out, hint="choose another -o or remove it yourself")
            return                            # replaced in commit()
        try:
            os.mkdir(out, 0o755)
        except FileExistsError:
            raise _exists_error(out) from None
        except OSError as e:
            raise NeurocompError(f"cannot create a folder here ({_why(e)})", where=parent,
                                 hint="choose a writable -o") from e
        st = os.lstat(out)
        self._made = (st.st_dev, st.st_ino)

    def _still_mine(self) -> bool:
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == self._made

    def release(self) -> None:
        """Remove the claimed folder if nothing was written into it (after a failure)."""
        if self._made is not None and self._still_mine():
            try:
                os.rmdir(self.path)
            except OSError:
                pass
        self._made = None

    def _swap_in(self, tmp):
        out, parent = self.path, os.path.dirname(self.path)
        if self._made is not None:
            if not self._still_mine():
                raise NeurocompError("the claimed output folder was removed or replaced while writing", where=out,
                                     hint="run again; do not write into the output folder while neurocomp runs")
            os.rename(tmp, out)               # onto our empty claim: fails if anything was put into it
            self._made = None
            return
        if not os.path.lexists(out) or (os.path.isdir(out) and not os.path.islink(out) and not os.listdir(out)):
            os.rename(tmp, out)               # fails unless out is absent or an empty folder
            return
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
        aside = os.path.join(old, "x")
        try:
            os.rename(out, aside)
        except OSError:
            os.rmdir(old)
            raise
        if not self.replaceable(aside):       # swapped in after the check: put it back untouched
            os.rename(aside, out)
            os.rmdir(old)
            raise NeurocompError("exists and is not a neurocomp artifact; --overwrite replaces artifacts only",
                                 where=out, hint="choose another -o or remove it yourself")
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(aside, out)             # put the previous artifact back
            os.rmdir(old)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def commit(self, fill) -> str:
        """Call ``fill(tmpdir)`` and move the result into place; on any failure nothing is left."""
        out, parent = self.path, os.path.dirname(self.path)
        try:
            tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
        except OSError as e:
            self.release()
            raise NeurocompError(f"cannot create a folder here ({_why(e)})", where=parent,
                                 hint="choose a writable -o") from e
        try:
            fill(tmp)
            signals.check()       # an interrupt swallowed while filling (in a finalizer) stops the commit
            with signals.deferred():          # the renames of the swap are not cut in half
                self._swap_in(tmp)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            self.release()
            if isinstance(e, NeurocompError) and e.where and tmp in e.where:   # name -o, not the removed tmp
                e.where = e.where.replace(tmp, out)
                e.args = (e.one_line(),)
            if not isinstance(e, NeurocompError) and isinstance(e, Exception) and _is_write_failure(e):
                why = "the disk is full: no space left on device" if (
                    not isinstance(e, OSError) and _disk_full(parent)) else _why(e)
                raise NeurocompError(f"cannot write the artifact ({why})", where=out,
                                     hint="check permissions and free space of the output folder") from e
            raise
        return out


def write_atomically(out: str, fill, overwrite: bool = False, claim: OutputClaim | None = None,
                     replaceable=is_artifact) -> str:
    """Create folder ``out`` by calling ``fill(tmpdir)`` then renaming; nothing partial is left.
    ``claim``: an :class:`OutputClaim` of ``out`` taken earlier (before long work); else one is taken now
    (``overwrite`` and ``replaceable`` as for :class:`OutputClaim`)."""
    if claim is None:
        claim = OutputClaim(out, overwrite=overwrite, replaceable=replaceable)
    return claim.commit(fill)


def _file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def write_text_atomically(path: str, text: str) -> None:
    """Write the whole file or nothing: a temporary file beside it, then a rename. Failures (a folder
    at ``path``, a missing parent, no permission, a full disk) are one-line neurocomp errors."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise NeurocompError("is a folder, not a file", where=path, hint="give a file name, e.g. FOLDER/result.json")
    if not os.path.isdir(folder):
        raise NeurocompError("parent folder does not exist", where=folder, hint="create it first")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    except OSError as e:
        raise NeurocompError(f"cannot write a file here ({_why(e)})", where=folder,
                             hint="choose a writable folder") from e
    try:
        os.fchmod(fd, _FILE_MODE)           # as open() would create it (mkstemp makes it 0600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        signals.check()
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise NeurocompError(f"cannot write ({_why(e)})", where=path,
                                 hint="check permissions and free space of the folder") from e
        raise


def write_json_atomically(path: str, obj) -> None:
    write_text_atomically(path, jsontext.dumps(obj, indent=1, sort_keys=True))   # json.dumps's text, faster
