"""Hostile artifacts, output folders and names (issue 11, classes 3-6, 9, 10), built from one good artifact.

``tests/test_hostile_artifacts.py`` builds them into a temporary folder. Each builder edits a copy
of a good artifact (or makes a folder, file or checkpoint) the way an attacker or an accident
would, and returns a ``Case(name, kind, path, needles)`` like ``build_corpus``:

- ``simulate``: an artifact that ``simulate``/``inspect``/``report`` must refuse with one line
  naming ``needles`` (structure of the manifest, required digests, tampered stored files);
- ``overwrite``: a folder that is *not* an artifact and that ``compile --overwrite`` must keep.

Run this file to write them to ``tests/corpus/generated_hostile/`` for poking at by hand.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from build_corpus import SHAPE, T, Case, good_checkpoint, tiny_model  # noqa: E402,F401  (tiny_model: for tests)

# What a hostile name holds: a newline that would forge a second error line, a terminal escape that
# clears the screen and sets the window title, and a bidi override.
FORGED = "x\nerror: forged line"
ESCAPES = "\x1b[2J\x1b]0;pwned\x07\u202e"
HOSTILE_NAME = FORGED + ESCAPES
SECRET = "SECRET-7f3a9c"          # a value of a foreign file that must never be shown


def read_manifest(art):
    with open(os.path.join(art, "manifest.json")) as fh:
        return json.load(fh)


def write_manifest(art, doc):
    with open(os.path.join(art, "manifest.json"), "w") as fh:
        json.dump(doc, fh)


def good_artifact(out, name="good.art"):
    """A tiny valid artifact (conv-LIF-maxpool-linear-LIF on 1x4x4, T=4) compiled from a checkpoint."""
    import neurocomp
    ckpt = good_checkpoint(os.path.join(out, "good_for_art.pt"))
    return neurocomp.compile(ckpt, os.path.join(out, name))


def negated_checkpoint(src, dest):
    """``src`` with every weight negated: a valid checkpoint that computes something else."""
    doc = torch.load(src, weights_only=True)
    doc["state_dict"] = {k: -v if v.is_floating_point() else v for k, v in doc["state_dict"].items()}
    torch.save(doc, dest)
    return dest


def negate_fixed_arrays(art):
    """Negate the quantized weights in the fixed graph (valid .npy files; only a digest can tell)."""
    import numpy as np
    adir = os.path.join(art, "fixed", "arrays")
    for f in os.listdir(adir):
        if "qweight" in f:
            p = os.path.join(adir, f)
            np.save(p, -np.load(p))


def foreign_target_file(path):
    """A JSON file outside any artifact that looks like a target and holds a secret value."""
    doc = {"schema": "neurocomp.target/1", "name": SECRET, "chip": SECRET, "backend": "lava",
           "description": SECRET, "sources": {"s": SECRET}, "bits": {"weight": {"value": SECRET}}}
    with open(path, "w") as fh:
        json.dump(doc, fh)
    return path


def custom_target(path, name="mychip"):
    """A valid target file (a copy of targets/loihi2.json under another name) outside targets/."""
    from neurocomp.targets import targets_dir
    with open(os.path.join(targets_dir(), "loihi2.json")) as fh:
        doc = json.load(fh)
    doc["name"] = name
    with open(path, "w") as fh:
        json.dump(doc, fh)
    return path


def hostile_name_checkpoint(path, name=HOSTILE_NAME, soft_reset=False):
    """The tiny model with its first LIF named ``name`` (newline, escape sequences); with
    ``soft_reset`` that LIF has ``v_reset=None``, which neurocomp refuses, naming the layer."""
    from neurocomp.frontends.checkpoint import save_checkpoint
    return save_checkpoint(hostile_name_module(name, soft_reset), path, input_shape=SHAPE, timesteps=T,
                           encoding="bernoulli")


def hostile_name_module(name=HOSTILE_NAME, soft_reset=False):
    from spikingjelly.activation_based import functional, layer, neuron
    torch.manual_seed(0)
    lif = neuron.LIFNode(tau=2.0, v_reset=None) if soft_reset else neuron.LIFNode(tau=2.0)
    m = torch.nn.Sequential(OrderedDict([("conv", layer.Conv2d(1, 2, 3, padding=1)), (name, lif),
                                         ("pool", layer.MaxPool2d(2)), ("flat", layer.Flatten()),
                                         ("fc", layer.Linear(8, 3)), ("out", neuron.LIFNode(tau=2.0))]))
    functional.set_step_mode(m, "m")
    return m.eval()


def hostile_name_nir(path, name=HOSTILE_NAME):
    """A NIR graph (written with the ``nir`` library) whose LIF node is named ``name``: NIR node names
    are free text, and the checkpoint loader refuses non-printable child names, so this is the way a
    hostile layer name reaches the compile table and ``inspect``."""
    import nir
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type=np.array([4])),
             "fc": nir.Affine(weight=rng.normal(0, 1, (3, 4)).astype(np.float32), bias=np.zeros(3, np.float32)),
             name: nir.LIF(tau=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
             "output": nir.Output(output_type=np.array([3]))}
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", name), (name, "output")]))
    return path


def build(out: str, good_art: str | None = None) -> list[Case]:
    """Every hostile artifact / folder into ``out``; returns the cases."""
    os.makedirs(out, exist_ok=True)
    good_art = good_art or good_artifact(out)
    cases = []

    def art_case(name, edit, needles=None):
        p = os.path.join(out, name)
        shutil.copytree(good_art, p, symlinks=True)
        edit(p)
        cases.append(Case(name, "simulate", p, needles or (name,)))

    def manifest_edit(fn):
        def edit(p):
            m = read_manifest(p)
            r = fn(m)
            m = r if isinstance(r, list) else m     # fn edits in place, or returns a replacement list
            write_manifest(p, m)
        return edit

    # --- the manifest's structure (class 9): checked in one place when the artifact is opened
    art_case("man_list", manifest_edit(lambda m: [m]), ("man_list", "manifest.json", "list"))
    art_case("man_number", lambda p: open(os.path.join(p, "manifest.json"), "w").write("42"),
             ("man_number", "manifest.json"))
    art_case("man_no_alignment", manifest_edit(lambda m: m.pop("alignment")), ("man_no_alignment", "alignment"))
    art_case("man_alignment_list", manifest_edit(lambda m: m.update(alignment=[3])),
             ("man_alignment_list", "alignment"))
    art_case("man_depth_string", manifest_edit(lambda m: m["alignment"].update(depth="3")),
             ("man_depth_string", "alignment"))
    art_case("man_checkpoint_list", manifest_edit(lambda m: m.update(input_checkpoint=["model.pt"])),
             ("man_checkpoint_list", "input_checkpoint"))
    art_case("man_attention_string", manifest_edit(lambda m: m.update(attention="static")),
             ("man_attention_string", "attention"))
    art_case("man_dataset_number", manifest_edit(lambda m: m.update(dataset=7)), ("man_dataset_number", "dataset"))
    art_case("man_passes_dict", manifest_edit(lambda m: m.update(passes={"pass": "quantize"})),
             ("man_passes_dict", "passes"))
    art_case("man_mapping_layer_incomplete", manifest_edit(lambda m: m["mapping"]["layers"][0].pop("neurons")),
             ("man_mapping_layer_incomplete", "mapping"))
    art_case("man_mapping_limits_null", manifest_edit(lambda m: m["mapping"].update(limits=None)),
             ("man_mapping_limits_null", "mapping"))
    art_case("man_version_string", manifest_edit(lambda m: m.update(version="1")),
             ("man_version_string", "manifest.json"))

    def fifo_manifest(p):   # would block a plain open() forever
        os.unlink(os.path.join(p, "manifest.json"))
        os.mkfifo(os.path.join(p, "manifest.json"))
    art_case("man_fifo", fifo_manifest, ("man_fifo", "manifest.json", "regular file"))

    # --- required digests (class 6)
    art_case("dig_graphs_null_negated", lambda p: (manifest_edit(lambda m: m.update(graphs=None))(p),
                                                   negate_fixed_arrays(p)),
             ("dig_graphs_null_negated", "graphs"))
    art_case("dig_graphs_no_fixed", manifest_edit(lambda m: m["graphs"].pop("fixed")),
             ("dig_graphs_no_fixed", "graphs"))
    art_case("dig_graphs_not_hex", manifest_edit(lambda m: m["graphs"].update(fixed="0")),
             ("dig_graphs_not_hex", "graphs"))
    art_case("dig_no_files", manifest_edit(lambda m: m.pop("files")), ("dig_no_files", "files"))
    art_case("dig_files_null", manifest_edit(lambda m: m.update(files=None)), ("dig_files_null", "files"))
    art_case("dig_model_pt_replaced",
             lambda p: negated_checkpoint(os.path.join(p, "model.pt"), os.path.join(p, "model.pt")),
             ("dig_model_pt_replaced", "model.pt", "sha256"))
    art_case("dig_model_pt_unrecorded", manifest_edit(lambda m: m["files"].pop("model.pt")),
             ("dig_model_pt_unrecorded", "model.pt", "not recorded"))
    art_case("dig_model_pt_missing", lambda p: os.unlink(os.path.join(p, "model.pt")),
             ("dig_model_pt_missing", "model.pt", "missing"))
    art_case("dig_static_model_added",
             lambda p: negated_checkpoint(os.path.join(p, "model.pt"), os.path.join(p, "static_model.pt")),
             ("dig_static_model_added", "static_model.pt", "not recorded"))
    art_case("dig_model_nir_changed", lambda p: open(os.path.join(p, "model.nir"), "ab").write(b"\0"),
             ("dig_model_nir_changed", "model.nir", "sha256"))

    def model_pt_symlink(p):   # a link to a foreign file that happens to hold the same bytes
        foreign = os.path.join(out, "foreign_model.pt")
        shutil.copyfile(os.path.join(p, "model.pt"), foreign)
        os.unlink(os.path.join(p, "model.pt"))
        os.symlink(foreign, os.path.join(p, "model.pt"))
    art_case("dig_model_pt_symlink", model_pt_symlink, ("dig_model_pt_symlink", "model.pt", "regular file"))
    art_case("dig_files_outside", manifest_edit(lambda m: m["files"].update({"../../etc/passwd": "0" * 64})),
             ("dig_files_outside", "files"))
    return cases


def overwrite_victims(out: str, good_art: str) -> dict:
    """Folders that ``--overwrite`` must not replace, each holding a file it must keep: name -> path."""
    victims = {}

    def folder(name, manifest_text=None, link_manifest_to=None):
        p = os.path.join(out, name)
        os.makedirs(p)
        with open(os.path.join(p, "thesis.tex"), "w") as fh:
            fh.write("years of work")
        if manifest_text is not None:
            with open(os.path.join(p, "manifest.json"), "w") as fh:
                fh.write(manifest_text)
        if link_manifest_to is not None:
            os.symlink(link_manifest_to, os.path.join(p, "manifest.json"))
        victims[name] = p

    folder("any_manifest", "{}")                                             # the old rule: any manifest.json
    folder("manifest_list", json.dumps([{"format": "neurocomp.artifact", "version": 1}]))
    folder("manifest_no_version", json.dumps({"format": "neurocomp.artifact"}))
    folder("manifest_other_format", json.dumps({"format": "something.else", "version": 1}))
    folder("manifest_not_json", "format: neurocomp.artifact\n")
    folder("manifest_symlink", link_manifest_to=os.path.join(good_art, "manifest.json"))
    folder("no_manifest")
    link = os.path.join(out, "link_to_artifact")     # a symbolic link to a real artifact: not replaced
    os.symlink(good_art, link)
    victims["link_to_artifact"] = link
    return victims


if __name__ == "__main__":
    dest = os.path.join(HERE, "generated_hostile")
    shutil.rmtree(dest, ignore_errors=True)
    for c in build(dest):
        print(f"{c.kind:9} {c.name}")
