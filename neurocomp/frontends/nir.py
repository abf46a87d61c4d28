"""``.nir`` files -> IR: the one door (:func:`read_nir_file`) and the reader of neurocomp's own graphs.

Every NIR file neurocomp reads (``compile``, ``inspect``, the checkpoint door's round trip) comes in
through :func:`read_nir_file`: the file is opened as a regular file and its HDF5 structure, links and
declared sizes are checked before any data is read (:func:`check_hdf5`); ``nir.read`` parses it
(with type checking; a graph from another framework that fails it is read without, with a warning);
then a graph written by neurocomp (``neurocomp.*`` metadata, see ``neurocomp.backends.nir``) comes
back as exactly the IR it was written from (:func:`nir_to_graph`), any other by its standard NIR
meaning, discretised in steps of ``dt`` (:func:`neurocomp.frontends.nir_foreign.foreign_to_graph`).
Shape rules and the walk over the graph (branches in and out) both readers share live in
``neurocomp.frontends.nir_common``.
"""
from __future__ import annotations

import json
import warnings

import nir
import numpy as np

from neurocomp import memory, safeio
from neurocomp.errors import BadGraph, BadInput, NeurocompError, TooLarge, UnsupportedLayer, UnsupportedLayers
from neurocomp.frontends.nir_common import (MAX_NEURONS, MAX_NIR_NODES, check_bias, check_edges, check_layer, dag,
                                            conv_geometry, join, input_shape, linear_weight, node_where, pool_node, ports,
                                            uniform)
from neurocomp.frontends.nir_foreign import NIRWarning, foreign_to_graph
from neurocomp.ir import (Add, Concat, MAAttention, MALIF, Scale, SpikeAttention, BatchNorm, Conv2d, Flatten, Graph, Input, LIF,
                          Linear, Readout, Threshold, Voting)

PREFIX = "neurocomp."
__all__ = ["read_nir_file", "nir_to_graph", "is_neurocomp_graph", "open_nir", "check_hdf5", "MAX_NEURONS",
           "MAX_NIR_NODES", "PREFIX"]


def _md(node) -> dict:
    return dict(getattr(node, "metadata", None) or {})


def _meta_of(md):
    raw = md.get(PREFIX + "meta")
    if raw is None:
        return {}
    return json.loads(raw if isinstance(raw, str) else raw.decode())


def is_neurocomp_graph(g) -> bool:
    """Whether a NIR graph was written by neurocomp (``neurocomp.*`` metadata on it or on a node)."""
    if any(str(k).startswith(PREFIX) for k in _md(g)):
        return True
    return any(any(str(k).startswith(PREFIX) for k in _md(n)) for n in g.nodes.values())


def _batchnorm(name, in_shape, md, meta) -> BatchNorm:
    """A BatchNorm written by neurocomp (as a 1x1 conv or diagonal affine), from its metadata."""
    def opt(key):
        return np.asarray(md[PREFIX + key]) if PREFIX + key in md else None
    return BatchNorm(name=name, in_shape=in_shape, out_shape=in_shape, mean=opt("mean"), var=opt("var"),
                     weight=opt("weight"), bias=opt("bias"), eps=float(md[PREFIX + "eps"]), meta=meta)


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def regroup(w: np.ndarray, groups: int, where: str) -> np.ndarray:
    """The ``(C_out, C_in/groups, kH, kW)`` blocks of a block-diagonal conv weight; anything off the
    blocks is a BadGraph (the file does not hold the grouped conv its metadata says)."""
    co, ci = w.shape[:2]
    if groups < 1 or co % groups or ci % groups:
        raise BadGraph(f"groups={groups} does not divide a {co}x{ci} conv weight", where=where,
                       hint="re-export the model with neurocomp")
    per, ci_g = co // groups, ci // groups
    blocks = np.stack([w[g * per:(g + 1) * per, g * ci_g:(g + 1) * ci_g] for g in range(groups)])
    mask = np.ones((co, ci), bool)
    for g in range(groups):
        mask[g * per:(g + 1) * per, g * ci_g:(g + 1) * ci_g] = False
    if np.any(w[mask]):
        raise BadGraph(f"a conv marked groups={groups} has weights outside its groups' blocks", where=where,
                       hint="re-export the model with neurocomp")
    return np.ascontiguousarray(blocks.reshape((co, ci_g) + w.shape[2:]))


def _read_conv2d(name, node, in_shape, md, meta, where):
    if md.get(PREFIX + "op") == "batchnorm":
        return [_batchnorm(name, in_shape, md, meta)]
    w, stride, pad, dil, groups, out = conv_geometry(node, in_shape, where)
    if int(md.get(PREFIX + "groups", 1)) != 1:        # written block-diagonal (backends.nir.ungroup)
        groups = int(md[PREFIX + "groups"])
        w = regroup(w, groups, where)
    has_bias = md.get(PREFIX + "has_bias", True)
    bias = np.asarray(node.bias, dtype=np.float32) if node.bias is not None else None
    if not has_bias or (bias is not None and PREFIX + "has_bias" not in md and not np.any(bias)):
        bias = None if not has_bias else bias
    check_bias(bias, w.shape[0], where)
    return [Conv2d(name=name, in_shape=in_shape, out_shape=out, weight=w, bias=bias, stride=stride,
                   padding=pad, dilation=dil, groups=groups, meta=meta)]


def _read_affine(name, node, in_shape, md, meta, where):
    if md.get(PREFIX + "op") == "batchnorm":
        return [_batchnorm(name, in_shape, md, meta)]
    if md.get(PREFIX + "op") == "voting":
        k = int(md[PREFIX + "voting_size"])
        if len(in_shape) != 1 or k < 1 or in_shape[0] % k:
            raise BadGraph(f"a vote over groups of {k} on an input of shape {tuple(in_shape)}", where=where,
                           hint="re-export the graph with neurocomp")
        return [Voting(name=name, in_shape=in_shape, out_shape=(in_shape[0] // k,), voting_size=k, meta=meta)]
    w = linear_weight(node, in_shape, where)
    bias = np.asarray(node.bias, dtype=np.float32) if isinstance(node, nir.Affine) else None
    check_bias(bias, w.shape[0], where)
    return [Linear(name=name, in_shape=in_shape, out_shape=check_layer((w.shape[0],), where), weight=w,
                   bias=bias, meta=meta)]


def _read_pool(name, node, in_shape, md, meta, where):
    return [pool_node(name, node, in_shape, meta)]


def _read_threshold(name, node, in_shape, md, meta, where):
    return [Threshold(name=name, in_shape=in_shape, out_shape=in_shape,
                      threshold=uniform(node.threshold, where, "threshold"), meta=meta)]


def _read_flatten(name, node, in_shape, md, meta, where):
    ndim = len(in_shape)
    start, end = int(node.start_dim) % ndim, int(node.end_dim) % ndim
    if start != 0 or end != ndim - 1:
        raise UnsupportedLayer(f"Flatten of dims {node.start_dim}..{node.end_dim}", where=where,
                               hint="only full flattening is supported")
    return [Flatten(name=name, in_shape=in_shape, out_shape=(int(np.prod(in_shape)),), meta=meta)]


def _module_meta(md, meta) -> dict:
    node_meta = dict(meta)
    node_meta.update({"module": _text(md[PREFIX + "module"]), "config": json.loads(_text(md[PREFIX + "config"]))})
    return node_meta


def _static_map(md):
    sm = md.get(PREFIX + "static_map")
    return None if sm is None else np.asarray(sm, dtype=np.float32)


def _read_spike_attention(name, node, in_shape, md, meta, where):
    spec = tuple((k, tuple(v)) for k, v in json.loads(_text(md[PREFIX + "state_spec"])))
    return [SpikeAttention(name=name, in_shape=in_shape, out_shape=in_shape,
                           state_flat=np.asarray(md[PREFIX + "state_flat"], dtype=np.float32), state_spec=spec,
                           source=_text(md[PREFIX + "source"]) or None,
                           pool=tuple(int(v) for v in np.asarray(md[PREFIX + "pool"]).ravel()),
                           static_map=_static_map(md), meta=_module_meta(md, meta))]


def _read_ma_attention(name, node, in_shape, md, meta, where):
    fields = {f: np.asarray(md[PREFIX + "state." + f], dtype=np.float32)
              for f in MAAttention.STATE_NAMES if PREFIX + "state." + f in md}
    if PREFIX + "state_flat" in md:     # PFA's additive variant: its weights packed
        fields["state_flat"] = np.asarray(md[PREFIX + "state_flat"], dtype=np.float32)
        fields["state_spec"] = tuple((k, tuple(v)) for k, v in json.loads(_text(md[PREFIX + "state_spec"])))
    return [MAAttention(name=name, in_shape=in_shape, out_shape=in_shape, parts=_text(md[PREFIX + "parts"]),
                        static_map=_static_map(md), meta=_module_meta(md, meta), **fields)]


def _read_static_scale(name, node, in_shape, md, meta, where):
    return [Scale(name=name, in_shape=in_shape, out_shape=in_shape,
                  scale=np.asarray(md[PREFIX + "scale_map"], dtype=np.float32),
                  rectify=bool(md.get(PREFIX + "rectify", False)), additive=bool(md.get(PREFIX + "additive", False)),
                  meta=meta)]


# A neurocomp Scale is one of three IR nodes; its ``neurocomp.op`` says which.
_SCALE_OPS = {"dynamic_spike_attention": _read_spike_attention, "dynamic_attention": _read_ma_attention,
              "attention": _read_static_scale}


def _read_scale(name, node, in_shape, md, meta, where):
    read = _SCALE_OPS.get(md.get(PREFIX + "op"))
    return None if read is None else read(name, node, in_shape, md, meta, where)


def _read_neuron(name, node, in_shape, md, meta, where):
    if isinstance(node, nir.LIF) and md.get(PREFIX + "reset") == "to_threshold":
        alpha = np.asarray(md[PREFIX + "alpha"], np.float64)
        beta = np.asarray(md[PREFIX + "beta"], np.float64)      # one value, or one per channel
        vth = np.asarray(node.v_threshold, np.float64).reshape(tuple(in_shape))
        if alpha.ndim == 0 and beta.ndim == 0 and np.all(vth == vth.flat[0]):
            return [MALIF(name=name, in_shape=in_shape, out_shape=in_shape,
                          v_threshold=uniform(node.v_threshold, where, "v_threshold"),
                          alpha=float(alpha), beta=float(beta), meta=meta)]
        per_c = vth.reshape(vth.shape[0], -1)        # learned per channel: one value per channel
        if not np.all(per_c == per_c[:, :1]):
            raise UnsupportedLayer("an MA-SNN cell whose v_threshold varies within a channel", where=where,
                                   hint="one v_threshold per channel, or one for the layer")
        return [MALIF(name=name, in_shape=in_shape, out_shape=in_shape,
                      v_threshold=per_c[:, 0].astype(np.float32) if not np.all(per_c == per_c[0, 0])
                      else float(per_c[0, 0]),
                      alpha=alpha.astype(np.float32) if alpha.ndim else float(alpha),
                      beta=beta.astype(np.float32) if beta.ndim else float(beta), meta=meta)]
    if (PREFIX + "threshold_rule") not in md:
        return None
    reset = md.get(PREFIX + "reset", "hard")
    v_reset = None if reset == "soft" else uniform(node.v_reset, where, "v_reset")
    th = uniform(node.v_threshold, where, "v_threshold")
    if isinstance(node, nir.IF):
        return [LIF(name=name, in_shape=in_shape, out_shape=in_shape, tau=None, v_threshold=th,
                    v_reset=v_reset, meta=meta)]
    tau = float(md[PREFIX + "tau_steps"])
    if not (np.isfinite(tau) and tau > 1.0):
        raise BadGraph(f"time constant tau_steps={tau} (must be a finite number > 1)", where=where,
                       hint="use tau > 1 time step")
    return [LIF(name=name, in_shape=in_shape, out_shape=in_shape, tau=tau,
                decay_input=bool(md[PREFIX + "decay_input"]), v_threshold=th, v_reset=v_reset, meta=meta)]


def _read_integrator(name, node, in_shape, md, meta, where):
    """neurocomp's readout head (an integrator of the current, read at the end of the window)."""
    if _text(md.get(PREFIX + "kind", "")) != "readout":
        return None
    return [Readout(name=name, in_shape=in_shape, out_shape=in_shape, meta=meta)]


# One reader per NIR node class of a neurocomp graph (the mirror of backends.nir.WRITERS); each
# returns the IR nodes the NIR node stands for, or None when it is not one neurocomp writes.
READERS = {nir.Conv2d: _read_conv2d, nir.Affine: _read_affine, nir.Linear: _read_affine,
           nir.SumPool2d: _read_pool, nir.AvgPool2d: _read_pool, nir.Threshold: _read_threshold,
           nir.Flatten: _read_flatten, nir.Scale: _read_scale, nir.LIF: _read_neuron, nir.IF: _read_neuron,
           nir.I: _read_integrator}


def _convert(name, node, in_shape, md):
    """One NIR node of a neurocomp graph -> list of IR nodes (usually one); None: no such node."""
    for cls in type(node).__mro__:
        read = READERS.get(cls)
        if read is not None:
            return read(name, node, in_shape, md, _meta_of(md), node_where(name))
    return None


def _add_order(name, md, srcs, where) -> list:
    """An Add's sources in the IR's order (``neurocomp.inputs``; NIR's edge order otherwise)."""
    raw = md.get(PREFIX + "inputs")
    if raw is None:
        return srcs
    order = json.loads(_text(raw))
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(srcs):
        raise BadGraph(f"neurocomp.inputs {order!r} does not name the edges into it ({', '.join(srcs)})", where=where,
                       hint="the graph file is inconsistent; re-export it with neurocomp")
    return [str(k) for k in order]


def _concat_sources(name, srcs, part_src, nodes, where) -> list:
    """A Concat's sources, in channel order: what feeds each of its placement parts (``neurocomp.part``)."""
    parts = []
    for p in srcs:
        md = _md(nodes[p]) if p in nodes else {}
        if p not in part_src or _text(md.get(PREFIX + "concat", "")) != name:
            raise BadGraph(f"'{p}' feeds the concat but is not one of its parts", where=where,
                           hint="the graph file is inconsistent; re-export it with neurocomp")
        parts.append((int(md[PREFIX + "part"]), part_src[p]))
    if sorted(k for k, _ in parts) != list(range(len(parts))):
        raise BadGraph(f"concat parts numbered {sorted(k for k, _ in parts)}", where=where,
                       hint="the graph file is inconsistent; re-export it with neurocomp")
    return [s for _, s in sorted(parts)]


def nir_to_graph(graph: nir.NIRGraph, meta=None) -> Graph:
    """Convert a NIR graph written by neurocomp to the IR it was written from (exactly): chains and
    graphs with branches (an Add is a unit Scale of its summed edges, a Concat a unit Scale of
    placement parts, see ``neurocomp.backends.nir``)."""
    nodes, edges = graph.nodes, [(s, d) for s, d in graph.edges]
    check_edges(nodes, edges)
    top_in, top_out = ports(nodes)
    order, preds = dag(nodes, edges, top_in, top_out)
    gmd = _md(graph)
    ir_nodes, problems, inputs, shapes, ir_name, part_src = [], [], {}, {}, {}, {}
    taken = set(nodes)
    for name in order:
        node = nodes[name]
        md = _md(node)
        where = node_where(name)
        if isinstance(node, nir.Input):
            shape = input_shape(node, name)
            ir_nodes.append(Input(name=name, in_shape=shape, out_shape=shape, meta=_meta_of(md)))
            ir_name[name], shapes[name] = name, shape
            continue
        try:
            if any(s not in ir_name for s in preds[name]):
                continue                               # behind a node that could not be read
            srcs = [ir_name[s] for s in preds[name]]
            op, kind = _text(md.get(PREFIX + "op", "")), _text(md.get(PREFIX + "kind", ""))
            if op == "concat_part":                    # a placement into a concat: read with the concat
                if len(srcs) != 1:
                    raise BadGraph(f"a concat part with {len(srcs)} inputs", where=where,
                                   hint="the graph file is inconsistent; re-export it with neurocomp")
                part_src[name] = ir_name[name] = srcs[0]
                continue
            if isinstance(node, nir.Scale) and kind in ("add", "concat"):
                if kind == "add":
                    srcs = _add_order(name, md, srcs, where)
                    made = [Add(name=name, in_shape=shapes[srcs[0]], out_shape=shapes[srcs[0]], meta=_meta_of(md))]
                else:
                    srcs = _concat_sources(name, preds[name], part_src, nodes, where)
                    first = shapes[srcs[0]]
                    made = [Concat(name=name, in_shape=first, out_shape=check_layer(np.shape(node.scale), where),
                                   meta=_meta_of(md))]
            else:
                for a in join(name, srcs, shapes, taken):   # NIR sums the edges into a node
                    ir_nodes.append(a)
                    inputs[a.name], shapes[a.name] = tuple(srcs), tuple(a.out_shape)
                    srcs = [a.name]
                if isinstance(node, nir.Output):
                    continue
                made = _convert(name, node, shapes[srcs[0]], md)
                if made is None:
                    raise UnsupportedLayer(f"{type(node).__name__} cannot be imported", where=where,
                                           hint="see the README for supported NIR node types")
        except (UnsupportedLayer, BadGraph) as e:
            problems.append(e)
            continue
        for m in made:
            ir_nodes.append(m)
            inputs[m.name] = tuple(srcs)
            shapes[m.name] = tuple(m.out_shape)
            srcs = [m.name]
        ir_name[name] = srcs[0]
    if problems:
        raise problems[0] if len(problems) == 1 else UnsupportedLayers(problems)
    g_meta = {}
    if PREFIX + "timesteps" in gmd:
        g_meta["timesteps"] = int(gmd[PREFIX + "timesteps"])
    if PREFIX + "encoding" in gmd:
        enc = gmd[PREFIX + "encoding"]
        g_meta["encoding"] = enc.decode() if isinstance(enc, bytes) else str(enc)
    if PREFIX + "dt" in gmd:
        g_meta["dt"] = float(gmd[PREFIX + "dt"])
    g_meta.update(meta or {})
    if ir_nodes and "input_shape" not in g_meta:
        g_meta["input_shape"] = list(ir_nodes[0].out_shape)
    return Graph.build(ir_nodes, inputs, g_meta)


# Limits checked on the HDF5 file *before* anything is read into memory (a small gzip-compressed
# file can declare datasets of many GiB).
# (MAX_NIR_NODES, the node count, is in nir_common: the foreign reader counts again after flattening.)
MAX_NIR_BYTES = 1 << 30          # all datasets together, uncompressed
MAX_NIR_OBJECTS = 20_000         # groups + datasets
MAX_NIR_DEPTH = 16
MAX_NIR_NDIM = 8


def _hdf5_error(path, e):
    text = str(e).splitlines()[0][:160] if str(e) else ""
    return BadGraph(f"cannot be read as HDF5 ({type(e).__name__}: {text})", where=path,
                    hint="the file is truncated or damaged; re-export it")


def open_nir(path):
    """Open a NIR file through :mod:`neurocomp.safeio` (a regular file: no FIFO, device or folder) and
    check its HDF5 structure (:func:`check_hdf5`); returns the open :class:`~neurocomp.safeio.SafeFile`.
    Read the graph from ``.fh`` (``nir.read(f.fh)``), never from the path again."""
    f = safeio.open_regular(path, error=BadGraph, what="NIR file", hint="pass a file written by nir.write")
    try:
        check_hdf5(f)
    except BaseException:
        f.close()
        raise
    return f


def check_hdf5(path) -> None:
    """Walk an HDF5 file's structure (no data read) and refuse what is not a sane NIR file.

    ``path`` is a path or an open :class:`~neurocomp.safeio.SafeFile`. Links are inspected without
    being followed: external links, soft links, external raw storage and virtual datasets (each of
    which makes the HDF5 library open *other* files: any readable file, or a FIFO that blocks
    forever) are refused before any data is read. Every dataset's declared size, and what reading
    it as float64 takes, is checked against ``MAX_NIR_BYTES`` and the memory budget (a small
    compressed file, or one that never wrote its chunks, can declare many GiB)."""
    import h5py
    if not isinstance(path, safeio.SafeFile):
        with safeio.open_regular(path, error=BadGraph, what="NIR file", hint="pass a file written by nir.write") as f:
            return check_hdf5(f)
    sf, path = path, path.shown
    sf.fh.seek(0)
    magic = sf.fh.read(8)
    sf.fh.seek(0)
    if magic != b"\x89HDF\r\n\x1a\n":
        raise BadGraph("is not an HDF5 file (NIR files are HDF5)", where=path,
                       hint="pass a file written by nir.write / neurocomp")
    try:
        f = h5py.File(sf.fh, "r")
    except (OSError, ValueError, RuntimeError) as e:
        raise _hdf5_error(path, e) from None
    try:
        with f:
            node = f.get("node", getlink=True) if "node" in f.keys() else None
            if not isinstance(node, h5py.HardLink) or not isinstance(f.get("node"), h5py.Group):
                raise BadGraph("has no 'node' group, so it is not a NIR graph", where=path,
                               hint="pass a file written by nir.write")
            total, count, n_nodes, need = 0, 0, 0, 0
            stack = [(f, 0)]
            while stack:
                group, depth = stack.pop()
                if depth > MAX_NIR_DEPTH:
                    raise BadGraph(f"groups nest deeper than {MAX_NIR_DEPTH}", where=f"{path}:{group.name}",
                                   hint="the file is not a NIR graph neurocomp can read")
                size = len(group)        # from the group's header: refused before its members are listed
                if group.name.endswith("/nodes"):
                    n_nodes += size
                    if n_nodes > MAX_NIR_NODES:
                        raise TooLarge(f"the graph has more than {MAX_NIR_NODES} nodes", where=f"{path}:{group.name}",
                                       hint="neurocomp compiles graphs of at most "
                                            f"{MAX_NIR_NODES} nodes; remove pass-through nodes (zero Delays, "
                                            "Identity) before exporting")
                if count + size > MAX_NIR_OBJECTS:
                    raise TooLarge(f"more than {MAX_NIR_OBJECTS} objects", where=f"{path}:{group.name}",
                                   hint="the file is not a NIR graph neurocomp can read")
                for key in group.keys():
                    count += 1
                    if count > MAX_NIR_OBJECTS:
                        raise BadGraph(f"more than {MAX_NIR_OBJECTS} objects", where=path,
                                       hint="the file is not a NIR graph neurocomp can read")
                    here = f"{path}:{group.name.rstrip('/')}/{key}"
                    link = group.get(key, getlink=True)
                    if isinstance(link, h5py.ExternalLink):
                        raise BadGraph(f"holds an external link to {link.filename!r}:{link.path!r}; neurocomp "
                                       "reads nothing outside the file it was given", where=here,
                                       hint="re-export the graph with nir.write (self-contained)")
                    if not isinstance(link, h5py.HardLink):
                        raise BadGraph(f"holds a {type(link).__name__} (NIR files hold plain groups and datasets)",
                                       where=here, hint="re-export the graph with nir.write")
                    item = group.get(key)
                    if isinstance(item, h5py.Group):
                        stack.append((item, depth + 1))
                    elif isinstance(item, h5py.Dataset):
                        if item.is_virtual:
                            raise BadGraph("is a virtual dataset (its data lives in other files)", where=here,
                                           hint="re-export the graph with nir.write (self-contained)")
                        if item.external:
                            raise BadGraph(f"stores its data in external file {item.external[0][0]!r}; neurocomp "
                                           "reads nothing outside the file it was given", where=here,
                                           hint="re-export the graph with nir.write (self-contained)")
                        shape = item.shape or ()
                        if len(shape) > MAX_NIR_NDIM:
                            raise BadGraph(f"dataset has {len(shape)} dimensions", where=here,
                                           hint=f"at most {MAX_NIR_NDIM} are supported")
                        n = memory.product(shape)
                        nbytes = n * max(1, int(item.dtype.itemsize))
                        total += nbytes
                        if total > MAX_NIR_BYTES:
                            raise BadGraph(f"datasets declare more than {MAX_NIR_BYTES >> 20} MiB "
                                           f"(at {tuple(shape)} {item.dtype})", where=here,
                                           hint="the file is damaged or not a model neurocomp can compile")
                        # read as stored, then converted to float64 by the readers
                        need += nbytes + 8 * n
                        memory.check(nbytes + 8 * n, f"reading dataset {tuple(shape)} {item.dtype}", where=here,
                                     hint="the file declares (compressed or unwritten) data far larger than a "
                                          f"model; check it, or raise {memory.ENV}")
                    elif isinstance(item, h5py.Datatype):
                        pass
                    else:
                        raise BadGraph(f"dangling or unreadable link '{key}'", where=here, hint="the file is damaged")
            memory.check(need, "reading the NIR file's datasets", where=path)
    except BadGraph:
        raise
    except NeurocompError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise _hdf5_error(path, e) from None
    finally:
        sf.fh.seek(0)


def _first_line(e) -> str:
    t = str(e).strip()
    return t.splitlines()[0][:200] if t else type(e).__name__


def _read_graph(path):
    """``nir.read`` of a checked file: with type checking, else (a graph from another framework only)
    without it and a :class:`NIRWarning`. Returns ``(nir graph, warnings)``."""
    with open_nir(path) as f:      # regular file, HDF5 structure, links and declared sizes checked
        try:
            return nir.read(f.fh), []
        except Exception as e:     # noqa: BLE001 - nir raises many types; all become one line below
            checked = e
        try:
            f.fh.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = nir.read(f.fh, type_check=False)
        except Exception as e:     # noqa: BLE001
            raise BadGraph(f"is not a valid NIR graph ({type(e).__name__}: {_first_line(e)})", where=path,
                           hint="re-export it with nir.write (nir >= 1.0)") from None
    if is_neurocomp_graph(g):      # neurocomp writes type-checked graphs: this one was damaged or edited
        raise BadGraph(f"is not a valid NIR graph ({type(checked).__name__}: {_first_line(checked)})", where=path,
                       hint="re-export it with nir.write (nir 1.0.8)")
    msg = f"{path}: read only with type_check=False ({_first_line(checked)})"
    warnings.warn(msg, NIRWarning, stacklevel=3)
    return g, [msg]


def read_nir_file(path, dt=None, reset: str = "zero", timesteps=None, meta=None) -> Graph:
    """The one door for ``.nir`` files: neurocomp's own (read back as exactly the IR they were written
    from) and other frameworks' (``dt``, seconds per step, and ``reset``, which NIR does not store,
    apply to them; see :mod:`neurocomp.frontends.nir_foreign`). ``timesteps``: steps per sample
    (``meta['timesteps']``) unless the graph records its own; ``meta``: more graph metadata. Every
    failure is one :class:`~neurocomp.errors.NeurocompError` naming the file."""
    path = str(path)
    if timesteps is not None and (isinstance(timesteps, bool) or int(timesteps) < 1):
        raise BadInput(f"--timesteps {timesteps}", where="--timesteps", hint="give at least 1")
    g, notes = _read_graph(path)
    try:
        if is_neurocomp_graph(g):
            out = nir_to_graph(g, meta)
        else:
            out = foreign_to_graph(g, dt=dt, reset=reset, meta=meta)
    except NeurocompError as e:
        e.where = f"{path}: {e.where}" if e.where else path
        e.args = (e.one_line(),)
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise BadGraph(f"holds an inconsistent node ({type(e).__name__}: {_first_line(e)})", where=path,
                       hint="re-export it; neurocomp needs every node's fields with matching shapes") from None
    except Exception as e:   # noqa: BLE001 - a foreign file must never give a traceback
        raise BadGraph(f"cannot be imported ({type(e).__name__}: {_first_line(e)[:160]})", where=path,
                       hint="re-export the graph; if it is valid NIR 1.0, please report it") from None
    extra = {}
    if notes:
        extra["read_warnings"] = notes
    if timesteps is not None:
        extra["timesteps"] = int(out.meta.get("timesteps") or timesteps)
    return Graph(out.nodes, out.inputs, {**out.meta, **extra}) if extra else out
