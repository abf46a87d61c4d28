"""The public API: ``compile``, ``simulate`` (the CLI is a thin layer over these)."""
from __future__ import annotations

import numbers
import os
import shutil

import numpy as np
import torch

from neurocomp import devices, memory, safeio
from neurocomp.artifact import (Artifact, OutputClaim, TARGET_DIR, write_atomically, write_json_atomically,
                                write_manifest)
from neurocomp.errors import BadGraph, BadInput, BadCheckpoint, NeurocompError, escape
from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
from neurocomp.frontends.nir import read_nir_file
from neurocomp.frontends.attention import attention_modules, calibrate, make_static
from neurocomp.frontends.torch import module_to_graph, run_torch_model
from neurocomp.backends.nir import write_nir
from neurocomp.ir.serialize import save_graph
from neurocomp.ir.timing import time_alignment
from neurocomp.passes import pipeline
from neurocomp.passes.pipeline import ATTENTION_MODES
from neurocomp.crosscheck import crosscheck
from neurocomp.shards import check_workers
from neurocomp.data.registry import load_inputs
from neurocomp.fixedpoint.attention import ma_cost, pfa_offset_cost, spike_cost
from neurocomp.targets import load_target, targets_dir

TARGETS = ("lava",)


def check_output_file(path, flag: str) -> None:
    """Refuse an output file path that cannot be written (a folder, a missing parent) up front."""
    path = str(path)
    if os.path.isdir(path):
        raise BadInput("is a folder, not a file", where=f"{flag} {path}", hint="give a file name, e.g. FOLDER/result.json")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise BadInput("parent folder does not exist", where=f"{flag} {path}", hint=f"create {parent} first")
    if not os.access(parent, os.W_OK):
        raise BadInput("parent folder is not writable", where=f"{flag} {path}", hint="choose a writable folder")


def resolve_target(target: str):
    """``lava`` -> the default chip (targets/loihi2.json); a chip name or target file -> that chip."""
    hw = load_target(target)
    if hw.backend not in TARGETS:
        raise BadInput(f"target {target!r} needs backend {hw.backend!r}", where="--target",
                       hint=f"use one of {', '.join(TARGETS)} or a chip in targets/")
    return hw


class _about:
    """Context manager: a neurocomp error raised inside names ``path`` too (``<file>: layer '3': ...``)."""

    def __init__(self, path):
        self.path = str(path)

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if isinstance(e, NeurocompError) and self.path not in (e.where or ""):
            e.where = f"{self.path}: {e.where}" if e.where else self.path
            e.args = (e.one_line(),)
        return False


def calibration_inputs(loaded, calib=None, samples: int = 512):
    """Calibration data: ``None`` -> the first ``samples`` of the model's training split;
    ``"DATASET[:START:END]"`` -> that slice of that dataset's training split; ``FILE.npy`` ->
    inputs shaped ``[N, T, *input_shape]`` (labels unknown). Returns ``(x [T, N, ...], y or None, source)``."""
    T, shape = loaded.timesteps, tuple(loaded.input_shape)
    if calib is not None and str(calib).endswith(".npy"):
        arr = read_inputs_file(str(calib), T, shape, samples=None, what="calibration file")
        if arr.ndim != len(shape) + 2 or arr.shape[1] != T or tuple(arr.shape[2:]) != shape:
            raise BadInput(f"calibration inputs have shape {arr.shape}", where=str(calib),
                           hint=f"expected [N, {T}, {', '.join(map(str, shape))}]")
        return torch.as_tensor(np.swapaxes(arr, 0, 1).astype(np.float32)), None, str(calib)
    dataset, start, end = loaded.dataset, 0, samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise BadInput(f"--calib-samples {samples!r}", where="--calib-samples", hint="give at least 1")
    if calib is not None:
        parts = str(calib).split(":")
        dataset = parts[0]
        try:
            if len(parts) == 3:
                start, end = int(parts[1]), int(parts[2])
            elif len(parts) != 1:
                raise ValueError
        except ValueError:
            raise BadInput(f"--calib {calib!r}", where="--calib", hint="DATASET:START:END or FILE.npy") from None
        if not 0 <= start < end:
            raise BadInput(f"--calib {calib!r} selects no samples (START:END must satisfy 0 <= START < END)",
                           where="--calib", hint=f"e.g. --calib {dataset or 'digits'}:0:512")
    if not dataset:
        raise BadInput("the model names no dataset to calibrate attention on", where="--calib",
                       hint="pass --calib DATASET:START:END or --calib FILE.npy")
    x, y = load_inputs(dataset, "train", T, loaded.encoding, n=end)
    if x.shape[1] <= start:
        raise BadInput(f"--calib {calib!r}: the {dataset} training split has only {x.shape[1]} samples",
                       where="--calib", hint=f"choose START below {x.shape[1]}")
    return torch.as_tensor(x[:, start:end]), y[start:end], f"{dataset} train[{start}:{end}]"


class _DefaultT(int):
    """``compile``'s default ``timesteps``: 100 for a NIR graph, not given for a model file."""

    def __repr__(self):
        return "100 (NIR graphs; a model file: not given)"


NIR_DEFAULT_T = _DefaultT(100)


def compile(model_path, out, target: str = "lava", trust_pickle: bool = False, weight_bits: int = 8,
            overwrite: bool = False, dt=None, reset: str = "zero", timesteps=NIR_DEFAULT_T,
            attention: str = "static", calib=None, calib_samples: int = 512, input_shape=None, encoding=None,
            dataset=None, model_code=None, model_args=None, code_path=(), device: str = "cpu",
            chips: int | None = None) -> str:
    """Compile a checkpoint or a ``.nir`` file into an artifact folder ``out``; returns its path.

    Two front doors, one driver: a checkpoint (attention modules calibrated on ``calib`` and folded as
    ``attention`` says) or a NIR file (``dt``, ``reset``, ``timesteps`` apply, T defaulting to 100;
    ``target`` may also be ``netx``) is read and checked before ``out`` is claimed; then the shared
    steps run: lower, save the float and fixed graphs, copy the source, write the door's other files
    and the manifest. The checkpoint door also reads a pickled module (``trust_pickle``) or a state
    dict (``model_code="FILE.py:NAME"``, ``model_args``), ``input_shape`` / ``timesteps`` /
    ``encoding`` / ``dataset`` supplying what they do not record
    (:func:`neurocomp.frontends.checkpoint.load_checkpoint`). ``device``: where calibration runs the model
    (``neurocomp.devices``; default ``cpu``, since float rounding can differ between devices and a build
    should be the same on every machine; ``cuda``/``auto`` calibrate faster on a GPU). ``chips``: at most
    that many chips for the core mapping (default: the fewest that hold the cores;
    :func:`neurocomp.passes.map_cores.partition_chips`)."""
    if chips is not None and (isinstance(chips, bool) or not isinstance(chips, numbers.Integral) or chips < 1):
        raise BadInput(f"--chips {chips!r}", where="--chips", hint="give a positive number of chips")
    dev = devices.resolve(device)
    if attention not in ATTENTION_MODES:
        raise BadInput(f"attention mode {attention!r} is not available", where="--attention",
                       hint=f"use {' or '.join(ATTENTION_MODES)}")
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, numbers.Integral) or not 2 <= weight_bits <= 8:
        raise BadInput(f"--weight-bits {weight_bits!r}", where="--weight-bits", hint="use 2..8")
    weight_bits = int(weight_bits)
    if str(model_path).lower().endswith(".nir"):
        if chips is not None:
            raise BadInput("--chips applies to the core mapping, which a NIR file's artifact does not have",
                           where="--chips", hint="drop --chips, or compile the model's checkpoint (.pt)")
        door = _NirDoor(model_path, target, weight_bits, attention, dt, reset,
                        100 if timesteps is NIR_DEFAULT_T else timesteps)
    else:
        door = _CheckpointDoor(model_path, target, weight_bits, attention, trust_pickle, calib, calib_samples,
                               dict(input_shape=input_shape, encoding=encoding, dataset=dataset,
                                    timesteps=None if timesteps is NIR_DEFAULT_T else timesteps,
                                    model=model_code, model_args=model_args, code_path=code_path), device=dev,
                               max_chips=None if chips is None else int(chips))
    claim = OutputClaim(out, overwrite=overwrite)      # refuse an existing -o now, not after calibrating
    try:
        door.prepare()
        return _build(door, claim)
    finally:
        claim.release()                                # a claim that was not filled (after an error)


def _build(door, claim) -> str:
    """The steps every compile shares, in the claimed output folder (written whole or not at all)."""
    def fill(tmp):
        float_graph = door.float_graph(tmp)
        fixed_graph = door.lower(float_graph)
        save_graph(float_graph, os.path.join(tmp, "float"))
        save_graph(fixed_graph, os.path.join(tmp, "fixed"))
        # a regular file only; the digest is of the bytes stored
        sha = safeio.copy_file(door.path, os.path.join(tmp, door.stored_as), error=door.error, what=door.what)
        door.write_files(tmp, fixed_graph)
        write_manifest(tmp, {**_graph_record(float_graph, fixed_graph, door.weight_bits),
                             "target": door.target, **door.record(float_graph, fixed_graph),
                             door.input_key: {"name": os.path.basename(str(door.path)), "sha256": sha}})

    return write_atomically(claim.path, fill, claim=claim)


def _graph_record(float_graph, fixed_graph, weight_bits) -> dict:
    """The manifest fields read off the compiled graphs (the same for both doors)."""
    return {"timesteps": int(float_graph.meta["timesteps"]), "dt": float_graph.meta.get("dt"),
            "input_shape": [int(s) for s in float_graph.input_node.out_shape],
            "alignment": time_alignment(fixed_graph),
            "graphs": {"float": float_graph.digest(), "fixed": fixed_graph.digest()},
            "passes": fixed_graph.meta.get("passes", []), "weight_bits": int(weight_bits),
            "attention_process_cost": _attention_cost(fixed_graph)}


class _CheckpointDoor:
    """A model file (neurocomp checkpoint, pickled module or state dict, :func:`load_checkpoint`): traced
    to the float IR, written as ``model.nir`` and read back from it (the round trip must be lossless),
    lowered by :func:`passes.pipeline.lower` onto ``target``. ``model.pt`` in the artifact is always a
    safe neurocomp checkpoint: the input itself, or the model it held written by ``save_checkpoint``."""
    stored_as, error, what, input_key = "model.pt", BadCheckpoint, "checkpoint", "input_checkpoint"

    def __init__(self, path, target, weight_bits, attention, trust_pickle, calib, calib_samples, load_kw=None,
                 device=None, max_chips=None):
        self.path, self.target, self.weight_bits, self.attention = path, target, weight_bits, attention
        self.device, self.max_chips = device, max_chips
        self.calib, self.calib_samples = calib, calib_samples
        self.hw = resolve_target(target)
        self.loaded = load_checkpoint(path, trust_pickle=trust_pickle, **(load_kw or {})).require_facts()
        self.meta = {"dataset": self.loaded.dataset} if self.loaded.dataset else {}
        self.attention_info = self.static_model = self.traced = None

    def prepare(self):
        """Calibrate attention (the long part: after the output is claimed) and trace the model."""
        loaded, attention, stats = self.loaded, self.attention, None
        if attention_modules(loaded.model):
            xc, yc, source = calibration_inputs(loaded, self.calib, self.calib_samples)
            with _about(self.path):
                stats = calibrate(loaded.model, xc, yc, device=self.device)
            self.static_model = make_static(loaded.model, stats) if attention != "dynamic" else None
            self.attention_info = {"mode": attention, "calibration": {"source": source, "samples": int(xc.shape[1])},
                                   "maps": {p: {k: v for k, v in st.items() if k != "static_map"}
                                            for p, st in stats.items()}}
            if attention == "dynamic":
                self.attention_info["latency_steps_added"] = loaded.timesteps * len(stats)
        with _about(self.path):
            self.traced = module_to_graph(self.static_model if self.static_model is not None else loaded.model,
                                          loaded.input_shape, loaded.timesteps, loaded.encoding, self.meta,
                                          attention_mode=attention if stats else None, calibration=stats)

    def float_graph(self, tmp):
        nir_path = os.path.join(tmp, "model.nir")   # chains and graphs with branches alike
        write_nir(self.traced, nir_path)
        float_graph = read_nir_file(nir_path, meta=self.meta or None)
        if float_graph.digest() != self.traced.digest():
            raise BadGraph("the NIR round trip changed the graph", where=nir_path,
                           hint="this is a neurocomp bug; please report it with the model")
        return float_graph

    def lower(self, float_graph):
        with _about(self.path):
            return pipeline.lower(float_graph, self.weight_bits, target=self.hw, attention=self.attention,
                                  max_chips=self.max_chips)

    def write_files(self, tmp, fixed_graph):
        loaded, hw = self.loaded, self.hw
        from neurocomp.frontends.checkpoint import save_checkpoint
        if loaded.route != "checkpoint":      # the copied pickle / state dict gives way to the model it held
            save_checkpoint(loaded.model, os.path.join(tmp, self.stored_as), input_shape=loaded.input_shape,
                            timesteps=loaded.timesteps, encoding=loaded.encoding, dataset=loaded.dataset,
                            extra={"saved_from": loaded.route})
        if self.static_model is not None:
            save_checkpoint(self.static_model, os.path.join(tmp, "static_model.pt"), input_shape=loaded.input_shape,
                            timesteps=loaded.timesteps, encoding=loaded.encoding, dataset=loaded.dataset,
                            extra={"note": "attention replaced by calibrated static maps"})
        if os.path.abspath(hw.path) != os.path.abspath(os.path.join(targets_dir(), hw.name + ".json")):
            os.makedirs(os.path.join(tmp, TARGET_DIR))   # a custom target file: `report` reads this copy
            shutil.copyfile(hw.path, os.path.join(tmp, TARGET_DIR, hw.name + ".json"))

    def record(self, float_graph, fixed_graph) -> dict:
        rec = {"encoding": self.loaded.encoding, "dataset": self.loaded.dataset, "hardware_target": self.hw.name,
               "mapping": fixed_graph.meta.get("mapping"), "attention": self.attention_info}
        return rec


NIR_TARGETS = ("lava", "netx")


class _NirDoor:
    """A NIR file (neurocomp's own or another framework's, :func:`frontends.nir.read_nir_file`): there is
    no torch model; ``model.nir`` is a copy of the input file and the float reference simulator is the
    float stage of ``simulate``. Lowered by :func:`passes.pipeline.lower_nir`; ``--target netx`` also
    writes ``model.net`` (lava-dl netx HDF5, :mod:`neurocomp.backends.netx`)."""
    stored_as, error, what, input_key = "model.nir", BadGraph, "NIR file", "input_nir"

    def __init__(self, path, target, weight_bits, attention, dt, reset, timesteps):
        if target not in NIR_TARGETS:
            raise BadInput(f"unknown target {target!r} for a NIR file", where="--target",
                           hint=f"use one of {', '.join(NIR_TARGETS)}")
        self.path, self.target, self.weight_bits, self.attention = path, target, weight_bits, attention
        self.graph = read_nir_file(path, dt=dt, reset=reset, timesteps=timesteps)
        if not self.graph.meta.get("timesteps"):
            raise BadInput("the graph records no number of steps per sample", where=f"{path}: --timesteps",
                           hint="pass --timesteps T")

    def prepare(self):
        pass

    def float_graph(self, tmp):
        return self.graph

    def lower(self, float_graph):
        try:
            with _about(self.path):
                fixed_graph = pipeline.lower_nir(float_graph, self.weight_bits, attention=self.attention)
        except NeurocompError:
            raise
        except Exception as e:   # noqa: BLE001 - a foreign file must never give a traceback
            raise BadGraph(f"cannot be lowered ({type(e).__name__}: {str(e).strip()[:160]})", where=str(self.path),
                           hint="please report this graph") from None
        if self.target == "netx":
            from neurocomp.backends.netx import check_netx
            with _about(self.path):
                check_netx(fixed_graph)
        return fixed_graph

    def write_files(self, tmp, fixed_graph):
        if self.target == "netx":
            from neurocomp.backends.netx import write_netx
            write_netx(fixed_graph, os.path.join(tmp, "model.net"))

    def record(self, float_graph, fixed_graph) -> dict:
        return {"encoding": "spikes", "dataset": None, "source": "nir", "reset": float_graph.meta.get("reset"),
                "read_warnings": float_graph.meta.get("read_warnings", [])}


def _attention_cost(graph):
    """Per dynamic attention module: operations and bits per inference of its attention process."""
    T = int(graph.meta["timesteps"])
    out = {n.name: pfa_offset_cost(n.out_shape, T, n.state()) if n.additive else ma_cost(n.out_shape, T, n.state(),
                                                                                         n.parts)
           for n in graph if n.kind == "ma_attention"}
    out.update({n.name: spike_cost(n.meta["module"], n.state(), n.out_shape, T, tuple(n.pool))
                for n in graph if n.kind == "spike_attention"})
    return out or None




def read_inputs_file(path, T, shape, samples=None, what="inputs file"):
    """An ``.npy`` of inputs ``[N, T, *shape]``: the header is read and checked first (shape, dtype,
    declared size against the file and the memory budget); then only the first ``samples`` rows are
    read from disk (a sparse 100 GB file with ``--samples 2`` reads two samples)."""
    expected = f"[N, {T}, {', '.join(map(str, shape))}]"

    def check(h):
        if len(h.shape) != len(shape) + 2 or h.shape[1] != T or tuple(h.shape[2:]) != tuple(shape):
            raise BadInput(f"inputs have shape {h.shape}, expected {expected}", where=str(path),
                           hint="save an array shaped [N, T, *input_shape]")
        if h.dtype.kind not in "biuf" or h.dtype.fields is not None:
            raise BadInput(f"inputs must be binary spikes (0/1), found dtype {h.dtype}", where=str(path),
                           hint="encode inputs as spikes (0/1) shaped [N, T, *input_shape]")
        n = h.shape[0] if samples is None else min(h.shape[0], samples)
        # the array as read, a float32 copy and the simulator's per-step work on it
        memory.check(n * memory.product(h.shape[1:]) * (h.dtype.itemsize + 3 * 4),
                     f"{n} input samples of {expected[4:-1]}", where=str(path),
                     hint=f"pass --samples N to read fewer samples, or raise {memory.ENV}")

    return safeio.load_npy(path, error=BadInput, what=what, rows=samples, header_check=check)


def simulate(artifact_path, backend: str = "lava", samples: int | None = None, inputs=None, json_path=None,
             progress: bool = True, timeout: float | None = None, batch: int | None = None, workers: int = 1,
             ray: str | None = None, device: str = "auto") -> dict:
    """Run a compiled artifact and cross-check every stage; returns the result dictionary.

    ``workers`` / ``ray``: the Lava run is split over that many Lava runtimes, processes on this host
    or tasks on the Ray cluster at ``ray`` (``local``: a private head); the results are the same.
    ``device``: where the torch models and the reference simulator run (``cpu``, ``cuda``, ``auto``: CUDA
    when available; the fixed-point reference is bit-identical on both). ``batch``: samples per batch of
    the reference stages (default: the largest, at most 256, that fits the memory budget; see
    :func:`neurocomp.crosscheck.crosscheck`)."""
    if backend not in ("lava", "reference"):
        raise BadInput(f"unknown backend {backend!r}", where="--backend", hint="use lava or reference")
    workers = check_workers(workers, ray)
    dev = devices.resolve(device)
    if backend == "reference" and (workers > 1 or ray is not None):
        raise BadInput("--workers and --ray split the Lava run; the reference simulator runs in this process",
                       where="--backend reference", hint="drop --workers / --ray, or use --backend lava")
    if samples is not None and samples < 1:
        raise BadInput(f"--samples {samples}", where="--samples", hint="give at least 1")
    if json_path:
        check_output_file(json_path, "--json")       # before the run, not after it
    art = Artifact(artifact_path)
    man = art.manifest
    T, shape = man["timesteps"], tuple(man["input_shape"])
    labels = None
    if inputs is not None:
        if isinstance(inputs, str):
            arr = read_inputs_file(inputs, T, shape, samples)
        else:
            arr = np.asarray(inputs)
        if arr.ndim != len(shape) + 2 or arr.shape[1] != T or tuple(arr.shape[2:]) != shape:
            raise BadInput(f"inputs have shape {arr.shape}, expected [N, {T}, {', '.join(map(str, shape))}]",
                           where=str(inputs) if isinstance(inputs, str) else "inputs",
                           hint="save an array shaped [N, T, *input_shape]")
        if samples is not None:
            arr = arr[:samples]
        where_in = str(inputs) if isinstance(inputs, str) else "inputs"
        if arr.shape[0] < 1:
            raise BadInput("holds no samples", where=where_in, hint="give at least one sample")
        if not arr.dtype.isnative:           # big-endian data is legal; torch wants native byte order
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
            raise BadInput(f"inputs must be binary spikes (0/1), found dtype {arr.dtype} with other values",
                           where=where_in, hint="encode inputs as spikes (0/1) shaped [N, T, *input_shape]")
        x = torch.as_tensor(np.ascontiguousarray(np.swapaxes(arr, 0, 1)), dtype=torch.float32)
        source = str(inputs) if isinstance(inputs, str) else "array"
    else:
        if not man.get("dataset"):
            raise BadInput("the model names no dataset", where="--samples", hint="pass --inputs FILE.npy")
        xs, labels = load_inputs(man["dataset"], "test", T, man["encoding"], n=samples)
        x = torch.as_tensor(xs)
        labels = torch.as_tensor(labels)
        source = f"{man['dataset']} test split"
    if samples is not None and samples < 1:
        raise BadInput(f"--samples {samples}", where="--samples", hint="give at least 1")
    N = x.shape[1]
    # the one cross-check engine, streamed (Lava, if asked, records every layer to disk first; then each
    # batch runs through every stage, is compared and dropped); this is a summary over its figures.
    # The float stage is the artifact's float graph; the torch models and the references run on ``dev``.
    cc = crosscheck(art, x, labels, lava_samples=N if backend == "lava" else 0, batch=batch, progress=progress,
                    device=dev, timeout=timeout, float_graph=art.float_graph, stage_bar=False, activity=False,
                    workers=workers, ray=ray, max_batch=256)
    preds = cc["predictions"]
    fixed_pred, float_pred = preds["fixed"], preds["float"]
    torch_pred = preds.get("torch", float_pred)      # a model compiled from NIR: the float reference
    float_match = cc["float_equals_torch_samples"]
    quant_pair, stage = cc["pairs"]["float->fixed"], cc["stages"]

    def acc(pred):
        return None if labels is None else float((pred == labels).float().mean())

    result = {
        "artifact": os.path.abspath(artifact_path), "backend": backend, "samples": int(N), "inputs": source,
        "timesteps": T, "latency_steps": int(man["alignment"]["depth"]),
        "accuracy": {"float_torch": acc(torch_pred), "fixed_reference": acc(fixed_pred)},
        "float_reference_equals_torch_fraction": float_match / N,
        "same_class": {"fixed_reference_vs_float": float((fixed_pred == torch_pred).float().mean())},
        # quantization error (fixed-point reference vs the float graph it was quantized from), apart
        # from exactness (Lava vs the fixed-point reference)
        "quantization": {"same_class_fixed_vs_float_graph": float((fixed_pred == float_pred).float().mean()),
                         "per_layer": [{"name": k, "spikes_compared": N * T * cc["neurons"][k],
                                        "agreement": (N * T * cc["neurons"][k] - quant_pair["mismatches"][k])
                                        / max(N * T * cc["neurons"][k], 1),
                                        "float_spikes": stage["float"]["spike_counts"][k],
                                        "fixed_spikes": stage["fixed"]["spike_counts"][k]}
                                       for k in quant_pair["layers"]]},
    }
    if "static" in preds:
        result["accuracy"]["float_static_attention"] = acc(preds["static"])
        result["attention"] = man.get("attention")
    if backend == "lava":
        lava_pred, pair = preds["lava"], cc["pairs"]["fixed->lava"]
        result["accuracy"]["lava"] = acc(lava_pred)
        result["same_class"]["lava_vs_float"] = float((lava_pred == torch_pred).float().mean())
        result["same_class"]["lava_vs_fixed_reference"] = float((lava_pred == fixed_pred).float().mean())
        result["exact_match_fraction"] = pair["exact_fraction"]
        result["per_layer"] = [{"name": k, "spikes_compared": N * T * cc["neurons"][k], "mismatches": pair["mismatches"][k],
                                "samples_differing": pair["samples_differing"][k]} for k in pair["layers"]]
        result["first_diverging_layer"] = next((k for k in pair["layers"] if pair["mismatches"][k]), None)
        result["lava_wall_s"] = cc["lava"]["wall_s"]
        if "shards" in cc["lava"]:
            result["lava_workers"] = {k: cc["lava"][k] for k in ("engine", "workers", "shards")}
        if cc["lava"].get("environment"):        # this Python has no Lava: run by the Lava environment's
            result["lava_environment"] = cc["lava"]["environment"]
    else:
        result["exact_match_fraction"] = None
        result["per_layer"] = [{"name": k, "spikes_compared": N * T * cc["neurons"][k], "mismatches": None,
                                "spike_count": stage["fixed"]["spike_counts"][k]} for k in cc["layers"]]
        result["first_diverging_layer"] = None
    if json_path:
        write_json_atomically(json_path, result)
    return result


def format_result(r: dict) -> str:
    """A short table of a simulate() result for the terminal."""
    def pct(v):
        return "   n/a" if v is None else f"{100 * v:6.2f} %"
    lines = [f"{r['samples']} samples from {r['inputs']}, T={r['timesteps']}, backend={r['backend']}",
             f"  accuracy  float (torch model)   {pct(r['accuracy']['float_torch'])}",
             f"  accuracy  fixed-point reference {pct(r['accuracy']['fixed_reference'])}"]
    if "float_static_attention" in r["accuracy"]:
        lines.insert(2, f"  accuracy  float, static attention {pct(r['accuracy']['float_static_attention'])}"
                        f"  (mode {r['attention']['mode']}, calibrated on {r['attention']['calibration']['source']})")
    if "lava" in r["accuracy"]:
        lines.append(f"  accuracy  Lava fixed_pt          {pct(r['accuracy']['lava'])}")
        lines.append(f"  same class  Lava vs float model   {pct(r['same_class']['lava_vs_float'])}")
        lines.append(f"  exact match Lava vs reference     {pct(r['exact_match_fraction'])} of samples "
                     f"(every layer, every step)")
        if r["first_diverging_layer"]:
            lines.append(f"  first diverging layer: {r['first_diverging_layer']}")
        lw = r.get("lava_workers") or {}
        if lw.get("workers", 1) > 1 or lw.get("engine") == "ray":
            lines.append(f"  Lava ran as {lw['workers']} shards on "
                         + ("Ray" if lw["engine"] == "ray" else "local worker processes")
                         + ", merged by sample index")
        if r.get("lava_environment"):
            lines.append(f"  Lava ran in the Lava environment ({escape(r['lava_environment'])})")
    qz = r.get("quantization")
    if qz:
        worst = min(qz["per_layer"], key=lambda q: q["agreement"], default=None)
        lines.append(f"  quantization  fixed vs float graph: same class {pct(qz['same_class_fixed_vs_float_graph'])}"
                     + (f", spikes agree {pct(worst['agreement'])} in the worst layer ({worst['name']})"
                        if worst else ""))
    lines.append(f"  float reference == torch spikes   {pct(r['float_reference_equals_torch_fraction'])} of samples"
                 + ("  (the static-attention torch model)" if "float_static_attention" in r["accuracy"] else ""))
    return "\n".join(escape(line) for line in lines)      # names and paths come from files
