"""Where the reference simulator and the torch stages run: ``--device cpu|cuda|auto``.

- :func:`resolve` turns the flag into a ``torch.device`` (``auto``: CUDA when ``torch.cuda.is_available()``);
  ``cuda`` on a machine without CUDA is one :class:`~neurocomp.errors.BadInput` line with the hint ``--device cpu``.
- :func:`integer_exact` is the context of the fixed-point arithmetic: every float op it issues sums
  integers whose every partial sum is below 2**24 (float32) or 2**53 (float64) (``sim.fixed_ops`` checks
  the bound per layer), so any summation order gives the exact integer, on any device. What could still
  round is switched off on CUDA: TF32 (matmul and cuDNN) and cuDNN itself (its Winograd and FFT
  convolutions transform integers into non-integers), so a convolution runs as torch's native im2col + GEMM
  (or direct depthwise) kernel. Result: the CUDA run is bit-identical to the CPU run by construction.
- :func:`deterministic_float` is the context of the float arithmetic (the folded float model, the torch
  stages, calibration): TF32 off, cuDNN deterministic and not benchmarking, torch's deterministic algorithms
  (warn only). That makes a CUDA run repeat itself; it does not make it equal the CPU run bit for bit
  (other kernels sum in other orders), so a float spike exactly at a threshold may differ between devices.
"""
from __future__ import annotations

import contextlib
import os

import torch

from neurocomp.errors import BadInput

DEVICES = ("auto", "cpu", "cuda")


def resolve(device=None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
    ``torch.device`` as given (CUDA refused in one line when torch has none)."""
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind = name.split(":", 1)[0]
    if kind not in ("cpu", "cuda"):
        raise BadInput(f"unknown device {name!r}", where="--device", hint="use cpu, cuda or auto")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {name!r}", where="--device", hint="use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput("CUDA is not available to torch on this machine", where="--device cuda",
                           hint="use --device cpu (or --device auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BadInput(f"there is no CUDA device {dev.index} ({torch.cuda.device_count()} present)",
                           where=f"--device {name}", hint="use --device cuda (device 0) or --device cpu")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # deterministic cuBLAS (read at first use)
    return dev


@contextlib.contextmanager
def _cuda_flags(device, cudnn: bool):
    if torch.device(device).type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        with torch.backends.cudnn.flags(enabled=cudnn, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.use_deterministic_algorithms(det, warn_only=warn)


def integer_exact(device):
    """The context of integer arithmetic carried by floats on ``device`` (see the module)."""
    return _cuda_flags(device, cudnn=False)


def deterministic_float(device):
    """The context of float32 arithmetic on ``device``: as deterministic as torch allows (see the module)."""
    return _cuda_flags(device, cudnn=True)
