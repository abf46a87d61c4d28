"""A behavioural fingerprint of the whole compiler, kept as a test fixture.

Every zoo model in every attention mode it supports is compiled through the public front door
(``neurocomp.compile``), and the artifact's float and fixed-point graphs are run by the reference
simulator on the first ``SAMPLES`` test samples. Per layer the fingerprint keeps the spike count and
a sha256 of the spike tensor (time-aligned, ``[T, N, ...]``, packed bits), plus the predicted classes.
A NIR graph from another framework (the NIR paper's Sinabs CNN) goes through the NIR front door the
same way when the shared data is present.

Any change that is meant to keep behaviour (a refactor) must leave this fingerprint identical:
``tests/test_fingerprint.py`` recomputes it and compares it with ``tests/fixtures/fingerprint.json``.
Regenerate the fixture only for a change that is *meant* to alter spikes, and say so in the commit:

    .venv/bin/python tests/fingerprint.py --write
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile

import numpy as np
import torch

from nc_testutils import zoo_checkpoints

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(HERE, "fixtures", "fingerprint.json")
SAMPLES = 32
MODES = ("static", "portable", "dynamic")
NIR_PAPER = os.environ.get("NEUROCOMP_NIR_PAPER",
                           os.path.join(ROOT, "..", "shared", "interop", "nir-paper"))


def _zoo():
    """The chain zoo the fixture recorded (the residual zoo, issue 15, is tests/test_residual_zoo.py's)."""
    return zoo_checkpoints()


def cases():
    """``(case id, source path, compile keyword arguments)`` for every fingerprinted compile."""
    out = []
    for path in _zoo():
        name = os.path.basename(os.path.dirname(path))
        modes = ("static",) if name.endswith("plain") else MODES
        out += [(f"{name}/{m}", path, {"attention": m, "calib_samples": 128}) for m in modes]
    cnn = os.path.join(NIR_PAPER, "02_cnn", "cnn_sinabs.nir")
    if os.path.isfile(cnn):
        out.append(("nir/cnn_sinabs", cnn, {"dt": 1.0, "timesteps": 32}))
    return out


def _digest(spikes: torch.Tensor) -> str:
    bits = np.packbits(spikes.detach().cpu().numpy().astype(bool).reshape(-1))
    return hashlib.sha256(bits.tobytes() + str(tuple(spikes.shape)).encode()).hexdigest()[:16]


def _stage(result) -> dict:
    return {"layers": {k: {"spikes": int(v.bool().sum()), "sha256": _digest(v)} for k, v in result.spikes.items()},
            "predictions": [int(p) for p in result.predictions()]}


def _inputs(artifact):
    man = artifact.manifest
    T, shape = man["timesteps"], tuple(man["input_shape"])
    if man.get("dataset"):
        from neurocomp.data.registry import load_inputs
        x, _ = load_inputs(man["dataset"], "test", T, man["encoding"], n=SAMPLES)
        return torch.as_tensor(x)
    gen = torch.Generator().manual_seed(0)           # a foreign graph: seeded Bernoulli(0.2) spikes
    return (torch.rand((T, SAMPLES, *shape), generator=gen) < 0.2).float()


def fingerprint_case(source, kwargs, workdir) -> dict:
    import neurocomp
    from neurocomp.artifact import Artifact
    from neurocomp.sim import run_fixed, run_float
    out = os.path.join(workdir, "art")
    neurocomp.compile(source, out, overwrite=True, **kwargs)
    art = Artifact(out)
    x = _inputs(art)
    return {"float": _stage(run_float(art.float_graph, x)), "fixed": _stage(run_fixed(art.fixed_graph, x)),
            "alignment_depth": int(art.manifest["alignment"]["depth"])}


def fingerprint(only=None) -> dict:
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cid, source, kwargs in cases():
            if only is None or cid in only:
                result[cid] = fingerprint_case(source, kwargs, tmp)
    return result


if __name__ == "__main__":
    if "--write" not in sys.argv[1:]:
        sys.exit("usage: tests/fingerprint.py --write   (rewrites tests/fixtures/fingerprint.json)")
    fp = fingerprint()
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    with open(FIXTURE, "w") as fh:
        json.dump({"samples": SAMPLES, "cases": fp}, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"wrote {FIXTURE}: {len(fp)} cases")
