"""Report: activity/energy arithmetic by hand, first-divergence logic, the sweep's own-bits point,
and the three outputs for the default model."""
import json
import os

import numpy as np
import pytest
import torch

from neurocomp.ir import Conv2d, Graph, Input, LIF, Linear
from neurocomp.crosscheck import _PairAcc
from neurocomp.metrics import energy_per_inference, layer_activity, per_inference_counts
from neurocomp.targets import load_target

MODEL = "models/digits_plain/model.pt"


def test_energy_on_a_hand_counted_case():
    # Input(3) -> Linear(3->2) -> LIF, T=2, one sample. Input spikes: t0 = [1,0,1], t1 = [0,0,0].
    g = Graph.chain([Input("in", (3,), (3,)), Linear("fc", (3,), (2,), weight=np.ones((2, 3), np.float32)),
                     LIF("out", (2,), (2,))], {"timesteps": 2})
    x = torch.tensor([[[1., 0., 1.]], [[0., 0., 0.]]])
    spikes = {"out": torch.tensor([[[True, False]], [[False, True]]])}
    act = layer_activity(g, x, spikes)
    lay = act["layers"]["out"]
    # 2 input spikes x 2 outgoing synapses = 4 ops; 2 neurons x 2 steps = 4 updates, 2 active (t0)
    assert (lay["synaptic_ops"], lay["neuron_updates"], lay["neuron_updates_active"], lay["spikes"]) == (4, 4, 2, 2)
    c = per_inference_counts(act, samples=1)
    # routed: the 2 input spikes; the output layer's spikes go to the host
    assert c == {"synaptic_ops": 4, "neuron_updates_active": 2, "neuron_updates_inactive": 2,
                 "routed_spikes": 2, "spike_hops": 2, "hops_per_spike": 1.0}
    e = energy_per_inference(c, load_target("loihi1"))
    # Davies et al. 2018 Table 2: 23.6 pJ/syn op, 81/52 pJ active/inactive update, 1.7 pJ spike, 3.0 pJ hop
    assert e["total_pJ"] == pytest.approx(4 * 23.6 + 2 * 81 + 2 * 52 + 2 * 1.7 + 2 * 3.0)   # 369.8
    assert e["total_pJ"] == pytest.approx(369.8)
    assert e["estimate"] is False and all(t["source"] == "davies2018" for t in e["terms"])
    assert load_target("loihi2").figure("energy", "synaptic_op")["estimate"] is True


def test_conv_synaptic_ops_by_hand():
    conv = Conv2d("c", (1, 3, 3), (2, 3, 3), weight=np.ones((2, 1, 3, 3), np.float32), padding=(1, 1))
    g = Graph.chain([Input("in", (1, 3, 3), (1, 3, 3)), conv, LIF("n", (2, 3, 3), (2, 3, 3))], {"timesteps": 1})
    for pos, ops in (((1, 1), 18), ((0, 0), 8), ((0, 1), 12)):   # centre: 9 targets x 2 ch; corner 4; edge 6
        x = torch.zeros(1, 1, 1, 3, 3)
        x[0, 0, 0, pos[0], pos[1]] = 1
        a = layer_activity(g, x, {"n": torch.zeros(1, 1, 2, 3, 3, dtype=torch.bool)})["layers"]["n"]
        assert a["synaptic_ops"] == ops and a["neuron_updates_active"] == ops


def test_first_divergence_is_earliest_step_then_first_layer():
    T, B = 4, 2
    a = {l: torch.zeros(T, B, 3, dtype=torch.bool) for l in ("l1", "l2", "l3")}
    b = {l: v.clone() for l, v in a.items()}
    b["l3"][1, 0, 2] = True      # step 1, sample 0
    b["l1"][2, 1, 0] = True      # step 2, sample 1
    acc = _PairAcc(["l1", "l2", "l3"], T)
    acc.add(a, b, torch.tensor([0, 1]), torch.tensor([0, 2]))
    r = acc.result()
    assert r["first_diverging"] == {"layer": "l3", "step": 1}
    assert r["first_diverging_step"] == {"l1": 2, "l2": None, "l3": 1}
    assert r["mismatches"] == {"l1": 1, "l2": 0, "l3": 1}
    assert r["exact_fraction"] == 0.0 and r["same_class_fraction"] == 0.5
    assert r["agreement"]["l3"][1] == pytest.approx(5 / 6) and r["agreement"]["l2"] == [1.0] * 4


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from neurocomp.api import compile as compile_
    return compile_(MODEL, str(tmp_path_factory.mktemp("rep") / "art"))


def test_sweep_own_bits_equals_compiled_fixed_point_accuracy(artifact):
    from neurocomp.api import simulate
    from neurocomp.artifact import Artifact
    from neurocomp.data.registry import load_inputs
    from neurocomp.measure import bit_sweep
    art = Artifact(artifact)
    n = 120
    x, y = load_inputs("digits", "test", 8, "bernoulli", n=n)
    sw = bit_sweep(art, torch.as_tensor(x), y, bits=[4, 8], progress=False)
    row8 = sw["rows"][-1]
    ref = simulate(artifact, backend="reference", samples=n, progress=False)
    assert row8["weight_bits"] == 8 and row8["samples"] == n
    # simulate() averages in float32: compare the counts of correct samples
    assert row8["correct"] == round(ref["accuracy"]["fixed_reference"] * n)
    assert row8["accuracy"] == pytest.approx(ref["accuracy"]["fixed_reference"], abs=1e-6)
    assert row8["same_quantization_as_artifact"] is True
    assert "same_quantization_as_artifact" not in sw["rows"][0]


@pytest.mark.lava
def test_report_writes_the_three_outputs(artifact):
    from neurocomp.cli import main
    assert main(["report", artifact, "--samples", "40", "--lava-samples", "4", "-q"]) == 0
    md = open(os.path.join(artifact, "report.md")).read()
    doc = json.load(open(os.path.join(artifact, "report.json")))
    plots = os.listdir(os.path.join(artifact, "report_plots"))
    assert {"accuracy_per_stage.png", "agreement_heatmap.png", "activity.png", "bit_sweep.png", "clipping.png",
            "cores.png", "energy.png"} <= set(plots)
    for p in plots:
        with open(os.path.join(artifact, "report_plots", p), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    secs = doc["sections"]
    assert {"accuracy", "crosscheck", "activity", "bit_sweep", "clipping", "mapping", "energy"} <= set(secs)
    assert "attention" not in secs                      # plain model: no attention section
    assert not [f for f in os.listdir(artifact) if f.startswith(".report")]    # no temporary leftovers
    # Lava is bit-exact with the fixed-point reference on its sample
    lava = secs["crosscheck"]["data"]["pairs"]["fixed->lava"]
    assert lava["samples"] == 4 and lava["exact_fraction"] == 1.0 and lava["first_diverging"] is None
    assert doc["meta"]["samples"] == 40 and doc["meta"]["lava_samples"] == 4
    assert [r["weight_bits"] for r in secs["bit_sweep"]["data"]["rows"]] == list(range(2, 9))
    # the energy total is the sum of count x figure over the target file's figures
    with open("targets/loihi2.json") as fh:
        tfile = json.load(fh)
    e = secs["energy"]["data"]
    names = {"synaptic_ops": "synaptic_op", "neuron_updates_active": "neuron_update_active",
             "neuron_updates_inactive": "neuron_update_inactive", "routed_spikes": "spike", "spike_hops": "hop"}
    assert e["total_pJ"] == pytest.approx(sum(e["counts"][k] * tfile["energy"][v]["value"] for k, v in names.items()))
    # the activity counts agree with the neurons x steps arithmetic
    c = e["counts"]
    assert c["neuron_updates_active"] + c["neuron_updates_inactive"] == pytest.approx((1024 + 256 + 512 + 128 + 10) * 8)
    assert secs["mapping"]["data"]["cores"] == 5
    assert "reference simulator" in md and "Lava" in md and "davies2018" in md


@pytest.mark.lava
def test_report_measures_attention_modes_side_by_side(tmp_path):
    """An attention model's report recompiles the source in static and dynamic mode and fills one row
    with every stage; --finetuned fills 'static after fine-tuning' from a fine-tuned artifact."""
    from neurocomp.api import compile as compile_, simulate
    from neurocomp.cli import main
    from neurocomp.training.finetune import finetune
    # 64 calibration samples (the recompile in the other mode reads them from the manifest); the fine-tuned
    # artifact's own before/after figures are not what is tested here (measure=False)
    art = compile_("models/digits_tcja/model.pt", str(tmp_path / "static"), attention="static", calib_samples=64)
    ft = str(tmp_path / "ft")
    finetune(art, ft, epochs=1, limit=64, progress=False, measure=False)
    assert main(["report", art, "--samples", "30", "--lava-samples", "4", "--finetuned", ft, "-q"]) == 0
    doc = json.load(open(os.path.join(art, "report.json")))
    m = doc["sections"]["attention"]["data"]["modes"]
    st, dy = m["modes"]["static"], m["modes"]["dynamic"]
    own = simulate(art, backend="reference", samples=30, progress=False)["accuracy"]
    assert st["fixed"] == pytest.approx(own["fixed_reference"])        # same calibration, same artifact
    assert st["static_float"] == pytest.approx(own["float_static_attention"])
    assert dy["lava_exact"] == 1.0 and dy["lava_samples"] == 4 and dy["attention_ops"] > 0
    assert dy["latency_steps"] == st["latency_steps"] + 8 * 2           # T = 8, two TCJA modules
    assert m["static_finetuned"]["fixed"] == pytest.approx(
        simulate(ft, backend="reference", samples=30, progress=False)["accuracy"]["fixed_reference"])
    md = open(os.path.join(art, "report.md")).read()
    assert "Attention modes, measured side by side" in md and "static after fine-tuning" in md
    assert not [f for f in os.listdir(art) if f.startswith(".")]          # nothing left behind


@pytest.mark.lava
def test_report_shows_attention_process_cost_beside_the_cores(tmp_path):
    from neurocomp.api import compile as compile_
    from neurocomp.cli import main
    art = compile_("models/digits_tcja/model.pt", str(tmp_path / "dyn"), attention="dynamic", calib_samples=64)
    assert main(["report", art, "--samples", "20", "--lava-samples", "2", "--no-attention-modes", "-q"]) == 0
    doc = json.load(open(os.path.join(art, "report.json")))
    att = doc["sections"]["energy"]["data"]["attention_processes"]
    man = json.load(open(os.path.join(art, "manifest.json")))
    assert att == man["attention_process_cost"] and len(att) == 2            # two TCJA modules
    for c in att.values():
        assert c["total_operations"] == sum(c["operations"].values()) > 0
        assert c["bits_out"] == 8 * c["bits_in"]                              # 8-bit payload per input spike
    assert "modes" not in doc["sections"]["attention"]["data"] or not doc["sections"]["attention"]["data"]["modes"]
    md = open(os.path.join(art, "report.md")).read()
    assert "Attention processes (dynamic attention)" in md


def _built(folder, tmp_path, png=b"\x89PNG new"):
    """A built report (build_report's shape) with one section and one plot, without measuring."""
    from neurocomp.report.sections import Section
    plot_dir = tmp_path / "plots-src"
    plot_dir.mkdir(exist_ok=True)
    (plot_dir / "p.png").write_bytes(png)
    meta = {"model": "m", "artifact": str(folder), "hardware_target": "loihi2", "data": "d", "timesteps": 2,
            "torch_device": "cpu", "samples": 1, "lava_samples": 0, "timings_s": {"x": 1.0}}
    return {"sections": [Section("s", "S", ["line"], {"v": np.int64(3)}, ["p.png"])], "meta": meta,
            "plot_dir": str(plot_dir)}


def test_write_report_replaces_a_previous_report_whole_and_refuses_a_linked_plots_folder(tmp_path):
    """The report goes through the one atomic folder writer: a previous report_plots/ is replaced as a
    whole (its other files go), nothing temporary is left, and a link in its place is refused, its
    target untouched."""
    from neurocomp.errors import NeurocompError
    from neurocomp.report.write import write_report
    art = tmp_path / "art"
    (art / "report_plots").mkdir(parents=True)
    (art / "report_plots" / "old.png").write_bytes(b"old")
    paths = write_report(str(art), _built(art, tmp_path))
    assert sorted(os.listdir(art / "report_plots")) == ["p.png"]
    assert (art / "report_plots" / "p.png").read_bytes() == b"\x89PNG new"
    assert json.load(open(art / "report.json"))["sections"]["s"] == {"title": "S", "plots": ["report_plots/p.png"],
                                                                      "data": {"v": 3}}
    assert open(art / "report.md").read().startswith("# neurocomp report: m")
    assert paths == [str(art / "report.md"), str(art / "report.json"), str(art / "report_plots" / "p.png")]
    assert sorted(os.listdir(art)) == ["report.json", "report.md", "report_plots"]
    assert not (tmp_path / "plots-src").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    os.rename(art / "report_plots", tmp_path / "moved")
    os.symlink(elsewhere, art / "report_plots")
    with pytest.raises(NeurocompError):
        write_report(str(art), _built(art, tmp_path))
    assert os.listdir(elsewhere) == ["keep.txt"] and os.path.islink(art / "report_plots")
    assert not [f for f in os.listdir(art) if f.startswith(".")]
