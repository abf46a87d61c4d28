"""Opening the files neurocomp reads, safely: the one place that knows what a file may be.

Every reader of a user-supplied or artifact file goes through here:

- :func:`open_regular` opens a *regular* file only. The path is ``os.stat``-ed first (a FIFO,
  device, socket or folder is refused without being opened), then opened with ``O_NONBLOCK`` and
  checked again with ``fstat`` on the descriptor, so a FIFO swapped in between cannot block the
  open; symlinks are resolved and the resolved path is reported in errors (``SafeFile.real``).
  Readers then read from the returned file object, never from the path again.
- :func:`regular_file` is the same check without keeping the file open.
- :func:`check_checkpoint_archive` looks at a torch checkpoint's zip entries in pure Python
  (:mod:`zipfile`) and refuses TorchScript archives and anything else that is not what
  ``torch.save`` writes, *before* any torch loader sees the file: torch 2.3's
  ``torch.load(weights_only=True)`` hands TorchScript archives to ``torch.jit.load``, which runs
  the archive's code (the class of CVE-2025-32434).
- :func:`read_npy_header` / :func:`load_npy` read an ``.npy`` header first, check the declared
  size against the file and the memory budget, and read only the rows asked for.
- :func:`inside` confines a path taken from a file (e.g. an artifact's manifest) to a folder.

Errors are the caller's :class:`~neurocomp.errors.NeurocompError` subclass (``error=``), one line,
naming the file.
"""
from __future__ import annotations

import ast
import fcntl
import hashlib
import os
import re
import stat
import zipfile
from dataclasses import dataclass

import numpy as np

from neurocomp import memory
from neurocomp.errors import BadCheckpoint, BadInput, NeurocompError, TooLarge

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def kind_of(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def shown(path, real=None) -> str:
    """``path``, with the file a symlink resolves to when it is another one."""
    real = real if real is not None else os.path.realpath(path)
    return str(path) if os.path.abspath(path) == real else f"{path} (a link to {real})"


@dataclass
class FileInfo:
    path: str        # as given
    real: str        # symlinks resolved
    size: int


def regular_file(path, error=BadInput, what: str = "file", max_bytes: int | None = None,
                 hint: str | None = None) -> FileInfo:
    """Check that ``path`` is a regular file (symlinks followed) of at most ``max_bytes``,
    without opening it. Raises ``error`` otherwise."""
    path = os.fspath(path)
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} not found", where=shown(path, real), hint=hint or "check the path") from None
    except OSError as e:
        raise error(f"cannot access the {what} ({e.strerror})", where=shown(path, real),
                    hint=hint or "check the path and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"is {kind_of(st.st_mode)}, not a regular {what}; neurocomp reads regular files only",
                    where=shown(path, real), hint=hint or f"pass the {what} itself")
    _check_size(path, real, st.st_size, what, max_bytes)
    return FileInfo(path, real, int(st.st_size))


def _check_size(path, real, size, what, max_bytes):
    if max_bytes is not None and size > max_bytes:
        raise TooLarge(f"the {what} is {memory.human(size)}, above the limit of {memory.human(max_bytes)}",
                       where=shown(path, real), hint=f"neurocomp reads {what}s of at most {memory.human(max_bytes)}")


class SafeFile:
    """An open regular file (``fh``, binary, positioned at 0) with its ``path``, ``real`` path and
    ``size``. A context manager that closes ``fh``."""

    def __init__(self, fh, path, real, size):
        self.fh, self.path, self.real, self.size = fh, path, real, size

    @property
    def shown(self) -> str:
        return shown(self.path, self.real)

    def close(self):
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_regular(path, error=BadInput, what: str = "file", max_bytes: int | None = None,
                 hint: str | None = None) -> SafeFile:
    """Open a regular file for reading without ever blocking on a FIFO or device (see the module
    docstring). The caller reads from ``.fh`` only."""
    info = regular_file(path, error=error, what=what, max_bytes=max_bytes, hint=hint)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(info.path, flags)
    except OSError as e:
        raise error(f"cannot open the {what} ({e.strerror})", where=shown(info.path, info.real),
                    hint=hint or "check its permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):   # replaced between the stat and the open
            raise error(f"is {kind_of(st.st_mode)}, not a regular {what}; neurocomp reads regular files only",
                        where=shown(info.path, info.real), hint=hint or f"pass the {what} itself")
        _check_size(info.path, info.real, st.st_size, what, max_bytes)
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return SafeFile(fh, info.path, info.real, int(st.st_size))


def read_bytes(path, error=BadInput, what: str = "file", max_bytes: int = 64 << 20) -> bytes:
    """The whole content of a small regular file (at most ``max_bytes``)."""
    with open_regular(path, error=error, what=what, max_bytes=max_bytes) as f:
        return f.fh.read(max_bytes + 1)


def copy_file(src, dst, error=BadInput, what: str = "file") -> str:
    """Copy a regular file (opened as :func:`open_regular` does) to ``dst``; returns the sha256 of the
    bytes copied, so a manifest records exactly what was stored."""
    h = hashlib.sha256()
    with open_regular(src, error=error, what=what) as f, open(dst, "wb") as out:
        for block in iter(lambda: f.fh.read(1 << 20), b""):
            h.update(block)
            out.write(block)
    return h.hexdigest()


def inside(root, path, error=BadInput, what: str = "path") -> str:
    """``path`` (relative to ``root`` unless absolute) resolved; refused unless it lies in ``root``."""
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root_real, real]) != root_real:
        raise error(f"the {what} {str(path)!r} points outside {root}", where=str(root),
                    hint="the folder was edited or damaged; recreate it")
    return real


# ---- torch checkpoints --------------------------------------------------------------------------
ZIP_MAGIC = b"PK\x03\x04"
# What torch.save (1.6 .. 2.x) writes under the archive's one top-level folder.
_CHECKPOINT_RECORDS = {"data.pkl", "version", ".format_version", "byteorder", ".storage_alignment",
                       ".data/serialization_id", ".data/version"}
_STORAGE_RECORD = re.compile(r"data/[0-9A-Za-z_]{1,64}")
MAX_ZIP_ENTRIES = 1_000_000


def check_checkpoint_archive(f: SafeFile, error=BadCheckpoint, trust_pickle: bool = False) -> str:
    """Look at an open checkpoint file's structure without unpickling anything; returns ``"zip"``
    (torch's format since 1.6) or ``"legacy"`` (older pickle format; only with ``trust_pickle``).

    Refused: TorchScript archives (``code/``, ``constants.pkl``: loading them runs their code),
    zips with entries ``torch.save`` never writes, compressed or encrypted entries (torch writes
    stored ones), several top-level folders, data before the archive, and anything that is neither
    a zip nor a pickle."""
    where = f.shown
    hint_resave = ("re-save the weights with neurocomp.save_checkpoint(model, path, input_shape=..., "
                   "timesteps=...) from the Python model")
    f.fh.seek(0)
    head = f.fh.read(4)
    f.fh.seek(0)
    if head != ZIP_MAGIC:
        if head[:1] == b"\x80":     # a pickle stream: torch's legacy format (or a bare pickle)
            if trust_pickle:
                return "legacy"
            raise error("is in torch's legacy (pre-1.6, non-zip) format, which neurocomp reads only with "
                        "--trust-pickle: it allocates the storage sizes the file declares before anything "
                        "can be checked", where=where,
                        hint="re-save it with torch >= 1.6 (torch.save) or neurocomp.save_checkpoint, or pass "
                             "--trust-pickle if you trust whoever wrote it")
        raise error("is not a torch checkpoint (neither a zip archive nor a pickle)" if head else "is empty",
                    where=where, hint=hint_resave)
    try:
        z = zipfile.ZipFile(f.fh)
        infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise error(f"is a damaged zip archive ({str(e).strip()[:120] or type(e).__name__})", where=where,
                    hint="the file is truncated or damaged; copy it again or re-save it") from None
    finally:
        f.fh.seek(0)
    if not infos:
        raise error("is an empty zip archive", where=where, hint=hint_resave)
    if len(infos) > MAX_ZIP_ENTRIES:
        raise TooLarge(f"holds {len(infos)} zip entries", where=where, hint=hint_resave)
    names = [i.filename for i in infos]
    prefixes = {n.split("/", 1)[0] for n in names}
    if len(prefixes) != 1 or any("/" not in n for n in names) or "" in prefixes or ".." in prefixes:
        raise error("is a zip archive but not a torch checkpoint (its entries are not in one top-level folder)",
                    where=where, hint=hint_resave)
    prefix = prefixes.pop() + "/"
    records = [n[len(prefix):] for n in names]
    if len(set(records)) != len(records):
        raise error("is a zip archive with duplicate entries (readers would disagree on its content)",
                    where=where, hint=hint_resave)
    if "constants.pkl" in records or any(r.startswith(("code/", "extra/")) for r in records):
        code = next((r for r in records if r.startswith("code/")), "constants.pkl")
        raise error(f"is a TorchScript archive (it holds {prefix}{code}); loading TorchScript runs the code it "
                    "contains, so neurocomp refuses it before any torch loader sees it", where=where,
                    hint=hint_resave + "; neurocomp compiles the Python model's weights, not TorchScript")
    odd = [r for r in records if r not in _CHECKPOINT_RECORDS and not _STORAGE_RECORD.fullmatch(r)]
    if odd:
        raise error(f"holds zip entry {prefix + odd[0]!r}, which torch.save never writes, so it is not a plain "
                    "checkpoint", where=where, hint=hint_resave)
    if "data.pkl" not in records:
        raise error(f"is a zip archive without {prefix}data.pkl, so it is not a torch checkpoint", where=where,
                    hint=hint_resave)
    if min(i.header_offset for i in infos) != 0:
        raise error("has data before its zip archive", where=where, hint=hint_resave)
    total = 0
    for i in infos:
        if i.compress_type != zipfile.ZIP_STORED or i.flag_bits & 0x1:
            raise error(f"zip entry {i.filename!r} is compressed or encrypted (torch.save stores entries as they are)",
                        where=where, hint=hint_resave)
        total += i.file_size
    if total > f.size:
        raise error(f"its zip entries declare {total} bytes in a file of {f.size}", where=where,
                    hint="the file is damaged")
    return "zip"


# ---- .npy arrays ---------------------------------------------------------------------------------
@dataclass
class NpyHeader:
    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    offset: int           # where the data starts
    nbytes: int           # declared data size


MAX_NPY_HEADER = 1 << 16


def read_npy_header(f: SafeFile, error=BadInput) -> NpyHeader:
    """Parse the header of an open ``.npy`` file (no data read) and check it against the file's size.
    Object arrays are refused (they are pickles)."""
    where = f.shown
    hint = "save one numeric array with numpy.save"
    f.fh.seek(0)
    pre = f.fh.read(10)
    if len(pre) < 10 or pre[:6] != b"\x93NUMPY":
        raise error("is not an .npy file (no NUMPY magic)" if pre else "is empty", where=where, hint=hint)
    major = pre[6]
    if major == 1:
        hlen, start = int.from_bytes(pre[8:10], "little"), 10
    elif major in (2, 3):
        more = f.fh.read(2)
        hlen, start = int.from_bytes(pre[8:10] + more, "little"), 12
    else:
        raise error(f"is an .npy file of unknown version {major}", where=where, hint=hint)
    if hlen > MAX_NPY_HEADER:
        raise error(f"has an .npy header of {hlen} bytes", where=where, hint=hint)
    raw = f.fh.read(hlen)
    if len(raw) != hlen:
        raise error("is truncated inside its .npy header", where=where, hint=hint)
    try:
        d = ast.literal_eval(raw.decode("utf8" if major == 3 else "latin1"))
        if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
            raise ValueError("header keys")
        dtype = np.lib.format.descr_to_dtype(d["descr"])
        shape = d["shape"]
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                   for s in shape) or len(shape) > 32:
            raise ValueError(f"shape {shape!r}")
        fortran = d["fortran_order"]
        if not isinstance(fortran, bool):
            raise ValueError("fortran_order")
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError, UnicodeDecodeError) as e:
        raise error(f"has a malformed .npy header ({str(e)[:80] or type(e).__name__})", where=where, hint=hint) \
            from None
    if dtype.hasobject:
        raise error("holds Python objects (a pickle), not numbers", where=where, hint=hint)
    offset = start + hlen
    nbytes = memory.product(shape) * dtype.itemsize
    if offset + nbytes > f.size:
        raise error(f"declares {tuple(shape)} {dtype} ({memory.human(nbytes)}) but the file holds "
                    f"{memory.human(max(0, f.size - offset))} of data", where=where,
                    hint="the file is truncated or its header is wrong; save it again")
    return NpyHeader(tuple(shape), dtype, fortran, offset, nbytes)


def load_npy(path, error=BadInput, what: str = "array", rows: int | None = None, budget_what: str | None = None,
             header_check=None) -> np.ndarray:
    """Read an ``.npy`` file safely: regular file, header checked (``header_check(header)`` may refuse
    it before any data is read), at most ``rows`` along the first axis, the bytes to read checked
    against the memory budget, non-native byte order converted to native."""
    with open_regular(path, error=error, what=what) as f:
        h = read_npy_header(f, error=error)
        if header_check is not None:
            header_check(h)
        shape = h.shape
        if rows is not None and shape:
            shape = (min(int(rows), shape[0]),) + shape[1:]
        count = memory.product(shape)
        memory.check(count * h.dtype.itemsize * (2 if not h.dtype.isnative else 1),
                     budget_what or f"reading {tuple(shape)} {h.dtype}", where=f.shown)
        if h.fortran_order and shape != h.shape:
            # the first axis varies fastest: read the whole file through a memory map, copy the rows
            mm = np.memmap(f.fh, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape, order="F")
            arr = np.array(mm[: shape[0]])
            del mm
        else:
            f.fh.seek(h.offset)
            buf = bytearray(count * h.dtype.itemsize)
            got = f.fh.readinto(buf)
            if got != len(buf):
                raise error("is shorter than its header says", where=f.shown, hint="save it again")
            arr = np.frombuffer(buf, dtype=h.dtype, count=count).reshape(shape, order="F" if h.fortran_order else "C")
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr
