"""Inputs for measuring peak memory at the DVS128 size (issue 16, "Memory bounded by design").

Writes the issue's TCJA DVS128 net as ``bench/exact_at_size.py --random`` builds it (untrained, 2x128x128,
five Conv3x3(128)-BN-LIF-TCJA-MaxPool2 blocks, Linear 2048->512-LIF->110, VotingLayer(10), T = 20) as a
neurocomp checkpoint, and Bernoulli(0.15) inputs ``x4.npy`` / ``x32.npy`` ([N, T, 2, 128, 128]), into
``FOLDER``. Then, measured with ``/usr/bin/time -v`` (maximum resident set size):

    python bench/memory_at_size.py /tmp/mg
    neurocomp compile /tmp/mg/tcja128.pt --calib /tmp/mg/x32.npy -o /tmp/mg/art
    neurocomp simulate /tmp/mg/art --backend reference --inputs /tmp/mg/x4.npy
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from exact_at_size import build  # noqa: E402  (the one builder of the issue's net)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    a = ap.parse_args(argv)
    from neurocomp import save_checkpoint
    os.makedirs(a.folder, exist_ok=True)
    net = argparse.Namespace(seed=16, T=20, hw=128, width=128, blocks=5, hidden=512, classes=110, vote=10)
    save_checkpoint(build(net), os.path.join(a.folder, "tcja128.pt"), input_shape=(2, 128, 128), timesteps=20,
                    encoding="bernoulli")
    g = np.random.default_rng(0)
    for n in (4, 32):
        np.save(os.path.join(a.folder, f"x{n}.npy"), (g.random((n, 20, 2, 128, 128)) < 0.15).astype(np.uint8))
    print(f"wrote {a.folder}/tcja128.pt, x4.npy, x32.npy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
