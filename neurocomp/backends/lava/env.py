"""The Lava environment: whether Lava runs in this Python, which Python runs it otherwise, and how
``neurocomp lava-env`` makes one.

Lava 0.10 (archived by Intel, its last release) runs on Python 3.10 with numpy < 2 only; neurocomp's
core runs on newer Pythons. Where this Python cannot import Lava, Lava runs in a second Python (see
``bridge``): the interpreter named by ``NEUROCOMP_LAVA_PYTHON``, else the environment that
``neurocomp lava-env`` made in the default place (``$XDG_CACHE_HOME/neurocomp/lava-env``, by default
``~/.cache/neurocomp/lava-env``). ``NEUROCOMP_LAVA_BRIDGE=1`` sends Lava there even when this Python has
it (tests, or to keep Lava's processes apart); ``=0`` never does.

That environment holds the pinned Lava stack and what neurocomp's Lava backend imports there
(``LAVA_ENV_PACKAGES``); neurocomp itself is not installed in it: the bridge runs the very source of the
running neurocomp there (``bridge``), so the two can never differ.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys

from neurocomp.errors import LavaEnvironmentError

ENV_PYTHON = "NEUROCOMP_LAVA_PYTHON"
ENV_BRIDGE = "NEUROCOMP_LAVA_BRIDGE"
MARKER = ".neurocomp-lava-env"          # written last: a default environment without it is incomplete
LAVA_PYTHON_VERSION = (3, 10)
# The Lava stack, pinned (the last releases), and what the backend imports beside it: numpy < 2 (Lava),
# torch (neurocomp's Lava runner; lava-dl needs it and torchvision: 0.18.1 is torch 2.3.1's), tqdm.
LAVA_ENV_PACKAGES = ("lava-nc==0.10.0", "lava-dl==0.6.0", "torch==2.3.1", "torchvision==0.18.1", "numpy>=1.24,<2",
                     "tqdm>=4.60")
TORCH_PACKAGES = ("torch==2.3.1", "torchvision==0.18.1")
MAKE_HINT = "run `neurocomp lava-env` to make one (a Python 3.10 environment with Lava), or set " \
            f"{ENV_PYTHON} to the python of an environment that has lava-nc 0.10"


def lava_here() -> bool:
    """Lava runs in this process: this Python can import it (and ``NEUROCOMP_LAVA_BRIDGE`` is not 1)."""
    forced = os.environ.get(ENV_BRIDGE, "").strip()
    if forced == "1":
        return False
    if forced == "0":
        return True
    try:
        return importlib.util.find_spec("lava.magma") is not None
    except (ImportError, ValueError):
        return False


def default_env_path() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "neurocomp", "lava-env")


def env_python(path: str) -> str:
    return os.path.join(path, "bin", "python")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def lava_python() -> str:
    """The interpreter Lava runs in when this Python has no Lava; a one-line error naming the command
    that makes one when there is none."""
    named = os.environ.get(ENV_PYTHON, "").strip()
    if named:
        if not _executable(named):
            raise LavaEnvironmentError(f"{named!r} is not an executable file", where=ENV_PYTHON,
                                       hint="point it at bin/python of a Lava environment, or unset it and "
                                            "run `neurocomp lava-env`")
        return named
    default = default_env_path()
    if _executable(env_python(default)) and os.path.isfile(os.path.join(default, MARKER)):
        return env_python(default)
    v = sys.version_info
    raise LavaEnvironmentError(f"Lava is not installed in this Python ({v.major}.{v.minor}) and there is no Lava "
                               f"environment ({ENV_PYTHON} is not set, {default} does not hold one)",
                               where="lava", hint=MAKE_HINT)


# ---- neurocomp lava-env ------------------------------------------------------------------------
def _base_python(python: str | None) -> str:
    if python:
        return python
    if sys.version_info[:2] == LAVA_PYTHON_VERSION:
        return sys.executable
    found = shutil.which("python3.10")
    if found is None:
        raise LavaEnvironmentError("no Python 3.10 found (lava-nc 0.10 runs only on Python 3.10)",
                                   where="lava-env", hint="install Python 3.10 (e.g. `pyenv install 3.10`) or "
                                                          "pass --python /path/to/python3.10")
    return found


def plan(path: str | None = None, python: str | None = None, torch_index: str | None = None) -> list[list[str]]:
    """The commands ``neurocomp lava-env`` runs, in order (the last one checks the result)."""
    path = os.path.abspath(path or default_env_path())
    py = env_python(path)
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    steps = [[_base_python(python), "-m", "venv", path]]
    rest = list(LAVA_ENV_PACKAGES)
    if torch_index:
        steps.append(pip + ["--index-url", torch_index, *TORCH_PACKAGES])
        rest = [p for p in rest if p not in TORCH_PACKAGES]
    steps.append(pip + rest)
    steps.append([py, "-c", "import lava.magma.core.run_configs, lava.lib.dl.netx, torch, numpy"])
    return steps


def _check_version(python: str) -> None:
    want = ".".join(map(str, LAVA_PYTHON_VERSION))
    try:
        r = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=60)
        got = r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        got = None
    if got != want:
        raise LavaEnvironmentError(f"{python} is {'not a working Python' if got is None else 'Python ' + got}; "
                                   f"lava-nc 0.10 runs only on Python {want}", where="--python",
                                   hint=f"pass --python /path/to/python{want}")


def make(path: str | None = None, python: str | None = None, torch_index: str | None = None,
         dry_run: bool = False, out=print) -> str:
    """Make the Lava environment at ``path`` (default: :func:`default_env_path`) and return its python.
    ``dry_run``: print the commands only. A folder that is not empty and not a Lava environment is refused;
    one this call created is removed again if a step fails or is interrupted."""
    path = os.path.abspath(path or default_env_path())
    steps = plan(path, python, torch_index)
    note = ("torch 2.3.1 on PyPI is its CUDA build for Linux x86_64 (a 743 MiB wheel and NVIDIA's CUDA libraries, "
            "about 5 GB installed); --torch-index https://download.pytorch.org/whl/cpu takes the CPU build")
    if dry_run:
        out(f"neurocomp lava-env would make {path} with:")
        for s in steps:
            out("  " + shlex.join(s))
        out(f"  then write {os.path.join(path, MARKER)}")
        if not torch_index:
            out(f"note: {note}")
        return env_python(path)
    _check_version(steps[0][0])
    exists = os.path.isdir(path) and bool(os.listdir(path))
    if exists and not os.path.isfile(os.path.join(path, MARKER)):
        raise LavaEnvironmentError("exists and is not a Lava environment made by `neurocomp lava-env`", where=path,
                                   hint="remove it, or pass --path to a new folder")
    created = not exists
    ok = False
    try:
        for i, s in enumerate(steps):
            if exists and i == 0:
                continue            # the venv is there: install again (pip keeps what is satisfied)
            out(f"[{i + 1}/{len(steps)}] {shlex.join(s)}")
            r = subprocess.run(s, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise LavaEnvironmentError(f"step {i + 1} failed with status {r.returncode}: {shlex.join(s[:6])} ...",
                                           where="lava-env", hint="see pip's message above; fix it and run "
                                                                  "`neurocomp lava-env` again")
        with open(os.path.join(path, MARKER), "w") as fh:
            fh.write(" ".join(LAVA_ENV_PACKAGES) + "\n")
        ok = True
    finally:
        if created and not ok:
            shutil.rmtree(path, ignore_errors=True)
    where = "" if path == os.path.abspath(default_env_path()) else \
        f" (not the default place: export {ENV_PYTHON}={env_python(path)})"
    out(f"Lava environment ready: {path}{where}")
    return env_python(path)
