"""The behavioural fingerprint (``tests/fingerprint.py``) is unchanged: every zoo model in every
attention mode, and a foreign NIR graph, compile to artifacts whose float and fixed-point graphs give
the same spikes on every layer and the same classes as when the fixture was recorded."""
import json
import os

import pytest

import fingerprint as fp

with open(fp.FIXTURE) as fh:
    RECORDED = json.load(fh)
CASES = [c for c in fp.cases() if c[0] in RECORDED["cases"]]


def test_fixture_covers_every_zoo_model_and_mode():
    ids = {c[0] for c in fp.cases()}
    zoo = {cid for cid in ids if not cid.startswith("nir/")}
    assert zoo <= set(RECORDED["cases"]), sorted(zoo - set(RECORDED["cases"]))
    assert len(zoo) == sum(1 if os.path.basename(os.path.dirname(p)).endswith("plain") else len(fp.MODES)
                           for p in fp._zoo())


@pytest.mark.parametrize("cid,source,kwargs", CASES, ids=[c[0] for c in CASES])
def test_fingerprint_unchanged(cid, source, kwargs, tmp_path):
    assert RECORDED["samples"] == fp.SAMPLES
    want = RECORDED["cases"][cid]
    got = fp.fingerprint_case(source, kwargs, str(tmp_path))
    for stage in ("float", "fixed"):
        assert set(got[stage]["layers"]) == set(want[stage]["layers"]), stage
        for layer, w in want[stage]["layers"].items():
            assert got[stage]["layers"][layer] == w, f"{cid} {stage} layer {layer}"
        assert got[stage]["predictions"] == want[stage]["predictions"], f"{cid} {stage} predictions"
    assert got["alignment_depth"] == want["alignment_depth"]
