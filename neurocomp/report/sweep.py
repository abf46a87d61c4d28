"""Accuracy vs weight bit width: re-lower the artifact's float graph with ``weight_bits`` = 2..8
(``passes.pipeline.lower``, the same pipeline ``compile`` runs) and score the fixed-point reference."""
from __future__ import annotations

import numpy as np
import torch


def same_quantization(a, b) -> bool:
    """Whether two lowered graphs carry identical integer weights and neuron parameters."""
    if [n.name for n in a] != [n.name for n in b]:
        return False
    for na, nb in zip(a, b):
        qa, qb = getattr(na, "qweight", None), getattr(nb, "qweight", None)
        if (qa is None) != (qb is None) or (qa is not None and not np.array_equal(qa, qb)):
            return False
        fa, fb = getattr(na, "fixed", None), getattr(nb, "fixed", None)
        if (fa is None) != (fb is None):
            return False
        if fa is not None and ((fa.du, fa.dv, fa.vth) != (fb.du, fb.dv, fb.vth)
                               or not np.array_equal(fa.bias_mant, fb.bias_mant)
                               or not np.array_equal(fa.bias_exp, fb.bias_exp)):
            return False
    return True


def bit_sweep(artifact, x, labels, bits=range(2, 9), batch: int = 1024, progress: bool = True) -> dict:
    from neurocomp.passes.pipeline import lower
    from neurocomp.sim import run_fixed

    labels = torch.as_tensor(labels)
    N = x.shape[1]
    own_bits = artifact.manifest.get("weight_bits", 8)
    att = artifact.manifest.get("attention")
    kw = {"attention": att["mode"]} if att and att.get("mode") else {}   # fold attention as compile did
    rows = []
    it = list(bits)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(it) * N, desc="bit-width sweep (fixed-point reference)", unit="sample")
    from neurocomp.errors import NeurocompError
    for b in it:
        try:
            g = lower(artifact.float_graph, weight_bits=b, **kw)
        except NeurocompError as e:     # e.g. at 2 bits a threshold may not fit the weight grid at all
            rows.append({"weight_bits": b, "accuracy": None, "correct": None, "samples": N, "weights_clipped": None,
                         "bias_clipped": None, "not_representable": e.one_line()})
            if bar is not None:
                bar.update(N)
            continue
        correct = 0
        for i in range(0, N, batch):
            r = run_fixed(g, x[:, i:i + batch])
            correct += int((r.predictions() == labels[i:i + batch]).sum())
            if bar is not None:
                bar.update(min(batch, N - i))
        q = next(p for p in g.meta["passes"] if p["pass"] == "quantize")
        row = {"weight_bits": b, "accuracy": correct / N, "correct": correct, "samples": N,
               "weights_clipped": q["weights_clipped"], "bias_clipped": q["bias_clipped"]}
        if b == own_bits:
            row["same_quantization_as_artifact"] = same_quantization(g, artifact.fixed_graph)
        rows.append(row)
    if bar is not None:
        bar.close()
    return {"rows": rows, "artifact_weight_bits": own_bits, "simulator": "fixed-point reference (run_fixed)",
            "samples": N}
