"""Inference-only multi-step SpikingJelly neurons: the float32 values SpikingJelly computes, with fewer passes.

During calibration a DVS128-shaped net spends about half its time in SpikingJelly's multi-step neuron
loops: every step allocates about ten full-size tensors (``v - v_reset``, ``x - ...``, ``/ tau``, ...).
:func:`fast_neurons` swaps, for the length of a ``with`` block, the ``forward`` of each neuron it knows
for one that evaluates **the same float32 operations in the same order** on preallocated buffers, in
place (each step is a sequence of IEEE-rounded adds, subtracts, multiplies, divides and compares, the
charge's ``v + (x - v) / tau`` one ``addcdiv``, so the values are those of SpikingJelly's torch backend
bit for bit, infinities and NaN included; only the sign of a zero membrane potential may differ, where
SpikingJelly's hard reset adds ``+0``, which changes no spike). It runs on the CPU only and never under
autograd (a CUDA tensor or ``torch.is_grad_enabled()`` falls back to the module's own forward: on CUDA,
SpikingJelly's TorchScript loop may be fused into one kernel that rounds differently).

Known neurons: ``neuron.LIFNode`` and ``neuron.IFNode`` of exactly those classes (a subclass may override
any step), with float32 input, no stored voltage sequence, and, on SpikingJelly 0.0.0.0.14, in eval mode
(its training forward fires through the surrogate: another spelling). The two SpikingJelly spellings:

- 0.0.0.0.14 (eval): ``h = v + (x - (v - v_reset)) / tau`` (no decay of the input:
  ``v - (v - v_reset) / tau + x``; soft reset without decay ``v * (1 - 1/tau) + x``; IF: ``v + x``);
  ``s = h >= v_th``; ``v = v_reset * s + (1 - s) * h`` (soft: ``h - s * v_th``);
- 2.0 (``functional.lif_multi_step``, CPU): the same charge with ``v_reset`` 0 for a soft reset, a
  built-in surrogate's spike ``s = (h - v_th) >= 0``, the same resets.

Anything else (ParametricLIFNode, user neuron classes, a custom surrogate on 2.0, another SpikingJelly)
keeps its own forward. MA-SNN's ``neurocomp.nn.MALIFNode`` has its own inference path in its class.
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["fast_neurons", "spelling"]


def spelling():
    """``"0.0.0.0.14"`` or ``"2.0"``: which SpikingJelly neuron formulas are installed (None: neither known)."""
    from spikingjelly.activation_based import neuron
    if hasattr(neuron.LIFNode, "jit_eval_multi_step_forward_hard_reset_decay_input"):
        return "0.0.0.0.14"
    if hasattr(neuron.LIFNode, "multi_step_functional_forward") and hasattr(neuron, "IFNode"):
        return "2.0"
    return None


def _kinds() -> dict:
    from spikingjelly.activation_based import neuron
    return {neuron.LIFNode: "lif", neuron.IFNode: "if"}


def _eligible(m, version, kinds) -> str | None:
    """``"lif"`` / ``"if"`` when ``m``, as it is now, is a neuron this module computes exactly, else None
    (checked at every call: ``run_torch_model`` sets the step mode and the backend after the swap)."""
    kind = kinds.get(type(m))
    if kind is None or getattr(m, "store_v_seq", False) or getattr(m, "step_mode", "m") != "m":
        return None
    if getattr(m, "backend", "torch") != "torch":
        return None
    if version == "0.0.0.0.14":
        if m.training:
            return None
    elif version == "2.0":
        sf = m.surrogate_function
        if getattr(m, "_neuron_precision", None) is not None or not type(sf).__module__.startswith("spikingjelly") \
                or not getattr(sf, "spiking", True):
            return None
    else:
        return None
    if not isinstance(m.v_threshold, float) or not (m.v_reset is None or isinstance(m.v_reset, float)):
        return None
    if kind == "lif" and not isinstance(m.tau, float):
        return None
    return kind


def _run(m, kind, version, x_seq):
    """The multi-step forward of ``m`` on ``x_seq`` ``[T, ...]``, in place on buffers (see the module)."""
    v0 = m.v
    x0 = x_seq[0]
    if isinstance(v0, float):
        v = torch.full_like(x0, v0)
    elif isinstance(v0, torch.Tensor) and v0.shape == x0.shape and v0.dtype == x0.dtype and v0.device == x0.device:
        v = v0.clone()
    else:
        return None
    th, vr = m.v_threshold, m.v_reset
    tau = m.tau if kind == "lif" else None
    old = kind == "lif" and version == "0.0.0.0.14" and vr is None and not m.decay_input
    vr0 = 0.0 if vr is None else vr        # the charge's v_reset (2.0 and the reset-to-0 forms alike)
    spikes = torch.empty_like(x_seq)
    buf = torch.empty_like(x0)
    tau_t = None if tau is None else torch.tensor(tau, dtype=x0.dtype, device=x0.device)   # tau in float32
    for t in range(int(x_seq.shape[0])):
        x, s = x_seq[t], spikes[t]
        if kind == "if":
            v.add_(x)                                  # h = v + x
        elif old:
            v.mul_(1. - 1. / tau).add_(x)              # h = v * (1 - 1/tau) + x
        elif m.decay_input:                            # h = v + (x - (v - vr)) / tau
            if vr0 == 0.0:
                torch.sub(x, v, out=buf)               # v - 0.0 == v
            else:
                torch.sub(v, vr0, out=buf)
                torch.sub(x, buf, out=buf)
            v.addcdiv_(buf, tau_t)                     # v + (1 * buf) / tau: one division, one add
        else:                                          # h = v - (v - vr) / tau + x
            if vr0 == 0.0:
                torch.div(v, tau, out=buf)
            else:
                torch.sub(v, vr0, out=buf)
                buf.div_(tau)
            v.sub_(buf).add_(x)
        if version == "2.0":                           # s = (h - th) >= 0
            torch.sub(v, th, out=buf)
            torch.ge(buf, 0.0, out=s)
        else:                                          # s = h >= th
            torch.ge(v, th, out=s)
        if vr is None:                                 # v = h - s * th  (s * th is exact)
            v.sub_(s, alpha=th)
        else:                                          # v = vr * s + (1 - s) * h  (vr * s exact; vr = 0 adds +0)
            torch.sub(1.0, s, out=buf)
            v.mul_(buf)
            if vr != 0.0:
                v.add_(s, alpha=vr)
    m.v = v
    return spikes


@contextlib.contextmanager
def fast_neurons(model):
    """Within the block, each known SpikingJelly neuron of ``model`` (see the module) runs its in-place
    inference forward (outside autograd; under autograd, or for a state it does not know, its own)."""
    version = spelling()
    swapped = []
    if version is not None:
        kinds = _kinds()
        for m in model.modules():
            if type(m) not in kinds or "forward" in vars(m):
                continue
            own = m.forward

            def forward(x_seq, *args, m=m, own=own, **kw):
                kind = None if args or kw else _eligible(m, version, kinds)
                if kind is None or torch.is_grad_enabled() or not isinstance(x_seq, torch.Tensor) \
                        or x_seq.dtype != torch.float32 or x_seq.dim() < 2 or x_seq.device.type != "cpu":
                    return own(x_seq, *args, **kw)
                out = _run(m, kind, version, x_seq)
                return own(x_seq) if out is None else out
            m.forward = forward
            swapped.append(m)
    try:
        yield len(swapped)
    finally:
        for m in swapped:
            del m.forward
