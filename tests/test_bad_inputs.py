"""Bad inputs: every broken checkpoint / NIR file / artifact / inputs array / output folder gives a
one-line error naming the file, layer or field plus what to do, a non-zero exit status, no
traceback and no partial output. Untrusted pickles never run without ``--trust-pickle``.

The corpus is built by ``tests/corpus/build_corpus.py`` from one tiny valid model. Every case goes
through ``neurocomp.cli.main`` in-process (fast); a sample of each kind also runs the real CLI in a
subprocess, where stderr and the exit status are checked as a user sees them.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "corpus"))
import build_corpus  # noqa: E402

ROOT = os.path.dirname(HERE)
# Lines other libraries print on stderr at import time (not neurocomp's output).
NOISE = ("No CUDA runtime is found",)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus"))
    cases = build_corpus.build(out)
    return out, {c.name: c for c in cases}


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(NOISE)]


def _check_message(name, rc, stderr, needles) -> list[str]:
    """Problems with one failed command's result (empty list = fine)."""
    problems = []
    lines = _error_lines(stderr)
    if rc == 0:
        problems.append(f"{name}: exit status 0")
    if "Traceback" in stderr:
        problems.append(f"{name}: traceback on stderr")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"{name}: expected one 'error: ...' line, got {lines!r}")
        return problems
    line = lines[0]
    for n in needles:
        if n not in line:
            problems.append(f"{name}: message does not name {n!r}: {line}")
    if "(hint: " not in line:
        problems.append(f"{name}: message says nothing about what to do: {line}")
    return problems


def _cli(argv, capsys):
    from neurocomp.cli import main
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def _leftovers(folder):
    return [n for n in os.listdir(folder) if ".tmp-" in n or ".old-" in n]


def _subprocess(*args, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "neurocomp", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=180, **kw)


# ---- the corpus, in-process -------------------------------------------------------------------
def test_corpus_covers_every_kind(corpus):
    _, cases = corpus
    kinds = {c.kind for c in cases.values()}
    assert kinds == {"compile", "simulate", "nir", "inputs"}
    assert len(cases) >= 60


def test_good_files_are_accepted(corpus, capsys, tmp_path):
    """The corpus is built from a model that compiles and simulates: the failures are the damage."""
    out, _ = corpus
    rc, err = _cli(["compile", os.path.join(out, "good.pt"), "-o", str(tmp_path / "a"), "-q"], capsys)
    assert rc == 0, err
    rc, err = _cli(["simulate", str(tmp_path / "a"), "--backend", "reference", "-q",
                    "--inputs", os.path.join(out, "good_inputs.npy")], capsys)
    assert rc == 0, err
    from neurocomp.frontends.nir import read_nir_file
    assert len(read_nir_file(os.path.join(out, "good.nir"))) > 3


def test_bad_checkpoints(corpus, capsys):
    out, cases = corpus
    problems = []
    for c in (c for c in cases.values() if c.kind == "compile"):
        dest = os.path.join(out, "out_" + c.name)
        try:
            rc, err = _cli(["compile", c.path, "-o", dest, "-q"], capsys)
        except BaseException as e:  # an escaping exception is a traceback for the user
            problems.append(f"{c.name}: raised {type(e).__name__}: {e}")
            continue
        problems += _check_message(c.name, rc, err, c.needles)
        if os.path.exists(dest):
            problems.append(f"{c.name}: left an output folder")
    assert not _leftovers(out), _leftovers(out)
    assert not problems, "\n".join(problems)


def test_bad_artifacts(corpus, capsys):
    out, cases = corpus
    inputs = os.path.join(out, "good_inputs.npy")
    problems = []
    for c in (c for c in cases.values() if c.kind == "simulate"):
        js = os.path.join(out, c.name + ".json")
        try:
            rc, err = _cli(["simulate", c.path, "--backend", "reference", "-q", "--inputs", inputs, "--json", js],
                           capsys)
        except BaseException as e:
            problems.append(f"{c.name}: raised {type(e).__name__}: {e}")
            continue
        problems += _check_message(c.name, rc, err, c.needles)
        if os.path.exists(js):
            problems.append(f"{c.name}: wrote a result file")
    assert not problems, "\n".join(problems)


def test_bad_inputs_arrays(corpus, capsys):
    out, cases = corpus
    art = os.path.join(out, "good.art")
    problems = []
    for c in (c for c in cases.values() if c.kind == "inputs"):
        try:
            rc, err = _cli(["simulate", art, "--backend", "reference", "-q", "--inputs", c.path], capsys)
        except BaseException as e:
            problems.append(f"{c.name}: raised {type(e).__name__}: {e}")
            continue
        problems += _check_message(c.name, rc, err, c.needles)
    assert not problems, "\n".join(problems)


def test_bad_nir_files(corpus):
    from neurocomp.errors import NeurocompError
    from neurocomp.frontends.nir import read_nir_file
    _, cases = corpus
    problems = []
    for c in (c for c in cases.values() if c.kind == "nir"):
        try:
            read_nir_file(c.path)
            problems.append(f"{c.name}: accepted")
        except NeurocompError as e:
            problems += _check_message(c.name, 2, "error: " + e.one_line(), c.needles)
        except BaseException as e:
            problems.append(f"{c.name}: raised {type(e).__name__}: {e}")
    assert not problems, "\n".join(problems)


def test_nir_bomb_is_refused_before_allocation(corpus):
    """bomb.nir declares 64 GiB of weights in a file of a few hundred KiB: refused from its header."""
    import resource
    from neurocomp.errors import BadGraph
    from neurocomp.frontends.nir import read_nir_file
    out, cases = corpus
    path = cases["bomb.nir"].path
    assert os.path.getsize(path) < 2 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadGraph, match="MiB"):
        read_nir_file(path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200


# ---- the real CLI, as a user runs it ----------------------------------------------------------
@pytest.mark.parametrize("name", ["truncated.pt", "tau_zero.pt", "maxpool_on_current.pt"])
def test_cli_subprocess_checkpoints(corpus, name, tmp_path):
    _, cases = corpus
    c = cases[name]
    dest = tmp_path / "out"
    r = _subprocess("compile", c.path, "-o", str(dest))
    assert not _check_message(name, r.returncode, r.stderr, c.needles), r.stderr
    assert r.returncode == 2
    assert not dest.exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name,kind", [("art_truncated_array", "simulate"), ("inputs_missing.npy", "inputs")])
def test_cli_subprocess_artifacts(corpus, name, kind):
    out, cases = corpus
    c = cases[name]
    if kind == "simulate":
        args = ["simulate", c.path, "--inputs", os.path.join(out, "good_inputs.npy")]
    else:
        args = ["simulate", os.path.join(out, "good.art"), "--inputs", c.path]
    r = _subprocess(*args, "--backend", "reference", "-q")
    assert not _check_message(name, r.returncode, r.stderr, c.needles), r.stderr


def test_cli_debug_shows_the_traceback(corpus):
    _, cases = corpus
    r = _subprocess("--debug", "compile", cases["nan_weight.pt"].path, "-o", "/nonexistent-parent/x")
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "BadCheckpoint" in r.stderr


# ---- output folders -----------------------------------------------------------------------------
def _tree(folder):
    return {os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(folder) for f in files}


def test_output_folder_that_exists_is_kept(corpus, capsys, tmp_path):
    out, _ = corpus
    dest = tmp_path / "art"
    rc, err = _cli(["compile", os.path.join(out, "good.pt"), "-o", str(dest), "-q"], capsys)
    assert rc == 0, err
    before = _tree(dest)
    rc, err = _cli(["compile", os.path.join(out, "good.pt"), "-o", str(dest), "-q"], capsys)
    assert not _check_message("exists", rc, err, (str(dest), "exists", "--overwrite")), err
    assert _tree(dest) == before
    # a failing compile with --overwrite must not destroy the good artifact either
    rc, err = _cli(["compile", os.path.join(out, "threshold_huge.pt"), "-o", str(dest), "--overwrite", "-q"], capsys)
    assert rc == 2 and "threshold" in err
    assert _tree(dest) == before
    assert not _leftovers(tmp_path)


def test_output_path_that_is_a_file(corpus, capsys, tmp_path):
    out, _ = corpus
    dest = tmp_path / "file"
    dest.write_text("keep me")
    rc, err = _cli(["compile", os.path.join(out, "good.pt"), "-o", str(dest), "-q"], capsys)
    assert not _check_message("file", rc, err, (str(dest),)), err
    assert dest.read_text() == "keep me"


def test_output_parent_missing(corpus, capsys, tmp_path):
    out, _ = corpus
    dest = tmp_path / "no" / "such" / "art"
    rc, err = _cli(["compile", os.path.join(out, "good.pt"), "-o", str(dest), "-q"], capsys)
    assert not _check_message("parent", rc, err, ("no/such",)), err
    assert not (tmp_path / "no").exists()


def _make_read_only(folder):
    """Make ``folder`` unwritable for this user; root ignores mode bits, so root uses the immutable flag."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return lambda: os.chmod(folder, 0o755)
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", folder], capture_output=True).returncode:
        pytest.skip("running as root on a file system without the immutable flag: cannot make a read-only folder")
    return lambda: subprocess.run(["chattr", "-i", folder], capture_output=True)


@pytest.mark.parametrize("where", ["parent", "existing-output"])
def test_read_only_output_folder(corpus, tmp_path, where):
    """Compiling into a read-only folder (or over a read-only artifact) fails with one line, no partial output."""
    out, _ = corpus
    ro = tmp_path / "ro"
    ro.mkdir()
    if where == "parent":
        dest, extra = ro / "art", []
    else:
        dest, extra = ro, ["--overwrite"]
        (ro / "manifest.json").write_text("{}")
    undo = _make_read_only(str(ro))
    try:
        probe_ok = True
        try:
            (ro / "probe").write_text("x")
        except OSError:
            probe_ok = False
        assert not probe_ok, "the folder is still writable: the test would prove nothing"
        r = _subprocess("compile", os.path.join(out, "good.pt"), "-o", str(dest), *extra)
        before = sorted(os.listdir(ro))
    finally:
        undo()
    assert not _check_message("read-only", r.returncode, r.stderr, (str(tmp_path),)), r.stderr
    assert "writ" in r.stderr or "permission" in r.stderr.lower(), r.stderr
    assert before == ([] if where == "parent" else ["manifest.json"])
    assert not _leftovers(tmp_path)


# ---- untrusted pickles ------------------------------------------------------------------------
def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = build_corpus.malicious_pickle(str(tmp_path / "evil.pt"), str(marker))
    # the file really does run code when unpickled without protection (so the refusal below means something)
    probe = tmp_path / "probe"
    torch.load(build_corpus.malicious_pickle(str(tmp_path / "probe.pt"), str(probe)), weights_only=False)
    assert probe.exists()
    rc, err = _cli(["compile", bad, "-o", str(tmp_path / "art"), "-q"], capsys)
    assert not marker.exists(), "unpickling ran code without --trust-pickle"
    assert not _check_message("evil", rc, err, ("evil.pt", "--trust-pickle")), err
    assert not (tmp_path / "art").exists()
    # the same through the real CLI and through `inspect`-style loading
    r = _subprocess("compile", bad, "-o", str(tmp_path / "art2"))
    assert r.returncode == 2 and not marker.exists()
    from neurocomp.errors import BadCheckpoint
    from neurocomp.frontends.checkpoint import load_checkpoint
    with pytest.raises(BadCheckpoint):
        load_checkpoint(bad)
    assert not marker.exists()


def test_trust_pickle_runs_it_and_still_fails_cleanly(tmp_path, capsys):
    """With --trust-pickle the user accepted the risk: the code runs (documented), the result is not
    a checkpoint, and the error is still one line."""
    marker = tmp_path / "pwned"
    bad = build_corpus.malicious_pickle(str(tmp_path / "evil.pt"), str(marker))
    rc, err = _cli(["compile", bad, "-o", str(tmp_path / "art"), "--trust-pickle", "-q"], capsys)
    assert marker.exists()
    assert not _check_message("trusted", rc, err, ("evil.pt",)), err
    assert not (tmp_path / "art").exists()


def test_full_pickled_module_needs_trust_and_metadata(tmp_path, capsys):
    path = tmp_path / "module.pt"
    torch.save(build_corpus.tiny_model(), path)
    rc, err = _cli(["compile", str(path), "-o", str(tmp_path / "a"), "-q"], capsys)
    assert not _check_message("module", rc, err, ("module.pt", "--trust-pickle")), err
    rc, err = _cli(["compile", str(path), "-o", str(tmp_path / "b"), "--trust-pickle", "-q"], capsys)
    assert not _check_message("module-trusted", rc, err, ("module.pt", "--input-shape", "--timesteps", "--encoding")), err
