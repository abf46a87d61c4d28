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
