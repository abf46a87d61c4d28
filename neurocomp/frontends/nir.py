"""NIR graph -> IR.

Graphs written by neurocomp (``neurocomp.*`` metadata, see ``neurocomp.backends.nir``) come back
as exactly the IR they were written from. Nodes without that metadata are read by their standard
NIR meaning (see ``_foreign_node``).
"""
from __future__ import annotations

import json

import nir
import numpy as np

from neurocomp.errors import BadGraph, NeurocompError, TooLarge, UnsupportedLayer, UnsupportedLayers
from neurocomp.ir import (MAAttention, MALIF, Scale, SpikeAttention, AvgPool2d, BatchNorm, Conv2d, Flatten, Graph, Input, LIF, Linear, SumPool2d, Threshold)

PREFIX = "neurocomp."


def _md(node) -> dict:
    return dict(getattr(node, "metadata", None) or {})


def _scalar(a, where, field):
    arr = np.asarray(a, dtype=np.float64).ravel()
    if arr.size == 0:
        raise BadGraph(f"field '{field}' is empty", where=where)
    if not np.all(np.isfinite(arr)):
        raise BadGraph(f"field '{field}' holds NaN or inf", where=where, hint="fix the exported parameters")
    if not np.all(arr == arr[0]):
        raise UnsupportedLayer(f"field '{field}' differs between neurons", where=where,
                               hint="neurocomp supports one value per layer for this field")
    return float(arr[0])


def _pair(v):
    v = np.asarray(v).ravel()
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def _meta_of(md):
    raw = md.get(PREFIX + "meta")
    if raw is None:
        return {}
    return json.loads(raw if isinstance(raw, str) else raw.decode())


def _shape_of(node, key):
    t = getattr(node, key, None) or {}
    v = t.get("input" if key == "input_type" else "output")
    return None if v is None else tuple(int(s) for s in np.asarray(v).ravel())


def _pool_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


MAX_NEURONS = 10_000_000   # per layer; larger shapes are refused before anything is allocated


def _check_out(shape, where):
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_NEURONS:
        raise BadGraph(f"gives an invalid output shape {shape}", where=where,
                       hint=f"every dimension must be positive and a layer at most {MAX_NEURONS} neurons; "
                            "check kernel, stride and padding against the input shape")
    return shape


def _check_bias(bias, n, where):
    if bias is not None and tuple(bias.shape) != (n,):
        raise BadGraph(f"bias has shape {tuple(bias.shape)}, expected ({n},)", where=where,
                       hint="the file is inconsistent; re-export it")


def _batchnorm(name, in_shape, md, meta) -> BatchNorm:
    """A BatchNorm written by neurocomp (as a 1x1 conv or diagonal affine), from its metadata."""
    def opt(key):
        return np.asarray(md[PREFIX + key]) if PREFIX + key in md else None
    return BatchNorm(name=name, in_shape=in_shape, out_shape=in_shape, mean=opt("mean"), var=opt("var"),
                     weight=opt("weight"), bias=opt("bias"), eps=float(md[PREFIX + "eps"]), meta=meta)


def _convert(name, node, in_shape, md):
    """One NIR node -> list of IR nodes (usually one)."""
    where = f"NIR node '{name}'"
    meta = _meta_of(md)
    if in_shape is None:
        raise BadGraph("no input shape reaches this node", where=where, hint="the Input node needs input_type")
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight, dtype=np.float32)
        if w.ndim != 4:
            raise BadGraph(f"Conv2d weight has shape {w.shape}", where=where,
                           hint="a 4-D (C_out, C_in/groups, kH, kW) weight is needed")
        if md.get(PREFIX + "op") == "batchnorm":
            return [_batchnorm(name, in_shape, md, meta)]
        if len(in_shape) != 3:
            raise BadGraph(f"Conv2d input has shape {in_shape}", where=where, hint="a (C, H, W) input is needed")
        if isinstance(node.padding, str):
            raise UnsupportedLayer(f"padding={node.padding!r}", where=where, hint="use explicit integer padding")
        stride, pad, dil = _pair(node.stride), _pair(node.padding), _pair(node.dilation)
        C, H, W = in_shape
        k = w.shape[2:]
        groups = int(np.asarray(node.groups).ravel()[0])
        if groups < 1 or min(stride) < 1 or min(dil) < 1 or min(pad) < 0 or w.shape[1] * groups != C:
            raise BadGraph(f"Conv2d weight {w.shape} (groups={groups}, stride={stride}, dilation={dil}, "
                           f"padding={pad}) does not fit its {C}-channel input", where=where,
                           hint="the file is inconsistent; re-export it")
        out = _check_out((w.shape[0], (H + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1,
                          (W + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1), where)
        has_bias = md.get(PREFIX + "has_bias", True)
        bias = np.asarray(node.bias, dtype=np.float32) if node.bias is not None else None
        if not has_bias or (bias is not None and PREFIX + "has_bias" not in md and not np.any(bias)):
            bias = None if not has_bias else bias
        _check_bias(bias, w.shape[0], where)
        return [Conv2d(name=name, in_shape=in_shape, out_shape=out, weight=w, bias=bias, stride=stride,
                       padding=pad, dilation=dil, groups=int(node.groups), meta=meta)]
    if isinstance(node, (nir.Affine, nir.Linear)):
        if md.get(PREFIX + "op") == "batchnorm":
            return [_batchnorm(name, in_shape, md, meta)]
        w = np.asarray(node.weight, dtype=np.float32)
        if w.ndim != 2:
            raise BadGraph(f"weight has shape {w.shape}", where=where, hint="a 2-D (out, in) weight is needed")
        if in_shape != (w.shape[1],):
            raise BadGraph(f"weight expects {w.shape[1]} inputs but the incoming tensor has shape {in_shape}",
                           where=where)
        bias = np.asarray(node.bias, dtype=np.float32) if isinstance(node, nir.Affine) else None
        _check_bias(bias, w.shape[0], where)
        _check_out((w.shape[0],), where)
        return [Linear(name=name, in_shape=in_shape, out_shape=(w.shape[0],), weight=w, bias=bias, meta=meta)]
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        k, s, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        if len(in_shape) != 3:
            raise BadGraph(f"pooling input has shape {in_shape}", where=where, hint="a (C, H, W) input is needed")
        if min(k) < 1 or min(s) < 1 or min(p) < 0:
            raise BadGraph(f"pooling kernel {k}, stride {s}, padding {p}", where=where,
                           hint="kernel and stride must be positive, padding non-negative")
        C, H, W = in_shape
        out = _check_out((C, _pool_out(H, k[0], s[0], p[0]), _pool_out(W, k[1], s[1], p[1])), where)
        cls = SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
        return [cls(name=name, in_shape=in_shape, out_shape=out, kernel=k, stride=s, padding=p, meta=meta)]
    if isinstance(node, nir.Threshold):
        return [Threshold(name=name, in_shape=in_shape, out_shape=in_shape,
                          threshold=_scalar(node.threshold, where, "threshold"), meta=meta)]
    if isinstance(node, nir.Flatten):
        ndim = len(in_shape)
        start, end = int(node.start_dim) % ndim, int(node.end_dim) % ndim
        if start != 0 or end != ndim - 1:
            raise UnsupportedLayer(f"Flatten of dims {node.start_dim}..{node.end_dim}", where=where,
                                   hint="only full flattening is supported")
        return [Flatten(name=name, in_shape=in_shape, out_shape=(int(np.prod(in_shape)),), meta=meta)]
    if isinstance(node, nir.Scale) and md.get(PREFIX + "op") == "dynamic_spike_attention":
        def txt(v):
            return v.decode() if isinstance(v, bytes) else str(v)
        sm = md.get(PREFIX + "static_map")
        node_meta = dict(meta)
        node_meta.update({"module": txt(md[PREFIX + "module"]), "config": json.loads(txt(md[PREFIX + "config"]))})
        spec = tuple((k, tuple(v)) for k, v in json.loads(txt(md[PREFIX + "state_spec"])))
        return [SpikeAttention(name=name, in_shape=in_shape, out_shape=in_shape,
                               state_flat=np.asarray(md[PREFIX + "state_flat"], dtype=np.float32), state_spec=spec,
                               source=txt(md[PREFIX + "source"]) or None,
                               pool=tuple(int(v) for v in np.asarray(md[PREFIX + "pool"]).ravel()),
                               static_map=None if sm is None else np.asarray(sm, dtype=np.float32), meta=node_meta)]
    if isinstance(node, nir.Scale) and md.get(PREFIX + "op") == "dynamic_attention":
        def text(v):
            return v.decode() if isinstance(v, bytes) else str(v)
        fields = {f: np.asarray(md[PREFIX + "state." + f], dtype=np.float32)
                  for f in MAAttention.STATE_NAMES if PREFIX + "state." + f in md}
        sm = md.get(PREFIX + "static_map")
        node_meta = dict(meta)
        node_meta.update({"module": text(md[PREFIX + "module"]), "config": json.loads(text(md[PREFIX + "config"]))})
        return [MAAttention(name=name, in_shape=in_shape, out_shape=in_shape, parts=text(md[PREFIX + "parts"]),
                            static_map=None if sm is None else np.asarray(sm, dtype=np.float32), meta=node_meta,
                            **fields)]
    if isinstance(node, nir.Scale) and md.get(PREFIX + "op") == "attention":
        return [Scale(name=name, in_shape=in_shape, out_shape=in_shape,
                      scale=np.asarray(md[PREFIX + "scale_map"], dtype=np.float32),
                      rectify=bool(md.get(PREFIX + "rectify", False)), meta=meta)]
    if isinstance(node, nir.LIF) and md.get(PREFIX + "reset") == "to_threshold":
        return [MALIF(name=name, in_shape=in_shape, out_shape=in_shape,
                      v_threshold=_scalar(node.v_threshold, where, "v_threshold"),
                      alpha=float(md[PREFIX + "alpha"]), beta=float(md[PREFIX + "beta"]), meta=meta)]
    if isinstance(node, (nir.LIF, nir.IF)) and (PREFIX + "threshold_rule") in md:
        reset = md.get(PREFIX + "reset", "hard")
        v_reset = None if reset == "soft" else _scalar(node.v_reset, where, "v_reset")
        th = _scalar(node.v_threshold, where, "v_threshold")
        if isinstance(node, nir.IF):
            return [LIF(name=name, in_shape=in_shape, out_shape=in_shape, tau=None, v_threshold=th,
                        v_reset=v_reset, meta=meta)]
        tau = float(md[PREFIX + "tau_steps"])
        if not (np.isfinite(tau) and tau > 1.0):
            raise BadGraph(f"time constant tau_steps={tau} (must be a finite number > 1)", where=where,
                           hint="use tau > 1 time step")
        return [LIF(name=name, in_shape=in_shape, out_shape=in_shape, tau=tau,
                    decay_input=bool(md[PREFIX + "decay_input"]), v_threshold=th, v_reset=v_reset, meta=meta)]
    return None


def _order(graph: nir.NIRGraph):
    """Topological order of a chain-shaped NIR graph; clear errors for anything else."""
    nodes = graph.nodes
    succ, pred = {}, {}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in nodes:
                raise BadGraph(f"edge ({src!r} -> {dst!r}) names an unknown node {end!r}", where="NIR edges",
                               hint="the graph file is inconsistent")
        succ.setdefault(src, []).append(dst)
        pred.setdefault(dst, []).append(src)
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise UnsupportedLayer(f"{len(inputs)} Input nodes", where="NIR graph", hint="one input is supported")
    order, cur = [], inputs[0]
    seen = set()
    while True:
        if cur in seen:
            raise UnsupportedLayer(f"recurrent edge into '{cur}'", where="NIR graph",
                                   hint="recurrent graphs are not supported by this frontend path")
        seen.add(cur)
        order.append(cur)
        nxt = succ.get(cur, [])
        if not nxt:
            break
        if len(nxt) > 1 or len(pred.get(nxt[0], [])) > 1:
            raise UnsupportedLayer(f"node '{cur}' branches or merges", where="NIR graph",
                                   hint="only chains are supported by this frontend path")
        cur = nxt[0]
    return order


def nir_to_graph(graph: nir.NIRGraph, meta=None) -> Graph:
    """Convert a NIR graph to the IR. neurocomp-written graphs round-trip exactly."""
    order = _order(graph)
    gmd = dict(getattr(graph, "metadata", None) or {})
    ir_nodes, problems = [], []
    shape = None
    for name in order:
        node = graph.nodes[name]
        md = _md(node)
        if isinstance(node, nir.Input):
            shape = _shape_of(node, "input_type")
            if shape is None:
                raise BadGraph("the Input node has no input_type", where=f"NIR node '{name}'",
                               hint="re-export the graph with an input shape")
            _check_out(shape, f"NIR node '{name}'")
            ir_nodes.append(Input(name=name, in_shape=shape, out_shape=shape, meta=_meta_of(md)))
            continue
        if isinstance(node, nir.Output):
            continue
        try:
            converted = _convert(name, node, shape, md)
        except (UnsupportedLayer, BadGraph) as e:
            problems.append(e)
            continue
        if converted is None:
            problems.append(UnsupportedLayer(f"{type(node).__name__} cannot be imported", where=f"NIR node '{name}'",
                                             hint="see the README for supported NIR node types"))
            continue
        ir_nodes.extend(converted)
        shape = tuple(converted[-1].out_shape)
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
    return Graph.chain(ir_nodes, g_meta)


# Limits checked on the HDF5 file *before* anything is read into memory (a small gzip-compressed
# file can declare datasets of many GiB).
MAX_NIR_BYTES = 1 << 30          # all datasets together, uncompressed
MAX_NIR_OBJECTS = 20_000         # groups + datasets
MAX_NIR_NODES = 1_000            # NIR nodes, nested graphs included (nir.read's type inference is quadratic)
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
    from neurocomp import safeio
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
    from neurocomp import memory, safeio
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


def read_nir(path: str, meta=None) -> Graph:
    """Read a NIR file defensively: structure and sizes are checked before any data is loaded,
    and every failure is a one-line :class:`BadGraph` naming the file."""
    with open_nir(path) as f:
        try:
            graph = nir.read(f.fh)
        except NeurocompError:
            raise
        except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, AssertionError,
                RuntimeError, RecursionError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise BadGraph(f"is not a valid NIR graph ({type(e).__name__}: {first})", where=path,
                           hint="re-export it with nir.write (nir 1.0.8)") from None
    try:
        return nir_to_graph(graph, meta)
    except (UnsupportedLayer, UnsupportedLayers, BadGraph) as e:
        e.where = f"{path}: {e.where}" if e.where else path
        e.args = (e.one_line(),)
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise BadGraph(f"holds an inconsistent node ({type(e).__name__}: {first})", where=path,
                       hint="re-export it; neurocomp needs every node's fields with matching shapes")


def read_nir_file(path: str, dt=None, reset: str = "zero", timesteps=None, meta=None) -> Graph:
    """The one door for ``.nir`` files: neurocomp's own (``neurocomp.*`` metadata, read back as exactly
    the IR they were written from) and other frameworks' (:mod:`neurocomp.frontends.nir_foreign`;
    ``dt`` and ``reset`` apply to them). ``timesteps``: steps per sample unless the graph records its
    own (``meta['timesteps']``). Every failure is one :class:`~neurocomp.errors.NeurocompError` naming
    the file."""
    from neurocomp.errors import BadInput
    if timesteps is not None and (isinstance(timesteps, bool) or int(timesteps) < 1):
        raise BadInput(f"--timesteps {timesteps}", where="--timesteps", hint="give at least 1")
    from neurocomp.frontends.nir_foreign import read_foreign_nir
    try:
        g = read_foreign_nir(str(path), dt=dt, reset=reset, meta=meta)
    except NeurocompError:
        raise
    except Exception as e:   # noqa: BLE001 - a foreign file must never give a traceback
        raise BadGraph(f"cannot be imported ({type(e).__name__}: {str(e).strip()[:160]})", where=str(path),
                       hint="re-export the graph; if it is valid NIR 1.0, please report it") from None
    if timesteps is not None:
        g = Graph(g.nodes, g.inputs, {**g.meta, "timesteps": int(g.meta.get("timesteps") or timesteps)})
    return g
