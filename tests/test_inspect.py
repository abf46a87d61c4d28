"""neurocomp inspect: checkpoint, NIR file and artifact tables."""
import pytest

from neurocomp.errors import BadInput
from neurocomp.inspect import inspect_path

MODEL = "models/digits_plain/model.pt"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from neurocomp.api import compile as compile_
    return compile_(MODEL, str(tmp_path_factory.mktemp("insp") / "art"), target="loihi1")


def _row(text, name):
    return next(l.split() for l in text.splitlines() if l.split() and l.split()[0] == name)


def test_checkpoint_table():
    out = inspect_path(MODEL)
    assert "T=8" in out and "encoding=bernoulli" in out and "dataset=digits" in out
    assert _row(out, "1")[:4] == ["1", "batchnorm", "16x8x8", "16x8x8"]
    assert _row(out, "0")[:5] == ["0", "conv2d", "1x8x8", "16x8x8", "160"]     # 16*1*3*3 + 16
    assert "as `neurocomp compile` would lower it" in out and "mapped on loihi2: 5 cores" in out


def test_artifact_table_has_quantization_and_mapping(artifact):
    out = inspect_path(artifact)
    assert "(loihi1)" in out and "mapped on loihi1: 5 cores, 1 chip(s)" in out
    assert "batchnorm" not in out                   # the compiled graph has BN folded
    r = _row(out, "9")
    assert r[1] == "linear" and r[4] == "1290" and r[5] == "8b"        # 128*10 + 10 parameters
    assert "vth=" in " ".join(_row(out, "10"))


def test_nir_file(artifact):
    out = inspect_path(f"{artifact}/model.nir")
    assert out.startswith("NIR file") and "batchnorm" in out and "3_or" in out


def test_errors_and_cli(artifact, capsys):
    with pytest.raises(BadInput, match="unknown file type"):
        inspect_path("README.md")
    with pytest.raises(BadInput, match="no such file"):
        inspect_path("nope.pt")
    from neurocomp.cli import main
    assert main(["inspect", artifact]) == 0
    assert "mapped on loihi1" in capsys.readouterr().out


def _foreign_nir(path, dt=None):
    """A NIR graph as another framework writes it (no neurocomp metadata): Input(4) -> Linear -> LIF."""
    import nir
    import numpy as np
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    nodes = {"input": nir.Input(input_type=np.array([4])), "fc": nir.Linear(weight=w),
             "lif": nir.LIF(tau=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
             "output": nir.Output(output_type=np.array([3]))}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges, metadata={} if dt is None else {"dt": dt}))
    return str(path)


def test_foreign_nir_file(tmp_path, capsys):
    """A foreign graph is read as `compile` reads it (it used to fail: "LIF cannot be imported"); without
    a dt in its metadata, inspect names the flag to pass."""
    from neurocomp.cli import main
    from neurocomp.errors import BadGraph
    with_dt = _foreign_nir(tmp_path / "with_dt.nir", dt=1e-3)
    out = inspect_path(with_dt)
    assert "from another framework" in out and "dt=0.001" in out
    assert _row(out, "lif")[:4] == ["lif", "cuba_lif", "3", "3"] and _row(out, "fc")[1] == "linear"
    assert "as `neurocomp compile` would lower it (8-bit weights)" in out
    no_dt = _foreign_nir(tmp_path / "no_dt.nir")
    with pytest.raises(BadGraph, match="no dt.*--dt"):
        inspect_path(no_dt)
    assert "dt=0.0005" in inspect_path(no_dt, dt=5e-4)
    assert main(["inspect", no_dt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_dt.nir" in err[0] and "--dt" in err[0]
    assert main(["inspect", no_dt, "--dt", "1e-3", "--reset", "subtract", "--timesteps", "20"]) == 0
    out = capsys.readouterr().out
    assert "T=20" in out and "reset subtract" in out and "cuba_lif" in out
