"""Hostile files (issue 11, classes 1, 2, 7, 8 and the file-reading part of 9): no code runs, no
other file is read, nothing hangs, nothing large is allocated before its size is checked, and
malformed structure is one ``error:`` line with exit status 2, a hint, no traceback and no output.

The inputs are built by ``tests/corpus/hostile_files.py``. The risky cases run in ONE child process
under ``RLIMIT_AS`` (a bomb that got through would fail there instead of taking the machine) with a
timeout (a FIFO that blocks fails the test instead of hanging it); each attack's premise is checked
separately (the TorchScript archive really writes its marker when torch loads it, the HDF5 files
really pull in the foreign bytes when h5py reads them, the stride-0 view really declares 10^10
elements), so a passing case shows the defence worked, not that the attack was a dud.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "corpus"))
import hostile_files  # noqa: E402

ROOT = os.path.dirname(HERE)
NOISE = ("No CUDA runtime is found",)
AS_LIMIT = 6 << 30          # address space of the child (importing torch + lava maps ~3.5 GB virtual)
BATCH_TIMEOUT = 600


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hostile"))
    cases = hostile_files.build(out)
    paths = cases.pop("_paths")
    return cases, paths


@pytest.fixture(scope="module")
def results(hostile, tmp_path_factory):
    """Every case through ``neurocomp.cli.main`` in one child process under RLIMIT_AS and a timeout."""
    cases, paths = hostile
    work = tmp_path_factory.mktemp("run")
    spec, res = str(work / "spec.json"), str(work / "results.json")
    with open(spec, "w") as fh:
        json.dump([{"name": c.name, "argv": c.argv, "env": c.env} for c in cases.values()], fh)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    try:
        p = subprocess.run([sys.executable, os.path.join(HERE, "corpus", "hostile_files.py"), "--run", spec, res,
                            str(AS_LIMIT)], capture_output=True, text=True, timeout=BATCH_TIMEOUT, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        started = [ln for ln in (e.stdout or b"").decode(errors="replace").splitlines() if ln.startswith("START")]
        pytest.fail(f"the hostile cases did not finish in {BATCH_TIMEOUT} s; last started: {started[-1:]}")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    with open(res) as fh:
        return json.load(fh)


def _problems(case, r) -> list[str]:
    name = case.name
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip() and not ln.startswith(NOISE)]
    if case.expect == "ok":
        return [] if r["rc"] == 0 else [f"{name}: legal input refused (rc {r['rc']}): {lines}"]
    out = []
    if r["rc"] != 2:
        out.append(f"{name}: exit status {r['rc']}, expected 2")
    if "Traceback" in r["stderr"]:
        out.append(f"{name}: traceback: {r['stderr'][-600:]}")
        return out
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return out + [f"{name}: expected one 'error: ...' line, got {lines!r}"]
    for n in case.needles:
        if n not in lines[0]:
            out.append(f"{name}: message does not name {n!r}: {lines[0]}")
    if "(hint: " not in lines[0]:
        out.append(f"{name}: no hint: {lines[0]}")
    if case.output is not None:
        parent, base = os.path.split(case.output)
        left = [x for x in os.listdir(parent) if x == base or x.startswith(f".{base}.tmp-")]
        if left:
            out.append(f"{name}: left {left} behind")
    return out


def _check(hostile, results, cls):
    cases, _ = hostile
    chosen = [c for c in cases.values() if c.cls == cls]
    assert chosen, cls
    problems = []
    for c in chosen:
        problems += _problems(c, results[c.name])
        if results[c.name]["seconds"] > 30:
            problems.append(f"{c.name}: took {results[c.name]['seconds']:.0f} s")
    assert not problems, "\n".join(problems)


# ---- class 1: code execution ---------------------------------------------------------------------
def test_torchscript_archive_really_runs_code_in_torch_load(hostile, tmp_path):
    """The premise: torch 2.3.1's weights_only load executes this archive (CVE-2025-32434 class): it hands
    TorchScript to ``torch.jit.load``, which runs the archive's code in every torch. torch >= 2.6 refuses
    TorchScript under weights_only=True; where it does, ``torch.jit.load`` itself is shown to run the code."""
    _, paths = hostile
    marker = str(tmp_path / "marker")
    ts = hostile_files.torchscript_archive(tmp_path / "ts.pt", marker)
    assert not os.path.exists(marker)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 6):
            torch.load(ts, weights_only=True)
        else:
            with pytest.raises(RuntimeError, match="TorchScript"):
                torch.load(ts, weights_only=True)
            assert not os.path.exists(marker)
            torch.jit.load(ts)
    assert os.path.exists(marker) and open(marker, "rb").read() == b"A" * 8


def test_code_execution_classes_are_refused(hostile, results):
    _check(hostile, results, "1")
    _, paths = hostile
    assert not os.path.exists(paths["marker"]), "the TorchScript archive's code ran"


def test_torchscript_refused_by_the_real_cli(hostile, tmp_path):
    """As a user runs it: ``python -m neurocomp compile`` and ``inspect``, stderr and exit status."""
    _, paths = hostile
    marker = str(tmp_path / "cli_marker")
    ts = str(hostile_files.torchscript_archive(tmp_path / "cli_ts.pt", marker))
    for argv in (["compile", ts, "-o", str(tmp_path / "o"), "-q"], ["inspect", ts]):
        p = subprocess.run([sys.executable, "-m", "neurocomp"] + argv, capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith(NOISE)]
        assert p.returncode == 2 and len(lines) == 1 and "TorchScript" in lines[0], (p.returncode, p.stderr)
        assert "Traceback" not in p.stderr
    assert not os.path.exists(marker)
    assert not os.path.exists(tmp_path / "o")


# ---- class 2: NIR files that read other files ------------------------------------------------------
@pytest.mark.parametrize("kind", ["external_storage", "virtual", "external_link", "soft_link_outside"])
def test_hdf5_references_really_reach_the_foreign_file(hostile, tmp_path, kind):
    """The premise: read naively (h5py), each file hands over the foreign file's bytes as weights."""
    import h5py
    _, paths = hostile
    dst = tmp_path / f"{kind}.nir"
    if kind == "external_storage":
        hostile_files.nir_external_storage(paths["good_nir"], dst, paths["foreign_bin"])
    else:
        getattr(hostile_files, f"nir_{kind}")(paths["good_nir"], dst, paths["foreign_h5"])
    with h5py.File(dst, "r") as f:
        got = f[hostile_files.W][()]
    assert got.tobytes() == hostile_files.FOREIGN_BYTES


def test_nir_files_reading_other_files_are_refused(hostile, results):
    _check(hostile, results, "2")
    cases, paths = hostile
    # the unmodified foreign graph compiles: the refusals are the references' doing
    from neurocomp.cli import main
    ctrl = os.path.join(paths["out"], "control.art")
    assert main(["compile", paths["good_nir"], "-o", ctrl, "-q"]) == 0
    assert os.path.isdir(ctrl)
    # no foreign byte anywhere under the corpus folder except the foreign files themselves
    for folder, _, files in os.walk(paths["out"]):
        for fn in files:
            p = os.path.join(folder, fn)
            if p in (paths["foreign_bin"], paths["foreign_h5"]) or not os.path.isfile(p) or os.path.islink(p) \
                    or os.path.getsize(p) > 50 << 20:
                continue
            with open(p, "rb") as fh:
                assert hostile_files.FOREIGN_BYTES not in fh.read(), f"foreign bytes copied into {p}"


# ---- class 7: hangs ---------------------------------------------------------------------------------
def test_fifos_and_long_chains_do_not_hang(hostile, results):
    _check(hostile, results, "7")
    assert results["nir_delay_chain_25000"]["seconds"] < 10


def test_fifo_as_checkpoint_by_the_real_cli(hostile, tmp_path):
    fifo = str(tmp_path / "pipe.pt")
    os.mkfifo(fifo)
    p = subprocess.run([sys.executable, "-m", "neurocomp", "inspect", fifo], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert p.returncode == 2 and "FIFO" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_delay_chain_file_is_a_valid_chain(hostile):
    """The premise: the 25,000-node file is a NIR chain (every Delay linked, edges in order)."""
    import h5py
    cases, paths = hostile
    with h5py.File(os.path.join(paths["out"], "delay_chain.nir"), "r") as f:
        assert len(f["node/nodes"]) == 25_004
        edges = f["node/edges"][()]
        assert len(edges) == 25_003 and edges[0][0] == b"input" and edges[-1][1] == b"output"


def test_zero_delay_contraction_is_linear():
    """neurocomp's own pass-through contraction: 2x the chain takes ~2x the time (it was quadratic:
    every removal rescanned every edge)."""
    import nir
    from neurocomp.frontends.nir_foreign import _contract

    def chain(n):
        nodes = {"input": nir.Input(input_type=np.array([2]))}
        names = ["input"] + [f"d{i}" for i in range(n)] + ["output"]
        d = nir.Delay(delay=np.zeros(2))
        nodes.update({k: d for k in names[1:-1]})
        nodes["output"] = nir.Output(output_type=np.array([2]))
        return nodes, list(zip(names, names[1:]))

    times = {}
    for n in (25_000, 50_000):
        nodes, edges = chain(n)
        t0 = time.perf_counter()
        left, e = _contract(nodes, edges, {"input"}, {"output"})
        times[n] = time.perf_counter() - t0
        assert set(left) == {"input", "output"} and e == [("input", "output")]
    assert times[25_000] < 5 and times[50_000] < 4 * times[25_000] + 0.5, times


# ---- class 8: memory ----------------------------------------------------------------------------
def test_memory_premises(hostile):
    """The premises: a ~3 KB file declaring a 10^10-element view; a 100 GB sparse .npy using no disk;
    a few-KB NIR file declaring ~1 GiB of compressed data."""
    import h5py
    _, paths = hostile
    out = paths["out"]
    st = os.path.getsize(os.path.join(out, "stride0.pt"))
    t = torch.load(os.path.join(out, "stride0.pt"), weights_only=True)["state_dict"]["4.bias"]
    assert st < 10_000 and t.numel() == 10 ** 10 and t.stride() == (0,)
    s = os.stat(os.path.join(out, "sparse_100GB.npy"))
    assert s.st_size > 99 * 10 ** 9 and s.st_blocks * 512 < 1 << 20
    with h5py.File(os.path.join(out, "gzip_bomb.nir"), "r") as f:
        d = f[hostile_files.W]
        assert np.prod(d.shape) * d.dtype.itemsize > 1 << 29
    assert os.path.getsize(os.path.join(out, "gzip_bomb.nir")) < 1 << 20


def test_memory_bombs_are_refused_before_allocation(hostile, results):
    _check(hostile, results, "8")
    # the whole batch (every bomb included) stayed small
    assert results["_vmhwm_kb"] < 2_500_000, results["_vmhwm_kb"]


def test_two_samples_of_a_sparse_100GB_file_are_read(hostile):
    """``--samples 2`` reads two samples (here through the API, compared with the same zeros in memory)."""
    from neurocomp.api import read_inputs_file
    _, paths = hostile
    x = read_inputs_file(os.path.join(paths["out"], "sparse_100GB.npy"), hostile_files.T, hostile_files.SHAPE,
                         samples=2)
    assert x.shape == (2, hostile_files.T) + hostile_files.SHAPE and not x.any()


def test_budget_parsing_and_override(monkeypatch):
    from neurocomp import memory
    from neurocomp.errors import OutOfBudget
    assert memory.parse_size("4G") == 4 << 30 and memory.parse_size("512M") == 512 << 20
    assert memory.parse_size("1.5GiB") == 3 << 29 and memory.parse_size("1000") == 1000
    with pytest.raises(ValueError):
        memory.parse_size("lots")
    monkeypatch.setenv(memory.ENV, "1M")
    assert memory.budget() == (1 << 20, memory.ENV)
    with pytest.raises(OutOfBudget) as e:
        memory.check(2 << 20, "a test tensor", where="here")
    assert "here" in str(e.value) and "2.0 MiB" in str(e.value) and "hint" in str(e.value)
    monkeypatch.delenv(memory.ENV)
    assert memory.budget()[0] > 1 << 20          # MemAvailable on Linux


# ---- class 9: malformed fields, legal odd data --------------------------------------------------
def test_malformed_fields_are_one_line_errors(hostile, results):
    _check(hostile, results, "9")


def test_big_endian_inputs_give_the_same_result_as_native(hostile, tmp_path):
    cases, paths = hostile
    be = json.load(open(os.path.join(paths["out"], "big_endian.json")))
    native = np.load(os.path.join(paths["out"], "inputs_big_endian.npy")).astype("<f4")
    np.save(tmp_path / "native.npy", native)
    from neurocomp.api import simulate
    r = simulate(paths["art"], backend="reference", inputs=str(tmp_path / "native.npy"), progress=False)
    assert be["samples"] == r["samples"] == 3
    assert be["per_layer"] == r["per_layer"]


def test_deep_nesting_is_bounded_in_build():
    """build() itself stops at MAX_DEPTH (no RecursionError), whatever reached it."""
    from neurocomp.errors import BadCheckpoint
    from neurocomp.frontends.checkpoint import build
    with pytest.raises(BadCheckpoint, match="nest deeper"):
        build(hostile_files.deep_nesting(3000))


def test_good_files_still_load(hostile):
    """Control: the untouched checkpoint, NIR file and artifact pass every new check."""
    from neurocomp.frontends.checkpoint import load_checkpoint
    from neurocomp.frontends.nir import read_nir_file
    from neurocomp.artifact import Artifact
    _, paths = hostile
    assert load_checkpoint(paths["good"]).timesteps == hostile_files.T
    assert len(read_nir_file(paths["good_nir"])) == 3
    art = Artifact(paths["art"])
    assert art.fixed_graph.digest() == art.manifest["graphs"]["fixed"]


def test_fifo_swapped_in_after_the_stat_is_refused_on_the_descriptor(tmp_path, monkeypatch):
    """The stat said "regular file" (patched here), a FIFO is what gets opened: the O_NONBLOCK open
    returns at once and fstat refuses it (without O_NONBLOCK the open would block forever; the alarm
    turns such a regression into a failure)."""
    import signal
    from neurocomp import safeio
    from neurocomp.errors import BadInput
    fifo = str(tmp_path / "swapped")
    os.mkfifo(fifo)
    monkeypatch.setattr(safeio, "regular_file", lambda path, **kw: safeio.FileInfo(path, path, 0))

    def boom(*_):
        raise TimeoutError("open blocked on the FIFO")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(20)
    try:
        with pytest.raises(BadInput, match="FIFO"):
            safeio.open_regular(fifo, error=BadInput, what="inputs file")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_paths_from_files_are_confined(tmp_path):
    from neurocomp import safeio
    from neurocomp.errors import BadArtifact
    root = tmp_path / "art"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.json").write_text("{}")
    os.symlink("/etc/passwd", root / "sneaky.json")
    assert safeio.inside(root, "sub/x.json", error=BadArtifact) == str((root / "sub" / "x.json").resolve())
    for bad in ("../outside.json", "/etc/passwd", "sneaky.json"):
        with pytest.raises(BadArtifact, match="outside"):
            safeio.inside(root, bad, error=BadArtifact)
