"""Hostile files for neurocomp's readers (issue 11, classes 1, 2, 7, 8, 9): files that try to run
code, read other files, hang a reader or exhaust memory, and malformed structures.

Every input is built here from scratch (a tiny valid model and a tiny foreign NIR graph, then
edited), in a few seconds and a few KB of disk (the 100 GB ``.npy`` is a sparse file).
``tests/test_hostile_files.py`` builds them into a temporary folder; run this file to write them to
``tests/corpus/generated_hostile/`` for poking at by hand:

    .venv/bin/python tests/corpus/hostile_files.py

Each case is ``HCase(name, argv, needles, ...)``: ``argv`` is a neurocomp command line, ``needles``
strings the one-line error must contain; ``expect="ok"`` cases must succeed (legal data).
"""
from __future__ import annotations

import copy
import os
import shutil
import sys
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import build_corpus  # noqa: E402

T, SHAPE = build_corpus.T, build_corpus.SHAPE
# recognisable bytes of a file that a hostile NIR file tries to pull in as weights
FOREIGN_VALUES = (np.arange(16, dtype=np.float32) * np.float32(0.03125) + np.float32(7.0)).reshape(4, 4)
FOREIGN_BYTES = FOREIGN_VALUES.tobytes()


@dataclass
class HCase:
    name: str
    argv: list
    needles: tuple = ()
    expect: str = "error"              # error | ok
    env: dict = field(default_factory=dict)
    cls: str = ""                       # issue 11 class it covers
    output: str | None = None           # -o folder that must not exist afterwards


# ---- TorchScript that runs code when loaded ----------------------------------------------------
def torchscript_archive(path, marker):
    """A TorchScript archive whose ``__setstate__`` creates ``marker`` (8 bytes 'A') through
    ``torch.from_file(shared=True)`` when *loaded*: ``torch.load(path, weights_only=True)`` in torch
    2.3 hands it to ``torch.jit.load``, which runs it. Saving does not run it."""
    import torch

    class Payload(torch.nn.Module):
        def __init__(self, target: str):
            super().__init__()
            self.target = target
            self.w = torch.zeros(2)

        def forward(self, x):
            return x

        @torch.jit.export
        def __getstate__(self):
            return (self.target, self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, torch.Tensor, bool]):
            self.target = state[0]
            self.w = state[1]
            self.training = state[2]
            t = torch.from_file(self.target, shared=True, size=8, dtype=torch.uint8)
            t.fill_(65)
            self.w = t      # kept alive, so the TorchScript optimiser cannot drop the write as dead code

    torch.jit.script(Payload(str(marker))).save(str(path))
    return path


# ---- NIR files ----------------------------------------------------------------------------------
def foreign_nir(path, n_in=4):
    """A small foreign (non-neurocomp) NIR graph: Input(4) -> Linear(4x4) -> IF -> Output."""
    import nir
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type=np.array([n_in])),
             "lin": nir.Linear(weight=(rng.random((4, n_in)) * 2).astype(np.float32)),
             "lif": nir.IF(r=np.ones(4), v_threshold=np.ones(4)),
             "output": nir.Output(output_type=np.array([4]))}
    edges = [("input", "lin"), ("lin", "lif"), ("lif", "output")]
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1e-3}))
    return path


def _edit_h5(src, dst, fn):
    import h5py
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)
    return dst


def _replace(f, name, make):
    del f[name]
    make(f, name)


def foreign_h5(path):
    """An HDF5 file holding FOREIGN_VALUES as /data (the target of virtual datasets and links)."""
    import h5py
    with h5py.File(path, "w") as f:
        f["data"] = FOREIGN_VALUES
    return path


def raw_foreign(path):
    with open(path, "wb") as fh:
        fh.write(FOREIGN_BYTES)
    return path


W = "node/nodes/lin/weight"


def nir_external_storage(src, dst, target):
    return _edit_h5(src, dst, lambda f: _replace(f, W, lambda f, n: f.create_dataset(
        n, shape=(4, 4), dtype="<f4", external=[(str(target), 0, len(FOREIGN_BYTES))])))


def nir_virtual(src, dst, target_h5):
    import h5py

    def make(f, n):
        layout = h5py.VirtualLayout(shape=(4, 4), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(target_h5), "data", shape=(4, 4))
        f.create_virtual_dataset(n, layout)
    return _edit_h5(src, dst, lambda f: _replace(f, W, make))


def nir_external_link(src, dst, target_h5, obj="/data"):
    import h5py
    return _edit_h5(src, dst, lambda f: _replace(f, W, lambda f, n: f.__setitem__(n, h5py.ExternalLink(str(target_h5), obj))))


def nir_soft_link_outside(src, dst, target_h5):
    """A soft link to an external link: the soft link itself names a path inside the file."""
    import h5py

    def fn(f):
        f["elsewhere"] = h5py.ExternalLink(str(target_h5), "/data")
        _replace(f, W, lambda f, n: f.__setitem__(n, h5py.SoftLink("/elsewhere")))
    return _edit_h5(src, dst, fn)


def nir_gzip_bomb(src, dst, elements=(1 << 30) - (1 << 20)):
    """A Linear weight declared as ~1 GiB of uint8 (under the 1 GiB NIR cap), gzip-compressed and never
    written: the file stays a few KB, reading it gives 1 GiB, converting it to float64 8 GiB more."""
    cols = 1 << 15
    rows = elements // cols
    return _edit_h5(src, dst, lambda f: _replace(f, W, lambda f, n: f.create_dataset(
        n, shape=(rows, cols), dtype="u1", chunks=(64, cols), compression="gzip", fillvalue=1)))


def nir_param(src, dst, field_path, value):
    def fn(f):
        del f[field_path]
        f[field_path] = value
    return _edit_h5(src, dst, fn)


def nir_delay_chain(src, dst, n=25_000):
    """``n`` zero-length Delay nodes between the Input and the Linear, as a valid NIR chain. Built with
    hard links to one Delay group, so it takes a second (nir.write takes minutes for this)."""
    import h5py

    def fn(f):
        nodes = f["node/nodes"]
        d0 = nodes.create_group("d0")
        d0["type"] = "Delay"
        d0["delay"] = np.zeros(4)
        for i in range(1, n):
            nodes[f"d{i}"] = d0
        chain = ["input"] + [f"d{i}" for i in range(n)] + ["lin", "lif", "output"]
        del f["node/edges"]
        f["node/edges"] = np.array([[a.encode(), b.encode()] for a, b in zip(chain, chain[1:])], dtype=object)
    return _edit_h5(src, dst, fn)


def nir_huge_input(src, dst, n=10 ** 8):
    """A foreign graph whose Input declares 10^8 neurons (the native cap is 10^7); nothing else in it
    is large (the Output's shape is declared too, so the graph type-checks)."""
    import nir
    nodes = {"input": nir.Input(input_type=np.array([n])), "output": nir.Output(output_type=np.array([n]))}
    nir.write(str(dst), nir.NIRGraph(nodes=nodes, edges=[("input", "output")], metadata={"dt": 1e-3}))
    return dst


def nir_huge_scale(dst, n=60_000):
    """A Scale of n values: its dense weight would be n x n (n = 60,000: 14 GB as float32)."""
    import nir
    nodes = {"input": nir.Input(input_type=np.array([n])), "scale": nir.Scale(scale=np.ones(n, np.float32)),
             "lif": nir.IF(r=np.ones(n), v_threshold=np.ones(n)), "output": nir.Output(output_type=np.array([n]))}
    nir.write(str(dst), nir.NIRGraph(nodes=nodes, edges=[("input", "scale"), ("scale", "lif"), ("lif", "output")],
                                     metadata={"dt": 1e-3}))
    return dst


# ---- checkpoints --------------------------------------------------------------------------------
def _doc(good):
    import torch
    return copy.deepcopy(torch.load(good, weights_only=True))


def _save(doc, path):
    import torch
    torch.save(doc, path)
    return path


def stride0_view(good, path, n=10 ** 10):
    """The tiny model with one bias replaced by a stride-0 view of ``n`` elements over one float
    (the file stays ~3 KB; materialising the view takes 4n bytes)."""
    import torch
    d = _doc(good)
    d["state_dict"]["4.bias"] = torch.zeros(1).expand(n)
    return _save(d, path)


def huge_layer(good, path, kind):
    """The architecture declares a layer far larger than its weights (which stay tiny)."""
    d = _doc(good)
    ch = dict(d["architecture"]["children"])
    if kind == "linear":
        ch["4"]["args"].update(in_features=10 ** 6, out_features=10 ** 6)
    else:
        ch["0"]["args"].update(out_channels=2 ** 22, in_channels=2 ** 10)
    return _save(d, path)


def arch_edit(good, path, fn):
    d = _doc(good)
    fn(d)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 40_000))     # torch.save recurses through the 3000-deep description
    try:
        return _save(d, path)
    finally:
        sys.setrecursionlimit(old)


def deep_nesting(depth=3000):
    spec = {"type": "torch.Identity", "args": {}}
    for _ in range(depth):
        spec = {"type": "Sequential", "children": [["0", spec]]}
    return spec


def legacy_pickle(good, path):
    import torch
    torch.save(_doc(good), path, _use_new_zipfile_serialization=False)
    return path


def zip_with_extra_entry(good, path, entry="archive/extra_file.txt", compress=False):
    import zipfile
    shutil.copyfile(good, path)
    with zipfile.ZipFile(path) as z:
        prefix = z.namelist()[0].split("/")[0]
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr(entry.replace("archive", prefix), b"x" * 100)
    return path


# ---- arrays -------------------------------------------------------------------------------------
def npy_header(shape, dtype="<f4"):
    import numpy.lib.format as fmt
    import io
    buf = io.BytesIO()
    fmt.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def sparse_npy(path, n_bytes=100 * 10 ** 9, dtype="<f4"):
    """A valid .npy of zeros [N, T, *SHAPE] whose data is a 100 GB hole (a sparse file: no disk used)."""
    per = T * int(np.prod(SHAPE)) * np.dtype(dtype).itemsize
    n = n_bytes // per
    head = npy_header((n, T) + SHAPE, dtype)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(len(head) + n * per)
    return path


def lying_npy(path):
    """A header declaring 10^6 samples over a file holding 2."""
    head = npy_header((10 ** 6, T) + SHAPE)
    with open(path, "wb") as fh:
        fh.write(head + np.zeros((2, T) + SHAPE, np.float32).tobytes())
    return path


def fifo(path):
    os.mkfifo(path)
    return path


# ---- the corpus ---------------------------------------------------------------------------------
def build(out: str) -> dict:
    """Write every hostile input under ``out``; returns ``{name: HCase}`` plus the paths the tests use
    under ``'_paths'``."""
    import torch  # noqa: F401
    from neurocomp.cli import main as cli
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)   # noqa: E731
    good = build_corpus.good_checkpoint(p("good.pt"))
    art = p("good.art")
    if not os.path.isdir(art):
        assert cli(["compile", good, "-o", art, "-q"]) == 0
    good_nir = foreign_nir(p("foreign.nir"))
    raw = raw_foreign(p("foreign.bin"))
    fh5 = foreign_h5(p("foreign.h5"))
    cases: dict[str, HCase] = {}

    def add(name, argv, needles=(), cls="", **kw):
        cases[name] = HCase(name, [str(a) for a in argv], tuple(needles), cls=cls, **kw)

    def compile_case(name, path, needles, cls, **kw):
        o = p(name + ".out")
        add(name, ["compile", path, "-o", o, "-q"], (os.path.basename(path),) + tuple(needles), cls=cls,
            output=o, **kw)

    # class 1: code execution -------------------------------------------------------------------
    marker = p("MARKER_torchscript_ran")
    ts = torchscript_archive(p("torchscript.pt"), marker)
    compile_case("torchscript_compile", ts, ("TorchScript",), "1")
    add("torchscript_inspect", ["inspect", ts], ("torchscript.pt", "TorchScript"), cls="1")
    art_ts = p("art_torchscript")
    shutil.copytree(art, art_ts)
    shutil.copyfile(ts, os.path.join(art_ts, "model.pt"))
    add("torchscript_in_artifact", ["simulate", art_ts, "--backend", "reference", "-q", "--inputs",
                                    p("inputs_ok.npy")], ("model.pt",), cls="1")
    compile_case("legacy_pickle", legacy_pickle(good, p("legacy.pt")), ("legacy", "--trust-pickle"), "1")
    compile_case("zip_extra_entry", zip_with_extra_entry(good, p("zip_extra.pt")), ("extra_file.txt",), "1")
    compile_case("zip_compressed_entry", zip_with_extra_entry(good, p("zip_deflate.pt"), "archive/data/99", True),
                 ("compressed",), "1")

    # class 2: NIR files that read other files --------------------------------------------------
    compile_case("nir_external_storage", nir_external_storage(good_nir, p("ext_storage.nir"), raw),
                 ("external file",), "2")
    compile_case("nir_virtual_dataset", nir_virtual(good_nir, p("virtual.nir"), fh5), ("virtual",), "2")
    compile_case("nir_external_link", nir_external_link(good_nir, p("ext_link.nir"), fh5), ("external link",), "2")
    compile_case("nir_soft_link_outside", nir_soft_link_outside(good_nir, p("soft_link.nir"), fh5),
                 ("link",), "2")
    add("nir_external_link_inspect", ["inspect", p("ext_link.nir")], ("ext_link.nir", "external link"), cls="2")

    # class 7: hangs ------------------------------------------------------------------------------
    compile_case("nir_external_storage_fifo", nir_external_storage(good_nir, p("ext_fifo.nir"), fifo(p("fifo_a"))),
                 ("external file",), "7")
    compile_case("nir_external_link_fifo", nir_external_link(good_nir, p("link_fifo.nir"), fifo(p("fifo_b.h5"))),
                 ("external link",), "7")
    compile_case("fifo_as_checkpoint", fifo(p("fifo_model.pt")), ("FIFO",), "7")
    compile_case("fifo_as_nir", fifo(p("fifo_graph.nir")), ("FIFO",), "7")
    os.symlink(p("fifo_model.pt"), p("link_to_fifo.pt"))
    compile_case("symlink_to_fifo", p("link_to_fifo.pt"), ("FIFO", "a link to", "fifo_model.pt"), "7")
    art_fifo = p("art_fifo")
    shutil.copytree(art, art_fifo)
    arrays = os.path.join(art_fifo, "fixed", "arrays")
    victim = sorted(os.listdir(arrays))[0]
    os.unlink(os.path.join(arrays, victim))
    fifo(os.path.join(arrays, victim))
    add("fifo_as_artifact_array", ["simulate", art_fifo, "--backend", "reference", "-q", "--inputs",
                                   p("inputs_ok.npy")], (victim, "FIFO"), cls="7")
    add("fifo_as_inputs", ["simulate", art, "--backend", "reference", "-q", "--inputs", fifo(p("fifo_inputs.npy"))],
        ("fifo_inputs.npy", "FIFO"), cls="7")
    compile_case("nir_delay_chain_25000", nir_delay_chain(good_nir, p("delay_chain.nir")), ("1000 nodes",), "7")

    # class 8: memory -----------------------------------------------------------------------------
    budget = {"NEUROCOMP_MAX_MEMORY": "1G"}
    compile_case("stride0_view", stride0_view(good, p("stride0.pt")), ("4.bias", "expanded view"), "8")
    compile_case("huge_linear", huge_layer(good, p("huge_linear.pt"), "linear"), ("architecture.4", "memory budget"),
                 "8", env=budget)
    compile_case("huge_conv", huge_layer(good, p("huge_conv.pt"), "conv"), ("architecture.0", "memory budget"),
                 "8", env=budget)
    np.save(p("inputs_ok.npy"), (np.random.default_rng(1).random((3, T) + SHAPE) < 0.4).astype(np.float32))
    sparse = sparse_npy(p("sparse_100GB.npy"))
    add("sparse_inputs_two_samples", ["simulate", art, "--backend", "reference", "-q", "--inputs", sparse,
                                      "--samples", "2"], expect="ok", env=budget, cls="8")
    add("sparse_inputs_all", ["simulate", art, "--backend", "reference", "-q", "--inputs", sparse],
        ("sparse_100GB.npy", "memory budget", "--samples"), env=budget, cls="8")
    add("npy_header_lies", ["simulate", art, "--backend", "reference", "-q", "--inputs", lying_npy(p("lying.npy"))],
        ("lying.npy", "truncated"), cls="8")
    compile_case("nir_gzip_bomb", nir_gzip_bomb(good_nir, p("gzip_bomb.nir")), ("lin/weight", "memory budget"), "8",
                 env={"NEUROCOMP_MAX_MEMORY": "2G"})
    compile_case("nir_foreign_neuron_cap", nir_huge_input(good_nir, p("huge_input.nir")), ("input", "neurons"), "8")
    compile_case("nir_scale_quadratic", nir_huge_scale(p("huge_scale.nir")), ("scale", "memory budget"), "8",
                 env={"NEUROCOMP_MAX_MEMORY": "2G"})
    be = (np.random.default_rng(2).random((3, T) + SHAPE) < 0.4).astype(">f4")
    np.save(p("inputs_big_endian.npy"), be)
    add("big_endian_inputs", ["simulate", art, "--backend", "reference", "-q", "--inputs", p("inputs_big_endian.npy"),
                              "--json", p("big_endian.json")], expect="ok", cls="9")

    # class 9: malformed architecture fields -------------------------------------------------------
    def child(d, name):
        return dict(d["architecture"]["children"])[name]

    edits = {
        "arch_type_number": (lambda d: child(d, "0").update(type=7), ("architecture.0", "type")),
        "arch_args_list": (lambda d: child(d, "0").update(args=[1, 2, 3]), ("architecture.0", "args")),
        "arch_dotted_child": (lambda d: d["architecture"]["children"][0].__setitem__(0, "a.b"),
                              ("architecture", "'a.b'")),
        "arch_empty_child": (lambda d: d["architecture"]["children"][0].__setitem__(0, ""), ("architecture", "''")),
        "arch_duplicate_child": (lambda d: d["architecture"]["children"][1].__setitem__(0, "0"), ("appears twice",)),
        "arch_children_not_list": (lambda d: d["architecture"].update(children=5), ("children",)),
        "arch_stride_zero": (lambda d: child(d, "0")["args"].update(stride=[0, 0]), ("architecture.0", "stride")),
        "arch_kernel_zero": (lambda d: child(d, "0")["args"].update(kernel_size=[0, 0]),
                             ("architecture.0", "kernel_size")),
        "arch_kernel_negative": (lambda d: child(d, "0")["args"].update(kernel_size=[-3, -3]),
                                 ("architecture.0", "kernel_size")),
        "arch_channels_string": (lambda d: child(d, "0")["args"].update(in_channels="1"),
                                 ("architecture.0", "in_channels")),
        "arch_pool_kernel_zero": (lambda d: child(d, "2")["args"].update(kernel_size=[0, 0]),
                                  ("architecture.2", "kernel_size")),
        "arch_step_mode": (lambda d: child(d, "1").update(step_mode=3), ("architecture.1", "step_mode")),
        "arch_deep_nesting": (lambda d: d.update(architecture=deep_nesting()), ("nested too deeply",)),
        "encoding_unknown": (lambda d: d.update(encoding="morse-code"), ("encoding",)),
        "encoding_not_text": (lambda d: d.update(encoding=["bernoulli"]), ("encoding",)),
    }
    for name, (fn, needles) in edits.items():
        compile_case(name, arch_edit(good, p(name + ".pt"), fn), needles, "9")
    compile_case("nir_complex_weight", nir_param(good_nir, p("complex.nir"), W, (np.ones((4, 4)) * (1 + 2j))),
                 ("lin", "complex"), "9")
    compile_case("nir_nan_weight", nir_param(good_nir, p("nan_weight.nir"), W, np.full((4, 4), np.nan, np.float32)),
                 ("lin", "NaN"), "9")
    compile_case("nir_nan_threshold", nir_param(good_nir, p("nan_thr.nir"), "node/nodes/lif/v_threshold",
                                                np.full(4, np.nan)), ("lif", "NaN"), "9")
    art_enc = p("art_encoding")
    shutil.copytree(art, art_enc)
    import json
    mpath = os.path.join(art_enc, "manifest.json")
    man = json.load(open(mpath))
    man.update(encoding="morse-code", dataset="digits")
    with open(mpath, "w") as fh:
        json.dump(man, fh)
    add("manifest_encoding_unknown", ["simulate", art_enc, "--backend", "reference", "-q", "--samples", "2"],
        ("encoding", "morse-code"), cls="9")
    cases["_paths"] = {"good": good, "art": art, "good_nir": good_nir, "marker": marker, "torchscript": ts,
                       "foreign_h5": fh5, "foreign_bin": raw, "out": out}
    return cases


def run_batch(spec_path, result_path, as_limit=None):
    """Run cases ``[{name, argv, env}]`` from a JSON file through ``neurocomp.cli.main`` in this process
    (under ``RLIMIT_AS`` = ``as_limit`` bytes if given); write ``{name: {rc, stderr, seconds}}`` as JSON.
    Each case's name is printed before it starts, so a hang shows which case hung."""
    import io
    import json
    import resource
    import time
    import traceback
    if as_limit:
        resource.setrlimit(resource.RLIMIT_AS, (int(as_limit), int(as_limit)))
    from neurocomp.cli import main as cli
    results = {}
    for case in json.load(open(spec_path)):
        print("START", case["name"], flush=True)
        saved = {k: os.environ.get(k) for k in case["env"]}
        os.environ.update(case["env"])
        err, out = io.StringIO(), io.StringIO()
        old = sys.stderr, sys.stdout
        sys.stderr, sys.stdout = err, out
        t0 = time.monotonic()
        try:
            rc = cli(case["argv"])
        except BaseException:   # noqa: BLE001 - a leaked exception is what the test looks for
            rc = 1
            err.write(traceback.format_exc())
        finally:
            sys.stderr, sys.stdout = old
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        results[case["name"]] = {"rc": rc, "stderr": err.getvalue(), "seconds": time.monotonic() - t0}
        print("END", case["name"], rc, flush=True)
    with open("/proc/self/status") as fh:
        hwm = [ln for ln in fh if ln.startswith("VmHWM:")]
    results["_vmhwm_kb"] = int(hwm[0].split()[1]) if hwm else None
    with open(result_path, "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:     # the neurocomp on PYTHONPATH (the tests put the checkout first)
        run_batch(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
        sys.exit(0)
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    target = os.path.join(HERE, "generated_hostile")
    shutil.rmtree(target, ignore_errors=True)
    for name, c in build(target).items():
        if name != "_paths":
            print(f"{c.cls:2s} {name:28s} neurocomp {' '.join(os.path.relpath(a) if os.path.exists(a) else a for a in c.argv)}")
