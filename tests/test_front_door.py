"""The front door (issue 14, items 1 and 6): every usual way of saving a model compiles, and every
refusal says what it found and the one next step, which then works.

The user's code is a script ``net.py`` that defines its own class ``Net`` (SpikingJelly
activation_based layers in an ``nn.Sequential`` attribute, ``forward`` calling it) and, run as a
script, saves ``torch.save(model)`` (classes pickled as ``__main__.Net``), a state dict under
``'net'`` and inputs. The two commands of the issue's "Done when" run through the real CLI in that
folder; the artifacts then run on Lava, report and fine-tune with the user's files deleted.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("No CUDA runtime is found", "WARNING: Prophesee", "Only Prophesee", "Please install it from")
FACTS = ["--input-shape", "2,16,16", "--timesteps", "10", "--encoding", "events"]

NET_PY = textwrap.dedent('''
    import os

    import numpy as np
    import torch
    import torch.nn as nn
    from spikingjelly.activation_based import functional, layer, neuron

    open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imported.flag"), "a").close()


    class Net(nn.Module):
        def __init__(self, channels=4, classes=4):
            super().__init__()
            self.net = nn.Sequential(
                layer.Conv2d(2, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels),
                neuron.LIFNode(tau=2.0), layer.MaxPool2d(2), layer.Flatten(),
                layer.Linear(channels * 8 * 8, classes), neuron.LIFNode(tau=2.0))
            functional.set_step_mode(self, "m")

        def forward(self, x):
            return self.net(x)


    class Busy(nn.Module):
        """A forward that does more than call one child."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(layer.Flatten(), layer.Linear(512, 3), neuron.LIFNode())
            functional.set_step_mode(self, "m")

        def forward(self, x):
            y = self.net(x)
            return y * 2


    if __name__ == "__main__":
        torch.manual_seed(0)
        model = Net()
        with torch.no_grad():
            model.net[0].weight.mul_(3.0)
            model.net[5].weight.mul_(4.0)
            model.net[1].running_mean.uniform_(-0.2, 0.2)
            model.net[1].running_var.uniform_(0.5, 1.5)
        model.eval()
        torch.save(model, "model.pt")
        torch.save({"net": model.state_dict(), "epoch": 3}, "sd.pt")
        np.save("inputs.npy", (np.random.default_rng(0).random((3, 10, 2, 16, 16)) < 0.3).astype(np.float32))
''')


# neurocomp commands in one fresh interpreter: the exit status of each (cli.main's return), and the modules it
# imported, on the last two lines of stdout
COMMANDS_PY = textwrap.dedent('''
    import json, sys
    from neurocomp.cli import main
    rcs = [main(argv) for argv in json.loads(sys.argv[1])]
    print(json.dumps(sorted(sys.modules)))
    print(json.dumps(rcs))
''')


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}


def _run(cwd, *argv, timeout=900):
    p = subprocess.run([sys.executable, "-m", "neurocomp", *argv], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=_env())
    return p


def _errors(stderr):
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith(NOISE)]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A folder as the user left it: net.py (run as a script), model.pt, sd.pt, inputs.npy."""
    d = tmp_path_factory.mktemp("user")
    (d / "net.py").write_text(NET_PY)
    p = subprocess.run([sys.executable, "net.py"], cwd=d, capture_output=True, text=True, timeout=300, env=_env())
    assert p.returncode == 0, p.stderr
    os.unlink(d / "imported.flag")          # running the script touched it; later imports touch it again
    return d


def _copy_user(user, dst):
    shutil.copytree(user, dst)
    return dst


# ---- the "Done when" commands, through the real CLI ----------------------------------------------
@pytest.mark.lava
def test_done_when_commands_compile_then_run_without_the_users_files(user, tmp_path):
    d = _copy_user(user, tmp_path / "u")
    p = _run(d, "compile", "model.pt", "--trust-pickle", *FACTS, "--calib", "inputs.npy")
    assert p.returncode == 0, p.stderr
    p = _run(d, "compile", "sd.pt", "--model", "net.py:Net", *FACTS, "--dataset", "events", "-q")
    assert p.returncode == 0, p.stderr
    # the artifacts hold a safe neurocomp checkpoint of the user's model: the same weights as sd.pt
    from neurocomp.frontends.checkpoint import load_checkpoint
    want = torch.load(d / "sd.pt", weights_only=True)["net"]
    for art in ("model.neurocomp", "sd.neurocomp"):
        got = load_checkpoint(str(d / art / "model.pt"))          # no trust_pickle, no user code
        assert got.route == "checkpoint" and got.input_shape == (2, 16, 16) and got.timesteps == 10
        sd = got.model.state_dict()
        assert sorted(sd) == sorted(k[len("net."):] for k in want)
        assert all(torch.equal(sd[k[len("net."):]], v) for k, v in want.items())
    man = json.load(open(d / "model.neurocomp" / "manifest.json"))
    assert man["input_checkpoint"]["name"] == "model.pt" and man["encoding"] == "events"
    # the user's code and files go: simulate (Lava), report and finetune still run, in a fresh interpreter
    # that never imported net.py (one launch for the four commands; the two above are the real front door)
    for name in ("net.py", "model.pt", "sd.pt"):
        os.unlink(d / name)
    shutil.rmtree(d / "__pycache__", ignore_errors=True)
    commands = [["simulate", art, "--backend", "lava", "--inputs", "inputs.npy", "--samples", "2",
                 "--json", f"{art}.json", "-q"] for art in ("model.neurocomp", "sd.neurocomp")]
    commands += [["report", "sd.neurocomp", "--samples", "10", "--lava-samples", "1", "--no-attention-modes", "-q"],
                 ["finetune", "sd.neurocomp", "-o", "ft.neurocomp", "--epochs", "1", "--train-samples", "16",
                  "--val-fraction", "0", "-q"]]
    p = subprocess.run([sys.executable, "-c", COMMANDS_PY, json.dumps(commands)], cwd=d, capture_output=True,
                       text=True, timeout=900, env=_env())
    assert p.returncode == 0, p.stderr
    rcs = json.loads(p.stdout.splitlines()[-1])
    assert rcs == [0, 0, 0, 0], (rcs, p.stderr)
    assert not any(m.startswith("neurocomp_user_") for m in json.loads(p.stdout.splitlines()[-2])), p.stdout
    for art in ("model.neurocomp", "sd.neurocomp"):
        r = json.load(open(d / f"{art}.json"))
        assert r["exact_match_fraction"] == 1.0 and r["float_reference_equals_torch_fraction"] == 1.0, r
        assert sum(l["spikes_compared"] for l in r["per_layer"]) > 0
        assert sum(q["fixed_spikes"] for q in r["quantization"]["per_layer"]) > 0   # the net is not silent
    assert (d / "sd.neurocomp" / "report.md").exists()
    assert (d / "ft.neurocomp" / "manifest.json").exists()


# ---- each message the issue quotes: gone, and its hint works ---------------------------------------
def _cli(argv, capsys):
    from neurocomp.cli import main
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, _errors(out.err)


def _one_error(rc, lines):
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], (rc, lines)
    return lines[0]


def _hint(line):
    return line.rsplit("(hint: ", 1)[1]


def _tiny():
    from spikingjelly.activation_based import functional, layer, neuron
    torch.manual_seed(1)
    m = torch.nn.Sequential(layer.Flatten(), layer.Linear(16, 4), neuron.LIFNode(tau=2.0))
    functional.set_step_mode(m, "m")
    with torch.no_grad():
        m[1].weight.mul_(4)
    return m.eval()


def test_pickled_module_without_trust_then_without_facts(tmp_path, capsys):
    """Was: "not a safe neurocomp checkpoint (…Do it on)", then "a pickled module carries no input shape /
    T / encoding (hint: save it with neurocomp.save_checkpoint)"."""
    path = tmp_path / "lif.pt"
    torch.save(_tiny(), path)
    line = _one_error(*_cli(["compile", path, "-o", tmp_path / "a", "-q"], capsys))
    assert "pickled Python object of class torch.nn.modules.container.Sequential" in line, line
    assert "Do it on" not in line and "--trust-pickle --input-shape" in _hint(line), line
    assert not (tmp_path / "a").exists()
    line = _one_error(*_cli(["compile", path, "-o", tmp_path / "b", "--trust-pickle", "-q"], capsys))
    assert "does not record its input shape, timesteps, encoding" in line and "save_checkpoint" not in line, line
    assert "--input-shape" in _hint(line) and "--timesteps" in _hint(line) and "--encoding" in _hint(line)
    rc, lines = _cli(["compile", path, "-o", tmp_path / "c", "--trust-pickle", "--input-shape", "16",
                      "--timesteps", "4", "--encoding", "bernoulli", "-q"], capsys)
    assert rc == 0, lines
    man = json.load(open(tmp_path / "c" / "manifest.json"))
    assert man["input_shape"] == [16] and man["timesteps"] == 4 and man["encoding"] == "bernoulli"
    # a facts flag that is missing is named alone
    line = _one_error(*_cli(["compile", path, "-o", tmp_path / "d", "--trust-pickle", "--input-shape", "16",
                             "--encoding", "bernoulli", "-q"], capsys))
    assert "does not record its timesteps" in line and "--input-shape" not in _hint(line), line


@pytest.mark.parametrize("form", ["bare", "net_epoch", "dataparallel", "model_state_dict"])
def test_state_dict_names_the_model_flag_and_it_works(user, tmp_path, capsys, form):
    """Was: "is not a neurocomp checkpoint (no format key)", with no advice."""
    sd = torch.load(user / "sd.pt", weights_only=True)["net"]
    doc = {"bare": sd, "net_epoch": {"net": sd, "epoch": 3},
           "dataparallel": {"state_dict": {"module." + k: v for k, v in sd.items()}},
           "model_state_dict": {"model_state_dict": sd, "optimizer": {"lr": 0.1}}}[form]
    path = tmp_path / "weights.pt"
    torch.save(doc, path)
    line = _one_error(*_cli(["compile", path, "-o", tmp_path / "a", "-q"], capsys))
    assert "holds a state dict" in line and "no format key" not in line, line
    assert _hint(line).startswith("pass --model FILE.py:NAME") and "--input-shape" in _hint(line), line
    rc, lines = _cli(["compile", path, "-o", tmp_path / "b", "--model", f"{user / 'net.py'}:Net", *FACTS, "-q"],
                     capsys)
    assert rc == 0, lines


def test_state_dict_that_does_not_fit_the_class_says_so(user, tmp_path, capsys):
    line = _one_error(*_cli(["compile", user / "sd.pt", "-o", tmp_path / "a", "--model", f"{user / 'net.py'}:Net",
                             "--model-args", '{"channels": 8}', *FACTS, "-q"], capsys))
    assert "does not fit Net" in line and "--model-args" in _hint(line), line
    line = _one_error(*_cli(["compile", user / "sd.pt", "-o", tmp_path / "b", "--model", f"{user / 'net.py'}:Nett",
                             *FACTS, "-q"], capsys))
    assert "defines no class or function 'Nett'" in line and "Net" in _hint(line), line


def test_script_pickle_outside_its_folder_asks_for_the_script(user, tmp_path, capsys, monkeypatch):
    """Was: "the file is damaged" (the class lives in the script that pickled it, module __main__)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    line = _one_error(*_cli(["compile", user / "model.pt", "-o", tmp_path / "a", "--trust-pickle", *FACTS, "-q"],
                            capsys))
    assert "pickled from a script that defines class Net" in line and "damaged" not in line, line
    assert _hint(line) == "pass --model SCRIPT.py, the script that defines Net)", line
    rc, lines = _cli(["compile", user / "model.pt", "-o", tmp_path / "b", "--trust-pickle", *FACTS,
                      "--model", user / "net.py", "-q"], capsys)
    assert rc == 0, lines
    # --code-path finds it too
    rc, lines = _cli(["compile", user / "model.pt", "-o", tmp_path / "c", "--trust-pickle", *FACTS,
                      "--code-path", user, "-q"], capsys)
    assert rc == 0, lines


def test_pickle_naming_a_module_of_the_users_asks_for_the_code_path(user, tmp_path, capsys, monkeypatch):
    """A model whose class was imported (``from net import Net``) pickles as ``net.Net``: found through
    ``--code-path``, and without it the message says to pass it."""
    d = _copy_user(user, tmp_path / "u")
    (d / "save2.py").write_text("import torch\nfrom net import Net\ntorch.save(Net(), 'model2.pt')\n")
    p = subprocess.run([sys.executable, "save2.py"], cwd=d, capture_output=True, text=True, timeout=300, env=_env())
    assert p.returncode == 0, p.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    line = _one_error(*_cli(["compile", d / "model2.pt", "-o", tmp_path / "a", "--trust-pickle", *FACTS, "-q"],
                            capsys))
    assert "names class net.Net, and module 'net' is not importable" in line, line
    assert _hint(line).startswith("pass --code-path DIR, the folder that holds net.py"), line
    rc, lines = _cli(["compile", d / "model2.pt", "-o", tmp_path / "b", "--trust-pickle", *FACTS, "--code-path", d,
                      "-q"], capsys)
    assert rc == 0, lines
    assert d.as_posix() not in sys.path and str(d) not in sys.path     # the code path is not left behind


def test_user_class_with_its_own_forward(user, tmp_path, capsys):
    """Was: "UserNet cannot be described in a checkpoint": save_checkpoint now takes a class whose forward
    is ``return self.net(x)``; a forward that does more is traced, and what neurocomp cannot compile in it
    (here ``y * 2``) is refused with its source line and the fix."""
    from neurocomp import save_checkpoint
    from neurocomp.errors import UnsupportedLayer
    from neurocomp.frontends.usercode import import_file
    mod = import_file(str(user / "net.py"))
    net = mod.Net()
    path = save_checkpoint(net, str(tmp_path / "net_safe.pt"), input_shape=(2, 16, 16), timesteps=10,
                           encoding="events")
    rc, lines = _cli(["compile", path, "-o", tmp_path / "a", "-q"], capsys)
    assert rc == 0, lines
    with pytest.raises(UnsupportedLayer) as e:
        save_checkpoint(mod.Busy(), str(tmp_path / "busy.pt"), input_shape=(2, 16, 16), timesteps=10)
    line = e.value.one_line()
    lineno = [i for i, ln in enumerate(NET_PY.splitlines(), 1) if ln == "        return y * 2"][-1]
    assert f"Busy.forward (net.py:{lineno}) scales a layer's output by 2" in line, line
    assert "remove the scaling" in e.value.hint and "cannot be described" not in line
    assert not os.path.exists(tmp_path / "busy.pt")
    # following the hint (no scaling: forward returning self.net(x)) is the Net class above


def test_dictionary_without_weights_says_save_checkpoint_and_it_works(tmp_path, capsys):
    path = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    line = _one_error(*_cli(["compile", path, "-o", tmp_path / "a", "-q"], capsys))
    assert "neither neurocomp's 'format' key nor a state dict" in line and "'epoch'" in line, line
    assert "neurocomp.save_checkpoint(model, path, input_shape=" in _hint(line)
    from neurocomp import save_checkpoint
    save_checkpoint(_tiny(), str(path), input_shape=(16,), timesteps=4)
    rc, lines = _cli(["compile", path, "-o", tmp_path / "b", "-q"], capsys)
    assert rc == 0, lines


def test_neurocomp_checkpoint_refuses_contradicting_flags(tmp_path, capsys):
    from neurocomp import save_checkpoint
    path = save_checkpoint(_tiny(), str(tmp_path / "m.pt"), input_shape=(16,), timesteps=4)
    line = _one_error(*_cli(["compile", path, "-o", tmp_path / "a", "--timesteps", "9", "-q"], capsys))
    assert "--timesteps 9 differs from the checkpoint's timesteps 4" in line and "drop --timesteps" in line
    rc, lines = _cli(["compile", path, "-o", tmp_path / "b", "--timesteps", "4", "-q"], capsys)
    assert rc == 0, lines


# ---- the security guarantees stay --------------------------------------------------------------------
def test_user_code_runs_only_behind_its_flags(user, tmp_path, capsys, monkeypatch):
    """Without --trust-pickle a script's pickle is refused and the script is not imported; a state dict
    without --model imports nothing; --model imports the file (the flag is the opt-in, --help says so).
    In this interpreter (cli.main): the copy of net.py is a new file, so its import is seen by its flag."""
    from neurocomp.cli import main
    d = _copy_user(user, tmp_path / "u")
    flag = d / "imported.flag"
    flag.unlink(missing_ok=True)        # other tests imported the module fixture's net.py in-process
    monkeypatch.chdir(d)
    rc = main(["compile", "model.pt", *FACTS, "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--trust-pickle" in err and not flag.exists(), err
    rc = main(["compile", "sd.pt", *FACTS, "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--model FILE.py:NAME" in err and not flag.exists(), err
    rc = main(["inspect", "sd.pt", "--model", "net.py:Net", *FACTS])
    out = capsys.readouterr()
    assert rc == 0 and flag.exists(), out.err
    assert "conv2d" in out.out and "lif" in out.out
    with pytest.raises(SystemExit) as e:
        main(["compile", "--help"])
    assert e.value.code == 0
    assert "RUNS FILE.py" in " ".join(capsys.readouterr().out.split())
    assert not os.path.exists(d / "model.neurocomp") and not os.path.exists(d / "sd.neurocomp")


def test_inspect_of_a_pickle_with_and_without_facts(user, tmp_path, capsys, monkeypatch):
    from neurocomp.cli import main
    d = _copy_user(user, tmp_path / "u")
    monkeypatch.chdir(d)
    assert main(["inspect", "model.pt", "--trust-pickle"]) == 0
    out = capsys.readouterr().out
    assert "pickled module" in out and "pass --input-shape, --timesteps, --encoding" in out
    assert main(["inspect", "model.pt", "--trust-pickle", *FACTS]) == 0
    out = capsys.readouterr().out
    assert "conv2d" in out and "T=10" in out and "encoding=events" in out


def test_state_dict_forms_and_shapes():
    from neurocomp.errors import BadInput
    from neurocomp.frontends.checkpoint import find_state_dict, parse_shape
    t = torch.zeros(2)
    assert find_state_dict({"a.w": t}) == ({"a.w": t}, None)
    assert find_state_dict({"net": {"module.a.w": t}, "epoch": 1}) == ({"a.w": t}, "net")
    assert find_state_dict({"model": {"_orig_mod.a": t}})[0] == {"a": t}
    assert find_state_dict({"epoch": 1, "weights": [t]}) == (None, None)
    assert parse_shape("2,16,16") == (2, 16, 16) and parse_shape("784") == (784,)
    for bad in ("2,x", "0,3", "", [-1]):
        with pytest.raises(BadInput):
            parse_shape(bad)
