"""One cross-check engine (issue 13): ``simulate`` and the report both read ``neurocomp.crosscheck``.
Their figures on digits_plain equal the ones recorded before the two copies were merged
(``tests/fixtures/crosscheck_engine.json``, never regenerated)."""
import json
import os

import pytest

from neurocomp.api import compile as nc_compile, simulate
from neurocomp.crosscheck import torch_device
from neurocomp.measure import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "digits_plain", "model.pt")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "crosscheck_engine.json")
VOLATILE = ("wall_s", "lava_wall_s", "timings_s", "versions", "artifact", "target_file")  # paths of this checkout


def _strip(o):
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items() if k not in VOLATILE}
    if isinstance(o, list):
        return [_strip(v) for v in o]
    return o


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return nc_compile(MODEL, str(tmp_path_factory.mktemp("engine") / "art"))


@pytest.fixture(scope="module")
def fixture():
    with open(FIXTURE) as fh:
        return json.load(fh)


def test_simulate_reference_unchanged(art, fixture):
    r = simulate(art, backend="reference", samples=64, progress=False)
    assert _strip(json.loads(json.dumps(r))) == fixture["simulate_reference"]


@pytest.mark.lava
def test_simulate_lava_unchanged(art, fixture):
    r = simulate(art, backend="lava", samples=8, progress=False)
    assert _strip(json.loads(json.dumps(r))) == fixture["simulate_lava"]


@pytest.mark.lava
@pytest.mark.skipif(torch_device() != "cpu", reason="the fixture's torch stage ran on the CPU")
def test_report_figures_unchanged(art, fixture):
    report(art, samples=48, lava_samples=4, progress=False, bits=(4, 8), attention_modes=False)
    with open(os.path.join(art, "report.json")) as fh:
        rep = _strip(json.load(fh))
    added = set(rep["sections"]) - set(fixture["report"]["sections"])
    assert added == {"chips"}                       # added after the fixture (tests/test_multichip.py checks it)
    rep["sections"] = {k: v for k, v in rep["sections"].items() if k not in added}
    assert rep == _strip(fixture["report"])
