"""The pipeline as a user runs it: `neurocomp compile` then `neurocomp simulate`."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "digits_plain", "model.pt")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "neurocomp", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "art")
    r = run_cli("compile", MODEL, "--target", "lava", "-o", out)
    assert r.returncode == 0, r.stderr
    return out


def _installed(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


def test_compile_writes_versioned_artifact(artifact):
    names = set(os.listdir(artifact))
    assert {"manifest.json", "model.nir", "model.pt", "float", "fixed"} <= names
    man = json.load(open(os.path.join(artifact, "manifest.json")))
    assert man["timesteps"] == 8 and man["encoding"] == "bernoulli" and man["dataset"] == "digits"
    import numpy as np
    import torch
    assert man["versions"]["numpy"] == np.__version__ and man["versions"]["torch"].split("+")[0] in torch.__version__
    # Lava's version where Lava is installed (the Lava environment), None in the core environment
    assert man["versions"]["lava-nc"] == ("0.10.0" if _installed("lava") else None)
    assert man["alignment"]["depth"] == 5          # conv, pool, conv, pool, linear: one step each
    assert len(man["input_checkpoint"]["sha256"]) == 64
    assert not [n for n in os.listdir(os.path.dirname(artifact)) if ".tmp-" in n]


@pytest.mark.lava
def test_simulate_lava_reports_exact_match(artifact, tmp_path):
    js = str(tmp_path / "r.json")
    r = run_cli("simulate", artifact, "--backend", "lava", "--samples", "12", "--json", js, "-q")
    assert r.returncode == 0, r.stderr
    res = json.load(open(js))
    assert res["samples"] == 12
    assert res["exact_match_fraction"] == 1.0
    assert res["first_diverging_layer"] is None
    assert [p["name"] for p in res["per_layer"]] == ["2", "3_or", "6", "7_or", "10"]
    assert all(p["mismatches"] == 0 and p["spikes_compared"] > 0 for p in res["per_layer"])
    assert res["float_reference_equals_torch_fraction"] == 1.0
    assert "exact match" in r.stdout


def test_simulate_inputs_file(artifact, tmp_path):
    import numpy as np
    x = (np.random.default_rng(0).random((3, 8, 1, 8, 8)) < 0.3).astype(np.float32)
    path = str(tmp_path / "in.npy")
    np.save(path, x)
    js = str(tmp_path / "r.json")
    r = run_cli("simulate", artifact, "--backend", "reference", "--inputs", path, "--json", js, "-q")
    assert r.returncode == 0, r.stderr
    res = json.load(open(js))
    assert res["samples"] == 3 and res["accuracy"]["float_torch"] is None


def test_bad_inputs_shape_is_one_line_error(artifact, tmp_path):
    import numpy as np
    path = str(tmp_path / "in.npy")
    np.save(path, np.zeros((2, 7, 1, 8, 8), np.float32))
    r = run_cli("simulate", artifact, "--inputs", path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "in.npy" in lines[0] and "[N, 8, 1, 8, 8]" in lines[0]


def test_existing_output_is_refused(artifact):
    r = run_cli("compile", MODEL, "-o", artifact)
    assert r.returncode == 2 and "already exists" in r.stderr and "--overwrite" in r.stderr


def test_an_artifacts_own_model_nir_compiles_through_the_nir_door(artifact, tmp_path):
    """``compile ART/model.nir``: neurocomp's own NIR (BatchNorm still explicit) goes through the NIR
    pipeline, which folds like the checkpoint pipeline; the fixed graph is the checkpoint's."""
    from neurocomp.artifact import Artifact
    out = str(tmp_path / "again")
    r = run_cli("compile", os.path.join(artifact, "model.nir"), "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    a, b = Artifact(artifact), Artifact(out)
    assert b.manifest["input_nir"]["sha256"] == a.manifest["files"]["model.nir"]
    assert b.manifest["timesteps"] == a.manifest["timesteps"] and "model.pt" not in os.listdir(out)
    assert [p["pass"] for p in b.manifest["passes"]] == [p["pass"] for p in a.manifest["passes"]
                                                         if p["pass"] != "map_cores"]
    qa, qb = a.fixed_graph, b.fixed_graph
    assert [n.name for n in qa] == [n.name for n in qb]
    import numpy as np
    for na, nb in zip(qa, qb):
        assert np.array_equal(getattr(na, "qweight", 0), getattr(nb, "qweight", 0)), na.name


def test_bad_weight_bits_and_a_missing_T_are_refused_before_any_work(tmp_path):
    """Checked by the driver for both doors before -o is claimed (a checkpoint's --weight-bits used to be
    refused by quantize, after calibrating)."""
    import nir
    import numpy as np
    import neurocomp
    from neurocomp.errors import BadInput
    for bits in (1, 9, 2.5, True):
        with pytest.raises(BadInput, match="--weight-bits"):
            neurocomp.compile(MODEL, str(tmp_path / "a"), weight_bits=bits)
    path = str(tmp_path / "f.nir")
    nodes = {"input": nir.Input(input_type=np.array([2])), "fc": nir.Linear(weight=np.ones((2, 2), np.float32)),
             "lif": nir.IF(r=np.ones(2), v_threshold=np.ones(2)), "output": nir.Output(output_type=np.array([2]))}
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
                                 metadata={"dt": 1e-3}))
    with pytest.raises(BadInput, match="--weight-bits"):
        neurocomp.compile(path, str(tmp_path / "b"), weight_bits=9)
    with pytest.raises(BadInput, match="--timesteps"):
        neurocomp.compile(path, str(tmp_path / "b"), timesteps=None)
    assert sorted(os.listdir(tmp_path)) == ["f.nir"]
    out = neurocomp.compile(path, str(tmp_path / "b"), timesteps=5, weight_bits=np.int64(6))
    assert json.load(open(os.path.join(out, "manifest.json")))["weight_bits"] == 6
