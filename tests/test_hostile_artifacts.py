"""Hostile artifacts, output folders and names (issue 11, classes 3, 4, 5, 6, 9 and 10).

Each test builds its hostile input (``tests/corpus/hostile_artifacts.py``) and asserts the safe
outcome: one ``error: ...`` line with exit status 2 and a hint, no traceback, foreign data not shown,
an unrelated folder not deleted, nothing partial left, exactly one of two writers of a folder wins.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "corpus"))
import hostile_artifacts as H  # noqa: E402
from test_bad_inputs import _check_message, _cli, _leftovers, _make_read_only, _subprocess, _tree  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hostile"))
    good = H.good_artifact(out)
    cases = {c.name: c for c in H.build(out, good)}
    return out, good, cases


def _inputs(out):
    path = os.path.join(out, "inputs.npy")
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        np.save(path, (rng.random((3, H.T) + H.SHAPE) < 0.4).astype(np.float32))
    return path


def _one_error(name, rc, err, needles=()):
    problems = _check_message(name, rc, err, needles)
    if rc not in (2, None):
        problems.append(f"{name}: exit status {rc}, expected 2")
    return problems


# ---- class 9 + 6: the manifest's structure and the required digests ---------------------------
def test_good_artifact_opens_and_records_every_stored_file(built):
    from neurocomp.artifact import Artifact, sha256_file
    _, good, _ = built
    art = Artifact(good)
    files = art.manifest["files"]
    assert set(files) == {"model.pt", "model.nir"}
    for name, digest in files.items():          # recorded digests are the stored files' own
        assert sha256_file(os.path.join(good, name)) == digest
    art.fixed_graph, art.float_graph             # and the graph digests match


def test_hostile_artifacts_are_refused_by_simulate(built, capsys):
    out, _, cases = built
    inputs = _inputs(out)
    problems = []
    for c in (c for c in cases.values() if c.kind == "simulate"):
        js = os.path.join(out, c.name + ".json")
        t0 = time.monotonic()
        try:
            rc, err = _cli(["simulate", c.path, "--backend", "reference", "-q", "--inputs", inputs, "--json", js],
                           capsys)
        except BaseException as e:  # an escaping exception is a traceback for the user
            problems.append(f"{c.name}: raised {type(e).__name__}: {e}")
            continue
        problems += _one_error(c.name, rc, err, c.needles)
        if os.path.exists(js):
            problems.append(f"{c.name}: wrote a result file")
        if time.monotonic() - t0 > 30:
            problems.append(f"{c.name}: took {time.monotonic() - t0:.0f} s")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", ["inspect", "report"])
def test_hostile_artifacts_are_refused_by_inspect_and_report(built, capsys, command):
    _, _, cases = built
    problems = []
    for c in (c for c in cases.values() if c.kind == "simulate"):
        argv = ["inspect", c.path] if command == "inspect" else ["report", c.path, "-q", "--lava-samples", "0"]
        try:
            rc, err = _cli(argv, capsys)
        except BaseException as e:
            problems.append(f"{c.name}: raised {type(e).__name__}: {e}")
            continue
        problems += _one_error(c.name, rc, err, c.needles)
        if command == "report" and os.path.exists(os.path.join(c.path, "report.md")):
            problems.append(f"{c.name}: wrote a report")
    assert not problems, "\n".join(problems)


def test_negated_weights_with_graphs_null_never_simulate(built, capsys):
    """The issue's finding: ``"graphs": null`` skipped the digest check and negated weights ran."""
    out, _, cases = built
    c = cases["dig_graphs_null_negated"]
    rc, err = _cli(["simulate", c.path, "--backend", "reference", "-q", "--inputs", _inputs(out)], capsys)
    assert rc == 2 and "graphs" in err, err
    # the same negated arrays with the digests kept are caught by the digest itself
    p = _copy(built[1], os.path.join(out, "negated_with_digest"))
    H.negate_fixed_arrays(p)
    rc, err = _cli(["simulate", p, "--backend", "reference", "-q", "--inputs", _inputs(out)], capsys)
    assert not _one_error("negated", rc, err, ("fixed", "digest")), err


def test_replaced_model_pt_is_refused_in_a_subprocess(built):
    out, _, cases = built
    c = cases["dig_model_pt_replaced"]
    r = _subprocess("simulate", c.path, "--backend", "reference", "-q", "--inputs", _inputs(out))
    assert not _one_error(c.name, r.returncode, r.stderr, ("model.pt", "sha256")), r.stderr
    assert r.returncode == 2 and r.stdout == ""


def test_finetune_refuses_a_tampered_source(built, capsys, tmp_path):
    _, _, cases = built
    c = cases["dig_model_pt_replaced"]
    rc, err = _cli(["finetune", c.path, "-o", str(tmp_path / "ft"), "-q", "--epochs", "1"], capsys)
    assert not _one_error(c.name, rc, err, ("model.pt", "sha256")), err
    assert os.listdir(tmp_path) == []


# ---- class 4: targets and paths from an artifact are confined ---------------------------------
def _copy(good, dest):
    shutil.copytree(good, dest)
    return str(dest)


@pytest.mark.parametrize("value", ["FOREIGN", "../../FOREIGN", "loihi2/../../FOREIGN", "/etc/passwd"])
def test_report_never_opens_a_target_path_from_the_manifest(built, tmp_path, value, monkeypatch):
    import builtins

    from neurocomp.errors import NeurocompError
    from neurocomp.measure import measure
    out, good, _ = built
    foreign = H.foreign_target_file(str(tmp_path / "foreign.json"))
    value = value.replace("FOREIGN", foreign)
    art = _copy(good, tmp_path / "art")
    m = H.read_manifest(art)
    m["hardware_target"] = value
    H.write_manifest(art, m)
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    x = np.swapaxes(np.load(_inputs(out)), 0, 1)
    with pytest.raises(NeurocompError) as e:
        measure(art, inputs=x, lava_samples=0, progress=False, bits=())
    monkeypatch.undo()
    line = e.value.one_line()
    assert "hardware_target" in line and "(hint: " in line
    assert H.SECRET not in line
    assert not any(os.path.realpath(f) in (foreign, "/etc/passwd") for f in opened), opened
    assert not any(n.startswith(".report") for n in os.listdir(art))


def test_custom_target_file_is_kept_inside_the_artifact(built, tmp_path, capsys):
    """A --target FILE is copied into the artifact (recorded by sha256); report uses the copy, and
    works after the original file is gone."""
    from neurocomp.artifact import Artifact
    from neurocomp.targets import load_target
    out, _, _ = built
    target = H.custom_target(str(tmp_path / "mychip.json"))
    art = str(tmp_path / "art")
    rc, err = _cli(["compile", os.path.join(out, "good_for_art.pt"), "--target", target, "-o", art, "-q"], capsys)
    assert rc == 0, err
    os.unlink(target)
    a = Artifact(art)
    spec = a.target_spec()
    assert os.path.dirname(spec) == os.path.join(art, "target") and load_target(spec).name == "mychip"
    assert "target/mychip.json" in a.manifest["files"]
    with open(os.path.join(art, "target", "mychip.json"), "a") as fh:   # tampering with the copy
        fh.write(" ")
    rc, err = _cli(["inspect", art], capsys)
    assert not _one_error("target copy", rc, err, ("mychip.json", "sha256")), err


# ---- class 5: strings from files are shown escaped --------------------------------------------
def test_escape_helper():
    from neurocomp.errors import BadGraph, escape
    assert escape("a\nb\x1b[2J\u202e\x07\tc") == "a\\nb\\x1b[2J\\u202e\\x07\\tc"
    assert escape("plain name 0.1 é") == "plain name 0.1 é"
    assert escape(escape(H.HOSTILE_NAME)) == escape(H.HOSTILE_NAME)
    line = BadGraph("bad", where=f"layer '{H.HOSTILE_NAME}'", hint="fix\nit").one_line()
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line
    assert "\\nerror: forged line\\x1b[2J" in line


def _clean(text):
    return "\x1b" not in text and "\u202e" not in text and "\x07" not in text


def test_newline_in_a_layer_name_cannot_forge_an_error_line(tmp_path):
    ckpt = H.hostile_name_checkpoint(str(tmp_path / "soft.pt"), soft_reset=True)
    r = _subprocess("compile", ckpt, "-o", str(tmp_path / "art"))
    assert not _one_error("soft", r.returncode, r.stderr, ("soft.pt", "\\nerror: forged line")), r.stderr
    assert r.stderr.startswith("error: ")
    assert _clean(r.stderr)
    assert not (tmp_path / "art").exists() and os.listdir(tmp_path) == ["soft.pt"]


def test_checkpoint_child_names_must_be_printable(tmp_path):
    ckpt = H.hostile_name_checkpoint(str(tmp_path / "named.pt"))
    r = _subprocess("compile", ckpt, "-o", str(tmp_path / "art"))
    assert not _one_error("named", r.returncode, r.stderr, ("named.pt", "\\nerror: forged line")), r.stderr
    assert _clean(r.stderr) and not (tmp_path / "art").exists()


def test_compile_table_and_inspect_escape_layer_names(tmp_path, capsys):
    ckpt = H.hostile_name_nir(str(tmp_path / "named.nir"))
    art = str(tmp_path / "art")
    from neurocomp.cli import main
    capsys.readouterr()
    rc = main(["compile", ckpt, "--dt", "1e-3", "--timesteps", "8", "-o", art + "2"])
    shown = capsys.readouterr()
    assert rc == 0, shown.err
    assert _clean(shown.out) and "\\nerror: forged line\\x1b[2J" in shown.out
    assert not any(line.startswith("error:") for line in shown.out.splitlines())
    # array files are named by index, never by the hostile name
    arrays = os.listdir(os.path.join(art + "2", "fixed", "arrays"))
    assert arrays and all(_clean(f) and "\n" not in f for f in arrays)
    for path in (art + "2",):                # inspect of the artifact (a foreign .nir file needs --dt)
        rc = main(["inspect", path])
        shown = capsys.readouterr()
        assert rc == 0 and _clean(shown.out) and "\\nerror: forged line" in shown.out, shown


def test_inspect_raw_module_text_is_escaped(tmp_path, capsys):
    """``inspect --trust-pickle`` of a pickled module prints the module's text: torch prints child
    names raw, neurocomp's module_text escapes them (the file is our own, so trusting it is safe)."""
    import torch

    from neurocomp.cli import main
    module = H.hostile_name_module()
    assert H.HOSTILE_NAME in str(module)                      # what torch itself would print
    torch.save(module, str(tmp_path / "pickled.pt"))
    rc = main(["inspect", str(tmp_path / "pickled.pt"), "--trust-pickle"])
    shown = capsys.readouterr()
    assert rc == 0, shown.err
    assert "pickled module" in shown.out and "LIFNode" in shown.out
    assert _clean(shown.out) and "(x\\nerror: forged line\\x1b[2J" in shown.out
    assert not any(line.startswith("error:") for line in shown.out.splitlines())
    from neurocomp.inspect import module_text
    assert module_text(module).replace("\\n", "").count("(") == str(module).replace("\n", "").count("(")


def test_manifest_strings_are_escaped_in_inspect_and_errors(built, tmp_path, capsys):
    from neurocomp.cli import main
    out, good, _ = built
    art = _copy(good, tmp_path / "art")
    m = H.read_manifest(art)
    m["target"] = H.HOSTILE_NAME
    m["input_checkpoint"]["name"] = H.HOSTILE_NAME
    H.write_manifest(art, m)
    assert main(["inspect", art]) == 0
    shown = capsys.readouterr().out
    assert _clean(shown) and "\\nerror: forged line" in shown
    m["dataset"] = H.HOSTILE_NAME                      # an unknown dataset: the error quotes it
    H.write_manifest(art, m)
    rc, err = _cli(["simulate", art, "--backend", "reference", "-q"], capsys)
    assert not _one_error("dataset", rc, err, ("dataset",)), err
    assert _clean(err)


# ---- class 3 + 10: --overwrite and the output claim -------------------------------------------
def test_overwrite_replaces_only_artifacts(built, capsys, tmp_path):
    out, good, _ = built
    victims = H.overwrite_victims(str(tmp_path), good)
    ckpt = os.path.join(out, "good_for_art.pt")
    problems = []
    for name, path in victims.items():
        before = _tree(path)
        rc, err = _cli(["compile", ckpt, "-o", path, "--overwrite", "-q"], capsys)
        problems += _one_error(name, rc, err, ("not a neurocomp artifact",))
        if _tree(path) != before:
            problems.append(f"{name}: the folder was changed")
    assert not problems, "\n".join(problems)
    assert _tree(good) and os.path.islink(victims["link_to_artifact"])
    assert not _leftovers(str(tmp_path))
    # a real artifact is replaced, and an empty folder is filled
    art = _copy(good, tmp_path / "real")
    os.unlink(os.path.join(art, "model.nir"))            # so we can tell the new one from the old one
    rc, err = _cli(["compile", ckpt, "-o", art, "--overwrite", "-q"], capsys)
    assert rc == 0, err
    assert os.path.exists(os.path.join(art, "model.nir"))
    os.mkdir(tmp_path / "empty")
    rc, err = _cli(["compile", ckpt, "-o", str(tmp_path / "empty"), "--overwrite", "-q"], capsys)
    assert rc == 0, err
    assert not _leftovers(str(tmp_path))


def test_overwrite_rechecks_the_folder_it_moves_aside(built, tmp_path):
    """The folder checked at the start and the one replaced at the end may differ (swapped meanwhile):
    the one moved aside is checked again and put back untouched."""
    from neurocomp.artifact import write_atomically
    from neurocomp.errors import NeurocompError
    _, good, _ = built
    dest = _copy(good, tmp_path / "art")

    def fill(tmp):   # while we work, someone replaces the artifact with their own folder
        shutil.rmtree(dest)
        os.mkdir(dest)
        with open(os.path.join(dest, "manifest.json"), "w") as fh:
            fh.write("{}")
        with open(os.path.join(tmp, "manifest.json"), "w") as fh:
            fh.write("{}")

    with pytest.raises(NeurocompError, match="not a neurocomp artifact"):
        write_atomically(dest, fill, overwrite=True)
    assert sorted(os.listdir(dest)) == ["manifest.json"] and open(os.path.join(dest, "manifest.json")).read() == "{}"
    assert not _leftovers(str(tmp_path))


def test_second_writer_of_a_claimed_folder_loses(built, capsys, tmp_path):
    """The race, step by step: while one compile holds its claim on -o (an empty folder made with
    mkdir), a second compile without --overwrite is refused; the first then completes."""
    from neurocomp.artifact import Artifact, OutputClaim
    out, good, _ = built
    dest = str(tmp_path / "art")
    first = OutputClaim(dest)
    rc, err = _cli(["compile", os.path.join(out, "good_for_art.pt"), "-o", dest, "-q"], capsys)
    assert not _one_error("second", rc, err, (dest, "exists", "another neurocomp")), err
    first.commit(lambda tmp: shutil.copytree(good, tmp, dirs_exist_ok=True))
    Artifact(dest).fixed_graph
    # a second writer *with* --overwrite replaces the empty claim: then the first one must fail
    dest2 = str(tmp_path / "art2")
    first = OutputClaim(dest2)
    rc, err = _cli(["compile", os.path.join(out, "good_for_art.pt"), "-o", dest2, "--overwrite", "-q"], capsys)
    assert rc == 0, err
    from neurocomp.errors import NeurocompError
    with pytest.raises(NeurocompError, match="replaced"):
        first.commit(lambda tmp: shutil.copytree(good, tmp, dirs_exist_ok=True))
    Artifact(dest2).fixed_graph
    assert not _leftovers(str(tmp_path))


def test_two_concurrent_compiles_exactly_one_wins(built, tmp_path):
    out, _, _ = built
    dest = str(tmp_path / "art")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([sys.executable, "-m", "neurocomp", "compile", os.path.join(out, "good_for_art.pt"),
                               "-o", dest, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    rcs = sorted(rc for rc, _ in results)
    assert rcs == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert not _one_error("loser", 2, loser, (dest, "exists")), loser
    from neurocomp.artifact import Artifact
    Artifact(dest).fixed_graph
    assert sorted(os.listdir(tmp_path)) == ["art"]


def test_failed_compile_releases_its_claim(built, capsys, tmp_path):
    """A compile that fails after claiming -o leaves nothing (the claim is removed)."""
    out, _, _ = built
    ckpt = H.hostile_name_checkpoint(str(tmp_path / "soft.pt"), soft_reset=True)
    rc, err = _cli(["compile", ckpt, "-o", str(tmp_path / "art"), "-q"], capsys)
    assert rc == 2, err
    assert os.listdir(tmp_path) == ["soft.pt"]


def test_finetune_refuses_an_existing_output_before_training(tmp_path, capsys, monkeypatch):
    import neurocomp.training.finetune as ft
    root = os.path.dirname(HERE)
    art = str(tmp_path / "plain")
    rc, err = _cli(["compile", os.path.join(root, "models", "digits_plain", "model.pt"), "-o", art, "-q"], capsys)
    assert rc == 0, err
    trained = []
    monkeypatch.setattr(ft, "train_qat", lambda *a, **k: trained.append(1) or pytest.fail("trained"))
    monkeypatch.setattr(ft, "_accuracies", lambda *a, **k: trained.append(1) or pytest.fail("measured"))
    victim = tmp_path / "mine"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep")
    for extra in ([], ["--overwrite"]):
        rc, err = _cli(["finetune", art, "-o", str(victim), "-q", "--epochs", "1", *extra], capsys)
        assert not _one_error("finetune", rc, err, (str(victim),)), err
        assert ("exists" in err) if not extra else ("not a neurocomp artifact" in err)
    existing = _copy(art, tmp_path / "other_art")
    rc, err = _cli(["finetune", art, "-o", existing, "-q", "--epochs", "1"], capsys)
    assert not _one_error("finetune-art", rc, err, ("exists", "--overwrite")), err
    assert trained == [] and (victim / "notes.txt").read_text() == "keep"
    assert not _leftovers(str(tmp_path)) and not any(n.startswith(".finetune") for n in os.listdir(tmp_path))


# ---- class 9: output files, full disks, read-only artifacts, ranges, numeric flags -------------
def test_json_path_that_is_a_folder_or_has_no_parent(built, capsys, tmp_path):
    out, good, _ = built
    for js, needle in ((str(tmp_path), "folder"), (str(tmp_path / "no" / "such" / "r.json"), "parent")):
        rc, err = _cli(["simulate", good, "--backend", "reference", "-q", "--inputs", _inputs(out), "--json", js],
                       capsys)
        assert not _one_error(js, rc, err, ("--json", needle)), err
    assert not (tmp_path / "no").exists() and os.listdir(tmp_path) == []


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["npy", "manifest"])
def test_full_disk_while_compiling_leaves_nothing(built, capsys, tmp_path, monkeypatch, where):
    out, _, _ = built
    if where == "npy":
        import neurocomp.ir.serialize as ser
        real = ser.np.save
        calls = []

        def save(fh, arr, **kw):   # the third array write finds the disk full
            calls.append(1)
            if len(calls) == 3:
                _enospc()
            return real(fh, arr, **kw)
        monkeypatch.setattr(ser.np, "save", save)
    else:                          # the manifest, the last file written
        real_fdopen = os.fdopen        # only writes fail: neurocomp reads its inputs through os.fdopen too
        monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: _enospc() if "w" in mode
                            else real_fdopen(fd, mode, *a, **k))
    dest = str(tmp_path / "art")
    rc, err = _cli(["compile", os.path.join(out, "good_for_art.pt"), "-o", dest, "-q"], capsys)
    monkeypatch.undo()
    assert not _one_error(where, rc, err, (dest, "cannot write", "disk is full")), err
    assert ".tmp-" not in err                    # names -o, not the temporary folder that is gone
    assert not os.path.exists(dest) and not _leftovers(str(tmp_path)) and os.listdir(tmp_path) == []


def test_torch_save_failing_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """torch.save reports a failed write as RuntimeError("... unexpected pos ..."), not OSError."""
    import torch

    from neurocomp.artifact import OutputClaim
    from neurocomp.errors import NeurocompError
    from neurocomp.frontends.checkpoint import save_checkpoint

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 384 vs 342")
    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr("neurocomp.artifact._disk_full", lambda folder: True)
    dest = str(tmp_path / "art")
    claim = OutputClaim(dest)
    with pytest.raises(NeurocompError) as e:
        claim.commit(lambda tmp: save_checkpoint(H.tiny_model(), os.path.join(tmp, "static_model.pt"),
                                                 input_shape=H.SHAPE, timesteps=H.T))
    assert "disk is full" in e.value.one_line() and dest in e.value.one_line()
    assert os.listdir(tmp_path) == []


def test_full_disk_while_writing_json(built, capsys, tmp_path, monkeypatch):
    out, good, _ = built
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def write(self, text):
            _enospc()

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k))
                        if "w" in mode else real_fdopen(fd, mode, *a, **k))
    js = str(tmp_path / "r.json")
    rc, err = _cli(["simulate", good, "--backend", "reference", "-q", "--inputs", _inputs(out), "--json", js], capsys)
    monkeypatch.undo()
    assert not _one_error("json", rc, err, (js, "disk is full")), err
    assert os.listdir(tmp_path) == []


def test_full_disk_on_a_real_small_file_system(built, tmp_path):
    """A 64 KiB tmpfs (root only): the artifact (~140 KiB) cannot fit; one line, nothing left."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    out, _, _ = built
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("this container may not mount a tmpfs")
    try:
        r = _subprocess("compile", os.path.join(out, "good_for_art.pt"), "-o", str(mnt / "art"))
        left = os.listdir(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    assert not _one_error("tmpfs", r.returncode, r.stderr, ("art", "cannot write")), r.stderr
    assert left == []


def test_report_on_a_read_only_artifact(built, tmp_path):
    out, good, _ = built
    art = _copy(good, tmp_path / "ro")
    undo = _make_read_only(art)
    try:
        t0 = time.monotonic()
        r = _subprocess("report", art, "-q", "--lava-samples", "0")
        took = time.monotonic() - t0
        after = sorted(os.listdir(art))
    finally:
        undo()
    assert not _one_error("read-only", r.returncode, r.stderr, (art, "not writable")), r.stderr
    assert after == sorted(os.listdir(good))
    assert took < 120


@pytest.mark.parametrize("calib", ["digits:0:0", "digits:5:2", "digits:-3:4", "digits:0", "digits:a:b",
                                   "digits:100000:100001"])
def test_empty_or_reversed_calibration_ranges(capsys, tmp_path, calib):
    root = os.path.dirname(HERE)
    dest = str(tmp_path / "art")
    rc, err = _cli(["compile", os.path.join(root, "models", "digits_tcja", "model.pt"), "--calib", calib,
                    "-o", dest, "-q"], capsys)
    assert not _one_error(calib, rc, err, ("--calib",)), err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [
    ["finetune", "A", "-o", "B", "--batch-size", "0"], ["finetune", "A", "-o", "B", "--batch-size", "-4"],
    ["finetune", "A", "-o", "B", "--batch-size", "x"], ["finetune", "A", "-o", "B", "--epochs", "-1"],
    ["finetune", "A", "-o", "B", "--lr", "0"], ["finetune", "A", "-o", "B", "--lr", "nan"],
    ["finetune", "A", "-o", "B", "--train-samples", "0"], ["simulate", "A", "--samples", "0"],
    ["simulate", "A", "--timeout", "-1"], ["compile", "M", "--timesteps", "0"], ["compile", "M", "--dt", "inf"],
    ["compile", "M", "--calib-samples", "0"], ["report", "A", "--samples", "0"], ["report", "A", "--lava-samples", "-1"],
])
def test_non_positive_numeric_flags(capsys, argv):
    from neurocomp.cli import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    flag = next(a for a in argv if a.startswith("--"))
    assert e.value.code == 2
    assert not _one_error(" ".join(argv), 2, err, (flag,)), err


def test_numeric_flag_error_in_a_subprocess():
    r = _subprocess("finetune", "A", "-o", "B", "--batch-size", "0")
    assert not _one_error("batch", r.returncode, r.stderr, ("--batch-size", "'0'")), r.stderr
    assert r.returncode == 2


def test_finetune_api_refuses_batch_size_zero(built):
    from neurocomp.errors import BadInput
    from neurocomp.training.finetune import finetune
    _, good, _ = built
    with pytest.raises(BadInput, match="batch-size"):
        finetune(good, os.path.join(built[0], "never"), batch_size=0)
    assert not os.path.exists(os.path.join(built[0], "never"))


def test_report_modes_never_load_a_calibration_file_named_by_the_manifest(tmp_path):
    """`report` recompiles attention models with the artifact's calibration; a ``.npy`` path written
    in the manifest is used only when it lies inside the artifact."""
    from neurocomp.measure import _calibration
    foreign = tmp_path / "foreign.npy"
    np.save(foreign, np.zeros((2, 2)))
    art = tmp_path / "art"
    art.mkdir()
    inside = art / "calib.npy"
    np.save(inside, np.zeros((2, 2)))
    for source, want in ((str(foreign), None), (str(art / ".." / "foreign.npy"), None),
                         (str(inside), str(inside)), ("digits train[0:64]", None)):
        man = {"attention": {"calibration": {"source": source, "samples": 64}}}
        assert _calibration(man, str(art)) == (want, 64), source


def test_report_markdown_escapes_layer_names(tmp_path):
    from neurocomp.api import compile as compile_
    from neurocomp.measure import report
    src = H.hostile_name_nir(str(tmp_path / "named.nir"))
    art = compile_(src, str(tmp_path / "art"), dt=1e-3, timesteps=H.T)
    x = (np.random.default_rng(0).random((4, H.T, 4)) < 0.4).astype(np.float32)
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = report(art, inputs=x, lava_samples=0, progress=False, attention_modes=False)
    assert not [w for w in caught if "Glyph" in str(w.message)]   # plot labels are escaped too
    md = open(paths[0]).read()
    assert "\\nerror: forged line\\x1b[2J" in md and _clean(md)
    assert H.FORGED not in md                          # the raw newline never splits a line


def test_finetune_keeps_a_failed_checkpoint_without_replacing_a_file(tmp_path):
    from neurocomp.training.finetune import _keep_checkpoint
    src = tmp_path / "ckpt.pt"
    src.write_bytes(b"new")
    dest = tmp_path / "out.finetuned.pt"
    dest.write_bytes(b"someone's file")
    assert _keep_checkpoint(str(src), str(dest)) is None and dest.read_bytes() == b"someone's file"
    dest.unlink()
    assert _keep_checkpoint(str(src), str(dest)) == str(dest) and dest.read_bytes() == b"new"


def test_a_file_put_into_the_claimed_folder_is_kept(built, tmp_path):
    """Someone writes into the (empty) claimed folder while we compile: we fail, their file stays."""
    from neurocomp.artifact import OutputClaim
    from neurocomp.errors import NeurocompError
    _, good, _ = built
    dest = tmp_path / "art"
    claim = OutputClaim(str(dest))

    def fill(tmp):
        shutil.copytree(good, tmp, dirs_exist_ok=True)
        (dest / "theirs.txt").write_text("keep")

    with pytest.raises(NeurocompError, match="cannot write the artifact"):
        claim.commit(fill)
    assert os.listdir(dest) == ["theirs.txt"] and not _leftovers(str(tmp_path))


def test_write_manifest_records_every_file_and_refuses_a_malformed_manifest(built, tmp_path):
    """The one manifest writer: format, versions and the sha256 of every loadable file are its own; a
    field Artifact would refuse is refused when written (a neurocomp bug, never an unopenable artifact)."""
    import json
    from neurocomp.artifact import Artifact, write_manifest
    from neurocomp.errors import BadArtifact
    _, good, _ = built
    art = str(tmp_path / "copy")
    shutil.copytree(good, art)
    with open(os.path.join(art, "manifest.json")) as fh:
        m = json.load(fh)
    fields = {k: v for k, v in m.items() if k not in ("format", "version", "versions", "files")}
    with open(os.path.join(art, "model.pt"), "ab") as fh:   # a stored file changed: its new digest is recorded
        fh.write(b"\0")
    written = write_manifest(art, fields)
    assert written["files"]["model.pt"] != m["files"]["model.pt"] and written["versions"] == m["versions"]
    assert Artifact(art).manifest == written
    with pytest.raises(BadArtifact, match="timesteps.*neurocomp bug"):
        write_manifest(art, {**fields, "timesteps": 0})
    assert json.load(open(os.path.join(art, "manifest.json"))) == written   # the refused one was not written
