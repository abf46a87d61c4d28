"""Target files: every file in targets/ follows the schema; broken files fail naming file and field."""
import copy
import json
import os

import pytest

from neurocomp.targets import FIELDS, TargetError, available, load_target, targets_dir, validate

TARGET_FILES = sorted(f for f in os.listdir(targets_dir()) if f.endswith(".json"))


def test_there_are_targets():
    assert {"loihi1.json", "loihi2.json"} <= set(TARGET_FILES)


@pytest.mark.parametrize("fname", TARGET_FILES)
def test_every_target_file_validates(fname):
    path = os.path.join(targets_dir(), fname)
    with open(path) as fh:
        doc = json.load(fh)
    assert validate(doc, path) == []
    t = load_target(path)
    assert t.name == fname[:-5]
    # every figure cites a source that exists, and every required figure is present
    for section, fields in FIELDS.items():
        for field, (required, _units) in fields.items():
            fig = doc[section][field]
            if required:
                assert fig is not None and fig["value"] > 0
            if fig is not None:
                assert fig["source"] in doc["sources"]
                assert isinstance(fig["estimate"], bool)


def test_lava_means_loihi2_and_loihi2_energy_is_a_labelled_proxy():
    t = load_target("lava")
    assert t.name == "loihi2"
    for k in FIELDS["energy"]:
        fig = t.figure("energy", k)
        assert fig["estimate"] is True          # no published Loihi 2 per-op energy
        assert "proxy" in fig["note"].lower()
    l1 = load_target("loihi1")
    # the proxy figures are Loihi 1's
    assert t.energy_pj() == l1.energy_pj()
    assert l1.value("energy", "synaptic_op") == 23.6
    assert l1.value("core", "neurons") == 1024
    assert t.value("core", "fan_in") is None    # unpublished for Loihi 2


def _doc():
    with open(os.path.join(targets_dir(), "loihi1.json")) as fh:
        return json.load(fh)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["core"].pop("neurons"), "core.neurons"),
    (lambda d: d["energy"]["synaptic_op"].update(unit="nJ"), "energy.synaptic_op.unit"),
    (lambda d: d["energy"]["spike"].update(source="nowhere"), "energy.spike.source"),
    (lambda d: d["bits"]["weight"].update(value=-8), "bits.weight.value"),
    (lambda d: d["chip_limits"].update(cores=None), "chip_limits.cores"),
    (lambda d: d["core"]["fan_in"].pop("estimate"), "core.fan_in.estimate"),
    (lambda d: d.update(schema="other/2"), "schema"),
    (lambda d: d["core"].update(cache=1), "core.cache"),
])
def test_broken_file_names_file_and_field(tmp_path, mutate, field):
    d = _doc()
    mutate(d)
    p = tmp_path / "loihi1.json"
    p.write_text(json.dumps(d))
    with pytest.raises(TargetError) as e:
        load_target(str(p))
    msg = e.value.one_line()
    assert str(p) in msg and field in msg


def test_name_must_match_file_and_bad_json(tmp_path):
    p = tmp_path / "mychip.json"
    p.write_text(json.dumps(_doc()))           # name says loihi1
    with pytest.raises(TargetError, match="mychip.json"):
        load_target(str(p))
    q = tmp_path / "broken.json"
    q.write_text("{not json")
    with pytest.raises(TargetError, match="not valid JSON"):
        load_target(str(q))
    with pytest.raises(TargetError, match="known targets"):
        load_target("no_such_chip")


def test_adding_a_chip_is_adding_a_file(tmp_path, monkeypatch):
    d = copy.deepcopy(_doc())
    d["name"] = "tinychip"
    d["core"]["neurons"]["value"] = 16
    (tmp_path / "tinychip.json").write_text(json.dumps(d))
    monkeypatch.setenv("NEUROCOMP_TARGETS", str(tmp_path))
    assert available() == ["tinychip"]
    assert load_target("tinychip").value("core", "neurons") == 16
