"""Builds neurocomp's bad-input corpus: tiny broken checkpoints, NIR files and artifacts.

Every case is derived from one small valid model (a few hundred bytes of weights), so the corpus
costs nothing to keep in sync with the formats. ``tests/test_bad_inputs.py`` builds it into a
temporary folder; run this file to write it to ``tests/corpus/generated/`` for poking at by hand:

    .venv/bin/python tests/corpus/build_corpus.py

Each case is ``Case(name, kind, path, needles)``: ``kind`` says which command consumes it
(``compile`` a checkpoint, ``simulate`` an artifact, ``nir`` a NIR file, ``inputs`` an ``--inputs``
array for a good artifact), ``needles`` are strings the one-line error must contain (the file,
layer or field it names).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
T = 4
SHAPE = (1, 4, 4)


@dataclass
class Case:
    name: str
    kind: str           # compile | simulate | nir | inputs
    path: str
    needles: tuple = ()
    extra_args: list = field(default_factory=list)


def tiny_model(seed: int = 0):
    """conv -> LIF -> maxpool -> flatten -> linear -> LIF on a 1x4x4 input (148 parameters)."""
    from spikingjelly.activation_based import functional, layer, neuron
    torch.manual_seed(seed)
    m = torch.nn.Sequential(layer.Conv2d(1, 2, 3, padding=1), neuron.LIFNode(tau=2.0), layer.MaxPool2d(2),
                            layer.Flatten(), layer.Linear(8, 3), neuron.LIFNode(tau=2.0))
    functional.set_step_mode(m, "m")
    return m.eval()


def good_checkpoint(path):
    from neurocomp.frontends.checkpoint import save_checkpoint
    return save_checkpoint(tiny_model(), path, input_shape=SHAPE, timesteps=T, encoding="bernoulli")


def _doc(good):
    return torch.load(good, weights_only=True)


def _save(doc, path):
    torch.save(doc, path)
    return path


def _lif_args(doc, index="1"):
    for name, spec in doc["architecture"]["children"]:
        if name == index:
            return spec["args"]
    raise KeyError(index)


class _RunsCode:
    """Unpickling this object runs ``open(marker, 'w')`` (what a malicious checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_pickle(path, marker):
    """A ``.pt`` whose unpickling creates ``marker`` (nothing else happens)."""
    torch.save({"format": "neurocomp.checkpoint", "payload": _RunsCode(marker)}, path)
    return path


def build(out: str) -> list[Case]:
    """Write every case under ``out``; returns the list of cases."""
    os.makedirs(out, exist_ok=True)
    good = good_checkpoint(os.path.join(out, "good.pt"))
    raw = open(good, "rb").read()
    cases: list[Case] = []

    def pt(name, data: bytes, needles=None):
        p = os.path.join(out, name)
        with open(p, "wb") as fh:
            fh.write(data)
        cases.append(Case(name, "compile", p, needles or (name,)))

    def doc_case(name, mutate, needles=None):
        d = copy.deepcopy(_doc(good))
        mutate(d)
        p = _save(d, os.path.join(out, name))
        cases.append(Case(name, "compile", p, needles or (name,)))

    # --- damaged files
    pt("empty.pt", b"")
    pt("truncated.pt", raw[: len(raw) // 2])
    pt("truncated_tail.pt", raw[:-40])
    pt("garbage.pt", bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8)))
    corrupt = bytearray(raw)
    i = raw.find(b"data.pkl")
    for k in range(i + 40, i + 80):     # scribble over the start of the pickled dictionary
        corrupt[k] ^= 0x5A
    pt("corrupted.pt", bytes(corrupt))
    pt("text.pt", b"this is not a checkpoint\n")
    p = _save([1, 2, 3], os.path.join(out, "a_list.pt"))
    cases.append(Case("a_list.pt", "compile", p, ("a_list.pt",)))
    p = _save({"weights": torch.zeros(3)}, os.path.join(out, "plain_state_dict.pt"))
    cases.append(Case("plain_state_dict.pt", "compile", p, ("plain_state_dict.pt",)))

    # --- wrong or missing keys
    for key in ("architecture", "state_dict", "input_shape", "timesteps", "encoding"):
        doc_case(f"missing_{key}.pt", lambda d, k=key: d.pop(k), (f"missing_{key}.pt", key))
    doc_case("wrong_version.pt", lambda d: d.update(version=99), ("wrong_version.pt", "99"))
    doc_case("wrong_encoding.pt", lambda d: d.update(encoding="morse"), ("wrong_encoding.pt", "encoding"))
    doc_case("state_dict_missing_weight.pt", lambda d: d["state_dict"].pop("0.weight"),
             ("state_dict_missing_weight.pt", "0.weight"))
    doc_case("state_dict_extra_key.pt", lambda d: d["state_dict"].update({"9.weight": torch.zeros(2)}),
             ("state_dict_extra_key.pt", "9.weight"))
    doc_case("architecture_no_type.pt", lambda d: d["architecture"]["children"][0][1].pop("type"),
             ("architecture_no_type.pt", "architecture.0"))
    doc_case("architecture_bad_args.pt",
             lambda d: d["architecture"]["children"][0][1]["args"].update(kernel_sise=3),
             ("architecture_bad_args.pt", "architecture.0"))

    # --- bad values
    def nan(d):
        d["state_dict"]["4.weight"][0, 0] = float("nan")

    def inf(d):
        d["state_dict"]["0.bias"][1] = float("inf")
    doc_case("nan_weight.pt", nan, ("nan_weight.pt", "4.weight"))
    doc_case("inf_bias.pt", inf, ("inf_bias.pt", "0.bias"))
    doc_case("mismatched_weight_shape.pt",
             lambda d: d["state_dict"].update({"4.weight": torch.zeros(3, 9)}), ("mismatched_weight_shape.pt", "4.weight"))
    doc_case("mismatched_input_shape.pt", lambda d: d.update(input_shape=[3, 4, 4]),
             ("mismatched_input_shape.pt", "layer '0'", "channels"))
    doc_case("linear_input_mismatch.pt", lambda d: d.update(input_shape=[1, 6, 6]),
             ("linear_input_mismatch.pt", "layer '4'"))
    doc_case("bad_input_shape.pt", lambda d: d.update(input_shape=[1, 0, 4]), ("bad_input_shape.pt", "input_shape"))
    for tau, tag in ((0.0, "zero"), (-2.0, "negative"), (0.5, "below_one"), (float("nan"), "nan")):
        doc_case(f"tau_{tag}.pt", lambda d, t=tau: _lif_args(d).update(tau=t), (f"tau_{tag}.pt", "tau"))
    doc_case("threshold_zero.pt", lambda d: _lif_args(d).update(v_threshold=0.0),
             ("threshold_zero.pt", "layer '1'", "threshold"))
    doc_case("threshold_below_reset.pt", lambda d: _lif_args(d).update(v_threshold=-1.0),
             ("threshold_below_reset.pt", "layer '1'", "threshold"))
    doc_case("threshold_inf.pt", lambda d: _lif_args(d).update(v_threshold=float("inf")),
             ("threshold_inf.pt", "layer '1'", "v_threshold"))
    doc_case("threshold_nan.pt", lambda d: _lif_args(d).update(v_threshold=float("nan")),
             ("threshold_nan.pt", "layer '1'", "v_threshold"))
    doc_case("threshold_huge.pt", lambda d: _lif_args(d).update(v_threshold=1e30),
             ("threshold_huge.pt", "layer '1'", "threshold"))
    doc_case("threshold_tiny.pt", lambda d: _lif_args(d).update(v_threshold=1e-30),
             ("threshold_tiny.pt", "layer '1'", "threshold"))
    doc_case("reset_nan.pt", lambda d: _lif_args(d).update(v_reset=float("nan")),
             ("reset_nan.pt", "layer '1'", "v_reset"))
    doc_case("soft_reset.pt", lambda d: _lif_args(d).update(v_reset=None), ("soft_reset.pt", "layer '1'"))
    doc_case("T_zero.pt", lambda d: d.update(timesteps=0), ("T_zero.pt", "timesteps"))
    doc_case("T_negative.pt", lambda d: d.update(timesteps=-3), ("T_negative.pt", "timesteps"))
    doc_case("T_huge.pt", lambda d: d.update(timesteps=10 ** 12), ("T_huge.pt", "timesteps"))
    doc_case("T_float.pt", lambda d: d.update(timesteps=4.5), ("T_float.pt", "timesteps"))
    doc_case("T_string.pt", lambda d: d.update(timesteps="8"), ("T_string.pt", "timesteps"))

    # --- unsupported layers
    doc_case("unknown_layer.pt", lambda d: d["architecture"]["children"].insert(
        1, ["lstm", {"type": "torch.LSTM", "args": {}}]), ("unknown_layer.pt", "torch.LSTM"))

    def maxpool_on_current(d):   # MaxPool between the conv and its neuron: a max over currents
        ch = d["architecture"]["children"]
        ch[1], ch[2] = ch[2], ch[1]
        d["input_shape"] = [1, 4, 4]
    doc_case("maxpool_on_current.pt", maxpool_on_current, ("maxpool_on_current.pt", "layer '2'", "MaxPool"))

    def no_output_neuron(d):
        d["architecture"]["children"].pop()
    doc_case("ends_in_linear.pt", no_output_neuron, ("ends_in_linear.pt", "output"))

    # --- NIR files (read by neurocomp.frontends.nir.read_nir_file)
    from neurocomp.backends.nir import write_nir
    from neurocomp.frontends.checkpoint import load_checkpoint
    from neurocomp.frontends.torch import module_to_graph
    lm = load_checkpoint(good)
    graph = module_to_graph(lm.model, lm.input_shape, lm.timesteps, lm.encoding)
    good_nir = os.path.join(out, "good.nir")
    write_nir(graph, good_nir)
    nraw = open(good_nir, "rb").read()

    def nir_case(name, data=None, edit=None, needles=None):
        p = os.path.join(out, name)
        if data is not None:
            with open(p, "wb") as fh:
                fh.write(data)
        else:
            shutil.copyfile(good_nir, p)
            import h5py
            with h5py.File(p, "r+") as f:
                edit(f)
        cases.append(Case(name, "nir", p, needles or (name,)))

    nir_case("truncated.nir", nraw[: len(nraw) // 2])
    nir_case("empty.nir", b"")
    nir_case("not_hdf5.nir", b"\x89HDF-but-not-really" + bytes(200))

    def zero_block(data):
        b = bytearray(data)
        b[512:4096] = bytes(len(b[512:4096]))
        return bytes(b)
    nir_case("zeroed_block.nir", zero_block(nraw))

    def bomb(f):   # a tiny file that declares 64 GiB of (compressed, all-zero, never written) weights
        g = f["node"]["nodes"]["4"]
        del g["weight"]
        g.create_dataset("weight", shape=(1 << 18, 1 << 16), dtype="float32", compression="gzip",
                         chunks=(1024, 1024))
    nir_case("bomb.nir", edit=bomb, needles=("bomb.nir", "MiB"))

    def no_nodes(f):
        del f["node"]
    nir_case("no_node_group.nir", edit=no_nodes, needles=("no_node_group.nir", "node"))

    def bad_edge(f):
        e = f["node"]["edges"]
        data = e[()]
        del f["node"]["edges"]
        data = np.array([[a, b"ghost" if b == b"4" else b] for a, b in data.tolist()], dtype=object)
        f["node"].create_dataset("edges", data=data.astype("S"))
    nir_case("edge_to_unknown_node.nir", edit=bad_edge, needles=("edge_to_unknown_node.nir", "ghost"))

    def conv_weight_shape(f):
        g = f["node"]["nodes"]["0"]
        del g["weight"]
        g.create_dataset("weight", data=np.zeros((2, 5, 3, 3), np.float32))
    nir_case("conv_channels_mismatch.nir", edit=conv_weight_shape, needles=("conv_channels_mismatch.nir", "0.input"))

    def linear_weight_shape(f):
        g = f["node"]["nodes"]["4"]
        del g["weight"]
        g.create_dataset("weight", data=np.zeros((3, 7), np.float32))
    nir_case("linear_shape_mismatch.nir", edit=linear_weight_shape, needles=("linear_shape_mismatch.nir", "4.input"))

    def nan_threshold(f):
        g = f["node"]["nodes"]["1"]
        v = g["v_threshold"][()]
        del g["v_threshold"]
        g.create_dataset("v_threshold", data=np.full_like(v, np.nan))
    nir_case("nan_threshold.nir", edit=nan_threshold, needles=("nan_threshold.nir", "'1'", "v_threshold"))

    def nan_weight(f):
        g = f["node"]["nodes"]["0"]
        w = g["weight"][()]
        w[0, 0, 0, 0] = np.nan
        del g["weight"]
        g.create_dataset("weight", data=w)
    nir_case("nan_weight.nir", edit=nan_weight, needles=("nan_weight.nir", "'0'", "weight"))

    def tau_zero(f):
        g = f["node"]["nodes"]["1"]["metadata"]
        del g["neurocomp.tau_steps"]
        g.create_dataset("neurocomp.tau_steps", data=0.0)
    nir_case("tau_zero.nir", edit=tau_zero, needles=("tau_zero.nir", "'1'", "tau"))

    def unknown_type(f):
        g = f["node"]["nodes"]["3"]
        del g["type"]
        g.create_dataset("type", data="Delay")
    nir_case("unknown_node_type.nir", edit=unknown_type, needles=("unknown_node_type.nir",))

    def huge_input(f):
        g = f["node"]["nodes"]["input"]
        del g["shape"]
        g.create_dataset("shape", data=np.array([1 << 20, 1 << 20, 1 << 20]))
    nir_case("huge_input_shape.nir", edit=huge_input, needles=("huge_input_shape.nir", "input"))

    # --- artifacts (consumed by `neurocomp simulate`)
    from neurocomp.api import compile as nc_compile
    good_art = nc_compile(good, os.path.join(out, "good.art"))

    def art_case(name, edit, needles=None):
        p = os.path.join(out, name)
        shutil.copytree(good_art, p)
        edit(p)
        cases.append(Case(name, "simulate", p, needles or (name,)))

    def write(path, data):
        with open(path, "wb") as fh:
            fh.write(data)

    def truncate(path, keep=0.5):
        data = open(path, "rb").read()
        write(path, data[: int(len(data) * keep)])

    art_case("art_no_manifest", lambda p: os.unlink(os.path.join(p, "manifest.json")),
             ("art_no_manifest", "manifest.json"))
    art_case("art_truncated_manifest", lambda p: truncate(os.path.join(p, "manifest.json")),
             ("art_truncated_manifest", "manifest.json"))

    def manifest_edit(fn):
        def edit(p):
            mp = os.path.join(p, "manifest.json")
            m = json.load(open(mp))
            fn(m)
            json.dump(m, open(mp, "w"))
        return edit
    art_case("art_manifest_no_timesteps", manifest_edit(lambda m: m.pop("timesteps")),
             ("art_manifest_no_timesteps", "timesteps"))
    art_case("art_manifest_bad_shape", manifest_edit(lambda m: m.update(input_shape="4x4")),
             ("art_manifest_bad_shape", "input_shape"))
    art_case("art_manifest_wrong_format", manifest_edit(lambda m: m.update(format="zip")),
             ("art_manifest_wrong_format", "manifest.json"))
    art_case("art_no_fixed_graph", lambda p: os.unlink(os.path.join(p, "fixed", "graph.json")),
             ("art_no_fixed_graph", "graph.json"))
    art_case("art_truncated_graph", lambda p: truncate(os.path.join(p, "fixed", "graph.json")),
             ("art_truncated_graph", "graph.json"))
    art_case("art_truncated_array", lambda p: truncate(os.path.join(p, "fixed", "arrays", "4.qweight.npy"), 0.7),
             ("art_truncated_array", "4.qweight.npy"))
    art_case("art_missing_array", lambda p: os.unlink(os.path.join(p, "fixed", "arrays", "0.qweight.npy")),
             ("art_missing_array", "0.qweight.npy"))

    def tamper_array(p):   # a valid .npy with different numbers: only the manifest's digest can tell
        ap = os.path.join(p, "fixed", "arrays", "0.qweight.npy")
        a = np.load(ap)
        np.save(ap, a + 1)
    art_case("art_tampered_array", tamper_array, ("art_tampered_array", "fixed"))

    def graph_edit(fn):
        def edit(p):
            gp = os.path.join(p, "fixed", "graph.json")
            g = json.load(open(gp))
            fn(g)
            json.dump(g, open(gp, "w"))
        return edit

    def bad_shape(g):
        for n in g["nodes"]:
            if n["name"] == "1":
                n["out_shape"] = [2, 5, 5]
    art_case("art_graph_shape_mismatch", graph_edit(bad_shape), ("art_graph_shape_mismatch", "layer '2'"))

    def bad_kind(g):
        g["nodes"][1]["kind"] = "transformer"
    art_case("art_graph_unknown_kind", graph_edit(bad_kind), ("art_graph_unknown_kind", "transformer"))
    # (an artifact without model.pt is valid: artifacts compiled from NIR have no torch model)
    art_case("art_truncated_checkpoint", lambda p: truncate(os.path.join(p, "model.pt")),
             ("art_truncated_checkpoint", "model.pt"))
    p = os.path.join(out, "art_not_a_folder")
    write(p, b"{}")
    cases.append(Case("art_not_a_folder", "simulate", p, ("art_not_a_folder",)))

    # --- --inputs arrays for the good artifact
    good_inputs = os.path.join(out, "good_inputs.npy")
    np.save(good_inputs, (np.random.default_rng(1).random((3, T) + SHAPE) < 0.4).astype(np.float32))
    def inputs_case(name, arr=None, data=None, needles=None):
        p = os.path.join(out, name)
        if arr is not None:
            np.save(p, arr, allow_pickle=True)
        else:
            write(p, data)
        cases.append(Case(name, "inputs", p, needles or (name,)))

    inputs_case("inputs_wrong_shape.npy", np.zeros((3, T, 2, 4, 4), np.float32), needles=("inputs_wrong_shape.npy", "shape"))
    inputs_case("inputs_wrong_T.npy", np.zeros((3, T + 1) + SHAPE, np.float32), needles=("inputs_wrong_T.npy", "shape"))
    inputs_case("inputs_not_binary.npy", np.full((2, T) + SHAPE, 0.5, np.float32), needles=("inputs_not_binary.npy", "binary"))
    inputs_case("inputs_nan.npy", np.full((2, T) + SHAPE, np.nan, np.float32), needles=("inputs_nan.npy", "binary"))
    inputs_case("inputs_empty.npy", np.zeros((0, T) + SHAPE, np.float32), needles=("inputs_empty.npy",))
    inputs_case("inputs_object.npy", np.array([{"a": 1}, None], dtype=object), needles=("inputs_object.npy",))
    inputs_case("inputs_truncated.npy", data=open(_npy_bytes(np.zeros((4, T) + SHAPE, np.float32), out), "rb").read()[:150],
                needles=("inputs_truncated.npy",))
    cases.append(Case("inputs_missing.npy", "inputs", os.path.join(out, "inputs_missing.npy"),
                      ("inputs_missing.npy",)))
    return cases


def _npy_bytes(arr, out):
    p = os.path.join(out, ".scratch.npy")
    np.save(p, arr)
    return p


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    target = os.path.join(HERE, "generated")
    shutil.rmtree(target, ignore_errors=True)
    for c in build(target):
        print(f"{c.kind:9s} {os.path.relpath(c.path)}")
